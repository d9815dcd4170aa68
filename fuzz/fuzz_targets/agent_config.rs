//! `agent.toml` as the agent reads it at start (`popseed_config::AgentConfig::parse`): written
//! by firstboot from popseed.toml, or by hand on a development box.
//!
//! Asserts: no panic; a config that parses has every path made absolute against the file's
//! directory, trusted keys that parse, origins with exactly one of fingerprint/ca, and a staff
//! token of at least 16 bytes when one is given inline.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use popseed_config::AgentConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(c) = AgentConfig::parse(text, Path::new("/etc/popseed/agent.toml")) else { return };
    assert!(c.store.dir.is_absolute());
    for r in &c.releases {
        assert!(r.dir.is_absolute());
    }
    for k in &c.trusted_keys {
        assert!(popseed_release::PublicKey::from_text(k).is_ok());
    }
    for o in &c.origins {
        assert!(o.fingerprint.is_some() != o.ca.is_some());
        if let Some(ca) = &o.ca {
            assert!(ca.is_absolute());
        }
    }
    if let Some(ctl) = &c.control {
        assert!(ctl.device_key.is_absolute());
        assert!(!(ctl.staff_token.is_some() && ctl.staff_token_file.is_some()));
        if let Some(t) = &ctl.staff_token {
            assert!(t.len() >= 16);
        }
    }
    if let Some(p) = &c.portal {
        assert!(p.validate().is_ok());
    }
});
