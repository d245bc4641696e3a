#!/usr/bin/env bash
# Runs every test of the workspace: unit, UI (trybuild), doc and end-to-end tests. The
# end-to-end tests start their own nats-server processes on loopback.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NATS_SERVER="$(bash scripts/install-nats-server.sh)"
export NATS_SERVER
echo "using $NATS_SERVER ($("$NATS_SERVER" --version))"
cargo test --workspace --locked
