"""The box downloads over BitTorrent too (issue #19): with no origin and no web seed it fills a
signed release from BitTorrent seeders named in `[fetch] peers` (libtorrent; a lying peer),
checking every piece against the signed release before it is stored."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import struct
import subprocess
import threading
import urllib.parse
import urllib.request

import pytest

from conftest import (
    WAIT,
    complete_lines,
    free_port,
    listening,
    lt_add,
    lt_session,
    lt_wait_checked,
    make_tree,
    publish,
    wait_until,
)
from test_fetch_origin import MiB, Proc, agent_config, status, store_files_match

SWARM = """
[swarm]
listen = "127.0.0.1:0"
tracker_listen = "127.0.0.1:0"
announce_ip = "127.0.0.1"
lsd = false
utp_reset = false
"""


def lt_seeder(rel, ses=None):
    """A libtorrent session seeding the release from its source tree (TCP on 127.0.0.1)."""
    ses = ses or lt_session()
    h = lt_add(ses, rel.torrent, rel.data_parent)
    st = lt_wait_checked(ses, h)
    assert st.is_seeding, "libtorrent does not hold the release it should seed"
    return ses, h


def peers_row(cfg) -> dict:
    return next((o for o in status(cfg).get("origins", []) if o.get("kind") == "peers"), {})


def complete(cfg) -> bool:
    return bool((status(cfg).get("releases") or [{}])[0].get("complete"))


def test_box_fills_from_a_libtorrent_seeder_alone(tmp_path):
    src = make_tree(tmp_path / "src" / "show", {"a.bin": 20 * MiB + 7, "b.bin": 3 * MiB, "c.txt": 1000})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    ses, _ = lt_seeder(rel)
    # no [[origins]], no web seed: the seeder is the only source
    cfg = agent_config(tmp_path, [], rel.dir, extra=f'peers = ["127.0.0.1:{ses.listen_port()}"]')
    cfg.write_text(cfg.read_text() + SWARM)
    agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
    try:
        wait_until(lambda: complete(cfg) or (not agent.alive() and agent.text()), 300, "the fill from libtorrent to complete")
        assert agent.alive(), agent.text()[-3000:]
    finally:
        agent.kill(signal.SIGTERM)
    store_files_match(cfg, rel)
    row = peers_row(cfg)
    total = sum(f["size"] for f in rel.manifest["files"])
    assert row.get("bytes") == total and row.get("hash_failures") == 0, row


def recv_exact(c: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


class WirePeer(threading.Thread):
    """A hand-written BitTorrent peer listening on `ip`: each accepted connection (kept in
    `conns`) goes to `serve` on its own thread."""

    def __init__(self, ip: str):
        super().__init__(daemon=True)
        self.srv = socket.create_server((ip, 0))
        self.port = self.srv.getsockname()[1]
        self.conns: list[socket.socket] = []

    def run(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, c: socket.socket):
        raise NotImplementedError

    def close(self):
        self.srv.close()


class Liar(WirePeer):
    """A BitTorrent peer that claims every piece and answers each request with zeros."""

    def __init__(self, ip: str, infohash: bytes, pieces: int):
        super().__init__(ip)
        self.ih, self.pieces = infohash, pieces
        self.blocks_sent = 0

    def serve(self, c: socket.socket):
        def read(n: int) -> bytes:
            return recv_exact(c, n)

        try:
            hs = read(68)
            assert hs[28:48] == self.ih
            bf = bytearray((self.pieces + 7) // 8)
            for i in range(self.pieces):
                bf[i // 8] |= 0x80 >> (i % 8)
            c.sendall(b"\x13BitTorrent protocol" + bytes(8) + self.ih + b"-LI0001-liarliarliar"
                      + struct.pack(">IB", 1 + len(bf), 5) + bytes(bf) + struct.pack(">IB", 1, 1))
            while True:
                (n,) = struct.unpack(">I", read(4))
                body = read(n) if n else b""
                if body[:1] == b"\x06":
                    index, begin, length = struct.unpack(">III", body[1:13])
                    c.sendall(struct.pack(">IBII", 9 + length, 7, index, begin) + bytes(length))
                    self.blocks_sent += 1
        except (EOFError, OSError):
            pass
        finally:
            c.close()


def test_a_lying_peer_is_banned_and_the_fill_completes_from_the_others(tmp_path):
    src = make_tree(tmp_path / "src" / "show", {"a.bin": 6 * MiB + 99})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    pieces = -(-(6 * MiB + 99) // (256 * 1024))
    liar = Liar("127.0.0.66", bytes.fromhex(rel.manifest["infohash"]), pieces)
    liar.start()
    # libtorrent listens from the start but is given the release only once the liar is caught,
    # so the liar is certainly asked for pieces first
    ses = lt_session()
    cfg = agent_config(tmp_path, [], rel.dir,
                       extra=f'peers = ["127.0.0.66:{liar.port}", "127.0.0.1:{ses.listen_port()}"]')
    cfg.write_text(cfg.read_text() + SWARM)
    agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
    try:
        agent.wait_line(r"peer dropped: piece \d+ failed its hash check", what="the lying peer to be dropped")
        agent.wait_line(r"peer address banned", what="the lying peer's address to be banned")
        lt_seeder(rel, ses)
        wait_until(lambda: complete(cfg) or not agent.alive(), 300, "the fill to complete from libtorrent")
        assert agent.alive(), agent.text()[-3000:]
        sent = liar.blocks_sent
        bans = sum("peer dropped: piece" in ln for ln in complete_lines(agent.log))
    finally:
        agent.kill(signal.SIGTERM)
        liar.close()
    store_files_match(cfg, rel)
    assert sent >= 16, "the liar sent at least one whole (bad) piece"
    assert bans == 1, "banned at its first bad piece, and not dialed again while banned"
    assert peers_row(cfg).get("hash_failures", 0) >= 1


def test_box_fills_from_a_transmission_seeder_alone(tmp_path):
    tcli = shutil.which("transmission-cli")
    assert tcli, "transmission-cli missing: scripts/test.sh installs the Debian package transmission-cli"
    src = make_tree(tmp_path / "src" / "album", {"01.flac": 9 * MiB + 11, "02.flac": 5 * MiB + 5, "cover.jpg": 300_000})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    port = free_port()
    cfg_dir = tmp_path / "tr-config"
    cfg_dir.mkdir()
    # default settings (uTP on, encryption preferred) but no DHT/LPD: nothing leaves loopback
    (cfg_dir / "settings.json").write_text(json.dumps({"dht-enabled": False, "lpd-enabled": False}))
    out = open(tmp_path / "transmission.out", "wb")
    tr = subprocess.Popen([tcli, "-w", str(rel.data_parent), "-g", str(cfg_dir), "-p", str(port), str(rel.torrent)],
                          stdout=out, stderr=subprocess.STDOUT)
    out.close()
    cfg = agent_config(tmp_path, [], rel.dir, extra=f'peers = ["127.0.0.1:{port}"]')
    cfg.write_text(cfg.read_text() + SWARM)
    agent = None
    try:
        wait_until(lambda: listening(port) or (tr.poll() is not None and pytest.fail(
            (tmp_path / "transmission.out").read_text(errors="replace")[-3000:])), WAIT, "transmission to listen")
        agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
        wait_until(lambda: complete(cfg) or not agent.alive(), 300, "the fill from transmission to complete")
        assert agent.alive(), agent.text()[-3000:]
    finally:
        if agent:
            agent.kill(signal.SIGTERM)
        tr.terminate()
        try:
            tr.wait(10)
        except subprocess.TimeoutExpired:
            tr.kill()
    store_files_match(cfg, rel)
    assert peers_row(cfg).get("bytes") == sum(f["size"] for f in rel.manifest["files"])


def is_box(announce_path: str) -> bool:
    """Whether an announce's peer id is a popseed box's (`-PS...`)."""
    query = urllib.parse.urlsplit(announce_path).query
    return urllib.parse.parse_qs(query, encoding="latin-1").get("peer_id", [""])[0].startswith("-PS")


class StubTracker(threading.Thread):
    """An HTTP tracker that answers a popseed box's announces with one peer (compact), anyone
    else's with none (libtorrent handed its own address bans 127.0.0.1 as itself), and records
    the announces it got."""

    def __init__(self, peer: tuple[str, int]):
        super().__init__(daemon=True)
        import http.server  # noqa: PLC0415

        tracker = self
        self.announces: list[str] = []
        compact = socket.inet_aton(peer[0]) + struct.pack(">H", peer[1])

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                tracker.announces.append(self.path)
                box = is_box(self.path)
                body = b"d8:intervali60e5:peers" + (b"6:" + compact if box else b"0:") + b"e"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/announce"

    def run(self):
        self.httpd.serve_forever()

    def close(self):
        self.httpd.shutdown()


def test_box_finds_a_swarm_through_the_release_tracker(tmp_path):
    """No origin, no static peer: the box announces the release to the tracker its .torrent
    names, which hands out a libtorrent seeder; the box fills from it."""
    ses = lt_session()
    tracker = StubTracker(("127.0.0.1", ses.listen_port()))
    tracker.start()
    src = make_tree(tmp_path / "src" / "talks", {"day1.mp4": 7 * MiB + 3})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB", "--tracker", tracker.url)
    lt_seeder(rel, ses)
    cfg = agent_config(tmp_path, [], rel.dir)
    cfg.write_text(cfg.read_text() + SWARM)
    agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
    try:
        wait_until(lambda: complete(cfg) or not agent.alive(), 300, "the fill from the tracker's swarm to complete")
        assert agent.alive(), agent.text()[-3000:]
    finally:
        agent.kill(signal.SIGTERM)
        tracker.close()
    store_files_match(cfg, rel)
    first = next(a for a in tracker.announces if is_box(a))
    ih = rel.manifest["infohash"]
    assert "event=started" in first and "compact=1" in first, first
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(first).query, encoding="latin-1")
    assert q["info_hash"][0].encode("latin-1") == bytes.fromhex(ih), first


@pytest.mark.parametrize("scheme", ["udp", "http"])
def test_box_finds_a_swarm_through_opentracker(tmp_path, scheme):
    """A real tracker (Debian's opentracker, whitelist mode), over BEP 15 UDP and over HTTP: the
    release's .torrent names it, a libtorrent seeder announces there, and the box with no origin
    and no static peer finds the seeder through it and fills."""
    ot = shutil.which("opentracker")
    assert ot, "opentracker missing: scripts/test.sh installs the Debian package opentracker"
    port = free_port()
    src = make_tree(tmp_path / "src" / "talks", {"day2.mp4": 6 * MiB + 9})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB", "--tracker", f"{scheme}://127.0.0.1:{port}/announce")
    ih = rel.manifest["infohash"]
    root = tmp_path / "opentracker"
    root.mkdir()
    (root / "whitelist.txt").write_text(ih + "\n")
    # it refuses to run as root: it binds, chroots to `root` and drops to nobody
    out = open(tmp_path / "opentracker.out", "wb")
    tracker = subprocess.Popen([ot, "-i", "127.0.0.1", "-p", str(port), "-P", str(port), "-w", "/whitelist.txt",
                                "-d", str(root), "-u", "nobody"], stdout=out, stderr=subprocess.STDOUT)
    out.close()
    agent = None
    try:
        wait_until(lambda: listening(port) or (tracker.poll() is not None and pytest.fail(
            (tmp_path / "opentracker.out").read_text(errors="replace"))), WAIT, "opentracker to listen")
        # on its own address: opentracker hands every announcer its own entry too, and libtorrent
        # connecting to itself bans that address (which must not be the box's)
        ses = lt_session(listen_interfaces="127.0.0.2:0", outgoing_interfaces="127.0.0.2")
        lt_seeder(rel, ses)
        scrape = f"http://127.0.0.1:{port}/scrape?info_hash=" + urllib.parse.quote(bytes.fromhex(ih))

        def seeders() -> bool:
            with urllib.request.urlopen(scrape, timeout=WAIT) as r:
                return b"completei1e" in r.read()
        wait_until(seeders, WAIT, "libtorrent's announce to reach opentracker")
        cfg = agent_config(tmp_path, [], rel.dir)
        cfg.write_text(cfg.read_text() + SWARM)
        agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
        wait_until(lambda: complete(cfg) or not agent.alive(), 300, f"the fill through the {scheme} tracker to complete")
        assert agent.alive(), agent.text()[-3000:]
        assert any(f"tracker={scheme}://" in ln and "announced" in ln for ln in complete_lines(agent.log))
    finally:
        if agent:
            agent.kill(signal.SIGTERM)
        tracker.terminate()
        tracker.wait(10)
    store_files_match(cfg, rel)
    assert peers_row(cfg).get("bytes") == sum(f["size"] for f in rel.manifest["files"])


def test_the_lan_download_cap_is_respected(tmp_path):
    """`[swarm] download_rate` caps what the box takes from peers (`[fetch] rate_limit` caps
    only the uplink)."""
    src = make_tree(tmp_path / "src" / "show", {"a.bin": 12 * MiB})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    ses, _ = lt_seeder(rel)
    cfg = agent_config(tmp_path, [], rel.dir, extra=f'peers = ["127.0.0.1:{ses.listen_port()}"]\nvenue_grace = "0s"')
    cfg.write_text(cfg.read_text() + SWARM + "download_rate = 4194304\n")
    agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
    try:
        wait_until(lambda: complete(cfg) or not agent.alive(), 300, "the capped fill from libtorrent to complete")
        assert agent.alive(), agent.text()[-3000:]
    finally:
        agent.kill(signal.SIGTERM)
    store_files_match(cfg, rel)
    took = (status(cfg).get("releases") or [{}])[0]["fill_ms"] / 1000
    # 12 MiB at 4 MiB/s with a 1 MiB burst (and at most one 512 KiB read beyond it) cannot take
    # less than 2.6 s; uncapped it takes ~0.2 s
    assert took >= 2.5, f"12 MiB arrived in {took:.2f} s despite a 4 MiB/s cap"


def test_box_fills_from_a_seeder_that_takes_utp_only(tmp_path):
    """A libtorrent seeder that refuses TCP and takes uTP: the box's TCP dial is refused and
    it dials again over uTP."""
    src = make_tree(tmp_path / "src" / "show", {"a.bin": 9 * MiB + 1})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    ses, _ = lt_seeder(rel, lt_session(enable_incoming_tcp=False, enable_incoming_utp=True))
    cfg = agent_config(tmp_path, [], rel.dir, extra=f'peers = ["127.0.0.1:{ses.listen_port()}"]')
    cfg.write_text(cfg.read_text().replace("utp_reset = false\n", "") + SWARM.replace("utp_reset = false\n", ""))
    agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
    try:
        wait_until(lambda: complete(cfg) or not agent.alive(), 300, "the fill over uTP to complete")
        assert agent.alive(), agent.text()[-3000:]
    finally:
        agent.kill(signal.SIGTERM)
    store_files_match(cfg, rel)
    assert peers_row(cfg).get("bytes") == 9 * MiB + 1



class FastChoker(WirePeer):
    """A BEP 6 seeder of one single-file release that keeps the box choked until `unchoke()`:
    have_all, allowed_fast for `allowed`, serves requests for those (real data) and rejects
    any other while choking. Records what it served and rejected."""

    def __init__(self, ip: str, infohash: bytes, data: bytes, piece_len: int, allowed: list[int]):
        super().__init__(ip)
        self.ih, self.data, self.piece_len, self.allowed = infohash, data, piece_len, allowed
        self.served, self.rejected = set(), 0
        self.choking = True
        self.lock = threading.Lock()

    def send(self, c: socket.socket, b: bytes):
        with self.lock:
            c.sendall(b)

    def unchoke(self):
        self.choking = False
        for c in self.conns:
            try:
                self.send(c, struct.pack(">IB", 1, 1))
            except OSError:
                pass

    def serve(self, c: socket.socket):
        def read(n: int) -> bytes:
            return recv_exact(c, n)

        try:
            hs = read(68)
            assert hs[27] & 0x04, "the box offers BEP 6"
            reserved = bytes(7) + b"\x04"
            opening = b"\x13BitTorrent protocol" + reserved + self.ih + b"-FC0001-fastchoker00" + struct.pack(">IB", 1, 14)
            opening += b"".join(struct.pack(">IBI", 5, 17, i) for i in self.allowed)
            self.send(c, opening)
            while True:
                (n,) = struct.unpack(">I", read(4))
                body = read(n) if n else b""
                if body[:1] == b"\x06":
                    index, begin, length = struct.unpack(">III", body[1:13])
                    if self.choking and index not in self.allowed:
                        self.send(c, struct.pack(">IBIII", 13, 16, index, begin, length))
                        self.rejected += 1
                        continue
                    off = index * self.piece_len + begin
                    self.send(c, struct.pack(">IBII", 9 + length, 7, index, begin) + self.data[off:off + length])
                    self.served.add(index)
        except (EOFError, OSError):
            pass
        finally:
            c.close()


def test_a_choking_bep6_seeder_gives_its_allowed_fast_pieces_then_the_rest_once_it_unchokes(tmp_path):
    """BEP 6 from the downloading side, against a wire-level peer (libtorrent gives a seed's
    only peer an optimistic unchoke at once, so it cannot be made to keep the box choked):
    while choked the box asks for the allowed-fast pieces only and stores them; unchoked,
    it completes."""
    src = make_tree(tmp_path / "src" / "show", {"a.bin": 8 * MiB + 7})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    data = (src / "a.bin").read_bytes()
    allowed = [3, 17, 30]
    peer = FastChoker("127.0.0.67", bytes.fromhex(rel.manifest["infohash"]), data, 256 * 1024, allowed)
    peer.start()
    cfg = agent_config(tmp_path, [], rel.dir, extra=f'peers = ["127.0.0.67:{peer.port}"]')
    cfg.write_text(cfg.read_text() + SWARM)
    agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
    done = lambda: (status(cfg).get("releases") or [{}])[0].get("pieces_done", 0)  # noqa: E731
    try:
        wait_until(lambda: done() >= len(allowed) or not agent.alive(), 120, "the allowed-fast pieces to be stored")
        assert agent.alive(), agent.text()[-3000:]
        assert (done(), peer.served, peer.rejected) == (len(allowed), set(allowed), 0), \
            "while choked: only the allowed-fast pieces asked for and stored"
        peer.unchoke()
        wait_until(lambda: complete(cfg) or not agent.alive(), 120, "the fill to complete once unchoked")
        assert agent.alive(), agent.text()[-3000:]
    finally:
        agent.kill(signal.SIGTERM)
        peer.close()
    store_files_match(cfg, rel)
