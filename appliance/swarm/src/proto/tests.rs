//! Unit tests of the protocol core: bytes in, bytes/events/drop reasons out.

use super::*;

const IH: InfoHash = InfoHash([7; 20]);
const PIECE: u32 = 32 * 1024;
const PIECES: u32 = 10;
const TOTAL: u64 = PIECE as u64 * 9 + 1000; // last piece is 1000 bytes

struct Fake {
    meta: Arc<TorrentMeta>,
    have: Bitfield,
    wanted: bool,
}

impl Catalog for Fake {
    fn lookup(&self, ih: &InfoHash) -> Option<(Arc<TorrentMeta>, Bitfield)> {
        (*ih == IH).then(|| (self.meta.clone(), self.have.clone()))
    }
    fn by_req2(&self, req2: &[u8; 20]) -> Option<InfoHash> {
        (*req2 == crate::mse::req2_hash(IH.as_bytes())).then_some(IH)
    }
    fn wanted(&self, _: &InfoHash) -> bool {
        self.wanted
    }
}

fn fake(present: &[u32]) -> Fake {
    let info: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let meta = Arc::new(TorrentMeta::new(IH, TOTAL, PIECE, Arc::from(info.as_slice())).unwrap());
    let mut have = Bitfield::new(PIECES);
    for &p in present {
        have.set(p);
    }
    Fake { meta, have, wanted: false }
}

fn handshake(ih: InfoHash, ext: bool) -> Vec<u8> {
    let mut h = vec![19];
    h.extend_from_slice(b"BitTorrent protocol");
    let mut reserved = [0u8; 8];
    if ext {
        reserved[5] = 0x10;
    }
    h.extend_from_slice(&reserved);
    h.extend_from_slice(ih.as_bytes());
    h.extend_from_slice(b"-XX0000-abcdefghijkl");
    h
}

fn msg(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    m.push(id);
    m.extend_from_slice(payload);
    m
}

fn request(index: u32, begin: u32, length: u32) -> Vec<u8> {
    let mut p = index.to_be_bytes().to_vec();
    p.extend_from_slice(&begin.to_be_bytes());
    p.extend_from_slice(&length.to_be_bytes());
    msg(6, &p)
}

fn cfg() -> Arc<ProtoConfig> {
    Arc::new(ProtoConfig {
        reqq: 8,
        max_queue: 16,
        max_missing_requests: 4,
        max_chatter_per_sec: 50,
        ..Default::default()
    })
}

fn peer() -> (PeerProto, Instant) {
    let now = Instant::now();
    (PeerProto::new(cfg(), "10.1.2.3".parse().unwrap(), *b"-PS0100-000000000000", now), now)
}

/// Splits the output into messages (after the 68-byte handshake if `skip_handshake`).
fn messages(mut out: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while out.len() >= 4 {
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        v.push(out[4..4 + len].to_vec());
        out = &out[4 + len..];
    }
    assert!(out.is_empty(), "trailing bytes in output");
    v
}

fn attached(present: &[u32], ext: bool) -> (PeerProto, Fake, Instant, Vec<Vec<u8>>) {
    let (mut p, now) = peer();
    let cat = fake(present);
    p.receive(&handshake(IH, ext), now, &cat).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(&out[..20], b"\x13BitTorrent protocol");
    assert_eq!(&out[28..48], IH.as_bytes());
    let msgs = messages(&out[68..]);
    assert_eq!(p.poll_event(), Some(Event::Attached { infohash: IH, peer_id: *b"-XX0000-abcdefghijkl" }));
    (p, cat, now, msgs)
}

fn unchoked(present: &[u32]) -> (PeerProto, Fake, Instant) {
    let (mut p, cat, now, _) = attached(present, true);
    p.receive(&msg(2, &[]), now, &cat).unwrap();
    assert_eq!(p.poll_event(), Some(Event::Interested));
    p.set_choking(false);
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(out, [0, 0, 0, 1, 1], "unchoke");
    (p, cat, now)
}

#[test]
fn handshake_sends_ext_handshake_and_bitfield() {
    let (p, cat, _, msgs) = attached(&[0, 3, 9], true);
    assert_eq!(msgs.len(), 2, "extended handshake then bitfield");
    assert_eq!(msgs[0][0], 20);
    assert_eq!(msgs[0][1], 0);
    let ext = String::from_utf8_lossy(&msgs[0][2..]).into_owned();
    for key in [
        "11:ut_metadatai3e",
        "4:reqqi8e",
        "13:metadata_sizei40000e",
        "11:upload_onlyi1e",
        "6:yourip4:\n\x01\x02\x03",
        "1:v",
    ] {
        assert!(ext.contains(key), "{key} missing in {ext}");
    }
    assert!(ext.contains("6:ut_pexi1e"), "{ext}");
    assert!(!ext.contains("1:pi"), "no listen port configured, none told: {ext}");
    // librqbit's parser reads it back.
    let wire = [&(msgs[0].len() as u32).to_be_bytes()[..], &msgs[0]].concat();
    let parsed = librqbit_peer_protocol::Message::deserialize(&wire, &[]).unwrap().0;
    match parsed {
        librqbit_peer_protocol::Message::Extended(ExtendedMessage::Handshake(h)) => {
            assert_eq!(h.m.ut_metadata, Some(OUR_UT_METADATA));
            assert_eq!(h.reqq, Some(8));
            assert_eq!(h.metadata_size, Some(40000));
            assert_eq!(h.upload_only, Some(1), "a partial release the box does not fill");
        }
        other => panic!("not an extended handshake: {other:?}"),
    }
    assert_eq!(msgs[1], vec![5, 0b1001_0000, 0b0100_0000]);
    assert_eq!(p.advertised().count(), 3);
    assert_eq!(p.infohash(), Some(IH));
    let _ = cat;
}

#[test]
fn no_ext_handshake_for_plain_peers_and_no_bitfield_when_empty() {
    let (_, _, _, msgs) = attached(&[], false);
    assert!(msgs.is_empty(), "{msgs:?}");
}

#[test]
fn unknown_infohash_is_dropped() {
    let (mut p, now) = peer();
    let err = p.receive(&handshake(InfoHash([9; 20]), true), now, &fake(&[])).unwrap_err();
    assert_eq!(err, DropReason::UnknownInfohash(InfoHash([9; 20])));
    assert_eq!(err.kind(), "unknown_infohash");
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert!(out.is_empty(), "nothing is sent to an unknown infohash");
}

#[test]
fn garbage_is_dropped_at_the_first_byte_when_mse_is_off() {
    let no_mse = Arc::new(ProtoConfig { mse: false, ..(*cfg()).clone() });
    let now = Instant::now();
    let peer_no_mse = || PeerProto::new(no_mse.clone(), "10.1.2.3".parse().unwrap(), *b"-PS0100-000000000000", now);
    // An MSE handshake opens with a 96-byte Diffie-Hellman key: random bytes.
    assert_eq!(peer_no_mse().receive(&[0x8c, 0x21, 0x04], now, &fake(&[])), Err(DropReason::NotBitTorrent));
    assert_eq!(peer_no_mse().receive(b"\x13BitTorrent protocoX", now, &fake(&[])), Err(DropReason::NotBitTorrent));
    assert_eq!(peer_no_mse().receive(b"GET / HTTP/1.1\r\n", now, &fake(&[])), Err(DropReason::NotBitTorrent));
    // With MSE on, a non-plaintext opening is an MSE key: answered with ours, dropped when no
    // sync follows within PadA.
    let (mut p, now) = peer();
    p.receive(&[0x8c; 96], now, &fake(&[])).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert!(out.len() >= crate::mse::KEY_LEN, "our public key");
    let err = p.receive(&[0x55; 600], now, &fake(&[])).unwrap_err();
    assert_eq!(err.kind(), "mse_failed");
    // A handshake split byte by byte is fine.
    let (mut p, now) = peer();
    let cat = fake(&[1]);
    for b in handshake(IH, true) {
        p.receive(&[b], now, &cat).unwrap();
    }
    assert!(p.is_attached());
}

#[test]
fn huge_length_prefix_is_dropped_before_buffering() {
    let (mut p, cat, now, _) = attached(&[0], true);
    let err = p.receive(&[0xff, 0xff, 0xff, 0xff], now, &cat).unwrap_err();
    assert_eq!(err, DropReason::MessageTooLong(u32::MAX));
    // Once dead, it stays dead.
    assert!(p.receive(&[0, 0, 0, 0], now, &cat).is_err());
    let (mut p, cat, now, _) = attached(&[0], true);
    let just_over = p.max_message_len() + 1;
    assert_eq!(p.receive(&just_over.to_be_bytes(), now, &cat), Err(DropReason::MessageTooLong(just_over)));
}

#[test]
fn requests_are_served_in_order_with_piece_preamble() {
    let (mut p, cat, now) = unchoked(&[0, 9]);
    let mut bytes = request(0, 0, 16384);
    bytes.extend(request(0, 16384, 16384));
    bytes.extend(request(9, 0, 1000));
    // Delivered in odd-sized chunks.
    for c in bytes.chunks(5) {
        p.receive(c, now, &cat).unwrap();
    }
    assert_eq!(p.queued(), 3);
    let mut pre = [0u8; PIECE_PREAMBLE_LEN];
    let r = p.next_block(&mut pre).unwrap();
    assert_eq!(r, BlockRequest { index: 0, begin: 0, length: 16384 });
    assert_eq!(pre, [0, 0, 0x40, 0x09, 7, 0, 0, 0, 0, 0, 0, 0, 0]);
    let r = p.next_block(&mut pre).unwrap();
    assert_eq!(r.begin, 16384);
    assert_eq!(&pre[9..13], &16384u32.to_be_bytes());
    let r = p.next_block(&mut pre).unwrap();
    assert_eq!(r, BlockRequest { index: 9, begin: 0, length: 1000 });
    assert_eq!(&pre[0..4], &(9 + 1000u32).to_be_bytes());
    assert!(p.next_block(&mut pre).is_none());
    assert_eq!(p.uploaded(), 16384 * 2 + 1000);
}

#[test]
fn cancel_removes_a_queued_request() {
    let (mut p, cat, now) = unchoked(&[0]);
    p.receive(&request(0, 0, 16384), now, &cat).unwrap();
    p.receive(&request(0, 16384, 16384), now, &cat).unwrap();
    let mut c = request(0, 0, 16384);
    c[4] = 8; // cancel
    p.receive(&c, now, &cat).unwrap();
    assert_eq!(p.peek_block(), Some(BlockRequest { index: 0, begin: 16384, length: 16384 }));
    assert_eq!(p.queued(), 1);
}

#[test]
fn bad_index_past_end_and_bad_length_are_dropped() {
    let (mut p, cat, now) = unchoked(&[0, 9]);
    assert_eq!(p.receive(&request(10, 0, 16384), now, &cat), Err(DropReason::BadIndex(10)));
    let (mut p, cat, now) = unchoked(&[0, 9]);
    assert_eq!(
        p.receive(&request(9, 0, 16384), now, &cat),
        Err(DropReason::PastEnd { index: 9, begin: 0, length: 16384 }),
        "last piece is 1000 bytes"
    );
    let (mut p, cat, now) = unchoked(&[0]);
    assert_eq!(
        p.receive(&request(0, u32::MAX, 16384), now, &cat),
        Err(DropReason::PastEnd { index: 0, begin: u32::MAX, length: 16384 }),
        "no overflow"
    );
    let (mut p, cat, now) = unchoked(&[0]);
    assert_eq!(p.receive(&request(0, 0, 0), now, &cat), Err(DropReason::BadBlockLength(0)));
    let (mut p, cat, now) = unchoked(&[0]);
    assert_eq!(p.receive(&request(0, 0, MAX_BLOCK + 1), now, &cat), Err(DropReason::BadBlockLength(MAX_BLOCK + 1)));
    let (mut p, cat, now) = unchoked(&[0]);
    assert_eq!(p.receive(&msg(4, &10u32.to_be_bytes()), now, &cat), Err(DropReason::BadIndex(10)), "have");
    let (mut p, cat, now) = unchoked(&[0]);
    assert!(matches!(p.receive(&msg(6, &[0; 11]), now, &cat), Err(DropReason::Malformed(_))), "short request");
    let (mut p, cat, now) = unchoked(&[0]);
    assert_eq!(p.receive(&msg(7, &[0; 20]), now, &cat), Ok(()), "a block nobody asked for is counted, not fatal");
    let (mut p, cat, now) = unchoked(&[0]);
    let past_end = [&9u32.to_be_bytes()[..], &900u32.to_be_bytes(), &[0; 200]].concat();
    assert_eq!(
        p.receive(&msg(7, &past_end), now, &cat),
        Err(DropReason::PastEnd { index: 9, begin: 900, length: 200 }),
        "a block past the end of the 1000-byte last piece"
    );
    let (mut p, cat, now) = unchoked(&[0]);
    assert!(matches!(p.receive(&msg(7, &[0; 7]), now, &cat), Err(DropReason::Malformed(_))), "short piece");
    let (mut p, cat, now) = unchoked(&[0]);
    assert_eq!(p.receive(&msg(5, &[0; 3]), now, &cat), Err(DropReason::BadBitfield { got: 3, expected: 2 }));
}

#[test]
fn request_flood_is_dropped() {
    let (mut p, cat, now) = unchoked(&[0]);
    for i in 0..16 {
        p.receive(&request(0, (i % 2) * 16384, 16384), now, &cat).unwrap();
    }
    assert_eq!(p.receive(&request(0, 0, 16384), now, &cat), Err(DropReason::RequestFlood(17)));
}

#[test]
fn requests_while_choked_are_ignored_until_they_flood() {
    let (mut p, cat, now, _) = attached(&[0], true);
    for _ in 0..16 {
        p.receive(&request(0, 0, 16384), now, &cat).unwrap();
    }
    assert_eq!(p.queued(), 0);
    assert!(matches!(p.receive(&request(0, 0, 16384), now, &cat), Err(DropReason::RequestFlood(_))));
}

#[test]
fn chatter_flood_is_dropped() {
    let (mut p, cat, now, _) = attached(&[0], true);
    for _ in 0..50 {
        p.receive(&[0, 0, 0, 0], now, &cat).unwrap();
    }
    assert_eq!(p.receive(&[0, 0, 0, 0], now, &cat), Err(DropReason::ChatterFlood));
    // The same rate spread over time is fine.
    let (mut p, cat, mut now, _) = attached(&[0], true);
    for _ in 0..200 {
        now += Duration::from_millis(100);
        p.receive(&[0, 0, 0, 0], now, &cat).unwrap();
    }
}

#[test]
fn choke_drops_queue_and_unknown_message_ids_are_ignored() {
    let (mut p, cat, now) = unchoked(&[0]);
    p.receive(&request(0, 0, 16384), now, &cat).unwrap();
    p.receive(&msg(9, &[0x1a, 0xe1]), now, &cat).unwrap(); // DHT port message
    p.receive(&msg(14, &[]), now, &cat).unwrap(); // fast extension, not advertised
    p.set_choking(true);
    assert_eq!(p.queued(), 0);
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(out, [0, 0, 0, 1, 0]);
    let mut pre = [0u8; PIECE_PREAMBLE_LEN];
    assert!(p.next_block(&mut pre).is_none());
}

#[test]
fn missing_piece_demands_then_serves_when_it_arrives() {
    let (mut p, cat, now) = unchoked(&[0]);
    p.receive(&request(5, 0, 16384), now, &cat).unwrap();
    p.receive(&request(5, 16384, 16384), now, &cat).unwrap();
    assert_eq!(p.poll_event(), Some(Event::Demand { index: 5 }));
    assert_eq!(p.poll_event(), None, "one demand per piece");
    assert_eq!((p.queued(), p.parked()), (0, 2));
    p.piece_stored(5);
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(out, [0, 0, 0, 5, 4, 0, 0, 0, 5], "have 5");
    assert_eq!((p.queued(), p.parked()), (2, 0));
    p.piece_stored(5);
    assert!(!p.has_output(), "no second have");
}

#[test]
fn missing_piece_without_fetcher_is_refused_and_repeated_misses_drop() {
    let (mut p, cat, now) = unchoked(&[0]);
    p.receive(&request(0, 0, 16384), now, &cat).unwrap();
    p.receive(&request(5, 0, 16384), now, &cat).unwrap();
    assert_eq!(p.poll_event(), Some(Event::Demand { index: 5 }));
    p.refuse_missing(5);
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(out, [0, 0, 0, 1, 0, 0, 0, 0, 1, 1], "choke + unchoke cancels the peer's requests");
    assert_eq!((p.queued(), p.parked()), (0, 0));
    assert!(!p.is_choking());
    for _ in 0..3 {
        p.receive(&request(5, 0, 16384), now, &cat).unwrap();
        p.refuse_missing(5);
    }
    assert_eq!(p.receive(&request(6, 0, 16384), now, &cat), Err(DropReason::TooManyMissing(5)));
}

#[test]
fn ut_metadata_pieces_and_reject() {
    let (mut p, cat, now, _) = attached(&[0], true);
    // Peer's extension handshake: its ut_metadata id is 7.
    let mut ext = vec![0u8];
    ext.extend_from_slice(b"d1:md11:ut_metadatai7eee");
    p.receive(&msg(20, &ext), now, &cat).unwrap();
    for piece in 0..4u32 {
        let mut req = vec![OUR_UT_METADATA];
        req.extend_from_slice(format!("d8:msg_typei0e5:piecei{piece}ee").as_bytes());
        p.receive(&msg(20, &req), now, &cat).unwrap();
    }
    assert!(!p.has_output(), "replies wait until the shell has room for them");
    assert_eq!(p.metadata_queued(), 4);
    let mut out = Vec::new();
    while p.next_metadata(&mut out).unwrap() {}
    let msgs = messages(&out);
    assert_eq!(msgs.len(), 4);
    let info = &cat.meta.info_bytes;
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m[0], 20);
        assert_eq!(m[1], 7, "sent with the peer's id");
        if i < 3 {
            let head = format!("d8:msg_typei1e5:piecei{i}e10:total_sizei40000ee");
            assert_eq!(&m[2..2 + head.len()], head.as_bytes());
            let start = i * 16384;
            let end = (start + 16384).min(info.len());
            assert_eq!(&m[2 + head.len()..], &info[start..end]);
        } else {
            assert_eq!(&m[2..], b"d8:msg_typei2e5:piecei3ee");
        }
    }
}

#[test]
fn malformed_extended_message_is_dropped() {
    let (mut p, cat, now, _) = attached(&[0], true);
    assert!(matches!(p.receive(&msg(20, b"\x00not bencode"), now, &cat), Err(DropReason::Malformed(_))));
}

/// librqbit-bencode reads an id of 259 as 3 and panics on numbers past 64 bits (with overflow
/// checks): extension dictionaries go through the checked decoder, and such peers are dropped.
#[test]
fn extension_numbers_that_would_overflow_drop_the_peer() {
    for bad in [
        &b"\x00d1:md11:ut_metadatai259eee"[..],
        b"\x00d1:md11:ut_metadatai-1eee",
        b"\x00d1:pi99999999999999999999999e1:md11:ut_metadatai3eee",
        b"\x00d1:v99999999999999999999999:xe",
        b"\x00d1:md11:ut_metadatai3eeeTRAILING",
    ] {
        let (mut p, cat, now, _) = attached(&[0], true);
        let got = p.receive(&msg(20, bad), now, &cat);
        assert!(matches!(got, Err(DropReason::Malformed(_))), "{:?}: {got:?}", String::from_utf8_lossy(bad));
    }
    // A request for a metadata piece past u32 is malformed too, not wrapped to piece 0.
    let (mut p, cat, now, _) = attached(&[0], true);
    ext_handshake_with_ut_metadata(&mut p, &cat, now);
    let mut req = vec![OUR_UT_METADATA];
    req.extend_from_slice(b"d8:msg_typei0e5:piecei4294967296ee");
    assert!(matches!(p.receive(&msg(20, &req), now, &cat), Err(DropReason::Malformed(_))));
}

/// An id of 0 disables an extension (BEP 10): no metadata goes out under id 0, which is the
/// extension handshake's own id, and a later handshake that disables ut_metadata is obeyed.
#[test]
fn ut_metadata_id_zero_disables_replies() {
    let (mut p, cat, now, _) = attached(&[0], true);
    p.receive(&msg(20, b"\x00d1:md11:ut_metadatai0eee"), now, &cat).unwrap();
    p.receive(&metadata_request(0), now, &cat).unwrap();
    assert_eq!(p.metadata_queued(), 0, "nothing to answer under: ut_metadata is disabled");

    let (mut p, cat, now, _) = attached(&[0], true);
    ext_handshake_with_ut_metadata(&mut p, &cat, now);
    // A later handshake naming another extension only keeps ut_metadata's id ...
    p.receive(&msg(20, b"\x00d1:md6:ut_pexi2eee"), now, &cat).unwrap();
    p.receive(&metadata_request(0), now, &cat).unwrap();
    assert_eq!(p.metadata_queued(), 1);
    // ... and one that disables it stops further replies.
    p.receive(&msg(20, b"\x00d1:md11:ut_metadatai0eee"), now, &cat).unwrap();
    p.receive(&metadata_request(1), now, &cat).unwrap();
    assert_eq!(p.metadata_queued(), 1);
}

#[test]
fn timeouts_keepalive_idle_and_handshake() {
    let (mut p, now) = peer();
    assert_eq!(p.poll_timeout(), now + Duration::from_secs(10));
    assert_eq!(p.handle_timeout(now + Duration::from_secs(11)), Err(DropReason::HandshakeTimeout));

    let (mut p, _cat, now, _) = attached(&[0], true);
    p.note_sent(now);
    assert_eq!(p.poll_timeout(), now + Duration::from_secs(60));
    p.handle_timeout(now + Duration::from_secs(61)).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(out, [0, 0, 0, 0], "keep-alive");
    assert_eq!(p.handle_timeout(now + Duration::from_secs(121)), Err(DropReason::Idle));
}

#[test]
fn random_messages_never_panic() {
    // xorshift: reproducible garbage of every message id, with valid and invalid lengths,
    // including extended messages aimed at ut_metadata and at unknown extension ids.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 0..3000 {
        let (mut p, cat, now) = unchoked(&[0, 1, 2]);
        for _ in 0..(next() % 4 + 1) {
            let id = match next() % 4 {
                0 => 20,
                1 => (next() % 10) as u8,
                _ => (next() % 256) as u8,
            };
            let len = (next() % 64) as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if id == 20 && !payload.is_empty() && round % 2 == 0 {
                payload[0] = [0, OUR_UT_METADATA, 1, 9][(next() % 4) as usize];
            }
            let res = p.receive(&msg(id, &payload), now, &cat);
            *outcomes.entry(res.as_ref().err().map(|e| e.kind()).unwrap_or("ok")).or_insert(0u32) += 1;
            if res.is_err() {
                break;
            }
            let mut pre = [0u8; PIECE_PREAMBLE_LEN];
            while p.next_block(&mut pre).is_some() {}
        }
    }
    assert!(outcomes.contains_key("ok") && outcomes.contains_key("malformed"), "{outcomes:?}");
}

/// Runs an MSE handshake (as libtorrent does: IA empty, the BitTorrent handshake follows in the
/// selected stream); returns the attached peer, A's RC4 streams and what it was sent after MSE.
fn mse_attached(provide: u32) -> (PeerProto, Fake, Instant, crate::mse::Rc4Pair, Vec<u8>) {
    use rc4::cipher::StreamCipher;
    let (mut p, now) = peer();
    let cat = fake(&[0, 1]);
    let a = crate::mse::initiator::Initiator::new(IH.into_bytes());
    p.receive(&a.hello(100), now, &cat).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    let (mut step3, mut rc4) = a.step3(&out[..crate::mse::KEY_LEN], provide, b"");
    let pad_b = out.len() - crate::mse::KEY_LEN;
    let mut hs = handshake(IH, true);
    if provide == 2 {
        rc4.enc.apply_keystream(&mut hs);
    }
    step3.extend_from_slice(&hs);
    p.receive(&step3, now, &cat).unwrap();
    assert_eq!(p.poll_event(), Some(Event::Attached { infohash: IH, peer_id: *b"-XX0000-abcdefghijkl" }));
    let mut out2 = Vec::new();
    p.take_output(&mut out2);
    let _ = pad_b;
    let mut select = out2[..14].to_vec();
    rc4.dec.apply_keystream(&mut select);
    assert_eq!(&select[..8], &[0; 8], "VC");
    assert_eq!(u32::from_be_bytes(select[8..12].try_into().unwrap()), if provide & 1 != 0 { 1 } else { 2 });
    let mut rest = out2[14..].to_vec();
    if provide == 2 {
        rc4.dec.apply_keystream(&mut rest);
    }
    assert_eq!(&rest[..20], b"\x13BitTorrent protocol");
    (p, cat, now, rc4, rest)
}

#[test]
fn mse_with_plaintext_selected_then_serves_plain_blocks() {
    let (mut p, cat, now, _, _) = mse_attached(1 | 2);
    assert_eq!(p.encryption(), (true, false));
    p.receive(&msg(2, &[]), now, &cat).unwrap();
    assert_eq!(p.poll_event(), Some(Event::Interested));
    p.set_choking(false);
    p.receive(&request(1, 0, 16384), now, &cat).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(out, [0, 0, 0, 1, 1], "unchoke in plaintext");
    let mut pre = [0u8; PIECE_PREAMBLE_LEN];
    assert!(p.next_block(&mut pre).is_some());
    let before = pre;
    p.seal(&mut pre);
    assert_eq!(pre, before, "no encryption after a plaintext selection");
}

#[test]
fn mse_with_rc4_encrypts_both_directions() {
    use rc4::cipher::StreamCipher;
    let (mut p, cat, now, mut a, _) = mse_attached(2);
    assert_eq!(p.encryption(), (true, true));
    let mut wire = msg(2, &[]);
    a.enc.apply_keystream(&mut wire);
    p.receive(&wire, now, &cat).unwrap();
    assert_eq!(p.poll_event(), Some(Event::Interested));
    p.set_choking(false);
    let mut wire = request(1, 0, 16384);
    a.enc.apply_keystream(&mut wire);
    p.receive(&wire, now, &cat).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    let mut pre = [0u8; PIECE_PREAMBLE_LEN];
    let r = p.next_block(&mut pre).expect("queued block");
    assert_eq!((r.index, r.begin, r.length), (1, 0, 16384));
    let mut block = pre.to_vec();
    block.extend(std::iter::repeat_n(0xAB, 16384));
    p.seal(&mut block);
    out.extend_from_slice(&block);
    a.dec.apply_keystream(&mut out);
    assert_eq!(&out[..5], &[0, 0, 0, 1, 1], "unchoke");
    assert_eq!(&out[5..18], &[0, 0, 0x40, 9, 7, 0, 0, 0, 1, 0, 0, 0, 0], "piece header");
    assert!(out[18..].iter().all(|&b| b == 0xAB));
}

#[test]
fn mse_handshake_naming_another_release_is_dropped() {
    let (mut p, now) = peer();
    let cat = fake(&[0]);
    let a = crate::mse::initiator::Initiator::new(IH.into_bytes());
    p.receive(&a.hello(0), now, &cat).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    let (mut step3, _) = a.step3(&out[..crate::mse::KEY_LEN], 1, b"");
    step3.extend_from_slice(&handshake(InfoHash([9; 20]), true));
    assert_eq!(p.receive(&step3, now, &cat).unwrap_err().kind(), "mse_failed");
}

fn ext_handshake_with_ut_metadata(p: &mut PeerProto, cat: &Fake, now: Instant) {
    let mut ext = vec![0u8];
    ext.extend_from_slice(b"d1:md11:ut_metadatai7eee");
    p.receive(&msg(20, &ext), now, cat).unwrap();
}

fn metadata_request(piece: u32) -> Vec<u8> {
    let mut req = vec![OUR_UT_METADATA];
    req.extend_from_slice(format!("d8:msg_typei0e5:piecei{piece}ee").as_bytes());
    msg(20, &req)
}

#[test]
fn metadata_flood_from_a_peer_that_never_reads_stays_bounded_and_is_dropped() {
    // Issue #16: each request used to serialize a 16 KiB reply into the output at once, so a
    // peer that asks and never reads grew the box's memory by 16 KiB per ~30-byte request.
    // Now nothing is serialized until the shell has room, and the requests are counted.
    let (mut p, cat, now, _) = attached(&[0], true);
    ext_handshake_with_ut_metadata(&mut p, &cat, now);
    let pieces = 40_000u32.div_ceil(16384); // the fake info dictionary: 3 metadata pieces
    let budget = pieces * METADATA_REQUESTS_PER_PIECE;
    let mut pending = Vec::new();
    let mut result = Ok(());
    for i in 0..1000u32 {
        // Spread over time: the chatter limit (50/s here) is not what stops it.
        result = p.receive(&metadata_request(i % pieces), now + Duration::from_millis(100 * u64::from(i)), &cat);
        p.take_output(&mut pending);
        if result.is_err() {
            break;
        }
    }
    let err = result.expect_err("a peer asking for the metadata over and over is dropped");
    assert_eq!(err.kind(), "metadata_flood", "{err}");
    assert_eq!(err, DropReason::MetadataFlood(budget + 1));
    assert!(pending.len() < 1024, "{} bytes of replies buffered for a peer that reads nothing", pending.len());
}

#[test]
fn metadata_requests_count_against_the_request_queue() {
    // cfg(): max_queue 16. Queued metadata replies and queued blocks share it.
    let big: Vec<u8> = vec![b'x'; 64 * 16384]; // 64 metadata pieces: the budget is not the limit
    let meta = Arc::new(TorrentMeta::new(IH, TOTAL, PIECE, Arc::from(big.as_slice())).unwrap());
    let mut have = Bitfield::new(PIECES);
    have.set(0);
    let cat = Fake { meta, have, wanted: false };
    let (mut p, now) = peer();
    p.receive(&handshake(IH, true), now, &cat).unwrap();
    ext_handshake_with_ut_metadata(&mut p, &cat, now);
    p.receive(&msg(2, &[]), now, &cat).unwrap();
    p.set_choking(false);
    for i in 0..10 {
        p.receive(&metadata_request(i), now, &cat).unwrap();
    }
    for i in 0..6 {
        p.receive(&request(0, (i % 2) * 16384, 16384 - i), now, &cat).unwrap();
    }
    assert_eq!((p.metadata_queued(), p.queued()), (10, 6));
    assert_eq!(p.receive(&metadata_request(10), now, &cat), Err(DropReason::RequestFlood(17)));
}

#[test]
fn metadata_replies_keep_stream_order_after_control_output() {
    // A handshake and a metadata request in one read: our handshake must go out first.
    let (mut p, now) = peer();
    let cat = fake(&[0]);
    let mut bytes = handshake(IH, true);
    bytes.extend(msg(20, b"\x00d1:md11:ut_metadatai7eee"));
    bytes.extend(metadata_request(0));
    p.receive(&bytes, now, &cat).unwrap();
    let mut out = Vec::new();
    assert!(p.next_metadata(&mut out).unwrap());
    assert_eq!(&out[..20], b"\x13BitTorrent protocol");
    let msgs = messages(&out[68..]);
    assert_eq!(msgs.len(), 3, "extended handshake, bitfield, then the metadata reply");
    assert_eq!(&msgs[2][..2], &[20, 7]);
    assert!(!p.next_metadata(&mut out).unwrap(), "nothing more queued");
}

#[test]
fn back_pressure_stops_reading_from_a_peer_with_a_full_send_buffer() {
    let (p, ..) = unchoked(&[0]);
    // Blocks alone (topped up below SEND_HIGH_WATER, at most one block beyond it) never stop
    // a downloader's requests from being read.
    const { assert!(MAX_SEND_BACKLOG > SEND_HIGH_WATER + PIECE_PREAMBLE_LEN + MAX_BLOCK as usize) };
    assert!(p.wants_output(SEND_HIGH_WATER - 1) && !p.wants_output(SEND_HIGH_WATER));
    assert!(p.wants_input(SEND_HIGH_WATER + PIECE_PREAMBLE_LEN + MAX_BLOCK as usize));
    assert!(p.wants_input(MAX_SEND_BACKLOG - 1));
    assert!(!p.wants_input(MAX_SEND_BACKLOG));
}

#[test]
fn cancel_flood_is_counted_and_dropped() {
    // Issue #16: cancels were counted against no limit (356 k/s held a core and the peer was
    // never dropped). Every message kind now costs a token of the message bucket: with the
    // default config (100 000 per second, 10 000 at once), a burst of cancels at one instant is
    // dropped at the 10 001st.
    let cfg = Arc::new(ProtoConfig::default());
    let now = Instant::now();
    let mut p = PeerProto::new(cfg, "10.1.2.3".parse().unwrap(), *b"-PS0100-000000000000", now);
    let cat = fake(&[0]);
    p.receive(&handshake(IH, true), now, &cat).unwrap();
    let mut cancel = request(0, 0, 16384);
    cancel[4] = 8;
    let batch: Vec<u8> = cancel.iter().copied().cycle().take(cancel.len() * 1000).collect();
    let mut result = Ok(());
    for _ in 0..250 {
        result = p.receive(&batch, now, &cat);
        if result.is_err() {
            break;
        }
    }
    let err = result.expect_err("cancel flood not dropped");
    assert_eq!(err.kind(), "message_flood", "{err}");
    let mut p = PeerProto::new(Arc::new(ProtoConfig::default()), "10.1.2.3".parse().unwrap(), [0; 20], now);
    p.receive(&handshake(IH, true), now, &cat).unwrap();
    let burst = ProtoConfig::default().message_burst as usize;
    p.receive(&cancel.repeat(burst), now, &cat).unwrap();
    assert_eq!(p.receive(&cancel, now, &cat), Err(DropReason::MessageFlood), "the burst is spent");
    // The same cancels at a sustainable rate are fine.
    let (mut p, cat, mut t) = unchoked(&[0]);
    for _ in 0..100 {
        t += Duration::from_millis(100);
        p.receive(&cancel, t, &cat).unwrap();
    }
}

#[test]
fn every_message_kind_counts_against_the_message_rate() {
    let cfg =
        Arc::new(ProtoConfig { max_messages_per_sec: 20, message_burst: 20, max_queue: 1000, ..(*cfg()).clone() });
    let mut cancel = request(0, 0, 16384);
    cancel[4] = 8;
    let kinds: Vec<(&str, Vec<u8>)> =
        vec![("request", request(0, 0, 16384)), ("cancel", cancel), ("keep-alive", vec![0, 0, 0, 0])];
    for (what, m) in kinds {
        let (_, cat, now) = unchoked(&[0]);
        let mut p = PeerProto::new(cfg.clone(), "10.1.2.3".parse().unwrap(), *b"-PS0100-000000000000", now);
        p.receive(&handshake(IH, true), now, &cat).unwrap();
        p.receive(&msg(2, &[]), now, &cat).unwrap();
        p.set_choking(false);
        // 20 tokens: the interested message took one.
        for _ in 0..19 {
            p.receive(&m, now, &cat).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        assert_eq!(p.receive(&m, now, &cat), Err(DropReason::MessageFlood), "{what}");
    }
}

#[test]
fn cancel_removes_any_queued_request_and_all_its_copies_keeping_the_order() {
    let cfg = Arc::new(ProtoConfig { max_queue: 4000, ..(*cfg()).clone() });
    let now = Instant::now();
    let cat = fake(&[0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut p = PeerProto::new(cfg, "10.1.2.3".parse().unwrap(), *b"-PS0100-000000000000", now);
    p.receive(&handshake(IH, true), now, &cat).unwrap();
    p.receive(&msg(2, &[]), now, &cat).unwrap();
    p.set_choking(false);
    let all: Vec<BlockRequest> = (0..9u32)
        .flat_map(|index| (0..32u32).map(move |k| BlockRequest { index, begin: k * 1024, length: 1024 }))
        .collect();
    let mut t = now;
    for r in &all {
        t += Duration::from_millis(1);
        p.receive(&request(r.index, r.begin, r.length), t, &cat).unwrap();
    }
    // A request asked for twice is queued twice; one cancel removes both copies.
    p.receive(&request(0, 0, 1024), t, &cat).unwrap();
    assert_eq!(p.queued(), all.len() + 1);
    // Cancel every third one (and one that was never asked for).
    for r in all.iter().step_by(3).chain([&BlockRequest { index: 0, begin: 5, length: 7 }]) {
        let mut c = request(r.index, r.begin, r.length);
        c[4] = 8;
        t += Duration::from_millis(1);
        p.receive(&c, t, &cat).unwrap();
    }
    let want: Vec<BlockRequest> = all.iter().enumerate().filter(|(i, _)| i % 3 != 0).map(|(_, r)| *r).collect();
    assert_eq!(p.queued(), want.len());
    let mut pre = [0u8; PIECE_PREAMBLE_LEN];
    let mut got = Vec::new();
    while let Some(r) = p.next_block(&mut pre) {
        got.push(r);
    }
    assert_eq!(got, want, "served in arrival order, cancelled ones left out");
}

#[test]
fn cancel_removes_a_parked_request() {
    let (mut p, cat, now) = unchoked(&[0]);
    p.receive(&request(5, 0, 16384), now, &cat).unwrap();
    p.receive(&request(5, 16384, 16384), now, &cat).unwrap();
    assert_eq!(p.poll_event(), Some(Event::Demand { index: 5 }));
    let mut c = request(5, 0, 16384);
    c[4] = 8;
    p.receive(&c, now, &cat).unwrap();
    assert_eq!(p.parked(), 1);
    p.piece_stored(5);
    assert_eq!((p.queued(), p.parked()), (1, 0));
    assert_eq!(p.peek_block(), Some(BlockRequest { index: 5, begin: 16384, length: 16384 }));
}

#[test]
fn fixed_layout_messages_decode_as_librqbit_decodes_them() {
    let mut cases: Vec<Vec<u8>> = vec![vec![0, 0, 0, 0], request(1, 2, 3), msg(4, &7u32.to_be_bytes())];
    for id in 0..4 {
        cases.push(msg(id, &[]));
    }
    let mut cancel = request(u32::MAX, 16384, 1);
    cancel[4] = 8;
    cases.push(cancel);
    for m in &cases {
        let fast = fixed_message(m).expect("a fixed-layout message");
        let full = Message::deserialize(m, &[]).unwrap().0;
        assert_eq!(format!("{fast:?}"), format!("{full:?}"));
    }
    // Wrong lengths and other ids go to librqbit (which rejects the wrong lengths).
    for m in [msg(6, &[0; 11]), msg(4, &[0; 3]), msg(2, &[1]), msg(5, &[0; 2]), msg(20, b"\0de")] {
        assert!(fixed_message(&m).is_none(), "{m:?}");
    }
    assert!(Message::deserialize(&msg(6, &[0; 11]), &[]).is_err());
}

fn dialed(present: &[u32]) -> (PeerProto, Fake, Instant, Vec<u8>) {
    let now = Instant::now();
    let cat = fake(present);
    let (meta, have) = cat.lookup(&IH).unwrap();
    let mut p = PeerProto::connect(cfg(), "10.1.2.3".parse().unwrap(), *b"-PS0100-000000000000", meta, have, now);
    p.set_wanted(true, now);
    let mut out = Vec::new();
    p.take_output(&mut out);
    (p, cat, now, out)
}

#[test]
fn an_outgoing_connection_opens_asks_for_what_the_peer_has_and_assembles_pieces() {
    let (mut p, cat, now, out) = dialed(&[0]);
    assert_eq!(&out[..20], b"\x13BitTorrent protocol");
    assert_ne!(out[25] & 0x10, 0, "BEP 10 offered");
    assert_eq!(&out[28..48], IH.as_bytes());
    assert_ne!(out[27] & 0x04, 0, "BEP 6 offered");
    assert_eq!(out.len(), 68, "nothing but the handshake until the peer's names the release");
    assert!(!p.is_attached());
    // the peer (no BEP 6) answers: handshake, bitfield (pieces 1 and 2), unchoke
    let bf = [0b0110_0000u8, 0];
    p.receive(&[handshake(IH, true), msg(5, &bf), msg(1, &[])].concat(), now, &cat).unwrap();
    assert_eq!(p.poll_event(), Some(Event::Attached { infohash: IH, peer_id: *b"-XX0000-abcdefghijkl" }));
    let mut out = Vec::new();
    p.take_output(&mut out);
    let msgs = messages(&out);
    assert_eq!(
        msgs.iter().map(|m| m[0]).collect::<Vec<_>>(),
        vec![20, 5, 2],
        "extension handshake, our bitfield, interested; no second handshake"
    );
    assert!(p.pieces_wanted() > 0);
    p.add_pieces(&[2], now);
    let mut out = Vec::new();
    p.take_output(&mut out);
    let reqs = messages(&out);
    assert_eq!(reqs, vec![request(2, 0, 16384)[4..].to_vec(), request(2, 16384, 16384)[4..].to_vec()]);
    let data: Vec<u8> = (0..PIECE).map(|i| (i % 253) as u8).collect();
    for begin in [16384u32, 0] {
        let mut payload = 2u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&begin.to_be_bytes());
        payload.extend_from_slice(&data[begin as usize..begin as usize + 16384]);
        p.receive(&msg(7, &payload), now, &cat).unwrap();
    }
    assert_eq!(p.poll_event(), Some(Event::Downloaded { index: 2, data }));
    assert_eq!(p.download().unwrap().downloaded(), PIECE as u64);
    // once stored (and advertised), piece 1 is still wanted; when it is stored from elsewhere
    // there is nothing left to want from this peer
    p.piece_stored(2);
    p.piece_stored(1);
    p.handle_timeout(now).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(messages(&out), vec![vec![4, 0, 0, 0, 2], vec![4, 0, 0, 0, 1], vec![3]], "haves, then not interested");
}

#[test]
fn a_dialed_peer_answering_for_another_release_or_as_ourselves_is_dropped() {
    let (mut p, cat, now, _) = dialed(&[]);
    assert_eq!(
        p.receive(&handshake(InfoHash([8; 20]), true), now, &cat),
        Err(DropReason::WrongInfohash(InfoHash([8; 20])))
    );
    let (mut p, cat, now, _) = dialed(&[]);
    let mut ours = handshake(IH, true);
    ours[48..].copy_from_slice(b"-PS0100-000000000000");
    assert_eq!(p.receive(&ours, now, &cat), Err(DropReason::SelfConnection));
    assert!(!DropReason::SelfConnection.is_abuse() && DropReason::BadPiece(1).is_abuse());
}

#[test]
fn a_box_that_holds_the_whole_release_says_upload_only() {
    let (_, _, _, msgs) = attached(&(0..PIECES).collect::<Vec<_>>(), true);
    assert!(String::from_utf8_lossy(&msgs[0]).contains("11:upload_onlyi1e"));
}

#[test]
fn pex_both_ways() {
    let (mut p, cat, now, _) = attached(&[0], true);
    // the peer's handshake: ut_pex under its id 7, listen port 51413
    p.receive(&msg(20, b"\x00d1:md6:ut_pexi7ee1:pi51413ee"), now, &cat).unwrap();
    assert!(p.speaks_pex());
    assert_eq!(p.peer_listen_port(), Some(51413));
    // a PEX message from it: two v4 peers (one with port 0, dropped) and one v6
    let mut body = b"\x01d5:added12:".to_vec();
    body.extend_from_slice(&[10, 0, 0, 5, 0x1a, 0xe1, 10, 0, 0, 6, 0, 0]);
    body.extend_from_slice(b"6:added618:");
    body.extend_from_slice(&[0; 15]);
    body.extend_from_slice(&[1, 0x1a, 0xe2]);
    body.push(b'e');
    p.receive(&msg(20, &body), now, &cat).unwrap();
    assert_eq!(p.poll_event(), Some(Event::Pex(vec!["10.0.0.5:6881".parse().unwrap(), "[::1]:6882".parse().unwrap()])));
    // ours to it, under its id
    let mut out = Vec::new();
    p.take_output(&mut out);
    p.send_pex(&["10.0.0.9:7000".parse().unwrap(), "[::1]:1".parse().unwrap()], &["10.0.0.8:1".parse().unwrap()]);
    let mut out = Vec::new();
    p.take_output(&mut out);
    let m = messages(&out);
    assert_eq!(m.len(), 1);
    assert_eq!(&m[0][..2], &[20, 7]);
    let mut want = b"d5:added6:".to_vec();
    want.extend_from_slice(&[10, 0, 0, 9, 0x1b, 0x58]);
    want.extend_from_slice(b"7:added.f1:\x007:dropped6:");
    want.extend_from_slice(&[10, 0, 0, 8, 0, 1]);
    want.push(b'e');
    assert_eq!(&m[0][2..], &want[..]);
    // malformed PEX bencode drops the peer
    let (mut p, cat, now, _) = attached(&[0], true);
    assert!(matches!(p.receive(&msg(20, b"\x01d5:added"), now, &cat), Err(DropReason::Malformed(_))));
}

#[test]
fn the_listen_port_is_told_when_known() {
    let now = Instant::now();
    let cfg = Arc::new(ProtoConfig { listen_port: 6881, ..Default::default() });
    let cat = fake(&[0]);
    let mut p = PeerProto::new(cfg, "10.1.2.3".parse().unwrap(), *b"-PS0100-000000000000", now);
    p.receive(&handshake(IH, true), now, &cat).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    let ext = String::from_utf8_lossy(&messages(&out[68..])[0][2..]).into_owned();
    assert!(ext.contains("13:metadata_sizei40000e1:pi6881e4:reqq"), "{ext}");
}

#[test]
fn a_box_filling_the_release_is_not_upload_only() {
    let (mut p, now) = peer();
    let mut cat = fake(&[0]);
    cat.wanted = true;
    p.receive(&handshake(IH, true), now, &cat).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert!(String::from_utf8_lossy(&messages(&out[68..])[0]).contains("11:upload_onlyi0e"));
}

fn fast_handshake(ih: InfoHash) -> Vec<u8> {
    let mut h = handshake(ih, true);
    h[27] |= 0x04;
    h
}

/// A peer that speaks BEP 6, attached; returns the messages after our handshake.
fn fast_attached(present: &[u32]) -> (PeerProto, Fake, Instant, Vec<Vec<u8>>) {
    let (mut p, now) = peer();
    let cat = fake(present);
    p.receive(&fast_handshake(IH), now, &cat).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_ne!(out[27] & 0x04, 0, "BEP 6 offered");
    assert_eq!(p.poll_event(), Some(Event::Attached { infohash: IH, peer_id: *b"-XX0000-abcdefghijkl" }));
    (p, cat, now, messages(&out[68..]))
}

fn allowed_for_test_peer() -> Vec<u32> {
    allowed_fast_set("10.1.2.3".parse().unwrap(), &IH, PIECES, (PIECES / 2) as usize)
}

fn reject(index: u32, begin: u32, length: u32) -> Vec<u8> {
    let mut r = request(index, begin, length)[4..].to_vec();
    r[0] = 16;
    r
}

#[test]
fn allowed_fast_set_is_the_canonical_one_of_bep_6() {
    // the BEP's own example: 80.4.4.200, infohash 0xaa.., 1313 pieces
    let ih = InfoHash([0xaa; 20]);
    let ip = "80.4.4.200".parse().unwrap();
    assert_eq!(allowed_fast_set(ip, &ih, 1313, 7), vec![1059, 431, 808, 1217, 287, 376, 1188]);
    assert_eq!(allowed_fast_set(ip, &ih, 1313, 9), vec![1059, 431, 808, 1217, 287, 376, 1188, 353, 508]);
    // the same /24 gets the same set; a release with no more pieces than k gets none
    assert_eq!(allowed_fast_set("80.4.4.7".parse().unwrap(), &ih, 1313, 7), allowed_fast_set(ip, &ih, 1313, 7));
    assert!(allowed_fast_set(ip, &ih, 7, 7).is_empty());
}

#[test]
fn a_bep6_peer_gets_have_all_or_have_none_and_its_allowed_fast_pieces() {
    let all: Vec<u32> = (0..PIECES).collect();
    let (_, _, _, msgs) = fast_attached(&all);
    assert_eq!(msgs[0][0], 20, "extension handshake");
    assert_eq!(msgs[1], vec![14], "have_all instead of a bitfield");
    let allowed: Vec<Vec<u8>> =
        allowed_for_test_peer().iter().map(|i| [&[17u8][..], &i.to_be_bytes()].concat()).collect();
    assert_eq!(allowed.len(), 5);
    assert_eq!(msgs[2..].to_vec(), allowed, "allowed_fast for every piece of its set");
    let (_, _, _, msgs) = fast_attached(&[]);
    assert_eq!(msgs[1..].to_vec(), vec![vec![15]], "have_none, and no allowed_fast for pieces we lack");
    // a partial store: the bitfield, and allowed_fast only for the pieces of the set it holds
    let some = allowed_for_test_peer()[..2].to_vec();
    let (_, _, _, msgs) = fast_attached(&some);
    assert_eq!(msgs[1][0], 5);
    assert_eq!(msgs[2..].iter().map(|m| u32::from_be_bytes(m[1..5].try_into().unwrap())).collect::<Vec<_>>(), some);
}

#[test]
fn a_bep6_peer_gets_a_reject_for_every_request_it_will_not_be_served() {
    let all: Vec<u32> = (0..PIECES).collect();
    let allowed = allowed_for_test_peer();
    let other = (0..PIECES).find(|i| !allowed.contains(i)).unwrap();
    let (mut p, cat, now, _) = fast_attached(&all);
    // choked: a request outside its allowed set is rejected, one inside is served
    p.receive(&[request(other, 0, 16384), request(allowed[0], 0, 16384)].concat(), now, &cat).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(messages(&out), vec![reject(other, 0, 16384)]);
    let mut pre = [0u8; PIECE_PREAMBLE_LEN];
    assert_eq!(p.next_block(&mut pre).map(|r| r.index), Some(allowed[0]), "allowed fast while choked");
    // unchoked with two requests queued, then choked: the choke, then a reject for the one
    // outside the allowed set; the allowed one stays queued
    p.receive(&msg(2, &[]), now, &cat).unwrap();
    p.set_choking(false);
    p.receive(&[request(other, 0, 16384), request(allowed[1], 16384, 16384)].concat(), now, &cat).unwrap();
    p.take_output(&mut Vec::new());
    p.set_choking(true);
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(messages(&out), vec![vec![0], reject(other, 0, 16384)]);
    assert_eq!(p.queued(), 1);
    // a cancel is answered with a reject
    p.receive(&msg(8, &request(allowed[1], 16384, 16384)[5..]), now, &cat).unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(messages(&out), vec![reject(allowed[1], 16384, 16384)]);
    assert_eq!(p.queued(), 0);
}

#[test]
fn a_bep6_peer_asking_for_a_piece_no_one_can_fetch_gets_rejects_not_a_choke() {
    let (mut p, cat, now, _) = fast_attached(&[0]);
    p.receive(&msg(2, &[]), now, &cat).unwrap();
    p.set_choking(false);
    p.take_output(&mut Vec::new());
    p.receive(&[request(5, 0, 16384), request(5, 16384, 16384)].concat(), now, &cat).unwrap();
    assert_eq!(p.poll_event(), Some(Event::Interested));
    assert_eq!(p.poll_event(), Some(Event::Demand { index: 5 }));
    p.refuse_missing(5);
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(messages(&out), vec![reject(5, 0, 16384), reject(5, 16384, 16384)]);
    assert!(!p.is_choking());
}

#[test]
fn allowed_fast_pieces_are_fetched_while_choked_and_suggestions_are_kept() {
    let (mut p, cat, now, _) = fast_attached(&[]);
    p.set_wanted(true, now);
    // have_all, then allowed_fast for piece 4 (and an index past the end, ignored)
    p.receive(
        &[msg(14, &[]), msg(17, &4u32.to_be_bytes()), msg(17, &99u32.to_be_bytes()), msg(13, &6u32.to_be_bytes())]
            .concat(),
        now,
        &cat,
    )
    .unwrap();
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(messages(&out), vec![vec![2]], "interested");
    let d = p.download().unwrap();
    assert!(d.assignable(4) && !d.assignable(3), "choked: only the allowed-fast piece");
    assert!(d.is_suggested(6) && !d.is_suggested(4));
    assert_eq!(p.pieces_wanted(), 1);
    p.add_pieces(&[4], now);
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(messages(&out), vec![request(4, 0, 16384)[4..].to_vec(), request(4, 16384, 16384)[4..].to_vec()]);
}

#[test]
fn a_piece_just_stored_is_suggested_to_a_bep6_peer_downloading_from_us() {
    let (mut p, cat, now, _) = fast_attached(&[0]);
    p.receive(&[msg(15, &[]), msg(2, &[])].concat(), now, &cat).unwrap();
    p.set_choking(false);
    p.take_output(&mut Vec::new());
    p.piece_stored(3);
    let mut out = Vec::new();
    p.take_output(&mut out);
    assert_eq!(messages(&out), vec![vec![4, 0, 0, 0, 3], vec![13, 0, 0, 0, 3]], "have, then suggest");
}
