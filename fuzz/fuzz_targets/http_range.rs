//! The portal's download validators, fed the header values a client sends:
//! `popseed_portal::range::parse_range` (Range), `if_range_allows` (If-Range) and
//! `if_none_match_hits` (If-None-Match), plus `content_range`.
//!
//! Input: bytes 0..8 the representation length (big-endian), byte 8 which header, the rest
//! the header value (lossy UTF-8, as the portal reads `to_str`).
//!
//! Asserts: no panic; a partial range lies inside the representation (start <= end < len)
//! and its Content-Range names it; only a syntactically valid single range can be
//! unsatisfiable; a missing header means the full body; weak tags and junk never pass If-Range.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use popseed_core::InfoHash;
use popseed_portal::range::{content_range, etag, if_none_match_hits, if_range_allows, parse_range, RangeOutcome};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let mut lb = [0u8; 8];
    lb.copy_from_slice(&data[..8]);
    // mostly small lengths, sometimes anything
    let len = if lb[0] & 0x80 == 0 { u64::from_be_bytes(lb) % 100_000 } else { u64::from_be_bytes(lb) };
    let which = data[8];
    let value = String::from_utf8_lossy(&data[9..]);
    let tag = etag(&InfoHash([0xab; 20]), (which >> 2) as usize);
    let lm = UNIX_EPOCH + Duration::from_secs(1_700_000_000);

    assert_eq!(parse_range(None, len), RangeOutcome::Full);
    match which % 3 {
        0 => match parse_range(Some(&value), len) {
            RangeOutcome::Full => {}
            RangeOutcome::Partial { start, end } => {
                assert!(start <= end && end < len, "{value:?} over {len}: {start}-{end}");
                let cr = content_range(start, end, len);
                assert_eq!(cr, format!("bytes {start}-{end}/{len}"));
            }
            RangeOutcome::Unsatisfiable => {
                let (unit, spec) = value.split_once('=').expect("a unit and a range");
                assert!(unit.trim().eq_ignore_ascii_case("bytes"), "{value:?}");
                assert!(!spec.contains(','), "a multi-range is ignored, not refused");
            }
        },
        1 => {
            let ok = if_range_allows(Some(&value), &tag, Some(lm));
            if value.trim().starts_with("W/") {
                assert!(!ok, "weak validators never allow a range");
            }
            if ok && value.trim().starts_with('"') {
                assert_eq!(value.trim(), tag);
            }
            if if_range_allows(Some(&value), &tag, None) {
                assert_eq!(value.trim(), tag, "without Last-Modified only the ETag matches");
            }
        }
        _ => {
            let hit = if_none_match_hits(Some(&value), &tag);
            if value.trim().is_empty() {
                assert!(!hit);
            }
            assert!(if_none_match_hits(Some(&tag), &tag));
        }
    }
});
