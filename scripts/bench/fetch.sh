#!/usr/bin/env bash
# scripts/bench.sh fetch: fill throughput of `popseed agent` from one `popseed origin` on
# loopback, against the ceiling measured in the same run: a raw quinn bulk transfer of the same
# bytes (the release's data file, read into the ceiling server's memory before it listens)
# between two processes with the same TLS and transport settings
# (appliance/origin/examples/quic_ceiling.rs), on 8 streams. A second ceiling sends one 1 MiB
# buffer over and over instead, which stays in the CPU cache (the ceiling earlier runs used);
# the ratio against it is printed too.
# The ceilings are timed from their connection being up to the last byte received; the fill
# from the job start (the release added to the fill, before the QUIC handshake) to every piece
# verified and durable (the agent's fill_ms); the agent's process start to exit is printed too.
# Also prints the time to the first critical piece. Env: POPSEED_BENCH_MIB (default 512).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
mib="${POPSEED_BENCH_MIB:-512}"
cargo build -q --release -p popseed
cargo build -q --release -p popseed-origin --example quic_ceiling
target="${CARGO_TARGET_DIR:-$repo/target}"
bin="$target/release/popseed"
ceiling="$target/release/examples/quic_ceiling"
mkdir -p "$target/bench"
work="$(mktemp -d "$target/bench/fetch.XXXXXX")"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/src/bench"
head -c $((mib << 20)) /dev/urandom > "$work/src/bench/data.bin"
"$bin" keygen --out "$work/keys/pub" >/dev/null
"$bin" publish "$work/src/bench" --key "$work/keys/pub.key" --out "$work/rel" --piece-size 1MiB --critical 'data.bin:8MiB' >/dev/null 2>&1
cat "$work/src/bench/data.bin" > /dev/null  # warm the origin's page cache
# write the set-up data back now, so its writeback does not compete with the box's fdatasyncs
sync

# --- ceilings: the release's bytes, and one cached buffer
ceiling_run() { # ceiling_run NAME [FILE]: prints MiB/s
  "$ceiling" server 127.0.0.1:0 "${@:2}" > "$work/$1.out" & pids+=($!)
  for _ in $(seq 400); do grep -q listening "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
  read -r _ caddr cfp < "$work/$1.out"
  "$ceiling" client "$caddr" "$cfp" $((mib << 20)) 8 | awk '{print $2}'
  kill "${pids[-1]}" 2>/dev/null || true
}
ceil=$(ceiling_run ceiling "$work/src/bench/data.bin")
ceil_hot=$(ceiling_run ceiling-hot)

# --- popseed origin + agent
port=$((20000 + RANDOM % 20000))
"$bin" origin --listen "127.0.0.1:$port" --self-signed --release "$work/rel=$work/src/bench" > "$work/origin.out" & pids+=($!)
for _ in $(seq 100); do grep -q "certificate sha256" "$work/origin.out" 2>/dev/null && break; sleep 0.05; done
fp=$(awk '/certificate sha256/ {print $3}' "$work/origin.out")
mkdir -p "$work/box"
pubkey=$(grep -o '"publisher_key": *"ed25519:[^"]*"' "$work/rel/manifest.json" | grep -o 'ed25519:[^"]*')
cat > "$work/box/agent.toml" <<TOML
status_file = "status.json"
trusted_keys = ["$pubkey"]
[store]
dir = "store"
min_free = "64MiB"
[[origins]]
address = "127.0.0.1:$port"
fingerprint = "$fp"
[[releases]]
dir = "$work/rel"
TOML
start=$(date +%s.%N)
"$bin" agent --config "$work/box/agent.toml" --exit-when-complete
end=$(date +%s.%N)
proc=$(python3 -c "print(f'{$mib / ($end - $start):.1f}')")
read -r first fill_ms < <(python3 -c "import json; r = json.load(open('$work/box/status.json'))['releases'][0]; print(r['first_critical_ms'], r['fill_ms'])")
fill=$(python3 -c "print(f'{$mib / ($fill_ms / 1000):.1f}')")
echo "fetch bench: $mib MiB release, 1 MiB pieces, one origin on loopback"
echo "  raw quinn bulk (8 streams)     $ceil MiB/s (the release's bytes from memory; connected to last byte received)"
echo "  raw quinn, one cached buffer   $ceil_hot MiB/s"
echo "  popseed fill                   $fill MiB/s (job start, before connecting, to every piece verified and durable)"
echo "  ratio                          $(python3 -c "print(f'{$fill / $ceil:.2f}')") (against the cached buffer: $(python3 -c "print(f'{$fill / $ceil_hot:.2f}')"))"
echo "  with agent start and exit      $proc MiB/s, ratio $(python3 -c "print(f'{$proc / $ceil:.2f}')") (process start to exit)"
echo "  first critical piece after     ${first} ms"
