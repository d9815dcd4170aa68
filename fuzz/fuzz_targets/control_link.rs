//! Device-link frames (ALPN popseed-control/1): what an origin reads from a device
//! (`FrameReader` over a long-lived stream of `DeviceMsg`) and what a box reads from an origin
//! (`decode_one::<OriginMsg>` for a command, `decode_one::<Reply>` for the answer).
//!
//! Input: byte 0 picks the message type, bytes 1..4 how the stream is cut into reads.
//!
//! Asserts: no panic; a frame's length prefix over `MAX_FRAME` is an error before any of it is
//! buffered; a stream cut anywhere yields the same messages and the same error as the stream
//! at once; every decoded message re-encodes to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popseed_control::link::{decode_one, encode, DeviceMsg, FrameError, FrameReader, OriginMsg, Reply, MAX_FRAME};
use popseed_fuzz::chunks;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reads messages until the reader needs more bytes or fails; the error kind ends the list.
fn drain<T: DeserializeOwned>(r: &mut FrameReader, out: &mut Vec<T>) -> Option<String> {
    loop {
        match r.next_message::<T>() {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return None,
            Err(e) => return Some(kind(&e).to_owned()),
        }
    }
}

fn kind(e: &FrameError) -> &'static str {
    match e {
        FrameError::TooLarge(_) => "too large",
        FrameError::Malformed(_) => "malformed",
        FrameError::Trailing => "trailing",
        FrameError::Truncated => "truncated",
    }
}

fn stream<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8], cuts: &[u8]) {
    let mut whole = FrameReader::default();
    whole.push(data);
    let mut a = Vec::new();
    let a_err = drain::<T>(&mut whole, &mut a);

    let mut cut = FrameReader::default();
    let mut b = Vec::new();
    let mut b_err = None;
    for c in chunks(data, cuts) {
        cut.push(c);
        b_err = drain::<T>(&mut cut, &mut b);
        if b_err.is_some() {
            break;
        }
    }
    assert_eq!(a, b, "messages differ between whole and cut reading");
    assert_eq!(a_err, b_err);
    if a_err.as_deref() == Some("too large") {
        assert!(whole.pending() < 4 + MAX_FRAME);
    }
    for m in &a {
        let again: T = decode_one(&encode(m)).expect("a re-encoded message decodes");
        assert_eq!(&again, m, "encode/decode round trip");
    }
}

fn one<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = decode_one::<T>(data) {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        assert_eq!(len + 4, data.len(), "one frame is the whole buffer");
        let again: T = decode_one(&encode(&m)).expect("a re-encoded message decodes");
        assert_eq!(again, m);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, body) = data.split_at(4);
    let cuts = &head[1..4];
    match head[0] % 3 {
        0 => stream::<DeviceMsg>(body, cuts),
        1 => one::<OriginMsg>(body),
        _ => one::<Reply>(body),
    }
});
