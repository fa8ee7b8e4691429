#!/usr/bin/env bash
# The test command: set-up, formatting, lints, every test (unit, integration against real
# broker and S3 server processes, Python readers) and the doc tests.
#
# Only the tests themselves need what the set-up installs (the broker, the venv), so on a
# fresh machine the set-up (tansu from source: the longest single step) runs in the
# background beside fmt, clippy and the test build, and the tests wait for it. Its output
# is shown when it ends.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export LAKEHOUSE_CACHE="${LAKEHOUSE_CACHE:-$HOME/.cache/lakehouse}"
# one shared target dir outside the clone, so CI and later runs reuse the build
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LAKEHOUSE_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n=== %s [%s]\n' "$*" "$(date +%H:%M:%S)"; }
start=$SECONDS

mkdir -p "$LAKEHOUSE_CACHE"
setup_log="$LAKEHOUSE_CACHE/setup.log"
step "set-up, in the background (log: $setup_log)"
# its own session, so that an early exit below stops the whole install (cargo included);
# an interrupted tansu install resumes from its kept target dir next time
setsid scripts/setup.sh >"$setup_log" 2>&1 &
setup_pid=$!
setup_done=0
stop_setup() {
    if [[ $setup_done -eq 0 ]]; then
        kill -TERM -- "-$setup_pid" 2>/dev/null || true
    fi
}
trap stop_setup EXIT

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

nextest=0
if cargo nextest --version >/dev/null 2>&1; then
    nextest=1
else
    echo "cargo-nextest not found; using cargo test"
fi

step "test build"
if [[ $nextest -eq 1 ]]; then
    cargo nextest run --workspace --locked --profile ci --no-run
else
    cargo test --workspace --all-targets --locked --no-run
fi

step "waiting for the set-up"
set +e
wait "$setup_pid"
setup_rc=$?
set -e
setup_done=1
cat "$setup_log"
if [[ $setup_rc -ne 0 ]]; then
    echo "set-up failed (exit $setup_rc); its log is above" >&2
    exit 1
fi

step "tests"
if [[ $nextest -eq 1 ]]; then
    cargo nextest run --workspace --locked --profile ci
else
    cargo test --workspace --all-targets --locked
fi

step "doc tests"
cargo test --workspace --doc --locked

step "all checks passed in $((SECONDS - start)) s"
