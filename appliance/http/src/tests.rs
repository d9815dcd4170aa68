//! The bounds on real sockets (loopback): a slow head is cut off, the connection cap refuses
//! the extra connection, an oversized head gets 431, an idle keep-alive ends, and handlers see
//! the client's address. Every wait is for the server's own action (a close, a reply); the
//! outer bounds only stop a hung test.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

const HUNG: Duration = Duration::from_secs(60);

async fn start(limits: Limits) -> (SocketAddr, Arc<HttpStats>, CancellationToken) {
    let app =
        Router::new().route("/who", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(HttpStats::default());
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, app, limits, stats.clone(), stop.clone()));
    (addr, stats, stop)
}

/// Reads until the server closes the connection; returns what it sent.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(HUNG, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server never closed the connection");
    out
}

#[tokio::test]
async fn answers_and_tells_handlers_the_client_address() {
    let (addr, _, stop) = start(Limits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let reply = String::from_utf8(until_closed(&mut s).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with(&me.to_string()), "{reply}");
    stop.cancel();
}

#[tokio::test]
async fn a_head_that_never_ends_is_cut_off() {
    let limits = Limits { header_timeout: Duration::from_millis(300), ..Limits::default() };
    let (addr, stats, stop) = start(limits).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    // the client keeps the connection open and sends nothing more: the server must end it
    let reply = until_closed(&mut s).await;
    assert!(!String::from_utf8_lossy(&reply).contains("200 OK"), "no answer to half a head");
    tokio::time::timeout(HUNG, async {
        while stats.failed.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the cut-off connection is counted");
    stop.cancel();
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let limits = Limits { max_connections: 2, ..Limits::default() };
    let (addr, stats, stop) = start(limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // a completed request proves the server holds this connection (a permit is taken)
        s.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(HUNG, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let reply = until_closed(&mut extra).await;
    assert!(reply.is_empty(), "the third connection is refused without an answer");
    assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
    drop(held);
    stop.cancel();
}

#[tokio::test]
async fn an_oversized_head_is_refused() {
    let (addr, _, stop) = start(Limits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let big = format!("GET /who HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = s.write_all(big.as_bytes()).await;
    let reply = String::from_utf8_lossy(&until_closed(&mut s).await).into_owned();
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 431"), "{reply}");
    stop.cancel();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_ends() {
    let limits = Limits { idle_timeout: Duration::from_millis(300), ..Limits::default() };
    let (addr, _, stop) = start(limits).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let reply = String::from_utf8(until_closed(&mut s).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "answered, then closed once idle: {reply}");
    stop.cancel();
}
