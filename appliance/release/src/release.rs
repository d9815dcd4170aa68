//! Whole releases: `publish` turns a source tree into a release directory (`release.torrent` +
//! signed `manifest.json`), and [`VerifiedRelease`] is a release whose signature, .torrent and
//! manifest were checked against each other, the form every other component accepts.

use std::fs;
use std::io::Write;

use popseed_core::InfoHash;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::critical::{self, CriticalRange};
use crate::error::{ReleaseError, Result};
use crate::hashing;
use crate::keys::{PublicKey, SecretKey};
use crate::layout::{check_component, Layout};
use crate::manifest::{self, Manifest, ManifestFile};
use crate::metainfo::{self, Metainfo, TorrentOptions};
use crate::source;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const TORRENT_FILE: &str = "release.torrent";

/// Smallest and largest piece sizes we publish.
pub const MIN_PIECE: u64 = 16 << 10;
pub const MAX_PIECE: u64 = 64 << 20;

/// What `popseed publish` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    pub name: Option<String>,
    pub version: Option<String>,
    pub piece_size: Option<u64>,
    pub critical: Vec<String>,
    pub web_seeds: Vec<String>,
    pub trackers: Vec<String>,
    pub ttl: Option<Duration>,
    pub license: Option<String>,
    pub comment: Option<String>,
}

/// Picks a power-of-two piece size giving at most ~2000 pieces, within 16 KiB..16 MiB.
pub fn auto_piece_size(total: u64) -> u64 {
    let mut pl = MIN_PIECE;
    while total.div_ceil(pl) > 2000 && pl < (16 << 20) {
        pl *= 2;
    }
    pl
}

pub fn check_piece_size(pl: u64) -> Result<u32> {
    if !pl.is_power_of_two() || !(MIN_PIECE..=MAX_PIECE).contains(&pl) {
        return Err(ReleaseError::BadPieceSize(pl));
    }
    Ok(pl as u32)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses `30d`, `12h`, `90m` and the like.
pub fn parse_duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s).map_err(|source| ReleaseError::BadDuration { input: s.to_owned(), source })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| ReleaseError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| ReleaseError::io(&tmp, e))?;
    f.sync_all().map_err(|e| ReleaseError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| ReleaseError::io(path, e))
}

/// Publishes `src` (a directory, or a single file) into `out` and returns the verified release.
pub fn publish(src: &Path, key: &SecretKey, out: &Path, opts: &PublishOptions) -> Result<VerifiedRelease> {
    refuse_out_inside(src, out)?;
    let source = source::scan(src)?;
    let total = source.total_size();
    let piece_length = check_piece_size(opts.piece_size.unwrap_or_else(|| auto_piece_size(total)))?;
    // multi-file: the folder clients create (--name, or the source folder's name);
    // single-file: the file's own name.
    let torrent_name = if source.single_file {
        source.files[0].components[0].clone()
    } else if let Some(n) = &opts.name {
        n.clone()
    } else {
        let canon = fs::canonicalize(src).map_err(|e| ReleaseError::io(src, e))?;
        canon
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| ReleaseError::NonUtf8Name(src.to_path_buf()))?
    };
    check_component(&torrent_name)?;
    let disk: Vec<(PathBuf, u64)> = source.files.iter().map(|f| (f.disk_path.clone(), f.size)).collect();
    tracing::info!(files = disk.len(), total, piece_length, "hashing source");
    let hashes = hashing::hash_files(&disk, piece_length)?;
    let layout = Layout::new(
        piece_length,
        source.files.iter().map(|f| (f.components.clone(), f.size)).collect(),
        hashes.pieces,
    )?;
    let critical = critical::resolve(&opts.critical, &layout)?;
    let now = SystemTime::now();
    let topts = TorrentOptions {
        name: torrent_name.clone(),
        single_file: source.single_file,
        trackers: opts.trackers.iter().map(|t| vec![t.clone()]).collect(),
        web_seeds: opts.web_seeds.clone(),
        comment: opts.comment.clone(),
        creation_date: now.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs()),
    };
    let (torrent, infohash) = metainfo::build_torrent(&layout, &topts)?;
    let (info_bytes, _) = metainfo::build_info(&layout, &torrent_name, source.single_file)?;
    let manifest = Manifest {
        format: manifest::FORMAT.into(),
        name: opts.name.clone().unwrap_or_else(|| torrent_name.clone()),
        version: opts
            .version
            .clone()
            .unwrap_or_else(|| humantime::format_rfc3339_seconds(now).to_string()[..10].replace('-', ".")),
        created: rfc3339(now),
        publisher_key: key.public().to_text(),
        infohash,
        info_sha256: hex::encode(Sha256::digest(&info_bytes)),
        torrent_name,
        piece_length,
        piece_count: layout.piece_count(),
        total_size: layout.total_length,
        files: layout
            .files
            .iter()
            .zip(&hashes.files)
            .map(|(f, h)| ManifestFile { path: f.path(), size: f.length, sha256: hex::encode(h) })
            .collect(),
        critical,
        license: opts.license.clone(),
        ttl_seconds: opts.ttl.map(|d| d.as_secs()),
        web_seeds: opts.web_seeds.clone(),
    };
    let manifest_bytes = manifest::sign(&manifest, key)?;
    fs::create_dir_all(out).map_err(|e| ReleaseError::io(out, e))?;
    write_atomic(&out.join(TORRENT_FILE), &torrent)?;
    write_atomic(&out.join(MANIFEST_FILE), &manifest_bytes)?;
    VerifiedRelease::from_bytes(&manifest_bytes, &torrent, None)
}

/// The release directory must not be inside the source tree (the next publish would include it).
fn refuse_out_inside(src: &Path, out: &Path) -> Result<()> {
    let Ok(src_c) = fs::canonicalize(src) else { return Ok(()) }; // scan reports it
                                                                  // `out` may not exist yet: canonicalize its nearest existing ancestor.
    let mut existing = out.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_owned()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() };
            }
            _ => break,
        }
    }
    let mut out_c = fs::canonicalize(&existing).map_err(|e| ReleaseError::io(&existing, e))?;
    out_c.extend(rest.iter().rev());
    if src_c.is_dir() && out_c.starts_with(&src_c) {
        return Err(ReleaseError::OutInsideSource { out: out.to_path_buf(), src: src.to_path_buf() });
    }
    Ok(())
}

/// A release whose manifest signature verified and whose .torrent matches the manifest.
#[derive(Debug, Clone)]
pub struct VerifiedRelease {
    pub manifest: Manifest,
    pub publisher: PublicKey,
    pub metainfo: Metainfo,
    /// The exact bytes of `manifest.json` and `release.torrent`, for storing and serving.
    pub manifest_bytes: Vec<u8>,
    pub torrent_bytes: Vec<u8>,
}

impl VerifiedRelease {
    /// Checks signature, optional trusted keys, and .torrent/manifest agreement.
    pub fn from_bytes(manifest_bytes: &[u8], torrent_bytes: &[u8], trusted: Option<&[PublicKey]>) -> Result<Self> {
        let (manifest, publisher) = manifest::open(manifest_bytes)?;
        if let Some(trusted) = trusted {
            if trusted.is_empty() {
                return Err(ReleaseError::NoTrustedKeys { actual: publisher.fingerprint() });
            }
            if !trusted.contains(&publisher) {
                let expected = trusted.iter().map(|k| k.fingerprint()).collect::<Vec<_>>().join(" or ");
                return Err(ReleaseError::WrongKey { expected, actual: publisher.fingerprint() });
            }
        }
        let metainfo = metainfo::parse_torrent(torrent_bytes)?;
        check_agreement(&manifest, &metainfo)?;
        Ok(VerifiedRelease {
            manifest,
            publisher,
            metainfo,
            manifest_bytes: manifest_bytes.to_vec(),
            torrent_bytes: torrent_bytes.to_vec(),
        })
    }

    /// Loads `manifest.json` and `release.torrent` from a release directory.
    pub fn load(dir: &Path, trusted: Option<&[PublicKey]>) -> Result<Self> {
        let m = dir.join(MANIFEST_FILE);
        let t = dir.join(TORRENT_FILE);
        let mb = fs::read(&m).map_err(|e| ReleaseError::io(&m, e))?;
        let tb = fs::read(&t).map_err(|e| ReleaseError::io(&t, e))?;
        Self::from_bytes(&mb, &tb, trusted)
    }

    pub fn layout(&self) -> &Layout {
        &self.metainfo.layout
    }

    pub fn infohash(&self) -> InfoHash {
        self.metainfo.infohash
    }

    /// Pieces covering the critical ranges, in the order the publisher listed them, deduplicated.
    pub fn critical_pieces(&self) -> Vec<u32> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for r in &self.manifest.critical {
            for p in critical::pieces_of(r, self.layout()).unwrap_or(0..0) {
                if seen.insert(p) {
                    out.push(p);
                }
            }
        }
        out
    }

    pub fn critical_ranges(&self) -> &[CriticalRange] {
        &self.manifest.critical
    }

    pub fn magnet(&self, trackers: &[String]) -> String {
        metainfo::magnet(&self.infohash(), &self.metainfo.name, trackers, &self.metainfo.web_seeds)
    }

    /// Where file `i` lives below a data directory laid out like the source tree: a multi-file
    /// release's files sit in `data_dir` directly (the source folder), a single file is `data_dir`
    /// itself when it is a file, or `data_dir/<name>`.
    pub fn data_path(&self, data_dir: &Path, i: usize) -> PathBuf {
        let f = &self.layout().files[i];
        if self.metainfo.single_file && data_dir.is_file() {
            return data_dir.to_path_buf();
        }
        let mut p = data_dir.to_path_buf();
        p.extend(&f.components);
        p
    }

    /// Re-hashes the data under `data_dir` against every piece and file hash.
    pub fn verify_data(&self, data_dir: &Path) -> Result<()> {
        let layout = self.layout();
        let mut files = Vec::with_capacity(layout.files.len());
        for (i, f) in layout.files.iter().enumerate() {
            let p = self.data_path(data_dir, i);
            let meta = fs::metadata(&p).map_err(|e| ReleaseError::io(&p, e))?;
            if meta.len() != f.length {
                return Err(ReleaseError::DataMismatch(format!(
                    "{}: size {} but the release says {}",
                    f.path(),
                    meta.len(),
                    f.length
                )));
            }
            files.push((p, f.length));
        }
        let hashes = hashing::hash_files(&files, layout.piece_length)?;
        for (mf, h) in self.manifest.files.iter().zip(&hashes.files) {
            if mf.sha256 != hex::encode(h) {
                return Err(ReleaseError::DataMismatch(format!("{}: SHA-256 differs from the manifest", mf.path)));
            }
        }
        if let Some(i) = hashes.pieces.iter().zip(&layout.piece_hashes).position(|(a, b)| a != b) {
            return Err(ReleaseError::DataMismatch(format!("piece {i}: SHA-1 differs from the .torrent")));
        }
        Ok(())
    }
}

fn check_agreement(m: &Manifest, t: &Metainfo) -> Result<()> {
    let mismatch = |what: String| Err(ReleaseError::TorrentMismatch(what));
    if t.infohash != m.infohash {
        return mismatch(format!("infohash {} but the manifest says {}", t.infohash, m.infohash));
    }
    if hex::encode(Sha256::digest(&t.info_bytes)) != m.info_sha256 {
        return mismatch("info dictionary SHA-256 differs".into());
    }
    let l = &t.layout;
    if l.piece_length != m.piece_length || l.piece_count() != m.piece_count || l.total_length != m.total_size {
        return mismatch("piece length, piece count or total size differ".into());
    }
    if t.name != m.torrent_name {
        return mismatch(format!("name {:?} but the manifest says {:?}", t.name, m.torrent_name));
    }
    if l.files.len() != m.files.len() {
        return mismatch(format!("{} files but the manifest lists {}", l.files.len(), m.files.len()));
    }
    for (lf, mf) in l.files.iter().zip(&m.files) {
        if lf.path() != mf.path || lf.length != mf.size {
            return mismatch(format!(
                "file {:?} ({} bytes) vs manifest {:?} ({} bytes)",
                lf.path(),
                lf.length,
                mf.path,
                mf.size
            ));
        }
    }
    for r in &m.critical {
        if critical::pieces_of(r, l).is_none() {
            return Err(ReleaseError::BadManifest(format!("critical range names unknown file {:?}", r.path)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src/show");
        fs::create_dir_all(src.join("video")).unwrap();
        fs::write(src.join("video/a.mp4"), (0..300_000u32).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
        fs::write(src.join("readme.txt"), b"hello").unwrap();
        d
    }

    #[test]
    fn publish_load_verify() {
        let d = tree();
        let key = SecretKey::generate();
        let src = d.path().join("src/show");
        let out = d.path().join("rel");
        let opts = PublishOptions {
            critical: vec!["*.mp4:64KiB".into()],
            web_seeds: vec!["http://127.0.0.1:1/".into()],
            piece_size: Some(16384),
            ..Default::default()
        };
        let r = publish(&src, &key, &out, &opts).unwrap();
        assert_eq!(r.metainfo.name, "show");
        assert_eq!(r.manifest.files.len(), 2);
        assert_eq!(r.critical_pieces(), vec![0, 1, 2, 3, 4]);
        let loaded = VerifiedRelease::load(&out, Some(&[key.public()])).unwrap();
        loaded.verify_data(&src).unwrap();
        assert!(matches!(
            VerifiedRelease::load(&out, Some(&[SecretKey::generate().public()])),
            Err(ReleaseError::WrongKey { .. })
        ));
        // trusting nobody refuses everything (fail closed), naming who signed it
        let e = VerifiedRelease::load(&out, Some(&[])).unwrap_err();
        assert!(matches!(&e, ReleaseError::NoTrustedKeys { actual } if *actual == key.public().fingerprint()), "{e}");
        // modified data
        let mut bytes = fs::read(src.join("video/a.mp4")).unwrap();
        bytes[100_000] ^= 1;
        fs::write(src.join("video/a.mp4"), bytes).unwrap();
        assert!(matches!(loaded.verify_data(&src), Err(ReleaseError::DataMismatch(_))));
    }

    #[test]
    fn swapped_torrent_is_a_mismatch() {
        let d = tree();
        let key = SecretKey::generate();
        let src = d.path().join("src/show");
        let a = publish(&src, &key, &d.path().join("a"), &PublishOptions::default()).unwrap();
        fs::write(src.join("readme.txt"), b"hellO").unwrap();
        let b = publish(&src, &key, &d.path().join("b"), &PublishOptions::default()).unwrap();
        let err = VerifiedRelease::from_bytes(&a.manifest_bytes, &b.torrent_bytes, None).unwrap_err();
        assert!(matches!(err, ReleaseError::TorrentMismatch(_)), "{err}");
    }

    #[test]
    fn out_inside_source_is_refused() {
        let d = tree();
        let src = d.path().join("src/show");
        let err = publish(&src, &SecretKey::generate(), &src.join("out/rel"), &PublishOptions::default()).unwrap_err();
        assert!(matches!(err, ReleaseError::OutInsideSource { .. }), "{err}");
        assert!(!src.join("out").exists());
    }

    #[test]
    fn piece_sizes() {
        assert_eq!(auto_piece_size(1), 16384);
        assert_eq!(auto_piece_size(300 << 20), 256 << 10);
        assert!(check_piece_size(1000).is_err());
        assert!(check_piece_size(1 << 30).is_err());
    }
}
