//! Reusable piece buffers for the origin's reads. A fresh 1 MiB allocation per piece costs a
//! zero-fill and a page fault per 4 KiB page (about a tenth of the origin's CPU in
//! `scripts/bench.sh fetch`); a buffer handed back when quinn has sent its bytes skips both.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Buffers kept for reuse, up to a byte budget.
pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    max_bytes: usize,
}

impl BufPool {
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(BufPool { free: Mutex::new(Vec::new()), max_bytes })
    }

    fn reuse(&self, capacity: usize) -> Option<Vec<u8>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.iter().rposition(|b| b.capacity() >= capacity).map(|i| free.swap_remove(i))
    }

    /// A buffer of exactly `len` bytes (old contents: the caller overwrites all of them).
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self.reuse(len).unwrap_or_default();
        // zero-fills only bytes the buffer never held
        buf.resize(len, 0);
        buf
    }

    /// An empty buffer with room for `capacity` bytes, to append to.
    pub fn take_empty(&self, capacity: usize) -> Vec<u8> {
        match self.reuse(capacity) {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// `buf` as `Bytes` that come back to the pool when the last clone is dropped.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled { buf, pool: self.clone() })
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let held: usize = free.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= self.max_bytes {
            free.push(buf);
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_every_clone_is_dropped() {
        let pool = BufPool::new(1 << 20);
        let mut b = pool.take(1000);
        b.fill(7);
        let ptr = b.as_ptr();
        let bytes = pool.freeze(b);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.held(), 0, "a clone is still alive");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(pool.held(), 1);
        // the same memory is handed out again, at the asked length
        let again = pool.take(600);
        assert_eq!((again.as_ptr(), again.len()), (ptr, 600));
        let grown = pool.take(2000);
        assert_eq!(grown.len(), 2000);
        drop(pool.freeze(again));
        let empty = pool.take_empty(500);
        assert_eq!((empty.as_ptr(), empty.len()), (ptr, 0));
        assert!(pool.take_empty(5000).capacity() >= 5000);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_budget() {
        let pool = BufPool::new(2500);
        let held: Vec<Bytes> = (0..4).map(|_| pool.freeze(pool.take(1000))).collect();
        drop(held);
        assert_eq!(pool.held(), 2);
    }
}
