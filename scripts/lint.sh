#!/usr/bin/env bash
# The lint gates, cheapest first: the MSRV check, rustfmt, clippy and rustdoc, the last two
# with every warning an error. CI runs them before the tests (.ci/run); so can you:
#
#   bash scripts/lint.sh
#
# Every step runs even when an earlier one failed, so that one run shows as much as it can
# (clippy cannot lint a crate whose dependency failed); the exit code is 1 when any failed.
# Each step prints its wall-clock time. `-D warnings` goes to clippy after `--`, not into
# RUSTFLAGS, so the dependencies' build cache stays the one `cargo check` uses.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

failed=()
step() { # $1: the step's name; the rest: its command
    local name=$1 start status
    shift
    echo "==> $name: $*"
    start=$SECONDS
    "$@"
    status=$?
    if [ "$status" -eq 0 ]; then
        echo "<== $name: ok in $((SECONDS - start)) s"
    else
        echo "<== $name: FAILED (exit code $status) in $((SECONDS - start)) s"
        failed+=("$name")
    fi
}

step msrv python3 scripts/check-msrv.py
step rustfmt cargo fmt --all --check
# fuzz/ is a workspace of its own (cargo fuzz builds it with nightly flags), so only its format
# is checked here: clippy and rustdoc would need its libFuzzer build.
step rustfmt-fuzz cargo fmt --manifest-path fuzz/Cargo.toml --check
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# The runtime without its default features (no metrics listener, no API client) must build
# warning-free too: embedding programs turn them off.
step clippy-lean cargo clippy -p conveyor-driver --no-default-features --locked -- -D warnings
step rustdoc env RUSTDOCFLAGS="${RUSTDOCFLAGS:+$RUSTDOCFLAGS }-D warnings" cargo doc --workspace --no-deps --locked

if [ "${#failed[@]}" -gt 0 ]; then
    echo "lint: failed: ${failed[*]}"
    exit 1
fi
echo "lint: all passed"
