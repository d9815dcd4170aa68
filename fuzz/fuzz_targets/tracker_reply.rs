//! What a release's tracker (anyone on the uplink's path) answers the box's announces:
//! `popseed_swarm::announce::parse_reply`, and `announce_target` over a tracker URL taken from
//! a .torrent.
//!
//! Input: byte 0 picks what the rest is (even: a reply body; odd: a tracker URL, lossy UTF-8).
//!
//! Asserts: no panic; a parsed reply's interval is within the announce bounds and its peers
//! have nonzero ports and specific addresses; a target is only made for `http://` URLs, with a
//! host and a request line without spaces or line breaks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popseed_core::InfoHash;
use popseed_swarm::announce::{announce_target, parse_reply, Announcing, MAX_INTERVAL, MIN_INTERVAL};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    if pick % 2 == 0 {
        if let Ok(r) = parse_reply(rest) {
            assert!(r.interval >= MIN_INTERVAL && r.interval <= MAX_INTERVAL);
            assert!(r.peers.iter().all(|p| p.port() != 0 && !p.ip().is_unspecified()));
        }
    } else {
        let url = String::from_utf8_lossy(rest);
        let a = Announcing {
            infohash: InfoHash([7; 20]),
            peer_id: *b"-PS0100-000000000000",
            port: 6881,
            left: 1,
            started: true,
        };
        if let Some(t) = announce_target(&url, &a) {
            assert!(url.starts_with("http://"));
            assert!(!t.host.is_empty());
            assert!(!t.path_and_query.contains([' ', '\r', '\n']), "{:?}", t.path_and_query);
        }
    }
});
