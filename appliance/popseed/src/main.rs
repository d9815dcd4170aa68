//! `popseed`: one binary for the publisher tools, the store inspector, the origin seed server,
//! the agent and its standalone parts (`seed`, `portal`), first boot, jobs, status and the demo.
//! The libraries print nothing; what a command prints is decided here. Errors are reported at
//! the edge, as one line on stderr with their whole cause chain; exit codes: 0 ok, 1 operational
//! failure, 2 usage error.

mod cmd_agent;
mod cmd_firstboot;
mod cmd_job;
mod cmd_origin;
mod cmd_portal;
mod cmd_release;
mod cmd_seed;
mod cmd_status;
mod cmd_store;
mod demo;
mod notify;
mod progress;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "popseed",
    version,
    about = "Edge cache appliance for pop-up venues: publish signed releases, store and serve them offline",
    long_about = "popseed turns a folder into a signed release (BitTorrent v1 .torrent + ed25519-signed manifest), \
keeps releases in a crash-safe piece store on the appliance's NVMe, and serves them at the venue.\n\n\
Exit codes: 0 ok, 1 operational failure, 2 usage error."
)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info` or `popseed_store=debug`.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a publisher key pair (private key file mode 0600) and print its fingerprint.
    Keygen(cmd_release::KeygenArgs),
    /// Turn a folder (or one file) into a signed release: release.torrent + manifest.json.
    Publish(cmd_release::PublishArgs),
    /// Check a release's signature, that its .torrent matches the manifest, and optionally its data.
    Verify(cmd_release::VerifyArgs),
    /// Inspect and manage a piece store: releases, pieces present, bytes, pins.
    Store(cmd_store::StoreArgs),
    /// Run an origin seed: serve releases to appliances over QUIC (popseed/1).
    Origin(cmd_origin::OriginArgs),
    /// Run the appliance agent from its config file: fill the store from origins, serve it.
    Agent(cmd_agent::AgentArgs),
    /// Seed every release of a store to BitTorrent peers, with the venue tracker and LSD.
    Seed(cmd_seed::SeedArgs),
    /// Serve the captive portal (DNS + catalog + downloads) for every release in a store.
    Portal(cmd_portal::PortalArgs),
    /// Boot-time provisioning: board profile, data partition, device key, popseed.toml -> /run/popseed.
    Firstboot(cmd_firstboot::FirstbootArgs),
    /// Queue prewarm jobs on an origin (for devices) or on a box, list or cancel them.
    Job(cmd_job::JobArgs),
    /// Ask a box for its status (ready or not and why, jobs, store, rates); exit 0 when ready.
    Status(cmd_status::StatusArgs),
    /// Run a demo venue on localhost with a generated sample release.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit 2 with clap's message
    let filter = cli.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "warn".into());
    {
        // Log lines to stderr per the filter; WARN and ERROR also to the dashboard's recent errors.
        use tracing_subscriber::prelude::*;
        // librqbit-utp names the remote address in its spans: off unless asked for by name (the
        // box keeps no record of who attended; docs/security.md).
        use tracing_subscriber::filter::{LevelFilter, Targets};
        let mut env = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "warn".into());
        if !filter.contains("librqbit_utp") {
            if let Ok(off) = "librqbit_utp=off".parse() {
                env = env.add_directive(off);
            }
        }
        let errors = Targets::new().with_default(LevelFilter::WARN).with_target("librqbit_utp", LevelFilter::OFF);
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(env))
            .with(popseed_status::errors::layer().with_filter(errors))
            .init();
    }
    let result = match cli.command {
        Command::Keygen(a) => cmd_release::keygen(a),
        Command::Publish(a) => cmd_release::publish(a),
        Command::Verify(a) => cmd_release::verify(a),
        Command::Store(a) => cmd_store::run(a),
        Command::Origin(a) => cmd_origin::run(a),
        Command::Agent(a) => cmd_agent::run(a),
        Command::Portal(a) => cmd_portal::run(a),
        Command::Status(a) => cmd_status::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Job(a) => cmd_job::run(a),
        Command::Firstboot(a) => cmd_firstboot::run(a),
        Command::Seed(a) => cmd_seed::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popseed: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
