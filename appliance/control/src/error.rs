//! The control crate's errors. Each variant says what failed; the cause (store, I/O, QUIC,
//! framing, the origin crate) is its `source`.

use std::path::PathBuf;

use crate::link::FrameError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("job store")]
    Store(#[from] popseed_store::StoreError),
    #[error("cannot encode a job record")]
    Encode(#[source] serde_json::Error),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("device key {path}: the file name must end in .key")]
    DeviceKeyName { path: PathBuf },
    #[error("device key {path}")]
    DeviceKey {
        path: PathBuf,
        #[source]
        source: popseed_release::ReleaseError,
    },
    #[error("device key {path}: cannot encode it as PKCS#8")]
    DeviceKeyEncode {
        path: PathBuf,
        #[source]
        source: ed25519_dalek::pkcs8::Error,
    },
    #[error("device certificate")]
    DeviceCert(#[source] popseed_origin::OriginError),
    #[error("client certificate: {0}")]
    BadClientCert(&'static str),
    #[error("client certificate key")]
    ClientCertKey(#[source] ed25519_dalek::SignatureError),
    #[error("device link")]
    Dial(#[source] popseed_origin::OriginError),
    #[error("device link: {0}")]
    Timeout(&'static str),
    #[error("device link")]
    Connection(#[from] quinn::ConnectionError),
    #[error("device link write")]
    Write(#[from] quinn::WriteError),
    #[error("device link read")]
    Read(#[from] quinn::ReadToEndError),
    #[error("device link message")]
    Frame(#[from] FrameError),
    #[error("invalid job: {0}")]
    BadJob(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("no job {0}")]
    NoSuchJob(String),
}
