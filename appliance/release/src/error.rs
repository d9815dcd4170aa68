//! Typed errors for everything in this crate: scanning a source tree, building and parsing
//! metainfo, keys, manifests and verification.

use std::path::PathBuf;

/// Everything that can go wrong while publishing, loading or verifying a release.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("{0}: no files to publish (the directory is empty)")]
    EmptySource(PathBuf),
    #[error("{0}: nothing to publish (every file is empty)")]
    ZeroSize(PathBuf),
    #[error("{path}: symlink points outside the source tree (to {target})")]
    SymlinkOutside { path: PathBuf, target: PathBuf },
    #[error("{0}: symlinks to directories are not supported")]
    SymlinkToDirectory(PathBuf),
    #[error("{0}: not a regular file or directory")]
    SpecialFile(PathBuf),
    #[error("{0}: file name is not valid UTF-8")]
    NonUtf8Name(PathBuf),
    #[error("unsafe path in release: {0:?} (empty, '.', '..', absolute or with a separator)")]
    UnsafePath(String),
    #[error("invalid piece size {0}: must be a power of two between 16 KiB and 64 MiB")]
    BadPieceSize(u64),
    #[error("invalid critical range {spec:?}: {reason}")]
    BadCritical { spec: String, reason: String },
    #[error("critical range {0:?} matches no file")]
    CriticalMatchesNothing(String),
    #[error("invalid duration {input:?}")]
    BadDuration {
        input: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("invalid web seed URL {0:?}: must start with http:// or https://")]
    BadWebSeed(String),
    #[error("output directory {out} is inside the source {src}: it would be published with the release")]
    OutInsideSource { out: PathBuf, src: PathBuf },
    #[error("{path}: file changed while publishing (size {expected} became {actual})")]
    SourceChanged { path: PathBuf, expected: u64, actual: u64 },

    #[error("{path}: not a valid key file")]
    KeyPem {
        path: PathBuf,
        #[source]
        source: KeyPemError,
    },
    #[error("public key {key:?}: {problem}")]
    BadPublicKey { key: String, problem: &'static str },
    #[error("public key {key:?}")]
    PublicKeyBase64 {
        key: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("public key {key:?}")]
    PublicKeyInvalid {
        key: String,
        #[source]
        source: ed25519_dalek::SignatureError,
    },
    #[error("{0} already exists (refusing to overwrite a key)")]
    KeyExists(PathBuf),

    #[error("invalid .torrent: {0}")]
    BadTorrent(String),
    #[error("invalid .torrent")]
    TorrentBencode(#[source] crate::bencode::BencodeError),
    #[error("invalid .torrent")]
    TorrentDecode(#[source] librqbit_bencode::DeserializeError),
    #[error("cannot encode the .torrent")]
    TorrentEncode(#[source] librqbit_bencode::SerializeError),
    #[error("invalid manifest: {0}")]
    BadManifest(String),
    #[error("invalid manifest ({what})")]
    ManifestJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest signature does not verify: the manifest was modified or signed by another key")]
    BadSignature,
    #[error("this box trusts no publisher key (trusted_keys is empty), so it refuses every release (this one is signed by {actual})")]
    NoTrustedKeys { actual: String },
    #[error("manifest is signed by {actual}, expected {expected}")]
    WrongKey { expected: String, actual: String },
    #[error(".torrent does not match the manifest: {0}")]
    TorrentMismatch(String),
    #[error("data does not match the release: {0}")]
    DataMismatch(String),
}

/// What was wrong with a PEM key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyPemError {
    #[error("expected an ed25519 PKCS#8 private key PEM")]
    Private(#[source] ed25519_dalek::pkcs8::Error),
    #[error("expected an ed25519 public key PEM")]
    Public(#[source] ed25519_dalek::pkcs8::spki::Error),
}

impl ReleaseError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReleaseError::Io { path: path.into(), err: source }
    }
}

pub type Result<T, E = ReleaseError> = std::result::Result<T, E>;
