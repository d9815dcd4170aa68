//! popseed-status: what the box says about itself on the management address.
//!
//! * `GET /healthz` (liveness), `GET /readyz` (200 when every pinned job is ready, 503 with the
//!   reason), `GET /metrics` (Prometheus/OpenMetrics text): open, for monitoring.
//! * `GET /` (the operator dashboard), `GET /api/status` (JSON) and the staff API routes handed
//!   in as `extra`: behind the staff token (bearer header or the dashboard's session cookie).
//!
//! Modules: [`views`] and [`jobs`] (the ports the agent implements over the fetcher, swarm,
//! portal and jobs), [`gather`] (reading them),
//! [`report`] (the status and the readiness rule, pure), [`metrics`], [`samples`] (rates and
//! sparklines, pure), [`errors`] (the recent-errors tracing layer), [`auth`], [`dashboard`]
//! (maud pages), [`http`] (the axum application). See docs/operator-guide.md.

pub mod auth;
pub mod dashboard;
pub mod errors;
pub mod gather;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod report;
pub mod samples;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use gather::Sources;
pub use jobs::{JobSummary, JobsView, NoJobs};
pub use report::{DeviceInfo, StatusReport};
pub use views::{
    FillStatus, FillView, NoFill, PortalCounters, PortalView, ReleaseFill, SourceFill, SwarmCounters, SwarmView,
};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot listen on the management address {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Where to listen, the staff token (None: dashboard and staff API off) and who the box is.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub device: DeviceInfo,
}

/// A running status server (and its once-a-second rate sampler).
pub struct StatusServer {
    addr: SocketAddr,
    shared: Arc<http::Shared>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl StatusServer {
    /// Binds `cfg.listen` and serves until [`StatusServer::stop`]. Recent errors come from the
    /// process-wide [`errors::global`] buffer (filled by [`errors::layer`]).
    pub async fn start(cfg: StatusConfig, sources: Sources, extra: axum::Router) -> Result<StatusServer, StatusError> {
        let listener =
            TcpListener::bind(cfg.listen).await.map_err(|source| StatusError::Bind { addr: cfg.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StatusError::Bind { addr: cfg.listen, source })?;
        let shared = Arc::new(http::Shared::new(cfg.token.as_deref(), cfg.device, sources, errors::global().clone()));
        let app = http::router(shared.clone(), extra);
        let shutdown = CancellationToken::new();
        let serve = tokio::spawn(popseed_http::serve(
            listener,
            app,
            popseed_http::DEFAULT_LIMITS,
            shared.http.clone(),
            shutdown.clone(),
        ));
        let sd = shutdown.clone();
        let sh = shared.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = sd.cancelled() => return,
                    _ = tick.tick() => sh.sample(),
                }
            }
        });
        tracing::info!(%addr, "management address: /healthz /readyz /metrics, dashboard and staff API");
        Ok(StatusServer { addr, shared, shutdown, tasks: vec![serve, sampler] })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current report (what `/api/status` returns).
    pub fn report(&self) -> StatusReport {
        self.shared.report()
    }

    /// Stops serving (open connections are closed) and the sampler.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), t).await.is_err() {
                tracing::warn!("management server did not stop within 5 s");
            }
        }
    }
}
