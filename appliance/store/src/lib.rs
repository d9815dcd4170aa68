//! popseed-store: the appliance's piece store on NVMe.
//!
//! Piece bytes live in each release's own file layout under `STORE/releases/<infohash>/data/`
//! (pwrite, fdatasync, pread; never inside sled). The sled index under `STORE/index/` holds the
//! small facts: stored releases, one key per present-and-verified piece, pins, ttl, last access.
//! See `docs/store.md` for the on-disk format and the crash-safety argument.

pub mod bitfield;
pub mod capacity;
pub mod error;
mod files;
mod index;
mod records;
mod stats;
pub mod store;

pub use bitfield::Bitfield;
pub use capacity::Capacity;
pub use error::{Result, StoreError};
pub use records::RecordTable;
pub use stats::StoreStats;
pub use store::{AddOptions, ImportReport, Put, ReleaseInfo, Store, StoreConfig, StoreEvent, Usage};
