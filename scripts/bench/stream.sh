#!/usr/bin/env bash
# Watching while the box fills (issue #14): headless Chromium (tests/browser/play.js) opens the
# portal's catalog and plays a video (ffmpeg: H.264, BENCH_MBIT Mbit/s, a keyframe every 2 s,
# faststart, 256 KiB pieces, no critical range) from a box whose origin sends at
# BENCH_UPLINK_MBIT Mbit/s, twice in the same run: opened the moment the box starts (it holds
# none of the video; the page says how much it held when it opened), then from a box that holds
# it all (the reference). Each plays
# BENCH_PLAY_S seconds, then seeks to the middle. Prints each run, then last:
#
#   time to first frame T     seconds from the page's navigation start, box not holding the video
#                             (goal < 1.5 s at 20 Mbit/s and 30 ms delay)
#   stalls per minute S       `waiting` events after the start, per minute played (goal 0 when
#                             the uplink is at least 1.2x the bitrate)
#   first frame ratio R       T / the same for the box holding the video
#
# The origin's rate is its own cap (`popseed origin --rate-limit`) on loopback: no delay (this
# kernel has no sch_netem). Needs /usr/bin/chromium, node with tests/browser/node_modules
# (scripts/test.sh installs both) and ffmpeg.
#
#   scripts/bench.sh stream
# Env: POPSEED_BIN (default: builds target/release/popseed), BENCH_MBIT (default 4),
#      BENCH_UPLINK_MBIT (default 20), BENCH_PLAY_S (default 30), BENCH_VIDEO_S (default 90),
#      POPSEED_BENCH_DIR (default target/bench/stream).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
if [ -z "${POPSEED_BIN:-}" ]; then
    cargo build --release -q -p popseed
    POPSEED_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/popseed"
fi
export POPSEED_BIN REPO="$repo"
export BENCH_DIR="${POPSEED_BENCH_DIR:-${CARGO_TARGET_DIR:-$repo/target}/bench/stream}"
export BENCH_MBIT="${BENCH_MBIT:-4}" BENCH_UPLINK_MBIT="${BENCH_UPLINK_MBIT:-20}"
export BENCH_PLAY_S="${BENCH_PLAY_S:-30}" BENCH_VIDEO_S="${BENCH_VIDEO_S:-90}"
exec /usr/bin/python3 - <<'PY'
import json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path

BIN, REPO = os.environ["POPSEED_BIN"], Path(os.environ["REPO"])
D = Path(os.environ["BENCH_DIR"])
MBIT, UPLINK = float(os.environ["BENCH_MBIT"]), float(os.environ["BENCH_UPLINK_MBIT"])
PLAY_S, VIDEO_S = os.environ["BENCH_PLAY_S"], os.environ["BENCH_VIDEO_S"]


def sh(*a, **kw):
    return subprocess.run([str(x) for x in a], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_line(log: Path, pattern: str, proc, what: str):
    t0 = time.monotonic()
    while True:
        text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace")) if log.exists() else ""
        m = re.search(pattern, text, re.M)
        if m:
            return m
        if proc.poll() is not None:
            sys.exit(f"{what}: the process exited: {log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() - t0 > 120:
            sys.exit(f"{what}: not seen in 120 s")
        time.sleep(0.02)


def status(work: Path) -> dict:
    try:
        return (json.loads((work / "status.json").read_text()).get("releases") or [{}])[0]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


if D.exists():
    shutil.rmtree(D)
src = D / "src" / "show"
src.mkdir(parents=True)
sh("ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", VIDEO_S,
   "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-b:v", f"{MBIT}M", "-maxrate", f"{MBIT}M", "-bufsize", f"{MBIT / 2}M",
   "-pix_fmt", "yuv420p", "-movflags", "+faststart", src / "show.mp4")
size = (src / "show.mp4").stat().st_size
sh(BIN, "keygen", "--out", D / "key")
sh(BIN, "publish", src, "--key", D / "key.key", "--out", D / "release", "--piece-size", "256KiB")
pubkey = json.loads((D / "release" / "manifest.json").read_text())["manifest"]["publisher_key"]
olog = open(D / "origin.log", "w")
origin = subprocess.Popen([BIN, "origin", "--listen", "127.0.0.1:0", "--self-signed", "--write-cert", D / "cert",
                           "--release", f"{D / 'release'}={src}", "--rate-limit", str(int(UPLINK * 1e6 / 8))],
                          stdout=olog, stderr=subprocess.STDOUT)
fp = wait_line(D / "origin.log", r"^certificate sha256 ([0-9a-f]{64})$", origin, "the origin's certificate").group(1)
port = int(wait_line(D / "origin.log", r"^origin listening on 127\.0\.0\.1:(\d+) ", origin, "the origin's port").group(1))


def run(label: str, held: bool) -> dict:
    work = D / f"box-{label}"
    work.mkdir()
    (work / "agent.toml").write_text(f"""
trusted_keys = ["{pubkey}"]
status_file = "status.json"
[store]
dir = "store"
min_free = "64MiB"
[[origins]]
name = "origin"
address = "127.0.0.1:{port}"
fingerprint = "{fp}"
[[releases]]
dir = "{D / 'release'}"
[swarm]
listen = "127.0.0.1:0"
tracker_listen = "127.0.0.1:0"
lsd = false
[portal]
http_listen = "127.0.0.1:0"
dns_listen = "127.0.0.1:0"
portal_ip = "127.0.0.1"
demand_timeout_secs = 120
""")
    log = work / "agent.log"
    agent = subprocess.Popen([BIN, "agent", "--config", work / "agent.toml", "--log", "info"],
                             stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        http = int(wait_line(log, r"portal serving http=127\.0\.0\.1:(\d+)", agent, "the portal").group(1))
        if held:
            t0 = time.monotonic()
            while not status(work).get("complete"):
                if agent.poll() is not None or time.monotonic() - t0 > 600:
                    sys.exit(f"the box did not fill: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)
        had = status(work).get("bytes_done", 0)
        p = subprocess.run(["node", REPO / "tests" / "browser" / "play.js"], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "HOME": str(work), "PORTAL_PORT": str(http),
                                "OUT_DIR": str(D), "PLAY_SECONDS": PLAY_S}, timeout=900)
        if p.returncode != 0:
            sys.exit(f"the browser failed ({label}): {p.stderr[-3000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["had"] = had
        return r
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)


try:
    cold = run("filling", held=False)
    warm = run("holding", held=True)
finally:
    origin.send_signal(signal.SIGTERM)
    origin.wait(30)
for label, r in (("box filling", cold), ("box holding", warm)):
    print(f"{label}: first frame {r['firstFrameSinceNavMs'] / 1000:.2f} s after the page opened "
          f"({r['firstFrameMs']:.0f} ms after play()), box held {r['had'] / 2**20:.1f} of {size / 2**20:.1f} MiB then; "
          f"stalls {r['stallsBeforeSeek']} in {r['playedTo']:.0f} s; seek to the middle playing after {r['seekToPlayingMs']:.0f} ms",
          flush=True)
print(f"video {MBIT:g} Mbit/s, uplink {UPLINK:g} Mbit/s (origin's own cap, loopback, no delay: no sch_netem)")
print(f"time to first frame {cold['firstFrameSinceNavMs'] / 1000:.2f}")
print(f"stalls per minute {cold['stallsBeforeSeek'] / max(cold['playedMs'] / 60000, 1e-9):.2f}")
print(f"first frame ratio {cold['firstFrameSinceNavMs'] / max(warm['firstFrameSinceNavMs'], 1e-9):.2f}")
PY
