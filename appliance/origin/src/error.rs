//! Typed errors of the origin protocol crate (server, client, TLS settings). Each variant says
//! what failed; the cause (I/O, rustls, quinn, framing) is its `source`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use popseed_core::InfoHash;

use crate::proto::{ProtoError, Status};

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("TLS settings")]
    Tls(#[from] rustls::Error),
    #[error("making a certificate")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS settings for QUIC")]
    QuicTls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    #[error("{0}: no private key in the file")]
    NoPrivateKey(PathBuf),
    #[error("pinned origin certificate")]
    BadFingerprint(#[from] popseed_core::BadFingerprint),
    #[error("listening on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        err: std::io::Error,
    },
    #[error("cannot dial {addr}")]
    Dial {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
    #[error("connecting to {addr}: no answer within {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("connecting to {addr}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("connection lost")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream write")]
    Write(#[from] quinn::WriteError),
    #[error("stream read")]
    Read(#[from] quinn::ReadError),
    #[error("stream read")]
    ReadToEnd(#[from] quinn::ReadToEndError),
    #[error("protocol")]
    Proto(#[from] ProtoError),
    #[error("origin does not serve release {infohash} (status {status:?})")]
    NotServed { infohash: InfoHash, status: Status },
    #[error("served release")]
    Release(#[from] popseed_release::ReleaseError),
}
