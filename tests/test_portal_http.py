"""The captive portal over HTTP, black-box against `popseed portal`: OS probes before and after
acknowledging (exact codes and bodies), RFC 8908, foreign hosts, the catalog page, downloads
with Range/suffix/416/ETag/If-Range, resume with `curl -C -`, BEP 19 web seeding with
libtorrent, fail-fast for pieces not on the box, and hostile clients (traversal, huge headers,
slowloris). Run with /usr/bin/python3 (see conftest.py)."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import subprocess
import time

import pytest

from conftest import WAIT, file_bytes, lt_session, start_portal, store_with, wait_until

FILES = {"big.bin": 3 * 1024 * 1024 + 123, "video/long.bin": 16 * 1024 * 1024 + 5, "docs/readme.txt": 2000, "docs/a b#c.txt": 777, "empty.txt": 0}
NAME = "Sample Release"

APPLE = "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"
FIREFOX = '<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>'
PROBES = [
    # (platform, host, path, online status, online body)
    ("android", "connectivitycheck.gstatic.com", "/generate_204", 204, ""),
    ("android-https-host", "www.google.com", "/generate_204", 204, ""),
    ("chromeos", "clients3.google.com", "/generate_204", 204, ""),
    ("apple", "captive.apple.com", "/hotspot-detect.html", 200, APPLE),
    ("windows", "www.msftconnecttest.com", "/connecttest.txt", 200, "Microsoft Connect Test"),
    ("firefox", "detectportal.firefox.com", "/canonical.html", 200, FIREFOX),
    ("networkmanager", "nmcheck.gnome.org", "/check_network_status.txt", 200, "NetworkManager is online\n"),
]


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("portal-http")
    store, rel = store_with(tmp, FILES, NAME, "--license", "CC-BY-4.0", "--piece-size", "65536")
    p = start_portal(store, tmp, "--box-name", "popseed.lan", "--lan-ip", "192.168.7.2", "--venue", "Test Venue",
                     "--tracker", "http://127.0.0.1:6969/announce", "--max-per-client", "3")
    p.rel = rel
    p.tmp = tmp
    yield p
    p.stop()


def request(p, method, path, host=None, headers=None, body=None, source="127.0.0.1"):
    """One request from `source` (a loopback address: each is a different client)."""
    conn = http.client.HTTPConnection("127.0.0.1", p.http_port, timeout=WAIT, source_address=(source, 0))
    h = {"Host": host or f"127.0.0.1:{p.http_port}"}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, hdrs, data


def file_url(p, rel_path: str) -> str:
    from urllib.parse import quote
    ih = p.rel.manifest["infohash"]
    return f"/files/{ih}/{quote(NAME)}/" + "/".join(quote(c) for c in rel_path.split("/"))


def src_bytes(rel_path: str) -> bytes:
    return file_bytes(0, rel_path, FILES[rel_path])


def test_probes_redirect_before_and_answer_online_after_acknowledge(portal):
    client = "127.0.0.2"  # a fresh client address: not yet acknowledged
    for name, host, path, _, _ in PROBES:
        st, h, _ = request(portal, "GET", path, host=host, source=client)
        assert st == 302, name
        assert h["location"] == portal.url == f"http://127.0.0.1:{portal.http_port}/", name
        assert "no-store" in h.get("cache-control", "")
    st, h, data = request(portal, "GET", "/api/captive", headers={"Accept": "application/captive+json"},
                          source=client)
    assert st == 200 and h["content-type"] == "application/captive+json"
    api = json.loads(data)
    assert api == {"captive": True, "user-portal-url": portal.url, "venue-info-url": portal.url}

    st, h, _ = request(portal, "POST", "/ack", body="", headers={"Content-Type": "application/x-www-form-urlencoded"},
                       source=client)
    assert st == 303

    for name, host, path, code, body in PROBES:
        st, h, data = request(portal, "GET", path, host=host, source=client)
        assert (st, data.decode()) == (code, body), name
    st, _, data = request(portal, "GET", "/", headers={"Accept": "application/captive+json"}, source=client)
    assert json.loads(data)["captive"] is False

    # Acknowledging is per client address: another client still gets the redirect.
    st, _, _ = request(portal, "GET", "/hotspot-detect.html", host="captive.apple.com", source="127.0.0.3")
    assert st == 302


def test_unknown_hosts_redirect_and_own_names_serve_the_portal(portal):
    for host in ["example.com", "www.msftconnecttest.com", "neverssl.com:80"]:
        st, h, _ = request(portal, "GET", "/some/page?x=1", host=host, source="127.0.0.4")
        assert st == 302 and h["location"] == portal.url, host
    for host in ["popseed.lan", "POPSEED.LAN.", "192.168.7.2", f"127.0.0.1:{portal.http_port}"]:
        st, h, body = request(portal, "GET", "/", host=host)
        assert st == 200 and b"Test Venue" in body, host


def test_catalog_page_lists_release_files_checksums_and_links(portal):
    st, h, body = request(portal, "GET", "/")
    assert st == 200 and h["content-type"].startswith("text/html")
    assert len(body) < 50 * 1024, f"first page is {len(body)} bytes"
    page = body.decode()
    m = portal.rel.manifest
    assert NAME in page and m["version"] in page
    assert portal.rel.publisher.fingerprint in page and "signature verified" in page
    assert "CC-BY-4.0" in page
    for f in m["files"]:
        assert f["sha256"] in page, f["path"]
    assert "<script" not in page.lower()
    assert not re.search(r'src="(https?:)?//', page), "no external resources"
    external = [u for u in re.findall(r'href="((?:https?:)?//[^"]*)"', page) if not u.startswith(portal.url)]
    assert external == [], "no links off the box"
    assert "<svg" in page, "QR code rendered on the box"
    assert 'action="/ack"' in page
    hrefs = re.findall(r'href="(/files/[^"]+)"', page)
    assert len(hrefs) == len(FILES)
    assert f'href="/torrent/{m["infohash"]}.torrent"' in page
    magnet = re.search(r'href="(magnet:[^"]+)"', page).group(1).replace("&amp;", "&")
    assert f"xt=urn:btih:{m['infohash']}" in magnet
    tr = magnet.index("tr=http%3A%2F%2F127%2E0%2E0%2E1%3A6969%2Fannounce")
    ws = magnet.index("ws=http%3A%2F%2F127%2E0%2E0%2E1%3A")
    assert tr < ws


def test_full_download_and_headers(portal):
    st, h, data = request(portal, "GET", file_url(portal, "big.bin"))
    assert st == 200 and data == src_bytes("big.bin")
    assert h["content-length"] == str(FILES["big.bin"])
    assert h["accept-ranges"] == "bytes"
    assert h["etag"].startswith('"') and portal.rel.manifest["infohash"] in h["etag"]
    assert h["content-disposition"].startswith('attachment; filename="big.bin"')
    assert "last-modified" in h
    st, h2, data = request(portal, "HEAD", file_url(portal, "big.bin"))
    assert st == 200 and data == b"" and h2["content-length"] == str(FILES["big.bin"])
    st, _, data = request(portal, "GET", file_url(portal, "docs/a b#c.txt"))
    assert st == 200 and data == src_bytes("docs/a b#c.txt")
    st, h, data = request(portal, "GET", file_url(portal, "empty.txt"))
    assert st == 200 and data == b"" and h["content-length"] == "0"


def test_ranges_suffixes_416_etag_and_if_range(portal):
    url, whole = file_url(portal, "big.bin"), src_bytes("big.bin")
    n = len(whole)
    st, h, data = request(portal, "GET", url, headers={"Range": "bytes=100-199"})
    assert st == 206 and data == whole[100:200] and h["content-range"] == f"bytes 100-199/{n}"
    st, h, data = request(portal, "GET", url, headers={"Range": "bytes=-500"})
    assert st == 206 and data == whole[-500:] and h["content-range"] == f"bytes {n - 500}-{n - 1}/{n}"
    st, h, data = request(portal, "GET", url, headers={"Range": f"bytes={n - 10}-"})
    assert st == 206 and data == whole[-10:]
    st, h, data = request(portal, "GET", url, headers={"Range": f"bytes={n}-"})
    assert st == 416 and h["content-range"] == f"bytes */{n}"
    st, h, data = request(portal, "GET", url, headers={"Range": "bytes=500-100"})
    assert st == 200 and len(data) == n, "invalid range is ignored"
    etag, lm = h["etag"], h["last-modified"]
    st, _, data = request(portal, "GET", url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert st == 206 and data == whole[:10]
    st, _, data = request(portal, "GET", url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert st == 200 and data == whole, "If-Range mismatch: whole file"
    st, _, data = request(portal, "GET", url, headers={"Range": "bytes=0-9", "If-Range": "W/" + etag})
    assert st == 200, "weak validators never satisfy If-Range"
    st, _, data = request(portal, "GET", url, headers={"Range": "bytes=0-9", "If-Range": lm})
    assert st == 206 and data == whole[:10], "exact Last-Modified date"
    st, _, data = request(portal, "GET", url, headers={"Range": "bytes=0-9", "If-Range": "Thu, 01 Jan 1998 00:00:00 GMT"})
    assert st == 200
    st, h, data = request(portal, "GET", url, headers={"If-None-Match": etag})
    assert st == 304 and data == b""


def test_curl_resume_after_interruption_is_identical(portal, tmp_path):
    out = tmp_path / "long.bin"
    url = portal.base + file_url(portal, "video/long.bin")
    # Interrupted once it has written part of the file (not after a fixed time, in which a slow
    # machine may not have written a byte). Capped at 256 KiB/s, curl needs over a minute for the
    # 16 MiB, so it is killed long before the end.
    first = subprocess.Popen(["curl", "-sS", "--limit-rate", "256K", "-o", str(out), url],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: out.exists() and out.stat().st_size >= 64 * 1024 or first.poll() is not None, WAIT,
                   "curl to write part of the file")
    finally:
        first.kill()
        first.wait(WAIT)
    partial = out.stat().st_size
    assert 0 < partial < FILES["video/long.bin"], partial
    second = subprocess.run(["curl", "-sS", "-f", "-C", "-", "-o", str(out), url, "-w", "%{http_code}"],
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "206"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == next(
        f["sha256"] for f in portal.rel.manifest["files"] if f["path"] == "video/long.bin")


def test_torrent_lists_box_tracker_and_web_seed_and_libtorrent_downloads_from_it(portal, tmp_path):
    from conftest import import_libtorrent
    lt = import_libtorrent()
    ih = portal.rel.manifest["infohash"]
    st, h, data = request(portal, "GET", f"/torrent/{ih}.torrent")
    assert st == 200 and h["content-type"] == "application/x-bittorrent"
    ti = lt.torrent_info(lt.bdecode(data))
    assert str(ti.info_hash()) == ih, "re-issued .torrent keeps the infohash"
    assert [t.url for t in ti.trackers()][0] == "http://127.0.0.1:6969/announce"
    seeds = [w["url"] for w in ti.web_seeds()]
    assert seeds == [f"{portal.url}files/{ih}/"]
    # A BitTorrent client with only the web seed gets every byte through the portal (BEP 19).
    ses = lt_session()
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = str(tmp_path / "lt")
    atp.trackers = []
    handle = ses.add_torrent(atp)
    handle.replace_trackers([])
    wait_until(lambda: handle.status().is_seeding, 120, "libtorrent to finish from the web seed")
    for rel, size in FILES.items():
        got = (tmp_path / "lt" / NAME / rel).read_bytes() if size else b""
        assert got == src_bytes(rel), rel


def test_bad_paths_are_404_never_files_outside(portal):
    ih = portal.rel.manifest["infohash"]
    for path in [f"/files/{ih}/..%2F..%2Fetc%2Fpasswd", f"/files/{ih}/Sample%20Release/../../../etc/passwd",
                 f"/files/{ih}/Sample%20Release/docs/..%2Fbig.bin", "/files/../../etc/passwd",
                 f"/files/{'0' * 40}/x", "/files/zz", f"/torrent/{'0' * 40}.torrent", "/etc/passwd"]:
        st, _, data = request(portal, "GET", path)
        assert st in (400, 404), path
        assert b"root:" not in data


def raw(p, payload: bytes) -> bytes:
    """Sends `payload` on one connection; returns everything the server sent until it closed the
    connection (it does after each of these errors, and after `Connection: close`)."""
    with socket.create_connection(("127.0.0.1", p.http_port), timeout=WAIT) as s:
        s.sendall(payload)
        chunks = []
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail(f"the server kept the connection open for {WAIT} s; got {b''.join(chunks)[:200]!r}")
        return b"".join(chunks)


def test_hostile_requests_get_clean_errors(portal):
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
    assert raw(portal, huge).startswith(b"HTTP/1.1 431")
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n"
    assert raw(portal, many).startswith(b"HTTP/1.1 431")
    assert raw(portal, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    chunked = b"POST /ack HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert raw(portal, chunked).startswith(b"HTTP/1.1 501")
    big_body = b"POST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
    assert raw(portal, big_body).startswith(b"HTTP/1.1 413")
    # Pipelined requests on one connection are answered in order.
    two = raw(portal, b"GET /api/captive HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                      b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert two.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 404" in two
    # The server is still healthy.
    assert request(portal, "GET", "/")[0] == 200


def test_slowloris_connection_is_timed_out(portal):
    # The head must be complete within header_timeout (10 s) of its first byte. A client that
    # keeps trickling it, a byte every half second (a header value that never ends: no header
    # count or size limit is reached), is cut off by the server. Asserted is the event, not its
    # timing: the server answers 408 or closes while the client is still sending. The client
    # gives up only after 120 s, twelve times the server's deadline, which load cannot stretch
    # that far; a server whose timer restarts with each byte keeps the connection and fails.
    with socket.create_connection(("127.0.0.1", portal.http_port), timeout=WAIT) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
        got, ended_by_server = b"", False
        deadline = time.monotonic() + 120
        s.settimeout(0.5)  # the trickle's pace
        while time.monotonic() < deadline:
            try:
                s.sendall(b"b")
                c = s.recv(4096)
            except socket.timeout:
                continue
            except OSError:  # reset, or writing to a connection the server closed
                ended_by_server = True
                break
            got += c
            ended_by_server = True
            break
    assert ended_by_server, "a client trickling its request head held the connection for 120 s"
    assert got.startswith(b"HTTP/1.1 408") or got == b"", got[:100]


def test_per_client_download_cap(portal):
    url = file_url(portal, "video/long.bin")
    socks = []
    try:
        # 3 downloads that the client does not read: they hold their slots.
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            s.settimeout(WAIT)
            s.bind(("127.0.0.5", 0))
            s.connect(("127.0.0.1", portal.http_port))
            socks.append(s)
            s.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            status = b""
            while len(status) < 12:  # recv may return the status line in pieces
                c = s.recv(12 - len(status))
                assert c, f"connection closed after {status!r}"
                status += c
            assert status == b"HTTP/1.1 200", status  # headers sent: the slot is taken
        st, h, _ = request(portal, "GET", url, source="127.0.0.5")
        assert st == 503 and h.get("retry-after")
        st, _, data = request(portal, "GET", url, headers={"Range": "bytes=0-0"}, source="127.0.0.6")
        assert st == 206, "other clients are unaffected"
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: request(portal, "GET", url, headers={"Range": "bytes=0-0"}, source="127.0.0.5")[0] == 206,
               WAIT, "slots to be freed after the clients went away")


def test_missing_pieces_fail_fast_without_a_fetcher(tmp_path):
    store, rel = store_with(tmp_path, {"f.bin": 200_000}, "NoData", data=False)
    # With a demand timeout of an hour, a portal that waited for the pieces instead of refusing
    # would not answer within the request's timeout (WAIT) at all: "at once" needs no clock.
    p = start_portal(store, tmp_path, "--demand-timeout", "3600")
    try:
        st, h, body = request(p, "GET", f"/files/{rel.manifest['infohash']}/NoData/f.bin")
        # the no-fetcher refusal (waiting for a fetch ends in "still fetching ...")
        assert (st, body, h.get("retry-after")) == (503, b"this part of the file is not on this box yet\n", "60"), (st, h, body)
        st, _, page = request(p, "GET", "/")
        assert b"0 B on this box" in page
    finally:
        p.stop()


def test_acknowledgement_expires(tmp_path):
    expiry = 2.0
    store, _ = store_with(tmp_path, {"f.bin": 1000}, "Expiring")
    p = start_portal(store, tmp_path, "--ack-expiry", "2s")
    try:
        def probe() -> int:
            return request(p, "GET", "/generate_204", host="connectivitycheck.gstatic.com")[0]

        assert probe() == 302
        # Acknowledged, the probe is answered "online" until the acknowledgement expires. That
        # the probe arrives before the expiry is up to this test's own speed, so "online" is
        # asserted for a round (acknowledge, probe) that took less than the expiry counted from
        # before the acknowledgement was sent (the portal's clock started later); a slower
        # round says nothing and is repeated.
        for _ in range(20):
            t0 = time.monotonic()
            assert request(p, "POST", "/ack", body="")[0] == 303
            st = probe()
            if time.monotonic() - t0 < expiry:
                assert st == 204
                break
        else:
            pytest.fail(f"20 rounds of acknowledge and probe each took {expiry} s or more")
        wait_until(lambda: probe() == 302, WAIT, "the acknowledgement to expire")
    finally:
        p.stop()


def test_portal_cli_reports_a_busy_port_cleanly(tmp_path):
    from conftest import assert_clean_error, run
    store, _ = store_with(tmp_path, {"f.bin": 10}, "Busy")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run("portal", "--store", store, "--http", f"127.0.0.1:{port}", "--dns", "127.0.0.1:0", check=False)
    err = assert_clean_error(proc)
    assert "cannot listen" in err and str(port) in err
