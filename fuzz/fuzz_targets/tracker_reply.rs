//! What a release's tracker (anyone on the uplink's path) answers the box's announces:
//! `popseed_swarm::announce::parse_reply` (HTTP), `announce_udp::parse_connect` and
//! `parse_announce` (BEP 15 UDP datagrams), and the targets made from tracker URLs taken from a
//! .torrent (`announce_target`, `udp_target`).
//!
//! Input: byte 0 picks what the rest is (0: an HTTP reply body; 1: a tracker URL, lossy UTF-8;
//! 2: a UDP connect reply; 3: a UDP announce reply over IPv4; 4: over IPv6). UDP replies are
//! checked against transaction id 5.
//!
//! Asserts: no panic; a parsed reply's interval is within the announce bounds and its peers
//! have nonzero ports and specific addresses (at most NUMWANT from UDP); a target is only made
//! for `http://` (host, request line without spaces or line breaks) or `udp://` URLs (host and
//! nonzero port).
#![no_main]

use libfuzzer_sys::fuzz_target;
use popseed_core::InfoHash;
use popseed_swarm::announce::{
    announce_target, parse_reply, Announcing, TrackerReply, MAX_INTERVAL, MIN_INTERVAL, NUMWANT,
};
use popseed_swarm::announce_udp::{parse_announce, parse_connect, udp_target};

fn check(r: &TrackerReply) {
    assert!(r.interval >= MIN_INTERVAL && r.interval <= MAX_INTERVAL);
    assert!(r.peers.iter().all(|p| p.port() != 0 && !p.ip().is_unspecified()));
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    match pick % 5 {
        0 => {
            if let Ok(r) = parse_reply(rest) {
                check(&r);
            }
        }
        1 => {
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
            if let Some((host, port)) = udp_target(&url) {
                assert!(url.starts_with("udp://") && !host.is_empty() && port != 0);
            }
        }
        2 => {
            let _ = parse_connect(rest, 5);
        }
        k => {
            if let Ok(Some(r)) = parse_announce(rest, 5, k == 4) {
                check(&r);
                assert!(r.peers.len() <= NUMWANT as usize);
            }
        }
    }
});
