//! The crate's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("board profile {path}: {msg}")]
    Profile { path: PathBuf, msg: String },
    #[error("no board profile with id {0:?}")]
    NoSuchBoard(String),
    #[error("device key: {0}")]
    Key(#[from] popseed_release::ReleaseError),
    #[error("{cmd}: {msg}")]
    Command { cmd: String, msg: String },
    #[error("rendered agent.toml does not parse: {0}")]
    AgentConfig(String),
    #[error("status file {path}: {msg}")]
    Status { path: PathBuf, msg: String },
    #[error("setup server: {0}")]
    Setup(String),
}

impl ProvisionError {
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        ProvisionError::Io { path: path.into(), err }
    }
}

pub type Result<T, E = ProvisionError> = std::result::Result<T, E>;
