#!/usr/bin/env bash
# Benchmarks, each against a reference measured in the same run (ratios, never bare times):
#   scripts/bench.sh store   store put/read vs plain pwrite+fdatasync/pread (>= 1 GiB)
#   scripts/bench.sh NAME    runs scripts/bench/NAME.sh (fetch, seed, portal, ...)
# Env knobs are documented in each benchmark's source.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
what="${1:-}"
case "$what" in
    store)
        # Under the target dir so the files land on the same disk as the build, not a tmpfs.
        target="${CARGO_TARGET_DIR:-$repo/target}"
        mkdir -p "$target/bench"
        POPSEED_BENCH_DIR="${POPSEED_BENCH_DIR:-$target/bench}" \
            cargo bench -q -p popseed-store --bench store_vs_pwrite
        ;;
    *)
        if [ -n "$what" ] && [ -f "scripts/bench/$what.sh" ]; then
            exec bash "scripts/bench/$what.sh" "${@:2}"
        fi
        echo "usage: scripts/bench.sh store|$(ls scripts/bench 2>/dev/null | sed 's/\.sh$//' | paste -sd'|')" >&2
        exit 2
        ;;
esac
