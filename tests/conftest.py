"""Shared fixtures and helpers for popseed's black-box tests.

Run with the Debian interpreter (the pyenv one cannot import libtorrent):

    /usr/bin/python3 -m pytest tests/ -v          # or: bash scripts/test.sh

The binary under test is $POPSEED_BIN; when unset it is built with
`cargo build --release -p popseed` on first use.

Helpers meant for reuse by other test modules (import them with
`from conftest import ...`; pytest puts tests/ on sys.path):

  run(*args, check=True)          run the popseed binary, text output
  make_tree(root, {path: size})   deterministic pseudo-random source tree
  keygen(dir)                     -> Publisher(key, pub, fingerprint)
  publish(src, out_dir, key, ...) -> Release(dir, torrent, manifest, magnet, ...)
  load_manifest(release_dir)      -> (inner manifest dict, whole file dict)
  wait_until(pred, timeout, what) bounded polling, clear failure message
  wait_for_line(out, pattern, ...) wait for a complete output line of a child process; -> re.Match
  complete_lines(out)             the complete ("\n"-terminated) lines a child process wrote so far
  free_port()                     a port for a child that cannot bind port 0 (see its docstring)
  next_snapshot(path)             a periodically rewritten JSON file (origin stats, agent status),
                                  as the process saw things after the call began
  settled_origin_stats(path)      origin --stats-file once every connection to it has ended
  lt_session()                    libtorrent session locked to loopback (no DHT/LSD/UPnP/uTP)
  lt_wait_checked(ses, handle)    wait for libtorrent to finish hashing a torrent
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pytest

REPO = Path(__file__).resolve().parent.parent

# Exit codes of the popseed CLI.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# Generous per-command bound: nothing popseed does in these tests should take this long.
DEFAULT_TIMEOUT = 120.0
# Default bound of a wait for an event (a line, a port, a counter). Only a failing or hung test
# ever waits this long, so it is generous: this is a 2-core machine that CI shares with other work.
WAIT = 60.0


# --------------------------------------------------------------------------- the binary


@functools.lru_cache(maxsize=None)
def popseed_path() -> Path:
    """Path of the binary under test: $POPSEED_BIN, or a fresh release build."""
    env = os.environ.get("POPSEED_BIN")
    if env:
        p = Path(env)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise RuntimeError(f"POPSEED_BIN={env} is not an executable file")
        return p
    if shutil.which("cargo") is None:
        raise RuntimeError("POPSEED_BIN is unset and cargo is not on PATH: cannot build popseed")
    proc = subprocess.run(
        ["cargo", "build", "--release", "-p", "popseed"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cargo build --release -p popseed failed:\n{proc.stdout[-4000:]}")
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "popseed"


def _fmt(proc: subprocess.CompletedProcess) -> str:
    return (
        f"$ {' '.join(map(str, proc.args))}\n"
        f"exit code {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


def run(
    *args: Any,
    check: bool | int = True,
    timeout: float = DEFAULT_TIMEOUT,
    cwd: str | os.PathLike | None = None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Runs `popseed ARGS...` and returns the CompletedProcess (text stdout/stderr).

    check=True: the exit code must be 0; check=<int>: it must be that code; check=False: any.
    A mismatch fails the test with the full command, exit code and output.
    """
    cmd = [str(popseed_path()), *map(str, args)]
    full_env = dict(os.environ)
    full_env.setdefault("RUST_BACKTRACE", "1")
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            input=input,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"popseed did not finish within {timeout} s: {' '.join(cmd)}\n{e.stderr or ''}")
    want = 0 if check is True else (None if check is False else int(check))
    if want is not None and proc.returncode != want:
        pytest.fail(f"expected exit code {want}\n{_fmt(proc)}", pytrace=False)
    return proc


def assert_clean_error(proc: subprocess.CompletedProcess, code: int = EXIT_FAILURE) -> str:
    """Asserts an orderly failure: exit `code`, a non-empty stderr, no panic. Returns stderr."""
    assert proc.returncode == code, f"expected exit code {code}\n{_fmt(proc)}"
    err = proc.stderr.strip()
    assert err, f"no error message on stderr\n{_fmt(proc)}"
    assert "panicked" not in proc.stderr and "RUST_BACKTRACE" not in proc.stderr, f"panic\n{_fmt(proc)}"
    return err


# --------------------------------------------------------------------------- source trees


def file_bytes(seed: int | str, rel: str, size: int) -> bytes:
    """Deterministic pseudo-random content for `rel` (same seed+path+size, same bytes)."""
    return random.Random(f"{seed}:{rel}").randbytes(size)


def make_tree(root: str | os.PathLike, files: Mapping[str, int], seed: int | str = 0) -> Path:
    """Creates `root` with `files` ({"dir/name": size}) of deterministic pseudo-random bytes."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for rel, size in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(file_bytes(seed, rel, size))
    return root


def flip_byte(path: str | os.PathLike, offset: int) -> None:
    """Inverts the bits of one byte of a file in place (same size, different content)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        assert len(b) == 1, f"{path} has no byte at offset {offset}"
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


# --------------------------------------------------------------------------- publishing


@dataclasses.dataclass
class Publisher:
    key: Path
    pub: Path
    fingerprint: str


@dataclasses.dataclass
class Release:
    dir: Path
    torrent: Path
    manifest_path: Path
    manifest: dict  # the inner "manifest" object
    document: dict  # the whole manifest.json ({"manifest": ..., "signature": ...})
    magnet: str
    src: Path
    publisher: Publisher
    stdout: str

    @property
    def data_parent(self) -> Path:
        """Directory a BitTorrent client's save_path must be to find the data in place."""
        return self.src.parent


def keygen(directory: str | os.PathLike, name: str = "publisher") -> Publisher:
    """`popseed keygen --out DIR/NAME` -> DIR/NAME.key, DIR/NAME.pub and the printed fingerprint."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    proc = run("keygen", "--out", directory / name)
    key, pub = directory / f"{name}.key", directory / f"{name}.pub"
    assert key.is_file() and pub.is_file(), f"keygen wrote no key pair\n{_fmt(proc)}"
    fp = [ln.split(":", 1)[1].strip() for ln in proc.stdout.splitlines() if ln.lower().startswith("fingerprint:")]
    return Publisher(key=key, pub=pub, fingerprint=fp[0] if fp else proc.stdout.strip())


def publisher_key(release_dir: str | os.PathLike) -> str:
    """The `ed25519:...` key that signed a release (what a box's trusted_keys must name)."""
    return load_manifest(release_dir)[0]["publisher_key"]


def load_manifest(release_dir: str | os.PathLike) -> tuple[dict, dict]:
    doc = json.loads((Path(release_dir) / "manifest.json").read_text())
    return doc["manifest"], doc


def publish(
    src: str | os.PathLike,
    out: str | os.PathLike,
    publisher: Publisher | None = None,
    *extra: Any,
    keys_dir: str | os.PathLike | None = None,
) -> Release:
    """`popseed publish SRC --key K --out OUT EXTRA...`; makes a key pair first if none is given."""
    src, out = Path(src), Path(out)
    if publisher is None:
        publisher = keygen(Path(keys_dir) if keys_dir else out.parent / f"{out.name}-keys")
    proc = run("publish", src, "--key", publisher.key, "--out", out, *extra)
    magnets = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("magnet:")]
    assert len(magnets) == 1, f"expected one magnet: line on stdout\n{_fmt(proc)}"
    torrent, manifest_path = out / "release.torrent", out / "manifest.json"
    assert torrent.is_file() and manifest_path.is_file(), f"publish wrote no release\n{_fmt(proc)}"
    manifest, doc = load_manifest(out)
    return Release(
        dir=out,
        torrent=torrent,
        manifest_path=manifest_path,
        manifest=manifest,
        document=doc,
        magnet=magnets[0],
        src=src,
        publisher=publisher,
        stdout=proc.stdout,
    )


# --------------------------------------------------------------------------- waiting


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Polls `pred` until it returns something truthy (returned) or fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def _output_text(source) -> str:
    if callable(source):
        return source()
    try:
        with open(source, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def http_get_from(url: str, source: str) -> bytes:
    """GET `url` (http://host:port/path?query) from the loopback address `source`, so a server
    that tells clients apart by address (the tracker) sees another client than 127.0.0.1."""
    import http.client  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415

    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=WAIT, source_address=(source, 0))
    try:
        c.request("GET", u.path + (f"?{u.query}" if u.query else ""))
        r = c.getresponse()
        assert r.status == 200, f"GET {url}: {r.status}"
        return r.read()
    finally:
        c.close()


def complete_lines(source) -> list[str]:
    """The complete lines a child process has written so far: those ending in "\n" (without the
    line end; a trailing "\r" is dropped too). The last, unfinished line is left out, so a line
    is never seen half-written (a process may write one line in several writes, e.g. Rust's
    unbuffered stderr writes each piece of an eprintln! on its own).

    `source`: the path of the file the process writes its output to, or a callable returning the
    output text so far."""
    text = _output_text(source)
    done = text[: text.rfind("\n") + 1]
    return [ln[:-1] if ln.endswith("\r") else ln for ln in done.split("\n")[:-1]]


def wait_for_line(source, pattern: "str | re.Pattern", timeout: float = WAIT, what: str | None = None,
                  proc: Any = None, context: Callable[[], str] | None = None, after: int = 0,
                  fail_on_exit: bool = True, interval: float = 0.05) -> re.Match | None:
    """Waits until a complete line of a child process's output (see `complete_lines`) matches
    `pattern` (`re.search`) and returns the match of the first such line (`m.string` is the line).

    `proc`: the child (anything with `poll()`): when it exits without the line, fail at once with
    its output instead of waiting out `timeout` (or return None, with fail_on_exit=False).
    `after`: ignore the first `after` complete lines (e.g. `len(complete_lines(log))` taken
    before the action that prints the line). `context`: what to show on failure (default: the
    end of the output)."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    what = what or f"a line matching {rx.pattern!r}"
    deadline = time.monotonic() + timeout
    while True:
        exited = proc is not None and proc.poll() is not None
        for line in complete_lines(source)[after:]:  # read after poll(): an exited child wrote all
            m = rx.search(line)
            if m:
                return m
        if exited and not fail_on_exit:
            return None
        if exited or time.monotonic() >= deadline:
            shown = context() if context else _output_text(source)[-6000:]
            why = f"the process exited ({proc.poll()})" if exited else f"timed out after {timeout} s"
            pytest.fail(f"{why} waiting for {what}\n--- output ---\n{shown}", pytrace=False)
        time.sleep(interval)


# --------------------------------------------------------------------------- libtorrent


def import_libtorrent():
    try:
        import libtorrent  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - environment problem, not a test failure mode
        raise RuntimeError(
            "cannot import libtorrent: run the tests with /usr/bin/python3 and the Debian package "
            "python3-libtorrent (bash scripts/test.sh installs it)"
        ) from e
    return libtorrent


def lt_session(**overrides: Any):
    """A libtorrent session for tests: TCP on 127.0.0.1, random port, no DHT/LSD/UPnP/NAT-PMP/uTP."""
    lt = import_libtorrent()
    settings = {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "alert_mask": lt.alert_category.status | lt.alert_category.error | lt.alert_category.storage,
    }
    settings.update(overrides)
    return lt.session(settings)


def lt_add(ses, torrent: str | os.PathLike, save_path: str | os.PathLike):
    lt = import_libtorrent()
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(str(torrent))
    atp.save_path = str(save_path)
    return ses.add_torrent(atp)


def lt_wait_checked(ses, handle, timeout: float = 120.0):
    """Waits for the next torrent_checked_alert of `handle`; fails on file/torrent errors.

    Returns the torrent's status after the check.
    """
    lt = import_libtorrent()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            if isinstance(a, (lt.file_error_alert, lt.torrent_error_alert)):
                pytest.fail(f"libtorrent: {a.message()}", pytrace=False)
            if isinstance(a, lt.torrent_checked_alert) and a.handle == handle:
                return handle.status()
    st = handle.status()
    pytest.fail(
        f"libtorrent did not finish checking within {timeout} s "
        f"(state {st.state}, progress {st.progress:.3f}, error {st.errc.message()!r})",
        pytrace=False,
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def popseed() -> Path:
    """Path of the popseed binary under test."""
    return popseed_path()


@pytest.fixture(name="run")
def run_fixture(popseed: Path) -> Callable[..., subprocess.CompletedProcess]:
    return run


@pytest.fixture
def publisher(tmp_path: Path, popseed: Path) -> Publisher:
    """A fresh publisher key pair under tmp_path/keys."""
    return keygen(tmp_path / "keys")


def files_in_order(files: Mapping[str, int]) -> list[tuple[str, int]]:
    """The order popseed lists files in: by path components, byte-wise."""
    return sorted(files.items(), key=lambda kv: [c.encode() for c in kv[0].split("/")])


def expected_pieces(sizes: Iterable[int], piece_length: int) -> int:
    total = sum(sizes)
    return -(-total // piece_length)


# --------------------------------------------------------------------------- portal (added for the portal tests)


_PORTS_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(kind: int = 1) -> int:
    """A port free for TCP and UDP on 127.0.0.1, for a child that must be told its port up front
    (agent.toml, QEMU's hostfwd, a .torrent's web seed). Prefer port 0 and reading the bound
    port from the child's output wherever the child prints it (`start_portal`, `start_seed`,
    `start_origin` do).

    The port is checked free and then released, so another process could take it before the
    child binds it. To make that unlikely it comes from below the kernel's ephemeral range (the
    kernel never hands those out for port 0 or outgoing connections, which is what the ports
    of every other test client come from), picked at random, and never twice in one session.
    (`kind` is ignored; the port is free for both protocols.)"""
    lo, _ = _ephemeral_range()
    start = 10000 if lo > 12000 else 1024
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(start, lo) if lo > start + 1000 else 0
        if port in _PORTS_HANDED_OUT:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                port = t.getsockname()[1]
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        if port in _PORTS_HANDED_OUT:
            continue
        _PORTS_HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port found")


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port now."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


@dataclasses.dataclass
class PortalProc:
    proc: subprocess.Popen
    http_port: int
    dns_port: int
    url: str
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_portal(store_dir: str | os.PathLike, log_dir: str | os.PathLike, *extra: Any,
                 portal_ip: str = "127.0.0.1", timeout: float = WAIT) -> PortalProc:
    """Starts `popseed portal --store DIR` on loopback ports the portal picks itself (port 0, so
    no port is released and re-bound) and returns once it printed its addresses (complete
    lines; it binds before it prints, so it serves by then)."""
    for attempt in range(5):
        log = Path(log_dir) / f"portal-{time.monotonic_ns()}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [str(popseed_path()), "portal", "--store", str(store_dir), "--http", "127.0.0.1:0",
                 "--dns", "127.0.0.1:0", "--portal-ip", portal_ip, *map(str, extra)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "RUST_BACKTRACE": "1"},
            )
        # "dns: " comes after "portal: " and "http: " (one stdout, in that order)
        dns = wait_for_line(log, r"^dns: 127\.0\.0\.1:(\d+) ", timeout, "popseed portal to print its addresses",
                            proc=proc, fail_on_exit=False)
        if dns is None:
            text = log.read_text(errors="replace")
            # DNS binds UDP port 0, then TCP on the same port, which another socket may hold.
            if "dns/tcp" in text and attempt < 4:
                continue
            pytest.fail(f"popseed portal exited with {proc.returncode}:\n{text}", pytrace=False)
        lines = complete_lines(log)
        url = next(ln.split(" ", 1)[1].strip() for ln in lines if ln.startswith("portal: "))
        http_port = int(next(ln for ln in lines if ln.startswith("http: ")).rsplit(":", 1)[1])
        return PortalProc(proc=proc, http_port=http_port, dns_port=int(dns.group(1)), url=url, log=log)
    raise AssertionError("unreachable")


def store_with(tmp: Path, files: Mapping[str, int], name: str, *publish_extra: Any,
               data: bool = True, seed: int | str = 0) -> tuple[Path, Release]:
    """Publishes `files` as release `name` and imports it (with its data unless data=False) into
    a new store tmp/<name>-store. Returns (store dir, release)."""
    src = make_tree(tmp / f"{name}-src" / name, files, seed=seed)
    rel = publish(src, tmp / f"{name}-release", None, "--name", name, *publish_extra)
    store = tmp / f"{name}-store"
    args = ["store", "--dir", store, "--min-free", "0", "import", rel.dir]
    if data:
        args += ["--data", src]
    run(*args)
    return store, rel


# --------------------------------------------------------------------------- popseed seed
# (added with the swarm tests)


@dataclasses.dataclass
class Seed:
    """A running `popseed seed` and what it printed at start."""

    proc: subprocess.Popen
    peer: tuple[str, int]
    tracker_url: str | None
    # infohash hex -> {"name", "magnet", "torrent" (Path or None), "present", "pieces"}
    releases: dict
    log: Path
    stdout: list

    def stop(self, timeout: float = 15.0) -> str:
        """SIGTERM (SIGKILL after `timeout` s); returns the log (stderr) text."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.log.read_text(errors="replace")

    def log_text(self) -> str:
        """The complete lines of the log so far (see `complete_lines`)."""
        return "".join(ln + "\n" for ln in complete_lines(self.log))

    def wait_log(self, pattern: str, what: str | None = None, timeout: float = WAIT) -> re.Match:
        """Waits for a complete log line matching `pattern` (`wait_for_line`)."""
        return wait_for_line(self.log, pattern, timeout, what, proc=self.proc)


def start_seed(store: str | os.PathLike, workdir: str | os.PathLike, *extra: Any, prefix: list | None = None,
               timeout: float = WAIT, log_filter: str = "popseed_swarm=info") -> Seed:
    """Starts `popseed seed --store STORE --torrents-out WORKDIR/torrents EXTRA...` (stdout to
    WORKDIR/seed.out, stderr to WORKDIR/seed.log) and waits for its start-up report (the complete
    "seeding" line, printed after every other start-up line). `prefix` runs it under a wrapper
    (e.g. `ip netns exec NS`). Defaults: loopback, ports the seed picks itself (printed), no LSD."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log, out_path = workdir / "seed.log", workdir / "seed.out"
    args = [str(popseed_path()), "--log", log_filter, "seed", "--store", str(store),
            "--torrents-out", str(workdir / "torrents")]
    flags = {str(e) for e in extra}
    if "--listen" not in flags:
        args += ["--listen", "127.0.0.1:0"]
    if "--tracker-listen" not in flags and "--no-tracker" not in flags:
        args += ["--tracker-listen", "127.0.0.1:0"]
    if "--lsd" not in flags:
        args += ["--no-lsd"]
    args += [str(e) for e in extra if str(e) != "--lsd"]
    with open(log, "wb") as logf, open(out_path, "wb") as outf:  # NO_COLOR: plain log lines
        proc = subprocess.Popen([*(prefix or []), *args], stdout=outf, stderr=logf,
                                env={**os.environ, "NO_COLOR": "1", "RUST_BACKTRACE": "1"})
    wait_for_line(out_path, r"^seeding", timeout, "popseed seed's start-up report", proc=proc,
                  context=lambda: _output_text(out_path) + "\n--- log ---\n" + _output_text(log)[-4000:])
    out = complete_lines(out_path)
    peer, tracker, releases, cur = None, None, {}, None
    for line in out:
        if line.startswith("peers: "):
            host, port = line[len("peers: "):].rsplit(":", 1)
            peer = (host, int(port))
        elif line.startswith("tracker: "):
            tracker = line[len("tracker: "):]
        elif line.startswith("release: "):
            parts = line.split()
            present, total = parts[2].split("/")
            cur = {"name": parts[3] if len(parts) > 3 else "", "magnet": None, "torrent": None,
                   "present": int(present), "pieces": int(total)}
            releases[parts[1]] = cur
        elif line.strip().startswith("magnet: ") and cur is not None:
            cur["magnet"] = line.strip()[len("magnet: "):]
        elif line.strip().startswith("torrent: ") and cur is not None:
            cur["torrent"] = Path(line.strip()[len("torrent: "):])
    assert peer is not None, f"no peers: line\n{out}"
    return Seed(proc=proc, peer=peer, tracker_url=tracker, releases=releases, log=log, stdout=out)


def store_import(store: str | os.PathLike, release: "Release", data: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """`popseed store --dir STORE import RELEASE_DIR --data DATA` (DATA defaults to its source)."""
    return run("store", "--dir", store, "import", release.dir, "--data", data or release.src)


def tree_digests(root: str | os.PathLike) -> dict:
    """{relative path: sha256 hex} of every file under root."""
    import hashlib

    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[str(p.relative_to(root))] = h.hexdigest()
    return out


# --------------------------------------------------------------------------- popseed origin --stats-file


def _read_snapshot(path: Path) -> tuple[tuple | None, dict | None]:
    """(identity of this write of the file, its JSON). The writer writes a temporary file and
    renames it over `path`, so one open file is one whole snapshot; (inode, mtime) differ
    between two writes (250 ms apart)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except FileNotFoundError:
        return None, None
    try:
        return (st.st_ino, st.st_mtime_ns, st.st_size), json.loads(raw)
    except json.JSONDecodeError:
        return None, None


def next_snapshot(path: str | os.PathLike, timeout: float = WAIT, proc: Any = None) -> dict:
    """The next snapshot in a JSON file a popseed process rewrites every 250 ms (write a
    temporary file, rename it into place): `popseed origin --stats-file`, the agent's
    status_file. Returns one the process took after this call began, so it shows everything the
    process did before the call. `proc` (with `poll()`): fail at once if the writer exits.

    The first new file seen may hold a snapshot taken before the call; the second new one was
    taken after the first was renamed into place, which is after the call began."""
    path = Path(path)
    seen, _ = _read_snapshot(path)
    changes, doc = 0, None

    def two_new_writes():
        nonlocal seen, changes, doc
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process writing {path} exited ({proc.poll()}) before writing it again", pytrace=False)
        ident, d = _read_snapshot(path)
        if ident is not None and ident != seen:
            seen, doc, changes = ident, d, changes + 1
        return changes >= 2

    wait_until(two_new_writes, timeout, f"two new writes of {path}")
    return doc


def settled_origin_stats(path: str | os.PathLike, timeout: float = WAIT) -> dict:
    """`popseed origin --stats-file PATH` once the origin has no connection left (every client
    went away: closed, or timed out after the origin's 8 s idle timeout), from a snapshot taken
    after one that already showed no connection, so nothing a connection counted is missing
    (a snapshot reads the per-piece counters before the connection gauge)."""
    wait_until(lambda: next_snapshot(path, timeout)["active_connections"] == 0, timeout,
               f"the origin's connections to end ({path})")
    doc = next_snapshot(path, timeout)
    assert doc["active_connections"] == 0, f"a client connected to the origin again: {doc}"
    return doc
