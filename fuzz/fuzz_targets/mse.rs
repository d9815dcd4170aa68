//! The MSE/PE (encrypted BitTorrent) handshake on the accepting side, as any peer on the
//! Wi-Fi can open it: `popseed_swarm::mse::MseResponder`.
//!
//! Two modes (byte 0, bit 0):
//! - raw: the rest of the input is what the peer sends (it reaches the key check and the
//!   req1 search; past that a peer must know the shared secret);
//! - scripted: the harness plays a real initiator (DH key from the input), so the fuzzer
//!   steers everything after the key exchange: PadA length, a wrong or right infohash, a
//!   corrupted VC, crypto_provide, PadC, IA, the bytes after it, and how it is all cut into
//!   reads.
//!
//! Asserts: no panic; nothing is sent before a whole public key arrived; no more than
//! ~66 KiB is ever buffered; a failed handshake stays failed; in scripted mode the outcome is
//! exactly the one the spec gives (NoSync, UnknownInfohash, BadVc, PadTooLong, NoCommonCrypto,
//! or established with plaintext preferred, the right infohash and IA plus the following bytes
//! decrypted as the payload) and step 4 decrypts to VC, crypto_select and an empty PadD.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popseed_fuzz::{chunks, Initiator, CRYPTO_PLAINTEXT, CRYPTO_RC4, MSE_KEY_LEN};
use popseed_swarm::mse::{req2_hash, Established, MseError, MseResponder};
use rc4::cipher::StreamCipher;

const IH: [u8; 20] = [7; 20];

fn lookup(req2: &[u8; 20]) -> Option<[u8; 20]> {
    (*req2 == req2_hash(&IH)).then_some(IH)
}

/// Feeds the chunks in order; returns the result and the bytes that came after the read that
/// finished the handshake (they belong to the stream).
fn feed(b: &mut MseResponder, parts: &[&[u8]], out: &mut Vec<u8>) -> (Result<Option<Established>, MseError>, Vec<u8>) {
    let mut later = Vec::new();
    let mut res = Ok(None);
    for c in parts {
        if matches!(res, Ok(Some(_))) {
            later.extend_from_slice(c);
            continue;
        }
        res = b.receive(c, &lookup, out);
        if res.is_err() {
            // a failed handshake stays failed
            assert!(b.receive(b"x", &lookup, out).is_err());
            break;
        }
    }
    (res, later)
}

/// Reads a u16 length from the input (clamped) and that many bytes (padded with a pattern).
fn take<'a>(input: &mut &'a [u8], max: usize) -> Vec<u8> {
    let n = if input.len() >= 2 { u16::from_be_bytes([input[0], input[1]]) as usize % (max + 1) } else { 0 };
    *input = input.get(2..).unwrap_or(&[]);
    let mut v: Vec<u8> = input[..n.min(input.len())].to_vec();
    *input = &input[n.min(input.len())..];
    v.resize(n, 0x5a);
    v
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (head, mut rest) = data.split_at(8);
    let flags = head[0];
    let cuts = &head[1..4];
    let mut b = MseResponder::new(true);
    let mut out = Vec::new();

    if flags & 1 == 0 {
        let (res, _) = feed(&mut b, &chunks(rest, cuts), &mut out);
        if rest.len() < MSE_KEY_LEN {
            assert!(out.is_empty(), "nothing is sent before the whole key");
        }
        // A raw peer cannot know S, so it cannot get past the req1 search.
        assert!(!matches!(res, Ok(Some(_))), "established without the shared secret");
        return;
    }

    // Scripted: the harness is the initiator.
    let mut secret = [0u8; 20];
    secret[..4].copy_from_slice(&head[4..8]);
    let wrong_ih = flags & 2 != 0;
    let bad_vc = flags & 4 != 0;
    let provide = match (flags >> 3) & 7 {
        0 => CRYPTO_PLAINTEXT | CRYPTO_RC4,
        1 => CRYPTO_PLAINTEXT,
        2 => CRYPTO_RC4,
        3 => 0,
        4 => 0x08,
        5 => 0xffff_fffc,
        6 => CRYPTO_RC4 | 0x10,
        _ => 0xffff_ffff,
    };
    let a = Initiator::new(secret, if wrong_ih { [9; 20] } else { IH });
    let pad_a = take(&mut rest, 600);
    let pad_c = take(&mut rest, 600);
    let ia = take(&mut rest, 2000);
    let tail = rest.to_vec();

    let hello = a.hello(&pad_a);
    let (res, _) = feed(&mut b, &chunks(&hello, cuts), &mut out);
    if pad_a.len() >= 532 {
        // req1 cannot start within the 532-byte window after the key
        assert_eq!(res.err(), Some(MseError::NoSync(532)));
        return;
    }
    let res = res.expect("a valid key and a PadA within bounds never fail");
    assert!(res.is_none());
    assert!(out.len() >= MSE_KEY_LEN && out.len() <= MSE_KEY_LEN + 512, "Yb and PadB");
    let sent_before = out.len();
    let mut yb = [0u8; MSE_KEY_LEN];
    yb.copy_from_slice(&out[..MSE_KEY_LEN]);

    let vc = if bad_vc { [0, 0, 0, 0, 0, 0, 0, 1] } else { [0; 8] };
    let mut s3 = a.step3(&yb, vc, provide, &pad_c, &ia);
    let rc4_chosen = provide & CRYPTO_PLAINTEXT == 0 && provide & CRYPTO_RC4 != 0;
    let mut after = tail.clone();
    if rc4_chosen {
        s3.enc.apply_keystream(&mut after);
    }
    let mut wire = s3.bytes.clone();
    wire.extend_from_slice(&after);
    let (res, later) = feed(&mut b, &chunks(&wire, cuts), &mut out);

    // The outcome the spec gives.
    let expected: Result<(), MseError> = if pad_a.len() > 512 {
        Err(MseError::NoSync(532))
    } else if wrong_ih {
        Err(MseError::UnknownInfohash)
    } else if bad_vc {
        Err(MseError::BadVc)
    } else if pad_c.len() > 512 {
        Err(MseError::PadTooLong(pad_c.len()))
    } else if provide & 3 == 0 {
        Err(MseError::NoCommonCrypto(provide))
    } else {
        Ok(())
    };
    match (expected, res) {
        (Err(want), Err(got)) => assert_eq!(got, want),
        (Ok(()), Ok(Some(mut est))) => {
            assert_eq!(est.infohash, IH);
            assert_eq!(est.rc4.is_some(), rc4_chosen);
            // later bytes are still encrypted when RC4 runs: decrypt them as the core does
            let mut later = later;
            if let Some(r) = est.rc4.as_mut() {
                r.dec.apply_keystream(&mut later);
            }
            est.payload.extend_from_slice(&later);
            let mut want = ia.clone();
            want.extend_from_slice(&tail);
            assert_eq!(est.payload, want, "payload is IA and what followed, decrypted");
            let mut step4 = out[sent_before..].to_vec();
            assert_eq!(step4.len(), 14, "step 4 only");
            s3.dec.apply_keystream(&mut step4);
            assert_eq!(&step4[..8], &[0; 8], "VC");
            let select = u32::from_be_bytes([step4[8], step4[9], step4[10], step4[11]]);
            assert_eq!(select, if rc4_chosen { CRYPTO_RC4 } else { CRYPTO_PLAINTEXT });
            assert_eq!(&step4[12..], &[0, 0], "empty PadD");
        }
        (want, got) => panic!("expected {want:?}, got {:?}", got.map(|e| e.map(|e| e.infohash))),
    }
});
