//! `agent.toml`: the agent's configuration file. Every error names the key and the problem
//! (toml's messages carry the key path and line; our checks add the key name). The serving
//! sections are [`crate::SwarmConfig`] and [`crate::PortalConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use popseed_core::ByteSize;
use serde::{Deserialize, Deserializer};

use crate::{PortalConfig, SwarmConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}")]
    Read {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("{path}")]
    Parse {
        path: PathBuf,
        #[source]
        err: Box<toml::de::Error>,
    },
    #[error("{path}: key `{key}`")]
    Invalid {
        path: PathBuf,
        key: String,
        #[source]
        problem: Box<Invalid>,
    },
}

/// What is wrong with one key.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error(transparent)]
    Fingerprint(#[from] popseed_core::BadFingerprint),
    #[error(transparent)]
    Key(#[from] popseed_release::ReleaseError),
    #[error("{0}")]
    Rule(&'static str),
}

/// A duration written like "3s", "500ms", "30d".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration: {e}")))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub dir: PathBuf,
    pub budget: Option<ByteSize>,
    #[serde(default = "default_min_free")]
    pub min_free: ByteSize,
}

/// Free space the store leaves on its disk unless told otherwise.
pub const DEFAULT_MIN_FREE: ByteSize = ByteSize::mib(256);

fn default_min_free() -> ByteSize {
    DEFAULT_MIN_FREE
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FetchSection {
    pub streams_per_origin: Option<usize>,
    pub request_bytes: Option<ByteSize>,
    /// Bytes per second for the whole fill.
    pub rate_limit: Option<ByteSize>,
    pub connect_timeout: Option<Dur>,
    pub backoff_max: Option<Dur>,
    pub web_seed_after: Option<Dur>,
    /// PEM file of CA certificates trusted for `https://` web seeds, besides the built-in roots.
    pub web_seed_ca: Option<PathBuf>,
    /// BitTorrent peers (`"10.0.0.12:6881"`) the swarm downloads from besides those the
    /// trackers and LSD find: sibling boxes where multicast is blocked. Needs `[swarm]`.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// How long the fill gives the swarm to find the venue's boxes and peers before it uses the
    /// uplink for anything but on-demand pieces. Default: 1s when the box downloads from peers
    /// (`[swarm]` with `peers` here or LSD on), else 0.
    pub venue_grace: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSection {
    pub name: Option<String>,
    pub address: SocketAddr,
    /// SHA-256 of the origin's certificate (what `popseed origin` prints).
    pub fingerprint: Option<String>,
    /// PEM file of CA certificates, instead of a fingerprint.
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSection {
    /// Release directory with manifest.json and release.torrent.
    pub dir: PathBuf,
    #[serde(default)]
    pub pin: bool,
}

/// `[control]`: the management side of the box (see docs/operator-guide.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Management address: the staff API, /healthz, /readyz, /metrics and the dashboard.
    pub listen: SocketAddr,
    /// Bearer token for the staff API and the dashboard (or `staff_token_file`).
    pub staff_token: Option<String>,
    pub staff_token_file: Option<PathBuf>,
    /// This box's device key (ed25519, PKCS#8 PEM, as `popseed keygen` writes), made on first
    /// start when missing. Origins allow devices by its fingerprint.
    pub device_key: PathBuf,
    /// The name this box reports to origins and shows on its dashboard.
    pub device_name: Option<String>,
    /// Venue name for the dashboard.
    pub venue: Option<String>,
}

impl ControlSection {
    /// The staff token, from `staff_token` or the first line of `staff_token_file`.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = &self.staff_token {
            return Ok(Some(t.clone()));
        }
        match &self.staff_token_file {
            Some(p) => {
                let s = std::fs::read_to_string(p).map_err(|e| ConfigError::Read { path: p.clone(), err: e })?;
                Ok(s.lines().next().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()))
            }
            None => Ok(None),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub store: StoreSection,
    #[serde(default)]
    pub fetch: FetchSection,
    #[serde(default)]
    pub origins: Vec<OriginSection>,
    #[serde(default)]
    pub releases: Vec<ReleaseSection>,
    /// Publisher keys (`ed25519:...`) releases must be signed by; empty: every release is
    /// refused (fail closed).
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Where to write a JSON progress snapshot every second.
    pub status_file: Option<PathBuf>,
    /// BitTorrent seeding, tracker and LSD (section present: enabled; see docs/swarm.md).
    pub swarm: Option<SwarmConfig>,
    /// Captive portal and DNS (section present: enabled; see docs/portal.md).
    pub portal: Option<PortalConfig>,
    /// Jobs, the link to origins, the staff API, metrics and the dashboard (section present: enabled).
    pub control: Option<ControlSection>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.to_path_buf(), err: e })?;
        Self::parse(&text, path)
    }

    /// Parses and checks a config; relative paths are resolved against the file's directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: AgentConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), err: Box::new(e) })?;
        let invalid = |key: String, problem: Invalid| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            problem: Box::new(problem),
        };
        for (i, o) in cfg.origins.iter().enumerate() {
            match (&o.fingerprint, &o.ca) {
                (Some(fp), None) => {
                    popseed_core::parse_fingerprint(fp)
                        .map_err(|e| invalid(format!("origins[{i}].fingerprint"), e.into()))?;
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(invalid(
                        format!("origins[{i}]"),
                        Invalid::Rule("give exactly one of `fingerprint` and `ca`"),
                    ))
                }
            }
        }
        for (i, k) in cfg.trusted_keys.iter().enumerate() {
            popseed_release::PublicKey::from_text(k).map_err(|e| invalid(format!("trusted_keys[{i}]"), e.into()))?;
        }
        if cfg.fetch.streams_per_origin == Some(0) {
            return Err(invalid("fetch.streams_per_origin".into(), Invalid::Rule("must be at least 1")));
        }
        if let Some(p) = &cfg.portal {
            p.validate().map_err(|e| invalid("portal".into(), Invalid::Rule(e.0)))?;
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut cfg.store.dir);
        if let Some(ca) = &mut cfg.fetch.web_seed_ca {
            abs(ca);
        }
        for r in &mut cfg.releases {
            abs(&mut r.dir);
        }
        for o in &mut cfg.origins {
            if let Some(ca) = &mut o.ca {
                abs(ca);
            }
        }
        if let Some(s) = &mut cfg.status_file {
            abs(s);
        }
        if let Some(c) = &mut cfg.control {
            if c.staff_token.is_some() && c.staff_token_file.is_some() {
                return Err(invalid(
                    "control".into(),
                    Invalid::Rule("give at most one of `staff_token` and `staff_token_file`"),
                ));
            }
            if c.staff_token.as_deref().is_some_and(|t| t.len() < 16) {
                return Err(invalid("control.staff_token".into(), Invalid::Rule("must be at least 16 characters")));
            }
            abs(&mut c.device_key);
            if let Some(p) = &mut c.staff_token_file {
                abs(p);
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(s, Path::new("/etc/popseed/agent.toml"))
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
            trusted_keys = []
            [store]
            dir = "store"
            budget = "2GiB"
            [fetch]
            rate_limit = "10MiB"
            web_seed_after = "500ms"
            [[origins]]
            address = "127.0.0.1:4433"
            fingerprint = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
            [[releases]]
            dir = "rel"
            pin = true
            "#,
        )
        .unwrap();
        assert_eq!(c.store.dir, PathBuf::from("/etc/popseed/store"));
        assert_eq!(c.store.budget, Some(ByteSize::gib(2)));
        assert_eq!(c.fetch.rate_limit, Some(ByteSize::mib(10)));
        assert_eq!(c.fetch.web_seed_after, Some(Dur(Duration::from_millis(500))));
        assert_eq!(c.releases[0].dir, PathBuf::from("/etc/popseed/rel"));
    }

    #[test]
    fn serving_sections_take_their_crates_defaults() {
        let c = parse("[store]\ndir = \"s\"\n[swarm]\nlisten = \"127.0.0.1:6881\"\nlsd = false\n[portal]\nportal_ip = \"10.0.0.1\"\n").unwrap();
        let sw = c.swarm.unwrap();
        assert!(!sw.lsd);
        assert_eq!(sw.max_peers, SwarmConfig::default().max_peers);
        assert_eq!(c.portal.unwrap().portal_ip.to_string(), "10.0.0.1");
        let e = parse("[store]\ndir = \"s\"\n[swarm]\nmax_peerz = 3\n")
            .map(|_| ())
            .map_err(|e| popseed_core::chain(&e).to_string())
            .unwrap_err();
        assert!(e.contains("max_peerz"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[store]\ndir = \"s\"\nbudget = \"lots\"\n")
            .map(|_| ())
            .map_err(|e| popseed_core::chain(&e).to_string())
            .unwrap_err();
        assert!(e.contains("budget") && e.contains("lots"), "{e}");
        let e = parse("[store]\ndir = \"s\"\n[[origins]]\naddress = \"nope\"\nfingerprint = \"00\"\n")
            .map(|_| ())
            .map_err(|e| popseed_core::chain(&e).to_string())
            .unwrap_err();
        assert!(e.contains("address"), "{e}");
        let e = parse("[store]\ndir = \"s\"\n[[origins]]\naddress = \"127.0.0.1:1\"\nfingerprint = \"00\"\n")
            .map(|_| ())
            .map_err(|e| popseed_core::chain(&e).to_string())
            .unwrap_err();
        assert!(e.contains("origins[0].fingerprint"), "{e}");
        let e = parse("[store]\ndir = \"s\"\nbogus = 1\n")
            .map(|_| ())
            .map_err(|e| popseed_core::chain(&e).to_string())
            .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse("[fetch]\n").map(|_| ()).map_err(|e| popseed_core::chain(&e).to_string()).unwrap_err();
        assert!(e.contains("store"), "{e}");
        let e = parse("trusted_keys = [\"x\"]\n[store]\ndir = \"s\"\n")
            .map(|_| ())
            .map_err(|e| popseed_core::chain(&e).to_string())
            .unwrap_err();
        assert!(e.contains("trusted_keys[0]"), "{e}");
    }
}
