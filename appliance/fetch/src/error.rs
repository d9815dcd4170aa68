//! Typed errors of the fetcher.

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Origin(#[from] popseed_origin::OriginError),
    #[error(transparent)]
    Store(#[from] popseed_store::StoreError),
    #[error("web seed: {0}")]
    WebSeed(String),
    #[error("no origin and no web seed can serve release {0}")]
    NoSource(String),
}
