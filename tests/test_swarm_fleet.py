"""Boxes of one venue fill from each other (issue #19): three boxes and one origin, the boxes
naming each other in `[fetch] peers`. Each asks the origin only for its rendezvous share of
the pieces and takes the rest from its siblings over BitTorrent, so the origin sends the
release about once instead of once per box; a box killed halfway leaves its share to the
others. (Loopback: the benchmark `scripts/bench.sh fleet` runs the same on capped links.)"""

from __future__ import annotations

import signal

from conftest import make_tree, publish, wait_until
from test_fetch_origin import MiB, Proc, agent_config, start_origin, status, store_files_match

BOXES = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
PEER_PORT = 16881


def box_configs(tmp_path, origin_port: int, fp: str, rel) -> list:
    cfgs = []
    for ip in BOXES:
        others = ", ".join(f'"{o}:{PEER_PORT}"' for o in BOXES if o != ip)
        cfg = agent_config(tmp_path, [(f"127.0.0.1:{origin_port}", fp)], rel.dir, extra=f"peers = [{others}]",
                           name=f"box-{ip}")
        cfg.write_text(cfg.read_text() + f"""
[swarm]
listen = "{ip}:{PEER_PORT}"
tracker_listen = "{ip}:0"
announce_ip = "{ip}"
lsd = false
utp_reset = false
""")
        cfgs.append(cfg)
    return cfgs


def origin_bytes(cfg) -> int:
    return sum(o.get("bytes", 0) for o in status(cfg).get("origins", []) if o.get("kind") == "origin")


def complete(cfg) -> bool:
    return bool((status(cfg).get("releases") or [{}])[0].get("complete"))


def done_fraction(cfg) -> float:
    r = (status(cfg).get("releases") or [{}])[0]
    return r.get("pieces_done", 0) / max(1, r.get("piece_count", 1))


def fleet(tmp_path, mib: int):
    src = make_tree(tmp_path / "src" / "festival", {"main.mp4": (mib - 8) * MiB + 5, "extras.bin": 8 * MiB})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    size = sum(f["size"] for f in rel.manifest["files"])
    # the origin's uplink is the bottleneck (as at a venue): 8 MiB/s for everyone together
    origin, fp, port = start_origin(tmp_path, "origin", [(rel.dir, rel.src)], extra=["--rate-limit", "8MiB"])
    cfgs = box_configs(tmp_path, port, fp, rel)
    boxes = [Proc(["agent", "--config", c, "--log", "info"], c.parent / "agent.log") for c in cfgs]
    return rel, size, origin, cfgs, boxes


def stop(origin, boxes):
    for b in boxes:
        b.kill(signal.SIGTERM)
    origin.kill(signal.SIGTERM)


def test_three_boxes_fill_from_one_origin_and_each_other(tmp_path):
    rel, size, origin, cfgs, boxes = fleet(tmp_path, 40)
    try:
        wait_until(lambda: all(complete(c) for c in cfgs) or not all(b.alive() for b in boxes), 300,
                   "all three boxes to complete")
        assert all(b.alive() for b in boxes), [b.text()[-2000:] for b in boxes if not b.alive()]
    finally:
        stop(origin, boxes)
    for c in cfgs:
        store_files_match(c, rel)
    per_box = [origin_bytes(c) for c in cfgs]
    egress = sum(per_box)
    # before #19 each box took the whole release from the origin (3.0x)
    assert egress <= 1.5 * size, f"origin egress {egress / size:.2f}x the release ({per_box})"
    assert sum(1 for b in per_box if b > 0) >= 2, f"the origin's work was not shared: {per_box}"


def test_a_box_killed_halfway_leaves_its_share_to_the_others(tmp_path):
    rel, size, origin, cfgs, boxes = fleet(tmp_path, 40)
    try:
        wait_until(lambda: done_fraction(cfgs[2]) >= 0.3 or not boxes[2].alive(), 300, "the third box to be a third done")
        boxes[2].kill(signal.SIGKILL)
        wait_until(lambda: all(complete(c) for c in cfgs[:2]) or not all(b.alive() for b in boxes[:2]), 300,
                   "the other two boxes to complete")
        assert all(b.alive() for b in boxes[:2]), [b.text()[-2000:] for b in boxes[:2] if not b.alive()]
    finally:
        stop(origin, boxes)
    for c in cfgs[:2]:
        store_files_match(c, rel)
    egress = sum(origin_bytes(c) for c in cfgs)
    assert egress <= 2.0 * size, f"origin egress {egress / size:.2f}x the release"
