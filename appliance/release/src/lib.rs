//! popseed-release: everything about a release that is independent of where its bytes live.
//! A publisher turns a folder into a BitTorrent v1 .torrent plus an ed25519-signed manifest that
//! binds the infohash; every other component accepts only a [`VerifiedRelease`].

pub mod bencode;
pub mod critical;
pub mod datadir;
pub mod error;
pub mod hashing;
pub mod keys;
pub mod layout;
pub mod manifest;
pub mod metainfo;
pub mod release;
pub mod sha1_many;
pub mod source;

pub use datadir::DataDir;
pub use error::{ReleaseError, Result};
pub use keys::{PublicKey, SecretKey};
pub use layout::{Layout, LayoutFile, Segment};
pub use manifest::Manifest;
pub use release::{publish, PublishOptions, VerifiedRelease, MANIFEST_FILE, TORRENT_FILE};
