#!/usr/bin/env bash
# Hostile-peer soak: a good libtorrent download (python3-libtorrent, TCP only, uTP off, the same
# downloader as scripts/bench/seed.sh) from `popseed seed` while scripted attacker peers flood,
# stall and lie, against the same download with no attacker, alternating, in the same run on
# loopback. Prints both throughputs, what the attackers did, what the box dropped, and last:
#
#   ratio R          good download's throughput under attack / without attack (goal >= 0.8)
#   peak RSS N MB    the seeder's peak resident memory over the whole run (VmHWM; goal < 128)
#
# The attackers (one python process, threads; each kind from its own 127.0.0.x source addresses,
# bound before connect, 8 connections per address: the box's per-IP cap):
#   metadata   ut_metadata requests for a full 16 KiB piece, thousands per connection, never read
#   cancel     cancel messages as fast as the socket takes them
#   request    5000 block requests at once, never read
#   chatter    have / interested / not interested, as fast as the socket takes them
#   bogus      junk: no handshake, unknown infohash, a 4 GiB length, bad index, a piece message,
#              undecodable extension messages, a bitfield of the wrong length
#   slowloris  the 68-byte handshake one byte every 0.5 s
#   halfopen   connect and send nothing, enough addresses to fill the global cap of 200
# Every attacker reconnects as soon as the box drops it. The attackers stand for other machines on
# the venue LAN; on this shared machine they run at nice 10, so that their own CPU time does not
# count as the seeder's (the seeder's work to read, judge and drop them all is what is measured).
#
#   scripts/bench.sh hostile
# Env: POPSEED_BIN (default: builds target/release/popseed), BENCH_SIZE_MIB (default 512),
#      POPSEED_BENCH_DIR (default target/bench/hostile), BENCH_ROUNDS (default 2; each round is
#      one download without and one under attack, alternating which goes first).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
if [ -z "${POPSEED_BIN:-}" ]; then
    cargo build --release -q -p popseed
    POPSEED_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/popseed"
fi
export POPSEED_BIN
export BENCH_DIR="${POPSEED_BENCH_DIR:-${CARGO_TARGET_DIR:-$repo/target}/bench/hostile}"
export BENCH_SIZE_MIB="${BENCH_SIZE_MIB:-512}"
export BENCH_ROUNDS="${BENCH_ROUNDS:-2}"
exec /usr/bin/python3 - <<'PY'
import math, os, shutil, signal, subprocess, sys, time
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

ATTACKERS = r'''
import os, random, selectors, signal, socket, struct, sys, threading, time

PORT = int(sys.argv[1]); IH = bytes.fromhex(sys.argv[2]); PIECES = int(sys.argv[3])
BOX = ("127.0.0.1", PORT)
stop = threading.Event()
lock = threading.Lock()
stats = {}     # kind -> [connections, bytes sent]
first = set()  # kinds that have attacked once


def count(kind, sent=0, conn=0):
    with lock:
        s = stats.setdefault(kind, [0, 0])
        s[0] += conn
        s[1] += sent


def msg(mid, payload=b""):
    return struct.pack(">IB", len(payload) + 1, mid) + payload


def handshake(ih=IH):
    return b"\x13BitTorrent protocol" + bytes([0, 0, 0, 0, 0, 0x10, 0, 0]) + ih + b"-AT0001-" + os.urandom(6).hex().encode()


def connect(src, rcvbuf=None, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((src, 0))
    s.settimeout(timeout)
    s.connect(BOX)
    return s


EXT = msg(20, b"\x00d1:md11:ut_metadatai3ee1:pi6881ee")
META = b"".join(msg(20, b"\x03" + b"d8:msg_typei0e5:piecei0ee") for _ in range(4000))
CANCEL = msg(8, struct.pack(">III", 0, 0, 16384)) * 20000
REQUESTS = b"".join(msg(6, struct.pack(">III", i % PIECES, 0, 16384)) for i in range(5000))
CHATTER = b"".join(msg(4, struct.pack(">I", i % PIECES)) + msg(2) + msg(3) for i in range(10000))


def flooder(kind, src, opening, flood):
    """Opens, then sends `flood` over and over without reading, until the box closes."""
    while not stop.is_set():
        try:
            s = connect(src, rcvbuf=4096)
        except OSError:
            time.sleep(0.05)  # refused at a cap (or out of ports): try again
            continue
        count(kind, conn=1)
        try:
            s.sendall(opening)
            count(kind, len(opening))
            while not stop.is_set():
                s.sendall(flood)
                count(kind, len(flood))
                first.add(kind)
        except OSError:
            first.add(kind)  # dropped (reset) or stalled by back-pressure (timeout): reconnect
        finally:
            s.close()


BOGUS = [
    os.urandom(700),                                          # no handshake (an MSE opening that never syncs)
    handshake(os.urandom(20)),                                # unknown infohash
    handshake() + b"\xff\xff\xff\xf0",                        # 4 GiB message
    handshake() + msg(2) + msg(6, struct.pack(">III", PIECES + 9, 0, 16384)),  # bad index
    handshake() + msg(7, struct.pack(">II", 0, 0) + b"x" * 100),              # a piece message
    handshake() + msg(20, b"\x00this is not bencode"),       # undecodable extension handshake
    handshake() + msg(20, b"\x03d8:msg_typei0e5:piece"),     # undecodable ut_metadata
    handshake() + msg(5, b"\xff" * (PIECES // 8 + 9)),       # bitfield of the wrong length
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                    # not BitTorrent at all
]


def bogus(src):
    i = 0
    while not stop.is_set():
        try:
            s = connect(src)
        except OSError:
            time.sleep(0.05)
            continue
        count("bogus", conn=1)
        try:
            s.sendall(BOGUS[i % len(BOGUS)])
            count("bogus", len(BOGUS[i % len(BOGUS)]))
            while s.recv(65536):  # until the box closes it
                pass
            first.add("bogus")
        except OSError:
            first.add("bogus")
        finally:
            s.close()
        i += 1


def holders(kind, sources, per_source, drip):
    """Keeps per_source connections open from each source: `drip` sends the handshake one byte
    every 0.5 s (slowloris), else nothing is sent (half-open). Reopens what the box closes."""
    sel = selectors.DefaultSelector()
    conns = {}  # socket -> (source, bytes of the handshake sent)
    hs = handshake()

    def top_up():
        have = {}
        for src, _ in conns.values():
            have[src] = have.get(src, 0) + 1
        for src in sources:
            for _ in range(per_source - have.get(src, 0)):
                try:
                    s = connect(src)
                except OSError:
                    break
                s.setblocking(False)
                conns[s] = (src, 0)
                sel.register(s, selectors.EVENT_READ)
                count(kind, conn=1)

    last_drip = 0.0
    while not stop.is_set():
        top_up()
        if len(conns) >= len(sources) * per_source:
            first.add(kind)
        for key, _ in sel.select(0.1):
            s = key.fileobj
            try:
                closed = not s.recv(65536)
            except BlockingIOError:
                closed = False
            except OSError:
                closed = True
            if closed:
                sel.unregister(s)
                s.close()
                del conns[s]
        if drip and time.monotonic() - last_drip >= 0.5:
            last_drip = time.monotonic()
            for s, (src, n) in list(conns.items()):
                if n < len(hs) - 1:  # never the last byte
                    try:
                        s.send(hs[n:n + 1])
                        conns[s] = (src, n + 1)
                        count(kind, 1)
                    except OSError:
                        pass
        if not conns:
            time.sleep(0.05)


def ips(first_octet, n):
    return [f"127.0.0.{first_octet + i}" for i in range(n)]


threads = []
plan = [("metadata", handshake() + EXT, META), ("cancel", handshake() + msg(2), CANCEL),
        ("request", handshake() + msg(2), REQUESTS), ("chatter", handshake(), CHATTER)]
for k, (kind, opening, flood) in enumerate(plan):
    for src in ips(10 + 2 * k, 2):
        for _ in range(8):
            threads.append(threading.Thread(target=flooder, args=(kind, src, opening, flood), daemon=True))
for src in ips(20, 2):
    for _ in range(8):
        threads.append(threading.Thread(target=bogus, args=(src,), daemon=True))
threads.append(threading.Thread(target=holders, args=("slowloris", ips(30, 4), 8, True), daemon=True))
threads.append(threading.Thread(target=holders, args=("halfopen", ips(40, 16), 8, False), daemon=True))
signal.signal(signal.SIGTERM, lambda *_: stop.set())
t0 = time.monotonic()
for t in threads:
    t.start()
kinds = {k for k, _, _ in plan} | {"bogus", "slowloris", "halfopen"}
while not stop.is_set() and not kinds <= first:
    time.sleep(0.05)
print("attacking", flush=True)
while not stop.is_set():
    time.sleep(0.1)
secs = time.monotonic() - t0
with lock:
    for kind in sorted(stats):
        c, b = stats[kind]
        print(f"  {kind:<10} {c:7d} connections ({c / secs:6.0f}/s)  {b / 1e6:9.1f} MB sent", flush=True)
os._exit(0)
'''


def sh(*a, **kw):
    return subprocess.run([str(x) for x in a], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


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
    sys.exit(f"did not print {prefix!r}: {lines}")


def vm(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # kB
    return 0


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
# 256 KiB pieces: a 512 MiB release has a 40 KB info dictionary, so ut_metadata requests are
# answered with full 16 KiB pieces.
sh(BIN, "publish", src, "--key", D / "key.key", "--out", D / "release", "--piece-size", "256KiB")
sh(BIN, "store", "--dir", D / "store", "import", D / "release", "--data", src)
torrent = D / "release" / "release.torrent"
info = lt.torrent_info(str(torrent))
ih = str(info.info_hash())
pieces = info.num_pieces()

box_err = open(D / "seed.stderr", "w")
box = subprocess.Popen([BIN, "seed", "--store", D / "store", "--listen", "127.0.0.1:0", "--no-tracker", "--no-lsd"],
                       stdout=subprocess.PIPE, stderr=box_err, text=True)
lines = wait_line(box, "seeding")
box_port = int([l for l in lines if l.startswith("peers: ")][0].rsplit(":", 1)[1])
for p in (D / "store").rglob("*.img"):  # warm the page cache
    with open(p, "rb") as f:
        while f.read(16 << 20):
            pass


TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK  # utime, stime


def download(label):
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
    t0, c0 = time.monotonic(), cpu_seconds(box.pid)
    h.connect_peer(("127.0.0.1", box_port))
    deadline = t0 + 600
    while not h.status().is_seeding:
        if time.monotonic() > deadline:
            sys.exit(f"{label}: download did not finish in 600 s")
        if box.poll() is not None:
            sys.exit(f"the seeder exited ({box.returncode}) during the {label} download")
        ses.wait_for_alert(50)
        ses.pop_alerts()
    t1, c1 = time.monotonic(), cpu_seconds(box.pid)
    ses.remove_torrent(h)
    del ses
    shutil.rmtree(dest)
    return t1 - t0, c1 - c0


def attacked():
    att = subprocess.Popen(["/usr/bin/python3", "-c", ATTACKERS, str(box_port), ih, str(pieces)],
                           stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.nice(10))
    try:
        wait_line(att, "attacking")  # every kind has attacked at least once (half-open: all open)
        secs = download("attacked")
    finally:
        att.send_signal(signal.SIGTERM)
        out, _ = att.communicate(timeout=60)
    return secs, out.rstrip()


results = {"quiet": [], "attacked": []}
reports = []
try:
    for r in range(ROUNDS):
        order = ["quiet", "attacked"] if r % 2 == 0 else ["attacked", "quiet"]
        for label in order:
            if label == "quiet":
                results["quiet"].append(download("quiet"))
            else:
                secs, report = attacked()
                results["attacked"].append(secs)
                reports.append(report)
    peak_kb = vm(box.pid, "VmHWM")
finally:
    box.send_signal(signal.SIGTERM)
    try:
        box.wait(10)
    except subprocess.TimeoutExpired:
        box.kill()
    box_err.close()

mib = SIZE >> 20
print(f"hostile benchmark: {mib} MiB release, {ROUNDS} round(s), loopback, TCP only, libtorrent {lt.__version__} downloader")
for label, runs in results.items():
    avg = sum(t for t, _ in runs) / len(runs)
    cpu = sum(c for _, c in runs) / sum(t for t, _ in runs)
    print(f"  {label:<9} {mib / avg:8.1f} MiB/s  seeder CPU {100 * cpu:3.0f} %  "
          f"({', '.join(f'{mib / t:.0f} MiB/s' for t, _ in runs)})")
for i, rep in enumerate(reports, 1):
    print(f" attackers, attacked download {i}:")
    print(rep)
stopped = [l for l in (D / "seed.stderr").read_text().splitlines() if "stopped" in l]
if stopped:
    print(" seeder:", stopped[-1].split(": ", 1)[-1])
ratio = sum(t for t, _ in results["quiet"]) / sum(t for t, _ in results["attacked"])
print(f"ratio {ratio:.2f}")
print(f"peak RSS {math.ceil(peak_kb * 1024 / 1e6)} MB")
PY
