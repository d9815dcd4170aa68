"""`popseed demo`, the README's first command: a whole venue on localhost. An origin fills the
demo box (critical pieces first), then the box seeds the release and serves its portal; a real
BitTorrent client (libtorrent) downloads the release with the printed magnet link and a plain
HTTP client gets the portal page."""

from __future__ import annotations

import http.cookiejar
import re
import subprocess
import urllib.error
import urllib.request

from conftest import WAIT, complete_lines, import_libtorrent, lt_session, popseed_path, tree_digests, wait_for_line, wait_until


def test_demo_fills_then_seeds_and_serves_the_portal(tmp_path):
    # stdout (the demo's report, whole lines) apart from stderr (logs), so no log write can land
    # between the pieces of a report line
    out, log = tmp_path / "demo.out", tmp_path / "demo.log"
    with open(out, "wb") as o, open(log, "wb") as e:
        # serves far longer than the test needs; the test stops it
        demo = subprocess.Popen([str(popseed_path()), "demo", "--dir", str(tmp_path / "venue"), "--video-size", "6MiB",
                                 "--rate-limit", "0", "--serve-for", "3600s"], stdout=o, stderr=e)
    try:
        # the portal line comes last in the serving report: every line before it is complete
        portal = wait_for_line(out, r"^\s+portal\s+(http://\S+)", 300, "the demo to fill its box and start serving", proc=demo,
                               context=lambda: out.read_text() + "\n--- log ---\n" + log.read_text()[-4000:]).group(1)
        text = "\n".join(complete_lines(out))
        assert re.search(r"critical (\d+)/\1 \(first after \d+ ms\), complete", text), text
        magnet = re.search(r"^\s+magnet\s+(magnet:\S+)$", text, re.M).group(1)
        page = urllib.request.urlopen(portal, timeout=WAIT).read().decode()
        assert "venue-sample" in page and "popseed demo venue" in page
        # the origin pushed the release as a prewarm job; the dashboard is token-protected
        assert "pushed prewarm job prewarm-venue-sample" in text and "job prewarm-venue-sample: ready" in text, text
        # a second box of the venue fills from the first over BitTorrent: the origin sends nothing
        assert re.search(r"second box complete: [\d.]+ [KM]iB from the first box over BitTorrent, 0 B from the origin", text), text
        dashboard = re.search(r"^\s+dashboard\s+(http://\S+)$", text, re.M).group(1)
        token = re.search(r"^\s+staff token\s+(\S+)", text, re.M).group(1)
        assert token in dashboard
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        browser.addheaders = [("Accept", "text/html")]
        assert "venue-sample" in browser.open(dashboard, timeout=WAIT).read().decode(), "?token= logs a browser in"
        status_url = dashboard.split("/?")[0] + "/api/status"
        try:
            urllib.request.urlopen(status_url, timeout=WAIT)
            raise AssertionError("/api/status answered without the token")
        except urllib.error.HTTPError as e:
            assert e.code == 401

        lt = import_libtorrent()
        ses = lt_session()
        atp = lt.parse_magnet_uri(magnet)
        atp.save_path = str(tmp_path / "dl")
        h = ses.add_torrent(atp)
        wait_until(lambda: h.status().is_seeding, 120, "libtorrent to download the demo release by its magnet link")
        ses.remove_torrent(h)
        src = tmp_path / "venue" / "content" / "venue-sample"
        assert tree_digests(tmp_path / "dl" / "venue-sample") == tree_digests(src)
    finally:
        demo.terminate()
        demo.wait(WAIT)
