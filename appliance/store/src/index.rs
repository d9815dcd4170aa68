//! The sled index: the small, durable facts about the store. Never piece bytes.
//!
//! Trees:
//! - `releases`: infohash (20 bytes) -> JSON [`ReleaseRecord`]
//! - `pieces`:   infohash ++ piece index (u32 big-endian) -> empty; present only for pieces whose
//!   bytes were durable and hash-checked before the key was written
//! - `access`:   infohash -> last access, unix seconds (u64 big-endian), written lazily
//!
//! Every other tree is another component's record table ([`crate::RecordTable`], e.g. `jobs`);
//! the three names above are refused for those.

use std::path::Path;

use popseed_core::InfoHash;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// What the index remembers about one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub name: String,
    pub version: String,
    pub piece_count: u32,
    pub total_size: u64,
    pub pinned: bool,
    /// Unix seconds when the release was added.
    pub added_at: u64,
    /// Unix seconds after which the release may be evicted first (from the manifest's ttl).
    pub expires_at: Option<u64>,
    /// Set before a removal starts; a record still marked at open is removed then.
    #[serde(default)]
    pub removing: bool,
}

pub struct Index {
    db: sled::Db,
    releases: sled::Tree,
    pieces: sled::Tree,
    access: sled::Tree,
}

fn piece_key(ih: &InfoHash, index: u32) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..20].copy_from_slice(ih.as_bytes());
    k[20..].copy_from_slice(&index.to_be_bytes());
    k
}

impl Index {
    pub fn open(path: &Path) -> Result<Index> {
        let db = sled::Config::new().path(path).open().map_err(|e| match e {
            sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked(path.to_path_buf()),
            other => StoreError::Index(other),
        })?;
        Ok(Index {
            releases: db.open_tree("releases")?,
            pieces: db.open_tree("pieces")?,
            access: db.open_tree("access")?,
            db,
        })
    }

    pub fn records(&self) -> Result<Vec<(InfoHash, ReleaseRecord)>> {
        let mut out = Vec::new();
        for kv in self.releases.iter() {
            let (k, v) = kv?;
            let ih = InfoHash::from_slice(&k).ok_or(StoreError::BadKey { tree: "releases", len: k.len() })?;
            let rec: ReleaseRecord =
                serde_json::from_slice(&v).map_err(|source| StoreError::BadRecord { infohash: ih, source })?;
            out.push((ih, rec));
        }
        Ok(out)
    }

    pub fn put_record(&self, ih: &InfoHash, rec: &ReleaseRecord) -> Result<()> {
        let v = serde_json::to_vec(rec).map_err(StoreError::Encode)?;
        self.releases.insert(ih, v)?;
        Ok(())
    }

    pub fn remove_record(&self, ih: &InfoHash) -> Result<()> {
        self.releases.remove(ih)?;
        self.access.remove(ih)?;
        Ok(())
    }

    pub fn mark_present(&self, ih: &InfoHash, index: u32) -> Result<()> {
        self.pieces.insert(piece_key(ih, index), &[])?;
        Ok(())
    }

    /// Indices of present pieces of a release, ascending.
    pub fn present_pieces(&self, ih: &InfoHash) -> impl Iterator<Item = Result<u32>> + '_ {
        self.pieces.scan_prefix(ih).map(|kv| {
            let (k, _) = kv?;
            let idx: [u8; 4] = k
                .get(20..24)
                .and_then(|s| s.try_into().ok())
                .ok_or(StoreError::BadKey { tree: "pieces", len: k.len() })?;
            Ok(u32::from_be_bytes(idx))
        })
    }

    pub fn remove_pieces(&self, ih: &InfoHash) -> Result<()> {
        let mut batch = sled::Batch::default();
        for kv in self.pieces.scan_prefix(ih) {
            batch.remove(kv?.0);
        }
        self.pieces.apply_batch(batch)?;
        Ok(())
    }

    pub fn last_access(&self, ih: &InfoHash) -> Result<Option<u64>> {
        Ok(self.access.get(ih)?.and_then(|v| v.as_ref().try_into().ok()).map(u64::from_be_bytes))
    }

    pub fn set_last_access(&self, ih: &InfoHash, t: u64) -> Result<()> {
        self.access.insert(ih, &t.to_be_bytes())?;
        Ok(())
    }

    /// A tree of the same database for another component's small records (e.g. `jobs`); the
    /// store's own trees are refused.
    pub fn record_tree(&self, name: &str) -> Result<sled::Tree> {
        if ["releases", "pieces", "access"].contains(&name) {
            return Err(StoreError::ReservedTable(name.to_owned()));
        }
        Ok(self.db.open_tree(name)?)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
