//! Typed errors of the origin protocol, server and client.

use std::path::PathBuf;

use crate::proto::ProtoError;

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("listening on {addr}: {err}")]
    Bind { addr: std::net::SocketAddr, err: std::io::Error },
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: std::net::SocketAddr, reason: String },
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream: {0}")]
    Stream(String),
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    #[error("origin does not serve release {0}")]
    UnknownRelease(String),
    #[error(transparent)]
    Release(#[from] popseed_release::ReleaseError),
}

impl From<quinn::WriteError> for OriginError {
    fn from(e: quinn::WriteError) -> Self {
        OriginError::Stream(e.to_string())
    }
}

impl From<quinn::ReadError> for OriginError {
    fn from(e: quinn::ReadError) -> Self {
        OriginError::Stream(e.to_string())
    }
}

impl From<quinn::ReadToEndError> for OriginError {
    fn from(e: quinn::ReadToEndError) -> Self {
        OriginError::Stream(e.to_string())
    }
}
