//! [`Backoff`]: the delays between attempts of a reconnect or retry loop: start small,
//! double after every failure up to a cap, start over after a success.

use std::time::Duration;

/// Exponential retry delays (no jitter: each box retries its own origins, not a shared one).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// First delay `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Backoff { initial, max, next: initial }
    }

    /// The delay to wait now; the one after it doubles (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// The delay [`Backoff::next_delay`] would return.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(250), ms(1500));
        let seen: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(seen, [ms(250), ms(500), ms(1000), ms(1500), ms(1500)]);
        b.reset();
        assert_eq!(b.peek(), ms(250));
        assert_eq!(Backoff::new(ms(10), ms(1)).next_delay(), ms(10), "a cap below the start is the start");
    }
}
