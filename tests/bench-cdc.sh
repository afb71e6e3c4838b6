#!/usr/bin/env bash
# CDC benchmark (release build): change → warehouse latency under a steady load and the highest
# sustained change rate, from the local PostgreSQL (wal_level = logical). See
# tests/src/bin/kho-bench-cdc.rs and docs/PERFORMANCE.md.
# Usage: tests/bench-cdc.sh [--rate 1000] [--seconds 30] [--max-rate 32000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p kho-hub -p kho-agent -p kho-tests --bins
exec target/release/kho-bench-cdc "$@"
