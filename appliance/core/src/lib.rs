//! popseed-core: the vocabulary every popseed crate shares, one type or helper per idea.
//!
//! - [`InfoHash`]: a release's BitTorrent v1 infohash; hex is its only text form.
//! - [`PieceIndex`]: the index of a piece within a release.
//! - [`ByteSize`]: byte counts as people write and read them (`16MiB`, `1.5 GiB`).
//! - [`clock`]: wall-clock time as unix seconds behind the [`Clock`] trait, and its formatting.
//! - [`TokenBucket`] (pure, time passed in) and [`RateLimiter`] (shared, async): every rate cap.
//! - [`Backoff`]: the retry delays of every reconnect loop.
//!
//! Nothing here does I/O except [`RateLimiter::acquire`], which sleeps.

pub mod backoff;
pub mod clock;
pub mod infohash;
pub mod piece;
pub mod rate;
pub mod size;

pub use backoff::Backoff;
pub use clock::{unix_now, Clock, ManualClock, SystemClock};
pub use infohash::{InfoHash, ParseInfoHashError};
pub use piece::PieceIndex;
pub use rate::{RateLimiter, TokenBucket};
pub use size::{ByteSize, ParseSizeError};
