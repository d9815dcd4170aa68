//! BEP 14 local service discovery: announces the held releases on the LAN multicast group
//! 239.192.152.143:6771 and listens for other peers' announces, which go into the tracker's
//! peer table (so attendees that only do LSD are still handed to tracker users). Message
//! formatting and parsing are pure and unit-tested; [`run`] is the tokio loop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use popseed_core::InfoHash;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::tracker::{Holdings, Swarms};

pub const LSD_GROUP: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
pub const LSD_PORT: u16 = 6771;
/// Infohashes per announce datagram (keeps it well under 1400 bytes).
const PER_DATAGRAM: usize = 20;

/// One BT-SEARCH datagram announcing `infohashes` at `port`.
pub fn format_announce(port: u16, infohashes: &[InfoHash], cookie: &str) -> Vec<u8> {
    let mut s = format!("BT-SEARCH * HTTP/1.1\r\nHost: {LSD_GROUP}:{LSD_PORT}\r\nPort: {port}\r\n");
    for ih in infohashes {
        s.push_str(&format!("Infohash: {ih}\r\n"));
    }
    s.push_str(&format!("cookie: {cookie}\r\n\r\n\r\n"));
    s.into_bytes()
}

/// A parsed announce: port, infohashes, cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsdAnnounce {
    pub port: u16,
    pub infohashes: Vec<InfoHash>,
    pub cookie: Option<String>,
}

/// Parses a BT-SEARCH datagram; None for anything else.
pub fn parse_announce(d: &[u8]) -> Option<LsdAnnounce> {
    let text = std::str::from_utf8(d).ok()?;
    let mut lines = text.split("\r\n");
    if !lines.next()?.starts_with("BT-SEARCH * HTTP/1.1") {
        return None;
    }
    let mut port = None;
    let mut infohashes = Vec::new();
    let mut cookie = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "port" => port = v.parse::<u16>().ok().filter(|p| *p != 0),
            "infohash" => {
                if let Ok(ih) = v.parse::<InfoHash>() {
                    infohashes.push(ih);
                }
            }
            "cookie" => cookie = Some(v.to_owned()),
            _ => {}
        }
    }
    Some(LsdAnnounce { port: port?, infohashes, cookie })
}

fn bind() -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, LSD_PORT)).into())?;
    s.join_multicast_v4(&LSD_GROUP, &Ipv4Addr::UNSPECIFIED)?;
    s.set_multicast_ttl_v4(1)?;
    UdpSocket::from_std(s.into())
}

/// Announces every `interval` and records peers heard from until `shutdown`.
pub async fn run(
    port: u16,
    interval: Duration,
    swarms: Arc<Mutex<Swarms>>,
    holdings: Arc<dyn Holdings>,
    shutdown: CancellationToken,
) {
    let sock = match bind() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("LSD disabled: cannot join {LSD_GROUP}:{LSD_PORT}: {e}");
            return;
        }
    };
    let cookie = format!("popseed-{:08x}", rand::random::<u32>());
    let dest = SocketAddr::V4(SocketAddrV4::new(LSD_GROUP, LSD_PORT));
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    let mut buf = [0u8; 1500];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let held: Vec<InfoHash> = holdings.releases().into_iter().map(|(ih, _)| ih).collect();
                for chunk in held.chunks(PER_DATAGRAM) {
                    if let Err(e) = sock.send_to(&format_announce(port, chunk, &cookie), dest).await {
                        tracing::debug!("LSD announce: {e}");
                    }
                }
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let Some(a) = parse_announce(&buf[..n]) else { continue };
                if a.cookie.as_deref() == Some(cookie.as_str()) {
                    continue;
                }
                let ip: IpAddr = from.ip();
                let now = Instant::now();
                let mut s = swarms.lock().unwrap_or_else(|p| p.into_inner());
                for ih in a.infohashes {
                    if holdings.holds(&ih).is_some() {
                        tracing::debug!(ih = %ih, "LSD peer announced");
                        s.upsert(ih, SocketAddr::new(ip, a.port), false, false, now);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_roundtrip() {
        let d = format_announce(6881, &[InfoHash([0xab; 20]), InfoHash([1; 20])], "c1");
        let text = String::from_utf8(d.clone()).unwrap();
        assert!(text.starts_with("BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: abab"));
        assert!(text.ends_with("cookie: c1\r\n\r\n\r\n"));
        let a = parse_announce(&d).unwrap();
        assert_eq!(
            a,
            LsdAnnounce {
                port: 6881,
                infohashes: vec![InfoHash([0xab; 20]), InfoHash([1; 20])],
                cookie: Some("c1".into())
            }
        );
    }

    #[test]
    fn junk_is_ignored() {
        assert_eq!(parse_announce(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_announce(b"BT-SEARCH * HTTP/1.1\r\nInfohash: 00\r\n\r\n"), None, "no port");
        assert_eq!(parse_announce(&[0xff, 0xfe]), None);
        let a = parse_announce(b"BT-SEARCH * HTTP/1.1\r\nport: 5\r\ninfohash: zz\r\n\r\n").unwrap();
        assert_eq!(a.port, 5);
        assert!(a.infohashes.is_empty());
    }
}
