//! The device identity: an ed25519 key pair made on first start (same files as `popseed
//! keygen`: PKCS#8 PEM private key, mode 0600, and the public key next to it), the TLS client
//! certificate made from it for the device link, and the fingerprint origins allow-list
//! (`SHA256:...` of the public key, the same form as publisher fingerprints).

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::EncodePrivateKey;
use popseed_origin::Identity;
use popseed_release::keys::{PublicKey, SecretKey};
use rustls_pki_types::CertificateDer;

use crate::error::ControlError;

pub struct DeviceIdentity {
    pub secret: SecretKey,
    pub public: PublicKey,
    pub path: PathBuf,
}

impl DeviceIdentity {
    /// Loads the device key, or makes one (and its `.pub`) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<DeviceIdentity, ControlError> {
        let bad = |source| ControlError::DeviceKey { path: path.to_path_buf(), source };
        if !path.exists() {
            let base = match path.extension() {
                Some(e) if e == "key" => path.with_extension(""),
                _ => return Err(ControlError::DeviceKeyName { path: path.to_path_buf() }),
            };
            popseed_release::keys::keygen(&base).map_err(bad)?;
            tracing::info!(path = %path.display(), "made a new device key");
        }
        let secret = SecretKey::load(path).map_err(bad)?;
        let public = secret.public();
        Ok(DeviceIdentity { secret, public, path: path.to_path_buf() })
    }

    /// `SHA256:...`: what an origin's allow-list holds.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint()
    }

    /// A self-signed TLS client certificate for this key.
    pub fn tls_identity(&self) -> Result<Identity, ControlError> {
        let der = self
            .secret
            .0
            .to_pkcs8_der()
            .map_err(|source| ControlError::DeviceKeyEncode { path: self.path.clone(), source })?;
        Identity::for_key(der.as_bytes(), "popseed-device").map_err(ControlError::DeviceCert)
    }
}

/// The device fingerprint of a TLS client certificate: its ed25519 public key's
/// `SHA256:...`. Other key types are refused (devices use ed25519).
pub fn cert_fingerprint(cert: &CertificateDer<'_>) -> Result<String, ControlError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| ControlError::BadClientCert("not an X.509 certificate"))?;
    let spki = parsed.public_key();
    // id-Ed25519, RFC 8410
    if spki.algorithm.algorithm.to_id_string() != "1.3.101.112" {
        return Err(ControlError::BadClientCert("the key is not ed25519"));
    }
    let raw: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| ControlError::BadClientCert("the key is not 32 bytes"))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(ControlError::ClientCertKey)?;
    Ok(PublicKey(vk).fingerprint())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_loaded_and_the_certificate_carries_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("device.key");
        let a = DeviceIdentity::load_or_create(&p).unwrap();
        assert!(dir.path().join("device.pub").exists());
        let b = DeviceIdentity::load_or_create(&p).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let id = a.tls_identity().unwrap();
        assert_eq!(cert_fingerprint(&id.chain[0]).unwrap(), a.fingerprint());
        // another certificate for the same key: same device
        assert_eq!(cert_fingerprint(&b.tls_identity().unwrap().chain[0]).unwrap(), a.fingerprint());
        assert!(DeviceIdentity::load_or_create(&dir.path().join("device.pem")).is_err());
        let rsa_like = popseed_origin::Identity::self_signed(&["x".into()]).unwrap();
        assert!(cert_fingerprint(&rsa_like.chain[0]).is_err(), "a non-ed25519 certificate is refused");
    }
}
