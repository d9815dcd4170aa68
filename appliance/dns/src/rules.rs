//! The DNS answer rules as a pure function from a query packet to a reply packet (or `None`:
//! drop), and the per-source rate limiter. No sockets here; [`crate::server`] is the I/O shell.
//!
//! Rules: the box's own name gets its LAN address; `dns.msftncsi.com` gets 131.107.255.255
//! (Windows NCSI); `use-application-dns.net`, `mask.icloud.com` and `mask-h2.icloud.com` get
//! NXDOMAIN (browsers keep using this resolver instead of DoH, iCloud Private Relay stays off);
//! every other A query gets the portal address, AAAA and all other types an empty answer.

use std::net::{IpAddr, Ipv4Addr};

use popseed_core::PerKey;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;

/// Names answered with NXDOMAIN.
pub const NXDOMAIN_NAMES: &[&str] = &["use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"];
/// Windows checks that this name resolves to this address.
pub const MSFT_NCSI_NAME: &str = "dns.msftncsi.com";
pub const MSFT_NCSI_ADDR: Ipv4Addr = Ipv4Addr::new(131, 107, 255, 255);

/// What the answers depend on.
#[derive(Debug, Clone)]
pub struct DnsRules {
    pub portal_ip: IpAddr,
    /// Lower case, no trailing dot.
    pub box_name: String,
    pub lan_ip: IpAddr,
    pub ttl: u32,
}

/// A parsed question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lower-cased dotted name without the trailing dot ("" for the root).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// End of the question section in the packet.
    pub end: usize,
}

/// Parses the single question at offset 12. `None` when malformed (bad label, pointer, truncation).
pub fn parse_question(pkt: &[u8]) -> Option<Question> {
    let mut pos = 12usize;
    let mut labels: Vec<String> = Vec::new();
    let mut total = 0usize;
    loop {
        let len = *pkt.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression pointers or reserved label types: not in a question
        }
        let label = pkt.get(pos..pos + len)?;
        total += len + 1;
        if total > 255 {
            return None;
        }
        labels.push(label.iter().map(|b| b.to_ascii_lowercase() as char).collect());
        pos += len;
    }
    let tail = pkt.get(pos..pos + 4)?;
    Some(Question {
        name: labels.join("."),
        qtype: u16::from_be_bytes([tail[0], tail[1]]),
        qclass: u16::from_be_bytes([tail[2], tail[3]]),
        end: pos + 4,
    })
}

/// What to answer for a question: rcode and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u8,
    pub addrs: Vec<IpAddr>,
}

impl DnsRules {
    /// The answer rules, independent of the wire format.
    pub fn decide(&self, name: &str, qtype: u16, qclass: u16) -> Answer {
        let ok = |addrs: Vec<IpAddr>| Answer { rcode: RCODE_NOERROR, addrs };
        if NXDOMAIN_NAMES.contains(&name) {
            return Answer { rcode: RCODE_NXDOMAIN, addrs: vec![] };
        }
        if qclass != CLASS_IN && qclass != CLASS_ANY {
            return ok(vec![]);
        }
        let target = if name == self.box_name {
            self.lan_ip
        } else if name == MSFT_NCSI_NAME {
            IpAddr::V4(MSFT_NCSI_ADDR)
        } else {
            self.portal_ip
        };
        let want_v4 = qtype == TYPE_A || qtype == TYPE_ANY;
        // AAAA is empty unless the answer itself is an IPv6 address (a v6-only box name).
        let want_v6 = (qtype == TYPE_AAAA || qtype == TYPE_ANY) && target.is_ipv6();
        match target {
            IpAddr::V4(_) if want_v4 => ok(vec![target]),
            IpAddr::V6(_) if want_v6 => ok(vec![target]),
            _ => ok(vec![]),
        }
    }

    /// Builds the reply to a query packet; `None` means drop it (malformed, or not a query).
    pub fn respond(&self, pkt: &[u8]) -> Option<Vec<u8>> {
        if pkt.len() < 12 {
            return None;
        }
        let id = [pkt[0], pkt[1]];
        let flags = u16::from_be_bytes([pkt[2], pkt[3]]);
        if flags & 0x8000 != 0 {
            return None; // a response: never answer those (reflection loops)
        }
        let opcode = ((flags >> 11) & 0xF) as u8;
        let rd = flags & 0x0100;
        let qdcount = u16::from_be_bytes([pkt[4], pkt[5]]);
        let header = |rcode: u8, qd: u16, an: u16| {
            let f: u16 = 0x8000 | ((opcode as u16) << 11) | 0x0400 | rd | 0x0080 | rcode as u16;
            let mut h = Vec::with_capacity(512);
            h.extend_from_slice(&id);
            h.extend_from_slice(&f.to_be_bytes());
            h.extend_from_slice(&qd.to_be_bytes());
            h.extend_from_slice(&an.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 0]);
            h
        };
        if opcode != 0 {
            return Some(header(RCODE_NOTIMP, 0, 0));
        }
        if qdcount != 1 {
            return None; // every real stub sends exactly one question; anything else is noise
        }
        let q = parse_question(pkt)?;
        let ans = self.decide(&q.name, q.qtype, q.qclass);
        let mut out = header(ans.rcode, 1, ans.addrs.len() as u16);
        out.extend_from_slice(&pkt[12..q.end]);
        for a in &ans.addrs {
            out.extend_from_slice(&[0xC0, 0x0C]); // pointer to the question's name
            let (ty, rdata): (u16, Vec<u8>) = match a {
                IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
                IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
            };
            out.extend_from_slice(&ty.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&self.ttl.to_be_bytes());
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(&rdata);
        }
        Some(out)
    }
}

/// Per-source token buckets (queries per second) with a bounded number of tracked sources.
pub type RateLimiter = PerKey<IpAddr>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use std::time::Instant;

    fn rules() -> DnsRules {
        DnsRules {
            portal_ip: IpAddr::from([10, 0, 0, 1]),
            box_name: "popseed.lan".into(),
            lan_ip: IpAddr::from([192, 168, 7, 2]),
            ttl: 10,
        }
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.').filter(|l| !l.is_empty()) {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p
    }

    /// (rcode, answer addresses) of a reply.
    fn read_reply(r: &[u8], qlen: usize) -> (u8, Vec<IpAddr>) {
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert!(r[2] & 0x80 != 0, "QR set");
        assert!(r[2] & 0x04 != 0, "AA set");
        let an = u16::from_be_bytes([r[6], r[7]]) as usize;
        let mut pos = qlen;
        let mut out = vec![];
        for _ in 0..an {
            assert_eq!(&r[pos..pos + 2], &[0xC0, 0x0C]);
            let ty = u16::from_be_bytes([r[pos + 2], r[pos + 3]]);
            let len = u16::from_be_bytes([r[pos + 10], r[pos + 11]]) as usize;
            let data = &r[pos + 12..pos + 12 + len];
            out.push(match ty {
                TYPE_A => IpAddr::from(<[u8; 4]>::try_from(data).unwrap()),
                _ => IpAddr::from(<[u8; 16]>::try_from(data).unwrap()),
            });
            pos += 12 + len;
        }
        assert_eq!(pos, r.len());
        (r[3] & 0x0F, out)
    }

    fn ask(name: &str, qtype: u16) -> (u8, Vec<IpAddr>) {
        let q = query(name, qtype);
        let r = rules().respond(&q).expect("a reply");
        read_reply(&r, q.len())
    }

    #[test]
    fn every_a_query_gets_the_portal_address() {
        assert_eq!(ask("example.com", TYPE_A), (0, vec![IpAddr::from([10, 0, 0, 1])]));
        assert_eq!(ask("captive.apple.com", TYPE_A), (0, vec![IpAddr::from([10, 0, 0, 1])]));
        assert_eq!(ask("connectivitycheck.gstatic.com", TYPE_A), (0, vec![IpAddr::from([10, 0, 0, 1])]));
    }

    #[test]
    fn aaaa_and_other_types_get_an_empty_answer() {
        assert_eq!(ask("example.com", TYPE_AAAA), (0, vec![]));
        assert_eq!(ask("example.com", 65), (0, vec![])); // HTTPS
        assert_eq!(ask("example.com", 16), (0, vec![])); // TXT
    }

    #[test]
    fn box_name_gets_its_lan_address_case_insensitively() {
        assert_eq!(ask("popseed.lan", TYPE_A), (0, vec![IpAddr::from([192, 168, 7, 2])]));
        assert_eq!(ask("PopSeed.LAN", TYPE_A), (0, vec![IpAddr::from([192, 168, 7, 2])]));
        assert_eq!(ask("popseed.lan", TYPE_AAAA), (0, vec![]));
    }

    #[test]
    fn nxdomain_names_and_ncsi() {
        for n in NXDOMAIN_NAMES {
            assert_eq!(ask(n, TYPE_A), (RCODE_NXDOMAIN, vec![]), "{n}");
            assert_eq!(ask(n, TYPE_AAAA), (RCODE_NXDOMAIN, vec![]), "{n}");
        }
        assert_eq!(ask("dns.msftncsi.com", TYPE_A), (0, vec![IpAddr::from([131, 107, 255, 255])]));
    }

    #[test]
    fn echoes_question_with_original_case() {
        let q = query("ExAmple.COM", TYPE_A);
        let r = rules().respond(&q).unwrap();
        assert_eq!(&r[12..q.len()], &q[12..]);
    }

    #[test]
    fn malformed_packets_are_dropped() {
        let r = rules();
        assert_eq!(r.respond(&[]), None);
        assert_eq!(r.respond(&[0; 11]), None);
        let mut q = query("example.com", TYPE_A);
        q.truncate(q.len() - 2);
        assert_eq!(r.respond(&q), None, "truncated question");
        let mut ptr = query("", TYPE_A);
        ptr[12] = 0xC0;
        assert_eq!(r.respond(&ptr), None, "pointer in question");
        let mut long = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..10 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(r.respond(&long), None, "name longer than 255");
        let mut resp = query("example.com", TYPE_A);
        resp[2] |= 0x80;
        assert_eq!(r.respond(&resp), None, "responses are never answered");
        // Random garbage never panics.
        let mut x: u32 = 12345;
        for len in 0..600 {
            let p: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1103515245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = r.respond(&p);
        }
    }

    #[test]
    fn non_query_opcodes_get_notimp_and_odd_question_counts_are_dropped() {
        let mut q = query("example.com", TYPE_A);
        q[2] |= 0x10; // opcode 2 (STATUS)
        let reply = rules().respond(&q).unwrap();
        assert_eq!(reply[3] & 0x0F, RCODE_NOTIMP);
        let mut q = query("example.com", TYPE_A);
        q[5] = 2;
        assert_eq!(rules().respond(&q), None);
        q[5] = 0;
        assert_eq!(rules().respond(&q), None);
    }

    #[test]
    fn rate_limiter_refills_and_is_bounded() {
        let mut rl = RateLimiter::new(10.0, 5.0, 3);
        let t0 = Instant::now();
        let a = IpAddr::from([10, 0, 0, 9]);
        let allowed = (0..20).filter(|_| rl.allow(a, t0)).count();
        assert_eq!(allowed, 5, "burst");
        assert!(!rl.allow(a, t0 + Duration::from_millis(50)));
        assert!(rl.allow(a, t0 + Duration::from_millis(200)), "refilled");
        let b = IpAddr::from([10, 0, 0, 10]);
        assert!(rl.allow(b, t0), "another source has its own bucket");
        for n in 0..100u8 {
            rl.allow(IpAddr::from([10, 1, 0, n]), t0 + Duration::from_secs(1));
        }
        assert!(rl.tracked() <= 3);
    }
}
