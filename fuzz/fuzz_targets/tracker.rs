//! The venue tracker's request handling, as `tracker_http` hands it every `GET path?query`
//! from the Wi-Fi: `popseed_swarm::tracker::parse_announce`, `query_pairs` and `answer`, over
//! a swarm table that lives across inputs (so announces from earlier inputs are in it).
//!
//! Input: byte 0 picks the path (/announce, /scrape, other) and the client address family,
//! the rest is the query string (lossy UTF-8, as hyper's URI gives it).
//!
//! Asserts: no panic; `answer` returns None exactly for unknown paths; every reply is one
//! well-formed bencoded dictionary; an announce for a held release lists the box first
//! (compact: 6-byte entries) and never more than 200 peers; a parsed announce has a nonzero
//! port.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use popseed_core::InfoHash;
use popseed_fuzz::bencode_value;
use popseed_swarm::tracker::{answer, parse_announce, query_pairs, Holdings, Swarms};

const HELD: InfoHash = InfoHash([0x11; 20]);
const PARTIAL: InfoHash = InfoHash([0x22; 20]);
const BOX: ([u8; 4], u16) = ([10, 0, 0, 1], 6881);

struct Held;

impl Holdings for Held {
    fn releases(&self) -> Vec<(InfoHash, bool)> {
        vec![(HELD, true), (PARTIAL, false)]
    }
    fn holds(&self, ih: &InfoHash) -> Option<bool> {
        if *ih == HELD {
            Some(true)
        } else if *ih == PARTIAL {
            Some(false)
        } else {
            None
        }
    }
    fn box_addr(&self, _local: IpAddr) -> SocketAddr {
        SocketAddr::from(BOX)
    }
}

struct State {
    swarms: Mutex<Swarms>,
    start: Instant,
    calls: Mutex<u64>,
}

fn state() -> &'static State {
    static S: OnceLock<State> = OnceLock::new();
    S.get_or_init(|| State {
        swarms: Mutex::new(Swarms::new(Duration::from_secs(60))),
        start: Instant::now(),
        calls: Mutex::new(0),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, q)) = data.split_first() else { return };
    let query = String::from_utf8_lossy(q);
    let path = match sel % 4 {
        0 | 1 => "/announce",
        2 => "/scrape",
        _ => "/other",
    };
    let from: IpAddr = match (sel >> 2) % 3 {
        0 => IpAddr::from([10, 0, 0, 50 + (sel >> 4)]),
        1 => "fd00::7".parse().expect("an address"),
        _ => "::ffff:10.0.0.9".parse().expect("an address"),
    };
    let st = state();
    // time moves a little with every input, so entries expire now and then
    let now = {
        let mut c = st.calls.lock().expect("lock");
        *c += 1;
        st.start + Duration::from_millis(*c * 7)
    };

    let pairs = query_pairs(&query);
    let parsed = parse_announce(&query);
    if let Ok(a) = &parsed {
        assert_ne!(a.port, 0);
        assert!(pairs.iter().any(|(k, _)| k == "info_hash"));
    }

    let reply = answer(path, &query, from, IpAddr::from([10, 0, 0, 1]), &st.swarms, &Held, now);
    let Some(body) = reply else {
        assert_eq!(path, "/other");
        return;
    };
    assert_ne!(path, "/other");
    bencode_value(&body).unwrap_or_else(|e| panic!("reply is not bencode ({e}): {:?}", String::from_utf8_lossy(&body)));
    assert_eq!(body.first(), Some(&b'd'));
    if path == "/announce" {
        if let Ok(a) = parsed {
            if Held.holds(&a.infohash).is_some() && a.compact {
                let at = body.windows(7).position(|w| w == b"5:peers").expect("a peers key") + 7;
                let colon = body[at..].iter().position(|&c| c == b':').expect("a string") + at;
                let n: usize = std::str::from_utf8(&body[at..colon]).expect("digits").parse().expect("a length");
                assert_eq!(n % 6, 0, "compact peers are 6 bytes each");
                assert!(n / 6 <= 200, "at most 200 peers");
                assert!(n >= 6, "the box is listed");
                let mut first = [0u8; 6];
                first[..4].copy_from_slice(&BOX.0);
                first[4..].copy_from_slice(&BOX.1.to_be_bytes());
                assert_eq!(&body[colon + 1..colon + 7], &first, "the box comes first");
            }
        }
    }
});
