#!/usr/bin/env bash
# The box as a BitTorrent downloader: `popseed agent` (no origin, no web seed, the seeder named in
# `[fetch] peers`, --exit-when-complete) fills a release from a libtorrent seeder, against a
# libtorrent downloader (python3-libtorrent, TCP, its own process) fetching the same release from
# the same seeder, alternating, in the same run on loopback. Each side's CPU time is its own
# process's (utime + stime from /proc); the seeder runs in this script's process. Prints each
# download, then last:
#
#   throughput ratio R   box MB/s / libtorrent MB/s (goal >= 1.0)
#   cpu ratio C          box CPU seconds per GiB / libtorrent's (goal <= 0.5)
#
#   scripts/bench.sh leech
# Env: POPSEED_BIN (default: builds target/release/popseed), BENCH_SIZE_MIB (default 512),
#      POPSEED_BENCH_DIR (default target/bench/leech), BENCH_ROUNDS (default 2).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
if [ -z "${POPSEED_BIN:-}" ]; then
    cargo build --release -q -p popseed
    POPSEED_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/popseed"
fi
export POPSEED_BIN
export BENCH_DIR="${POPSEED_BENCH_DIR:-${CARGO_TARGET_DIR:-$repo/target}/bench/leech}"
export BENCH_SIZE_MIB="${BENCH_SIZE_MIB:-512}"
export BENCH_ROUNDS="${BENCH_ROUNDS:-2}"
exec /usr/bin/python3 - <<'PY'
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import libtorrent as lt

BIN = os.environ["POPSEED_BIN"]
D = Path(os.environ["BENCH_DIR"])
SIZE = int(os.environ["BENCH_SIZE_MIB"]) << 20
ROUNDS = int(os.environ["BENCH_ROUNDS"])
SETTINGS = {
    "listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
    "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
}
TCK = os.sysconf("SC_CLK_TCK")


def sh(*a):
    return subprocess.run([str(x) for x in a], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def watch(proc, label):
    """Waits for `proc` to exit, sampling its CPU time just before (a zombie keeps /proc/PID/stat)."""
    t0, cpu = time.monotonic(), 0.0
    while proc.poll() is None:
        try:
            cpu = cpu_seconds(proc.pid)
        except FileNotFoundError:
            break
        time.sleep(0.02)
        if time.monotonic() - t0 > 900:
            proc.kill()
            sys.exit(f"{label}: did not finish in 900 s")
    if proc.returncode != 0:
        sys.exit(f"{label} exited {proc.returncode}: {proc.stderr.read()[-3000:] if proc.stderr else ''}")
    return time.monotonic() - t0, cpu


# ---------------------------------------------------------------- setup
if D.exists():
    shutil.rmtree(D)
src = D / "bench-release"
src.mkdir(parents=True)
with open(src / "disc.img", "wb") as f:
    left = SIZE
    while left:
        k = min(left, 16 << 20)
        f.write(os.urandom(k))
        left -= k
sh(BIN, "keygen", "--out", D / "key")
sh(BIN, "publish", src, "--key", D / "key.key", "--out", D / "release", "--piece-size", "256KiB")
torrent = D / "release" / "release.torrent"
pubkey = json.loads((D / "release" / "manifest.json").read_text())["manifest"]["publisher_key"]

seeder = lt.session(SETTINGS)
atp = lt.add_torrent_params()
atp.ti = lt.torrent_info(str(torrent))
atp.save_path = str(D)
sh_ = seeder.add_torrent(atp)
deadline = time.monotonic() + 600
while not sh_.status().is_seeding:
    if time.monotonic() > deadline:
        sys.exit("the libtorrent seeder did not check its data in 600 s")
    seeder.wait_for_alert(100)
    seeder.pop_alerts()
port = seeder.listen_port()
for p in src.rglob("*.img"):  # warm the page cache
    with open(p, "rb") as f:
        while f.read(16 << 20):
            pass

LT_DOWNLOADER = r'''
import sys, time
import libtorrent as lt
torrent, dest, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ses = lt.session({"listen_interfaces": "127.0.0.2:0", "enable_dht": False, "enable_lsd": False,
                  "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False,
                  "enable_incoming_utp": False})
atp = lt.add_torrent_params()
atp.ti = lt.torrent_info(torrent)
atp.save_path = dest
h = ses.add_torrent(atp)
h.connect_peer(("127.0.0.1", port))
while not h.status().is_seeding:
    ses.wait_for_alert(50)
    ses.pop_alerts()
'''


def lt_download(n):
    dest = D / f"lt-{n}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    p = subprocess.Popen(["/usr/bin/python3", "-c", LT_DOWNLOADER, str(torrent), str(dest), str(port)],
                         stderr=subprocess.PIPE, text=True)
    wall, cpu = watch(p, "libtorrent downloader")
    shutil.rmtree(dest, ignore_errors=True)
    return wall, cpu


def box_download(n):
    work = D / f"box-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "agent.toml").write_text(f"""
trusted_keys = ["{pubkey}"]
[store]
dir = "store"
min_free = "64MiB"
[fetch]
peers = ["127.0.0.1:{port}"]
venue_grace = "0s"
[[releases]]
dir = "{D / 'release'}"
[swarm]
listen = "127.0.0.3:0"
tracker_listen = "127.0.0.3:0"
lsd = false
utp_reset = false
""")
    p = subprocess.Popen([BIN, "agent", "--config", work / "agent.toml", "--exit-when-complete", "--log", "warn"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall, cpu = watch(p, "popseed agent")
    shutil.rmtree(work, ignore_errors=True)
    return wall, cpu


# ---------------------------------------------------------------- rounds
gib = SIZE / (1 << 30)
box_runs, lt_runs = [], []
for r in range(ROUNDS):
    order = [("box", box_download), ("libtorrent", lt_download)]
    if r % 2:
        order.reverse()
    for label, fn in order:
        wall, cpu = fn(r)
        (box_runs if label == "box" else lt_runs).append((wall, cpu))
        print(f"round {r + 1} {label:10} {SIZE / wall / 1e6:8.1f} MB/s  {cpu / gib:6.2f} CPU s/GiB  ({wall:.2f} s)",
              flush=True)
box_wall = sum(w for w, _ in box_runs)
lt_wall = sum(w for w, _ in lt_runs)
box_cpu = sum(c for _, c in box_runs)
lt_cpu = sum(c for _, c in lt_runs)
print(f"box: {SIZE * ROUNDS / box_wall / 1e6:.1f} MB/s, {box_cpu / gib / ROUNDS:.2f} CPU s/GiB (process start and store open included)")
print(f"libtorrent: {SIZE * ROUNDS / lt_wall / 1e6:.1f} MB/s, {lt_cpu / gib / ROUNDS:.2f} CPU s/GiB (python start included)")
print(f"throughput ratio {lt_wall / box_wall:.2f}")
print(f"cpu ratio {box_cpu / max(lt_cpu, 1e-9):.2f}")
PY
