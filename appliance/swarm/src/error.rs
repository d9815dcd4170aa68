//! Typed errors of the swarm crate.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("cannot listen for peers on {addr}")]
    ListenPeers {
        addr: SocketAddr,
        #[source]
        err: std::io::Error,
    },
    #[error("cannot listen for the tracker on {addr}")]
    ListenTracker {
        addr: SocketAddr,
        #[source]
        err: std::io::Error,
    },
    #[error("store")]
    Store(#[from] popseed_store::StoreError),
    #[error("release")]
    Release(#[from] popseed_release::ReleaseError),
}
