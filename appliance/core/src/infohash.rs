//! [`InfoHash`]: the SHA-1 of a release's bencoded info dictionary, the name of a release
//! everywhere (store paths, URLs, jobs, the wire). Its text form is 40 hex digits, lowercase
//! when written; parsing accepts either case. This is the only hex-infohash parser.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A BitTorrent v1 infohash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

/// Text that is not 40 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an infohash (40 hex digits)")]
pub struct ParseInfoHashError {
    /// What was given (at most the first 64 characters).
    pub input: String,
}

/// Longest input echoed back in a [`ParseInfoHashError`].
const ECHO_MAX: usize = 64;

impl InfoHash {
    pub const fn new(bytes: [u8; 20]) -> Self {
        InfoHash(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    pub const fn into_bytes(self) -> [u8; 20] {
        self.0
    }

    /// From exactly 20 bytes, e.g. a field of a wire message.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 20]>::try_from(b).ok().map(InfoHash)
    }

    /// The lowercase hex form (same as `to_string()`).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<[u8; 20]> for InfoHash {
    fn from(b: [u8; 20]) -> Self {
        InfoHash(b)
    }
}

impl From<InfoHash> for [u8; 20] {
    fn from(ih: InfoHash) -> Self {
        ih.0
    }
}

impl AsRef<[u8]> for InfoHash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 40];
        // cannot fail: the buffer is exactly twice the input
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.pad(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({self})")
    }
}

impl FromStr for InfoHash {
    type Err = ParseInfoHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 20];
        if s.len() != 40 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(ParseInfoHashError { input: s.chars().take(ECHO_MAX).collect() });
        }
        Ok(InfoHash(out))
    }
}

impl Serialize for InfoHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InfoHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn hex_round_trip_and_either_case() {
        let ih: InfoHash = HEX.parse().unwrap();
        assert_eq!(ih.to_string(), HEX);
        assert_eq!(ih.to_hex(), HEX);
        assert_eq!(HEX.to_uppercase().parse::<InfoHash>().unwrap(), ih);
        assert_eq!(format!("{ih:?}"), format!("InfoHash({HEX})"));
    }

    #[test]
    fn rejects_what_is_not_40_hex_digits() {
        for bad in ["", "0123", &HEX[..39], &format!("{HEX}0"), "zz23456789abcdef0123456789abcdef01234567", "é"] {
            let e = bad.parse::<InfoHash>().unwrap_err();
            assert!(e.to_string().contains("not an infohash"), "{e}");
        }
        let long = "x".repeat(10_000);
        assert_eq!(long.parse::<InfoHash>().unwrap_err().input.len(), ECHO_MAX, "long input is not echoed whole");
    }

    #[test]
    fn serde_is_the_hex_string() {
        let ih: InfoHash = HEX.parse().unwrap();
        let j = serde_json::to_string(&ih).unwrap();
        assert_eq!(j, format!("\"{HEX}\""));
        assert_eq!(serde_json::from_str::<InfoHash>(&j).unwrap(), ih);
        assert!(serde_json::from_str::<InfoHash>("\"nothex\"").is_err());
        assert!(serde_json::from_str::<InfoHash>("42").is_err());
    }

    #[test]
    fn bytes_conversions() {
        let b = [7u8; 20];
        let ih = InfoHash::from(b);
        assert_eq!(ih.as_bytes(), &b);
        assert_eq!(<[u8; 20]>::from(ih), b);
        assert_eq!(InfoHash::from_slice(&b), Some(ih));
        assert_eq!(InfoHash::from_slice(&b[..19]), None);
    }
}
