//! Board profiles (`hw/<board>.toml`): the AP interface and its chipset's limits, the data
//! partition, optional LED and button; and how the profile for this box is picked (explicit id,
//! `/etc/popseed/board`, device-tree model or DMI product name, else `generic-x86_64`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ProvisionError, Result};

/// The id used when nothing else matches.
pub const GENERIC: &str = "generic-x86_64";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Band {
    #[serde(rename = "2.4GHz")]
    Ghz2_4,
    #[serde(rename = "5GHz")]
    Ghz5,
}

impl Band {
    pub fn name(self) -> &'static str {
        match self {
            Band::Ghz2_4 => "2.4GHz",
            Band::Ghz5 => "5GHz",
        }
    }
    pub fn parse(s: &str) -> Option<Band> {
        match s {
            "2.4GHz" => Some(Band::Ghz2_4),
            "5GHz" => Some(Band::Ghz5),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HwProfile {
    pub board: String,
    pub name: String,
    pub arch: String,
    #[serde(default, rename = "match")]
    pub matches: Vec<String>,
    pub notes: Option<String>,
    pub wifi: WifiHw,
    pub storage: StorageHw,
    pub uplink: Option<UplinkHw>,
    pub led: Option<LedHw>,
    pub button: Option<ButtonHw>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WifiHw {
    pub interface: String,
    #[serde(default = "default_driver")]
    pub driver: String,
    #[serde(default)]
    pub chipset: String,
    pub max_clients: u16,
    pub bands: Vec<Band>,
    #[serde(default = "yes")]
    pub wpa3: bool,
    pub ht_capab: Option<String>,
    #[serde(default)]
    pub vht: bool,
}

fn default_driver() -> String {
    "nl80211".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageHw {
    pub data_device: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkHw {
    pub interface: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedHw {
    /// LED class directory, e.g. `/sys/class/leds/status`.
    pub sysfs: Option<PathBuf>,
    pub gpio: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonHw {
    pub gpio: Option<u32>,
    pub input: Option<PathBuf>,
}

impl HwProfile {
    pub fn parse(text: &str, path: &Path) -> Result<HwProfile> {
        let p: HwProfile = toml::from_str(text)
            .map_err(|e| ProvisionError::ProfileToml { path: path.to_path_buf(), source: Box::new(e) })?;
        let bad = |msg: &'static str| Err(ProvisionError::Profile { path: path.to_path_buf(), msg });
        if p.board.is_empty() || !p.board.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return bad("`board` must be a non-empty id of letters, digits, '-' and '_'");
        }
        if p.arch != "aarch64" && p.arch != "x86_64" {
            return bad("`arch` must be aarch64 or x86_64");
        }
        if p.wifi.interface.is_empty() || p.wifi.interface.len() > 15 {
            return bad("`wifi.interface` must be a network interface name (1..15 characters)");
        }
        if p.wifi.max_clients == 0 {
            return bad("`wifi.max_clients` must be at least 1");
        }
        if p.wifi.bands.is_empty() {
            return bad("`wifi.bands` must name at least one band");
        }
        if p.wifi.ht_capab.as_deref().is_some_and(|h| h.contains('\n')) {
            return bad("`wifi.ht_capab` must be one line");
        }
        Ok(p)
    }

    pub fn load(path: &Path) -> Result<HwProfile> {
        let text = std::fs::read_to_string(path).map_err(|e| ProvisionError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// The profile used when no file matches: any x86_64 PC with one Wi-Fi card.
    pub fn builtin_generic() -> HwProfile {
        HwProfile {
            board: GENERIC.into(),
            name: "Generic x86_64 PC (built-in profile)".into(),
            arch: "x86_64".into(),
            matches: vec![],
            notes: None,
            wifi: WifiHw {
                interface: "wlan0".into(),
                driver: default_driver(),
                chipset: "unknown".into(),
                max_clients: 32,
                bands: vec![Band::Ghz2_4],
                wpa3: true,
                ht_capab: None,
                vht: false,
            },
            storage: StorageHw { data_device: PathBuf::from("/dev/disk/by-partlabel/popseed-data") },
            uplink: Some(UplinkHw { interface: "eth0".into() }),
            led: None,
            button: None,
        }
    }
}

/// How the profile was chosen (reported in status.json and on the console).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PickedBy {
    Argument,
    BoardFile,
    DeviceTree,
    Dmi,
    Default,
    BuiltIn,
}

/// The chosen profile, how, and problems met on the way (bad profile files, a board file
/// naming a missing profile).
#[derive(Debug, Clone)]
pub struct Picked {
    pub profile: HwProfile,
    pub by: PickedBy,
    pub warnings: Vec<String>,
}

/// Every valid profile in `dir` (`*.toml`, sorted by file name), plus a warning per bad file.
pub fn load_dir(dir: &Path) -> (Vec<HwProfile>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => {
            rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect()
        }
        Err(e) => {
            warnings.push(format!("board profiles {}: {}", dir.display(), popseed_core::chain(&e)));
            return (out, warnings);
        }
    };
    paths.sort();
    for p in paths {
        match HwProfile::load(&p) {
            Ok(prof) => out.push(prof),
            Err(e) => warnings.push(popseed_core::chain(&e).to_string()),
        }
    }
    (out, warnings)
}

fn read_id_file(path: &Path) -> Option<String> {
    let raw = std::fs::read(path).ok()?;
    let s = String::from_utf8_lossy(&raw);
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    let first = s.lines().next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

/// Picks the profile for this box. `root` prefixes `/etc`, `/proc` and `/sys` (`/` on the box,
/// a fake tree in tests). `board` is the `--board` argument.
pub fn pick(hw_dir: &Path, root: &Path, board: Option<&str>) -> Result<Picked> {
    let (profiles, mut warnings) = load_dir(hw_dir);
    let by_id = |id: &str| profiles.iter().find(|p| p.board == id).cloned();
    if let Some(id) = board {
        return match by_id(id) {
            Some(profile) => Ok(Picked { profile, by: PickedBy::Argument, warnings }),
            None if id == GENERIC => {
                Ok(Picked { profile: HwProfile::builtin_generic(), by: PickedBy::BuiltIn, warnings })
            }
            None => Err(ProvisionError::NoSuchBoard(id.to_owned())),
        };
    }
    let rel = |p: &str| root.join(p.trim_start_matches('/'));
    if let Some(id) = read_id_file(&rel("/etc/popseed/board")) {
        match by_id(&id) {
            Some(profile) => return Ok(Picked { profile, by: PickedBy::BoardFile, warnings }),
            None => warnings
                .push(format!("/etc/popseed/board names {id:?} but no profile has that id; detecting the board")),
        }
    }
    for (file, by) in
        [("/proc/device-tree/model", PickedBy::DeviceTree), ("/sys/class/dmi/id/product_name", PickedBy::Dmi)]
    {
        let Some(model) = read_id_file(&rel(file)) else { continue };
        let model_lc = model.to_lowercase();
        if let Some(profile) =
            profiles.iter().find(|p| p.matches.iter().any(|m| !m.is_empty() && model_lc.contains(&m.to_lowercase())))
        {
            return Ok(Picked { profile: profile.clone(), by, warnings });
        }
    }
    match by_id(GENERIC) {
        Some(profile) => Ok(Picked { profile, by: PickedBy::Default, warnings }),
        None => {
            warnings.push(format!(
                "no profile matched and {} has no {GENERIC}.toml: using the built-in one",
                hw_dir.display()
            ));
            Ok(Picked { profile: HwProfile::builtin_generic(), by: PickedBy::BuiltIn, warnings })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile_text(id: &str, matches: &[&str]) -> String {
        format!(
            "board = \"{id}\"\nname = \"{id} board\"\narch = \"aarch64\"\nmatch = {matches:?}\n\
             [wifi]\ninterface = \"wlan1\"\nchipset = \"test\"\nmax_clients = 40\nbands = [\"2.4GHz\", \"5GHz\"]\n\
             [storage]\ndata_device = \"/dev/nvme0n1p4\"\n[led]\nsysfs = \"/sys/class/leds/status\"\n"
        )
    }

    fn setup() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let hw = d.path().join("hw");
        std::fs::create_dir_all(&hw).unwrap();
        std::fs::write(hw.join("rock5b.toml"), profile_text("rock5b", &["Radxa ROCK 5B"])).unwrap();
        std::fs::write(hw.join("nuc.toml"), profile_text("nuc", &["NUC11"])).unwrap();
        std::fs::write(hw.join("generic-x86_64.toml"), profile_text("generic-x86_64", &[])).unwrap();
        std::fs::write(hw.join("broken.toml"), "board = \"x\"\nwifi = 3\n").unwrap();
        d
    }

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[test]
    fn picks_by_device_tree_then_dmi_then_generic() {
        let d = setup();
        let hw = d.path().join("hw");
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let p = pick(&hw, &root, None).unwrap();
        assert_eq!((p.profile.board.as_str(), p.by.clone()), ("generic-x86_64", PickedBy::Default));
        assert!(p.warnings.iter().any(|w| w.contains("broken.toml")), "{:?}", p.warnings);

        write(&root, "sys/class/dmi/id/product_name", b"NUC11TNHi5\n");
        let p = pick(&hw, &root, None).unwrap();
        assert_eq!((p.profile.board.as_str(), p.by), ("nuc", PickedBy::Dmi));

        // device-tree model strings end with a NUL
        write(&root, "proc/device-tree/model", b"Radxa ROCK 5B\0");
        let p = pick(&hw, &root, None).unwrap();
        assert_eq!((p.profile.board.as_str(), p.by), ("rock5b", PickedBy::DeviceTree));
        assert_eq!(p.profile.wifi.bands, vec![Band::Ghz2_4, Band::Ghz5]);
        assert_eq!(p.profile.wifi.driver, "nl80211");
    }

    #[test]
    fn board_file_and_argument_win() {
        let d = setup();
        let hw = d.path().join("hw");
        let root = d.path().join("root");
        write(&root, "proc/device-tree/model", b"Radxa ROCK 5B\0");
        write(&root, "etc/popseed/board", b"nuc\n");
        let p = pick(&hw, &root, None).unwrap();
        assert_eq!((p.profile.board.as_str(), p.by), ("nuc", PickedBy::BoardFile));
        let p = pick(&hw, &root, Some("rock5b")).unwrap();
        assert_eq!((p.profile.board.as_str(), p.by), ("rock5b", PickedBy::Argument));
        assert!(matches!(pick(&hw, &root, Some("nope")), Err(ProvisionError::NoSuchBoard(_))));

        write(&root, "etc/popseed/board", b"gone\n");
        let p = pick(&hw, &root, None).unwrap();
        assert_eq!(p.profile.board, "rock5b");
        assert!(p.warnings.iter().any(|w| w.contains("gone")), "{:?}", p.warnings);
    }

    #[test]
    fn builtin_when_no_profiles() {
        let d = tempfile::tempdir().unwrap();
        let p = pick(&d.path().join("missing"), d.path(), None).unwrap();
        assert_eq!((p.profile.board.as_str(), p.by), (GENERIC, PickedBy::BuiltIn));
        assert_eq!(pick(&d.path().join("missing"), d.path(), Some(GENERIC)).unwrap().by, PickedBy::BuiltIn);
    }

    #[test]
    fn bad_profiles_are_refused_with_reasons() {
        let e = HwProfile::parse(
            &profile_text("x", &[]).replace("max_clients = 40", "max_client = 40"),
            Path::new("x.toml"),
        )
        .map(|_| ())
        .map_err(|e| popseed_core::chain(&e).to_string())
        .unwrap_err();
        assert!(e.contains("max_client"), "{e}");
        let e = HwProfile::parse(&profile_text("x", &[]).replace("aarch64", "mips"), Path::new("x.toml"))
            .map(|_| ())
            .map_err(|e| popseed_core::chain(&e).to_string())
            .unwrap_err();
        assert!(e.contains("arch"), "{e}");
        let e = HwProfile::parse(&profile_text("x", &[]).replace("\"5GHz\"", "\"6GHz\""), Path::new("x.toml"))
            .map(|_| ())
            .map_err(|e| popseed_core::chain(&e).to_string())
            .unwrap_err();
        assert!(e.contains("6GHz"), "{e}");
    }

    #[test]
    fn every_board_profile_in_the_repo_parses_and_is_named_by_its_id() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw");
        let (profiles, warnings) = load_dir(&dir);
        assert_eq!(warnings, Vec::<String>::new());
        assert!(!profiles.is_empty());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let prof = HwProfile::load(&p).unwrap();
                assert_eq!(Some(prof.board.as_str()), p.file_stem().and_then(|s| s.to_str()), "{}", p.display());
            }
        }
    }

    #[test]
    fn example_profile_in_the_repo_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw/profile-example.toml");
        let prof = HwProfile::load(&p).unwrap();
        assert_eq!(prof.board, "profile-example");
    }
}
