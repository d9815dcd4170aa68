//! uTP (BEP 29) on the peer port. [`listen`] accepts uTP connections with librqbit-utp (rqbit's
//! maintained implementation) and runs each through a local socket pair to the same peer task
//! as a TCP connection, under the same caps and bans: clients that try uTP first (transmission,
//! qBittorrent, libtorrent with its defaults) are served over it. With uTP off, [`run`] refuses
//! uTP quickly instead: it answers every SYN with an ST_RESET for that connection id, so the
//! client sees "connection refused" at once and reconnects over TCP (the reply is no larger
//! than the SYN: no amplification).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::net::{UdpSocket, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::net::{spawn_peer, Shared};
use crate::proto::PeerProto;

/// Accepts uTP connections on `addr` (UDP) until `shutdown`. Failure to bind is logged, not
/// fatal (the box still speaks TCP).
pub(crate) async fn listen(addr: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    let sock = match librqbit_utp::UtpSocketUdp::new_udp(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("uTP disabled: cannot bind UDP {addr}: {e}");
            return;
        }
    };
    let _ = shared.utp.set(sock.clone());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = sock.accept() => a,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("uTP accept stopped: {e}");
                return;
            }
        };
        let ip = crate::addr::canonical_ip(stream.remote_addr().ip());
        let (id, rx) = match shared.admit(ip) {
            Ok(admitted) => admitted,
            Err(why) => {
                shared.stats.refused(why);
                continue;
            }
        };
        let ours = match bridged(stream, &shared.stats, shutdown.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("uTP connection dropped: no local socket pair: {e}");
                continue;
            }
        };
        let core = PeerProto::new(shared.proto.clone(), ip, shared.our_id, Instant::now());
        spawn_peer(shared.clone(), id, ours, ip, rx, core, None, shutdown.clone());
    }
}

/// A uTP connection as the local end of a socket pair the peer task reads and writes like TCP;
/// a bridge task copies between the two. Counted in `peers_utp`.
pub(crate) fn bridged(
    stream: librqbit_utp::UtpStream,
    stats: &crate::stats::Stats,
    shutdown: CancellationToken,
) -> std::io::Result<UnixStream> {
    let (ours, theirs) = UnixStream::pair()?;
    stats.peers_utp.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(bridge(stream, theirs, shutdown));
    Ok(ours)
}

/// Copies between a uTP connection and the peer task's end of its socket pair until either
/// side ends (then both close).
async fn bridge(utp: librqbit_utp::UtpStream, local: UnixStream, shutdown: CancellationToken) {
    let (mut utp_r, mut utp_w) = tokio::io::split(utp);
    let (mut local_r, mut local_w) = local.into_split();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::io::copy(&mut utp_r, &mut local_w) => {}
        _ = tokio::io::copy(&mut local_r, &mut utp_w) => {}
    }
}

const HEADER_LEN: usize = 20;
const VERSION: u8 = 1;
const ST_RESET: u8 = 3;
const ST_SYN: u8 = 4;

/// The ST_RESET answering a uTP SYN packet, or None if `pkt` is not a uTP v1 SYN.
pub fn reset_for_syn(pkt: &[u8], now_us: u32) -> Option<[u8; HEADER_LEN]> {
    if pkt.len() < HEADER_LEN || pkt[0] != (ST_SYN << 4 | VERSION) {
        return None;
    }
    let mut r = [0u8; HEADER_LEN];
    r[0] = ST_RESET << 4 | VERSION;
    // connection_id: the SYN's id (the initiator's receive id, which it matches resets against).
    r[2..4].copy_from_slice(&pkt[2..4]);
    r[4..8].copy_from_slice(&now_us.to_be_bytes());
    // ack_nr = the SYN's seq_nr
    r[18..20].copy_from_slice(&pkt[16..18]);
    Some(r)
}

/// Answers uTP SYNs on `addr` (UDP) until `shutdown`. Failure to bind is logged, not fatal.
pub async fn run(addr: SocketAddr, shutdown: CancellationToken) {
    let sock = match UdpSocket::bind(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("uTP refusal disabled: cannot bind UDP {addr}: {e}");
            return;
        }
    };
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u32).unwrap_or(0);
        if let Some(rst) = reset_for_syn(&buf[..n], now_us) {
            tracing::debug!("uTP SYN refused (TCP only)");
            let _ = sock.send_to(&rst, from).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_gets_a_reset_with_its_connection_id_and_seq() {
        // A SYN as transmission 3.00 sent it (type 4, version 1, extension 2).
        let syn = b"A\x02\x1e\xe5\xebIp\xc4\x00\x00\x00\x00\x00\x04\x00\x00E\x8e\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00";
        let r = reset_for_syn(syn, 7).unwrap();
        assert_eq!(r[0], 0x31);
        assert_eq!(&r[2..4], &[0x1e, 0xe5]);
        assert_eq!(&r[4..8], &7u32.to_be_bytes());
        assert_eq!(&r[18..20], &[0x45, 0x8e]);
    }

    #[test]
    fn other_packets_are_ignored() {
        assert!(reset_for_syn(b"short", 0).is_none());
        let mut data = [0u8; 20];
        data[0] = 0x01; // ST_DATA
        assert!(reset_for_syn(&data, 0).is_none());
        assert!(reset_for_syn(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe", 0).is_none(), "DHT");
    }
}
