//! Store counters for status and metrics (atomics, bumped where the store acts): pieces and
//! bytes stored, releases evicted to make room and the bytes that freed.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct StoreStats {
    /// Pieces verified and made durable by puts (since the store was opened).
    pub pieces_stored: AtomicU64,
    pub bytes_stored: AtomicU64,
    /// Releases removed by the capacity policy to make room.
    pub evictions: AtomicU64,
    pub evicted_bytes: AtomicU64,
}

impl StoreStats {
    pub(crate) fn stored(&self, pieces: u64, bytes: u64) {
        self.pieces_stored.fetch_add(pieces, Ordering::Relaxed);
        self.bytes_stored.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn evicted(&self, bytes: u64) {
        self.evictions.fetch_add(1, Ordering::Relaxed);
        self.evicted_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}
