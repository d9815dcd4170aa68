"""`popseed seed` with real BitTorrent clients: libtorrent (by .torrent and by magnet link, with
ut_metadata), aria2c through the box's tracker only, transmission-cli from a network namespace
(it ignores loopback peers from trackers), and the tracker's HTTP interface itself.

Every client downloads into an empty directory and the result must be byte-identical to the
published source. Each wait is bounded.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import (
    WAIT,
    free_port,
    http_get_from,
    import_libtorrent,
    lt_add,
    lt_session,
    make_tree,
    publish,
    start_seed,
    store_import,
    tree_digests,
    wait_until,
)

MiB = 1 << 20
FILES = {
    "video/main.mp4": 80 * MiB + 12345,
    "installer/setup.bin": 24 * MiB + 777,
    "docs/guide.pdf": 1 * MiB + 3,
    "README.txt": 5000,
}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    base = tmp_path_factory.mktemp("swarm-rel")
    src = make_tree(base / "venue-pack", FILES, seed="swarm")
    rel = publish(src, base / "release", keys_dir=base / "keys")
    return rel


@pytest.fixture(scope="module")
def src_digests(release):
    return tree_digests(release.src)


@pytest.fixture(scope="module")
def seed(release, tmp_path_factory):
    work = tmp_path_factory.mktemp("swarm-seed")
    store_import(work / "store", release)
    s = start_seed(work / "store", work, "--announce-ip", "127.0.0.1")
    yield s
    log = s.stop()
    assert "panicked" not in log, log[-4000:]


def infohash_of(seed) -> str:
    assert len(seed.releases) == 1, seed.stdout
    return next(iter(seed.releases))


def lt_download(ses, handle, what: str, timeout: float = 240.0):
    """Waits until libtorrent has every piece; fails on errors; returns the final status."""
    lt = import_libtorrent()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            if isinstance(a, (lt.file_error_alert, lt.torrent_error_alert)):
                pytest.fail(f"libtorrent ({what}): {a.message()}", pytrace=False)
        st = handle.status()
        if st.is_seeding:
            return st
    st = handle.status()
    pytest.fail(
        f"libtorrent ({what}) did not finish within {timeout} s: state {st.state}, progress "
        f"{st.progress:.3f}, peers {st.num_peers}, has_metadata {st.has_metadata}",
        pytrace=False,
    )


def test_startup_report_lists_magnet_tracker_and_torrent(seed, release):
    ih = infohash_of(seed)
    r = seed.releases[ih]
    assert r["present"] == r["pieces"] > 0
    assert seed.tracker_url and seed.tracker_url.startswith("http://127.0.0.1:") and seed.tracker_url.endswith("/announce")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(r["magnet"]).query)
    assert q["xt"] == [f"urn:btih:{ih}"]
    assert q["tr"][0] == seed.tracker_url, "the box's tracker comes first"
    assert q["x.pe"] == [f"{seed.peer[0]}:{seed.peer[1]}"]
    lt = import_libtorrent()
    ti = lt.torrent_info(str(r["torrent"]))
    assert str(ti.info_hash()) == ih, "re-issued .torrent keeps the infohash"
    assert list(ti.trackers())[0].url == seed.tracker_url


def test_libtorrent_downloads_by_torrent(seed, release, src_digests, tmp_path):
    ih = infohash_of(seed)
    ses = lt_session()
    h = lt_add(ses, seed.releases[ih]["torrent"], tmp_path)
    h.connect_peer(seed.peer)
    lt_download(ses, h, ".torrent")
    ses.remove_torrent(h)
    del ses
    assert tree_digests(tmp_path / release.src.name) == src_digests


def test_libtorrent_downloads_by_magnet_with_ut_metadata(seed, release, src_digests, tmp_path):
    lt = import_libtorrent()
    ih = infohash_of(seed)
    ses = lt_session()
    atp = lt.parse_magnet_uri(seed.releases[ih]["magnet"])
    atp.save_path = str(tmp_path)
    h = ses.add_torrent(atp)
    assert not h.status().has_metadata
    lt_download(ses, h, "magnet")
    ti = h.torrent_file()
    assert ti is not None and str(ti.info_hash()) == ih
    ses.remove_torrent(h)
    del ses
    assert tree_digests(tmp_path / release.src.name) == src_digests


def test_aria2c_downloads_through_the_box_tracker_only(seed, release, src_digests, tmp_path):
    aria2c = shutil.which("aria2c")
    assert aria2c, "aria2c missing: scripts/test.sh installs the Debian package aria2"
    # The publisher's .torrent lists no tracker: aria2 can only find the box through ours.
    cmd = [
        aria2c, f"--dir={tmp_path}", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
        "--enable-peer-exchange=false", "--seed-time=0", f"--bt-tracker={seed.tracker_url}",
        f"--listen-port={free_port()}", "--file-allocation=none", "--summary-interval=0",
        "--console-log-level=warn", "--bt-stop-timeout=60", "--disable-ipv6=true", str(release.torrent),
    ]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert tree_digests(tmp_path / release.src.name) == src_digests


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=WAIT) as r:
        return r.read()


def bdecode(b: bytes, i: int = 0):
    """A tiny bencode decoder for tracker replies: returns (value, next index)."""
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        out, i = [], i + 1
        while b[i:i + 1] != b"e":
            v, i = bdecode(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        out, i = {}, i + 1
        while b[i:i + 1] != b"e":
            k, i = bdecode(b, i)
            v, i = bdecode(b, i)
            out[k] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


def compact_peers(raw: bytes) -> list[tuple[str, int]]:
    return [(socket.inet_ntoa(raw[k:k + 4]), int.from_bytes(raw[k + 4:k + 6], "big")) for k in range(0, len(raw), 6)]


def test_an_entry_on_the_box_address_does_not_hide_the_box(seed, release, src_digests, tmp_path):
    """Issue #19: libtorrent (so qBittorrent and Deluge) keeps one peer per IP. An announce from
    the box's own address with another port (a client on the box, a stale test client) used to
    be handed out after the box, libtorrent took its port for the box's, and the download
    stalled for good. The tracker now leaves such entries out."""
    ih = infohash_of(seed)
    stale = free_port()  # nothing listens there
    q = lambda event: urllib.parse.urlencode(  # noqa: E731
        {"info_hash": bytes.fromhex(ih), "peer_id": b"-ST0001-stalestale00", "port": stale, "left": 0,
         "compact": 1, "event": event})
    http_get(f"{seed.tracker_url}?{q('started')}")  # from 127.0.0.1, the box's address
    try:
        ses = lt_session(listen_interfaces="127.0.0.2:0")
        # no connect_peer: the box's tracker is libtorrent's only way to the box
        h = lt_add(ses, seed.releases[ih]["torrent"], tmp_path)
        lt_download(ses, h, "through the tracker, beside a stale entry on the box's address", timeout=120)
        ses.remove_torrent(h)
        del ses
    finally:
        http_get(f"{seed.tracker_url}?{q('stopped')}")
    assert tree_digests(tmp_path / release.src.name) == src_digests


def test_tracker_announce_compact_and_scrape(seed):
    ih = bytes.fromhex(infohash_of(seed))
    base = seed.tracker_url
    q = lambda port, **kw: urllib.parse.urlencode(  # noqa: E731
        {"info_hash": ih, "peer_id": b"-TT0000-" + str(port).encode().rjust(12, b"0"), "port": port,
         "uploaded": 0, "downloaded": 0, "left": 1000, "compact": 1, **kw})
    # two venue peers, each on its own address (never the box's: see the next test)
    first, _ = bdecode(http_get_from(f"{base}?{q(40001, event='started')}", "127.0.0.41"))
    assert compact_peers(first[b"peers"])[0] == seed.peer, "the box is listed first"
    second, _ = bdecode(http_get_from(f"{base}?{q(40002)}", "127.0.0.42"))
    peers = compact_peers(second[b"peers"])
    assert peers[0] == seed.peer
    assert ("127.0.0.41", 40001) in peers, "venue peers find each other"
    assert ("127.0.0.42", 40002) not in peers, "a peer is not handed itself"
    assert second[b"interval"] > 0 and second[b"complete"] >= 1
    # Scrape counts the two venue peers as incomplete and the box as a seed.
    scrape_url = base.replace("/announce", "/scrape") + "?" + urllib.parse.urlencode({"info_hash": ih})
    sc, _ = bdecode(http_get(scrape_url))
    assert sc[b"files"][ih][b"incomplete"] >= 2 and sc[b"files"][ih][b"complete"] >= 1
    # Unknown releases and bad requests get a failure reason, not a crash.
    unknown, _ = bdecode(http_get(f"{base}?" + urllib.parse.urlencode({"info_hash": b"\x01" * 20, "port": 1})))
    assert unknown[b"failure reason"] == b"unknown release"
    bad, _ = bdecode(http_get(f"{base}?info_hash=short&port=1"))
    assert b"info_hash" in bad[b"failure reason"]
    # Stopped peers leave the swarm.
    http_get_from(f"{base}?{q(40001, event='stopped')}", "127.0.0.41")
    third, _ = bdecode(http_get_from(f"{base}?{q(40003)}", "127.0.0.43"))
    assert ("127.0.0.41", 40001) not in compact_peers(third[b"peers"])


# --------------------------------------------------------------------------- transmission


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=WAIT)


@pytest.fixture
def netns():
    """A network namespace joined to this one by a veth pair with private addresses.
    Yields (namespace name, host-side address, namespace-side address)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create a network namespace")
    tag = f"{os.getpid() % 10000}"
    ns, host_if, ns_if = f"pstns{tag}", f"psth{tag}", f"psti{tag}"
    octet = os.getpid() % 200 + 20
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("utp", [False, True], ids=["tcp", "default-utp"])
def test_transmission_downloads_from_a_network_namespace(netns, tmp_path, utp):
    tcli = shutil.which("transmission-cli")
    assert tcli, "transmission-cli missing: scripts/test.sh installs the Debian package transmission-cli"
    ns, host_ip, _ = netns
    files = {"album/01.flac": 9 * MiB + 11, "album/02.flac": 7 * MiB + 5, "cover.jpg": 300_000}
    src = make_tree(tmp_path / "album-pack", files, seed="tr")
    rel = publish(src, tmp_path / "release", keys_dir=tmp_path / "keys")
    store_import(tmp_path / "store", rel)
    seed = start_seed(tmp_path / "store", tmp_path / "seed", "--listen", f"{host_ip}:0",
                      "--tracker-listen", f"{host_ip}:0", "--announce-ip", host_ip)
    dl = tmp_path / "dl"
    dl.mkdir()
    # tcp: uTP off in transmission. default-utp: transmission's defaults (uTP on, tried first;
    # before #19 the box only reset it and transmission 3.00 never came back over TCP), with
    # DHT and LPD off so nothing leaves the namespace.
    cfg = tmp_path / "tr-config"
    cfg.mkdir()
    settings = {"dht-enabled": False, "lpd-enabled": False}
    if not utp:
        settings.update({"utp-enabled": False, "pex-enabled": False})
    (cfg / "settings.json").write_text(json.dumps(settings))
    torrent = next(iter(seed.releases.values()))["torrent"]
    out = open(tmp_path / "transmission.out", "wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, tcli, "-w", str(dl), "-g", str(tmp_path / "tr-config"), "-M",
         "-p", "51413", "-D", "-U", str(torrent)],
        stdout=out, stderr=subprocess.STDOUT,
    )
    out.close()
    try:
        def done():
            if proc.poll() is not None:
                pytest.fail(f"transmission-cli exited {proc.returncode}: {(tmp_path / 'transmission.out').read_text(errors='replace')[-3000:]}")
            root = dl / src.name
            return all((root / p).is_file() and (root / p).stat().st_size == n for p, n in files.items()) and \
                not list(root.rglob("*.part"))

        wait_until(done, 300, "transmission-cli to finish the download (files complete, no .part)", interval=0.5)
        # transmission renames .part files only when the torrent completes, but its last writes
        # may still be on their way: compare until the bytes match (bounded).
        want = tree_digests(src)
        wait_until(lambda: tree_digests(dl / src.name) == want, WAIT, "transmission's files to match the source", interval=0.5)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log = seed.stop()
    assert "panicked" not in log
    assert f"{host_ip}" in seed.tracker_url
    over_utp = int(re.search(r"\((\d+) over uTP\)", log).group(1))
    assert over_utp >= 1 if utp else over_utp == 0, log[-2000:]


def test_peers_of_the_box_learn_each_other_by_pex(seed, release, tmp_path):
    """BEP 11: two libtorrent downloaders that only know the box (no tracker, no DHT, no LSD)
    learn each other's listen address from the box's ut_pex messages and connect."""
    ih = infohash_of(seed)
    # each on its own address, in and out (libtorrent keeps one peer per IP)
    a = lt_session(listen_interfaces="127.0.0.21:0", outgoing_interfaces="127.0.0.21")
    b = lt_session(listen_interfaces="127.0.0.22:0", outgoing_interfaces="127.0.0.22")
    ha = lt_add(a, seed.releases[ih]["torrent"], tmp_path / "a")
    hb = lt_add(b, seed.releases[ih]["torrent"], tmp_path / "b")
    for h in (ha, hb):
        h.replace_trackers([])  # the box itself only
        h.set_download_limit(256 * 1024)  # still downloading (not seeds) when they meet
        h.connect_peer(seed.peer)

    def met():
        return (("127.0.0.22", b.listen_port()) in [tuple(p.ip) for p in ha.get_peer_info()]
                or ("127.0.0.21", a.listen_port()) in [tuple(p.ip) for p in hb.get_peer_info()])

    try:
        wait_until(met, WAIT, "the two downloaders to meet through the box's PEX messages", interval=0.2)
    finally:
        a.remove_torrent(ha)
        b.remove_torrent(hb)


def test_libtorrent_with_utp_on_downloads(release, src_digests, tmp_path):
    """libtorrent with uTP on both ways (its default) downloads from the box, byte-identical;
    the box reports the connection it accepted over uTP."""
    store_import(tmp_path / "store", release)
    seed = start_seed(tmp_path / "store", tmp_path / "seed", "--announce-ip", "127.0.0.1", "--no-tracker")
    try:
        ih = infohash_of(seed)
        ses = lt_session(enable_outgoing_utp=True, enable_incoming_utp=True, enable_outgoing_tcp=False)
        h = lt_add(ses, seed.releases[ih]["torrent"], tmp_path / "dl")
        h.connect_peer(seed.peer)
        lt_download(ses, h, "over uTP")
        ses.remove_torrent(h)
        del ses
    finally:
        log = seed.stop()
    assert tree_digests(tmp_path / "dl" / release.src.name) == src_digests
    assert int(re.search(r"\((\d+) over uTP\)", log).group(1)) >= 1, log[-2000:]
