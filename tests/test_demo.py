"""`popseed demo`, the README's first command: a whole venue on localhost. An origin fills the
demo box (critical pieces first), then the box seeds the release and serves its portal; a real
BitTorrent client (libtorrent) downloads the release with the printed magnet link and a plain
HTTP client gets the portal page."""

from __future__ import annotations

import re
import subprocess
import time
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
