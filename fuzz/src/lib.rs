//! Helpers shared by the fuzz targets and the corpus generator: the fixed release every target
//! that needs one uses, a strict bencode checker, a way to cut one input into chunks, and the
//! connecting side of an MSE/PE handshake (the crate's own initiator is test-only).

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use num_bigint::BigUint;
use popseed_core::InfoHash;
use popseed_release::{publish, PublishOptions, SecretKey, VerifiedRelease};
use rc4::cipher::{KeyInit, StreamCipher};
use rc4::consts::U20;
use rc4::Rc4;
use sha1::{Digest, Sha1};

/// The key every fixture and re-signed manifest uses (fixed, so the corpus stays valid).
pub fn fixed_key() -> SecretKey {
    SecretKey(SigningKey::from_bytes(&[0x5e; 32]))
}

/// Deterministic pseudo-random bytes (xorshift).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The fixture release: folder `rel` with two files, 16 KiB pieces, one critical range. Its
/// infohash depends only on these bytes, so corpus inputs that name it stay valid.
pub const FILES: &[(&str, usize)] = &[("a.bin", 40_000), ("d/b c.bin", 5_000)];
pub const PIECE: u64 = 16 << 10;

/// Writes the fixture's source files under `root/src/rel` and publishes them to `root/out`.
pub fn publish_fixture(root: &Path) -> (VerifiedRelease, PathBuf) {
    let src = root.join("src").join("rel");
    for (i, (f, size)) in FILES.iter().enumerate() {
        let p = src.join(f);
        std::fs::create_dir_all(p.parent().expect("a file has a parent")).expect("mkdir");
        std::fs::write(&p, bytes(i as u64, *size)).expect("write fixture file");
    }
    let opts = PublishOptions {
        name: Some("rel".into()),
        version: Some("1".into()),
        piece_size: Some(PIECE),
        critical: vec!["a.bin:20KiB".into(), "@40000-".into()],
        web_seeds: vec!["http://ws.example/seed/".into()],
        trackers: vec!["http://tracker.example/announce".into()],
        license: Some("CC0-1.0".into()),
        ..Default::default()
    };
    let r = publish(&src, &fixed_key(), &root.join("out"), &opts).expect("publish the fixture");
    (r, src)
}

/// The fixture's bytes, files end to end.
pub fn fixture_stream() -> Vec<u8> {
    FILES.iter().enumerate().flat_map(|(i, (_, size))| bytes(i as u64, *size)).collect()
}

/// Cuts `data` into chunks whose sizes come from `sizes` (cycled; a 0 means "the rest"), so a
/// target can check that a parser fed in pieces agrees with the same parser fed at once.
pub fn chunks<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let s = if sizes.is_empty() { 0 } else { sizes[i % sizes.len()] as usize };
        i += 1;
        let n = if s == 0 { rest.len() } else { s.min(rest.len()) };
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// Checks that `b` is exactly one well-formed bencoded value (canonical integers, sorted and
/// unique dictionary keys are not required: peers do not send them sorted either). Returns
/// the length of the value.
pub fn bencode_value(b: &[u8]) -> Result<usize, String> {
    fn value(b: &[u8], pos: usize, depth: usize) -> Result<usize, String> {
        if depth > 64 {
            return Err("nested too deep".into());
        }
        match b.get(pos) {
            Some(b'i') => {
                let end = b[pos..].iter().position(|&c| c == b'e').ok_or("unterminated integer")? + pos;
                let digits = &b[pos + 1..end];
                let body = digits.strip_prefix(b"-").unwrap_or(digits);
                if body.is_empty() || !body.iter().all(u8::is_ascii_digit) {
                    return Err(format!("bad integer {:?}", String::from_utf8_lossy(digits)));
                }
                if (body.len() > 1 && body[0] == b'0') || digits == b"-0" {
                    return Err("non-canonical integer".into());
                }
                Ok(end + 1)
            }
            Some(b'l') => {
                let mut p = pos + 1;
                while b.get(p) != Some(&b'e') {
                    p = value(b, p, depth + 1)?;
                }
                Ok(p + 1)
            }
            Some(b'd') => {
                let mut p = pos + 1;
                while b.get(p) != Some(&b'e') {
                    if !b.get(p).is_some_and(u8::is_ascii_digit) {
                        return Err("dictionary key is not a string".into());
                    }
                    p = value(b, p, depth + 1)?;
                    p = value(b, p, depth + 1)?;
                }
                Ok(p + 1)
            }
            Some(c) if c.is_ascii_digit() => {
                let colon = b[pos..].iter().position(|&c| c == b':').ok_or("string without ':'")? + pos;
                let len: usize = std::str::from_utf8(&b[pos..colon])
                    .ok()
                    .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .ok_or("bad string length")?;
                match (colon + 1).checked_add(len) {
                    Some(end) if end <= b.len() => Ok(end),
                    _ => Err("string past the end".into()),
                }
            }
            Some(c) => Err(format!("unexpected byte {c:#x} at {pos}")),
            None => Err("truncated".into()),
        }
    }
    let end = value(b, 0, 0)?;
    if end != b.len() {
        return Err(format!("{} trailing bytes", b.len() - end));
    }
    Ok(end)
}

/// Length of the one well-formed bencoded value at the start of `b` (bytes may follow it, as
/// the piece data follows the dictionary of a ut_metadata data message).
pub fn bencode_prefix(b: &[u8]) -> Result<usize, String> {
    match bencode_value(b) {
        Ok(n) => Ok(n),
        Err(e) => match e.strip_suffix(" trailing bytes").and_then(|n| n.parse::<usize>().ok()) {
            Some(rest) => Ok(b.len() - rest),
            None => Err(e),
        },
    }
}

/// The 768-bit MSE prime.
const PRIME_HEX: &[u8] = b"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
pub const MSE_KEY_LEN: usize = 96;
pub const CRYPTO_PLAINTEXT: u32 = 1;
pub const CRYPTO_RC4: u32 = 2;

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn key_bytes(n: &BigUint) -> [u8; MSE_KEY_LEN] {
    let b = n.to_bytes_be();
    let mut out = [0u8; MSE_KEY_LEN];
    let k = b.len().min(MSE_KEY_LEN);
    out[MSE_KEY_LEN - k..].copy_from_slice(&b[b.len() - k..]);
    out
}

/// RC4 with the first 1024 bytes of keystream dropped, as MSE requires.
pub fn rc4_discarded(key: &[u8; 20]) -> Rc4<U20> {
    let mut c = Rc4::<U20>::new(key.into());
    let mut discard = [0u8; 1024];
    c.apply_keystream(&mut discard);
    c
}

/// The connecting side (A) of an MSE/PE handshake, written from the spec, with a private key
/// chosen by the fuzzer (so a run is reproducible).
pub struct Initiator {
    private: BigUint,
    pub infohash: [u8; 20],
}

/// What step 3 produced: the bytes to send and A's RC4 streams (enc = keyA, dec = keyB).
pub struct Step3 {
    pub bytes: Vec<u8>,
    pub enc: Rc4<U20>,
    pub dec: Rc4<U20>,
}

impl Initiator {
    pub fn new(secret: [u8; 20], infohash: [u8; 20]) -> Self {
        let mut secret = secret;
        secret[0] |= 0x80; // a private key of full size
        Initiator { private: BigUint::from_bytes_be(&secret), infohash }
    }

    fn prime() -> BigUint {
        BigUint::parse_bytes(PRIME_HEX, 16).expect("the MSE prime is valid hex")
    }

    /// Step 1: Ya followed by PadA.
    pub fn hello(&self, pad: &[u8]) -> Vec<u8> {
        let mut v = key_bytes(&BigUint::from(2u32).modpow(&self.private, &Self::prime())).to_vec();
        v.extend_from_slice(pad);
        v
    }

    /// Step 3 from B's public key: HASH('req1', S), the obfuscated SKEY, then under keyA:
    /// VC (possibly corrupted), crypto_provide, len(PadC), PadC, len(IA), IA.
    pub fn step3(&self, yb: &[u8; MSE_KEY_LEN], vc: [u8; 8], provide: u32, pad_c: &[u8], ia: &[u8]) -> Step3 {
        let s = key_bytes(&BigUint::from_bytes_be(yb).modpow(&self.private, &Self::prime()));
        let mut v = sha1(&[b"req1", &s]).to_vec();
        let req2 = sha1(&[b"req2", &self.infohash]);
        let req3 = sha1(&[b"req3", &s]);
        v.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
        let mut enc = rc4_discarded(&sha1(&[b"keyA", &s, &self.infohash]));
        let dec = rc4_discarded(&sha1(&[b"keyB", &s, &self.infohash]));
        let start = v.len();
        v.extend_from_slice(&vc);
        v.extend_from_slice(&provide.to_be_bytes());
        v.extend_from_slice(&(pad_c.len() as u16).to_be_bytes());
        v.extend_from_slice(pad_c);
        v.extend_from_slice(&(ia.len() as u16).to_be_bytes());
        v.extend_from_slice(ia);
        enc.apply_keystream(&mut v[start..]);
        Step3 { bytes: v, enc, dec }
    }
}

/// A plaintext BitTorrent handshake for `ih` (with the BEP 10 extension bit when `ext`).
pub fn bt_handshake(ih: &InfoHash, ext: bool) -> Vec<u8> {
    let mut h = vec![19];
    h.extend_from_slice(b"BitTorrent protocol");
    let mut reserved = [0u8; 8];
    if ext {
        reserved[5] = 0x10;
    }
    h.extend_from_slice(&reserved);
    h.extend_from_slice(ih.as_bytes());
    h.extend_from_slice(b"-FZ0001-fuzzfuzzfuzz");
    h
}

/// One length-prefixed peer-wire message.
pub fn bt_msg(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    m.push(id);
    m.extend_from_slice(payload);
    m
}
