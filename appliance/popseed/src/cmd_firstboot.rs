//! `popseed firstboot`: the boot-time provisioning step (see docs/provisioning.md). Prints the
//! board, the device fingerprint and every provisioning error on stdout (the unit sends stdout
//! to the console); exits 0 in normal and setup mode alike, 1 only when --out cannot be written.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use popseed_provision::firstboot::{self, Options};

#[derive(Args)]
pub struct FirstbootArgs {
    /// The provisioning file.
    #[arg(long, value_name = "FILE", default_value = "/boot/popseed/popseed.toml")]
    pub provision: PathBuf,
    /// Directory of board profiles (`<board>.toml`).
    #[arg(long, value_name = "DIR", default_value = "/usr/share/popseed/hw")]
    pub hw_dir: PathBuf,
    /// Use this board profile instead of detecting the board.
    #[arg(long, value_name = "ID")]
    pub board: Option<String>,
    /// State directory on the data partition (device key, store).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/popseed")]
    pub state: PathBuf,
    /// Where the rendered configuration goes.
    #[arg(long, value_name = "DIR", default_value = "/run/popseed")]
    pub out: PathBuf,
    /// Data device to format when it holds no filesystem (default: the profile's).
    #[arg(long, value_name = "DEV")]
    pub data_device: Option<PathBuf>,
    /// Never format the data device.
    #[arg(long)]
    pub no_format: bool,
    /// Root of /etc, /proc and /sys for board detection (tests).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub sys_root: PathBuf,
}

pub fn run(a: FirstbootArgs) -> Result<()> {
    let opts = Options {
        provision: a.provision,
        hw_dir: a.hw_dir,
        board: a.board,
        state: a.state,
        out: a.out,
        data_device: a.data_device,
        no_format: a.no_format,
        root: a.sys_root,
    };
    let report = firstboot::run(&opts)?;
    for l in &report.lines {
        println!("{l}");
    }
    Ok(())
}
