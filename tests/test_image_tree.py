"""Local checks of the image sources that need no internet: the BR2_EXTERNAL tree (Kconfig parsed
with kconfiglib, a check-package-style lint of package/popseed, defconfigs sharing their common
block and naming real board directories), shellcheck of every script, `systemd-analyze verify`
of every unit, the board profiles, and the genimage layout (rendered and run for every board).

With BUILDROOT_DIR pointing at a Buildroot tree (e.g. a 2025.02 release), also runs
`make BR2_EXTERNAL=... popseed_<board>_defconfig`, support/scripts/check-dotconfig.py and
utils/check-package on the external tree; without it those tests are SKIPPED with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

BR = REPO / "buildroot"
OVERLAY = BR / "rootfs-overlay"
TEST_OVERLAY = REPO / "image" / "test-image" / "overlay"
STANDIN = REPO / "image" / "test-image" / "standin"
DEFCONFIGS = sorted((BR / "configs").glob("popseed_*_defconfig"))
BOARD_DIRS = sorted(p.parent for p in BR.glob("board/*/*/meta"))


def sh(*args, **kw):
    return subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (scripts/deps/debian.txt)")


def read_meta(board_dir: Path) -> dict:
    out = {}
    for line in (board_dir / "meta").read_text().splitlines():
        m = re.match(r"^([A-Z_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip('"')
    return out


# ---------------------------------------------------------------------------------- Kconfig


def test_kconfig_parses_with_kconfiglib(tmp_path):
    try:
        import kconfiglib
    except ImportError:
        pytest.skip("python3-kconfiglib not installed")
    text = "\n".join(p.read_text() for p in BR.rglob("Config.in"))
    ours = set(re.findall(r"^config (BR2_\w+)", text, re.M))
    used = set(re.findall(r"\bBR2_\w+", text)) - ours
    # Buildroot's own symbols our Config.in depends on or selects, as stubs defaulting to y.
    stubs = "".join(f"config {s}\n\tbool \"{s}\"\n\tdefault y\n\n" for s in sorted(used))
    top = tmp_path / "Kconfig"
    top.write_text(stubs + 'source "$BR2_EXTERNAL_POPSEED_PATH/Config.in"\n')
    os.environ["BR2_EXTERNAL_POPSEED_PATH"] = str(BR)
    kconf = kconfiglib.Kconfig(str(top), warn_to_stderr=False)
    assert not kconf.warnings, kconf.warnings
    sym = kconf.syms["BR2_PACKAGE_POPSEED"]
    assert sym.visibility == 2, "BR2_PACKAGE_POPSEED is not selectable with its dependencies met"
    sym.set_value(2)
    assert kconf.syms["BR2_PACKAGE_HOST_RUSTC"].tri_value == 2, "popseed must select host-rustc"
    # Without the Rust architecture support the option disappears (and the comment explains why).
    kconf.syms["BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS"].set_value(0)
    assert sym.visibility == 0


# ---------------------------------------------------------------------------------- check-package-style lint


def test_package_lint():
    """The rules of Buildroot's utils/check-package that apply to package/popseed."""
    pkg = BR / "package" / "popseed"
    problems = []
    mk = (pkg / "popseed.mk").read_text().splitlines()
    hdr = ["#" * 80, "#", "# popseed", "#", "#" * 80, ""]
    if mk[:6] != hdr:
        problems.append("popseed.mk: header must be 80 '#', '#', '# popseed', '#', 80 '#', blank line")
    for i, line in enumerate(mk, 1):
        if line != line.rstrip():
            problems.append(f"popseed.mk:{i}: trailing whitespace")
        m = re.match(r"^([A-Z0-9_]+)\s*(\+?=|:=)", line)
        if m and not m.group(1).startswith("POPSEED_"):
            problems.append(f"popseed.mk:{i}: variable {m.group(1)} lacks the POPSEED_ prefix")
        if re.match(r"^\s*POPSEED_\w+\s*=\s*$", line):
            problems.append(f"popseed.mk:{i}: empty assignment")
    body = "\n".join(mk)
    for block in re.findall(r"^define \w+\n(.*?)^endef", body, re.M | re.S):
        for line in block.splitlines():
            if line and not line.startswith("\t"):
                problems.append(f"popseed.mk: define block line not indented with a tab: {line!r}")
    if "$(eval $(cargo-package))" not in body:
        problems.append("popseed.mk: must use the cargo-package infrastructure")
    if "POPSEED_POST_RSYNC_HOOKS" not in body or "cargo vendor" not in body:
        problems.append("popseed.mk: local sources need crates vendored after rsync")
    cfg = (pkg / "Config.in").read_text().splitlines()
    in_help = False
    for i, line in enumerate(cfg, 1):
        if line != line.rstrip():
            problems.append(f"Config.in:{i}: trailing whitespace")
        if line.strip() == "help":
            in_help = True
            if line != "\thelp":
                problems.append(f"Config.in:{i}: 'help' must be indented with one tab")
            continue
        if in_help and line and not line.startswith("\t  "):
            if line.startswith(("config", "comment", "if", "endif", "menu")):
                in_help = False
            else:
                problems.append(f"Config.in:{i}: help text must be indented with a tab and two spaces")
        if in_help and len(line.expandtabs(8)) > 72:
            problems.append(f"Config.in:{i}: help text line longer than 72 columns")
        if not in_help and line and line[0] == " ":
            problems.append(f"Config.in:{i}: indent with tabs")
    assert (BR / "external.desc").read_text().startswith("name: POPSEED\n")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------- defconfigs and boards


def test_defconfigs_share_one_common_block_and_real_board_dirs():
    want = {"popseed_rpi5_defconfig", "popseed_rock5b_defconfig", "popseed_x86_64_defconfig",
            "popseed_qemu_aarch64_defconfig"}
    assert {p.name for p in DEFCONFIGS} >= want
    commons = {}
    for p in DEFCONFIGS:
        text = p.read_text()
        assert "# ---- shared by every popseed defconfig" in text, p.name
        commons[p.name] = text.split("# ---- shared by every popseed defconfig", 1)[1]
        m = re.search(r'^BR2_ROOTFS_POST_SCRIPT_ARGS="\$\(BR2_EXTERNAL_POPSEED_PATH\)/(.+)"$', text, re.M)
        assert m, f"{p.name}: no board directory in BR2_ROOTFS_POST_SCRIPT_ARGS"
        board_dir = BR / m.group(1)
        assert (board_dir / "meta").is_file(), f"{p.name}: {board_dir} has no meta"
        assert (board_dir / "popseed-hook.sh").is_file(), f"{p.name}: {board_dir} has no popseed-hook.sh"
        for ref in re.findall(r"\$\(BR2_EXTERNAL_POPSEED_PATH\)/([^\s\"]+)", text):
            assert (BR / ref).exists(), f"{p.name} references missing {ref}"
    assert len(set(commons.values())) == 1, "the shared block differs between defconfigs"


def test_board_profiles_and_meta():
    ids = set()
    for prof in sorted((REPO / "hw").glob("*.toml")):
        doc = tomllib.loads(prof.read_text())
        assert doc["board"] == prof.stem, f"{prof.name}: board id must match the file name"
        assert doc["arch"] in ("aarch64", "x86_64")
        assert doc["wifi"]["interface"] and doc["wifi"]["max_clients"] >= 1 and doc["wifi"]["bands"]
        assert doc["storage"]["data_device"] == "/dev/disk/by-partlabel/popseed-data"
        ids.add(doc["board"])
    for d in BOARD_DIRS:
        meta = read_meta(d)
        assert meta["BOARD_ID"] in ids, f"{d}: no hw/{meta['BOARD_ID']}.toml"
        assert meta["RAUC_BOOTLOADER"] in ("uboot", "grub", "custom", "noop", "efi"), d
    assert read_meta(REPO / "image/test-image/board")["BOARD_ID"] in ids
    assert "rpi5" in ids and tomllib.loads((REPO / "hw/rpi5.toml").read_text())["wifi"]["max_clients"] <= 8


# ---------------------------------------------------------------------------------- shell scripts


def shell_scripts() -> list[Path]:
    found = []
    for root in (REPO / "scripts", BR, REPO / "image"):
        for p in root.rglob("*"):
            if not p.is_file() or "node_modules" in p.parts:
                continue
            if p.suffix == ".sh":
                found.append(p)
                continue
            try:
                first = p.open("rb").readline()
            except OSError:
                continue
            if first.startswith(b"#!") and re.search(rb"\b(ba)?sh\b", first):
                found.append(p)
    return sorted(set(found))


# Scripts of the image and provisioning side are held to every shellcheck level (style too);
# the repository's other scripts (test.sh, bench) to warnings and errors.
OWN_SCRIPT_DIRS = ("buildroot", "image", "scripts/flash.sh", "scripts/provision.sh", "scripts/build-image.sh")


def test_shellcheck_every_script():
    need("shellcheck")
    scripts = shell_scripts()
    assert len(scripts) >= 15, scripts
    own = [s for s in scripts if str(s.relative_to(REPO)).startswith(OWN_SCRIPT_DIRS)]
    other = [s for s in scripts if s not in own]
    p = sh("shellcheck", "-x", "-P", "SCRIPTDIR", *own, cwd=REPO)
    assert p.returncode == 0, p.stdout
    if other:
        p = sh("shellcheck", "-x", "-P", "SCRIPTDIR", "--severity=warning", *other, cwd=REPO)
        assert p.returncode == 0, p.stdout
    for s in scripts:
        if s.parent.name in ("popseed", "popseed-test", "rauc") or s.parent.parent.name == "test-image":
            assert os.access(s, os.X_OK), f"{s} is not executable"


# ---------------------------------------------------------------------------------- systemd units


def unit_root(tmp_path: Path, *overlays: Path) -> Path:
    """A root with the host's own units (targets, systemd's services) under ours."""
    root = tmp_path / "root"
    host_units = Path("/usr/lib/systemd/system")
    if host_units.is_dir():
        shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    for ov in overlays:
        shutil.copytree(ov, root, dirs_exist_ok=True, symlinks=True)
    for exe in ("usr/bin/popseed", "usr/sbin/hostapd", "usr/sbin/dnsmasq", "usr/sbin/nft", "usr/bin/rauc"):
        p = root / exe
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("#!/bin/sh\nexit 0\n")
        p.chmod(0o755)
    return root


def verify_units(root: Path) -> tuple[list[str], str]:
    units = sorted(str(p) for p in (root / "usr/lib/systemd/system").glob("*.service"))
    p = sh("systemd-analyze", "verify", "--man=no", f"--root={root}", *units)
    return units, p.stdout


def systemd_version() -> int:
    m = re.search(r"systemd (\d+)", sh("systemctl", "--version").stdout)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("which", ["appliance", "test-image", "test-image-standin"])
def test_systemd_analyze_verify_units(tmp_path, which):
    need("systemd-analyze")
    overlays = [OVERLAY]
    if which != "appliance":
        overlays.append(TEST_OVERLAY)
    if which == "test-image-standin":
        overlays.append(STANDIN)
    root = unit_root(tmp_path, *overlays)
    units, out = verify_units(root)
    assert len(units) >= 6
    problems = []
    for line in out.splitlines():
        # Lines about the host's units (copied in for the targets ours order against) are theirs.
        if not line.strip() or "popseed" not in line:
            continue
        # systemd < 254 does not know the growing restart delay (documented in the drop-in).
        if systemd_version() < 254 and re.search(r"Unknown key '?(RestartSteps|RestartMaxDelaySec)", line):
            continue
        # Units outside our overlay that ours name (Debian's, Buildroot's) are not in this root.
        if re.search(r"(rauc|systemd-networkd|systemd-tmpfiles-setup|network-pre)\S*: Unit .* not found", line):
            continue
        problems.append(line)
    assert not problems, "systemd-analyze verify:\n" + "\n".join(problems)


def test_agent_unit_is_hardened():
    text = (OVERLAY / "usr/lib/systemd/system/popseed-agent.service").read_text()
    keys = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k.strip(), []).append(v.strip())
    assert keys["User"] == ["popseed"]
    assert keys["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"] == keys["CapabilityBoundingSet"]
    assert keys["ProtectSystem"] == ["strict"] and keys["NoNewPrivileges"] == ["yes"] and keys["PrivateTmp"] == ["yes"]
    assert set(keys["ReadWritePaths"][0].split()) == {"-/var/lib/popseed", "-/boot/popseed"}
    assert keys["Restart"] == ["on-failure"] and keys["LimitNOFILE"] == ["65536"]
    assert keys["ExecStart"][0].startswith("/usr/bin/popseed agent --config /run/popseed/agent.toml")
    # the agent notifies READY=1 and sends keep-alives (tests/test_hardening.py checks it does)
    assert keys["Type"] == ["notify"] and keys["WatchdogSec"] == ["30s"] and keys["NotifyAccess"] == ["main"]
    assert keys["MemoryMax"] == ["1G"] and keys["MemoryHigh"] == ["768M"]


# ---------------------------------------------------------------------------------- genimage layout


@pytest.mark.parametrize("board", [d.relative_to(BR / "board").as_posix() for d in BOARD_DIRS] + ["test-image"])
def test_genimage_layout(tmp_path, board):
    for t in ("genimage", "mkfs.vfat", "mke2fs", "sfdisk"):
        need(t)
    meta = read_meta(REPO / "image/test-image/board" if board == "test-image" else BR / "board" / board)
    inp = tmp_path / "input"
    inp.mkdir()
    sh("truncate", "-s", "2M", inp / "boot.vfat")
    sh("mkfs.vfat", "-n", "POPSEED", inp / "boot.vfat")
    sh("mke2fs", "-q", "-t", "ext4", inp / "rootfs.ext4", "2M")
    raw = ""
    if board == "radxa/rock5b":
        # The RK3588 loader blobs go before the first partition (its popseed_raw_partitions).
        (inp / "idbloader.img").write_bytes(b"\0" * 4096)
        (inp / "u-boot.itb").write_bytes(b"\0" * 4096)
        raw = sh("bash", "-c", f'. "{BR}/board/radxa/rock5b/popseed-hook.sh"; popseed_raw_partitions').stdout
    root_type = "$POPSEED_ROOT_TYPE_AARCH64" if meta.get("ROOT_TYPE") == "aarch64" else "$POPSEED_ROOT_TYPE_X86_64"
    script = (f'. "{REPO}/image/layout.sh"; popseed_genimage_cfg "{REPO}/image/genimage/popseed-gpt.cfg.in" "{tmp_path}/g.cfg" '
              f'IMAGE=disk.img BOOT_IMAGE=boot.vfat ROOTFS_IMAGE=rootfs.ext4 BOOT_SIZE=2M ROOTFS_SIZE=2M DATA_SIZE=1M '
              f'BOOT_TYPE={meta.get("BOOT_TYPE", "F")} ROOT_TYPE="{root_type}" FIRST_OFFSET={meta.get("FIRST_OFFSET", "1M")} '
              f'RAW_PARTITIONS="$RAW"')
    p = subprocess.run(["bash", "-c", script], env={**os.environ, "RAW": raw}, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout
    p = sh("genimage", "--config", tmp_path / "g.cfg", "--rootpath", tmp_path / "r", "--tmppath", tmp_path / "t",
           "--inputpath", inp, "--outputpath", tmp_path / "out")
    assert p.returncode == 0, p.stdout
    import json

    table = json.loads(sh("sfdisk", "-J", tmp_path / "out/disk.img").stdout)["partitiontable"]
    assert table["label"] == "gpt"
    names = [q["name"] for q in table["partitions"]]
    assert names == ["popseed-boot", "popseed-rootfs-a", "popseed-rootfs-b", "popseed-data"], names
    layout = (REPO / "image/layout.sh").read_text()
    for q, var in zip(table["partitions"], ("BOOT", "ROOTFS_A", "ROOTFS_B", "DATA")):
        assert f'POPSEED_PARTUUID_{var}="{q["uuid"].lower()}"' in layout, (var, q["uuid"])
    assert table["partitions"][0]["start"] * 512 >= int(meta.get("FIRST_OFFSET", "1M").rstrip("M")) << 20
    if meta.get("BOOT_TYPE") == "U":
        assert table["partitions"][0]["type"].upper() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    label = sh("fatlabel", inp / "boot.vfat").stdout.strip() if shutil.which("fatlabel") else "POPSEED"
    assert label == "POPSEED"


@pytest.mark.parametrize("board", [d.relative_to(BR / "board").as_posix() for d in BOARD_DIRS])
def test_post_image_script_assembles_the_board_image(tmp_path, board):
    """Runs board/common/post-image.sh (and so the board's popseed-hook.sh) as Buildroot would,
    on stand-ins for what the build puts in BINARIES_DIR (kernel, firmware, loader blobs, a small
    root file system), with a RAUC signing key: checks the disk image's partitions, the boot
    partition's files for the board, and the signed bundle."""
    import json

    for t in ("genimage", "mkfs.vfat", "mke2fs", "sfdisk", "mcopy", "mdir", "mtype", "mkimage", "grub-editenv", "rauc", "openssl"):
        need(t)
    bdir = BR / "board" / board
    meta = read_meta(bdir)
    bid = meta["BOARD_ID"]
    bins = tmp_path / "images"
    bins.mkdir()
    rootdir = tmp_path / "rootdir"
    (rootdir / "etc/popseed").mkdir(parents=True)
    (rootdir / "etc/popseed/version").write_text("1.2.3\n")
    (rootdir / "etc/popseed/noise").write_bytes(os.urandom(64 << 10))  # a bundle's squashfs must exceed 4 KiB
    sh("mke2fs", "-q", "-t", "ext4", "-L", "popseed-rootfs", "-d", rootdir, bins / "rootfs.ext4", "8M")
    if board == "pc/x86_64":
        (bins / "efi-part/EFI/BOOT").mkdir(parents=True)
        (bins / "efi-part/EFI/BOOT/bootx64.efi").write_bytes(b"MZ stand-in for GRUB's EFI binary")
    if board == "raspberrypi/rpi5":
        # Buildroot's rpi-firmware package installs the board's config.txt and cmdline.txt here.
        (bins / "rpi-firmware").mkdir()
        shutil.copy(bdir / "config.txt", bins / "rpi-firmware/config.txt")
        shutil.copy(bdir / "cmdline.txt", bins / "rpi-firmware/cmdline.txt")
        (bins / "Image").write_bytes(b"kernel stand-in")
        (bins / "bcm2712-rpi-5-b.dtb").write_bytes(b"dtb stand-in")
    if board == "radxa/rock5b":
        (bins / "idbloader.img").write_bytes(b"IDBL" * 1024)
        (bins / "u-boot.itb").write_bytes(b"UBIT" * 1024)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    p = sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
           "-subj", "/CN=popseed-post-image-test")
    assert p.returncode == 0, p.stdout
    env = {**os.environ, "POPSEED_RAUC_KEY": str(key), "POPSEED_RAUC_CERT": str(cert), "POPSEED_VERSION": "1.2.3",
           "ROOTFS_SIZE": "16M", "MTOOLS_SKIP_CHECK": "1"}
    p = subprocess.run(["bash", str(BR / "board/common/post-image.sh"), str(bins), str(bdir)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert p.returncode == 0, p.stdout

    disk = bins / f"popseed-{bid}.img"
    table = json.loads(sh("sfdisk", "-J", disk).stdout)["partitiontable"]
    names = [q["name"] for q in table["partitions"]]
    assert names == ["popseed-boot", "popseed-rootfs-a", "popseed-rootfs-b", "popseed-data"], names
    boot_at = f"{disk}@@{table['partitions'][0]['start'] * 512}"

    def boot_file(path: str) -> str:
        r = subprocess.run(["mtype", "-i", boot_at, f"::{path}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert r.returncode == 0, f"{path} is not on the boot partition: {r.stderr}"
        return r.stdout

    assert "[wifi]" in boot_file("popseed.toml.example")
    if board == "pc/x86_64":
        assert "load_env" in boot_file("EFI/BOOT/grub.cfg")
        out = tmp_path / "grubenv"
        r = subprocess.run(["mcopy", "-i", boot_at, "::EFI/BOOT/grubenv", str(out)], env=env)
        assert r.returncode == 0
        env_vars = dict(ln.split("=", 1) for ln in sh("grub-editenv", out, "list").stdout.splitlines() if "=" in ln)
        assert env_vars == {"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"}, env_vars
        assert boot_file("EFI/BOOT/bootx64.efi").startswith("MZ")
    elif board == "raspberrypi/rpi5":
        assert "os_prefix=slot-a/" in boot_file("config.txt")
        assert "os_prefix=slot-b/" in boot_file("tryboot.txt")
        for slot in ("a", "b"):
            cmdline = boot_file(f"slot-{slot}/cmdline.txt")
            assert f"root=PARTLABEL=popseed-rootfs-{slot}" in cmdline and f"rauc.slot={slot.upper()}" in cmdline, cmdline
            assert boot_file(f"slot-{slot}/Image") == "kernel stand-in"
            assert boot_file(f"slot-{slot}/bcm2712-rpi-5-b.dtb") == "dtb stand-in"
    else:
        # U-Boot boards: boot.scr is a legacy image (magic 27 05 19 56) wrapping boot.cmd.
        scr = tmp_path / "boot.scr"
        r = subprocess.run(["mcopy", "-i", boot_at, "::boot.scr", str(scr)], env=env)
        assert r.returncode == 0
        data = scr.read_bytes()
        assert data[:4] == bytes.fromhex("27051956"), data[:8].hex()
        assert (bdir / "boot.cmd").read_bytes().strip() in data
    if board == "radxa/rock5b":
        raw = disk.read_bytes()[: 8 * 1024 * 1024 + 4096]
        assert raw[32 * 1024: 32 * 1024 + 4096] == b"IDBL" * 1024, "idbloader.img not at 32 KiB"
        assert raw[8 * 1024 * 1024:] == b"UBIT" * 1024, "u-boot.itb not at 8 MiB"

    bundle = bins / f"popseed-{bid}-1.2.3.raucb"
    p = sh("rauc", "info", "--keyring", cert, "--output-format=json", bundle)
    assert p.returncode == 0, p.stdout
    info = json.loads(p.stdout[p.stdout.index("{"):])
    assert info["compatible"] == meta["RAUC_COMPATIBLE"] and info["version"] == "1.2.3", info


# ---------------------------------------------------------------------------------- with a Buildroot tree


def buildroot_dir() -> Path:
    d = os.environ.get("BUILDROOT_DIR")
    if not d:
        print("\nSKIPPED Buildroot checks: BUILDROOT_DIR is not set (point it at a Buildroot 2025.02 tree)")
        pytest.skip("BUILDROOT_DIR is not set (point it at a Buildroot 2025.02 tree to run make defconfig, "
                    "check-dotconfig.py and check-package)")
    p = Path(d)
    if not (p / "Makefile").is_file():
        pytest.skip(f"BUILDROOT_DIR={d} is not a Buildroot tree")
    return p


@pytest.mark.parametrize("defconfig", [p.name for p in DEFCONFIGS])
def test_buildroot_defconfig_and_check_dotconfig(tmp_path, defconfig):
    brdir = buildroot_dir()
    out = tmp_path / "o"
    p = sh("make", "-s", "-C", brdir, f"O={out}", f"BR2_EXTERNAL={BR}", defconfig)
    assert p.returncode == 0, p.stdout
    p = sh("python3", brdir / "support/scripts/check-dotconfig.py", out / ".config", BR / "configs" / defconfig)
    assert p.returncode == 0, p.stdout
    p = sh("make", "-s", "-C", brdir, f"O={out}", "printvars", "VARS=POPSEED_SITE POPSEED_SUBDIR")
    assert p.returncode == 0 and "POPSEED_SUBDIR=appliance/popseed" in p.stdout, p.stdout


def test_buildroot_check_package_external():
    brdir = buildroot_dir()
    files = [BR / "external.desc", BR / "Config.in", BR / "external.mk", *(BR / "package/popseed").iterdir(),
             *DEFCONFIGS]
    p = sh("/usr/bin/python3", brdir / "utils/check-package", "-b", *files, cwd=BR)
    assert p.returncode == 0, p.stdout
    assert re.search(r"^0 warnings generated", p.stdout, re.M), p.stdout
