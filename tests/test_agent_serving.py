"""The whole box in one process: the agent fills its store from an origin while seeding it to a
BitTorrent client and serving downloads through its portal. Pieces a client asks for that are
not on the box yet become on-demand fetches (read-through), and both clients end up with
byte-identical files."""

from __future__ import annotations

import hashlib
import re
import signal
import threading
import urllib.request

from conftest import WAIT, import_libtorrent, lt_session, make_tree, publish, tree_digests, wait_until
from test_fetch_origin import MiB, Proc, agent_config, agent_ports, done_fraction, serving_sections, start_origin, status

TOKEN = "staff-token-agent-serving-0123"


def portal_requests(mgmt: int) -> float:
    """popseed_portal_http_requests_total from the agent's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{mgmt}/metrics", timeout=WAIT) as r:
        text = r.read().decode()
    m = re.search(r"^popseed_portal_http_requests_total (\S+)$", text, re.M)
    assert m, text
    return float(m.group(1))


def test_clients_get_a_release_while_the_box_is_still_filling(tmp_path):
    src = make_tree(tmp_path / "src" / "show", {"a.bin": 24 * MiB, "b.bin": 8 * MiB + 5, "z-last.bin": 6 * MiB + 3})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    ih = rel.manifest["infohash"]
    # The origin is stopped (SIGSTOP) before the box starts: the box holds nothing until both
    # clients are there, whatever the timing; then it fills at 4 MiB/s (~10 s).
    origin, fp, port = start_origin(tmp_path, "o1", [(rel.dir, rel.src)], extra=["--rate-limit", "4MiB"])
    origin.pause()
    serving = serving_sections() + "demand_timeout_secs = 120\n"  # port 0 everywhere: the agent logs its ports
    control = f"""
[control]
listen = "127.0.0.1:0"
staff_token = "{TOKEN}"
device_key = "{tmp_path / 'device.key'}"
"""
    cfg = agent_config(tmp_path, [(f"127.0.0.1:{port}", fp)], rel.dir)
    cfg.write_text(cfg.read_text() + control + serving)
    agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
    try:
        ports = agent_ports(agent, mgmt=True, serving=True)
        peer, http, mgmt = ports["peer"], ports["http"], ports["mgmt"]
        assert done_fraction(cfg) == 0.0

        # BitTorrent: the box's own .torrent (its tracker first) from the portal; the client
        # connects while the box has no piece at all
        portal = f"http://127.0.0.1:{http}"
        torrent = tmp_path / "box.torrent"
        torrent.write_bytes(urllib.request.urlopen(f"{portal}/torrent/{ih}.torrent", timeout=WAIT).read())
        lt = import_libtorrent()
        ses = lt_session()
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(str(torrent))
        atp.save_path = str(tmp_path / "dl")
        h = ses.add_torrent(atp)
        h.connect_peer(("127.0.0.1", peer))
        wait_until(lambda: h.status().num_peers > 0, WAIT, "libtorrent to connect to the box")

        # the portal: the last file, asked for while not one piece of it is on the box, arrives
        # through read-through fetches once the origin runs again
        seen = portal_requests(mgmt)
        got: dict = {}

        def download():
            try:
                got["body"] = urllib.request.urlopen(f"{portal}/files/{ih}/show/z-last.bin", timeout=300).read()
            except BaseException as e:  # noqa: BLE001 - reported below
                got["error"] = e

        t = threading.Thread(target=download)
        t.start()
        wait_until(lambda: portal_requests(mgmt) > seen, WAIT, "the portal to receive the download request")
        origin.resume()
        t.join(400)
        assert not t.is_alive() and "error" not in got, got.get("error")
        assert hashlib.sha256(got["body"]).hexdigest() == next(f["sha256"] for f in rel.manifest["files"] if f["path"] == "z-last.bin")

        wait_until(lambda: h.status().is_seeding, 180, "libtorrent to get every piece from the filling box")
        ses.remove_torrent(h)
        assert tree_digests(tmp_path / "dl" / "show") == tree_digests(src)
        wait_until(lambda: (status(cfg).get("releases") or [{}])[0].get("complete"), WAIT, "the fill to complete")
    finally:
        agent.kill(signal.SIGTERM)
        origin.kill(signal.SIGTERM)
