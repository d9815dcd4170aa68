//! `popseed agent --config agent.toml [--setup-from status.json]`: the appliance agent, or,
//! when first boot fell back to setup mode, the setup page (docs/provisioning.md).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use popseed_agent::Agent;
use popseed_config::AgentConfig;
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
        let agent = popseed_agent::start(&cfg, shutdown.child_token()).await?;
        announce(&agent)?;
        crate::notify::ready();
        crate::notify::spawn_watchdog(shutdown.clone());
        watch(&agent, a.exit_when_complete, a.progress, &shutdown).await;
        shutdown.cancel();
        agent.stop().await;
        anyhow::Ok(())
    })
}

/// Tells the operator (and scripts) who the box is and where it listens: the device
/// fingerprint on stderr, one `name: address` line per listener on stdout. Each goes out in a
/// single write, so a reader never sees half a line.
fn announce(agent: &Agent) -> Result<()> {
    if let Some(c) = &agent.control {
        let line = format!("device fingerprint: {} ({})\n", c.device.fingerprint(), c.device_name);
        std::io::stderr().lock().write_all(line.as_bytes())?;
    }
    let a = agent.addrs();
    let mut out = String::new();
    for (name, addr) in [
        ("management", a.management),
        ("peers", a.peers),
        ("tracker", a.tracker),
        ("portal-http", a.portal_http),
        ("portal-dns", a.portal_dns),
    ] {
        if let Some(addr) = addr {
            out.push_str(&format!("{name}: {addr}\n"));
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// How often the progress is looked at (a line is printed every fourth look).
const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// Runs until `shutdown`, or until every configured release is complete with
/// `exit_when_complete`, printing a progress line every second with `progress`.
async fn watch(agent: &Agent, exit_when_complete: bool, progress: bool, shutdown: &CancellationToken) {
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    let complete = agent.fetcher.wait_complete();
    tokio::pin!(complete);
    let mut completed = false;
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            // leave at completion, not at the next tick
            _ = &mut complete, if exit_when_complete && !completed => completed = true,
        }
        n += 1;
        let snap = agent.fetcher.snapshot();
        if progress && (n.is_multiple_of(4) || snap.complete) {
            let line = format!("{}\n", crate::progress::progress_line(&snap));
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        if exit_when_complete && snap.complete {
            return;
        }
    }
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
    let line = format!("popseed: setup mode ({} provisioning error(s)): serving the setup page\n", status.errors.len());
    std::io::stderr().lock().write_all(line.as_bytes())?;
    let state = Arc::new(SetupState::from_status(status));
    crate::notify::ready();
    crate::notify::spawn_watchdog(shutdown.clone());
    setup::serve(state, listen, dns, async move { shutdown.cancelled().await }).await?;
    Ok(())
}
