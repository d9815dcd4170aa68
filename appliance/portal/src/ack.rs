//! The acknowledge state: which client addresses pressed "Continue" and until when. Bounded
//! (the oldest acknowledgement is forgotten first when full) and time-injected for tests.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Acknowledged client addresses with their expiry. All methods take the current time.
#[derive(Debug)]
pub struct AckTable {
    expiry: Duration,
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    until: HashMap<IpAddr, (Instant, u64)>,
    /// (sequence of the acknowledgement) -> address, oldest first, for eviction.
    order: BTreeMap<u64, IpAddr>,
    seq: u64,
}

impl AckTable {
    pub fn new(expiry: Duration, max: usize) -> AckTable {
        AckTable { expiry, max: max.max(1), inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `addr` acknowledged at `now` (renews an earlier acknowledgement).
    pub fn acknowledge(&self, addr: IpAddr, now: Instant) {
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some((_, old)) = inner.until.remove(&addr) {
            inner.order.remove(&old);
        }
        if inner.until.len() >= self.max {
            Self::purge(inner, now);
        }
        while inner.until.len() >= self.max {
            let Some((_, oldest)) = inner.order.pop_first() else { break };
            inner.until.remove(&oldest);
        }
        inner.seq += 1;
        let seq = inner.seq;
        inner.until.insert(addr, (now + self.expiry, seq));
        inner.order.insert(seq, addr);
    }

    /// Whether `addr` is acknowledged at `now`.
    pub fn is_acknowledged(&self, addr: IpAddr, now: Instant) -> bool {
        let mut g = self.lock();
        match g.until.get(&addr).copied() {
            Some((until, _)) if now < until => true,
            Some((_, seq)) => {
                g.until.remove(&addr);
                g.order.remove(&seq);
                false
            }
            None => false,
        }
    }

    /// Forgets `addr` (e.g. a "show the portal again" action).
    pub fn forget(&self, addr: IpAddr) {
        let mut g = self.lock();
        if let Some((_, seq)) = g.until.remove(&addr) {
            g.order.remove(&seq);
        }
    }

    /// Number of remembered acknowledgements (expired ones may still count until purged).
    pub fn len(&self) -> usize {
        self.lock().until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired entries; returns how many remain.
    pub fn purge_expired(&self, now: Instant) -> usize {
        let mut g = self.lock();
        Self::purge(&mut g, now);
        g.until.len()
    }

    fn purge(inner: &mut Inner, now: Instant) {
        let Inner { until, order, .. } = inner;
        until.retain(|_, (t, seq)| {
            let keep = now < *t;
            if !keep {
                order.remove(seq);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 1, n])
    }

    #[test]
    fn acknowledged_until_expiry_then_not() {
        let t = AckTable::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        assert!(!t.is_acknowledged(ip(1), t0));
        t.acknowledge(ip(1), t0);
        assert!(t.is_acknowledged(ip(1), t0 + Duration::from_secs(59)));
        assert!(!t.is_acknowledged(ip(2), t0), "per client address");
        assert!(!t.is_acknowledged(ip(1), t0 + Duration::from_secs(60)));
        assert_eq!(t.len(), 0, "expired entry removed on lookup");
    }

    #[test]
    fn renewing_extends_and_forget_removes() {
        let t = AckTable::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        t.acknowledge(ip(1), t0);
        t.acknowledge(ip(1), t0 + Duration::from_secs(50));
        assert!(t.is_acknowledged(ip(1), t0 + Duration::from_secs(100)));
        assert_eq!(t.len(), 1);
        t.forget(ip(1));
        assert!(!t.is_acknowledged(ip(1), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn bounded_size_evicts_oldest_first() {
        let t = AckTable::new(Duration::from_secs(3600), 3);
        let t0 = Instant::now();
        for n in 1..=5 {
            t.acknowledge(ip(n), t0 + Duration::from_secs(n as u64));
        }
        assert_eq!(t.len(), 3);
        assert!(!t.is_acknowledged(ip(1), t0 + Duration::from_secs(10)));
        assert!(!t.is_acknowledged(ip(2), t0 + Duration::from_secs(10)));
        for n in 3..=5 {
            assert!(t.is_acknowledged(ip(n), t0 + Duration::from_secs(10)));
        }
    }

    #[test]
    fn full_table_drops_expired_before_live_entries() {
        let t = AckTable::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        t.acknowledge(ip(1), t0);
        t.acknowledge(ip(2), t0 + Duration::from_secs(8));
        // ip(1) expired at t0+10; adding ip(3) at t0+11 drops it, keeps ip(2).
        t.acknowledge(ip(3), t0 + Duration::from_secs(11));
        assert!(t.is_acknowledged(ip(2), t0 + Duration::from_secs(12)));
        assert!(t.is_acknowledged(ip(3), t0 + Duration::from_secs(12)));
        assert_eq!(t.purge_expired(t0 + Duration::from_secs(100)), 0);
    }
}
