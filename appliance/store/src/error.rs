//! Typed errors of the piece store. Each variant's text says what failed; the underlying
//! error (I/O, sled, JSON) is its `source`, printed after it by `popseed_core::error::chain`.

use std::path::PathBuf;

use popseed_core::{InfoHash, PieceIndex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("store index")]
    Index(#[from] sled::Error),
    #[error("{0}: the store is in use by another process")]
    Locked(PathBuf),
    #[error("store index is damaged: a key of {len} bytes in tree {tree:?}")]
    BadKey { tree: &'static str, len: usize },
    #[error("store index is damaged: the record of release {infohash}")]
    BadRecord {
        infohash: InfoHash,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode a record for the store index")]
    Encode(#[source] serde_json::Error),
    #[error("release directory {dir} holds release {found}, not {expected}")]
    WrongRelease { dir: PathBuf, expected: InfoHash, found: InfoHash },
    #[error("a piece-hashing thread panicked")]
    HashingPanicked,
    #[error("release {0} is not in the store")]
    UnknownRelease(InfoHash),
    #[error("piece {index} out of range (release has {count} pieces)")]
    BadPieceIndex { index: PieceIndex, count: u32 },
    #[error("piece {index}: got {got} bytes, expected {expected}")]
    WrongLength { index: PieceIndex, expected: u32, got: usize },
    #[error("piece {index}: SHA-1 does not match the signed release")]
    HashMismatch { index: PieceIndex },
    #[error("piece {piece} is not present in the store")]
    NotPresent { piece: PieceIndex },
    #[error("file {file} out of range or byte range past its end")]
    BadRange { file: usize },
    #[error("store full: {need} more bytes needed, {used} used of a {budget} byte budget, {free} bytes free on disk (floor {floor}); nothing left to evict (pinned or in use)")]
    Full { need: u64, used: u64, budget: u64, free: u64, floor: u64 },
    #[error("record table {0:?}: the name belongs to the store")]
    ReservedTable(String),
    #[error("stored release")]
    Release(#[from] popseed_release::ReleaseError),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { path: path.into(), err: source }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
