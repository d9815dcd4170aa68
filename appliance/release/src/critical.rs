//! Critical ranges: the bytes of a release that must arrive first (the first minutes of a video,
//! an installer's first file). Parses the publisher's specs and resolves them against a layout.
//!
//! Spec forms:
//! - `GLOB`             every file matching GLOB, whole
//! - `GLOB:LEN`         the first LEN bytes of each matching file (`*.mp4:8MiB`)
//! - `GLOB:START-END`   bytes START..END (END exclusive, may be empty for "to the end") of each match
//! - `@START-END`       bytes START..END of the release's concatenated byte stream
//!
//! Sizes take binary suffixes (`KiB`, `MiB`, `GiB`) or plain byte counts.

use std::ops::Range;

use globset::GlobBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{ReleaseError, Result};
use crate::layout::Layout;

/// One resolved critical range, as stored in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriticalRange {
    /// The publisher's spec this range came from.
    pub spec: String,
    /// File path, or None for a range of the whole release stream.
    pub path: Option<String>,
    /// Offset within the file (or within the stream when `path` is None).
    pub offset: u64,
    pub length: u64,
}

fn bad(spec: &str, reason: impl Into<String>) -> ReleaseError {
    ReleaseError::BadCritical { spec: spec.to_owned(), reason: reason.into() }
}

fn size(spec: &str, s: &str) -> Result<u64> {
    s.parse::<popseed_core::ByteSize>().map(popseed_core::ByteSize::get).map_err(|e| bad(spec, e.to_string()))
}

/// Parses `START-END` or `LEN` into a half-open range (END None = to the end).
fn range(spec: &str, s: &str) -> Result<(u64, Option<u64>)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let start = if a.trim().is_empty() { 0 } else { size(spec, a)? };
            let end = if b.trim().is_empty() { None } else { Some(size(spec, b)?) };
            if let Some(e) = end {
                if e <= start {
                    return Err(bad(spec, "range end must be after its start"));
                }
            }
            Ok((start, end))
        }
        None => {
            let len = size(spec, s)?;
            if len == 0 {
                return Err(bad(spec, "length must be positive"));
            }
            Ok((0, Some(len)))
        }
    }
}

/// Resolves specs against the release's files. A spec that matches nothing is an error, so a typo
/// does not silently leave a video without its fast start.
pub fn resolve(specs: &[String], layout: &Layout) -> Result<Vec<CriticalRange>> {
    let mut out = Vec::new();
    for spec in specs {
        if let Some(r) = spec.strip_prefix('@') {
            let (start, end) = range(spec, r)?;
            let end = end.unwrap_or(layout.total_length).min(layout.total_length);
            if start >= end {
                return Err(ReleaseError::CriticalMatchesNothing(spec.clone()));
            }
            out.push(CriticalRange { spec: spec.clone(), path: None, offset: start, length: end - start });
            continue;
        }
        let (pattern, r) = match spec.rsplit_once(':') {
            Some((p, r)) => (p, Some(r)),
            None => (spec.as_str(), None),
        };
        if pattern.is_empty() {
            return Err(bad(spec, "empty file pattern"));
        }
        let glob = GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|e| bad(spec, e.to_string()))?
            .compile_matcher();
        let (start, end) = match r {
            Some(r) => range(spec, r)?,
            None => (0, None),
        };
        let mut matched = false;
        for f in &layout.files {
            let path = f.path();
            if !glob.is_match(&path) {
                continue;
            }
            let e = end.unwrap_or(f.length).min(f.length);
            if start < e {
                matched = true;
                out.push(CriticalRange { spec: spec.clone(), path: Some(path), offset: start, length: e - start });
            }
        }
        if !matched {
            return Err(ReleaseError::CriticalMatchesNothing(spec.clone()));
        }
    }
    Ok(out)
}

/// The pieces covering a resolved range, or None if it names a file the layout lacks.
pub fn pieces_of(range: &CriticalRange, layout: &Layout) -> Option<Range<u32>> {
    match &range.path {
        None => Some(layout.pieces_for_range(range.offset, range.length)),
        Some(p) => layout.file_index(p).map(|i| layout.pieces_for_file_range(i, range.offset, range.length)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let files = vec![
            (vec!["v".into(), "a.mp4".into()], 100 << 20),
            (vec!["readme.txt".into()], 1000),
            (vec!["v".into(), "b.mp4".into()], 1 << 20),
        ];
        Layout::new(1 << 20, files, vec![[0; 20]; 102]).unwrap()
    }

    #[test]
    fn resolves_globs_and_ranges() {
        let l = layout();
        let r = resolve(&["*.mp4:8MiB".into()], &l).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].path.as_deref(), Some("v/a.mp4"));
        assert_eq!(r[0].length, 8 << 20);
        assert_eq!(r[1].length, 1 << 20, "clamped to the file");
        assert_eq!(pieces_of(&r[0], &l), Some(0..8));
        let r = resolve(&["readme.txt".into(), "@0-1".into(), "v/a.mp4:1MiB-".into()], &l).unwrap();
        assert_eq!(r[0].length, 1000);
        assert_eq!(r[1], CriticalRange { spec: "@0-1".into(), path: None, offset: 0, length: 1 });
        assert_eq!(r[2].offset, 1 << 20);
        assert_eq!(r[2].length, 99 << 20);
    }

    #[test]
    fn bad_specs_are_errors() {
        let l = layout();
        for s in ["*.mkv", "*.mp4:abc", "*.mp4:5-2", ":8MiB", "*.mp4:0", "[:1"] {
            assert!(resolve(&[s.into()], &l).is_err(), "{s}");
        }
    }
}
