"""`popseed firstboot` and the setup page, with the real binary.

firstboot runs with temp --state/--out/--hw-dir (and --no-format, or a regular file as the data
device: mkfs.ext4 -F works on one); the rendered nftables.conf is checked with `nft -c -f`
(check mode, inside a fresh network namespace when possible), hostapd.conf with hostapd's own
config parser (it parses the file before it touches the interface, which does not exist here).
Then `popseed agent --setup-from status.json` serves the setup page on loopback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, WAIT, free_port, popseed_path, run, wait_until

# An interface that does not exist, so hostapd never starts a real AP here.
AP_IF = "pstest0"
FP = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

PROFILE = f"""
board = "testboard"
name = "Test board"
arch = "x86_64"
match = ["Popseed Test Machine"]

[wifi]
interface = "{AP_IF}"
chipset = "none (tests)"
max_clients = 40
bands = ["2.4GHz", "5GHz"]

[storage]
data_device = "/nonexistent/popseed-data"

[uplink]
interface = "pstestup0"
"""


def good_file(pubkey: str, http_port: int = 8080) -> str:
    return f"""venue = "Hall B, FooConf 2026"
trusted_keys = ["{pubkey}"]

[wifi]
ssid = "FooConf Downloads"
passphrase = "correct horse battery"
security = "wpa2-wpa3"
country = "DE"
channel = 36

[portal]
address = "10.42.0.1/24"

[management]
listen = "127.0.0.1:{http_port}"
staff_token = "0123456789abcdef0123"

[[origins]]
name = "fooconf-origin"
address = "203.0.113.10:4433"
fingerprint = "{FP}"

[uplink]
mode = "dhcp"
"""


@pytest.fixture
def box(tmp_path):
    hw = tmp_path / "hw"
    hw.mkdir()
    (hw / "testboard.toml").write_text(PROFILE)
    shutil.copy(REPO / "hw" / "profile-example.toml", hw / "profile-example.toml")
    (tmp_path / "boot").mkdir()
    return tmp_path


def firstboot(box: Path, *extra, check=True):
    return run(
        "firstboot",
        "--provision", box / "boot" / "popseed.toml",
        "--hw-dir", box / "hw",
        "--board", "testboard",
        "--state", box / "state",
        "--out", box / "out",
        *extra,
        check=check,
    )


def kv(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        k, sep, v = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        assert k not in out, f"{path.name}: duplicate key {k}"
        out[k] = v
    return out


def dnsmasq_options(path: Path) -> dict[str, list[str]]:
    """dnsmasq's `option[=value]` lines (options may repeat; flags have no value)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def printed_fingerprint(stdout: str) -> str:
    m = re.search(r"^device fingerprint: (SHA256:\S+)$", stdout, re.M)
    assert m, f"no fingerprint line in:\n{stdout}"
    return m.group(1)


def key_fingerprint(state: Path) -> str:
    # `popseed verify --pubkey` is not a fingerprint printer; derive it as keygen does
    import base64
    import hashlib

    pem = (state / "device.pub").read_text()
    der = base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----")))
    raw = der[-32:]  # SPKI for ed25519 ends with the 32 raw key bytes
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def nft_check(conf: Path) -> subprocess.CompletedProcess:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    cmd = [nft, "-c", "-f", str(conf)]
    if shutil.which("unshare"):
        cmd = ["unshare", "--net", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def hostapd_parse(conf: Path) -> str:
    """hostapd's config parser's verdict: its output up to the (expected) interface failure."""
    hostapd = shutil.which("hostapd") or "/usr/sbin/hostapd"
    proc = subprocess.run([hostapd, "-dd", str(conf)], capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def test_good_file_renders_normal_mode(box):
    key_line = [l for l in run("keygen", "--out", box / "keys2" / "p").stdout.splitlines() if "ed25519:" in l]
    assert key_line, "keygen prints the ed25519: key line"
    ed_key = re.search(r"ed25519:[A-Za-z0-9_-]+", key_line[0]).group(0)
    (box / "boot" / "popseed.toml").write_text(good_file(ed_key))

    proc = firstboot(box, "--no-format")
    out = box / "out"
    fp = printed_fingerprint(proc.stdout)
    assert fp == key_fingerprint(box / "state"), proc.stdout
    assert (box / "state" / "device.key").stat().st_mode & 0o777 == 0o600

    status = json.loads((out / "status.json").read_text())
    assert status["mode"] == "normal", status
    assert status["errors"] == []
    assert status["device_fingerprint"] == fp
    assert status["board"] == "testboard"

    h = kv(out / "hostapd.conf")
    assert h["interface"] == AP_IF
    assert h["ssid2"] == '"FooConf Downloads"'
    assert (h["hw_mode"], h["channel"], h["country_code"]) == ("a", "36", "DE")
    assert h["wpa_key_mgmt"] == "WPA-PSK SAE" and h["ieee80211w"] == "1"
    assert h["wpa_passphrase"] == h["sae_password"] == "correct horse battery"
    assert h["max_num_sta"] == "40"
    verdict = hostapd_parse(out / "hostapd.conf")
    assert "errors found in configuration file" not in verdict and "unknown configuration item" not in verdict, verdict
    assert "Configuration file:" in verdict, verdict

    d = dnsmasq_options(out / "dnsmasq.conf")
    assert d["port"] == ["0"] and d["interface"] == [AP_IF]
    assert d["dhcp-range"] == ["10.42.0.10,10.42.0.250,255.255.255.0,2h"]
    assert sorted(d["dhcp-option"]) == ["option:dns-server,10.42.0.1", "option:router,10.42.0.1"]
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if Path(dnsmasq).exists():
        chk = subprocess.run([dnsmasq, "--test", f"--conf-file={out / 'dnsmasq.conf'}"], capture_output=True, text=True)
        assert chk.returncode == 0, chk.stderr

    nft = out / "nftables.conf"
    assert f'iifname "{AP_IF}" tcp dport 80 dnat ip to 10.42.0.1:8081' in nft.read_text()
    assert 'oifname "pstestup0" accept' in nft.read_text()
    chk = nft_check(nft)
    assert chk.returncode == 0, f"nft -c rejected nftables.conf:\n{chk.stderr}\n{nft.read_text()}"

    agent = (out / "agent.toml").read_text()
    assert 'staff_token = "0123456789abcdef0123"' in agent
    assert f'device_key = "{box / "state" / "device.key"}"' in agent
    assert "uplink.network" in [p.name for p in out.iterdir()]

    # a second boot keeps the key
    proc2 = firstboot(box, "--no-format")
    assert printed_fingerprint(proc2.stdout) == fp


def test_data_device_is_formatted_once(box):
    if not (shutil.which("mkfs.ext4") and shutil.which("blkid")):
        pytest.skip("needs e2fsprogs and blkid")
    dev = box / "data.img"
    subprocess.run(["truncate", "-s", "64M", str(dev)], check=True)
    firstboot(box, "--data-device", dev)
    probe = subprocess.run(["blkid", "-p", "-o", "export", str(dev)], capture_output=True, text=True)
    fields = dict(l.split("=", 1) for l in probe.stdout.split())
    assert fields.get("TYPE") == "ext4" and fields.get("LABEL") == "popseed-data", probe.stdout
    uuid = fields["UUID"]
    # a marker file written into the filesystem must survive the second boot
    marker = box / "marker"
    marker.write_text("keep me\n")
    subprocess.run(["debugfs", "-w", "-R", f"write {marker} marker", str(dev)], check=True, capture_output=True)
    proc = firstboot(box, "--data-device", dev)
    assert "not formatting" in proc.stdout, proc.stdout
    probe2 = subprocess.run(["blkid", "-p", "-o", "export", str(dev)], capture_output=True, text=True)
    assert f"UUID={uuid}" in probe2.stdout
    cat = subprocess.run(["debugfs", "-R", "cat marker", str(dev)], capture_output=True, text=True)
    assert "keep me" in cat.stdout, cat.stdout + cat.stderr


def bad_file(pubkey_ok: str, mgmt_port: int) -> str:
    return (
        good_file(pubkey_ok, mgmt_port)
        .replace('passphrase = "correct horse battery"', 'passphrase = "abcd"')
        .replace('country = "DE"', 'country = "XX"\nchanel = 6')
        .replace(FP, "00ff")
    )


def line_of(text: str, needle: str) -> int:
    for i, l in enumerate(text.splitlines(), 1):
        if needle in l:
            return i
    raise AssertionError(f"{needle!r} not in text")


def http(url: str, data: dict | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=WAIT) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_bad_file_gives_setup_mode_and_the_setup_page_fixes_it(box):
    ed_key = re.search(r"ed25519:[A-Za-z0-9_-]+", run("keygen", "--out", box / "keys" / "p").stdout).group(0)
    mgmt = free_port()
    bad = bad_file(ed_key, mgmt)
    prov = box / "boot" / "popseed.toml"
    prov.write_text(bad)

    proc = firstboot(box, "--no-format")  # exit 0 even so
    want = {
        "wifi.passphrase": line_of(bad, "passphrase ="),
        "wifi.country": line_of(bad, "country ="),
        "wifi.chanel": line_of(bad, "chanel"),
        "origins[0].fingerprint": line_of(bad, "fingerprint ="),
    }
    for key, line in want.items():
        assert re.search(rf"^popseed\.toml:{line}:\d+: {re.escape(key)}: ", proc.stdout, re.M), f"{key}\n{proc.stdout}"
    out = box / "out"
    status = json.loads((out / "status.json").read_text())
    assert status["mode"] == "setup"
    assert {(e["key"], e["line"]) for e in status["errors"]} == set(want.items())
    fp = printed_fingerprint(proc.stdout)
    h = kv(out / "hostapd.conf")
    ssid = h["ssid2"].strip('"')
    assert re.fullmatch(r"popseed-setup-[0-9a-f]{4}", ssid), ssid
    assert "wpa" not in h and "country_code" not in h
    assert "dhcp-option=option:router,10.42.0.1" in (out / "dnsmasq.conf").read_text()
    assert "masquerade" not in (out / "nftables.conf").read_text()
    assert not (out / "uplink.network").exists()
    chk = nft_check(out / "nftables.conf")
    assert chk.returncode == 0, chk.stderr
    assert status["device_fingerprint"] == fp

    # the setup page: agent in setup mode, portal HTTP on a free loopback port instead of 8081
    agent_toml = out / "agent.toml"
    portal_port, dns_port = free_port(), free_port()
    text = agent_toml.read_text()
    text = text.replace('http_listen = "0.0.0.0:8081"', f'http_listen = "127.0.0.1:{portal_port}"')
    text = text.replace('dns_listen = "0.0.0.0:5300"', f'dns_listen = "127.0.0.1:{dns_port}"')
    assert f"127.0.0.1:{mgmt}" in text, "the management address of the bad file is kept"
    agent_toml.write_text(text)
    # output to a file: pipes nobody reads would block the agent once they fill up
    log = box / "setup-agent.log"
    with open(log, "wb") as logf:
        p = subprocess.Popen(
            [str(popseed_path()), "agent", "--config", str(agent_toml), "--setup-from", str(out / "status.json")],
            stdout=logf, stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{mgmt}"

        def up(url):
            if p.poll() is not None:
                pytest.fail(f"the agent exited ({p.returncode}):\n{log.read_text(errors='replace')}", pytrace=False)
            try:
                return http(url)[0] == 200
            except OSError:
                return False

        wait_until(lambda: up(base + "/") and up(f"http://127.0.0.1:{portal_port}/"), WAIT,
                   "the setup page to answer on the management and portal addresses")
        code, page = http(base + "/")
        for key, line in want.items():
            assert f"popseed.toml:{line}:" in page and key in page, page
        # the current file is in the form, but none of its secrets: the network is open
        assert "ssid = &quot;" in page, "the current file is in the form"
        assert "0123456789abcdef0123" not in page, "the staff token must never be shown"
        assert 'passphrase = &quot;unchanged&quot;' in page and 'staff_token = &quot;unchanged&quot;' in page, page
        # the same page on the portal address, for any path (captive probes)
        code, page2 = http(f"http://127.0.0.1:{portal_port}/generate_204")
        assert code == 200 and "popseed setup" in page2

        # a still-bad file: nothing written, errors shown (the staff token of the bad file is valid: required)
        still_bad = bad.replace('passphrase = "abcd"', 'passphrase = "long enough now"')
        code, page = http(base + "/setup", {"config": still_bad, "token": "0123456789abcdef0123"})
        assert code == 422, page
        assert "wifi.country" in page and "wifi.passphrase" not in page, page
        assert prov.read_text() == bad, "nothing written"

        good = good_file(ed_key, mgmt)
        code, page = http(base + "/setup", {"config": good, "token": "wrong-token-wrong-token"})
        assert code == 403 and prov.read_text() == bad

        code, page = http(base + "/setup", {"config": good.replace("\n", "\r\n"), "token": "0123456789abcdef0123"})
        assert code == 200, page
        assert "Reboot to apply" in page
        assert prov.read_text() == good
    finally:
        p.terminate()
        try:
            p.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    # and the next boot is a normal one
    proc = firstboot(box, "--no-format")
    assert json.loads((out / "status.json").read_text())["mode"] == "normal", proc.stdout


def test_missing_file_and_unknown_board_still_come_up(box):
    proc = run(
        "firstboot",
        "--provision", box / "boot" / "missing.toml",
        "--hw-dir", box / "hw",
        "--board", "no-such-board",
        "--state", box / "state",
        "--out", box / "out",
        "--sys-root", box,
        "--no-format",
    )
    status = json.loads((box / "out" / "status.json").read_text())
    assert status["mode"] == "setup"
    assert "missing.toml" in status["errors"][0]["message"]
    # no file, so no staff token to ask for: a one-time setup code, on the console and next to
    # where the file belongs (the boot partition), never in status.json
    code = re.search(r"^setup code: ([2-9A-Z]{5}-[2-9A-Z]{5}) ", proc.stdout, re.M)
    assert code, proc.stdout
    assert code.group(1) in (box / "boot" / "popseed-setup-code.txt").read_text()
    assert code.group(1) not in (box / "out" / "status.json").read_text()
    assert oct((box / "state" / "setup-code").stat().st_mode & 0o777) == "0o600"
    assert status["board"] == "generic-x86_64"  # built in: the test hw dir has no generic profile
    assert any("no-such-board" in w for w in status["warnings"]), status
    assert "warning:" in proc.stdout


def test_a_stranger_cannot_provision_a_box_without_a_file(box):
    """No popseed.toml at all: the setup page saves only for the holder of the setup code."""
    ed_key = re.search(r"ed25519:[A-Za-z0-9_-]+", run("keygen", "--out", box / "keys" / "p").stdout).group(0)
    proc = firstboot(box, "--no-format")
    code = re.search(r"^setup code: (\S+) ", proc.stdout, re.M).group(1)
    out = box / "out"
    mgmt, portal_port, dns_port = free_port(), free_port(), free_port()
    text = (out / "agent.toml").read_text()
    text = re.sub(r'listen = "[0-9.]+:\d+"', f'listen = "127.0.0.1:{mgmt}"', text, count=1)
    text = text.replace('http_listen = "0.0.0.0:8081"', f'http_listen = "127.0.0.1:{portal_port}"')
    text = text.replace('dns_listen = "0.0.0.0:5300"', f'dns_listen = "127.0.0.1:{dns_port}"')
    (out / "agent.toml").write_text(text)
    log = box / "setup-agent.log"
    with open(log, "wb") as logf:
        p = subprocess.Popen(
            [str(popseed_path()), "agent", "--config", str(out / "agent.toml"), "--setup-from", str(out / "status.json")],
            stdout=logf, stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{mgmt}"

        def up():
            if p.poll() is not None:
                pytest.fail(f"the agent exited ({p.returncode}):\n{log.read_text(errors='replace')}", pytrace=False)
            try:
                return http(base + "/")[0] == 200
            except OSError:
                return False

        wait_until(up, WAIT, "the setup page")
        _, page = http(base + "/")
        assert code not in page and "Setup code" in page, page
        good = good_file(ed_key, mgmt)
        prov = box / "boot" / "popseed.toml"
        for guess in ["", "0123456789abcdef0123", code[:-1] + ("2" if code[-1] != "2" else "3")]:
            status, _ = http(base + "/setup", {"config": good, "token": guess})
            assert status == 403, guess
        assert not prov.exists(), "a stranger wrote nothing"
        status, page = http(base + "/setup", {"config": good, "token": code.lower()})
        assert status == 200, page
        assert prov.read_text() == good
        assert not (box / "boot" / "popseed-setup-code.txt").exists(), "the code is spent"
        status, _ = http(base + "/setup", {"config": good, "token": code})
        assert status == 403, "a spent code saves nothing more"
    finally:
        p.terminate()
        try:
            p.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_board_detected_from_dmi(box):
    dmi = box / "sys" / "class" / "dmi" / "id"
    dmi.mkdir(parents=True)
    (dmi / "product_name").write_text("Popseed Test Machine v2\n")
    run(
        "firstboot",
        "--provision", box / "boot" / "popseed.toml",
        "--hw-dir", box / "hw",
        "--state", box / "state",
        "--out", box / "out",
        "--sys-root", box,
        "--no-format",
    )
    status = json.loads((box / "out" / "status.json").read_text())
    assert (status["board"], status["board_picked_by"]) == ("testboard", "dmi")


def test_unwritable_out_exits_1(box):
    blocker = box / "blocker"
    blocker.write_text("a file, not a directory")
    proc = run(
        "firstboot",
        "--provision", box / "boot" / "popseed.toml",
        "--hw-dir", box / "hw",
        "--state", box / "state",
        "--out", blocker / "out",
        "--no-format",
        check=1,
    )
    assert "blocker" in proc.stderr
