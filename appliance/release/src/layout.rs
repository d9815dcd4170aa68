//! The byte layout of a release: files laid end to end in torrent order, cut into pieces. Maps
//! pieces to file segments and file ranges to pieces; every component that stores or moves bytes
//! (store, origin, swarm, portal) uses this one mapping.

use std::ops::Range;

use crate::error::{ReleaseError, Result};

/// One file of a release, at its position in the concatenated byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutFile {
    /// Path components below the release root (validated: no `..`, no separators).
    pub components: Vec<String>,
    pub length: u64,
    /// Offset of the file's first byte in the release's byte stream.
    pub offset: u64,
}

impl LayoutFile {
    /// Relative path with `/` separators, as shown to people and written in manifests.
    pub fn path(&self) -> String {
        self.components.join("/")
    }
}

/// A contiguous run of a piece (or any range) that lies within one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub file: usize,
    pub file_offset: u64,
    pub len: u64,
}

/// Files, piece length and piece hashes of one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub piece_length: u32,
    pub total_length: u64,
    pub files: Vec<LayoutFile>,
    pub piece_hashes: Vec<[u8; 20]>,
}

/// Refuses path components that could escape the release directory or are not portable.
pub fn check_component(c: &str) -> Result<()> {
    if c.is_empty() || c == "." || c == ".." || c.contains('/') || c.contains('\\') || c.contains('\0') {
        return Err(ReleaseError::UnsafePath(c.to_owned()));
    }
    Ok(())
}

impl Layout {
    /// Builds a layout from (components, length) pairs; validates paths and the piece count.
    pub fn new(piece_length: u32, files: Vec<(Vec<String>, u64)>, piece_hashes: Vec<[u8; 20]>) -> Result<Self> {
        if piece_length == 0 {
            return Err(ReleaseError::BadTorrent("piece length is 0".into()));
        }
        let mut offset = 0u64;
        let mut out = Vec::with_capacity(files.len());
        for (components, length) in files {
            if components.is_empty() {
                return Err(ReleaseError::UnsafePath(String::new()));
            }
            for c in &components {
                check_component(c)?;
            }
            out.push(LayoutFile { components, length, offset });
            offset =
                offset.checked_add(length).ok_or_else(|| ReleaseError::BadTorrent("total length overflows".into()))?;
        }
        let expected = offset.div_ceil(piece_length as u64);
        if expected != piece_hashes.len() as u64 {
            return Err(ReleaseError::BadTorrent(format!(
                "{} piece hashes for {} bytes at piece length {} (expected {})",
                piece_hashes.len(),
                offset,
                piece_length,
                expected
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &out {
            if !seen.insert(f.components.clone()) {
                return Err(ReleaseError::BadTorrent(format!("duplicate file path {:?}", f.path())));
            }
        }
        Ok(Layout { piece_length, total_length: offset, files: out, piece_hashes })
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_hashes.len() as u32
    }

    /// Byte offset of piece `index` in the release stream.
    pub fn piece_offset(&self, index: u32) -> u64 {
        index as u64 * self.piece_length as u64
    }

    /// Length of piece `index` (the last one may be short); None when out of range.
    pub fn piece_size(&self, index: u32) -> Option<u32> {
        if index >= self.piece_count() {
            return None;
        }
        let start = self.piece_offset(index);
        Some((self.total_length - start).min(self.piece_length as u64) as u32)
    }

    pub fn piece_hash(&self, index: u32) -> Option<&[u8; 20]> {
        self.piece_hashes.get(index as usize)
    }

    /// The file segments that make up bytes `[offset, offset+len)` of the release stream.
    /// Zero-length files contribute no segment.
    pub fn segments(&self, offset: u64, len: u64) -> Vec<Segment> {
        let end = offset.saturating_add(len).min(self.total_length);
        let mut out = Vec::new();
        if offset >= end {
            return out;
        }
        // first file whose end is past `offset`
        let first = self.files.partition_point(|f| f.offset + f.length <= offset);
        for (i, f) in self.files.iter().enumerate().skip(first) {
            if f.offset >= end {
                break;
            }
            if f.length == 0 {
                continue;
            }
            let s = offset.max(f.offset);
            let e = end.min(f.offset + f.length);
            if s < e {
                out.push(Segment { file: i, file_offset: s - f.offset, len: e - s });
            }
        }
        out
    }

    /// The segments of piece `index`.
    pub fn piece_segments(&self, index: u32) -> Vec<Segment> {
        match self.piece_size(index) {
            Some(size) => self.segments(self.piece_offset(index), size as u64),
            None => Vec::new(),
        }
    }

    /// Pieces that hold any byte of `[offset, offset+len)` of the stream.
    pub fn pieces_for_range(&self, offset: u64, len: u64) -> Range<u32> {
        let end = offset.saturating_add(len).min(self.total_length);
        if offset >= end {
            return 0..0;
        }
        let pl = self.piece_length as u64;
        (offset / pl) as u32..end.div_ceil(pl) as u32
    }

    /// Pieces that hold any byte of `[offset, offset+len)` of file `file`.
    pub fn pieces_for_file_range(&self, file: usize, offset: u64, len: u64) -> Range<u32> {
        match self.files.get(file) {
            Some(f) if offset < f.length => {
                let len = len.min(f.length - offset);
                self.pieces_for_range(f.offset + offset, len)
            }
            _ => 0..0,
        }
    }

    /// Index of the file with this relative path (`a/b.txt`).
    pub fn file_index(&self, path: &str) -> Option<usize> {
        self.files.iter().position(|f| f.path() == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        // files: a=10, empty=0, b=25 ; piece length 16 -> 35 bytes, 3 pieces
        Layout::new(
            16,
            vec![(vec!["a".into()], 10), (vec!["e".into()], 0), (vec!["d".into(), "b".into()], 25)],
            vec![[0; 20]; 3],
        )
        .unwrap()
    }

    #[test]
    fn piece_mapping() {
        let l = layout();
        assert_eq!(l.total_length, 35);
        assert_eq!(l.piece_size(2), Some(3));
        assert_eq!(l.piece_size(3), None);
        assert_eq!(
            l.piece_segments(0),
            vec![Segment { file: 0, file_offset: 0, len: 10 }, Segment { file: 2, file_offset: 0, len: 6 }]
        );
        assert_eq!(l.piece_segments(2), vec![Segment { file: 2, file_offset: 22, len: 3 }]);
        assert_eq!(l.pieces_for_file_range(2, 0, 100), 0..3);
        assert_eq!(l.pieces_for_file_range(0, 0, 1), 0..1);
        assert_eq!(l.pieces_for_file_range(1, 0, 1), 0..0);
        assert_eq!(l.file_index("d/b"), Some(2));
    }

    #[test]
    fn rejects_bad_layouts() {
        assert!(Layout::new(16, vec![(vec!["..".into()], 1)], vec![[0; 20]]).is_err());
        assert!(Layout::new(16, vec![(vec!["a/b".into()], 1)], vec![[0; 20]]).is_err());
        assert!(Layout::new(16, vec![(vec!["a".into()], 17)], vec![[0; 20]]).is_err());
        assert!(Layout::new(16, vec![(vec!["a".into()], 1), (vec!["a".into()], 1)], vec![[0; 20]]).is_err());
    }
}
