//! `status.json`: what first boot decided (mode, every provisioning error, device fingerprint,
//! board), read by `popseed agent --setup-from` and by anyone looking at the box.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::error::{ProvisionError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Normal,
    Setup,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub mode: Mode,
    pub errors: Vec<Diagnostic>,
    pub device_fingerprint: String,
    pub board: String,
    /// argument, board-file, device-tree, dmi, default or built-in.
    pub board_picked_by: String,
    pub warnings: Vec<String>,
    /// The provisioning file the setup page writes.
    pub provision_path: PathBuf,
    /// Board profile directory (the setup page validates against the same profile).
    pub hw_dir: PathBuf,
    pub ssid: String,
    pub ap_interface: String,
    pub portal_address: String,
    pub management_listen: String,
    /// In setup mode without a valid staff token: the file holding the one-time setup code the
    /// setup page asks for (printed on the console and left on the boot partition).
    #[serde(default)]
    pub setup_code_path: Option<PathBuf>,
}

impl Status {
    pub fn load(path: &Path) -> Result<Status> {
        let text = std::fs::read_to_string(path).map_err(|e| ProvisionError::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| ProvisionError::Status { path: path.to_path_buf(), source })
    }
}
