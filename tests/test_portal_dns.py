"""The portal's DNS responder, asked with `dig` (bind9-dnsutils) over UDP and TCP: every A query
gets the portal address, AAAA an empty answer, the box name its LAN address, the DoH canary and
iCloud Private Relay names NXDOMAIN, dns.msftncsi.com 131.107.255.255; malformed packets get no
reply and never stop the server; a flood from one source is rate-limited."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time

import pytest

from conftest import WAIT, start_portal, store_with

PORTAL_IP = "10.99.0.1"
LAN_IP = "192.168.7.2"


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    if shutil.which("dig") is None:
        pytest.fail("dig is missing: install bind9-dnsutils (scripts/deps/debian.txt)")
    tmp = tmp_path_factory.mktemp("portal-dns")
    store, _ = store_with(tmp, {"a.txt": 10}, "DnsRel")
    p = start_portal(store, tmp, "--box-name", "popseed.lan", "--lan-ip", LAN_IP, portal_ip=PORTAL_IP)
    yield p
    p.stop()


def dig(p, name: str, qtype: str = "A", tcp: bool = False) -> tuple[str, list[str]]:
    """(status, answer values) of one query."""
    cmd = ["dig", "@127.0.0.1", "-p", str(p.dns_port), name, qtype, "+tries=1", "+time=20", "+noedns"]
    if tcp:
        cmd.append("+tcp")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT).stdout
    status = next((ln.split("status: ")[1].split(",")[0] for ln in out.splitlines() if "status: " in ln), "NO REPLY")
    answers, in_answer = [], False
    for ln in out.splitlines():
        if ln.startswith(";; ANSWER SECTION:"):
            in_answer = True
        elif in_answer and not ln.strip():
            in_answer = False
        elif in_answer:
            answers.append(ln.split()[-1])
    return status, answers


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dns_rules(dns, tcp):
    for name in ["example.com", "captive.apple.com", "connectivitycheck.gstatic.com", "www.msftconnecttest.com",
                 "a.b.c.d.e.example.org"]:
        assert dig(dns, name, "A", tcp) == ("NOERROR", [PORTAL_IP]), name
        assert dig(dns, name, "AAAA", tcp) == ("NOERROR", []), name
    assert dig(dns, "popseed.lan", "A", tcp) == ("NOERROR", [LAN_IP])
    assert dig(dns, "PopSeed.Lan", "A", tcp) == ("NOERROR", [LAN_IP])
    assert dig(dns, "popseed.lan", "AAAA", tcp) == ("NOERROR", [])
    for name in ["use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"]:
        assert dig(dns, name, "A", tcp) == ("NXDOMAIN", []), name
        assert dig(dns, name, "AAAA", tcp) == ("NXDOMAIN", []), name
    assert dig(dns, "dns.msftncsi.com", "A", tcp) == ("NOERROR", ["131.107.255.255"])
    assert dig(dns, "example.com", "HTTPS", tcp) == ("NOERROR", [])


def test_edns_queries_are_answered(dns):
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(dns.dns_port), "example.net", "A", "+short", "+tries=1",
                          "+time=20"], capture_output=True, text=True, timeout=WAIT).stdout.split()
    assert out == [PORTAL_IP]


def query(qid: int, name: str = "example.com") -> bytes:
    """A well-formed A query with ID `qid`."""
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01"


def reply_id(reply: bytes) -> int:
    return struct.unpack(">H", reply[:2])[0]


def round_trip(p, s: socket.socket, qid: int, earlier: set[int] | None = None, resend: float = 1.0) -> None:
    """Sends query `qid` from `s` and waits (bounded) for its reply, re-sending it every `resend`
    s; fails on any other datagram first, except duplicate replies to the `earlier` round trips
    (whose queries were re-sent), and adds `qid` to `earlier`. The responder is one loop over one UDP socket, which
    takes datagrams in arrival order and sends each reply before reading the next: once this
    reply is here, every datagram `s` sent before has been processed and its reply (if any) has
    already arrived, so a missing reply is a reply never sent, not a late one."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        s.sendto(query(qid), ("127.0.0.1", p.dns_port))
        s.settimeout(resend)
        try:
            data, _ = s.recvfrom(4096)
        except socket.timeout:
            continue
        if earlier is not None and reply_id(data) in earlier:
            continue
        assert reply_id(data) == qid, f"a reply to something else came first: {data[:40]!r}"
        if earlier is not None:
            earlier.add(qid)
        return
    pytest.fail(f"no reply to query {qid:#x} within {WAIT} s")


def test_malformed_packets_are_dropped_and_the_server_survives(dns):
    markers: set[int] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.8", 0))
        for k, junk in enumerate([b"", b"\x00", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07exam",
                                  b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
                                  b"\x12\x34\x81\x80" + b"\x00" * 8, bytes(range(256)) * 4]):
            s.sendto(junk, ("127.0.0.1", dns.dns_port))
            # a good query after it, from the same socket: its reply must be the next datagram
            round_trip(dns, s, 0xB000 + k, markers)
    with socket.create_connection(("127.0.0.1", dns.dns_port), timeout=WAIT) as t:
        t.sendall(b"\x00\x05hello")
        try:
            got = t.recv(100)  # waits for the server to close the connection
        except ConnectionResetError:
            got = b""
        assert got == b"", "malformed TCP query: connection closed, no reply"
    assert dig(dns, "example.com") == ("NOERROR", [PORTAL_IP])


def test_flood_from_one_source_is_rate_limited(dns):
    # PortalConfig's defaults: a bucket of 100 queries per source, refilled at 50 per second.
    burst, rate = 100, 50
    flood_src = "127.0.0.9"  # a source no other test uses: its bucket starts full
    answered: set[int] = set()
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((flood_src, 0))
        t0 = time.monotonic()  # before the first query: the bucket cannot have refilled for longer
        # Batches of 50 back to back, each followed by a round trip from a fresh source that
        # proves the batch was processed (the responder takes datagrams in order), so no reply
        # is waited for by time and no socket buffer overflows. Until 100 were refused.
        while sent - len(answered) < 100:
            assert time.monotonic() - t0 < WAIT, f"{sent} queries, {len(answered)} answered: no limit within {WAIT} s"
            for _ in range(50):
                s.sendto(query(sent), ("127.0.0.1", dns.dns_port))
                sent += 1
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker:
                marker.bind((f"127.0.1.{sent // 50 % 250 + 1}", 0))
                round_trip(dns, marker, 0xF000 + sent // 50)
            s.setblocking(False)
            try:
                while True:
                    answered.add(reply_id(s.recv(4096)))
            except BlockingIOError:
                pass
            s.setblocking(True)
        elapsed = time.monotonic() - t0
    print(f"{len(answered)} of {sent} queries answered in {elapsed:.2f} s")
    # The limiter's documented semantics, none of which depends on how fast this ran:
    assert set(range(burst)) <= answered, "a full bucket answers the first 100 queries"
    assert len(answered) <= burst + rate * elapsed + 1, \
        f"{len(answered)} of {sent} answered in {elapsed:.2f} s: more than 100 + 50/s"
    # Other sources are unaffected.
    assert dig(dns, "example.com") == ("NOERROR", [PORTAL_IP])
