//! Live rates: once a second the server samples the byte counters (in from origins and web
//! seeds, out to peers, out to the portal) into a ring buffer of per-second deltas; the
//! dashboard draws them as server-side SVG sparklines ([`sparkline`]). Pure, no I/O.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Seconds of history kept (and drawn).
pub const HISTORY: usize = 120;

/// Counter totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub bytes_in: u64,
    pub bytes_out_peers: u64,
    pub bytes_out_portal: u64,
}

/// Bytes per second in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub bytes_in: f64,
    pub bytes_out_peers: f64,
    pub bytes_out_portal: f64,
}

impl Rate {
    pub fn bytes_out(&self) -> f64 {
        self.bytes_out_peers + self.bytes_out_portal
    }
}

/// The ring buffer of per-second rates.
#[derive(Debug, Default)]
pub struct Samples {
    last: Option<(Totals, f64)>,
    rates: VecDeque<Rate>,
}

impl Samples {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the totals seen at `t` seconds (any monotonic clock). Counters that went down
    /// (a component restarted) count as zero for that interval.
    pub fn record(&mut self, now: Totals, t: f64) {
        if let Some((prev, pt)) = self.last {
            let dt = (t - pt).max(1e-3);
            let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
            if self.rates.len() == HISTORY {
                self.rates.pop_front();
            }
            self.rates.push_back(Rate {
                bytes_in: d(now.bytes_in, prev.bytes_in),
                bytes_out_peers: d(now.bytes_out_peers, prev.bytes_out_peers),
                bytes_out_portal: d(now.bytes_out_portal, prev.bytes_out_portal),
            });
        }
        self.last = Some((now, t));
    }

    /// Oldest first.
    pub fn history(&self) -> Vec<Rate> {
        self.rates.iter().copied().collect()
    }

    /// The mean over the last `n` samples (smooths one-second bursts).
    pub fn current(&self, n: usize) -> Rate {
        let k = self.rates.len().min(n.max(1));
        if k == 0 {
            return Rate::default();
        }
        let mut r = Rate::default();
        for s in self.rates.iter().rev().take(k) {
            r.bytes_in += s.bytes_in;
            r.bytes_out_peers += s.bytes_out_peers;
            r.bytes_out_portal += s.bytes_out_portal;
        }
        let k = k as f64;
        Rate {
            bytes_in: r.bytes_in / k,
            bytes_out_peers: r.bytes_out_peers / k,
            bytes_out_portal: r.bytes_out_portal / k,
        }
    }
}

/// An inline SVG sparkline of `values` (oldest first, right-aligned so the newest sample is at
/// the right edge of a [`HISTORY`]-wide chart), scaled to its maximum, as a filled area.
pub fn sparkline(values: &[f64], width: u32, height: u32, label: &str) -> String {
    let (w, h) = (width.max(2) as f64, height.max(2) as f64);
    let max = values.iter().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let n = values.len().min(HISTORY);
    let vals = &values[values.len() - n..];
    let step = w / (HISTORY - 1) as f64;
    let x0 = w - step * (n.saturating_sub(1)) as f64;
    let mut pts = String::new();
    for (i, v) in vals.iter().enumerate() {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        let y = if max > 0.0 { h - (v / max) * (h - 1.0) } else { h };
        if !pts.is_empty() {
            pts.push(' ');
        }
        pts.push_str(&format!("{:.1},{:.1}", x0 + step * i as f64, y));
    }
    let esc = label.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let body = if n >= 2 {
        format!(
            r#"<polygon class="area" points="{x0:.1},{h:.1} {pts} {w:.1},{h:.1}"/><polyline class="line" points="{pts}"/>"#
        )
    } else {
        String::new()
    };
    format!(
        r#"<svg class="spark" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{esc}"><line class="base" x1="0" y1="{h}" x2="{w}" y2="{h}"/>{body}</svg>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(i: u64, p: u64, q: u64) -> Totals {
        Totals { bytes_in: i, bytes_out_peers: p, bytes_out_portal: q }
    }

    #[test]
    fn rates_are_deltas_per_second() {
        let mut s = Samples::new();
        s.record(totals(0, 0, 0), 0.0);
        assert!(s.history().is_empty());
        s.record(totals(1000, 10, 0), 1.0);
        s.record(totals(4000, 10, 500), 2.0);
        s.record(totals(4000, 10, 500), 4.0);
        let h = s.history();
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].bytes_in, 1000.0);
        assert_eq!(h[1].bytes_in, 3000.0);
        assert_eq!(h[1].bytes_out_portal, 500.0);
        assert_eq!(h[2], Rate::default(), "nothing moved over two seconds");
        assert_eq!(s.current(2).bytes_in, 1500.0);
        assert_eq!(s.current(100).bytes_in, 4000.0 / 3.0);
    }

    #[test]
    fn a_counter_going_down_is_no_negative_rate_and_history_is_bounded() {
        let mut s = Samples::new();
        s.record(totals(500, 0, 0), 0.0);
        s.record(totals(100, 0, 0), 1.0);
        assert_eq!(s.history()[0].bytes_in, 0.0);
        for i in 0..(HISTORY as u64 + 50) {
            s.record(totals(100 + i, 0, 0), 2.0 + i as f64);
        }
        assert_eq!(s.history().len(), HISTORY);
    }

    #[test]
    fn sparkline_scales_to_the_maximum_and_ends_at_the_right_edge() {
        let svg = sparkline(&[0.0, 50.0, 100.0], 238, 40, "in <rate>");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(svg.contains(r#"aria-label="in &lt;rate&gt;""#), "{svg}");
        // newest sample (the maximum) at x = width, y = 1 (top, one pixel of margin)
        assert!(svg.contains("238.0,1.0\"/>"), "{svg}");
        // zero at the bottom
        assert!(svg.contains("234.0,40.0"), "{svg}");
        assert!(!svg.contains("NaN"));
        let empty = sparkline(&[], 100, 20, "x");
        assert!(!empty.contains("polyline"), "{empty}");
        let flat = sparkline(&[0.0, 0.0], 100, 20, "x");
        assert!(flat.contains("polyline") && !flat.contains("NaN"), "{flat}");
    }
}
