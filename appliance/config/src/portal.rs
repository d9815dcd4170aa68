//! `[portal]`: the captive portal's settings (see docs/portal.md). Every key has a default, so
//! the agent's config file may name only what differs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

/// A portal setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid portal configuration: {0}")]
pub struct InvalidSetting(pub &'static str);

/// Portal settings. Deserialized from the agent's config (`[portal]`), all keys optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalConfig {
    /// Where the HTTP server listens (the image redirects TCP port 80 here with nftables).
    pub http_listen: SocketAddr,
    /// Where the DNS responder listens, UDP and TCP (the image redirects port 53 here).
    pub dns_listen: SocketAddr,
    /// The address every DNS A answer points to, and the host of every portal URL.
    pub portal_ip: IpAddr,
    /// Port written in portal URLs; `None`: the port the HTTP server is bound to. Set 80 when
    /// nftables redirects port 80 to `http_listen`.
    pub portal_port: Option<u16>,
    /// The box's own DNS name (answered with `lan_ip`), e.g. `popseed.lan`.
    pub box_name: String,
    /// The box's real LAN address; `None`: `portal_ip`.
    pub lan_ip: Option<IpAddr>,
    /// Shown as the page title.
    pub venue_name: String,
    /// RFC 8908 `venue-info-url`; `None`: the portal URL.
    pub venue_info_url: Option<String>,
    /// BitTorrent tracker listed first in .torrent and magnet links; `None`: `http://<portal_ip>:6969/announce`.
    pub tracker_url: Option<String>,
    /// How long a client stays acknowledged after pressing "Continue", seconds.
    pub ack_expiry_secs: u64,
    /// Most acknowledged clients remembered at once (the oldest are forgotten first).
    pub ack_max_clients: usize,
    /// Concurrent downloads one client address may run.
    pub max_downloads_per_client: usize,
    /// Concurrent downloads over all clients.
    pub max_downloads_total: usize,
    /// Open HTTP connections at once; more are closed right after accept.
    pub max_connections: usize,
    /// Largest request head (request line + headers) in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Seconds a client has to send a complete request head (slowloris bound).
    pub header_timeout_secs: u64,
    /// Seconds an idle keep-alive connection is kept.
    pub idle_timeout_secs: u64,
    /// Seconds a download may make no progress (the client reads nothing) before it is dropped.
    pub send_timeout_secs: u64,
    /// Seconds a download waits for missing pieces fetched on demand before answering 503.
    pub demand_timeout_secs: u64,
    /// DNS queries per second allowed per source address (token bucket refill rate).
    pub dns_rate_per_sec: u32,
    /// DNS token bucket size per source address.
    pub dns_burst: u32,
    /// TTL of DNS answers, seconds (short: clients re-ask once they leave the portal).
    pub dns_ttl: u32,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            http_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080),
            dns_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5353),
            portal_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            portal_port: None,
            box_name: "popseed.lan".into(),
            lan_ip: None,
            venue_name: "popseed".into(),
            venue_info_url: None,
            tracker_url: None,
            ack_expiry_secs: 6 * 3600,
            ack_max_clients: 16384,
            max_downloads_per_client: 4,
            max_downloads_total: 256,
            max_connections: 2048,
            max_header_bytes: 16 * 1024,
            header_timeout_secs: 10,
            idle_timeout_secs: 30,
            send_timeout_secs: 30,
            demand_timeout_secs: 30,
            dns_rate_per_sec: 50,
            dns_burst: 100,
            dns_ttl: 10,
        }
    }
}

impl PortalConfig {
    /// Refuses settings that cannot work (zero limits, an empty box name).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |m: &'static str| Err(InvalidSetting(m));
        if self.box_name.trim_matches('.').is_empty() {
            return bad("box_name is empty");
        }
        if self.max_downloads_per_client == 0 || self.max_downloads_total == 0 || self.max_connections == 0 {
            return bad("download and connection limits must be at least 1");
        }
        if self.max_header_bytes < 1024 {
            return bad("max_header_bytes must be at least 1024");
        }
        if self.ack_max_clients == 0 {
            return bad("ack_max_clients must be at least 1");
        }
        if self.dns_rate_per_sec == 0 || self.dns_burst == 0 {
            return bad("dns_rate_per_sec and dns_burst must be at least 1");
        }
        Ok(())
    }

    pub fn ack_expiry(&self) -> Duration {
        Duration::from_secs(self.ack_expiry_secs)
    }

    pub fn lan_ip(&self) -> IpAddr {
        self.lan_ip.unwrap_or(self.portal_ip)
    }
}
