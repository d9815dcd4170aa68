//! [`PieceIndex`]: which piece of a release, counted from 0 in torrent order.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The index of a piece within one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PieceIndex(pub u32);

impl PieceIndex {
    pub const fn get(self) -> u32 {
        self.0
    }

    /// As an index into per-piece vectors.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl From<u32> for PieceIndex {
    fn from(i: u32) -> Self {
        PieceIndex(i)
    }
}

impl From<PieceIndex> for u32 {
    fn from(i: PieceIndex) -> Self {
        i.0
    }
}

impl fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_and_serializes_as_the_number() {
        let i = PieceIndex(42);
        assert_eq!(i.to_string(), "42");
        assert_eq!(serde_json::to_string(&i).unwrap(), "42");
        assert_eq!(serde_json::from_str::<PieceIndex>("42").unwrap(), i);
        assert_eq!(u32::from(i), 42);
        assert_eq!(i.as_usize(), 42usize);
    }
}
