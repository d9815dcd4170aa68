//! popseed-swarm: the appliance seeds its stored releases to BitTorrent peers on the venue LAN.
//!
//! * [`proto`]: the per-peer protocol state machine (no I/O): handshake, BEP 10, ut_metadata,
//!   bitfield/have, choke/interest, request/piece/cancel, keep-alive, limits.
//! * [`download`]: the downloading half of a connection (pure): peer bitfield, pipelined block
//!   requests, piece assembly, snubbing; `intake` checks and stores the pieces in batches.
//! * [`mse`]: the MSE/PE encrypted-handshake responder (no I/O), driven by [`proto`].
//! * [`choker`]: upload slot rotation (pure); rate caps are `popseed_core::TokenBucket`s.
//! * [`peers`]: the listener's peer caps and which connection gives way at the global cap (pure).
//! * `net`: the tokio shell (listener, peer tasks, timers).
//! * [`addr`]: peer addresses in compact wire form, and their canonical form.
//! * [`announce`]: the box as a tracker client (announces releases it fills to their trackers);
//!   [`announce_udp`]: the same over BEP 15 UDP trackers.
//! * [`tracker`]: the venue tracker's logic (announce, compact, scrape; pure), served over HTTP
//!   by [`tracker_http`]; [`lsd`]: BEP 14.
//! * [`Swarm`]: starts all of it on a [`Store`] and hands out the box's .torrent and magnets.
//!
//! A peer's request for a piece the store lacks goes to the [`popseed_core::ReadThrough`] port
//! handed to [`Swarm::start`] (the agent's fetcher); the request is served when the store
//! reports the piece stored. With `NoReadThrough` (`popseed seed` on its own) it is refused at
//! once. The box downloads too: connections to peers that hold pieces of a release being filled
//! take their work from the [`popseed_core::PeerFill`] port (the same fetcher), and the dialer
//! connects to the peers of those releases. [`SwarmConfig`] is the `[swarm]` section of
//! agent.toml, from popseed-config.
//!
//! See docs/swarm.md for what the box speaks and its limits.

pub mod addr;
pub mod announce;
pub mod announce_udp;
pub mod choker;
pub mod download;
pub mod error;
mod intake;
pub mod lsd;
pub mod mse;
mod net;
pub mod peers;
pub mod proto;
pub mod stats;
pub mod tracker;
pub mod tracker_http;
pub mod utp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use popseed_core::{InfoHash, NoPeerFill, NoReadThrough, PeerFill, ReadThrough};
use popseed_release::metainfo;
use popseed_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use error::SwarmError;
pub use popseed_config::SwarmConfig;
pub use stats::{Stats, StatsSnapshot};
pub use tokio_util::sync::CancellationToken as Shutdown;

/// The box's .torrent for a stored release: the box's tracker first, then the publisher's
/// trackers as later tiers; `web_seeds` (e.g. the portal's BEP 19 URL) before the publisher's.
/// The info dictionary is copied byte-for-byte (same infohash).
pub fn torrent_for(
    store: &Store,
    ih: &InfoHash,
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
    ih: &InfoHash,
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
    fn releases(&self) -> Vec<(InfoHash, bool)> {
        self.store.releases().into_iter().map(|r| (r.infohash, r.pieces_present == r.piece_count)).collect()
    }
    fn holds(&self, ih: &InfoHash) -> Option<bool> {
        self.store.releases().into_iter().find(|r| r.infohash == *ih).map(|r| r.pieces_present == r.piece_count)
    }
    fn box_addr(&self, local: IpAddr) -> SocketAddr {
        SocketAddr::new(self.ip.unwrap_or(local), self.port)
    }
}

/// What the swarm calls out to (the agent wires the fetcher into both).
#[derive(Clone)]
pub struct SwarmPorts {
    /// Where a peer's request for a missing piece goes.
    pub read_through: Arc<dyn ReadThrough>,
    /// Where download work comes from.
    pub fill: Arc<dyn PeerFill>,
}

impl SwarmPorts {
    /// A store served on its own: nothing fetched for peers, nothing downloaded.
    pub fn none() -> Self {
        SwarmPorts { read_through: Arc::new(NoReadThrough), fill: Arc::new(NoPeerFill) }
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
    /// are served too); pieces a peer asks for that are missing go to `ports.read_through`,
    /// and peers of releases `ports.fill` wants are dialed and downloaded from. Stops when
    /// `shutdown` is cancelled.
    pub async fn start(
        store: Arc<Store>,
        ports: SwarmPorts,
        cfg: SwarmConfig,
        shutdown: CancellationToken,
    ) -> Result<Swarm, SwarmError> {
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
            listen_port: public_port,
            ..Default::default()
        };
        let rechoke = Duration::from_secs(cfg.rechoke_interval_secs.max(1));
        let found = Arc::new(announce::Found::default());
        let (intake_tx, intake_rx) = tokio::sync::mpsc::unbounded_channel();
        let intake = intake::run(store.clone(), ports.fill.clone(), stats.clone(), intake_rx, shutdown.clone());
        let shared = Arc::new(net::Shared::new(
            store.clone(),
            ports.read_through,
            ports.fill.clone(),
            intake_tx,
            found.clone(),
            proto,
            stats.clone(),
            cfg.max_peers.max(1),
            cfg.max_peers_per_ip.max(1),
            cfg.upload_slots.max(1),
            rechoke * 2,
            cfg.upload_rate,
            cfg.peer_upload_rate,
            cfg.download_rate,
        ));
        let swarms = Arc::new(Mutex::new(tracker::Swarms::new(Duration::from_secs(cfg.tracker_interval_secs.max(1)))));
        let holdings: Arc<dyn tracker::Holdings> = Arc::new(StoreHoldings {
            store: store.clone(),
            ip: cfg.announce_ip.or(specific(Some(peer_addr))),
            port: public_port,
        });
        let mut own = vec![peer_addr, SocketAddr::new(public_ip, public_port)];
        if peer_addr.ip().is_unspecified() {
            own.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), peer_addr.port()));
        }
        let dial = net::DialSources {
            static_peers: cfg.static_peers.clone(),
            swarms: swarms.clone(),
            found: found.clone(),
            own,
        };
        let shared_for_utp = shared.clone();
        let mut tasks = vec![
            tokio::spawn(intake),
            tokio::spawn(net::listen(listener, shared.clone(), shutdown.clone())),
            tokio::spawn(net::dial_loop(shared.clone(), dial, shutdown.clone())),
            tokio::spawn(announce::run(
                store.clone(),
                ports.fill.clone(),
                found,
                shared.our_id,
                public_port,
                shutdown.clone(),
            )),
            tokio::spawn(net::rechoke_loop(shared, rechoke, shutdown.clone())),
        ];
        if let Some(l) = tracker_listener {
            tasks.push(tokio::spawn(tracker_http::serve(l, swarms.clone(), holdings.clone(), shutdown.clone())));
        }
        if cfg.utp {
            tasks.push(tokio::spawn(utp::listen(peer_addr, shared_for_utp, shutdown.clone())));
        } else if cfg.utp_reset {
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
    pub fn tracked_peers(&self, ih: &InfoHash) -> Vec<SocketAddr> {
        self.swarms.lock().unwrap_or_else(|p| p.into_inner()).peers(ih)
    }

    /// The box's .torrent for a stored release (see [`torrent_for`]).
    pub fn torrent(&self, ih: &InfoHash, web_seeds: &[String]) -> Result<Vec<u8>, SwarmError> {
        torrent_for(&self.store, ih, self.tracker_url().as_deref(), web_seeds)
    }

    /// The box's magnet link for a stored release (see [`magnet_for`]).
    pub fn magnet(&self, ih: &InfoHash, web_seeds: &[String]) -> Result<String, SwarmError> {
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
pub async fn run(
    store: Arc<Store>,
    ports: SwarmPorts,
    cfg: SwarmConfig,
    shutdown: CancellationToken,
) -> Result<(), SwarmError> {
    let swarm = Swarm::start(store, ports, cfg, shutdown.clone()).await?;
    shutdown.cancelled().await;
    swarm.shutdown().await;
    Ok(())
}
