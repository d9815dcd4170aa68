//! `popseed agent --config agent.toml [--setup-from status.json]`: the appliance agent, or,
//! when first boot fell back to setup mode, the setup page (docs/provisioning.md).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use popseed_agent::{AgentConfig, RunOptions};
use popseed_provision::setup::{self, SetupState};
use popseed_provision::status::{Mode, Status};
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
    /// First boot's status.json: when it says `"mode": "setup"`, serve only the setup page (on
    /// the control address and the portal HTTP address) instead of running the agent.
    #[arg(long, value_name = "FILE")]
    pub setup_from: Option<PathBuf>,
}

pub fn run(a: AgentArgs) -> Result<()> {
    let cfg = AgentConfig::load(&a.config)?;
    let setup = match &a.setup_from {
        Some(p) if p.exists() => Some(Status::load(p)?).filter(|s| s.mode == Mode::Setup),
        Some(p) => {
            tracing::warn!("{} does not exist: running the agent normally", p.display());
            None
        }
        None => None,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            crate::signals::shutdown_signal().await;
            sd.cancel();
        });
        if let Some(status) = setup {
            return run_setup(&cfg, status, shutdown).await;
        }
        popseed_agent::run(
            cfg,
            RunOptions { exit_when_complete: a.exit_when_complete, progress_lines: a.progress },
            shutdown,
        )
        .await?;
        anyhow::Ok(())
    })
}

async fn run_setup(cfg: &AgentConfig, status: Status, shutdown: CancellationToken) -> Result<()> {
    let mut listen: Vec<SocketAddr> = Vec::new();
    if let Some(c) = &cfg.control {
        listen.push(c.listen);
    }
    let mut dns: Option<(SocketAddr, IpAddr)> = None;
    if let Some(p) = &cfg.portal {
        if !listen.contains(&p.http_listen) {
            listen.push(p.http_listen);
        }
        dns = Some((p.dns_listen, p.portal_ip));
    }
    anyhow::ensure!(!listen.is_empty(), "setup mode needs [control] or [portal] in the agent config");
    eprintln!("popseed: setup mode ({} provisioning error(s)): serving the setup page", status.errors.len());
    let state = Arc::new(SetupState::from_status(status));
    setup::serve(state, listen, dns, async move { shutdown.cancelled().await }).await?;
    Ok(())
}
