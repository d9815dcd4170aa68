"""The booted test image: image/test-image/build.sh makes a Debian bookworm (amd64) image with the
appliance's overlay, units and popseed binary in the real GPT layout, and these tests boot it under
qemu-system-x86_64 with TCG (no KVM here).

Each boot gets its own copy of the disk with a provisioning file written into the FAT boot
partition (mtools), host ports forwarded to the guest's portal (80), DNS (53/udp) and management
(8080) ports, and an origin seed on the host (127.0.0.1, which the guest reaches as 10.42.0.2).
The guest reports unit states on the serial console (`POPSEED-TEST ...` lines from the test-only
popseed-test-report.service).

While the popseed binary has no `firstboot` command, build.sh installs a stand-in that copies a
hand-written agent.toml from the boot partition (info.json says `standin_firstboot`); the setup
mode test then skips.

Skipped (with the reason) when not root or when QEMU/mmdebstrap/genimage/mtools are missing.
The first build downloads Debian packages (~2 min) into /var/cache/popseed-test-image.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from conftest import REPO
from conftest import keygen, make_tree, publish, wait_until
from imagetools import GUEST_IP, HOST_IP, Guest, build_image, dig, http_get, skip_reason

REASON = skip_reason()
if REASON:
    print(f"\nSKIPPED test_image_boot: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

# Generous bounds for a 2-vCPU TCG guest on a shared machine; a normal boot reaches the portal in
# about a minute.
BOOT_TIMEOUT = 480.0
FILL_TIMEOUT = 240.0
STAFF_TOKEN = "image-test-staff-token-0123456789"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict:
    return build_image(REPO / "out" / "test-image")


@pytest.fixture
def guest(image, tmp_path):
    g = Guest(image, tmp_path / "guest")
    yield g
    g.stop()
    print(f"\nconsole log: {g.console}")


class Origin:
    """`popseed origin` on 127.0.0.1 with a stats file."""

    def __init__(self, tmp: Path, release, port: int):
        import subprocess

        from conftest import popseed_path

        self.stats = tmp / "origin-stats.json"
        self.log = tmp / "origin.log"
        self.port = port
        self.proc = subprocess.Popen(
            [str(popseed_path()), "origin", "--listen", f"127.0.0.1:{port}", "--self-signed", "--write-cert",
             str(tmp / "origin-cert"), "--release", f"{release.dir}={release.src}", "--stats-file", str(self.stats)],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        m = wait_until(lambda: re.search(r"certificate sha256 ([0-9a-f]{64})", self.log.read_text()), 30, "the origin to start")
        self.fingerprint = m.group(1)

    def pieces_served(self, infohash: str) -> set[int]:
        try:
            s = json.loads(self.stats.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return set()
        return {int(i) for i in (s.get("per_piece") or {}).get(infohash, {})}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@pytest.fixture
def small_release(tmp_path):
    pub = keygen(tmp_path / "keys")
    src = make_tree(tmp_path / "src" / "talks", {"keynote.mp4": 3 * 1024 * 1024 + 12345, "slides.pdf": 200_000}, seed="image")
    rel = publish(src, tmp_path / "release", pub, "--name", "talks", "--piece-size", "256KiB")
    return rel


def provisioning_file(origin: Origin) -> str:
    return f"""# written by tests/test_image_boot.py
venue = "Image test hall"
device_name = "image-test-1"

[wifi]
ssid = "popseed image test"
passphrase = "image-test-passphrase"
country = "DE"
channel = 6

[portal]
address = "{GUEST_IP}/24"

[management]
listen = "0.0.0.0:8080"
staff_token = "{STAFF_TOKEN}"

[[origins]]
name = "host-origin"
address = "{HOST_IP}:{origin.port}"
fingerprint = "{origin.fingerprint}"
"""


def standin_agent_toml(origin: Origin) -> str:
    return f"""# hand-written agent.toml for the firstboot stand-in (tests/test_image_boot.py)
[store]
dir = "/var/lib/popseed/store"
min_free = "16MiB"

[[origins]]
name = "host-origin"
address = "{HOST_IP}:{origin.port}"
fingerprint = "{origin.fingerprint}"

[portal]
http_listen = "0.0.0.0:80"
dns_listen = "0.0.0.0:53"
portal_ip = "{GUEST_IP}"
venue_name = "Image test hall"
"""


def test_provisioned_box_serves_portal_dns_and_fills_from_origin(image, guest, small_release, tmp_path):
    from conftest import free_port

    origin = Origin(tmp_path, small_release, free_port())
    try:
        _provisioned_boot(image, guest, small_release, origin, tmp_path)
    finally:
        origin.stop()


def _provisioned_boot(image, guest: Guest, rel, origin: Origin, tmp_path: Path) -> None:
    cfg = tmp_path / "boot-file"
    if image["standin_firstboot"]:
        cfg.write_text(standin_agent_toml(origin))
        guest.put_file(cfg, "agent.toml")
    else:
        cfg.write_text(provisioning_file(origin))
        guest.put_file(cfg, "popseed.toml")
    guest.put_dir(rel.dir, "test-releases/talks")
    guest.start()

    # The agent runs under systemd as the unprivileged popseed user with CAP_NET_BIND_SERVICE only.
    vals = guest.report(BOOT_TIMEOUT, "the agent running", known=("agent-user",), popseed_agent="active",
                        firstboot_mode="normal")
    assert vals["agent-user"] == "popseed", vals
    assert int(vals["agent-caps"], 16) == 1 << 10, f"agent capabilities {vals['agent-caps']} (want CAP_NET_BIND_SERVICE only)"
    assert vals["popseed-firstboot"] == "active", vals
    assert vals["var-lib-popseed"] == "active" and vals["boot-popseed"] == "active", vals
    # No radio in QEMU: hostapd is skipped (its condition), never failed; the box is up anyway.
    assert vals["popseed-hostapd"] != "failed", vals

    # The portal answers through the forwarded port 80.
    status, body, secs = guest.wait_http("/", BOOT_TIMEOUT)
    print(f"\nboot-to-portal: {secs:.1f} s (QEMU start to the first HTTP answer on port 80, TCG)")
    assert status in (200, 302, 303, 307, 511), status
    status, body = http_get(guest.http_port, "/")
    text = body.decode(errors="replace")
    assert "Image test hall" in text or status in (302, 303, 307), f"portal page without the venue name:\n{text[:2000]}"

    # DNS answers every name with the portal address (hostfwd udp -> guest 53).
    answers = wait_until(lambda: dig(guest.dns_port, "connectivitycheck.gstatic.com"), 60, "a DNS answer from the box")
    assert answers == [GUEST_IP], answers

    # The box read the provisioning file: it fills the release from the origin on the host.
    m = rel.manifest
    infohash = m["infohash"]
    want = set(range(m["piece_count"]))

    def filled():
        return origin.pieces_served(infohash) >= want

    wait_until(filled, FILL_TIMEOUT, f"the box to pull every piece of {m['name']} from the host origin", interval=1)

    # And serves the exact published bytes through the portal.
    for path, src in (("keynote.mp4", rel.src / "keynote.mp4"), ("slides.pdf", rel.src / "slides.pdf")):
        status, body = http_get(guest.http_port, f"/files/{infohash}/{m['torrent_name']}/{path}", timeout=60)
        assert status == 200, f"{path}: HTTP {status}: {body[:300]!r}"
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest(), f"{path} differs"


def test_bad_provisioning_file_falls_back_to_setup_page(image, guest, tmp_path):
    if image["standin_firstboot"]:
        pytest.skip("the popseed binary has no `firstboot` command yet (stand-in image): no setup mode to test")
    bad = tmp_path / "popseed.toml"
    bad.write_text(
        "# a broken provisioning file (tests/test_image_boot.py)\n"
        'venue = "Broken hall"\n'
        "[wifi]\n"
        'ssid = "this SSID is far too long to be accepted by any AP"\n'
        'country = "XX"\n'
        "channel = 99\n"
        "[management]\n"
        f'staff_token = "{STAFF_TOKEN}"\n'
    )
    guest.put_file(bad, "popseed.toml")
    guest.start()
    vals = guest.report(BOOT_TIMEOUT, "the agent in setup mode", known=("agent-user",), popseed_agent="active",
                        firstboot_mode="setup")
    assert vals["agent-user"] == "popseed", vals
    # The console lists the errors with their lines.
    guest.wait_console(r"popseed\.toml:\d+(:\d+)?: ", 30, "a provisioning error with its line on the console")
    # The setup page answers on the portal port (and management port) with the errors.
    status, body, secs = guest.wait_http("/", BOOT_TIMEOUT)
    print(f"\nboot-to-setup-page: {secs:.1f} s")
    text = body.decode(errors="replace")
    if status in (301, 302, 303, 307, 308):
        status, body = http_get(guest.http_port, "/setup")
        text = body.decode(errors="replace")
    assert status == 200, f"setup page: HTTP {status}\n{text[:2000]}"
    assert re.search(r"line \d+|popseed\.toml:\d+|:\d+:", text), \
        f"setup page lists no errors with lines:\n{text[:3000]}"
    status, _body = http_get(guest.mgmt_port, "/", host=GUEST_IP)
    assert status < 500, f"management port: HTTP {status}"
