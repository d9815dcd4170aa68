"""Helpers for the booted test image (tests/test_image_boot.py): build it once per session with
image/test-image/build.sh, copy its disk per boot, put files on its FAT boot partition with mtools,
and run it under qemu-system-x86_64 (TCG) with host ports forwarded to the guest.

The guest's user-mode network is 10.42.0.0/24: the guest is 10.42.0.1 (the portal address of the
provisioning file, and of setup mode), the host is 10.42.0.2 (QEMU maps it to the host's loopback,
so an origin listening on 127.0.0.1:PORT is 10.42.0.2:PORT from the guest).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, free_port, popseed_path

GUEST_IP = "10.42.0.1"
HOST_IP = "10.42.0.2"
BUILD_TIMEOUT = 1200.0


def missing_tools() -> list[str]:
    tools = ["qemu-system-x86_64", "mmdebstrap", "genimage", "mcopy", "mke2fs", "mkfs.vfat", "sfdisk", "dig"]
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
    print(f"\ntest image built in {time.monotonic() - t0:.0f} s")
    return json.loads((out / "info.json").read_text())


class Guest:
    """One boot of the test image: its own sparse copy of the disk, forwarded ports, console log."""

    def __init__(self, info: dict, workdir: Path, slot: str = "A"):
        self.info = info
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.disk = self.dir / "disk.img"
        subprocess.run(["cp", "--sparse=always", info["disk"], str(self.disk)], check=True)
        self.boot_offset = info["partitions"]["popseed-boot"]["offset"]
        self.slot = slot
        self.console = self.dir / "console.log"
        self.proc: subprocess.Popen | None = None
        self.http_port = free_port()
        self.dns_port = free_port()
        self.mgmt_port = free_port()
        self.started = 0.0

    # ------------------------------------------------------------------ boot partition
    def _mtools(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        return subprocess.run(list(args), env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def put_file(self, src: Path, name: str) -> None:
        """Copies a file onto the FAT boot partition (mounted at /boot/popseed in the guest)."""
        self._mtools("mcopy", "-o", "-i", f"{self.disk}@@{self.boot_offset}", str(src), f"::{name}")

    def put_dir(self, src: Path, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts)):
            sub = "/".join(parts[:i])
            subprocess.run(["mmd", "-i", f"{self.disk}@@{self.boot_offset}", f"::{sub}"],
                           env=dict(os.environ, MTOOLS_SKIP_CHECK="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._mtools("mcopy", "-s", "-o", "-i", f"{self.disk}@@{self.boot_offset}", str(src), f"::{name}")

    def get_file(self, name: str) -> str:
        return self._mtools("mtype", "-i", f"{self.disk}@@{self.boot_offset}", f"::{name}").stdout

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        net = (f"user,model=virtio-net-pci,net=10.42.0.0/24,host={HOST_IP},dhcpstart={GUEST_IP},"
               f"hostfwd=tcp:127.0.0.1:{self.http_port}-{GUEST_IP}:80,"
               f"hostfwd=udp:127.0.0.1:{self.dns_port}-{GUEST_IP}:53,"
               f"hostfwd=tcp:127.0.0.1:{self.mgmt_port}-{GUEST_IP}:8080")
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-M", "q35", "-m", "1024", "-smp", "2",
               "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}", "-no-reboot",
               "-kernel", self.info["kernel"], "-initrd", self.info["initrd"],
               "-append", self.info["cmdline"][self.slot],
               "-drive", f"file={self.disk},format=raw,if=virtio", "-nic", net]
        self.qemu_log = open(self.dir / "qemu.log", "w")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.qemu_log, stderr=subprocess.STDOUT)

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

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n: int = 60) -> str:
        lines = [ln for ln in self.console_text().splitlines() if "POPSEED-TEST" in ln or "popseed" in ln.lower()]
        return "\n".join(lines[-n:]) or self.console_text()[-4000:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_console(self, pattern: str, timeout: float, what: str) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.console_text())
            if m:
                return m
            if not self.alive():
                pytest.fail(f"QEMU exited ({self.proc.returncode}) while waiting for {what}\n{self.tail()}", pytrace=False)
            time.sleep(1)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} on the serial console\n{self.tail()}", pytrace=False)

    def report(self, timeout: float, what: str, known: tuple[str, ...] = (), **want: str) -> dict:
        """Waits for a `POPSEED-TEST key=value ...` report line with every `want` key at its value
        (underscores in keys stand for dashes) and every `known` key reported (not "-"); returns
        that line's values."""
        want = {k.replace("_", "-"): v for k, v in want.items()}
        deadline = time.monotonic() + timeout
        while True:
            for line in reversed(self.console_text().splitlines()):
                if "POPSEED-TEST " not in line:
                    continue
                vals = dict(kv.split("=", 1) for kv in line.split("POPSEED-TEST ", 1)[1].split() if "=" in kv)
                if all(vals.get(k) == v for k, v in want.items()) and all(vals.get(k, "-") != "-" for k in known):
                    return vals
                break
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


def http_get(port: int, path: str, host: str = GUEST_IP, timeout: float = 10.0, headers: dict | None = None) -> tuple[int, bytes]:
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
