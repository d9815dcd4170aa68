//! Provisioning of an appliance: the event team's `popseed.toml` (validated with every error's
//! line), board profiles (`hw/<board>.toml`) and how one is picked, rendering of hostapd,
//! dnsmasq, nftables, networkd and agent configs, the first-boot steps, and the setup page a box
//! with a bad file serves. See docs/provisioning.md.

pub mod agentconf;
pub mod diag;
pub mod error;
pub mod fallback;
pub mod firstboot;
pub mod net;
pub mod profile;
pub mod provfile;
pub mod secrets;
pub mod setup;
pub mod setup_code;
pub mod status;
pub mod wifi;

pub use diag::Diagnostic;
pub use error::{ProvisionError, Result};
pub use profile::HwProfile;
pub use provfile::{validate, Provisioning, Validation};
