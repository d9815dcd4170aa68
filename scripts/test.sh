#!/usr/bin/env bash
# The whole popseed test suite, on a Debian bookworm machine with the Rust toolchain:
#   bash scripts/test.sh
# 1. installs the Debian packages the real-client tests need (only when missing),
# 2. checks formatting, lints and the crate layers (cargo fmt --check, cargo clippy -D warnings,
#    scripts/check-layers.py),
# 3. builds $CARGO_TARGET_DIR/release/popseed (default target/),
# 4. runs the Rust tests (cargo test --workspace --release),
# 5. runs the black-box tests with Debian's /usr/bin/python3 (the pyenv python cannot import
#    libtorrent), against $POPSEED_BIN.
# Artifacts (pytest temp dirs, JUnit XML, logs) go to out/test/. Exits non-zero if anything fails.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/out/test"
mkdir -p "$out"

say() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------- Debian packages
mapfile -t debs < <(grep -vE '^\s*(#|$)' "$repo/scripts/deps/debian.txt")
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    if ! { "${sudo[@]}" apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$out/apt.log" 2>&1; then
        cat "$out/apt.log" >&2
        echo "test.sh: installing ${missing[*]} failed" >&2
        exit 1
    fi
fi
py=/usr/bin/python3
"$py" -c 'import libtorrent, pytest' || { echo "test.sh: $py cannot import libtorrent/pytest" >&2; exit 1; }

# ---------------------------------------------------------------- npm packages
# Each tests/*/package.json (with its package-lock.json) gets its node_modules installed.
for pj in tests/*/package.json; do
    [ -e "$pj" ] || continue
    d="$(dirname "$pj")"
    if [ ! -d "$d/node_modules" ] || [ "$pj" -nt "$d/node_modules" ]; then
        say "npm install in $d"
        (cd "$d" && npm install --no-audit --no-fund --loglevel=error) >"$out/npm-$(basename "$d").log" 2>&1 ||
            { cat "$out/npm-$(basename "$d").log" >&2; echo "test.sh: npm install in $d failed" >&2; exit 1; }
    fi
done

# ---------------------------------------------------------------- format and lints
# Both fail the run before anything else is built: a tree that is not formatted or not
# clippy-clean does not land.
say "cargo fmt --all -- --check"
cargo fmt --all -- --check || { echo "test.sh: the tree is not formatted (run cargo fmt --all)" >&2; exit 1; }
say "cargo clippy --workspace --all-targets --release -- -D warnings"
cargo clippy --workspace --all-targets --release -- -D warnings
say "crate layers (scripts/check-layers.py)"
python3 scripts/check-layers.py

# ---------------------------------------------------------------- build
target="${CARGO_TARGET_DIR:-$repo/target}"
say "cargo build --release -p popseed (into $target)"
cargo build --release -p popseed
export POPSEED_BIN="$target/release/popseed"

# ---------------------------------------------------------------- tests
# Run every suite even if an earlier one fails, then report them all.
fuzz_runs=20000
say "cargo test --workspace --release"
cargo_rc=0
cargo test --workspace --release 2>&1 | tee "$out/cargo-test.log" || cargo_rc=$?

say "pytest (tests/, $py)"
py_rc=0
PYTHONDONTWRITEBYTECODE=1 "$py" -m pytest tests/ -v \
    --basetemp="$out/pytest-tmp" --junitxml="$out/pytest-junit.xml" 2>&1 |
    tee "$out/pytest.log" || py_rc=$?

# Every parser of outside bytes: its corpus and past findings replayed, then 20000 mutations
# from a fixed seed (scripts/fuzz.sh --smoke; stops by count, so the run is the same each time).
say "fuzz smoke (scripts/fuzz.sh --smoke $fuzz_runs)"
fuzz_rc=0
bash scripts/fuzz.sh --smoke "$fuzz_runs" 2>&1 | tee "$out/fuzz.log" || fuzz_rc=$?

# ---------------------------------------------------------------- summary
cargo_sum="$({ grep -E '^test result:' "$out/cargo-test.log" || true; } |
    awk '{p+=$4; f+=$6; i+=$8} END {printf "%d passed, %d failed, %d ignored", p, f, i}')"
py_sum="$({ grep -E '^=+ .* in [0-9.]+s' "$out/pytest.log" || true; } | tail -n1 | sed -E 's/^=+ //; s/ =+$//')"
say "summary"
echo "cargo test: ${cargo_sum} in libtest binaries (exit ${cargo_rc})"
echo "pytest:     ${py_sum:-no summary} (exit ${py_rc})"
fuzz_sum="$({ grep -E '^fuzz.sh: ' "$out/fuzz.log" || true; } | tail -n1 | sed 's/^fuzz.sh: //')"
echo "fuzz smoke: ${fuzz_sum:-no summary} (${fuzz_runs} runs each, exit ${fuzz_rc})"
# One plain closing line over both suites.
totals="$({ grep -E '^test result:' "$out/cargo-test.log" || true; } | awk '{p+=$4; f+=$6} END {print p+0, f+0}')"
read -r cp cf <<<"$totals"
pp="$({ grep -oE '[0-9]+ passed' <<<"${py_sum:-}" || true; } | awk '{s+=$1} END {print s+0}')"
pf="$({ grep -oE '[0-9]+ (failed|error)' <<<"${py_sum:-}" || true; } | awk '{s+=$1} END {print s+0}')"
# custom-harness test binaries (e.g. the store crash test) close with "N passed, N failed"
read -r hp hf <<<"$({ grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out/cargo-test.log" || true; } | awk '{p+=$1; f+=$3} END {print p+0, f+0}')"
cp=$((cp + hp)); cf=$((cf + hf))
if ((cargo_rc || py_rc || fuzz_rc)); then
    echo "test.sh: FAILED (logs in out/test/)"
    echo "total: $((cp + pp)) passed, $((cf + ${pf:-0})) failed"
    exit 1
fi
echo "test.sh: all tests passed"
echo "total: $((cp + pp)) passed, $((cf + ${pf:-0})) failed"
