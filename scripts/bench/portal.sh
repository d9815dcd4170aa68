#!/usr/bin/env bash
# Portal download throughput against nginx, measured the same way in the same run:
#   scripts/bench.sh portal            (or: bash scripts/bench/portal.sh)
# 64 concurrent clients (wrk -c 64, keep-alive, each downloading the same 256 MiB file over
# and over) against `popseed portal` serving it from its piece store, then against an
# unprivileged temporary nginx (sendfile on) serving the same bytes from disk, both on loopback.
# The two sides alternate for ROUNDS rounds (the machine is shared: alternating spreads load
# changes over both); prints MiB/s per round, the mean of each side and the ratio portal/nginx
# of the means (goal: >= 0.9).
# Env knobs: POPSEED_BIN (default: cargo build --release), SIZE_MIB (256), CLIENTS (64),
# DURATION (10s per side and round), ROUNDS (3), THREADS (wrk threads, 2),
# BENCH_DIR (default: a temp dir under target/bench).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
size_mib="${SIZE_MIB:-256}"
clients="${CLIENTS:-64}"
duration="${DURATION:-10s}"
rounds="${ROUNDS:-3}"
threads="${THREADS:-2}"
for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "portal.sh: $tool is missing (scripts/deps/debian.txt)" >&2; exit 1; }
done
target="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "${POPSEED_BIN:-}" ]; then
    cargo build -q --release -p popseed
    POPSEED_BIN="$target/release/popseed"
fi
mkdir -p "$target/bench"
work="${BENCH_DIR:-$(mktemp -d "$target/bench/portal.XXXXXX")}"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "==> ${size_mib} MiB file, ${clients} clients, ${rounds} rounds of ${duration} per side (work dir $work)"
mkdir -p "$work/src/bench" "$work/keys"
head -c "$((size_mib << 20))" /dev/urandom >"$work/src/bench/big.bin"
"$POPSEED_BIN" keygen --out "$work/keys/k" >/dev/null
"$POPSEED_BIN" publish "$work/src/bench" --key "$work/keys/k.key" --out "$work/release" --name bench >/dev/null
"$POPSEED_BIN" store --dir "$work/store" --min-free 0 import "$work/release" --data "$work/src/bench" >/dev/null
ih="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifest"]["infohash"])' "$work/release/manifest.json")"

# ---- popseed portal
pport="$(free_port)"; dport="$(free_port)"
"$POPSEED_BIN" portal --store "$work/store" --http "127.0.0.1:$pport" --dns "127.0.0.1:$dport" \
    --portal-ip 127.0.0.1 --max-per-client "$((clients * 2))" --max-total "$((clients * 4))" \
    >"$work/portal.log" 2>&1 &
pids+=($!)

# ---- nginx, unprivileged, its own config and temp paths
nport="$(free_port)"
mkdir -p "$work/nginx"
user_line=""
if [ "$(id -u)" -eq 0 ]; then
    # As root the workers drop to nobody: let them read the file.
    user_line="user nobody nogroup;"
    chmod 755 "$work" "$work/src" "$work/src/bench"; chmod 644 "$work/src/bench/big.bin"
    chmod 777 "$work/nginx"
fi
cat >"$work/nginx/nginx.conf" <<CONF
$user_line
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 127.0.0.1:$nport;
        root $work/src/bench;
    }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/nginx/stdout.log" 2>&1 &
pids+=($!)

purl="http://127.0.0.1:$pport/files/$ih/bench/big.bin"
nurl="http://127.0.0.1:$nport/big.bin"
for u in "$purl" "$nurl"; do
    for _ in $(seq 100); do curl -fsS -o /dev/null -r 0-0 "$u" 2>/dev/null && break; sleep 0.1; done
done
# Same bytes on both sides, and warm page cache for both.
a="$(curl -fsS "$purl" | sha256sum | cut -d' ' -f1)"
b="$(curl -fsS "$nurl" | sha256sum | cut -d' ' -f1)"
[ "$a" = "$b" ] || { echo "portal.sh: portal and nginx serve different bytes" >&2; exit 1; }

measure() { # URL -> MiB/s (wrk's Transfer/sec, normalised)
    wrk -t "$threads" -c "$clients" -d "$duration" --timeout 120s "$1" >"$work/wrk.$2.log" 2>&1
    python3 - "$work/wrk.$2.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"Transfer/sec:\s*([\d.]+)([KMGT]?B)", text)
if not m:
    sys.exit("no Transfer/sec in wrk output:\n" + text)
mult = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024**2}[m.group(2)]
print(f"{float(m.group(1)) * mult:.1f}")
PY
}
ps=(); ns=()
for r in $(seq "$rounds"); do
    ps+=("$(measure "$purl" "portal.$r")")
    ns+=("$(measure "$nurl" "nginx.$r")")
    echo "round $r: portal ${ps[-1]} MiB/s, nginx ${ns[-1]} MiB/s"
done
python3 - "${ps[*]}" "${ns[*]}" <<'PY'
import sys
p = [float(x) for x in sys.argv[1].split()]
n = [float(x) for x in sys.argv[2].split()]
mp, mn = sum(p) / len(p), sum(n) / len(n)
print(f"portal: {mp:.1f} MiB/s (mean of {len(p)})")
print(f"nginx:  {mn:.1f} MiB/s (mean of {len(n)})")
print(f"ratio (portal/nginx): {mp / mn:.3f} (goal >= 0.9)")
PY
if grep -h "Socket errors" "$work"/wrk.*.log; then echo "portal.sh: wrk saw socket errors (above)"; fi
