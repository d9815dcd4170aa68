//! `popseed portal`: serves the captive portal (DNS responder + HTTP catalog and downloads) for
//! every release in a store, standalone. The agent embeds the same `popseed_portal` code; here
//! no fetcher stands behind it (`NoReadThrough`), so a download of pieces the store lacks gets
//! 503 at once.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use popseed_core::NoReadThrough;
use popseed_portal::{Portal, PortalConfig};
use popseed_store::{Store, StoreConfig};

#[derive(Args)]
pub struct PortalArgs {
    /// Store directory whose releases the portal serves.
    #[arg(long, value_name = "DIR")]
    pub store: PathBuf,
    /// HTTP listen address (the image redirects port 80 here).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,
    /// DNS listen address, UDP and TCP (the image redirects port 53 here).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:5353")]
    pub dns: SocketAddr,
    /// Address every DNS A answer points to; the host of the portal URL.
    #[arg(long, value_name = "IP", default_value = "10.0.0.1")]
    pub portal_ip: IpAddr,
    /// Port written in the portal URL (default: the HTTP listen port; 80 behind the nftables redirect).
    #[arg(long, value_name = "PORT")]
    pub portal_port: Option<u16>,
    /// The box's own DNS name, answered with --lan-ip.
    #[arg(long, value_name = "NAME", default_value = "popseed.lan")]
    pub box_name: String,
    /// The box's real LAN address (default: --portal-ip).
    #[arg(long, value_name = "IP")]
    pub lan_ip: Option<IpAddr>,
    /// Venue name shown on the page.
    #[arg(long, value_name = "TEXT", default_value = "popseed")]
    pub venue: String,
    /// Tracker URL listed first in .torrent and magnet links (default: http://<portal-ip>:6969/announce).
    #[arg(long, value_name = "URL")]
    pub tracker: Option<String>,
    /// How long a client stays acknowledged after "Continue" (e.g. 6h, 90s).
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = humantime::parse_duration)]
    pub ack_expiry: std::time::Duration,
    /// Concurrent downloads per client address.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_per_client: usize,
    /// Concurrent downloads in total.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_total: usize,
    /// Seconds a download waits for missing pieces fetched on demand.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub demand_timeout: u64,
}

pub fn run(a: PortalArgs) -> Result<()> {
    let store =
        Store::open(StoreConfig::new(&a.store)).with_context(|| format!("opening store {}", a.store.display()))?;
    let cfg = PortalConfig {
        http_listen: a.http,
        dns_listen: a.dns,
        portal_ip: a.portal_ip,
        portal_port: a.portal_port,
        box_name: a.box_name,
        lan_ip: a.lan_ip,
        venue_name: a.venue,
        tracker_url: a.tracker,
        ack_expiry_secs: a.ack_expiry.as_secs().max(1),
        max_downloads_per_client: a.max_per_client,
        max_downloads_total: a.max_total,
        demand_timeout_secs: a.demand_timeout,
        ..PortalConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let releases = store.releases().len();
        // a store served on its own: nothing fetches what it lacks
        let portal = Portal::start(Arc::new(store), Arc::new(NoReadThrough), cfg).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "portal: {}", portal.url)?;
        writeln!(out, "http: {}", portal.http_addr)?;
        writeln!(out, "dns: {} (udp and tcp)", portal.dns_udp_addr)?;
        writeln!(out, "releases: {releases}")?;
        let local = if portal.http_addr.ip().is_unspecified() || portal.http_addr.ip().is_loopback() {
            format!("http://127.0.0.1:{}/", portal.http_addr.port())
        } else {
            format!("http://{}/", portal.http_addr)
        };
        writeln!(out, "open {} in a browser (on this machine: {local}); Ctrl-C stops", portal.url)?;
        out.flush()?;
        drop(out);
        crate::signals::shutdown_signal().await;
        portal.stop().await;
        Ok(())
    })
}
