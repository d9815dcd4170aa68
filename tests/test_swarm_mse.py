"""`popseed seed` answers MSE/PE (encrypted) handshakes, as real clients open them by default.

libtorrent with its default settings opens with MSE and is served after plaintext is selected
(no failed first connection, no reconnect); libtorrent forced to RC4 downloads over an RC4
stream. Both results must be byte-identical to the published source, and the box's debug log
must name the negotiated mode of each connection.
"""

from __future__ import annotations

import re
import time

import pytest

from conftest import (
    import_libtorrent,
    lt_add,
    lt_session,
    make_tree,
    publish,
    start_seed,
    store_import,
    tree_digests,
)

MiB = 1 << 20
FILES = {"media/talk.mp4": 20 * MiB + 4321, "slides.pdf": 3 * MiB + 17}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    base = tmp_path_factory.mktemp("mse-rel")
    return publish(make_tree(base / "mse-pack", FILES, seed="mse"), base / "release", keys_dir=base / "keys")


@pytest.fixture(scope="module")
def seed(release, tmp_path_factory):
    work = tmp_path_factory.mktemp("mse-seed")
    store_import(work / "store", release)
    s = start_seed(work / "store", work, "--no-tracker", log_filter="popseed_swarm=debug")
    yield s
    log = s.stop()
    assert "panicked" not in log, log[-4000:]


def download(seed, release, tmp_path, **settings):
    lt = import_libtorrent()
    ih = next(iter(seed.releases))
    ses = lt_session(**settings)
    h = lt_add(ses, seed.releases[ih]["torrent"], tmp_path)
    h.connect_peer(seed.peer)
    deadline = time.monotonic() + 120
    while not h.status().is_seeding:
        if time.monotonic() > deadline:
            st = h.status()
            pytest.fail(f"libtorrent did not finish in 120 s: progress {st.progress:.3f}, peers {st.num_peers}")
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            if isinstance(a, (lt.file_error_alert, lt.torrent_error_alert)):
                pytest.fail(f"libtorrent: {a.message()}", pytrace=False)
    ses.remove_torrent(h)
    del ses
    assert tree_digests(tmp_path / release.src.name) == tree_digests(release.src)


def attached_lines(seed) -> list[str]:
    """The complete "peer attached" log lines so far. The box logs one as it handles a
    connection's handshake, before that connection can ask for a block, so a finished download's
    connection has its line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", seed.log_text())  # the log may carry ANSI colours
    return [l for l in text.splitlines() if "peer attached" in l]


def test_default_libtorrent_opens_with_mse_and_gets_plaintext(seed, release, tmp_path):
    before = len(attached_lines(seed))
    download(seed, release, tmp_path)  # libtorrent's defaults: outgoing encryption enabled
    new = attached_lines(seed)[before:]
    assert len(new) == 1, f"one connection, no plaintext retry: {new}"
    assert "mse=true" in new[0] and "rc4=false" in new[0], new[0]
    assert "not_bittorrent" not in seed.log_text()


def test_libtorrent_forced_to_rc4_downloads_over_rc4(seed, release, tmp_path):
    before = len(attached_lines(seed))
    # enc_policy 0 = pe_forced, enc_level 2 = pe_rc4
    download(seed, release, tmp_path, out_enc_policy=0, in_enc_policy=0, allowed_enc_level=2, prefer_rc4=True)
    new = attached_lines(seed)[before:]
    assert len(new) == 1, new
    assert "mse=true" in new[0] and "rc4=true" in new[0], new[0]
