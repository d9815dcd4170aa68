//! The box as a tracker client: while it fills a release it announces to the release's HTTP
//! trackers (BEP 3, compact BEP 23) and UDP trackers (BEP 15, [`crate::announce_udp`]) as a
//! downloader, so a box with no reachable origin finds any swarm that has the release; the
//! peers it learns go to the dialer. [`announce_target`] and [`parse_reply`] are pure (and
//! fuzzed); [`run`] is the shell. `https://` trackers are skipped (not spoken yet).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use popseed_core::{InfoHash, PeerFill};
use popseed_release::bencode;
use popseed_store::Store;
use tokio_util::sync::CancellationToken;

/// Longest tracker reply read.
pub const MAX_REPLY: usize = 64 * 1024;
/// Longest an announce may take, connect to last byte.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(15);
/// Announce intervals a tracker may ask for are kept within these bounds.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
pub const MAX_INTERVAL: Duration = Duration::from_secs(1800);
/// After a failed announce the tracker is tried again this much later.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// Peers remembered per release from trackers (the dialer connects to at most 30 of them).
pub const MAX_FOUND_PER_RELEASE: usize = 200;
/// Trackers announced to per release at most (the first ones of its tiers).
pub const MAX_TRACKERS_PER_RELEASE: usize = 8;
/// Peers asked for per announce.
pub const NUMWANT: u32 = 50;

/// A parsed tracker reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerReply {
    pub peers: Vec<SocketAddr>,
    pub interval: Duration,
}

/// Why an announce failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("not an http:// or udp:// tracker URL")]
    Unsupported,
    #[error("tracker address")]
    Resolve(#[source] std::io::Error),
    #[error("connecting to the tracker")]
    Connect(#[source] std::io::Error),
    #[error("HTTP")]
    Http(#[source] hyper::Error),
    #[error("building the request")]
    Request(#[source] hyper::http::Error),
    #[error("tracker answered HTTP {0}")]
    Status(u16),
    #[error("tracker reply over {MAX_REPLY} bytes or cut short")]
    Body,
    #[error("tracker reply is not bencode")]
    Bencode(#[source] bencode::BencodeError),
    #[error("tracker reply is not a dictionary with peers")]
    Shape,
    #[error("tracker refused: {0}")]
    Failure(String),
    #[error("no answer within {ANNOUNCE_TIMEOUT:?}")]
    Timeout,
}

/// Where an announce goes: host, port, and the path with its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceTarget {
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
}

/// What the box says about itself in an announce.
#[derive(Debug, Clone, Copy)]
pub struct Announcing {
    pub infohash: InfoHash,
    pub peer_id: [u8; 20],
    pub port: u16,
    pub left: u64,
    pub started: bool,
}

/// The announce request for `url` (an `http://host[:port]/path[?query]` tracker), or None for
/// any other scheme or a malformed URL.
pub fn announce_target(url: &str, a: &Announcing) -> Option<AnnounceTarget> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse::<u16>().ok()?),
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || path.contains(['\r', '\n', ' ', '#']) || host.contains(['/', '@', ' ']) {
        return None;
    }
    let enc = |b: &[u8]| percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut q = format!(
        "info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left={}&compact=1&numwant={NUMWANT}",
        enc(a.infohash.as_bytes()),
        enc(&a.peer_id),
        a.port,
        a.left
    );
    if a.started {
        q.push_str("&event=started");
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    Some(AnnounceTarget { host: host.to_owned(), port, path_and_query: format!("{path}{sep}{q}") })
}

/// Parses a tracker reply: `peers` compact (6 bytes each) or a list of dictionaries with `ip`
/// and `port`, `peers6` compact (18 bytes each), `interval`, `failure reason`.
pub fn parse_reply(body: &[u8]) -> Result<TrackerReply, AnnounceError> {
    bencode::check_whole(body).map_err(AnnounceError::Bencode)?;
    let (v, _) = bencode::decode_prefix(body).map_err(AnnounceError::Bencode)?;
    let bytes_of = |key: &[u8]| bencode::dict_get(&v, key).and_then(bencode::as_bytes);
    if let Some(reason) = bytes_of(b"failure reason") {
        return Err(AnnounceError::Failure(String::from_utf8_lossy(reason).chars().take(200).collect()));
    }
    let interval = bencode::dict_get(&v, b"interval")
        .and_then(bencode::as_int)
        .map_or(MIN_INTERVAL, |s| Duration::from_secs(s.clamp(0, MAX_INTERVAL.as_secs() as i64) as u64))
        .clamp(MIN_INTERVAL, MAX_INTERVAL);
    let mut peers = Vec::new();
    let field = bencode::dict_get(&v, b"peers");
    match (field.and_then(bencode::as_bytes), field.and_then(bencode::as_list)) {
        (Some(b), _) => peers.extend(crate::addr::compact_v4(b)),
        (None, Some(list)) => {
            for p in list {
                let ip = bencode::dict_get(p, b"ip")
                    .and_then(bencode::as_bytes)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.parse::<IpAddr>().ok());
                let port = bencode::dict_get(p, b"port").and_then(bencode::as_int).and_then(|p| u16::try_from(p).ok());
                if let (Some(ip), Some(port)) = (ip, port) {
                    peers.push(SocketAddr::new(ip, port));
                }
            }
        }
        (None, None) if field.is_none() && bytes_of(b"peers6").is_some() => {}
        _ => return Err(AnnounceError::Shape),
    }
    if let Some(b) = bytes_of(b"peers6") {
        peers.extend(crate::addr::compact_v6(b));
    }
    peers.retain(crate::addr::dialable);
    Ok(TrackerReply { peers, interval })
}

/// One announce over HTTP/1.1 (hyper), within [`ANNOUNCE_TIMEOUT`].
pub async fn announce(t: &AnnounceTarget) -> Result<TrackerReply, AnnounceError> {
    tokio::time::timeout(ANNOUNCE_TIMEOUT, announce_inner(t)).await.map_err(|_| AnnounceError::Timeout)?
}

async fn announce_inner(t: &AnnounceTarget) -> Result<TrackerReply, AnnounceError> {
    let addr = tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .map_err(AnnounceError::Resolve)?
        .next()
        .ok_or_else(|| AnnounceError::Resolve(std::io::Error::other("no address")))?;
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(AnnounceError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(AnnounceError::Http)?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(t.path_and_query.as_str())
        .header(hyper::header::HOST, format!("{}:{}", t.host, t.port))
        .header(hyper::header::USER_AGENT, concat!("popseed/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(AnnounceError::Request)?;
    let res = sender.send_request(req).await.map_err(AnnounceError::Http)?;
    let status = res.status().as_u16();
    let body = Limited::new(res.into_body(), MAX_REPLY).collect().await.map_err(|_| AnnounceError::Body)?.to_bytes();
    driver.abort();
    if status != 200 {
        return Err(AnnounceError::Status(status));
    }
    parse_reply(&body)
}

/// Peers found by trackers, per release (at most [`MAX_FOUND_PER_RELEASE`] each).
#[derive(Debug, Default)]
pub(crate) struct Found {
    peers: Mutex<HashMap<InfoHash, HashSet<SocketAddr>>>,
}

impl Found {
    pub(crate) fn peers(&self, ih: &InfoHash) -> Vec<SocketAddr> {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ih)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub(crate) fn add(&self, ih: InfoHash, found: &[SocketAddr]) {
        let mut all = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let set = all.entry(ih).or_default();
        for p in found {
            if set.len() >= MAX_FOUND_PER_RELEASE {
                break;
            }
            set.insert(*p);
        }
    }

    fn forget_others(&self, filling: &[InfoHash]) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).retain(|ih, _| filling.contains(ih));
    }
}

/// Announces every release the fill wants to its trackers until `shutdown`: at once, then at
/// each tracker's interval; peers found go to `found` for the dialer.
pub(crate) async fn run(
    store: Arc<Store>,
    fill: Arc<dyn PeerFill>,
    found: Arc<Found>,
    peer_id: [u8; 20],
    port: u16,
    shutdown: CancellationToken,
) {
    // (release, tracker URL) -> when to announce next
    let mut next: HashMap<(InfoHash, String), Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let filling = fill.filling();
        found.forget_others(&filling);
        next.retain(|(ih, _), _| filling.contains(ih));
        for ih in filling {
            let Ok(rel) = store.release(&ih) else { continue };
            let left =
                store.bitfield(&ih).map_or(1, |b| (b.len() - b.count()) as u64 * rel.layout().piece_length as u64);
            let urls: Vec<String> =
                rel.metainfo.trackers.iter().flatten().take(MAX_TRACKERS_PER_RELEASE).cloned().collect();
            for url in urls {
                let key = (ih, url.clone());
                let now = Instant::now();
                let started = !next.contains_key(&key);
                if next.get(&key).is_some_and(|t| now < *t) {
                    continue;
                }
                let a = Announcing { infohash: ih, peer_id, port, left, started };
                let result = if let Some((host, port)) = crate::announce_udp::udp_target(&url) {
                    crate::announce_udp::announce(&host, port, &a).await
                } else if let Some(target) = announce_target(&url, &a) {
                    announce(&target).await
                } else {
                    next.insert(key, now + MAX_INTERVAL);
                    continue;
                };
                let when = match result {
                    Ok(reply) => {
                        tracing::info!(release = %ih, tracker = %url, peers = reply.peers.len(), "announced");
                        found.add(ih, &reply.peers);
                        now + reply.interval
                    }
                    Err(e) => {
                        tracing::info!(release = %ih, tracker = %url, error = %popseed_core::chain(&e), "announce failed");
                        now + RETRY_AFTER
                    }
                };
                next.insert(key, when);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> Announcing {
        Announcing {
            infohash: InfoHash([0xab; 20]),
            peer_id: *b"-PS0100-abcdefghijkl",
            port: 6881,
            left: 5,
            started: true,
        }
    }

    #[test]
    fn targets_of_http_trackers_only() {
        let t = announce_target("http://tracker.example:8080/announce?key=1", &a()).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("tracker.example", 8080));
        assert!(t.path_and_query.starts_with("/announce?key=1&info_hash=%AB%AB"), "{}", t.path_and_query);
        assert!(t.path_and_query.contains("&port=6881&") && t.path_and_query.ends_with("&event=started"));
        assert_eq!(announce_target("http://10.0.0.1/a", &a()).unwrap().port, 80);
        assert_eq!(announce_target("http://[::1]:7000/a", &a()).unwrap().host, "::1");
        for bad in ["https://t/a", "udp://t:80", "http://", "http://t:99999/a", "http://t/a b", "http://u@t/a"] {
            assert!(announce_target(bad, &a()).is_none(), "{bad}");
        }
    }

    #[test]
    fn replies_compact_dictionary_v6_and_failures() {
        let mut r = b"d8:intervali900e5:peers12:".to_vec();
        r.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 0]);
        r.extend_from_slice(b"6:peers618:");
        r.extend_from_slice(&[0; 15]);
        r.extend_from_slice(&[1, 0x1a, 0xe2]);
        r.push(b'e');
        let p = parse_reply(&r).unwrap();
        assert_eq!(p.interval, Duration::from_secs(900));
        assert_eq!(p.peers, vec!["10.0.0.1:6881".parse().unwrap(), "[::1]:6882".parse().unwrap()], "port 0 dropped");
        let d = parse_reply(b"d8:intervali5e5:peersld2:ip8:10.0.0.94:porti7000eed2:ip3:bad4:porti1eeee").unwrap();
        assert_eq!(d.peers, vec!["10.0.0.9:7000".parse().unwrap()]);
        assert_eq!(d.interval, MIN_INTERVAL, "a 5 s interval is raised to the minimum");
        assert!(
            matches!(parse_reply(b"d14:failure reason7:go awaye"), Err(AnnounceError::Failure(m)) if m == "go away")
        );
        assert!(matches!(parse_reply(b"d8:intervali5ee"), Err(AnnounceError::Shape)));
        assert!(matches!(parse_reply(b"d5:peers"), Err(AnnounceError::Bencode(_))));
        assert!(matches!(parse_reply(b"le"), Err(AnnounceError::Shape)));
    }
}
