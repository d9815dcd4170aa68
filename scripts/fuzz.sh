#!/usr/bin/env bash
# Fuzzes every parser that takes bytes from outside (fuzz/, its own cargo workspace; see
# fuzz/README.md), on the stable toolchain:
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]   each target for SECONDS (default 60)
#   bash scripts/fuzz.sh --replay [TARGET...]    each corpus and artifacts-found input once
#   bash scripts/fuzz.sh --smoke RUNS [TARGET...] replay, then RUNS mutations from a fixed seed
#                                                (-seed=1 -runs=RUNS: the same inputs every run,
#                                                stopped by count, never by the clock; CI uses it)
# 1. installs cargo-fuzz (cargo install --locked) and a C++ compiler (libFuzzer) when missing,
# 2. builds all targets with `cargo fuzz build --sanitizer none` (RUSTC_BOOTSTRAP=1 lets
#    stable rustc take the -Z flags cargo-fuzz may pass) into $FUZZ_TARGET_DIR (default
#    fuzz/target; CARGO_TARGET_DIR is not used, so the main build's artifacts are not churned),
# 3. runs each target from fuzz/corpus/<target> plus fuzz/artifacts-found/<target> (inputs of
#    past findings, replayed first), new inputs going to out/fuzz/corpus/<target>,
# 4. prints per target the executions reached (libFuzzer's stat::number_of_executed_units) and
#    exits non-zero if any target crashed, leaked past the RSS limit or timed out; the input
#    is in out/fuzz/artifacts/<target>/ and the log in out/fuzz/<target>.log.
# Past findings (fuzz/README.md, "Findings") are fixed in appliance code; the targets tolerate
# none of them, so replaying artifacts-found/ checks they stay fixed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/out/fuzz"
mkdir -p "$out"

say() { printf '\n==> %s\n' "$*"; }

replay=0
smoke=0
secs=60
if [ "${1:-}" = "--replay" ]; then
    replay=1
    shift
elif [ "${1:-}" = "--smoke" ]; then
    [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --smoke needs a number of runs" >&2; exit 2; }
    smoke="$2"
    shift 2
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    secs="$1"
    shift
fi

# ---------------------------------------------------------------- tools
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! command -v c++ >/dev/null 2>&1; then
    say "installing g++ (libFuzzer is C++)"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends g++; } >"$out/apt.log" 2>&1 ||
        { cat "$out/apt.log" >&2; echo "fuzz.sh: installing g++ failed" >&2; exit 1; }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "cargo install --locked cargo-fuzz"
    cargo install --locked cargo-fuzz --version '^0.13' >"$out/cargo-install.log" 2>&1 ||
        { tail -n 30 "$out/cargo-install.log" >&2; echo "fuzz.sh: installing cargo-fuzz failed" >&2; exit 1; }
fi

# ---------------------------------------------------------------- build
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$repo/fuzz/target}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$triple/release"
say "cargo fuzz build --sanitizer none (into $CARGO_TARGET_DIR)"
t0=$(date +%s)
if ! cargo fuzz build --fuzz-dir "$repo/fuzz" --sanitizer none >"$out/build.log" 2>&1; then
    tail -n 40 "$out/build.log" >&2
    echo "fuzz.sh: building the fuzz targets failed (log: out/fuzz/build.log)" >&2
    exit 1
fi
echo "built in $(($(date +%s) - t0)) s"

if (($#)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir "$repo/fuzz" | grep -vx gen_corpus)
fi

# ---------------------------------------------------------------- run
failed=()
summary=()
total0=$(date +%s)
for t in "${targets[@]}"; do
    exe="$bin_dir/$t"
    [ -x "$exe" ] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
    seeds=("$repo/fuzz/corpus/$t")
    if [ -d "$repo/fuzz/artifacts-found/$t" ]; then seeds+=("$repo/fuzz/artifacts-found/$t"); fi
    log="$out/$t.log"
    mkdir -p "$out/artifacts/$t"
    rc=0
    t1=$(date +%s)
    if ((replay)); then
        mapfile -t files < <(find "${seeds[@]}" -type f | sort)
        (cd "$out" && "$exe" -artifact_prefix="$out/artifacts/$t/" -rss_limit_mb=2048 -timeout=20 \
            -print_final_stats=1 "${files[@]}") >"$log" 2>&1 || rc=$?
    elif ((smoke)); then
        # libFuzzer writes new inputs to its first directory: an emptied one, so a smoke run
        # starts from the committed seeds only and its inputs depend on nothing but the commit.
        rm -rf "$out/smoke-corpus/$t" && mkdir -p "$out/smoke-corpus/$t"
        (cd "$out" && "$exe" "$out/smoke-corpus/$t" "${seeds[@]}" -seed=1 -runs="$smoke" -print_final_stats=1 \
            -artifact_prefix="$out/artifacts/$t/" -rss_limit_mb=2048 -timeout=20) >"$log" 2>&1 || rc=$?
    else
        mkdir -p "$out/corpus/$t"
        (cd "$out" && "$exe" "$out/corpus/$t" "${seeds[@]}" -max_total_time="$secs" -print_final_stats=1 \
            -artifact_prefix="$out/artifacts/$t/" -rss_limit_mb=2048 -timeout=20) >"$log" 2>&1 || rc=$?
    fi
    took=$(($(date +%s) - t1))
    execs="$({ grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" || true; } | tail -n1 | grep -o '[0-9]*$' || true)"
    if ((replay)); then execs="$({ grep -c '^Executed ' "$log" || true; })"; fi
    if ((rc)); then
        failed+=("$t")
        line="$(printf '%-15s FAILED (exit %d) after %s s' "$t" "$rc" "$took")"
        echo "$line"
        { grep -E "panicked at|^thread '|ERROR: libFuzzer|Test unit written|SUMMARY" "$log" || tail -n 20 "$log"; } | head -n 12 | sed 's/^/    /'
    else
        line="$(printf '%-15s %12s executions in %3s s' "$t" "${execs:-?}" "$took")"
        echo "$line"
    fi
    summary+=("$line")
done

say "summary ($(($(date +%s) - total0)) s for ${#targets[@]} targets, $(if ((replay)); then echo replay; elif ((smoke)); then echo "${smoke} runs each, seed 1"; else echo "${secs} s each"; fi))"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]} (inputs in out/fuzz/artifacts/, logs in out/fuzz/)"
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, none crashed"
