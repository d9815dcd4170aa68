"""`popseed publish` output checked by a real client (libtorrent 2.0, Debian's python3-libtorrent),
plus `popseed verify` and the CLI's exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from conftest import (
    EXIT_FAILURE,
    EXIT_USAGE,
    assert_clean_error,
    expected_pieces,
    files_in_order,
    flip_byte,
    import_libtorrent,
    keygen,
    lt_add,
    lt_session,
    lt_wait_checked,
    make_tree,
    publish,
    run,
)

lt = import_libtorrent()

MiB = 1 << 20

# Sizes deliberately not multiples of the piece sizes used, except aaa.bin (exactly 2 x 64 KiB),
# plus an empty file and non-ASCII names.
MULTI = {
    "readme.txt": 1234,
    "aaa.bin": 2 * 65536,
    "video/main.mp4": 5 * MiB + 12345,
    "video/subs/en.vtt": 70001,
    "data/empty.bin": 0,
    "café/ünïcode.txt": 3000,
}
TREE_NAME = "show-2024"


def make_multi(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src" / TREE_NAME, MULTI, seed="multi")


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def piece_hashes(paths: list[Path], piece_length: int) -> list[bytes]:
    """SHA-1 of each piece over the concatenation of `paths` (reference implementation)."""
    out, buf = [], bytearray()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                buf += chunk
                while len(buf) >= piece_length:
                    out.append(hashlib.sha1(buf[:piece_length]).digest())
                    del buf[:piece_length]
    if buf:
        out.append(hashlib.sha1(buf).digest())
    return out


def lt_files(ti) -> list[tuple[str, int]]:
    fs = ti.files()
    out = []
    for i in range(fs.num_files()):
        assert not (fs.file_flags(i) & lt.file_storage.flag_pad_file), f"pad file in torrent: {fs.file_path(i)}"
        out.append((fs.file_path(i).replace(os.sep, "/"), fs.file_size(i)))
    return out


def check_against_libtorrent(rel, want_files: list[tuple[str, int]], data_paths: list[Path], single: bool):
    """The .torrent as libtorrent reads it agrees with the manifest and with the source data."""
    m = rel.manifest
    ti = lt.torrent_info(str(rel.torrent))

    # identity: v1-only, infohash as in the manifest (and as in the magnet link)
    ih = ti.info_hashes()
    assert ih.has_v1() and not ih.has_v2(), "expected a BitTorrent v1-only torrent"
    assert str(ih.v1) == m["infohash"] == str(ti.info_hash())
    assert ti.name() == m["torrent_name"]
    mag = lt.parse_magnet_uri(rel.magnet)
    assert str(mag.info_hashes.v1) == m["infohash"] and mag.name == m["torrent_name"], rel.magnet

    # geometry
    assert ti.piece_length() == m["piece_length"]
    assert ti.num_pieces() == m["piece_count"]
    assert ti.total_size() == m["total_size"] == sum(s for _, s in want_files)
    assert m["piece_count"] == expected_pieces((s for _, s in want_files), m["piece_length"])
    pl = m["piece_length"]
    assert pl & (pl - 1) == 0 and 16384 <= pl <= 64 * MiB, f"odd piece length {pl}"

    # files: same order, paths, sizes; libtorrent prefixes multi-file paths with the torrent name
    got = lt_files(ti)
    if single:
        assert got == [(m["torrent_name"], want_files[0][1])]
    else:
        prefix = m["torrent_name"] + "/"
        assert all(p.startswith(prefix) for p, _ in got), got
        got = [(p[len(prefix):], s) for p, s in got]
    manifest_files = [(f["path"], f["size"]) for f in m["files"]]
    assert manifest_files == want_files
    if not single:
        assert got == want_files
    for f, p in zip(m["files"], data_paths):
        assert f["sha256"] == sha256_file(p), f["path"]

    # piece hashes: libtorrent's view equals an independent SHA-1 over the data
    ref = piece_hashes(data_paths, pl)
    assert len(ref) == ti.num_pieces()
    for i, h in enumerate(ref):
        assert bytes(ti.hash_for_piece(i)) == h, f"piece {i} hash differs"
    return ti


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("piece_size", [None, 65536, 16384], ids=["auto", "64KiB", "16KiB"])
def test_multi_file_torrent_matches_manifest(tmp_path, publisher, piece_size):
    src = make_multi(tmp_path)
    extra = ["--piece-size", piece_size] if piece_size else []
    rel = publish(src, tmp_path / "release", publisher, *extra, "--version", "1.2.3")
    if piece_size:
        assert rel.manifest["piece_length"] == piece_size
    assert rel.manifest["version"] == "1.2.3"
    assert rel.manifest["torrent_name"] == TREE_NAME
    order = files_in_order(MULTI)
    check_against_libtorrent(rel, order, [src / p for p, _ in order], single=False)


@pytest.mark.parametrize("size", [4 * 32768, 4 * 32768 + 1, 1], ids=["exact-multiple", "one-over", "one-byte"])
def test_single_file_torrent_matches_manifest(tmp_path, publisher, size):
    src = make_tree(tmp_path / "src", {"disk image.iso": size}, seed="single") / "disk image.iso"
    rel = publish(src, tmp_path / "release", publisher, "--piece-size", 32768)
    assert rel.manifest["torrent_name"] == "disk image.iso"
    assert rel.manifest["piece_count"] == -(-size // 32768)
    check_against_libtorrent(rel, [("disk image.iso", size)], [src], single=True)
    # a single-file release's data is the file itself, or the folder holding it
    run("verify", rel.dir, "--pubkey", rel.publisher.pub, "--data", src)
    run("verify", rel.dir, "--pubkey", rel.publisher.pub, "--data", src.parent)


def test_magnet_and_web_seeds_parse_in_libtorrent(tmp_path, publisher):
    src = make_tree(tmp_path / "src" / "pkg", {"a.bin": 100_000, "b/c.txt": 10}, seed="magnet")
    ws = "http://127.0.0.1:8080/seed/"
    rel = publish(src, tmp_path / "release", publisher, "--web-seed", ws, "--name", "pkg")
    ti = lt.torrent_info(str(rel.torrent))
    assert [w["url"] for w in ti.web_seeds()] == [ws]
    assert rel.manifest.get("web_seeds") == [ws]
    atp = lt.parse_magnet_uri(rel.magnet)
    assert str(atp.info_hashes.v1) == rel.manifest["infohash"]
    assert atp.name == rel.manifest["torrent_name"] == "pkg"
    assert list(atp.url_seeds) == [ws], "magnet link should carry the web seed (ws=)"


def test_keygen_writes_private_key(tmp_path):
    pubr = keygen(tmp_path / "k")
    assert stat.S_IMODE(pubr.key.stat().st_mode) == 0o600
    assert pubr.fingerprint, "keygen printed no fingerprint"
    assert pubr.pub.read_bytes() != pubr.key.read_bytes()


# --------------------------------------------------------------------------- libtorrent seeds it


@pytest.mark.parametrize("kind", ["multi", "single"])
def test_libtorrent_rechecks_to_seeding(tmp_path, publisher, kind):
    """libtorrent hashes the data in place against popseed's .torrent and becomes a seed; after a
    one-byte change it is missing exactly the piece holding that byte."""
    if kind == "multi":
        src = make_multi(tmp_path)
        order = files_in_order(MULTI)
        rel = publish(src, tmp_path / "release", publisher, "--piece-size", 65536)
        victim_rel, victim_off = "video/main.mp4", 3_000_000
        victim = src / victim_rel
        before = sum(s for p, s in order[: [p for p, _ in order].index(victim_rel)])
    else:
        src = make_tree(tmp_path / "src", {"image.bin": 3 * MiB + 777}, seed="seed1") / "image.bin"
        rel = publish(src, tmp_path / "release", publisher, "--piece-size", 65536)
        victim, victim_off, before = src, 2 * MiB + 5, 0
    n = rel.manifest["piece_count"]

    ses = lt_session()
    h = lt_add(ses, rel.torrent, rel.data_parent)
    st = lt_wait_checked(ses, h)
    assert st.num_pieces == n and st.progress == 1.0, f"libtorrent has {st.num_pieces}/{n} pieces after checking"
    assert st.is_seeding, f"libtorrent is not seeding: state {st.state}"
    assert st.errc.value() == 0, st.errc.message()

    flip_byte(victim, victim_off)
    bad_piece = (before + victim_off) // rel.manifest["piece_length"]
    ses.pop_alerts()
    h.force_recheck()
    st = lt_wait_checked(ses, h)
    assert st.num_pieces == n - 1, f"after corrupting one byte libtorrent has {st.num_pieces}/{n} pieces"
    assert not h.have_piece(bad_piece), f"piece {bad_piece} should fail its hash check"
    assert not st.is_seeding
    ses.remove_torrent(h)


# --------------------------------------------------------------------------- popseed verify


@pytest.fixture
def good_release(tmp_path, publisher):
    src = make_multi(tmp_path)
    return publish(src, tmp_path / "release", publisher, "--piece-size", 65536, "--version", "7")


def test_verify_good_release(good_release):
    r = good_release
    run("verify", r.dir)
    run("verify", r.dir, "--pubkey", r.publisher.pub)
    run("verify", r.dir, "--pubkey", r.publisher.pub, "--data", r.src)


def test_verify_modified_data_fails(good_release):
    r = good_release
    flip_byte(r.src / "video/subs/en.vtt", 40000)
    assert_clean_error(run("verify", r.dir, "--pubkey", r.publisher.pub, "--data", r.src, check=False))
    # the release itself is still fine
    run("verify", r.dir, "--pubkey", r.publisher.pub)


def test_verify_truncated_or_missing_data_fails(good_release):
    r = good_release
    p = r.src / "readme.txt"
    p.write_bytes(p.read_bytes()[:-1])
    assert_clean_error(run("verify", r.dir, "--data", r.src, check=False))
    p.unlink()
    assert_clean_error(run("verify", r.dir, "--data", r.src, check=False))


def test_verify_tampered_manifest_fails(good_release):
    r = good_release
    doc = json.loads(r.manifest_path.read_text())
    assert doc["manifest"]["version"] == "7"
    doc["manifest"]["version"] = "8"
    r.manifest_path.write_text(json.dumps(doc, indent=2))
    assert_clean_error(run("verify", r.dir, check=False))
    assert_clean_error(run("verify", r.dir, "--pubkey", r.publisher.pub, "--data", r.src, check=False))


def test_verify_unsigned_manifest_fails(good_release):
    r = good_release
    doc = json.loads(r.manifest_path.read_text())
    del doc["signature"]
    r.manifest_path.write_text(json.dumps(doc))
    assert_clean_error(run("verify", r.dir, check=False))


def test_verify_wrong_key_fails(tmp_path, good_release):
    other = keygen(tmp_path / "other")
    assert_clean_error(run("verify", good_release.dir, "--pubkey", other.pub, check=False))


def test_verify_swapped_torrent_fails(tmp_path, good_release):
    r = good_release
    src2 = make_tree(tmp_path / "src2" / TREE_NAME, {**MULTI, "readme.txt": 1235}, seed="multi")
    r2 = publish(src2, tmp_path / "release2", r.publisher, "--piece-size", 65536, "--version", "7")
    (r.dir / "release.torrent").write_bytes(r2.torrent.read_bytes())
    assert_clean_error(run("verify", r.dir, check=False))


def test_verify_missing_release_fails(tmp_path):
    assert_clean_error(run("verify", tmp_path / "nope", check=False))


# --------------------------------------------------------------------------- publish errors, usage


def test_publish_empty_directory_fails_cleanly(tmp_path, publisher):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "release"
    proc = run("publish", empty, "--key", publisher.key, "--out", out, check=False, env={"RUST_LOG": "warn"})
    err = assert_clean_error(proc, EXIT_FAILURE)
    assert len(err.splitlines()) == 1, f"expected a one-line error, got:\n{proc.stderr}"
    assert not (out / "release.torrent").exists() and not (out / "manifest.json").exists()


def test_publish_only_empty_files_fails_cleanly(tmp_path, publisher):
    src = make_tree(tmp_path / "zeros", {"a": 0, "b/c": 0})
    proc = run("publish", src, "--key", publisher.key, "--out", tmp_path / "release", check=False)
    assert_clean_error(proc, EXIT_FAILURE)


def test_publish_missing_source_fails_cleanly(tmp_path, publisher):
    proc = run("publish", tmp_path / "missing", "--key", publisher.key, "--out", tmp_path / "r", check=False)
    assert_clean_error(proc, EXIT_FAILURE)


def test_publish_bad_piece_size_is_refused(tmp_path, publisher):
    src = make_tree(tmp_path / "s", {"a": 10})
    proc = run("publish", src, "--key", publisher.key, "--out", tmp_path / "r", "--piece-size", 1000, check=False)
    assert proc.returncode in (EXIT_FAILURE, EXIT_USAGE), proc
    assert_clean_error(proc, proc.returncode)


@pytest.mark.parametrize(
    "args",
    [["publish"], ["verify"], ["no-such-command"], ["publish", ".", "--no-such-flag"]],
    ids=["publish-no-args", "verify-no-args", "unknown-command", "unknown-flag"],
)
def test_usage_errors_exit_2(args):
    assert_clean_error(run(*args, check=False), EXIT_USAGE)
