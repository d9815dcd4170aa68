//! popseed-agent: the appliance agent. It opens the store, admits the configured releases and
//! starts the fetcher and the serving components, and is where the crates' ports meet: the
//! fetcher is the portal's and the swarm's read-through, and status reads the others through
//! the views in [`views`]. `agent.toml` itself is popseed-config.
//!
//! - [`run`]: [`start`] and the running [`Agent`].
//! - [`control`]: the device identity, the job manager and the device links.
//! - [`views`]: the components' counters as status sees them.

pub mod control;
pub mod run;
pub mod views;

pub use popseed_config::{AgentConfig, ControlSection};
pub use run::{start, Agent, AgentError, BoundAddrs};
