"""The whole box in one process: the agent fills its store from an origin while seeding it to a
BitTorrent client and serving downloads through its portal. Pieces a client asks for that are
not on the box yet become on-demand fetches (read-through), and both clients end up with
byte-identical files."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import urllib.request

from conftest import free_port, import_libtorrent, lt_session, make_tree, publish, tree_digests, wait_until
from test_fetch_origin import MiB, Proc, agent_config, done_fraction, serving_sections, start_origin, status


def test_clients_get_a_release_while_the_box_is_still_filling(tmp_path):
    src = make_tree(tmp_path / "src" / "show", {"a.bin": 24 * MiB, "b.bin": 8 * MiB + 5, "z-last.bin": 6 * MiB + 3})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    ih = rel.manifest["infohash"]
    # slow origin: the fill takes ~10 s, so the clients arrive while most pieces are missing
    origin, fp, port = start_origin(tmp_path, "o1", [(rel.dir, rel.src)], extra=["--rate-limit", "4MiB"])
    peer, tracker, http, dns = free_port(), free_port(), free_port(), free_port()
    serving = serving_sections(peer, tracker, http, dns) + "demand_timeout_secs = 60\n"
    cfg = agent_config(tmp_path, [(f"127.0.0.1:{port}", fp)], rel.dir)
    cfg.write_text(cfg.read_text() + serving)
    agent = Proc(["agent", "--config", cfg], tmp_path / "agent.log")
    try:
        wait_until(lambda: 0.05 <= done_fraction(cfg) or not agent.alive(), 30, "the fill to start")
        assert agent.alive(), agent.text()
        assert done_fraction(cfg) < 0.5, "the clients must start while the box is still filling"

        # the portal: the last file, not fetched yet, arrives through read-through fetches
        portal = f"http://127.0.0.1:{http}"
        body = urllib.request.urlopen(f"{portal}/files/{ih}/show/z-last.bin", timeout=90).read()
        assert hashlib.sha256(body).hexdigest() == next(f["sha256"] for f in rel.manifest["files"] if f["path"] == "z-last.bin")
        assert done_fraction(cfg) < 1.0, "the portal download finished before the fill: read-through served it"

        # BitTorrent: the box's own .torrent (its tracker first) from the portal
        torrent = tmp_path / "box.torrent"
        torrent.write_bytes(urllib.request.urlopen(f"{portal}/torrent/{ih}.torrent", timeout=10).read())
        lt = import_libtorrent()
        ses = lt_session()
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(str(torrent))
        atp.save_path = str(tmp_path / "dl")
        h = ses.add_torrent(atp)
        h.connect_peer(("127.0.0.1", peer))
        wait_until(lambda: h.status().is_seeding, 120, "libtorrent to get every piece from the filling box")
        ses.remove_torrent(h)
        assert tree_digests(tmp_path / "dl" / "show") == tree_digests(src)
        wait_until(lambda: (status(cfg).get("releases") or [{}])[0].get("complete"), 60, "the fill to complete")
    finally:
        agent.kill(signal.SIGTERM)
        origin.kill(signal.SIGTERM)
