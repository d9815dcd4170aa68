"""A real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core from npm, see
tests/browser/) in a phone-sized viewport: reaches the portal through Apple's probe URL, sees the
catalog, presses Continue (the probe then says Success), downloads a file byte-identical, and
leaves screenshots under out/test/."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, file_bytes, start_portal, store_with

BROWSER_DIR = REPO / "tests" / "browser"
OUT = REPO / "out" / "test"


def test_phone_browser_opens_portal_acknowledges_and_downloads(tmp_path):
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("/usr/bin/chromium is missing: install the Debian package chromium (scripts/deps/debian.txt)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/browser/node_modules is missing: run `npm install` in tests/browser (scripts/test.sh does)")
    files = {"talk.mp4": 1_500_000, "slides/deck.pdf": 40_000}
    store, rel = store_with(tmp_path, files, "Conference Talks", "--license", "CC-BY-4.0")
    p = start_portal(store, tmp_path, "--venue", "Pop-up Venue")
    try:
        dl = tmp_path / "downloads"
        dl.mkdir()
        proc = subprocess.run(
            ["node", str(BROWSER_DIR / "portal.js")],
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PORTAL_PORT": str(p.http_port),
                 "OUT_DIR": str(OUT), "DOWNLOAD_DIR": str(dl)},
            capture_output=True, text=True, timeout=300,  # a bound for a hung browser only
        )
        assert proc.returncode == 0, f"browser script failed:\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        p.stop()
    assert r["landed"] == p.url, "the probe redirected the browser to the portal"
    assert r["status"] == 200
    assert r["title"] == "Pop-up Venue downloads"
    assert r["releases"] and r["releases"][0].startswith("Conference Talks")
    assert any(f.startswith("slides/deck.pdf") for f in r["files"]) and any(f.startswith("talk.mp4") for f in r["files"])
    assert r["hasQr"]
    assert r["pageBytes"] < 50 * 1024
    assert "connected" in r["acknowledged"]
    assert r["probeAfter"]["status"] == 200 and "Success" in r["probeAfter"]["body"]
    got = Path(r["download"]["path"]).read_bytes()
    name = r["download"]["name"]
    rel_path = "slides/deck.pdf" if name == "deck.pdf" else name
    assert got == file_bytes(0, rel_path, files[rel_path]), f"downloaded {name} differs"
    for shot in ["portal-phone.png", "portal-phone-full.png", "portal-phone-connected.png"]:
        assert (OUT / shot).stat().st_size > 5000, shot
