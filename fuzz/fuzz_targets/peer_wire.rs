//! The BitTorrent peer wire as any client on the Wi-Fi speaks it to the box's seeder:
//! `popseed_swarm::proto::PeerProto::receive` (handshake, MSE/PE, BEP 3 messages, BEP 10
//! extended messages and ut_metadata requests) against a fake `Catalog` of one release, with
//! the shell's side played too (choke/unchoke, pieces stored, refusals, serving blocks,
//! sealing them, timers).
//!
//! Input: byte 0 flags (bit 0-1 prelude: raw / plaintext handshake / MSE+plaintext /
//! MSE+RC4; bit 2 extension bit in the handshake; bits 3-7 which pieces the box holds),
//! bytes 1..3 how the stream is cut into reads (byte 1 bit 0 also: the box is filling the
//! release and downloads from the peer, the harness handing it pieces as the fill would; bit 1
//! with a plaintext prelude: the box dialed the peer), bytes 3..7 shell actions taken after
//! each read, the rest the peer's stream (encrypted by the harness when RC4 runs).
//!
//! Asserts: no panic; once dropped, a peer stays dropped with the same reason; queues stay
//! within their caps; every block served is inside a piece the peer was told we have, at most
//! MAX_BLOCK long, and `uploaded` counts them; when the harness controls the opening, every
//! byte the box sends (decrypted when RC4 runs) is our handshake followed by well-formed
//! messages: choke/unchoke, have/bitfield for real pieces, extended messages whose dictionary
//! is valid bencode, piece messages matching the blocks served, interest, and requests and
//! cancels only for blocks of pieces the fill handed over; a downloaded piece is one of those,
//! whole.
#![no_main]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use popseed_core::InfoHash;
use popseed_fuzz::{
    bencode_prefix, bencode_value, bt_handshake, chunks, Initiator, Step3, CRYPTO_PLAINTEXT, CRYPTO_RC4, MSE_KEY_LEN,
};
use popseed_store::Bitfield;
use popseed_swarm::mse::req2_hash;
use popseed_swarm::proto::{
    Catalog, DropReason, Event, PeerProto, ProtoConfig, TorrentMeta, HANDSHAKE_LEN, MAX_BLOCK, PEX_MAX_PEERS,
    PIECE_PREAMBLE_LEN,
};
use rc4::cipher::StreamCipher;

const IH: InfoHash = InfoHash([7; 20]);
const PIECE: u32 = 32 * 1024;
const PIECES: u32 = 10;
const TOTAL: u64 = PIECE as u64 * 9 + 1000;
const OUR_ID: [u8; 20] = *b"-PS0100-000000000000";

struct Fake {
    meta: Arc<TorrentMeta>,
    have: Bitfield,
}

impl Catalog for Fake {
    fn lookup(&self, ih: &InfoHash) -> Option<(Arc<TorrentMeta>, Bitfield)> {
        (*ih == IH).then(|| (self.meta.clone(), self.have.clone()))
    }
    fn by_req2(&self, req2: &[u8; 20]) -> Option<InfoHash> {
        (*req2 == req2_hash(IH.as_bytes())).then_some(IH)
    }
}

fn piece_size(i: u32) -> u32 {
    if i == PIECES - 1 {
        (TOTAL - PIECE as u64 * (PIECES as u64 - 1)) as u32
    } else {
        PIECE
    }
}

/// Checks the box's output stream as the peer decrypts it.
struct OutCheck {
    buf: Vec<u8>,
    handshake_seen: bool,
    /// Our extension handshake went out (a later id-0 message would be finding 2).
    ext_handshake_sent: bool,
    /// Piece messages expected next, in order (index, begin, length), from blocks served.
    blocks: std::collections::VecDeque<(u32, u32, u32)>,
    /// Pieces the harness (as the fill) handed to the connection.
    handed: std::collections::BTreeSet<u32>,
}

impl OutCheck {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if !self.handshake_seen {
            if self.buf.len() < HANDSHAKE_LEN {
                return;
            }
            let h: Vec<u8> = self.buf.drain(..HANDSHAKE_LEN).collect();
            assert_eq!(&h[..20], b"\x13BitTorrent protocol");
            assert_eq!(&h[28..48], IH.as_bytes());
            assert_eq!(&h[48..68], &OUR_ID);
            self.handshake_seen = true;
        }
        loop {
            if self.buf.len() < 4 {
                return;
            }
            let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
            assert!(len <= MAX_BLOCK as usize + 9 + 64, "message of {len} bytes");
            if self.buf.len() < 4 + len {
                return;
            }
            let m: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
            if m.is_empty() {
                continue; // keep-alive
            }
            let (id, p) = (m[0], &m[1..]);
            match id {
                0..=3 => assert!(p.is_empty(), "choke/unchoke/interest carry nothing"),
                6 | 8 => {
                    assert_eq!(p.len(), 12, "request/cancel");
                    let at = |k: usize| u32::from_be_bytes([p[k], p[k + 1], p[k + 2], p[k + 3]]);
                    let (i, b, l) = (at(0), at(4), at(8));
                    assert!(self.handed.contains(&i), "request for piece {i} the fill did not hand over");
                    assert!(
                        l >= 1 && l <= 16 * 1024 && b as u64 + l as u64 <= piece_size(i) as u64,
                        "block in the piece"
                    );
                }
                4 => {
                    assert_eq!(p.len(), 4);
                    assert!(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) < PIECES, "have for a real piece");
                }
                5 => {
                    assert_eq!(p.len(), PIECES.div_ceil(8) as usize, "bitfield size");
                    let spare = PIECES.div_ceil(8) * 8 - PIECES;
                    assert_eq!(p[p.len() - 1] & ((1u8 << spare) - 1), 0, "spare bits clear");
                }
                7 => {
                    let (i, b) =
                        (u32::from_be_bytes([p[0], p[1], p[2], p[3]]), u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
                    let want = self.blocks.pop_front().expect("a piece message for a block we served");
                    assert_eq!((i, b, (p.len() - 8) as u32), want, "piece message matches the block served");
                }
                20 => {
                    assert!(!p.is_empty());
                    let d = &p[1..];
                    if p[0] == 0 && !self.ext_handshake_sent {
                        self.ext_handshake_sent = true;
                        bencode_value(d).expect("our extended handshake is bencode");
                    } else {
                        // Finding 2 (README.md, fixed): nothing after our handshake goes out
                        // under extended id 0 (a peer's ut_metadata id of 0 disables it).
                        assert!(p[0] != 0, "a message under extended id 0 after our handshake");
                        // ut_metadata: a dictionary, then (for data) the piece bytes
                        let end = dict_end(d);
                        assert!(end <= d.len());
                        assert!(d.len() - end <= 16 * 1024, "metadata piece too large");
                    }
                }
                other => panic!("we sent message id {other}"),
            }
        }
    }
}

/// Length of the bencoded dictionary at the start of `d`.
fn dict_end(d: &[u8]) -> usize {
    assert_eq!(d.first(), Some(&b'd'), "extension message is not a dictionary");
    bencode_prefix(d).unwrap_or_else(|e| panic!("bad dictionary ({e}) in {:?}", String::from_utf8_lossy(d)))
}

/// The info dictionary the fake release serves over ut_metadata (40 000 bytes: 3 pieces).
fn info() -> &'static Arc<[u8]> {
    static I: std::sync::OnceLock<Arc<[u8]>> = std::sync::OnceLock::new();
    I.get_or_init(|| (0..40_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let (head, stream) = data.split_at(7);
    let flags = head[0];
    let cuts = &head[1..3];
    let actions = &head[3..7];

    let meta = Arc::new(TorrentMeta::new(IH, TOTAL, PIECE, info().clone()).expect("a release"));
    let mut have = Bitfield::new(PIECES);
    for p in 0..5 {
        if flags & (0x08 << p) != 0 {
            have.set(p * 2);
            have.set(p * 2 + 1);
        }
    }
    let cat = Fake { meta, have };
    let cfg = Arc::new(ProtoConfig {
        reqq: 8,
        max_queue: 16,
        max_missing_requests: 4,
        max_chatter_per_sec: 50,
        ..Default::default()
    });
    let t0 = Instant::now();
    let mut now = t0;
    let peer_ip: IpAddr = "10.1.2.3".parse().expect("an address");
    let mut p = PeerProto::new(cfg.clone(), peer_ip, OUR_ID, now);

    // The opening the harness plays (None: raw, the fuzzer's bytes are the whole stream).
    let ext = flags & 4 != 0;
    let prelude = flags & 3;
    let mut check = OutCheck {
        buf: Vec::new(),
        handshake_seen: false,
        ext_handshake_sent: false,
        blocks: Default::default(),
        handed: Default::default(),
    };
    let wanted = cuts[0] & 1 != 0;
    let dial = prelude == 1 && cuts[0] & 2 != 0;
    if dial {
        p = PeerProto::connect(cfg.clone(), peer_ip, OUR_ID, cat.meta.clone(), cat.have.clone(), now);
        let mut out = Vec::new();
        p.take_output(&mut out);
        check.push(&out);
    }
    p.set_wanted(wanted, now);
    let mut rc4: Option<Step3> = None;
    let mut dead: Option<DropReason> = None;
    match prelude {
        0 => {}
        1 => {
            if let Err(r) = p.receive(&bt_handshake(&IH, ext), now, &cat) {
                panic!("our handshake was refused: {r}");
            }
        }
        _ => {
            let a = Initiator::new([head[1]; 20], IH.0);
            p.receive(&a.hello(&[0xAA; 7]), now, &cat).expect("a valid MSE opening");
            let mut out = Vec::new();
            p.take_output(&mut out);
            let mut yb = [0u8; MSE_KEY_LEN];
            yb.copy_from_slice(&out[..MSE_KEY_LEN]);
            let provide = if prelude == 2 { CRYPTO_PLAINTEXT | CRYPTO_RC4 } else { CRYPTO_RC4 };
            let mut s3 = a.step3(&yb, [0; 8], provide, &[1, 2, 3], &bt_handshake(&IH, ext));
            p.receive(&s3.bytes, now, &cat).expect("a valid MSE handshake");
            let mut out = Vec::new();
            p.take_output(&mut out);
            s3.dec.apply_keystream(&mut out[..14]);
            assert_eq!(&out[..8], &[0; 8], "VC");
            let mut rest = out[14..].to_vec();
            if prelude == 3 {
                assert!(p.encryption().1, "RC4 when the peer insists");
                s3.dec.apply_keystream(&mut rest);
                rc4 = Some(s3);
            } else {
                assert!(!p.encryption().1, "plaintext when offered");
            }
            check.push(&rest);
        }
    }
    if prelude != 0 {
        assert!(p.is_attached());
    }
    let checked = prelude != 0;

    let mut served = 0u64;
    let mut sent: Vec<u8> = Vec::new();
    for (step, chunk) in chunks(stream, cuts).into_iter().enumerate() {
        now += Duration::from_millis(150);
        let mut bytes = chunk.to_vec();
        if let Some(s) = rc4.as_mut() {
            s.enc.apply_keystream(&mut bytes);
        }
        let r = p.receive(&bytes, now, &cat);
        if let Some(d) = &dead {
            assert_eq!(r.as_ref().err(), Some(d), "a dropped peer stays dropped");
        }
        if let Err(e) = r {
            assert_eq!(p.receive(b"\0\0\0\0", now, &cat).err(), Some(e.clone()), "a dropped peer stays dropped");
            dead = Some(e);
        }
        assert!(p.queued() <= cfg.max_queue, "queue over its cap");
        assert!(p.parked() <= cfg.reqq as usize, "parked requests over reqq");

        // the shell's side
        let a = actions[step % actions.len()];
        let idx = (a >> 4) as u32 % PIECES;
        match a & 3 {
            1 => p.set_choking(false),
            2 => p.set_choking(true),
            3 => p.refuse_missing(idx),
            _ => {}
        }
        if a & 4 != 0 {
            p.piece_stored(idx);
        }
        while let Some(ev) = p.poll_event() {
            match ev {
                Event::Attached { infohash, .. } => assert_eq!(infohash, IH),
                Event::Demand { index } => assert!(index < PIECES),
                Event::Interested | Event::NotInterested => {}
                Event::Pex(peers) => {
                    assert!(!peers.is_empty() && peers.len() <= 2 * PEX_MAX_PEERS, "{} PEX peers", peers.len());
                    assert!(peers.iter().all(|a| a.port() != 0 && !a.ip().is_unspecified()));
                }
                Event::Downloaded { index, data } => {
                    assert!(check.handed.contains(&index), "downloaded piece {index} the fill did not hand over");
                    assert_eq!(data.len(), piece_size(index) as usize, "a downloaded piece is whole");
                }
            }
        }
        // the fill's side: hand over pieces the peer has and the box lacks
        let n = p.pieces_wanted();
        if n > 0 {
            assert!(wanted, "asked for work while not filling");
            let give: Vec<u32> = match p.download() {
                Some(d) => (0..PIECES)
                    .filter(|&i| d.peer_has().get(i) && !p.advertised().get(i) && !check.handed.contains(&i))
                    .take(n)
                    .collect(),
                None => Vec::new(),
            };
            check.handed.extend(give.iter().copied());
            p.add_pieces(&give, now);
        }
        let _ = p.take_released();
        if a & 8 != 0 {
            now += Duration::from_secs(61); // keep-alive due (and sometimes idle)
        }
        let _ = p.handle_timeout(now);
        assert!(p.poll_timeout() > t0);

        // control bytes first, then the blocks the shell appends, in stream order
        sent.clear();
        p.take_output(&mut sent);
        let mut wire = std::mem::take(&mut sent);
        let mut pre = [0u8; PIECE_PREAMBLE_LEN];
        for _ in 0..4 {
            let Some(b) = p.next_block(&mut pre) else { break };
            assert!(b.index < PIECES, "block of a real piece");
            assert!(p.advertised().get(b.index), "served a piece the peer was not told we have");
            assert!(b.length >= 1 && b.length <= MAX_BLOCK);
            assert!(b.begin as u64 + b.length as u64 <= piece_size(b.index) as u64, "block past the piece end");
            served += b.length as u64;
            let mut blk = pre.to_vec();
            blk.resize(PIECE_PREAMBLE_LEN + b.length as usize, 0xB5);
            p.seal(&mut blk);
            wire.extend_from_slice(&blk);
            check.blocks.push_back((b.index, b.begin, b.length));
        }
        assert_eq!(p.uploaded(), served);
        if checked {
            if let Some(s) = rc4.as_mut() {
                s.dec.apply_keystream(&mut wire);
            }
            check.push(&wire);
        }
    }
});
