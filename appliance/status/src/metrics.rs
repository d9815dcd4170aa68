//! `/metrics`: Prometheus/OpenMetrics text made with prometheus-client from one [`Gathered`]
//! copy (a [`Collector`] that encodes constant counters and gauges at scrape time, so nothing is
//! counted twice). No label carries a peer's or an attendee's address: origins are labelled by
//! their configured name, releases by name, drops by reason.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::gather::Gathered;
use popseed_core::JobState;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug)]
struct Scrape {
    g: Gathered,
    ready: bool,
}

type R = Result<(), std::fmt::Error>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<Unit>, v: u64) -> R {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, unit.as_ref(), c.metric_type())?)
}

fn gauge_f(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<Unit>, v: f64) -> R {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<Unit>, v: u64) -> R {
    let g = ConstGauge::new(v as i64);
    g.encode(e.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)
}

fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    key: &str,
    items: &[(String, u64)],
) -> R {
    let probe = ConstCounter::new(0u64);
    let mut m = e.encode_descriptor(name, help, unit.as_ref(), probe.metric_type())?;
    for (label, v) in items {
        let labels = [(key, label.as_str())];
        ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    key: &str,
    items: &[(String, f64)],
) -> R {
    let probe = ConstGauge::new(0.0f64);
    let mut m = e.encode_descriptor(name, help, unit.as_ref(), probe.metric_type())?;
    for (label, v) in items {
        let labels = [(key, label.as_str())];
        ConstGauge::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> R {
        let g = &self.g;
        gauge(&mut e, "ready", "1 when every pinned job is ready (what /readyz says)", None, self.ready as u64)?;

        // fill: in from origins and web seeds
        let o = &g.fetch.sources;
        let by_origin = |f: fn(&crate::views::SourceFill) -> u64| -> Vec<(String, u64)> {
            o.iter().map(|x| (x.name.clone(), f(x))).collect()
        };
        counters(
            &mut e,
            "origin_received",
            "Verified piece bytes stored from each origin (and the web seed)",
            Some(Unit::Bytes),
            "origin",
            &by_origin(|x| x.bytes),
        )?;
        counters(
            &mut e,
            "origin_pieces",
            "Verified pieces stored from each origin",
            None,
            "origin",
            &by_origin(|x| x.pieces),
        )?;
        counters(
            &mut e,
            "origin_hash_failures",
            "Pieces from each origin that failed their hash check",
            None,
            "origin",
            &by_origin(|x| x.hash_failures),
        )?;
        counters(
            &mut e,
            "origin_errors",
            "Connection and request errors per origin",
            None,
            "origin",
            &by_origin(|x| x.errors),
        )?;
        // by kind: what came over the uplink (origins, web seeds) and what the venue's peers
        // gave for free (uplink bytes saved)
        let mut kinds: std::collections::BTreeMap<String, u64> =
            ["origin", "web_seed", "peers"].iter().map(|k| ((*k).to_owned(), 0)).collect();
        for x in o {
            *kinds.entry(x.kind.clone()).or_default() += x.bytes;
        }
        let kinds: Vec<(String, u64)> = kinds.into_iter().collect();
        counters(
            &mut e,
            "fill_received",
            "Verified piece bytes stored by the fill, by source kind (origin, web_seed: uplink; peers: the venue)",
            Some(Unit::Bytes),
            "kind",
            &kinds,
        )?;
        let conn: Vec<(String, f64)> =
            o.iter().map(|x| (x.name.clone(), if x.connected { 1.0 } else { 0.0 })).collect();
        gauges(&mut e, "origin_connected", "1 while the origin is connected", None, "origin", &conn)?;
        counter(
            &mut e,
            "fetched",
            "Verified piece bytes stored by the fill, all sources",
            Some(Unit::Bytes),
            g.fetch.bytes_fetched,
        )?;
        gauge_f(&mut e, "fill_rate_bytes_per_second", "Fill rate over the last few seconds", None, g.fetch.rate)?;
        let first: Vec<(String, f64)> = g
            .fetch
            .releases
            .iter()
            .filter_map(|r| r.first_critical_ms.map(|ms| (r.name.clone(), ms as f64 / 1000.0)))
            .collect();
        gauges(
            &mut e,
            "first_critical_piece",
            "Time from a release joining the fill to its first critical piece",
            Some(Unit::Seconds),
            "release",
            &first,
        )?;

        // store
        let used = g.usage.map_or(0, |u| u.used);
        gauge(&mut e, "store_used", "Bytes of verified pieces held", Some(Unit::Bytes), used)?;
        gauge(
            &mut e,
            "store_free",
            "Bytes more pieces may take (budget and free-space floor)",
            Some(Unit::Bytes),
            g.store_free(),
        )?;
        if let Some(b) = g.usage.and_then(|u| u.budget) {
            gauge(&mut e, "store_budget", "The store's byte budget", Some(Unit::Bytes), b)?;
        }
        gauge(&mut e, "store_releases", "Releases in the store", None, g.releases.len() as u64)?;
        let present: u64 = g.releases.iter().map(|r| r.pieces_present as u64).sum();
        gauge(&mut e, "store_pieces", "Verified pieces held", None, present)?;
        counter(&mut e, "store_pieces_stored", "Pieces verified and stored since start", None, g.store.pieces_stored)?;
        counter(&mut e, "store_evictions", "Releases evicted to make room", None, g.store.evictions)?;
        counter(&mut e, "store_evicted", "Bytes freed by evictions", Some(Unit::Bytes), g.store.evicted_bytes)?;

        // jobs
        let states: Vec<(String, f64)> = JobState::ALL
            .iter()
            .map(|s| (s.to_string(), g.jobs.iter().filter(|j| j.state == *s).count() as f64))
            .collect();
        gauges(&mut e, "jobs", "Jobs per state", None, "state", &states)?;

        // swarm
        if let Some(s) = &g.swarm {
            counter(&mut e, "peer_sent", "Piece bytes sent to BitTorrent peers", Some(Unit::Bytes), s.bytes_uploaded)?;
            gauge(&mut e, "peers_connected", "BitTorrent peers connected now", None, s.peers_connected)?;
            counter(&mut e, "peers_accepted", "BitTorrent peer connections accepted", None, s.peers_accepted)?;
            counter(
                &mut e,
                "peers_dialed",
                "Outgoing connections to peers of releases being filled",
                None,
                s.peers_dialed,
            )?;
            counter(
                &mut e,
                "peer_received",
                "Piece bytes downloaded from BitTorrent peers and stored",
                Some(Unit::Bytes),
                s.bytes_downloaded,
            )?;
            counter(&mut e, "peer_bad_pieces", "Pieces from peers that failed their hash check", None, s.bad_pieces)?;
            gauge(&mut e, "venue_boxes", "Other popseed boxes of the venue connected now", None, s.venue_boxes)?;
            let dropped: Vec<(String, u64)> = s.dropped.iter().map(|(k, v)| (k.clone(), *v)).collect();
            counters(&mut e, "peers_dropped", "Peers dropped or refused, by reason", None, "reason", &dropped)?;
        }

        // portal
        if let Some(p) = &g.portal {
            counter(&mut e, "portal_sent", "File bytes sent to portal clients", Some(Unit::Bytes), p.bytes_served)?;
            gauge(
                &mut e,
                "portal_clients",
                "Attendees who acknowledged the portal (remembered for a while)",
                None,
                p.clients,
            )?;
            counter(&mut e, "portal_downloads", "Downloads started from the portal", None, p.downloads)?;
            counter(&mut e, "portal_http_requests", "HTTP requests to the portal", None, p.http_requests)?;
            counter(
                &mut e,
                "dns_queries",
                "DNS queries answered or dropped by the portal's responder",
                None,
                p.dns_queries,
            )?;
        }
        Ok(())
    }
}

/// The exposition text (OpenMetrics, which Prometheus reads) for one gathered copy.
pub fn encode(g: Gathered, ready: bool) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("popseed");
    reg.register_collector(Box::new(Scrape { g, ready }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}
