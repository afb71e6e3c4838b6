#!/usr/bin/env bash
# Scale-out benchmark (issue 11): simulated agents against one and two hub instances on one
# PostgreSQL database (release build); see tests/src/bin/kho-loadgen.rs and docs/PERFORMANCE.md.
# Usage: tests/bench-scale.sh [AGENTS...]   (default: 100 1000 5000, each against 1 hub, and
#        1000 against 2 hubs, with each agent owning its dataset, then sharing five: the contention
#        case). Agents send heartbeats every 10 s (--heartbeat-s). Extra loadgen flags via
#        KHO_LOADGEN_FLAGS, e.g. KHO_LOADGEN_FLAGS="--changes 100 --batch 20 --interval-ms 0".
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p kho-hub -p kho-agent -p kho-tests --bins
bin="${CARGO_TARGET_DIR:-target}/release/kho-loadgen"
flags=${KHO_LOADGEN_FLAGS:-"--changes 100 --batch 20 --interval-ms 0"}
if [ $# -eq 0 ]; then set -- 100 1000 5000; fi
for n in "$@"; do
    # shellcheck disable=SC2086
    "$bin" bench --agents "$n" --hubs 1 $flags
    if [ "$n" = 1000 ]; then
        # shellcheck disable=SC2086
        "$bin" bench --agents "$n" --hubs 2 $flags
        # shellcheck disable=SC2086
        "$bin" bench --agents "$n" --hubs 2 --shared-datasets $flags
    fi
done
