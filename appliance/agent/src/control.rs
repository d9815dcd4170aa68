//! The agent's control side: the device identity, the prewarm job manager (jobs in the
//! store's `jobs` record table) and one outbound device link per configured origin.

use std::sync::Arc;

use popseed_control::uplink::{self, DeviceHello};
use popseed_control::{DeviceIdentity, JobManager};
use popseed_fetch::Fetcher;
use popseed_origin::OriginSpec;
use popseed_release::PublicKey;
use popseed_store::Store;
use tokio_util::sync::CancellationToken;

use crate::run::AgentError;
use popseed_config::ControlSection;

pub struct Control {
    pub device: Arc<DeviceIdentity>,
    pub device_name: String,
    pub jobs: Arc<JobManager>,
    pub token: Option<String>,
}

/// Jobs as the status server shows them.
struct JobsForStatus(Arc<JobManager>);

impl popseed_status::JobsView for JobsForStatus {
    fn jobs(&self) -> Vec<popseed_status::JobSummary> {
        self.0
            .list()
            .into_iter()
            .map(|j| popseed_status::JobSummary {
                infohash: j.infohash,
                state: j.state,
                source: j.source.label(),
                pinned: j.pin,
                id: j.id,
                name: j.name,
                reason: j.reason,
                priority: j.priority,
                deadline: j.deadline,
                bytes_done: j.bytes_done,
                bytes_total: j.bytes_total,
                eta_secs: j.eta_secs,
                at_risk: j.at_risk,
            })
            .collect()
    }
}

impl Control {
    /// The jobs, for the status server (dashboard, /readyz, /metrics).
    pub fn jobs_view(&self) -> Arc<dyn popseed_status::JobsView> {
        Arc::new(JobsForStatus(self.jobs.clone()))
    }

    /// The staff API routes (`/api/jobs...`), without auth (the status server adds it).
    pub fn staff_router(&self) -> axum::Router {
        popseed_control::api::staff_router(self.jobs.clone())
    }
}

pub fn start(
    c: &ControlSection,
    device: Arc<DeviceIdentity>,
    store: Arc<Store>,
    fetcher: Arc<Fetcher>,
    origins: Vec<OriginSpec>,
    trusted: Vec<PublicKey>,
    shutdown: CancellationToken,
) -> Result<Control, AgentError> {
    let token = c.token().map_err(AgentError::Token)?;
    let fp = device.fingerprint();
    let device_name = c
        .device_name
        .clone()
        .unwrap_or_else(|| format!("popseed-{}", fp.trim_start_matches("SHA256:").chars().take(6).collect::<String>()));
    tracing::info!(fingerprint = %fp, name = %device_name, "device identity");
    let jobs = JobManager::open(store, fetcher, trusted, origins.clone()).map_err(AgentError::Control)?;
    tokio::spawn(jobs.clone().run(shutdown.clone()));
    for o in origins {
        tokio::spawn(uplink::run(
            o,
            device.clone(),
            DeviceHello { name: device_name.clone() },
            jobs.clone(),
            shutdown.clone(),
        ));
    }
    Ok(Control { device, device_name, jobs, token })
}
