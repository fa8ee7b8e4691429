#!/usr/bin/env bash
# Environment set-up for lakehouse: idempotent, skips whatever is already installed.
#
# Installs, under $LAKEHOUSE_CACHE (default ~/.cache/lakehouse):
#   tools/bin/tansu  the Kafka-compatible broker (crates.io), with its in-memory engine
#                    (feature dynostore, for fast tests) and its SQLite engine (feature libsql,
#                    durable, for restart tests). Built once from source (~17 min on 2 cores).
#   venv/            a Python venv with moto's S3 server, the outside readers (deltalake,
#                    pyarrow, polars) and grpcio for the example client, from
#                    scripts/requirements.txt.
# and the openssl command (Debian package) when it is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${LAKEHOUSE_CACHE:-$HOME/.cache/lakehouse}"
TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql
mkdir -p "$CACHE"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
# the TLS test makes its certificates with the openssl command
if ! command -v openssl >/dev/null; then
    log "installing openssl (the TLS test's certificates)"
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq openssl >/dev/null
    else
        echo "openssl is required (apt-get install openssl)" >&2
        exit 1
    fi
fi

# --- tansu broker ---------------------------------------------------------------------------
tansu="$CACHE/tools/bin/tansu"
stamp="$CACHE/tools/tansu.stamp"
want="tansu $TANSU_VERSION features=$TANSU_FEATURES"
if [[ -x "$tansu" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "tansu $TANSU_VERSION already installed at $tansu"
else
    log "installing tansu $TANSU_VERSION ($TANSU_FEATURES) from crates.io; this takes a while once"
    # a kept target dir lets an interrupted install resume where it stopped
    CARGO_TARGET_DIR="$CACHE/build/tansu" cargo install tansu --version "$TANSU_VERSION" \
        --locked --features "$TANSU_FEATURES" --root "$CACHE/tools" --force
    echo "$want" > "$stamp"
    rm -rf "$CACHE/build/tansu"
    log "tansu installed"
fi

# --- Python venv: moto S3 server + outside readers --------------------------------------------
venv="$CACHE/venv"
req="$here/requirements.txt"
req_stamp="$venv/.requirements.sha256"
req_hash="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$req_stamp" && "$(cat "$req_stamp")" == "$req_hash" ]]; then
    log "python venv up to date at $venv"
else
    log "installing python packages into $venv"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$req_hash" > "$req_stamp"
    log "python packages installed"
fi

log "environment ready (cache: $CACHE)"
