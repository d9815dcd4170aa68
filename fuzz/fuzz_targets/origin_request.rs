//! popseed/1 requests as an origin reads them from a QUIC stream:
//! `popseed_origin::proto::Request::decode` over at most `MAX_REQUEST` bytes.
//!
//! Asserts: no panic; a request that decodes encodes back to exactly the input bytes (the
//! format has one encoding), GET_PIECES batches are 1..=MAX_BATCH.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popseed_origin::proto::{Request, MAX_BATCH, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_REQUEST)];
    let Ok(req) = Request::decode(data) else { return };
    if let Request::GetPieces { indices, .. } = &req {
        assert!((1..=MAX_BATCH).contains(&indices.len()));
    }
    assert_eq!(&req.encode()[..], data, "decode/encode round trip");
});
