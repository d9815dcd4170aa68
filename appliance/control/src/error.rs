//! The control crate's errors.

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("job store: {0}")]
    Db(#[from] sled::Error),
    #[error("store: {0}")]
    Store(#[from] popseed_store::StoreError),
    #[error("{path}: {err}")]
    Io { path: std::path::PathBuf, err: std::io::Error },
    #[error("device key {path}: {reason}")]
    DeviceKey { path: std::path::PathBuf, reason: String },
    #[error("link: {0}")]
    Link(String),
    #[error("invalid job: {0}")]
    BadJob(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("no job {0}")]
    NoSuchJob(String),
    #[error("{0}")]
    Internal(String),
}
