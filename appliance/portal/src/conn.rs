//! The HTTP/1.1 connection shell: accepts TCP connections, reads request heads with bounds
//! (size, header count, time: slowloris), hands each request to the axum router, and writes the
//! response; a download's bytes go from the page cache to the socket with sendfile(2), so a slow
//! client pins no user-space memory. Keep-alive and pipelining are supported; request bodies are
//! small forms only (Content-Length up to 16 KiB, no chunked uploads).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use axum::Router;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tower::ServiceExt;

use crate::http::{AppState, ClientAddr, SendFile, SendFileExt};

const MAX_HEADERS: usize = 64;
const MAX_BODY: usize = 16 * 1024;
/// Largest single sendfile call.
const SENDFILE_CHUNK: u64 = 8 << 20;

/// Accepts connections until `shutdown` turns true; then drops every open connection.
pub async fn serve(listener: TcpListener, app: Router, st: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(st.cfg.max_connections));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            acc = listener.accept() => {
                let (stream, peer) = match acc {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %popseed_core::chain(&e), "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    st.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                let (app, st) = (app.clone(), st.clone());
                conns.spawn(async move {
                    connection(stream, peer, app, st).await;
                    drop(permit);
                });
            }
        }
    }
    conns.shutdown().await;
}

enum HeadError {
    Closed,
    TooLarge,
    Bad,
    Timeout,
}

/// Reads until `buf` holds a complete request head; returns its length.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, st: &AppState) -> Result<usize, HeadError> {
    let idle = Duration::from_secs(st.cfg.idle_timeout_secs);
    let head_time = Duration::from_secs(st.cfg.header_timeout_secs);
    let mut deadline = None;
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => return Ok(n),
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                Err(_) => return Err(HeadError::Bad),
            }
            if buf.len() >= st.cfg.max_header_bytes {
                return Err(HeadError::TooLarge);
            }
        }
        // The whole head must arrive within header_timeout of its first byte.
        let wait = match deadline {
            None if buf.is_empty() => idle,
            None => {
                let d = tokio::time::Instant::now() + head_time;
                deadline = Some(d);
                head_time
            }
            Some(d) => d.saturating_duration_since(tokio::time::Instant::now()),
        };
        let room = st.cfg.max_header_bytes.saturating_sub(buf.len()).clamp(1, 8192);
        let old = buf.len();
        buf.resize(old + room, 0);
        let r = timeout(wait, stream.read(&mut buf[old..])).await;
        match r {
            Ok(Ok(n)) => {
                buf.truncate(old + n);
                if n == 0 {
                    return Err(HeadError::Closed);
                }
                if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + head_time);
                }
            }
            Ok(Err(_)) => {
                buf.truncate(old);
                return Err(HeadError::Closed);
            }
            Err(_) => {
                buf.truncate(old);
                return Err(if old == 0 { HeadError::Closed } else { HeadError::Timeout });
            }
        }
    }
}

async fn write_simple(stream: &mut TcpStream, status: StatusCode, st: &AppState) {
    let msg = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let _ = timeout(Duration::from_secs(st.cfg.send_timeout_secs), stream.write_all(msg.as_bytes())).await;
}

/// A parsed request head, owned.
struct Head {
    req: Request<Body>,
    content_length: usize,
    keep_alive: bool,
}

fn parse_head(bytes: &[u8], peer: SocketAddr) -> Result<Head, StatusCode> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut p = httparse::Request::new(&mut headers);
    match p.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(StatusCode::BAD_REQUEST),
    }
    let method = Method::from_bytes(p.method.unwrap_or("").as_bytes()).map_err(|_| StatusCode::BAD_REQUEST)?;
    let path = p.path.unwrap_or("");
    let uri: Uri = path.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
    // Only origin-form reaches the router (absolute-form is reduced to its path).
    let uri: Uri = match uri.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => pq.as_str().parse().map_err(|_| StatusCode::BAD_REQUEST)?,
        _ => return Err(StatusCode::BAD_REQUEST),
    };
    let version = if p.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let mut req = Request::new(Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    let mut content_length = 0usize;
    let mut conn_close = false;
    let mut conn_keep = false;
    for h in p.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| StatusCode::BAD_REQUEST)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| StatusCode::BAD_REQUEST)?;
        if name == header::TRANSFER_ENCODING {
            return Err(StatusCode::NOT_IMPLEMENTED);
        }
        if name == header::CONTENT_LENGTH {
            let n: usize = value.to_str().ok().and_then(|s| s.trim().parse().ok()).ok_or(StatusCode::BAD_REQUEST)?;
            if n > MAX_BODY {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
            content_length = n;
        }
        if name == header::CONNECTION {
            let v = value.to_str().unwrap_or("").to_ascii_lowercase();
            conn_close |= v.split(',').any(|t| t.trim() == "close");
            conn_keep |= v.split(',').any(|t| t.trim() == "keep-alive");
        }
        req.headers_mut().append(name, value);
    }
    let keep_alive = if version == Version::HTTP_10 { conn_keep && !conn_close } else { !conn_close };
    req.extensions_mut().insert(ClientAddr(peer.ip().to_canonical()));
    Ok(Head { req, content_length, keep_alive })
}

/// Serves one connection's requests in order.
async fn connection(mut stream: TcpStream, peer: SocketAddr, app: Router, st: Arc<AppState>) {
    let _ = stream.set_nodelay(true);
    let send_timeout = Duration::from_secs(st.cfg.send_timeout_secs);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head_len = match read_head(&mut stream, &mut buf, &st).await {
            Ok(n) => n,
            Err(HeadError::Closed) => return,
            Err(HeadError::TooLarge) => {
                return write_simple(&mut stream, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &st).await
            }
            Err(HeadError::Bad) => return write_simple(&mut stream, StatusCode::BAD_REQUEST, &st).await,
            Err(HeadError::Timeout) => return write_simple(&mut stream, StatusCode::REQUEST_TIMEOUT, &st).await,
        };
        let Head { mut req, content_length, keep_alive } = match parse_head(&buf[..head_len], peer) {
            Ok(h) => h,
            Err(code) => return write_simple(&mut stream, code, &st).await,
        };
        // The body (a small form) follows the head; part of it may already be buffered.
        let need = head_len + content_length;
        while buf.len() < need {
            let old = buf.len();
            buf.resize(need, 0);
            match timeout(Duration::from_secs(st.cfg.header_timeout_secs), stream.read(&mut buf[old..])).await {
                Ok(Ok(n)) if n > 0 => buf.truncate(old + n),
                _ => return,
            }
        }
        if content_length > 0 {
            *req.body_mut() = Body::from(buf[head_len..need].to_vec());
        }
        buf.drain(..need);
        let is_head = req.method() == Method::HEAD;
        let version = req.version();
        let resp = match app.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = resp.into_parts();
        let sendfile = parts.extensions.get::<SendFileExt>().and_then(SendFileExt::take);
        let body_bytes = if sendfile.is_some() {
            bytes_empty()
        } else {
            match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => return,
            }
        };
        let status = parts.status;
        let mut out = Vec::with_capacity(512 + if is_head { 0 } else { body_bytes.len() });
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or("")).as_bytes(),
        );
        let no_body_status =
            status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED || status.is_informational();
        for (k, v) in parts.headers.iter() {
            if k == header::CONNECTION
                || k == header::TRANSFER_ENCODING
                || (k == header::CONTENT_LENGTH && no_body_status)
            {
                continue;
            }
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !parts.headers.contains_key(header::CONTENT_LENGTH) && !no_body_status {
            out.extend_from_slice(format!("content-length: {}\r\n", body_bytes.len()).as_bytes());
        }
        out.extend_from_slice(
            format!("date: {}\r\nserver: popseed\r\n", httpdate::fmt_http_date(SystemTime::now())).as_bytes(),
        );
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !is_head && !no_body_status {
            out.extend_from_slice(&body_bytes);
        }
        match timeout(send_timeout, stream.write_all(&out)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        if let (Some(sf), false) = (sendfile, is_head) {
            if send_file(&stream, sf, &st).await.is_err() {
                return;
            }
        }
        if !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

fn bytes_empty() -> axum::body::Bytes {
    axum::body::Bytes::new()
}

/// Sends a file region with sendfile(2); gives up when the client takes nothing for
/// `send_timeout_secs`. A region of a file still filling goes out as its pieces are stored
/// (ends where it stands when the next one misses `demand_timeout_secs`).
async fn send_file(stream: &TcpStream, sf: SendFile, st: &AppState) -> io::Result<()> {
    let SendFile { file, offset, len, slot, mut filling } = sf;
    let _slot = slot;
    let end = offset + len;
    let mut off: i64 = i64::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    let send_timeout = Duration::from_secs(st.cfg.send_timeout_secs);
    // bytes from `off` known to be stored (all of them when the file was complete)
    let mut ready = if filling.is_some() { 0 } else { len };
    while (off as u64) < end {
        if ready == 0 {
            if let Some(f) = filling.as_mut() {
                ready = crate::http::bytes_ready(st, f, off as u64, end).await.map_err(|()| {
                    st.stats.downloads_unavailable.fetch_add(1, Ordering::Relaxed);
                    io::Error::new(io::ErrorKind::TimedOut, "the next piece did not arrive in time")
                })?;
            }
        }
        let count = (end - off as u64).min(SENDFILE_CHUNK).min(ready) as usize;
        let fut = stream.async_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(stream, &file, Some(&mut off), count).map_err(io::Error::from)
        });
        match timeout(send_timeout, fut).await {
            Ok(Ok(0)) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than expected")),
            Ok(Ok(n)) => {
                st.stats.bytes_served.fetch_add(n as u64, Ordering::Relaxed);
                ready = ready.saturating_sub(n as u64);
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                st.stats.downloads_timed_out.fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"));
            }
        }
    }
    Ok(())
}
