//! The crate's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("board profile {path}")]
    ProfileToml {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("board profile {path}: {msg}")]
    Profile { path: PathBuf, msg: &'static str },
    #[error("no board profile with id {0:?}")]
    NoSuchBoard(String),
    #[error("device key")]
    Key(#[from] popseed_release::ReleaseError),
    #[error("cannot run {cmd}")]
    Spawn {
        cmd: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd}: {status}: {stderr}")]
    Command { cmd: String, status: std::process::ExitStatus, stderr: String },
    #[error("rendered agent.toml does not parse")]
    AgentConfig(#[from] popseed_config::ConfigError),
    #[error("status file {path}")]
    Status {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("setup SSID {0:?} does not fit an SSID")]
    SetupSsid(String),
    #[error("setup page: listening on {addr}")]
    SetupListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ProvisionError {
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        ProvisionError::Io { path: path.into(), err }
    }
}

pub type Result<T, E = ProvisionError> = std::result::Result<T, E>;
