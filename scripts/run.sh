#!/usr/bin/env bash
# The main job, until `lakehouse up` exists: build the binary, load the example reference data
# into a local lake, and show what the lake holds. Re-running it adds a new version of each
# reference table (time travel keeps the old ones).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export LAKEHOUSE_CACHE="${LAKEHOUSE_CACHE:-$HOME/.cache/lakehouse}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LAKEHOUSE_CACHE/target}"
lake="${LAKE:-./data/lake}"

echo "building lakehouse (first build of the dependency tree takes a while)..."
cargo build --locked -p lakehouse
bin="$CARGO_TARGET_DIR/debug/lakehouse"

"$bin" refdata load --lake "$lake" \
    --instruments examples/refdata/instruments.csv \
    --accounts examples/refdata/accounts.csv \
    --fx examples/refdata/fx_rates.csv
echo
"$bin" table list --lake "$lake"
echo
"$bin" table history --lake "$lake" l1/ref_fx_rates --limit 5
echo
"$bin" table describe --lake "$lake" l1/ref_instruments
