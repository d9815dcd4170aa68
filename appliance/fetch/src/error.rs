//! Typed errors of the fetcher's sources (the web seed); origin and store errors keep their
//! own types as sources.

use popseed_core::PieceIndex;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("origin")]
    Origin(#[from] popseed_origin::OriginError),
    #[error("store")]
    Store(#[from] popseed_store::StoreError),
    #[error("web seed CA file {path}")]
    WebSeedCa {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("web seed TLS settings")]
    Tls(#[source] rustls::Error),
    #[error("web seed HTTP client")]
    WebSeedClient(#[source] reqwest::Error),
    #[error("web seed has no piece {0} in this release")]
    NoSuchPiece(PieceIndex),
    #[error("web seed {url}")]
    WebSeedRequest {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("web seed {url}: HTTP {status}")]
    WebSeedStatus { url: String, status: u16 },
    #[error("web seed {url}: short or oversized answer for bytes {first}-{last}")]
    WebSeedLength { url: String, first: u64, last: u64 },
}
