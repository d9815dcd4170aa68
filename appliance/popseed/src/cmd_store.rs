//! `popseed store`: inspect and manage a piece store (list, show, import, pin, unpin, remove).

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use popseed_core::ByteSize;
use popseed_release::{DataDir, PublicKey, VerifiedRelease};
use popseed_store::{AddOptions, Capacity, ReleaseInfo, Store, StoreConfig};

#[derive(Args)]
pub struct StoreArgs {
    /// Store directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Most bytes of pieces the store may hold (e.g. `200GiB`); default: no budget.
    #[arg(long, value_name = "BYTES")]
    pub budget: Option<ByteSize>,
    /// Free space to leave on the filesystem.
    #[arg(long, value_name = "BYTES", default_value = "256MiB")]
    pub min_free: ByteSize,
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// List stored releases with pieces present, bytes and pins.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one release (by infohash or name): files, pieces present, ttl.
    Show {
        release: String,
        /// Print JSON, with the index of every piece present.
        #[arg(long)]
        json: bool,
    },
    /// Add a release and copy its pieces from a data folder, verifying every piece.
    Import {
        /// Release directory (release.torrent + manifest.json).
        release: PathBuf,
        /// Data folder laid out like the published source.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Only accept releases signed by this key.
        #[arg(long, value_name = "FILE")]
        pubkey: Option<PathBuf>,
        /// Never evict this release.
        #[arg(long)]
        pin: bool,
    },
    /// Pin a release (never evicted).
    Pin { release: String },
    /// Unpin a release.
    Unpin { release: String },
    /// Remove a release and its data.
    Remove { release: String },
}

fn find(store: &Store, key: &str) -> Result<ReleaseInfo> {
    let all = store.releases();
    if let Ok(ih) = key.parse::<popseed_core::InfoHash>() {
        if let Some(r) = all.iter().find(|r| r.infohash == ih) {
            return Ok(r.clone());
        }
    }
    let by_name: Vec<_> = all.iter().filter(|r| r.name == key).collect();
    match by_name.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no release {key:?} in the store"),
        _ => bail!("several releases are named {key:?}: use the infohash"),
    }
}

fn when(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

pub fn run(a: StoreArgs) -> Result<()> {
    let store = Store::open(StoreConfig {
        dir: a.dir.clone(),
        capacity: Capacity { budget: a.budget.map(ByteSize::get), min_free: a.min_free.get() },
    })
    .with_context(|| format!("opening store {}", a.dir.display()))?;
    match a.command {
        StoreCommand::List { json } => list(&store, json),
        StoreCommand::Show { release, json } => show(&store, &find(&store, &release)?, json),
        StoreCommand::Import { release, data, pubkey, pin } => {
            let trusted = pubkey.as_deref().map(PublicKey::load).transpose()?;
            let r = VerifiedRelease::load(&release, trusted.as_ref().map(std::slice::from_ref))
                .with_context(|| format!("loading release {}", release.display()))?;
            import(&store, &r, data.as_deref(), pin)
        }
        StoreCommand::Pin { release } => store.set_pinned(&find(&store, &release)?.infohash, true).map_err(Into::into),
        StoreCommand::Unpin { release } => {
            store.set_pinned(&find(&store, &release)?.infohash, false).map_err(Into::into)
        }
        StoreCommand::Remove { release } => store.remove_release(&find(&store, &release)?.infohash).map_err(Into::into),
    }
}

/// Adds `r` to the store and copies its pieces from `data` if given; prints what happened.
pub fn import(store: &Store, r: &VerifiedRelease, data: Option<&std::path::Path>, pin: bool) -> Result<()> {
    store.add_release(r, AddOptions { pin, ttl_seconds: None })?;
    let ih = r.infohash();
    if let Some(data) = data {
        let dd = DataDir::open(r, data).with_context(|| format!("reading data folder {}", data.display()))?;
        let rep = store.import_data(&ih, &dd)?;
        println!(
            "imported {} {}: {} pieces stored, {} already present",
            r.manifest.name, r.manifest.version, rep.stored, rep.already_present
        );
        if !rep.bad.is_empty() {
            bail!(
                "{} pieces in {} do not match the release (first: piece {})",
                rep.bad.len(),
                data.display(),
                rep.bad[0]
            );
        }
    } else {
        println!("added {} {} (no data imported)", r.manifest.name, r.manifest.version);
    }
    Ok(())
}

pub fn list(store: &Store, json: bool) -> Result<()> {
    let releases = store.releases();
    let usage = store.usage()?;
    if json {
        let v: Vec<_> = releases
            .iter()
            .map(|r| {
                serde_json::json!({
                    "infohash": hex::encode(r.infohash), "name": r.name, "version": r.version,
                    "total_size": r.total_size, "piece_count": r.piece_count,
                    "pieces_present": r.pieces_present, "bytes_present": r.bytes_present,
                    "pinned": r.pinned, "added_at": r.added_at, "expires_at": r.expires_at,
                    "last_access": r.last_access,
                })
            })
            .collect();
        let out = serde_json::json!({"releases": v, "used": usage.used, "budget": usage.budget, "free_on_disk": usage.free_on_disk});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "store {}: {} used{}, {} free on disk",
        store.dir().display(),
        ByteSize(usage.used),
        usage.budget.map(|b| format!(" of {}", ByteSize(b))).unwrap_or_default(),
        ByteSize(usage.free_on_disk)
    );
    if releases.is_empty() {
        println!("no releases");
    }
    for r in &releases {
        println!(
            "{}  {} {}  {}/{} pieces  {} of {}{}",
            hex::encode(r.infohash),
            r.name,
            r.version,
            r.pieces_present,
            r.piece_count,
            ByteSize(r.bytes_present),
            ByteSize(r.total_size),
            if r.pinned { "  pinned" } else { "" }
        );
    }
    Ok(())
}

fn show(store: &Store, info: &ReleaseInfo, json: bool) -> Result<()> {
    let r = store.release(&info.infohash)?;
    let bf = store.bitfield(&info.infohash)?;
    if json {
        let v = serde_json::json!({
            "infohash": hex::encode(info.infohash), "name": info.name, "version": info.version,
            "publisher": r.publisher.fingerprint(), "total_size": info.total_size,
            "piece_count": info.piece_count, "pieces_present": info.pieces_present,
            "bytes_present": info.bytes_present, "pinned": info.pinned, "added_at": info.added_at,
            "expires_at": info.expires_at, "present": bf.iter_set().collect::<Vec<u32>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("name:      {} {}", info.name, info.version);
    println!("infohash:  {}", hex::encode(info.infohash));
    println!("publisher: {}", r.publisher.fingerprint());
    println!(
        "pieces:    {}/{} present ({} of {})",
        info.pieces_present,
        info.piece_count,
        ByteSize(info.bytes_present),
        ByteSize(info.total_size)
    );
    println!("pinned:    {}", if info.pinned { "yes" } else { "no" });
    println!("added:     {}", when(info.added_at));
    println!("expires:   {}", info.expires_at.map(when).unwrap_or_else(|| "never".into()));
    println!("files:");
    let layout = r.layout();
    for (i, f) in layout.files.iter().enumerate() {
        let pieces = layout.pieces_for_file_range(i, 0, f.length);
        let have = pieces.clone().filter(|&p| bf.get(p)).count();
        println!(
            "  {:>10}  {:>5.1}%  {}",
            ByteSize(f.length),
            if pieces.is_empty() { 100.0 } else { have as f64 * 100.0 / pieces.len() as f64 },
            f.path()
        );
    }
    Ok(())
}
