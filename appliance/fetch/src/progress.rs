//! Fill progress: pieces and bytes done, current rate, ETA, per-origin counters, time to the
//! first critical piece, and the order pieces arrived in (for operators and tests).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use popseed_core::{InfoHash, PeerSourceId};

use crate::scheduler::Source;
use serde::Serialize;

/// Counters per origin, for the web seeds, and for all BitTorrent peers together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OriginProgress {
    pub name: String,
    /// `origin`, `web_seed` or `peers`: uplink sources cost the venue's uplink, peers do not.
    pub kind: &'static str,
    pub connected: bool,
    pub dropped: bool,
    pub pieces: u64,
    pub bytes: u64,
    pub hash_failures: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReleaseProgress {
    pub infohash: InfoHash,
    pub name: String,
    pub piece_count: u32,
    pub pieces_done: u32,
    pub total_bytes: u64,
    pub bytes_done: u64,
    pub critical_pieces: u32,
    pub critical_done: u32,
    /// Milliseconds from the release being added to the fill until its first critical piece
    /// was stored (None until then, or if it has no critical piece to fetch).
    pub first_critical_ms: Option<u64>,
    /// Milliseconds from the release being added to the fill until its last piece was stored
    /// (None until this fill completes it; a release complete when added has none).
    pub fill_ms: Option<u64>,
    /// Pieces in the order this fill stored them.
    pub arrival: Vec<u32>,
    pub complete: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub releases: Vec<ReleaseProgress>,
    pub origins: Vec<OriginProgress>,
    pub bytes_fetched: u64,
    /// Bytes per second over the last few seconds.
    pub rate: f64,
    /// Seconds until every release is complete at the current rate (None when idle).
    pub eta_secs: Option<f64>,
    pub complete: bool,
}

pub(crate) struct Tracker {
    releases: Vec<(ReleaseProgress, Instant)>,
    pub(crate) origins: HashMap<Source, OriginProgress>,
    window: VecDeque<(Instant, u64)>,
    bytes_fetched: u64,
}

const WINDOW: Duration = Duration::from_secs(5);

impl Tracker {
    pub fn new() -> Self {
        Tracker { releases: Vec::new(), origins: HashMap::new(), window: VecDeque::new(), bytes_fetched: 0 }
    }

    pub fn add_release(&mut self, p: ReleaseProgress) {
        if !self.releases.iter().any(|(r, _)| r.infohash == p.infohash) {
            self.releases.push((p, Instant::now()));
        }
    }

    pub fn remove_release(&mut self, ih: &InfoHash) {
        self.releases.retain(|(r, _)| r.infohash != *ih);
    }

    /// The counters of a source; every peer connection counts in one row (`peers`).
    pub fn origin(&mut self, id: Source) -> &mut OriginProgress {
        let (key, kind) = match id {
            Source::Origin(_) => (id, "origin"),
            Source::WebSeed => (id, "web_seed"),
            Source::Peer(_) => (Source::Peer(PeerSourceId(0)), "peers"),
        };
        let row = self.origins.entry(key).or_default();
        row.kind = kind;
        if kind == "peers" && row.name.is_empty() {
            row.name = "BitTorrent peers".into();
        }
        row
    }

    pub fn stored(&mut self, ih: &InfoHash, index: u32, bytes: u64, critical: bool, origin: Source) {
        let now = Instant::now();
        self.bytes_fetched += bytes;
        self.window.push_back((now, bytes));
        while self.window.front().is_some_and(|(t, _)| now.duration_since(*t) > WINDOW) {
            self.window.pop_front();
        }
        let o = self.origin(origin);
        o.pieces += 1;
        o.bytes += bytes;
        if let Some((r, started)) = self.releases.iter_mut().find(|(r, _)| r.infohash == *ih) {
            r.pieces_done += 1;
            r.bytes_done += bytes;
            r.arrival.push(index);
            if critical {
                r.critical_done += 1;
                if r.first_critical_ms.is_none() {
                    r.first_critical_ms = Some(now.duration_since(*started).as_millis() as u64);
                }
            }
            r.complete = r.pieces_done >= r.piece_count;
            if r.complete && r.fill_ms.is_none() {
                r.fill_ms = Some(now.duration_since(*started).as_millis() as u64);
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let recent: u64 = self.window.iter().filter(|(t, _)| now.duration_since(*t) <= WINDOW).map(|(_, b)| b).sum();
        let span =
            self.window.front().map(|(t, _)| now.duration_since(*t).max(Duration::from_millis(500))).unwrap_or(WINDOW);
        let rate = recent as f64 / span.as_secs_f64();
        let remaining: u64 = self.releases.iter().map(|(r, _)| r.total_bytes - r.bytes_done.min(r.total_bytes)).sum();
        let mut origins: Vec<(Source, OriginProgress)> = self.origins.iter().map(|(k, v)| (*k, v.clone())).collect();
        origins.sort_by_key(|(k, _)| *k);
        Snapshot {
            releases: self.releases.iter().map(|(r, _)| r.clone()).collect(),
            origins: origins.into_iter().map(|(_, v)| v).collect(),
            bytes_fetched: self.bytes_fetched,
            rate,
            eta_secs: if remaining == 0 {
                Some(0.0)
            } else if rate > 0.0 {
                Some(remaining as f64 / rate)
            } else {
                None
            },
            complete: self.releases.iter().all(|(r, _)| r.complete),
        }
    }
}
