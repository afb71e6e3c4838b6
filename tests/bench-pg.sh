#!/usr/bin/env bash
# Initial-sync benchmark into PostgreSQL (release build) against `psql \copy` of the same rows:
# see tests/src/bin/kho-bench-pg.rs and docs/PERFORMANCE.md.
# Usage: tests/bench-pg.sh [--rows N] [--batch N] [--writers N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p kho-hub -p kho-agent -p kho-tests --bins
exec "${CARGO_TARGET_DIR:-target}/release/kho-bench-pg" "$@"
