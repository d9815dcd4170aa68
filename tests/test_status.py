"""Status, metrics and the operator dashboard of a running `popseed agent` with a [control]
section: /healthz, /readyz (503 while the pinned release fills, then 200), /metrics parsed with
the prometheus_client OpenMetrics parser (counters move when data moves: bytes in from the
origin, bytes out through a portal download), token checks, `popseed status` output and exit
codes, and the dashboard in headless Chromium (screenshots under out/test/).

Privacy: the real binary at debug log level serves portal, DNS, tracker and peers to clients on
127.0.0.77..82; none of those addresses may appear in its log or in /metrics."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from urllib.parse import quote_from_bytes
from pathlib import Path

import pytest

from conftest import REPO, WAIT, complete_lines, free_port, make_tree, publish, run, store_with, wait_for_line, wait_until
from test_fetch_origin import MiB, Proc, agent_ports, serving_sections, start_origin

TOKEN = "staff-token-for-tests-0123"
BROWSER_DIR = REPO / "tests" / "browser"
OUT = REPO / "out" / "test"


def openmetrics(text: str) -> dict:
    """{(sample name, frozenset(labels)): value}, parsed by prometheus_client's OpenMetrics parser
    (which rejects malformed exposition)."""
    try:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    except ImportError:
        pytest.fail("prometheus_client is missing: install python3-prometheus-client (scripts/deps/debian.txt)")
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(m: dict, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    assert key in m, f"{name}{labels} missing; have {sorted(k[0] for k in m)}"
    return m[key]


def http_get(url: str, token: str | None = None, source: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def control_section(port: int, tmp: Path) -> str:
    return f"""
[control]
listen = "127.0.0.1:{port}"
staff_token = "{TOKEN}"
device_key = "{tmp / 'device.key'}"
device_name = "hall-b-box-1"
venue = "Hall B"
"""


def test_status_metrics_dashboard_and_cli(tmp_path):
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("/usr/bin/chromium is missing: install the Debian package chromium (scripts/deps/debian.txt)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/browser/node_modules is missing: run `npm install` in tests/browser (scripts/test.sh does)")
    size = 16 * MiB + 123
    src = make_tree(tmp_path / "src" / "Keynote videos", {"keynote.mp4": size})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB", "--critical", "*.mp4:1MiB")
    ih = rel.manifest["infohash"]
    # A slow origin (~16 s of fill), stopped (SIGSTOP) until every NOT READY view has been read,
    # the browser's included: nothing can arrive before then, however slowly Chromium starts.
    origin, fp, oport = start_origin(tmp_path, "o1", [(rel.dir, rel.src)], extra=["--rate-limit", "1MiB"])
    origin.pause()
    d = tmp_path / "agent"
    d.mkdir()
    cfg = d / "agent.toml"
    cfg.write_text(f"""
trusted_keys = ["{rel.manifest['publisher_key']}"]
[store]
dir = "store"
min_free = "64MiB"
[fetch]
backoff_max = "1s"
[[origins]]
name = "o0"
address = "127.0.0.1:{oport}"
fingerprint = "{fp}"
[[releases]]
dir = "{rel.dir}"
pin = true
{control_section(0, tmp_path)}
{serving_sections()}
""")  # port 0 everywhere: the agent logs the ports it bound
    t_agent = time.monotonic()
    agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
    try:
        ports = agent_ports(agent, mgmt=True, serving=True)
        http = ports["http"]
        base = f"http://127.0.0.1:{ports['mgmt']}"
        assert http_get(f"{base}/healthz") == (200, "ok\n")

        # not ready while the pinned release fills, and everything says why (once the agent has
        # taken up its job: the management API may answer before that)
        code, body = wait_until(lambda: (r := http_get(f"{base}/readyz")) and "pinned jobs" in r[1] and r, WAIT,
                                "/readyz to report the pinned job")
        assert code == 503 and body.startswith("not ready: 0 of 1 pinned jobs ready; 'Keynote videos'"), body
        st = run("status", "--appliance", base, "--token", TOKEN, check=1)
        assert st.stdout.startswith("NOT READY: 0 of 1 pinned jobs ready"), st.stdout
        assert "Keynote videos" in st.stdout and "hall-b-box-1 at Hall B" in st.stdout, st.stdout
        assert "not ready" in st.stderr, st.stderr

        # tokens: missing or wrong -> 401, for the API and the CLI
        assert http_get(f"{base}/api/status")[0] == 401
        assert http_get(f"{base}/api/status", token="wrong-token-0123456789")[0] == 401
        bad = run("status", "--appliance", base, "--token", "wrong-token-0123456789", check=1)
        assert "refused the token" in bad.stderr and bad.stdout == "", bad.stderr
        nobody = run("status", "--appliance", f"http://127.0.0.1:{free_port()}", "--token", TOKEN, "--timeout", "3s", check=1)
        assert "cannot reach the appliance" in nobody.stderr, nobody.stderr

        m0 = wait_until(lambda: (m := openmetrics(http_get(f"{base}/metrics")[1])) and
                        metric(m, "popseed_jobs", state="filling") == 1 and m, WAIT, "the job to be filling")
        assert metric(m0, "popseed_ready") == 0

        # the dashboard, live, in a real browser: NOT READY first, then READY without a reload
        out, err = tmp_path / "dashboard.out", tmp_path / "dashboard.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            browser = subprocess.Popen(
                ["node", str(BROWSER_DIR / "dashboard.js")],
                env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DASHBOARD_URL": base, "TOKEN": TOKEN,
                     "OUT_DIR": str(OUT), "WAIT_READY_MS": "240000"},
                stdout=o, stderr=e,
            )
        try:
            wait_for_line(out, r"^first view read$", 180, "the browser to read the first view", proc=browser,
                          context=lambda: out.read_text() + err.read_text()[-4000:])
            origin.resume()  # now the fill may go on: the page must turn READY by itself
            browser.wait(300)
        finally:
            if browser.poll() is None:
                browser.kill()
                browser.wait()
        assert browser.returncode == 0, f"browser script failed:\n{err.read_text()[-4000:]}\n{out.read_text()[-2000:]}"
        b = json.loads(complete_lines(out)[-1])
        assert b["withoutToken"] == 401 and b["loginForm"], b
        assert b["status"] == 200 and b["url"] == f"{base}/", "the token is swapped for a cookie and leaves the address"
        assert b["cookie"] == {"httpOnly": True, "sameSite": "Strict", "holdsToken": False}, b["cookie"]
        assert b["banner"] == "NOT READY" and "Keynote videos" in b["reason"], b
        assert b["device"] == "hall-b-box-1" and b["venue"] == "Hall B"
        assert len(b["jobs"]) == 1 and "Keynote videos" in b["jobs"][0], b["jobs"]
        assert b["sparklines"] == 2
        assert b["bannerLater"] == "READY" and b["reasonLater"] == "'Keynote videos' is ready", b
        assert b["urlLater"] == f"{base}/"
        assert b["sparkPoints"], "the fill-in chart has data"
        assert b["external"] == [], f"the dashboard loaded something from elsewhere: {b['external']}"
        for shot in ["dashboard-first.png", "dashboard-ready.png"]:
            assert (OUT / shot).stat().st_size > 10000, shot

        # ready now: readyz, the CLI, the metrics
        assert http_get(f"{base}/readyz") == (200, "ready: 'Keynote videos' is ready\n")
        st = run("status", "--appliance", base, "--token", TOKEN)
        assert st.stdout.startswith("READY: 'Keynote videos' is ready"), st.stdout
        js = json.loads(run("status", "--appliance", base, "--token", TOKEN, "--json").stdout)
        assert js["ready"] and js["jobs"][0]["state"] == "ready" and js["jobs"][0]["bytes_done"] == size

        m1 = openmetrics(http_get(f"{base}/metrics")[1])
        assert metric(m1, "popseed_ready") == 1
        assert metric(m1, "popseed_origin_received_bytes_total", origin="o0") == size
        assert metric(m1, "popseed_origin_received_bytes_total", origin="o0") > metric(m0, "popseed_origin_received_bytes_total", origin="o0")
        assert metric(m1, "popseed_origin_hash_failures_total", origin="o0") == 0
        assert metric(m1, "popseed_store_pieces") == rel.manifest["piece_count"]
        assert metric(m1, "popseed_store_used_bytes") == size
        assert metric(m1, "popseed_store_free_bytes") > 0
        assert metric(m1, "popseed_jobs", state="ready") == 1
        first = metric(m1, "popseed_first_critical_piece_seconds", release="Keynote videos")
        # no clock bound (the fill waited for the browser): it happened while the agent ran
        assert 0 < first <= time.monotonic() - t_agent, first

        # bytes out through the portal move its counter by what was sent (the server counts a
        # chunk after handing it to the socket, so the client may have it all a moment earlier)
        before = metric(m1, "popseed_portal_sent_bytes_total")
        body = urllib.request.urlopen(f"http://127.0.0.1:{http}/files/{ih}/Keynote%20videos/keynote.mp4", timeout=WAIT).read()
        assert len(body) == size

        def sent_counted():
            m = openmetrics(http_get(f"{base}/metrics")[1])
            assert metric(m, "popseed_portal_sent_bytes_total") - before <= size, "counted more than was sent"
            return metric(m, "popseed_portal_sent_bytes_total") - before == size and m

        m2 = wait_until(sent_counted, WAIT, "the portal's sent-bytes counter to reach the download's size")
        assert metric(m2, "popseed_portal_downloads_total") >= 1
    finally:
        agent.kill(15)
        origin.kill(15)
    assert agent.p.returncode == 0, agent.text()


# --------------------------------------------------------------------------- privacy

CLIENTS = {"portal": "127.0.0.77", "dns": "127.0.0.78", "peer": "127.0.0.79", "tracker": "127.0.0.80",
           "utp": "127.0.0.81", "manage": "127.0.0.82", "peer2": "127.0.0.83"}


def _http_from(source: str, port: int, method: str, path: str, body: bytes | None = None, headers=None) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT, source_address=(source, 0))
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def test_no_client_address_in_logs_or_metrics(tmp_path):
    store, rel = store_with(tmp_path, {"talk.mp4": 600_000, "deck.pdf": 40_000}, "Privacy Talks")
    ih = rel.manifest["infohash"]
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"""
trusted_keys = ["{rel.manifest['publisher_key']}"]
[store]
dir = "{store}"
min_free = "0"
[[releases]]
dir = "{rel.dir}"
{control_section(0, tmp_path)}
{serving_sections()}
""")  # port 0 everywhere: the agent logs the ports it bound
    agent = Proc(["--log", "debug", "agent", "--config", cfg], tmp_path / "agent.log")
    try:
        ports = agent_ports(agent, mgmt=True, serving=True)
        mport, peer, tracker, http, dns = (ports[k] for k in ("mgmt", "peer", "tracker", "http", "dns"))
        # portal: probe, catalog, acknowledge, download, a missing file
        src = CLIENTS["portal"]
        assert _http_from(src, http, "GET", "/hotspot-detect.html", headers={"Host": "captive.apple.com"}) in (200, 302)
        assert _http_from(src, http, "GET", "/") == 200
        assert _http_from(src, http, "POST", "/ack", b"", {"Content-Type": "application/x-www-form-urlencoded"}) in (200, 303)
        assert _http_from(src, http, "GET", f"/files/{ih}/Privacy%20Talks/talk.mp4") == 200
        assert _http_from(src, http, "GET", f"/files/{ih}/nope") == 404
        # DNS from another address
        dig = subprocess.run(["dig", "-b", CLIENTS["dns"], "@127.0.0.1", "-p", str(dns), "+time=20", "+tries=1",
                              "captive.apple.com", "A"], capture_output=True, text=True, timeout=WAIT)
        assert "ANSWER SECTION" in dig.stdout, dig.stdout + dig.stderr
        # peers: a valid handshake then garbage (dropped at once), and an HTTP request on the peer
        # port (taken for an MSE opening that never completes: dropped at the 10 s handshake
        # timeout). Each is read until the box closes it, so both drops happen (and are logged)
        # while the agent runs. The first is abuse, which bans its address: the second comes
        # from another one.
        drops = sum("peer dropped" in ln for ln in complete_lines(agent.log))
        for src, payload in [(CLIENTS["peer"], b"\x13BitTorrent protocol" + bytes(8) + bytes.fromhex(ih) + b"-XX0001-"
                              + bytes(12) + struct.pack(">I", 1 << 30)),
                             (CLIENTS["peer2"], b"GET / HTTP/1.1\r\n\r\n")]:
            with socket.create_connection(("127.0.0.1", peer), timeout=WAIT, source_address=(src, 0)) as s:
                s.sendall(payload)
                try:
                    while s.recv(65536):
                        pass
                except ConnectionResetError:
                    pass
        # the drop is logged as the connection ends, perhaps just after the close we saw
        wait_until(lambda: sum("peer dropped" in ln for ln in complete_lines(agent.log)) >= drops + 2, WAIT,
                   "both peer drops to be logged")
        # tracker announce
        q = "&".join([f"info_hash={quote_from_bytes(bytes.fromhex(ih))}", f"peer_id={quote_from_bytes(b'-XX0001-' + bytes(12))}",
                      "port=51413", "uploaded=0", "downloaded=0", "left=100", "compact=1", "event=started"])
        assert _http_from(CLIENTS["tracker"], tracker, "GET", f"/announce?{q}") == 200
        # a uTP SYN on the peer port (answered with a reset)
        syn = bytes([0x41, 0]) + struct.pack(">HIIIHH", 7, 1, 0, 65535, 1, 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((CLIENTS["utp"], 0))
            u.settimeout(WAIT)
            u.sendto(syn, ("127.0.0.1", peer))
            u.recvfrom(100)  # the reset: the box has handled (and logged) the SYN
        # management requests, one with a wrong token
        assert _http_from(CLIENTS["manage"], mport, "GET", "/api/status", headers={"Authorization": "Bearer wrong-token-0123456789"}) == 401
        assert _http_from(CLIENTS["manage"], mport, "GET", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}) == 200
        metrics_text = http_get(f"http://127.0.0.1:{mport}/metrics")[1]
        status_json = http_get(f"http://127.0.0.1:{mport}/api/status", token=TOKEN)[1]
    finally:
        agent.kill(15)
    log = agent.text()
    # the requests were served and logged (this is a debug log, not an empty one) ...
    m = openmetrics(metrics_text)
    assert metric(m, "popseed_dns_queries_total") >= 1
    assert metric(m, "popseed_portal_downloads_total") >= 1
    assert metric(m, "popseed_peers_accepted_total") >= 2
    assert "peer dropped" in log and "peer address banned" in log and "tracker request" in log and "client acknowledged the portal" in log, log[-3000:]
    # ... and no client address appears anywhere
    for what, ip in CLIENTS.items():
        assert ip not in log, f"the {what} client's address {ip} is in the log:\n" + "\n".join(l for l in log.splitlines() if ip in l)
        assert ip not in metrics_text, f"the {what} client's address {ip} is in /metrics"
        assert ip not in status_json, f"the {what} client's address {ip} is in /api/status"
