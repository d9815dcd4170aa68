//! popseed-core: the vocabulary every popseed crate shares, one type or helper per idea.
//!
//! - [`InfoHash`]: a release's BitTorrent v1 infohash; hex is its only text form.
//! - [`PieceIndex`]: the index of a piece within a release.
//! - [`JobState`]: where a prewarm job is (control moves it, status and the CLI show it).
//! - [`ByteSize`]: byte counts as people write and read them (`16MiB`, `1.5 GiB`).
//! - [`clock`]: wall-clock time as unix seconds behind the [`Clock`] trait, and its formatting.
//! - [`TokenBucket`] (pure, time passed in) and [`RateLimiter`] (shared, async): every rate cap.
//! - [`Backoff`]: the retry delays of every reconnect loop.
//! - [`parse_fingerprint`]: a pinned certificate fingerprint as people write it.
//! - [`error::chain`]: one line for an error and its sources, for logs and reasons.
//! - [`ReadThrough`]: the port through which the portal and the swarm ask the fetcher for
//!   pieces the store lacks; [`PeerFill`]: the port through which the swarm's peer connections
//!   take download work from the fetcher.
//!
//! Nothing here does I/O except [`RateLimiter::acquire`], which sleeps.

pub mod backoff;
pub mod clock;
pub mod error;
pub mod fingerprint;
pub mod infohash;
pub mod job;
pub mod peer_fill;
pub mod piece;
pub mod rate;
pub mod read_through;
pub mod size;

pub use backoff::Backoff;
pub use clock::{unix_now, Clock, ManualClock, SystemClock};
pub use error::chain;
pub use fingerprint::{parse_fingerprint, BadFingerprint};
pub use infohash::{InfoHash, ParseInfoHashError};
pub use job::JobState;
pub use peer_fill::{NoPeerFill, PeerFill, PeerSourceId};
pub use piece::PieceIndex;
pub use rate::{PerKey, RateLimiter, TokenBucket};
pub use read_through::{NoReadThrough, ReadThrough};
pub use size::{ByteSize, ParseSizeError};
