//! OS connectivity probes: which platform a request (Host + path) is probing for, and the exact
//! reply that platform takes to mean "online". Pure functions, no I/O (see DESIGN.md's table).

/// A platform whose captive-portal detection we recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Android and ChromeOS (`generate_204` on Google hosts).
    Android,
    /// iOS and macOS (`captive.apple.com` and Apple's legacy probe hosts).
    Apple,
    /// Windows NCSI (`www.msftconnecttest.com/connecttest.txt`).
    Windows,
    /// Windows' legacy NCSI probe (`www.msftncsi.com/ncsi.txt`).
    WindowsLegacy,
    /// Firefox captive detection (`detectportal.firefox.com/canonical.html`).
    Firefox,
    /// Firefox connectivity service (`detectportal.firefox.com/success.txt`).
    FirefoxSuccess,
    /// GNOME NetworkManager (`nmcheck.gnome.org/check_network_status.txt`).
    NetworkManager,
}

/// The "online" reply of a platform: status code, content type and exact body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnlineReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: &'static str,
}

pub const APPLE_SUCCESS: &str = "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>";
pub const FIREFOX_CANONICAL: &str =
    "<meta http-equiv=\"refresh\" content=\"0;url=https://support.mozilla.org/kb/captive-portal\"/>";

impl Platform {
    pub fn online_reply(self) -> OnlineReply {
        let (status, content_type, body) = match self {
            Platform::Android => (204, "text/plain", ""),
            Platform::Apple => (200, "text/html", APPLE_SUCCESS),
            Platform::Windows => (200, "text/plain", "Microsoft Connect Test"),
            Platform::WindowsLegacy => (200, "text/plain", "Microsoft NCSI"),
            Platform::Firefox => (200, "text/html", FIREFOX_CANONICAL),
            Platform::FirefoxSuccess => (200, "text/plain", "success\n"),
            Platform::NetworkManager => (200, "text/plain", "NetworkManager is online\n"),
        };
        OnlineReply { status, content_type, body }
    }

    pub fn name(self) -> &'static str {
        match self {
            Platform::Android => "android",
            Platform::Apple => "apple",
            Platform::Windows | Platform::WindowsLegacy => "windows",
            Platform::Firefox | Platform::FirefoxSuccess => "firefox",
            Platform::NetworkManager => "networkmanager",
        }
    }
}

/// Host name without port and trailing dot, lower-cased.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else if h.matches(':').count() == 1 {
        h.split(':').next().unwrap_or(h)
    } else {
        h
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

const GOOGLE_204_HOSTS: &[&str] = &[
    "connectivitycheck.gstatic.com",
    "connectivitycheck.android.com",
    "clients1.google.com",
    "clients3.google.com",
    "clients.l.google.com",
    "www.google.com",
    "google.com",
    "www.gstatic.com",
    "play.googleapis.com",
];

const APPLE_HOSTS: &[&str] = &[
    "captive.apple.com",
    "www.apple.com",
    "www.appleiphonecell.com",
    "www.itools.info",
    "www.ibook.info",
    "www.airport.us",
    "www.thinkdifferent.us",
];

/// Which platform's probe this is (Host header + path without query), if any.
pub fn classify(host: &str, path: &str) -> Option<Platform> {
    let host = normalize_host(host);
    let path = path.split('?').next().unwrap_or(path);
    let h = host.as_str();
    if GOOGLE_204_HOSTS.contains(&h) && (path == "/generate_204" || path == "/gen_204") {
        return Some(Platform::Android);
    }
    if h == "captive.apple.com" {
        // iOS asks /hotspot-detect.html, older versions a random path: every path is a probe.
        return Some(Platform::Apple);
    }
    if APPLE_HOSTS.contains(&h) && (path == "/library/test/success.html" || path == "/hotspot-detect.html") {
        return Some(Platform::Apple);
    }
    match (h, path) {
        ("www.msftconnecttest.com" | "msftconnecttest.com", "/connecttest.txt") => Some(Platform::Windows),
        ("www.msftncsi.com" | "msftncsi.com", "/ncsi.txt") => Some(Platform::WindowsLegacy),
        ("detectportal.firefox.com", "/canonical.html") => Some(Platform::Firefox),
        ("detectportal.firefox.com", "/success.txt") => Some(Platform::FirefoxSuccess),
        ("nmcheck.gnome.org", "/check_network_status.txt") => Some(Platform::NetworkManager),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_platform_in_the_design_table() {
        assert_eq!(classify("connectivitycheck.gstatic.com", "/generate_204"), Some(Platform::Android));
        assert_eq!(classify("www.google.com", "/generate_204"), Some(Platform::Android));
        assert_eq!(classify("clients3.google.com", "/generate_204"), Some(Platform::Android));
        assert_eq!(classify("captive.apple.com", "/hotspot-detect.html"), Some(Platform::Apple));
        assert_eq!(classify("www.msftconnecttest.com", "/connecttest.txt"), Some(Platform::Windows));
        assert_eq!(classify("www.msftncsi.com", "/ncsi.txt"), Some(Platform::WindowsLegacy));
        assert_eq!(classify("detectportal.firefox.com", "/canonical.html"), Some(Platform::Firefox));
        assert_eq!(classify("detectportal.firefox.com", "/success.txt"), Some(Platform::FirefoxSuccess));
        assert_eq!(classify("nmcheck.gnome.org", "/check_network_status.txt"), Some(Platform::NetworkManager));
    }

    #[test]
    fn host_matching_ignores_case_port_and_trailing_dot() {
        assert_eq!(classify("Captive.Apple.COM.:80", "/hotspot-detect.html"), Some(Platform::Apple));
        assert_eq!(classify("connectivitycheck.gstatic.com:80", "/generate_204?x=1"), Some(Platform::Android));
        assert_eq!(normalize_host("[fe80::1]:80"), "fe80::1");
        assert_eq!(normalize_host("10.0.0.1:8080"), "10.0.0.1");
    }

    #[test]
    fn other_paths_and_hosts_are_not_probes() {
        assert_eq!(classify("www.google.com", "/"), None);
        assert_eq!(classify("www.msftconnecttest.com", "/redirect"), None);
        assert_eq!(classify("example.com", "/generate_204"), None);
        assert_eq!(classify("nmcheck.gnome.org", "/"), None);
        assert_eq!(classify("", ""), None);
    }

    #[test]
    fn online_replies_are_exact() {
        assert_eq!(Platform::Android.online_reply().status, 204);
        assert_eq!(Platform::Android.online_reply().body, "");
        assert_eq!(
            Platform::Apple.online_reply().body,
            "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"
        );
        assert_eq!(Platform::Windows.online_reply().body, "Microsoft Connect Test");
        assert_eq!(Platform::NetworkManager.online_reply().body, "NetworkManager is online\n");
        assert!(Platform::Firefox.online_reply().body.starts_with("<meta http-equiv=\"refresh\""));
    }
}
