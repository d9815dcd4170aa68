//! The small text parsers every config, URL and API goes through (`popseed_core`): InfoHash
//! (40 hex digits: portal URLs, staff API, tracker), ByteSize ("400GiB": popseed.toml,
//! agent.toml, critical ranges), certificate fingerprints (origins), and publisher keys
//! (`popseed_release::PublicKey::from_text`: manifests, trusted_keys).
//!
//! Input: byte 0 picks the parser, the rest is the text (lossy UTF-8).
//!
//! Asserts: no panic; what parses prints back in canonical form and that form parses to the
//! same value; errors echo at most a bounded prefix of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popseed_core::{parse_fingerprint, ByteSize, InfoHash};
use popseed_release::PublicKey;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let s = String::from_utf8_lossy(rest);
    match sel % 4 {
        0 => match s.parse::<InfoHash>() {
            Ok(ih) => {
                assert_eq!(ih.to_string(), s.to_ascii_lowercase());
                assert_eq!(ih.to_string().parse::<InfoHash>(), Ok(ih));
                let json = serde_json::to_string(&ih).expect("serializes");
                assert_eq!(serde_json::from_str::<InfoHash>(&json).expect("deserializes"), ih);
            }
            Err(e) => assert!(e.input.chars().count() <= 64),
        },
        1 => {
            match s.parse::<ByteSize>() {
                Ok(n) => {
                    assert_eq!(n.get().to_string().parse::<ByteSize>(), Ok(n), "plain byte counts round-trip");
                    let _ = n.to_string();
                }
                Err(e) => assert!(e.input.chars().count() <= 64),
            }
            if let Ok(json) = serde_json::to_string(&*s) {
                let _ = serde_json::from_str::<ByteSize>(&json);
            }
            if rest.len() >= 8 {
                let f = f64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
                let h = ByteSize::human(f);
                assert!(!h.is_empty() && !h.contains("NaN") && !h.contains("inf"), "{h}");
            }
        }
        2 => match parse_fingerprint(&s) {
            Ok(fp) => assert_eq!(parse_fingerprint(&hex::encode(fp)), Ok(fp)),
            Err(e) => assert!(e.input.chars().count() <= 100),
        },
        _ => {
            if let Ok(k) = PublicKey::from_text(&s) {
                assert_eq!(PublicKey::from_text(&k.to_text()).expect("canonical form parses"), k);
                assert!(k.fingerprint().starts_with("SHA256:"));
            }
        }
    }
});
