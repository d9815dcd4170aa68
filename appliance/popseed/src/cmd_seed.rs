//! `popseed seed`: serves every release of a store to BitTorrent peers (plus the venue tracker
//! and LSD) until interrupted. The standalone form of what the agent embeds, with no fetcher
//! behind it (`NoReadThrough`: requests for missing pieces are refused); prints each release's
//! magnet link and tracker URL and can write the box's .torrent files.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use popseed_core::ByteSize;
use popseed_store::{Store, StoreConfig};
use popseed_swarm::{Shutdown, Swarm, SwarmConfig};

#[derive(Args)]
pub struct SeedArgs {
    /// The piece store to serve.
    #[arg(long, value_name = "DIR")]
    pub store: PathBuf,
    /// Peer listen address (TCP). Port 0 picks a free port (printed).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:6881")]
    pub listen: SocketAddr,
    /// Tracker listen address (HTTP). Port 0 picks a free port (printed).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:6969")]
    pub tracker_listen: SocketAddr,
    /// Run without the built-in tracker.
    #[arg(long)]
    pub no_tracker: bool,
    /// The box's address as handed out in links and tracker replies.
    #[arg(long, value_name = "IP")]
    pub announce_ip: Option<IpAddr>,
    /// Disable BEP 14 local service discovery (multicast announces on the LAN).
    #[arg(long)]
    pub no_lsd: bool,
    /// Speak BitTorrent over TCP only: no uTP (BEP 29) on the peer port.
    #[arg(long)]
    pub no_utp: bool,
    /// With --no-utp: do not answer uTP connection attempts with a reset either.
    #[arg(long)]
    pub no_utp_reset: bool,
    /// Write the box's .torrent of each release here as <infohash>.torrent.
    #[arg(long, value_name = "DIR")]
    pub torrents_out: Option<PathBuf>,
    /// Most peers connected at once.
    #[arg(long, value_name = "N", default_value_t = SwarmConfig::default().max_peers)]
    pub max_peers: usize,
    /// Most peers connected from one IP address.
    #[arg(long, value_name = "N", default_value_t = SwarmConfig::default().max_peers_per_ip)]
    pub max_peers_per_ip: usize,
    /// Peers unchoked at once (upload slots).
    #[arg(long, value_name = "N", default_value_t = SwarmConfig::default().upload_slots)]
    pub upload_slots: usize,
    /// Global upload cap per second (e.g. 50MiB); 0 = none.
    #[arg(long, value_name = "BYTES", default_value = "0")]
    pub upload_rate: ByteSize,
    /// Per-peer upload cap per second; 0 = none.
    #[arg(long, value_name = "BYTES", default_value = "0")]
    pub peer_upload_rate: ByteSize,
    /// Idle timeout for peers, seconds.
    #[arg(long, value_name = "SECS", default_value_t = SwarmConfig::default().idle_timeout_secs)]
    pub idle_timeout: u64,
}

pub fn run(a: SeedArgs) -> Result<()> {
    let store = Arc::new(
        Store::open(StoreConfig::new(&a.store)).with_context(|| format!("opening store {}", a.store.display()))?,
    );
    let cfg = SwarmConfig {
        listen: a.listen,
        tracker_listen: (!a.no_tracker).then_some(a.tracker_listen),
        announce_ip: a.announce_ip,
        lsd: !a.no_lsd,
        utp: !a.no_utp,
        utp_reset: !a.no_utp_reset,
        max_peers: a.max_peers,
        max_peers_per_ip: a.max_peers_per_ip,
        upload_slots: a.upload_slots,
        upload_rate: a.upload_rate.get(),
        peer_upload_rate: a.peer_upload_rate.get(),
        idle_timeout_secs: a.idle_timeout,
        ..SwarmConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = Shutdown::new();
        // a store served on its own: nothing fetches what it lacks
        let swarm = Swarm::start(store.clone(), popseed_swarm::SwarmPorts::none(), cfg, shutdown.clone()).await?;
        if let Some(dir) = &a.torrents_out {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        println!("peers: {}", swarm.peer_addr());
        if let Some(t) = swarm.tracker_addr() {
            println!("tracker-listen: {t}");
        }
        if let Some(url) = swarm.tracker_url() {
            println!("tracker: {url}");
        }
        for r in store.releases() {
            let ih = r.infohash;
            println!("release: {ih} {}/{} {} {}", r.pieces_present, r.piece_count, r.name, r.version);
            println!("  magnet: {}", swarm.magnet(&r.infohash, &[])?);
            if let Some(dir) = &a.torrents_out {
                let path = dir.join(format!("{ih}.torrent"));
                std::fs::write(&path, swarm.torrent(&r.infohash, &[])?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("  torrent: {}", path.display());
            }
        }
        println!("seeding (Ctrl-C or SIGTERM to stop)");
        crate::signals::shutdown_signal().await;
        let stats = swarm.stats().snapshot();
        swarm.shutdown().await;
        eprintln!(
            "popseed seed: stopped; uploaded {} bytes to {} peers ({} over uTP), dropped {:?}",
            stats.bytes_uploaded, stats.peers_accepted, stats.peers_utp, stats.dropped
        );
        Ok(())
    })
}
