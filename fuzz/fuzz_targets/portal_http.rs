//! The portal's HTTP front end, end to end, as an attendee's device reaches it: the bytes of
//! one connection go to a running `popseed_portal::Portal` on loopback, so the request-head
//! reader and parser of `conn.rs` (private: reachable only through a socket), the captive gate
//! (OS probes, foreign hosts, RFC 8908), the router, the acknowledge form, .torrent re-issue
//! and downloads with Range/If-Range/If-None-Match all see them. The store holds the fixture
//! release with some pieces present and some missing (no fetcher: a missing range is 503).
//!
//! Input: the bytes the client writes, then it half-closes and reads to the end.
//!
//! Asserts: no panic in the portal (a panic anywhere aborts the process); the portal answers
//! or closes within 10 s; whatever it sends is a sequence of complete HTTP/1.1 responses whose
//! bodies match their Content-Length (HEAD, 204 and 304 carry none), and no response is a 500.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use popseed_core::{NoReadThrough, PieceIndex};
use popseed_fuzz::{fixture_stream, publish_fixture};
use popseed_portal::{Portal, PortalConfig};
use popseed_store::{AddOptions, Capacity, Store, StoreConfig};

struct Running {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
    _portal: Portal,
}

fn portal() -> &'static Running {
    static P: OnceLock<Running> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("popseed-fuzz-portal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch dir");
        let (release, _) = publish_fixture(&dir);
        let cfg = StoreConfig { dir: dir.join("store"), capacity: Capacity { budget: None, min_free: 0 } };
        let store = Arc::new(Store::open(cfg).expect("a store"));
        store.add_release(&release, AddOptions::default()).expect("the fixture release");
        // every piece but the second (a.bin's middle): some ranges are there, some are not
        let all = fixture_stream();
        let l = release.layout();
        for i in (0..l.piece_count()).filter(|&i| i != 1) {
            let start = l.piece_offset(i) as usize;
            let size = l.piece_size(i).expect("a piece") as usize;
            store.put_piece(&release.infohash(), PieceIndex(i), &all[start..start + size]).expect("a piece stored");
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
        let cfg = PortalConfig {
            http_listen: "127.0.0.1:0".parse().expect("an address"),
            dns_listen: "127.0.0.1:0".parse().expect("an address"),
            portal_ip: "127.0.0.1".parse().expect("an address"),
            demand_timeout_secs: 1,
            header_timeout_secs: 2,
            ..PortalConfig::default()
        };
        let portal = rt.block_on(Portal::start(store, Arc::new(NoReadThrough), cfg)).expect("the portal starts");
        Running { addr: portal.http_addr, _rt: rt, _portal: portal }
    })
}

/// Checks that `buf` is a sequence of complete responses; returns how many.
fn responses(mut buf: &[u8], heads: &[bool]) -> usize {
    let mut n = 0;
    while !buf.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        let head_len = match r.parse(buf) {
            Ok(httparse::Status::Complete(l)) => l,
            other => panic!("not an HTTP response ({other:?}): {:?}", String::from_utf8_lossy(buf)),
        };
        assert_eq!(r.version, Some(1), "HTTP/1.1");
        let code = r.code.expect("a status");
        assert!((200..600).contains(&code), "status {code}");
        assert_ne!(code, 500, "internal error: {:?}", String::from_utf8_lossy(buf));
        let len: usize = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| std::str::from_utf8(h.value).expect("ASCII").trim().parse().expect("a length"))
            .unwrap_or(0);
        // a response to HEAD (known only for requests that parsed) announces but carries no body
        let is_head = heads.get(n).copied().unwrap_or(false);
        let body = if is_head || code == 204 || code == 304 { 0 } else { len };
        assert!(buf.len() >= head_len + body, "body shorter than its Content-Length");
        buf = &buf[head_len + body..];
        n += 1;
    }
    n
}

/// Which of the pipelined requests in `data` are HEAD (as far as they parse).
fn head_methods(mut data: &[u8]) -> Vec<bool> {
    let mut out = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = r.parse(data) else { return out };
        out.push(r.method == Some("HEAD"));
        let cl: usize = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
            .unwrap_or(0);
        data = data.get(n + cl..).unwrap_or(&[]);
    }
}

fuzz_target!(|data: &[u8]| {
    let p = portal();
    let mut s = TcpStream::connect(p.addr).expect("connect to the portal");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // the portal may close early (bad request, 413...): a failed write is not a finding
    let _ = s.write_all(data);
    let _ = s.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
        Err(e) => panic!("no answer and no close within 10 s: {e}"),
    }
    responses(&got, &head_methods(data));
});
