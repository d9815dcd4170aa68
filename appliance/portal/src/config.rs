//! The portal's configuration ([`PortalConfig`]) and the URLs derived from it. Every key has a
//! default, so the agent's config file may name only what differs (see docs/portal.md).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{PortalError, Result};

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
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(PortalError::Config(m.to_owned()));
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

/// The URLs the portal hands out, fixed once the HTTP port is known.
#[derive(Debug, Clone)]
pub struct Urls {
    /// `http://<portal_ip>[:port]/`
    pub portal: String,
    /// `host[:port]` as clients send it in `Host` for the portal itself.
    pub authority: String,
    pub tracker: String,
    pub venue_info: String,
}

impl Urls {
    pub fn new(cfg: &PortalConfig, bound_port: u16) -> Urls {
        let port = cfg.portal_port.unwrap_or(bound_port);
        let host = match cfg.portal_ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let authority = if port == 80 { host.clone() } else { format!("{host}:{port}") };
        let portal = format!("http://{authority}/");
        let tracker = cfg.tracker_url.clone().unwrap_or_else(|| format!("http://{host}:6969/announce"));
        let venue_info = cfg.venue_info_url.clone().unwrap_or_else(|| portal.clone());
        Urls { portal, authority, tracker, venue_info }
    }

    /// BEP 19 web seed base of a release: the client appends the torrent name (and file path).
    pub fn web_seed(&self, infohash: &[u8; 20]) -> String {
        format!("{}files/{}/", self.portal, hex::encode(infohash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_partial_config_with_defaults() {
        let cfg: PortalConfig =
            serde_json::from_str(r#"{"portal_ip": "10.1.0.1", "venue_name": "Hall B", "portal_port": 80}"#).unwrap();
        assert_eq!(cfg.portal_ip, IpAddr::from([10, 1, 0, 1]));
        assert_eq!(cfg.venue_name, "Hall B");
        assert_eq!(cfg.box_name, "popseed.lan");
        assert_eq!(cfg.lan_ip(), cfg.portal_ip);
        assert_eq!(cfg.max_downloads_per_client, 4);
        cfg.validate().unwrap();
        let u = Urls::new(&cfg, 8080);
        assert_eq!(u.portal, "http://10.1.0.1/");
        assert_eq!(u.tracker, "http://10.1.0.1:6969/announce");
        assert_eq!(u.web_seed(&[0xab; 20]), format!("http://10.1.0.1/files/{}/", "ab".repeat(20)));
        assert!(serde_json::from_str::<PortalConfig>(r#"{"portl_ip": "1.2.3.4"}"#).is_err(), "typos are refused");
    }

    #[test]
    fn urls_use_the_bound_port_unless_told_and_bracket_ipv6() {
        let mut cfg = PortalConfig { portal_ip: "fd00::1".parse().unwrap(), ..PortalConfig::default() };
        assert_eq!(Urls::new(&cfg, 8080).portal, "http://[fd00::1]:8080/");
        cfg.tracker_url = Some("http://t/announce".into());
        assert_eq!(Urls::new(&cfg, 80).tracker, "http://t/announce");
        assert_eq!(Urls::new(&cfg, 80).authority, "[fd00::1]");
    }

    #[test]
    fn validate_refuses_unusable_limits() {
        assert!(PortalConfig { max_downloads_total: 0, ..PortalConfig::default() }.validate().is_err());
        assert!(PortalConfig { box_name: ".".into(), ..PortalConfig::default() }.validate().is_err());
        assert!(PortalConfig { max_header_bytes: 10, ..PortalConfig::default() }.validate().is_err());
    }
}
