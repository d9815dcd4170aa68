//! Errors of the portal crate: what can go wrong starting the servers or serving a request.

use std::net::SocketAddr;

/// Everything the portal reports to its caller.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { addr: SocketAddr, what: &'static str, source: std::io::Error },
    #[error("invalid portal configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] popseed_store::StoreError),
    #[error("release: {0}")]
    Release(#[from] popseed_release::ReleaseError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = PortalError> = std::result::Result<T, E>;
