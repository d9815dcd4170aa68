//! Helpers shared by the store's integration tests: deterministic sample releases.

// Test code: an unwrap that fails is a failed test.
#![allow(clippy::unwrap_used)]
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

/// A signed release for `layout` built without reading any data (file SHA-256s are left
/// empty; the store never checks them): for index-scale tests and the benchmark.
pub fn sign_layout(layout: popseed_release::Layout, name: &str, single_file: bool) -> VerifiedRelease {
    use popseed_release::manifest::{self, Manifest, ManifestFile};
    use popseed_release::metainfo::{build_info, build_torrent, TorrentOptions};
    use sha2::Digest;
    let opts = TorrentOptions { name: name.into(), single_file, ..Default::default() };
    let (torrent, ih) = build_torrent(&layout, &opts).unwrap();
    let (info, _) = build_info(&layout, name, single_file).unwrap();
    let key = SecretKey::generate();
    let m = Manifest {
        format: manifest::FORMAT.into(),
        name: name.into(),
        version: "1".into(),
        created: "2026-01-01T00:00:00Z".into(),
        publisher_key: key.public().to_text(),
        infohash: ih,
        info_sha256: hex::encode(sha2::Sha256::digest(&info)),
        torrent_name: name.into(),
        piece_length: layout.piece_length,
        piece_count: layout.piece_count(),
        total_size: layout.total_length,
        files: layout
            .files
            .iter()
            .map(|f| ManifestFile { path: f.path(), size: f.length, sha256: String::new() })
            .collect(),
        critical: vec![],
        license: None,
        ttl_seconds: None,
        web_seeds: vec![],
    };
    VerifiedRelease::from_bytes(&manifest::sign(&m, &key).unwrap(), &torrent, None).unwrap()
}

/// A signed release of one all-zero file with `pieces` pieces of `piece_len` bytes, made without
/// hashing any data (every piece hash is the same).
pub fn zero_release(pieces: u32, piece_len: u32) -> VerifiedRelease {
    let total = pieces as u64 * piece_len as u64;
    let hash = popseed_release::hashing::piece_hash(&vec![0u8; piece_len as usize]);
    let layout =
        popseed_release::Layout::new(piece_len, vec![(vec!["zeros.bin".into()], total)], vec![hash; pieces as usize])
            .unwrap();
    sign_layout(layout, "zeros.bin", true)
}

/// Resident set size of this process in KiB (Linux).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
