//! The DNS responder's I/O shell: UDP and TCP (RFC 7766 length-prefixed) listeners that feed
//! [`DnsRules::respond`] under a shared per-source rate limit. Dropped queries (malformed,
//! rate-limited) get no reply; nothing a client sends can crash it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::rules::{DnsRules, RateLimiter};

/// What the responder did, for metrics.
#[derive(Debug, Default)]
pub struct DnsStats {
    pub queries: AtomicU64,
    /// Malformed or unanswerable queries, dropped without a reply.
    pub dropped: AtomicU64,
    /// Queries over a source's rate, dropped without a reply.
    pub rate_limited: AtomicU64,
}

/// Most sources the rate limiter tracks at once.
const MAX_SOURCES: usize = 4096;
/// Concurrent TCP DNS connections.
const MAX_TCP: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Shared by the UDP and TCP listeners.
pub struct Responder {
    pub rules: DnsRules,
    pub limiter: Mutex<RateLimiter>,
    pub stats: Arc<DnsStats>,
}

impl Responder {
    pub fn new(rules: DnsRules, rate: u32, burst: u32, stats: Arc<DnsStats>) -> Responder {
        Responder {
            rules,
            limiter: Mutex::new(RateLimiter::new(rate.max(1) as f64, burst.max(1) as f64, MAX_SOURCES)),
            stats,
        }
    }

    /// Counts, rate-limits and answers one query; `None`: send nothing.
    pub fn handle(&self, src: IpAddr, pkt: &[u8]) -> Option<Vec<u8>> {
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let allowed = self.limiter.lock().unwrap_or_else(|p| p.into_inner()).allow(src, Instant::now());
        if !allowed {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let r = self.rules.respond(pkt);
        if r.is_none() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

pub async fn serve_udp(sock: UdpSocket, resp: Arc<Responder>, mut shutdown: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            r = sock.recv_from(&mut buf) => {
                let (n, src) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        // e.g. ICMP port unreachable surfacing as ECONNREFUSED: keep serving.
                        tracing::trace!(error = %popseed_core::chain(&e), "udp recv");
                        continue;
                    }
                };
                if let Some(reply) = resp.handle(src.ip().to_canonical(), &buf[..n]) {
                    let _ = sock.send_to(&reply, src).await;
                }
            }
        }
    }
}

pub async fn serve_tcp(listener: TcpListener, resp: Arc<Responder>, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_TCP));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            acc = listener.accept() => {
                let Ok((stream, peer)) = acc else { continue };
                let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
                let resp = resp.clone();
                conns.spawn(async move {
                    tcp_conn(stream, peer.ip().to_canonical(), resp).await;
                    drop(permit);
                });
            }
        }
    }
    conns.shutdown().await;
}

async fn tcp_conn(mut stream: TcpStream, src: IpAddr, resp: Arc<Responder>) {
    loop {
        let len = match timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(n)) => n as usize,
            _ => return,
        };
        if len < 12 {
            return;
        }
        let mut pkt = vec![0u8; len];
        match timeout(TCP_IDLE, stream.read_exact(&mut pkt)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = resp.handle(src, &pkt) else { return };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        out.extend_from_slice(&reply);
        if !matches!(timeout(TCP_IDLE, stream.write_all(&out)).await, Ok(Ok(()))) {
            return;
        }
    }
}
