//! HTTP byte ranges and validators for downloads: `Range` (one range, suffix ranges),
//! `If-Range` (strong ETag or exact date), `If-None-Match`, and the ETag of a stored file.
//! Pure functions; the download handler turns the outcome into 200/206/304/416.

use std::time::{SystemTime, UNIX_EPOCH};

use popseed_core::InfoHash;

/// What a `Range` header asks for, resolved against the representation's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No (usable) Range: send everything with 200. Invalid syntax and multiple ranges land
    /// here too (RFC 9110 lets a server ignore them).
    Full,
    /// Send `start..=end` with 206.
    Partial { start: u64, end: u64 },
    /// Syntactically valid but outside the representation: 416.
    Unsatisfiable,
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Resolves a `Range` header value against a length of `len` bytes.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeOutcome {
    let Some(h) = header else { return RangeOutcome::Full };
    let h = h.trim();
    let Some((unit, spec)) = h.split_once('=') else { return RangeOutcome::Full };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Full;
    }
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((a, b)) = spec.split_once('-') else { return RangeOutcome::Full };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // suffix range: the last N bytes
        let Some(n) = digits(b) else { return RangeOutcome::Full };
        if n == 0 || len == 0 {
            return RangeOutcome::Unsatisfiable;
        }
        return RangeOutcome::Partial { start: len.saturating_sub(n), end: len - 1 };
    }
    let Some(start) = digits(a) else { return RangeOutcome::Full };
    let end = if b.is_empty() {
        None
    } else {
        match digits(b) {
            Some(e) if e >= start => Some(e),
            _ => return RangeOutcome::Full, // last < first, or junk: invalid, ignored
        }
    };
    if start >= len {
        return RangeOutcome::Unsatisfiable;
    }
    let end = end.map_or(len - 1, |e| e.min(len - 1));
    RangeOutcome::Partial { start, end }
}

/// The strong ETag of file `file` of release `infohash`: the bytes can never change under it.
pub fn etag(infohash: &InfoHash, file: usize) -> String {
    format!("\"{infohash}-{file}\"")
}

/// Whether a `Range` may be honoured given `If-Range` (RFC 9110 13.1.5): only when the
/// validator matches exactly: a strong ETag by strong comparison, or a date equal to
/// `Last-Modified`. Weak tags and unparseable values never match (send the full file).
pub fn if_range_allows(if_range: Option<&str>, etag: &str, last_modified: Option<SystemTime>) -> bool {
    let Some(v) = if_range else { return true };
    let v = v.trim();
    if v.starts_with("W/") {
        return false;
    }
    if v.starts_with('"') {
        return v == etag;
    }
    match (httpdate::parse_http_date(v), last_modified) {
        (Ok(d), Some(lm)) => secs(d) == secs(lm),
        _ => false,
    }
}

/// `If-None-Match` (weak comparison, `*` matches): true when the client's copy is current (304).
pub fn if_none_match_hits(header: Option<&str>, etag: &str) -> bool {
    let Some(h) = header else { return false };
    let bare = etag.trim_start_matches("W/");
    h.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == bare)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The `Content-Range` value of a 206.
pub fn content_range(start: u64, end: u64, len: u64) -> String {
    format!("bytes {start}-{end}/{len}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use RangeOutcome::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Partial { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=10-"), 100), Partial { start: 10, end: 99 });
        assert_eq!(parse_range(Some("bytes=90-200"), 100), Partial { start: 90, end: 99 }, "end clamped");
        assert_eq!(parse_range(Some("bytes=99-99"), 100), Partial { start: 99, end: 99 });
        assert_eq!(parse_range(Some(" Bytes = 5 - 6 "), 100), Partial { start: 5, end: 6 });
    }

    #[test]
    fn suffix_ranges() {
        assert_eq!(parse_range(Some("bytes=-10"), 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Partial { start: 0, end: 99 });
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), Unsatisfiable);
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=100-200"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }

    #[test]
    fn invalid_or_multiple_ranges_are_ignored() {
        for h in [
            "bytes=9-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=1",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
            "",
            "bytes=0x10-",
        ] {
            assert_eq!(parse_range(Some(h), 100), Full, "{h:?}");
        }
    }

    #[test]
    fn if_range_with_etags_and_dates() {
        let tag = etag(&InfoHash([0xab; 20]), 3);
        assert!(tag.starts_with('"') && tag.ends_with("-3\""));
        let lm = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(if_range_allows(None, &tag, Some(lm)));
        assert!(if_range_allows(Some(&tag), &tag, Some(lm)));
        assert!(!if_range_allows(Some("\"other\""), &tag, Some(lm)));
        assert!(!if_range_allows(Some(&format!("W/{tag}")), &tag, Some(lm)), "weak never matches");
        let date = httpdate::fmt_http_date(lm);
        assert!(if_range_allows(Some(&date), &tag, Some(lm)));
        let later = httpdate::fmt_http_date(lm + Duration::from_secs(1));
        assert!(!if_range_allows(Some(&later), &tag, Some(lm)), "date must match exactly");
        assert!(!if_range_allows(Some(&date), &tag, None), "no Last-Modified: dates never match");
        assert!(!if_range_allows(Some("yesterday"), &tag, Some(lm)));
    }

    #[test]
    fn if_none_match() {
        let tag = etag(&InfoHash([1; 20]), 0);
        assert!(if_none_match_hits(Some(&tag), &tag));
        assert!(if_none_match_hits(Some(&format!("\"x\", W/{tag}")), &tag));
        assert!(if_none_match_hits(Some("*"), &tag));
        assert!(!if_none_match_hits(Some("\"x\""), &tag));
        assert!(!if_none_match_hits(None, &tag));
        assert_eq!(content_range(0, 9, 100), "bytes 0-9/100");
    }
}
