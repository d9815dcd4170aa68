//! popseed-portal: the captive Wi-Fi portal of the appliance. It owns the OS connectivity-probe
//! replies and the per-client acknowledge state, the server-rendered catalog page with QR code,
//! and HTTP downloads straight from the piece store (Range, ETag/If-Range, sendfile) that double
//! as a BEP 19 web seed. It runs the captive DNS responder (every name points at the box) but
//! does not own it: that is popseed-dns, shared with the setup page.
//!
//! A download that touches pieces the store lacks asks the [`popseed_core::ReadThrough`] port
//! handed to [`Portal::start`] (the agent's fetcher; `NoReadThrough` when the portal runs on its
//! own, which answers 503 at once) and waits for the store's `PieceStored` events.
//! [`PortalConfig`] is the `[portal]` section of agent.toml, from popseed-config.
//!
//! Pure logic (no sockets, unit-tested): [`probe`], [`ack`], [`range`], [`limits`], [`page`].
//! I/O shell: [`conn`] (HTTP/1.1 with sendfile) around the axum application in [`http`]. Start
//! everything with [`Portal::start`] or [`run`]; see docs/portal.md.

pub mod ack;
pub mod config;
pub mod conn;
pub mod error;
pub mod http;
pub mod limits;
pub mod media;
pub mod page;
pub mod probe;
pub mod range;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use popseed_core::ReadThrough;
use popseed_store::Store;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::{PortalConfig, Urls};
pub use error::{PortalError, Result};

/// Counters for the metrics endpoint (a later issue). Monotonic except `portal_clients`.
#[derive(Debug, Default)]
pub struct Stats {
    pub http_requests: AtomicU64,
    pub probes: AtomicU64,
    pub portal_pages: AtomicU64,
    pub acknowledgements: AtomicU64,
    /// Gauge: clients currently remembered as acknowledged.
    pub portal_clients: AtomicU64,
    pub downloads: AtomicU64,
    /// Refused by the per-client or total download cap.
    pub downloads_refused: AtomicU64,
    /// 503 because pieces were missing and could not be fetched in time (or no fetcher).
    pub downloads_unavailable: AtomicU64,
    /// Dropped because the client read nothing for `send_timeout_secs`.
    pub downloads_timed_out: AtomicU64,
    pub bytes_served: AtomicU64,
    pub connections_refused: AtomicU64,
    /// The DNS responder's counters.
    pub dns: Arc<popseed_dns::DnsStats>,
}

/// A running portal: its bound addresses, counters and URL.
pub struct Portal {
    pub http_addr: SocketAddr,
    pub dns_udp_addr: SocketAddr,
    pub dns_tcp_addr: SocketAddr,
    /// The portal URL handed to clients (`http://<portal_ip>[:port]/`).
    pub url: String,
    pub stats: Arc<Stats>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

async fn bind_dns(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let bind_err = |what: &'static str| move |source| PortalError::Bind { addr, what, source };
    let udp = UdpSocket::bind(addr).await.map_err(bind_err("dns/udp"))?;
    let udp_addr = udp.local_addr()?;
    // With port 0 the TCP listener takes the UDP socket's port.
    let tcp = TcpListener::bind(udp_addr).await.map_err(bind_err("dns/tcp"))?;
    Ok((udp, tcp))
}

impl Portal {
    /// Binds the HTTP and DNS listeners and starts serving every release in `store`; missing
    /// pieces of a download are asked of `read_through`.
    pub async fn start(store: Arc<Store>, read_through: Arc<dyn ReadThrough>, cfg: PortalConfig) -> Result<Portal> {
        cfg.validate()?;
        let http = TcpListener::bind(cfg.http_listen).await.map_err(|source| PortalError::Bind {
            addr: cfg.http_listen,
            what: "http",
            source,
        })?;
        let http_addr = http.local_addr()?;
        let (udp, tcp) = bind_dns(cfg.dns_listen).await?;
        let (dns_udp_addr, dns_tcp_addr) = (udp.local_addr()?, tcp.local_addr()?);
        let urls = Urls::new(&cfg, http_addr.port());
        let stats = Arc::new(Stats::default());
        let rules = popseed_dns::DnsRules {
            portal_ip: cfg.portal_ip,
            box_name: cfg.box_name.trim_end_matches('.').to_ascii_lowercase(),
            lan_ip: cfg.lan_ip(),
            ttl: cfg.dns_ttl,
        };
        let responder =
            Arc::new(popseed_dns::Responder::new(rules, cfg.dns_rate_per_sec, cfg.dns_burst, stats.dns.clone()));
        let url = urls.portal.clone();
        let state = Arc::new(http::AppState::new(store, read_through, cfg, urls, stats.clone()));
        let app = http::router(state.clone());
        let (tx, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(conn::serve(http, app, state, rx.clone()));
        tasks.spawn(popseed_dns::serve_udp(udp, responder.clone(), rx.clone()));
        tasks.spawn(popseed_dns::serve_tcp(tcp, responder, rx));
        tracing::info!(http = %http_addr, dns = %dns_udp_addr, "portal serving");
        Ok(Portal { http_addr, dns_udp_addr, dns_tcp_addr, url, stats, shutdown: tx, tasks })
    }

    /// Stops accepting, closes open connections and waits for the servers to end.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Runs the portal until `shutdown` completes.
pub async fn run(
    store: Arc<Store>,
    read_through: Arc<dyn ReadThrough>,
    cfg: PortalConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let portal = Portal::start(store, read_through, cfg).await?;
    shutdown.await;
    portal.stop().await;
    Ok(())
}
