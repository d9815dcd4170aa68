//! popseed-config: `agent.toml`, the agent's configuration, as plain data every crate that needs
//! it can read: the agent runs it, provisioning renders and re-checks it, and the swarm and the
//! portal take their own sections ([`SwarmConfig`], [`PortalConfig`]) from here. Parsing checks
//! every key and names it in the error.

pub mod agent;
pub mod portal;
pub mod swarm;

pub use agent::{
    AgentConfig, ConfigError, ControlSection, Dur, FetchSection, Invalid, OriginSection, ReleaseSection, StoreSection,
};
pub use portal::{InvalidSetting, PortalConfig};
pub use swarm::SwarmConfig;
