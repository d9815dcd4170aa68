//! `popseed demo`: a venue on localhost from a built-in default. Generates a sample release,
//! publishes it with a throwaway key, starts an origin seed (QUIC, self-signed) and a box that
//! dials out to it; the origin pushes a prewarm job, the box fills (critical pieces first, with
//! live progress), then seeds and serves its portal and its dashboard; a second box of the same
//! venue then fills from the first over BitTorrent (the origin sends the release once); finally
//! shows the store.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use clap::Args;
use popseed_core::ByteSize;
use popseed_release::{keys, publish, PublishOptions, SecretKey};
use popseed_store::{Capacity, Store, StoreConfig};

use crate::cmd_store;

#[derive(Args)]
pub struct DemoArgs {
    /// Working directory for the demo (default: a new temporary directory, kept afterwards).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Cap on the demo box's download rate, so the fill can be watched (0: no cap).
    #[arg(long, value_name = "BYTES", default_value = "16MiB")]
    pub rate_limit: ByteSize,
    /// After the fill, keep serving (BitTorrent, tracker, portal, DNS) this long, e.g. `30s`
    /// (default: until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub serve_for: Option<std::time::Duration>,
    /// Size of the sample video file.
    #[arg(long, value_name = "BYTES", default_value = "48MiB")]
    pub video_size: ByteSize,
}

/// Deterministic filler bytes (xorshift64), fast enough for hundreds of MiB.
fn filler(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len as usize + 8);
    while (out.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

/// Writes the sample content: a video, an installer, a readme.
pub fn sample_content(dir: &Path, video_size: u64) -> Result<()> {
    let write = |rel: &str, bytes: &[u8]| -> Result<()> {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap_or(dir)).with_context(|| format!("creating {}", p.display()))?;
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))
    };
    write("video/keynote.mp4", &filler(1, video_size))?;
    write("apps/venue-app-installer.bin", &filler(2, 6 << 20))?;
    write("README.txt", b"Sample release made by `popseed demo`.\nEverything here was generated on this machine.\n")?;
    Ok(())
}

pub fn run(a: DemoArgs) -> Result<()> {
    let dir = match a.dir {
        Some(d) => d,
        None => tempfile::Builder::new().prefix("popseed-demo-").tempdir()?.keep(),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("demo directory: {}", dir.display());

    let src = dir.join("content/venue-sample");
    sample_content(&src, a.video_size.get())?;
    let key_base = dir.join("keys/publisher");
    let key = if key_base.with_extension("key").exists() {
        SecretKey::load(&key_base.with_extension("key"))?
    } else {
        let files = keys::keygen(&key_base)?;
        println!("publisher key: {} ({})", files.secret.display(), files.key.fingerprint());
        SecretKey::load(&files.secret)?
    };
    let release_dir = dir.join("release");
    let opts = PublishOptions {
        name: Some("venue-sample".into()),
        version: Some("1.0".into()),
        critical: vec!["video/*.mp4:4MiB".into(), "apps/*".into()],
        license: Some("CC-BY-4.0".into()),
        ttl: Some(std::time::Duration::from_secs(7 * 24 * 3600)),
        ..Default::default()
    };
    let r = publish(&src, &key, &release_dir, &opts)?;
    println!(
        "published {} {}: {} in {} pieces, {} critical pieces",
        r.manifest.name,
        r.manifest.version,
        ByteSize(r.manifest.total_size),
        r.manifest.piece_count,
        r.critical_pieces().len()
    );
    println!("magnet: {}", r.magnet(&[]));

    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(venue(&dir, &r, &src, a.rate_limit.get(), a.serve_for))?;
    let store = Store::open(StoreConfig {
        dir: dir.join("box/store"),
        capacity: Capacity { budget: None, min_free: 64 << 20 },
    })?;
    println!();
    cmd_store::list(&store, false)?;
    Ok(())
}

/// A second box of the venue: the same origin in its config, the first box as a peer. It takes
/// every piece from the first box over BitTorrent (a piece a venue peer holds never crosses the
/// uplink) and reports where its bytes came from.
async fn second_box(
    dir: &Path,
    r: &popseed_release::VerifiedRelease,
    origin_addr: &std::net::SocketAddr,
    fingerprint: &str,
    first_box: std::net::SocketAddr,
    rate_limit: u64,
) -> Result<()> {
    let box_dir = dir.join("box2");
    std::fs::create_dir_all(&box_dir)?;
    let (peer, tracker) = (free_port()?, free_port()?);
    let config = format!(
        "# written by `popseed demo`: a second box of the venue
         status_file = \"status.json\"\ntrusted_keys = [\"{key}\"]\n\n[store]\ndir = \"store\"\nmin_free = \"64MiB\"\n\n\
         [fetch]\n{rate}peers = [\"{first_box}\"]\n\n[[origins]]\nname = \"demo origin\"\naddress = \"{origin_addr}\"\n\
         fingerprint = \"{fingerprint}\"\n\n[[releases]]\ndir = \"{release}\"\n\n\
         [swarm]\nlisten = \"127.0.0.1:{peer}\"\ntracker_listen = \"127.0.0.1:{tracker}\"\nannounce_ip = \"127.0.0.1\"\nlsd = false\n",
        key = r.publisher.to_text(),
        rate = if rate_limit > 0 { format!("rate_limit = {rate_limit}\n") } else { String::new() },
        release = dir.join("release").display(),
    );
    std::fs::write(box_dir.join("agent.toml"), config)?;
    let cfg = popseed_config::AgentConfig::load(&box_dir.join("agent.toml"))?;
    println!();
    println!("a second box at the venue ({}), the first box as its peer:", box_dir.join("agent.toml").display());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let agent = popseed_agent::start(&cfg, shutdown.clone()).await?;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let snap = agent.fetcher.snapshot();
        println!("  {}", crate::progress::progress_line(&snap));
        if snap.complete && !snap.releases.is_empty() {
            let from = |kind: &str| snap.origins.iter().filter(|o| o.kind == kind).map(|o| o.bytes).sum::<u64>();
            println!(
                "  second box complete: {} from the first box over BitTorrent, {} from the origin",
                ByteSize(from("peers")),
                ByteSize(from("origin") + from("web_seed"))
            );
            break;
        }
    }
    shutdown.cancel();
    agent.stop().await;
    Ok(())
}

fn rand_token() -> [u8; 16] {
    rand::random()
}

/// A free loopback port right now (the demo writes fixed ports into agent.toml so it can be rerun).
fn free_port() -> Result<u16> {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = tcp.local_addr()?.port();
    // the DNS responder needs the same port free for UDP
    std::net::UdpSocket::bind(("127.0.0.1", port))?;
    Ok(port)
}

/// The origin and the box on localhost: an origin seed serving the release, and the agent
/// filling its store from it, then seeding it and serving the portal.
async fn venue(
    dir: &Path,
    r: &popseed_release::VerifiedRelease,
    src: &Path,
    rate_limit: u64,
    serve_for: Option<std::time::Duration>,
) -> Result<()> {
    use popseed_control::hub::{HubAcceptor, Target};
    use popseed_control::{ControlHub, DeviceIdentity, JobSpec, JobState, ReleaseSource};
    use popseed_origin::{Identity, OriginConfig, OriginServer, ServedRelease};
    let box_dir = dir.join("box");
    std::fs::create_dir_all(&box_dir)?;
    // the box's device key, made as on first boot; the origin allows it
    let device = DeviceIdentity::load_or_create(&box_dir.join("device.key"))?;
    let hub = ControlHub::new([(device.fingerprint(), "demo box".to_owned())].into_iter().collect());

    let id = Identity::self_signed(&["localhost".into()])?;
    let fingerprint = id.fingerprint();
    let served = ServedRelease { release: r.clone(), data: popseed_release::DataDir::open(r, src)? };
    let cfg = OriginConfig { listen: "127.0.0.1:0".parse()?, ..Default::default() };
    let origin =
        OriginServer::bind_with_control(cfg, id, vec![served], Some(std::sync::Arc::new(HubAcceptor(hub.clone()))))?;
    let origin_addr = origin.local_addr()?;
    let stop_origin = tokio_util::sync::CancellationToken::new();
    let stopped = stop_origin.clone();
    let origin_task = tokio::spawn(origin.run(async move { stopped.cancelled().await }));
    println!("origin: quic://{origin_addr} (certificate sha256 {fingerprint})");

    let token_file = box_dir.join("staff.token");
    if !token_file.exists() {
        std::fs::write(&token_file, format!("{}\n", hex::encode(rand_token())))?;
    }
    let token = std::fs::read_to_string(&token_file)?.trim().to_owned();
    let (peer, tracker, http, dns, mgmt) = (free_port()?, free_port()?, free_port()?, free_port()?, free_port()?);
    let config = format!(
        "# written by `popseed demo`; run the box again with: popseed agent --config {cfg}\n\
         status_file = \"status.json\"\n\
         trusted_keys = [\"{key}\"]\n\n[store]\ndir = \"store\"\nmin_free = \"64MiB\"\n\n\
         [fetch]\n{rate}\n[[origins]]\nname = \"demo origin\"\naddress = \"{origin_addr}\"\nfingerprint = \"{fingerprint}\"\n\n\
         [control]\nlisten = \"127.0.0.1:{mgmt}\"\nstaff_token_file = \"staff.token\"\ndevice_key = \"device.key\"\n\
         device_name = \"demo box\"\nvenue = \"popseed demo venue\"\n\n\
         [swarm]\nlisten = \"127.0.0.1:{peer}\"\ntracker_listen = \"127.0.0.1:{tracker}\"\nannounce_ip = \"127.0.0.1\"\nlsd = false\n\n\
         [portal]\nhttp_listen = \"127.0.0.1:{http}\"\ndns_listen = \"127.0.0.1:{dns}\"\nportal_ip = \"127.0.0.1\"\n\
         venue_name = \"popseed demo venue\"\n",
        cfg = box_dir.join("agent.toml").display(),
        key = r.publisher.to_text(),
        rate = if rate_limit > 0 { format!("rate_limit = {rate_limit}\n") } else { String::new() },
    );
    std::fs::write(box_dir.join("agent.toml"), config)?;
    let cfg = popseed_config::AgentConfig::load(&box_dir.join("agent.toml"))?;
    println!("box:    agent config {}, store {}", box_dir.join("agent.toml").display(), cfg.store.dir.display());
    println!("        device fingerprint {} (on the origin's allow-list)", device.fingerprint());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let agent = popseed_agent::start(&cfg, shutdown.clone()).await?;
    let job_id = "prewarm-venue-sample";
    let spec = JobSpec {
        id: Some(job_id.into()),
        name: Some("venue-sample 1.0".into()),
        release: ReleaseSource::Inline {
            manifest_b64: base64::engine::general_purpose::STANDARD.encode(&r.manifest_bytes),
            torrent_b64: base64::engine::general_purpose::STANDARD.encode(&r.torrent_bytes),
        },
        deadline: Some(popseed_core::unix_now() + 600),
        priority: 0,
        pin: true,
        ttl_seconds: Some(7 * 24 * 3600),
    };
    hub.queue(Target::Device(device.fingerprint()), spec, "venue-sample 1.0".into())?;
    println!("the origin pushed prewarm job {job_id} (pinned, ready by +10 min); the box dialed out and fills (critical pieces first):");
    let jobs = agent.control.as_ref().map(|c| c.jobs.clone()).context("the demo box runs jobs")?;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let snap = agent.fetcher.snapshot();
        let job = jobs.get(job_id);
        if let Some(j) = &job {
            if j.state == JobState::Failed {
                anyhow::bail!("the prewarm job failed: {}", j.reason.clone().unwrap_or_default());
            }
        }
        if !snap.releases.is_empty() {
            println!("  {}", crate::progress::progress_line(&snap));
        }
        if job.is_some_and(|j| j.state == JobState::Ready) {
            break;
        }
    }
    println!("  job {job_id}: ready");
    if let Some(sw) = &agent.swarm {
        second_box(dir, r, &origin_addr, &fingerprint, sw.peer_addr(), rate_limit).await?;
    }
    let ih = r.infohash();
    println!();
    println!("the box is seeding and serving its portal:");
    if let Some(sw) = &agent.swarm {
        println!("  BitTorrent peer  {}", sw.peer_addr());
        if let Some(t) = sw.tracker_url() {
            println!("  tracker          {t}");
        }
        let web_seed =
            agent.portal.as_ref().map(|p| vec![format!("{}files/{}/", p.url, hex::encode(ih))]).unwrap_or_default();
        if let Ok(m) = sw.magnet(&ih, &web_seed) {
            println!("  magnet           {m}");
        }
    }
    if let Some(st) = &agent.status {
        let base = format!("http://{}", st.local_addr());
        println!("  dashboard        {base}/?token={token}");
        println!("  staff token      {token}  (try: popseed status --appliance {base} --token {token})");
    }
    if let Some(p) = &agent.portal {
        println!("  portal           {}  (open it in a browser)", p.url);
        println!(
            "  DNS              {} udp+tcp (try: dig @127.0.0.1 -p {} example.com)",
            p.dns_udp_addr,
            p.dns_udp_addr.port()
        );
    }
    match serve_for {
        Some(d) => {
            println!("serving for {}", humantime::format_duration(d));
            tokio::time::sleep(d).await;
        }
        None => {
            println!("serving until Ctrl-C");
            crate::signals::shutdown_signal().await;
        }
    }
    shutdown.cancel();
    agent.stop().await;
    stop_origin.cancel();
    let _ = origin_task.await;
    Ok(())
}
