#!/usr/bin/env bash
# The main job: set up what is missing (the broker, the Python packages), build the binary and
# run the whole platform with the simulator: `lakehouse up --simulate` on a local lake at
# ./data/lake (LAKE=... to move it), a local broker beside it, the gRPC API on 127.0.0.1:50051
# and metrics on http://127.0.0.1:9464/metrics. Ctrl-C stops it cleanly; running it again
# continues where it stopped. RUN_SECONDS=N stops it after N seconds (as Ctrl-C would).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export LAKEHOUSE_CACHE="${LAKEHOUSE_CACHE:-$HOME/.cache/lakehouse}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LAKEHOUSE_CACHE/target}"
lake="${LAKE:-./data/lake}"

scripts/setup.sh
# LAKEHOUSE_BIN: a lakehouse binary built already (the tests pass theirs)
bin="${LAKEHOUSE_BIN:-}"
if [[ -z "$bin" ]]; then
    echo "building lakehouse (the first build of the dependency tree takes a while)..."
    cargo build --locked -p lakehouse
    bin="$CARGO_TARGET_DIR/debug/lakehouse"
fi

mkdir -p "$(dirname "$lake")"
if [[ -n "${RUN_SECONDS:-}" ]]; then
    # SIGTERM after RUN_SECONDS: the same clean stop as Ctrl-C, and up's own exit status
    timeout --preserve-status --signal=TERM "$RUN_SECONDS" "$bin" up --simulate --lake "$lake"
else
    exec "$bin" up --simulate --lake "$lake"
fi
