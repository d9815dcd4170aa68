//! The tokio shell around [`crate::proto`]: the TCP listener with global and per-IP peer caps,
//! the dialer that connects to peers of releases being filled, one task per peer (socket
//! readiness, store events, choke commands, timers, rate limits, download work from the
//! [`PeerFill`] port, pieces handed to the store), the periodic rechoke, and the [`Catalog`]
//! backed by the store. Blocks are read from the store straight into the socket send buffer,
//! right after their piece-message header.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use popseed_store::{Bitfield, Store, StoreError, StoreEvent};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::choker::Choker;
use crate::intake::Downloaded;
use crate::peers::PeerTable;
use crate::proto::{
    Catalog, DropReason, Event, PeerProto, ProtoConfig, TorrentMeta, PEX_MAX_PEERS, PIECE_PREAMBLE_LEN, SEND_HIGH_WATER,
};
use crate::stats::Stats;
use popseed_core::{Backoff, InfoHash, PeerFill, PeerSourceId, PieceIndex, ReadThrough, TokenBucket};

const READ_CHUNK: usize = 64 * 1024;
/// Reads per wake-up before giving writes a turn.
const READS_PER_WAKE: usize = 8;

/// How a popseed box's peer id starts (`-PS` and a version): connections to other boxes are
/// the siblings the uplink's work is split with.
pub(crate) const POPSEED_PEER_ID: &[u8] = b"-PS";
/// How often a connection asks the fill again whether it wants the release and has work for
/// it (pieces given back by other sources, a job started after the peer connected).
const FILL_RECHECK: Duration = Duration::from_secs(1);
/// The first PEX message goes this long after the handshake; then one every [`PEX_INTERVAL`]
/// at most (BEP 11).
const PEX_FIRST: Duration = Duration::from_secs(3);
const PEX_INTERVAL: Duration = Duration::from_secs(60);
/// How often the dialer looks for peers to connect to.
pub(crate) const DIAL_INTERVAL: Duration = Duration::from_secs(2);
/// How often the dialer checks for a release that just started filling (dialed at once).
const DIAL_POLL: Duration = Duration::from_millis(250);
/// Longest an outgoing TCP connect may take.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Outgoing connections per release at most.
pub(crate) const MAX_DIALED_PER_RELEASE: usize = 30;
/// After a failed dial, an address waits from this long, doubling up to [`DIAL_BACKOFF_MAX`].
const DIAL_BACKOFF_FIRST: Duration = Duration::from_secs(5);
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Addresses with a dial backoff remembered at most.
const MAX_DIAL_BACKOFFS: usize = 4096;

/// Smallest upload burst: one 128 KiB block never waits on itself.
const MIN_UPLOAD_BURST: u64 = 128 * 1024;

/// An upload cap of `rate` bytes per second (0: none), bursting a quarter second's worth.
fn upload_bucket(rate: u64, now: Instant) -> TokenBucket {
    TokenBucket::new(rate as f64, (rate / 4).max(MIN_UPLOAD_BURST) as f64, now)
}

/// What a peer task needs of its socket: readiness and non-blocking reads and writes. A TCP
/// connection, or the local end of the bridge a uTP connection runs through ([`crate::utp`]).
pub(crate) trait PeerSocket: Send + Sync + 'static {
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    fn writable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize>;
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize>;
}

impl PeerSocket for TcpStream {
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        TcpStream::readable(self)
    }
    fn writable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        TcpStream::writable(self)
    }
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        TcpStream::try_read(self, buf)
    }
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

impl PeerSocket for tokio::net::UnixStream {
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        tokio::net::UnixStream::readable(self)
    }
    fn writable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        tokio::net::UnixStream::writable(self)
    }
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        tokio::net::UnixStream::try_read(self, buf)
    }
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        tokio::net::UnixStream::try_write(self, buf)
    }
}

/// Commands from the swarm to one peer task.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd {
    Choke(bool),
    /// Give way to a new connection at the global cap ([`crate::peers`]).
    Evict,
}

/// Store-backed release lookup, caching each release's [`TorrentMeta`].
pub(crate) struct StoreCatalog {
    store: Arc<Store>,
    fill: Arc<dyn PeerFill>,
    metas: Mutex<HashMap<InfoHash, Arc<TorrentMeta>>>,
}

impl StoreCatalog {
    pub(crate) fn new(store: Arc<Store>, fill: Arc<dyn PeerFill>) -> Self {
        StoreCatalog { store, fill, metas: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn forget(&self, ih: &InfoHash) {
        self.metas.lock().unwrap_or_else(|p| p.into_inner()).remove(ih);
    }
}

impl Catalog for StoreCatalog {
    fn lookup(&self, ih: &InfoHash) -> Option<(Arc<TorrentMeta>, Bitfield)> {
        let have = self.store.bitfield(ih).ok()?;
        let mut metas = self.metas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = metas.get(ih) {
            return Some((m.clone(), have));
        }
        let rel = self.store.release(ih).ok()?;
        let layout = rel.layout();
        let meta = Arc::new(TorrentMeta::new(
            *ih,
            layout.total_length,
            layout.piece_length,
            Arc::from(rel.metainfo.info_bytes.as_slice()),
        )?);
        metas.insert(*ih, meta.clone());
        Some((meta, have))
    }

    fn wanted(&self, ih: &InfoHash) -> bool {
        self.fill.wants(ih)
    }

    fn by_req2(&self, req2: &[u8; 20]) -> Option<InfoHash> {
        self.store.releases().into_iter().map(|r| r.infohash).find(|ih| crate::mse::req2_hash(ih.as_bytes()) == *req2)
    }
}

/// State shared by the listener and all peer tasks.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    /// Where missing pieces a peer asks for are requested (the fetcher).
    pub(crate) read_through: Arc<dyn ReadThrough>,
    /// Where download work comes from and goes back to (the fetcher).
    pub(crate) fill: Arc<dyn PeerFill>,
    /// Whole pieces from peers, to [`crate::intake`] (checked and stored in batches).
    pub(crate) intake: mpsc::UnboundedSender<Downloaded>,
    /// Peers named by trackers and by peers (PEX), for the dialer.
    pub(crate) found: Arc<crate::announce::Found>,
    /// The listen address of each connected peer that told it, per release: what PEX hands out.
    listeners: Mutex<HashMap<InfoHash, HashMap<u64, SocketAddr>>>,
    pub(crate) proto: Arc<ProtoConfig>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) catalog: StoreCatalog,
    pub(crate) our_id: [u8; 20],
    pub(crate) peer_rate: u64,
    pub(crate) global_bucket: Option<Mutex<TokenBucket>>,
    /// The uTP socket on the peer port, once it is bound (outgoing uTP goes through it too).
    pub(crate) utp: std::sync::OnceLock<Arc<librqbit_utp::UtpSocketUdp>>,
    /// Addresses whose last dialed TCP connection ended before a handshake (or failed): the
    /// next dial tries uTP first (at most [`MAX_DIAL_BACKOFFS`] remembered).
    prefer_utp: Mutex<HashSet<SocketAddr>>,
    /// `download_rate`: what connections the box downloads from may read, together.
    download_bucket: Option<Mutex<TokenBucket>>,
    choker: Mutex<Choker>,
    /// Connected peers (caps, eviction) and each one's command channel.
    peers: Mutex<PeerTable<mpsc::UnboundedSender<Cmd>>>,
    /// Outgoing connections open, by release and address.
    dialed: Mutex<HashSet<(InfoHash, SocketAddr)>>,
    /// Dialed addresses that turned out to be this box, for the dialer to skip.
    self_addrs: Mutex<Vec<SocketAddr>>,
    /// Connections to other popseed boxes (by their peer id), per release: the siblings the
    /// fill splits the uplink's work with.
    boxes: Mutex<HashMap<InfoHash, HashMap<u64, [u8; 20]>>>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<Store>,
        read_through: Arc<dyn ReadThrough>,
        fill: Arc<dyn PeerFill>,
        intake: mpsc::UnboundedSender<Downloaded>,
        found: Arc<crate::announce::Found>,
        proto: ProtoConfig,
        stats: Arc<Stats>,
        max_peers: usize,
        max_per_ip: usize,
        slots: usize,
        min_hold: Duration,
        global_rate: u64,
        peer_rate: u64,
        download_rate: u64,
    ) -> Self {
        let mut our_id = *b"-PS0100-000000000000";
        for b in &mut our_id[8..] {
            *b = b"0123456789abcdefghijklmnopqrstuvwxyz"[rand::random::<usize>() % 36];
        }
        let now = Instant::now();
        Shared {
            catalog: StoreCatalog::new(store.clone(), fill.clone()),
            store,
            read_through,
            fill,
            intake,
            found,
            listeners: Mutex::new(HashMap::new()),
            proto: Arc::new(proto),
            stats,
            our_id,
            peer_rate,
            global_bucket: (global_rate > 0).then(|| Mutex::new(upload_bucket(global_rate, now))),
            utp: std::sync::OnceLock::new(),
            prefer_utp: Mutex::new(HashSet::new()),
            download_bucket: (download_rate > 0).then(|| Mutex::new(upload_bucket(download_rate, now))),
            choker: Mutex::new(Choker::new(slots, min_hold)),
            peers: Mutex::new(PeerTable::new(max_peers, max_per_ip)),
            dialed: Mutex::new(HashSet::new()),
            self_addrs: Mutex::new(Vec::new()),
            boxes: Mutex::new(HashMap::new()),
        }
    }

    /// A connection to another popseed box attached (`Some(peer id)`) or ended (`None`): the
    /// fill learns the release's set of sibling boxes.
    fn sibling(&self, ih: InfoHash, id: u64, peer_id: Option<[u8; 20]>) {
        let ids: Vec<[u8; 20]> = {
            let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
            let set = boxes.entry(ih).or_default();
            let changed = match peer_id {
                Some(p) => set.insert(id, p).is_none(),
                None => set.remove(&id).is_some(),
            };
            if !changed {
                return;
            }
            let ids = set.values().copied().collect();
            if set.is_empty() {
                boxes.remove(&ih);
            }
            let seen: HashSet<[u8; 20]> = boxes.values().flat_map(|s| s.values().copied()).collect();
            self.stats.venue_boxes.store(seen.len() as u64, std::sync::atomic::Ordering::Relaxed);
            ids
        };
        self.fill.siblings(&ih, self.our_id, &ids);
    }

    /// Remembers (`Some`) or forgets (`None`) a connection's listen address for PEX.
    fn listener(&self, ih: InfoHash, id: u64, addr: Option<SocketAddr>) {
        let mut all = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        match addr {
            Some(a) => {
                all.entry(ih).or_default().insert(id, a);
            }
            None => {
                if let Some(set) = all.get_mut(&ih) {
                    set.remove(&id);
                    if set.is_empty() {
                        all.remove(&ih);
                    }
                }
            }
        }
    }

    /// Listen addresses of the release's other connected peers (for a PEX message to `id`).
    fn pex_peers(&self, ih: &InfoHash, id: u64) -> HashSet<SocketAddr> {
        let all = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        all.get(ih).map(|set| set.iter().filter(|(k, _)| **k != id).map(|(_, a)| *a).collect()).unwrap_or_default()
    }

    /// The next dial to `addr` uses the other transport (TCP first by default).
    fn toggle_transport(&self, addr: SocketAddr) {
        let mut set = self.prefer_utp.lock().unwrap_or_else(|p| p.into_inner());
        if !set.remove(&addr) && set.len() < MAX_DIAL_BACKOFFS {
            set.insert(addr);
        }
    }

    fn prefers_utp(&self, addr: &SocketAddr) -> bool {
        self.prefer_utp.lock().unwrap_or_else(|p| p.into_inner()).contains(addr)
    }

    fn take_self_addrs(&self) -> Vec<SocketAddr> {
        std::mem::take(&mut *self.self_addrs.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn rechoke(&self) {
        let changes = self.choker.lock().unwrap_or_else(|p| p.into_inner()).rechoke(Instant::now());
        if changes.is_empty() {
            return;
        }
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        for (id, unchoke) in changes {
            if let Some(cmd) = peers.get(id) {
                let _ = cmd.send(Cmd::Choke(!unchoke));
            }
        }
    }

    /// Registers a new connection unless a cap is hit; at the global cap a connection still
    /// without a handshake may give way ([`PeerTable::admit`]).
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<(u64, mpsc::UnboundedReceiver<Cmd>), &'static str> {
        let (tx, rx) = mpsc::unbounded_channel();
        let admitted = self.peers.lock().unwrap_or_else(|p| p.into_inner()).admit(ip, Instant::now(), tx)?;
        if let Some(evicted) = admitted.evicted {
            let _ = evicted.send(Cmd::Evict);
        }
        Ok((admitted.id, rx))
    }

    /// Forgets a connection that ended; an abusive one gets its address banned
    /// ([`PeerTable::ban`]).
    fn leave(&self, id: u64, ip: IpAddr, reason: Option<&DropReason>) {
        {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            peers.remove(id);
            if reason.is_some_and(DropReason::is_abuse) {
                let length = peers.ban(ip, Instant::now());
                // No address in the log: the box keeps no record of who attended.
                tracing::info!(seconds = length.as_secs(), "peer address banned");
            }
        }
        let held_a_slot = self.choker.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        if held_a_slot {
            self.rechoke();
        }
    }
}

/// Accepts peers until `shutdown`.
pub(crate) async fn listen(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("peer accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = crate::addr::canonical_ip(addr.ip());
        match shared.admit(ip) {
            Ok((id, rx)) => {
                let _ = stream.set_nodelay(true);
                let core = PeerProto::new(shared.proto.clone(), ip, shared.our_id, Instant::now());
                spawn_peer(shared.clone(), id, stream, ip, rx, core, None, shutdown.clone());
            }
            Err(why) => {
                // A banned address reconnecting at once would fill the log: counted only.
                if why == "banned" {
                    tracing::debug!("peer refused: {why}");
                } else {
                    tracing::info!("peer refused: {why}");
                }
                shared.stats.refused(why);
                drop(stream);
            }
        }
    }
}

/// Runs one connection (accepted, or dialed for `dialed`) to its end, then forgets it: its
/// slot, its address if it abused, whatever it had in flight for the fill.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn_peer<S: PeerSocket>(
    shared: Arc<Shared>,
    id: u64,
    stream: S,
    ip: IpAddr,
    rx: mpsc::UnboundedReceiver<Cmd>,
    core: PeerProto,
    dialed: Option<(InfoHash, SocketAddr)>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        shared.stats.peer_connected();
        let mut attached = None;
        let listen = dialed.map(|d| d.1);
        let reason = peer_task(&shared, id, stream, ip, rx, core, listen, &mut attached, shutdown).await;
        shared.fill.lost(PeerSourceId(id));
        if let Some(ih) = attached {
            shared.sibling(ih, id, None);
            shared.listener(ih, id, None);
        }
        if let Some(key) = dialed {
            shared.dialed.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            // no handshake over this transport: the next dial tries the other one
            if attached.is_none() {
                shared.toggle_transport(key.1);
            }
            if reason == Some(DropReason::SelfConnection) {
                shared.self_addrs.lock().unwrap_or_else(|p| p.into_inner()).push(key.1);
            }
        }
        shared.leave(id, ip, reason.as_ref());
        shared.stats.peer_disconnected(reason.as_ref().map(|r| r.kind()));
        match reason {
            Some(r) => tracing::info!(kind = r.kind(), outgoing = dialed.is_some(), "peer dropped: {r}"),
            None => tracing::debug!("peer disconnected"),
        }
    });
}

/// Where the dialer finds peers of a release: the static peers of agent.toml, whatever the
/// venue tracker and LSD learned, and what the release's trackers named.
pub(crate) struct DialSources {
    pub(crate) static_peers: Vec<SocketAddr>,
    pub(crate) swarms: Arc<Mutex<crate::tracker::Swarms>>,
    /// Peers the release's trackers named ([`crate::announce`]).
    pub(crate) found: Arc<crate::announce::Found>,
    /// The box's own peer addresses (never dialed).
    pub(crate) own: Vec<SocketAddr>,
}

/// Connects to peers of every release the fill wants, until `shutdown`: each known address at
/// most once per release, at most [`MAX_DIALED_PER_RELEASE`] per release, an address that failed
/// waiting [`DIAL_BACKOFF_FIRST`] doubling to [`DIAL_BACKOFF_MAX`].
pub(crate) async fn dial_loop(shared: Arc<Shared>, sources: DialSources, shutdown: CancellationToken) {
    let backoffs: Arc<Mutex<HashMap<SocketAddr, (Backoff, Instant)>>> = Arc::default();
    let mut never: HashSet<SocketAddr> = sources.own.iter().copied().collect();
    let mut tick = tokio::time::interval(DIAL_POLL);
    let mut last_pass: Option<Instant> = None;
    let mut seen: HashSet<InfoHash> = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // a pass every DIAL_INTERVAL, and at once when a release starts filling (a prewarm job
        // reaches every box of a venue at about the same time: they should meet before their
        // uplinks take the same pieces)
        let filling = shared.fill.filling();
        let fresh = filling.iter().any(|ih| !seen.contains(ih));
        if !fresh && last_pass.is_some_and(|t| t.elapsed() < DIAL_INTERVAL) {
            continue;
        }
        last_pass = Some(Instant::now());
        seen = filling.iter().copied().collect();
        for ih in filling {
            let Some((meta, _)) = shared.catalog.lookup(&ih) else { continue };
            let mut candidates = sources.static_peers.clone();
            candidates.extend(sources.swarms.lock().unwrap_or_else(|p| p.into_inner()).peers(&ih));
            candidates.extend(sources.found.peers(&ih));
            let now = Instant::now();
            for addr in candidates {
                if never.contains(&addr) || addr.ip().is_unspecified() || addr.port() == 0 {
                    continue;
                }
                if backoffs.lock().unwrap_or_else(|p| p.into_inner()).get(&addr).is_some_and(|(_, t)| now < *t) {
                    continue;
                }
                {
                    let mut dialed = shared.dialed.lock().unwrap_or_else(|p| p.into_inner());
                    let open = dialed.iter().filter(|(d, _)| *d == ih).count();
                    if open >= MAX_DIALED_PER_RELEASE || !dialed.insert((ih, addr)) {
                        continue;
                    }
                }
                let (shared, backoffs, shutdown, meta) =
                    (shared.clone(), backoffs.clone(), shutdown.clone(), meta.clone());
                tokio::spawn(async move {
                    if let Err(why) = dial(&shared, ih, addr, meta, shutdown).await {
                        shared.dialed.lock().unwrap_or_else(|p| p.into_inner()).remove(&(ih, addr));
                        tracing::debug!(%why, "peer dial failed");
                        let mut b = backoffs.lock().unwrap_or_else(|p| p.into_inner());
                        if b.len() >= MAX_DIAL_BACKOFFS && !b.contains_key(&addr) {
                            let now = Instant::now();
                            b.retain(|_, (_, t)| *t > now);
                        }
                        if b.len() < MAX_DIAL_BACKOFFS || b.contains_key(&addr) {
                            let entry = b.entry(addr).or_insert_with(|| {
                                (Backoff::new(DIAL_BACKOFF_FIRST, DIAL_BACKOFF_MAX), Instant::now())
                            });
                            entry.1 = Instant::now() + entry.0.next_delay();
                        }
                    } else {
                        backoffs.lock().unwrap_or_else(|p| p.into_inner()).remove(&addr);
                    }
                });
            }
        }
        // A connection to ourselves is found at its handshake; its address is never dialed again.
        never.extend(shared.take_self_addrs());
    }
}

/// Opens one outgoing connection and runs it (in its own task); Err when it could not be opened.
/// TCP first; uTP when TCP fails or an address's last connection ended before its handshake
/// (a peer that takes uTP only), and back.
async fn dial(
    shared: &Arc<Shared>,
    ih: InfoHash,
    addr: SocketAddr,
    meta: Arc<TorrentMeta>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let have = shared.store.bitfield(&ih).map_err(|e| popseed_core::chain(&e).to_string())?;
    let core = PeerProto::connect(shared.proto.clone(), addr.ip(), shared.our_id, meta, have, Instant::now());
    let utp = shared.utp.get().cloned();
    if !(shared.prefers_utp(&addr) && utp.is_some()) {
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let (id, rx) = shared.admit(addr.ip()).map_err(str::to_owned)?;
                shared.stats.dialed();
                let _ = stream.set_nodelay(true);
                spawn_peer(shared.clone(), id, stream, addr.ip(), rx, core, Some((ih, addr)), shutdown);
                return Ok(());
            }
            Ok(Err(e)) if utp.is_none() => return Err(format!("connect: {:?}", e.kind())),
            Err(_) if utp.is_none() => return Err("connect timed out".into()),
            _ => {}
        }
    }
    let Some(utp) = utp else { return Err("no uTP socket".into()) };
    let stream = match tokio::time::timeout(DIAL_TIMEOUT, utp.connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            shared.toggle_transport(addr);
            return Err(format!("uTP connect: {e}"));
        }
        Err(_) => {
            shared.toggle_transport(addr);
            return Err("uTP connect timed out".into());
        }
    };
    let (id, rx) = shared.admit(addr.ip()).map_err(str::to_owned)?;
    shared.stats.dialed();
    let local = crate::utp::bridged(stream, &shared.stats, shutdown.clone()).map_err(|e| e.to_string())?;
    spawn_peer(shared.clone(), id, local, addr.ip(), rx, core, Some((ih, addr)), shutdown);
    Ok(())
}

/// Rechokes every `interval` (slot rotation).
pub(crate) async fn rechoke_loop(shared: Arc<Shared>, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => shared.rechoke(),
        }
    }
}

/// Why a peer task ended: `None` for an orderly close (EOF, shutdown). `listen`: the address a
/// dialed peer was reached at (an accepted one tells its port in its extension handshake).
#[allow(clippy::too_many_arguments)]
async fn peer_task<S: PeerSocket>(
    shared: &Shared,
    id: u64,
    stream: S,
    ip: IpAddr,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mut core: PeerProto,
    mut listen: Option<SocketAddr>,
    attached: &mut Option<InfoHash>,
    shutdown: CancellationToken,
) -> Option<DropReason> {
    let ip = Some(ip);
    let mut listen_known = false;
    // BEP 11: the first PEX message soon after the handshake, then at most one a minute
    let mut pex = tokio::time::interval_at(tokio::time::Instant::now() + PEX_FIRST, PEX_INTERVAL);
    pex.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pex_sent: HashSet<SocketAddr> = HashSet::new();
    let mut events = shared.store.subscribe();
    // Pieces from this peer that failed the store's hash check (checked off this task).
    let (bad_tx, mut bad_rx) = mpsc::unbounded_channel::<u32>();
    let mut recheck = tokio::time::interval(FILL_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rbuf = vec![0u8; READ_CHUNK];
    // Grows to what the peer needs (about SEND_HIGH_WATER plus a block for a downloader);
    // connections that never download keep no buffer.
    let mut sbuf: Vec<u8> = Vec::new();
    let mut sent = 0usize;
    let mut bucket = upload_bucket(shared.peer_rate, Instant::now());
    let mut infohash: Option<InfoHash> = None;
    loop {
        // Fill the send buffer: control messages, then blocks within the rate caps.
        let mut rate_wait: Option<Duration> = None;
        if let Err(r) = fill(shared, &mut core, &mut sbuf, sent, &mut bucket, &mut rate_wait) {
            return Some(r);
        }
        let want_write = sent < sbuf.len();
        // The LAN download cap: a connection the box downloads from reads only while the shared
        // bucket holds tokens (each read is charged after it).
        let downloading = core.download().is_some_and(|d| d.is_interested());
        let read_wait = match (&shared.download_bucket, downloading) {
            (Some(b), true) => {
                Some(b.lock().unwrap_or_else(|p| p.into_inner()).wait_for(1.0, Instant::now())).filter(|w| !w.is_zero())
            }
            _ => None,
        };
        // Back-pressure: a peer that does not read its replies is not read from either.
        let want_read = core.wants_input(sbuf.len() - sent) && read_wait.is_none();
        let mut deadline = tokio::time::Instant::from_std(core.poll_timeout());
        if let Some(w) = rate_wait.into_iter().chain(read_wait).min() {
            deadline = deadline.min(tokio::time::Instant::now() + w);
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Choke(c)) => core.set_choking(c),
                Some(Cmd::Evict) => return Some(DropReason::Evicted),
                None => return None,
            },
            r = stream.readable(), if want_read => {
                if let Err(e) = r {
                    tracing::debug!(kind = ?e.kind(), "peer socket not readable");
                    return None;
                }
                for _ in 0..READS_PER_WAKE {
                    match stream.try_read(&mut rbuf) {
                        Ok(0) => return None,
                        Ok(n) => {
                            if let (Some(b), true) = (&shared.download_bucket, downloading) {
                                b.lock().unwrap_or_else(|p| p.into_inner()).debit(n as f64, Instant::now());
                            }
                            if let Err(r) = core.receive(&rbuf[..n], Instant::now(), &shared.catalog) {
                                return Some(r);
                            }
                            let res = handle_events(shared, id, &mut core, &mut infohash, &bad_tx);
                            *attached = infohash;
                            if let (Some(ih), false) = (infohash, listen_known) {
                                listen = listen.or_else(|| Some(SocketAddr::new(ip?, core.peer_listen_port()?)));
                                if let Some(a) = listen {
                                    shared.listener(ih, id, Some(a));
                                    listen_known = true;
                                }
                            }
                            if let Err(r) = res {
                                return Some(r);
                            }
                            take_work(shared, id, &mut core, infohash);
                            if n < rbuf.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::debug!(kind = ?e.kind(), "peer read failed");
                            return None;
                        }
                    }
                }
            },
            r = stream.writable(), if want_write => {
                if let Err(e) = r {
                    tracing::debug!(kind = ?e.kind(), "peer socket not writable");
                    return None;
                }
                match stream.try_write(&sbuf[sent..]) {
                    Ok(n) => {
                        sent += n;
                        shared.stats.add_uploaded_wire(n as u64);
                        core.note_sent(Instant::now());
                        if sent == sbuf.len() {
                            sbuf.clear();
                            sent = 0;
                        } else if sent >= SEND_HIGH_WATER {
                            sbuf.drain(..sent);
                            sent = 0;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(e) => {
                        tracing::debug!(kind = ?e.kind(), "peer write failed");
                        return None;
                    }
                }
            },
            ev = events.recv(), if infohash.is_some() => {
                let Some(ih) = infohash else { continue };
                match ev {
                    Ok(StoreEvent::PieceStored { infohash: e, index }) if e == ih => {
                        core.piece_stored(index.get());
                        take_work(shared, id, &mut core, infohash);
                    }
                    Ok(StoreEvent::ReleaseRemoved { infohash: e }) if e == ih => {
                        shared.catalog.forget(&ih);
                        return None;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Missed events: advertise whatever is present now.
                        if let Ok(bf) = shared.store.bitfield(&ih) {
                            for i in bf.iter_set() {
                                core.piece_stored(i);
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
            bad = bad_rx.recv() => {
                if let Some(index) = bad {
                    return Some(DropReason::BadPiece(index));
                }
            },
            _ = pex.tick(), if infohash.is_some() && core.speaks_pex() => {
                if let Some(ih) = infohash {
                    let known = shared.pex_peers(&ih, id);
                    let added: Vec<SocketAddr> = known.difference(&pex_sent).copied().take(PEX_MAX_PEERS).collect();
                    let dropped: Vec<SocketAddr> = pex_sent.difference(&known).copied().take(PEX_MAX_PEERS).collect();
                    if !added.is_empty() || !dropped.is_empty() {
                        core.send_pex(&added, &dropped);
                        pex_sent.extend(added.iter().copied());
                        for d in &dropped {
                            pex_sent.remove(d);
                        }
                    }
                }
            },
            _ = recheck.tick(), if infohash.is_some() => {
                if let Some(ih) = infohash {
                    core.set_wanted(shared.fill.wants(&ih), Instant::now());
                    take_work(shared, id, &mut core, infohash);
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                if let Err(r) = core.handle_timeout(Instant::now()) {
                    return Some(r);
                }
                take_work(shared, id, &mut core, infohash);
            },
        }
    }
}

/// Tells the fill what the peer announced and what the connection let go of, and takes as many
/// pieces as its pipeline wants among those the peer has.
fn take_work(shared: &Shared, id: u64, core: &mut PeerProto, infohash: Option<InfoHash>) {
    let Some(ih) = infohash else { return };
    let source = PeerSourceId(id);
    let holdings: Vec<PieceIndex> = core.take_new_holdings().into_iter().map(PieceIndex).collect();
    if !holdings.is_empty() {
        shared.fill.peer_holds(&ih, source, &holdings);
    }
    let released: Vec<PieceIndex> = core.take_released().into_iter().map(PieceIndex).collect();
    if !released.is_empty() {
        shared.fill.give_back(&ih, &released, source);
    }
    let n = core.pieces_wanted();
    if n == 0 {
        return;
    }
    let Some(download) = core.download() else { return };
    // what the peer suggested first (BEP 6), then anything it lets us fetch now
    let mut pieces = if download.has_suggestions() {
        let suggested = |p: PieceIndex| download.is_suggested(p.get()) && download.assignable(p.get());
        shared.fill.assign(&ih, source, &suggested, n)
    } else {
        Vec::new()
    };
    if pieces.len() < n {
        pieces.extend(shared.fill.assign(&ih, source, &|p: PieceIndex| download.assignable(p.get()), n - pieces.len()));
    }
    if !pieces.is_empty() {
        let pieces: Vec<u32> = pieces.into_iter().map(PieceIndex::get).collect();
        core.add_pieces(&pieces, Instant::now());
    }
}

fn handle_events(
    shared: &Shared,
    id: u64,
    core: &mut PeerProto,
    infohash: &mut Option<InfoHash>,
    bad: &mpsc::UnboundedSender<u32>,
) -> Result<(), DropReason> {
    while let Some(ev) = core.poll_event() {
        match ev {
            Event::Attached { infohash: ih, peer_id } => {
                *infohash = Some(ih);
                if peer_id.starts_with(POPSEED_PEER_ID) {
                    shared.sibling(ih, id, Some(peer_id));
                }
                core.set_wanted(shared.fill.wants(&ih), Instant::now());
                let (mse, rc4) = core.encryption();
                tracing::debug!(mse, rc4, "peer attached");
                shared.peers.lock().unwrap_or_else(|p| p.into_inner()).attached(id);
                shared.choker.lock().unwrap_or_else(|p| p.into_inner()).add(id, Instant::now());
            }
            Event::Interested | Event::NotInterested => {
                let interested = matches!(ev, Event::Interested);
                let changed = shared.choker.lock().unwrap_or_else(|p| p.into_inner()).set_interested(
                    id,
                    interested,
                    Instant::now(),
                );
                if changed {
                    shared.rechoke();
                }
            }
            Event::Pex(peers) => {
                // peers of a release being filled are worth dialing; others are not kept
                if let Some(ih) = *infohash {
                    if shared.fill.wants(&ih) {
                        shared.found.add(ih, &peers);
                    }
                }
            }
            Event::Downloaded { index, data } => {
                if let Some(ih) = *infohash {
                    let d = Downloaded { infohash: ih, index, data, source: PeerSourceId(id), bad: bad.clone() };
                    if shared.intake.send(d).is_err() {
                        shared.fill.give_back(&ih, &[PieceIndex(index)], PeerSourceId(id));
                    }
                }
            }
            Event::Demand { index } => {
                let Some(ih) = infohash else { continue };
                if shared.store.has_piece(ih, PieceIndex(index)) {
                    // Stored after our snapshot: the event is on its way; advertise it now.
                    core.piece_stored(index);
                } else if !shared.read_through.request(ih, &[PieceIndex(index)]) {
                    tracing::debug!(piece = index, "request for a missing piece and no fetcher: refused");
                    core.refuse_missing(index);
                }
            }
        }
    }
    Ok(())
}

fn fill(
    shared: &Shared,
    core: &mut PeerProto,
    sbuf: &mut Vec<u8>,
    sent: usize,
    bucket: &mut TokenBucket,
    rate_wait: &mut Option<Duration>,
) -> Result<(), DropReason> {
    if core.has_output() {
        core.take_output(sbuf);
    }
    let Some(ih) = core.infohash() else { return Ok(()) };
    while core.wants_output(sbuf.len() - sent) {
        if core.next_metadata(sbuf)? {
            continue;
        }
        let Some(next) = core.peek_block() else { break };
        let n = next.length as f64;
        let now = Instant::now();
        let mut wait = bucket.wait_for(n, now);
        let mut global = shared.global_bucket.as_ref().map(|g| g.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(g) = global.as_mut() {
            wait = wait.max(g.wait_for(n, now));
        }
        if !wait.is_zero() {
            *rate_wait = Some(wait);
            break;
        }
        bucket.debit(n, now);
        if let Some(g) = global.as_mut() {
            g.debit(n, now);
        }
        drop(global);
        let mut pre = [0u8; PIECE_PREAMBLE_LEN];
        let Some(r) = core.next_block(&mut pre) else { break };
        let start = sbuf.len();
        sbuf.extend_from_slice(&pre);
        sbuf.resize(start + PIECE_PREAMBLE_LEN + r.length as usize, 0);
        match shared.store.read_piece_at(&ih, PieceIndex(r.index), r.begin, &mut sbuf[start + PIECE_PREAMBLE_LEN..]) {
            Ok(()) => {
                core.seal(&mut sbuf[start..]);
                shared.stats.add_block(r.length as u64);
            }
            Err(StoreError::NotPresent { .. }) => {
                // Evicted since we advertised it: the peer times the request out.
                sbuf.truncate(start);
            }
            Err(StoreError::UnknownRelease(_)) => {
                sbuf.truncate(start);
                return Err(DropReason::Internal("release removed".into()));
            }
            Err(e) => {
                sbuf.truncate(start);
                let e = popseed_core::chain(&e).to_string();
                tracing::warn!(piece = r.index, error = %e, "store read failed");
                return Err(DropReason::Internal(format!("store read: {e}")));
            }
        }
    }
    Ok(())
}
