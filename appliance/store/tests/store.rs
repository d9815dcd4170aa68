//! Store behaviour: verified puts, reads, reopen, removal, capacity and eviction.

// Test code: an unwrap that fails is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use popseed_core::{InfoHash, ManualClock, PieceIndex};

use popseed_release::hashing::piece_hash;
use popseed_store::{AddOptions, Capacity, Put, Store, StoreConfig, StoreError};

use common::{piece_from_source, release};

const PIECE: u64 = 16384;

fn open(dir: &std::path::Path, budget: Option<u64>) -> Store {
    Store::open(StoreConfig { dir: dir.to_path_buf(), capacity: Capacity { budget, min_free: 0 } }).unwrap()
}

#[test]
fn put_read_reopen() {
    let t = tempfile::tempdir().unwrap();
    let (r, src) = release(t.path(), "show", &[("a.bin", 40_000), ("d/b.bin", 30_001), ("empty", 0)], PIECE);
    let ih = r.infohash();
    let store_dir = t.path().join("store");
    {
        let s = open(&store_dir, None);
        s.add_release(&r, AddOptions::default()).unwrap();
        s.add_release(&r, AddOptions::default()).unwrap(); // idempotent
        let n = r.layout().piece_count();
        assert_eq!(n, 5);
        let p1 = piece_from_source(&r, &src, 1);

        // typed errors, nothing stored
        let mut bad = p1.clone();
        bad[7] ^= 0xff;
        assert!(matches!(
            s.put_piece(&ih, PieceIndex(1), &bad),
            Err(StoreError::HashMismatch { index: PieceIndex(1) })
        ));
        assert!(matches!(s.put_piece(&ih, PieceIndex(1), &p1[1..]), Err(StoreError::WrongLength { .. })));
        assert!(matches!(s.put_piece(&ih, PieceIndex(9), &p1), Err(StoreError::BadPieceIndex { .. })));
        assert!(matches!(s.put_piece(&InfoHash([1; 20]), PieceIndex(0), &p1), Err(StoreError::UnknownRelease(_))));
        assert!(!s.has_piece(&ih, PieceIndex(1)));
        assert!(matches!(s.read_piece(&ih, PieceIndex(1)), Err(StoreError::NotPresent { piece: PieceIndex(1) })));

        assert_eq!(s.put_piece(&ih, PieceIndex(1), &p1).unwrap(), Put::Stored);
        assert_eq!(s.put_piece(&ih, PieceIndex(1), &p1).unwrap(), Put::AlreadyPresent);
        assert_eq!(s.read_piece(&ih, PieceIndex(1)).unwrap(), p1);
        let mut block = vec![0u8; 100];
        s.read_piece_at(&ih, PieceIndex(1), 16000, &mut block).unwrap();
        assert_eq!(&block[..], &p1[16000..16100]);
        assert!(s.read_piece_at(&ih, PieceIndex(1), 16300, &mut block).is_err(), "past the end of the piece");
        // file a.bin bytes 16384..32768 are piece 1 only
        let mut buf = vec![0u8; 1000];
        s.read_file_at(&ih, 0, 20_000, &mut buf).unwrap();
        assert_eq!(&buf[..], &p1[20_000 - 16384..21_000 - 16384]);
        assert!(matches!(s.read_file_at(&ih, 0, 0, &mut buf), Err(StoreError::NotPresent { piece: PieceIndex(0) })));
        assert!(matches!(s.read_file_at(&ih, 0, 39_500, &mut buf), Err(StoreError::BadRange { .. })));
        assert_eq!(
            s.missing_for_file_range(&ih, 1, 0, 30_001).unwrap(),
            vec![PieceIndex(2), PieceIndex(3), PieceIndex(4)]
        );

        for i in 0..n {
            s.put_piece(&ih, PieceIndex(i), &piece_from_source(&r, &src, i)).unwrap();
        }
        assert!(s.bitfield(&ih).unwrap().is_complete());
    }
    // reopen: everything still present, files byte-identical to the source
    let s = open(&store_dir, None);
    let info = &s.releases()[0];
    assert_eq!((info.pieces_present, info.bytes_present), (5, 70_001));
    for (i, f) in r.layout().files.iter().enumerate() {
        let stored = std::fs::read(s.file_path(&ih, i).unwrap()).unwrap();
        assert_eq!(stored, std::fs::read(r.data_path(&src, i)).unwrap(), "{}", f.path());
    }
}

/// `data` copied to an address `skew` bytes past a page boundary.
fn at_skew(data: &[u8], skew: usize) -> (Vec<u8>, std::ops::Range<usize>) {
    let mut buf = vec![0u8; data.len() + 2 * 4096];
    let start = (4096 - buf.as_ptr() as usize % 4096) % 4096 + skew;
    buf[start..start + data.len()].copy_from_slice(data);
    (buf, start..start + data.len())
}

#[test]
fn page_aligned_puts_go_direct_and_read_back_identical() {
    // 512 KiB pieces: big enough for O_DIRECT; piece 2 spans the end of a.bin and b.bin's start
    let t = tempfile::tempdir().unwrap();
    let piece = 512 * 1024;
    let (r, src) = release(t.path(), "direct", &[("a.bin", 1_300_000), ("b.bin", 700_001)], piece);
    let ih = r.infohash();
    let store_dir = t.path().join("store");
    {
        let s = open(&store_dir, None);
        s.add_release(&r, AddOptions::default()).unwrap();
        let n = r.layout().piece_count();
        // aligned buffers (the O_DIRECT path), a misaligned one (buffered), a batch of both
        let (b0, r0) = at_skew(&piece_from_source(&r, &src, 0), 0);
        assert_eq!(s.put_piece(&ih, PieceIndex(0), &b0[r0]).unwrap(), Put::Stored);
        let (b1, r1) = at_skew(&piece_from_source(&r, &src, 1), 3);
        assert_eq!(s.put_piece(&ih, PieceIndex(1), &b1[r1]).unwrap(), Put::Stored);
        let rest: Vec<(Vec<u8>, std::ops::Range<usize>)> =
            (2..n).map(|i| at_skew(&piece_from_source(&r, &src, i), 0)).collect();
        let batch: Vec<(PieceIndex, &[u8])> =
            rest.iter().enumerate().map(|(k, (b, rg))| (PieceIndex(k as u32 + 2), &b[rg.clone()])).collect();
        assert!(s.put_pieces(&ih, &batch).unwrap().iter().all(|p| *p == Put::Stored));
        for i in 0..n {
            assert_eq!(s.read_piece(&ih, PieceIndex(i)).unwrap(), piece_from_source(&r, &src, i), "piece {i}");
        }
    }
    let s = open(&store_dir, None);
    for i in 0..2 {
        let stored = std::fs::read(s.file_path(&ih, i).unwrap()).unwrap();
        assert_eq!(stored, std::fs::read(r.data_path(&src, i)).unwrap(), "file {i}");
    }
}

#[test]
fn second_open_is_refused_while_in_use() {
    let t = tempfile::tempdir().unwrap();
    let _a = open(t.path(), None);
    let err = Store::open(StoreConfig::new(t.path())).err().expect("second open must fail");
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
}

#[test]
fn remove_and_leftovers() {
    let t = tempfile::tempdir().unwrap();
    let (r, src) = release(t.path(), "x", &[("a", 50_000)], PIECE);
    let ih = r.infohash();
    let dir = t.path().join("store");
    {
        let s = open(&dir, None);
        s.add_release(&r, AddOptions::default()).unwrap();
        s.put_piece(&ih, PieceIndex(0), &piece_from_source(&r, &src, 0)).unwrap();
        s.remove_release(&ih).unwrap();
        assert!(!s.has_piece(&ih, PieceIndex(0)));
        assert!(s.releases().is_empty());
        assert!(!dir.join("releases").join(hex::encode(ih)).exists());
    }
    // a half-added release (directory without a record) is cleaned at open
    std::fs::create_dir_all(dir.join("releases/deadbeef/data")).unwrap();
    let s = open(&dir, None);
    assert!(!dir.join("releases/deadbeef").exists());
    // re-adding starts from nothing
    s.add_release(&r, AddOptions::default()).unwrap();
    assert_eq!(s.bitfield(&ih).unwrap().count(), 0);
}

fn fill(s: &Store, r: &popseed_release::VerifiedRelease, src: &std::path::Path) {
    for i in 0..r.layout().piece_count() {
        s.put_piece(&r.infohash(), PieceIndex(i), &piece_from_source(r, src, i)).unwrap();
    }
}

#[test]
fn eviction_order_and_store_full() {
    let t = tempfile::tempdir().unwrap();
    let size = 4 * PIECE as usize; // 4 pieces each
    let (pinned, ps) = release(t.path(), "pinned", &[("a", size)], PIECE);
    let (old, os) = release(t.path(), "old", &[("a", size)], PIECE);
    let (expired, es) = release(t.path(), "expired", &[("a", size)], PIECE);
    let (newer, ns) = release(t.path(), "newer", &[("a", size)], PIECE);
    let (incoming, is) = release(t.path(), "incoming", &[("a", size)], PIECE);
    // the store's clock moves only when told: access times are ordered without sleeping
    let clock = std::sync::Arc::new(ManualClock::new(1_800_000_000));
    let s = Store::open_with_clock(
        StoreConfig { dir: t.path().join("store"), capacity: Capacity { budget: Some(4 * size as u64), min_free: 0 } },
        clock.clone(),
    )
    .unwrap();
    s.add_release(&pinned, AddOptions { pin: true, ttl_seconds: Some(0) }).unwrap();
    s.add_release(&old, AddOptions::default()).unwrap();
    s.add_release(&expired, AddOptions { pin: false, ttl_seconds: Some(0) }).unwrap();
    fill(&s, &pinned, &ps);
    fill(&s, &old, &os);
    fill(&s, &expired, &es);
    clock.advance(std::time::Duration::from_secs(10)); // later last access for `newer`
    s.add_release(&newer, AddOptions::default()).unwrap();
    fill(&s, &newer, &ns);
    assert_eq!(s.usage().unwrap().used, 4 * size as u64);

    s.add_release(&incoming, AddOptions::default()).unwrap();
    let ih = incoming.infohash();
    // first piece: the expired release goes first (even though `old` was used earlier)
    s.put_piece(&ih, PieceIndex(0), &piece_from_source(&incoming, &is, 0)).unwrap();
    let names: Vec<String> = s.releases().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["incoming", "newer", "old", "pinned"]);
    for i in 1..4 {
        s.put_piece(&ih, PieceIndex(i), &piece_from_source(&incoming, &is, i)).unwrap();
    }
    // a bigger budget need: evicts the least recently used (`old`), never the pinned one
    let (big, bs) = release(t.path(), "big", &[("a", 2 * size)], PIECE);
    s.add_release(&big, AddOptions::default()).unwrap();
    s.put_piece(&big.infohash(), PieceIndex(0), &piece_from_source(&big, &bs, 0)).unwrap();
    let names: Vec<String> = s.releases().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["big", "incoming", "newer", "pinned"]);
    assert!(s.bitfield(&pinned.infohash()).unwrap().is_complete());

    for i in 1..4 {
        s.put_piece(&big.infohash(), PieceIndex(i), &piece_from_source(&big, &bs, i)).unwrap();
    }
    assert_eq!(s.usage().unwrap().used, 4 * size as u64);
    // pin everything else: nothing can be evicted, the put fails with "store full"
    for r in s.releases() {
        s.set_pinned(&r.infohash, true).unwrap();
    }
    let err = s.put_piece(&big.infohash(), PieceIndex(4), &piece_from_source(&big, &bs, 4)).unwrap_err();
    assert!(matches!(err, StoreError::Full { .. }), "{err}");
    assert!(err.to_string().contains("store full"));
    assert!(!s.has_piece(&big.infohash(), PieceIndex(4)));
    assert_eq!(s.releases().len(), 4, "nothing was evicted");
}

#[test]
fn free_space_floor_is_enforced() {
    let t = tempfile::tempdir().unwrap();
    let (r, src) = release(t.path(), "x", &[("a", 20_000)], PIECE);
    let s = Store::open(StoreConfig {
        dir: t.path().join("store"),
        capacity: Capacity { budget: None, min_free: u64::MAX / 2 },
    })
    .unwrap();
    s.add_release(&r, AddOptions::default()).unwrap();
    let err = s.put_piece(&r.infohash(), PieceIndex(0), &piece_from_source(&r, &src, 0)).unwrap_err();
    assert!(matches!(err, StoreError::Full { .. }));
    let _ = piece_hash(b"");
}

#[test]
fn reopen_with_100k_pieces_is_fast_and_small() {
    const N: u32 = 100_000;
    const PL: u32 = 1024;
    let t = tempfile::tempdir().unwrap();
    let r = common::zero_release(N, PL);
    let ih = r.infohash();
    let dir = t.path().join("store");
    {
        let s = open(&dir, None);
        s.add_release(&r, AddOptions::default()).unwrap();
        let zero = vec![0u8; PL as usize];
        for chunk in (0..N).collect::<Vec<_>>().chunks(2000) {
            let batch: Vec<(PieceIndex, &[u8])> = chunk.iter().map(|&i| (PieceIndex(i), zero.as_slice())).collect();
            s.put_pieces(&ih, &batch).unwrap();
        }
        assert!(s.bitfield(&ih).unwrap().is_complete());
    }
    let rss_before = common::rss_kib();
    let started = std::time::Instant::now();
    let s = open(&dir, None);
    let took = started.elapsed();
    let grew_kib = common::rss_kib().saturating_sub(rss_before);
    println!("reopen of {N} indexed pieces: {:.0} ms, RSS +{grew_kib} KiB", took.as_secs_f64() * 1e3);
    assert_eq!(s.bitfield(&ih).unwrap().count(), N);
    assert!(took < std::time::Duration::from_secs(1), "reopen took {took:?}");
    // The data is 100 MB; the in-memory index must stay a small fraction of it.
    assert!(grew_kib < 32 * 1024, "reopen grew RSS by {grew_kib} KiB");
}

#[test]
fn events() {
    let t = tempfile::tempdir().unwrap();
    let (r, src) = release(t.path(), "ev", &[("a", 40_000)], PIECE);
    let ih = r.infohash();
    let s = open(&t.path().join("store"), None);
    let mut rx = s.subscribe();
    s.add_release(&r, AddOptions::default()).unwrap();
    s.put_piece(&ih, PieceIndex(2), &piece_from_source(&r, &src, 2)).unwrap();
    s.remove_release(&ih).unwrap();
    use popseed_store::StoreEvent::*;
    assert_eq!(rx.try_recv().unwrap(), ReleaseAdded { infohash: ih });
    assert_eq!(rx.try_recv().unwrap(), PieceStored { infohash: ih, index: PieceIndex(2) });
    assert_eq!(rx.try_recv().unwrap(), ReleaseRemoved { infohash: ih });
}

#[test]
fn record_tables_are_durable_and_kept_apart_from_the_index() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("store");
    {
        let s = open(&dir, None);
        let jobs = s.records("jobs").unwrap();
        jobs.put("a", b"1").unwrap();
        jobs.put_many([("b", &b"2"[..]), ("c", &b"3"[..])]).unwrap();
        jobs.remove("c").unwrap();
        jobs.remove("never-there").unwrap();
        for own in ["releases", "pieces", "access"] {
            assert!(matches!(s.records(own), Err(StoreError::ReservedTable(_))), "{own}");
        }
    }
    let s = open(&dir, None);
    let jobs = s.records("jobs").unwrap();
    assert_eq!(jobs.entries().unwrap(), vec![("a".to_owned(), b"1".to_vec()), ("b".to_owned(), b"2".to_vec())]);
    assert_eq!(jobs.get("b").unwrap(), Some(b"2".to_vec()));
    assert_eq!(jobs.get("c").unwrap(), None);
    assert!(s.records("other").unwrap().entries().unwrap().is_empty(), "tables are separate");
    assert!(s.releases().is_empty(), "records are not releases");
}
