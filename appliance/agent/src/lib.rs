//! popseed-agent: the appliance agent. [`config`] reads `agent.toml`; [`run`] opens the store,
//! admits releases, and runs the fetcher (and, as they land, the swarm, portal and control).

pub mod config;
pub mod control;
pub mod run;

pub use config::{AgentConfig, ControlSection};
pub use run::{run, start, Agent, AgentError, RunOptions};
