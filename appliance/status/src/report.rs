//! The status report: everything `/api/status`, the dashboard, `/readyz` and `popseed status`
//! show, built from plain inputs (no I/O), with the readiness rule and the one-line reason an
//! event team reads ("2 of 3 pinned jobs ready; 'Keynote videos' 61%, ETA 4 min, ...").

use popseed_core::{ByteSize, JobState};
use serde::{Deserialize, Serialize};

use crate::errors::ErrorEvent;
use crate::jobs::JobSummary;
use crate::samples::Rate;

/// Who this box is (shown on the dashboard and in `popseed status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    /// The device key's fingerprint (`SHA256:...`), once the box has one.
    pub fingerprint: Option<String>,
    pub venue: Option<String>,
}

/// Ready or not, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// Bytes of verified pieces held.
    pub used: u64,
    /// Bytes more pieces may take (budget and free-space floor both counted).
    pub free: u64,
    pub budget: Option<u64>,
    pub releases: usize,
    pub pieces: u64,
    pub evictions: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OriginStatus {
    pub name: String,
    /// `origin`, `web_seed` or `peers` ([`crate::SourceFill::kind`]).
    #[serde(default)]
    pub kind: String,
    pub connected: bool,
    pub dropped: bool,
    pub bytes: u64,
    pub hash_failures: u64,
    pub last_error: Option<String>,
}

/// Bytes per second now, and the last [`crate::samples::HISTORY`] seconds (oldest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub now: Rate,
    pub history: Vec<Rate>,
}

/// The whole status (the JSON of `GET /api/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub ready: bool,
    pub reason: String,
    pub device: DeviceInfo,
    pub version: String,
    pub uptime_secs: u64,
    /// Unix seconds when the report was made.
    pub now: u64,
    pub jobs: Vec<JobSummary>,
    pub store: StoreStatus,
    pub rates: Rates,
    pub origins: Vec<OriginStatus>,
    /// BitTorrent peers connected (None: the swarm is off).
    pub peers: Option<u64>,
    /// Attendees who acknowledged the portal recently (None: the portal is off).
    pub portal_clients: Option<u64>,
    /// Newest first.
    pub errors: Vec<ErrorEvent>,
}

/// `"4 min"`, `"1 h 20 min"`, `"<1 min"`.
pub fn fmt_eta(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "unknown".into();
    }
    let m = (secs / 60.0).ceil() as u64;
    match m {
        0 => "<1 min".into(),
        1..=59 => format!("{m} min"),
        _ => format!("{} h {} min", m / 60, m % 60),
    }
}

/// A deadline as `09:00 UTC`, or `2026-11-23 09:00 UTC` when it is not today.
pub fn fmt_deadline(deadline: u64, now: u64) -> String {
    let d = popseed_core::clock::rfc3339(deadline); // 2026-11-23T09:00:00Z
    let (date, rest) = d.split_once('T').unwrap_or((&d, ""));
    let hm = rest.get(..5).unwrap_or(rest);
    if deadline / 86_400 == now / 86_400 {
        format!("{hm} UTC")
    } else {
        format!("{date} {hm} UTC")
    }
}

/// One job in a reason line: `'Keynote videos' 61%, ETA 4 min, at risk: deadline 09:00 UTC`.
pub fn job_phrase(j: &JobSummary, now: u64) -> String {
    let mut s = format!("'{}'", j.name);
    match j.state {
        JobState::Failed => {
            s.push_str(" failed");
            if let Some(r) = &j.reason {
                s.push_str(": ");
                s.push_str(r);
            }
            return s;
        }
        JobState::Queued => s.push_str(" queued"),
        JobState::Ready => s.push_str(" ready"),
        _ => {
            s.push_str(&format!(" {}%", (j.fraction() * 100.0).floor() as u64));
            s.push_str(&match j.eta_secs {
                Some(e) => format!(", ETA {}", fmt_eta(e)),
                None => ", ETA unknown (nothing arriving)".into(),
            });
        }
    }
    if let Some(d) = j.deadline {
        if j.at_risk || d <= now {
            s.push_str(&format!(", at risk: deadline {}", fmt_deadline(d, now)));
        } else {
            s.push_str(&format!(", deadline {}", fmt_deadline(d, now)));
        }
    } else if j.at_risk {
        s.push_str(", at risk");
    }
    s
}

/// The readiness rule: ready when every pinned job (not cancelled or expired) is ready.
pub fn readiness(jobs: &[JobSummary], now: u64) -> Readiness {
    let pinned: Vec<&JobSummary> = jobs.iter().filter(|j| j.counts_for_readiness()).collect();
    if pinned.is_empty() {
        return Readiness { ready: true, reason: "nothing pinned to wait for".into() };
    }
    let ready = pinned.iter().filter(|j| j.state == JobState::Ready).count();
    let n = pinned.len();
    if ready == n {
        let reason =
            if n == 1 { format!("'{}' is ready", pinned[0].name) } else { format!("all {n} pinned jobs ready") };
        return Readiness { ready: true, reason };
    }
    // Failed first, then at risk, then the furthest from done.
    let mut waiting: Vec<&JobSummary> = pinned.iter().copied().filter(|j| j.state != JobState::Ready).collect();
    waiting.sort_by(|a, b| {
        let key = |j: &JobSummary| (j.state != JobState::Failed, !j.at_risk);
        key(a).cmp(&key(b)).then(a.fraction().total_cmp(&b.fraction()))
    });
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = waiting.iter().take(SHOWN).map(|j| job_phrase(j, now)).collect();
    if waiting.len() > SHOWN {
        parts.push(format!("and {} more", waiting.len() - SHOWN));
    }
    Readiness { ready: false, reason: format!("{ready} of {n} pinned jobs ready; {}", parts.join("; ")) }
}

/// The terminal summary (`popseed status`): banner, reason, jobs, store, rates, errors.
pub fn summary_text(r: &StatusReport) -> String {
    let mut out = String::new();
    let banner = if r.ready { "READY" } else { "NOT READY" };
    out.push_str(&format!("{banner}: {}\n", r.reason));
    let mut who = r.device.name.clone();
    if let Some(v) = &r.device.venue {
        who.push_str(&format!(" at {v}"));
    }
    if let Some(f) = &r.device.fingerprint {
        who.push_str(&format!(" ({f})"));
    }
    out.push_str(&format!(
        "device: {who}, popseed {}, up {}\n",
        r.version,
        fmt_eta(r.uptime_secs as f64).replace("<1 min", "under a minute")
    ));
    if r.jobs.is_empty() {
        out.push_str("jobs: none\n");
    } else {
        out.push_str("jobs:\n");
        for j in &r.jobs {
            let pct = (j.fraction() * 100.0).floor() as u64;
            let mut line = format!(
                "  {:<10} {:>3}%  {}  ({} of {}{}",
                j.state,
                pct,
                j.name,
                ByteSize::human(j.bytes_done as f64),
                ByteSize::human(j.bytes_total as f64),
                if j.pinned { ", pinned" } else { "" }
            );
            if matches!(j.state, JobState::Filling | JobState::Queued) {
                if let Some(e) = j.eta_secs {
                    line.push_str(&format!(", ETA {}", fmt_eta(e)));
                }
            }
            if let Some(d) = j.deadline {
                line.push_str(&format!(", deadline {}", fmt_deadline(d, r.now)));
            }
            if j.at_risk {
                line.push_str(", AT RISK");
            }
            line.push(')');
            if let Some(why) = &j.reason {
                line.push_str(&format!(": {why}"));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "store: {} used, {} free, {} releases, {} evictions\n",
        ByteSize::human(r.store.used as f64),
        ByteSize::human(r.store.free as f64),
        r.store.releases,
        r.store.evictions
    ));
    let now = r.rates.now;
    out.push_str(&format!(
        "rates: in {}/s, out {}/s to peers, {}/s to the portal\n",
        ByteSize::human(now.bytes_in),
        ByteSize::human(now.bytes_out_peers),
        ByteSize::human(now.bytes_out_portal)
    ));
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "off".into());
    out.push_str(&format!("peers: {}, portal clients: {}\n", opt(r.peers), opt(r.portal_clients)));
    for o in &r.origins {
        let state = if o.dropped {
            "dropped"
        } else if o.connected {
            "connected"
        } else {
            "not connected"
        };
        out.push_str(&format!(
            "origin {}: {state}, {} received, {} hash failures\n",
            o.name,
            ByteSize::human(o.bytes as f64),
            o.hash_failures
        ));
    }
    if !r.errors.is_empty() {
        out.push_str("recent errors:\n");
        for e in r.errors.iter().take(5) {
            let times = if e.count > 1 { format!(" (x{})", e.count) } else { String::new() };
            out.push_str(&format!("  {} {} {}: {}{times}\n", fmt_deadline(e.at, r.now), e.level, e.target, e.message));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn job(name: &str, state: JobState, pinned: bool, done: u64, total: u64) -> JobSummary {
        JobSummary {
            id: name.to_lowercase().replace(' ', "-"),
            name: name.into(),
            infohash: None,
            state,
            reason: None,
            pinned,
            priority: 0,
            deadline: None,
            bytes_done: done,
            bytes_total: total,
            eta_secs: None,
            at_risk: false,
            source: "staff".into(),
        }
    }

    // 2026-11-22 08:00:00 UTC
    const NOW: u64 = 1_795_334_400;

    #[test]
    fn ready_when_every_pinned_job_is_ready() {
        assert!(readiness(&[], NOW).ready);
        let jobs = vec![
            job("A", JobState::Ready, true, 10, 10),
            job("B", JobState::Filling, false, 1, 10),
            job("C", JobState::Cancelled, true, 0, 10),
        ];
        let r = readiness(&jobs, NOW);
        assert!(r.ready, "unpinned and cancelled jobs do not count: {r:?}");
        assert_eq!(r.reason, "'A' is ready");
        let r = readiness(&[job("A", JobState::Ready, true, 1, 1), job("B", JobState::Ready, true, 1, 1)], NOW);
        assert_eq!(r, Readiness { ready: true, reason: "all 2 pinned jobs ready".into() });
    }

    #[test]
    fn not_ready_says_which_job_how_far_and_whether_at_risk() {
        let mut keynote = job("Keynote videos", JobState::Filling, true, 61, 100);
        keynote.eta_secs = Some(230.0);
        keynote.deadline = Some(NOW + 3600);
        keynote.at_risk = true;
        let jobs = vec![job("Slides", JobState::Ready, true, 5, 5), keynote, job("Apps", JobState::Ready, true, 5, 5)];
        let r = readiness(&jobs, NOW);
        assert!(!r.ready);
        assert_eq!(r.reason, "2 of 3 pinned jobs ready; 'Keynote videos' 61%, ETA 4 min, at risk: deadline 09:00 UTC");
    }

    #[test]
    fn failed_jobs_come_first_with_their_reason() {
        let mut bad = job("Maps", JobState::Failed, true, 0, 5);
        bad.reason = Some("signed by an unknown key".into());
        let stalled = job("Videos", JobState::Filling, true, 1, 4);
        let queued = job("Docs", JobState::Queued, true, 0, 4);
        let r = readiness(&[stalled, queued, bad], NOW);
        assert!(!r.ready);
        assert_eq!(
            r.reason,
            "0 of 3 pinned jobs ready; 'Maps' failed: signed by an unknown key; 'Docs' queued; 'Videos' 25%, ETA unknown (nothing arriving)"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_eta(0.0), "<1 min");
        assert_eq!(fmt_eta(61.0), "2 min");
        assert_eq!(fmt_eta(4800.0), "1 h 20 min");
        assert_eq!(fmt_eta(f64::NAN), "unknown");
        assert_eq!(fmt_deadline(NOW + 3600, NOW), "09:00 UTC");
        assert_eq!(fmt_deadline(NOW + 86_400, NOW), "2026-11-23 08:00 UTC");
    }
}
