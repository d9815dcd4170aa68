//! Which piece to fetch next, from which origin: pure state, no I/O, unit-tested.
//!
//! Order within a release: on-demand pieces (a peer or the portal waits), then pieces put back
//! after a failure, then the release's plan (critical ranges first, in the publisher's order,
//! then every other piece in file order). On-demand pieces of any release go before planned
//! pieces of all releases; releases are otherwise served in the order they were added, or the
//! order set by [`Scheduler::set_order`] (the jobs' order: priority, then earliest deadline). A piece whose bytes failed the hash check from an
//! origin is not asked from that origin again; an origin with [`MAX_BAD_PIECES`] bad pieces is
//! dropped for the rest of the fill.
//!
//! Endgame: once every missing piece of a release is in flight, a peer with nothing else to do
//! gets a second copy of a piece in flight elsewhere (one extra source per piece); the first
//! copy stored wins and the other connection cancels its requests.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use popseed_core::{InfoHash, PeerSourceId};

/// How long uplink sources leave the pieces a sibling box owns to it after the siblings changed
/// or the last piece came from a peer: past it, this box fetches them itself (a sibling that is
/// stuck; one that left is out of the set at once).
pub const SIBLING_PATIENCE: Duration = Duration::from_secs(10);
/// Pieces of the plan a peer's next pieces are chosen among (the rarest of them first), so a
/// choice costs a bounded scan however large the release.
pub const RAREST_WINDOW: usize = 256;

/// Hash failures after which an origin is dropped.
pub const MAX_BAD_PIECES: u32 = 3;

/// Stream priorities sent to origins (higher is sent first). On-demand pieces get
/// [`PRIORITY_DEMAND`]; planned pieces get [`PRIORITY_CRITICAL`] (critical) or
/// [`PRIORITY_NORMAL`] minus their position in the plan, so an origin finishes streams in plan
/// order instead of interleaving them: the first critical piece lands after one piece's worth of
/// bytes, not after every stream's.
pub const PRIORITY_DEMAND: i32 = 1 << 30;
pub const PRIORITY_CRITICAL: i32 = 1 << 29;
pub const PRIORITY_NORMAL: i32 = 0;

fn planned_priority(critical: bool, plan_pos: usize) -> i32 {
    let pos = plan_pos.min(1 << 28) as i32;
    if critical {
        PRIORITY_CRITICAL - pos
    } else {
        PRIORITY_NORMAL - pos
    }
}

/// Where a piece comes from: an origin (its place in agent.toml), the web seeds, or one
/// BitTorrent connection of the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Origin(usize),
    WebSeed,
    Peer(PeerSourceId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Missing,
    InFlight(Source),
    Present,
}

struct ReleasePlan {
    infohash: InfoHash,
    pieces: Vec<Piece>,
    critical: HashSet<u32>,
    plan: Vec<u32>,
    cursor: usize,
    retry: VecDeque<u32>,
    demand: VecDeque<u32>,
    /// Origins whose bytes for this piece failed the hash check.
    bad_from: HashMap<u32, Vec<Source>>,
    missing: u32,
    critical_missing: u32,
    /// Per piece: connected peers that hold it (a piece a venue peer holds costs no uplink).
    avail: Vec<u16>,
    /// What each connected peer holds, to take it back out of `avail` when it leaves.
    held_by: HashMap<PeerSourceId, Vec<bool>>,
    /// This box and the other popseed boxes filling the release (peer ids): the uplink's work
    /// is split among them by rendezvous hashing ([`owner`]).
    me: [u8; 20],
    siblings: Vec<[u8; 20]>,
    /// Until when sibling-owned pieces are left to their owners.
    patient_until: Option<Instant>,
    /// Until when uplink sources take only on-demand pieces of the release (the swarm is still
    /// finding the venue's boxes and peers for it; see [`Scheduler::hold_for_venue`]).
    venue_hold_until: Option<Instant>,
    /// Endgame: the second source of a piece in flight (a peer), by piece.
    endgame: HashMap<u32, Source>,
    /// Endgame: pieces in flight when it began (rebuilt when used up), so a pick scans them
    /// instead of the whole release.
    endgame_pool: Vec<u32>,
}

impl ReleasePlan {
    /// Whether no missing piece waits for a source (every one is in flight): the plan is used
    /// up and the retry and on-demand queues hold nothing missing.
    fn all_in_flight(&self) -> bool {
        let waiting = |q: &VecDeque<u32>| q.iter().any(|&i| self.pieces[i as usize] == Piece::Missing);
        self.missing > 0
            && self.plan[self.cursor.min(self.plan.len())..].iter().all(|&i| self.pieces[i as usize] != Piece::Missing)
            && !waiting(&self.retry)
            && !waiting(&self.demand)
    }

    /// Endgame: up to `max` pieces in flight from another source that `peer` has and that have
    /// no second source yet.
    fn endgame_pick(&mut self, peer: Source, max: usize, has: &impl Fn(u32) -> bool, out: &mut Vec<u32>) {
        let in_flight_elsewhere = |r: &ReleasePlan, i: u32| {
            matches!(r.pieces[i as usize], Piece::InFlight(s) if s != peer)
                && !r.endgame.contains_key(&i)
                && !r.bad_from.get(&i).is_some_and(|b| b.contains(&peer))
        };
        let pieces = &self.pieces;
        self.endgame_pool.retain(|&i| matches!(pieces[i as usize], Piece::InFlight(_)));
        if self.endgame_pool.is_empty() {
            self.endgame_pool = (0..self.pieces.len() as u32)
                .filter(|&i| matches!(self.pieces[i as usize], Piece::InFlight(_)))
                .collect();
        }
        let mut k = 0;
        while k < self.endgame_pool.len() && out.len() < max {
            let i = self.endgame_pool[k];
            if in_flight_elsewhere(self, i) && has(i) {
                self.endgame.insert(i, peer);
                out.push(i);
            }
            k += 1;
        }
    }

    /// The piece's source will not deliver it: its endgame second source takes over, or it is
    /// missing again.
    fn lost_in_flight(&mut self, index: u32) {
        match self.endgame.remove(&index) {
            Some(second) => self.pieces[index as usize] = Piece::InFlight(second),
            None => {
                self.pieces[index as usize] = Piece::Missing;
                self.retry.push_back(index);
            }
        }
    }

    /// Whether an uplink source (origin, web seed) should leave planned piece `i` to the venue:
    /// a connected peer holds it, or a sibling box owns it and the siblings are making progress.
    fn leave_to_venue(&self, i: u32, now: Instant) -> bool {
        if self.avail.get(i as usize).is_some_and(|&a| a > 0) {
            return true;
        }
        if self.siblings.is_empty() || self.patient_until.is_none_or(|t| now >= t) {
            return false;
        }
        owner(&self.infohash, i, &self.me, &self.siblings) != self.me
    }
}

/// The box (peer id) that fetches piece `index` over its uplink among `me` and `siblings`:
/// rendezvous hashing (highest score wins), so every box computes the same split from the same
/// set, and a box leaving moves only its own share.
pub fn owner(ih: &InfoHash, index: u32, me: &[u8; 20], siblings: &[[u8; 20]]) -> [u8; 20] {
    let score = |id: &[u8; 20]| {
        // FNV-1a over (id, infohash, index), then a splitmix64 finalizer: fixed, so boxes of
        // different builds agree.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.iter().chain(ih.as_bytes()).chain(&index.to_be_bytes()) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    };
    let mut best = *me;
    let mut best_score = score(me);
    for s in siblings {
        let sc = score(s);
        if sc > best_score || (sc == best_score && s > &best) {
            best = *s;
            best_score = sc;
        }
    }
    best
}

/// One piece to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub infohash: InfoHash,
    pub index: u32,
    pub priority: i32,
}

#[derive(Debug, Default, Clone, Copy)]
struct OriginState {
    bad_pieces: u32,
    dropped: bool,
}

#[derive(Default)]
pub struct Scheduler {
    releases: Vec<ReleasePlan>,
    origins: HashMap<Source, OriginState>,
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a release to fill. `critical`: the critical pieces in order; `present(i)`: whether
    /// the store already holds piece i (those are never fetched again).
    pub fn add_release(
        &mut self,
        infohash: InfoHash,
        piece_count: u32,
        critical: &[u32],
        present: impl Fn(u32) -> bool,
    ) {
        if self.releases.iter().any(|r| r.infohash == infohash) {
            return;
        }
        let pieces: Vec<Piece> =
            (0..piece_count).map(|i| if present(i) { Piece::Present } else { Piece::Missing }).collect();
        let critical_set: HashSet<u32> = critical.iter().copied().filter(|&i| i < piece_count).collect();
        let mut plan: Vec<u32> = critical.iter().copied().filter(|&i| i < piece_count).collect();
        let mut seen: HashSet<u32> = HashSet::new();
        plan.retain(|i| seen.insert(*i));
        plan.extend((0..piece_count).filter(|i| !critical_set.contains(i)));
        let missing = pieces.iter().filter(|p| **p == Piece::Missing).count() as u32;
        let critical_missing = critical_set.iter().filter(|&&i| pieces[i as usize] == Piece::Missing).count() as u32;
        self.releases.push(ReleasePlan {
            infohash,
            pieces,
            critical: critical_set,
            plan,
            cursor: 0,
            retry: VecDeque::new(),
            demand: VecDeque::new(),
            bad_from: HashMap::new(),
            missing,
            critical_missing,
            avail: vec![0; piece_count as usize],
            held_by: HashMap::new(),
            me: [0; 20],
            siblings: Vec::new(),
            patient_until: None,
            venue_hold_until: None,
            endgame: HashMap::new(),
            endgame_pool: Vec::new(),
        });
    }

    /// Until `until`, uplink sources take only on-demand pieces of `ih`: a release just added
    /// (at start, or by a prewarm job that reached every box of the venue at once) waits for the
    /// swarm to find the venue's boxes and peers, so what they hold, or a sibling fetches, does
    /// not cross the uplink twice. Peers are served meanwhile.
    pub fn hold_for_venue(&mut self, ih: &InfoHash, until: Instant) {
        if let Some(r) = self.release(ih) {
            r.venue_hold_until = Some(until);
        }
    }

    pub fn remove_release(&mut self, infohash: &InfoHash) {
        self.releases.retain(|r| &r.infohash != infohash);
    }

    /// Serves releases in this order; releases not named keep their relative order after them.
    pub fn set_order(&mut self, order: &[InfoHash]) {
        let rank = |ih: &InfoHash| order.iter().position(|o| o == ih).unwrap_or(usize::MAX);
        // stable: unnamed releases keep the order they were added in
        self.releases.sort_by_key(|r| rank(&r.infohash));
    }

    fn release(&mut self, ih: &InfoHash) -> Option<&mut ReleasePlan> {
        self.releases.iter_mut().find(|r| &r.infohash == ih)
    }

    pub fn add_origin(&mut self, id: Source) {
        self.origins.entry(id).or_default();
    }

    pub fn is_dropped(&self, id: Source) -> bool {
        self.origins.get(&id).is_some_and(|o| o.dropped)
    }

    /// Puts requested pieces ahead of every planned piece (read-through), after the pieces
    /// asked for before them: a reader's read-ahead comes in order, so the piece under a reader
    /// is never behind the ones further on that its next ask adds. Unknown releases are ignored.
    pub fn demand(&mut self, ih: &InfoHash, indices: &[u32]) {
        if let Some(r) = self.release(ih) {
            for &i in indices {
                if r.pieces.get(i as usize) == Some(&Piece::Missing) && !r.demand.contains(&i) {
                    r.demand.push_back(i);
                }
            }
        }
    }

    /// Up to `max` pieces of one release for an uplink source (`origin`, or the web seeds),
    /// most urgent first. Planned pieces a venue peer holds, or a sibling box owns, are left to
    /// the venue ([`SIBLING_PATIENCE`]); on-demand pieces are not (someone is waiting).
    pub fn next_batch(&mut self, origin: Source, max: usize, now: Instant) -> Vec<Assignment> {
        if self.is_dropped(origin) {
            return Vec::new();
        }
        let mut out = Vec::new();
        // a release with on-demand pieces first: a waiting peer or download beats any plan
        let first = self.releases.iter().position(|r| {
            r.demand.iter().any(|&i| {
                r.pieces[i as usize] == Piece::Missing && !r.bad_from.get(&i).is_some_and(|b| b.contains(&origin))
            })
        });
        let n = self.releases.len();
        let order: Vec<usize> = first.into_iter().chain((0..n).filter(|&k| Some(k) != first)).collect();
        for k in order {
            let r = &mut self.releases[k];
            let usable = |r: &ReleasePlan, i: u32| {
                r.pieces[i as usize] == Piece::Missing && !r.bad_from.get(&i).is_some_and(|b| b.contains(&origin))
            };
            let planned = |r: &ReleasePlan, i: u32| usable(r, i) && !r.leave_to_venue(i, now);
            let take = |r: &mut ReleasePlan, i: u32, prio: i32, out: &mut Vec<Assignment>| {
                r.pieces[i as usize] = Piece::InFlight(origin);
                out.push(Assignment { infohash: r.infohash, index: i, priority: prio });
            };
            // on-demand
            let mut k = 0;
            while k < r.demand.len() && out.len() < max {
                let i = r.demand[k];
                if usable(r, i) {
                    r.demand.remove(k);
                    take(r, i, PRIORITY_DEMAND, &mut out);
                } else if r.pieces[i as usize] != Piece::Missing {
                    r.demand.remove(k);
                } else {
                    k += 1;
                }
            }
            if r.venue_hold_until.is_some_and(|t| now < t) {
                if out.is_empty() {
                    continue;
                }
                break;
            }
            // retries
            let mut k = 0;
            while k < r.retry.len() && out.len() < max {
                let i = r.retry[k];
                if planned(r, i) {
                    r.retry.remove(k);
                    // retries go before the rest of the plan
                    let p = planned_priority(r.critical.contains(&i), 0);
                    take(r, i, p, &mut out);
                } else if r.pieces[i as usize] != Piece::Missing {
                    r.retry.remove(k);
                } else {
                    k += 1;
                }
            }
            // the plan; while critical pieces are missing, only critical pieces go out (so they
            // arrive before any other), unless none is left that this origin may serve
            let barrier = r.critical_missing > 0
                && r.critical.iter().any(|&c| matches!(r.pieces[c as usize], Piece::InFlight(_)) || planned(r, c));
            while r.cursor < r.plan.len() && out.len() < max {
                let i = r.plan[r.cursor];
                if barrier && !r.critical.contains(&i) {
                    break;
                }
                let pos = r.cursor;
                r.cursor += 1;
                if planned(r, i) {
                    let p = planned_priority(r.critical.contains(&i), pos);
                    take(r, i, p, &mut out);
                } else if r.pieces[i as usize] == Piece::Missing {
                    // this origin must not serve it (or the venue will): leave it for the others
                    r.retry.push_back(i);
                }
            }
            if !out.is_empty() {
                break;
            }
        }
        out
    }

    /// Up to `max` missing pieces of `ih` for a BitTorrent peer that holds those `has` says, most
    /// urgent first: on-demand pieces, then retries, then missing critical pieces, then the
    /// plan. Unlike an origin, a peer holds only some pieces: those it lacks stay where they are
    /// for the other sources (the shared plan cursor only passes pieces no longer missing).
    pub fn next_for_peer(&mut self, ih: &InfoHash, peer: Source, max: usize, has: impl Fn(u32) -> bool) -> Vec<u32> {
        let Some(r) = self.releases.iter_mut().find(|r| &r.infohash == ih) else { return Vec::new() };
        let mut out = Vec::new();
        let usable = |r: &ReleasePlan, i: u32| {
            r.pieces.get(i as usize) == Some(&Piece::Missing)
                && has(i)
                && !r.bad_from.get(&i).is_some_and(|b| b.contains(&peer))
        };
        let take = |r: &mut ReleasePlan, i: u32, out: &mut Vec<u32>| {
            r.pieces[i as usize] = Piece::InFlight(peer);
            out.push(i);
        };
        for queue in [0, 1] {
            let mut k = 0;
            loop {
                let q = if queue == 0 { &r.demand } else { &r.retry };
                if k >= q.len() || out.len() >= max {
                    break;
                }
                let i = q[k];
                if usable(r, i) {
                    if queue == 0 {
                        r.demand.remove(k)
                    } else {
                        r.retry.remove(k)
                    };
                    take(r, i, &mut out);
                } else if r.pieces[i as usize] != Piece::Missing {
                    if queue == 0 {
                        r.demand.remove(k)
                    } else {
                        r.retry.remove(k)
                    };
                } else {
                    k += 1;
                }
            }
        }
        if out.len() < max && r.critical_missing > 0 {
            let mut critical: Vec<u32> = r.critical.iter().copied().filter(|&c| usable(r, c)).collect();
            critical.sort_unstable();
            for c in critical.into_iter().take(max - out.len()) {
                take(r, c, &mut out);
            }
        }
        while r.cursor < r.plan.len() && r.pieces[r.plan[r.cursor] as usize] != Piece::Missing {
            r.cursor += 1;
        }
        // the rest: the rarest among the first RAREST_WINDOW pieces of the plan the peer can
        // give, plan order between equals
        let mut window: Vec<(u16, usize, u32)> = Vec::new();
        let mut pos = r.cursor;
        while pos < r.plan.len() && window.len() < RAREST_WINDOW && out.len() < max {
            let i = r.plan[pos];
            if usable(r, i) {
                window.push((r.avail[i as usize], pos, i));
            }
            pos += 1;
        }
        window.sort_unstable();
        for (_, _, i) in window.into_iter().take(max - out.len()) {
            take(r, i, &mut out);
        }
        if out.is_empty() && r.all_in_flight() {
            r.endgame_pick(peer, max, &has, &mut out);
        }
        out
    }

    /// A connected peer holds `pieces` of `ih` (its bitfield, a have): counted once per peer.
    pub fn peer_holds(&mut self, ih: &InfoHash, peer: PeerSourceId, pieces: &[u32]) {
        let Some(r) = self.release(ih) else { return };
        let n = r.pieces.len();
        let held = r.held_by.entry(peer).or_insert_with(|| vec![false; n]);
        for &i in pieces {
            if let Some(h) = held.get_mut(i as usize) {
                if !*h {
                    *h = true;
                    r.avail[i as usize] = r.avail[i as usize].saturating_add(1);
                }
            }
        }
    }

    /// The peer went away: what it held no longer counts, and what it had in flight goes back.
    pub fn peer_gone(&mut self, peer: PeerSourceId) {
        self.origin_lost(Source::Peer(peer));
        for r in &mut self.releases {
            if let Some(held) = r.held_by.remove(&peer) {
                for (i, h) in held.into_iter().enumerate() {
                    if h {
                        r.avail[i] = r.avail[i].saturating_sub(1);
                    }
                }
            }
        }
    }

    /// This box (`me`) and the other popseed boxes filling `ih` (peer ids): uplink sources
    /// fetch only the pieces [`owner`] gives this box, for [`SIBLING_PATIENCE`] from now and
    /// from each piece a peer delivers.
    pub fn set_siblings(&mut self, ih: &InfoHash, me: [u8; 20], siblings: &[[u8; 20]], now: Instant) {
        let Some(r) = self.release(ih) else { return };
        r.me = me;
        r.siblings = siblings.iter().copied().filter(|s| *s != me).collect();
        r.siblings.sort_unstable();
        r.siblings.dedup();
        r.patient_until = Some(now + SIBLING_PATIENCE);
    }

    /// A piece came from a peer: the venue is making progress, keep leaving siblings their share.
    pub fn peer_progress(&mut self, ih: &InfoHash, now: Instant) {
        if let Some(r) = self.release(ih) {
            if !r.siblings.is_empty() {
                r.patient_until = Some(now + SIBLING_PATIENCE);
            }
        }
    }

    /// The piece is now present in the store. Returns true the first time (a copy stored twice,
    /// e.g. from an origin that was given up on and another, counts once).
    pub fn done(&mut self, ih: &InfoHash, index: u32) -> bool {
        if let Some(r) = self.release(ih) {
            if let Some(p) = r.pieces.get_mut(index as usize) {
                if *p != Piece::Present {
                    *p = Piece::Present;
                    r.endgame.remove(&index);
                    r.bad_from.remove(&index);
                    r.missing -= 1;
                    if r.critical.contains(&index) {
                        r.critical_missing -= 1;
                    }
                    return true;
                }
            }
        }
        false
    }

    /// The piece did not arrive (connection lost, origin lacks it): fetch it again, from anyone.
    pub fn failed(&mut self, ih: &InfoHash, index: u32) {
        if let Some(r) = self.release(ih) {
            if let Some(Piece::InFlight(_)) = r.pieces.get(index as usize) {
                r.lost_in_flight(index);
            }
        }
    }

    /// `source` will not deliver the piece after all: back to the queue (or to its endgame
    /// second source), unless another source has it in flight by now.
    pub fn give_back(&mut self, ih: &InfoHash, index: u32, source: Source) {
        let Some(r) = self.release(ih) else { return };
        if r.pieces.get(index as usize) == Some(&Piece::InFlight(source)) {
            r.lost_in_flight(index);
        } else if r.endgame.get(&index) == Some(&source) {
            r.endgame.remove(&index);
        }
    }

    /// Releases with pieces still missing.
    pub fn incomplete(&self) -> Vec<InfoHash> {
        self.releases.iter().filter(|r| r.missing > 0).map(|r| r.infohash).collect()
    }

    /// `origin` sent bytes for the piece that failed the hash check. Returns true when the
    /// origin has now sent too many bad pieces and is dropped.
    pub fn hash_failed(&mut self, ih: &InfoHash, index: u32, origin: Source) -> bool {
        if let Some(r) = self.release(ih) {
            r.bad_from.entry(index).or_default().push(origin);
            if r.endgame.get(&index) == Some(&origin) {
                // the second source lied: the first keeps the piece
                r.endgame.remove(&index);
            } else if let Some(Piece::InFlight(_)) = r.pieces.get(index as usize) {
                r.lost_in_flight(index);
            }
        }
        if matches!(origin, Source::Peer(_)) {
            return false; // the swarm drops and bans a peer at its first bad piece
        }
        let o = self.origins.entry(origin).or_default();
        o.bad_pieces += 1;
        if o.bad_pieces >= MAX_BAD_PIECES && !o.dropped {
            o.dropped = true;
            return true;
        }
        false
    }

    /// `origin` does not have the piece: ask the others.
    pub fn unavailable(&mut self, ih: &InfoHash, index: u32, origin: Source) {
        if let Some(r) = self.release(ih) {
            r.bad_from.entry(index).or_default().push(origin);
        }
        self.failed(ih, index);
    }

    /// Puts back every piece in flight from `origin` (it went away).
    pub fn origin_lost(&mut self, origin: Source) {
        for r in &mut self.releases {
            r.endgame.retain(|_, s| *s != origin);
            for i in 0..r.pieces.len() {
                if r.pieces[i] == Piece::InFlight(origin) {
                    r.lost_in_flight(i as u32);
                }
            }
        }
    }

    /// Pieces of a release not yet handed to any origin (the rest of the plan and the retries).
    pub fn unassigned(&self, ih: &InfoHash) -> usize {
        self.releases
            .iter()
            .find(|r| &r.infohash == ih)
            .map_or(0, |r| r.plan.len().saturating_sub(r.cursor) + r.retry.len())
    }

    pub fn missing(&self, ih: &InfoHash) -> Option<u32> {
        self.releases.iter().find(|r| &r.infohash == ih).map(|r| r.missing)
    }

    pub fn is_critical(&self, ih: &InfoHash, index: u32) -> bool {
        self.releases.iter().any(|r| &r.infohash == ih && r.critical.contains(&index))
    }

    /// True when nothing is missing in any release.
    pub fn all_done(&self) -> bool {
        self.releases.iter().all(|r| r.missing == 0)
    }

    /// True when some piece is missing and not in flight (work is waiting for an origin).
    pub fn has_work(&self) -> bool {
        self.releases.iter().any(|r| r.pieces.contains(&Piece::Missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IH: InfoHash = InfoHash([1; 20]);
    const O0: Source = Source::Origin(0);
    const O1: Source = Source::Origin(1);

    /// A fixed "now" for tests that do not move the clock.
    fn t0() -> Instant {
        static T: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T.get_or_init(Instant::now)
    }

    fn indices(a: &[Assignment]) -> Vec<u32> {
        a.iter().map(|a| a.index).collect()
    }

    #[test]
    fn critical_first_then_file_order_skipping_present() {
        let mut s = Scheduler::new();
        s.add_release(IH, 8, &[5, 6, 5], |i| i == 1 || i == 6);
        let b = s.next_batch(O0, 3, t0());
        assert_eq!(indices(&b), vec![5], "only critical pieces while one is missing");
        assert_eq!(b[0].priority, PRIORITY_CRITICAL);
        assert!(s.next_batch(O1, 3, t0()).is_empty(), "the critical piece is in flight: others wait");
        assert!(planned_priority(true, 5) > planned_priority(true, 6), "plan order is send order");
        assert!(planned_priority(true, 1 << 30) > planned_priority(false, 0));
        s.done(&IH, 5);
        let b = s.next_batch(O0, 2, t0());
        assert_eq!(indices(&b), vec![0, 2]);
        assert!(b[0].priority <= PRIORITY_NORMAL && b[0].priority > b[1].priority);
        assert_eq!(s.unassigned(&IH), 3);
        assert_eq!(indices(&s.next_batch(O1, 10, t0())), vec![3, 4, 7]);
        assert!(s.next_batch(O0, 10, t0()).is_empty(), "everything is in flight");
        assert_eq!((s.missing(&IH), s.unassigned(&IH)), (Some(5), 0));
        s.failed(&IH, 4);
        assert_eq!(s.unassigned(&IH), 1, "a failed piece is handed out again");
    }

    #[test]
    fn barrier_lifts_when_no_origin_may_serve_the_critical_piece() {
        let mut s = Scheduler::new();
        s.add_release(IH, 3, &[2], |_| false);
        assert_eq!(indices(&s.next_batch(O0, 1, t0())), vec![2]);
        s.unavailable(&IH, 2, O0);
        assert_eq!(indices(&s.next_batch(O0, 5, t0())), vec![0, 1], "origin 0 lacks the critical piece");
        assert_eq!(indices(&s.next_batch(O1, 5, t0())), vec![2]);
    }

    #[test]
    fn demand_jumps_the_queue_and_failures_retry() {
        let mut s = Scheduler::new();
        s.add_release(IH, 10, &[], |_| false);
        assert_eq!(indices(&s.next_batch(O0, 2, t0())), vec![0, 1]);
        s.demand(&IH, &[9, 8]);
        let b = s.next_batch(O0, 3, t0());
        assert_eq!(indices(&b), vec![9, 8, 2]);
        assert_eq!(b[0].priority, PRIORITY_DEMAND);
        s.failed(&IH, 0);
        assert_eq!(indices(&s.next_batch(O1, 1, t0())), vec![0]);
        s.done(&IH, 0);
        s.done(&IH, 0);
        assert_eq!(s.missing(&IH), Some(9));
    }

    #[test]
    fn bad_data_avoids_the_origin_then_drops_it() {
        let mut s = Scheduler::new();
        s.add_release(IH, 10, &[], |_| false);
        s.add_origin(O0);
        s.add_origin(O1);
        assert_eq!(indices(&s.next_batch(O0, 1, t0())), vec![0]);
        assert!(!s.hash_failed(&IH, 0, O0));
        // origin 0 is not given piece 0 again; origin 1 is
        assert_eq!(indices(&s.next_batch(O0, 1, t0())), vec![1]);
        assert_eq!(indices(&s.next_batch(O1, 1, t0())), vec![0]);
        assert!(!s.hash_failed(&IH, 1, O0));
        assert_eq!(indices(&s.next_batch(O0, 1, t0())), vec![2]);
        assert!(s.hash_failed(&IH, 2, O0), "third bad piece drops the origin");
        assert!(s.is_dropped(O0));
        assert!(s.next_batch(O0, 5, t0()).is_empty());
        let rest = indices(&s.next_batch(O1, 10, t0()));
        assert!(rest.contains(&1) && rest.contains(&2));
    }

    #[test]
    fn job_order_and_demand_across_releases() {
        let mut s = Scheduler::new();
        s.add_origin(O0);
        s.add_release(InfoHash([1; 20]), 4, &[], |_| false);
        s.add_release(InfoHash([2; 20]), 4, &[], |_| false);
        assert_eq!(s.next_batch(O0, 1, t0())[0].infohash, InfoHash([1; 20]), "added first, served first");
        s.set_order(&[InfoHash([2; 20])]);
        assert_eq!(s.next_batch(O0, 1, t0())[0].infohash, InfoHash([2; 20]), "the job order wins");
        s.demand(&InfoHash([1; 20]), &[3]);
        let b = s.next_batch(O0, 4, t0());
        assert_eq!(
            (b[0].infohash, b[0].index, b[0].priority),
            (InfoHash([1; 20]), 3, PRIORITY_DEMAND),
            "demand jumps releases"
        );
        assert!(b.iter().all(|a| a.infohash == InfoHash([1; 20])), "a batch holds one release");
    }

    #[test]
    fn origin_lost_puts_its_pieces_back() {
        let mut s = Scheduler::new();
        s.add_release(IH, 4, &[], |_| false);
        assert_eq!(indices(&s.next_batch(O0, 2, t0())), vec![0, 1]);
        assert_eq!(indices(&s.next_batch(O1, 1, t0())), vec![2]);
        s.origin_lost(O0);
        assert_eq!(indices(&s.next_batch(O1, 5, t0())), vec![0, 1, 3]);
        for i in 0..4 {
            s.done(&IH, i);
        }
        assert!(s.all_done());
        assert!(!s.has_work());
    }

    #[test]
    fn a_peer_gets_only_pieces_it_has_and_leaves_the_rest_to_others() {
        let mut s = Scheduler::new();
        s.add_release(IH, 10, &[7], |i| i == 0);
        let p1 = Source::Peer(PeerSourceId(1));
        let p2 = Source::Peer(PeerSourceId(2));
        // the critical piece first when the peer has it, then plan order among what it has
        assert_eq!(s.next_for_peer(&IH, p1, 3, |i| i % 2 == 1), vec![7, 1, 3]);
        // pieces the first peer lacks are still there for an origin, in plan order (once the
        // critical piece is in: until then origins send critical pieces only)
        assert!(s.next_batch(O0, 2, t0()).is_empty());
        assert!(s.done(&IH, 7));
        assert_eq!(indices(&s.next_batch(O0, 2, t0())), vec![2, 4]);
        assert_eq!(s.next_for_peer(&IH, p2, 10, |_| true), vec![5, 6, 8, 9]);
        // everything missing is in flight: endgame, second copies of what it has
        assert_eq!(s.next_for_peer(&IH, p1, 10, |i| i % 2 == 1), vec![5, 9]);
        // p2 leaves: what p1 has a second copy of stays in flight (p1's now), the rest goes back
        // for anyone, on-demand first
        s.origin_lost(p2);
        assert!(s.next_for_peer(&IH, p1, 2, |i| i % 2 == 1).is_empty());
        s.demand(&IH, &[8]);
        assert_eq!(indices(&s.next_batch(O0, 10, t0())), vec![8, 6]);
    }

    #[test]
    fn a_bad_piece_from_a_peer_is_not_asked_of_it_again_and_drops_no_origin() {
        let mut s = Scheduler::new();
        s.add_release(IH, 3, &[], |_| false);
        let p1 = Source::Peer(PeerSourceId(1));
        assert_eq!(s.next_for_peer(&IH, p1, 1, |_| true), vec![0]);
        assert!(!s.hash_failed(&IH, 0, p1));
        assert!(!s.is_dropped(p1));
        assert_eq!(s.next_for_peer(&IH, p1, 3, |_| true), vec![1, 2], "not piece 0 again");
        assert_eq!(indices(&s.next_batch(O0, 3, t0())), vec![0], "others may serve it");
        assert!(s.done(&IH, 0));
    }

    #[test]
    fn uplink_sources_leave_what_a_venue_peer_holds_but_not_what_someone_waits_for() {
        let mut s = Scheduler::new();
        s.add_release(IH, 6, &[], |_| false);
        let p1 = PeerSourceId(1);
        s.peer_holds(&IH, p1, &[0, 1, 2]);
        s.peer_holds(&IH, p1, &[2]);
        assert_eq!(indices(&s.next_batch(O0, 10, t0())), vec![3, 4, 5], "0-2 come from the peer");
        assert_eq!(s.next_for_peer(&IH, Source::Peer(p1), 10, |i| i < 3), vec![0, 1, 2]);
        s.origin_lost(Source::Peer(p1));
        s.demand(&IH, &[1]);
        assert_eq!(indices(&s.next_batch(O0, 10, t0())), vec![1], "on demand: the uplink, at once");
        s.peer_gone(p1);
        assert_eq!(indices(&s.next_batch(O0, 10, t0())), vec![0, 2], "the peer left: the uplink again");
    }

    #[test]
    fn a_release_held_for_the_venue_gives_the_uplink_only_what_someone_waits_for() {
        let mut s = Scheduler::new();
        let other = InfoHash([2; 20]);
        s.add_release(IH, 4, &[], |_| false);
        s.add_release(other, 2, &[], |_| false);
        let t = t0();
        s.hold_for_venue(&IH, t + Duration::from_secs(1));
        assert_eq!(s.next_batch(O0, 10, t)[0].infohash, other, "a held release lets the next one go first");
        s.demand(&IH, &[2]);
        let b = s.next_batch(O0, 10, t);
        assert_eq!((b[0].infohash, indices(&b)), (IH, vec![2]), "on demand: at once, held or not");
        let p1 = PeerSourceId(1);
        s.peer_holds(&IH, p1, &[0]);
        assert_eq!(s.next_for_peer(&IH, Source::Peer(p1), 10, |i| i == 0), vec![0], "peers are not held");
        assert!(s.next_batch(O0, 10, t + Duration::from_millis(999)).is_empty());
        assert_eq!(indices(&s.next_batch(O0, 10, t + Duration::from_secs(1))), vec![1, 3], "the hold ends");
    }

    #[test]
    fn endgame_gives_an_idle_peer_a_second_copy_of_what_is_in_flight_the_first_stored_wins() {
        let mut s = Scheduler::new();
        s.add_release(IH, 4, &[], |_| false);
        let (p1, p2, p3) =
            (Source::Peer(PeerSourceId(1)), Source::Peer(PeerSourceId(2)), Source::Peer(PeerSourceId(3)));
        assert_eq!(indices(&s.next_batch(O0, 2, t0())), vec![0, 1]);
        assert_eq!(s.next_for_peer(&IH, p1, 1, |_| true), vec![2]);
        assert!(s.next_for_peer(&IH, p2, 4, |i| i == 0).is_empty(), "piece 3 is still unasked: no endgame yet");
        assert_eq!(s.next_for_peer(&IH, p2, 4, |_| true), vec![3]);
        // everything is in flight: p3 gets second copies, one extra source per piece
        assert_eq!(s.next_for_peer(&IH, p3, 2, |i| i != 1), vec![0, 2]);
        assert_eq!(s.next_for_peer(&IH, p3, 4, |_| true), vec![1, 3]);
        assert!(s.next_for_peer(&IH, Source::Peer(PeerSourceId(4)), 4, |_| true).is_empty(), "one second copy each");
        // the second copy of 0 lands first; the origin's copy counts no more
        assert!(s.done(&IH, 0));
        assert!(!s.done(&IH, 0));
        // p1 gives piece 2 back: its second source (p3) has it now, not the queue; another
        // idle peer may be the second source
        s.give_back(&IH, 2, p1);
        let p5 = Source::Peer(PeerSourceId(5));
        assert_eq!(s.next_for_peer(&IH, p5, 4, |i| i == 2), vec![2]);
        // a lying second source leaves the piece to the first
        assert!(!s.hash_failed(&IH, 3, p3));
        assert!(s.next_for_peer(&IH, p3, 4, |i| i == 3).is_empty(), "never from the liar again");
        s.done(&IH, 3);
        // p3 leaves: piece 2 is p5's; the origin leaves too: piece 1 goes back to the queue
        s.origin_lost(p3);
        s.origin_lost(O0);
        assert_eq!(s.next_for_peer(&IH, p2, 4, |_| true), vec![1], "the origin's piece back to the queue");
        assert!(!s.done(&IH, 0));
        assert!(s.done(&IH, 1) && s.done(&IH, 2));
        assert!(s.all_done());
    }

    #[test]
    fn pieces_asked_for_are_served_in_the_order_asked_ahead_of_the_plan() {
        let mut s = Scheduler::new();
        s.add_release(IH, 12, &[], |_| false);
        // a reader's read-ahead, then its next ask further on: the nearer pieces stay first
        s.demand(&IH, &[4, 5, 6]);
        s.demand(&IH, &[6, 7, 8]);
        assert_eq!(indices(&s.next_batch(O0, 4, t0())), vec![4, 5, 6, 7]);
        assert_eq!(indices(&s.next_batch(O0, 2, t0())), vec![8, 0], "then the plan");
    }

    #[test]
    fn a_peer_gets_the_rarest_pieces_first() {
        let mut s = Scheduler::new();
        s.add_release(IH, 4, &[], |_| false);
        s.peer_holds(&IH, PeerSourceId(1), &[0, 1, 2, 3]);
        s.peer_holds(&IH, PeerSourceId(2), &[0, 1]);
        s.peer_holds(&IH, PeerSourceId(3), &[0]);
        assert_eq!(s.next_for_peer(&IH, Source::Peer(PeerSourceId(1)), 3, |_| true), vec![2, 3, 1]);
    }

    #[test]
    fn sibling_boxes_split_the_uplink_work_and_take_over_when_one_leaves_or_stalls() {
        let (a, b, c) = ([1u8; 20], [2u8; 20], [3u8; 20]);
        let n = 300u32;
        // every box computes the same owner, and each gets about a third
        let mut shares = [0u32; 3];
        for i in 0..n {
            let o = owner(&IH, i, &a, &[b, c]);
            assert_eq!(o, owner(&IH, i, &b, &[c, a]));
            shares[o[0] as usize - 1] += 1;
        }
        assert!(shares.iter().all(|&k| k > n / 5), "{shares:?}");
        // a box leaving moves only its own share
        for i in 0..n {
            if owner(&IH, i, &a, &[b, c]) != c {
                assert_eq!(owner(&IH, i, &a, &[b, c]), owner(&IH, i, &a, &[b]));
            }
        }
        let mut s = Scheduler::new();
        s.add_release(IH, n, &[], |_| false);
        let t = t0();
        s.set_siblings(&IH, a, &[b, c, a], t);
        let mine: Vec<u32> = (0..n).filter(|&i| owner(&IH, i, &a, &[b, c]) == a).collect();
        assert_eq!(indices(&s.next_batch(O0, n as usize, t)), mine, "only this box's share from the origin");
        // pieces keep coming from the venue: still patient
        s.peer_progress(&IH, t + SIBLING_PATIENCE / 2);
        assert!(s.next_batch(O0, n as usize, t + SIBLING_PATIENCE).is_empty());
        // c leaves: its share is this box's or b's now
        s.set_siblings(&IH, a, &[b], t + SIBLING_PATIENCE);
        let took_c: Vec<u32> = indices(&s.next_batch(O0, n as usize, t + SIBLING_PATIENCE));
        let want: Vec<u32> =
            (0..n).filter(|&i| owner(&IH, i, &a, &[b, c]) == c && owner(&IH, i, &a, &[b]) == a).collect();
        let mut got = took_c.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        // b stalls (nothing from the venue for SIBLING_PATIENCE): the origin gets the rest
        let rest = indices(&s.next_batch(O0, n as usize, t + SIBLING_PATIENCE * 2));
        assert_eq!(rest.len() + mine.len() + took_c.len(), n as usize);
    }
}
