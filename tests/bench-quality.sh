#!/usr/bin/env bash
# Data-quality benchmark (release build): the same initial sync without rules and with 10 rules,
# in one run; see tests/src/bin/kho-bench-quality.rs and docs/PERFORMANCE.md.
# Usage: tests/bench-quality.sh [--rows N] [--batch N] [--warehouse sqlite|postgres]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p kho-hub -p kho-agent -p kho-tests --bins
exec "${CARGO_TARGET_DIR:-target}/release/kho-bench-quality" "$@"
