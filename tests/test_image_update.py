"""A/B updates with RAUC in the booted test image, and rollback when the new slot is not healthy.

The test image uses RAUC's grub backend like the x86_64 board: the A/B state (ORDER, A_OK/A_TRY,
B_OK/B_TRY) is in grubenv on the FAT boot partition. QEMU boots the kernel directly, so the host
plays GRUB before every boot (tests/imagetools.py: grub_boot applies
buildroot/board/pc/x86_64/grub.cfg's choice to the grubenv on the disk and writes its save_env
back), and boots that slot's command line.

One box, one disk, four boots (the first is shared with tests/test_image_boot.py's provisioned
box when both modules run):
1. slot A, provisioned: fills a release from the host origin, popseed-mark-good marks A good;
   a disk with the "test-update" bundle is hot-plugged, the test-only popseed-test-update.service
   runs `rauc install` (into B) and reboots;
2. slot B: version test-update, B marked good, the data partition survived (the release is served
   byte-identical and the origin served no piece again); the "test-broken" bundle (an agent that
   exits at once) is plugged in and installed into A;
3. slot A (broken): the agent never gets healthy, popseed-mark-good marks A bad and reboots;
4. GRUB falls back to B: version test-update, agent healthy.

The pure grubenv/GRUB functions are unit-tested here without QEMU (always run; they need only
grub-editenv for the format round trip).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from imagetools import (GRUB_CFG, GRUB_DEFAULTS, GRUB_SAVED, GRUBENV_HEADER, GrubenvError, assert_serves_release,
                        grub_boot, http_get, parse_grubenv, session_image, skip_reason, take_provisioned_box,
                        update_disk, update_grubenv, wait_filled)

REASON = skip_reason()
BOOT_TIMEOUT = 480.0
FILL_TIMEOUT = 240.0
INSTALL_TIMEOUT = 600.0
# The test image's popseed-mark-good gives up after 60 s (overlay drop-in) and then reboots.
ROLLBACK_TIMEOUT = BOOT_TIMEOUT + 300.0


# ---------------------------------------------------------------------------------- host GRUB (no QEMU)


def grub_editenv(path: Path, *args: str) -> str:
    if shutil.which("grub-editenv") is None:
        pytest.skip("grub-editenv not installed (grub-common, scripts/deps/debian.txt)")
    return subprocess.run(["grub-editenv", str(path), *args], check=True, stdout=subprocess.PIPE, text=True).stdout


def fresh_env(tmp_path: Path) -> bytes:
    """The test image's initial grubenv, made by grub-editenv like build.sh makes it."""
    p = tmp_path / "grubenv"
    grub_editenv(p, "create")
    grub_editenv(p, "set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0")
    return p.read_bytes()


# What RAUC's grub backend (src/bootloaders/grub.c) writes, for the scenarios below.
def rauc_install_into(env: dict, slot: str) -> dict:
    """`rauc install` into `slot`: marked bad while written, then primary (ORDER starts with it)."""
    other = "B" if slot == "A" else "A"
    return {**env, f"{slot}_OK": "1", f"{slot}_TRY": "0", "ORDER": f"{slot} {other}"}


def rauc_mark(env: dict, slot: str, good: bool) -> dict:
    return {**env, f"{slot}_OK": "1" if good else "0", f"{slot}_TRY": "0"}


def boot(env: dict) -> tuple[str, dict]:
    """One host-GRUB boot applied to a dict (None deletes, as save_env does)."""
    slot, saved = grub_boot(env)
    new = {k: v for k, v in env.items() if k not in saved}
    new.update({k: v for k, v in saved.items() if v is not None})
    return slot, new


def test_grubenv_round_trip_with_grub_editenv(tmp_path):
    block = fresh_env(tmp_path)
    assert len(block) == 1024 and block.startswith(GRUBENV_HEADER.encode())
    env = parse_grubenv(block)
    assert env == {"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"}, env
    # Our writes are read back by grub-editenv (escapes included), the block keeps its size and
    # grub-editenv's comment line.
    odd = "back\\slash and\nnewline"
    new = update_grubenv(block, {"A_TRY": "1", "B_TRY": None, "NEW": odd})
    assert len(new) == len(block) and new.split(b"\n")[1] == block.split(b"\n")[1]
    assert block.split(b"\n")[1].startswith(b"# WARNING")
    p = tmp_path / "ours"
    p.write_bytes(new)
    listed = grub_editenv(p, "list")
    assert "A_TRY=1\n" in listed and "B_TRY" not in listed and f"NEW={odd}\n" in listed, listed
    # And we read what grub-editenv writes.
    grub_editenv(p, "set", "B_OK=1", f"X={odd}")
    assert parse_grubenv(p.read_bytes()) == {"ORDER": "A B", "A_OK": "1", "A_TRY": "1", "B_OK": "1",
                                             "NEW": odd, "X": odd}


def test_grubenv_rejects_garbage_and_overflow(tmp_path):
    with pytest.raises(GrubenvError):
        parse_grubenv(b"\0" * 1024)
    with pytest.raises(GrubenvError):
        update_grubenv(fresh_env(tmp_path), {"BIG": "x" * 1024})


def test_grub_emulation_matches_grub_cfg():
    """The emulation's defaults, save_env list and per-slot test are grub.cfg's own lines."""
    cfg = GRUB_CFG.read_text()
    for name, value in GRUB_DEFAULTS.items():
        assert f'if [ -z "${name}" ]; then set {name}' in cfg and (f'{name}="{value}"' in cfg or f"{name}={value};" in cfg), name
    assert f"save_env --file=(${{root}})/EFI/BOOT/grubenv {' '.join(GRUB_SAVED)}\n" in cfg
    for s in ("A", "B"):
        assert (f'if [ "$s" = "{s}" -a "${s}_OK" = "1" -a "${s}_TRY" != "1" ]; then set slot={s}; set {s}_TRY=1; fi'
                in cfg), s
    assert 'if [ -z "$slot" ]; then set slot=A; set A_TRY=0; set B_TRY=0; fi' in cfg
    assert "for s in $ORDER; do" in cfg


def test_grub_update_good_then_rollback_scenario(tmp_path):
    env = parse_grubenv(fresh_env(tmp_path))
    # First boot: A, tried once; marked good by popseed-mark-good.
    slot, env = boot(env)
    assert slot == "A" and env["A_TRY"] == "1"
    env = rauc_mark(env, "A", True)
    # An update into B: B is tried next boot, and only once.
    env = rauc_install_into(env, "B")
    slot, env = boot(env)
    assert slot == "B" and env["B_TRY"] == "1"
    # B never marked good (it hung): the next boot falls back to A, which is still good.
    slot, after_hang = boot(env)
    assert slot == "A", after_hang
    # B marked good instead: it stays primary across boots.
    env = rauc_mark(env, "B", True)
    for _ in range(3):
        slot, env = boot(env)
        assert slot == "B"
        env = rauc_mark(env, "B", True)
    # A broken update into A: tried once, marked bad, then B again.
    env = rauc_install_into(env, "A")
    slot, env = boot(env)
    assert slot == "A"
    env = rauc_mark(env, "A", False)
    slot, env = boot(env)
    assert slot == "B" and env["A_OK"] == "0", env


def test_grub_falls_back_to_a_when_nothing_is_bootable():
    env = {"ORDER": "B A", "A_OK": "0", "A_TRY": "1", "B_OK": "1", "B_TRY": "1"}
    slot, saved = grub_boot(env)
    assert slot == "A" and saved == {"A_TRY": "0", "B_TRY": "0"}
    # Unset variables take grub.cfg's defaults and unset tries are deleted by save_env.
    slot, saved = grub_boot({})
    assert slot == "A" and saved == {"A_TRY": "1", "B_TRY": None}


# ---------------------------------------------------------------------------------- the booted box


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def install_bundle(box, bundle: Path, disk: Path, want_primary: str) -> tuple[str, dict]:
    """Hot-plugs a disk holding `bundle`, waits for the test-only unit's `rauc install` into
    `want_primary` (rootfs.0 = A, rootfs.1 = B) and the reboot; returns (install seconds, grubenv)."""
    box.plug_disk(update_disk(bundle, disk))
    m = box.wait_console(r"POPSEED-TEST-UPDATE result=(\w+) seconds=(\d+) primary=(\S+)", INSTALL_TIMEOUT,
                         f"rauc install of {bundle.name}")
    assert m.group(1) == "ok" and m.group(3) == want_primary, f"{m.group(0)}\n{box.tail()}"
    box.wait_exit(300, "the reboot after the install")
    return m.group(2), box.grubenv()


def test_update_into_b_then_roll_back_from_a_broken_update(tmp_path):
    image = session_image()
    if image.get("bootloader") != "grub" or set(image.get("bundles") or {}) < {"update", "broken"}:
        pytest.fail(f"the test image has no grub backend or no bundles: {image}", pytrace=False)
    # The session's provisioned box, on its first boot (tests/test_image_boot.py may have checked
    # it already): booted here when this module runs alone.
    box, origin, rel = take_provisioned_box(tmp_path)
    phases: list[tuple[str, float]] = []
    t = time.monotonic()

    def phase(name: str) -> None:
        nonlocal t
        now = time.monotonic()
        phases.append((name, now - t))
        print(f"\nphase {name}: {now - t:.0f} s")
        t = now

    try:
        infohash = rel.manifest["infohash"]

        # ---- boot 1: slot A fills the release and is marked good, then installs the update into B.
        assert box.boots == 1 and box.slot == "A", box.grubenv()
        vals = box.report(BOOT_TIMEOUT, "slot A marked good", known=("agent-user",), popseed_agent="active",
                          popseed_mark_good="active", rauc_A="good")
        assert vals["slot"] == "A" and vals["version"] == "test" and vals["rauc-booted"] == "A", vals
        box.wait_http("/", 300)
        wait_filled(origin, rel, FILL_TIMEOUT)
        assert_serves_release(box, rel)
        # everything the origin sent for the first fill (incl. read-through for the downloads above)
        counts = origin.piece_counts(infohash, fresh=True)
        phase("boot A, fill, A marked good")

        secs, env = install_bundle(box, Path(image["bundles"]["update"]), tmp_path / "update-disk.img", "rootfs.1")
        assert env["ORDER"].split()[0] == "B" and env["B_OK"] == "1" and env["B_TRY"] == "0", env
        phase(f"install the update into B (rauc install {secs} s) and reboot")

        # ---- boot 2: slot B runs the update, is marked good, and still has the data partition.
        assert box.start() == "B", box.grubenv()
        vals = box.report(BOOT_TIMEOUT, "slot B marked good", known=("agent-user",), popseed_agent="active",
                          popseed_mark_good="active", rauc_B="good")
        assert vals["slot"] == "B" and vals["version"] == "test-update" and vals["rauc-booted"] == "B", vals
        assert vals["rauc-A"] == "good" and vals["firstboot-mode"] == "normal", vals
        box.wait_http("/", 300)
        assert_serves_release(box, rel)
        assert origin.piece_counts(infohash, fresh=True) == counts, "the box fetched pieces again after the update"
        phase("boot B (the update), B marked good, data survived")

        secs, env = install_bundle(box, Path(image["bundles"]["broken"]), tmp_path / "broken-disk.img", "rootfs.0")
        assert env["ORDER"].split()[0] == "A" and env["A_OK"] == "1" and env["B_OK"] == "1", env
        phase(f"install the broken update into A (rauc install {secs} s) and reboot")

        # ---- boot 3: slot A (broken) never gets healthy: marked bad, reboot.
        assert box.start() == "A", box.grubenv()
        box.wait_console(r"popseed-mark-good: agent not healthy within \d+ s", ROLLBACK_TIMEOUT,
                         "popseed-mark-good giving up on the broken slot")
        box.wait_exit(300, "the reboot after marking the broken slot bad")
        seen = box.reports()
        assert any(r.get("version") == "test-broken" and r.get("slot") == "A" for r in seen), seen[-3:]
        assert not any(r.get("popseed-agent") == "active" and r.get("agent-user") == "popseed" for r in seen), \
            "the broken slot's agent ran"
        env = box.grubenv()
        assert env["A_OK"] == "0", env
        phase("boot the broken A, marked bad, reboot")

        # ---- boot 4: GRUB falls back to B, which runs and is healthy.
        assert box.start() == "B", box.grubenv()
        vals = box.report(BOOT_TIMEOUT, "back on slot B", known=("agent-user",), popseed_agent="active",
                          popseed_mark_good="active", rauc_B="good")
        assert vals["slot"] == "B" and vals["version"] == "test-update" and vals["rauc-A"] == "bad", vals
        status, body = http_get(box.mgmt_port, "/healthz")
        assert status == 200, (status, body[:300])
        assert_serves_release(box, rel)
        assert origin.piece_counts(infohash, fresh=True) == counts, "the box fetched pieces again after the rollback"
        phase("fall back to B, healthy")
    finally:
        box.stop()
        origin.stop()
        print(f"\nconsole logs: {box.dir}/console*.log")
        if phases:
            print("update and rollback, seconds per phase: " + ", ".join(f"{n}: {s:.0f}" for n, s in phases)
                  + f"; total {sum(s for _, s in phases):.0f} s")
