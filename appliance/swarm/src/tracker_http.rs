//! The venue tracker's HTTP front end: hyper's HTTP/1.1 server (GET only, one request per
//! connection) around [`crate::tracker::answer`], with a bound on connections, on the request
//! head's size and on the time a client has to send it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tracker::{answer, Holdings, Swarms};

/// Most bytes of a request head (hyper answers 431 past it; its smallest allowed buffer).
pub const MAX_REQUEST_HEAD: usize = 8192;
/// Time a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection may last, request and reply together.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Tracker connections open at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 256;

/// Serves the tracker on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    swarms: Arc<Mutex<Swarms>>,
    holdings: Arc<dyn Holdings>,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // out of descriptors, for one: give the others a moment to finish
                tracing::warn!(error = %popseed_core::chain(&e), "tracker accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!("tracker: too many connections; one refused");
            continue;
        };
        let local = stream.local_addr().map(|a| a.ip()).unwrap_or(from.ip());
        let (swarms, holdings) = (swarms.clone(), holdings.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let reply = reply(&req, from, local, &swarms, holdings.as_ref());
                async move { Ok::<_, Infallible>(reply) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %popseed_core::chain(&e), "tracker connection failed"),
                Err(_) => tracing::debug!("tracker connection timed out"),
            }
        });
    }
}

fn reply(
    req: &Request<hyper::body::Incoming>,
    from: SocketAddr,
    local: std::net::IpAddr,
    swarms: &Mutex<Swarms>,
    holdings: &dyn Holdings,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, &b"GET only"[..]);
    }
    let (path, query) = (req.uri().path(), req.uri().query().unwrap_or(""));
    match answer(path, query, from.ip(), local, swarms, holdings, Instant::now()) {
        Some(body) => {
            tracing::debug!(%path, reply_bytes = body.len(), "tracker request");
            text(StatusCode::OK, body)
        }
        None => text(StatusCode::NOT_FOUND, &b"not found"[..]),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    r.headers_mut().insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
    r
}
