//! The network around the AP: dnsmasq.conf (DHCP only), nftables.conf (captive redirect, input
//! filter on the AP interface, forwarding only with an uplink), systemd-networkd units and the
//! environment file the image's units read.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::provfile::{Uplink, UplinkMode};

/// Where the agent's portal HTTP server listens (nftables sends the AP's port 80 here).
pub const PORTAL_HTTP_PORT: u16 = 8081;
/// Where the agent's portal DNS responder listens (nftables sends the AP's port 53 here).
pub const PORTAL_DNS_PORT: u16 = 5300;
pub const SWARM_PORT: u16 = 6881;
pub const TRACKER_PORT: u16 = 6969;
pub const LSD_PORT: u16 = 6771;
/// DHCP lease time handed out.
pub const LEASE: &str = "2h";

#[derive(Debug, Clone)]
pub struct NetSettings {
    pub ap_interface: String,
    /// Where staff reach the management port (the uplink, the wired port, or a staff VLAN).
    pub staff_interface: Option<String>,
    /// The portal address with its prefix.
    pub portal: Ipv4Net,
    pub management_port: u16,
    pub uplink: Option<Uplink>,
    pub max_clients: u16,
    /// Where dnsmasq keeps its leases.
    pub lease_file: String,
}

/// The DHCP range for `net`: a /24 gives .10-.250; small nets give every host. The portal
/// address is never in it (the larger side of it is used).
pub fn dhcp_range(net: Ipv4Net) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let first = u32::from(net.network()).checked_add(1)?;
    let last = u32::from(net.broadcast()).checked_sub(1)?;
    if last < first {
        return None;
    }
    let (mut start, mut end) = if last - first >= 64 { (first + 9, last - 4) } else { (first, last) };
    let portal = u32::from(net.addr());
    if (start..=end).contains(&portal) {
        let below = portal.saturating_sub(start);
        let above = end.saturating_sub(portal);
        if above >= below {
            start = portal + 1;
        } else {
            end = portal - 1;
        }
    }
    (start <= end).then(|| (Ipv4Addr::from(start), Ipv4Addr::from(end)))
}

/// dnsmasq.conf: DHCP only (`port=0`), router and DNS server = the portal address.
pub fn render_dnsmasq(n: &NetSettings) -> String {
    let mut o = String::from(
        "# dnsmasq.conf rendered by `popseed firstboot`; do not edit.\n# DHCP only: DNS is answered by the portal.\n",
    );
    let _ = writeln!(o, "port=0");
    let _ = writeln!(o, "interface={}", n.ap_interface);
    let _ = writeln!(o, "bind-dynamic");
    let _ = writeln!(o, "dhcp-authoritative");
    let _ = writeln!(o, "dhcp-leasefile={}", n.lease_file);
    if let Some((a, b)) = dhcp_range(n.portal) {
        let _ = writeln!(o, "dhcp-range={a},{b},{},{LEASE}", n.portal.netmask());
    }
    let _ = writeln!(o, "dhcp-option=option:router,{}", n.portal.addr());
    let _ = writeln!(o, "dhcp-option=option:dns-server,{}", n.portal.addr());
    let _ = writeln!(o, "dhcp-lease-max={}", u32::from(n.max_clients) * 2);
    o
}

/// nftables.conf: one table `inet popseed`, replaced as a whole when loaded.
pub fn render_nftables(n: &NetSettings) -> String {
    let ap = &n.ap_interface;
    let portal = n.portal.addr();
    let mut o = String::from("#!/usr/sbin/nft -f\n# nftables.conf rendered by `popseed firstboot`; do not edit.\n");
    // declare-then-delete makes loading idempotent without touching other tables
    o.push_str("table inet popseed\ndelete table inet popseed\n\ntable inet popseed {\n");
    let _ = write!(
        o,
        "\tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tiifname \"{ap}\" tcp dport 80 dnat ip to {portal}:{PORTAL_HTTP_PORT}\n\
         \t\tiifname \"{ap}\" udp dport 53 dnat ip to {portal}:{PORTAL_DNS_PORT}\n\
         \t\tiifname \"{ap}\" tcp dport 53 dnat ip to {portal}:{PORTAL_DNS_PORT}\n\
         \t}}\n\n"
    );
    // Input is dropped unless named here: attendees on the access point reach the portal, DNS,
    // DHCP, BitTorrent and LSD, never the management port; the staff interface reaches the
    // management port and the peer ports; the uplink only what the box needs (replies to what it
    // opened, DHCP, the peer ports for other boxes of the venue).
    let _ = write!(
        o,
        "\tchain input {{\n\
         \t\ttype filter hook input priority filter; policy drop;\n\
         \t\tiif \"lo\" accept\n\
         \t\tct state established,related accept\n\
         \t\tct state invalid drop\n\
         \t\tmeta l4proto {{ icmp, ipv6-icmp }} accept\n\
         \t\tiifname \"{ap}\" udp dport 67 accept\n\
         \t\tiifname \"{ap}\" tcp dport {{ {PORTAL_HTTP_PORT}, {PORTAL_DNS_PORT}, {SWARM_PORT}, {TRACKER_PORT} }} accept\n\
         \t\tiifname \"{ap}\" udp dport {{ {PORTAL_DNS_PORT}, {SWARM_PORT}, {LSD_PORT} }} accept\n"
    );
    let mut wired: Vec<&str> = Vec::new();
    if let Some(s) = &n.staff_interface {
        wired.push(s);
        let _ = writeln!(o, "\t\tiifname \"{s}\" tcp dport {} accept", n.management_port);
    }
    if let Some(u) = &n.uplink {
        wired.push(&u.interface);
    }
    wired.sort_unstable();
    wired.dedup();
    for w in wired {
        let _ = write!(
            o,
            "\t\tiifname \"{w}\" udp sport 67 udp dport 68 accept\n\
             \t\tiifname \"{w}\" udp dport 546 accept\n\
             \t\tiifname \"{w}\" tcp dport {{ {SWARM_PORT}, {TRACKER_PORT} }} accept\n\
             \t\tiifname \"{w}\" udp dport {{ {SWARM_PORT}, {LSD_PORT} }} accept\n"
        );
    }
    o.push_str("\t}\n\n");
    o.push_str("\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n");
    if let Some(u) = &n.uplink {
        let up = &u.interface;
        let _ = write!(
            o,
            "\t\tiifname \"{ap}\" oifname \"{up}\" accept\n\
             \t\tiifname \"{up}\" oifname \"{ap}\" ct state established,related accept\n"
        );
    }
    o.push_str("\t}\n");
    if let Some(u) = &n.uplink {
        let _ = write!(
            o,
            "\n\tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tiifname \"{ap}\" oifname \"{}\" masquerade\n\
             \t}}\n",
            u.interface
        );
    }
    o.push_str("}\n");
    o
}

/// systemd-networkd unit giving the AP interface the portal address.
pub fn render_ap_network(n: &NetSettings) -> String {
    format!(
        "# Rendered by `popseed firstboot`; copy to /run/systemd/network/.\n[Match]\nName={}\n\n[Link]\nRequiredForOnline=no\n\n\
         [Network]\nAddress={}\nConfigureWithoutCarrier=yes\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nIPForward={}\n",
        n.ap_interface,
        n.portal,
        if n.uplink.is_some() { "ipv4" } else { "no" }
    )
}

/// systemd-networkd unit for the uplink (DHCP or static).
pub fn render_uplink_network(u: &Uplink) -> String {
    let mut o = format!(
        "# Rendered by `popseed firstboot`; copy to /run/systemd/network/.\n[Match]\nName={}\n\n[Network]\n",
        u.interface
    );
    match &u.mode {
        UplinkMode::Dhcp => o.push_str("DHCP=ipv4\n"),
        UplinkMode::Static { address, gateway, dns } => {
            let _ = writeln!(o, "Address={address}");
            if let Some(g) = gateway {
                let _ = writeln!(o, "Gateway={g}");
            }
            for d in dns {
                let _ = writeln!(o, "DNS={d}");
            }
        }
    }
    o
}

/// `KEY=value` lines for the units' `EnvironmentFile=`.
pub fn render_env(mode: &str, board: &str, n: &NetSettings) -> String {
    format!(
        "POPSEED_MODE={mode}\nPOPSEED_BOARD={board}\nPOPSEED_AP_INTERFACE={}\nPOPSEED_PORTAL_ADDRESS={}\nPOPSEED_UPLINK_INTERFACE={}\n",
        n.ap_interface,
        n.portal,
        n.uplink.as_ref().map(|u| u.interface.as_str()).unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(portal: &str, uplink: bool) -> NetSettings {
        NetSettings {
            ap_interface: "wlan0".into(),
            portal: portal.parse().unwrap(),
            staff_interface: Some("eth0".into()),
            management_port: 8080,
            uplink: uplink.then(|| Uplink { interface: "eth0".into(), mode: UplinkMode::Dhcp }),
            max_clients: 64,
            lease_file: "/run/popseed/dnsmasq.leases".into(),
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn dhcp_ranges_skip_the_portal() {
        assert_eq!(dhcp_range("10.42.0.1/24".parse().unwrap()), Some((ip("10.42.0.10"), ip("10.42.0.250"))));
        assert_eq!(dhcp_range("10.42.0.100/24".parse().unwrap()), Some((ip("10.42.0.101"), ip("10.42.0.250"))));
        assert_eq!(dhcp_range("10.42.0.200/24".parse().unwrap()), Some((ip("10.42.0.10"), ip("10.42.0.199"))));
        assert_eq!(dhcp_range("172.16.0.1/16".parse().unwrap()), Some((ip("172.16.0.10"), ip("172.16.255.250"))));
        assert_eq!(dhcp_range("192.168.1.1/30".parse().unwrap()), Some((ip("192.168.1.2"), ip("192.168.1.2"))));
        assert_eq!(dhcp_range("192.168.1.2/30".parse().unwrap()), Some((ip("192.168.1.1"), ip("192.168.1.1"))));
        assert_eq!(dhcp_range("192.168.1.5/28".parse().unwrap()), Some((ip("192.168.1.6"), ip("192.168.1.14"))));
    }

    #[test]
    fn dnsmasq_is_dhcp_only_with_portal_as_router_and_dns() {
        let c = render_dnsmasq(&net("10.42.0.1/24", false));
        assert!(c.contains("\nport=0\n"), "{c}");
        assert!(c.contains("dhcp-range=10.42.0.10,10.42.0.250,255.255.255.0,2h"), "{c}");
        assert!(c.contains("dhcp-option=option:router,10.42.0.1\n"), "{c}");
        assert!(c.contains("dhcp-option=option:dns-server,10.42.0.1\n"), "{c}");
        assert!(c.contains("interface=wlan0\n"), "{c}");
    }

    #[test]
    fn nftables_redirects_and_forwards_only_with_uplink() {
        let c = render_nftables(&net("10.42.0.1/24", false));
        assert!(c.contains("iifname \"wlan0\" tcp dport 80 dnat ip to 10.42.0.1:8081"), "{c}");
        assert!(c.contains("iifname \"wlan0\" udp dport 53 dnat ip to 10.42.0.1:5300"), "{c}");
        assert!(c.contains("iifname \"wlan0\" tcp dport 53 dnat ip to 10.42.0.1:5300"), "{c}");
        assert!(c.contains("policy drop;\n\t}"), "forward chain must be empty without uplink: {c}");
        assert!(!c.contains("masquerade"), "{c}");
        let c = render_nftables(&net("10.42.0.1/24", true));
        assert!(c.contains("iifname \"wlan0\" oifname \"eth0\" accept"), "{c}");
        assert!(c.contains("masquerade"), "{c}");
    }

    #[test]
    fn management_only_on_the_staff_interface_and_input_closed_by_default() {
        let c = render_nftables(&net("10.42.0.1/24", true));
        assert!(c.contains("type filter hook input priority filter; policy drop;"), "{c}");
        assert!(c.contains("iifname \"eth0\" tcp dport 8080 accept"), "{c}");
        let ap_lines: Vec<&str> =
            c.lines().filter(|l| l.contains("iifname \"wlan0\"") && l.contains("accept")).collect();
        assert!(!ap_lines.is_empty() && ap_lines.iter().all(|l| !l.contains("8080")), "{ap_lines:?}");
        assert!(!c.contains("iifname != "), "no interface is trusted wholesale: {c}");
        let mut n = net("10.42.0.1/24", false);
        n.staff_interface = None;
        let c = render_nftables(&n);
        assert!(!c.contains("8080"), "no staff interface: the management port is closed: {c}");
    }

    #[test]
    fn networkd_units() {
        let c = render_ap_network(&net("10.42.0.1/24", false));
        assert!(
            c.contains("Name=wlan0\n") && c.contains("Address=10.42.0.1/24\n") && c.contains("IPForward=no"),
            "{c}"
        );
        let u = Uplink {
            interface: "eth0".into(),
            mode: UplinkMode::Static {
                address: "192.0.2.10/24".parse().unwrap(),
                gateway: Some(ip("192.0.2.1")),
                dns: vec![],
            },
        };
        let c = render_uplink_network(&u);
        assert!(c.contains("Address=192.0.2.10/24\nGateway=192.0.2.1\n"), "{c}");
        let e = render_env("normal", "rock5b", &net("10.42.0.1/24", true));
        assert!(e.contains("POPSEED_AP_INTERFACE=wlan0\n") && e.contains("POPSEED_UPLINK_INTERFACE=eth0\n"), "{e}");
    }
}
