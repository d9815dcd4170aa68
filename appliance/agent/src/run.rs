//! Starting the agent: open the store, admit the configured releases (signature checked against
//! the trusted keys), start the fetcher, and wire the serving components to it through their
//! ports: the fetcher is the read-through of the portal and the swarm, and status reads every
//! component through its views ([`crate::views`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use popseed_config::{AgentConfig, ConfigError};
use popseed_control::DeviceIdentity;
use popseed_core::{chain, ReadThrough};
use popseed_fetch::{FetchConfig, Fetcher, Snapshot};
use popseed_origin::{OriginSpec, Trust, DEFAULT_SERVER_NAME};
use popseed_release::{PublicKey, VerifiedRelease};
use popseed_store::{AddOptions, Capacity, Store, StoreConfig};
use tokio_util::sync::CancellationToken;

use crate::views::{FillForStatus, PortalForStatus, SwarmForStatus};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("store {dir}")]
    Store {
        dir: PathBuf,
        #[source]
        err: popseed_store::StoreError,
    },
    #[error("opening the store {dir}: the task stopped")]
    StoreTask {
        dir: PathBuf,
        #[source]
        err: tokio::task::JoinError,
    },
    #[error("release {dir}")]
    Release {
        dir: PathBuf,
        #[source]
        err: popseed_release::ReleaseError,
    },
    #[error("staff token")]
    Token(#[source] ConfigError),
    #[error("jobs and device links")]
    Control(#[source] popseed_control::ControlError),
    #[error("swarm")]
    Swarm(#[source] popseed_swarm::SwarmError),
    #[error("portal")]
    Portal(#[source] popseed_portal::PortalError),
    #[error("management address")]
    Status(#[source] popseed_status::StatusError),
}

/// How often the status file (`status_file` in agent.toml) is rewritten.
const STATUS_FILE_INTERVAL: Duration = Duration::from_millis(250);

/// The running parts, for the binary (progress, exit when complete) and the demo.
pub struct Agent {
    pub store: Arc<Store>,
    pub fetcher: Arc<Fetcher>,
    pub releases: Vec<Arc<VerifiedRelease>>,
    pub swarm: Option<popseed_swarm::Swarm>,
    pub portal: Option<popseed_portal::Portal>,
    /// Jobs and device links (with a `[control]` section).
    pub control: Option<crate::control::Control>,
    /// Health, metrics and the dashboard on the management address (with `[control]`).
    pub status: Option<popseed_status::StatusServer>,
    /// `status_file` of agent.toml, rewritten while the agent runs and once more at stop.
    status_file: Option<PathBuf>,
}

/// Where the agent's listeners ended up (ports given as 0 are bound by the system).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundAddrs {
    pub management: Option<SocketAddr>,
    pub peers: Option<SocketAddr>,
    pub tracker: Option<SocketAddr>,
    pub portal_http: Option<SocketAddr>,
    pub portal_dns: Option<SocketAddr>,
}

impl Agent {
    pub fn addrs(&self) -> BoundAddrs {
        BoundAddrs {
            management: self.status.as_ref().map(|s| s.local_addr()),
            peers: self.swarm.as_ref().map(|s| s.peer_addr()),
            tracker: self.swarm.as_ref().and_then(|s| s.tracker_addr()),
            portal_http: self.portal.as_ref().map(|p| p.http_addr),
            portal_dns: self.portal.as_ref().map(|p| p.dns_udp_addr),
        }
    }

    /// Stops the serving components (the fetcher stops with the shutdown token) and writes
    /// the status file one last time.
    pub async fn stop(self) {
        if let Some(p) = &self.status_file {
            write_status(p, &self.fetcher.snapshot());
        }
        if let Some(s) = self.status {
            s.stop().await;
        }
        if let Some(p) = self.portal {
            p.stop().await;
        }
        if let Some(s) = self.swarm {
            s.shutdown().await;
        }
    }
}

/// The origins of agent.toml as the fetcher and the device links dial them.
pub fn origin_specs(cfg: &AgentConfig) -> Vec<OriginSpec> {
    cfg.origins
        .iter()
        .enumerate()
        .map(|(i, o)| OriginSpec {
            name: o.name.clone().unwrap_or_else(|| format!("origin{} {}", i + 1, o.address)),
            addr: o.address,
            server_name: o.server_name.clone().unwrap_or_else(|| DEFAULT_SERVER_NAME.into()),
            trust: match (&o.fingerprint, &o.ca) {
                (Some(fp), _) => Trust::Fingerprint(fp.clone()),
                (None, Some(ca)) => Trust::Ca(ca.clone()),
                (None, None) => Trust::Fingerprint(String::new()),
            },
        })
        .collect()
}

/// [`FetchConfig::venue_grace`] when the box downloads from peers and agent.toml names none.
pub const DEFAULT_VENUE_GRACE: Duration = Duration::from_secs(1);

/// The fetcher's settings from `[fetch]`, defaults where a key is absent.
pub fn fetch_config(cfg: &AgentConfig) -> FetchConfig {
    let d = FetchConfig::default();
    let f = &cfg.fetch;
    let finds_peers = cfg.swarm.as_ref().is_some_and(|s| s.lsd || !f.peers.is_empty());
    FetchConfig {
        streams_per_origin: f.streams_per_origin.unwrap_or(d.streams_per_origin),
        request_bytes: f.request_bytes.map(|s| s.get()).unwrap_or(d.request_bytes),
        rate_limit: f.rate_limit.map(|s| s.get()),
        connect_timeout: f.connect_timeout.map(|x| x.0).unwrap_or(d.connect_timeout),
        backoff_max: f.backoff_max.map(|x| x.0).unwrap_or(d.backoff_max),
        web_seed_after: f.web_seed_after.map(|x| x.0).unwrap_or(d.web_seed_after),
        web_seed_parallel: d.web_seed_parallel,
        web_seed_ca: f.web_seed_ca.clone(),
        device_identity: None,
        venue_grace: f.venue_grace.map(|x| x.0).unwrap_or(if finds_peers {
            DEFAULT_VENUE_GRACE
        } else {
            Duration::ZERO
        }),
    }
}

/// Opens the store, admits releases, starts the fetcher and the configured serving components
/// (all running until `shutdown`).
pub async fn start(cfg: &AgentConfig, shutdown: CancellationToken) -> Result<Agent, AgentError> {
    popseed_origin::tls::warm_up();
    let store_cfg = StoreConfig {
        dir: cfg.store.dir.clone(),
        capacity: Capacity { budget: cfg.store.budget.map(|s| s.get()), min_free: cfg.store.min_free.get() },
    };
    let dir = cfg.store.dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(store_cfg))
        .await
        .map_err(|err| AgentError::StoreTask { dir: dir.clone(), err })?
        .map_err(|err| AgentError::Store { dir: dir.clone(), err })?;
    let store = Arc::new(store);
    // agent.toml is checked on load: every trusted key parses. No key trusts nobody: every
    // release (configured or pushed) is refused.
    let trusted: Vec<PublicKey> = cfg.trusted_keys.iter().filter_map(|k| PublicKey::from_text(k).ok()).collect();
    let mut releases = Vec::new();
    for r in &cfg.releases {
        let release = VerifiedRelease::load(&r.dir, Some(&trusted))
            .map_err(|err| AgentError::Release { dir: r.dir.clone(), err })?;
        store
            .add_release(&release, AddOptions { pin: r.pin, ttl_seconds: None })
            .map_err(|err| AgentError::Store { dir: dir.clone(), err })?;
        releases.push(Arc::new(release));
    }
    let origins = origin_specs(cfg);
    // the device identity: shown on the device link and to origins that serve listed boxes only
    let device = match &cfg.control {
        Some(c) => Some(Arc::new(DeviceIdentity::load_or_create(&c.device_key).map_err(AgentError::Control)?)),
        None => None,
    };
    let mut fetch_cfg = fetch_config(cfg);
    fetch_cfg.device_identity = device.as_ref().map(|d| d.tls_identity()).transpose().map_err(AgentError::Control)?;
    let fetcher = Fetcher::new(store.clone(), origins.clone(), fetch_cfg);
    for r in &releases {
        fetcher.add_release(r.clone()).map_err(|err| AgentError::Store { dir: dir.clone(), err })?;
    }
    tokio::spawn(fetcher.clone().run(shutdown.clone()));
    if let Some(p) = &cfg.status_file {
        tokio::spawn(status_file_loop(p.clone(), fetcher.clone(), shutdown.clone()));
    }
    let control = match (&cfg.control, device) {
        (Some(c), Some(device)) => {
            Some(crate::control::start(c, device, store.clone(), fetcher.clone(), origins, trusted, shutdown.clone())?)
        }
        _ => None,
    };
    // the port through which the portal and the swarm ask for missing pieces
    let read_through: Arc<dyn ReadThrough> = fetcher.clone();
    // and the port through which the swarm's peer connections take download work
    let swarm = match &cfg.swarm {
        Some(sc) => {
            let ports = popseed_swarm::SwarmPorts { read_through: read_through.clone(), fill: fetcher.clone() };
            let mut sc = sc.clone();
            sc.static_peers = cfg.fetch.peers.clone();
            Some(
                popseed_swarm::Swarm::start(store.clone(), ports, sc, shutdown.clone())
                    .await
                    .map_err(AgentError::Swarm)?,
            )
        }
        None => None,
    };
    let portal = match &cfg.portal {
        Some(pc) => {
            let mut pc = pc.clone();
            if pc.tracker_url.is_none() {
                pc.tracker_url = swarm.as_ref().and_then(|s| s.tracker_url());
            }
            Some(popseed_portal::Portal::start(store.clone(), read_through, pc).await.map_err(AgentError::Portal)?)
        }
        None => None,
    };
    let status = match &cfg.control {
        Some(c) => Some(start_status(c, &store, &fetcher, swarm.as_ref(), portal.as_ref(), control.as_ref()).await?),
        None => None,
    };
    Ok(Agent { store, fetcher, releases, swarm, portal, control, status, status_file: cfg.status_file.clone() })
}

/// Starts the status server (health, readiness, metrics, dashboard) on `[control] listen`.
async fn start_status(
    c: &popseed_config::ControlSection,
    store: &Arc<Store>,
    fetcher: &Arc<Fetcher>,
    swarm: Option<&popseed_swarm::Swarm>,
    portal: Option<&popseed_portal::Portal>,
    control: Option<&crate::control::Control>,
) -> Result<popseed_status::StatusServer, AgentError> {
    let pub_key = c.device_key.with_extension("pub");
    let fingerprint = if pub_key.exists() {
        match PublicKey::load(&pub_key) {
            Ok(k) => Some(k.fingerprint()),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot read the device public key");
                None
            }
        }
    } else {
        None
    };
    let fingerprint = control.map(|k| k.device.fingerprint()).or(fingerprint);
    let name = control.map(|k| k.device_name.clone()).or_else(|| c.device_name.clone()).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "popseed".into())
    });
    let cfg = popseed_status::StatusConfig {
        listen: c.listen,
        token: c.token().map_err(AgentError::Token)?,
        device: popseed_status::DeviceInfo { name, fingerprint, venue: c.venue.clone() },
    };
    let sources = popseed_status::Sources {
        store: store.clone(),
        fill: Arc::new(FillForStatus(fetcher.clone())),
        swarm: swarm.map(|s| Arc::new(SwarmForStatus(s.stats().clone())) as Arc<dyn popseed_status::SwarmView>),
        portal: portal.map(|p| Arc::new(PortalForStatus(p.stats.clone())) as Arc<dyn popseed_status::PortalView>),
        jobs: match control {
            Some(k) => k.jobs_view(),
            None => Arc::new(popseed_status::NoJobs),
        },
    };
    let staff_api = control.map(|k| k.staff_router()).unwrap_or_default();
    popseed_status::StatusServer::start(cfg, sources, staff_api).await.map_err(AgentError::Status)
}

/// Rewrites the status file with the fill's progress until `shutdown`.
async fn status_file_loop(path: PathBuf, fetcher: Arc<Fetcher>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(STATUS_FILE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => write_status(&path, &fetcher.snapshot()),
        }
    }
}

/// Writes the progress snapshot as JSON, atomically (temp file, rename).
pub fn write_status(path: &Path, s: &Snapshot) {
    let tmp = path.with_extension("tmp");
    let ok = serde_json::to_vec_pretty(s)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        tracing::warn!(path = %path.display(), error = %popseed_core::chain(&e), "cannot write the status file");
    }
}
