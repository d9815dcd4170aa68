//! The access point: built as `embedded_svc::wifi::AccessPointConfiguration` (SSID, channel,
//! auth method, password, client cap) plus what hostapd needs beyond it (interface, driver,
//! country, band, the board's HT/VHT settings), and rendered into hostapd.conf.

use std::fmt::Write as _;

use embedded_svc::wifi::{AccessPointConfiguration, AuthMethod, Protocol};

use crate::profile::{Band, HwProfile};
use crate::provfile::{Security, WifiSettings};

#[derive(Debug, Clone)]
pub struct ApSettings {
    pub ap: AccessPointConfiguration,
    pub interface: String,
    pub driver: String,
    /// `None`: no `country_code` (the world regulatory domain).
    pub country: Option<String>,
    pub band: Band,
    pub ht_capab: Option<String>,
    pub vht: bool,
}

/// Where hostapd puts its control socket (hostapd_cli -p).
pub const CTRL_INTERFACE: &str = "/run/hostapd";

impl ApSettings {
    /// The venue network from a validated provisioning file and the board profile.
    pub fn from_provisioning(w: &WifiSettings, hw: &HwProfile) -> Option<ApSettings> {
        let auth_method = match w.security {
            Security::Open => AuthMethod::None,
            Security::Wpa2 => AuthMethod::WPA2Personal,
            Security::Wpa3 => AuthMethod::WPA3Personal,
            Security::Wpa2Wpa3 => AuthMethod::WPA2WPA3Personal,
        };
        let ap = AccessPointConfiguration {
            ssid: w.ssid.as_str().try_into().ok()?,
            ssid_hidden: w.hidden,
            channel: w.channel,
            secondary_channel: None,
            protocols: Protocol::P802D11BGN.into(),
            auth_method,
            password: w.passphrase.as_deref().unwrap_or("").try_into().ok()?,
            max_connections: w.max_clients,
        };
        Some(ApSettings {
            ap,
            interface: hw.wifi.interface.clone(),
            driver: hw.wifi.driver.clone(),
            country: Some(w.country.clone()),
            band: w.band,
            ht_capab: hw.wifi.ht_capab.clone(),
            vht: hw.wifi.vht,
        })
    }

    /// The open setup network: channel 6 (legal everywhere), no country, 2.4 GHz.
    pub fn setup(ssid: &str, hw: &HwProfile) -> Option<ApSettings> {
        let ap = AccessPointConfiguration {
            ssid: ssid.try_into().ok()?,
            ssid_hidden: false,
            channel: 6,
            secondary_channel: None,
            protocols: Protocol::P802D11BGN.into(),
            auth_method: AuthMethod::None,
            password: Default::default(),
            max_connections: hw.wifi.max_clients,
        };
        Some(ApSettings {
            ap,
            interface: hw.wifi.interface.clone(),
            driver: hw.wifi.driver.clone(),
            country: None,
            band: Band::Ghz2_4,
            ht_capab: None,
            vht: false,
        })
    }
}

/// hostapd.conf for `s`. Values come from validated input (no control characters).
pub fn render_hostapd(s: &ApSettings) -> String {
    let ap = &s.ap;
    let mut o = String::new();
    let mut kv = |k: &str, v: &dyn std::fmt::Display| {
        let _ = writeln!(o, "{k}={v}");
    };
    kv("interface", &s.interface);
    kv("driver", &s.driver);
    kv("ctrl_interface", &CTRL_INTERFACE);
    kv("ctrl_interface_group", &0);
    // ssid2 with quotes takes any bytes up to the last quote; utf8_ssid marks it UTF-8
    kv("ssid2", &format!("\"{}\"", ap.ssid.as_str()));
    kv("utf8_ssid", &1);
    kv("ignore_broadcast_ssid", &u8::from(ap.ssid_hidden));
    if let Some(cc) = &s.country {
        kv("country_code", cc);
        kv("ieee80211d", &1);
    }
    kv("hw_mode", &if s.band == Band::Ghz5 { "a" } else { "g" });
    kv("channel", &ap.channel);
    kv("ieee80211n", &1);
    if let Some(ht) = &s.ht_capab {
        kv("ht_capab", ht);
    }
    if s.vht && s.band == Band::Ghz5 {
        kv("ieee80211ac", &1);
    }
    kv("wmm_enabled", &1);
    kv("max_num_sta", &ap.max_connections);
    kv("auth_algs", &1);
    let pass = ap.password.as_str();
    let psk_line = |o: &mut String| {
        if pass.len() == 64 && pass.chars().all(|c| c.is_ascii_hexdigit()) {
            let _ = writeln!(o, "wpa_psk={pass}");
        } else {
            let _ = writeln!(o, "wpa_passphrase={pass}");
        }
    };
    match ap.auth_method {
        AuthMethod::WPA2Personal => {
            o.push_str("wpa=2\nwpa_key_mgmt=WPA-PSK\nrsn_pairwise=CCMP\n");
            psk_line(&mut o);
        }
        AuthMethod::WPA3Personal => {
            o.push_str("wpa=2\nwpa_key_mgmt=SAE\nrsn_pairwise=CCMP\nieee80211w=2\nsae_pwe=2\n");
            let _ = writeln!(o, "sae_password={pass}");
        }
        AuthMethod::WPA2WPA3Personal => {
            o.push_str("wpa=2\nwpa_key_mgmt=WPA-PSK SAE\nrsn_pairwise=CCMP\nieee80211w=1\nsae_pwe=2\n");
            psk_line(&mut o);
            let _ = writeln!(o, "sae_password={pass}");
        }
        // open network (the validator allows no other method)
        _ => {}
    }
    format!("# hostapd.conf rendered by `popseed firstboot` from popseed.toml; do not edit.\n{o}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::profile::HwProfile;

    fn parse(conf: &str) -> HashMap<String, String> {
        let mut m = HashMap::new();
        for line in conf.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line:?}"));
            assert!(m.insert(k.to_owned(), v.to_owned()).is_none(), "duplicate key {k}");
        }
        m
    }

    fn wifi(security: Security, pass: Option<&str>, channel: u8, band: Band) -> WifiSettings {
        WifiSettings {
            ssid: "FooConf Ünicode".into(),
            passphrase: pass.map(str::to_owned),
            security,
            country: "DE".into(),
            channel,
            band,
            hidden: false,
            max_clients: 50,
        }
    }

    fn render(w: &WifiSettings, hw: &HwProfile) -> HashMap<String, String> {
        parse(&render_hostapd(&ApSettings::from_provisioning(w, hw).unwrap()))
    }

    #[test]
    fn open_network() {
        let m = render(&wifi(Security::Open, None, 6, Band::Ghz2_4), &HwProfile::builtin_generic());
        assert_eq!(m["interface"], "wlan0");
        assert_eq!(m["ssid2"], "\"FooConf Ünicode\"");
        assert_eq!(m["hw_mode"], "g");
        assert_eq!(m["channel"], "6");
        assert_eq!(m["country_code"], "DE");
        assert_eq!(m["max_num_sta"], "50");
        for k in ["wpa", "wpa_passphrase", "wpa_key_mgmt", "sae_password"] {
            assert!(!m.contains_key(k), "open network has {k}");
        }
    }

    #[test]
    fn wpa2_network_with_passphrase_or_raw_psk() {
        let m = render(&wifi(Security::Wpa2, Some("correct horse"), 11, Band::Ghz2_4), &HwProfile::builtin_generic());
        assert_eq!(
            (m["wpa"].as_str(), m["wpa_key_mgmt"].as_str(), m["rsn_pairwise"].as_str()),
            ("2", "WPA-PSK", "CCMP")
        );
        assert_eq!(m["wpa_passphrase"], "correct horse");
        assert!(!m.contains_key("ieee80211w") && !m.contains_key("sae_password"));
        let hex = "ab".repeat(32);
        let m = render(&wifi(Security::Wpa2, Some(&hex), 11, Band::Ghz2_4), &HwProfile::builtin_generic());
        assert_eq!(m["wpa_psk"], hex);
        assert!(!m.contains_key("wpa_passphrase"));
    }

    #[test]
    fn wpa3_and_transition_networks() {
        let mut hw = HwProfile::builtin_generic();
        hw.wifi.bands.push(Band::Ghz5);
        hw.wifi.vht = true;
        hw.wifi.ht_capab = Some("[HT40+]".into());
        let m = render(&wifi(Security::Wpa3, Some("correct horse"), 36, Band::Ghz5), &hw);
        assert_eq!(m["wpa_key_mgmt"], "SAE");
        assert_eq!(m["ieee80211w"], "2");
        assert_eq!(m["sae_password"], "correct horse");
        assert!(!m.contains_key("wpa_passphrase"));
        assert_eq!((m["hw_mode"].as_str(), m["ieee80211ac"].as_str(), m["ht_capab"].as_str()), ("a", "1", "[HT40+]"));
        let m = render(&wifi(Security::Wpa2Wpa3, Some("correct horse"), 6, Band::Ghz2_4), &hw);
        assert_eq!(m["wpa_key_mgmt"], "WPA-PSK SAE");
        assert_eq!(m["ieee80211w"], "1");
        assert_eq!((m["wpa_passphrase"].as_str(), m["sae_password"].as_str()), ("correct horse", "correct horse"));
        assert!(!m.contains_key("ieee80211ac"), "no VHT on 2.4 GHz");
    }

    #[test]
    fn setup_network_is_open_without_country() {
        let s = ApSettings::setup("popseed-setup-ab12", &HwProfile::builtin_generic()).unwrap();
        let m = parse(&render_hostapd(&s));
        assert_eq!(m["ssid2"], "\"popseed-setup-ab12\"");
        assert_eq!(m["channel"], "6");
        assert!(!m.contains_key("country_code") && !m.contains_key("wpa"));
    }
}
