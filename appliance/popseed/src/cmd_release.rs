//! Publisher subcommands: `keygen`, `publish`, `verify`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use popseed_core::ByteSize;
use popseed_release::{keys, publish as do_publish, PublicKey, PublishOptions, SecretKey, VerifiedRelease};

#[derive(Args)]
pub struct KeygenArgs {
    /// Base path of the key pair: writes BASE.key (private, 0600) and BASE.pub.
    #[arg(long, value_name = "BASE")]
    pub out: PathBuf,
}

pub fn keygen(a: KeygenArgs) -> Result<()> {
    let files = keys::keygen(&a.out)?;
    println!("private key: {}", files.secret.display());
    println!("public key:  {}", files.public.display());
    println!("fingerprint: {}", files.key.fingerprint());
    println!("key:         {}", files.key.to_text());
    Ok(())
}

#[derive(Args)]
pub struct PublishArgs {
    /// Folder (or single file) to publish.
    pub src: PathBuf,
    /// Publisher private key (from `popseed keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Release directory to write release.torrent and manifest.json into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Release name (default: the folder's name; also the folder name clients create).
    #[arg(long)]
    pub name: Option<String>,
    /// Release version (default: today's date, YYYY.MM.DD).
    #[arg(long)]
    pub version: Option<String>,
    /// Piece size, a power of two from 16KiB to 64MiB (default: automatic, ~2000 pieces at most).
    #[arg(long, value_name = "BYTES")]
    pub piece_size: Option<ByteSize>,
    /// Bytes that must arrive first: GLOB, GLOB:LEN, GLOB:START-END or @START-END (repeatable),
    /// e.g. `*.mp4:8MiB` for the first 8 MiB of each video.
    #[arg(long, value_name = "PATTERN_OR_RANGE")]
    pub critical: Vec<String>,
    /// BEP 19 web seed URL written into the .torrent's url-list (repeatable).
    #[arg(long, value_name = "URL")]
    pub web_seed: Vec<String>,
    /// Tracker announce URL (repeatable; each is its own tier).
    #[arg(long, value_name = "URL")]
    pub tracker: Vec<String>,
    /// How long boxes keep the release after storing it, e.g. `30d`, `12h`.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// SPDX license id, or a file whose text is the license.
    #[arg(long, value_name = "SPDX_OR_FILE")]
    pub license: Option<String>,
    /// Comment stored in the .torrent.
    #[arg(long)]
    pub comment: Option<String>,
}

pub fn publish(a: PublishArgs) -> Result<()> {
    let key = SecretKey::load(&a.key)?;
    let ttl = a.ttl.as_deref().map(popseed_release::release::parse_duration).transpose()?;
    let license = match a.license {
        Some(l) if std::path::Path::new(&l).is_file() => {
            Some(std::fs::read_to_string(&l).with_context(|| format!("reading license file {l}"))?)
        }
        other => other,
    };
    let opts = PublishOptions {
        name: a.name,
        version: a.version,
        piece_size: a.piece_size.map(ByteSize::get),
        critical: a.critical,
        web_seeds: a.web_seed,
        trackers: a.tracker.clone(),
        ttl,
        license,
        comment: a.comment,
    };
    let r = do_publish(&a.src, &key, &a.out, &opts)?;
    let m = &r.manifest;
    eprintln!(
        "published {} {}: {} files, {} in {} pieces of {}, infohash {}",
        m.name,
        m.version,
        m.files.len(),
        ByteSize(m.total_size),
        m.piece_count,
        ByteSize(m.piece_length as u64),
        m.infohash
    );
    eprintln!(
        "wrote {} and {}",
        a.out.join(popseed_release::TORRENT_FILE).display(),
        a.out.join(popseed_release::MANIFEST_FILE).display()
    );
    if !r.critical_pieces().is_empty() {
        eprintln!("critical: {} pieces first", r.critical_pieces().len());
    }
    println!("{}", r.magnet(&a.tracker));
    Ok(())
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Release directory (release.torrent + manifest.json).
    pub release: PathBuf,
    /// Require the manifest to be signed by this public key.
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
    /// Also re-hash every piece and file of this data folder (laid out like the published source).
    #[arg(long, value_name = "SRC_DIR")]
    pub data: Option<PathBuf>,
}

pub fn verify(a: VerifyArgs) -> Result<()> {
    let trusted = a.pubkey.as_deref().map(PublicKey::load).transpose()?;
    let r = VerifiedRelease::load(&a.release, trusted.as_ref().map(std::slice::from_ref))?;
    println!("signature: ok, signed by {}", r.publisher.fingerprint());
    println!("torrent:   ok, infohash {} matches the manifest", r.manifest.infohash);
    if let Some(data) = &a.data {
        r.verify_data(data)?;
        println!(
            "data:      ok, {} pieces and {} files match ({})",
            r.manifest.piece_count,
            r.manifest.files.len(),
            ByteSize(r.manifest.total_size)
        );
    }
    Ok(())
}
