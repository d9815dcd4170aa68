//! The read-through port: pieces an attendee or a peer asks for that the store does not hold
//! yet become top-priority fetches. The fetcher implements [`ReadThrough`]; the agent hands it
//! to the portal and the swarm, which wait for the store's arrival events afterwards.

use crate::{InfoHash, PieceIndex};

/// Somewhere missing pieces can be asked for.
pub trait ReadThrough: Send + Sync {
    /// Asks for `pieces` of `release` ahead of everything else. False when nothing will fetch
    /// them (the caller refuses at once instead of waiting for pieces that will not come). With
    /// no pieces it only asks whether anything fetches the release.
    fn request(&self, release: &InfoHash, pieces: &[PieceIndex]) -> bool;
}

/// No fetcher (a store served on its own): every request is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReadThrough;

impl ReadThrough for NoReadThrough {
    fn request(&self, _: &InfoHash, _: &[PieceIndex]) -> bool {
        false
    }
}
