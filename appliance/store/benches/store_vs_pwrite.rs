//! Store throughput against the floor it is built on: the same pieces written with plain
//! pwrite+fdatasync and read back with pread, in the same run, on the same filesystem. Prints
//! MiB/s for both and the ratio; the page cache is dropped for the files (POSIX_FADV_DONTNEED)
//! before each read pass so reads come from the device for both.
//!
//! Writes are measured at two durability granularities, each against the plain floor with the
//! same one: one piece at a time (`put_piece`; plain: fdatasync after every piece), and batches of
//! BATCH pieces (`put_pieces`, as the fetcher's storer puts what queued up; plain: one fdatasync
//! per file touched after every batch).
//!
//! Env: POPSEED_BENCH_MIB (default 1024), POPSEED_BENCH_PIECE (default 1MiB),
//! POPSEED_BENCH_DIR (default: a temp dir under target/).

// Test code: an unwrap that fails is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use popseed_core::PieceIndex;
use std::time::Instant;

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use popseed_release::{Layout, VerifiedRelease};
use popseed_store::{AddOptions, Capacity, Store, StoreConfig};

const FILES: usize = 4;
/// Pieces per batch in the batched mode (the fetcher's storer takes up to 16).
const BATCH: usize = 16;

fn release(pieces: &[Vec<u8>], piece_len: u32) -> VerifiedRelease {
    let total: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    let per_file = total / FILES as u64;
    let files: Vec<(Vec<String>, u64)> = (0..FILES)
        .map(|i| {
            (
                vec![format!("part{i}.bin")],
                if i == FILES - 1 { total - per_file * (FILES as u64 - 1) } else { per_file },
            )
        })
        .collect();
    let hashes = pieces.iter().map(|p| popseed_release::hashing::piece_hash(p)).collect();
    common::sign_layout(Layout::new(piece_len, files, hashes).unwrap(), "bench", false)
}

fn drop_cache(paths: &[std::path::PathBuf]) {
    for p in paths {
        let f = File::open(p).unwrap();
        posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
    }
}

/// Plain files, same layout, fdatasync after every `batch` pieces: (write MiB/s, read MiB/s).
fn baseline(dir: &Path, r: &VerifiedRelease, pieces: &[Vec<u8>], batch: usize) -> (f64, f64) {
    let layout = r.layout();
    let paths: Vec<_> = layout.files.iter().map(|f| dir.join(f.path())).collect();
    let files: Vec<File> = paths
        .iter()
        .zip(&layout.files)
        .map(|(p, f)| {
            let h = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(p).unwrap();
            h.set_len(f.length).unwrap();
            h
        })
        .collect();
    let mib = layout.total_length as f64 / (1 << 20) as f64;
    let t = Instant::now();
    let mut touched = Vec::new();
    for (i, data) in pieces.iter().enumerate() {
        let segs = layout.piece_segments(i as u32);
        let mut at = 0;
        for s in &segs {
            files[s.file].write_all_at(&data[at..at + s.len as usize], s.file_offset).unwrap();
            at += s.len as usize;
            touched.push(s.file);
        }
        if (i + 1) % batch == 0 || i + 1 == pieces.len() {
            touched.sort_unstable();
            touched.dedup();
            for &f in &touched {
                nix::unistd::fdatasync(&files[f]).unwrap();
            }
            touched.clear();
        }
    }
    let w = mib / t.elapsed().as_secs_f64();
    drop_cache(&paths);
    let t = Instant::now();
    let mut buf = vec![0u8; layout.piece_length as usize];
    for (i, data) in pieces.iter().enumerate() {
        let mut at = 0;
        for s in layout.piece_segments(i as u32) {
            files[s.file].read_exact_at(&mut buf[at..at + s.len as usize], s.file_offset).unwrap();
            at += s.len as usize;
        }
        assert_eq!(buf[..data.len()][..64], data[..64]);
    }
    (w, mib / t.elapsed().as_secs_f64())
}

/// The store, `batch` pieces per put: (write MiB/s, read MiB/s).
fn through_store(dir: &Path, r: &VerifiedRelease, pieces: &[Vec<u8>], batch: usize) -> (f64, f64) {
    let store =
        Store::open(StoreConfig { dir: dir.to_path_buf(), capacity: Capacity { budget: None, min_free: 0 } }).unwrap();
    store.add_release(r, AddOptions::default()).unwrap();
    let ih = r.infohash();
    let mib = r.layout().total_length as f64 / (1 << 20) as f64;
    let t = Instant::now();
    if batch == 1 {
        for (i, data) in pieces.iter().enumerate() {
            store.put_piece(&ih, PieceIndex(i as u32), data).unwrap();
        }
    } else {
        for (c, chunk) in pieces.chunks(batch).enumerate() {
            let refs: Vec<(PieceIndex, &[u8])> =
                chunk.iter().enumerate().map(|(k, d)| (PieceIndex((c * batch + k) as u32), d.as_slice())).collect();
            store.put_pieces(&ih, &refs).unwrap();
        }
    }
    let w = mib / t.elapsed().as_secs_f64();
    let paths: Vec<_> = (0..r.layout().files.len()).map(|i| store.file_path(&ih, i).unwrap()).collect();
    drop_cache(&paths);
    let t = Instant::now();
    let mut buf = vec![0u8; r.layout().piece_length as usize];
    for (i, data) in pieces.iter().enumerate() {
        let b = &mut buf[..data.len()];
        store.read_piece_at(&ih, PieceIndex(i as u32), 0, b).unwrap();
        assert_eq!(b[..64], data[..64]);
    }
    (w, mib / t.elapsed().as_secs_f64())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.into());
    let total_mib: u64 = env("POPSEED_BENCH_MIB", "1024").parse().expect("POPSEED_BENCH_MIB");
    let piece: u32 =
        env("POPSEED_BENCH_PIECE", "1MiB").parse::<popseed_core::ByteSize>().expect("piece size").get() as u32;
    let root =
        std::env::var("POPSEED_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let tmp = tempfile::tempdir_in(&root).unwrap();
    let n = (total_mib << 20) / piece as u64;
    eprintln!("generating {n} pieces of {piece} bytes ({total_mib} MiB) in {}", tmp.path().display());
    let pieces: Vec<Vec<u8>> = (0..n).map(|i| common::bytes(i + 1, piece as usize)).collect();
    let r = release(&pieces, piece);
    println!("store bench: {total_mib} MiB in {} pieces of {} KiB, {} files", n, piece / 1024, FILES);
    for batch in [1, BATCH] {
        // Two rounds, alternating order, so neither side always runs on a warmer disk.
        let (mut bw, mut br, mut sw, mut sr) = (0.0, 0.0, 0.0, 0.0);
        for round in 0..2 {
            let plain = tmp.path().join(format!("plain{round}"));
            let st = tmp.path().join(format!("store{round}"));
            std::fs::create_dir_all(&plain).unwrap();
            let (b, s) = if round == 0 {
                let b = baseline(&plain, &r, &pieces, batch);
                (b, through_store(&st, &r, &pieces, batch))
            } else {
                let s = through_store(&st, &r, &pieces, batch);
                (baseline(&plain, &r, &pieces, batch), s)
            };
            bw += b.0 / 2.0;
            br += b.1 / 2.0;
            sw += s.0 / 2.0;
            sr += s.1 / 2.0;
            std::fs::remove_dir_all(&plain).unwrap();
            std::fs::remove_dir_all(&st).unwrap();
        }
        if batch == 1 {
            println!("  write, one piece at a time (plain: fdatasync per piece)");
            println!(
                "         pwrite+fdatasync {bw:8.1} MiB/s   store.put_piece  {sw:8.1} MiB/s   ratio {:.2}",
                sw / bw
            );
            println!(
                "  read   pread            {br:8.1} MiB/s   store.read       {sr:8.1} MiB/s   ratio {:.2}",
                sr / br
            );
        } else {
            println!("  write, batches of {batch} pieces (plain: fdatasync per file per batch)");
            println!(
                "         pwrite+fdatasync {bw:8.1} MiB/s   store.put_pieces {sw:8.1} MiB/s   ratio {:.2}",
                sw / bw
            );
        }
    }
}
