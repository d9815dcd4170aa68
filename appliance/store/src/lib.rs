//! popseed-store: the appliance's piece store on NVMe.
//!
//! Piece bytes live in each release's own file layout under `STORE/releases/<infohash>/data/`
//! (pwrite, fdatasync, pread; never inside sled). The sled index under `STORE/index/` holds the
//! small facts: stored releases, one key per present-and-verified piece, pins, ttl, last access.
//! The store owns that database: other components keep their small durable records (the box's
//! prewarm jobs) in a [`RecordTable`] it hands out ([`Store::records`]) and never see sled.
//!
//! The store does not fetch. It broadcasts [`StoreEvent`]s (a piece stored, a release added or
//! removed); pieces it lacks are asked of the fetcher through the `popseed_core::ReadThrough`
//! port, which the agent hands to the portal and the swarm.
//!
//! See `docs/store.md` for the on-disk format, the record tables and the crash-safety argument.

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
