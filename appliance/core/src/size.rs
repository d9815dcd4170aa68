//! [`ByteSize`]: byte counts as people write them (`16MiB`, `1.5GB`, `4096`) and read them
//! (`1.5 MiB`). Every suffix is binary (`K`, `KB` and `KiB` are all 1024: what a person sizing
//! a disk or a piece means); display is binary too. This is the only size parser and formatter.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

/// Text that is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a size: {reason}")]
pub struct ParseSizeError {
    pub input: String,
    pub reason: String,
}

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

impl ByteSize {
    pub const fn b(n: u64) -> Self {
        ByteSize(n)
    }

    pub const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }

    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// `1.5 MiB`: bytes as a person reads them (an `f64`, e.g. an average, rounds the same way).
    pub fn human(n: f64) -> String {
        let mut v = if n.is_finite() { n.max(0.0) } else { 0.0 };
        let mut u = 0;
        while v >= 1024.0 && u < UNITS.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        if u == 0 {
            format!("{v:.0} B")
        } else {
            format!("{v:.1} {}", UNITS[u])
        }
    }

    /// `1.5 MiB/s` for a rate in bytes per second.
    pub fn human_rate(bytes_per_sec: f64) -> String {
        format!("{}/s", Self::human(bytes_per_sec))
    }
}

impl From<u64> for ByteSize {
    fn from(n: u64) -> Self {
        ByteSize(n)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&Self::human(self.0 as f64))
    }
}

impl FromStr for ByteSize {
    type Err = ParseSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_size::Config::new()
            .with_binary()
            .parse_size(s.trim())
            .map(ByteSize)
            .map_err(|e| ParseSizeError { input: s.chars().take(64).collect(), reason: e.to_string() })
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// An integer (bytes) or a string such as `"200GiB"`.
impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            N(u64),
            S(std::borrow::Cow<'a, str>),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_people_write() {
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert_eq!("256KiB".parse::<ByteSize>().unwrap(), ByteSize::kib(256));
        assert_eq!("16MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(16));
        assert_eq!("1M".parse::<ByteSize>().unwrap(), ByteSize::mib(1), "a bare suffix is binary");
        assert_eq!("1MB".parse::<ByteSize>().unwrap(), ByteSize::mib(1), "every suffix is binary");
        assert_eq!(" 2 GiB ".parse::<ByteSize>().unwrap(), ByteSize::gib(2));
        let e = "lots".parse::<ByteSize>().unwrap_err();
        assert!(e.to_string().starts_with("\"lots\" is not a size"), "{e}");
        assert!("-1".parse::<ByteSize>().is_err());
    }

    #[test]
    fn displays_binary_units() {
        assert_eq!(ByteSize(0).to_string(), "0 B");
        assert_eq!(ByteSize(1023).to_string(), "1023 B");
        assert_eq!(ByteSize(1536 << 10).to_string(), "1.5 MiB");
        assert_eq!(ByteSize::gib(3).to_string(), "3.0 GiB");
        assert_eq!(ByteSize(u64::MAX).to_string(), "16.0 EiB");
        assert_eq!(ByteSize::human(-5.0), "0 B");
        assert_eq!(ByteSize::human(f64::NAN), "0 B");
        assert_eq!(ByteSize::human_rate(3.0 * 1024.0 * 1024.0), "3.0 MiB/s");
    }

    #[test]
    fn serde_takes_numbers_and_strings() {
        assert_eq!(serde_json::from_str::<ByteSize>("\"1MiB\"").unwrap(), ByteSize::mib(1));
        assert_eq!(serde_json::from_str::<ByteSize>("12").unwrap(), ByteSize(12));
        assert!(serde_json::from_str::<ByteSize>("\"x\"").is_err());
        assert_eq!(serde_json::to_string(&ByteSize(7)).unwrap(), "7");
    }
}
