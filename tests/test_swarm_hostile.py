"""`popseed seed` against hostile and broken peers, partly stored releases, and its caps.

Hostile peers are plain Python sockets speaking (bad) BitTorrent; each must be disconnected
with its own logged reason while a good libtorrent download from the same box completes.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import (
    WAIT,
    complete_lines,
    flip_byte,
    http_get_from,
    import_libtorrent,
    lt_add,
    lt_session,
    make_tree,
    publish,
    run,
    start_seed,
    store_import,
    tree_digests,
    wait_until,
)

MiB = 1 << 20
PIECE = 256 * 1024


# --------------------------------------------------------------------------- raw peer helpers


def handshake(ih: bytes, ext: bool = True) -> bytes:
    reserved = bytearray(8)
    if ext:
        reserved[5] = 0x10
    return b"\x13BitTorrent protocol" + bytes(reserved) + ih + b"-PY0001-hostile00000"


def msg(mid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", len(payload) + 1, mid) + payload


def request(index: int, begin: int, length: int) -> bytes:
    return msg(6, struct.pack(">III", index, begin, length))


class Peer:
    """A raw TCP peer with bounded reads (the bounds only end a hung test: every read waits for
    something the box sends, or for it to close the connection). `source`: the local address
    to connect from (the box's per-IP cap counts connections per source address)."""

    def __init__(self, addr, timeout: float = WAIT, source: str | None = None, rcvbuf: int | None = None):
        self.timeout = timeout
        if rcvbuf is None:
            self.s = socket.create_connection(addr, timeout=timeout, source_address=(source, 0) if source else None)
        else:  # a small receive window, set before connecting (a peer that reads little or nothing)
            self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.s.settimeout(timeout)
            if source:
                self.s.bind((source, 0))
            self.s.connect(addr)
        self.buf = b""

    def send(self, b: bytes) -> None:
        self.s.sendall(b)

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(f"closed after {len(self.buf)} of {n} bytes")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_msg(self) -> tuple[int | None, bytes]:
        (n,) = struct.unpack(">I", self.read_exact(4))
        if n == 0:
            return None, b""
        body = self.read_exact(n)
        return body[0], body[1:]

    def open(self, ih: bytes, bitfield: bool = True) -> dict:
        """Handshakes; returns what the box sends right after its handshake: {'ext': extension
        handshake, 'bitfield': bytes or None}. The box sends them in one go (the extension
        handshake since we offer extensions; a bitfield when it holds any piece), so this reads
        exactly those, not "whatever came before a pause"."""
        self.send(handshake(ih))
        hs = self.read_exact(68)
        assert hs[:20] == b"\x13BitTorrent protocol" and hs[28:48] == ih, hs
        got = {"bitfield": None, "ext": None}
        while got["ext"] is None or (bitfield and got["bitfield"] is None):
            mid, body = self.read_msg()
            if mid == 20 and body[:1] == b"\x00":
                got["ext"] = body[1:]
            elif mid == 5:
                got["bitfield"] = body
            else:
                pytest.fail(f"message {mid} before the extension handshake and bitfield")
        return got

    def wait_for(self, want: int, timeout: float = WAIT) -> list[tuple[int | None, bytes]]:
        """Reads messages until one with id `want`; returns all read."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.read_msg()
            seen.append(m)
            if m[0] == want:
                return seen
        pytest.fail(f"no message {want} within {timeout} s: {[m[0] for m in seen]}")

    def closed_by_box(self, timeout: float = WAIT) -> bool:
        """Reads (into `buf`) until the box closes the connection (EOF or reset): True. False
        only if it is still open after `timeout` s, a bound far above any drop this file
        expects (they happen as soon as the box has read the offending bytes)."""
        self.s.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = self.s.recv(1 << 20)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
        return False

    def close(self):
        self.s.close()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A 48 MiB release, fully stored, served with a per-peer cap of 16 MiB/s so a good
    download lasts ~3 s while hostile peers come and go."""
    base = tmp_path_factory.mktemp("hostile")
    files = {"media/talk.webm": 40 * MiB + 99, "slides.pdf": 8 * MiB}
    src = make_tree(base / "conf-talks", files, seed="hostile")
    rel = publish(src, base / "release", None, "--piece-size", str(PIECE), keys_dir=base / "keys")
    store_import(base / "store", rel)
    seed = start_seed(base / "store", base / "seed", "--announce-ip", "127.0.0.1", "--peer-upload-rate", "16MiB")
    ih = next(iter(seed.releases))
    yield rel, seed, bytes.fromhex(ih)
    log = seed.stop()
    assert "panicked" not in log, log[-4000:]


def hostile_unknown_infohash(seed, ih, piece_count, src):
    p = Peer(seed.peer, source=src)
    p.send(handshake(os.urandom(20)))
    assert p.closed_by_box(), "unknown infohash not dropped"
    assert p.buf == b"", "nothing may be sent to a peer with an unknown infohash"


def hostile_mse(seed, ih, piece_count, src):
    p = Peer(seed.peer, source=src)
    # An MSE/PE opening (a 96-byte DH public key) followed by more than PadA's 512 bytes + 20
    # without the req1 sync hash: the box answers MSE, so this must fail as soon as it is seen.
    p.send(bytes([0x8C]) + os.urandom(95 + 532))
    assert p.closed_by_box(), "MSE opening without a sync not dropped"
    # "Fast" is checked by the reason, not a clock: the box dropped it for the missing sync
    # once it had the bytes ("no req1 sync within 532 bytes"), not at its 10 s handshake
    # timeout ("no handshake in time"), which no other peer here can reach either.
    seed.wait_log(r"peer dropped: encrypted \(MSE/PE\) handshake failed: no req1 sync", "the MSE drop to be logged")


def hostile_oversized(seed, ih, piece_count, src):
    p = Peer(seed.peer, source=src)
    p.open(ih)
    p.send(b"\xff\xff\xff\xf0")  # a 4 GiB message: must not be buffered
    assert p.closed_by_box(), "oversized length prefix not dropped"


def unchoked(seed, ih, src: str | None = None) -> Peer:
    p = Peer(seed.peer, source=src)
    p.open(ih)
    p.send(msg(2))  # interested
    p.wait_for(1)  # unchoke
    return p


def hostile_out_of_range(seed, ih, piece_count, src):
    p = unchoked(seed, ih, src)
    p.send(request(piece_count + 5, 0, 16384))
    assert p.closed_by_box(), "out-of-range request not dropped"


def hostile_past_end(seed, ih, piece_count, src):
    p = unchoked(seed, ih, src)
    p.send(request(0, PIECE - 100, 16384))
    assert p.closed_by_box(), "request past the end of a piece not dropped"


def hostile_flood(seed, ih, piece_count, src):
    p = unchoked(seed, ih, src)
    flood = b"".join(request(i % (piece_count - 1), 0, 16384) for i in range(5000))
    try:
        p.send(flood)
    except (ConnectionResetError, BrokenPipeError):
        return  # dropped while we were still sending
    assert p.closed_by_box(), "request flood not dropped"


def hostile_malformed(seed, ih, piece_count, src):
    p = Peer(seed.peer, source=src)
    p.open(ih)
    p.send(msg(20, b"\x00this is not bencode"))
    assert p.closed_by_box(), "malformed extension handshake not dropped"


HOSTILE = [hostile_unknown_infohash, hostile_mse, hostile_oversized, hostile_out_of_range,
           hostile_past_end, hostile_flood, hostile_malformed]
# What each must leave in the log (tracing Display of the drop reason).
REASONS = ["unknown infohash", "encrypted (MSE/PE) handshake failed", "exceeds the cap", "out of range",
           "past the end of piece", "request flood", "malformed message"]


def test_hostile_peers_are_dropped_while_a_good_download_completes(full, tmp_path):
    rel, seed, ih = full
    piece_count = next(iter(seed.releases.values()))["pieces"]
    ses = lt_session()
    t0 = time.monotonic()  # before the download can start: `elapsed` below is at least its length
    h = lt_add(ses, seed.releases[ih.hex()]["torrent"], tmp_path)
    h.connect_peer(seed.peer)
    errors: list[str] = []

    def attack():
        # Each from its own address: an address dropped for abuse is refused for a while
        # (the good download and the last check below connect from 127.0.0.1).
        for n, f in enumerate(HOSTILE):
            try:
                f(seed, ih, piece_count, f"127.0.0.{101 + n}")
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(f"{f.__name__}: {e!r}")

    t = threading.Thread(target=attack)
    t.start()
    lt = import_libtorrent()
    deadline = time.monotonic() + 120
    while not h.status().is_seeding and time.monotonic() < deadline:
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            if isinstance(a, (lt.file_error_alert, lt.torrent_error_alert)):
                pytest.fail(f"libtorrent: {a.message()}")
    elapsed = time.monotonic() - t0
    t.join(8 * WAIT)
    assert not t.is_alive(), "hostile peers hung"
    assert not errors, errors
    st = h.status()
    assert st.is_seeding, f"good download did not complete: progress {st.progress:.3f}"
    ses.remove_torrent(h)
    del ses
    assert tree_digests(tmp_path / rel.src.name) == tree_digests(rel.src)
    # A lower bound, which load cannot break: 48 MiB through a 16 MiB/s per-peer cap (token
    # bucket, 4 MiB burst) takes at least 2.75 s however fast the machine is.
    assert elapsed >= 2.0, f"per-peer upload cap not applied: {elapsed:.2f} s"
    for r in REASONS:  # each is logged as its connection ends, maybe just after we saw the close
        seed.wait_log(f"peer dropped: .*{re.escape(r)}", f"the drop for {r!r} to be logged")
    # The box still serves new peers normally.
    p = Peer(seed.peer)
    got = p.open(ih)
    assert got["bitfield"] is not None and got["bitfield"][0] == 0xFF
    p.close()


# --------------------------------------------------------------------------- partial store


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """A release imported from data with some pieces corrupted: those pieces are missing."""
    base = tmp_path_factory.mktemp("partial")
    files = {"game/data.pak": 6 * MiB + 5000, "game/readme.txt": 2000}
    src = make_tree(base / "game-demo", files, seed="partial")
    rel = publish(src, base / "release", None, "--piece-size", str(PIECE), keys_dir=base / "keys")
    bad_data = base / "bad" / src.name
    shutil.copytree(src, bad_data)
    missing = {2, 3, 11, 24}
    for i in missing:
        flip_byte(bad_data / "game" / "data.pak", i * PIECE + 17)
    # The import stores the good pieces and reports the bad ones (exit code 1).
    proc = run("store", "--dir", base / "store", "import", rel.dir, "--data", bad_data, check=1)
    assert "do not match" in proc.stderr
    seed = start_seed(base / "store", base / "seed", "--announce-ip", "127.0.0.1",
                      "--max-peers-per-ip", "4")
    ih = next(iter(seed.releases))
    yield rel, seed, bytes.fromhex(ih), missing
    log = seed.stop()
    assert "panicked" not in log, log[-4000:]


def test_partial_release_advertises_only_present_pieces(partial):
    rel, seed, ih, missing = partial
    info = seed.releases[ih.hex()]
    n = info["pieces"]
    assert info["present"] == n - len(missing)
    p = Peer(seed.peer)
    got = p.open(ih)
    bits = got["bitfield"]
    assert bits is not None and len(bits) == (n + 7) // 8
    advertised = {i for i in range(n) if bits[i // 8] & (0x80 >> (i % 8))}
    assert advertised == set(range(n)) - missing
    assert b"11:upload_onlyi1e" in got["ext"] and b"13:metadata_sizei" in got["ext"]
    # A present block is served byte-exact.
    p.send(msg(2))
    p.wait_for(1)
    p.send(request(1, 16384, 16384))
    mid, body = p.wait_for(7)[-1]
    assert body[:8] == struct.pack(">II", 1, 16384)
    with open(rel.src / "game" / "data.pak", "rb") as f:
        f.seek(PIECE + 16384)
        assert body[8:] == f.read(16384)
    # A missing piece, with no fetcher attached: refused by choke + unchoke, never served.
    p.send(request(2, 0, 16384))
    seen = p.wait_for(1)
    ids = [m[0] for m in seen]
    assert 0 in ids and 7 not in ids, ids
    p.close()


def test_libtorrent_gets_exactly_the_present_pieces(partial, tmp_path):
    rel, seed, ih, missing = partial
    n = seed.releases[ih.hex()]["pieces"]
    lt = import_libtorrent()
    ses = lt_session(alert_mask=lt.alert_category.status | lt.alert_category.error | lt.alert_category.connect)
    h = lt_add(ses, seed.releases[ih.hex()]["torrent"], tmp_path)
    h.connect_peer(seed.peer)
    # "Nothing more arrives" is libtorrent's own conclusion, not a pause: it drops an upload-only
    # peer (the box says upload_only) once that peer has nothing left it wants. The box is its
    # only source, so from then on nothing more can arrive.
    deadline = time.monotonic() + WAIT
    seen = []
    while not any("uninteresting" in m for m in seen):
        assert time.monotonic() < deadline, f"libtorrent kept the box as an interesting peer: {seen[-5:]}"
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            if isinstance(a, (lt.file_error_alert, lt.torrent_error_alert)):
                pytest.fail(f"libtorrent: {a.message()}")
            if isinstance(a, lt.peer_disconnected_alert):
                seen.append(a.message())
    st = h.status()
    assert st.num_pieces == n - len(missing) and not st.is_seeding, (st.num_pieces, n, missing)
    have = {i for i, b in enumerate(st.pieces) if b}
    assert have == set(range(n)) - missing
    ses.remove_torrent(h)
    del ses
    # (Pieces arriving later through the fetcher are sent as `have`: covered by the unit test
    # proto::tests::missing_piece_demands_then_serves_when_it_arrives; end to end once the
    # fetcher exists.)


def test_per_ip_cap_refuses_extra_connections(partial):
    rel, seed, ih, _ = partial
    # From an address no other test used: earlier tests' connections (closed, but perhaps not
    # yet noticed by the box) count against 127.0.0.1's cap, not this one's.
    src = "127.0.0.66"
    peers = []
    for _ in range(4):  # one after another: each handshake answered means the box admitted it
        peers.append(Peer(seed.peer, source=src))
        peers[-1].open(ih)
    extra = Peer(seed.peer, source=src)
    assert extra.closed_by_box(), "a 5th connection from one IP must be refused"
    assert extra.buf == b"", "a refused connection gets nothing"
    for p in peers:
        p.close()
    seed.wait_log(r"refused: per_ip_cap", "the refusal to be logged")


# --------------------------------------------------------------------------- issue #16: memory, CPU, tracker


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A /proc/PID/status memory field (VmRSS now, VmHWM the peak), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def drops(seed, text: str) -> int:
    return sum(1 for ln in complete_lines(seed.log) if "peer dropped" in ln and text in ln)


def metadata_request(piece: int) -> bytes:
    return msg(20, bytes([3]) + f"d8:msg_typei0e5:piecei{piece}ee".encode())  # 3: the box's ut_metadata id


# A seeder's RSS bound under the metadata flood below. The flood makes the box answer
# 8 x 1998 requests for a full 16 KiB ut_metadata piece (~250 MB of replies) to peers that read
# none of them: the box before #16 buffered every reply (it grew past this bound within a
# second); now replies are made only when there is room to send them, and the 9th request
# (4 per metadata piece, 2 pieces) drops the peer (`metadata_flood`).
METADATA_FLOOD_RSS_BOUND_MIB = 64


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 14 MiB release of 16 KiB pieces on its own seed (a clean peak RSS for the memory test):
    its info dictionary (896 piece hashes, ~18 KB) fills a whole 16 KiB ut_metadata piece."""
    base = tmp_path_factory.mktemp("memory")
    src = make_tree(base / "small-release", {"a.bin": 14 * MiB}, seed="memory")
    rel = publish(src, base / "release", None, "--piece-size", "16KiB", keys_dir=base / "keys")
    store_import(base / "store", rel)
    seed = start_seed(base / "store", base / "seed", "--announce-ip", "127.0.0.1")
    ih = next(iter(seed.releases))
    yield rel, seed, bytes.fromhex(ih)
    log = seed.stop()
    assert "panicked" not in log, log[-4000:]


def test_metadata_flood_from_peers_that_never_read_keeps_memory_bounded(small):
    rel, seed, ih = small
    pid = seed.proc.pid
    before = rss_kib(pid)
    # 1998 requests (+ the extension handshake) per connection stay under the 2000 messages per
    # second of the chatter limit, so that limit is not what stops them.
    flood = b"".join(metadata_request(0) for _ in range(1998))
    peers = []
    # 8 flooders, each from its own address no other test uses (an address dropped for abuse is
    # refused for a while, so one address gets one flooding connection in).
    for n in range(8):
        p = Peer(seed.peer, source=f"127.0.1.{n + 1}", rcvbuf=4096)
        p.open(ih)
        p.send(msg(20, b"\x00d1:md11:ut_metadatai3eee"))
        try:
            p.send(flood)
        except (ConnectionResetError, BrokenPipeError):
            pass  # dropped while we were still sending
        peers.append(p)  # never read from again
    bound = METADATA_FLOOD_RSS_BOUND_MIB << 10
    # Wait for an event, whichever comes first: the box has dropped all 8 (and logged why), or its
    # memory has passed the bound.
    wait_until(lambda: drops(seed, "metadata request flood") >= 8 or rss_kib(pid) > bound, WAIT,
               "the box to drop the metadata flooders (or its memory to pass the bound)")
    peak = rss_kib(pid, "VmHWM")
    assert peak <= bound, (f"seeder peak RSS {peak >> 10} MiB under a metadata flood (started at "
                           f"{before >> 10} MiB; bound {METADATA_FLOOD_RSS_BOUND_MIB} MiB)")
    assert drops(seed, "metadata request flood") >= 8
    for p in peers:
        p.close()
    # and it still answers metadata to a peer that reads (a magnet download)
    p = Peer(seed.peer)
    p.open(ih)
    p.send(msg(20, b"\x00d1:md11:ut_metadatai3eee"))
    p.send(metadata_request(0))
    mid, body = p.wait_for(20)[-1]
    assert body[:1] == b"\x03" and b"8:msg_typei1e" in body, body[:80]
    p.close()


def test_cancel_flood_is_dropped(small):
    rel, seed, ih = small
    p = unchoked(seed, ih, "127.0.0.72")
    cancel = msg(8, struct.pack(">III", 0, 0, 16384))
    batch = cancel * 50_000
    # Cancels cost no reply: before #16 they were rate limited by nothing (356 k/s held a core,
    # the peer was never dropped). Send until the box closes the connection: at most 4 million
    # cancels (40 times the 100 000 per second the box allows); the send fails once it closed.
    closed = False
    try:
        for _ in range(80):
            p.send(batch)
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    assert closed or p.closed_by_box(), "cancel flood not dropped"
    seed.wait_log(r"peer dropped: message flood \(all kinds\)", "the cancel flood's drop to be logged")


def test_an_address_dropped_for_abuse_is_refused_for_a_while(small):
    rel, seed, ih = small
    src = "127.0.0.91"
    # The log names no address (the box keeps no record of who attended): count the bans.
    def bans() -> int:
        return sum("peer address banned" in ln for ln in complete_lines(seed.log))
    before = bans()
    p = Peer(seed.peer, source=src)
    p.open(ih)
    p.send(msg(20, b"\x00this is not bencode"))
    assert p.closed_by_box(), "malformed extension handshake not dropped"
    wait_until(lambda: bans() > before, WAIT, "the ban to be logged")
    # Its next connection is closed before the box reads a byte of it: no handshake reply.
    again = Peer(seed.peer, source=src)
    with pytest.raises((EOFError, ConnectionResetError, BrokenPipeError)):
        again.open(ih)
    assert again.buf == b""
    # (Expiry and doubling are unit-tested in swarm::peers with a given clock.)
    # Any other address is served as before.
    other = Peer(seed.peer, source="127.0.0.92")
    assert other.open(ih)["bitfield"] is not None
    other.close()


def announce(tracker_url: str, ih: bytes, port: int, numwant: int = 200, source: str = "127.0.0.3") -> bytes:
    """An announce from `source` (not the box's own address, whose other entries the tracker
    never hands out)."""
    q = urllib.parse.urlencode({"info_hash": ih, "peer_id": b"-PY0001-trackerflood", "port": port,
                                "left": 1, "compact": 1, "numwant": numwant})
    return http_get_from(f"{tracker_url}?{q}", source)


def compact_peers(reply: bytes) -> list[tuple[str, int]]:
    m = re.search(rb"5:peers(\d+):", reply)
    assert m, reply
    n, start = int(m.group(1)), m.end()
    raw = reply[start:start + n]
    return [(socket.inet_ntoa(raw[i:i + 4]), struct.unpack(">H", raw[i + 4:i + 6])[0]) for i in range(0, n, 6)]


def test_tracker_caps_peers_per_ip_per_release(small):
    rel, seed, ih = small
    assert seed.tracker_url
    # One client announcing from 40 ports (before #16 each one took a place in the release's
    # 5000-peer table). Every announce reaches the tracker from 127.0.0.3.
    for port in range(30_000, 30_040):
        announce(seed.tracker_url, ih, port)
    listed = compact_peers(announce(seed.tracker_url, ih, 31_000))
    from_us = [p for p in listed if p[0] == "127.0.0.3" and 30_000 <= p[1] < 31_000]
    # MAX_PEERS_PER_IP (8): the announcing address itself takes one of the 8 places, so at most
    # 7 of the flood's ports are handed back, the most recent ones.
    assert 1 <= len(from_us) <= 7, f"{len(from_us)} entries of one IP handed out: {from_us}"
    assert {p[1] for p in from_us} <= set(range(30_033, 30_040)), from_us


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """A small release on a seed that admits 16 peers in all."""
    base = tmp_path_factory.mktemp("capped")
    src = make_tree(base / "capped-release", {"a.bin": 2 * MiB}, seed="capped")
    rel = publish(src, base / "release", None, "--piece-size", str(PIECE), keys_dir=base / "keys")
    store_import(base / "store", rel)
    seed = start_seed(base / "store", base / "seed", "--announce-ip", "127.0.0.1", "--max-peers", "16")
    ih = next(iter(seed.releases))
    yield rel, seed, bytes.fromhex(ih)
    log = seed.stop()
    assert "panicked" not in log, log[-4000:]


def test_half_open_connections_cannot_lock_peers_out(capped):
    rel, seed, ih = capped
    # Strangers fill the global cap (16 here) with connections that never send a byte.
    holders = [Peer(seed.peer, source=src) for src in ("127.0.0.81", "127.0.0.82") for _ in range(8)]
    # Once they have held their places without a handshake for 2 s, a newcomer takes the place of
    # the oldest. Before #16 newcomers were refused until the holders' 10 s handshake timeout, and
    # holders that reconnect at once kept the box full for as long as they liked. Waited for as
    # events: a newcomer is answered (tried until it is), and the log says a holder gave way
    # (not that it timed out).
    def admitted():
        p = Peer(seed.peer, source="127.0.0.84")
        try:
            return p.open(ih)
        except (EOFError, ConnectionResetError, BrokenPipeError):
            return None
        finally:
            p.close()

    got = wait_until(admitted, WAIT, "a newcomer to be admitted past the half-open holders")
    assert got["bitfield"] is not None
    seed.wait_log(r"peer dropped: no handshake yet, gave way to a new connection at the peer cap",
                  "a holder's eviction to be logged")
    for h in holders:
        h.close()
