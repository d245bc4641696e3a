#!/usr/bin/env bash
# Runs every test of the workspace: unit, UI (trybuild), doc and end-to-end tests. The
# end-to-end tests start their own nats-server processes on loopback.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-nats-server.sh
cargo test --workspace --locked
