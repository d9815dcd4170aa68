//! The per-peer BitTorrent protocol state machine, with no sockets and no clock of its own
//! (quinn-proto style). The shell feeds it received bytes ([`PeerProto::receive`]), the current
//! time ([`PeerProto::handle_timeout`]) and decisions (choke/unchoke, pieces stored); it answers
//! with bytes to send ([`PeerProto::take_output`]), blocks to read from the store and send
//! ([`PeerProto::next_block`]), [`Event`]s for the shell, or a [`DropReason`] to disconnect.
//!
//! Serialization and parsing use librqbit-peer-protocol; this module owns everything that crate
//! leaves to the caller: the message length cap (checked on the 4-byte prefix, before any
//! buffering), index/range checks, queue caps, flood limits, and the handshake policy: a
//! connection that does not open with `\x13BitTorrent protocol` is taken as an MSE/PE handshake
//! ([`crate::mse`]; plaintext is selected when offered, RC4 otherwise), or dropped at its first
//! byte when MSE is off. With RC4, received bytes are decrypted here and [`PeerProto::take_output`]
//! encrypts control bytes; the shell encrypts the blocks it appends with [`PeerProto::seal`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use librqbit_buffers::ByteBuf;
use librqbit_core::hash_id::Id20;
use librqbit_core::lengths::{ChunkInfo, Lengths};
use librqbit_peer_protocol::extended::ut_metadata::{UtMetadata, UtMetadataData};
use librqbit_peer_protocol::extended::{ExtendedMessage, PeerExtendedMessageIds};
use librqbit_peer_protocol::{serialize_piece_preamble, Handshake, Message, MessageDeserializeError, Request};
use popseed_core::{InfoHash, TokenBucket};
use popseed_store::Bitfield;
use rc4::cipher::StreamCipher;

use popseed_release::bencode;

use crate::download::Download;
use crate::mse::{MseError, MseResponder, Rc4Pair};

/// Length of the plaintext BitTorrent handshake.
pub const HANDSHAKE_LEN: usize = 68;
const PSTR: &[u8; 20] = b"\x13BitTorrent protocol";
/// Largest block we serve; clients ask for 16 KiB, some allow up to 128 KiB.
pub const MAX_BLOCK: u32 = 128 * 1024;
/// Largest extended (BEP 10) message we accept.
pub const MAX_EXTENDED_LEN: u32 = 64 * 1024;
/// Length of a piece message's header (length prefix, id, index, begin).
pub const PIECE_PREAMBLE_LEN: usize = 13;
/// ut_metadata piece size (BEP 9).
const METADATA_PIECE: usize = 16 * 1024;
/// Our extension id for ut_metadata (what librqbit-peer-protocol decodes as ut_metadata).
const OUR_UT_METADATA: u8 = librqbit_peer_protocol::MY_EXTENDED_UT_METADATA;
/// Our extension id for ut_pex (BEP 11).
const OUR_UT_PEX: u8 = librqbit_peer_protocol::MY_EXTENDED_UT_PEX;
/// Peers taken from one PEX message, and sent in one (BEP 11: at most 50 added).
pub const PEX_MAX_PEERS: usize = 50;
/// BEP 6 fast extension: the bit both ends set in the handshake's reserved bytes.
const FAST_EXTENSION_BIT: u64 = 0x04;
/// Pieces a choked peer may fetch from the box (BEP 6 allowed_fast; libtorrent offers 5 by
/// default, the BEP's example 10), and never more than half of the release's pieces.
pub const ALLOWED_FAST_SET: usize = 10;
/// The shell tops a peer's send buffer up with blocks and metadata replies while fewer than this
/// many bytes wait to be written ([`PeerProto::wants_output`]).
pub const SEND_HIGH_WATER: usize = 512 * 1024;
/// Back-pressure: while this many bytes or more wait to be written to a peer, nothing more is
/// read from it ([`PeerProto::wants_input`]), so a peer that does not read cannot make the box
/// buffer replies for it. Above [`SEND_HIGH_WATER`] plus one block, so serving blocks alone never
/// stops a peer's requests from being read.
pub const MAX_SEND_BACKLOG: usize = 1024 * 1024;
/// Each ut_metadata piece may be asked for this many times per connection (a client asks once,
/// again if the assembled dictionary fails its hash); more requests drop the peer.
pub const METADATA_REQUESTS_PER_PIECE: u32 = 4;

/// Protocol limits and identity, shared by all connections.
#[derive(Debug, Clone)]
pub struct ProtoConfig {
    /// `reqq` advertised in the extension handshake: requests a peer may have outstanding.
    pub reqq: u32,
    /// Queued requests beyond this disconnect the peer (a flood).
    pub max_queue: usize,
    /// Requests for pieces we do not have before the peer is dropped.
    pub max_missing_requests: u32,
    /// Non-request messages (have, interested, keep-alive, extended, ...) per second
    /// (a token bucket holding one second's worth).
    pub max_chatter_per_sec: u32,
    /// Messages of every kind (requests and cancels included) per second. Far above what a
    /// fast downloader sends: 16 KiB blocks at 1 GiB/s are 65536 requests per second.
    pub max_messages_per_sec: u32,
    /// How many messages beyond that rate a peer may send at once (the token bucket's size):
    /// a tenth of a second's worth by default, 5 times the `reqq` a peer is told, so a flood is
    /// judged after ten thousand messages instead of a second's worth.
    pub message_burst: u32,
    pub keepalive: Duration,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    /// `v` in the extension handshake.
    pub client_name: String,
    /// Accept MSE/PE (encrypted) handshakes; when false they are dropped at the first byte.
    pub mse: bool,
    /// The box's peer port, told to peers as `p` in the extension handshake (0: not told).
    pub listen_port: u16,
}

impl Default for ProtoConfig {
    fn default() -> Self {
        ProtoConfig {
            reqq: 2000,
            max_queue: 4000,
            max_missing_requests: 256,
            max_chatter_per_sec: 2000,
            max_messages_per_sec: 100_000,
            message_burst: 10_000,
            keepalive: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            client_name: concat!("popseed ", env!("CARGO_PKG_VERSION")).to_owned(),
            mse: true,
            listen_port: 0,
        }
    }
}

/// What the core needs to know about one release.
#[derive(Debug)]
pub struct TorrentMeta {
    pub infohash: InfoHash,
    pub lengths: Lengths,
    /// The bencoded info dictionary, served over ut_metadata.
    pub info_bytes: Arc<[u8]>,
}

impl TorrentMeta {
    /// None for an empty release (nothing to seed).
    pub fn new(infohash: InfoHash, total_length: u64, piece_length: u32, info_bytes: Arc<[u8]>) -> Option<Self> {
        let lengths = Lengths::new(total_length, piece_length).ok()?;
        Some(TorrentMeta { infohash, lengths, info_bytes })
    }

    pub fn piece_count(&self) -> u32 {
        self.lengths.total_pieces()
    }

    pub fn piece_size(&self, index: u32) -> Option<u32> {
        self.lengths.validate_piece_index(index).map(|i| self.lengths.piece_length(i))
    }
}

/// Looks releases up by infohash at handshake time: their metadata and the pieces present now.
pub trait Catalog {
    fn lookup(&self, infohash: &InfoHash) -> Option<(Arc<TorrentMeta>, Bitfield)>;
    /// The held release whose [`crate::mse::req2_hash`] is `req2` (MSE stream key lookup).
    fn by_req2(&self, req2: &[u8; 20]) -> Option<InfoHash>;
    /// Whether the box is filling the release (it downloads, so it is not `upload_only`).
    fn wanted(&self, _infohash: &InfoHash) -> bool {
        false
    }
}

/// Why a peer was disconnected. [`DropReason::kind`] is a stable label for counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// The first bytes were not a BitTorrent handshake (or an MSE/PE one while MSE is off).
    NotBitTorrent,
    /// An MSE/PE handshake failed.
    Mse(MseError),
    UnknownInfohash(InfoHash),
    MessageTooLong(u32),
    Malformed(String),
    BadIndex(u32),
    PastEnd {
        index: u32,
        begin: u32,
        length: u32,
    },
    BadBlockLength(u32),
    RequestFlood(usize),
    ChatterFlood,
    /// More than [`ProtoConfig::max_messages_per_sec`] messages of any kind.
    MessageFlood,
    /// More ut_metadata requests than [`METADATA_REQUESTS_PER_PIECE`] per metadata piece.
    MetadataFlood(u32),
    TooManyMissing(u32),
    BadBitfield {
        got: usize,
        expected: usize,
    },
    Unexpected(&'static str),
    /// More blocks that answer no request than [`crate::download::MAX_UNREQUESTED_BLOCKS`].
    UnrequestedBlocks(u32),
    /// A piece from the peer failed the release's hash check.
    BadPiece(u32),
    /// A peer we connected to answered for another release.
    WrongInfohash(InfoHash),
    /// We connected to ourselves (our own address among a release's peers).
    SelfConnection,
    HandshakeTimeout,
    Idle,
    /// Gave way to a new connection at the global peer cap, having sent no handshake within
    /// [`crate::peers::EVICT_UNATTACHED_AFTER`].
    Evicted,
    Internal(String),
}

impl DropReason {
    pub fn kind(&self) -> &'static str {
        match self {
            DropReason::NotBitTorrent => "not_bittorrent",
            DropReason::Mse(_) => "mse_failed",
            DropReason::UnknownInfohash(_) => "unknown_infohash",
            DropReason::MessageTooLong(_) => "message_too_long",
            DropReason::Malformed(_) => "malformed",
            DropReason::BadIndex(_) => "bad_index",
            DropReason::PastEnd { .. } => "past_end",
            DropReason::BadBlockLength(_) => "bad_block_length",
            DropReason::RequestFlood(_) => "request_flood",
            DropReason::ChatterFlood => "chatter_flood",
            DropReason::MessageFlood => "message_flood",
            DropReason::MetadataFlood(_) => "metadata_flood",
            DropReason::TooManyMissing(_) => "too_many_missing",
            DropReason::BadBitfield { .. } => "bad_bitfield",
            DropReason::Unexpected(_) => "unexpected_message",
            DropReason::UnrequestedBlocks(_) => "unrequested_blocks",
            DropReason::BadPiece(_) => "bad_piece",
            DropReason::WrongInfohash(_) => "wrong_infohash",
            DropReason::SelfConnection => "self_connection",
            DropReason::HandshakeTimeout => "handshake_timeout",
            DropReason::Idle => "idle",
            DropReason::Evicted => "evicted",
            DropReason::Internal(_) => "internal",
        }
    }

    /// Whether the peer misbehaved (flooded, lied, sent what no client sends) rather than
    /// failed or went away; its address is then refused for a while ([`crate::peers::BAN_FIRST`]).
    /// A client that wants a release the box lacks, speaks no BitTorrent or MSE we accept, or is
    /// slow is not abusive.
    pub fn is_abuse(&self) -> bool {
        match self {
            DropReason::MessageTooLong(_)
            | DropReason::Malformed(_)
            | DropReason::BadIndex(_)
            | DropReason::PastEnd { .. }
            | DropReason::BadBlockLength(_)
            | DropReason::RequestFlood(_)
            | DropReason::ChatterFlood
            | DropReason::MessageFlood
            | DropReason::MetadataFlood(_)
            | DropReason::TooManyMissing(_)
            | DropReason::BadBitfield { .. }
            | DropReason::Unexpected(_)
            | DropReason::UnrequestedBlocks(_)
            | DropReason::BadPiece(_) => true,
            DropReason::NotBitTorrent
            | DropReason::WrongInfohash(_)
            | DropReason::SelfConnection
            | DropReason::Mse(_)
            | DropReason::UnknownInfohash(_)
            | DropReason::HandshakeTimeout
            | DropReason::Idle
            | DropReason::Evicted
            | DropReason::Internal(_) => false,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::NotBitTorrent => write!(f, "not a BitTorrent handshake"),
            DropReason::Mse(e) => write!(f, "encrypted (MSE/PE) handshake failed: {e}"),
            DropReason::UnknownInfohash(ih) => write!(f, "unknown infohash {ih}"),
            DropReason::MessageTooLong(n) => write!(f, "message length {n} exceeds the cap"),
            DropReason::Malformed(e) => write!(f, "malformed message: {e}"),
            DropReason::BadIndex(i) => write!(f, "piece index {i} out of range"),
            DropReason::PastEnd { index, begin, length } => {
                write!(f, "request past the end of piece {index} (begin {begin}, length {length})")
            }
            DropReason::BadBlockLength(n) => write!(f, "block length {n} not in 1..={MAX_BLOCK}"),
            DropReason::RequestFlood(n) => write!(f, "request flood ({n} queued)"),
            DropReason::ChatterFlood => write!(f, "message flood"),
            DropReason::MessageFlood => write!(f, "message flood (all kinds)"),
            DropReason::MetadataFlood(n) => write!(f, "metadata request flood ({n} requests)"),
            DropReason::TooManyMissing(n) => write!(f, "{n} requests for pieces we do not have"),
            DropReason::BadBitfield { got, expected } => write!(f, "bitfield of {got} bytes, expected {expected}"),
            DropReason::Unexpected(m) => write!(f, "unexpected {m} message"),
            DropReason::UnrequestedBlocks(n) => write!(f, "{n} blocks we did not ask for"),
            DropReason::BadPiece(i) => write!(f, "piece {i} failed its hash check"),
            DropReason::WrongInfohash(ih) => write!(f, "answered for another release ({ih})"),
            DropReason::SelfConnection => write!(f, "connected to ourselves"),
            DropReason::HandshakeTimeout => write!(f, "no handshake in time"),
            DropReason::Idle => write!(f, "idle timeout"),
            DropReason::Evicted => write!(f, "no handshake yet, gave way to a new connection at the peer cap"),
            DropReason::Internal(e) => write!(f, "internal: {e}"),
        }
    }
}

/// A block a peer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRequest {
    pub index: u32,
    pub begin: u32,
    pub length: u32,
}

impl From<Request> for BlockRequest {
    fn from(r: Request) -> Self {
        BlockRequest { index: r.index, begin: r.begin, length: r.length }
    }
}

/// Things the shell acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Handshake accepted for this release: register the peer (choker, stats).
    Attached {
        infohash: InfoHash,
        peer_id: [u8; 20],
    },
    Interested,
    NotInterested,
    /// The peer asked for a piece we do not have: ask the fetcher, or call
    /// [`PeerProto::refuse_missing`] when there is none.
    Demand {
        index: u32,
    },
    /// Peers the peer told us about (BEP 11 ut_pex `added`, at most [`PEX_MAX_PEERS`]).
    Pex(Vec<std::net::SocketAddr>),
    /// A whole piece arrived from the peer: check and store it, then report it to the fill
    /// (a hash failure drops the peer with [`DropReason::BadPiece`]).
    Downloaded {
        index: u32,
        data: Vec<u8>,
    },
}

/// One peer connection's protocol state.
pub struct PeerProto {
    cfg: Arc<ProtoConfig>,
    peer_ip: IpAddr,
    our_id: [u8; 20],
    inbuf: Vec<u8>,
    out: Vec<u8>,
    meta: Option<Arc<TorrentMeta>>,
    have: Bitfield,
    peer_ext: PeerExtendedMessageIds,
    peer_interested: bool,
    choking: bool,
    /// Queued requests in arrival order (by sequence number), with an index by request (all
    /// copies of a request asked for more than once), so a cancel costs O(log n) instead of a
    /// scan of the queue.
    queue: BTreeMap<u64, BlockRequest>,
    queued_at: BTreeSet<(BlockRequest, u64)>,
    next_seq: u64,
    /// Requests for missing pieces the fetcher was asked for, by piece; served when the piece
    /// arrives. `parked_len` counts them.
    parked: HashMap<u32, Vec<BlockRequest>>,
    parked_len: usize,
    missing_requests: u32,
    requests_while_choked: u32,
    /// ut_metadata pieces asked for and not yet answered: replies are serialized only when the
    /// shell has room for them ([`PeerProto::next_metadata`]).
    metadata_queue: VecDeque<u32>,
    /// ut_metadata requests over the connection's life.
    metadata_requests: u32,
    /// [`ProtoConfig::max_chatter_per_sec`].
    chatter: TokenBucket,
    /// [`ProtoConfig::max_messages_per_sec`].
    messages: TokenBucket,
    created: Instant,
    last_recv: Instant,
    last_send: Instant,
    events: VecDeque<Event>,
    dead: Option<DropReason>,
    uploaded: u64,
    /// MSE handshake in progress.
    mse: Option<Box<MseResponder>>,
    /// The release an MSE handshake named (its BitTorrent handshake must name the same).
    mse_infohash: Option<InfoHash>,
    /// RC4 streams once an MSE handshake selected RC4.
    rc4: Option<Rc4Pair>,
    /// `out[..out_sealed]` is already in wire form (MSE handshake bytes).
    out_sealed: usize,
    /// The downloading half ([`crate::download`]), from the handshake on.
    download: Option<Download>,
    /// An outgoing connection: the release asked for and our bitfield, until the peer's
    /// handshake names the same release.
    dialed: Option<(Arc<TorrentMeta>, Bitfield)>,
    /// Whether the box wants this release's pieces (the fill runs and it is incomplete).
    wanted: bool,
    /// The peer's listen port (`p` of its extension handshake).
    peer_port: Option<u16>,
    /// Both ends set the BEP 6 bit: have_all/have_none, explicit rejects, allowed_fast and
    /// suggest_piece are on.
    fast: bool,
    /// The pieces this peer may fetch while we choke it (BEP 6, computed from its address).
    allowed_for_peer: Vec<u32>,
}

fn malformed(e: MessageDeserializeError) -> DropReason {
    DropReason::Malformed(e.to_string())
}

fn bad_bencode(e: bencode::BencodeError) -> DropReason {
    DropReason::Malformed(e.to_string())
}

/// Applies a BEP 10 handshake's `m` dictionary to the ids we send the peer's extensions under.
/// An id of 0 disables the extension; a name the dictionary leaves out keeps its id (a later
/// handshake changes only what it names). Ids are one byte: anything else drops the peer.
fn apply_extension_ids(ids: &mut PeerExtendedMessageIds, m: &bencode::Value<'_>) -> Result<(), DropReason> {
    for (name, slot) in [(&b"ut_metadata"[..], &mut ids.ut_metadata), (b"ut_pex", &mut ids.ut_pex)] {
        let Some(v) = bencode::dict_get(m, name) else { continue };
        let id = bencode::as_int(v).and_then(|i| u8::try_from(i).ok()).ok_or_else(|| {
            DropReason::Malformed(format!("extension id of {} is not a byte", String::from_utf8_lossy(name)))
        })?;
        *slot = (id != 0).then_some(id);
    }
    Ok(())
}

impl PeerProto {
    pub fn new(cfg: Arc<ProtoConfig>, peer_ip: IpAddr, our_id: [u8; 20], now: Instant) -> Self {
        PeerProto {
            peer_ip,
            our_id,
            inbuf: Vec::new(),
            out: Vec::new(),
            meta: None,
            have: Bitfield::new(0),
            peer_ext: PeerExtendedMessageIds::default(),
            peer_interested: false,
            choking: true,
            queue: BTreeMap::new(),
            queued_at: BTreeSet::new(),
            next_seq: 0,
            parked: HashMap::new(),
            parked_len: 0,
            missing_requests: 0,
            requests_while_choked: 0,
            metadata_queue: VecDeque::new(),
            metadata_requests: 0,
            chatter: per_second(cfg.max_chatter_per_sec, now),
            messages: TokenBucket::new(cfg.max_messages_per_sec as f64, cfg.message_burst as f64, now),
            cfg,
            created: now,
            last_recv: now,
            last_send: now,
            events: VecDeque::new(),
            dead: None,
            uploaded: 0,
            mse: None,
            mse_infohash: None,
            rc4: None,
            out_sealed: 0,
            download: None,
            dialed: None,
            wanted: false,
            peer_port: None,
            fast: false,
            allowed_for_peer: Vec::new(),
        }
    }

    /// An outgoing connection to a peer of `meta`'s release: our handshake goes out at once
    /// (plaintext), our extension handshake and bitfield once the peer's handshake named the
    /// same release.
    pub fn connect(
        cfg: Arc<ProtoConfig>,
        peer_ip: IpAddr,
        our_id: [u8; 20],
        meta: Arc<TorrentMeta>,
        have: Bitfield,
        now: Instant,
    ) -> Self {
        let mut p = PeerProto::new(cfg, peer_ip, our_id, now);
        // The rest of the opening waits for the peer's handshake: whether it speaks BEP 6
        // decides between a bitfield and have_all/have_none.
        p.send_handshake(&meta);
        p.dialed = Some((meta, have));
        p
    }

    pub fn infohash(&self) -> Option<InfoHash> {
        self.meta.as_ref().map(|m| m.infohash)
    }
    pub fn is_attached(&self) -> bool {
        self.meta.is_some()
    }
    pub fn is_interested(&self) -> bool {
        self.peer_interested
    }
    pub fn is_choking(&self) -> bool {
        self.choking
    }
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
    pub fn parked(&self) -> usize {
        self.parked_len
    }
    /// ut_metadata requests waiting for their reply.
    pub fn metadata_queued(&self) -> usize {
        self.metadata_queue.len()
    }
    /// Pieces we have advertised to this peer.
    pub fn advertised(&self) -> &Bitfield {
        &self.have
    }
    /// Whether the connection opened with an MSE/PE handshake, and whether it runs RC4.
    pub fn encryption(&self) -> (bool, bool) {
        (self.mse_infohash.is_some(), self.rc4.is_some())
    }
    /// Block bytes handed out by [`PeerProto::next_block`].
    pub fn uploaded(&self) -> u64 {
        self.uploaded
    }
    /// The port the peer listens on, from its extension handshake.
    pub fn peer_listen_port(&self) -> Option<u16> {
        self.peer_port
    }

    /// Whether the peer takes ut_pex messages.
    pub fn speaks_pex(&self) -> bool {
        self.peer_ext.ut_pex.is_some()
    }

    /// Sends a BEP 11 ut_pex message (IPv4 peers; at most [`PEX_MAX_PEERS`] of each list), if
    /// the peer takes them.
    pub fn send_pex(&mut self, added: &[std::net::SocketAddr], dropped: &[std::net::SocketAddr]) {
        let Some(id) = self.peer_ext.ut_pex else { return };
        let compact = |list: &[std::net::SocketAddr]| -> Vec<u8> {
            let mut c = Vec::new();
            for a in list.iter().filter(|a| a.is_ipv4()).take(PEX_MAX_PEERS) {
                crate::addr::push_compact(&mut c, a);
            }
            c
        };
        let (add, drop) = (compact(added), compact(dropped));
        let mut d = Vec::with_capacity(48 + add.len() + drop.len());
        d.extend_from_slice(format!("d5:added{}:", add.len()).as_bytes());
        d.extend_from_slice(&add);
        d.extend_from_slice(format!("7:added.f{}:", add.len() / 6).as_bytes());
        d.extend(std::iter::repeat_n(0u8, add.len() / 6));
        d.extend_from_slice(format!("7:dropped{}:", drop.len()).as_bytes());
        d.extend_from_slice(&drop);
        d.push(b'e');
        self.out.extend_from_slice(&((d.len() + 2) as u32).to_be_bytes());
        self.out.extend_from_slice(&[20, id]);
        self.out.extend_from_slice(&d);
    }

    /// The downloading half, once attached.
    pub fn download(&self) -> Option<&Download> {
        self.download.as_ref()
    }

    /// Whether the box wants this release's pieces; we are interested in the peer while it
    /// does and the peer has a piece we lack.
    pub fn set_wanted(&mut self, wanted: bool, now: Instant) {
        self.wanted = wanted;
        if let Some(d) = self.download.as_mut() {
            d.set_wanted(wanted);
        }
        self.after_download_change(now);
    }

    /// How many more pieces the fill should hand this connection now.
    pub fn pieces_wanted(&self) -> usize {
        match (&self.download, &self.meta) {
            (Some(d), Some(m)) => d.pieces_wanted(m.lengths.default_piece_length()),
            _ => 0,
        }
    }

    /// Pieces handed by the fill: their blocks are requested at once, within the pipeline.
    pub fn add_pieces(&mut self, pieces: &[u32], now: Instant) {
        let Some(meta) = self.meta.clone() else { return };
        if let Some(d) = self.download.as_mut() {
            for &i in pieces {
                if let Some(size) = meta.piece_size(i) {
                    d.add_piece(i, size);
                }
            }
        }
        self.after_download_change(now);
    }

    /// Pieces the peer announced since the last call (for the fill's view of the venue).
    pub fn take_new_holdings(&mut self) -> Vec<u32> {
        self.download.as_mut().map(Download::take_new_holdings).unwrap_or_default()
    }

    /// Pieces given back since the last call (choked, snubbed, no longer wanted): the shell
    /// returns them to the fill.
    pub fn take_released(&mut self) -> Vec<u32> {
        self.download.as_mut().map(Download::take_released).unwrap_or_default()
    }

    /// Interest, requests and cancels after anything that changes what we download.
    fn after_download_change(&mut self, now: Instant) {
        let Some(d) = self.download.as_mut() else { return };
        match d.update_interest(&self.have) {
            Some(true) => self.out.extend_from_slice(&[0, 0, 0, 1, 2]),
            Some(false) => self.out.extend_from_slice(&[0, 0, 0, 1, 3]),
            None => {}
        }
        for (index, begin, length) in d.next_requests(now) {
            push_request(&mut self.out, 6, index, begin, length);
        }
        while let Some((index, data)) = d.take_complete() {
            self.events.push_back(Event::Downloaded { index, data });
        }
    }

    fn fail(&mut self, r: DropReason) -> Result<(), DropReason> {
        self.dead = Some(r.clone());
        Err(r)
    }

    /// Largest length prefix accepted, before any of the message is buffered.
    pub fn max_message_len(&self) -> u32 {
        let bitfield = self.meta.as_ref().map_or(0, |m| m.lengths.piece_bitfield_bytes() as u32 + 1);
        bitfield.max(MAX_EXTENDED_LEN + 2).max(13)
    }

    /// Feeds bytes read from the socket.
    pub fn receive(&mut self, data: &[u8], now: Instant, catalog: &dyn Catalog) -> Result<(), DropReason> {
        if let Some(r) = &self.dead {
            return Err(r.clone());
        }
        self.last_recv = now;
        if self.mse.is_some() {
            return self.mse_receive(data, now, catalog);
        }
        let start = self.inbuf.len();
        self.inbuf.extend_from_slice(data);
        if let Some(c) = self.rc4.as_mut() {
            c.dec.apply_keystream(&mut self.inbuf[start..]);
        }
        self.process(now, catalog)
    }

    /// Drives an MSE handshake; once it is done, the decrypted payload goes the usual way.
    fn mse_receive(&mut self, data: &[u8], now: Instant, catalog: &dyn Catalog) -> Result<(), DropReason> {
        let Some(m) = self.mse.as_mut() else { return Ok(()) };
        let lookup = |req2: &[u8; 20]| catalog.by_req2(req2).map(InfoHash::into_bytes);
        let res = m.receive(data, &lookup, &mut self.out);
        self.out_sealed = self.out.len();
        match res {
            Err(e) => self.fail(DropReason::Mse(e)),
            Ok(None) => Ok(()),
            Ok(Some(est)) => {
                self.mse = None;
                self.mse_infohash = Some(InfoHash(est.infohash));
                self.rc4 = est.rc4;
                self.inbuf = est.payload;
                self.process(now, catalog)
            }
        }
    }

    fn process(&mut self, now: Instant, catalog: &dyn Catalog) -> Result<(), DropReason> {
        if self.meta.is_none() {
            let n = self.inbuf.len().min(PSTR.len());
            if self.inbuf[..n] != PSTR[..n] {
                if self.cfg.mse && self.mse_infohash.is_none() && self.dialed.is_none() && self.out.is_empty() {
                    // Not plaintext: an MSE/PE opening (its first 96 bytes are a DH key).
                    self.mse = Some(Box::new(MseResponder::new(true)));
                    let opening = std::mem::take(&mut self.inbuf);
                    return self.mse_receive(&opening, now, catalog);
                }
                return self.fail(DropReason::NotBitTorrent);
            }
            if self.inbuf.len() < HANDSHAKE_LEN {
                return Ok(());
            }
            let res = self.handshake(catalog);
            if let Err(r) = res {
                return self.fail(r);
            }
            self.inbuf.drain(..HANDSHAKE_LEN);
        }
        let buf = std::mem::take(&mut self.inbuf);
        let mut pos = 0;
        // Every message, whatever its kind, costs a token of the message bucket. The bucket is
        // refilled once per read and charged once for all the messages in it.
        let tokens = if self.messages.unlimited() { f64::INFINITY } else { self.messages.available(now) };
        let mut used = 0.0;
        let res = loop {
            let rest = &buf[pos..];
            if rest.len() < 4 {
                break Ok(());
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if len > self.max_message_len() {
                break Err(DropReason::MessageTooLong(len));
            }
            let total = 4 + len as usize;
            if rest.len() < total {
                break Ok(());
            }
            if used + 1.0 > tokens {
                break Err(DropReason::MessageFlood);
            }
            used += 1.0;
            if let Err(r) = self.message(&rest[..total], now) {
                break Err(r);
            }
            pos += total;
        };
        self.messages.try_take(used, now);
        self.inbuf = buf;
        self.inbuf.drain(..pos);
        self.after_download_change(now);
        match res {
            Ok(()) => Ok(()),
            Err(r) => self.fail(r),
        }
    }

    fn handshake(&mut self, catalog: &dyn Catalog) -> Result<(), DropReason> {
        let (h, _) = Handshake::deserialize(&self.inbuf[..HANDSHAKE_LEN]).map_err(|_| DropReason::NotBitTorrent)?;
        let ih = InfoHash(h.info_hash.0);
        if h.peer_id.0 == self.our_id {
            return Err(DropReason::SelfConnection);
        }
        self.fast = h.reserved & FAST_EXTENSION_BIT != 0;
        let (meta, have) = match self.dialed.take() {
            Some((meta, have)) => {
                if ih != meta.infohash {
                    return Err(DropReason::WrongInfohash(ih));
                }
                self.send_after_handshake(&meta, &have, h.supports_extended(), have.is_complete())?;
                (meta, have)
            }
            None => {
                if self.mse_infohash.is_some_and(|sk| sk != ih) {
                    return Err(DropReason::Mse(MseError::UnknownInfohash));
                }
                let (meta, have) = catalog.lookup(&ih).ok_or(DropReason::UnknownInfohash(ih))?;
                if have.len() != meta.piece_count() {
                    return Err(DropReason::Internal("bitfield length does not match the release".into()));
                }
                self.wanted = catalog.wanted(&ih);
                let upload_only = have.is_complete() || !self.wanted;
                self.send_handshake(&meta);
                self.send_after_handshake(&meta, &have, h.supports_extended(), upload_only)?;
                (meta, have)
            }
        };
        self.events.push_back(Event::Attached { infohash: ih, peer_id: h.peer_id.0 });
        let mut download = Download::new(meta.piece_count(), self.created);
        download.set_wanted(self.wanted);
        self.download = Some(download);
        self.meta = Some(meta);
        self.have = have;
        Ok(())
    }

    /// Our handshake: BEP 10 extensions and the BEP 6 fast extension.
    fn send_handshake(&mut self, meta: &TorrentMeta) {
        let mut ours = Handshake::new(Id20::new(meta.infohash.into_bytes()), Id20::new(self.our_id));
        ours.reserved |= FAST_EXTENSION_BIT;
        let start = self.out.len();
        self.out.resize(start + HANDSHAKE_LEN, 0);
        let _ = ours.serialize_unchecked_len(&mut self.out[start..]);
    }

    /// After both handshakes: our extension handshake (when the peer speaks BEP 10), what we
    /// have (a bitfield; have_all or have_none with BEP 6) and, with BEP 6, the pieces the peer
    /// may fetch while choked.
    fn send_after_handshake(
        &mut self,
        meta: &TorrentMeta,
        have: &Bitfield,
        extended: bool,
        upload_only: bool,
    ) -> Result<(), DropReason> {
        if extended {
            let body = ext_handshake(
                &self.cfg.client_name,
                self.peer_ip,
                self.cfg.reqq,
                meta.info_bytes.len() as u32,
                upload_only,
                self.cfg.listen_port,
            );
            self.out.extend_from_slice(&((body.len() + 2) as u32).to_be_bytes());
            self.out.extend_from_slice(&[20, 0]);
            self.out.extend_from_slice(&body);
        }
        if self.fast && have.is_complete() {
            self.out.extend_from_slice(&[0, 0, 0, 1, 14]);
        } else if self.fast && have.count() == 0 {
            self.out.extend_from_slice(&[0, 0, 0, 1, 15]);
        } else if have.count() > 0 {
            push(
                &mut self.out,
                &Message::Bitfield(ByteBuf(have.as_bytes())),
                5 + have.as_bytes().len(),
                self.peer_ext,
            )?;
        }
        if self.fast {
            if let IpAddr::V4(ip) = self.peer_ip {
                // never more than half of a small release
                let k = ALLOWED_FAST_SET.min(meta.piece_count() as usize / 2);
                self.allowed_for_peer = allowed_fast_set(ip, &meta.infohash, meta.piece_count(), k);
                for &i in &self.allowed_for_peer {
                    if have.get(i) {
                        push_index(&mut self.out, 17, i);
                    }
                }
            }
        }
        Ok(())
    }

    fn chatter(&mut self, now: Instant) -> Result<(), DropReason> {
        if !self.chatter.try_take(1.0, now) {
            return Err(DropReason::ChatterFlood);
        }
        Ok(())
    }

    fn message(&mut self, bytes: &[u8], now: Instant) -> Result<(), DropReason> {
        // Borrowed out and put back rather than cloned: no atomic operation on the release's
        // shared metadata per message.
        let Some(meta) = self.meta.take() else {
            return Err(DropReason::Internal("message before handshake".into()));
        };
        let res = self.attached_message(bytes, &meta, now);
        self.meta = Some(meta);
        res
    }

    fn attached_message(&mut self, bytes: &[u8], meta: &TorrentMeta, now: Instant) -> Result<(), DropReason> {
        if bytes.len() > 4 {
            match bytes[4] {
                // Known ids are parsed below; everything else (DHT port, fast extension we did
                // not advertise, future ids) is ignored as BEP 3 asks, within the chatter limit.
                7 => return self.block(&bytes[5..], meta, now),
                0..=8 => {}
                // BEP 6: suggest_piece, have_all, have_none, reject, allowed_fast (honoured even
                // from a peer that did not set the bit: harmless)
                14 | 15 if bytes.len() == 5 => {
                    if let Some(d) = self.download.as_mut() {
                        d.on_have_all(bytes[4] == 14);
                    }
                    return self.chatter(now);
                }
                13 | 17 if bytes.len() == 9 => {
                    let index = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
                    if let Some(d) = self.download.as_mut() {
                        if bytes[4] == 13 {
                            d.on_suggest(index);
                        } else {
                            d.on_allowed_fast(index);
                        }
                    }
                    return self.chatter(now);
                }
                16 if bytes.len() == 17 => {
                    let u32_at = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
                    if let Some(d) = self.download.as_mut() {
                        d.on_reject(u32_at(5), u32_at(9));
                    }
                    return self.chatter(now);
                }
                20 => return self.extended(&bytes[5..], meta, now),
                _ => return self.chatter(now),
            }
        }
        let msg = match fixed_message(bytes) {
            Some(m) => m,
            None => Message::deserialize(bytes, &[]).map_err(malformed)?.0,
        };
        match msg {
            Message::Request(r) => self.request(r.into(), meta),
            Message::Cancel(r) => {
                self.cancel(r.into());
                Ok(())
            }
            Message::Piece(_) => Err(DropReason::Internal("piece message past the block decoder".into())),
            Message::Bitfield(b) => {
                let expected = meta.lengths.piece_bitfield_bytes();
                if b.0.len() != expected {
                    return Err(DropReason::BadBitfield { got: b.0.len(), expected });
                }
                if let Some(d) = self.download.as_mut() {
                    d.on_bitfield(b.0);
                }
                self.chatter(now)
            }
            Message::Have(i) => {
                if i >= meta.piece_count() {
                    return Err(DropReason::BadIndex(i));
                }
                if let Some(d) = self.download.as_mut() {
                    d.on_have(i);
                }
                self.chatter(now)
            }
            Message::Choke => {
                if let Some(d) = self.download.as_mut() {
                    d.on_choke(now);
                }
                self.chatter(now)
            }
            Message::Unchoke => {
                if let Some(d) = self.download.as_mut() {
                    d.on_unchoke(now);
                }
                self.chatter(now)
            }
            Message::KeepAlive => self.chatter(now),
            Message::Interested => {
                if !self.peer_interested {
                    self.peer_interested = true;
                    self.events.push_back(Event::Interested);
                }
                self.chatter(now)
            }
            Message::NotInterested => {
                if self.peer_interested {
                    self.peer_interested = false;
                    self.events.push_back(Event::NotInterested);
                }
                self.chatter(now)
            }
            Message::Extended(_) => Err(DropReason::Internal("extension message past the extension decoder".into())),
        }
    }

    /// A piece message (`payload`: index, begin, block): a block we asked for goes into its
    /// piece; one we did not is counted ([`crate::download::MAX_UNREQUESTED_BLOCKS`]).
    fn block(&mut self, payload: &[u8], meta: &TorrentMeta, now: Instant) -> Result<(), DropReason> {
        if payload.len() < 8 {
            return Err(DropReason::Malformed("piece message shorter than its header".into()));
        }
        let index = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let begin = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        let size = meta.piece_size(index).ok_or(DropReason::BadIndex(index))?;
        let block = &payload[8..];
        if begin as u64 + block.len() as u64 > size as u64 {
            return Err(DropReason::PastEnd { index, begin, length: block.len() as u32 });
        }
        match self.download.as_mut() {
            Some(d) => d.on_block(index, begin, block, now),
            None => Err(DropReason::Unexpected("piece")),
        }
    }

    /// A BEP 10 extension message (`payload`: its extended id, then a bencoded dictionary).
    /// librqbit-bencode's typed decoding overflows on long numbers (an id of 259 reads as 3), so
    /// the dictionaries are read with the checked decoder of [`popseed_release::bencode`] and only
    /// the fields the box uses: the handshake's `m` ids and ut_metadata requests. Other
    /// extensions are chatter.
    fn extended(&mut self, payload: &[u8], meta: &TorrentMeta, now: Instant) -> Result<(), DropReason> {
        self.chatter(now)?;
        let Some((&id, body)) = payload.split_first() else {
            return Err(DropReason::Malformed("extension message without an extended id".into()));
        };
        match id {
            0 => {
                bencode::check_whole(body).map_err(bad_bencode)?;
                let (hs, _) = bencode::decode_prefix(body).map_err(bad_bencode)?;
                if let Some(m) = bencode::dict_get(&hs, b"m") {
                    apply_extension_ids(&mut self.peer_ext, m)?;
                }
                if let Some(p) = bencode::dict_get(&hs, b"p").and_then(bencode::as_int) {
                    self.peer_port = u16::try_from(p).ok().filter(|&p| p != 0);
                }
                let reqq = bencode::dict_get(&hs, b"reqq").and_then(bencode::as_int);
                if let (Some(q), Some(d)) = (reqq.and_then(|q| usize::try_from(q).ok()), self.download.as_mut()) {
                    d.set_peer_reqq(q);
                }
                Ok(())
            }
            OUR_UT_PEX => {
                bencode::check_whole(body).map_err(bad_bencode)?;
                let (msg, _) = bencode::decode_prefix(body).map_err(bad_bencode)?;
                let field = |key: &[u8]| bencode::dict_get(&msg, key).and_then(bencode::as_bytes).unwrap_or_default();
                let mut peers: Vec<std::net::SocketAddr> =
                    crate::addr::compact_v4(field(b"added")).take(PEX_MAX_PEERS).collect();
                peers.extend(crate::addr::compact_v6(field(b"added6")).take(PEX_MAX_PEERS));
                peers.retain(crate::addr::dialable);
                if !peers.is_empty() {
                    self.events.push_back(Event::Pex(peers));
                }
                Ok(())
            }
            OUR_UT_METADATA => {
                // A data message's piece follows its dictionary; as a seeder the box asks for none.
                let (msg, _) = bencode::decode_prefix(body).map_err(bad_bencode)?;
                let int = |key: &[u8]| bencode::dict_get(&msg, key).and_then(bencode::as_int);
                match int(b"msg_type") {
                    Some(0) => {
                        let piece = int(b"piece")
                            .and_then(|p| u32::try_from(p).ok())
                            .ok_or_else(|| DropReason::Malformed("ut_metadata request without a piece".into()))?;
                        self.metadata_request(piece, meta)
                    }
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    fn request(&mut self, r: BlockRequest, meta: &TorrentMeta) -> Result<(), DropReason> {
        let size = meta.piece_size(r.index).ok_or(DropReason::BadIndex(r.index))?;
        if r.length == 0 || r.length > MAX_BLOCK {
            return Err(DropReason::BadBlockLength(r.length));
        }
        if r.begin as u64 + r.length as u64 > size as u64 {
            return Err(DropReason::PastEnd { index: r.index, begin: r.begin, length: r.length });
        }
        let allowed_fast = self.fast && self.have.get(r.index) && self.allowed_for_peer.contains(&r.index);
        if self.choking && !allowed_fast {
            // Requests that crossed our choke are dropped (BEP 3) or rejected (BEP 6); a peer
            // that keeps sending them is flooding.
            self.requests_while_choked += 1;
            if self.requests_while_choked as usize > self.cfg.max_queue {
                return Err(DropReason::RequestFlood(self.requests_while_choked as usize));
            }
            if self.fast {
                push_request(&mut self.out, 16, r.index, r.begin, r.length);
            }
            return Ok(());
        }
        if !self.have.get(r.index) {
            self.missing_requests += 1;
            if self.missing_requests > self.cfg.max_missing_requests {
                return Err(DropReason::TooManyMissing(self.missing_requests));
            }
            if self.parked_len >= self.cfg.reqq as usize {
                return Err(DropReason::RequestFlood(self.parked_len));
            }
            let waiting = self.parked.entry(r.index).or_default();
            if waiting.is_empty() {
                self.events.push_back(Event::Demand { index: r.index });
            }
            waiting.push(r);
            self.parked_len += 1;
            return Ok(());
        }
        let queued = self.queue.len() + self.metadata_queue.len();
        if queued >= self.cfg.max_queue {
            return Err(DropReason::RequestFlood(queued + 1));
        }
        self.enqueue(r);
        Ok(())
    }

    fn enqueue(&mut self, r: BlockRequest) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.insert(seq, r);
        self.queued_at.insert((r, seq));
    }

    /// Removes every copy of a request from the queue, and from the parked ones: O(log n) per
    /// copy removed.
    /// (With BEP 6 each copy removed is answered with a reject: every request gets exactly one
    /// answer.)
    fn cancel(&mut self, r: BlockRequest) {
        let mut removed = 0;
        while let Some(&(q, seq)) = self.queued_at.range((r, 0)..=(r, u64::MAX)).next() {
            self.queued_at.remove(&(q, seq));
            self.queue.remove(&seq);
            removed += 1;
        }
        if let Some(waiting) = self.parked.get_mut(&r.index) {
            let before = waiting.len();
            waiting.retain(|q| *q != r);
            removed += before - waiting.len();
            self.parked_len -= before - waiting.len();
            if waiting.is_empty() {
                self.parked.remove(&r.index);
            }
        }
        if self.fast {
            for _ in 0..removed {
                push_request(&mut self.out, 16, r.index, r.begin, r.length);
            }
        }
    }

    /// Drops every queued and parked request (a choke), rejecting each with BEP 6. Requests
    /// for pieces the peer may fetch while choked stay queued.
    fn clear_requests(&mut self) {
        if !self.fast {
            self.queue.clear();
            self.queued_at.clear();
            self.parked.clear();
            self.parked_len = 0;
            return;
        }
        let allowed = std::mem::take(&mut self.allowed_for_peer);
        let queue = std::mem::take(&mut self.queue);
        self.queued_at.clear();
        for (_, r) in queue {
            if allowed.contains(&r.index) {
                self.enqueue(r);
            } else {
                push_request(&mut self.out, 16, r.index, r.begin, r.length);
            }
        }
        for (_, waiting) in std::mem::take(&mut self.parked) {
            for r in waiting {
                push_request(&mut self.out, 16, r.index, r.begin, r.length);
            }
        }
        self.parked_len = 0;
        self.allowed_for_peer = allowed;
    }

    /// Queues a ut_metadata request; counted against the per-connection budget
    /// ([`METADATA_REQUESTS_PER_PIECE`]) and, with the queued block requests, against
    /// [`ProtoConfig::max_queue`]. The reply is serialized later, when the shell has room.
    fn metadata_request(&mut self, piece: u32, meta: &TorrentMeta) -> Result<(), DropReason> {
        self.metadata_requests = self.metadata_requests.saturating_add(1);
        let pieces = meta.info_bytes.len().div_ceil(METADATA_PIECE).max(1) as u32;
        if self.metadata_requests > pieces.saturating_mul(METADATA_REQUESTS_PER_PIECE) {
            return Err(DropReason::MetadataFlood(self.metadata_requests));
        }
        if self.peer_ext.ut_metadata.is_none() {
            return Ok(()); // the peer gave us no id to answer with
        }
        let queued = self.queue.len() + self.metadata_queue.len();
        if queued >= self.cfg.max_queue {
            return Err(DropReason::RequestFlood(queued + 1));
        }
        self.metadata_queue.push_back(piece);
        Ok(())
    }

    /// Appends the reply to the oldest queued ut_metadata request to `dst` (after the control
    /// output, so the stream stays in order; encrypted with RC4), if one is queued. Call it only
    /// while [`PeerProto::wants_output`] says there is room.
    pub fn next_metadata(&mut self, dst: &mut Vec<u8>) -> Result<bool, DropReason> {
        let Some(piece) = self.metadata_queue.pop_front() else { return Ok(false) };
        let Some(meta) = self.meta.clone() else { return Ok(false) };
        if self.has_output() {
            self.take_output(dst);
        }
        if self.peer_ext.ut_metadata.is_none() {
            return Ok(true); // a later extension handshake withdrew the peer's id
        }
        let info = &meta.info_bytes;
        let start = piece as usize * METADATA_PIECE;
        let reply = if start < info.len() {
            let end = (start + METADATA_PIECE).min(info.len());
            UtMetadata::Data(UtMetadataData::from_bytes(piece, info.len() as u32, ByteBuf(&info[start..end])))
        } else {
            UtMetadata::Reject(piece)
        };
        let at = dst.len();
        let res =
            push(dst, &Message::Extended(ExtendedMessage::UtMetadata(reply)), METADATA_PIECE + 128, self.peer_ext);
        if let Err(r) = res {
            return self.fail(r).map(|()| false);
        }
        self.seal(&mut dst[at..]);
        Ok(true)
    }

    /// Whether the shell should read more from the peer while `unsent` bytes wait to be
    /// written to it (back-pressure, [`MAX_SEND_BACKLOG`]).
    pub fn wants_input(&self, unsent: usize) -> bool {
        unsent < MAX_SEND_BACKLOG
    }

    /// Whether the shell should append more blocks or metadata replies while `unsent` bytes
    /// wait to be written ([`SEND_HIGH_WATER`]).
    pub fn wants_output(&self, unsent: usize) -> bool {
        unsent < SEND_HIGH_WATER
    }

    /// Next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Moves the control bytes waiting to be sent (handshake, have, choke, metadata, ...) to `dst`.
    pub fn take_output(&mut self, dst: &mut Vec<u8>) {
        if let Some(c) = self.rc4.as_mut() {
            c.enc.apply_keystream(&mut self.out[self.out_sealed..]);
        }
        self.out_sealed = 0;
        if dst.is_empty() {
            std::mem::swap(dst, &mut self.out);
        } else {
            dst.extend_from_slice(&self.out);
            self.out.clear();
        }
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Encrypts bytes the shell appends to the stream itself (piece headers and blocks), in
    /// stream order, right after the output taken before them. A no-op unless RC4 is on.
    pub fn seal(&mut self, bytes: &mut [u8]) {
        if let Some(c) = self.rc4.as_mut() {
            c.enc.apply_keystream(bytes);
        }
    }

    /// The next block to serve. While we choke the peer the queue holds only requests for
    /// its allowed-fast pieces (BEP 6): the choke dropped or rejected the others.
    pub fn peek_block(&self) -> Option<BlockRequest> {
        self.queue.first_key_value().map(|(_, r)| *r)
    }

    /// Pops the next block and writes its piece-message header (13 bytes) to `preamble`. The
    /// caller appends `length` bytes read from the store right after it.
    pub fn next_block(&mut self, preamble: &mut [u8; PIECE_PREAMBLE_LEN]) -> Option<BlockRequest> {
        let meta = self.meta.clone()?;
        let (seq, r) = self.queue.pop_first()?;
        self.queued_at.remove(&(r, seq));
        let piece_index = meta.lengths.validate_piece_index(r.index)?;
        let chunk = ChunkInfo {
            piece_index,
            chunk_index: r.begin / librqbit_core::constants::CHUNK_SIZE,
            absolute_index: 0,
            size: r.length,
            offset: r.begin,
        };
        let _ = serialize_piece_preamble(&chunk, preamble);
        self.uploaded += r.length as u64;
        Some(r)
    }

    /// The choker's decision. Choking drops the peer's queued requests (BEP 3).
    pub fn set_choking(&mut self, choke: bool) {
        if self.meta.is_none() || choke == self.choking {
            return;
        }
        self.choking = choke;
        if choke {
            // the choke first: BEP 6 rejects follow it
            self.out.extend_from_slice(&[0, 0, 0, 1, 0]);
            self.clear_requests();
        } else {
            self.requests_while_choked = 0;
            self.out.extend_from_slice(&[0, 0, 0, 1, 1]);
        }
    }

    /// No fetcher can get a piece the peer asked for: with BEP 6 each of its requests for it
    /// is rejected; without, choke and unchoke again, which cancels all its outstanding
    /// requests, so it asks again for pieces we advertise.
    pub fn refuse_missing(&mut self, index: u32) {
        if let Some(waiting) = self.parked.remove(&index) {
            self.parked_len -= waiting.len();
            if self.fast {
                for r in waiting {
                    push_request(&mut self.out, 16, r.index, r.begin, r.length);
                }
                return;
            }
        }
        if !self.choking && !self.fast {
            self.clear_requests();
            self.out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 1, 1]);
        }
    }

    /// A piece became present: advertise it and serve requests waiting for it.
    pub fn piece_stored(&mut self, index: u32) {
        let Some(meta) = &self.meta else { return };
        if index >= meta.piece_count() || self.have.get(index) {
            return;
        }
        self.have.set(index);
        push_index(&mut self.out, 4, index);
        // BEP 6: a peer downloading from us that lacks the piece just written (still in the
        // page cache) is told to take it now
        let lacks = self.download.as_ref().is_some_and(|d| !d.peer_has().get(index));
        if self.fast && self.peer_interested && !self.choking && lacks {
            push_index(&mut self.out, 13, index);
        }
        if let Some(d) = self.download.as_mut() {
            for (i, begin, length) in d.piece_present(index) {
                push_request(&mut self.out, 8, i, begin, length);
            }
        }
        if let Some(ready) = self.parked.remove(&index) {
            self.parked_len -= ready.len();
            if !self.choking {
                for r in ready {
                    self.enqueue(r);
                }
            }
        }
    }

    /// The shell wrote bytes to the socket.
    pub fn note_sent(&mut self, now: Instant) {
        self.last_send = now;
    }

    /// When [`PeerProto::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        let idle = self.last_recv + self.cfg.idle_timeout;
        if self.meta.is_none() {
            return idle.min(self.created + self.cfg.handshake_timeout);
        }
        let t = idle.min(self.last_send + self.cfg.keepalive);
        match self.download.as_ref().and_then(Download::poll_timeout) {
            Some(d) => t.min(d),
            None => t,
        }
    }

    /// Timers: handshake deadline, idle timeout, keep-alives.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DropReason> {
        if let Some(r) = &self.dead {
            return Err(r.clone());
        }
        if self.meta.is_none() && now >= self.created + self.cfg.handshake_timeout {
            return self.fail(DropReason::HandshakeTimeout);
        }
        if now >= self.last_recv + self.cfg.idle_timeout {
            return self.fail(DropReason::Idle);
        }
        if self.meta.is_some() && now >= self.last_send + self.cfg.keepalive {
            self.out.extend_from_slice(&[0, 0, 0, 0]);
            self.last_send = now;
        }
        if let Some(d) = self.download.as_mut() {
            for (index, begin, length) in d.handle_timeout(now) {
                push_request(&mut self.out, 8, index, begin, length);
            }
        }
        self.after_download_change(now);
        Ok(())
    }
}

/// Our BEP 10 handshake dictionary (keys in sorted order), written by hand so it says exactly
/// what the box does: `m` (ut_metadata, ut_pex), `metadata_size`, `p` (when known), `reqq`,
/// `upload_only`, `v`, `yourip`.
fn ext_handshake(
    client: &str,
    peer_ip: IpAddr,
    reqq: u32,
    metadata_size: u32,
    upload_only: bool,
    listen_port: u16,
) -> Vec<u8> {
    fn bstr(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(s.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(s);
    }
    let mut d = Vec::with_capacity(160 + client.len());
    d.extend_from_slice(b"d1:md11:ut_metadatai");
    d.extend_from_slice(OUR_UT_METADATA.to_string().as_bytes());
    d.extend_from_slice(b"e6:ut_pexi");
    d.extend_from_slice(OUR_UT_PEX.to_string().as_bytes());
    d.extend_from_slice(b"ee13:metadata_sizei");
    d.extend_from_slice(metadata_size.to_string().as_bytes());
    if listen_port != 0 {
        d.extend_from_slice(b"e1:pi");
        d.extend_from_slice(listen_port.to_string().as_bytes());
    }
    d.extend_from_slice(b"e4:reqqi");
    d.extend_from_slice(reqq.to_string().as_bytes());
    d.extend_from_slice(if upload_only { b"e11:upload_onlyi1e1:v" } else { b"e11:upload_onlyi0e1:v" });
    bstr(&mut d, client.as_bytes());
    d.extend_from_slice(b"6:yourip");
    match peer_ip {
        IpAddr::V4(v4) => bstr(&mut d, &v4.octets()),
        IpAddr::V6(v6) => bstr(&mut d, &v6.octets()),
    }
    d.push(b'e');
    d
}

/// Decodes the fixed-layout messages that make up nearly all of a peer's traffic (keep-alive,
/// choke/unchoke/interest, have, request, cancel) without librqbit's general decoder; anything
/// else, or a length that does not fit, is left to it. `bytes` is one whole message with its
/// length prefix.
fn fixed_message(bytes: &[u8]) -> Option<Message<'static>> {
    let u32_at = |i: usize| -> Option<u32> { Some(u32::from_be_bytes(bytes.get(i..i + 4)?.try_into().ok()?)) };
    let request = || Some(Request::new(u32_at(5)?, u32_at(9)?, u32_at(13)?));
    match (bytes.len(), bytes.get(4)) {
        (4, None) => Some(Message::KeepAlive),
        (5, Some(0)) => Some(Message::Choke),
        (5, Some(1)) => Some(Message::Unchoke),
        (5, Some(2)) => Some(Message::Interested),
        (5, Some(3)) => Some(Message::NotInterested),
        (9, Some(4)) => Some(Message::Have(u32_at(5)?)),
        (17, Some(6)) => Some(Message::Request(request()?)),
        (17, Some(8)) => Some(Message::Cancel(request()?)),
        _ => None,
    }
}

/// A request (id 6) or cancel (id 8) message.
/// A message of one piece index: have (4), BEP 6 suggest_piece (13), allowed_fast (17).
fn push_index(out: &mut Vec<u8>, id: u8, index: u32) {
    out.extend_from_slice(&[0, 0, 0, 5, id]);
    out.extend_from_slice(&index.to_be_bytes());
}

/// BEP 6's canonical allowed-fast set: `k` distinct piece indices from the peer's /24 and the
/// infohash (so reconnecting from a neighbouring address gets the same set). Empty when the
/// release has fewer pieces than `k`.
pub fn allowed_fast_set(ip: std::net::Ipv4Addr, ih: &InfoHash, pieces: u32, k: usize) -> Vec<u32> {
    use sha1::{Digest, Sha1};
    let mut out = Vec::with_capacity(k);
    if pieces as usize <= k {
        return out;
    }
    let mut x = [0u8; 24];
    x[..4].copy_from_slice(&(u32::from(ip) & 0xffff_ff00).to_be_bytes());
    x[4..].copy_from_slice(ih.as_bytes());
    let mut x: Vec<u8> = x.to_vec();
    while out.len() < k {
        let h = Sha1::digest(&x);
        for chunk in h.chunks_exact(4) {
            if out.len() >= k {
                break;
            }
            let index = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) % pieces;
            if !out.contains(&index) {
                out.push(index);
            }
        }
        x = h.to_vec();
    }
    out
}

fn push_request(out: &mut Vec<u8>, id: u8, index: u32, begin: u32, length: u32) {
    out.extend_from_slice(&[0, 0, 0, 13, id]);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&begin.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
}

/// A token bucket allowing `n` per second, holding one second's worth (0: unlimited).
fn per_second(n: u32, now: Instant) -> TokenBucket {
    TokenBucket::new(n as f64, n as f64, now)
}

fn push(out: &mut Vec<u8>, msg: &Message<'_>, room: usize, ext: PeerExtendedMessageIds) -> Result<(), DropReason> {
    let start = out.len();
    out.resize(start + room, 0);
    match msg.serialize(&mut out[start..], &|| ext) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(DropReason::Internal(format!("serialize: {e}")))
        }
    }
}

#[cfg(test)]
mod tests;
