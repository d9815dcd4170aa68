//! Signed release manifests (`manifest.json`) as a box gets them from an origin, a staff
//! upload or a device-link job: `popseed_release::manifest::open`, then
//! `VerifiedRelease::from_bytes` (manifest/.torrent agreement) and the critical-range
//! resolution a box does when it schedules the release.
//!
//! A fuzzer cannot forge an ed25519 signature, so every input is tried twice: as it is, and
//! with its `manifest` object re-signed by the harness's fixed key (the publisher key field
//! set to it), which lets the fuzzer reach the checks behind the signature. The .torrent is
//! the fixture release's (fixtures/release.torrent, made by examples/gen_corpus.rs).
//!
//! Asserts: no panic; an opened manifest names the key that signed it; re-signing a JSON
//! manifest never yields BadSignature (the canonical encoding is stable through a parse and
//! print); a manifest that opens survives sign/open unchanged; a verified release's critical
//! pieces are real, distinct pieces.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::Signer;
use libfuzzer_sys::fuzz_target;
use popseed_fuzz::fixed_key;
use popseed_release::manifest::{open, sign};
use popseed_release::{ReleaseError, VerifiedRelease};
use serde_json::{json, Value};

const TORRENT: &[u8] = include_bytes!("../fixtures/release.torrent");

fuzz_target!(|data: &[u8]| {
    if let Ok((m, k)) = open(data) {
        assert_eq!(m.publisher_key, k.to_text());
    }

    let Ok(mut root) = serde_json::from_slice::<Value>(data) else { return };
    let key = fixed_key();
    let Some(Value::Object(obj)) = root.get_mut("manifest") else { return };
    obj.insert("publisher_key".into(), Value::String(key.public().to_text()));
    let value = Value::Object(obj.clone());
    let mut msg = b"popseed-manifest-v1\n".to_vec();
    serde_json::to_writer(&mut msg, &value).expect("a JSON value prints");
    let sig = key.0.sign(&msg);
    let file = json!({
        "manifest": value,
        "signature": {"alg": "ed25519", "key": key.public().to_text(), "sig": STANDARD.encode(sig.to_bytes())},
    });
    let bytes = serde_json::to_vec_pretty(&file).expect("a JSON value prints");
    match open(&bytes) {
        Err(ReleaseError::BadSignature) => panic!("a correctly signed manifest failed to verify"),
        Err(_) => {}
        Ok((m, k)) => {
            assert_eq!(k, key.public());
            let again = sign(&m, &key).expect("an opened manifest signs");
            let (m2, _) = open(&again).expect("a manifest we signed opens");
            assert_eq!(m2, m, "sign/open round trip");
            if let Ok(r) = VerifiedRelease::from_bytes(&bytes, TORRENT, Some(&[key.public()])) {
                let count = r.layout().piece_count();
                let crit = r.critical_pieces();
                let mut seen = std::collections::HashSet::new();
                for p in &crit {
                    assert!(*p < count, "critical piece {p} of {count}");
                    assert!(seen.insert(*p), "critical piece {p} twice");
                }
                let _ = r.magnet(&["http://box/announce".into()]);
            }
        }
    }
});
