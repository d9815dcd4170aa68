"""Prewarm jobs, end to end with real processes: an origin queues a job for a device, the box
dials out over QUIC with its device key, takes the job (or refuses it and says why), fills, and
reports back; jobs survive an agent restart; the staff API refuses requests without the token."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import WAIT, Publisher, make_tree, next_snapshot, popseed_path, publish, run, wait_until
from test_fetch_origin import Proc, agent_ports, present_pieces, start_origin, store_files_match

MiB = 1 << 20
ADMIN_TOKEN = "origin-admin-token-0123456789"
STAFF_TOKEN = "staff-token-abcdefghijklmnop"


def keypair(d: Path, name: str) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    out = run("keygen", "--out", d / name).stdout
    fields = dict(re.findall(r"^(\w[\w ]*?):\s+(\S+)$", out, re.M))
    return {"key": d / f"{name}.key", "pub": d / f"{name}.pub", "fingerprint": fields["fingerprint"], "text": fields["key"]}


def http(method: str, url: str, token: str | None = None, body=None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            raw = r.read()
            if "json" not in r.headers.get("Content-Type", ""):
                return r.status, raw.decode(errors="replace")
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except json.JSONDecodeError:
            return e.code, raw.decode(errors="replace")


def box_config(d: Path, trusted: list[str], origins=()) -> Path:
    """agent.toml of a box; its management API on port 0 (`start_box` reads the port it got)."""
    d.mkdir(parents=True, exist_ok=True)
    lines = [f"trusted_keys = {json.dumps(trusted)}", "[store]", 'dir = "store"', 'min_free = "64MiB"',
             "[fetch]", 'backoff_max = "1s"',
             "[control]", 'listen = "127.0.0.1:0"', f'staff_token = "{STAFF_TOKEN}"',
             'device_key = "device.key"', f'device_name = "{d.name}"', ""]
    for i, (addr, fp) in enumerate(origins):
        lines += ["[[origins]]", f'name = "o{i}"', f'address = "{addr}"', f'fingerprint = "{fp}"', ""]
    cfg = d / "agent.toml"
    cfg.write_text("\n".join(lines))
    return cfg


# The agent reports its device fingerprint twice: "device fingerprint: FP (NAME)" on stderr, which
# it writes in several pieces (so a log line from another thread can land between them and break
# that line), and in its "device identity" log line (one write). Either will do.
FINGERPRINT_LINE = (r"^device fingerprint: (SHA256:\S+) \("
                    r"|device identity.*?fingerprint(?:\x1b\[[0-9;]*m)*=(?:\x1b\[[0-9;]*m)*(SHA256:[^\s\x1b]+)")


def start_box(cfg: Path, name="agent") -> Proc:
    """Starts the agent and waits until it reported its device fingerprint (`p.fingerprint`; a
    complete line) and its management API listens (`p.mgmt`, the URL)."""
    p = Proc(["agent", "--config", cfg, "--log", "info"], cfg.parent / f"{name}.log")
    m = p.wait_line(FINGERPRINT_LINE, what="the agent's device fingerprint")
    p.fingerprint = m.group(1) or m.group(2)
    p.mgmt = f"http://127.0.0.1:{agent_ports(p, mgmt=True)['mgmt']}"
    return p


class Origin:
    def __init__(self, tmp: Path, releases, devices: list[str], extra=(), listen_ip="127.0.0.1"):
        (tmp / "devices.txt").write_text("# allowed boxes\n" + "".join(f"{fp} box{i}\n" for i, fp in enumerate(devices)))
        (tmp / "admin.token").write_text(ADMIN_TOKEN + "\n")
        self.stats = tmp / "origin-stats.json"
        self.proc, self.fp, self.port = start_origin(
            tmp, "origin", releases,
            extra=["--devices", tmp / "devices.txt", "--admin", "127.0.0.1:0",
                   "--admin-token-file", tmp / "admin.token", "--stats-file", self.stats, *extra], listen_ip=listen_ip)
        # port 0: the origin prints the address it bound (before its certificate line)
        self.admin = self.proc.wait_line(r"^admin API on (http://\S+)$").group(1)
        self.addr = f"127.0.0.1:{self.port}"

    def job(self, job_id: str) -> dict:
        code, body = http("GET", f"{self.admin}/admin/jobs/{job_id}", ADMIN_TOKEN)
        assert code == 200, body
        return body

    def device_linked(self, fp: str) -> bool:
        code, body = http("GET", f"{self.admin}/admin/devices", ADMIN_TOKEN)
        return code == 200 and any(d["fingerprint"] == fp and d["connected"] for d in body)

    def pieces_sent(self, infohash: str) -> dict:
        """{piece: times sent} counting everything the origin sent before this call (a snapshot
        of its stats file taken after the call began)."""
        doc = next_snapshot(self.stats, proc=self.proc.p)
        return {int(k): v for k, v in doc["per_piece"].get(infohash, {}).items()}


def push(origin: Origin, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(popseed_path()), "job", "push", "--origin", origin.admin, "--token", ADMIN_TOKEN, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def publishers(tmp_path):
    return keypair(tmp_path / "keys", "trusted"), keypair(tmp_path / "keys", "stranger")


def test_origin_push_fill_report_and_refusal(tmp_path, publishers):
    trusted, stranger = publishers
    good_src = make_tree(tmp_path / "src" / "keynote", {"video/keynote.mp4": 24 * MiB + 77, "slides.pdf": 3 * MiB})
    signer = Publisher(key=trusted["key"], pub=trusted["pub"], fingerprint=trusted["fingerprint"])
    good = publish(good_src, tmp_path / "rel-good", signer, "--critical", "*.mp4:4MiB", "--piece-size", "256KiB")
    bad_src = make_tree(tmp_path / "src" / "rogue", {"rogue.bin": 2 * MiB})
    run("publish", bad_src, "--key", stranger["key"], "--out", tmp_path / "rel-bad")
    bad_ih = json.loads((tmp_path / "rel-bad" / "manifest.json").read_text())["manifest"]["infohash"]

    device = keypair(tmp_path / "box", "device")
    origin = Origin(tmp_path, [(good.dir, good_src), (tmp_path / "rel-bad", bad_src)], [device["fingerprint"]])
    cfg = box_config(tmp_path / "box", [trusted["text"]], [(origin.addr, origin.fp)])
    box = start_box(cfg)
    try:
        assert box.fingerprint == device["fingerprint"], "the agent prints the fingerprint the origin allows"
        wait_until(lambda: origin.device_linked(device["fingerprint"]), WAIT, "the box to dial out to the origin")

        r = push(origin, "--device", device["fingerprint"], "--release", good.dir, "--pin", "--deadline", "1h", "--name", "keynote",
                 "--id", "keynote-1", "--wait", "--timeout", "150s")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "job keynote-1 ready on 1 device" in r.stdout, r.stdout
        store_files_match(cfg, good)
        view = origin.job("keynote-1")
        (dev,) = view["devices"]
        assert (dev["delivery"], dev["report"]["state"], dev["connected"]) == ("accepted", "ready", True), view
        assert dev["report"]["bytes_done"] == dev["report"]["bytes_total"] > 27 * MiB

        # a release signed by a key the box was not provisioned with: refused, with the reason, nothing fetched
        r = push(origin, "--device", device["fingerprint"], "--release", tmp_path / "rel-bad", "--id", "rogue-1", "--wait", "--timeout", "60s")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "refused" in r.stderr and stranger["fingerprint"] in r.stderr, r.stderr
        (dev,) = origin.job("rogue-1")["devices"]
        assert dev["delivery"] == "refused" and stranger["fingerprint"] in dev["reason"], dev

        def box_job(job_id):
            code, jobs = http("GET", f"{box.mgmt}/api/jobs", STAFF_TOKEN)
            assert code == 200, jobs
            return next((j for j in jobs if j["id"] == job_id), None)

        # the box's own record of the job (the origin may have heard of the refusal first)
        final = ("failed", "expired", "cancelled", "ready")
        rogue = wait_until(lambda: (j := box_job("rogue-1")) and j["state"] in final and j, WAIT, "the box to settle rogue-1")
        assert rogue["state"] == "failed" and rogue["reason"].startswith("refused: "), rogue
        # the origin's counters as of now, after the refusal: it sent nothing of that release
        assert origin.pieces_sent(bad_ih) == {}, "no piece of a refused release was fetched"
        assert not (cfg.parent / "store" / "releases" / bad_ih).exists()
        code, ready = http("GET", f"{box.mgmt}/readyz")
        assert code == 200 and "keynote" in ready, ready
    finally:
        box.kill(signal.SIGTERM)
        origin.proc.kill(signal.SIGTERM)


def test_restart_mid_job_resumes(tmp_path, publishers):
    trusted, _ = publishers
    src = make_tree(tmp_path / "src" / "festival", {"a.bin": 40 * MiB, "b.bin": 8 * MiB + 5})
    run("publish", src, "--key", trusted["key"], "--out", tmp_path / "rel", "--piece-size", "256KiB")
    manifest = json.loads((tmp_path / "rel" / "manifest.json").read_text())["manifest"]
    device = keypair(tmp_path / "box", "device")
    origin = Origin(tmp_path, [(tmp_path / "rel", src)], [device["fingerprint"]], extra=["--rate-limit", "6MiB"])
    cfg = box_config(tmp_path / "box", [trusted["text"]], [(origin.addr, origin.fp)])
    box = start_box(cfg)
    try:
        wait_until(lambda: origin.device_linked(device["fingerprint"]), WAIT, "the box to dial out")
        r = push(origin, "--device", device["fingerprint"], "--release", tmp_path / "rel", "--pin", "--id", "fest")
        assert r.returncode == 0, r.stderr

        def progress():
            rep = origin.job("fest")["devices"][0]["report"]
            return rep and rep["state"] == "filling" and 0.2 < rep["bytes_done"] / rep["bytes_total"] < 0.8 and rep

        before = wait_until(progress, WAIT, "the job to be part-way")
        box.kill(signal.SIGKILL)
        stored = present_pieces(cfg, manifest["infohash"])
        assert 0 < len(stored) < manifest["piece_count"], f"{len(stored)} pieces stored at the kill: not part-way"
        box = start_box(cfg, "agent2")
        box.wait_line(r"resuming unfinished jobs", what="the restarted agent to resume the job")
        wait_until(lambda: origin.job("fest")["devices"][0]["report"]["state"] == "ready", 120, "the resumed job to be ready")
        sent = origin.pieces_sent(manifest["infohash"])
        twice = {int(i) for i, v in sent.items() if v > 1}
        # pieces in flight at the kill may come twice, never one the store already held
        assert stored and not twice & stored, f"{len(twice & stored)} pieces stored before the kill were sent again"
        assert before["bytes_done"] > 0
    finally:
        box.kill(signal.SIGTERM)
        origin.proc.kill(signal.SIGTERM)
    rel = type("R", (), {"manifest": manifest, "dir": tmp_path / "rel"})
    store_files_match(cfg, rel)


def test_staff_api_needs_the_token(tmp_path, publishers):
    trusted, _ = publishers
    src = make_tree(tmp_path / "src" / "small", {"x.bin": 1 * MiB})
    run("publish", src, "--key", trusted["key"], "--out", tmp_path / "rel")
    cfg = box_config(tmp_path / "box", [trusted["text"]])
    box = start_box(cfg)
    base = box.mgmt
    try:
        import base64
        spec = {"id": "s1", "release": {"kind": "inline",
                "manifest_b64": base64.b64encode((tmp_path / "rel" / "manifest.json").read_bytes()).decode(),
                "torrent_b64": base64.b64encode((tmp_path / "rel" / "release.torrent").read_bytes()).decode()}}
        for token in (None, "wrong-token-wrong-token", STAFF_TOKEN[:-1]):
            assert http("POST", f"{base}/api/jobs", token, spec)[0] == 401
            assert http("GET", f"{base}/api/jobs", token)[0] == 401
        code, jobs = http("GET", f"{base}/api/jobs", STAFF_TOKEN)
        assert (code, jobs) == (200, []), "the refused requests changed nothing"
        code, job = http("POST", f"{base}/api/jobs", STAFF_TOKEN, spec)
        assert code == 201 and job["id"] == "s1", job
        assert http("DELETE", f"{base}/api/jobs/s1", "nope-nope-nope-nope")[0] == 401
        assert http("GET", f"{base}/api/jobs/s1", STAFF_TOKEN)[1]["state"] != "cancelled"
        code, job = http("DELETE", f"{base}/api/jobs/s1", STAFF_TOKEN)
        assert code == 200 and job["state"] == "cancelled", job
        # bad input is a clear 4xx, never a crash
        code, err = http("POST", f"{base}/api/jobs", STAFF_TOKEN, {"release": {"kind": "inline", "manifest_b64": "!!", "torrent_b64": ""}})
        assert code == 422 and err["error"] == "refused", err
        code, err = http("POST", f"{base}/api/jobs", STAFF_TOKEN, {"nonsense": 1})
        assert code in (400, 422), err
        # the CLI goes through the same API
        r = subprocess.run([str(popseed_path()), "job", "push", "--appliance", base, "--token", STAFF_TOKEN, "--release", tmp_path / "rel", "--id", "s2"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "job s2 queued" in r.stdout, r.stdout + r.stderr
        r = subprocess.run([str(popseed_path()), "job", "list", "--appliance", base, "--token", "wrong-token-000000"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "401" in r.stderr, r.stderr
        assert box.alive()
    finally:
        box.kill(signal.SIGTERM)
