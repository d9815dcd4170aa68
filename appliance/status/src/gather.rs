//! Reading the components: [`Sources`] are the live handles (the store, and the views of the
//! fill, swarm, portal and jobs); [`Gathered`] is one consistent-enough copy of what they say,
//! from which the report and the metrics are made. Releases the agent's config fills but no job covers are
//! shown as jobs with source `config` ([`config_jobs`], pure).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use popseed_core::JobState;
use popseed_store::{ReleaseInfo, Store, Usage};

use crate::jobs::{JobSummary, JobsView};
use crate::views::{FillStatus, FillView, PortalCounters, PortalView, SwarmCounters, SwarmView};

/// The live components the status server reads.
#[derive(Clone)]
pub struct Sources {
    pub store: Arc<Store>,
    pub fill: Arc<dyn FillView>,
    /// The swarm, when it runs.
    pub swarm: Option<Arc<dyn SwarmView>>,
    /// The portal, when it runs.
    pub portal: Option<Arc<dyn PortalView>>,
    pub jobs: Arc<dyn JobsView>,
}

/// Store counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounters {
    pub pieces_stored: u64,
    pub bytes_stored: u64,
    pub evictions: u64,
    pub evicted_bytes: u64,
}

/// What the components said, read once per request.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub jobs: Vec<JobSummary>,
    pub fetch: FillStatus,
    pub releases: Vec<ReleaseInfo>,
    pub usage: Option<Usage>,
    pub store: StoreCounters,
    pub swarm: Option<SwarmCounters>,
    pub portal: Option<PortalCounters>,
}

impl Gathered {
    /// Bytes more pieces may take: under the budget and above the free-space floor.
    pub fn store_free(&self) -> u64 {
        match self.usage {
            Some(u) => {
                let disk = u.free_on_disk.saturating_sub(u.min_free);
                u.budget.map_or(disk, |b| b.saturating_sub(u.used).min(disk))
            }
            None => 0,
        }
    }
}

impl Sources {
    pub fn gather(&self) -> Gathered {
        let fetch = self.fill.fill();
        let releases = self.store.releases();
        let usage = match self.store.usage() {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::warn!(error = %popseed_core::chain(&e), "cannot read store usage");
                None
            }
        };
        let s = self.store.stats();
        let store = StoreCounters {
            pieces_stored: s.pieces_stored.load(Ordering::Relaxed),
            bytes_stored: s.bytes_stored.load(Ordering::Relaxed),
            evictions: s.evictions.load(Ordering::Relaxed),
            evicted_bytes: s.evicted_bytes.load(Ordering::Relaxed),
        };
        let portal = self.portal.as_ref().map(|p| p.counters());
        let mut jobs = self.jobs.jobs();
        jobs.extend(config_jobs(&jobs, &fetch, &releases));
        Gathered { jobs, fetch, releases, usage, store, swarm: self.swarm.as_ref().map(|s| s.counters()), portal }
    }
}

/// Releases the fetcher fills that no job covers, as `config` jobs (pinned as the store says).
pub fn config_jobs(jobs: &[JobSummary], fetch: &FillStatus, releases: &[ReleaseInfo]) -> Vec<JobSummary> {
    fetch
        .releases
        .iter()
        .filter(|r| !jobs.iter().any(|j| j.infohash == Some(r.infohash)))
        .map(|r| {
            let info = releases.iter().find(|i| i.infohash == r.infohash);
            let remaining = r.total_bytes.saturating_sub(r.bytes_done);
            let state = if r.complete { JobState::Ready } else { JobState::Filling };
            JobSummary {
                id: format!("release-{}", r.infohash),
                name: r.name.clone(),
                infohash: Some(r.infohash),
                state,
                reason: None,
                pinned: info.is_some_and(|i| i.pinned),
                priority: 0,
                deadline: None,
                bytes_done: r.bytes_done,
                bytes_total: r.total_bytes,
                eta_secs: if remaining == 0 {
                    Some(0.0)
                } else if fetch.rate > 0.0 {
                    Some(remaining as f64 / fetch.rate)
                } else {
                    None
                },
                at_risk: false,
                source: "config".into(),
            }
        })
        .collect()
}
