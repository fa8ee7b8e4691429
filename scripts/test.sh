#!/usr/bin/env bash
# The test command: set-up, formatting, lints, every test (unit, integration against real
# broker and S3 server processes, Python readers) and the doc tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export LAKEHOUSE_CACHE="${LAKEHOUSE_CACHE:-$HOME/.cache/lakehouse}"
# one shared target dir outside the clone, so CI and later runs reuse the build
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LAKEHOUSE_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n=== %s [%s]\n' "$*" "$(date +%H:%M:%S)"; }
start=$SECONDS

step "set-up"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --profile ci
else
    echo "cargo-nextest not found; using cargo test"
    cargo test --workspace --all-targets --locked
fi

step "doc tests"
cargo test --workspace --doc --locked

step "all checks passed in $((SECONDS - start)) s"
