//! The URLs the portal hands out, derived from its configuration ([`PortalConfig`], which lives
//! in popseed-config with the rest of `agent.toml`; see docs/portal.md).

use std::net::IpAddr;

use popseed_core::InfoHash;

pub use popseed_config::PortalConfig;

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
    pub fn web_seed(&self, infohash: &InfoHash) -> String {
        format!("{}files/{infohash}/", self.portal)
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
        assert_eq!(u.web_seed(&InfoHash([0xab; 20])), format!("http://10.1.0.1/files/{}/", "ab".repeat(20)));
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
