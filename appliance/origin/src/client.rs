//! The appliance's side of popseed/1: one QUIC connection to an origin, one stream per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::bufpool::BufPool;
use crate::error::OriginError;
use crate::proto::{self, PieceReply, PiecesParser, Request, Status};
use crate::rate::RateLimiter;

/// Server name sent in the TLS handshake when none is configured (pinned certificates do not
/// check it).
pub const DEFAULT_SERVER_NAME: &str = "popseed-origin";

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogEntry {
    pub infohash: String,
    pub name: String,
    pub version: String,
    pub total_size: u64,
}

/// Bytes of piece buffers a connection keeps for reuse (about what its streams hold in flight).
const PIECE_BUFFERS_KEPT: usize = 64 << 20;

#[derive(Clone)]
pub struct OriginClient {
    conn: quinn::Connection,
    buffers: Arc<BufPool>,
}

/// A client endpoint for `addr`'s address family.
pub fn client_endpoint(addr: SocketAddr) -> Result<quinn::Endpoint, OriginError> {
    let bind: SocketAddr = if addr.is_ipv6() { "[::]:0".parse() } else { "0.0.0.0:0".parse() }
        .map_err(|_| OriginError::Tls("bad bind address".into()))?;
    quinn::Endpoint::client(bind).map_err(|e| OriginError::Bind { addr: bind, err: e })
}

impl OriginClient {
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        cfg: quinn::ClientConfig,
        timeout: Duration,
    ) -> Result<Self, OriginError> {
        let connecting = endpoint
            .connect_with(cfg, addr, server_name)
            .map_err(|e| OriginError::Connect { addr, reason: e.to_string() })?;
        let conn = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| OriginError::Connect { addr, reason: format!("no answer within {timeout:?}") })?
            .map_err(|e| OriginError::Connect { addr, reason: e.to_string() })?;
        Ok(OriginClient { conn, buffers: BufPool::new(PIECE_BUFFERS_KEPT) })
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
        infohash: [u8; 20],
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
    pub async fn get_release(&self, infohash: [u8; 20]) -> Result<(Bytes, Bytes), OriginError> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(&Request::GetRelease { infohash }.encode()).await?;
        let _ = send.finish();
        let buf = recv.read_to_end(2 * proto::MAX_META as usize + 9).await?;
        if buf.len() < 9 {
            return Err(proto::ProtoError::UnexpectedEnd.into());
        }
        if buf[0] != Status::Ok as u8 {
            return Err(OriginError::UnknownRelease(hex::encode(infohash)));
        }
        let ml = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        let tl = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
        if buf.len() != 9 + ml + tl {
            return Err(proto::ProtoError::UnexpectedEnd.into());
        }
        let b = Bytes::from(buf);
        Ok((b.slice(9..9 + ml), b.slice(9 + ml..)))
    }

    /// The origin's catalog.
    pub async fn list(&self) -> Result<Vec<CatalogEntry>, OriginError> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(&Request::List.encode()).await?;
        let _ = send.finish();
        let buf = recv.read_to_end(proto::MAX_META as usize + 5).await?;
        if buf.len() < 5 || buf[0] != Status::Ok as u8 {
            return Err(proto::ProtoError::UnexpectedEnd.into());
        }
        serde_json::from_slice(&buf[5..]).map_err(|e| OriginError::Stream(format!("catalog: {e}")))
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
