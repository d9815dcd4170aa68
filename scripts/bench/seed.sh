#!/usr/bin/env bash
# Seeding benchmark: the same libtorrent downloader (python3-libtorrent, TCP only, uTP off)
# fetches the same release from `popseed seed` and from a libtorrent seeder (its own python
# process), in the same run, over loopback. Prints throughput and seeder CPU seconds per GiB
# served (utime+stime of the seeder process from /proc/<pid>/stat) for each, and the ratios.
# Goal: popseed >= libtorrent's throughput, <= half its CPU per GiB. The downloader keeps
# libtorrent's defaults otherwise, so it opens with an MSE/PE handshake to both seeders (both
# answer it and select plaintext).
#
#   scripts/bench.sh seed
# Env: POPSEED_BIN (default: builds target/release/popseed), BENCH_SIZE_MIB (default 512),
#      POPSEED_BENCH_DIR (default target/bench/seed), BENCH_ROUNDS (default 2, alternating).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
if [ -z "${POPSEED_BIN:-}" ]; then
    cargo build --release -q -p popseed
    POPSEED_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/popseed"
fi
export POPSEED_BIN
export BENCH_DIR="${POPSEED_BENCH_DIR:-${CARGO_TARGET_DIR:-$repo/target}/bench/seed}"
export BENCH_SIZE_MIB="${BENCH_SIZE_MIB:-512}"
export BENCH_ROUNDS="${BENCH_ROUNDS:-2}"
exec /usr/bin/python3 - <<'PY'
import os, shutil, signal, subprocess, sys, time
from pathlib import Path

import libtorrent as lt

BIN = os.environ["POPSEED_BIN"]
D = Path(os.environ["BENCH_DIR"])
SIZE = int(os.environ["BENCH_SIZE_MIB"]) << 20
ROUNDS = int(os.environ["BENCH_ROUNDS"])
TCK = os.sysconf("SC_CLK_TCK")
SETTINGS = {
    "listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
    "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
}


def sh(*a, **kw):
    return subprocess.run([str(x) for x in a], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK  # utime, stime


def wait_line(proc, prefix, timeout=60):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith(prefix):
            return lines
    sys.exit(f"seeder did not print {prefix!r}: {lines}")


# ---------------------------------------------------------------- setup
if D.exists():
    shutil.rmtree(D)
src = D / "bench-release"
src.mkdir(parents=True)
half = SIZE // 2
for name, n in (("disc1.img", half), ("disc2.img", SIZE - half)):
    with open(src / name, "wb") as f:
        left = n
        while left:
            k = min(left, 16 << 20)
            f.write(os.urandom(k))
            left -= k
sh(BIN, "keygen", "--out", D / "key")
sh(BIN, "publish", src, "--key", D / "key.key", "--out", D / "release", "--piece-size", "1MiB")
sh(BIN, "store", "--dir", D / "store", "import", D / "release", "--data", src)
torrent = D / "release" / "release.torrent"

# popseed seeder
box = subprocess.Popen([BIN, "seed", "--store", D / "store", "--listen", "127.0.0.1:0", "--no-tracker", "--no-lsd"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
lines = wait_line(box, "seeding")
box_port = int([l for l in lines if l.startswith("peers: ")][0].rsplit(":", 1)[1])

# libtorrent seeder: its own process, seeding the source folder in place. It checks every piece
# when the torrent is added, before any measurement (not seed mode: seed mode hashes each piece
# on its first request, which charged the libtorrent seeder's first round with hashing that our
# store did at import).
LT_SEEDER = r'''
import sys, time, libtorrent as lt
s = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
                "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False})
atp = lt.add_torrent_params(); atp.ti = lt.torrent_info(sys.argv[1]); atp.save_path = sys.argv[2]
h = s.add_torrent(atp)
while not h.status().is_seeding: time.sleep(0.05)
print("port", s.listen_port(), flush=True)
while True: time.sleep(3600)
'''
lts = subprocess.Popen(["/usr/bin/python3", "-c", LT_SEEDER, str(torrent), str(D)], stdout=subprocess.PIPE, text=True)
lt_port = int(wait_line(lts, "port")[-1].split()[1])

# Warm both seeders' page cache: the store's copy and the source are both read once.
for p in list((D / "store").rglob("*.img")) + list(src.glob("*.img")):
    with open(p, "rb") as f:
        while f.read(16 << 20):
            pass


def download(port, pid, label):
    dest = D / f"dl-{label}"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir()
    ses = lt.session(SETTINGS)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(str(torrent))
    atp.save_path = str(dest)
    h = ses.add_torrent(atp)
    while h.status().state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
        time.sleep(0.01)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    h.connect_peer(("127.0.0.1", port))
    deadline = t0 + 600
    while not h.status().is_seeding:
        if time.monotonic() > deadline:
            sys.exit(f"{label}: download did not finish in 600 s")
        ses.wait_for_alert(50)
        ses.pop_alerts()
    t1, c1 = time.monotonic(), cpu_seconds(pid)
    ses.remove_torrent(h)
    del ses
    shutil.rmtree(dest)
    return t1 - t0, c1 - c0


results = {"popseed": [], "libtorrent": []}
try:
    for r in range(ROUNDS):
        order = [("popseed", box_port, box.pid), ("libtorrent", lt_port, lts.pid)]
        if r % 2:
            order.reverse()
        for label, port, pid in order:
            results[label].append(download(port, pid, label))
finally:
    for p in (box, lts):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()

gib = SIZE / (1 << 30)
summary = {}
print(f"seed benchmark: {SIZE >> 20} MiB release, {ROUNDS} round(s) per seeder, loopback, TCP only, libtorrent {lt.__version__} downloader")
for label, runs in results.items():
    secs = sum(t for t, _ in runs) / len(runs)
    cpu = sum(c for _, c in runs) / len(runs)
    mibs = (SIZE >> 20) / secs
    cpu_gib = cpu / gib
    summary[label] = (mibs, cpu_gib)
    per_run = ", ".join(f"{(SIZE >> 20) / t:.0f} MiB/s {c / gib:.2f} cpu-s/GiB" for t, c in runs)
    print(f"  {label:<10} {mibs:8.1f} MiB/s  {cpu_gib:6.2f} CPU s/GiB   ({per_run})")
tp = summary["popseed"][0] / summary["libtorrent"][0]
cr = summary["popseed"][1] / summary["libtorrent"][1] if summary["libtorrent"][1] else float("inf")
print(f"  ratios: throughput popseed/libtorrent = {tp:.2f} (goal >= 1.0), CPU per GiB popseed/libtorrent = {cr:.2f} (goal <= 0.5)")
PY
