//! MSE/PE (Message Stream Encryption, "protocol encryption") on the accepting side, with no
//! sockets: the Diffie-Hellman key exchange, the `req1` sync, the infohash (SKEY) lookup by its
//! `req2` hash, the crypto negotiation, and the RC4 streams when RC4 is chosen.
//!
//! libtorrent, qBittorrent, aria2 and transmission open outgoing connections with an MSE
//! handshake by default; a box that refuses it costs each client a reconnect (libtorrent retries
//! in plaintext only on its next one-second tick). We pick plaintext whenever the peer offers it,
//! so after the handshake the payload flows unencrypted, exactly like a plaintext connection;
//! peers that insist on RC4 get RC4.
//!
//! Handshake, as the responder B (A is the connecting peer):
//! 1. A→B: Ya (96 bytes), PadA (0-512)
//! 2. B→A: Yb, PadB
//! 3. A→B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!    ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4. B→A: ENCRYPT(VC, crypto_select, len(PadD), PadD), then the payload stream.
//!
//! Every length is bounded (PadA/PadC 512, IA 65535), so a peer cannot make us buffer more
//! than about 66 KiB before the handshake is done or fails.

use num_bigint::BigUint;
use rand::Rng;
use rc4::cipher::{KeyInit, StreamCipher};
use rc4::consts::U20;
use rc4::Rc4;
use sha1::{Digest, Sha1};

/// The 768-bit MSE prime (generator 2).
const PRIME_HEX: &[u8] = b"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
/// Length of a public key (and of the shared secret S) on the wire.
pub const KEY_LEN: usize = 96;
/// Longest PadA/PadB/PadC/PadD.
const MAX_PAD: usize = 512;
const VC: [u8; 8] = [0; 8];
const CRYPTO_PLAINTEXT: u32 = 0x01;
const CRYPTO_RC4: u32 = 0x02;

/// Why an MSE handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    #[error("no req1 sync within {0} bytes after the public key")]
    NoSync(usize),
    #[error("no held release matches the requested stream key")]
    UnknownInfohash,
    #[error("bad verification constant")]
    BadVc,
    #[error("pad length {0} exceeds 512")]
    PadTooLong(usize),
    #[error("no crypto method we support offered (crypto_provide {0:#x})")]
    NoCommonCrypto(u32),
    #[error("public key out of range")]
    BadKey,
}

/// The RC4 streams of an established RC4 connection (the first 1024 keystream bytes are
/// discarded, as MSE requires).
pub struct Rc4Pair {
    /// Encrypts what we send (keyB).
    pub enc: Rc4<U20>,
    /// Decrypts what we receive (keyA).
    pub dec: Rc4<U20>,
}

impl std::fmt::Debug for Rc4Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rc4Pair")
    }
}

/// A finished handshake.
#[derive(Debug)]
pub struct Established {
    /// The release the peer asked for (SKEY).
    pub infohash: [u8; 20],
    /// Payload bytes already received, decrypted: the initial payload (IA, normally the
    /// BitTorrent handshake) and whatever followed it.
    pub payload: Vec<u8>,
    /// `None` when plaintext was selected.
    pub rc4: Option<Rc4Pair>,
}

enum State {
    /// Waiting for Ya.
    PublicKey,
    /// Ya seen; looking for HASH('req1', S) within PadA.
    Sync {
        s: Box<[u8; KEY_LEN]>,
        req1: [u8; 20],
    },
    /// Sync found: waiting for the obfuscated SKEY hash.
    Skey {
        s: Box<[u8; KEY_LEN]>,
    },
    /// Decrypting VC, crypto_provide, len(PadC).
    Vc {
        infohash: [u8; 20],
        rc4: Rc4Pair,
    },
    /// Decrypting PadC and len(IA).
    PadC {
        infohash: [u8; 20],
        rc4: Rc4Pair,
        pad: usize,
        provide: u32,
    },
    /// Step 4 sent; decrypting IA.
    Ia {
        infohash: [u8; 20],
        rc4: Rc4Pair,
        ia: usize,
        select: u32,
    },
    Failed,
}

/// The accepting side of one MSE handshake.
pub struct MseResponder {
    state: State,
    buf: Vec<u8>,
    private: BigUint,
    prefer_plaintext: bool,
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HASH('req2', SKEY): how a release's infohash appears, obfuscated, in step 3.
pub fn req2_hash(infohash: &[u8; 20]) -> [u8; 20] {
    hash(&[b"req2", infohash])
}

fn prime() -> BigUint {
    // The constant is valid hex; parse_bytes cannot fail on it.
    BigUint::parse_bytes(PRIME_HEX, 16).unwrap_or_default()
}

fn to_key_bytes(n: &BigUint) -> Box<[u8; KEY_LEN]> {
    let b = n.to_bytes_be();
    let mut out = Box::new([0u8; KEY_LEN]);
    let k = b.len().min(KEY_LEN);
    out[KEY_LEN - k..].copy_from_slice(&b[b.len() - k..]);
    out
}

fn rc4_discarded(key: &[u8; 20]) -> Rc4<U20> {
    let mut c = Rc4::<U20>::new(key.into());
    let mut discard = [0u8; 1024];
    c.apply_keystream(&mut discard);
    c
}

impl MseResponder {
    /// `prefer_plaintext`: select plaintext when the peer offers it (else RC4 when offered).
    pub fn new(prefer_plaintext: bool) -> Self {
        let secret: [u8; 20] = rand::thread_rng().gen();
        MseResponder {
            state: State::PublicKey,
            buf: Vec::new(),
            private: BigUint::from_bytes_be(&secret),
            prefer_plaintext,
        }
    }

    /// Feeds received bytes. Bytes to send are appended to `out`; `skey` maps a `req2` hash
    /// ([`req2_hash`]) to the infohash of a held release. Returns the established connection
    /// once the handshake is complete.
    pub fn receive(
        &mut self,
        data: &[u8],
        skey: &dyn Fn(&[u8; 20]) -> Option<[u8; 20]>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Established>, MseError> {
        self.buf.extend_from_slice(data);
        let r = self.advance(skey, out);
        if r.is_err() {
            self.state = State::Failed;
            self.buf = Vec::new();
        }
        r
    }

    fn advance(
        &mut self,
        skey: &dyn Fn(&[u8; 20]) -> Option<[u8; 20]>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Established>, MseError> {
        loop {
            match std::mem::replace(&mut self.state, State::Failed) {
                State::Failed => return Err(MseError::BadKey),
                State::PublicKey => {
                    if self.buf.len() < KEY_LEN {
                        self.state = State::PublicKey;
                        return Ok(None);
                    }
                    let p = prime();
                    let ya = BigUint::from_bytes_be(&self.buf[..KEY_LEN]);
                    if ya <= BigUint::from(1u32) || ya >= &p - 1u32 {
                        return Err(MseError::BadKey);
                    }
                    let yb = BigUint::from(2u32).modpow(&self.private, &p);
                    let s = to_key_bytes(&ya.modpow(&self.private, &p));
                    out.extend_from_slice(&to_key_bytes(&yb)[..]);
                    let mut rng = rand::thread_rng();
                    let pad = rng.gen_range(0..=MAX_PAD / 4);
                    out.extend((0..pad).map(|_| rng.gen::<u8>()));
                    self.buf.drain(..KEY_LEN);
                    let req1 = hash(&[b"req1", &s[..]]);
                    self.state = State::Sync { s, req1 };
                }
                State::Sync { s, req1 } => {
                    let window = &self.buf[..self.buf.len().min(MAX_PAD + 20)];
                    match window.windows(20).position(|w| w == req1) {
                        Some(at) => {
                            self.buf.drain(..at + 20);
                            self.state = State::Skey { s };
                        }
                        None if self.buf.len() >= MAX_PAD + 20 => return Err(MseError::NoSync(MAX_PAD + 20)),
                        None => {
                            self.state = State::Sync { s, req1 };
                            return Ok(None);
                        }
                    }
                }
                State::Skey { s } => {
                    if self.buf.len() < 20 {
                        self.state = State::Skey { s };
                        return Ok(None);
                    }
                    let req3 = hash(&[b"req3", &s[..]]);
                    let mut req2 = [0u8; 20];
                    for (i, b) in req2.iter_mut().enumerate() {
                        *b = self.buf[i] ^ req3[i];
                    }
                    self.buf.drain(..20);
                    let infohash = skey(&req2).ok_or(MseError::UnknownInfohash)?;
                    let rc4 = Rc4Pair {
                        enc: rc4_discarded(&hash(&[b"keyB", &s[..], &infohash])),
                        dec: rc4_discarded(&hash(&[b"keyA", &s[..], &infohash])),
                    };
                    self.state = State::Vc { infohash, rc4 };
                }
                State::Vc { infohash, mut rc4 } => {
                    if self.buf.len() < 14 {
                        self.state = State::Vc { infohash, rc4 };
                        return Ok(None);
                    }
                    let mut head: Vec<u8> = self.buf.drain(..14).collect();
                    rc4.dec.apply_keystream(&mut head);
                    if head[..8] != VC {
                        return Err(MseError::BadVc);
                    }
                    let provide = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
                    let pad = u16::from_be_bytes([head[12], head[13]]) as usize;
                    if pad > MAX_PAD {
                        return Err(MseError::PadTooLong(pad));
                    }
                    self.state = State::PadC { infohash, rc4, pad, provide };
                }
                State::PadC { infohash, mut rc4, pad, provide } => {
                    if self.buf.len() < pad + 2 {
                        self.state = State::PadC { infohash, rc4, pad, provide };
                        return Ok(None);
                    }
                    let mut b: Vec<u8> = self.buf.drain(..pad + 2).collect();
                    rc4.dec.apply_keystream(&mut b);
                    let ia = u16::from_be_bytes([b[pad], b[pad + 1]]) as usize;
                    let select =
                        if provide & CRYPTO_PLAINTEXT != 0 && (self.prefer_plaintext || provide & CRYPTO_RC4 == 0) {
                            CRYPTO_PLAINTEXT
                        } else if provide & CRYPTO_RC4 != 0 {
                            CRYPTO_RC4
                        } else {
                            return Err(MseError::NoCommonCrypto(provide));
                        };
                    // Step 4 (VC, crypto_select, len(PadD) = 0, under keyB) goes out now, before
                    // IA arrives: libtorrent sends IA in a second small write that its Nagle
                    // holds until this answer acknowledges the first (a 40 ms delayed-ACK stall).
                    let start = out.len();
                    out.extend_from_slice(&VC);
                    out.extend_from_slice(&select.to_be_bytes());
                    out.extend_from_slice(&[0, 0]);
                    rc4.enc.apply_keystream(&mut out[start..]);
                    self.state = State::Ia { infohash, rc4, ia, select };
                }
                State::Ia { infohash, mut rc4, ia, select } => {
                    if self.buf.len() < ia {
                        self.state = State::Ia { infohash, rc4, ia, select };
                        return Ok(None);
                    }
                    let mut payload = std::mem::take(&mut self.buf);
                    rc4.dec.apply_keystream(&mut payload[..ia]);
                    if select == CRYPTO_RC4 {
                        rc4.dec.apply_keystream(&mut payload[ia..]);
                    }
                    let rc4 = (select == CRYPTO_RC4).then_some(rc4);
                    return Ok(Some(Established { infohash, payload, rc4 }));
                }
            }
        }
    }
}

/// The connecting side (A) of the handshake, for tests: a minimal initiator that sends the
/// BitTorrent handshake as IA.
#[cfg(test)]
pub(crate) mod initiator {
    use super::*;

    pub struct Initiator {
        private: BigUint,
        pub infohash: [u8; 20],
    }

    impl Initiator {
        pub fn new(infohash: [u8; 20]) -> Self {
            let secret: [u8; 20] = rand::thread_rng().gen();
            Initiator { private: BigUint::from_bytes_be(&secret), infohash }
        }

        /// Step 1: Ya and `pad` bytes of PadA.
        pub fn hello(&self, pad: usize) -> Vec<u8> {
            let mut v = to_key_bytes(&BigUint::from(2u32).modpow(&self.private, &prime())).to_vec();
            v.extend(std::iter::repeat_n(0xAA, pad));
            v
        }

        /// Step 3 from Yb; returns the bytes and the RC4 pair from A's side (enc = keyA, dec = keyB).
        pub fn step3(&self, yb: &[u8], provide: u32, ia: &[u8]) -> (Vec<u8>, Rc4Pair) {
            let s = to_key_bytes(&BigUint::from_bytes_be(&yb[..KEY_LEN]).modpow(&self.private, &prime()));
            let mut v = hash(&[b"req1", &s[..]]).to_vec();
            let req2 = req2_hash(&self.infohash);
            let req3 = hash(&[b"req3", &s[..]]);
            v.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
            let mut rc4 = Rc4Pair {
                enc: rc4_discarded(&hash(&[b"keyA", &s[..], &self.infohash])),
                dec: rc4_discarded(&hash(&[b"keyB", &s[..], &self.infohash])),
            };
            let start = v.len();
            v.extend_from_slice(&VC);
            v.extend_from_slice(&provide.to_be_bytes());
            v.extend_from_slice(&3u16.to_be_bytes());
            v.extend_from_slice(&[1, 2, 3]);
            v.extend_from_slice(&(ia.len() as u16).to_be_bytes());
            v.extend_from_slice(ia);
            rc4.enc.apply_keystream(&mut v[start..]);
            (v, rc4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::initiator::Initiator;
    use super::*;

    const IH: [u8; 20] = [7; 20];

    fn lookup(req2: &[u8; 20]) -> Option<[u8; 20]> {
        (*req2 == req2_hash(&IH)).then_some(IH)
    }

    /// Runs a handshake; returns what B sent after Yb+PadB (step 4 onwards), and the result.
    fn handshake(provide: u32, prefer_plaintext: bool, after: &[u8]) -> (Vec<u8>, Established, Rc4Pair) {
        let a = Initiator::new(IH);
        let mut b = MseResponder::new(prefer_plaintext);
        let mut out = Vec::new();
        // Ya and PadA split across reads.
        let hello = a.hello(300);
        assert!(b.receive(&hello[..50], &lookup, &mut out).expect("partial key").is_none());
        assert!(out.is_empty(), "nothing is sent before the whole key arrived");
        assert!(b.receive(&hello[50..], &lookup, &mut out).expect("key").is_none());
        assert!(out.len() >= KEY_LEN && out.len() <= KEY_LEN + MAX_PAD, "Yb + PadB");
        let yb = out[..KEY_LEN].to_vec();
        let pad_b = out.len() - KEY_LEN;
        let (mut step3, mut rc4) = a.step3(&yb, provide, b"\x13BitTorrent protocol-IA");
        step3.extend_from_slice(after);
        let mut done = None;
        let mut later = Vec::new();
        for chunk in step3.chunks(7) {
            match &done {
                // Bytes after the read that completed the handshake belong to the stream.
                Some(_) => later.extend_from_slice(chunk),
                None => done = b.receive(chunk, &lookup, &mut out).expect("step 3"),
            }
        }
        let mut est = done.expect("handshake completes");
        est.payload.extend_from_slice(&later);
        let mut reply = out[KEY_LEN + pad_b..].to_vec();
        rc4.dec.apply_keystream(&mut reply[..14]);
        assert_eq!(&reply[..8], &VC);
        assert_eq!(reply.len(), 14, "VC, crypto_select, len(PadD)=0 and nothing else");
        if let Some(ours) = est.rc4.as_mut() {
            // Both directions continue the same keystreams.
            let mut probe = *b"ping";
            ours.enc.apply_keystream(&mut probe);
            rc4.dec.apply_keystream(&mut probe);
            assert_eq!(&probe, b"ping");
        }
        (reply, est, rc4)
    }

    #[test]
    fn plaintext_is_selected_when_offered_and_payload_follows_unencrypted() {
        let (reply, est, _) = handshake(CRYPTO_PLAINTEXT | CRYPTO_RC4, true, b"\0\0\0\x01\x02");
        assert_eq!(u32::from_be_bytes([reply[8], reply[9], reply[10], reply[11]]), CRYPTO_PLAINTEXT);
        assert!(est.rc4.is_none());
        assert_eq!(est.infohash, IH);
        assert_eq!(est.payload, b"\x13BitTorrent protocol-IA\0\0\0\x01\x02");
    }

    #[test]
    fn rc4_is_selected_when_the_peer_insists_and_the_stream_is_decrypted() {
        let a_payload = b"\0\0\0\x01\x02".to_vec();
        // The bytes after IA are RC4 under keyA too: encrypt them with A's stream in order.
        let a = Initiator::new(IH);
        let mut b = MseResponder::new(true);
        let mut out = Vec::new();
        assert!(b.receive(&a.hello(0), &lookup, &mut out).expect("key").is_none());
        let (mut step3, mut rc4) = a.step3(&out[..KEY_LEN], CRYPTO_RC4, b"IA");
        let mut tail = a_payload.clone();
        rc4.enc.apply_keystream(&mut tail);
        step3.extend_from_slice(&tail);
        let est = b.receive(&step3, &lookup, &mut out).expect("step 3").expect("established");
        assert!(est.rc4.is_some());
        assert_eq!(est.payload, [b"IA".as_slice(), &a_payload].concat());
        let (reply, est, _) = handshake(CRYPTO_RC4, true, b"");
        assert_eq!(u32::from_be_bytes([reply[8], reply[9], reply[10], reply[11]]), CRYPTO_RC4);
        assert!(est.rc4.is_some());
        // Without a plaintext preference RC4 wins when both are offered.
        let (reply, _, _) = handshake(CRYPTO_PLAINTEXT | CRYPTO_RC4, false, b"");
        assert_eq!(u32::from_be_bytes([reply[8], reply[9], reply[10], reply[11]]), CRYPTO_RC4);
    }

    #[test]
    fn crypto_select_goes_out_before_the_initial_payload_arrives() {
        let a = Initiator::new(IH);
        let mut b = MseResponder::new(true);
        let mut out = Vec::new();
        assert!(b.receive(&a.hello(0), &lookup, &mut out).expect("key").is_none());
        let sent_yb = out.len();
        let ia = [0x13u8; 68];
        let (step3, mut rc4) = a.step3(&out[..KEY_LEN], CRYPTO_PLAINTEXT | CRYPTO_RC4, &ia);
        let (head, tail) = step3.split_at(step3.len() - ia.len());
        assert!(b.receive(head, &lookup, &mut out).expect("head").is_none(), "IA still missing");
        assert_eq!(out.len(), sent_yb + 14, "step 4 is sent without waiting for IA");
        let mut reply = out[sent_yb..].to_vec();
        rc4.dec.apply_keystream(&mut reply);
        assert_eq!(&reply[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let est = b.receive(tail, &lookup, &mut out).expect("IA").expect("established");
        assert_eq!(est.payload, ia);
        assert_eq!(out.len(), sent_yb + 14, "nothing more to send");
    }

    #[test]
    fn garbage_after_the_key_fails_once_the_sync_window_is_exhausted() {
        let mut b = MseResponder::new(true);
        let mut out = Vec::new();
        let mut junk = vec![0x8c; KEY_LEN];
        junk.extend(std::iter::repeat_n(0x55, MAX_PAD + 19));
        assert!(b.receive(&junk, &lookup, &mut out).expect("still searching").is_none());
        assert_eq!(b.receive(&[0x55], &lookup, &mut out).err(), Some(MseError::NoSync(MAX_PAD + 20)));
        assert!(b.receive(&[0], &lookup, &mut out).is_err(), "stays failed");
    }

    #[test]
    fn unknown_release_and_bad_offers_fail() {
        let other = Initiator::new([9; 20]);
        let mut b = MseResponder::new(true);
        let mut out = Vec::new();
        assert!(b.receive(&other.hello(0), &lookup, &mut out).expect("key").is_none());
        let (step3, _) = other.step3(&out[..KEY_LEN], CRYPTO_PLAINTEXT, b"");
        assert_eq!(b.receive(&step3, &lookup, &mut out).err(), Some(MseError::UnknownInfohash));

        let a = Initiator::new(IH);
        let mut b = MseResponder::new(true);
        let mut out = Vec::new();
        assert!(b.receive(&a.hello(0), &lookup, &mut out).expect("key").is_none());
        let (step3, _) = a.step3(&out[..KEY_LEN], 0x08, b"");
        assert_eq!(b.receive(&step3, &lookup, &mut out).err(), Some(MseError::NoCommonCrypto(0x08)));

        let mut b = MseResponder::new(true);
        let mut out = Vec::new();
        assert_eq!(b.receive(&[0u8; KEY_LEN], &lookup, &mut out).err(), Some(MseError::BadKey));
        assert!(out.is_empty());
    }
}
