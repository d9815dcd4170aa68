//! Fairness: download slots per client address and in total. A slot is held by a guard for the
//! life of one download and released on drop (also when the client disappears mid-transfer).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerClient,
    Total,
}

#[derive(Debug)]
struct Inner {
    per_client: HashMap<IpAddr, usize>,
    total: usize,
}

/// Counts running downloads.
#[derive(Debug, Clone)]
pub struct Slots {
    max_per_client: usize,
    max_total: usize,
    inner: Arc<Mutex<Inner>>,
}

/// One running download; dropping it frees the slot.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Slots,
    addr: IpAddr,
}

impl Slots {
    pub fn new(max_per_client: usize, max_total: usize) -> Slots {
        Slots { max_per_client, max_total, inner: Arc::new(Mutex::new(Inner { per_client: HashMap::new(), total: 0 })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn acquire(&self, addr: IpAddr) -> Result<SlotGuard, Refused> {
        let mut g = self.lock();
        if g.total >= self.max_total {
            return Err(Refused::Total);
        }
        let n = g.per_client.entry(addr).or_insert(0);
        if *n >= self.max_per_client {
            return Err(Refused::PerClient);
        }
        *n += 1;
        g.total += 1;
        Ok(SlotGuard { slots: self.clone(), addr })
    }

    pub fn running(&self) -> usize {
        self.lock().total
    }

    pub fn clients(&self) -> usize {
        self.lock().per_client.len()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut g = self.slots.lock();
        g.total = g.total.saturating_sub(1);
        if let Some(n) = g.per_client.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                g.per_client.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_client_and_total_and_frees_on_drop() {
        let s = Slots::new(2, 3);
        let a = IpAddr::from([10, 0, 0, 2]);
        let b = IpAddr::from([10, 0, 0, 3]);
        let a1 = s.acquire(a).unwrap();
        let _a2 = s.acquire(a).unwrap();
        assert_eq!(s.acquire(a).unwrap_err(), Refused::PerClient);
        let _b1 = s.acquire(b).unwrap();
        assert_eq!(s.acquire(b).unwrap_err(), Refused::Total);
        drop(a1);
        assert_eq!(s.running(), 2);
        let _b2 = s.acquire(b).unwrap();
        assert_eq!(s.clients(), 2);
    }

    #[test]
    fn forgets_idle_clients() {
        let s = Slots::new(1, 10);
        for n in 0..100u8 {
            drop(s.acquire(IpAddr::from([10, 0, 1, n])).unwrap());
        }
        assert_eq!(s.clients(), 0);
        assert_eq!(s.running(), 0);
    }
}
