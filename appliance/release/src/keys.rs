//! Publisher keys: ed25519 key pairs on disk (PKCS#8 / SPKI PEM), the textual key form used in
//! manifests (`ed25519:<base64url>`) and the human fingerprint (`SHA256:<base64>`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{KeyPemError, ReleaseError, Result};

/// A publisher's public key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PublicKey(pub VerifyingKey);

impl PublicKey {
    /// `ed25519:<base64url of the 32 raw bytes>`: the form stored in manifests and configs.
    pub fn to_text(&self) -> String {
        format!("ed25519:{}", URL_SAFE_NO_PAD.encode(self.0.as_bytes()))
    }

    pub fn from_text(s: &str) -> Result<Self> {
        let key = || s.chars().take(100).collect::<String>();
        let b64 = s
            .trim()
            .strip_prefix("ed25519:")
            .ok_or_else(|| ReleaseError::BadPublicKey { key: key(), problem: "lacks the 'ed25519:' prefix" })?;
        let raw = URL_SAFE_NO_PAD.decode(b64).map_err(|source| ReleaseError::PublicKeyBase64 { key: key(), source })?;
        let arr: [u8; 32] =
            raw.try_into().map_err(|_| ReleaseError::BadPublicKey { key: key(), problem: "is not 32 bytes" })?;
        VerifyingKey::from_bytes(&arr)
            .map(PublicKey)
            .map_err(|source| ReleaseError::PublicKeyInvalid { key: key(), source })
    }

    /// `SHA256:<base64 of sha256(raw key)>`, like OpenSSH prints.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(self.0.as_bytes())))
    }

    /// Reads a public key file: SPKI PEM as written by `keygen`, or one line in the text form.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| ReleaseError::io(path, e))?;
        if text.trim_start().starts_with("ed25519:") {
            // the text form names its own problem (prefix, base64, length)
            return Self::from_text(&text);
        }
        VerifyingKey::from_public_key_pem(&text).map(PublicKey).map_err(|e| pem_err(path, KeyPemError::Public(e)))
    }
}

/// A publisher's private signing key.
pub struct SecretKey(pub SigningKey);

impl SecretKey {
    pub fn generate() -> Self {
        SecretKey(SigningKey::generate(&mut rand_core::OsRng))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| ReleaseError::io(path, e))?;
        SigningKey::from_pkcs8_pem(&text).map(SecretKey).map_err(|e| pem_err(path, KeyPemError::Private(e)))
    }
}

fn pem_err(path: &Path, source: KeyPemError) -> ReleaseError {
    ReleaseError::KeyPem { path: path.to_path_buf(), source }
}

/// The two files `keygen` wrote.
pub struct KeyFiles {
    pub secret: PathBuf,
    pub public: PathBuf,
    pub key: PublicKey,
}

/// Writes `<base>.key` (mode 0600) and `<base>.pub`. Refuses to overwrite an existing key.
pub fn keygen(base: &Path) -> Result<KeyFiles> {
    let secret_path = with_ext(base, "key");
    let public_path = with_ext(base, "pub");
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(ReleaseError::KeyExists(p.clone()));
        }
    }
    if let Some(dir) = secret_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| ReleaseError::io(dir, e))?;
    }
    let sk = SecretKey::generate();
    let pem = sk.0.to_pkcs8_pem(Default::default()).map_err(|e| pem_err(&secret_path, KeyPemError::Private(e)))?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .map_err(|e| ReleaseError::io(&secret_path, e))?;
    f.write_all(pem.as_bytes()).map_err(|e| ReleaseError::io(&secret_path, e))?;
    f.sync_all().map_err(|e| ReleaseError::io(&secret_path, e))?;
    let pub_pem =
        sk.0.verifying_key()
            .to_public_key_pem(Default::default())
            .map_err(|e| pem_err(&public_path, KeyPemError::Public(e)))?;
    fs::write(&public_path, pub_pem).map_err(|e| ReleaseError::io(&public_path, e))?;
    Ok(KeyFiles { secret: secret_path, public: public_path, key: sk.public() })
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_roundtrip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let files = keygen(&dir.path().join("k/publisher")).unwrap();
        let mode = fs::metadata(&files.secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sk = SecretKey::load(&files.secret).unwrap();
        let pk = PublicKey::load(&files.public).unwrap();
        assert_eq!(sk.public(), pk);
        assert_eq!(PublicKey::from_text(&pk.to_text()).unwrap(), pk);
        assert!(pk.fingerprint().starts_with("SHA256:"));
        assert!(matches!(keygen(&dir.path().join("k/publisher")), Err(ReleaseError::KeyExists(_))));
    }

    #[test]
    fn garbage_key_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.key");
        fs::write(&p, "not a key").unwrap();
        assert!(matches!(SecretKey::load(&p), Err(ReleaseError::KeyPem { .. })));
        assert!(matches!(PublicKey::load(&p), Err(ReleaseError::KeyPem { .. })));
        assert!(PublicKey::from_text("ed25519:AAAA").is_err());
    }
}
