//! `popseed.toml`, the one file the event team writes (or anyone on the setup Wi-Fi POSTs):
//! `popseed_provision::validate` and the whole first-boot rendering that follows it
//! (`firstboot::render_all`: hostapd, dnsmasq, nftables, systemd-networkd and agent.toml, the
//! last parsed back with `AgentConfig::parse`), for the built-in generic profile and a real
//! board profile with 5 GHz (hw/rpi5.toml).
//!
//! Asserts: no panic; a file is valid exactly when it has no errors; every error has a
//! 1-based position inside the text; rendering never fails (a file that validates renders an
//! agent.toml the agent accepts; any other file renders the setup fallback); normal mode has
//! no errors and setup mode names at least one.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use popseed_provision::firstboot::{render_all, RenderInput};
use popseed_provision::status::Mode;
use popseed_provision::{validate, HwProfile};
use popseed_release::PublicKey;

fn profiles() -> &'static [HwProfile; 2] {
    static P: OnceLock<[HwProfile; 2]> = OnceLock::new();
    P.get_or_init(|| {
        let rpi5 = HwProfile::parse(include_str!("../../hw/rpi5.toml"), Path::new("hw/rpi5.toml"))
            .expect("hw/rpi5.toml is a valid profile");
        [HwProfile::builtin_generic(), rpi5]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let profile = &profiles()[(sel & 1) as usize];

    let v = validate(text, profile);
    assert_eq!(v.value.is_some(), v.errors.is_empty(), "valid exactly when there is no error: {:?}", v.errors);
    let lines = text.split('\n').count();
    for e in &v.errors {
        assert!(e.line >= 1 && e.column >= 1 && e.line <= lines, "{e:?} outside a {lines}-line text");
    }

    let device_key = PublicKey(SigningKey::from_bytes(&[3; 32]).verifying_key());
    let input = RenderInput {
        profile,
        picked_by: "built-in",
        device_key: &device_key,
        state: Path::new("/var/lib/popseed"),
        out: Path::new("/run/popseed"),
        provision_path: Path::new("/boot/popseed.toml"),
        hw_dir: Path::new("/usr/share/popseed/hw"),
        warnings: vec![],
    };
    let r = render_all(Ok(text), input).unwrap_or_else(|e| panic!("rendering failed: {e}\n{text}"));
    match r.status.mode {
        Mode::Normal => {
            assert!(r.status.errors.is_empty());
            assert!(v.value.is_some());
        }
        Mode::Setup => assert!(!r.status.errors.is_empty()),
    }
    for (name, content) in &r.files {
        assert!(!content.is_empty(), "{name} is empty");
    }
});
