//! popseed-swarm: the appliance seeds its stored releases to BitTorrent peers on the venue LAN.
//!
//! * [`proto`]: the per-peer protocol state machine (no I/O): handshake, BEP 10, ut_metadata,
//!   bitfield/have, choke/interest, request/piece/cancel, keep-alive, limits.
//! * [`mse`]: the MSE/PE encrypted-handshake responder (no I/O), driven by [`proto`].
//! * [`choker`], [`ratelimit`]: upload slot rotation and token buckets (pure).
//! * `net`: the tokio shell (listener, peer tasks, caps, timers).
//! * [`tracker`]: the venue HTTP tracker (announce, compact, scrape); [`lsd`]: BEP 14.
//! * [`Swarm`]: starts all of it on a [`Store`] and hands out the box's .torrent and magnets.
//!
//! See docs/swarm.md for what the box speaks and its limits.

pub mod choker;
pub mod error;
pub mod lsd;
pub mod mse;
mod net;
pub mod proto;
pub mod ratelimit;
pub mod stats;
pub mod tracker;
pub mod utp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use popseed_release::metainfo;
use popseed_store::Store;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use error::SwarmError;
pub use stats::{Stats, StatsSnapshot};
pub use tokio_util::sync::CancellationToken as Shutdown;

/// Swarm settings (the agent's config section `swarm`; every key has a default).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SwarmConfig {
    /// Where peers connect (TCP).
    pub listen: SocketAddr,
    /// Where the HTTP tracker listens; `None` disables it.
    pub tracker_listen: Option<SocketAddr>,
    /// The box's address as handed out in torrents, magnets and tracker replies. Default: the
    /// listen address when it is specific, else the address a client reached the tracker at
    /// (tracker replies) or the address of the default route's interface (links).
    pub announce_ip: Option<IpAddr>,
    /// Peer port handed out (e.g. behind a port forward). Default: the bound listen port.
    pub announce_port: Option<u16>,
    /// Tracker port handed out in links. Default: the bound tracker port.
    pub announce_tracker_port: Option<u16>,
    pub max_peers: usize,
    pub max_peers_per_ip: usize,
    /// Peers unchoked at once.
    pub upload_slots: usize,
    /// How often slots rotate among waiting peers, and how long a slot is held at least.
    pub rechoke_interval_secs: u64,
    /// Global upload cap in bytes per second; 0 = none.
    pub upload_rate: u64,
    /// Per-peer upload cap in bytes per second; 0 = none.
    pub peer_upload_rate: u64,
    /// `reqq` advertised; a peer may queue up to twice this many requests before it is dropped.
    pub request_queue: u32,
    pub idle_timeout_secs: u64,
    pub handshake_timeout_secs: u64,
    pub keepalive_secs: u64,
    /// Tracker announce interval handed to clients.
    pub tracker_interval_secs: u64,
    /// BEP 14 local service discovery (multicast 239.192.152.143:6771).
    pub lsd: bool,
    pub lsd_interval_secs: u64,
    /// Answer uTP connection attempts on the peer port with a reset, so clients that try uTP
    /// first (transmission) fall back to TCP at once instead of after a timeout.
    pub utp_reset: bool,
    /// Accept MSE/PE (encrypted) handshakes, choosing plaintext when the peer offers it.
    /// When false, an encrypted opening is dropped at once and the client retries in plaintext.
    pub mse: bool,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 6881),
            tracker_listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 6969)),
            announce_ip: None,
            announce_port: None,
            announce_tracker_port: None,
            max_peers: 200,
            max_peers_per_ip: 8,
            upload_slots: 16,
            rechoke_interval_secs: 10,
            upload_rate: 0,
            peer_upload_rate: 0,
            request_queue: 2000,
            idle_timeout_secs: 120,
            handshake_timeout_secs: 10,
            keepalive_secs: 60,
            tracker_interval_secs: 60,
            lsd: true,
            lsd_interval_secs: 300,
            utp_reset: true,
            mse: true,
        }
    }
}

/// Infohash as 40 hex digits, or an error naming it.
pub fn parse_infohash(s: &str) -> Result<[u8; 20], SwarmError> {
    hex::decode(s)
        .ok()
        .and_then(|b| <[u8; 20]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| SwarmError::UnknownRelease(s.to_owned()))
}

/// The box's .torrent for a stored release: the box's tracker first, then the publisher's
/// trackers as later tiers; `web_seeds` (e.g. the portal's BEP 19 URL) before the publisher's.
/// The info dictionary is copied byte-for-byte (same infohash).
pub fn torrent_for(
    store: &Store,
    ih: &[u8; 20],
    tracker_url: Option<&str>,
    web_seeds: &[String],
) -> Result<Vec<u8>, SwarmError> {
    let rel = store.release(ih)?;
    let mut tiers: Vec<Vec<String>> = tracker_url.map(|t| vec![vec![t.to_owned()]]).unwrap_or_default();
    tiers.extend(rel.metainfo.trackers.iter().filter(|t| !t.is_empty()).cloned());
    let mut ws = web_seeds.to_vec();
    ws.extend(rel.metainfo.web_seeds.iter().cloned());
    Ok(metainfo::with_trackers(&rel.torrent_bytes, &tiers, &ws)?)
}

/// The box's magnet link for a stored release: box tracker first, `x.pe` = the box as a peer
/// (clients that support it connect at once, tracker or not).
pub fn magnet_for(
    store: &Store,
    ih: &[u8; 20],
    tracker_url: Option<&str>,
    peer: Option<SocketAddr>,
    web_seeds: &[String],
) -> Result<String, SwarmError> {
    let rel = store.release(ih)?;
    let mut trackers: Vec<String> = tracker_url.map(|t| vec![t.to_owned()]).unwrap_or_default();
    trackers.extend(rel.metainfo.trackers.iter().flatten().cloned());
    let mut ws = web_seeds.to_vec();
    ws.extend(rel.metainfo.web_seeds.iter().cloned());
    let mut m = metainfo::magnet(ih, &rel.metainfo.name, &trackers, &ws);
    if let Some(p) = peer {
        m.push_str("&x.pe=");
        m.push_str(&p.to_string());
    }
    Ok(m)
}

/// The address of the interface the default route uses (no packet is sent), if any.
fn default_route_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    s.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}

struct StoreHoldings {
    store: Arc<Store>,
    ip: Option<IpAddr>,
    port: u16,
}

impl tracker::Holdings for StoreHoldings {
    fn releases(&self) -> Vec<([u8; 20], bool)> {
        self.store.releases().into_iter().map(|r| (r.infohash, r.pieces_present == r.piece_count)).collect()
    }
    fn holds(&self, ih: &[u8; 20]) -> Option<bool> {
        self.store.releases().into_iter().find(|r| r.infohash == *ih).map(|r| r.pieces_present == r.piece_count)
    }
    fn box_addr(&self, local: IpAddr) -> SocketAddr {
        SocketAddr::new(self.ip.unwrap_or(local), self.port)
    }
}

/// A running swarm: peer listener, rechoke loop, tracker and LSD. Dropping it does not stop
/// it; call [`Swarm::shutdown`] (or cancel the token given to [`run`]).
pub struct Swarm {
    store: Arc<Store>,
    peer_addr: SocketAddr,
    tracker_addr: Option<SocketAddr>,
    public_ip: IpAddr,
    public_port: u16,
    public_tracker_port: Option<u16>,
    stats: Arc<Stats>,
    swarms: Arc<Mutex<tracker::Swarms>>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Swarm {
    /// Binds the listeners and starts serving every release in `store` (releases added later
    /// are served too). Stops when `shutdown` is cancelled.
    pub async fn start(store: Arc<Store>, cfg: SwarmConfig, shutdown: CancellationToken) -> Result<Swarm, SwarmError> {
        let listener =
            TcpListener::bind(cfg.listen).await.map_err(|err| SwarmError::ListenPeers { addr: cfg.listen, err })?;
        let peer_addr = listener.local_addr().map_err(|err| SwarmError::ListenPeers { addr: cfg.listen, err })?;
        let tracker_listener = match cfg.tracker_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|err| SwarmError::ListenTracker { addr, err })?;
                Some(l)
            }
            None => None,
        };
        let tracker_addr = tracker_listener.as_ref().and_then(|l| l.local_addr().ok());
        let specific = |a: Option<SocketAddr>| a.map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
        let public_ip = cfg
            .announce_ip
            .or(specific(Some(peer_addr)))
            .or(specific(tracker_addr))
            .or_else(default_route_ip)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let public_port = cfg.announce_port.unwrap_or(peer_addr.port());
        let stats = Arc::new(Stats::default());
        let proto = proto::ProtoConfig {
            reqq: cfg.request_queue.max(1),
            max_queue: (cfg.request_queue.max(1) as usize) * 2,
            keepalive: Duration::from_secs(cfg.keepalive_secs.max(1)),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs.max(1)),
            handshake_timeout: Duration::from_secs(cfg.handshake_timeout_secs.max(1)),
            mse: cfg.mse,
            ..Default::default()
        };
        let rechoke = Duration::from_secs(cfg.rechoke_interval_secs.max(1));
        let shared = Arc::new(net::Shared::new(
            store.clone(),
            proto,
            stats.clone(),
            cfg.max_peers.max(1),
            cfg.max_peers_per_ip.max(1),
            cfg.upload_slots.max(1),
            rechoke * 2,
            cfg.upload_rate,
            cfg.peer_upload_rate,
        ));
        let swarms = Arc::new(Mutex::new(tracker::Swarms::new(Duration::from_secs(cfg.tracker_interval_secs.max(1)))));
        let holdings: Arc<dyn tracker::Holdings> = Arc::new(StoreHoldings {
            store: store.clone(),
            ip: cfg.announce_ip.or(specific(Some(peer_addr))),
            port: public_port,
        });
        let mut tasks = vec![
            tokio::spawn(net::listen(listener, shared.clone(), shutdown.clone())),
            tokio::spawn(net::rechoke_loop(shared, rechoke, shutdown.clone())),
        ];
        if let Some(l) = tracker_listener {
            tasks.push(tokio::spawn(tracker::serve(l, swarms.clone(), holdings.clone(), shutdown.clone())));
        }
        if cfg.utp_reset {
            tasks.push(tokio::spawn(utp::run(peer_addr, shutdown.clone())));
        }
        if cfg.lsd {
            let interval = Duration::from_secs(cfg.lsd_interval_secs.max(1));
            tasks.push(tokio::spawn(lsd::run(public_port, interval, swarms.clone(), holdings, shutdown.clone())));
        }
        tracing::info!(peers = %peer_addr, tracker = ?tracker_addr, "swarm started");
        Ok(Swarm {
            store,
            peer_addr,
            tracker_addr,
            public_ip,
            public_port,
            public_tracker_port: cfg.announce_tracker_port.or(tracker_addr.map(|a| a.port())),
            stats,
            swarms,
            shutdown,
            tasks,
        })
    }

    /// The bound peer listen address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The bound tracker address, if the tracker runs.
    pub fn tracker_addr(&self) -> Option<SocketAddr> {
        self.tracker_addr
    }

    /// The box as a peer, as handed out (announce ip/port).
    pub fn public_peer_addr(&self) -> SocketAddr {
        SocketAddr::new(self.public_ip, self.public_port)
    }

    /// `http://<box>:<port>/announce`, if the tracker runs.
    pub fn tracker_url(&self) -> Option<String> {
        self.public_tracker_port.map(|p| format!("http://{}/announce", SocketAddr::new(self.public_ip, p)))
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Peers the tracker knows for a release (announces and LSD).
    pub fn tracked_peers(&self, ih: &[u8; 20]) -> Vec<SocketAddr> {
        self.swarms.lock().unwrap_or_else(|p| p.into_inner()).peers(ih)
    }

    /// The box's .torrent for a stored release (see [`torrent_for`]).
    pub fn torrent(&self, ih: &[u8; 20], web_seeds: &[String]) -> Result<Vec<u8>, SwarmError> {
        torrent_for(&self.store, ih, self.tracker_url().as_deref(), web_seeds)
    }

    /// The box's magnet link for a stored release (see [`magnet_for`]).
    pub fn magnet(&self, ih: &[u8; 20], web_seeds: &[String]) -> Result<String, SwarmError> {
        magnet_for(&self.store, ih, self.tracker_url().as_deref(), Some(self.public_peer_addr()), web_seeds)
    }

    /// Stops every task and waits for the listeners to close (peer tasks end on their own).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Runs a swarm until `shutdown` is cancelled.
pub async fn run(store: Arc<Store>, cfg: SwarmConfig, shutdown: CancellationToken) -> Result<(), SwarmError> {
    let swarm = Swarm::start(store, cfg, shutdown.clone()).await?;
    shutdown.cancelled().await;
    swarm.shutdown().await;
    Ok(())
}
