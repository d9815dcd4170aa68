//! Rate caps: [`TokenBucket`] is the arithmetic (time passed in, unit-tested without sleeping);
//! [`RateLimiter`] shares one bucket between tasks and sleeps them. Every rate cap in the
//! product (upload caps, the fill's rate cap, an origin's send cap, DNS queries per client) is
//! one of these.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, at most `burst` held. A rate of 0 is unlimited.
/// Tokens may be bytes, messages or queries.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Starts full.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(0.0);
        TokenBucket { rate: rate.max(0.0), burst, tokens: burst, last: now }
    }

    pub fn unlimited(&self) -> bool {
        self.rate == 0.0
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// Tokens held at `now`.
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// True when the bucket would be full at `now` (it holds no state worth keeping).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.rate >= self.burst
    }

    /// Takes `n` tokens if the bucket holds them.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// How long until `n` tokens (at most a full bucket) are held; zero: now. Takes nothing.
    pub fn wait_for(&mut self, n: f64, now: Instant) -> Duration {
        if self.unlimited() {
            return Duration::ZERO;
        }
        self.refill(now);
        let n = n.min(self.burst);
        if self.tokens >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - self.tokens) / self.rate)
        }
    }

    /// Takes `n` tokens now, going into debt if needed, and returns how long until the debt
    /// is paid (zero when there was none).
    pub fn debit(&mut self, n: f64, now: Instant) -> Duration {
        if self.unlimited() {
            return Duration::ZERO;
        }
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A token bucket per key (a client address, say), remembering at most `max_keys` keys: when
/// full, keys whose bucket has refilled are forgotten first (they carry no state worth keeping),
/// then everything. DNS queries per client and setup/login attempts per client are these.
#[derive(Debug)]
pub struct PerKey<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: std::collections::HashMap<K, TokenBucket>,
}

impl<K: std::hash::Hash + Eq> PerKey<K> {
    /// `rate` tokens per second (at least a millionth), `burst` held (at least one), per key.
    pub fn new(rate: f64, burst: f64, max_keys: usize) -> Self {
        PerKey { rate: rate.max(1e-6), burst: burst.max(1.0), max_keys: max_keys.max(1), buckets: Default::default() }
    }

    /// Takes one token for `key`; false when it has none left.
    pub fn allow(&mut self, key: K, now: Instant) -> bool {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= self.max_keys {
                self.buckets.clear();
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.entry(key).or_insert_with(|| TokenBucket::new(rate, burst, now)).try_take(1.0, now)
    }

    /// Whether `key` holds a token now (takes nothing).
    pub fn has_token(&mut self, key: &K, now: Instant) -> bool {
        self.buckets.get_mut(key).is_none_or(|b| b.unlimited() || b.available(now) >= 1.0)
    }

    /// Keys remembered now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// A byte-rate cap shared by the tasks it caps (an origin's streams, every source of a fill).
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Mutex<TokenBucket>,
}

/// Smallest burst a [`RateLimiter`] allows, so one piece block never waits on itself.
pub const MIN_BURST_BYTES: f64 = 64.0 * 1024.0;

impl RateLimiter {
    /// `bytes_per_sec` sustained (at least 1), bursts up to a quarter second's worth (at least
    /// [`MIN_BURST_BYTES`]).
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        RateLimiter { bucket: Mutex::new(TokenBucket::new(rate, (rate / 4.0).max(MIN_BURST_BYTES), Instant::now())) }
    }

    /// How long the caller must wait before sending `n` bytes (the bytes are debited now).
    pub fn debit(&self, n: usize) -> Duration {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner()).debit(n as f64, Instant::now())
    }

    /// Debits `n` bytes and sleeps until they are within the rate.
    pub async fn acquire(&self, n: usize) {
        let wait = self.debit(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let t = Instant::now();
        let mut b = TokenBucket::new(0.0, 0.0, t);
        assert!(b.unlimited());
        assert_eq!(b.debit((1u64 << 40) as f64, t), Duration::ZERO);
        assert_eq!(b.wait_for((1u64 << 30) as f64, t), Duration::ZERO);
        assert!(b.try_take(1e12, t));
    }

    #[test]
    fn rate_is_enforced_over_time() {
        let t = Instant::now();
        let mut b = TokenBucket::new(1_000_000.0, 131_072.0, t); // 1 MB/s, burst 128 KiB
        let (mut sent, mut now) = (0u64, t);
        // 10 s of a sender that sends 16 KiB blocks whenever allowed.
        while now < t + Duration::from_secs(10) {
            let w = b.wait_for(16384.0, now);
            if w.is_zero() {
                b.debit(16384.0, now);
                sent += 16384;
            } else {
                now += w;
            }
        }
        assert!(sent <= 10_000_000 + 131_072 + 16384, "sent {sent}");
        assert!(sent >= 9_800_000, "sent {sent}");
    }

    #[test]
    fn try_take_refills_and_is_capped_by_the_burst() {
        let t = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t);
        assert!(b.try_take(1.0, t) && b.try_take(1.0, t) && b.try_take(1.0, t));
        assert!(!b.try_take(1.0, t), "burst spent");
        assert!(!b.is_full(t));
        assert!(b.try_take(1.0, t + Duration::from_millis(100)), "one token back after 100 ms");
        assert!(b.is_full(t + Duration::from_secs(60)));
        assert!(b.available(t + Duration::from_secs(60)) <= 3.0, "never more than the burst");
    }

    #[test]
    fn time_going_backwards_is_ignored() {
        let t = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(10.0, 1.0, t);
        assert!(b.try_take(1.0, t));
        assert!(!b.try_take(1.0, t - Duration::from_secs(5)));
        assert!(b.try_take(1.0, t + Duration::from_millis(100)));
    }

    #[test]
    fn per_key_refills_and_is_bounded() {
        let mut rl = PerKey::new(10.0, 5.0, 3);
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| rl.allow("a", t0)).count();
        assert_eq!(allowed, 5, "burst");
        assert!(!rl.allow("a", t0 + Duration::from_millis(50)));
        assert!(rl.allow("a", t0 + Duration::from_millis(200)), "refilled");
        assert!(rl.allow("b", t0), "another key has its own bucket");
        for n in 0..100u32 {
            let mut k = PerKey::new(10.0, 5.0, 3);
            k.allow(n, t0);
            rl.allow(if n % 2 == 0 { "c" } else { "d" }, t0 + Duration::from_secs(1));
        }
        assert!(rl.tracked() <= 3);
    }

    #[test]
    fn debit_beyond_the_burst_waits() {
        let r = RateLimiter::new(1 << 20);
        assert_eq!(r.debit(200_000), Duration::ZERO); // within the 256 KiB burst
        let w = r.debit(1 << 20);
        assert!(w > Duration::from_millis(700) && w < Duration::from_millis(1100), "{w:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_sleeps_off_the_debt() {
        let r = RateLimiter::new(1 << 20);
        let t0 = tokio::time::Instant::now();
        r.acquire(256 << 10).await; // the burst
        r.acquire(1 << 20).await; // one more second's worth
        assert!(t0.elapsed() >= Duration::from_millis(900), "{:?}", t0.elapsed());
    }
}
