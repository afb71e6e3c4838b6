#!/usr/bin/env bash
# Source benchmark (release build): 1M-row initial sync and 1 %-changed snapshot diff from the local
# PostgreSQL and MariaDB, against their own clients dumping the table. See
# tests/src/bin/kho-bench-sources.rs and docs/PERFORMANCE.md.
# Usage: tests/bench-sources.sh [--rows N] [--source postgres|mysql|both]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p kho-hub -p kho-agent -p kho-tests --bins
exec target/release/kho-bench-sources "$@"
