//! Crash safety: a writer process putting, pinning and removing is SIGKILLed at random moments,
//! many times; after every kill the store reopens and every piece it reports present must read
//! back hash-correct. This binary is its own writer child (`crash child STORE RELEASES...`).

// Test code: an unwrap that fails is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use popseed_core::PieceIndex;
use popseed_release::hashing::piece_hash;
use popseed_release::VerifiedRelease;
use popseed_store::{AddOptions, Capacity, Put, Store, StoreConfig};
use rand::{Rng, SeedableRng};

const KILLS: usize = 40;

fn config(dir: &Path) -> StoreConfig {
    // A budget smaller than both releases together, so evictions happen under the knife too.
    StoreConfig { dir: dir.to_path_buf(), capacity: Capacity { budget: Some(3 << 20), min_free: 0 } }
}

/// The writer: loops forever over random operations until killed.
fn child(store_dir: &Path, releases: &[(PathBuf, PathBuf)]) -> ! {
    let store = Store::open(config(store_dir)).expect("child open");
    let rels: Vec<(VerifiedRelease, &PathBuf)> =
        releases.iter().map(|(r, src)| (VerifiedRelease::load(r, None).expect("load"), src)).collect();
    let mut rng = rand::rngs::StdRng::from_entropy();
    loop {
        let (r, src) = &rels[rng.gen_range(0..rels.len())];
        let ih = r.infohash();
        let _ = store.add_release(r, AddOptions::default());
        match rng.gen_range(0..100) {
            0..=2 => {
                let _ = store.remove_release(&ih);
            }
            3..=5 => {
                let _ = store.set_pinned(&ih, rng.gen_bool(0.3));
            }
            6..=10 => {
                // corrupted piece: must be refused
                let i = rng.gen_range(0..r.layout().piece_count());
                let mut p = common::piece_from_source(r, src, i);
                p[0] ^= 1;
                assert!(!matches!(store.put_piece(&ih, PieceIndex(i), &p), Ok(Put::Stored)), "corrupt piece stored");
            }
            11..=30 => {
                let start = rng.gen_range(0..r.layout().piece_count());
                let end = (start + 8).min(r.layout().piece_count());
                let data: Vec<(u32, Vec<u8>)> =
                    (start..end).map(|i| (i, common::piece_from_source(r, src, i))).collect();
                let batch: Vec<(PieceIndex, &[u8])> =
                    data.iter().map(|(i, d)| (PieceIndex(*i), d.as_slice())).collect();
                let _ = store.put_pieces(&ih, &batch);
            }
            _ => {
                let i = rng.gen_range(0..r.layout().piece_count());
                let _ = store.put_piece(&ih, PieceIndex(i), &common::piece_from_source(r, src, i));
            }
        }
    }
}

/// Reopens the store and checks every present piece; returns how many were checked.
fn verify(store_dir: &Path) -> usize {
    let store = Store::open(config(store_dir)).expect("reopen after kill");
    let mut checked = 0;
    for info in store.releases() {
        let r = store.release(&info.infohash).unwrap();
        let bf = store.bitfield(&info.infohash).unwrap();
        assert_eq!(bf.count(), info.pieces_present);
        for i in bf.iter_set() {
            let data = store.read_piece(&info.infohash, PieceIndex(i)).expect("present piece readable");
            assert_eq!(
                &piece_hash(&data),
                r.layout().piece_hash(i).unwrap(),
                "piece {i} of {} corrupt after crash",
                info.name
            );
            checked += 1;
        }
    }
    assert!(store.usage().unwrap().used <= 3 << 20, "budget exceeded");
    checked
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let rels: Vec<(PathBuf, PathBuf)> =
            args[3..].chunks(2).map(|c| (PathBuf::from(&c[0]), PathBuf::from(&c[1]))).collect();
        child(Path::new(&args[2]), &rels);
    }
    if args.iter().any(|a| a == "--list") {
        println!("crash_kill_reopen_verify: test");
        return;
    }
    let started = Instant::now();
    let t = tempfile::tempdir().unwrap();
    let (a, asrc) = common::release(t.path(), "a", &[("x.bin", 1 << 20), ("y/z.bin", 700_001)], 16384);
    let (b, bsrc) = common::release(t.path(), "b", &[("v.bin", 1_500_000)], 32768);
    drop((a, b));
    let store_dir = t.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut checked, mut max_seen) = (0, 0);
    for kill in 0..KILLS {
        let mut c = Command::new(&exe)
            .arg("child")
            .arg(&store_dir)
            .args([t.path().join("rel/a"), asrc.clone(), t.path().join("rel/b"), bsrc.clone()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..400)));
        c.kill().unwrap(); // SIGKILL
        let status = c.wait().unwrap();
        assert!(status.code().is_none(), "writer exited by itself ({status}) before kill {kill}");
        let n = verify(&store_dir);
        checked += n;
        max_seen = max_seen.max(n);
    }
    assert!(max_seen > 0, "the writer never stored anything");
    println!(
        "crash_kill_reopen_verify: {KILLS} SIGKILLs, {checked} present pieces re-verified (max {max_seen} at once) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("1 passed, 0 failed");
}
