//! Bencode from outside (`.torrent` files, peer extension messages) to the checker that runs
//! before librqbit-bencode decodes anything: `popseed_release::bencode::{value_len,
//! check_whole, decode_prefix}`.
//!
//! Asserts: no panic (fuzz builds have overflow checks, so a number the checker lets through
//! that librqbit would overflow on panics here); whatever the checker accepts librqbit decodes;
//! it agrees with the harness's own canonical checker (`bencode_prefix`) on every value that one
//! accepts within the checker's depth limit; `check_whole` is `value_len` of the whole input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popseed_fuzz::bencode_prefix;
use popseed_release::bencode::{check_whole, decode_prefix, value_len, BencodeError, MAX_DEPTH};

/// Deepest nesting in `b[..n]`.
fn depth(b: &[u8], n: usize) -> usize {
    // Only called on values the harness accepted: strings are skipped by their length.
    let (mut d, mut max, mut i) = (0usize, 0usize, 0usize);
    while i < n {
        match b[i] {
            b'l' | b'd' => {
                d += 1;
                max = max.max(d);
                i += 1;
            }
            b'e' => {
                d -= 1;
                i += 1;
            }
            b'i' => i += b[i..].iter().position(|&c| c == b'e').map_or(n, |e| e + 1),
            _ => {
                let colon = b[i..].iter().position(|&c| c == b':').map_or(n, |c| c + i);
                let len: usize = std::str::from_utf8(&b[i..colon]).ok().and_then(|t| t.parse().ok()).unwrap_or(n);
                i = colon + 1 + len;
            }
        }
    }
    max
}

fuzz_target!(|data: &[u8]| {
    let ours = value_len(data);
    match (&ours, check_whole(data)) {
        (Ok(n), Ok(())) => assert_eq!(*n, data.len()),
        (Ok(n), Err(_)) => assert!(*n < data.len()),
        (Err(a), Err(b)) => assert_eq!(*a, b),
        (Err(_), Ok(())) => panic!("check_whole accepted what value_len refused"),
    }
    if let Ok(n) = ours {
        let (_, m) = decode_prefix(data).expect("librqbit decodes what the checker accepted");
        assert_eq!(m, n);
    }
    if let Ok(n) = bencode_prefix(data) {
        if depth(data, n) <= MAX_DEPTH {
            match ours {
                // The harness takes integers of any size; the checker, by design, only those
                // within 64 bits (librqbit's range).
                Err(BencodeError::BadInteger { at }) => {
                    let end = data[at..].iter().position(|&c| c == b'e').map_or(data.len(), |e| at + e);
                    let text = std::str::from_utf8(&data[at + 1..end]).unwrap_or("");
                    assert!(text.parse::<i64>().is_err(), "a 64-bit integer refused: {text}");
                }
                _ => assert_eq!(ours, Ok(n), "a canonical value the checker refused"),
            }
        }
    }
});
