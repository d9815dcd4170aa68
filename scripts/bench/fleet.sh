#!/usr/bin/env bash
# Three boxes at one venue, one origin: each box in its own network namespace with an uplink to
# the origin capped by tc (tbf, plus netem delay), the three on one uncapped LAN bridge, each
# naming the others in `[fetch] peers`, none provisioned with the release: a prewarm job pushed
# through the origin with `--all` brings it. Measured in the same run: one box alone on the same
# capped uplink (the others not started), then the three together, each timed from the push to
# complete. Prints each box's time and origin bytes, then last:
#
#   origin egress ratio E   bytes the origin sent to the three boxes / release size (goal <= 1.05)
#   pooled time ratio P     slowest box of the three / the lone box (goal <= 0.5)
#
# Needs root (ip netns, veth, bridge, tc); everything it makes is removed on exit.
#
#   scripts/bench.sh fleet
# Env: POPSEED_BIN (default: builds target/release/popseed), BENCH_SIZE_MIB (default 64),
#      BENCH_UPLINK (default 40mbit), BENCH_DELAY (default 20ms), POPSEED_BENCH_DIR
#      (default target/bench/fleet).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
if [ -z "${POPSEED_BIN:-}" ]; then
    cargo build --release -q -p popseed
    POPSEED_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/popseed"
fi
export POPSEED_BIN
export BENCH_DIR="${POPSEED_BENCH_DIR:-${CARGO_TARGET_DIR:-$repo/target}/bench/fleet}"
export BENCH_SIZE_MIB="${BENCH_SIZE_MIB:-64}"
export BENCH_UPLINK="${BENCH_UPLINK:-40mbit}"
export BENCH_DELAY="${BENCH_DELAY:-20ms}"
exec /usr/bin/python3 - <<'PY'
import json, os, re, shutil, signal, subprocess, sys, threading, time, urllib.request
from pathlib import Path

BIN = os.environ["POPSEED_BIN"]
D = Path(os.environ["BENCH_DIR"])
SIZE = int(os.environ["BENCH_SIZE_MIB"]) << 20
UPLINK, DELAY = os.environ["BENCH_UPLINK"], os.environ["BENCH_DELAY"]
TAG = str(os.getpid() % 10000)
BR = f"psfbr{TAG}"
NS = [f"psfb{TAG}n{i}" for i in range(3)]
made_links, made_ns = [], []
NETEM = True


def sh(*a, check=True):
    return subprocess.run([str(x) for x in a], check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cleanup():
    for link in made_links:
        sh("ip", "link", "del", link, check=False)
    for ns in made_ns:
        sh("ip", "netns", "del", ns, check=False)


def setup():
    sh("ip", "link", "add", BR, "type", "bridge")
    made_links.append(BR)
    sh("ip", "link", "set", BR, "up")
    for i, ns in enumerate(NS):
        sh("ip", "netns", "add", ns)
        made_ns.append(ns)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        # the uplink: root side 10.77.i.1 (where the origin is reached), box side 10.77.i.2
        up_r, up_b = f"psu{TAG}r{i}", f"psu{TAG}b{i}"
        sh("ip", "link", "add", up_r, "type", "veth", "peer", "name", up_b)
        made_links.append(up_r)
        sh("ip", "link", "set", up_b, "netns", ns)
        sh("ip", "addr", "add", f"10.77.{i}.1/24", "dev", up_r)
        sh("ip", "link", "set", up_r, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.77.{i}.2/24", "dev", up_b)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", up_b, "up")
        # origin -> box capped (the venue's downlink is what fills the box), with delay where the
        # kernel has sch_netem
        global NETEM
        if NETEM and sh("tc", "qdisc", "add", "dev", up_r, "root", "handle", "1:", "netem", "delay", DELAY,
                        check=False).returncode == 0:
            sh("tc", "qdisc", "add", "dev", up_r, "parent", "1:", "handle", "2:", "tbf", "rate", UPLINK,
               "burst", "64kb", "latency", "400ms")
        else:
            NETEM = False
            sh("tc", "qdisc", "add", "dev", up_r, "root", "tbf", "rate", UPLINK, "burst", "64kb", "latency", "400ms")
        # the LAN: 10.78.0.(10+i) on the bridge, uncapped
        lan_r, lan_b = f"psl{TAG}r{i}", f"psl{TAG}b{i}"
        sh("ip", "link", "add", lan_r, "type", "veth", "peer", "name", lan_b)
        made_links.append(lan_r)
        sh("ip", "link", "set", lan_b, "netns", ns)
        sh("ip", "link", "set", lan_r, "master", BR)
        sh("ip", "link", "set", lan_r, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.78.0.{10 + i}/24", "dev", lan_b)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", lan_b, "up")


def status(i):
    try:
        return json.loads((D / f"box{i}" / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def complete(i):
    return bool((status(i).get("releases") or [{}])[0].get("complete"))


def origin_bytes(i):
    return sum(o.get("bytes", 0) for o in status(i).get("origins", []) if o.get("kind") == "origin")


ADMIN_TOKEN = "bench-origin-admin-token-0123456789"


def start_origin(devices):
    """The origin, fresh for each run (its jobs live in memory), allowing `devices`."""
    (D / "devices.txt").write_text("".join(f"{fp} box{i}\n" for i, fp in devices.items()))
    (D / "admin.token").write_text(ADMIN_TOKEN + "\n")
    origin = subprocess.Popen([BIN, "origin", "--listen", "0.0.0.0:0", "--self-signed", "--write-cert", D / "cert",
                               "--release", f"{D / 'release'}={D / 'bench-release'}", "--devices", D / "devices.txt",
                               "--admin", "127.0.0.1:0", "--admin-token-file", D / "admin.token"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    fp = port = admin = None
    while fp is None or port is None or admin is None:
        line = origin.stdout.readline()
        if not line:
            sys.exit("the origin did not start")
        if m := re.match(r"^certificate sha256 ([0-9a-f]{64})$", line.strip()):
            fp = m.group(1)
        if m := re.match(r"^origin listening on [^ ]*:(\d+) ", line):
            port = int(m.group(1))
        if m := re.match(r"^admin API on (http://\S+)$", line.strip()):
            admin = m.group(1)
    # keep draining its output so it never blocks on a full pipe
    threading.Thread(target=lambda: origin.stdout.read(), daemon=True).start()
    return origin, fp, port, admin


def linked(admin, fps):
    req = urllib.request.Request(f"{admin}/admin/devices", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        devs = json.loads(r.read())
    return all(any(d["fingerprint"] == fp and d["connected"] for d in devs) for fp in fps)


def run_boxes(which, devices, pubkey):
    """Starts boxes `which` (not provisioned with the release), waits until each linked to a
    fresh origin, pushes the prewarm job with --all, and times each box from the push to
    complete."""
    origin, fp, port, admin = start_origin({i: devices[i] for i in which})
    procs = {}
    try:
        for i in which:
            w = D / f"box{i}"
            shutil.rmtree(w, ignore_errors=True)
            w.mkdir(parents=True)
            others = ", ".join(f'"10.78.0.{10 + j}:6881"' for j in range(3) if j != i)
            (w / "agent.toml").write_text(f"""
trusted_keys = ["{pubkey}"]
status_file = "status.json"
[store]
dir = "store"
min_free = "64MiB"
[fetch]
peers = [{others}]
[control]
listen = "127.0.0.1:0"
staff_token = "bench-staff-token-0123456789"
device_key = "{D / 'keys' / f'box{i}.key'}"
device_name = "box{i}"
[[origins]]
name = "origin"
address = "10.77.{i}.1:{port}"
fingerprint = "{fp}"
[swarm]
listen = "10.78.0.{10 + i}:6881"
tracker_listen = "10.78.0.{10 + i}:6969"
lsd = false
utp_reset = false
""")
            procs[i] = subprocess.Popen(["ip", "netns", "exec", NS[i], BIN, "agent", "--config", w / "agent.toml",
                                         "--log", "warn"], stdout=subprocess.DEVNULL,
                                        stderr=open(w / "agent.log", "w"))
        t0 = time.monotonic()
        while not linked(admin, [devices[i] for i in which]):
            for i in which:
                if procs[i].poll() is not None:
                    sys.exit(f"box {i} exited: {(D / f'box{i}' / 'agent.log').read_text()[-2000:]}")
            if time.monotonic() - t0 > 120:
                sys.exit("the boxes did not link to the origin in 120 s")
            time.sleep(0.05)
        push = sh(BIN, "job", "push", "--origin", admin, "--token", ADMIN_TOKEN, "--all", "--release", D / "release",
                  "--id", f"bench-{len(which)}", check=False)
        if push.returncode != 0:
            sys.exit(f"job push failed: {push.stdout}{push.stderr}")
        t0 = time.monotonic()
        done = {}
        while len(done) < len(which):
            for i in which:
                if i not in done and complete(i):
                    done[i] = time.monotonic() - t0
                if procs[i].poll() is not None:
                    sys.exit(f"box {i} exited: {(D / f'box{i}' / 'agent.log').read_text()[-2000:]}")
            if time.monotonic() - t0 > 900:
                sys.exit("the boxes did not complete in 900 s")
            time.sleep(0.05)
        egress = {i: origin_bytes(i) for i in which}
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(30)
        origin.send_signal(signal.SIGTERM)
        origin.wait(30)
    return done, egress


try:
    if D.exists():
        shutil.rmtree(D)
    src = D / "bench-release"
    src.mkdir(parents=True)
    with open(src / "show.mp4", "wb") as f:
        left = SIZE
        while left:
            k = min(left, 16 << 20)
            f.write(os.urandom(k))
            left -= k
    sh(BIN, "keygen", "--out", D / "key")
    sh(BIN, "publish", src, "--key", D / "key.key", "--out", D / "release", "--piece-size", "256KiB")
    pubkey = json.loads((D / "release" / "manifest.json").read_text())["manifest"]["publisher_key"]
    (D / "keys").mkdir()
    devices = {}
    for i in range(3):
        out = sh(BIN, "keygen", "--out", D / "keys" / f"box{i}").stdout
        devices[i] = re.search(r"^fingerprint:\s+(\S+)$", out, re.M).group(1)
    setup()
    lone, lone_egress = run_boxes([0], devices, pubkey)
    print(f"lone box: {lone[0]:.1f} s, origin sent {lone_egress[0] / SIZE:.3f}x the release", flush=True)
    three, egress = run_boxes([0, 1, 2], devices, pubkey)
    for i in range(3):
        print(f"box {i + 1} of 3: {three[i]:.1f} s, origin sent it {egress[i] / SIZE:.3f}x the release", flush=True)
    delay = f" + {DELAY} delay" if NETEM else " (no sch_netem in this kernel: no delay)"
    print(f"uplink {UPLINK}{delay} per box, LAN uncapped, release {SIZE >> 20} MiB in 256 KiB pieces")
    print(f"origin egress ratio {sum(egress.values()) / SIZE:.3f}")
    print(f"pooled time ratio {max(three.values()) / lone[0]:.2f}")
finally:
    cleanup()
PY
