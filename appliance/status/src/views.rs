//! The ports status reads the box through: small view traits the agent implements over the
//! fetcher, the swarm and the portal, each returning a plain snapshot of what status shows
//! (as [`crate::JobsView`] does for jobs). Status depends on none of those crates.

use std::collections::BTreeMap;

use popseed_core::InfoHash;

/// One release the fill works on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReleaseFill {
    pub infohash: InfoHash,
    pub name: String,
    pub total_bytes: u64,
    pub bytes_done: u64,
    pub complete: bool,
    /// Milliseconds from joining the fill to its first critical piece, once stored.
    pub first_critical_ms: Option<u64>,
}

/// One source of the fill (an origin, or the web seed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceFill {
    pub name: String,
    /// `origin` or `web_seed` (both cost the venue's uplink) or `peers` (all BitTorrent peers
    /// together: venue boxes and attendees, free).
    pub kind: String,
    pub connected: bool,
    /// Given up on for this fill (repeated bad data).
    pub dropped: bool,
    pub pieces: u64,
    pub bytes: u64,
    pub hash_failures: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// The fill at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FillStatus {
    pub releases: Vec<ReleaseFill>,
    pub sources: Vec<SourceFill>,
    /// Verified bytes stored by the fill since start, all sources.
    pub bytes_fetched: u64,
    /// Bytes per second over the last few seconds.
    pub rate: f64,
}

/// The fetcher, as status sees it.
pub trait FillView: Send + Sync {
    fn fill(&self) -> FillStatus;
}

/// A box that fills nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFill;

impl FillView for NoFill {
    fn fill(&self) -> FillStatus {
        FillStatus::default()
    }
}

/// BitTorrent peer counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwarmCounters {
    /// Piece bytes sent to peers.
    pub bytes_uploaded: u64,
    pub peers_connected: u64,
    pub peers_accepted: u64,
    /// Outgoing connections opened to peers of releases being filled.
    pub peers_dialed: u64,
    /// Piece bytes received from peers and stored (verified).
    pub bytes_downloaded: u64,
    /// Pieces from peers that failed their hash check.
    pub bad_pieces: u64,
    /// Other popseed boxes of the venue connected now.
    pub venue_boxes: u64,
    /// Peers dropped or refused, by reason label.
    pub dropped: BTreeMap<String, u64>,
}

/// The swarm, as status sees it.
pub trait SwarmView: Send + Sync {
    fn counters(&self) -> SwarmCounters;
}

/// Portal counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortalCounters {
    pub bytes_served: u64,
    pub clients: u64,
    pub dns_queries: u64,
    pub http_requests: u64,
    pub downloads: u64,
}

/// The captive portal, as status sees it.
pub trait PortalView: Send + Sync {
    fn counters(&self) -> PortalCounters;
}
