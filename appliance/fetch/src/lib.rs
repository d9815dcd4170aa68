//! popseed-fetch: fills the piece store from origin seeds. [`Fetcher`] implements the
//! [`popseed_core::ReadThrough`] port: pieces the portal or the swarm are asked for and the store
//! lacks are fetched ahead of everything else.
//!
//! - [`scheduler`]: which piece next, from which origin (pure, unit-tested).
//! - [`fill`]: the async shell: origin connections with backoff and several streams in flight,
//!   verified puts into the store, failover, web seed fallback, rate cap.
//! - [`webseed`]: BEP 19 HTTP Range fetches.
//! - [`progress`]: what the fill has done (rates, ETA, per-origin counters).

pub mod error;
pub mod fill;
pub mod progress;
pub mod scheduler;
pub mod webseed;

pub use error::FetchError;
pub use fill::{FetchConfig, Fetcher};
pub use progress::Snapshot;
