#!/usr/bin/env bash
# Benchmarks, each against a reference measured in the same run (ratios, never bare times):
#   scripts/bench.sh store   store put/read vs plain pwrite+fdatasync/pread (>= 1 GiB)
# Env knobs are documented in each benchmark's source.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
what="${1:-}"
case "$what" in
    store)
        # Under target/ so the files land on the same disk as the build, not a tmpfs.
        mkdir -p target/bench
        POPSEED_BENCH_DIR="${POPSEED_BENCH_DIR:-$repo/target/bench}" \
            cargo bench -q -p popseed-store --bench store_vs_pwrite
        ;;
    *)
        echo "usage: scripts/bench.sh store" >&2
        exit 2
        ;;
esac
