//! Helpers shared by the store's integration tests: deterministic sample releases.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use popseed_release::{publish, PublishOptions, SecretKey, VerifiedRelease};

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Publishes a release of `files` (name, size) under `root/<name>` and returns it with its source dir.
pub fn release(root: &Path, name: &str, files: &[(&str, usize)], piece: u64) -> (VerifiedRelease, PathBuf) {
    let src = root.join("src").join(name);
    for (i, (f, size)) in files.iter().enumerate() {
        let p = src.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes(i as u64 + name.len() as u64 * 1000, *size)).unwrap();
    }
    let key = SecretKey::generate();
    let opts = PublishOptions { piece_size: Some(piece), ..Default::default() };
    let r = publish(&src, &key, &root.join("rel").join(name), &opts).unwrap();
    (r, src)
}

/// Bytes of piece `i` read back from the source files.
pub fn piece_from_source(r: &VerifiedRelease, src: &Path, i: u32) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let l = r.layout();
    let mut out = vec![0u8; l.piece_size(i).unwrap() as usize];
    let mut at = 0;
    for s in l.piece_segments(i) {
        let f = std::fs::File::open(r.data_path(src, s.file)).unwrap();
        f.read_exact_at(&mut out[at..at + s.len as usize], s.file_offset).unwrap();
        at += s.len as usize;
    }
    out
}
