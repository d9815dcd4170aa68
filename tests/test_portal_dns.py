"""The portal's DNS responder, asked with `dig` (bind9-dnsutils) over UDP and TCP: every A query
gets the portal address, AAAA an empty answer, the box name its LAN address, the DoH canary and
iCloud Private Relay names NXDOMAIN, dns.msftncsi.com 131.107.255.255; malformed packets get no
reply and never stop the server; a flood from one source is rate-limited."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from conftest import start_portal, store_with

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
    cmd = ["dig", "@127.0.0.1", "-p", str(p.dns_port), name, qtype, "+tries=1", "+time=2", "+noedns"]
    if tcp:
        cmd.append("+tcp")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=15).stdout
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
                          "+time=2"], capture_output=True, text=True, timeout=15).stdout.split()
    assert out == [PORTAL_IP]


def test_malformed_packets_are_dropped_and_the_server_survives(dns):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        for junk in [b"", b"\x00", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07exam",
                     b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
                     b"\x12\x34\x81\x80" + b"\x00" * 8, bytes(range(256)) * 4]:
            s.sendto(junk, ("127.0.0.1", dns.dns_port))
            with pytest.raises(socket.timeout):
                reply = s.recvfrom(4096)
                pytest.fail(f"reply to malformed packet {junk[:20]!r}: {reply!r}")
    with socket.create_connection(("127.0.0.1", dns.dns_port), timeout=5) as t:
        t.sendall(b"\x00\x05hello")
        try:
            got = t.recv(100)
        except ConnectionResetError:
            got = b""
        assert got == b"", "malformed TCP query: connection closed, no reply"
    assert dig(dns, "example.com") == ("NOERROR", [PORTAL_IP])


def test_flood_from_one_source_is_rate_limited(dns):
    q = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.9", 0))
        s.settimeout(0.2)
        for _ in range(400):
            s.sendto(q, ("127.0.0.1", dns.dns_port))
        try:
            while True:
                s.recvfrom(4096)
                answered += 1
        except socket.timeout:
            pass
    # burst 100 plus refill at 50/s while sending: far fewer than 400.
    assert 50 <= answered < 300, answered
    # Other sources are unaffected.
    assert dig(dns, "example.com") == ("NOERROR", [PORTAL_IP])
