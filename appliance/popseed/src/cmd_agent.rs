//! `popseed agent --config agent.toml`: the appliance agent.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use popseed_agent::{AgentConfig, RunOptions};
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct AgentArgs {
    /// The agent's configuration file (TOML; see docs/operator-guide.md).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Exit once every configured release is complete.
    #[arg(long)]
    pub exit_when_complete: bool,
    /// Print a progress line every second.
    #[arg(long)]
    pub progress: bool,
}

pub fn run(a: AgentArgs) -> Result<()> {
    let cfg = AgentConfig::load(&a.config)?;
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            crate::signals::shutdown_signal().await;
            sd.cancel();
        });
        popseed_agent::run(cfg, RunOptions { exit_when_complete: a.exit_when_complete, progress_lines: a.progress }, shutdown).await?;
        anyhow::Ok(())
    })
}
