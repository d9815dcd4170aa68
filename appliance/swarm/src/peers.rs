//! The listener's table of connected peers (pure; time passed in): the global and per-IP caps,
//! and which connection gives way when the global cap is reached.
//!
//! A connection that has not finished its BitTorrent handshake within
//! [`EVICT_UNATTACHED_AFTER`] is of no use yet and may never be (half-open connections,
//! slowloris handshakes): at the global cap, a new connection takes the place of the oldest
//! such one instead of being refused. So strangers holding connections open cannot lock
//! attendees out; they only churn among themselves. Peers that finished their handshake are
//! never evicted.
//!
//! An address one of whose connections was dropped for abuse (a flood, a malformed or lying
//! message: [`crate::proto::DropReason::is_abuse`]) is refused at accept for [`BAN_FIRST`],
//! doubled for each further abuse up to [`BAN_MAX`]: the box closes its reconnects without
//! reading a byte, instead of reading and judging thousands of messages each time. At most
//! [`MAX_BANNED`] addresses are remembered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a connection may go without a finished handshake before a new connection may take
/// its place at the global cap. Clients finish theirs in a few milliseconds, MSE included.
pub const EVICT_UNATTACHED_AFTER: Duration = Duration::from_secs(2);

/// How long an address is refused after its first connection dropped for abuse.
pub const BAN_FIRST: Duration = Duration::from_secs(10);
/// The longest ban; each abuse drop doubles the last one up to this.
pub const BAN_MAX: Duration = Duration::from_secs(600);
/// Most banned addresses remembered (about 100 bytes each); past it the ban ending soonest is
/// forgotten first.
pub const MAX_BANNED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Ban {
    until: Instant,
    /// The length of the last ban (the next one is twice as long).
    last: Duration,
}

#[derive(Debug)]
struct Entry<T> {
    ip: IpAddr,
    since: Instant,
    attached: bool,
    value: T,
}

/// Connected peers by connection id, each with a value of the shell's (its command channel).
#[derive(Debug)]
pub struct PeerTable<T> {
    max_peers: usize,
    max_per_ip: usize,
    peers: HashMap<u64, Entry<T>>,
    per_ip: HashMap<IpAddr, usize>,
    banned: HashMap<IpAddr, Ban>,
    next_id: u64,
}

/// A connection let in: its id, and the value of the connection that gave way for it, if any
/// (the shell tells that one to go).
#[derive(Debug)]
pub struct Admitted<T> {
    pub id: u64,
    pub evicted: Option<T>,
}

impl<T> PeerTable<T> {
    pub fn new(max_peers: usize, max_per_ip: usize) -> Self {
        PeerTable {
            max_peers: max_peers.max(1),
            max_per_ip: max_per_ip.max(1),
            peers: HashMap::new(),
            per_ip: HashMap::new(),
            banned: HashMap::new(),
            next_id: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Lets a new connection from `ip` in, or says why not (`banned`, `per_ip_cap`,
    /// `peer_cap`). At the global cap the oldest connection without a handshake for
    /// [`EVICT_UNATTACHED_AFTER`] gives way.
    pub fn admit(&mut self, ip: IpAddr, now: Instant, value: T) -> Result<Admitted<T>, &'static str> {
        if self.banned.get(&ip).is_some_and(|b| now < b.until) {
            return Err("banned");
        }
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Err("per_ip_cap");
        }
        let mut evicted = None;
        if self.peers.len() >= self.max_peers {
            let oldest = self
                .peers
                .iter()
                .filter(|(_, e)| !e.attached && now.saturating_duration_since(e.since) >= EVICT_UNATTACHED_AFTER)
                .min_by_key(|(id, e)| (e.since, **id))
                .map(|(id, _)| *id);
            match oldest.and_then(|id| self.remove(id)) {
                Some(v) => evicted = Some(v),
                None => return Err("peer_cap"),
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.peers.insert(id, Entry { ip, since: now, attached: false, value });
        *self.per_ip.entry(ip).or_default() += 1;
        Ok(Admitted { id, evicted })
    }

    /// The connection finished its handshake: it is never evicted.
    pub fn attached(&mut self, id: u64) {
        if let Some(e) = self.peers.get_mut(&id) {
            e.attached = true;
        }
    }

    /// Forgets a connection (it ended, or gave way); its value, if it was still here.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let e = self.peers.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&e.ip);
            }
        }
        Some(e.value)
    }

    pub fn get(&self, id: u64) -> Option<&T> {
        self.peers.get(&id).map(|e| &e.value)
    }

    /// A connection from `ip` was dropped for abuse: refuse the address for [`BAN_FIRST`], or
    /// twice its last ban (up to [`BAN_MAX`]) if it was banned within the last [`BAN_MAX`].
    /// Returns how long.
    pub fn ban(&mut self, ip: IpAddr, now: Instant) -> Duration {
        let length = match self.banned.get(&ip) {
            Some(b) if now.saturating_duration_since(b.until) < BAN_MAX => (b.last * 2).min(BAN_MAX),
            _ => BAN_FIRST,
        };
        if !self.banned.contains_key(&ip) && self.banned.len() >= MAX_BANNED {
            self.banned.retain(|_, b| now.saturating_duration_since(b.until) < BAN_MAX);
            if self.banned.len() >= MAX_BANNED {
                if let Some(soonest) = self.banned.iter().min_by_key(|(_, b)| b.until).map(|(ip, _)| *ip) {
                    self.banned.remove(&soonest);
                }
            }
        }
        self.banned.insert(ip, Ban { until: now + length, last: length });
        length
    }

    /// Addresses remembered as banned (some of them perhaps expired).
    pub fn banned_len(&self) -> usize {
        self.banned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn caps_per_ip_and_overall() {
        let t = Instant::now();
        let mut p = PeerTable::new(4, 2);
        let a = p.admit(ip(1), t, "a1").unwrap().id;
        p.admit(ip(1), t, "a2").unwrap();
        assert_eq!(p.admit(ip(1), t, "a3").unwrap_err(), "per_ip_cap");
        p.remove(a);
        p.admit(ip(1), t, "a3").unwrap();
        for (id, n) in [(2, "b"), (3, "c")] {
            let got = p.admit(ip(id), t, n).unwrap();
            p.attached(got.id);
        }
        assert_eq!(p.len(), 4);
        // Everyone is attached or younger than the grace period: refused.
        assert_eq!(p.admit(ip(9), t + EVICT_UNATTACHED_AFTER / 2, "x").unwrap_err(), "peer_cap");
    }

    #[test]
    fn at_the_global_cap_the_oldest_connection_without_handshake_gives_way() {
        let t = Instant::now();
        let mut p = PeerTable::new(3, 2);
        let good = p.admit(ip(1), t, "good").unwrap().id;
        p.attached(good);
        p.admit(ip(66), t + Duration::from_millis(1), "half-open 1").unwrap();
        p.admit(ip(66), t + Duration::from_millis(2), "half-open 2").unwrap();
        // Too young to be evicted.
        assert_eq!(p.admit(ip(2), t + Duration::from_secs(1), "new").unwrap_err(), "peer_cap");
        let later = t + EVICT_UNATTACHED_AFTER + Duration::from_millis(1);
        let got = p.admit(ip(2), later, "new").unwrap();
        let new = got.id;
        assert_eq!(got.evicted, Some("half-open 1"), "the oldest unattached one");
        assert_eq!(p.len(), 3);
        assert_eq!(p.get(good), Some(&"good"), "an attached peer is never evicted");
        let got = p.admit(ip(3), later + Duration::from_millis(2), "newer").unwrap();
        assert_eq!(got.evicted, Some("half-open 2"));
        // Now only `good` (attached) and two young connections: refused again.
        assert_eq!(p.admit(ip(4), later + Duration::from_millis(3), "x").unwrap_err(), "peer_cap");
        // The evicted ones no longer count against their address's cap (2).
        p.remove(new);
        p.admit(ip(66), later, "again").unwrap();
        p.admit(ip(66), later + Duration::from_secs(9), "again").unwrap();
    }

    #[test]
    fn an_abusive_address_is_refused_for_a_doubling_time() {
        let t = Instant::now();
        let mut p = PeerTable::new(10, 10);
        let a = p.admit(ip(6), t, "abuser").unwrap().id;
        p.remove(a);
        assert_eq!(p.ban(ip(6), t), BAN_FIRST);
        assert_eq!(p.admit(ip(6), t + BAN_FIRST - Duration::from_millis(1), "x").unwrap_err(), "banned");
        assert!(p.admit(ip(7), t, "another address").is_ok());
        let back = t + BAN_FIRST;
        assert!(p.admit(ip(6), back, "after the ban").is_ok());
        // Abusing again soon after: twice as long, then capped.
        assert_eq!(p.ban(ip(6), back), BAN_FIRST * 2);
        assert_eq!(p.admit(ip(6), back + BAN_FIRST, "x").unwrap_err(), "banned");
        let mut at = back;
        for _ in 0..20 {
            at += BAN_FIRST;
            p.ban(ip(6), at);
        }
        assert_eq!(p.ban(ip(6), at), BAN_MAX);
        // Quiet for BAN_MAX after the last ban ended: starts over.
        let quiet = at + BAN_MAX + BAN_MAX;
        assert_eq!(p.ban(ip(6), quiet), BAN_FIRST);
    }

    #[test]
    fn banned_addresses_are_bounded() {
        let t = Instant::now();
        let mut p: PeerTable<()> = PeerTable::new(10, 10);
        for n in 0..MAX_BANNED as u32 + 10 {
            p.ban(IpAddr::from((0x0a00_0000 + n).to_be_bytes()), t + Duration::from_millis(n.into()));
        }
        assert_eq!(p.banned_len(), MAX_BANNED);
        // The bans ending soonest were forgotten; the newest is kept.
        let newest = IpAddr::from((0x0a00_0000 + MAX_BANNED as u32 + 9).to_be_bytes());
        assert_eq!(p.admit(newest, t, ()).unwrap_err(), "banned");
        assert!(p.admit(IpAddr::from(0x0a00_0000u32.to_be_bytes()), t, ()).is_ok());
    }

    #[test]
    fn a_refused_address_evicts_nobody() {
        let t = Instant::now();
        let mut p = PeerTable::new(2, 1);
        p.admit(ip(1), t, "a").unwrap();
        p.admit(ip(2), t, "b").unwrap();
        let late = t + Duration::from_secs(60);
        assert_eq!(p.admit(ip(1), late, "a again").unwrap_err(), "per_ip_cap");
        assert_eq!(p.len(), 2);
        assert_eq!(p.admit(ip(3), late, "c").unwrap().evicted, Some("a"));
    }
}
