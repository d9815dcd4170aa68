//! popseed-control: prewarm jobs and the links that bring them.
//!
//! - [`job`]: what a job is (spec, record, states, reports).
//! - [`book`]: the jobs persisted in the store's `jobs` record table, and the pure planner
//!   (order, state, ETA, risk).
//! - [`manager`]: admits jobs (signature checks, refusals recorded) and drives the fetcher.
//! - [`link`]: the device link's messages and framing, no I/O.
//! - [`uplink`]: the box's side of the link: dial out to origins, take pushed jobs, report.
//! - [`hub`]: the origin's side: allow-list, queued jobs, deliveries and reports.
//! - [`identity`]: the device key pair, its TLS certificate and fingerprint.
//! - [`api`]: the staff API (box) and the admin API (origin), HTTP+JSON with bearer tokens.

pub mod api;
pub mod book;
pub mod error;
pub mod hub;
pub mod identity;
pub mod job;
pub mod link;
pub mod manager;
pub mod uplink;

pub use error::ControlError;
pub use hub::ControlHub;
pub use identity::DeviceIdentity;
pub use job::{JobRecord, JobReport, JobSource, JobSpec, JobState, ReleaseSource};
pub use manager::JobManager;
