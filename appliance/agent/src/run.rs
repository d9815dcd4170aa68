//! Running the agent: open the store, admit the configured releases (signature checked against
//! the trusted keys), start the fetcher, and report progress (status file, log lines).

use std::sync::Arc;
use std::time::Duration;

use popseed_fetch::{FetchConfig, Fetcher, OriginSpec, Snapshot};
use popseed_origin::Trust;
use popseed_release::{PublicKey, VerifiedRelease};
use popseed_store::{AddOptions, Capacity, Store, StoreConfig};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("store {dir}: {err}")]
    Store { dir: std::path::PathBuf, err: popseed_store::StoreError },
    #[error("release {dir}: {err}")]
    Release { dir: std::path::PathBuf, err: String },
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop once every configured release is complete (demo, tests).
    pub exit_when_complete: bool,
    /// Print a progress line every second.
    pub progress_lines: bool,
}

/// The running parts, for the components that embed the agent (control, demo).
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
}

impl Agent {
    /// Stops the serving components (the fetcher stops with the shutdown token).
    pub async fn stop(self) {
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

fn human(n: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u < U.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", U[u])
}

/// One line per release: what a person watching the fill wants to see.
pub fn progress_line(s: &Snapshot) -> String {
    let mut parts = Vec::new();
    for r in &s.releases {
        let mut p = format!(
            "{}: {}/{} pieces, {} of {}",
            r.name,
            r.pieces_done,
            r.piece_count,
            human(r.bytes_done as f64),
            human(r.total_bytes as f64)
        );
        if r.critical_pieces > 0 {
            p.push_str(&format!(", critical {}/{}", r.critical_done, r.critical_pieces));
            if let Some(ms) = r.first_critical_ms {
                p.push_str(&format!(" (first after {ms} ms)"));
            }
        }
        if r.complete {
            p.push_str(", complete");
            if let Some(ms) = r.fill_ms {
                p.push_str(&format!(" in {:.1}s", ms as f64 / 1000.0));
            }
        }
        parts.push(p);
    }
    let eta = match s.eta_secs {
        Some(e) if e > 0.0 => format!(", ETA {e:.0}s"),
        _ => String::new(),
    };
    let origins: Vec<String> = s
        .origins
        .iter()
        .filter(|o| o.bytes > 0 || o.connected || o.dropped)
        .map(|o| format!("{} {}{}", o.name, human(o.bytes as f64), if o.dropped { " (dropped)" } else { "" }))
        .collect();
    format!(
        "{} | {}/s{} | from {}",
        parts.join("; "),
        human(s.rate),
        eta,
        if origins.is_empty() { "-".into() } else { origins.join(", ") }
    )
}

/// Opens the store, admits releases and starts the fetcher (running until `shutdown`).
pub async fn start(cfg: &AgentConfig, shutdown: CancellationToken) -> Result<Agent, AgentError> {
    popseed_origin::tls::warm_up();
    let store_cfg = StoreConfig {
        dir: cfg.store.dir.clone(),
        capacity: Capacity { budget: cfg.store.budget.map(|s| s.0), min_free: cfg.store.min_free.0 },
    };
    let dir = cfg.store.dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(store_cfg))
        .await
        .map_err(|e| AgentError::Other(e.to_string()))?
        .map_err(|err| AgentError::Store { dir: dir.clone(), err })?;
    let store = Arc::new(store);
    let trusted: Vec<PublicKey> = cfg.trusted_keys.iter().filter_map(|k| PublicKey::from_text(k).ok()).collect();
    let mut releases = Vec::new();
    for r in &cfg.releases {
        let release = VerifiedRelease::load(&r.dir, if trusted.is_empty() { None } else { Some(&trusted) })
            .map_err(|e| AgentError::Release { dir: r.dir.clone(), err: e.to_string() })?;
        store
            .add_release(&release, AddOptions { pin: r.pin, ttl_seconds: None })
            .map_err(|err| AgentError::Store { dir: dir.clone(), err })?;
        releases.push(Arc::new(release));
    }
    let origins: Vec<OriginSpec> = cfg
        .origins
        .iter()
        .enumerate()
        .map(|(i, o)| OriginSpec {
            name: o.name.clone().unwrap_or_else(|| format!("origin{} {}", i + 1, o.address)),
            addr: o.address,
            server_name: o.server_name.clone().unwrap_or_else(|| popseed_origin::client::DEFAULT_SERVER_NAME.into()),
            trust: match (&o.fingerprint, &o.ca) {
                (Some(fp), _) => Trust::Fingerprint(fp.clone()),
                (None, Some(ca)) => Trust::Ca(ca.clone()),
                (None, None) => Trust::Fingerprint(String::new()),
            },
        })
        .collect();
    let d = FetchConfig::default();
    let f = &cfg.fetch;
    let fetch_cfg = FetchConfig {
        streams_per_origin: f.streams_per_origin.unwrap_or(d.streams_per_origin),
        request_bytes: f.request_bytes.map(|s| s.0).unwrap_or(d.request_bytes),
        rate_limit: f.rate_limit.map(|s| s.0),
        connect_timeout: f.connect_timeout.map(|x| x.0).unwrap_or(d.connect_timeout),
        backoff_max: f.backoff_max.map(|x| x.0).unwrap_or(d.backoff_max),
        web_seed_after: f.web_seed_after.map(|x| x.0).unwrap_or(d.web_seed_after),
        web_seed_parallel: d.web_seed_parallel,
    };
    let fetcher = Fetcher::new(store.clone(), origins.clone(), fetch_cfg);
    fetcher.attach_read_through();
    for r in &releases {
        fetcher.add_release(r.clone()).map_err(|err| AgentError::Store { dir: dir.clone(), err })?;
    }
    tokio::spawn(fetcher.clone().run(shutdown.clone()));
    let control = match &cfg.control {
        Some(c) => {
            Some(crate::control::start(c, store.clone(), fetcher.clone(), origins, trusted.clone(), shutdown.clone())?)
        }
        None => None,
    };
    let swarm = match &cfg.swarm {
        Some(sc) => Some(
            popseed_swarm::Swarm::start(store.clone(), sc.clone(), shutdown.clone())
                .await
                .map_err(|e| AgentError::Other(format!("swarm: {e}")))?,
        ),
        None => None,
    };
    let portal = match &cfg.portal {
        Some(pc) => {
            let mut pc = pc.clone();
            if pc.tracker_url.is_none() {
                pc.tracker_url = swarm.as_ref().and_then(|s| s.tracker_url());
            }
            Some(
                popseed_portal::Portal::start(store.clone(), pc)
                    .await
                    .map_err(|e| AgentError::Other(format!("portal: {e}")))?,
            )
        }
        None => None,
    };
    let status = match &cfg.control {
        Some(c) => Some(start_status(c, &store, &fetcher, swarm.as_ref(), portal.as_ref(), control.as_ref()).await?),
        None => None,
    };
    Ok(Agent { store, fetcher, releases, swarm, portal, control, status })
}

/// Starts the status server (health, readiness, metrics, dashboard) on `[control] listen`.
async fn start_status(
    c: &crate::config::ControlSection,
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
                tracing::warn!(error = %e, "cannot read the device public key");
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
        token: c.token().map_err(|e| AgentError::Other(e.to_string()))?,
        device: popseed_status::DeviceInfo { name, fingerprint, venue: c.venue.clone() },
    };
    let sources = popseed_status::Sources {
        store: store.clone(),
        fetcher: fetcher.clone(),
        swarm: swarm.map(|s| s.stats().clone()),
        portal: portal.map(|p| p.stats.clone()),
        jobs: match control {
            Some(k) => k.jobs_view(),
            None => Arc::new(popseed_status::NoJobs),
        },
    };
    let staff_api = control.map(|k| k.staff_router()).unwrap_or_default();
    popseed_status::StatusServer::start(cfg, sources, staff_api).await.map_err(|e| AgentError::Other(e.to_string()))
}

fn write_status(path: &std::path::Path, s: &Snapshot) {
    let tmp = path.with_extension("tmp");
    let ok = serde_json::to_vec_pretty(s)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
    }
}

/// Runs the agent until `shutdown` (or completion, with `exit_when_complete`).
pub async fn run(cfg: AgentConfig, opts: RunOptions, shutdown: CancellationToken) -> Result<(), AgentError> {
    let agent = start(&cfg, shutdown.child_token()).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n = 0u64;
    let fetcher = agent.fetcher.clone();
    let complete = fetcher.wait_complete();
    tokio::pin!(complete);
    let mut completed = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            // with exit_when_complete, leave at completion, not at the next tick
            _ = &mut complete, if opts.exit_when_complete && !completed => completed = true,
        }
        n += 1;
        let snap = agent.fetcher.snapshot();
        if let Some(p) = &cfg.status_file {
            write_status(p, &snap);
        }
        if opts.progress_lines && (n.is_multiple_of(4) || snap.complete) {
            eprintln!("{}", progress_line(&snap));
        }
        if opts.exit_when_complete && snap.complete {
            break;
        }
    }
    shutdown.cancel();
    agent.stop().await;
    Ok(())
}
