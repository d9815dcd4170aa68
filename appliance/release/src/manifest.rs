//! The signed release manifest (`manifest.json`): what the publisher vouches for, its canonical
//! encoding, and the ed25519 signature over it.
//!
//! File form: `{"manifest": {...}, "signature": {"alg": "ed25519", "key": "ed25519:...", "sig": "..."}}`.
//! The signature covers `popseed-manifest-v1\n` followed by the canonical encoding of the
//! `manifest` value exactly as it appears in the file: JSON with object keys sorted by their
//! UTF-8 bytes, no insignificant whitespace, integers only. Fields a reader does not know are
//! still covered, so newer manifests verify on older boxes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, Verifier};
use serde::{Deserialize, Serialize};

use popseed_core::InfoHash;

use crate::critical::CriticalRange;
use crate::error::{ReleaseError, Result};
use crate::keys::{PublicKey, SecretKey};

pub const FORMAT: &str = "popseed-manifest/1";
const DOMAIN: &[u8] = b"popseed-manifest-v1\n";

/// One file of the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative path with `/` separators, as in the .torrent.
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// What the publisher signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub version: String,
    /// RFC 3339 UTC time of publication.
    pub created: String,
    /// `ed25519:<base64url>` of the signing key.
    pub publisher_key: String,
    /// Hex SHA-1 of the .torrent's info dictionary (BitTorrent v1 infohash).
    pub infohash: InfoHash,
    /// Hex SHA-256 of the same info dictionary: binds every piece hash without relying on SHA-1.
    pub info_sha256: String,
    /// The .torrent's top-level name (file or folder name clients use).
    pub torrent_name: String,
    pub piece_length: u32,
    pub piece_count: u32,
    pub total_size: u64,
    pub files: Vec<ManifestFile>,
    #[serde(default)]
    pub critical: Vec<CriticalRange>,
    /// SPDX id or license text.
    #[serde(default)]
    pub license: Option<String>,
    /// How long a box keeps the release after it was stored, in seconds (None: until evicted).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub web_seeds: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignatureBlock {
    alg: String,
    key: String,
    sig: String,
}

#[derive(Serialize)]
struct FileOut<'a> {
    manifest: &'a serde_json::Value,
    signature: &'a SignatureBlock,
}

/// Canonical bytes of a JSON value: keys sorted (serde_json's map is ordered), compact.
fn canonical(v: &serde_json::Value) -> Result<Vec<u8>> {
    fn check(v: &serde_json::Value) -> Result<()> {
        match v {
            serde_json::Value::Number(n) if !(n.is_u64() || n.is_i64()) => {
                Err(ReleaseError::BadManifest("floating-point numbers are not allowed".into()))
            }
            serde_json::Value::Array(a) => a.iter().try_for_each(check),
            serde_json::Value::Object(o) => o.values().try_for_each(check),
            _ => Ok(()),
        }
    }
    check(v)?;
    let mut msg = DOMAIN.to_vec();
    serde_json::to_writer(&mut msg, v).map_err(|source| ReleaseError::ManifestJson { what: "encoding", source })?;
    Ok(msg)
}

/// Signs a manifest and returns the bytes of `manifest.json`.
pub fn sign(manifest: &Manifest, key: &SecretKey) -> Result<Vec<u8>> {
    let value =
        serde_json::to_value(manifest).map_err(|source| ReleaseError::ManifestJson { what: "encoding", source })?;
    let sig = key.0.sign(&canonical(&value)?);
    let block =
        SignatureBlock { alg: "ed25519".into(), key: key.public().to_text(), sig: STANDARD.encode(sig.to_bytes()) };
    let mut out = serde_json::to_vec_pretty(&FileOut { manifest: &value, signature: &block })
        .map_err(|source| ReleaseError::ManifestJson { what: "encoding", source })?;
    out.push(b'\n');
    Ok(out)
}

/// Parses `manifest.json`, checks its signature against the key it names, and returns the
/// manifest with the verified signer. Checking that the signer is trusted is the caller's job.
pub fn open(bytes: &[u8]) -> Result<(Manifest, PublicKey)> {
    let mut root: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| ReleaseError::ManifestJson { what: "not JSON", source })?;
    let value = root
        .get_mut("manifest")
        .map(serde_json::Value::take)
        .ok_or_else(|| ReleaseError::BadManifest("no 'manifest' object".into()))?;
    let block: SignatureBlock = root
        .get("signature")
        .cloned()
        .ok_or_else(|| ReleaseError::BadManifest("not signed: no 'signature' object".into()))
        .and_then(|s| {
            serde_json::from_value(s).map_err(|source| ReleaseError::ManifestJson { what: "signature", source })
        })?;
    if block.alg != "ed25519" {
        return Err(ReleaseError::BadManifest(format!("unsupported signature algorithm {:?}", block.alg)));
    }
    let key = PublicKey::from_text(&block.key)?;
    let sig_bytes: [u8; 64] = STANDARD
        .decode(&block.sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ReleaseError::BadManifest("signature is not 64 bytes of base64".into()))?;
    key.0.verify(&canonical(&value)?, &Signature::from_bytes(&sig_bytes)).map_err(|_| ReleaseError::BadSignature)?;
    let manifest: Manifest =
        serde_json::from_value(value).map_err(|source| ReleaseError::ManifestJson { what: "fields", source })?;
    if manifest.format != FORMAT {
        return Err(ReleaseError::BadManifest(format!("unknown format {:?}", manifest.format)));
    }
    if manifest.publisher_key != block.key {
        return Err(ReleaseError::BadManifest("publisher_key differs from the signing key".into()));
    }
    Ok((manifest, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &SecretKey) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            name: "demo".into(),
            version: "1".into(),
            created: "2026-01-01T00:00:00Z".into(),
            publisher_key: key.public().to_text(),
            infohash: InfoHash::default(),
            info_sha256: "00".repeat(32),
            torrent_name: "demo".into(),
            piece_length: 16384,
            piece_count: 1,
            total_size: 1,
            files: vec![ManifestFile { path: "a".into(), size: 1, sha256: "ab".into() }],
            critical: vec![],
            license: Some("CC-BY-4.0".into()),
            ttl_seconds: None,
            web_seeds: vec![],
        }
    }

    #[test]
    fn sign_open_and_tamper() {
        let key = SecretKey::generate();
        let bytes = sign(&sample(&key), &key).unwrap();
        let (m, k) = open(&bytes).unwrap();
        assert_eq!(m, sample(&key));
        assert_eq!(k, key.public());

        let tampered = String::from_utf8(bytes.clone()).unwrap().replace("\"version\": \"1\"", "\"version\": \"2\"");
        assert_ne!(tampered.as_bytes(), &bytes[..]);
        assert!(matches!(open(tampered.as_bytes()), Err(ReleaseError::BadSignature)));

        // re-signed by another key but claiming the first: refused
        let other = SecretKey::generate();
        let forged = sign(&sample(&key), &other).unwrap();
        assert!(matches!(open(&forged), Err(ReleaseError::BadManifest(_))));

        // reformatting does not matter: canonical encoding
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(open(serde_json::to_string(&v).unwrap().as_bytes()).is_ok());
        // unknown fields are covered by the signature
        let mut v2 = v.clone();
        v2["manifest"]["extra"] = serde_json::json!(1);
        assert!(matches!(open(&serde_json::to_vec(&v2).unwrap()), Err(ReleaseError::BadSignature)));
    }

    #[test]
    fn garbage_is_an_error() {
        for b in [
            &b""[..],
            b"{}",
            b"[]",
            b"{\"manifest\":{}}",
            b"{\"manifest\":{},\"signature\":{\"alg\":\"rsa\",\"key\":\"\",\"sig\":\"\"}}",
        ] {
            assert!(open(b).is_err());
        }
    }
}
