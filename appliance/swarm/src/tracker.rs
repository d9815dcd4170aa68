//! The venue tracker's logic: BEP 3 announce with BEP 23 compact replies, and scrape, for the
//! releases the box holds. It tracks the venue's peers (so attendees find each other) and
//! always lists the box itself first, and never another entry on the box's address. The swarm table ([`Swarms`]), the query parser and
//! [`answer`] are pure and unit-tested; the HTTP front end is [`crate::tracker_http`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use percent_encoding::percent_decode;
use popseed_core::InfoHash;

/// Most peers kept per release.
pub const MAX_PEERS_PER_RELEASE: usize = 5000;
/// Most peers kept per release from one IP address (addresses differing only in the port).
/// A client announcing from one more port replaces that address's least recently seen entry,
/// so one client cannot fill a release's table (and a client that restarted on a new port is
/// listed at once).
pub const MAX_PEERS_PER_IP: usize = 8;
/// Most peers returned per announce.
const MAX_NUMWANT: usize = 200;

#[derive(Debug, Clone, Copy)]
struct PeerEntry {
    seen: Instant,
    seed: bool,
}

/// Peers per release, with the box's own address. Shared by the tracker and LSD.
#[derive(Debug)]
pub struct Swarms {
    interval: Duration,
    peers: HashMap<InfoHash, HashMap<SocketAddr, PeerEntry>>,
    downloaded: HashMap<InfoHash, u64>,
}

/// A parsed announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub infohash: InfoHash,
    pub port: u16,
    pub left: Option<u64>,
    pub event: Option<String>,
    pub compact: bool,
    pub numwant: usize,
}

/// Why a tracker request failed (sent as BEP 3 `failure reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerReject {
    #[error("missing or bad {0}")]
    BadParam(&'static str),
    #[error("unknown release")]
    UnknownRelease,
    #[error("not found")]
    NotFound,
}

impl Swarms {
    pub fn new(interval: Duration) -> Self {
        Swarms { interval, peers: HashMap::new(), downloaded: HashMap::new() }
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.interval * 3;
        for peers in self.peers.values_mut() {
            peers.retain(|_, e| now.saturating_duration_since(e.seen) < ttl);
        }
        self.peers.retain(|_, p| !p.is_empty());
    }

    /// Adds or refreshes a peer (tracker announce or LSD); `stopped` removes it. At most
    /// [`MAX_PEERS_PER_IP`] entries per IP address and [`MAX_PEERS_PER_RELEASE`] per release.
    pub fn upsert(&mut self, ih: InfoHash, addr: SocketAddr, seed: bool, stopped: bool, now: Instant) {
        let peers = self.peers.entry(ih).or_default();
        if stopped {
            peers.remove(&addr);
            return;
        }
        if !peers.contains_key(&addr) {
            let same_ip: Vec<(SocketAddr, Instant)> =
                peers.iter().filter(|(a, _)| a.ip() == addr.ip()).map(|(a, e)| (*a, e.seen)).collect();
            if same_ip.len() >= MAX_PEERS_PER_IP {
                if let Some((oldest, _)) = same_ip.iter().min_by_key(|(a, seen)| (*seen, *a)) {
                    peers.remove(oldest);
                }
            } else if peers.len() >= MAX_PEERS_PER_RELEASE {
                return;
            }
        }
        peers.insert(addr, PeerEntry { seen: now, seed });
    }

    /// Handles an announce from `from` and returns the bencoded reply. `box_addr` is listed first.
    pub fn announce(
        &mut self,
        a: &Announce,
        from: IpAddr,
        box_addr: SocketAddr,
        box_complete: bool,
        now: Instant,
    ) -> Vec<u8> {
        self.expire(now);
        let me = SocketAddr::new(from, a.port);
        let seed = a.left == Some(0);
        if a.event.as_deref() == Some("completed") {
            *self.downloaded.entry(a.infohash).or_default() += 1;
        }
        self.upsert(a.infohash, me, seed, a.event.as_deref() == Some("stopped"), now);
        let mut list = vec![box_addr];
        if let Some(peers) = self.peers.get(&a.infohash) {
            // Entries on the box's own address with another port (a client on the box, a stale
            // test client) are left out: clients that keep one peer per IP (libtorrent, so
            // qBittorrent and Deluge) would take that port for the box's and stall.
            list.extend(
                peers
                    .keys()
                    .copied()
                    .filter(|p| *p != me && p.ip() != box_addr.ip())
                    .take(a.numwant.clamp(1, MAX_NUMWANT).saturating_sub(1)),
            );
        }
        let (complete, incomplete) = self.counts(&a.infohash, box_complete);
        let secs = self.interval.as_secs().max(1);
        let mut out = Vec::new();
        out.push(b'd');
        bstr(&mut out, b"complete");
        bint(&mut out, complete);
        bstr(&mut out, b"incomplete");
        bint(&mut out, incomplete);
        bstr(&mut out, b"interval");
        bint(&mut out, secs);
        bstr(&mut out, b"min interval");
        bint(&mut out, (secs / 2).max(1));
        bstr(&mut out, b"peers");
        if a.compact {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for p in &list {
                crate::addr::push_compact(if p.is_ipv4() { &mut v4 } else { &mut v6 }, p);
            }
            bstr(&mut out, &v4);
            if !v6.is_empty() {
                bstr(&mut out, b"peers6");
                bstr(&mut out, &v6);
            }
        } else {
            out.push(b'l');
            for p in &list {
                out.push(b'd');
                bstr(&mut out, b"ip");
                bstr(&mut out, p.ip().to_string().as_bytes());
                bstr(&mut out, b"port");
                bint(&mut out, p.port() as u64);
                out.push(b'e');
            }
            out.push(b'e');
        }
        out.push(b'e');
        out
    }

    fn counts(&self, ih: &InfoHash, box_complete: bool) -> (u64, u64) {
        let (mut c, mut i) = (u64::from(box_complete), u64::from(!box_complete));
        if let Some(peers) = self.peers.get(ih) {
            for e in peers.values() {
                if e.seed {
                    c += 1;
                } else {
                    i += 1;
                }
            }
        }
        (c, i)
    }

    /// Bencoded scrape reply for the given (held) releases.
    pub fn scrape(&mut self, releases: &[(InfoHash, bool)], now: Instant) -> Vec<u8> {
        self.expire(now);
        let mut out = b"d5:filesd".to_vec();
        let mut sorted = releases.to_vec();
        sorted.sort();
        for (ih, complete_box) in sorted {
            let (c, i) = self.counts(&ih, complete_box);
            bstr(&mut out, ih.as_bytes());
            out.push(b'd');
            bstr(&mut out, b"complete");
            bint(&mut out, c);
            bstr(&mut out, b"downloaded");
            bint(&mut out, self.downloaded.get(&ih).copied().unwrap_or(0));
            bstr(&mut out, b"incomplete");
            bint(&mut out, i);
            out.push(b'e');
        }
        out.extend_from_slice(b"ee");
        out
    }

    /// Peers known for a release (for tests and status).
    pub fn peers(&self, ih: &InfoHash) -> Vec<SocketAddr> {
        self.peers.get(ih).map(|p| p.keys().copied().collect()).unwrap_or_default()
    }
}

fn bstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(s);
}

fn bint(out: &mut Vec<u8>, n: u64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

/// A bencoded `failure reason` reply.
pub fn failure(reason: &str) -> Vec<u8> {
    let mut out = b"d".to_vec();
    bstr(&mut out, b"failure reason");
    bstr(&mut out, reason.as_bytes());
    out.push(b'e');
    out
}

/// Splits a query string into raw (percent-decoded) key/value pairs.
pub fn query_pairs(q: &str) -> Vec<(String, Vec<u8>)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let k = percent_decode(k.as_bytes()).decode_utf8_lossy().into_owned();
            let v: Vec<u8> = percent_decode(v.replace('+', " ").as_bytes()).collect();
            (k, v)
        })
        .collect()
}

fn num<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses an announce query.
pub fn parse_announce(q: &str) -> Result<Announce, TrackerReject> {
    let mut ih = None;
    let mut port = None;
    let mut a =
        Announce { infohash: InfoHash::default(), port: 0, left: None, event: None, compact: true, numwant: 50 };
    for (k, v) in query_pairs(q) {
        match k.as_str() {
            "info_hash" => ih = Some(InfoHash::from_slice(&v).ok_or(TrackerReject::BadParam("info_hash"))?),
            "port" => port = Some(num::<u16>(&v).filter(|p| *p != 0).ok_or(TrackerReject::BadParam("port"))?),
            "left" => a.left = num(&v),
            "event" => a.event = std::str::from_utf8(&v).ok().filter(|e| !e.is_empty()).map(str::to_owned),
            "compact" => a.compact = v != b"0",
            "numwant" => a.numwant = num(&v).unwrap_or(50),
            _ => {}
        }
    }
    a.infohash = ih.ok_or(TrackerReject::BadParam("info_hash"))?;
    a.port = port.ok_or(TrackerReject::BadParam("port"))?;
    Ok(a)
}

/// What the tracker needs from the rest of the swarm.
pub trait Holdings: Send + Sync + 'static {
    /// Held releases and whether each is complete.
    fn releases(&self) -> Vec<(InfoHash, bool)>;
    /// Whether a release is held, and complete.
    fn holds(&self, ih: &InfoHash) -> Option<bool>;
    /// The address peers should use for the box, seen from a client that reached the tracker at
    /// `local` (the box's address on that client's network).
    fn box_addr(&self, local: IpAddr) -> SocketAddr;
}

/// What the tracker answers to one `GET path?query` (None: no such path, 404). `from` is the
/// client's address, `local` the box's address the client reached. Pure except for the
/// swarm table it updates.
pub fn answer(
    path: &str,
    query: &str,
    from: IpAddr,
    local: IpAddr,
    swarms: &Mutex<Swarms>,
    holdings: &dyn Holdings,
    now: Instant,
) -> Option<Vec<u8>> {
    let from = crate::addr::canonical_ip(from);
    let body = match path {
        "/announce" => match parse_announce(query) {
            Ok(a) => match holdings.holds(&a.infohash) {
                Some(complete) => {
                    let box_addr = holdings.box_addr(local);
                    let mut s = swarms.lock().unwrap_or_else(|p| p.into_inner());
                    s.announce(&a, from, box_addr, complete, now)
                }
                None => failure(&TrackerReject::UnknownRelease.to_string()),
            },
            Err(e) => failure(&e.to_string()),
        },
        "/scrape" => {
            let wanted: Vec<InfoHash> = query_pairs(query)
                .into_iter()
                .filter(|(k, _)| k == "info_hash")
                .filter_map(|(_, v)| InfoHash::from_slice(&v))
                .collect();
            let held: Vec<(InfoHash, bool)> = if wanted.is_empty() {
                holdings.releases()
            } else {
                wanted.iter().filter_map(|ih| holdings.holds(ih).map(|c| (*ih, c))).collect()
            };
            let mut s = swarms.lock().unwrap_or_else(|p| p.into_inner());
            s.scrape(&held, now)
        }
        _ => return None,
    };
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: &[u8]) -> String {
        percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn parses_announce_with_binary_infohash() {
        let ih = [0xffu8; 20];
        let q = format!("info_hash={}&peer_id=-lt0000-aaaaaaaaaaaa&port=6881&left=0&compact=1&event=started", enc(&ih));
        let a = parse_announce(&q).unwrap();
        assert_eq!(a.infohash, InfoHash(ih));
        assert_eq!(a.port, 6881);
        assert_eq!(a.left, Some(0));
        assert_eq!(a.event.as_deref(), Some("started"));
        assert!(a.compact);
        assert_eq!(parse_announce("port=1").unwrap_err(), TrackerReject::BadParam("info_hash"));
        assert_eq!(
            parse_announce(&format!("info_hash={}", enc(&[1; 19]))).unwrap_err(),
            TrackerReject::BadParam("info_hash")
        );
        assert_eq!(
            parse_announce(&format!("info_hash={}&port=0", enc(&ih))).unwrap_err(),
            TrackerReject::BadParam("port")
        );
    }

    #[test]
    fn announce_lists_box_first_then_other_peers_compact() {
        let t = Instant::now();
        let mut s = Swarms::new(Duration::from_secs(60));
        let box_addr: SocketAddr = "10.0.0.1:6881".parse().unwrap();
        let a = |port| Announce {
            infohash: InfoHash([1; 20]),
            port,
            left: Some(100),
            event: None,
            compact: true,
            numwant: 50,
        };
        let r1 = s.announce(&a(7001), "10.0.0.2".parse().unwrap(), box_addr, true, t);
        // Only the box is returned to the first peer.
        let want1 = b"5:peers6:\x0a\x00\x00\x01\x1a\xe1e".to_vec();
        assert!(r1.ends_with(&want1), "{}", String::from_utf8_lossy(&r1));
        let r2 = s.announce(&a(7002), "10.0.0.3".parse().unwrap(), box_addr, true, t);
        let want2 = b"5:peers12:\x0a\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x1b\x59e".to_vec();
        assert!(r2.ends_with(&want2), "{}", String::from_utf8_lossy(&r2));
        assert!(r2.starts_with(b"d8:completei1e10:incompletei2e8:intervali60e"), "{}", String::from_utf8_lossy(&r2));
        // Stopped peers are removed; stale ones expire.
        let mut stop = a(7001);
        stop.event = Some("stopped".into());
        s.announce(&stop, "10.0.0.2".parse().unwrap(), box_addr, true, t);
        assert_eq!(s.peers(&InfoHash([1; 20])), vec!["10.0.0.3:7002".parse::<SocketAddr>().unwrap()]);
        s.announce(&a(7009), "10.0.0.9".parse().unwrap(), box_addr, true, t + Duration::from_secs(1000));
        assert_eq!(s.peers(&InfoHash([1; 20])), vec!["10.0.0.9:7009".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn non_compact_and_scrape_replies() {
        let t = Instant::now();
        let mut s = Swarms::new(Duration::from_secs(60));
        let box_addr: SocketAddr = "127.0.0.1:6881".parse().unwrap();
        let a = Announce {
            infohash: InfoHash([2; 20]),
            port: 7000,
            left: Some(0),
            event: Some("completed".into()),
            compact: false,
            numwant: 5,
        };
        let r = s.announce(&a, "127.0.0.1".parse().unwrap(), box_addr, false, t);
        assert!(r.ends_with(b"5:peersld2:ip9:127.0.0.14:porti6881eeee"), "{}", String::from_utf8_lossy(&r));
        let sc = s.scrape(&[(InfoHash([2; 20]), false)], t);
        let mut want = b"d5:filesd20:".to_vec();
        want.extend_from_slice(&[2; 20]);
        want.extend_from_slice(b"d8:completei1e10:downloadedi1e10:incompletei1eeee");
        assert_eq!(sc, want);
        assert_eq!(failure("unknown release"), b"d14:failure reason15:unknown releasee".to_vec());
    }

    #[test]
    fn no_entry_on_the_box_address_is_handed_out_beside_the_box() {
        // Issue #19: libtorrent keeps one peer per IP and took such an entry's port for the
        // box's; the download stalled.
        let t = Instant::now();
        let mut s = Swarms::new(Duration::from_secs(60));
        let box_addr: SocketAddr = "10.0.0.1:6881".parse().unwrap();
        let a = |port| Announce {
            infohash: InfoHash([3; 20]),
            port,
            left: Some(0),
            event: None,
            compact: true,
            numwant: 50,
        };
        s.announce(&a(51413), "10.0.0.1".parse().unwrap(), box_addr, true, t);
        s.announce(&a(7000), "10.0.0.2".parse().unwrap(), box_addr, true, t);
        let r = s.announce(&a(7001), "10.0.0.3".parse().unwrap(), box_addr, true, t);
        let mut want = b"5:peers12:".to_vec();
        want.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0x1b, 0x58]);
        assert!(r.windows(want.len()).any(|w| w == want.as_slice()), "{}", String::from_utf8_lossy(&r));
    }

    #[test]
    fn one_ip_cannot_fill_a_release_table() {
        // Issue #16: one client announcing from 5000 ports filled the release's table.
        let t = Instant::now();
        let ih = InfoHash([3; 20]);
        let mut s = Swarms::new(Duration::from_secs(60));
        let box_addr: SocketAddr = "10.0.0.1:6881".parse().unwrap();
        let attacker: IpAddr = "10.0.0.66".parse().unwrap();
        let a = |port| Announce { infohash: ih, port, left: Some(1), event: None, compact: true, numwant: 200 };
        for (i, port) in (10_000..10_000 + MAX_PEERS_PER_RELEASE as u16).enumerate() {
            s.announce(&a(port), attacker, box_addr, true, t + Duration::from_millis(i as u64));
        }
        let kept = s.peers(&ih);
        assert_eq!(kept.len(), MAX_PEERS_PER_IP, "one IP keeps at most MAX_PEERS_PER_IP entries");
        // The most recently seen ports are kept (a restarted client is listed at once).
        let last = 10_000 + MAX_PEERS_PER_RELEASE as u16;
        let mut ports: Vec<u16> = kept.iter().map(|p| p.port()).collect();
        ports.sort();
        assert_eq!(ports, (last - MAX_PEERS_PER_IP as u16..last).collect::<Vec<_>>());
        // A refresh of a kept address evicts nothing.
        s.announce(&a(last - 1), attacker, box_addr, true, t + Duration::from_secs(10));
        assert_eq!(s.peers(&ih).len(), MAX_PEERS_PER_IP);
        // Other attendees still get in, and are handed out.
        let r = s.announce(&a(7000), "10.0.0.7".parse().unwrap(), box_addr, true, t + Duration::from_secs(10));
        assert_eq!(s.peers(&ih).len(), MAX_PEERS_PER_IP + 1);
        assert_eq!(r.windows(6).filter(|w| w[..4] == [10, 0, 0, 66]).count(), MAX_PEERS_PER_IP);
        // LSD goes through the same table and the same cap.
        for port in 20_000..20_100 {
            s.upsert(ih, SocketAddr::new("10.0.0.8".parse().unwrap(), port), false, false, t);
        }
        assert_eq!(s.peers(&ih).iter().filter(|p| p.ip() == "10.0.0.8".parse::<IpAddr>().unwrap()).count(), 8);
    }

    #[test]
    fn the_release_table_is_still_capped_across_many_ips() {
        let t = Instant::now();
        let ih = InfoHash([6; 20]);
        let mut s = Swarms::new(Duration::from_secs(60));
        for i in 0..(MAX_PEERS_PER_RELEASE as u32 + 100) {
            let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            s.upsert(ih, SocketAddr::new(ip, 6881), false, false, t);
        }
        assert_eq!(s.peers(&ih).len(), MAX_PEERS_PER_RELEASE);
    }

    struct OneRelease(InfoHash);

    impl Holdings for OneRelease {
        fn releases(&self) -> Vec<(InfoHash, bool)> {
            vec![(self.0, true)]
        }
        fn holds(&self, ih: &InfoHash) -> Option<bool> {
            (*ih == self.0).then_some(true)
        }
        fn box_addr(&self, local: IpAddr) -> SocketAddr {
            SocketAddr::new(local, 6881)
        }
    }

    #[test]
    fn answer_routes_announce_scrape_and_unknown_paths() {
        let ih = InfoHash([4; 20]);
        let h = OneRelease(ih);
        let swarms = Mutex::new(Swarms::new(Duration::from_secs(60)));
        let (from, local, t) = (IpAddr::from([10, 0, 0, 5]), IpAddr::from([10, 0, 0, 1]), Instant::now());
        assert_eq!(answer("/nope", "", from, local, &swarms, &h, t), None);
        let q = format!("info_hash={}&port=7000&left=10", enc(ih.as_bytes()));
        let body = answer("/announce", &q, from, local, &swarms, &h, t).unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("failure"), "{body:?}");
        assert_eq!(swarms.lock().unwrap().peers(&ih), vec!["10.0.0.5:7000".parse::<SocketAddr>().unwrap()]);
        let other = format!("info_hash={}&port=7000", enc(&[5; 20]));
        let body = answer("/announce", &other, from, local, &swarms, &h, t).unwrap();
        assert!(String::from_utf8_lossy(&body).contains("unknown release"));
        let body = answer("/announce", "port=1", from, local, &swarms, &h, t).unwrap();
        assert!(String::from_utf8_lossy(&body).contains("info_hash"));
        let body = answer("/scrape", "", from, local, &swarms, &h, t).unwrap();
        assert!(body.windows(20).any(|w| w == ih.as_bytes()), "scrape lists the held release");
        // an IPv4 client reaching a dual-stack socket is tracked by its IPv4 address
        let mapped: IpAddr = "::ffff:10.0.0.6".parse().unwrap();
        answer("/announce", &q, mapped, local, &swarms, &h, t).unwrap();
        assert!(swarms.lock().unwrap().peers(&ih).contains(&"10.0.0.6:7000".parse().unwrap()));
    }
}
