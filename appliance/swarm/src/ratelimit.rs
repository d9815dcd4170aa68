//! Token buckets for upload rate caps (per peer and global). Time is passed in, so the
//! arithmetic is unit-tested without sleeping.

use std::time::{Duration, Instant};

/// A token bucket in bytes. `rate == 0` means unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` bytes per second, holding at most `burst` bytes (at least one 128 KiB block).
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        let burst = burst.max(128 * 1024);
        TokenBucket { rate, burst, tokens: burst as f64, last: now }
    }

    pub fn unlimited(&self) -> bool {
        self.rate == 0
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.burst as f64);
    }

    /// How long until `n` bytes may be taken (zero: now).
    pub fn wait_for(&mut self, n: u64, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        self.refill(now);
        let n = (n.min(self.burst)) as f64;
        if self.tokens >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - self.tokens) / self.rate as f64)
        }
    }

    /// Takes `n` bytes (may go negative by at most one block when callers race).
    pub fn take(&mut self, n: u64, now: Instant) {
        if self.rate == 0 {
            return;
        }
        self.refill(now);
        self.tokens -= n as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let t = Instant::now();
        let mut b = TokenBucket::new(0, 0, t);
        b.take(1 << 40, t);
        assert_eq!(b.wait_for(1 << 30, t), Duration::ZERO);
    }

    #[test]
    fn rate_is_enforced_over_time() {
        let t = Instant::now();
        let mut b = TokenBucket::new(1_000_000, 0, t); // 1 MB/s, burst 128 KiB
        let mut sent = 0u64;
        let mut now = t;
        // Simulate 10 s of a sender that sends 16 KiB blocks whenever allowed.
        while now < t + Duration::from_secs(10) {
            let w = b.wait_for(16384, now);
            if w.is_zero() {
                b.take(16384, now);
                sent += 16384;
            } else {
                now += w;
            }
        }
        let expected = 10_000_000u64 + 128 * 1024;
        assert!(sent <= expected + 16384, "sent {sent}");
        assert!(sent >= 9_800_000, "sent {sent}");
    }
}
