"""Watch while it fills (issue #14, first part): a file the box does not hold yet streams from
the portal as its pieces arrive. curl asks for `Range: bytes=0-` of a video while the box holds
none of it (its origin paused, then rate-capped): the first bytes reach curl while the box is
still filling, and the whole file arrives byte-identical. The video is served as `video/mp4`,
`inline`; `?download=1` makes it an attachment. A headless Chromium plays a real video (ffmpeg)
from the catalog page while the box fills it."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess

import pytest

from conftest import REPO, WAIT, make_tree, publish, wait_until
from test_agent_serving import portal_requests
from test_fetch_origin import MiB, Proc, agent_config, agent_ports, serving_sections, start_origin, status

TOKEN = "staff-token-portal-stream-0123"
BROWSER_DIR = REPO / "tests" / "browser"
OUT = REPO / "out" / "test"


def test_a_video_the_box_does_not_hold_streams_to_curl_as_it_fills(tmp_path):
    curl = shutil.which("curl")
    assert curl, "curl missing: scripts/test.sh installs the Debian package curl"
    src = make_tree(tmp_path / "src" / "keynote", {"talk.mp4": 12 * MiB + 321, "slides.pdf": 2 * MiB})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    ih = rel.manifest["infohash"]
    total = sum(f["size"] for f in rel.manifest["files"])
    # paused until curl has asked, then 1 MiB/s: the box fills for over 10 s
    origin, fp, port = start_origin(tmp_path, "o1", [(rel.dir, rel.src)], extra=["--rate-limit", "1MiB"])
    origin.pause()
    control = f"""
[control]
listen = "127.0.0.1:0"
staff_token = "{TOKEN}"
device_key = "{tmp_path / 'device.key'}"
"""
    cfg = agent_config(tmp_path, [(f"127.0.0.1:{port}", fp)], rel.dir)
    cfg.write_text(cfg.read_text() + control + serving_sections() + "demand_timeout_secs = 120\n")
    agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
    out, head = tmp_path / "talk.mp4", tmp_path / "head.txt"
    c = None
    try:
        ports = agent_ports(agent, mgmt=True, serving=True)
        url = f"http://127.0.0.1:{ports['http']}/files/{ih}/keynote/talk.mp4"
        seen = portal_requests(ports["mgmt"])
        c = subprocess.Popen([curl, "-sS", "-r", "0-", "-D", str(head), "-o", str(out), "--max-time", "300", url],
                             stderr=subprocess.PIPE, text=True)
        wait_until(lambda: portal_requests(ports["mgmt"]) > seen, WAIT, "the portal to receive curl's request")
        origin.resume()
        wait_until(lambda: (out.exists() and out.stat().st_size >= 256 * 1024) or c.poll() is not None, 120,
                   "curl to receive the video's first piece")
        r = (status(cfg).get("releases") or [{}])[0]
        assert r.get("bytes_done", total) < total, f"the first bytes came only once the box was full: {r}"
        assert c.wait(300) == 0, c.stderr.read()
        h = head.read_text().lower()
        assert h.startswith("http/1.1 206"), h
        assert "content-type: video/mp4" in h and "content-disposition: inline;" in h, h
        assert "x-content-type-options: nosniff" in h, h
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256((src / "talk.mp4").read_bytes()).digest()
        d = subprocess.run([curl, "-sS", "-I", url + "?download=1"], capture_output=True, text=True, timeout=WAIT)
        assert "content-type: application/octet-stream" in d.stdout.lower(), d.stdout
        assert "content-disposition: attachment;" in d.stdout.lower(), d.stdout
    finally:
        if c and c.poll() is None:
            c.kill()
        agent.kill(signal.SIGTERM)
        origin.kill(signal.SIGTERM)


def test_chromium_plays_a_video_from_the_catalog_while_the_box_fills_it(tmp_path):
    """The issue's player test: ffmpeg makes a 90 s H.264 video (2 Mbit/s, faststart); the box
    holds only its critical pieces (the first 2 MiB) when a headless Chromium opens the catalog
    and plays the page's <video>, the origin capped at 1.5x the bitrate. Playback passes 30 s
    with no stall after the start, and a seek to the middle plays on."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg missing: scripts/test.sh installs the Debian package ffmpeg"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/browser/node_modules is missing: run `npm install` in tests/browser (scripts/test.sh does)")
    src = tmp_path / "src" / "keynote"
    src.mkdir(parents=True)
    subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi",
                    "-i", "sine=frequency=440:sample_rate=44100", "-t", "90", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
                    "-b:v", "2M", "-maxrate", "2M", "-bufsize", "1M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
                    "-movflags", "+faststart", str(src / "talk.mp4")], check=True, timeout=300)
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB", "--critical", "*.mp4:2MiB")
    # 2 Mbit/s of video, 64 kbit/s of audio: the origin sends 1.5x that
    origin, fp, port = start_origin(tmp_path, "o1", [(rel.dir, rel.src)], extra=["--rate-limit", "400KB"])
    cfg = agent_config(tmp_path, [(f"127.0.0.1:{port}", fp)], rel.dir)
    cfg.write_text(cfg.read_text() + serving_sections() + "demand_timeout_secs = 120\n")
    agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
    try:
        ports = agent_ports(agent, serving=True)

        def critical_in() -> bool:
            r = (status(cfg).get("releases") or [{}])[0]
            return r.get("critical_pieces", 0) > 0 and r.get("critical_done") == r.get("critical_pieces")
        wait_until(critical_in, 120, "the video's critical pieces to be on the box")
        r = (status(cfg).get("releases") or [{}])[0]
        assert not r.get("complete"), r
        proc = subprocess.run(["node", str(BROWSER_DIR / "play.js")],
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PORTAL_PORT": str(ports["http"]),
                                   "OUT_DIR": str(OUT), "PLAY_SECONDS": "30"},
                              capture_output=True, text=True, timeout=600)  # a bound for a hung browser only
        assert proc.returncode == 0, f"browser script failed:\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        agent.kill(signal.SIGTERM)
        origin.kill(signal.SIGTERM)
    print(f"first frame {res['firstFrameMs']:.0f} ms, stalls {res['waiting']}, seek to playing {res['seekToPlayingMs']:.0f} ms")
    assert not res["errors"], res
    assert res["src"].endswith("/keynote/talk.mp4"), res
    assert res["playedTo"] >= 30 and 89 <= res["duration"] <= 91, res
    assert res["stallsBeforeSeek"] == 0, f"playback stalled while the box filled: {res}"
