//! Which piece to fetch next, from which origin: pure state, no I/O, unit-tested.
//!
//! Order within a release: on-demand pieces (a peer or the portal waits), then pieces put back
//! after a failure, then the release's plan (critical ranges first, in the publisher's order,
//! then every other piece in file order). On-demand pieces of any release go before planned
//! pieces of all releases; releases are otherwise served in the order they were added, or the
//! order set by [`Scheduler::set_order`] (the jobs' order: priority, then earliest deadline). A piece whose bytes failed the hash check from an
//! origin is not asked from that origin again; an origin with [`MAX_BAD_PIECES`] bad pieces is
//! dropped for the rest of the fill.

use std::collections::{HashMap, HashSet, VecDeque};

use popseed_core::{InfoHash, PeerSourceId};

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
        });
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

    /// Moves requested pieces to the front (read-through). Unknown releases are ignored.
    pub fn demand(&mut self, ih: &InfoHash, indices: &[u32]) {
        if let Some(r) = self.release(ih) {
            for &i in indices.iter().rev() {
                if r.pieces.get(i as usize) == Some(&Piece::Missing) && !r.demand.contains(&i) {
                    r.demand.push_front(i);
                }
            }
        }
    }

    /// Up to `max` pieces of one release for `origin`, most urgent first.
    pub fn next_batch(&mut self, origin: Source, max: usize) -> Vec<Assignment> {
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
            // retries
            let mut k = 0;
            while k < r.retry.len() && out.len() < max {
                let i = r.retry[k];
                if usable(r, i) {
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
                && r.critical.iter().any(|&c| matches!(r.pieces[c as usize], Piece::InFlight(_)) || usable(r, c));
            while r.cursor < r.plan.len() && out.len() < max {
                let i = r.plan[r.cursor];
                if barrier && !r.critical.contains(&i) {
                    break;
                }
                let pos = r.cursor;
                r.cursor += 1;
                if usable(r, i) {
                    let p = planned_priority(r.critical.contains(&i), pos);
                    take(r, i, p, &mut out);
                } else if r.pieces[i as usize] == Piece::Missing {
                    // this origin must not serve it: leave it for the others
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
        let mut pos = r.cursor;
        while pos < r.plan.len() && out.len() < max {
            let i = r.plan[pos];
            if usable(r, i) {
                take(r, i, &mut out);
            }
            pos += 1;
        }
        out
    }

    /// The piece is now present in the store. Returns true the first time (a copy stored twice,
    /// e.g. from an origin that was given up on and another, counts once).
    pub fn done(&mut self, ih: &InfoHash, index: u32) -> bool {
        if let Some(r) = self.release(ih) {
            if let Some(p) = r.pieces.get_mut(index as usize) {
                if *p != Piece::Present {
                    *p = Piece::Present;
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
            if let Some(p @ Piece::InFlight(_)) = r.pieces.get_mut(index as usize) {
                *p = Piece::Missing;
                r.retry.push_back(index);
            }
        }
    }

    /// `source` will not deliver the piece after all: back to the queue, unless another source
    /// has it in flight by now.
    pub fn give_back(&mut self, ih: &InfoHash, index: u32, source: Source) {
        let mine = self.release(ih).is_some_and(|r| r.pieces.get(index as usize) == Some(&Piece::InFlight(source)));
        if mine {
            self.failed(ih, index);
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
        }
        self.failed(ih, index);
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
            for (i, p) in r.pieces.iter_mut().enumerate() {
                if *p == Piece::InFlight(origin) {
                    *p = Piece::Missing;
                    r.retry.push_back(i as u32);
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

    fn indices(a: &[Assignment]) -> Vec<u32> {
        a.iter().map(|a| a.index).collect()
    }

    #[test]
    fn critical_first_then_file_order_skipping_present() {
        let mut s = Scheduler::new();
        s.add_release(IH, 8, &[5, 6, 5], |i| i == 1 || i == 6);
        let b = s.next_batch(O0, 3);
        assert_eq!(indices(&b), vec![5], "only critical pieces while one is missing");
        assert_eq!(b[0].priority, PRIORITY_CRITICAL);
        assert!(s.next_batch(O1, 3).is_empty(), "the critical piece is in flight: others wait");
        assert!(planned_priority(true, 5) > planned_priority(true, 6), "plan order is send order");
        assert!(planned_priority(true, 1 << 30) > planned_priority(false, 0));
        s.done(&IH, 5);
        let b = s.next_batch(O0, 2);
        assert_eq!(indices(&b), vec![0, 2]);
        assert!(b[0].priority <= PRIORITY_NORMAL && b[0].priority > b[1].priority);
        assert_eq!(s.unassigned(&IH), 3);
        assert_eq!(indices(&s.next_batch(O1, 10)), vec![3, 4, 7]);
        assert!(s.next_batch(O0, 10).is_empty(), "everything is in flight");
        assert_eq!((s.missing(&IH), s.unassigned(&IH)), (Some(5), 0));
        s.failed(&IH, 4);
        assert_eq!(s.unassigned(&IH), 1, "a failed piece is handed out again");
    }

    #[test]
    fn barrier_lifts_when_no_origin_may_serve_the_critical_piece() {
        let mut s = Scheduler::new();
        s.add_release(IH, 3, &[2], |_| false);
        assert_eq!(indices(&s.next_batch(O0, 1)), vec![2]);
        s.unavailable(&IH, 2, O0);
        assert_eq!(indices(&s.next_batch(O0, 5)), vec![0, 1], "origin 0 lacks the critical piece");
        assert_eq!(indices(&s.next_batch(O1, 5)), vec![2]);
    }

    #[test]
    fn demand_jumps_the_queue_and_failures_retry() {
        let mut s = Scheduler::new();
        s.add_release(IH, 10, &[], |_| false);
        assert_eq!(indices(&s.next_batch(O0, 2)), vec![0, 1]);
        s.demand(&IH, &[9, 8]);
        let b = s.next_batch(O0, 3);
        assert_eq!(indices(&b), vec![9, 8, 2]);
        assert_eq!(b[0].priority, PRIORITY_DEMAND);
        s.failed(&IH, 0);
        assert_eq!(indices(&s.next_batch(O1, 1)), vec![0]);
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
        assert_eq!(indices(&s.next_batch(O0, 1)), vec![0]);
        assert!(!s.hash_failed(&IH, 0, O0));
        // origin 0 is not given piece 0 again; origin 1 is
        assert_eq!(indices(&s.next_batch(O0, 1)), vec![1]);
        assert_eq!(indices(&s.next_batch(O1, 1)), vec![0]);
        assert!(!s.hash_failed(&IH, 1, O0));
        assert_eq!(indices(&s.next_batch(O0, 1)), vec![2]);
        assert!(s.hash_failed(&IH, 2, O0), "third bad piece drops the origin");
        assert!(s.is_dropped(O0));
        assert!(s.next_batch(O0, 5).is_empty());
        let rest = indices(&s.next_batch(O1, 10));
        assert!(rest.contains(&1) && rest.contains(&2));
    }

    #[test]
    fn job_order_and_demand_across_releases() {
        let mut s = Scheduler::new();
        s.add_origin(O0);
        s.add_release(InfoHash([1; 20]), 4, &[], |_| false);
        s.add_release(InfoHash([2; 20]), 4, &[], |_| false);
        assert_eq!(s.next_batch(O0, 1)[0].infohash, InfoHash([1; 20]), "added first, served first");
        s.set_order(&[InfoHash([2; 20])]);
        assert_eq!(s.next_batch(O0, 1)[0].infohash, InfoHash([2; 20]), "the job order wins");
        s.demand(&InfoHash([1; 20]), &[3]);
        let b = s.next_batch(O0, 4);
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
        assert_eq!(indices(&s.next_batch(O0, 2)), vec![0, 1]);
        assert_eq!(indices(&s.next_batch(O1, 1)), vec![2]);
        s.origin_lost(O0);
        assert_eq!(indices(&s.next_batch(O1, 5)), vec![0, 1, 3]);
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
        assert!(s.next_batch(O0, 2).is_empty());
        assert!(s.done(&IH, 7));
        assert_eq!(indices(&s.next_batch(O0, 2)), vec![2, 4]);
        assert_eq!(s.next_for_peer(&IH, p2, 10, |_| true), vec![5, 6, 8, 9]);
        assert!(s.next_for_peer(&IH, p1, 10, |i| i % 2 == 1).is_empty(), "everything it has is in flight");
        // demand goes first; a peer that lost its pieces gives them back for anyone
        s.origin_lost(p2);
        s.demand(&IH, &[9]);
        assert_eq!(s.next_for_peer(&IH, p1, 2, |i| i % 2 == 1), vec![9, 5]);
        assert_eq!(indices(&s.next_batch(O0, 10)), vec![6, 8]);
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
        assert_eq!(indices(&s.next_batch(O0, 3)), vec![0], "others may serve it");
        assert!(s.done(&IH, 0));
    }
}
