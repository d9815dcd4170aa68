"""Origin seeds over QUIC and the agent's fetcher, with real processes and real QUIC.

Each test publishes a release, runs `popseed origin` process(es) on loopback (or inside network
namespaces the test creates), runs `popseed agent`, and checks the store's files byte for byte
against the source."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (WAIT, publisher_key, flip_byte, free_port, listening, make_tree, next_snapshot, popseed_path, publish,
                      settled_origin_stats, wait_for_line, wait_until)

MiB = 1 << 20


class Proc:
    """A background popseed process with its output in a log file."""

    def __init__(self, args, log: Path, prefix=()):
        self.log = log
        self.fh = open(log, "wb")
        # NO_COLOR: plain log lines (no ANSI escapes between a field's name and its value)
        self.p = subprocess.Popen([*prefix, str(popseed_path()), *map(str, args)], stdout=self.fh, stderr=subprocess.STDOUT,
                                  env={**os.environ, "NO_COLOR": "1", "RUST_BACKTRACE": "1"})
        self.paused = False

    def text(self) -> str:
        """The output so far (for failure messages and for checks after the process ended; while
        it runs, look for a line with `wait_line`)."""
        return self.log.read_text(errors="replace")

    def wait_line(self, pattern: str, timeout: float = WAIT, what: str | None = None) -> re.Match:
        """Waits for a complete output line matching `pattern`; fails at once if the process exits."""
        return wait_for_line(self.log, pattern, timeout, what, proc=self.p)

    def alive(self) -> bool:
        return self.p.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the process does nothing (sends nothing, answers nothing) until `resume`."""
        self.p.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.p.send_signal(signal.SIGCONT)
        self.paused = False

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.p.send_signal(sig)
            if self.paused:
                self.resume()  # a stopped process acts on SIGTERM only once it runs again
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(15)
        self.fh.close()


def start_origin(tmp: Path, name: str, releases, extra=(), prefix=(), listen_ip="127.0.0.1") -> tuple[Proc, str, int]:
    """`popseed origin` on LISTEN_IP, port 0 (it prints the port it bound; no port is released
    and re-bound). Returns (process, certificate fingerprint, port) once it printed them."""
    args = ["origin", "--listen", f"{listen_ip}:0", "--self-signed", "--write-cert", tmp / f"{name}-cert", *extra]
    for rel, data in releases:
        args += ["--release", f"{rel}={data}"]
    p = Proc(args, tmp / f"{name}.log", prefix)
    # printed after "origin listening on ..." (and the admin address), all on stdout
    fp = p.wait_line(r"^certificate sha256 ([0-9a-f]{64})$", what=f"origin {name} to start").group(1)
    port = int(p.wait_line(rf"^origin listening on {re.escape(listen_ip)}:(\d+) ").group(1))
    return p, fp, port


def agent_ports(agent: Proc, mgmt: bool = False, serving: bool = False) -> dict:
    """The ports a running agent bound, from its info log (run it with `--log info` or more):
    give it port 0 for each (`serving_sections()` does) and nothing is released and re-bound.
    Returns {"mgmt": ...} with `mgmt`, {"peer", "tracker", "http", "dns": ...} with `serving`;
    waits until each of those listens."""
    ports = {}
    if serving:
        m = agent.wait_line(r"swarm started peers=127\.0\.0\.1:(\d+) tracker=Some\(127\.0\.0\.1:(\d+)\)",
                            what="the agent's swarm addresses")
        ports.update(peer=int(m.group(1)), tracker=int(m.group(2)))
        m = agent.wait_line(r"portal serving http=127\.0\.0\.1:(\d+) dns=127\.0\.0\.1:(\d+)", what="the agent's portal addresses")
        ports.update(http=int(m.group(1)), dns=int(m.group(2)))
    if mgmt:
        m = agent.wait_line(r"management address: .* addr=127\.0\.0\.1:(\d+)", what="the agent's management address")
        ports["mgmt"] = int(m.group(1))
    tcp = [v for k, v in ports.items() if k != "dns"]
    wait_until(lambda: all(listening(p) for p in tcp) or (not agent.alive() and pytest.fail(agent.text())), WAIT,
               f"the agent to listen on {ports}")
    return ports


def agent_config(tmp: Path, origins, release_dir: Path, extra: str = "", name="agent") -> Path:
    lines = ['status_file = "status.json"', "[store]", 'dir = "store"', 'min_free = "64MiB"', "[fetch]", 'web_seed_after = "1s"',
             'backoff_max = "1s"', extra, ""]
    for i, (addr, fp) in enumerate(origins):
        lines += ["[[origins]]", f'name = "o{i}"', f'address = "{addr}"', f'fingerprint = "{fp}"', ""]
    lines += ["[[releases]]", f'dir = "{release_dir}"', ""]
    lines.insert(0, f"trusted_keys = {json.dumps([publisher_key(release_dir)])}")
    d = tmp / name
    d.mkdir(exist_ok=True)
    cfg = d / "agent.toml"
    cfg.write_text("\n".join(lines))
    return cfg


def serving_sections(peer: int = 0, tracker: int = 0, http: int = 0, dns: int = 0) -> str:
    """[swarm] and [portal] sections of agent.toml on loopback ports (default 0: the agent picks
    free ports and logs them, see `agent_ports`)."""
    return f"""
[swarm]
listen = "127.0.0.1:{peer}"
tracker_listen = "127.0.0.1:{tracker}"
announce_ip = "127.0.0.1"
lsd = false
[portal]
http_listen = "127.0.0.1:{http}"
dns_listen = "127.0.0.1:{dns}"
portal_ip = "127.0.0.1"
"""


def status(cfg: Path) -> dict:
    try:
        return json.loads((cfg.parent / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def done_fraction(cfg: Path) -> float:
    s = status(cfg)
    r = (s.get("releases") or [{}])[0]
    return r.get("pieces_done", 0) / max(1, r.get("piece_count", 1))


def store_files_match(cfg: Path, release) -> None:
    m = release.manifest
    data = cfg.parent / "store" / "releases" / m["infohash"] / "data" / m["torrent_name"]
    for f in m["files"]:
        got = hashlib.sha256((data / f["path"]).read_bytes()).hexdigest()
        assert got == f["sha256"], f"{f['path']} differs from the signed release"
    # and the independent check: popseed verify re-hashes every piece of the stored files
    r = subprocess.run([str(popseed_path()), "verify", str(release.dir), "--data", str(data)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def present_pieces(cfg: Path, infohash: str) -> set[int]:
    """Pieces the agent's store holds (`popseed store show --json`), e.g. after a SIGKILL."""
    r = subprocess.run([str(popseed_path()), "store", "--dir", str(cfg.parent / "store"), "show", "--json", infohash],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return set(json.loads(r.stdout)["present"])


def run_agent(cfg: Path, timeout=300, extra=()) -> str:
    r = subprocess.run([str(popseed_path()), "agent", "--config", str(cfg), "--exit-when-complete", *extra],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stderr


@pytest.fixture
def big_release(tmp_path):
    src = make_tree(tmp_path / "src" / "festival", {
        "video/opening.mp4": 150 * MiB,
        "video/keynote.mp4": 120 * MiB + 12345,
        "apps/installer.bin": 30 * MiB,
        "README.txt": 1000,
    })
    rel = publish(src, tmp_path / "rel", None, "--critical", "*.mp4:8MiB", "--piece-size", "256KiB")
    return rel


def test_fill_300mib_critical_first(tmp_path, big_release):
    rel = big_release
    origin, fp, port = start_origin(tmp_path, "o1", [(rel.dir, rel.src)])
    try:
        cfg = agent_config(tmp_path, [(f"127.0.0.1:{port}", fp)], rel.dir)
        t0 = time.monotonic()
        run_agent(cfg, extra=["--progress"])
        took = time.monotonic() - t0
    finally:
        origin.kill(signal.SIGTERM)
    store_files_match(cfg, rel)
    r = status(cfg)["releases"][0]
    assert r["complete"]
    m = rel.manifest
    expected = set()
    for c in m["critical"]:
        off = sum(f["size"] for f in m["files"][: [f["path"] for f in m["files"]].index(c["path"])])
        start, end = off + c["offset"], off + c["offset"] + c["length"]
        expected |= set(range(start // m["piece_length"], (end + m["piece_length"] - 1) // m["piece_length"]))
    crit = r["critical_pieces"]
    assert crit == len(expected) >= 64, "8 MiB of each video at 256 KiB pieces (+1 where unaligned)"
    # every critical piece arrived before any other piece
    assert set(r["arrival"][:crit]) == expected, "the first pieces to arrive are exactly the critical ones"
    assert len(r["arrival"]) == m["piece_count"]
    print(f"300 MiB fill in {took:.1f}s, first critical piece after {r['first_critical_ms']} ms")


def origin_pieces(cfg: Path) -> dict:
    """{origin name: pieces it delivered} from the agent's status file."""
    return {o["name"]: o.get("pieces", 0) for o in status(cfg).get("origins", [])}


def freeze_fill(cfg: Path, agent: Proc, *origins: Proc) -> dict:
    """Stops (SIGSTOP) every origin, so nothing more arrives and the box stays part-way for as
    long as the test needs, and returns the agent's status as it is then (a snapshot taken after
    the stop). Fails if the fill was already complete."""
    for o in origins:
        o.pause()
    s = next_snapshot(cfg.parent / "status.json", proc=agent.p)
    assert not s["complete"], "the fill completed before the origins were stopped"
    return s


def test_two_origins_one_killed_halfway(tmp_path):
    src = make_tree(tmp_path / "src" / "rel", {"a.bin": 60 * MiB, "b.bin": 20 * MiB + 7})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    o1, fp1, p1 = start_origin(tmp_path, "o1", [(rel.dir, rel.src)], extra=["--rate-limit", "10MiB"])
    o2, fp2, p2 = start_origin(tmp_path, "o2", [(rel.dir, rel.src)], extra=["--rate-limit", "10MiB"])
    cfg = agent_config(tmp_path, [(f"127.0.0.1:{p1}", fp1), (f"127.0.0.1:{p2}", fp2)], rel.dir)
    agent = Proc(["agent", "--config", cfg, "--exit-when-complete"], tmp_path / "agent.log")
    try:
        def quarter_from_both():
            got = origin_pieces(cfg)
            return done_fraction(cfg) >= 0.25 and got.get("o0", 0) > 0 and got.get("o1", 0) > 0 or not agent.alive()

        wait_until(quarter_from_both, WAIT, "a quarter of the fill, with pieces from both origins")
        assert agent.alive(), agent.text()
        # Both stopped first: the fill (at 20 MiB/s, 3 s from here to done) cannot finish while
        # we check that it is part-way and kill o1.
        freeze_fill(cfg, agent, o1, o2)
        o1.kill()
        o2.resume()
        wait_until(lambda: not agent.alive(), 120, "the fill to complete from the surviving origin")
        assert agent.p.returncode == 0, agent.text()
    finally:
        agent.kill()
        o1.kill()
        o2.kill(signal.SIGTERM)
    store_files_match(cfg, rel)
    s = status(cfg)
    assert all(o["pieces"] > 0 for o in s["origins"] if o["name"] in ("o0", "o1")), s["origins"]


def test_corrupt_origin_is_rejected_and_dropped(tmp_path):
    src = make_tree(tmp_path / "src" / "rel", {"a.bin": 24 * MiB, "b.bin": 8 * MiB + 3})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    bad = tmp_path / "bad" / "rel"
    shutil.copytree(src, bad)
    # every piece of a.bin corrupted: since request batches follow each stream's rate, which
    # pieces the liar is given depends on timing, and eight bad pieces among 129 were sometimes
    # hit only twice before the fill was done
    for k in range(96):
        flip_byte(bad / "a.bin", k * 256 * 1024 + 100)
    good_o, gfp, gport = start_origin(tmp_path, "good", [(rel.dir, rel.src)], extra=["--rate-limit", "16MiB"])
    bad_o, bfp, bport = start_origin(tmp_path, "bad", [(rel.dir, bad)])
    try:
        # the lying origin is listed first
        cfg = agent_config(tmp_path, [(f"127.0.0.1:{bport}", bfp), (f"127.0.0.1:{gport}", gfp)], rel.dir)
        run_agent(cfg)
    finally:
        good_o.kill(signal.SIGTERM)
        bad_o.kill(signal.SIGTERM)
    store_files_match(cfg, rel)
    origins = {o["name"]: o for o in status(cfg)["origins"]}
    assert origins["o0"]["hash_failures"] >= 3, origins
    assert origins["o0"]["dropped"], "an origin that keeps sending bad data is dropped"
    assert origins["o1"]["hash_failures"] == 0


def test_origin_survives_a_file_truncated_while_it_serves_it(tmp_path):
    """The origin serves pieces from mapped files; a publisher truncating a served file must not
    kill it (SIGBUS): the box gets the pieces from the other origin and nothing bad is stored."""
    src = make_tree(tmp_path / "src" / "rel", {"a.bin": 40 * MiB, "b.bin": 8 * MiB + 5})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    shrinking = tmp_path / "shrinking" / "rel"
    shutil.copytree(src, shrinking)
    t_o, tfp, tport = start_origin(tmp_path, "shrinking", [(rel.dir, shrinking)], extra=["--rate-limit", "4MiB"])
    g_o, gfp, gport = start_origin(tmp_path, "good", [(rel.dir, rel.src)], extra=["--rate-limit", "8MiB"])
    cfg = agent_config(tmp_path, [(f"127.0.0.1:{tport}", tfp), (f"127.0.0.1:{gport}", gfp)], rel.dir)
    agent = Proc(["agent", "--config", cfg, "--exit-when-complete"], tmp_path / "agent.log")
    try:
        wait_until(lambda: done_fraction(cfg) >= 0.15 or not agent.alive(), WAIT, "15% of the fill")
        assert agent.alive(), agent.text()
        # truncated while both origins stand still, so the box is part-way (it still needs
        # pieces past the new end) whatever the scheduling
        freeze_fill(cfg, agent, t_o, g_o)
        os.truncate(shrinking / "a.bin", 1 * MiB)
        t_o.resume()
        g_o.resume()
        # it notices: the pieces past the new end are answered as unavailable (pread) or go out
        # as zeros (the SIGBUS guard) and the file is no longer mapped
        t_o.wait_line(r"changed size|cannot read piece", what="the origin to notice its file shrank")
        wait_until(lambda: not agent.alive(), 120, "the fill to complete")
        assert agent.p.returncode == 0, agent.text()
        assert t_o.alive(), "the origin died when its file shrank:\n" + t_o.text()
    finally:
        agent.kill()
        t_o.kill(signal.SIGTERM)
        g_o.kill(signal.SIGTERM)
    store_files_match(cfg, rel)


def test_agent_sigkill_resumes_without_refetching(tmp_path):
    src = make_tree(tmp_path / "src" / "rel", {"a.bin": 100 * MiB, "b.bin": 17 * MiB + 1})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    stats = tmp_path / "origin-stats.json"
    origin, fp, port = start_origin(tmp_path, "o1", [(rel.dir, rel.src)], extra=["--rate-limit", "25MiB", "--stats-file", stats])
    cfg = agent_config(tmp_path, [(f"127.0.0.1:{port}", fp)], rel.dir)
    ih = rel.manifest["infohash"]
    try:
        agent = Proc(["agent", "--config", cfg], tmp_path / "agent1.log")
        wait_until(lambda: done_fraction(cfg) >= 0.4 or not agent.alive(), WAIT, "40% of the fill")
        agent.kill(signal.SIGKILL)
        stored = present_pieces(cfg, ih)
        run_agent(cfg)
        # The counters once both agents' connections are gone (the killed one's after the
        # origin's idle timeout): nothing either of them was sent is missing.
        per_piece = settled_origin_stats(stats)["per_piece"][ih]
    finally:
        origin.kill(signal.SIGTERM)
    store_files_match(cfg, rel)
    assert len(per_piece) == rel.manifest["piece_count"]
    twice = {int(i) for i, n in per_piece.items() if n > 1}
    # Only pieces in flight at the kill (asked for, not yet stored) may come twice: none that
    # the store held. (The origin's counter also counts pieces it kept writing to the dead
    # connection until its idle timeout, so the number of those says little.)
    assert 0 < len(stored) < rel.manifest["piece_count"]
    assert not twice & stored, f"{len(twice & stored)} pieces stored before the kill were sent again"
    # and the box side: the restarted agent fetched exactly the pieces missing at the kill
    n, plen, total = rel.manifest["piece_count"], rel.manifest["piece_length"], rel.manifest["total_size"]
    missing_bytes = sum(plen if i < n - 1 else total - plen * (n - 1) for i in range(n) if i not in stored)
    assert status(cfg)["bytes_fetched"] == missing_bytes


HTTPS_SERVER = r"""
import http.server, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=sys.argv[3], **k)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(f"Serving HTTPS on port {srv.server_address[1]}", flush=True)
srv.serve_forever()
"""


def test_https_web_seed_with_the_publishers_ca(tmp_path):
    """An `https://` web seed behind a certificate of the publisher's own CA: refused until the
    box trusts that CA (`web_seed_ca`), then the fill completes from it."""
    ca, pki = tmp_path / "ca.pem", tmp_path / "pki"
    pki.mkdir()
    sh = lambda *a: subprocess.run(a, check=True, capture_output=True)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test publisher CA",
       "-keyout", pki / "ca.key", "-out", ca)
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", pki / "srv.key",
       "-out", pki / "srv.csr")
    (pki / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    sh("openssl", "x509", "-req", "-in", pki / "srv.csr", "-CA", ca, "-CAkey", pki / "ca.key", "-CAcreateserial",
       "-days", "2", "-extfile", pki / "ext", "-out", pki / "srv.pem")
    src = make_tree(tmp_path / "www" / "rel", {"a.bin": MiB + 5, "sub/b.bin": 300_000})
    log = tmp_path / "https.log"
    with open(log, "wb") as out:
        srv = subprocess.Popen([sys.executable, "-u", "-c", HTTPS_SERVER, pki / "srv.pem", pki / "srv.key", tmp_path / "www"],
                               stdout=out, stderr=subprocess.STDOUT)
    try:
        port = int(wait_for_line(log, r"^Serving HTTPS on port (\d+)$", what="the HTTPS server", proc=srv).group(1))
        rel = publish(src, tmp_path / "rel", None, "--piece-size", "64KiB", "--web-seed", f"https://127.0.0.1:{port}/")
        dead = free_port(2)
        # without the CA: the certificate is not trusted, nothing is stored
        cfg = agent_config(tmp_path, [(f"127.0.0.1:{dead}", "00" * 32)], rel.dir, name="untrusting")
        agent = Proc(["agent", "--config", cfg, "--log", "info"], cfg.parent / "agent.log")
        try:
            wait_until(lambda: any(o["name"] == "web seed" and o["errors"] > 0
                                   for o in status(cfg).get("origins", [])), WAIT,
                       "the web seed's certificate to be refused")
            assert status(cfg)["bytes_fetched"] == 0
        finally:
            agent.kill()
        # trusting the publisher's CA: the fill completes over HTTPS
        cfg = agent_config(tmp_path, [(f"127.0.0.1:{dead}", "00" * 32)], rel.dir,
                           extra=f'web_seed_ca = "{ca}"', name="trusting")
        run_agent(cfg)
    finally:
        srv.terminate()
        srv.wait(WAIT)
    store_files_match(cfg, rel)
    web = next(o for o in status(cfg)["origins"] if o["name"] == "web seed")
    assert web["pieces"] == rel.manifest["piece_count"], web


def test_web_seed_fallback_when_no_origin_is_reachable(tmp_path):
    src = make_tree(tmp_path / "www" / "rel", {"a.bin": 3 * MiB + 5, "sub/b.bin": MiB})
    # the web server binds port 0 and says which port it got; the release names it
    log = tmp_path / "http.log"
    with open(log, "wb") as out:
        http = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                 "--directory", str(tmp_path / "www")], stdout=out, stderr=subprocess.STDOUT)
    try:
        port = int(wait_for_line(log, r"^Serving HTTP on \S+ port (\d+) ", what="the web server to listen", proc=http).group(1))
        rel = publish(src, tmp_path / "rel", None, "--piece-size", "64KiB", "--web-seed", f"http://127.0.0.1:{port}/")
        dead = free_port(2)  # nobody listens there
        cfg = agent_config(tmp_path, [(f"127.0.0.1:{dead}", "00" * 32)], rel.dir)
        run_agent(cfg)
    finally:
        http.terminate()
        http.wait(5)
    store_files_match(cfg, rel)
    origins = {o["name"]: o for o in status(cfg)["origins"]}
    assert origins["web seed"]["pieces"] == rel.manifest["piece_count"]


def _ns(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _netem_available() -> bool:
    """Whether this kernel has sch_netem (some sandbox kernels do not)."""
    if os.geteuid() != 0 or shutil.which("tc") is None:
        return False
    ns = f"psnq{os.getpid() % 100000}"
    try:
        _ns("netns", "add", ns)
        r = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                           capture_output=True)
        return r.returncode == 0
    except subprocess.CalledProcessError:
        return False
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


LOSSY_PROXY = r"""
import asyncio, random, sys
listen, target, delay, loss = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rng = random.Random(7)
class Relay(asyncio.DatagramProtocol):
    def __init__(self):
        self.client = None
    def connection_made(self, t):
        self.t = t
    def datagram_received(self, data, addr):
        if rng.random() < loss:
            return
        dest = ("127.0.0.1", target) if addr[1] != target else self.client
        if addr[1] != target:
            self.client = addr
        if dest:
            asyncio.get_running_loop().call_later(delay, self.t.sendto, data, dest)
async def main():
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(Relay, local_addr=("127.0.0.1", listen))
    print("ready", t.get_extra_info("sockname")[1], flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_lossy_link_fill_completes(tmp_path):
    """delay 40 ms and 1% loss each way. With tc netem inside network namespaces this test makes
    when the kernel has sch_netem; otherwise through a userspace UDP relay on loopback that
    delays and drops datagrams the same way (QUIC is UDP, so the impairment is equivalent)."""
    src = make_tree(tmp_path / "src" / "rel", {"a.bin": 4 * MiB + 11})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "64KiB")
    if _netem_available():
        _lossy_netns(tmp_path, rel)
    else:
        print("sch_netem is not in this kernel: impairing the link with a userspace UDP relay")
        origin, fp, port = start_origin(tmp_path, "o1", [(rel.dir, rel.src)])
        relay_log = tmp_path / "relay.log"
        with open(relay_log, "wb") as out:  # the relay binds port 0 and prints it
            relay = subprocess.Popen([sys.executable, "-c", LOSSY_PROXY, "0", str(port), "0.040", "0.01"],
                                     stdout=out, stderr=subprocess.STDOUT)
        try:
            relay_port = int(wait_for_line(relay_log, r"^ready (\d+)$", what="the relay to listen", proc=relay).group(1))
            cfg = agent_config(tmp_path, [(f"127.0.0.1:{relay_port}", fp)], rel.dir)
            run_agent(cfg)
        finally:
            relay.kill()
            relay.wait(5)
            origin.kill(signal.SIGTERM)
        store_files_match(cfg, rel)


def _lossy_netns(tmp_path, rel):
    tag = f"ps{os.getpid() % 100000}"
    a, b = f"{tag}o", f"{tag}a"
    try:
        _ns("netns", "add", a)
        _ns("netns", "add", b)
        _ns("link", "add", f"{tag}x", "type", "veth", "peer", "name", f"{tag}y")
        _ns("link", "set", f"{tag}x", "netns", a)
        _ns("link", "set", f"{tag}y", "netns", b)
        _ns("-n", a, "addr", "add", "10.231.7.1/24", "dev", f"{tag}x")
        _ns("-n", b, "addr", "add", "10.231.7.2/24", "dev", f"{tag}y")
        for ns, dev in ((a, f"{tag}x"), (b, f"{tag}y")):
            _ns("-n", ns, "link", "set", dev, "up")
            _ns("-n", ns, "link", "set", "lo", "up")
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "40ms", "loss", "1%"],
                           check=True, capture_output=True)
        origin, fp, port = start_origin(tmp_path, "o1", [(rel.dir, rel.src)], prefix=("ip", "netns", "exec", a), listen_ip="10.231.7.1")
        try:
            cfg = agent_config(tmp_path, [(f"10.231.7.1:{port}", fp)], rel.dir)
            r = subprocess.run(["ip", "netns", "exec", b, str(popseed_path()), "agent", "--config", str(cfg), "--exit-when-complete"],
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
        finally:
            origin.kill(signal.SIGTERM)
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    store_files_match(cfg, rel)


def test_fill_rate_cap_is_respected(tmp_path):
    src = make_tree(tmp_path / "src" / "rel", {"a.bin": 12 * MiB})
    rel = publish(src, tmp_path / "rel", None, "--piece-size", "256KiB")
    origin, fp, port = start_origin(tmp_path, "o1", [(rel.dir, rel.src)])
    try:
        cfg = agent_config(tmp_path, [(f"127.0.0.1:{port}", fp)], rel.dir, extra='rate_limit = "4MiB"')
        t0 = time.monotonic()
        run_agent(cfg)
        took = time.monotonic() - t0
    finally:
        origin.kill(signal.SIGTERM)
    store_files_match(cfg, rel)
    # 12 MiB at 4 MiB/s with a 1 MiB burst cannot take less than 2.75 s; uncapped it takes ~0.2 s
    assert took >= 2.5, f"12 MiB arrived in {took:.2f} s despite a 4 MiB/s cap"
    s = status(cfg)
    assert s["releases"][0]["complete"] and s["eta_secs"] == 0.0
    assert s["origins"][0]["bytes"] == 12 * MiB
