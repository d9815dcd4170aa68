//! `popseed firstboot`: pick the board profile, format an empty data device, make the device
//! key, validate popseed.toml, and render the normal or the setup-fallback configuration into
//! `/run/popseed/`. [`render_all`] is the pure part (no I/O); [`run`] does the steps.

use popseed_core::chain;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use popseed_release::PublicKey;

use crate::agentconf::{self, AgentPaths};
use crate::diag::Diagnostic;
use crate::error::{ProvisionError, Result};
use crate::fallback;
use crate::net::{self, NetSettings};
use crate::profile::{self, HwProfile};
use crate::provfile::{self, DEFAULT_MANAGEMENT};
use crate::setup_code;
use crate::status::{Mode, Status};
use crate::wifi::{self, ApSettings};

/// File name used in error lines (`popseed.toml:LINE:COL: ...`).
pub const PROVISION_NAME: &str = "popseed.toml";
/// ext4 label (and GPT partlabel) of the data partition.
pub const DATA_LABEL: &str = "popseed-data";
/// The user the agent runs as.
pub const AGENT_USER: &str = "popseed";

#[derive(Debug, Clone)]
pub struct Options {
    pub provision: PathBuf,
    pub hw_dir: PathBuf,
    pub board: Option<String>,
    pub state: PathBuf,
    pub out: PathBuf,
    pub data_device: Option<PathBuf>,
    pub no_format: bool,
    /// Prefix for /etc, /proc and /sys when detecting the board (`/` on the box).
    pub root: PathBuf,
}

/// Everything rendered for one boot: (file name in `--out`, content) pairs and the status.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub files: Vec<(&'static str, String)>,
    pub status: Status,
}

/// Inputs of [`render_all`] besides the provisioning text.
pub struct RenderInput<'a> {
    pub profile: &'a HwProfile,
    pub picked_by: &'a str,
    pub device_key: &'a PublicKey,
    pub state: &'a Path,
    pub out: &'a Path,
    pub provision_path: &'a Path,
    pub hw_dir: &'a Path,
    pub warnings: Vec<String>,
}

/// Validates `text` (`None`: the file is missing or unreadable, with the reason) and renders
/// the normal configuration, or the setup fallback when there is any error.
pub fn render_all(text: std::result::Result<&str, String>, inp: RenderInput<'_>) -> Result<Rendered> {
    let device_name = format!("popseed-{}", fallback::short_id(inp.device_key));
    let paths = AgentPaths { state: inp.state };
    let agent_at = inp.out.join("agent.toml");
    let lease_file = inp.out.join("dnsmasq.leases").to_string_lossy().into_owned();
    let (validation, errors) = match text {
        Ok(t) => {
            let v = provfile::validate(t, inp.profile);
            let errs = v.errors.clone();
            (Some(v), errs)
        }
        Err(reason) => (None, vec![Diagnostic { line: 1, column: 1, key: String::new(), message: reason }]),
    };
    if let Some(p) = validation.as_ref().and_then(|v| v.value.as_ref()) {
        if let Some(ap) = ApSettings::from_provisioning(&p.wifi, inp.profile) {
            let n = NetSettings {
                ap_interface: inp.profile.wifi.interface.clone(),
                staff_interface: p
                    .management
                    .interface
                    .clone()
                    .or_else(|| p.uplink.as_ref().map(|u| u.interface.clone()))
                    .or_else(|| inp.profile.uplink.as_ref().map(|u| u.interface.clone())),
                portal: p.portal.address,
                management_port: p.management.listen.port(),
                uplink: p.uplink.clone(),
                max_clients: p.wifi.max_clients,
                lease_file,
            };
            let agent = agentconf::render(p, &paths, &device_name);
            agentconf::check(&agent, &agent_at)?;
            let mut files = ap_files(&ap, &n, agent, "normal", &inp.profile.board);
            if let Some(u) = &p.uplink {
                files.push(("uplink.network", net::render_uplink_network(u)));
            }
            let status = Status {
                mode: Mode::Normal,
                errors: vec![],
                device_fingerprint: inp.device_key.fingerprint(),
                board: inp.profile.board.clone(),
                board_picked_by: inp.picked_by.to_owned(),
                warnings: inp.warnings,
                provision_path: inp.provision_path.to_path_buf(),
                hw_dir: inp.hw_dir.to_path_buf(),
                ssid: p.wifi.ssid.clone(),
                ap_interface: n.ap_interface.clone(),
                portal_address: p.portal.address.to_string(),
                management_listen: p.management.listen.to_string(),
                setup_code_path: None,
            };
            return Ok(Rendered { files, status });
        }
    }
    // the fallback: an open setup AP
    let listen: SocketAddr = validation.as_ref().and_then(|v| v.management_listen).unwrap_or(DEFAULT_MANAGEMENT);
    let ssid = fallback::setup_ssid(inp.device_key);
    let addr = fallback::setup_address();
    let ap = ApSettings::setup(&ssid, inp.profile).ok_or_else(|| ProvisionError::SetupSsid(ssid.clone()))?;
    let n = NetSettings {
        ap_interface: inp.profile.wifi.interface.clone(),
        // setup mode: staff on the wired port reach the setup page on the management port; the
        // setup network reaches it on the portal address
        staff_interface: inp.profile.uplink.as_ref().map(|u| u.interface.clone()),
        portal: addr,
        management_port: listen.port(),
        uplink: None,
        max_clients: inp.profile.wifi.max_clients,
        lease_file,
    };
    let agent = agentconf::render_setup(&paths, listen, addr.addr(), &device_name);
    agentconf::check(&agent, &agent_at)?;
    let files = ap_files(&ap, &n, agent, "setup", &inp.profile.board);
    let mut errors = errors;
    if errors.is_empty() {
        // valid file, but the model type refused it: say so rather than show no reason
        errors.push(Diagnostic {
            line: 1,
            column: 1,
            key: "wifi".into(),
            message: "the access point settings could not be built".into(),
        });
    }
    let status = Status {
        mode: Mode::Setup,
        errors,
        device_fingerprint: inp.device_key.fingerprint(),
        board: inp.profile.board.clone(),
        board_picked_by: inp.picked_by.to_owned(),
        warnings: inp.warnings,
        provision_path: inp.provision_path.to_path_buf(),
        hw_dir: inp.hw_dir.to_path_buf(),
        ssid,
        ap_interface: n.ap_interface.clone(),
        portal_address: addr.to_string(),
        management_listen: listen.to_string(),
        setup_code_path: None,
    };
    Ok(Rendered { files, status })
}

/// The files every mode renders for the access point, its network and the agent.
fn ap_files(ap: &ApSettings, n: &NetSettings, agent: String, mode: &str, board: &str) -> Vec<(&'static str, String)> {
    vec![
        ("hostapd.conf", wifi::render_hostapd(ap)),
        ("dnsmasq.conf", net::render_dnsmasq(n)),
        ("nftables.conf", net::render_nftables(n)),
        ("agent.toml", agent),
        ("ap.network", net::render_ap_network(n)),
        ("popseed.env", net::render_env(mode, board, n)),
    ]
}

/// What the data device holds, as `blkid -p` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    Missing,
    /// No filesystem, partition table or other signature.
    Empty,
    /// Something is there (`blkid -p -o export` lines).
    Signature(String),
}

/// Probes `dev` with `blkid -p` (low-level probe, no cache). Exit 2 means no signature.
pub fn probe_device(dev: &Path) -> Result<DeviceState> {
    if !dev.exists() {
        return Ok(DeviceState::Missing);
    }
    let out = Command::new("blkid")
        .arg("-p")
        .arg("-o")
        .arg("export")
        .arg(dev)
        .output()
        .map_err(|source| ProvisionError::Spawn { cmd: "blkid", source })?;
    match out.status.code() {
        Some(0) => Ok(DeviceState::Signature(String::from_utf8_lossy(&out.stdout).trim().replace('\n', " "))),
        Some(2) => Ok(DeviceState::Empty),
        _ => Err(ProvisionError::Command {
            cmd: format!("blkid -p {}", dev.display()),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }),
    }
}

/// `mkfs.ext4 -F -q -L popseed-data DEV`.
pub fn format_device(dev: &Path) -> Result<()> {
    let out = Command::new("mkfs.ext4")
        .args(["-F", "-q", "-L", DATA_LABEL])
        .arg(dev)
        .output()
        .map_err(|source| ProvisionError::Spawn { cmd: "mkfs.ext4", source })?;
    if !out.status.success() {
        return Err(ProvisionError::Command {
            cmd: format!("mkfs.ext4 {}", dev.display()),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Formats `dev` only when it holds no signature at all. Returns a line saying what was done.
pub fn format_if_empty(dev: &Path) -> Result<String> {
    match probe_device(dev)? {
        DeviceState::Missing => Ok(format!("data device {} not found: not formatting", dev.display())),
        DeviceState::Signature(s) => Ok(format!("data device {} already holds {s}: not formatting", dev.display())),
        DeviceState::Empty => {
            format_device(dev)?;
            Ok(format!("data device {} was empty: formatted ext4 (label {DATA_LABEL})", dev.display()))
        }
    }
}

/// Makes `<state>/device.key` + `device.pub` when missing; returns the public key.
pub fn ensure_device_key(state: &Path) -> Result<(PublicKey, bool)> {
    let key = state.join("device.key");
    if key.exists() {
        let sk = popseed_release::SecretKey::load(&key)?;
        return Ok((sk.public(), false));
    }
    std::fs::create_dir_all(state).map_err(|e| ProvisionError::io(state, e))?;
    let files = popseed_release::keys::keygen(&state.join("device"))?;
    Ok((files.key, true))
}

/// Chowns the state dir, its store dir and the key files to `user` when that user exists.
/// Returns whether the user exists.
pub fn chown_state(state: &Path, user: &str) -> Result<bool> {
    let Some(u) = nix::unistd::User::from_name(user).ok().flatten() else { return Ok(false) };
    for p in [state.to_path_buf(), state.join("store"), state.join("device.key"), state.join("device.pub")] {
        if p.exists() {
            std::os::unix::fs::chown(&p, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
                .map_err(|e| ProvisionError::io(&p, e))?;
        }
    }
    Ok(true)
}

/// Sets the status LED: steady in normal mode, blinking in setup mode.
pub fn set_led(profile: &HwProfile, mode: Mode) -> Result<Option<PathBuf>> {
    let Some(dir) = profile.led.as_ref().and_then(|l| l.sysfs.clone()) else { return Ok(None) };
    let trigger = dir.join("trigger");
    let value = match mode {
        Mode::Normal => "default-on",
        Mode::Setup => "timer",
    };
    std::fs::write(&trigger, value).map_err(|e| ProvisionError::io(&trigger, e))?;
    Ok(Some(trigger))
}

/// Writes `content` to `dir/name` through a temp file and a rename.
pub fn write_atomic(dir: &Path, name: &str, content: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = std::fs::File::create(&tmp).map_err(|e| ProvisionError::io(&tmp, e))?;
    f.write_all(content.as_bytes()).map_err(|e| ProvisionError::io(&tmp, e))?;
    f.sync_all().map_err(|e| ProvisionError::io(&tmp, e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| ProvisionError::io(&dst, e))
}

/// What a run did: lines for the console (in order) and the status written.
pub struct Report {
    pub lines: Vec<String>,
    pub status: Status,
}

/// All first-boot steps. Problems on the way become warnings; only failing to write `out`
/// is an error (the box must come up).
pub fn run(o: &Options) -> Result<Report> {
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    let picked = match profile::pick(&o.hw_dir, &o.root, o.board.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            warnings.push(format!("{}; detecting the board instead", chain(&e)));
            profile::pick(&o.hw_dir, &o.root, None)?
        }
    };
    warnings.extend(picked.warnings.iter().cloned());
    let by = serde_json::to_value(&picked.by).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    lines.push(format!("board: {} ({}, picked by {by})", picked.profile.board, picked.profile.name));

    if !o.no_format {
        let dev = o.data_device.clone().unwrap_or_else(|| picked.profile.storage.data_device.clone());
        match format_if_empty(&dev) {
            Ok(l) => lines.push(l),
            Err(e) => warnings.push(format!("data device {}: {}: not formatting", dev.display(), chain(&e))),
        }
    }

    let key = match ensure_device_key(&o.state) {
        Ok((k, made)) => {
            if made {
                lines.push(format!("made the device key {}", o.state.join("device.key").display()));
            }
            Some(k)
        }
        Err(e) => {
            warnings.push(format!("device key in {}: {}", o.state.display(), chain(&e)));
            None
        }
    };
    if let Err(e) = std::fs::create_dir_all(o.state.join("store")) {
        warnings.push(format!("{}: {e}", o.state.join("store").display()));
    }
    match chown_state(&o.state, AGENT_USER) {
        Ok(true) => {}
        Ok(false) => tracing::info!("no user {AGENT_USER}: state dir ownership left as is"),
        Err(e) => warnings.push(format!("chown to {AGENT_USER}: {e}")),
    }
    // without a stored key the box still comes up, under a throwaway identity
    let key = key.unwrap_or_else(|| popseed_release::SecretKey::generate().public());
    lines.push(format!("device fingerprint: {}", key.fingerprint()));

    let text = std::fs::read_to_string(&o.provision).map_err(|e| format!("cannot read {}: {e}", o.provision.display()));
    let rendered = render_all(
        text.as_deref().map_err(Clone::clone),
        RenderInput {
            profile: &picked.profile,
            picked_by: &by,
            device_key: &key,
            state: &o.state,
            out: &o.out,
            provision_path: &o.provision,
            hw_dir: &o.hw_dir,
            warnings: vec![],
        },
    )?;
    let mut status = rendered.status;
    for e in &status.errors {
        lines.push(e.render(PROVISION_NAME));
    }
    match status.mode {
        Mode::Normal => lines.push(format!("mode: normal, Wi-Fi {:?} on {}", status.ssid, status.ap_interface)),
        Mode::Setup => lines.push(format!(
            "mode: SETUP ({} error(s)): join the open Wi-Fi {:?} and open http://{}/",
            status.errors.len(),
            status.ssid,
            fallback::setup_address().addr()
        )),
    }
    match status.mode {
        Mode::Setup => {
            let token = text.as_deref().ok().and_then(|t| crate::provfile::validate(t, &picked.profile).staff_token);
            if token.is_some() {
                lines.push("setup page: saving a file needs the staff token of the current one".into());
            } else {
                match setup_code::issue(&o.state, &o.provision) {
                    Ok(issued) => {
                        lines.push(format!("setup code: {} (saving a file on the setup page needs it)", issued.code));
                        if let Some(p) = &issued.boot_copy {
                            lines.push(format!("setup code also written to {}", p.display()));
                        }
                        status.setup_code_path = Some(issued.path);
                    }
                    Err(e) => warnings.push(format!("setup code: {}: the setup page cannot save", chain(&e))),
                }
            }
        }
        Mode::Normal => setup_code::retire(&o.state, &o.provision),
    }
    match set_led(&picked.profile, status.mode) {
        Ok(Some(p)) => tracing::info!("LED: {}", p.display()),
        Ok(None) => {}
        Err(e) => warnings.push(format!("LED: {e}")),
    }
    for w in &warnings {
        lines.push(format!("warning: {w}"));
    }
    status.warnings = warnings;

    std::fs::create_dir_all(&o.out).map_err(|e| ProvisionError::io(&o.out, e))?;
    for (name, content) in &rendered.files {
        write_atomic(&o.out, name, content)?;
    }
    if !rendered.files.iter().any(|(n, _)| *n == "uplink.network") {
        // a stale uplink unit from an earlier boot must not linger
        let _ = std::fs::remove_file(o.out.join("uplink.network"));
    }
    let json = serde_json::to_string_pretty(&status)
        .map_err(|source| ProvisionError::Status { path: o.out.join("status.json"), source })?;
    write_atomic(&o.out, "status.json", &(json + "\n"))?;
    Ok(Report { lines, status })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provfile::tests::{good_file, pubkey};

    fn input<'a>(profile: &'a HwProfile, key: &'a PublicKey) -> RenderInput<'a> {
        RenderInput {
            profile,
            picked_by: "argument",
            device_key: key,
            state: Path::new("/var/lib/popseed"),
            out: Path::new("/run/popseed"),
            provision_path: Path::new("/boot/popseed/popseed.toml"),
            hw_dir: Path::new("/usr/share/popseed/hw"),
            warnings: vec![],
        }
    }

    fn file<'a>(r: &'a Rendered, name: &str) -> &'a str {
        r.files.iter().find(|(n, _)| *n == name).map(|(_, c)| c.as_str()).unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn good_file_renders_normal_mode() {
        let hw = HwProfile::builtin_generic();
        let key = popseed_release::SecretKey::generate().public();
        let text = good_file(&pubkey());
        let r = render_all(Ok(&text), input(&hw, &key)).unwrap();
        assert_eq!(r.status.mode, Mode::Normal);
        assert_eq!(r.status.device_fingerprint, key.fingerprint());
        assert!(file(&r, "hostapd.conf").contains("ssid2=\"FooConf Downloads\""));
        assert!(file(&r, "hostapd.conf").contains("country_code=DE"));
        assert!(file(&r, "nftables.conf").contains("masquerade"), "uplink configured");
        assert!(file(&r, "uplink.network").contains("DHCP=ipv4"));
        assert!(file(&r, "agent.toml").contains("staff_token"));
    }

    #[test]
    fn bad_or_missing_file_renders_the_setup_fallback() {
        let hw = HwProfile::builtin_generic();
        let key = popseed_release::SecretKey::generate().public();
        let text = good_file(&pubkey()).replace("\"DE\"", "\"XX\"").replace("0.0.0.0:8080", "0.0.0.0:9000");
        let r = render_all(Ok(&text), input(&hw, &key)).unwrap();
        assert_eq!(r.status.mode, Mode::Setup);
        assert_eq!(r.status.errors.len(), 1);
        assert_eq!(r.status.errors[0].key, "wifi.country");
        let ssid = fallback::setup_ssid(&key);
        let hostapd = file(&r, "hostapd.conf");
        assert!(hostapd.contains(&format!("ssid2=\"{ssid}\"")), "{hostapd}");
        assert!(!hostapd.contains("wpa="), "setup AP is open: {hostapd}");
        assert!(file(&r, "dnsmasq.conf").contains("dhcp-option=option:router,10.42.0.1"));
        assert!(!file(&r, "nftables.conf").contains("masquerade"));
        assert!(!r.files.iter().any(|(n, _)| *n == "uplink.network"));
        let cfg = agentconf::check(file(&r, "agent.toml"), Path::new("/run/popseed/agent.toml")).unwrap();
        assert_eq!(cfg.control.unwrap().listen.to_string(), "0.0.0.0:9000", "the file's management address is kept");

        let r = render_all(Err("cannot read popseed.toml: gone".into()), input(&hw, &key)).unwrap();
        assert_eq!(r.status.mode, Mode::Setup);
        assert!(r.status.errors[0].message.contains("gone"));
        assert_eq!(r.status.management_listen, "0.0.0.0:8080");
    }

    #[test]
    fn led_follows_the_mode() {
        let d = tempfile::tempdir().unwrap();
        let led = d.path().join("leds/status");
        std::fs::create_dir_all(&led).unwrap();
        let mut hw = HwProfile::builtin_generic();
        assert_eq!(set_led(&hw, Mode::Setup).unwrap(), None);
        hw.led = Some(crate::profile::LedHw { sysfs: Some(led.clone()), gpio: None });
        set_led(&hw, Mode::Setup).unwrap();
        assert_eq!(std::fs::read_to_string(led.join("trigger")).unwrap(), "timer");
        set_led(&hw, Mode::Normal).unwrap();
        assert_eq!(std::fs::read_to_string(led.join("trigger")).unwrap(), "default-on");
    }

    #[test]
    fn device_key_is_made_once() {
        let d = tempfile::tempdir().unwrap();
        let (k1, made1) = ensure_device_key(d.path()).unwrap();
        let (k2, made2) = ensure_device_key(d.path()).unwrap();
        assert!(made1 && !made2);
        assert_eq!(k1, k2);
        assert_eq!(PublicKey::load(&d.path().join("device.pub")).unwrap(), k1);
    }
}
