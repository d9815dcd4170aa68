"""Helpers for the booted test image (tests/test_image_boot.py, tests/test_image_update.py): build
it once per session with image/test-image/build.sh, keep one disk per box across boots, put files on
its FAT boot partition with mtools, play GRUB on the host before each boot (grubenv on the boot
partition, buildroot/board/pc/x86_64/grub.cfg's A/B choice, since QEMU boots the kernel directly),
run it under qemu-system-x86_64 (TCG) with host ports forwarded to the guest and hot-plug disks
into it (QMP), and an origin seed on the host.

The guest's user-mode network is 10.42.0.0/24: the guest is 10.42.0.1 (the portal address of the
provisioning file, and of setup mode), the host is 10.42.0.2 (QEMU maps it to the host's loopback,
so an origin listening on 127.0.0.1:PORT is 10.42.0.2:PORT from the guest).

The grubenv and GRUB functions are pure (bytes and dicts in, bytes and dicts out) and unit-tested
without QEMU in tests/test_image_update.py.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping

import pytest

from conftest import REPO, complete_lines, free_port, keygen, make_tree, next_snapshot, popseed_path, publish, wait_for_line, wait_until

GUEST_IP = "10.42.0.1"
HOST_IP = "10.42.0.2"
# The staff network on the guest's second NIC (eth1), where its management port is reachable.
STAFF_NET = "10.43.0.0/24"
STAFF_GUEST_IP = "10.43.0.15"
BUILD_TIMEOUT = 1200.0


def missing_tools() -> list[str]:
    tools = ["qemu-system-x86_64", "mmdebstrap", "genimage", "mcopy", "mke2fs", "mkfs.vfat", "sfdisk", "dig", "rauc"]
    return [t for t in tools if shutil.which(t) is None]


def skip_reason() -> str | None:
    """Why the booted-image tests cannot run here, or None."""
    if os.environ.get("POPSEED_SKIP_IMAGE_BOOT"):
        return "POPSEED_SKIP_IMAGE_BOOT is set"
    if os.geteuid() != 0:
        return "building the test image needs root (mmdebstrap, file owners in the root file system)"
    missing = missing_tools()
    if missing:
        return f"missing tools: {', '.join(missing)} (scripts/deps/debian.txt)"
    return None


def build_image(out: Path, bundle: bool = False) -> dict:
    """Runs image/test-image/build.sh; returns its info.json."""
    cmd = ["bash", str(REPO / "image/test-image/build.sh"), "--popseed", str(popseed_path()), "--out", str(out)]
    if bundle:
        cmd.append("--bundle")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=BUILD_TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"test image build failed ({proc.returncode}):\n{proc.stdout[-6000:]}", pytrace=False)
    print(f"\ntest image built in {time.monotonic() - t0:.0f} s{' (with the update bundles)' if bundle else ''}")
    return json.loads((out / "info.json").read_text())


_SESSION_IMAGE: dict = {}


def session_image() -> dict:
    """The test image with its update bundles, built once per pytest session (out/test-image) and
    shared by every module that boots it. POPSEED_TEST_IMAGE=DIR uses an image already built
    there with `build.sh --bundle` (DIR/info.json) instead of building one."""
    if "info" not in _SESSION_IMAGE:
        prebuilt = os.environ.get("POPSEED_TEST_IMAGE")
        if prebuilt:
            _SESSION_IMAGE["info"] = json.loads((Path(prebuilt) / "info.json").read_text())
        else:
            _SESSION_IMAGE["info"] = build_image(REPO / "out" / "test-image", bundle=True)
    return _SESSION_IMAGE["info"]


# ------------------------------------------------------------------ host-side GRUB (pure functions)
# grubenv is GRUB's environment block: "# GRUB Environment Block\n", then NAME=VALUE lines (a
# backslash escapes a backslash or a newline in VALUE), padded with '#' to its fixed size (1024
# bytes from grub-editenv). GRUB's save_env rewrites it in place, so its size never changes.

GRUBENV_HEADER = "# GRUB Environment Block\n"
GRUBENV_SIZE = 1024
GRUB_CFG = REPO / "buildroot/board/pc/x86_64/grub.cfg"
# What grub.cfg sets when a variable is empty, and the variables its save_env writes back.
GRUB_DEFAULTS = {"ORDER": "A B", "A_OK": "1", "B_OK": "0"}
GRUB_SAVED = ("A_TRY", "B_TRY")


class GrubenvError(ValueError):
    """A block that is no grubenv, or changes that do not fit in it."""


def _grubenv_items(data: bytes) -> list[tuple[str, str] | str]:
    """The block's lines: (name, value) for variables, the raw text for comment lines."""
    text = data.decode("latin-1")
    if not text.startswith(GRUBENV_HEADER):
        raise GrubenvError(f"not a grubenv block (starts with {text[:30]!r})")
    items: list[tuple[str, str] | str] = []
    i = len(GRUBENV_HEADER)
    while i < len(text):
        if text[i] == "\n":
            i += 1
        elif text[i] == "#":
            end = text.find("\n", i)
            if end < 0:
                break  # the '#' padding up to the end of the block
            items.append(text[i:end + 1])
            i = end + 1
        else:
            eq = text.find("=", i)
            if eq < 0:
                raise GrubenvError(f"line without '=' at byte {i}")
            name, value, j = text[i:eq], [], eq + 1
            while j < len(text) and text[j] != "\n":
                if text[j] == "\\" and j + 1 < len(text):
                    j += 1
                value.append(text[j])
                j += 1
            items.append((name, "".join(value)))
            i = j + 1
    return items


def parse_grubenv(data: bytes) -> dict[str, str]:
    """The variables of a grubenv block, in file order."""
    return dict(item for item in _grubenv_items(data) if isinstance(item, tuple))


def update_grubenv(data: bytes, changes: Mapping[str, str | None]) -> bytes:
    """The block with `changes` applied as GRUB's save_env and grub-editenv do: a variable already
    there keeps its place, a new one goes after the last line, None deletes it; comment lines are
    kept and the block keeps its size."""
    items = _grubenv_items(data)
    for name, value in changes.items():
        at = next((k for k, it in enumerate(items) if isinstance(it, tuple) and it[0] == name), None)
        if value is None:
            if at is not None:
                del items[at]
        elif at is None:
            items.append((name, value))
        else:
            items[at] = (name, value)
    body = GRUBENV_HEADER + "".join(
        it if isinstance(it, str) else f"{it[0]}={it[1].replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + chr(10))}\n"
        for it in items)
    if len(body) > len(data):
        raise GrubenvError(f"variables need {len(body)} bytes, the block has {len(data)}")
    return (body + "#" * (len(data) - len(body))).encode("latin-1")


def grub_boot(env: Mapping[str, str]) -> tuple[str, dict[str, str | None]]:
    """One boot through buildroot/board/pc/x86_64/grub.cfg: the slot it boots and what its save_env
    writes back (None: the variable is unset in GRUB, so save_env deletes it).

    The first slot in ORDER that is marked OK and not already tried is booted and marked tried
    (one try per boot until popseed-mark-good marks it good, which clears x_TRY); when none is
    left, slot A with both tries cleared."""
    v = dict(env)
    for name, default in GRUB_DEFAULTS.items():
        if not v.get(name):
            v[name] = default
    slot = ""
    for s in v["ORDER"].split():
        if not slot:
            if s == "A" and v["A_OK"] == "1" and v.get("A_TRY", "") != "1":
                slot = "A"
                v["A_TRY"] = "1"
            if s == "B" and v["B_OK"] == "1" and v.get("B_TRY", "") != "1":
                slot = "B"
                v["B_TRY"] = "1"
    if not slot:
        slot = "A"
        v["A_TRY"] = "0"
        v["B_TRY"] = "0"
    return slot, {name: v.get(name) for name in GRUB_SAVED}


class Guest:
    """One box: its own sparse copy of the disk, kept across boots, forwarded ports and a console
    log per boot. `start()` plays GRUB (when the image uses RAUC's grub backend) and boots the
    slot it picks; the guest reboots by exiting (QEMU runs with -no-reboot)."""

    def __init__(self, info: dict, workdir: Path, slot: str | None = None):
        self.info = info
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.disk = self.dir / "disk.img"
        subprocess.run(["cp", "--sparse=always", info["disk"], str(self.disk)], check=True)
        self.boot_offset = info["partitions"]["popseed-boot"]["offset"]
        # A fixed slot skips the host GRUB (images with RAUC's noop backend).
        self.fixed_slot = slot if slot is not None else (None if info.get("bootloader") == "grub" else "A")
        self.slot = ""
        self.boots = 0
        self.console = self.dir / "console.log"
        self.proc: subprocess.Popen | None = None
        self.http_port = free_port()
        self.dns_port = free_port()
        self.mgmt_port = free_port()
        self.started = 0.0
        self.qmp_sock = Path(tempfile.mkdtemp(prefix="popseed-qmp-")) / "qmp.sock"
        self._hotplugs = itertools.count()

    # ------------------------------------------------------------------ boot partition
    def _mtools(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        return subprocess.run(list(args), env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def put_file(self, src: Path, name: str) -> None:
        """Copies a file onto the FAT boot partition (mounted at /boot/popseed in the guest)."""
        self._mtools("mcopy", "-o", "-i", f"{self.disk}@@{self.boot_offset}", str(src), f"::{name}")

    def put_bytes(self, data: bytes, name: str) -> None:
        with tempfile.NamedTemporaryFile(dir=self.dir, delete=False) as f:
            f.write(data)
        try:
            self.put_file(Path(f.name), name)
        finally:
            os.unlink(f.name)

    def put_dir(self, src: Path, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts)):
            sub = "/".join(parts[:i])
            subprocess.run(["mmd", "-i", f"{self.disk}@@{self.boot_offset}", f"::{sub}"],
                           env=dict(os.environ, MTOOLS_SKIP_CHECK="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._mtools("mcopy", "-s", "-o", "-i", f"{self.disk}@@{self.boot_offset}", str(src), f"::{name}")

    def get_bytes(self, name: str) -> bytes:
        return self._mtools("mtype", "-i", f"{self.disk}@@{self.boot_offset}", f"::{name}").stdout

    def get_file(self, name: str) -> str:
        return self.get_bytes(name).decode(errors="replace")

    # ------------------------------------------------------------------ host GRUB
    def grubenv(self) -> dict[str, str]:
        """The grubenv variables on the boot partition (RAUC's grub backend state)."""
        return parse_grubenv(self.get_bytes(self.info["grubenv"]))

    def play_grub(self) -> str:
        """What GRUB does before the kernel: reads grubenv, applies grub.cfg's choice, writes its
        save_env back. Returns the slot to boot."""
        name = self.info["grubenv"]
        block = self.get_bytes(name)
        slot, saved = grub_boot(parse_grubenv(block))
        self.put_bytes(update_grubenv(block, saved), name)
        return slot

    # ------------------------------------------------------------------ run
    def start(self) -> str:
        """Boots the box (GRUB's slot choice first, with a grub image); returns the slot booted."""
        if self.alive():
            raise RuntimeError("the guest is still running")
        if self.proc:
            self.qemu_log.close()
        self.boots += 1
        self._hotplugs = itertools.count()
        self.slot = self.fixed_slot or self.play_grub()
        self.console = self.dir / ("console.log" if self.boots == 1 else f"console-{self.boots}.log")
        net = (f"user,model=virtio-net-pci,net=10.42.0.0/24,host={HOST_IP},dhcpstart={GUEST_IP},"
               f"hostfwd=tcp:127.0.0.1:{self.http_port}-{GUEST_IP}:80,"
               f"hostfwd=udp:127.0.0.1:{self.dns_port}-{GUEST_IP}:53")
        # eth1: the wired staff port (the board profile's uplink); the management port is open
        # there only, so the host reaches it through this second NIC
        staff = (f"user,model=virtio-net-pci,net={STAFF_NET},dhcpstart={STAFF_GUEST_IP},"
                 f"hostfwd=tcp:127.0.0.1:{self.mgmt_port}-{STAFF_GUEST_IP}:8080")
        self.qmp_sock.unlink(missing_ok=True)
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-M", "q35", "-m", "1024", "-smp", "2",
               "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}", "-no-reboot",
               "-qmp", f"unix:{self.qmp_sock},server=on,wait=off",
               "-kernel", self.info["kernel"], "-initrd", self.info["initrd"],
               "-append", self.info["cmdline"][self.slot],
               "-drive", f"file={self.disk},format=raw,if=virtio", "-nic", net, "-nic", staff,
               # A free PCIe slot for hot-plugging a disk (plug_disk).
               "-device", "pcie-root-port,id=hotplug0,chassis=8,slot=8"]
        self.qemu_log = open(self.dir / f"qemu-{self.boots}.log", "w")  # noqa: SIM115 - closed in stop()/start()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.qemu_log, stderr=subprocess.STDOUT)
        return self.slot

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        if self.proc:
            self.qemu_log.close()
        shutil.rmtree(self.qmp_sock.parent, ignore_errors=True)

    def wait_exit(self, timeout: float, what: str) -> float:
        """Waits for QEMU to exit (the guest rebooted or powered off); returns the seconds waited."""
        t0 = time.monotonic()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"QEMU still running after {timeout:.0f} s waiting for {what}\n{self.tail()}", pytrace=False)
        self.qemu_log.close()
        self.qemu_log = open(os.devnull, "w")  # noqa: SIM115 - closed in stop()/start()
        return time.monotonic() - t0

    def qmp(self, *commands: dict) -> list:
        """Runs QMP commands on the running QEMU; returns their results (fails on an error)."""
        results = []
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(self.qmp_sock))
            f = s.makefile("rwb")

            def reply() -> dict:
                while True:
                    line = f.readline()
                    if not line:
                        raise ConnectionError("QMP connection closed")
                    msg = json.loads(line)
                    if "return" in msg or "error" in msg:
                        return msg

            f.readline()  # the greeting
            for cmd in ({"execute": "qmp_capabilities"}, *commands):
                f.write(json.dumps(cmd).encode() + b"\n")
                f.flush()
                msg = reply()
                if "error" in msg:
                    pytest.fail(f"QMP {cmd['execute']} failed: {msg['error']}", pytrace=False)
                results.append(msg["return"])
        return results[1:]

    def plug_disk(self, image: Path) -> None:
        """Hot-plugs a raw disk image (read-only, virtio) into the running guest, like plugging
        in a USB stick."""
        n = next(self._hotplugs)
        if n > 0:
            raise RuntimeError("one hot-plugged disk per boot (one free PCIe root port)")
        self.qmp({"execute": "blockdev-add", "arguments": {
                     "node-name": f"plug{n}", "driver": "raw", "read-only": True,
                     "file": {"driver": "file", "filename": str(image), "read-only": True}}},
                 {"execute": "device_add", "arguments": {
                     "driver": "virtio-blk-pci", "drive": f"plug{n}", "id": f"plugdev{n}", "bus": "hotplug0"}})

    def console_text(self) -> str:
        """The serial console so far, possibly ending in a half-written line (the guest writes it
        a character at a time): look for lines with `console_lines` or `wait_console`."""
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def console_lines(self) -> list[str]:
        """The complete lines of this boot's serial console."""
        return complete_lines(self.console_text)

    def tail(self, n: int = 60) -> str:
        lines = [ln for ln in self.console_text().splitlines() if "POPSEED-TEST" in ln or "popseed" in ln.lower()]
        return "\n".join(lines[-n:]) or self.console_text()[-4000:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_console(self, pattern: str, timeout: float, what: str) -> re.Match:
        """Waits for a complete console line matching `pattern` (a half-written line could match
        with a value cut short, e.g. `primary=rootfs.`)."""
        return wait_for_line(self.console_text, pattern, timeout, f"{what} on the serial console", proc=self.proc,
                             context=self.tail, interval=1)

    def reports(self) -> list[dict]:
        """Every complete `POPSEED-TEST key=value ...` line of this boot, parsed, oldest first."""
        out = []
        for line in self.console_lines():
            if "POPSEED-TEST " in line:
                out.append(dict(kv.split("=", 1) for kv in line.split("POPSEED-TEST ", 1)[1].split() if "=" in kv))
        return out

    def report(self, timeout: float, what: str, known: tuple[str, ...] = (), **want: str) -> dict:
        """Waits for a `POPSEED-TEST key=value ...` report line with every `want` key at its value
        (underscores in keys stand for dashes) and every `known` key reported (not "-"); returns
        that line's values."""
        want = {k.replace("_", "-"): v for k, v in want.items()}
        deadline = time.monotonic() + timeout
        while True:
            lines = self.reports()
            if lines:
                vals = lines[-1]
                if all(vals.get(k) == v for k, v in want.items()) and all(vals.get(k, "-") != "-" for k in known):
                    return vals
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} ({want})\n{self.tail()}", pytrace=False)
            if not self.alive():
                pytest.fail(f"QEMU exited while waiting for {what}\n{self.tail()}", pytrace=False)
            time.sleep(1)

    def wait_http(self, path: str, timeout: float, port: int | None = None) -> tuple[int, bytes, float]:
        """Polls http://127.0.0.1:PORT/path (Host: the portal address) until any HTTP answer;
        returns (status, body, seconds since QEMU started)."""
        port = port or self.http_port
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                status, body = http_get(port, path)
                return status, body, time.monotonic() - self.started
            except OSError as e:
                last = str(e)
            if not self.alive():
                pytest.fail(f"QEMU exited while waiting for HTTP on guest port\n{self.tail()}", pytrace=False)
            time.sleep(1)
        pytest.fail(f"no HTTP answer on 127.0.0.1:{port}{path} within {timeout:.0f} s ({last})\n{self.tail()}", pytrace=False)


def update_disk(bundle: Path, out: Path) -> Path:
    """An ext4 disk image labelled POPSEED-UPD holding `bundle` (the test image's
    popseed-test-update.service installs it when the disk appears)."""
    src = out.with_suffix(".d")
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    try:
        os.link(bundle, src / bundle.name)
    except OSError:
        shutil.copy(bundle, src / bundle.name)
    size_mib = bundle.stat().st_size * 11 // 10 // (1 << 20) + 16
    out.unlink(missing_ok=True)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "POPSEED-UPD", "-d", str(src), str(out), f"{size_mib}M"],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    shutil.rmtree(src, ignore_errors=True)
    return out


def http_get(port: int, path: str, host: str = GUEST_IP, timeout: float = 30.0, headers: dict | None = None) -> tuple[int, bytes]:
    """A plain HTTP/1.0 GET through the forwarded port (any status; OSError when nothing answers)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: popseed-image-test\r\n{extra}\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ConnectionResetError("connection closed without an answer")
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def dig(port: int, name: str) -> list[str]:
    proc = subprocess.run(["dig", "+short", "+time=5", "+tries=2", "-p", str(port), "@127.0.0.1", name, "A"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    return [ln.strip() for ln in proc.stdout.splitlines() if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", ln.strip())]


# ------------------------------------------------------------------ the host side of a booted box

STAFF_TOKEN = "image-test-staff-token-0123456789"


class Origin:
    """`popseed origin` on 127.0.0.1 (port 0: it prints the port it bound) with a stats file
    (per-piece serve counters)."""

    def __init__(self, tmp: Path, release):
        self.stats = tmp / "origin-stats.json"
        self.log = tmp / "origin.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [str(popseed_path()), "origin", "--listen", "127.0.0.1:0", "--self-signed", "--write-cert",
                 str(tmp / "origin-cert"), "--release", f"{release.dir}={release.src}", "--stats-file", str(self.stats)],
                stdout=log, stderr=subprocess.STDOUT)
        # stdout lines: "origin listening on ADDR (...)", then "certificate sha256 FP"
        self.fingerprint = wait_for_line(self.log, r"^certificate sha256 ([0-9a-f]{64})$", 120, "the origin to start",
                                         proc=self.proc).group(1)
        self.port = int(wait_for_line(self.log, r"^origin listening on 127\.0\.0\.1:(\d+) ", proc=self.proc).group(1))

    def piece_counts(self, infohash: str, fresh: bool = False) -> dict[int, int]:
        """How often the origin served each piece of a release: as of its last stats file, or
        with `fresh`, counting everything it sent before the call (a snapshot taken after)."""
        if fresh:
            s = next_snapshot(self.stats, proc=self.proc)
        else:
            try:
                s = json.loads(self.stats.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                return {}
        return {int(i): int(n) for i, n in (s.get("per_piece") or {}).get(infohash, {}).items()}

    def pieces_served(self, infohash: str) -> set[int]:
        return set(self.piece_counts(infohash))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def small_release(tmp: Path):
    """A signed 2-file release of about 3.4 MiB (256 KiB pieces)."""
    pub = keygen(tmp / "keys")
    src = make_tree(tmp / "src" / "talks", {"keynote.mp4": 3 * 1024 * 1024 + 12345, "slides.pdf": 200_000}, seed="image")
    return publish(src, tmp / "release", pub, "--name", "talks", "--piece-size", "256KiB")


def provisioning_file(origin: Origin, release) -> str:
    return f"""# written by tests/imagetools.py
venue = "Image test hall"
device_name = "image-test-1"
trusted_keys = ["{release.manifest['publisher_key']}"]

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


def standin_agent_toml(origin: Origin, release) -> str:
    return f"""# hand-written agent.toml for the firstboot stand-in (tests/imagetools.py)
trusted_keys = ["{release.manifest['publisher_key']}"]

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


def provision(guest: Guest, origin: Origin, release, tmp: Path) -> None:
    """Puts the provisioning file (or the stand-in's agent.toml) and the release, standing in for a
    prewarm job, on the box's boot partition."""
    cfg = tmp / "boot-file"
    if guest.info["standin_firstboot"]:
        cfg.write_text(standin_agent_toml(origin, release))
        guest.put_file(cfg, "agent.toml")
    else:
        cfg.write_text(provisioning_file(origin, release))
        guest.put_file(cfg, "popseed.toml")
    guest.put_dir(release.dir, "test-releases/talks")


def wait_filled(origin: Origin, release, timeout: float) -> None:
    """Waits until the origin has served every piece of the release to the box."""
    m = release.manifest
    want = set(range(m["piece_count"]))
    wait_until(lambda: origin.pieces_served(m["infohash"]) >= want, timeout,
               f"the box to pull every piece of {m['name']} from the host origin", interval=1)


def assert_serves_release(guest: Guest, release) -> None:
    """The box serves the exact published bytes of every file through the portal."""
    m = release.manifest
    for path in ("keynote.mp4", "slides.pdf"):
        status, body = http_get(guest.http_port, f"/files/{m['infohash']}/{m['torrent_name']}/{path}", timeout=60)
        assert status == 200, f"{path}: HTTP {status}: {body[:300]!r}"
        want = hashlib.sha256((release.src / path).read_bytes()).hexdigest()
        assert hashlib.sha256(body).hexdigest() == want, f"{path} differs from the published bytes"


# ------------------------------------------------------------------ the session's provisioned box
# Booting takes 1.5 min under TCG, so the provisioned first boot is shared: test_image_boot.py
# checks it (agent, portal, DNS, fill) and test_image_update.py continues from the same running box
# into its updates (same disk, still on its first boot). A module that finds no box boots its own.

_BOX: dict = {}


def provisioned_box(tmp: Path) -> tuple[Guest, Origin, object]:
    """The session's box, provisioned with the host origin and the small release and started on
    its first boot (a fresh image boots slot A): (guest, origin, release). Made on first use in
    `tmp`; stopped at exit if no test takes it."""
    if not _BOX:
        rel = small_release(tmp)
        origin = Origin(tmp, rel)
        guest = Guest(session_image(), tmp / "box")
        _BOX.update(guest=guest, origin=origin, release=rel)
        try:
            provision(guest, origin, rel, tmp)
            guest.start()
        except BaseException:
            drop_provisioned_box()
            raise
    return _BOX["guest"], _BOX["origin"], _BOX["release"]


def take_provisioned_box(tmp: Path) -> tuple[Guest, Origin, object]:
    """The session's box for a test that will reboot it: nobody else gets it afterwards (the
    caller stops it)."""
    box = provisioned_box(tmp)
    _BOX.clear()
    return box


def drop_provisioned_box() -> None:
    """Stops the session's box (a test that failed on it leaves it to no one)."""
    box = dict(_BOX)
    _BOX.clear()
    if box.get("guest"):
        box["guest"].stop()
    if box.get("origin"):
        box["origin"].stop()


atexit.register(drop_provisioned_box)
