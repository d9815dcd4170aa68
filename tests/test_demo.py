"""`popseed demo`, the README's first command: a whole venue on localhost. An origin fills the
demo box (critical pieces first), then the box seeds the release and serves its portal; a real
BitTorrent client (libtorrent) downloads the release with the printed magnet link and a plain
HTTP client gets the portal page."""

from __future__ import annotations

import http.cookiejar
import re
import subprocess
import time
import urllib.error
import urllib.request

from conftest import import_libtorrent, lt_session, popseed_path, tree_digests, wait_until


def test_demo_fills_then_seeds_and_serves_the_portal(tmp_path):
    log = tmp_path / "demo.log"
    with open(log, "wb") as fh:
        demo = subprocess.Popen([str(popseed_path()), "demo", "--dir", str(tmp_path / "venue"), "--video-size", "6MiB",
                                 "--rate-limit", "0", "--serve-for", "60s"], stdout=fh, stderr=subprocess.STDOUT)
    try:
        text = lambda: log.read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "portal " in text() or demo.poll() is not None, 60, "the demo to fill its box and start serving")
        out = text()
        assert demo.poll() is None, out
        assert re.search(r"critical (\d+)/\1 \(first after \d+ ms\), complete", out), out
        magnet = re.search(r"magnet\s+(magnet:\S+)", out).group(1)
        portal = re.search(r"portal\s+(http://\S+)", out).group(1)
        page = urllib.request.urlopen(portal, timeout=10).read().decode()
        assert "venue-sample" in page and "popseed demo venue" in page
        # the origin pushed the release as a prewarm job; the dashboard is token-protected
        assert "pushed prewarm job prewarm-venue-sample" in out and "job prewarm-venue-sample: ready" in out, out
        dashboard = re.search(r"dashboard\s+(http://\S+)", out).group(1)
        token = re.search(r"staff token\s+(\S+)", out).group(1)
        assert token in dashboard
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        browser.addheaders = [("Accept", "text/html")]
        assert "venue-sample" in browser.open(dashboard, timeout=10).read().decode(), "?token= logs a browser in"
        status_url = dashboard.split("/?")[0] + "/api/status"
        try:
            urllib.request.urlopen(status_url, timeout=10)
            raise AssertionError("/api/status answered without the token")
        except urllib.error.HTTPError as e:
            assert e.code == 401

        lt = import_libtorrent()
        ses = lt_session()
        atp = lt.parse_magnet_uri(magnet)
        atp.save_path = str(tmp_path / "dl")
        h = ses.add_torrent(atp)
        wait_until(lambda: h.status().is_seeding, 60, "libtorrent to download the demo release by its magnet link")
        ses.remove_torrent(h)
        src = tmp_path / "venue" / "content" / "venue-sample"
        assert tree_digests(tmp_path / "dl" / "venue-sample") == tree_digests(src)
    finally:
        demo.terminate()
        demo.wait(20)
