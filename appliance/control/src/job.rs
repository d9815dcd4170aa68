//! What a prewarm job is: the spec a publisher or staff member submits (which release, by when,
//! how urgent, pin, ttl), the record the box keeps (state and why), and the report an origin
//! sees. Plain data, serialized as JSON in the store's `jobs` record table and on the wire.

use popseed_core::InfoHash;
use serde::{Deserialize, Serialize};

/// Where the job's release comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReleaseSource {
    /// The signed manifest and the .torrent themselves, base64.
    Inline { manifest_b64: String, torrent_b64: String },
    /// Ask the box's origins for the release with this infohash.
    Origin { infohash: InfoHash },
}

/// A prewarm job as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Set by origins (the same id on every box); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// A label; the release name when absent.
    #[serde(default)]
    pub name: Option<String>,
    pub release: ReleaseSource,
    /// Ready by (unix seconds).
    #[serde(default)]
    pub deadline: Option<u64>,
    /// Higher first; equal priorities go earliest deadline first.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub pin: bool,
    /// Seconds after which the release may be evicted.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

pub use popseed_core::JobState;

/// Who submitted a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "lowercase")]
pub enum JobSource {
    Staff,
    /// An origin, by the name the box's config gives it.
    Origin {
        origin: String,
    },
}

impl JobSource {
    pub fn label(&self) -> String {
        match self {
            JobSource::Staff => "staff".into(),
            JobSource::Origin { origin } => format!("origin {origin}"),
        }
    }
}

/// What the box keeps about a job (JSON in the store's `jobs` record table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    /// None while the release is being asked from an origin.
    pub infohash: Option<InfoHash>,
    pub source: JobSource,
    /// Set for jobs whose release must still be asked from the origins.
    #[serde(default)]
    pub pending: Option<ReleaseSource>,
    pub deadline: Option<u64>,
    pub priority: i32,
    pub pin: bool,
    pub ttl_seconds: Option<u64>,
    pub state: JobState,
    /// Why it failed, or what it waits for.
    pub reason: Option<String>,
    pub created: u64,
    pub updated: u64,
    pub ready_at: Option<u64>,
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: u64,
    #[serde(default)]
    pub eta_secs: Option<f64>,
    /// It cannot meet its deadline at the current rate.
    #[serde(default)]
    pub at_risk: bool,
}

/// A job's state as an origin (or `popseed job push --wait`) sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    pub id: String,
    pub name: String,
    pub state: JobState,
    pub reason: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub eta_secs: Option<f64>,
    pub at_risk: bool,
}

impl From<&JobRecord> for JobReport {
    fn from(j: &JobRecord) -> Self {
        JobReport {
            id: j.id.clone(),
            name: j.name.clone(),
            state: j.state,
            reason: j.reason.clone(),
            bytes_done: j.bytes_done,
            bytes_total: j.bytes_total,
            eta_secs: j.eta_secs,
            at_risk: j.at_risk,
        }
    }
}

/// A fresh random job id (16 hex digits).
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}
