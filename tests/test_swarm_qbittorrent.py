"""qBittorrent and the box, both ways (issue #19), with Debian's qbittorrent-nox 4.5.2
(libtorrent 2.0) driven only through its Web API (urllib):

- a qbittorrent-nox with its default settings (uTP on, encryption allowed, DHT, LSD, PeX, UPnP)
  downloads a release from `popseed seed`, finding the box through the box's tracker (by the
  box's .torrent), through the magnet link's tracker and peer (`x.pe`, with ut_metadata), or
  handed the box through torrents/addPeers (then over MSE with RC4, the only level qBittorrent
  accepts);
- the box with no origin and no web seed fills a release from a qbittorrent-nox seeder alone.

qBittorrent runs in a network namespace the test creates, joined to this one by a veth pair:
its defaults reach beyond loopback (DHT bootstrap, UPnP/NAT-PMP, LSD multicast, the IP
geolocation download) and listen on every interface, and in the namespace all of that stays on
the test's own veth (no route leads further). Its profile holds only what running headless
needs: the legal notice accepted and the Web API open to the test's host-side address (its
subnet whitelist, the counterpart of the default localhost bypass). The namespace has its own
ports, so qBittorrent keeps its default Web UI port (8080) and its random peer port, read back
through the API. (qBittorrent does connect to peers on loopback, from a tracker or addPeers, and
keeps one connection per IP like libtorrent, `enable_multi_connections_from_same_ip` being off:
neither is why it runs in a namespace.)

Every result must be byte-identical to the published source; each wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import (WAIT, complete_lines, make_tree, publish, start_seed, store_import, tree_digests, wait_for_line,
                      wait_until)
from test_fetch_origin import MiB, Proc, agent_config, status, store_files_match
from test_swarm_clients import netns  # noqa: F401 - the fixture: a namespace joined by a veth pair

QBT = "/usr/bin/qbittorrent-nox"
WEBUI_PORT = 8080  # qBittorrent's default; free by construction in a fresh namespace
SEEDING = {"uploading", "stalledUP", "queuedUP", "forcedUP"}
FAILED = {"error", "missingFiles"}
# Bound of a download or a fill (each takes a few seconds; this only ends a hung test).
FILL_WAIT = 180.0


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    """A multipart/form-data body: `fields` {name: text}, `files` {name: (filename, bytes)}."""
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    for k, (name, data) in files.items():
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
                     f"Content-Type: application/x-bittorrent\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{b}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={b}"


class Qbt:
    """A qbittorrent-nox with its default settings in network namespace `ns` (its profile under
    `work`), driven through its Web API at http://NS_IP:8080/api/v2/."""

    def __init__(self, work: Path, ns: str, host_ip: str, ns_ip: str):
        assert os.access(QBT, os.X_OK), f"{QBT} missing: scripts/test.sh installs the Debian package qbittorrent-nox"
        profile = work / "qbt-profile"
        conf = profile / "qBittorrent" / "config"
        conf.mkdir(parents=True)
        (conf / "qBittorrent.conf").write_text(
            "[LegalNotice]\nAccepted=true\n\n"
            "[Preferences]\n"
            "WebUI\\AuthSubnetWhitelistEnabled=true\n"
            f"WebUI\\AuthSubnetWhitelist={host_ip}/32\n")
        self.log = profile / "qBittorrent" / "data" / "logs" / "qbittorrent.log"
        self.out = work / "qbittorrent.out"
        self.base = f"http://{ns_ip}:{WEBUI_PORT}/api/v2/"
        with open(self.out, "wb") as out:
            # `ip netns exec` execs the command: the child is qbittorrent-nox itself
            self.proc = subprocess.Popen(["ip", "netns", "exec", ns, QBT, f"--profile={profile}"],
                                         stdout=out, stderr=subprocess.STDOUT)
        try:
            # logged once the Web UI's socket listens
            wait_for_line(self.log, rf"Web UI: Now listening on IP: \*, port: {WEBUI_PORT}$", WAIT,
                          "qBittorrent's Web UI", proc=self.proc, context=self.context)
            assert self.get("app/version").startswith(b"v4."), "qBittorrent 4.x answers its Web API"
            prefs = json.loads(self.get("app/preferences"))
            # the defaults these tests are about: TCP and uTP (0), encryption allowed (0), DHT,
            # LSD, PeX, UPnP on; one connection per IP
            assert (prefs["bittorrent_protocol"], prefs["encryption"]) == (0, 0), prefs
            assert all(prefs[k] for k in ("dht", "lsd", "pex", "upnp")), prefs
            assert not prefs["enable_multi_connections_from_same_ip"], prefs
        except BaseException:
            self.stop()
            raise
        self.listen_port = prefs["listen_port"]  # its peer port (TCP and UDP), random on a first start

    def context(self) -> str:
        out = self.out.read_text(errors="replace") if self.out.exists() else ""
        return f"--- qbittorrent-nox output ---\n{out[-2000:]}\n--- its log ---\n" + \
            "\n".join(complete_lines(self.log)[-40:])

    def get(self, path: str, **query) -> bytes:
        url = self.base + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=WAIT) as r:
            return r.read()

    def post(self, path: str, body: bytes = b"", ctype: str = "application/x-www-form-urlencoded") -> bytes:
        req = urllib.request.Request(self.base + path, data=body, headers={"Content-Type": ctype}, method="POST")
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return r.read()

    def add(self, save_path: Path, torrent: Path | None = None, magnet: str | None = None) -> None:
        """torrents/add: a .torrent file (uploaded) or a magnet link, saved under `save_path`."""
        fields = {"savepath": str(save_path)}
        if magnet:
            fields["urls"] = magnet
        body, ctype = multipart(fields, {"torrents": (torrent.name, torrent.read_bytes())} if torrent else {})
        assert self.post("torrents/add", body, ctype).strip() == b"Ok.", "qBittorrent refused the torrent"

    def torrent(self, ih: str) -> dict:
        """The torrent's row of torrents/info ({} until it is added)."""
        rows = json.loads(self.get("torrents/info", hashes=ih))
        return rows[0] if rows else {}

    def wait_complete(self, ih: str, what: str, timeout: float = FILL_WAIT) -> dict:
        """Waits until qBittorrent holds every piece of `ih` and seeds it; fails at once if
        qBittorrent exits or reports the torrent failed. Returns the torrent's row."""
        row = {}

        def done():
            nonlocal row
            if self.proc.poll() is not None:
                pytest.fail(f"qbittorrent-nox exited ({self.proc.returncode}) waiting for {what}\n{self.context()}",
                            pytrace=False)
            row = self.torrent(ih)
            if row.get("state") in FAILED:
                pytest.fail(f"qBittorrent: the torrent failed ({row})\n{self.context()}", pytrace=False)
            return row.get("progress") == 1 and row.get("state") in SEEDING

        try:
            wait_until(done, timeout, what, interval=0.2)
        except pytest.fail.Exception as e:
            if self.proc.poll() is not None:
                raise
            peers = json.loads(self.get("sync/torrentPeers", hash=ih)).get("peers", {})
            pytest.fail(f"{e}\nlast row: {row}\npeers: {peers}\n{self.context()}", pytrace=False)
        return row

    def stop(self) -> None:
        """app/shutdown (SIGKILL if it has not exited within WAIT); returns once it exited, its
        files closed."""
        if self.proc.poll() is None:
            try:
                self.post("app/shutdown")
            except (urllib.error.URLError, OSError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# --------------------------------------------------------------------------- qBittorrent downloads


def peers_attached(seed) -> list[str]:
    """The box's "peer attached" debug lines (one per connection, saying whether it opened with
    MSE and whether RC4 was chosen)."""
    return [ln for ln in complete_lines(seed.log) if "peer attached" in ln]


@pytest.mark.parametrize("by", ["torrent", "magnet", "addpeers"])
def test_qbittorrent_downloads_from_the_box(netns, tmp_path, by):
    """A default-settings qBittorrent downloads a release from `popseed seed`, finding the box
    - torrent: through the box's tracker, named by the box's .torrent;
    - magnet: through the box's magnet link (its tracker and `x.pe`; the info dictionary over
      ut_metadata);
    - addpeers: through torrents/addPeers only (the publisher's .torrent names no tracker).
    qBittorrent dials uTP first. A peer it is handed (addPeers) it opens with MSE, and it takes
    RC4 only (qBittorrent sets libtorrent's allowed_enc_level to RC4): the box answers RC4.
    After qBittorrent exits, its files are the source's."""
    ns, host_ip, ns_ip = netns
    files = {"film/main.mkv": 14 * MiB + 4321, "film/extras/trailer.mp4": 3 * MiB + 17, "poster.jpg": 250_000}
    src = make_tree(tmp_path / "venue-film", files, seed="qbt")
    rel = publish(src, tmp_path / "release", keys_dir=tmp_path / "keys")
    store_import(tmp_path / "store", rel)
    seed = start_seed(tmp_path / "store", tmp_path / "seed", "--listen", f"{host_ip}:0",
                      "--tracker-listen", f"{host_ip}:0", "--announce-ip", host_ip, log_filter="popseed_swarm=debug")
    ih, box = next(iter(seed.releases.items()))
    dl = tmp_path / "dl"
    dl.mkdir()
    qbt = None
    try:
        qbt = Qbt(tmp_path, ns, host_ip, ns_ip)
        if by == "torrent":
            qbt.add(dl, torrent=box["torrent"])
        elif by == "magnet":
            # qBittorrent closes the connection that brought the info dictionary and re-adds the
            # torrent: the box sees a second connection, which downloads
            qbt.add(dl, magnet=box["magnet"])
        else:
            qbt.add(dl, torrent=rel.torrent)
            wait_until(lambda: qbt.torrent(ih), WAIT, "qBittorrent to list the torrent")
            added = json.loads(qbt.post("torrents/addPeers", urllib.parse.urlencode(
                {"hashes": ih, "peers": f"{seed.peer[0]}:{seed.peer[1]}"}).encode()))
            assert added == {ih: {"added": 1, "failed": 0}}, added
        row = qbt.wait_complete(ih, f"qBittorrent's download ({by}) to complete")
        assert row["total_size"] == sum(files.values()) and row["name"] == src.name, row
    finally:
        if qbt:
            qbt.stop()
        log = seed.stop()
    assert "panicked" not in log, log[-3000:]
    assert tree_digests(dl / src.name) == tree_digests(src)
    m = re.search(r"uploaded (\d+) bytes to (\d+) peers \((\d+) over uTP\)", log)
    assert m and int(m.group(1)) >= sum(files.values()) and int(m.group(3)) >= 1, log[-3000:]
    attached = peers_attached(seed)
    assert attached, log[-3000:]
    if by == "addpeers":
        assert all("mse=true" in ln and "rc4=true" in ln for ln in attached), attached


# --------------------------------------------------------------------------- the box downloads


SWARM = """
[swarm]
listen = "{ip}:0"
tracker_listen = "{ip}:0"
announce_ip = "{ip}"
lsd = false
"""


def peers_row(cfg) -> dict:
    return next((o for o in status(cfg).get("origins", []) if o.get("kind") == "peers"), {})


def fill_complete(cfg) -> bool:
    return bool((status(cfg).get("releases") or [{}])[0].get("complete"))


def test_box_fills_from_a_qbittorrent_seeder_alone(netns, tmp_path):
    """No origin, no web seed: the box's only source is a default-settings qBittorrent seeding the
    release from its source tree (`[fetch] peers` names it); the stored files are the signed
    release's, and qBittorrent counts the release as uploaded."""
    ns, host_ip, ns_ip = netns
    files = {"a.bin": 17 * MiB + 7, "sub/b.bin": 4 * MiB, "c.txt": 1000}
    src = make_tree(tmp_path / "src" / "show", files)
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    ih = rel.manifest["infohash"]
    total = sum(files.values())
    qbt = agent = None
    try:
        qbt = Qbt(tmp_path, ns, host_ip, ns_ip)
        qbt.add(rel.data_parent, torrent=rel.torrent)
        qbt.wait_complete(ih, "qBittorrent to check the source tree and seed it")
        cfg = agent_config(tmp_path, [], rel.dir, extra=f'peers = ["{ns_ip}:{qbt.listen_port}"]')
        cfg.write_text(cfg.read_text() + SWARM.format(ip=host_ip))
        agent = Proc(["agent", "--config", cfg, "--log", "info"], tmp_path / "agent.log")
        wait_until(lambda: fill_complete(cfg) or not agent.alive(), FILL_WAIT, "the fill from qBittorrent to complete")
        assert agent.alive(), agent.text()[-3000:]
        # qBittorrent's own count of what it uploaded (its stats refresh on their own timer)
        wait_until(lambda: qbt.torrent(ih).get("uploaded", 0) >= total, WAIT,
                   "qBittorrent to count the release as uploaded")
    finally:
        if agent:
            agent.kill(signal.SIGTERM)
        if qbt:
            qbt.stop()
    store_files_match(cfg, rel)
    row = peers_row(cfg)
    assert row.get("bytes") == total and row.get("hash_failures") == 0, row
