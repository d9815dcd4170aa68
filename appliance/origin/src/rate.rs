//! A token-bucket byte-rate limiter shared by the tasks it caps (an origin connection's streams,
//! or every origin of one fill).

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `bytes_per_sec` sustained, bursts up to a quarter second's worth (at least 64 KiB).
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 4.0).max(65536.0);
        RateLimiter { rate, burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// How long the caller must wait before sending `n` bytes (the bytes are debited now).
    pub fn debit(&self, n: usize) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *st;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst) - n as f64;
        *st = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
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
    fn debits_beyond_the_burst_wait() {
        let r = RateLimiter::new(1 << 20);
        assert_eq!(r.debit(200_000), Duration::ZERO); // within the 256 KiB burst
        let w = r.debit(1 << 20);
        assert!(w > Duration::from_millis(700) && w < Duration::from_millis(1100), "{w:?}");
    }
}
