//! The origin seed server (`popseed origin`): the thin async shell that accepts QUIC
//! connections, reads one request per stream, and answers from release data directories.
//! Limits: max connections (extra ones are refused), max concurrent streams per connection,
//! an optional per-connection byte rate; a malformed request resets that stream only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use popseed_core::{InfoHash, RateLimiter};
use popseed_release::{DataDir, VerifiedRelease};
use serde::Serialize;

use crate::bufpool::BufPool;
use crate::error::OriginError;
use crate::mapped::MappedFiles;
use crate::proto::{self, code, CatalogEntry, Request, Status};
use crate::tls::{self, Identity};

/// Bytes of piece buffers kept for reuse between requests.
const PIECE_BUFFERS_KEPT: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    pub max_streams_per_connection: u32,
    /// Bytes per second per connection (None: unlimited).
    pub rate_limit: Option<u64>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            max_connections: 256,
            max_streams_per_connection: 64,
            rate_limit: None,
        }
    }
}

/// Decides which clients may fetch pieces (popseed/1) when an origin serves allow-listed boxes
/// only (`popseed origin --require-device`); the control crate's hub implements it over its
/// device allow-list. The certificate is the client's TLS certificate, if it showed one.
pub trait ClientGate: Send + Sync {
    fn admits(&self, cert: Option<&rustls::pki_types::CertificateDer<'_>>) -> bool;
}

/// A release an origin serves, with the directory holding its files.
pub struct ServedRelease {
    pub release: VerifiedRelease,
    pub data: DataDir,
}

/// Counters an operator (or a test) can read.
#[derive(Default)]
pub struct OriginStats {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub active_connections: AtomicUsize,
    pub pieces_served: AtomicU64,
    pub bytes_served: AtomicU64,
    pub malformed_requests: AtomicU64,
    per_piece: Mutex<HashMap<InfoHash, HashMap<u32, u32>>>,
}

#[derive(Serialize)]
pub struct StatsSnapshot {
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub active_connections: usize,
    pub pieces_served: u64,
    pub bytes_served: u64,
    pub malformed_requests: u64,
    /// infohash -> piece index -> times sent
    pub per_piece: HashMap<InfoHash, HashMap<u32, u32>>,
}

impl OriginStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let per_piece =
            self.per_piece.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(ih, m)| (*ih, m.clone())).collect();
        StatsSnapshot {
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            active_connections: self.active_connections.load(Ordering::Relaxed),
            pieces_served: self.pieces_served.load(Ordering::Relaxed),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
            malformed_requests: self.malformed_requests.load(Ordering::Relaxed),
            per_piece,
        }
    }

    fn served(&self, ih: &InfoHash, index: u32, bytes: usize) {
        self.pieces_served.fetch_add(1, Ordering::Relaxed);
        self.bytes_served.fetch_add(bytes as u64, Ordering::Relaxed);
        *self.per_piece.lock().unwrap_or_else(|p| p.into_inner()).entry(*ih).or_default().entry(index).or_insert(0) +=
            1;
    }
}

/// Takes the device-link connections (ALPN `popseed-control/1`) an origin accepts; the control
/// crate implements it. The future runs until the connection ends.
pub trait ControlAcceptor: Send + Sync {
    fn serve(&self, conn: quinn::Connection) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

/// A served release with its files' mappings.
struct Served {
    release: VerifiedRelease,
    data: DataDir,
    mapped: MappedFiles,
}

struct Shared {
    control: Option<Arc<dyn ControlAcceptor>>,
    /// With `--require-device`: who may fetch pieces.
    gate: Option<Arc<dyn ClientGate>>,
    releases: HashMap<InfoHash, Served>,
    stats: Arc<OriginStats>,
    cfg: OriginConfig,
    buffers: Arc<BufPool>,
}

pub struct OriginServer {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

impl OriginServer {
    pub fn bind(cfg: OriginConfig, identity: Identity, releases: Vec<ServedRelease>) -> Result<Self, OriginError> {
        Self::bind_with_control(cfg, identity, releases, None)
    }

    /// Like [`OriginServer::bind`], and hands device-link connections to `control` (without it
    /// they are closed).
    pub fn bind_with_control(
        cfg: OriginConfig,
        identity: Identity,
        releases: Vec<ServedRelease>,
        control: Option<Arc<dyn ControlAcceptor>>,
    ) -> Result<Self, OriginError> {
        let server_cfg = tls::server_config(identity, cfg.max_streams_per_connection)?;
        let endpoint = quinn::Endpoint::server(server_cfg, cfg.listen)
            .map_err(|e| OriginError::Bind { addr: cfg.listen, err: e })?;
        let releases = releases
            .into_iter()
            .map(|ServedRelease { release, data }| {
                (release.infohash(), Served { mapped: MappedFiles::new(&data), release, data })
            })
            .collect();
        let buffers = BufPool::new(PIECE_BUFFERS_KEPT);
        Ok(OriginServer {
            endpoint,
            shared: Arc::new(Shared { control, gate: None, releases, stats: Arc::default(), cfg, buffers }),
        })
    }

    /// Serves pieces only to clients `gate` admits (the rest are closed as refused, counted in
    /// `connections_refused`).
    pub fn require_clients(mut self, gate: Arc<dyn ClientGate>) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.gate = Some(gate);
        }
        self
    }

    pub fn local_addr(&self) -> Result<SocketAddr, OriginError> {
        self.endpoint.local_addr().map_err(|e| OriginError::Io { path: "socket".into(), err: e })
    }

    pub fn stats(&self) -> Arc<OriginStats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                _ = &mut shutdown => break,
                i = self.endpoint.accept() => match i { Some(i) => i, None => break },
            };
            let shared = self.shared.clone();
            let stats = &shared.stats;
            if stats.active_connections.load(Ordering::Relaxed) >= shared.cfg.max_connections {
                stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                incoming.refuse();
                continue;
            }
            stats.active_connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                match incoming.await {
                    Ok(conn) => {
                        shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
                        if is_control(&conn) {
                            match &shared.control {
                                Some(c) => c.serve(conn).await,
                                None => conn.close(code::REFUSED.into(), b"this origin takes no device links"),
                            }
                        } else if !admitted(&conn, shared.gate.as_deref()) {
                            shared.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("a client without an allow-listed device certificate was refused");
                            crate::connect::refuse(&conn, "pieces are served to allow-listed devices only");
                        } else {
                            serve_connection(conn, shared.clone()).await;
                        }
                    }
                    Err(e) => tracing::debug!(error = %popseed_core::chain(&e), "handshake failed"),
                }
                shared.stats.active_connections.fetch_sub(1, Ordering::Relaxed);
            });
        }
        self.endpoint.close(code::OK.into(), b"shutting down");
        self.endpoint.wait_idle().await;
    }
}

/// Whether `gate` (if any) admits the client of `conn`.
fn admitted(conn: &quinn::Connection, gate: Option<&dyn ClientGate>) -> bool {
    let Some(gate) = gate else { return true };
    let certs = conn.peer_identity().and_then(|i| i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok());
    gate.admits(certs.as_ref().and_then(|c| c.first()))
}

fn is_control(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .is_some_and(|p| p == proto::CONTROL_ALPN)
}

async fn serve_connection(conn: quinn::Connection, shared: Arc<Shared>) {
    let limiter = shared.cfg.rate_limit.map(|r| Arc::new(RateLimiter::new(r)));
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %popseed_core::chain(&e), "connection ended");
                return;
            }
        };
        let shared = shared.clone();
        let limiter = limiter.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_stream(send, recv, shared, limiter.as_deref()).await {
                tracing::debug!(error = %popseed_core::chain(&e), "stream ended with an error");
            }
        });
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: Arc<Shared>,
    limiter: Option<&RateLimiter>,
) -> Result<(), OriginError> {
    let req = match recv.read_to_end(proto::MAX_REQUEST).await {
        Ok(buf) => Request::decode(&buf),
        Err(quinn::ReadToEndError::TooLong) => Err(proto::ProtoError::TooLong(proto::MAX_REQUEST as u32)),
        Err(e) => return Err(e.into()),
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            shared.stats.malformed_requests.fetch_add(1, Ordering::Relaxed);
            tracing::info!(error = %popseed_core::chain(&e), "malformed request; resetting the stream");
            let _ = send.reset(code::MALFORMED.into());
            let _ = recv.stop(code::MALFORMED.into());
            return Ok(());
        }
    };
    match req {
        Request::List => {
            let list: Vec<CatalogEntry> = shared
                .releases
                .values()
                .map(|r| CatalogEntry {
                    infohash: r.release.infohash(),
                    name: r.release.manifest.name.clone(),
                    version: r.release.manifest.version.clone(),
                    total_size: r.release.manifest.total_size,
                })
                .collect();
            let json = serde_json::to_vec(&list).unwrap_or_default();
            send.write_all(&proto::list_header(Status::Ok, json.len() as u32)).await?;
            send.write_all(&json).await?;
        }
        Request::GetRelease { infohash } => match shared.releases.get(&infohash) {
            Some(r) => {
                let (m, t) = (&r.release.manifest_bytes, &r.release.torrent_bytes);
                send.write_all(&proto::release_header(Status::Ok, m.len() as u32, t.len() as u32)).await?;
                send.write_all(m).await?;
                send.write_all(t).await?;
            }
            None => send.write_all(&proto::release_header(Status::UnknownRelease, 0, 0)).await?,
        },
        Request::GetPieces { infohash, priority, indices } => {
            let _ = send.set_priority(priority);
            let served = shared.releases.get(&infohash);
            for index in indices {
                let Some(r) = served else {
                    send.write_all(&proto::piece_header(Status::UnknownRelease, index, 0)).await?;
                    continue;
                };
                if r.release.layout().piece_size(index).is_none() {
                    send.write_all(&proto::piece_header(Status::NoSuchPiece, index, 0)).await?;
                    continue;
                }
                let sh = shared.clone();
                let data = tokio::task::spawn_blocking(move || match sh.releases.get(&infohash) {
                    Some(r) => {
                        // a slice of the file's mapping when it can be, else a pread copy
                        if let Some(piece) = r.mapped.piece(&r.data, index) {
                            return Ok(piece);
                        }
                        let len = r.release.layout().piece_size(index).unwrap_or(0) as usize;
                        let mut buf = sh.buffers.take(len);
                        r.data.read_piece_at(index, 0, &mut buf).map(|()| sh.buffers.freeze(buf))
                    }
                    None => Err(popseed_release::ReleaseError::DataMismatch("release gone".into())),
                })
                .await
                .unwrap_or_else(|e| Err(popseed_release::ReleaseError::DataMismatch(e.to_string())));
                match data {
                    Ok(bytes) => {
                        if let Some(l) = limiter {
                            l.acquire(bytes.len()).await;
                        }
                        send.write_all(&proto::piece_header(Status::Ok, index, bytes.len() as u32)).await?;
                        let n = bytes.len();
                        send.write_chunk(bytes).await?;
                        shared.stats.served(&infohash, index, n);
                    }
                    Err(e) => {
                        tracing::warn!(error = %popseed_core::chain(&e), index, "cannot read piece");
                        send.write_all(&proto::piece_header(Status::Unavailable, index, 0)).await?;
                    }
                }
            }
        }
    }
    let _ = send.finish();
    // Wait until the peer has everything (or gave up) before dropping the stream.
    let _ = send.stopped().await;
    Ok(())
}
