//! Capacity policy: the byte budget, the free-space floor read with statvfs, and which release
//! to evict next (expired first, then least recently used; pinned never). Pure where it can be.

use std::path::Path;

use popseed_core::InfoHash;

use crate::error::{Result, StoreError};

/// Limits on what the store may hold.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Most bytes of present pieces the store may hold (None: no budget, only the floor).
    pub budget: Option<u64>,
    /// Free bytes that must remain on the filesystem after a write.
    pub min_free: u64,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity { budget: None, min_free: 256 << 20 }
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| StoreError::io(path, e.into()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// A release that might be evicted.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub infohash: InfoHash,
    pub pinned: bool,
    pub expires_at: Option<u64>,
    pub last_access: u64,
    pub bytes: u64,
}

/// The next release to evict, or None when nothing may go. Releases holding no bytes free
/// nothing and are skipped; `protect` (the release being written) is never chosen.
pub fn choose_victim(cands: &[Candidate], now: u64, protect: &InfoHash) -> Option<InfoHash> {
    let eligible = || cands.iter().filter(|c| !c.pinned && c.bytes > 0 && &c.infohash != protect);
    let expired =
        eligible().filter(|c| c.expires_at.is_some_and(|t| t <= now)).min_by_key(|c| (c.expires_at, c.last_access));
    expired.or_else(|| eligible().min_by_key(|c| c.last_access)).map(|c| c.infohash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u8, pinned: bool, expires_at: Option<u64>, last_access: u64, bytes: u64) -> Candidate {
        Candidate { infohash: InfoHash([id; 20]), pinned, expires_at, last_access, bytes }
    }

    #[test]
    fn eviction_order() {
        let cands = vec![
            c(1, false, None, 10, 100),     // least recently used
            c(2, false, Some(50), 90, 100), // expired
            c(3, true, Some(10), 0, 100),   // pinned, expired: never
            c(4, false, None, 5, 0),        // holds nothing
            c(5, false, Some(500), 1, 100), // not yet expired, oldest access
        ];
        assert_eq!(choose_victim(&cands, 100, &InfoHash([9; 20])), Some(InfoHash([2; 20])));
        assert_eq!(choose_victim(&cands, 10, &InfoHash([9; 20])), Some(InfoHash([5; 20])));
        assert_eq!(choose_victim(&cands[..1], 10, &InfoHash([1; 20])), None, "the written release is protected");
        assert_eq!(choose_victim(&[c(3, true, Some(1), 0, 9)], 100, &InfoHash([9; 20])), None);
    }
}
