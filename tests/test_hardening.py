"""Holes a stranger at the venue found in the first version (issue #16), each closed at its root
and checked here against the real binary: the management listener bounds slow and excess
connections, and a box that trusts no publisher key refuses every release instead of any.

(The setup page's secrets and setup code are in test_provision.py; hostile BitTorrent peers in
test_swarm_hostile.py.)"""

from __future__ import annotations

import base64
import socket
import subprocess
import urllib.parse
from pathlib import Path

from conftest import WAIT, make_tree, popseed_path, publish, wait_until
from test_jobs import STAFF_TOKEN, box_config, http, start_box

# popseed_http::DEFAULT_LIMITS: connections the management listener holds at once.
MGMT_MAX_CONNECTIONS = 64


def closed_by_server(s: socket.socket) -> bytes:
    """Reads until the server closes the connection (a bound only for a hung test)."""
    s.settimeout(WAIT)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError, socket.timeout) as e:
            assert not isinstance(e, (TimeoutError, socket.timeout)), "the server never closed the connection"
            return data
        if not chunk:
            return data
        data += chunk


def test_management_listener_cuts_off_slow_heads_and_caps_connections(tmp_path):
    box = start_box(box_config(tmp_path / "box", trusted=[]))
    try:
        u = urllib.parse.urlparse(box.mgmt)
        addr = (u.hostname, u.port)
        # a slowloris: connections that send half a request head and then nothing
        held = []
        for _ in range(MGMT_MAX_CONNECTIONS):
            s = socket.create_connection(addr, timeout=WAIT)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: box\r\nX-Slow: ")
            held.append(s)
        # accepted in order: by the time this one is, the cap is taken, so it is closed unanswered
        extra = socket.create_connection(addr, timeout=WAIT)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
        assert closed_by_server(extra) == b"", "a connection over the cap must not be served"
        extra.close()
        # every half head is cut off by the server (its header timeout), not left open
        for s in held:
            assert b"200 OK" not in closed_by_server(s)
            s.close()
        # and the descriptors are back: the box answers again
        code, body = http("GET", f"{box.mgmt}/healthz")
        assert code == 200, body
    finally:
        box.kill()


def test_a_box_that_trusts_no_key_refuses_every_job(tmp_path):
    rel = publish(make_tree(tmp_path / "src" / "talks", {"a.bin": 100_000}), tmp_path / "rel")
    box = start_box(box_config(tmp_path / "box", trusted=[]))
    try:
        spec = {"id": "talks-1", "release": {
            "kind": "inline",
            "manifest_b64": base64.b64encode(rel.manifest_path.read_bytes()).decode(),
            "torrent_b64": base64.b64encode(rel.torrent.read_bytes()).decode(),
        }}
        code, body = http("POST", f"{box.mgmt}/api/jobs", STAFF_TOKEN, spec)
        assert code == 422, body
        assert "trusts no publisher key" in body["reason"], body
        code, jobs = http("GET", f"{box.mgmt}/api/jobs", STAFF_TOKEN)
        assert code == 200 and jobs[0]["state"] == "failed", jobs
    finally:
        box.kill()


def test_an_agent_that_trusts_no_key_will_not_serve_a_configured_release(tmp_path):
    rel = publish(make_tree(tmp_path / "src" / "talks", {"a.bin": 100_000}), tmp_path / "rel")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[store]\ndir = "store"\nmin_free = "0"\n[[releases]]\ndir = "{rel.dir}"\n')
    proc = subprocess.run([str(popseed_path()), "agent", "--config", str(cfg)], capture_output=True, text=True,
                          timeout=WAIT)
    assert proc.returncode == 1, proc
    assert "trusts no publisher key" in proc.stderr, proc.stderr
    assert not (tmp_path / "store" / "releases" / rel.manifest["infohash"]).exists()


def test_origin_serves_pieces_to_allow_listed_boxes_only(tmp_path):
    """`popseed origin --require-device`: pieces go only to boxes showing an allow-listed device
    certificate; a box pinning the wrong origin fingerprint refuses the origin itself."""
    from test_fetch_origin import status, store_files_match
    from test_jobs import Origin, keypair

    rel = publish(make_tree(tmp_path / "src" / "talks", {"a.bin": 600_000, "b.bin": 70_000}), tmp_path / "rel",
                  None, "--piece-size", "64KiB")
    trusted = rel.manifest["publisher_key"]
    allowed, stranger = keypair(tmp_path / "keys", "allowed"), keypair(tmp_path / "keys", "stranger")
    (tmp_path / "origin").mkdir()
    origin = Origin(tmp_path / "origin", [(rel.dir, rel.src)], [allowed["fingerprint"]], extra=["--require-device"])

    def box(name: str, device: dict | None, fingerprint: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        lines = [f'trusted_keys = ["{trusted}"]', 'status_file = "status.json"', "[store]", 'dir = "store"',
                 'min_free = "0"', "[fetch]", 'backoff_max = "1s"',
                 "[[origins]]", 'name = "o"', f'address = "{origin.addr}"', f'fingerprint = "{fingerprint}"',
                 "[[releases]]", f'dir = "{rel.dir}"']
        if device:
            lines += ["[control]", 'listen = "127.0.0.1:0"', f'staff_token = "{STAFF_TOKEN}"',
                      f'device_key = "{device["key"]}"']
        (d / "agent.toml").write_text("\n".join(lines) + "\n")
        return d / "agent.toml"

    def refused(cfg: Path, what: str) -> None:
        p = subprocess.Popen([str(popseed_path()), "agent", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            # the box says why it got nothing: the origin closed the connection, or the pin failed
            wait_until(lambda: any(o["errors"] > 0 and o["pieces"] == 0 for o in status(cfg).get("origins", [])),
                       WAIT, f"{what} to be refused")
            assert status(cfg)["bytes_fetched"] == 0, what
        finally:
            p.kill()
            p.wait()

    try:
        real_fp = origin.fp
        refused(box("stranger", stranger, real_fp), "a box whose device is not on the allow-list")
        refused(box("anonymous", None, real_fp), "a client without a device certificate")
        refused(box("wrong-pin", allowed, "ab" * 32), "a box pinning another origin's fingerprint")
        cfg = box("listed", allowed, real_fp)
        run = subprocess.run([str(popseed_path()), "agent", "--config", str(cfg), "--exit-when-complete"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        store_files_match(cfg, rel)
    finally:
        origin.proc.kill()


def test_agent_tells_systemd_it_is_ready_and_sends_watchdog_keepalives(tmp_path):
    """Under systemd (Type=notify, WatchdogSec=): READY=1 once serving, then WATCHDOG=1 at half
    the watchdog interval; checked through a NOTIFY_SOCKET the test owns."""
    import os

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(WAIT)
    cfg = box_config(tmp_path / "box", trusted=[])
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
    # systemd names the service's pid in WATCHDOG_PID: exec keeps the shell's pid for the agent
    p = subprocess.Popen(["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" agent --config "$1"', str(popseed_path()), str(cfg)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        got = []
        while got.count("WATCHDOG=1") < 2:
            got.append(sock.recv(4096).decode().strip())
        assert got[0] == "READY=1", got
    finally:
        p.kill()
        p.wait()
        sock.close()
