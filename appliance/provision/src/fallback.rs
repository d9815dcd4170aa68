//! The setup fallback's fixed settings: the open AP's name (from the device key) and address.

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

/// The setup AP's portal address; the setup page is at http://10.42.0.1/.
pub const SETUP_ADDRESS: &str = "10.42.0.1/24";

pub fn setup_address() -> Ipv4Net {
    // a constant that parses; the fallback is the default net if it ever did not
    SETUP_ADDRESS.parse().unwrap_or_default()
}

/// `popseed-setup-XXXX`: XXXX are the last 4 hex digits of the SHA-256 of the device key (the
/// digest `SHA256:...` fingerprints show in base64).
pub fn setup_ssid(key: &popseed_release::PublicKey) -> String {
    format!("popseed-setup-{}", short_id(key))
}

/// Last 4 hex digits of the device key's SHA-256.
pub fn short_id(key: &popseed_release::PublicKey) -> String {
    let d = Sha256::digest(key.0.as_bytes());
    hex::encode(&d[d.len() - 2..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn ssid_suffix_matches_the_fingerprint() {
        let k = popseed_release::keys::SecretKey::generate().public();
        let ssid = setup_ssid(&k);
        let fp = k.fingerprint();
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD.decode(fp.trim_start_matches("SHA256:")).unwrap();
        assert_eq!(ssid, format!("popseed-setup-{}", hex::encode(&raw[30..])));
        assert_eq!(setup_address().to_string(), SETUP_ADDRESS);
    }
}
