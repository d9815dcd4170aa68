//! popseed/1 replies as a box reads them from an origin (a hostile or broken origin, or anyone
//! in the middle of a fingerprint-pinned but otherwise unknown link): the incremental GET_PIECES
//! parser `PiecesParser`, `parse_release_reply` and `parse_list_reply`.
//!
//! Input: byte 0 picks the parser; for pieces, bytes 1..3 give the requested batch (count,
//! first index) and the largest piece, bytes 4..8 how the stream is cut into reads, the rest is
//! the stream.
//!
//! Asserts: no panic; pieces come back in the requested order, never longer than the largest
//! piece, empty unless the status is OK, page-aligned; feeding the stream in any cut gives the
//! same pieces and the same verdict as feeding it at once; a release reply's parts add up to
//! the input.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use popseed_fuzz::chunks;
use popseed_origin::bufpool::BufPool;
use popseed_origin::proto::{
    parse_list_reply, parse_release_reply, PieceReply, PiecesParser, ProtoError, ReleaseReply, Status, PIECE_ALIGN,
};

/// Feeds every chunk, stopping at the first error; then `finish`.
fn run(p: &mut PiecesParser, parts: &[&[u8]]) -> (Vec<PieceReply>, Result<(), ProtoError>) {
    let mut got = Vec::new();
    for c in parts {
        match p.push(c) {
            Ok(v) => got.extend(v),
            Err(e) => return (got, Err(e)),
        }
    }
    let end = p.finish();
    (got, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            if rest.len() < 8 {
                return;
            }
            let (head, stream) = rest.split_at(8);
            let count = (head[0] % 8) as u32 + 1;
            let first = head[1] as u32;
            let expected: Vec<u32> = (first..first + count).collect();
            let max_len = u16::from_be_bytes([head[2], head[3]]) as u32 + 1;
            let cuts = &head[4..8];

            let (whole, whole_end) = run(&mut PiecesParser::new(&expected, max_len), &[stream]);
            let pool = BufPool::new(1 << 20);
            let (cut, cut_end) =
                run(&mut PiecesParser::with_buffers(&expected, max_len, Arc::clone(&pool)), &chunks(stream, cuts));

            for (r, want) in whole.iter().zip(&expected) {
                assert_eq!(r.index, *want, "pieces in the requested order");
                assert!(r.data.len() as u32 <= max_len);
                if r.status != Status::Ok {
                    assert!(r.data.is_empty());
                }
            }
            assert!(whole.len() <= expected.len());
            for r in &cut {
                if !r.data.is_empty() {
                    assert_eq!(r.data.as_ptr() as usize % PIECE_ALIGN, 0, "pieces start on a page");
                }
            }
            // The same verdict whatever the cut. (A push that fails drops the pieces it
            // completed, so after an error the whole feed has a prefix of the cut one's.)
            assert_eq!(whole_end.is_ok(), cut_end.is_ok(), "{whole_end:?} vs {cut_end:?}");
            if whole_end.is_ok() {
                assert_eq!(whole, cut, "pieces differ between whole and cut feeding");
            } else {
                assert_eq!(whole[..], cut[..whole.len().min(cut.len())], "whole feed is a prefix of the cut one");
            }
        }
        1 => {
            if let Ok(r) = parse_release_reply(Bytes::copy_from_slice(rest)) {
                match r {
                    ReleaseReply::Found { manifest, torrent } => {
                        assert_eq!(9 + manifest.len() + torrent.len(), rest.len());
                        assert_eq!(&rest[9..9 + manifest.len()], &manifest[..]);
                    }
                    ReleaseReply::NotServed(s) => assert_ne!(s, Status::Ok),
                }
            }
        }
        _ => {
            let _ = parse_list_reply(rest);
        }
    }
});
