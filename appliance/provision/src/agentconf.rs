//! The agent's `agent.toml` (`popseed_config::AgentConfig`), built from a provisioning file and
//! the box's paths, or the minimal setup-mode one. Built with toml_edit so every string is
//! quoted correctly; each rendering is parsed back with `AgentConfig::parse` before use.

use std::net::SocketAddr;
use std::path::Path;

use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

use crate::error::Result;
use crate::net::{PORTAL_DNS_PORT, PORTAL_HTTP_PORT, SWARM_PORT, TRACKER_PORT};
use crate::provfile::Provisioning;

/// Paths on the box the agent config points at.
#[derive(Debug, Clone)]
pub struct AgentPaths<'a> {
    /// The state directory (`/var/lib/popseed`): store and device key live here.
    pub state: &'a Path,
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn store_table(paths: &AgentPaths<'_>, budget: Option<u64>) -> Table {
    let mut t = Table::new();
    t["dir"] = value(path_str(&paths.state.join("store")));
    if let Some(b) = budget {
        t["budget"] = value(i64::try_from(b).unwrap_or(i64::MAX));
    }
    t
}

fn portal_table(portal_ip: std::net::Ipv4Addr, venue: &str, box_name: Option<&str>) -> Table {
    let mut t = Table::new();
    t["http_listen"] = value(format!("0.0.0.0:{PORTAL_HTTP_PORT}"));
    t["dns_listen"] = value(format!("0.0.0.0:{PORTAL_DNS_PORT}"));
    t["portal_ip"] = value(portal_ip.to_string());
    t["portal_port"] = value(80);
    t["venue_name"] = value(venue);
    if let Some(b) = box_name {
        t["box_name"] = value(b);
    }
    t
}

fn control_table(
    listen: SocketAddr,
    token: Option<&str>,
    paths: &AgentPaths<'_>,
    device_name: &str,
    venue: Option<&str>,
) -> Table {
    let mut t = Table::new();
    t["listen"] = value(listen.to_string());
    if let Some(tok) = token {
        t["staff_token"] = value(tok);
    }
    t["device_key"] = value(path_str(&paths.state.join("device.key")));
    t["device_name"] = value(device_name);
    if let Some(v) = venue {
        t["venue"] = value(v);
    }
    t
}

fn header(doc: &mut DocumentMut, what: &str) {
    doc.decor_mut().set_prefix(format!("# agent.toml rendered by `popseed firstboot` ({what}); do not edit.\n"));
}

/// agent.toml for a provisioned box.
pub fn render(p: &Provisioning, paths: &AgentPaths<'_>, device_name: &str) -> String {
    let mut doc = DocumentMut::new();
    header(&mut doc, "from popseed.toml");
    let mut keys = Array::new();
    for k in &p.trusted_keys {
        keys.push(k.as_str());
    }
    doc["trusted_keys"] = value(keys);
    doc["store"] = Item::Table(store_table(paths, p.store_budget));
    let mut origins = ArrayOfTables::new();
    for o in &p.origins {
        let mut t = Table::new();
        if let Some(n) = &o.name {
            t["name"] = value(n.as_str());
        }
        t["address"] = value(o.address.to_string());
        t["fingerprint"] = value(o.fingerprint.as_str());
        if let Some(s) = &o.server_name {
            t["server_name"] = value(s.as_str());
        }
        origins.push(t);
    }
    if !origins.is_empty() {
        doc["origins"] = Item::ArrayOfTables(origins);
    }
    let mut swarm = Table::new();
    swarm["listen"] = value(format!("0.0.0.0:{SWARM_PORT}"));
    swarm["tracker_listen"] = value(format!("0.0.0.0:{TRACKER_PORT}"));
    swarm["announce_ip"] = value(p.portal.address.addr().to_string());
    doc["swarm"] = Item::Table(swarm);
    doc["portal"] = Item::Table(portal_table(p.portal.address.addr(), &p.venue, p.portal.box_name.as_deref()));
    doc["control"] = Item::Table(control_table(
        p.management.listen,
        Some(&p.management.staff_token),
        paths,
        p.device_name.as_deref().unwrap_or(device_name),
        Some(&p.venue),
    ));
    doc.to_string()
}

/// agent.toml for setup mode: store and device key, the control listen address and the portal
/// address the setup page is served on. The agent runs only the setup page in that mode.
pub fn render_setup(
    paths: &AgentPaths<'_>,
    listen: SocketAddr,
    portal_ip: std::net::Ipv4Addr,
    device_name: &str,
) -> String {
    let mut doc = DocumentMut::new();
    header(&mut doc, "setup mode");
    doc["store"] = Item::Table(store_table(paths, None));
    doc["portal"] = Item::Table(portal_table(portal_ip, "popseed setup", None));
    doc["control"] = Item::Table(control_table(listen, None, paths, device_name, None));
    doc.to_string()
}

/// Parses `text` as the agent would (`at` is where it will be written).
pub fn check(text: &str, at: &Path) -> Result<popseed_config::AgentConfig> {
    Ok(popseed_config::AgentConfig::parse(text, at)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::HwProfile;
    use crate::provfile::tests::{good_file, pubkey, FP};
    use crate::provfile::validate;

    #[test]
    fn full_provisioning_round_trips_through_agent_config() {
        let key = pubkey();
        let text = good_file(&key).replace("venue = \"Hall B, FooConf 2026\"", "venue = \"Hall \\\"B\\\"\"");
        let p = validate(&text, &HwProfile::builtin_generic()).value.unwrap();
        let paths = AgentPaths { state: Path::new("/var/lib/popseed") };
        let out = render(&p, &paths, "popseed-ab12");
        let cfg = check(&out, Path::new("/run/popseed/agent.toml")).unwrap();
        assert_eq!(cfg.store.dir, Path::new("/var/lib/popseed/store"));
        assert_eq!(cfg.store.budget.map(|s| s.0), Some(400 << 30));
        assert_eq!(cfg.trusted_keys, vec![key]);
        assert_eq!(cfg.origins.len(), 1);
        assert_eq!(cfg.origins[0].address.to_string(), "203.0.113.10:4433");
        assert_eq!(cfg.origins[0].fingerprint.as_deref(), Some(FP));
        assert_eq!(cfg.origins[0].name.as_deref(), Some("fooconf-origin"));
        let sw = cfg.swarm.unwrap();
        assert_eq!(sw.listen.to_string(), "0.0.0.0:6881");
        let portal = cfg.portal.unwrap();
        assert_eq!(portal.portal_ip.to_string(), "10.42.0.1");
        assert_eq!(portal.portal_port, Some(80));
        assert_eq!(portal.venue_name, "Hall \"B\"");
        assert_eq!(portal.http_listen.port(), PORTAL_HTTP_PORT);
        let control = cfg.control.unwrap();
        assert_eq!(control.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(control.staff_token.as_deref(), Some("0123456789abcdef0123"));
        assert_eq!(control.device_key, Path::new("/var/lib/popseed/device.key"));
        assert_eq!(control.device_name.as_deref(), Some("popseed-ab12"));
        assert_eq!(control.venue.as_deref(), Some("Hall \"B\""));
    }

    #[test]
    fn setup_config_parses() {
        let paths = AgentPaths { state: Path::new("/var/lib/popseed") };
        let out = render_setup(&paths, "0.0.0.0:8080".parse().unwrap(), "10.42.0.1".parse().unwrap(), "popseed-ab12");
        let cfg = check(&out, Path::new("/run/popseed/agent.toml")).unwrap();
        assert!(cfg.origins.is_empty() && cfg.swarm.is_none());
        assert_eq!(cfg.control.unwrap().staff_token, None);
        assert_eq!(cfg.portal.unwrap().http_listen.port(), PORTAL_HTTP_PORT);
    }
}
