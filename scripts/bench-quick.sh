#!/usr/bin/env bash
# Smoke check of the benchmark: builds it (with `hello` and `raw-hello`, for the binary-size
# section) and runs `--quick`, one run of every section at a tiny N, in under a minute. The
# figures of a quick run mean nothing; that every section runs and prints its table does.
#
#   bash scripts/bench-quick.sh
#
# It builds the dev profile by default, the one the tests have already built, so CI pays for
# little more than the benchmark crate. BENCH_PROFILE=release builds and runs the release
# profile instead (what a measurement uses). Extra arguments go to the benchmark.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile=${BENCH_PROFILE:-dev}
NATS_SERVER="$(bash scripts/install-nats-server.sh)"
export NATS_SERVER
# Two builds, not one: built together, the packages would share conveyor-driver's features,
# and the benchmark's runtime would carry the examples' (otel, schemars).
cargo build --locked --profile "$profile" -p conveyor-driver-bench --bins
cargo build --locked --profile "$profile" -p conveyor-driver-examples --bin hello
dir=$profile
[ "$profile" = dev ] && dir=debug
"${CARGO_TARGET_DIR:-target}/$dir/conveyor-bench" --quick "$@"
