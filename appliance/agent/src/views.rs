//! The agent's side of the status ports: each component's counters turned into the plain
//! snapshots status shows ([`popseed_status::FillView`], [`popseed_status::SwarmView`],
//! [`popseed_status::PortalView`]), so status depends on none of those crates.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use popseed_fetch::Fetcher;
use popseed_status::{FillStatus, PortalCounters, ReleaseFill, SourceFill, SwarmCounters};

/// The fetcher's progress for status.
pub struct FillForStatus(pub Arc<Fetcher>);

impl popseed_status::FillView for FillForStatus {
    fn fill(&self) -> FillStatus {
        let s = self.0.snapshot();
        FillStatus {
            releases: s
                .releases
                .into_iter()
                .map(|r| ReleaseFill {
                    infohash: r.infohash,
                    name: r.name,
                    total_bytes: r.total_bytes,
                    bytes_done: r.bytes_done,
                    complete: r.complete,
                    first_critical_ms: r.first_critical_ms,
                })
                .collect(),
            sources: s
                .origins
                .into_iter()
                .map(|o| SourceFill {
                    name: o.name,
                    kind: o.kind.to_owned(),
                    connected: o.connected,
                    dropped: o.dropped,
                    pieces: o.pieces,
                    bytes: o.bytes,
                    hash_failures: o.hash_failures,
                    errors: o.errors,
                    last_error: o.last_error,
                })
                .collect(),
            bytes_fetched: s.bytes_fetched,
            rate: s.rate,
        }
    }
}

/// The swarm's counters for status.
pub struct SwarmForStatus(pub Arc<popseed_swarm::Stats>);

impl popseed_status::SwarmView for SwarmForStatus {
    fn counters(&self) -> SwarmCounters {
        let s = self.0.snapshot();
        SwarmCounters {
            bytes_uploaded: s.bytes_uploaded,
            peers_connected: s.peers_connected,
            peers_accepted: s.peers_accepted,
            peers_dialed: s.peers_dialed,
            bytes_downloaded: s.bytes_downloaded,
            bad_pieces: s.bad_pieces,
            venue_boxes: s.venue_boxes,
            dropped: s.dropped,
        }
    }
}

/// The portal's counters for status.
pub struct PortalForStatus(pub Arc<popseed_portal::Stats>);

impl popseed_status::PortalView for PortalForStatus {
    fn counters(&self) -> PortalCounters {
        let p = &self.0;
        PortalCounters {
            bytes_served: p.bytes_served.load(Ordering::Relaxed),
            clients: p.portal_clients.load(Ordering::Relaxed),
            dns_queries: p.dns.queries.load(Ordering::Relaxed),
            http_requests: p.http_requests.load(Ordering::Relaxed),
            downloads: p.downloads.load(Ordering::Relaxed),
        }
    }
}
