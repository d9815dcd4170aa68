//! The appliance's side of popseed/1: one QUIC connection to an origin (dialled by
//! [`crate::OriginConnector`]), one stream per request. Framing and reply parsing are in
//! [`crate::proto`]; this is the async shell around them.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use popseed_core::{InfoHash, RateLimiter};

use crate::bufpool::BufPool;
use crate::error::OriginError;
use crate::proto::{self, CatalogEntry, PieceReply, PiecesParser, ReleaseReply, Request};

/// Bytes of piece buffers a connection keeps for reuse (about what its streams hold in flight).
const PIECE_BUFFERS_KEPT: usize = 64 << 20;

#[derive(Clone)]
pub struct OriginClient {
    conn: quinn::Connection,
    buffers: Arc<BufPool>,
}

impl OriginClient {
    pub(crate) fn new(conn: quinn::Connection) -> Self {
        OriginClient { conn, buffers: BufPool::new(PIECE_BUFFERS_KEPT) }
    }

    pub fn remote(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Why the connection closed, if it has.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.conn.close_reason()
    }

    pub fn close(&self) {
        self.conn.close(proto::code::OK.into(), b"bye");
    }

    /// Requests pieces on one stream; `max_len` is the release's piece length (replies longer
    /// than that are protocol errors). Pieces are yielded as each one completes.
    pub async fn request_pieces(
        &self,
        infohash: InfoHash,
        priority: i32,
        indices: &[u32],
        max_len: u32,
    ) -> Result<PieceStream, OriginError> {
        let (mut send, recv) = self.conn.open_bi().await?;
        let _ = send.set_priority(priority);
        send.write_all(&Request::GetPieces { infohash, priority, indices: indices.to_vec() }.encode()).await?;
        let _ = send.finish();
        Ok(PieceStream {
            recv,
            parser: PiecesParser::with_buffers(indices, max_len, self.buffers.clone()),
            ready: Default::default(),
            ended: false,
        })
    }

    /// Fetches a release's manifest.json and .torrent bytes.
    pub async fn get_release(&self, infohash: InfoHash) -> Result<(Bytes, Bytes), OriginError> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(&Request::GetRelease { infohash }.encode()).await?;
        let _ = send.finish();
        let buf = recv.read_to_end(2 * proto::MAX_META as usize + 9).await?;
        match proto::parse_release_reply(Bytes::from(buf))? {
            ReleaseReply::Found { manifest, torrent } => Ok((manifest, torrent)),
            ReleaseReply::NotServed(status) => Err(OriginError::NotServed { infohash, status }),
        }
    }

    /// The origin's catalog.
    pub async fn list(&self) -> Result<Vec<CatalogEntry>, OriginError> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(&Request::List.encode()).await?;
        let _ = send.finish();
        let buf = recv.read_to_end(proto::MAX_META as usize + 5).await?;
        Ok(proto::parse_list_reply(&buf)?)
    }
}

/// The answer to one GET_PIECES request, piece by piece.
pub struct PieceStream {
    recv: quinn::RecvStream,
    parser: PiecesParser,
    ready: std::collections::VecDeque<PieceReply>,
    ended: bool,
}

impl PieceStream {
    /// The next complete piece; `Ok(None)` once every requested piece was answered.
    pub async fn next(&mut self, limiter: Option<&RateLimiter>) -> Result<Option<PieceReply>, OriginError> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Ok(Some(p));
            }
            if self.ended {
                return Ok(None);
            }
            match self.recv.read_chunk(1 << 20, true).await? {
                Some(chunk) => {
                    if let Some(l) = limiter {
                        l.acquire(chunk.bytes.len()).await;
                    }
                    match self.parser.push(&chunk.bytes) {
                        Ok(done) => self.ready.extend(done),
                        Err(e) => {
                            let _ = self.recv.stop(proto::code::MALFORMED.into());
                            return Err(e.into());
                        }
                    }
                }
                None => {
                    self.parser.finish()?;
                    self.ended = true;
                }
            }
        }
    }
}
