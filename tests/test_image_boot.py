"""The booted test image: image/test-image/build.sh makes a Debian bookworm (amd64) image with the
appliance's overlay, units and popseed binary in the real GPT layout, and these tests boot it under
qemu-system-x86_64 with TCG (no KVM here).

Each box gets its own copy of the disk with a provisioning file written into the FAT boot
partition (mtools; the provisioned box is the session's, imagetools.provisioned_box:
tests/test_image_update.py goes on from it to its updates, saving a boot), host ports forwarded
to the guest's portal (80) and DNS (53/udp) ports, its management port (8080, on the second NIC: the staff port), and an origin seed on the
host (127.0.0.1, which the guest reaches as 10.42.0.2).
The guest reports unit states on the serial console (`POPSEED-TEST ...` lines from the test-only
popseed-test-report.service).

While the popseed binary has no `firstboot` command, build.sh installs a stand-in that copies a
hand-written agent.toml from the boot partition (info.json says `standin_firstboot`); the setup
mode test then skips.

Skipped (with the reason) when not root or when QEMU/mmdebstrap/genimage/mtools are missing.
The first build downloads Debian packages (~2 min) into /var/cache/popseed-test-image.
"""

from __future__ import annotations

import re

import pytest

from conftest import wait_until
from imagetools import (GUEST_IP, STAFF_TOKEN, Guest, Origin, assert_serves_release, dig, drop_provisioned_box, http_get,
                        provisioned_box, session_image, skip_reason, wait_filled)

REASON = skip_reason()
if REASON:
    print(f"\nSKIPPED test_image_boot: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

# Generous bounds for a 2-vCPU TCG guest on a shared machine; a normal boot reaches the portal in
# about a minute.
BOOT_TIMEOUT = 480.0
FILL_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def image() -> dict:
    return session_image()


@pytest.fixture
def guest(image, tmp_path):
    g = Guest(image, tmp_path / "guest")
    yield g
    g.stop()
    print(f"\nconsole log: {g.console}")


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
    guest.wait_console(r"popseed\.toml:\d+(:\d+)?: ", 180, "a provisioning error with its line on the console")
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


# Runs last in this module: the provisioned box stays up for tests/test_image_update.py, and only
# one QEMU should run at a time.
def test_provisioned_box_serves_portal_dns_and_fills_from_origin(tmp_path):
    # The session's provisioned box: tests/test_image_update.py continues from it (updates).
    guest, origin, rel = provisioned_box(tmp_path)
    try:
        _provisioned_boot(guest, rel, origin)
    except BaseException:
        drop_provisioned_box()
        raise
    finally:
        print(f"\nconsole log: {guest.console}")


def _provisioned_boot(guest: Guest, rel, origin: Origin) -> None:
    assert guest.slot == "A" and guest.boots == 1, "a fresh image boots slot A"

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
    answers = wait_until(lambda: dig(guest.dns_port, "connectivitycheck.gstatic.com"), 180, "a DNS answer from the box")
    assert answers == [GUEST_IP], answers

    # The box read the provisioning file: it fills the release from the origin on the host, and
    # serves the exact published bytes through the portal.
    wait_filled(origin, rel, FILL_TIMEOUT)
    assert_serves_release(guest, rel)
