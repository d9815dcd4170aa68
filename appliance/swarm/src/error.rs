//! Typed errors of the swarm crate.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("cannot listen for peers on {addr}: {err}")]
    ListenPeers { addr: SocketAddr, err: std::io::Error },
    #[error("cannot listen for the tracker on {addr}: {err}")]
    ListenTracker { addr: SocketAddr, err: std::io::Error },
    #[error("release {0} is not in the store")]
    UnknownRelease(String),
    #[error(transparent)]
    Store(#[from] popseed_store::StoreError),
    #[error(transparent)]
    Release(#[from] popseed_release::ReleaseError),
}
