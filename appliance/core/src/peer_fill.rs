//! The peer-fill port: the swarm's connections to BitTorrent peers that hold pieces of a release
//! the box is filling take their work from the fetcher's scheduler (one scheduler over origins,
//! web seeds and peers, so no piece is fetched twice) and report what became of it. The fetcher
//! implements [`PeerFill`]; the agent hands it to the swarm. The swarm verifies (through the
//! store's hash check) and stores what a peer sends before it reports a piece as stored.

use crate::{InfoHash, PieceIndex};

/// One BitTorrent connection as a source of the fill, unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerSourceId(pub u64);

/// Where the swarm's peer connections get their download work.
pub trait PeerFill: Send + Sync {
    /// Releases being filled that still miss pieces: the swarm connects to their peers.
    fn filling(&self) -> Vec<InfoHash>;
    /// Whether pieces of `release` are wanted (it is being filled and is not complete).
    fn wants(&self, release: &InfoHash) -> bool;
    /// Up to `max` missing pieces of `release` that the peer holds (`has`), most urgent first.
    /// They are in flight from `source` until [`PeerFill::stored`], [`PeerFill::give_back`],
    /// [`PeerFill::bad_piece`] or [`PeerFill::lost`].
    fn assign(
        &self,
        release: &InfoHash,
        source: PeerSourceId,
        has: &dyn Fn(PieceIndex) -> bool,
        max: usize,
    ) -> Vec<PieceIndex>;
    /// A piece from `source` passed its hash check and is stored (`bytes`: its length).
    fn stored(&self, release: &InfoHash, piece: PieceIndex, bytes: u64, source: PeerSourceId);
    /// A piece from `source` failed its hash check: it goes back to the queue, never to be
    /// asked of that source again (the swarm drops and bans the peer).
    fn bad_piece(&self, release: &InfoHash, piece: PieceIndex, source: PeerSourceId);
    /// Pieces `source` will not deliver (it choked us, timed out, or the store refused them):
    /// back to the queue for any source.
    fn give_back(&self, release: &InfoHash, pieces: &[PieceIndex], source: PeerSourceId);
    /// The connection ended: whatever it still had in flight goes back to the queue, and what
    /// it holds no longer counts.
    fn lost(&self, source: PeerSourceId);
    /// The peer holds `pieces` (its bitfield, a have): the uplink leaves planned pieces a venue
    /// peer holds to it.
    fn peer_holds(&self, release: &InfoHash, source: PeerSourceId, pieces: &[PieceIndex]);
    /// The popseed boxes of the venue connected for `release` (peer ids) besides this one
    /// (`me`): the uplink's work is split among them (rendezvous hashing), the rest comes over
    /// the LAN.
    fn siblings(&self, release: &InfoHash, me: [u8; 20], siblings: &[[u8; 20]]);
}

/// No fill (a store served on its own, `popseed seed`): the swarm downloads nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeerFill;

impl PeerFill for NoPeerFill {
    fn filling(&self) -> Vec<InfoHash> {
        Vec::new()
    }
    fn wants(&self, _: &InfoHash) -> bool {
        false
    }
    fn assign(&self, _: &InfoHash, _: PeerSourceId, _: &dyn Fn(PieceIndex) -> bool, _: usize) -> Vec<PieceIndex> {
        Vec::new()
    }
    fn stored(&self, _: &InfoHash, _: PieceIndex, _: u64, _: PeerSourceId) {}
    fn bad_piece(&self, _: &InfoHash, _: PieceIndex, _: PeerSourceId) {}
    fn give_back(&self, _: &InfoHash, _: &[PieceIndex], _: PeerSourceId) {}
    fn lost(&self, _: PeerSourceId) {}
    fn peer_holds(&self, _: &InfoHash, _: PeerSourceId, _: &[PieceIndex]) {}
    fn siblings(&self, _: &InfoHash, _: [u8; 20], _: &[[u8; 20]]) {}
}
