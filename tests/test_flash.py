"""scripts/flash.sh (write, verify, provisioning file, refusals), scripts/provision.sh (flags,
piped answers, validation) and scripts/build-image.sh's argument handling.

flash.sh is tested against regular files and a loop device this test creates (root only), with a
fake /sys tree (POPSEED_SYSFS) for the removable check. Targets it must refuse are tried with
`dd`, `bmaptool` and `mcopy` replaced by stubs that fail loudly, so a broken check cannot write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

FLASH = REPO / "scripts" / "flash.sh"
PROVISION = REPO / "scripts" / "provision.sh"
BUILD_IMAGE = REPO / "scripts" / "build-image.sh"
TOOLS = ["genimage", "mkfs.vfat", "mcopy", "mtype", "sfdisk", "mke2fs"]


def sh(*args, env=None, input=None, timeout=120):
    return subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **(env or {})}, input=input, timeout=timeout)


def sha(path: Path, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = length
        while True:
            chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
                if left == 0:
                    break
    return h.hexdigest()


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """A small disk image in the real layout (image/genimage/popseed-gpt.cfg.in)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {missing}")
    d = tmp_path_factory.mktemp("flash-image")
    inp = d / "input"
    inp.mkdir()
    sh("truncate", "-s", "4M", inp / "boot.vfat").check_returncode()
    sh("mkfs.vfat", "-n", "POPSEED", inp / "boot.vfat").check_returncode()
    (d / "root" / "etc").mkdir(parents=True)
    (d / "root" / "etc" / "hostname").write_text("popseed-flash-test\n")
    sh("mke2fs", "-q", "-t", "ext4", "-d", d / "root", inp / "rootfs.ext4", "4M").check_returncode()
    script = (
        f'. "{REPO}/image/layout.sh"; popseed_genimage_cfg "{REPO}/image/genimage/popseed-gpt.cfg.in" "{d}/g.cfg" '
        'IMAGE=disk.img BOOT_IMAGE=boot.vfat ROOTFS_IMAGE=rootfs.ext4 BOOT_SIZE=4M ROOTFS_SIZE=4M DATA_SIZE=2M '
        'BOOT_TYPE=F ROOT_TYPE="$POPSEED_ROOT_TYPE_X86_64" FIRST_OFFSET=1M RAW_PARTITIONS=""'
    )
    sh("bash", "-c", script).check_returncode()
    p = sh("genimage", "--config", d / "g.cfg", "--rootpath", d / "groot", "--tmppath", d / "gtmp",
           "--inputpath", inp, "--outputpath", d / "out")
    assert p.returncode == 0, p.stderr
    img = d / "popseed-test.img"
    shutil.move(d / "out" / "disk.img", img)
    return img


@pytest.fixture
def provfile(tmp_path) -> Path:
    p = tmp_path / "popseed.toml"
    p.write_text('venue = "Flash test"\n[wifi]\nssid = "x"\ncountry = "DE"\n')
    return p


@pytest.fixture
def no_write_path(tmp_path) -> dict:
    """PATH with dd/bmaptool/mcopy stubs that fail: for targets flash.sh must refuse."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for tool in ("dd", "bmaptool", "mcopy"):
        (stubs / tool).write_text("#!/bin/sh\necho \"STUB $0 WAS CALLED: flash.sh tried to write\" >&2\nexit 99\n")
        (stubs / tool).chmod(0o755)
    return {"PATH": f"{stubs}:{os.environ['PATH']}"}


def boot_offset(target: Path) -> int:
    t = json.loads(sh("sfdisk", "-J", target).stdout)["partitiontable"]
    part = next(p for p in t["partitions"] if p.get("name") == "popseed-boot")
    return part["start"] * t.get("sectorsize", 512)


# ---------------------------------------------------------------------------------- flash.sh


def test_flash_to_file_verifies_and_writes_provisioning_file(image, provfile, tmp_path):
    target = tmp_path / "card.img"
    sh("truncate", "-s", "32M", target).check_returncode()
    p = sh("bash", FLASH, "--yes", "--no-bmap", "--provision", provfile, image, target)
    assert p.returncode == 0, p.stderr
    assert "verified sha256" in p.stderr, p.stderr
    # The image's bytes are there, except the provisioning file now on the boot partition.
    off = boot_offset(target)
    got = sh("mtype", "-i", f"{target}@@{off}", "::popseed.toml", env={"MTOOLS_SKIP_CHECK": "1"})
    assert got.returncode == 0 and got.stdout == provfile.read_text(), got
    size = image.stat().st_size
    with open(image, "rb") as a, open(target, "rb") as b:
        assert a.read(off) == b.read(off), "bytes before the boot partition differ"
    assert target.stat().st_size == 32 << 20, "the target file was truncated"
    # The rest of the disk after the boot partition is the image's, byte for byte.
    boot_end = off + (4 << 20)
    with open(image, "rb") as a, open(target, "rb") as b:
        a.seek(boot_end)
        b.seek(boot_end)
        assert a.read(size - boot_end) == b.read(size - boot_end)


def test_flash_xz_image_and_bmap(image, tmp_path):
    xz = tmp_path / "popseed-test.img.xz"
    with open(xz, "wb") as f:
        subprocess.run(["xz", "-c", "-0", str(image)], stdout=f, check=True)
    target = tmp_path / "card.img"
    sh("truncate", "-s", "16M", target).check_returncode()
    p = sh("bash", FLASH, "--yes", xz, target)
    assert p.returncode == 0, p.stderr
    assert sha(target, image.stat().st_size) == sha(image)
    if shutil.which("bmaptool"):
        bmap = tmp_path / "popseed-test.bmap"
        shutil.copy(image, tmp_path / "popseed-test.img")
        sh("bmaptool", "create", "-o", bmap, tmp_path / "popseed-test.img").check_returncode()
        target2 = tmp_path / "card2.img"
        sh("truncate", "-s", "16M", target2).check_returncode()
        p = sh("bash", FLASH, "--yes", tmp_path / "popseed-test.img", target2)
        assert p.returncode == 0, p.stderr
        assert "bmaptool" in p.stderr
        # Mapped blocks are the image's; unmapped ones were left as holes (zeros here).
        assert sha(target2, image.stat().st_size) == sha(image)


def test_flash_detects_a_corrupted_write(image, tmp_path):
    """A device that does not keep what was written fails verification (a `dd` that drops bytes)."""
    stubs = tmp_path / "baddd"
    stubs.mkdir()
    real_dd = shutil.which("dd")
    corrupt = f'printf "X" | "{real_dd}" of="{tmp_path}/card.img" bs=1 seek=5000 conv=notrunc status=none'
    (stubs / "dd").write_text(f'#!/bin/sh\n"{real_dd}" "$@" && {corrupt}\n')
    (stubs / "dd").chmod(0o755)
    target = tmp_path / "card.img"
    sh("truncate", "-s", "16M", target).check_returncode()
    p = sh("bash", FLASH, "--yes", "--no-bmap", image, target, env={"PATH": f"{stubs}:{os.environ['PATH']}"})
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "verification failed" in p.stderr


def test_flash_usage_and_refusals(image, tmp_path, no_write_path):
    target = tmp_path / "card.img"
    sh("truncate", "-s", "16M", target).check_returncode()
    assert sh("bash", FLASH, "--help").returncode == 0
    assert sh("bash", FLASH, image).returncode == 2
    assert sh("bash", FLASH, "--bogus", image, target).returncode == 2
    assert sh("bash", FLASH, tmp_path / "nope.img", target).returncode == 2
    assert sh("bash", FLASH, image, tmp_path / "no-such-target").returncode == 2
    assert sh("bash", FLASH, "--yes", "--provision", tmp_path / "missing.toml", image, target).returncode == 2
    # No terminal and no --yes: nothing is written.
    p = sh("bash", FLASH, image, target, env=no_write_path, input="")
    assert p.returncode == 2 and "STUB" not in p.stderr, p.stderr
    # The disk the host runs from is refused whatever the flags.
    src = sh("findmnt", "-no", "SOURCE", "/").stdout.strip()
    if src.startswith("/dev/") and Path(src).is_block_device():
        disk = sh("lsblk", "-no", "PKNAME", src).stdout.strip() or Path(os.path.realpath(src)).name
        p = sh("bash", FLASH, "--yes", "--force", image, f"/dev/{disk}", env=no_write_path)
        assert p.returncode == 2, p.stderr
        assert "STUB" not in p.stderr and ("root file system" in p.stderr or "mounted" in p.stderr), p.stderr
    else:
        print(f"\nroot file system source {src!r} is no block device: host-disk refusal not exercised")


@pytest.fixture
def loopdev(tmp_path):
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("loop devices need root and losetup")
    backing = tmp_path / "loop-backing.img"
    sh("truncate", "-s", "16M", backing).check_returncode()
    p = sh("losetup", "--find", "--show", backing)
    if p.returncode != 0:
        pytest.skip(f"no loop device available: {p.stderr.strip()}")
    dev = p.stdout.strip()
    yield dev, backing
    sh("losetup", "-d", dev)


def fake_sysfs(root: Path, disk: str, removable: int) -> Path:
    d = root / "block" / disk
    d.mkdir(parents=True)
    (d / "removable").write_text(f"{removable}\n")
    (root / "class" / "block" / disk).mkdir(parents=True)
    return root


def test_flash_loop_device_removable_check(image, provfile, loopdev, tmp_path, no_write_path):
    dev, backing = loopdev
    name = Path(dev).name
    # A loop device is not removable: refused without --force (nothing written).
    sys0 = fake_sysfs(tmp_path / "sys0", name, 0)
    p = sh("bash", FLASH, "--yes", image, dev, env={**no_write_path, "POPSEED_SYSFS": str(sys0)})
    assert p.returncode == 2 and "not a removable disk" in p.stderr and "STUB" not in p.stderr, p.stderr
    # The same device seen as removable (fake /sys) is written, verified and provisioned.
    p = sh("bash", FLASH, "--yes", "--no-bmap", "--provision", provfile, image, dev,
           env={"POPSEED_SYSFS": str(fake_sysfs(tmp_path / "sys1", name, 1))})
    assert p.returncode == 0, p.stderr
    assert "verified sha256" in p.stderr
    off = boot_offset(backing)
    got = sh("mtype", "-i", f"{backing}@@{off}", "::popseed.toml", env={"MTOOLS_SKIP_CHECK": "1"})
    assert got.stdout == provfile.read_text(), got
    # With the real /sys and --force it is written too.
    p = sh("bash", FLASH, "--yes", "--force", "--no-bmap", image, dev)
    assert p.returncode == 0, p.stderr
    assert sha(backing, image.stat().st_size) == sha(image)


# ---------------------------------------------------------------------------------- provision.sh


def popseed_with_firstboot() -> str | None:
    cands = [os.environ.get("POPSEED_BIN"), shutil.which("popseed"), str(REPO / "target/release/popseed")]
    for c in cands:
        if c and os.access(c, os.X_OK) and sh(c, "firstboot", "--help").returncode == 0:
            return c
    return None


def test_provision_from_flags(tmp_path):
    out = tmp_path / "popseed.toml"
    fp = "ab" * 32
    p = sh("bash", PROVISION, "--out", out, "--venue", 'Hall "B"', "--ssid", "FooConf Downloads",
           "--passphrase", "correct horse battery", "--security", "wpa2-wpa3", "--country", "de", "--channel", "11",
           "--origin", f"203.0.113.10:4433,{fp},main", "--trusted-key", "ed25519:" + "A" * 43,
           "--staff-token", "0123456789abcdef-staff", "--uplink", "eth0", "--store-budget", "400GiB", "--no-check")
    assert p.returncode == 0, p.stderr
    doc = tomllib.loads(out.read_text())
    assert doc["venue"] == 'Hall "B"'
    assert doc["wifi"] == {"ssid": "FooConf Downloads", "passphrase": "correct horse battery", "security": "wpa2-wpa3",
                           "country": "DE", "channel": 11}
    assert doc["portal"]["address"] == "10.42.0.1/24"
    assert doc["management"] == {"listen": "0.0.0.0:8080", "staff_token": "0123456789abcdef-staff"}
    assert doc["origins"] == [{"name": "main", "address": "203.0.113.10:4433", "fingerprint": fp}]
    assert doc["uplink"] == {"interface": "eth0", "mode": "dhcp"}
    assert doc["store"] == {"budget": "400GiB"}
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    # No overwrite without --force.
    p = sh("bash", PROVISION, "--out", out, "--venue", "x", "--ssid", "y", "--open", "--country", "FR", "--no-check")
    assert p.returncode == 1 and "exists" in p.stderr


def test_provision_from_piped_answers(tmp_path):
    out = tmp_path / "popseed.toml"
    p = sh("bash", PROVISION, "--out", out, "--no-check", input="Main stage\nStage WiFi\n\nnl\n")
    assert p.returncode == 0, p.stderr
    doc = tomllib.loads(out.read_text())
    assert doc["venue"] == "Main stage" and doc["wifi"]["ssid"] == "Stage WiFi"
    assert doc["wifi"]["security"] == "open" and "passphrase" not in doc["wifi"]
    assert doc["wifi"]["country"] == "NL"
    token = doc["management"]["staff_token"]
    assert len(token) == 32 and token in p.stderr, "the generated staff token is printed"
    # Answers that run out, and --no-prompt, are usage errors.
    assert sh("bash", PROVISION, "--out", tmp_path / "b.toml", "--no-check", input="Only venue\n").returncode == 2
    assert sh("bash", PROVISION, "--out", tmp_path / "c.toml", "--no-prompt", "--venue", "v").returncode == 2


@pytest.mark.parametrize("args,msg", [
    (["--passphrase", "short"], "passphrase"),
    (["--ssid", "x" * 33], "SSID"),
    (["--country", "Germany"], "country"),
    (["--staff-token", "too-short"], "staff token"),
    (["--open", "--passphrase", "long enough pass"], "contradict"),
])
def test_provision_rejects_bad_values(tmp_path, args, msg):
    base = {"--venue": "v", "--ssid": "s", "--passphrase": "long enough pass", "--country": "DE"}
    flags = []
    for k, v in base.items():
        if k not in args:
            flags += [k, v]
    p = sh("bash", PROVISION, "--out", tmp_path / "p.toml", "--no-check", *flags, *args)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert msg.lower() in p.stderr.lower(), p.stderr
    assert not (tmp_path / "p.toml").exists()


def test_provision_output_passes_firstboot_validation(tmp_path):
    popseed = popseed_with_firstboot()
    if popseed is None:
        pytest.skip("no popseed binary with the `firstboot` command (POPSEED_BIN)")
    out = tmp_path / "popseed.toml"
    # A box refuses every release without a trusted publisher key, so a valid file names one.
    key = next(ln.split(":", 1)[1].strip() for ln in sh(popseed, "keygen", "--out", tmp_path / "pub").stdout.splitlines()
               if ln.startswith("key:"))
    p = sh("bash", PROVISION, "--out", out, "--venue", "Hall B", "--ssid", "FooConf", "--passphrase", "long enough pass",
           "--country", "DE", "--origin", f"203.0.113.10:4433,{'cd' * 32}", "--trusted-key", key,
           env={"POPSEED_BIN": popseed})
    assert p.returncode == 0, p.stderr
    assert "valid" in p.stderr
    # A value only popseed's own validation knows is wrong (channel 14 is Japan-only) fails the script.
    p = sh("bash", PROVISION, "--out", tmp_path / "bad.toml", "--venue", "Hall B", "--ssid", "FooConf", "--open",
           "--country", "DE", "--channel", "14", "--trusted-key", key, env={"POPSEED_BIN": popseed})
    assert p.returncode == 1, p.stderr
    assert "popseed.toml:" in p.stderr and "channel" in p.stderr and not (tmp_path / "bad.toml").exists()


# ---------------------------------------------------------------------------------- build-image.sh


def test_build_image_arguments(tmp_path):
    assert sh("bash", BUILD_IMAGE, "--help").returncode == 0
    p = sh("bash", BUILD_IMAGE)
    assert p.returncode == 2 and "rpi5" in p.stderr and "rock5b" in p.stderr, p.stderr
    assert sh("bash", BUILD_IMAGE, "nosuchboard").returncode == 2
    assert sh("bash", BUILD_IMAGE, "rpi5", "x86_64").returncode == 2
    assert sh("bash", BUILD_IMAGE, "--jobs", "zero", "rpi5").returncode == 2
    assert sh("bash", BUILD_IMAGE, "--rauc-key", tmp_path / "k.pem", "rpi5").returncode == 2
    for board, board_id in (("rpi5", "rpi5"), ("rock5b", "rock5b"), ("x86_64", "generic-x86_64"),
                            ("qemu_aarch64", "qemu-aarch64")):
        p = sh("bash", BUILD_IMAGE, "--dry-run", "--version", "1.2.3", "--out", tmp_path / board, board)
        assert p.returncode == 0, p.stderr
        assert f"popseed-{board_id}-1.2.3.img.xz" in p.stdout and ".img.bmap" in p.stdout, p.stdout
        assert "rpi-imager.json" in p.stdout and "SHA256SUMS" in p.stdout
        assert not (tmp_path / board).exists(), "a dry run made its output directory"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
