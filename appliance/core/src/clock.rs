//! Wall-clock time as unix seconds. Components that store or compare wall-clock times (ttl,
//! deadlines, last access, report times) take a [`Clock`] or call [`unix_now`]; tests use a
//! [`ManualClock`]. Durations between events use `std::time::Instant`, never this clock.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where wall-clock time comes from.
pub trait Clock: Send + Sync + Debug {
    /// Seconds since the unix epoch (0 when the clock is before it).
    fn unix_secs(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_secs(&self) -> u64 {
        unix_secs_of(SystemTime::now())
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(unix_secs: u64) -> Self {
        ManualClock(AtomicU64::new(unix_secs))
    }

    pub fn set(&self, unix_secs: u64) {
        self.0.store(unix_secs, Ordering::Relaxed);
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn unix_secs(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The system clock now, in unix seconds.
pub fn unix_now() -> u64 {
    SystemClock.unix_secs()
}

/// Unix seconds of a `SystemTime` (0 before the epoch).
pub fn unix_secs_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `2026-12-05T09:00:00Z` for unix seconds.
pub fn rfc3339(unix_secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.unix_secs(), 1_000);
        c.advance(Duration::from_secs(60));
        assert_eq!(c.unix_secs(), 1_060);
        c.set(5);
        assert_eq!(c.unix_secs(), 5);
    }

    #[test]
    fn system_clock_is_past_2024_and_formats() {
        assert!(unix_now() > 1_700_000_000);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(unix_secs_of(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
