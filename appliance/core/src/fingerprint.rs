//! Certificate fingerprints: the SHA-256 of a DER certificate, as people paste them (hex, with
//! or without `:` separators or a `sha256:` prefix). This is the only fingerprint parser.

/// Text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fingerprint {input:?} is not 64 hex digits (SHA-256)")]
pub struct BadFingerprint {
    /// What was given (at most the first 100 characters).
    pub input: String,
}

/// The 32 bytes of a fingerprint written as hex.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], BadFingerprint> {
    let clean: String = s.trim().trim_start_matches("sha256:").chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    match hex::decode_to_slice(&clean, &mut out) {
        Ok(()) => Ok(out),
        Err(_) => Err(BadFingerprint { input: s.chars().take(100).collect() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_spellings() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let want = parse_fingerprint(hex).unwrap();
        assert_eq!(want[1], 0x11);
        let colons: Vec<String> = hex.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        assert_eq!(parse_fingerprint(&colons.join(":")).unwrap(), want);
        assert_eq!(parse_fingerprint(&format!("sha256:{}", hex.to_uppercase())).unwrap(), want);
        assert!(parse_fingerprint("00").is_err());
        assert!(parse_fingerprint(&format!("{hex}00")).is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }
}
