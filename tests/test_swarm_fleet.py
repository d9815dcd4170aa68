"""Boxes of one venue fill from each other (issue #19): three boxes and one origin, the boxes
naming each other in `[fetch] peers`. Each asks the origin only for its rendezvous share of
the pieces and takes the rest from its siblings over BitTorrent, so the origin sends the
release about once instead of once per box; a box killed halfway leaves its share to the
others. On loopback, and in network namespaces with tc-capped uplinks and one LAN bridge (the
benchmark `scripts/bench.sh fleet` measures the latter against a lone box)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from conftest import WAIT, make_tree, publish, publisher_key, wait_until
from test_fetch_origin import MiB, Proc, agent_config, start_origin, status, store_files_match
from test_jobs import STAFF_TOKEN, Origin, keypair, push

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


def complete_then_check_one_copy(rel, size: int, origin, cfgs, boxes) -> None:
    """Waits for every box to complete, stops them and the origin, then checks each store holds
    the release byte-identical and the origin sent it about once, shared among the boxes."""
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


def test_three_boxes_fill_from_one_origin_and_each_other(tmp_path):
    complete_then_check_one_copy(*fleet(tmp_path, 40))


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


def _sh(*args, check=True):
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True, timeout=WAIT)


@pytest.fixture
def venue_net():
    """Three network namespaces, one per box: an uplink veth to this namespace (root side
    10.79.i.1, box side 10.79.i.2) capped at 16 Mbit/s towards the box by tc tbf (with 20 ms netem
    delay where the kernel has sch_netem), and a LAN veth
    on one bridge (10.80.0.1i/24), uncapped. Everything is removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("tc") or not shutil.which("ip"):
        pytest.skip("needs root, iproute2 and tc to build the venue's network")
    tag = str(os.getpid() % 10000)
    br, nss, links = f"pstbr{tag}", [f"pstv{tag}n{i}" for i in range(3)], []
    try:
        _sh("ip", "link", "add", br, "type", "bridge")
        links.append(br)
        _sh("ip", "link", "set", br, "up")
        for i, ns in enumerate(nss):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            up_r, up_b, lan_r, lan_b = (f"pst{tag}{k}{i}" for k in "udlm")
            _sh("ip", "link", "add", up_r, "type", "veth", "peer", "name", up_b)
            links.append(up_r)
            _sh("ip", "link", "set", up_b, "netns", ns)
            _sh("ip", "addr", "add", f"10.79.{i}.1/24", "dev", up_r)
            _sh("ip", "link", "set", up_r, "up")
            _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.79.{i}.2/24", "dev", up_b)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", up_b, "up")
            # 20 ms of delay under the cap where the kernel has sch_netem (this one may not)
            if _sh("tc", "qdisc", "add", "dev", up_r, "root", "handle", "1:", "netem", "delay", "20ms", check=False).returncode == 0:
                _sh("tc", "qdisc", "add", "dev", up_r, "parent", "1:", "handle", "2:", "tbf", "rate", "16mbit", "burst", "32kb",
                    "latency", "400ms")
            else:
                _sh("tc", "qdisc", "add", "dev", up_r, "root", "tbf", "rate", "16mbit", "burst", "32kb", "latency", "400ms")
            _sh("ip", "link", "add", lan_r, "type", "veth", "peer", "name", lan_b)
            links.append(lan_r)
            _sh("ip", "link", "set", lan_b, "netns", ns)
            _sh("ip", "link", "set", lan_r, "master", br)
            _sh("ip", "link", "set", lan_r, "up")
            _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.80.0.1{i}/24", "dev", lan_b)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", lan_b, "up")
        yield nss
    finally:
        for link in links:
            _sh("ip", "link", "del", link, check=False)
        for ns in nss:
            _sh("ip", "netns", "del", ns, check=False)


def test_prewarm_job_to_all_three_boxes_on_capped_uplinks_and_one_lan_bridge(tmp_path, venue_net):
    """The issue's venue: a prewarm job pushed through the origin with `--all` (the boxes are
    not provisioned with the release) completes on all three, byte-identical, and the origin's
    own stats show what it sent for that release: about one copy."""
    src = make_tree(tmp_path / "src" / "festival", {"main.mp4": 12 * MiB + 5, "extras.bin": 4 * MiB})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    size = sum(f["size"] for f in rel.manifest["files"])
    devices = [keypair(tmp_path / f"box{i}", "device") for i in range(3)]
    origin = Origin(tmp_path, [(rel.dir, rel.src)], [d["fingerprint"] for d in devices], listen_ip="0.0.0.0")
    cfgs = []
    for i in range(3):
        others = ", ".join(f'"10.80.0.1{j}:6881"' for j in range(3) if j != i)
        cfg = tmp_path / f"box{i}" / "agent.toml"
        cfg.write_text(f"""trusted_keys = ["{publisher_key(rel.dir)}"]
status_file = "status.json"
[store]
dir = "store"
min_free = "64MiB"
[fetch]
backoff_max = "1s"
peers = [{others}]
[control]
listen = "127.0.0.1:0"
staff_token = "{STAFF_TOKEN}"
device_key = "device.key"
device_name = "box{i}"
[[origins]]
name = "o"
address = "10.79.{i}.1:{origin.port}"
fingerprint = "{origin.fp}"
[swarm]
listen = "10.80.0.1{i}:6881"
tracker_listen = "10.80.0.1{i}:6969"
lsd = false
utp_reset = false
""")
        cfgs.append(cfg)
    boxes = [Proc(["agent", "--config", c, "--log", "info"], c.parent / "agent.log", prefix=["ip", "netns", "exec", ns])
             for c, ns in zip(cfgs, venue_net)]
    try:
        wait_until(lambda: all(origin.device_linked(d["fingerprint"]) for d in devices)
                   or not all(b.alive() for b in boxes), WAIT, "the three boxes to dial out to the origin")
        assert all(b.alive() for b in boxes), [b.text()[-2000:] for b in boxes if not b.alive()]
        r = push(origin, "--all", "--release", rel.dir, "--id", "fest-1", "--wait", "--timeout", "280s")
        assert r.returncode == 0, r.stdout + r.stderr + "".join(b.text()[-2000:] for b in boxes)
        assert "job fest-1 ready on 3 devices" in r.stdout, r.stdout
        sent = origin.pieces_sent(rel.manifest["infohash"])
    finally:
        stop(origin.proc, boxes)
    for c in cfgs:
        store_files_match(c, rel)
    piece = rel.manifest["piece_length"]
    egress = sum(times * min(piece, size - i * piece) for i, times in sent.items())
    assert set(sent) == set(range((size + piece - 1) // piece)), "the origin's stats name every piece it sent"
    print(f"origin egress {egress / size:.2f}x the release")
    # before #19 each box took the whole release from the origin (3.0x)
    assert egress <= 1.5 * size, f"origin egress {egress / size:.2f}x the release ({len(sent)} pieces, {sum(sent.values())} sends)"
