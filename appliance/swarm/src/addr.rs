//! Peer addresses as the wire carries them: the BEP 23 compact forms (6 bytes for IPv4, 18 for
//! IPv6) of tracker replies and PEX messages, in both directions, and the canonical form of a
//! connection's address (an IPv4-mapped IPv6 address is its IPv4 address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Length of one compact IPv4 and one compact IPv6 entry.
pub const COMPACT_V4: usize = 6;
pub const COMPACT_V6: usize = 18;

/// The address a peer is known by: IPv4 for an IPv4-mapped IPv6 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The entries of a compact IPv4 list (a trailing partial entry is ignored).
pub fn compact_v4(b: &[u8]) -> impl Iterator<Item = SocketAddr> + '_ {
    b.chunks_exact(COMPACT_V4)
        .map(|c| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])), u16::from_be_bytes([c[4], c[5]])))
}

/// The entries of a compact IPv6 list (a trailing partial entry is ignored).
pub fn compact_v6(b: &[u8]) -> impl Iterator<Item = SocketAddr> + '_ {
    b.chunks_exact(COMPACT_V6).map(|c| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&c[..16]);
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), u16::from_be_bytes([c[16], c[17]]))
    })
}

/// Appends `a` in compact form (6 or 18 bytes, by its family).
pub fn push_compact(out: &mut Vec<u8>, a: &SocketAddr) {
    match a {
        SocketAddr::V4(s) => out.extend_from_slice(&s.ip().octets()),
        SocketAddr::V6(s) => out.extend_from_slice(&s.ip().octets()),
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// Whether an address named by someone else is worth dialing (a port, a specific address).
pub fn dialable(a: &SocketAddr) -> bool {
    a.port() != 0 && !a.ip().is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_round_trip_and_canonical_form() {
        let v4: SocketAddr = "10.0.0.1:6881".parse().unwrap();
        let v6: SocketAddr = "[::1]:6882".parse().unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        push_compact(&mut a, &v4);
        push_compact(&mut b, &v6);
        assert_eq!(a, [10, 0, 0, 1, 0x1a, 0xe1]);
        a.push(9); // a partial entry
        assert_eq!(compact_v4(&a).collect::<Vec<_>>(), vec![v4]);
        assert_eq!(compact_v6(&b).collect::<Vec<_>>(), vec![v6]);
        assert_eq!(canonical_ip("::ffff:10.0.0.2".parse().unwrap()), "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(canonical_ip("::1".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
        assert!(!dialable(&"0.0.0.0:1".parse().unwrap()) && !dialable(&"10.0.0.1:0".parse().unwrap()));
    }
}
