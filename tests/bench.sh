#!/usr/bin/env bash
# Initial-sync benchmark (release build): see tests/src/bin/kho-bench.rs and docs/PERFORMANCE.md.
# Usage: tests/bench.sh [--rows N] [--fast-poll] [--transport https|mqtt] [--samples N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p kho-hub -p kho-agent -p kho-tests --bins
exec target/release/kho-bench "$@"
