//! Swarm counters (atomics, cheap to bump from every peer task) for status and the metrics
//! exporter: bytes uploaded and downloaded, peers connected and dialed, bad pieces, and peers dropped or refused by reason.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Live counters. Read them with [`Stats::snapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Block payload bytes read from the store and queued to peers.
    pub bytes_uploaded: AtomicU64,
    /// Bytes written to peer sockets (payload and protocol overhead).
    pub bytes_sent: AtomicU64,
    pub blocks_uploaded: AtomicU64,
    pub peers_connected: AtomicU64,
    pub peers_accepted: AtomicU64,
    /// Connections over uTP, accepted or dialed (counted in `peers_accepted` too).
    pub peers_utp: AtomicU64,
    /// Outgoing connections opened (to peers of releases being filled).
    pub peers_dialed: AtomicU64,
    /// Block bytes received that answered our requests, and whole pieces handed to the store.
    pub bytes_downloaded: AtomicU64,
    pub pieces_downloaded: AtomicU64,
    /// Pieces from peers that failed their hash check (each drops and bans its peer).
    pub bad_pieces: AtomicU64,
    /// Other popseed boxes connected now (distinct peer ids, any release).
    pub venue_boxes: AtomicU64,
    /// Per reason ([`crate::proto::DropReason::kind`], `peer_cap`, `per_ip_cap`).
    dropped: Mutex<BTreeMap<&'static str, u64>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub bytes_uploaded: u64,
    pub bytes_sent: u64,
    pub blocks_uploaded: u64,
    pub peers_connected: u64,
    pub peers_accepted: u64,
    pub peers_dialed: u64,
    pub peers_utp: u64,
    pub bytes_downloaded: u64,
    pub pieces_downloaded: u64,
    pub bad_pieces: u64,
    pub venue_boxes: u64,
    pub dropped: BTreeMap<String, u64>,
}

impl Stats {
    pub(crate) fn peer_connected(&self) {
        self.peers_accepted.fetch_add(1, Ordering::Relaxed);
        self.peers_connected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn peer_disconnected(&self, reason: Option<&'static str>) {
        self.peers_connected.fetch_sub(1, Ordering::Relaxed);
        if let Some(r) = reason {
            *self.dropped.lock().unwrap_or_else(|p| p.into_inner()).entry(r).or_default() += 1;
        }
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        *self.dropped.lock().unwrap_or_else(|p| p.into_inner()).entry(reason).or_default() += 1;
    }

    pub(crate) fn add_block(&self, n: u64) {
        self.bytes_uploaded.fetch_add(n, Ordering::Relaxed);
        self.blocks_uploaded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dialed(&self) {
        self.peers_dialed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_downloaded_piece(&self, n: u64) {
        self.bytes_downloaded.fetch_add(n, Ordering::Relaxed);
        self.pieces_downloaded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bad_piece(&self) {
        self.bad_pieces.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_uploaded_wire(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            blocks_uploaded: self.blocks_uploaded.load(Ordering::Relaxed),
            peers_connected: self.peers_connected.load(Ordering::Relaxed),
            peers_accepted: self.peers_accepted.load(Ordering::Relaxed),
            peers_dialed: self.peers_dialed.load(Ordering::Relaxed),
            peers_utp: self.peers_utp.load(Ordering::Relaxed),
            bytes_downloaded: self.bytes_downloaded.load(Ordering::Relaxed),
            pieces_downloaded: self.pieces_downloaded.load(Ordering::Relaxed),
            bad_pieces: self.bad_pieces.load(Ordering::Relaxed),
            venue_boxes: self.venue_boxes.load(Ordering::Relaxed),
            dropped: self
                .dropped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }
    }
}
