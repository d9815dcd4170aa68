//! .torrent files (BitTorrent v1 metainfo) as a box or a publisher reads them:
//! `popseed_release::metainfo::parse_torrent`, then the box's re-issue with its own tracker and
//! web seed (`with_trackers`), the magnet link and the web seed path segments.
//!
//! Asserts: no panic (numbers past 64 bits, or a piece length past u32, are refused before
//! librqbit-bencode reads them: finding 1, fixed); the infohash is the SHA-1 of the info bytes; the layout's piece count
//! matches its length; re-issuing keeps infohash, layout, trackers and web seeds and parses
//! again; building a torrent from the parsed layout parses back to the same layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popseed_release::hashing::piece_hash;
use popseed_release::metainfo::{build_torrent, magnet, parse_torrent, path_segment, with_trackers, TorrentOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = parse_torrent(data) else { return };
    assert_eq!(piece_hash(&m.info_bytes), m.infohash.0, "infohash is SHA-1 of the info dictionary");
    let l = &m.layout;
    assert_eq!(l.total_length.div_ceil(l.piece_length as u64), l.piece_count() as u64);
    assert_eq!(l.files.iter().map(|f| f.length).sum::<u64>(), l.total_length);

    let re = with_trackers(data, &m.trackers, &m.web_seeds).expect("re-issuing a torrent that parsed");
    let m2 = parse_torrent(&re).expect("a re-issued torrent parses");
    assert_eq!(m2.infohash, m.infohash);
    assert_eq!(m2.info_bytes, m.info_bytes);
    assert_eq!(m2.layout, m.layout);
    assert_eq!(m2.name, m.name);
    assert_eq!(m2.single_file, m.single_file);
    assert_eq!(m2.web_seeds, m.web_seeds);
    let non_empty: Vec<Vec<String>> = m.trackers.iter().filter(|t| !t.is_empty()).cloned().collect();
    let non_empty2: Vec<Vec<String>> = m2.trackers.iter().filter(|t| !t.is_empty()).cloned().collect();
    assert_eq!(non_empty2, non_empty);

    let flat: Vec<String> = m.trackers.iter().flatten().cloned().collect();
    let link = magnet(&m.infohash, &m.name, &flat, &m.web_seeds);
    assert!(link.is_ascii() && !link.contains(' '), "magnet links are URL-safe");
    for f in &m.layout.files {
        for c in &f.components {
            let seg = path_segment(c);
            assert!(seg.is_ascii() && !seg.contains('/') && !seg.contains('?') && !seg.contains('#'), "{seg:?}");
        }
    }

    // Our own encoder, fed the parsed layout, reproduces it.
    let opts = TorrentOptions {
        name: m.name.clone(),
        single_file: m.single_file,
        trackers: non_empty.clone(),
        web_seeds: m
            .web_seeds
            .iter()
            .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
            .cloned()
            .collect(),
        ..Default::default()
    };
    if let Ok((bytes, ih)) = build_torrent(&m.layout, &opts) {
        let m3 = parse_torrent(&bytes).expect("a torrent we built parses");
        assert_eq!(m3.infohash, ih);
        assert_eq!(m3.layout, m.layout);
    }
});
