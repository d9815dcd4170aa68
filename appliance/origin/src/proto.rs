//! The popseed/1 wire format, with no I/O (quinn-proto style): request encoding/decoding and an
//! incremental response parser that is fed whatever bytes a stream delivered.
//!
//! One bidirectional QUIC stream carries one request and its response. The client writes the
//! request and finishes its side; the server answers and finishes. See docs/protocol.md.
//!
//! ```text
//! request  = version:u8 (=1) kind:u8 body
//!   kind 1 GET_PIECES   infohash:[20] priority:i32 count:u16 (1..=64) index:u32 * count
//!   kind 2 GET_RELEASE  infohash:[20]
//!   kind 3 LIST
//! response to GET_PIECES, one per requested index, in order:
//!   status:u8 index:u32 length:u32 data:[length]   (length is 0 unless status is OK)
//! response to GET_RELEASE: status:u8 manifest_len:u32 torrent_len:u32 manifest torrent
//! response to LIST:        status:u8 len:u32 json
//! ```
//! All integers are big-endian.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use popseed_core::InfoHash;
use serde::{Deserialize, Serialize};

use crate::bufpool::BufPool;

pub const ALPN: &[u8] = b"popseed/1";
/// ALPN of the device link (prewarm jobs pushed to appliances; see docs/protocol.md).
pub const CONTROL_ALPN: &[u8] = b"popseed-control/1";
pub const VERSION: u8 = 1;
/// Most pieces in one GET_PIECES request.
pub const MAX_BATCH: usize = 64;
/// Largest request a server reads (a full GET_PIECES is 286 bytes).
pub const MAX_REQUEST: usize = 512;
/// Largest piece a client accepts (the largest piece size we publish).
pub const MAX_PIECE: u32 = 64 << 20;
/// Largest manifest + torrent or catalog a client accepts.
pub const MAX_META: u32 = 32 << 20;

/// Application error codes for stream resets and connection closes.
pub mod code {
    pub const OK: u32 = 0;
    /// The peer sent something that does not parse.
    pub const MALFORMED: u32 = 1;
    /// Too many connections or streams.
    pub const BUSY: u32 = 2;
    /// The server failed internally (e.g. could not read its data).
    pub const INTERNAL: u32 = 3;
    /// A device link the origin does not take (no control configured, or a device not on the
    /// allow-list).
    pub const REFUSED: u32 = 4;
}

/// Per-item status in responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    /// The origin does not serve this release.
    UnknownRelease = 1,
    /// The index is past the release's last piece.
    NoSuchPiece = 2,
    /// The origin has the release but could not read this piece.
    Unavailable = 3,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::UnknownRelease,
            2 => Status::NoSuchPiece,
            3 => Status::Unavailable,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    GetPieces { infohash: InfoHash, priority: i32, indices: Vec<u32> },
    GetRelease { infohash: InfoHash },
    List,
}

/// One release in a LIST reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub infohash: InfoHash,
    pub name: String,
    pub version: String,
    pub total_size: u64,
}

/// A GET_RELEASE reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseReply {
    /// The release's `manifest.json` and `.torrent`.
    Found { manifest: Bytes, torrent: Bytes },
    /// The origin answered with this status instead.
    NotServed(Status),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("empty request")]
    Empty,
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown request kind {0}")]
    UnknownKind(u8),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("trailing bytes after the request")]
    Trailing,
    #[error("batch of {0} pieces (1..={MAX_BATCH} allowed)")]
    BadBatch(usize),
    #[error("unknown status byte {0}")]
    BadStatus(u8),
    #[error("length {0} over the limit")]
    TooLong(u32),
    #[error("response for piece {got}, expected {expected}")]
    WrongIndex { expected: u32, got: u32 },
    #[error("stream ended in the middle of a response")]
    UnexpectedEnd,
    #[error("{0} bytes after the end of the response")]
    TrailingReply(usize),
    #[error("catalog is not valid JSON (line {line}, column {column})")]
    Catalog { line: usize, column: usize },
}

impl Request {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(32);
        b.put_u8(VERSION);
        match self {
            Request::GetPieces { infohash, priority, indices } => {
                b.put_u8(1);
                b.put_slice(infohash.as_bytes());
                b.put_i32(*priority);
                b.put_u16(indices.len() as u16);
                for i in indices {
                    b.put_u32(*i);
                }
            }
            Request::GetRelease { infohash } => {
                b.put_u8(2);
                b.put_slice(infohash.as_bytes());
            }
            Request::List => b.put_u8(3),
        }
        b.freeze()
    }

    /// Parses a complete request (the server reads the stream to its end first, at most
    /// [`MAX_REQUEST`] bytes).
    pub fn decode(mut buf: &[u8]) -> Result<Request, ProtoError> {
        let need = |buf: &[u8], n: usize, what: &'static str| {
            if buf.remaining() < n {
                Err(ProtoError::Truncated(what))
            } else {
                Ok(())
            }
        };
        if buf.is_empty() {
            return Err(ProtoError::Empty);
        }
        let v = buf.get_u8();
        if v != VERSION {
            return Err(ProtoError::Version(v));
        }
        need(buf, 1, "kind")?;
        let req = match buf.get_u8() {
            1 => {
                need(buf, 26, "GET_PIECES header")?;
                let mut ih = [0u8; 20];
                buf.copy_to_slice(&mut ih);
                let ih = InfoHash(ih);
                let priority = buf.get_i32();
                let n = buf.get_u16() as usize;
                if n == 0 || n > MAX_BATCH {
                    return Err(ProtoError::BadBatch(n));
                }
                need(buf, 4 * n, "GET_PIECES indices")?;
                let indices = (0..n).map(|_| buf.get_u32()).collect();
                Request::GetPieces { infohash: ih, priority, indices }
            }
            2 => {
                need(buf, 20, "GET_RELEASE")?;
                let mut ih = [0u8; 20];
                buf.copy_to_slice(&mut ih);
                Request::GetRelease { infohash: InfoHash(ih) }
            }
            3 => Request::List,
            k => return Err(ProtoError::UnknownKind(k)),
        };
        if buf.has_remaining() {
            return Err(ProtoError::Trailing);
        }
        Ok(req)
    }
}

/// Header written before each piece of a GET_PIECES response.
pub fn piece_header(status: Status, index: u32, len: u32) -> [u8; 9] {
    let mut h = [0u8; 9];
    h[0] = status as u8;
    h[1..5].copy_from_slice(&index.to_be_bytes());
    h[5..9].copy_from_slice(&len.to_be_bytes());
    h
}

/// Header of a GET_RELEASE response.
pub fn release_header(status: Status, manifest_len: u32, torrent_len: u32) -> [u8; 9] {
    let mut h = [0u8; 9];
    h[0] = status as u8;
    h[1..5].copy_from_slice(&manifest_len.to_be_bytes());
    h[5..9].copy_from_slice(&torrent_len.to_be_bytes());
    h
}

/// Header of a LIST response.
pub fn list_header(status: Status, len: u32) -> [u8; 5] {
    let mut h = [0u8; 5];
    h[0] = status as u8;
    h[1..5].copy_from_slice(&len.to_be_bytes());
    h
}

/// Parses a whole GET_RELEASE reply (the client reads the stream to its end first, at most
/// `2 * MAX_META + 9` bytes).
pub fn parse_release_reply(buf: Bytes) -> Result<ReleaseReply, ProtoError> {
    let Some(head) = buf.get(..9) else { return Err(ProtoError::UnexpectedEnd) };
    let status = Status::from_u8(head[0]).ok_or(ProtoError::BadStatus(head[0]))?;
    let ml = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let tl = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
    for l in [ml, tl] {
        if l > MAX_META {
            return Err(ProtoError::TooLong(l));
        }
    }
    let want = 9 + ml as usize + tl as usize;
    if buf.len() < want {
        return Err(ProtoError::UnexpectedEnd);
    }
    if buf.len() > want {
        return Err(ProtoError::TrailingReply(buf.len() - want));
    }
    if status != Status::Ok {
        return Ok(ReleaseReply::NotServed(status));
    }
    let split = 9 + ml as usize;
    Ok(ReleaseReply::Found { manifest: buf.slice(9..split), torrent: buf.slice(split..) })
}

/// Parses a whole LIST reply into the catalog.
pub fn parse_list_reply(buf: &[u8]) -> Result<Vec<CatalogEntry>, ProtoError> {
    let Some(head) = buf.get(..5) else { return Err(ProtoError::UnexpectedEnd) };
    let status = Status::from_u8(head[0]).ok_or(ProtoError::BadStatus(head[0]))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_META {
        return Err(ProtoError::TooLong(len));
    }
    let body = &buf[5..];
    match body.len().cmp(&(len as usize)) {
        std::cmp::Ordering::Less => return Err(ProtoError::UnexpectedEnd),
        std::cmp::Ordering::Greater => return Err(ProtoError::TrailingReply(body.len() - len as usize)),
        std::cmp::Ordering::Equal => {}
    }
    if status != Status::Ok {
        return Ok(Vec::new());
    }
    serde_json::from_slice(body).map_err(|e| ProtoError::Catalog { line: e.line(), column: e.column() })
}

/// One piece of a GET_PIECES response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceReply {
    pub index: u32,
    pub status: Status,
    pub data: Bytes,
}

/// Alignment of the start of every assembled piece in memory (a page, so the store can write
/// it with O_DIRECT).
pub const PIECE_ALIGN: usize = 4096;

/// Incremental parser for a GET_PIECES response: push the stream's chunks as they arrive,
/// collect finished pieces. Piece bodies are accumulated once into a buffer of the announced
/// length (bounded by [`MAX_PIECE`] and the expected piece size).
pub struct PiecesParser {
    expected: std::collections::VecDeque<u32>,
    max_len: u32,
    header: Vec<u8>,
    /// The piece being received: index, status, buffer, where the piece starts in the buffer,
    /// its length.
    body: Option<(u32, Status, Vec<u8>, usize, usize)>,
    done: Vec<PieceReply>,
    buffers: Option<Arc<BufPool>>,
}

impl PiecesParser {
    /// `expected`: the indices requested, in order; `max_len`: the largest piece of the release.
    pub fn new(expected: &[u32], max_len: u32) -> Self {
        PiecesParser {
            expected: expected.iter().copied().collect(),
            max_len: max_len.min(MAX_PIECE),
            header: Vec::with_capacity(9),
            body: None,
            done: Vec::new(),
            buffers: None,
        }
    }

    /// Like [`PiecesParser::new`], assembling pieces in buffers from `pool` (they go back to it
    /// when the piece's `Bytes` are dropped).
    pub fn with_buffers(expected: &[u32], max_len: u32, pool: Arc<BufPool>) -> Self {
        PiecesParser { buffers: Some(pool), ..Self::new(expected, max_len) }
    }

    /// Feeds bytes; returns pieces completed by them.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<PieceReply>, ProtoError> {
        while !data.is_empty() {
            if let Some((index, status, buf, start, want)) = &mut self.body {
                let take = (*start + *want - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                if buf.len() == *start + *want {
                    let buf = std::mem::take(buf);
                    let data = match &self.buffers {
                        Some(pool) => pool.freeze(buf),
                        None => Bytes::from(buf),
                    };
                    let reply = PieceReply { index: *index, status: *status, data: data.slice(*start..) };
                    self.body = None;
                    self.done.push(reply);
                }
                continue;
            }
            let take = (9 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() < 9 {
                break;
            }
            let mut h = &self.header[..];
            let status = Status::from_u8(h.get_u8()).ok_or(ProtoError::BadStatus(self.header[0]))?;
            let index = h.get_u32();
            let len = h.get_u32();
            self.header.clear();
            let expected = self.expected.pop_front().ok_or(ProtoError::Trailing)?;
            if index != expected {
                return Err(ProtoError::WrongIndex { expected, got: index });
            }
            if len > self.max_len || (status != Status::Ok && len != 0) {
                return Err(ProtoError::TooLong(len));
            }
            if len == 0 {
                self.done.push(PieceReply { index, status, data: Bytes::new() });
            } else {
                let cap = len as usize + PIECE_ALIGN;
                let mut buf = match &self.buffers {
                    Some(pool) => pool.take_empty(cap),
                    None => Vec::with_capacity(cap),
                };
                // the piece starts on a page boundary (the store can write it with O_DIRECT)
                let start = (PIECE_ALIGN - buf.as_ptr() as usize % PIECE_ALIGN) % PIECE_ALIGN;
                buf.resize(start, 0);
                self.body = Some((index, status, buf, start, len as usize));
            }
        }
        Ok(std::mem::take(&mut self.done))
    }

    /// Call at the end of the stream: every requested piece must have been answered.
    pub fn finish(&self) -> Result<(), ProtoError> {
        if self.body.is_some() || !self.header.is_empty() || !self.expected.is_empty() {
            return Err(ProtoError::UnexpectedEnd);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_roundtrip_and_rejects() {
        let reqs = [
            Request::GetPieces { infohash: InfoHash([7; 20]), priority: -3, indices: vec![0, 5, u32::MAX] },
            Request::GetRelease { infohash: InfoHash([1; 20]) },
            Request::List,
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        let good = Request::GetPieces { infohash: InfoHash([7; 20]), priority: 0, indices: vec![1] }.encode();
        for cut in 0..good.len() {
            assert!(Request::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert_eq!(Request::decode(&trailing), Err(ProtoError::Trailing));
        assert_eq!(Request::decode(&[2, 3]), Err(ProtoError::Version(2)));
        assert_eq!(Request::decode(&[1, 9]), Err(ProtoError::UnknownKind(9)));
        let mut zero = vec![1, 1];
        zero.extend([0u8; 24]);
        zero.extend([0, 0]);
        assert_eq!(Request::decode(&zero), Err(ProtoError::BadBatch(0)));
    }

    fn response(pieces: &[(u32, Status, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, s, d) in pieces {
            out.extend(piece_header(*s, *i, d.len() as u32));
            out.extend(*d);
        }
        out
    }

    #[test]
    fn parser_handles_any_split() {
        let bytes = response(&[(3, Status::Ok, b"hello"), (4, Status::NoSuchPiece, b""), (5, Status::Ok, b"xy")]);
        // reused buffers hold the previous pieces' bytes: none of them may show through
        let pool = BufPool::new(1 << 10);
        for split in 1..bytes.len() {
            let mut p = if split % 2 == 0 {
                PiecesParser::new(&[3, 4, 5], 16)
            } else {
                PiecesParser::with_buffers(&[3, 4, 5], 16, pool.clone())
            };
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                got.extend(p.push(chunk).unwrap());
            }
            p.finish().unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(got[0].data.as_ref(), b"hello");
            assert_eq!(got[1].status, Status::NoSuchPiece);
            assert_eq!(got[2].data.as_ref(), b"xy");
            assert_eq!(got[0].data.as_ptr() as usize % PIECE_ALIGN, 0, "pieces start on a page boundary");
        }
    }

    #[test]
    fn parser_rejects_lies() {
        // wrong index
        let mut p = PiecesParser::new(&[1], 16);
        assert!(matches!(p.push(&response(&[(2, Status::Ok, b"a")])), Err(ProtoError::WrongIndex { .. })));
        // oversized length never allocates it
        let mut p = PiecesParser::new(&[1], 16);
        assert_eq!(p.push(&piece_header(Status::Ok, 1, u32::MAX)), Err(ProtoError::TooLong(u32::MAX)));
        // bad status
        let mut p = PiecesParser::new(&[1], 16);
        let mut h = piece_header(Status::Ok, 1, 0);
        h[0] = 77;
        assert_eq!(p.push(&h), Err(ProtoError::BadStatus(77)));
        // extra piece
        let mut p = PiecesParser::new(&[1], 16);
        assert_eq!(p.push(&response(&[(1, Status::Ok, b"a"), (2, Status::Ok, b"b")])), Err(ProtoError::Trailing));
        // truncated
        let mut p = PiecesParser::new(&[1], 16);
        p.push(&response(&[(1, Status::Ok, b"abc")])[..10]).unwrap();
        assert_eq!(p.finish(), Err(ProtoError::UnexpectedEnd));
    }

    #[test]
    fn release_and_list_replies_parse_or_fail_cleanly() {
        let mut ok = release_header(Status::Ok, 3, 2).to_vec();
        ok.extend_from_slice(b"mmmtt");
        assert_eq!(
            parse_release_reply(Bytes::from(ok.clone())).unwrap(),
            ReleaseReply::Found { manifest: Bytes::from_static(b"mmm"), torrent: Bytes::from_static(b"tt") }
        );
        assert_eq!(parse_release_reply(Bytes::from(ok[..8].to_vec())), Err(ProtoError::UnexpectedEnd));
        assert_eq!(parse_release_reply(Bytes::from(ok[..12].to_vec())), Err(ProtoError::UnexpectedEnd));
        let mut long = ok.clone();
        long.push(0);
        assert_eq!(parse_release_reply(Bytes::from(long)), Err(ProtoError::TrailingReply(1)));
        let unknown = release_header(Status::UnknownRelease, 0, 0).to_vec();
        assert_eq!(parse_release_reply(Bytes::from(unknown)).unwrap(), ReleaseReply::NotServed(Status::UnknownRelease));
        let huge = release_header(Status::Ok, MAX_META + 1, 0).to_vec();
        assert_eq!(parse_release_reply(Bytes::from(huge)), Err(ProtoError::TooLong(MAX_META + 1)));
        assert_eq!(
            parse_release_reply(Bytes::from_static(&[9, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(ProtoError::BadStatus(9))
        );

        let entry = CatalogEntry { infohash: InfoHash([3; 20]), name: "n".into(), version: "1".into(), total_size: 5 };
        let json = serde_json::to_vec(&vec![entry.clone()]).unwrap();
        let mut list = list_header(Status::Ok, json.len() as u32).to_vec();
        list.extend_from_slice(&json);
        assert_eq!(parse_list_reply(&list).unwrap(), vec![entry]);
        assert_eq!(parse_list_reply(&list[..list.len() - 1]), Err(ProtoError::UnexpectedEnd));
        let mut bad = list_header(Status::Ok, 3).to_vec();
        bad.extend_from_slice(b"{x]");
        assert!(matches!(parse_list_reply(&bad), Err(ProtoError::Catalog { .. })));
    }
}
