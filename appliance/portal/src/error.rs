//! Errors of the portal crate: what can go wrong starting the servers or serving a request.

use std::net::SocketAddr;

/// Everything the portal reports to its caller.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("cannot listen on {addr} ({what})")]
    Bind { addr: SocketAddr, what: &'static str, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] popseed_config::InvalidSetting),
    #[error("store")]
    Store(#[from] popseed_store::StoreError),
    #[error("release")]
    Release(#[from] popseed_release::ReleaseError),
    #[error("socket")]
    Io(#[from] std::io::Error),
    #[error("opening {path}")]
    OpenStored {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = PortalError> = std::result::Result<T, E>;
