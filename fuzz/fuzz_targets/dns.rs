//! DNS queries as the portal's responder gets them on UDP/TCP port 53 from anyone on the
//! venue Wi-Fi: `popseed_dns::rules::parse_question` and `DnsRules::respond`, with an IPv4
//! rules set and an IPv6 box name (so AAAA answers occur too).
//!
//! Asserts: no panic; no reply to a response (no reflection loops) or to packets under 12
//! bytes; every reply is well-formed: same id, QR and AA set, at most one question echoed
//! byte for byte, exactly ANCOUNT answers each pointing at the question's name with a 4- or
//! 16-byte address of the right type, and nothing after them.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use popseed_dns::rules::{parse_question, DnsRules, TYPE_A, TYPE_AAAA};

fn rules(v6: bool) -> DnsRules {
    DnsRules {
        portal_ip: IpAddr::from([10, 0, 0, 1]),
        box_name: "popseed.lan".into(),
        lan_ip: if v6 { "fd00::2".parse().expect("an address") } else { IpAddr::from([192, 168, 7, 2]) },
        ttl: 10,
    }
}

fn check(pkt: &[u8], r: &[u8]) {
    assert!(r.len() >= 12);
    assert_eq!(&r[..2], &pkt[..2], "id echoed");
    assert!(r[2] & 0x80 != 0, "QR set");
    assert!(r[2] & 0x04 != 0, "AA set");
    assert_eq!((r[2] >> 3) & 0xF, (pkt[2] >> 3) & 0xF, "opcode echoed");
    let qd = u16::from_be_bytes([r[4], r[5]]);
    let an = u16::from_be_bytes([r[6], r[7]]) as usize;
    assert_eq!(&r[8..12], &[0, 0, 0, 0], "no authority or additional records");
    let mut pos = 12;
    if qd == 1 {
        let q = parse_question(pkt).expect("a question that was answered parses");
        assert_eq!(&r[12..q.end], &pkt[12..q.end], "question echoed byte for byte");
        pos = q.end;
    } else {
        assert_eq!(qd, 0);
        assert_eq!(an, 0);
    }
    for _ in 0..an {
        let rr = &r[pos..];
        assert!(rr.len() >= 12, "answer truncated");
        assert_eq!(&rr[..2], &[0xC0, 0x0C], "answer names the question");
        let ty = u16::from_be_bytes([rr[2], rr[3]]);
        let len = u16::from_be_bytes([rr[10], rr[11]]) as usize;
        match ty {
            TYPE_A => assert_eq!(len, 4),
            TYPE_AAAA => assert_eq!(len, 16),
            other => panic!("answer of type {other}"),
        }
        pos += 12 + len;
    }
    assert_eq!(pos, r.len(), "nothing after the answers");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, pkt)) = data.split_first() else { return };
    if let Some(q) = parse_question(pkt) {
        assert!(q.end <= pkt.len());
        assert!(q.name.chars().count() <= 255);
        assert!(!q.name.bytes().any(|b| b.is_ascii_uppercase()), "names are lower-cased");
    }
    let r = rules(mode & 1 == 1);
    match r.respond(pkt) {
        None => {}
        Some(reply) => {
            assert!(pkt.len() >= 12);
            assert_eq!(pkt[2] & 0x80, 0, "never answer a response");
            check(pkt, &reply);
        }
    }
});
