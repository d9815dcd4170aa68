//! popseed-http: serving an axum router the way every HTTP listener of the box must be served
//! on a hostile network. hyper's HTTP/1.1 server with
//! - a cap on open connections (more are closed right after accept, and counted),
//! - a time limit for a client to send its request head (slowloris),
//! - a cap on the request head's size (431 past it),
//! - an idle limit between requests on a kept-alive connection,
//!
//! and the client's address handed to handlers as `axum::extract::ConnectInfo<SocketAddr>`.
//! The management server, the setup page and the origin's admin API all use [`serve`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The bounds of one listener. Every field has a default fit for a management page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time a client has to send a complete request head.
    pub header_timeout: Duration,
    /// Largest request head in bytes (hyper's smallest allowed buffer is 8 KiB).
    pub max_head_bytes: usize,
    /// Longest a kept-alive connection may sit between requests.
    pub idle_timeout: Duration,
}

/// Defaults for management-style listeners: 64 connections, 10 s for the head, 16 KiB heads,
/// 30 s idle.
pub const DEFAULT_LIMITS: Limits = Limits {
    max_connections: 64,
    header_timeout: Duration::from_secs(10),
    max_head_bytes: 16 * 1024,
    idle_timeout: Duration::from_secs(30),
};

impl Default for Limits {
    fn default() -> Self {
        DEFAULT_LIMITS
    }
}

/// What a listener refused, for metrics and tests.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections closed at accept because `max_connections` were open.
    pub refused: AtomicU64,
    /// Connections that ended with an error (head timeout, head too large, reset...).
    pub failed: AtomicU64,
}

/// Serves `app` on `listener` until `shutdown`, within `limits`. Open connections are closed
/// when it returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stats: Arc<HttpStats>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // out of descriptors, for one: let the others finish first
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let app = app.clone().map_request(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let stats = stats.clone();
        let stop = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES))
                .serve_connection(
                    TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout)),
                    TowerToHyperService::new(app),
                );
            tokio::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
    conns.shutdown().await;
}

/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// hyper refuses a smaller read buffer.
const MIN_HEAD_BYTES: usize = 8192;

mod idle;
use idle::IdleTimeout;

#[cfg(test)]
mod tests;
