//! Typed errors of the piece store.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("store index: {0}")]
    Index(sled::Error),
    #[error("{0}: the store is in use by another process")]
    Locked(PathBuf),
    #[error("store index is damaged: {0}")]
    Corrupt(String),
    #[error("release {0} is not in the store")]
    UnknownRelease(String),
    #[error("piece {index} out of range (release has {count} pieces)")]
    BadPieceIndex { index: u32, count: u32 },
    #[error("piece {index}: got {got} bytes, expected {expected}")]
    WrongLength { index: u32, expected: u32, got: usize },
    #[error("piece {index}: SHA-1 does not match the signed release")]
    HashMismatch { index: u32 },
    #[error("piece {piece} is not present in the store")]
    NotPresent { piece: u32 },
    #[error("file {file} out of range or byte range past its end")]
    BadRange { file: usize },
    #[error("store full: {need} more bytes needed, {used} used of a {budget} byte budget, {free} bytes free on disk (floor {floor}); nothing left to evict (pinned or in use)")]
    Full { need: u64, used: u64, budget: u64, free: u64, floor: u64 },
    #[error(transparent)]
    Release(#[from] popseed_release::ReleaseError),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { path: path.into(), err: source }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Index(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
