//! What the status side needs to know about prewarm jobs: the [`JobsView`] trait (a port the
//! agent implements over the job manager, as it does the views in [`crate::views`]), the
//! [`JobSummary`] it hands out (also the JSON of `/api/status`), and [`NoJobs`] for a box that
//! runs no jobs component.

use popseed_core::{InfoHash, JobState};
use serde::{Deserialize, Serialize};

/// One job (or one release the agent's config asks for) as the dashboard, `/api/status`,
/// `/readyz` and `/metrics` see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: String,
    pub name: String,
    /// None while the box is still asking its origins for the release.
    pub infohash: Option<InfoHash>,
    pub state: JobState,
    /// Why the job is in its state (a failure or refusal reason, "cannot meet its deadline"...).
    pub reason: Option<String>,
    pub pinned: bool,
    pub priority: i32,
    /// "Ready by", unix seconds.
    pub deadline: Option<u64>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Seconds until ready at the current rate (None: unknown, e.g. nothing is moving).
    pub eta_secs: Option<f64>,
    /// The job cannot meet its deadline at the current rate.
    pub at_risk: bool,
    /// `origin <name>`, `staff`, or `config` (a release listed in agent.toml).
    pub source: String,
}

impl JobSummary {
    /// Fraction done, 0.0..=1.0 (1.0 for an empty release).
    pub fn fraction(&self) -> f64 {
        if self.bytes_total == 0 {
            1.0
        } else {
            (self.bytes_done.min(self.bytes_total) as f64) / self.bytes_total as f64
        }
    }

    /// Counts towards readiness: pinned and not cancelled or expired.
    pub fn counts_for_readiness(&self) -> bool {
        self.pinned && self.state.is_live()
    }
}

/// The jobs component's view for status: every known job, cheap enough to call on each request.
pub trait JobsView: Send + Sync {
    fn jobs(&self) -> Vec<JobSummary>;
}

/// A box without a jobs component: no jobs (the releases from agent.toml still show).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJobs;

impl JobsView for NoJobs {
    fn jobs(&self) -> Vec<JobSummary> {
        Vec::new()
    }
}
