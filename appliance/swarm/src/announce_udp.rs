//! The box as a UDP tracker client (BEP 15): the connect and announce messages, encoded and
//! decoded by pure functions (the replies fuzzed in `tracker_reply`), and one announce over a
//! UDP socket ([`announce`]) with a bounded number of retransmissions. [`crate::announce::run`]
//! picks this for `udp://` trackers, the HTTP client for `http://` ones.

use std::net::SocketAddr;
use std::time::Duration;

use crate::announce::{AnnounceError, Announcing, TrackerReply, ANNOUNCE_TIMEOUT, MAX_INTERVAL, MIN_INTERVAL, NUMWANT};

/// BEP 15's magic connection id of a connect request.
const PROTOCOL_ID: u64 = 0x0417_2710_1980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;
/// Length of an announce request (BEP 15, IPv4 layout also used over IPv6).
pub const ANNOUNCE_LEN: usize = 98;
/// How long one request waits for its answer before it is sent again; at most
/// [`UDP_ATTEMPTS`] sends per message, all within [`ANNOUNCE_TIMEOUT`].
pub const UDP_RETRANSMIT: Duration = Duration::from_secs(4);
pub const UDP_ATTEMPTS: u32 = 3;
/// Largest datagram read: a reply with [`NUMWANT`] IPv6 peers fits with room to spare.
pub const MAX_UDP_REPLY: usize = 2048;

/// Host and port of a `udp://host:port[/...]` tracker URL (the port is required), or None.
pub fn udp_target(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("udp://")?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|&p| p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['@', ' ', '/']) {
        return None;
    }
    Some((host.to_owned(), port))
}

/// A connect request with transaction id `txid`.
pub fn connect_request(txid: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    b[12..].copy_from_slice(&txid.to_be_bytes());
    b
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Checks the action and transaction id of a reply. `Ok(None)`: another transaction's (ignore
/// it and keep waiting); an error reply is the tracker's refusal.
fn header(reply: &[u8], txid: u32, action: u32) -> Result<Option<()>, AnnounceError> {
    let (Some(got_action), Some(got_txid)) = (u32_at(reply, 0), u32_at(reply, 4)) else {
        return Err(AnnounceError::Shape);
    };
    if got_txid != txid {
        return Ok(None);
    }
    if got_action == ACTION_ERROR {
        let msg = String::from_utf8_lossy(&reply[8..]).chars().take(200).collect();
        return Err(AnnounceError::Failure(msg));
    }
    if got_action != action {
        return Err(AnnounceError::Shape);
    }
    Ok(Some(()))
}

/// The connection id of a connect reply to `txid`; `Ok(None)` for another transaction's.
pub fn parse_connect(reply: &[u8], txid: u32) -> Result<Option<u64>, AnnounceError> {
    if header(reply, txid, ACTION_CONNECT)?.is_none() {
        return Ok(None);
    }
    let id = reply.get(8..16).ok_or(AnnounceError::Shape)?;
    Ok(Some(u64::from_be_bytes(id.try_into().map_err(|_| AnnounceError::Shape)?)))
}

/// An announce request on connection `conn` (left = what the box misses; `event=started` on
/// the first announce; `key` identifies the box across address changes).
pub fn announce_request(conn: u64, txid: u32, key: u32, a: &Announcing) -> [u8; ANNOUNCE_LEN] {
    let mut b = [0u8; ANNOUNCE_LEN];
    b[..8].copy_from_slice(&conn.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    b[12..16].copy_from_slice(&txid.to_be_bytes());
    b[16..36].copy_from_slice(a.infohash.as_bytes());
    b[36..56].copy_from_slice(&a.peer_id);
    // downloaded (56..64) and uploaded (72..80) stay 0, as over HTTP
    b[64..72].copy_from_slice(&a.left.to_be_bytes());
    b[80..84].copy_from_slice(&(if a.started { 2u32 } else { 0 }).to_be_bytes());
    // ip (84..88) 0: the address the datagram comes from
    b[88..92].copy_from_slice(&key.to_be_bytes());
    b[92..96].copy_from_slice(&(NUMWANT as i32).to_be_bytes());
    b[96..98].copy_from_slice(&a.port.to_be_bytes());
    b
}

/// An announce reply to `txid`: its interval (kept within the announce bounds) and its peers
/// (6 bytes each, or 18 when the tracker was reached over IPv6); `Ok(None)` for another
/// transaction's.
pub fn parse_announce(reply: &[u8], txid: u32, v6: bool) -> Result<Option<TrackerReply>, AnnounceError> {
    if header(reply, txid, ACTION_ANNOUNCE)?.is_none() {
        return Ok(None);
    }
    let interval = u32_at(reply, 8).ok_or(AnnounceError::Shape)?;
    let peers_at = reply.get(20..).ok_or(AnnounceError::Shape)?;
    let mut peers: Vec<SocketAddr> =
        if v6 { crate::addr::compact_v6(peers_at).collect() } else { crate::addr::compact_v4(peers_at).collect() };
    peers.retain(crate::addr::dialable);
    peers.truncate(NUMWANT as usize);
    let interval = Duration::from_secs(interval as u64).clamp(MIN_INTERVAL, MAX_INTERVAL);
    Ok(Some(TrackerReply { peers, interval }))
}

/// Sends `request` and waits for the reply `parse` accepts, sending again after
/// [`UDP_RETRANSMIT`], at most [`UDP_ATTEMPTS`] times.
async fn exchange<T>(
    sock: &tokio::net::UdpSocket,
    request: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<T>, AnnounceError>,
) -> Result<T, AnnounceError> {
    let mut buf = vec![0u8; MAX_UDP_REPLY];
    for _ in 0..UDP_ATTEMPTS {
        sock.send(request).await.map_err(AnnounceError::Connect)?;
        let deadline = tokio::time::Instant::now() + UDP_RETRANSMIT;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(AnnounceError::Connect(e)),
                Ok(Ok(n)) => {
                    if let Some(v) = parse(&buf[..n])? {
                        return Ok(v);
                    }
                }
            }
        }
    }
    Err(AnnounceError::Timeout)
}

/// One announce to the UDP tracker at `host:port`: connect, then announce, within
/// [`ANNOUNCE_TIMEOUT`].
pub async fn announce(host: &str, port: u16, a: &Announcing) -> Result<TrackerReply, AnnounceError> {
    tokio::time::timeout(ANNOUNCE_TIMEOUT, announce_inner(host, port, a)).await.map_err(|_| AnnounceError::Timeout)?
}

async fn announce_inner(host: &str, port: u16, a: &Announcing) -> Result<TrackerReply, AnnounceError> {
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await
        .map_err(AnnounceError::Resolve)?
        .next()
        .ok_or_else(|| AnnounceError::Resolve(std::io::Error::other("no address")))?;
    let local: SocketAddr =
        if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().map_err(|_| AnnounceError::Shape)?;
    let sock = tokio::net::UdpSocket::bind(local).await.map_err(AnnounceError::Connect)?;
    sock.connect(addr).await.map_err(AnnounceError::Connect)?;
    let txid: u32 = rand::random();
    let conn = exchange(&sock, &connect_request(txid), |r| parse_connect(r, txid)).await?;
    let txid: u32 = rand::random();
    let key = u32::from_be_bytes([a.peer_id[16], a.peer_id[17], a.peer_id[18], a.peer_id[19]]);
    let v6 = addr.is_ipv6();
    exchange(&sock, &announce_request(conn, txid, key, a), |r| parse_announce(r, txid, v6)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use popseed_core::InfoHash;

    fn a() -> Announcing {
        Announcing {
            infohash: InfoHash([0xab; 20]),
            peer_id: *b"-PS0100-abcdefghijkl",
            port: 6881,
            left: 5,
            started: true,
        }
    }

    #[test]
    fn targets_need_a_host_and_a_port() {
        assert_eq!(udp_target("udp://tracker.example:1337/announce"), Some(("tracker.example".into(), 1337)));
        assert_eq!(udp_target("udp://[::1]:6969"), Some(("::1".into(), 6969)));
        for bad in ["udp://t", "udp://t:0", "udp://:80", "http://t:80", "udp://u@t:80", "udp://t:99999"] {
            assert_eq!(udp_target(bad), None, "{bad}");
        }
    }

    #[test]
    fn connect_and_announce_as_bep_15_lays_them_out() {
        let c = connect_request(0x0102_0304);
        assert_eq!(c, [0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4]);
        let mut reply = vec![0, 0, 0, 0, 1, 2, 3, 4];
        reply.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(parse_connect(&reply, 0x0102_0304).unwrap(), Some(7));
        assert_eq!(parse_connect(&reply, 9).unwrap(), None, "another transaction's reply");
        assert!(matches!(parse_connect(&reply[..12], 0x0102_0304), Err(AnnounceError::Shape)));
        let r = announce_request(7, 5, 0xdead_beef, &a());
        assert_eq!(&r[..8], &7u64.to_be_bytes());
        assert_eq!(&r[8..16], &[0, 0, 0, 1, 0, 0, 0, 5]);
        assert_eq!(&r[16..36], &[0xab; 20]);
        assert_eq!(&r[64..72], &5u64.to_be_bytes(), "left");
        assert_eq!(&r[80..84], &[0, 0, 0, 2], "started");
        assert_eq!(&r[92..98], &[0, 0, 0, 50, 0x1a, 0xe1], "numwant, port");
    }

    #[test]
    fn announce_replies_peers_interval_errors() {
        let mut reply = vec![0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        reply.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 0, 9]);
        let p = parse_announce(&reply, 5, false).unwrap().unwrap();
        assert_eq!(p.peers, vec!["10.0.0.1:6881".parse().unwrap()], "port 0 and a trailing byte dropped");
        assert_eq!(p.interval, MIN_INTERVAL, "10 s raised to the minimum");
        let err = [&[0, 0, 0, 3, 0, 0, 0, 5][..], b"unregistered torrent"].concat();
        assert!(
            matches!(parse_announce(&err, 5, false), Err(AnnounceError::Failure(m)) if m == "unregistered torrent")
        );
        assert!(matches!(parse_announce(&reply[..12], 5, false), Err(AnnounceError::Shape)));
        assert!(matches!(parse_announce(&[0, 0], 5, false), Err(AnnounceError::Shape)));
        assert_eq!(parse_announce(&reply, 6, false).unwrap(), None);
    }
}
