//! The fill's progress as one line for a person watching a terminal (`popseed agent
//! --progress`, `popseed demo`).

use popseed_core::ByteSize;
use popseed_fetch::Snapshot;

/// One line for every release being filled, the rate and ETA, and what each origin sent.
pub fn progress_line(s: &Snapshot) -> String {
    let mut parts = Vec::new();
    for r in &s.releases {
        let mut p = format!(
            "{}: {}/{} pieces, {} of {}",
            r.name,
            r.pieces_done,
            r.piece_count,
            ByteSize(r.bytes_done),
            ByteSize(r.total_bytes)
        );
        if r.critical_pieces > 0 {
            p.push_str(&format!(", critical {}/{}", r.critical_done, r.critical_pieces));
            if let Some(ms) = r.first_critical_ms {
                p.push_str(&format!(" (first after {ms} ms)"));
            }
        }
        if r.complete {
            p.push_str(", complete");
            if let Some(ms) = r.fill_ms {
                p.push_str(&format!(" in {:.1}s", ms as f64 / 1000.0));
            }
        }
        parts.push(p);
    }
    let eta = match s.eta_secs {
        Some(e) if e > 0.0 => format!(", ETA {e:.0}s"),
        _ => String::new(),
    };
    let origins: Vec<String> = s
        .origins
        .iter()
        .filter(|o| o.bytes > 0 || o.connected || o.dropped)
        .map(|o| format!("{} {}{}", o.name, ByteSize(o.bytes), if o.dropped { " (dropped)" } else { "" }))
        .collect();
    format!(
        "{} | {} | from {}",
        parts.join("; "),
        ByteSize::human_rate(s.rate) + &eta,
        if origins.is_empty() { "-".into() } else { origins.join(", ") }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use popseed_fetch::progress::{OriginProgress, ReleaseProgress};

    #[test]
    fn says_what_a_person_watching_wants() {
        let s = Snapshot {
            releases: vec![ReleaseProgress {
                name: "talks".into(),
                piece_count: 4,
                pieces_done: 4,
                total_bytes: 4 << 20,
                bytes_done: 4 << 20,
                critical_pieces: 1,
                critical_done: 1,
                first_critical_ms: Some(9),
                fill_ms: Some(1500),
                complete: true,
                ..Default::default()
            }],
            origins: vec![OriginProgress { name: "o1".into(), bytes: 4 << 20, connected: true, ..Default::default() }],
            rate: 2.0 * 1024.0 * 1024.0,
            ..Default::default()
        };
        assert_eq!(
            progress_line(&s),
            "talks: 4/4 pieces, 4.0 MiB of 4.0 MiB, critical 1/1 (first after 9 ms), complete in 1.5s | 2.0 MiB/s | from o1 4.0 MiB"
        );
    }
}
