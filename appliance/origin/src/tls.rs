//! TLS 1.3 for popseed/1: origin certificates (from PEM files, or self-signed for tests), the
//! certificate fingerprint an appliance pins, and client configs that trust either a pinned
//! SHA-256 fingerprint or a CA file. One crypto provider, aws-lc-rs, chosen explicitly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::OriginError;
use crate::proto::{ALPN, CONTROL_ALPN};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Initializes aws-lc's random generator. Its first use runs the CPU-jitter entropy source's
/// start-up (about 100 ms here, seen with perf in `jent_entropy_collector_alloc`); doing it at
/// process start keeps it out of the first connection to an origin.
pub fn warm_up() {
    let mut b = [0u8; 16];
    let _ = rustls::crypto::aws_lc_rs::default_provider().secure_random.fill(&mut b);
}

/// Lower-case hex SHA-256 of a certificate's DER bytes.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// A certificate chain and its key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        f.debug_struct("Identity").field("fingerprint", &self.fingerprint()).finish()
    }
}

impl Identity {
    /// A fresh self-signed certificate for `names` (DNS names or IP literals).
    pub fn self_signed(names: &[String]) -> Result<Identity, OriginError> {
        let ck = rcgen::generate_simple_self_signed(names.to_vec())?;
        Ok(Identity {
            chain: vec![ck.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into()),
        })
    }

    /// A self-signed certificate for an existing PKCS#8 key (a device key: ed25519). The key, not
    /// the certificate, is the identity: a new certificate for the same key keeps the device's
    /// fingerprint.
    pub fn for_key(pkcs8_der: &[u8], name: &str) -> Result<Identity, OriginError> {
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8_der.to_vec());
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)?;
        let params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
        let cert = params.self_signed(&kp)?;
        Ok(Identity { chain: vec![cert.der().clone()], key: PrivateKeyDer::Pkcs8(der) })
    }

    /// Reads a PEM certificate chain and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, OriginError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| OriginError::Io { path: p.to_path_buf(), err: e });
        let chain = rustls_pemfile::certs(&mut &read(cert)?[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| OriginError::Io { path: cert.to_path_buf(), err })?;
        if chain.is_empty() {
            return Err(OriginError::NoCertificate(cert.to_path_buf()));
        }
        let key = rustls_pemfile::private_key(&mut &read(key)?[..])
            .map_err(|err| OriginError::Io { path: key.to_path_buf(), err })?
            .ok_or_else(|| OriginError::NoPrivateKey(key.to_path_buf()))?;
        Ok(Identity { chain, key })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.chain[0])
    }

    /// Writes the chain and key as PEM (for tests and `--self-signed --write-cert`).
    pub fn to_pem(&self) -> (String, String) {
        let cert = self.chain.iter().map(|c| pem("CERTIFICATE", c.as_ref())).collect::<String>();
        (cert, pem("PRIVATE KEY", self.key.secret_der()))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let body: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", body.join("\n"))
}

/// Milliseconds without any packet after which a connection is considered dead.
pub const IDLE_TIMEOUT_MS: u32 = 8_000;

/// Transport settings shared by both ends: windows sized for WAN pulls (the default stream
/// window caps a stream at ~25 MB/s at 50 ms RTT).
pub fn transport(max_bidi_streams: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(max_bidi_streams.into());
    t.max_concurrent_uni_streams(0u8.into());
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
    // A vanished peer (power cut, killed origin) is noticed within seconds, and its pieces are
    // asked from another origin; keep-alives keep a quiet but healthy link open.
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(IDLE_TIMEOUT_MS))));
    t
}

/// Accepts any client certificate whose handshake signature verifies: possession of the key is
/// proven by TLS; whether that key is allowed is the control link's decision (its allow-list of
/// device fingerprints). Clients without a certificate (appliances pulling pieces) are accepted.
#[derive(Debug)]
struct AnyClientKey {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientKey {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The origin's server config: ALPN `popseed/1` (pieces) and `popseed-control/1` (the device
/// link; clients may present a device certificate).
pub fn server_config(id: Identity, max_bidi_streams: u32) -> Result<quinn::ServerConfig, OriginError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyClientKey { algs: provider().signature_verification_algorithms }))
        .with_single_cert(id.chain, id.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec(), CONTROL_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport(max_bidi_streams)));
    Ok(cfg)
}

/// How an appliance decides to trust an origin.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The SHA-256 of the origin's certificate (hex, `:` separators allowed).
    Fingerprint(String),
    /// PEM file of CA certificates.
    Ca(std::path::PathBuf),
}

#[derive(Debug)]
struct PinnedCert {
    sha256: Vec<u8>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.sha256.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("origin certificate does not match the pinned fingerprint".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A client config for `alpn`, presenting `identity` as the client certificate when given (the
/// device link).
pub fn client_config_for(
    trust: &Trust,
    alpn: &[u8],
    identity: Option<Identity>,
) -> Result<quinn::ClientConfig, OriginError> {
    let builder =
        rustls::ClientConfig::builder_with_provider(provider()).with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut tls = match trust {
        Trust::Fingerprint(fp) => {
            let b = builder.dangerous().with_custom_certificate_verifier(Arc::new(PinnedCert {
                sha256: popseed_core::parse_fingerprint(fp)?.to_vec(),
                algs: provider().signature_verification_algorithms,
            }));
            match identity {
                Some(id) => b.with_client_auth_cert(id.chain, id.key)?,
                None => b.with_no_client_auth(),
            }
        }
        Trust::Ca(path) => {
            let pem = std::fs::read(path).map_err(|e| OriginError::Io { path: path.clone(), err: e })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut &pem[..]) {
                let c = c.map_err(|err| OriginError::Io { path: path.clone(), err })?;
                roots.add(c)?;
            }
            let b = builder.with_root_certificates(roots);
            match identity {
                Some(id) => b.with_client_auth_cert(id.chain, id.key)?,
                None => b.with_no_client_auth(),
            }
        }
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport(256)));
    Ok(cfg)
}
