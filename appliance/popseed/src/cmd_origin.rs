//! `popseed origin`: serve releases to appliances over QUIC (popseed/1).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use popseed_core::ByteSize;
use popseed_origin::{Identity, OriginConfig, OriginServer, ServedRelease};
use popseed_release::{DataDir, VerifiedRelease};

#[derive(Args)]
pub struct OriginArgs {
    /// UDP address to listen on.
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub listen: SocketAddr,
    /// A release to serve, as RELEASE_DIR=DATA_DIR (repeatable). DATA_DIR is laid out like the
    /// published source folder.
    #[arg(long = "release", value_name = "RELEASE_DIR=DATA_DIR", required = true)]
    pub releases: Vec<String>,
    /// Certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "key", conflicts_with = "self_signed")]
    pub cert: Option<PathBuf>,
    /// Private key of the certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Make a self-signed certificate (for tests and demos) and print its SHA-256 fingerprint.
    #[arg(long)]
    pub self_signed: bool,
    /// With --self-signed: also write the certificate and key as PEM (BASE.crt, BASE.key), so a
    /// restarted origin keeps its fingerprint.
    #[arg(long, value_name = "BASE", requires = "self_signed")]
    pub write_cert: Option<PathBuf>,
    /// Most concurrent connections; more are refused.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Most concurrent request streams per connection.
    #[arg(long, default_value_t = 64)]
    pub max_streams: u32,
    /// Bytes per second per connection (e.g. 20MiB).
    #[arg(long, value_name = "BYTES")]
    pub rate_limit: Option<ByteSize>,
    /// Write counters as JSON to this file four times a second (pieces sent per release and index).
    #[arg(long, value_name = "FILE")]
    pub stats_file: Option<PathBuf>,
    /// Take device links (prewarm job push) from the devices in this allow-list: one device
    /// fingerprint per line (`SHA256:...`, as the agent prints it), optionally followed by a label.
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// Serve the admin API (queue jobs for devices, see their states) on this TCP address;
    /// needs --devices and --admin-token-file.
    #[arg(long, value_name = "ADDR", requires_all = ["devices", "admin_token_file"])]
    pub admin: Option<SocketAddr>,
    /// File whose first line is the admin API's bearer token.
    #[arg(long, value_name = "FILE", requires = "admin")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve pieces only to boxes on the --devices allow-list (they show their device
    /// certificate); anyone else who reaches the origin is refused.
    #[arg(long, requires = "devices")]
    pub require_device: bool,
}

fn read_token(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        bail!("{}: the token must be at least 16 characters", path.display());
    }
    Ok(token)
}

fn identity(a: &OriginArgs) -> Result<Identity> {
    if let (Some(c), Some(k)) = (&a.cert, &a.key) {
        return Identity::from_pem_files(c, k).context("loading the origin certificate");
    }
    if !a.self_signed {
        bail!("give --cert and --key, or --self-signed");
    }
    if let Some(base) = &a.write_cert {
        let (crt, key) = (base.with_extension("crt"), base.with_extension("key"));
        if crt.exists() && key.exists() {
            return Identity::from_pem_files(&crt, &key).context("loading the saved self-signed certificate");
        }
        let id = Identity::self_signed(&["localhost".into(), popseed_origin::DEFAULT_SERVER_NAME.into()])?;
        let (c, k) = id.to_pem();
        std::fs::write(&crt, c).with_context(|| format!("writing {}", crt.display()))?;
        std::fs::write(&key, k).with_context(|| format!("writing {}", key.display()))?;
        return Ok(id);
    }
    Ok(Identity::self_signed(&["localhost".into(), popseed_origin::DEFAULT_SERVER_NAME.into()])?)
}

pub fn run(a: OriginArgs) -> Result<()> {
    let mut served = Vec::new();
    for spec in &a.releases {
        let (rel, data) =
            spec.split_once('=').with_context(|| format!("--release {spec:?}: expected RELEASE_DIR=DATA_DIR"))?;
        let release = VerifiedRelease::load(rel.as_ref(), None).with_context(|| format!("loading release {rel}"))?;
        let data = DataDir::open(&release, data.as_ref()).with_context(|| format!("data folder {data} for {rel}"))?;
        served.push(ServedRelease { release, data });
    }
    let id = identity(&a)?;
    let fingerprint = id.fingerprint();
    let names: Vec<String> =
        served.iter().map(|s| format!("{} {}", s.release.manifest.name, s.release.manifest.version)).collect();
    let cfg = OriginConfig {
        listen: a.listen,
        max_connections: a.max_connections,
        max_streams_per_connection: a.max_streams,
        rate_limit: a.rate_limit.map(ByteSize::get),
    };
    let hub = match &a.devices {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let allow =
                popseed_control::ControlHub::parse_allow_list(&text).with_context(|| format!("{}", p.display()))?;
            Some(popseed_control::ControlHub::new(allow))
        }
        None => None,
    };
    let admin_token = a.admin_token_file.as_deref().map(read_token).transpose()?;
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async move {
        let acceptor = hub.clone().map(|h| {
            std::sync::Arc::new(popseed_control::hub::HubAcceptor(h))
                as std::sync::Arc<dyn popseed_origin::ControlAcceptor>
        });
        let mut server = OriginServer::bind_with_control(cfg, id, served, acceptor)?;
        if a.require_device {
            if let Some(h) = &hub {
                server = server.require_clients(h.clone());
            }
        }
        let addr = server.local_addr()?;
        println!(
            "origin listening on {addr} (udp, ALPN popseed/1{})",
            if hub.is_some() { " and popseed-control/1" } else { "" }
        );
        if let (Some(hub), Some(admin), Some(token)) = (&hub, a.admin, admin_token) {
            let listener = tokio::net::TcpListener::bind(admin)
                .await
                .with_context(|| format!("binding the admin API on {admin}"))?;
            println!("admin API on http://{}", listener.local_addr()?);
            let app = popseed_control::api::admin_router(hub.clone(), token);
            tokio::spawn(popseed_http::serve(
                listener,
                app,
                popseed_http::DEFAULT_LIMITS,
                Default::default(),
                tokio_util::sync::CancellationToken::new(),
            ));
        }
        println!("certificate sha256 {fingerprint}");
        for n in &names {
            println!("serving {n}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if let Some(path) = a.stats_file.clone() {
            let stats = server.stats();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let tmp = path.with_extension("tmp");
                    if let Ok(b) = serde_json::to_vec(&stats.snapshot()) {
                        if std::fs::write(&tmp, b).and_then(|_| std::fs::rename(&tmp, &path)).is_err() {
                            tracing::warn!(path = %path.display(), "cannot write the stats file");
                        }
                    }
                }
            });
        }
        server.run(crate::signals::shutdown_signal()).await;
        anyhow::Ok(())
    })
}
