//! `popseed demo`: a venue on localhost from a built-in default. Today: generates a sample
//! release, publishes it with a throwaway key, imports it into a store and shows what it holds.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use popseed_release::{keys, publish, PublishOptions, SecretKey};
use popseed_store::{Capacity, Store, StoreConfig};

use crate::{cmd_store, fmt};

#[derive(Args)]
pub struct DemoArgs {
    /// Working directory for the demo (default: a new temporary directory, kept afterwards).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Size of the sample video file.
    #[arg(long, value_name = "BYTES", value_parser = fmt::parse_size, default_value = "48MiB")]
    pub video_size: u64,
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
    write(
        "README.txt",
        b"Sample release made by `popseed demo`.\nEverything here was generated on this machine.\n",
    )?;
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
    sample_content(&src, a.video_size)?;
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
        fmt::bytes(r.manifest.total_size),
        r.manifest.piece_count,
        r.critical_pieces().len()
    );
    println!("magnet: {}", r.magnet(&[]));

    let store = Store::open(StoreConfig { dir: dir.join("store"), capacity: Capacity { budget: None, min_free: 64 << 20 } })?;
    cmd_store::import(&store, &r, Some(&src), true)?;
    println!();
    cmd_store::list(&store, false)?;
    Ok(())
}
