//! Upload slots: which interested peers we unchoke. Pure bookkeeping (no I/O, time passed in),
//! driven by the shell on interest changes and on a periodic tick.
//!
//! Fair rotation: at most `slots` peers are unchoked. An unchoked peer keeps its slot for at
//! least `min_hold`; after that, when other interested peers wait, the one waiting longest takes
//! the slot and the rotated-out peer joins the back of the line. With no one waiting, unchoked
//! peers keep their slots.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Slot {
    interested: bool,
    unchoked: bool,
    /// Unchoked: when the slot was granted. Choked: when it started waiting (or was added).
    since: Instant,
}

/// Chooses unchoked peers; ids are the shell's connection ids.
#[derive(Debug)]
pub struct Choker {
    slots: usize,
    min_hold: Duration,
    peers: HashMap<u64, Slot>,
}

impl Choker {
    pub fn new(slots: usize, min_hold: Duration) -> Self {
        Choker { slots: slots.max(1), min_hold, peers: HashMap::new() }
    }

    pub fn add(&mut self, id: u64, now: Instant) {
        self.peers.insert(id, Slot { interested: false, unchoked: false, since: now });
    }

    /// Forgets a peer; true when it held a slot (a rechoke can give the slot away).
    pub fn remove(&mut self, id: u64) -> bool {
        self.peers.remove(&id).is_some_and(|s| s.unchoked)
    }

    /// Records a peer's interest. True when a rechoke now would change the unchoked set: an
    /// interested peer and a free slot, or a peer holding a slot that lost interest. (Otherwise
    /// the periodic rechoke rotates slots, so a peer toggling its interest costs no rechoke.)
    pub fn set_interested(&mut self, id: u64, interested: bool, now: Instant) -> bool {
        let free = self.unchoked() < self.slots;
        let Some(s) = self.peers.get_mut(&id) else { return false };
        if s.interested == interested {
            return false;
        }
        if !s.unchoked {
            s.since = now;
        }
        s.interested = interested;
        if interested {
            !s.unchoked && free
        } else {
            s.unchoked
        }
    }

    pub fn unchoked(&self) -> usize {
        self.peers.values().filter(|s| s.unchoked).count()
    }

    pub fn is_unchoked(&self, id: u64) -> bool {
        self.peers.get(&id).is_some_and(|s| s.unchoked)
    }

    /// Recomputes the unchoked set; returns the changes as (id, unchoke).
    pub fn rechoke(&mut self, now: Instant) -> Vec<(u64, bool)> {
        let mut keep: Vec<u64> = Vec::new();
        // (key, currently unchoked first on ties, id)
        let mut line: Vec<(Instant, bool, u64)> = Vec::new();
        for (&id, s) in &self.peers {
            if !s.interested {
                continue;
            }
            if s.unchoked && now.saturating_duration_since(s.since) < self.min_hold {
                keep.push(id);
            } else if s.unchoked {
                line.push((now, false, id));
            } else {
                line.push((s.since, true, id));
            }
        }
        line.sort();
        let mut chosen: std::collections::HashSet<u64> = keep.into_iter().take(self.slots).collect();
        for (_, _, id) in line {
            if chosen.len() >= self.slots {
                break;
            }
            chosen.insert(id);
        }
        let mut changes = Vec::new();
        for (&id, s) in self.peers.iter_mut() {
            let want = chosen.contains(&id);
            if want != s.unchoked {
                s.unchoked = want;
                s.since = now;
                changes.push((id, want));
            }
        }
        changes.sort();
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unchoked(c: &Choker, ids: &[u64]) -> Vec<u64> {
        ids.iter().copied().filter(|&i| c.is_unchoked(i)).collect()
    }

    #[test]
    fn interested_peer_gets_a_free_slot_at_once() {
        let t = Instant::now();
        let mut c = Choker::new(2, Duration::from_secs(20));
        c.add(1, t);
        assert!(c.rechoke(t).is_empty(), "not interested: stays choked");
        c.set_interested(1, true, t);
        assert_eq!(c.rechoke(t), vec![(1, true)]);
        c.set_interested(1, false, t);
        assert_eq!(c.rechoke(t), vec![(1, false)], "not interested any more frees the slot");
    }

    #[test]
    fn slots_rotate_fairly_among_waiting_peers() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(20);
        let mut c = Choker::new(2, hold);
        for id in 1..=4 {
            c.add(id, t0);
            c.set_interested(id, true, t0 + Duration::from_millis(id));
        }
        let now = t0 + Duration::from_secs(1);
        c.rechoke(now);
        assert_eq!(unchoked(&c, &[1, 2, 3, 4]), vec![1, 2], "longest waiting first");
        // Before min_hold nothing moves.
        assert!(c.rechoke(now + Duration::from_secs(10)).is_empty());
        // After min_hold, the two waiting peers take over.
        let later = now + hold + Duration::from_secs(1);
        c.rechoke(later);
        assert_eq!(unchoked(&c, &[1, 2, 3, 4]), vec![3, 4]);
        let later2 = later + hold + Duration::from_secs(1);
        c.rechoke(later2);
        assert_eq!(unchoked(&c, &[1, 2, 3, 4]), vec![1, 2]);
        // Over many rounds every peer gets the same number of turns.
        let mut turns = [0u32; 5];
        let mut t = later2;
        for _ in 0..40 {
            t += hold + Duration::from_secs(1);
            c.rechoke(t);
            for id in 1..=4u64 {
                if c.is_unchoked(id) {
                    turns[id as usize] += 1;
                }
            }
            assert_eq!(c.unchoked(), 2);
        }
        assert!(turns[1..].iter().all(|&n| n == 20), "{turns:?}");
    }

    #[test]
    fn only_changes_that_can_move_a_slot_ask_for_a_rechoke() {
        let t = Instant::now();
        let mut c = Choker::new(1, Duration::from_secs(5));
        c.add(1, t);
        c.add(2, t);
        assert!(c.set_interested(1, true, t), "a free slot");
        assert!(!c.set_interested(1, true, t), "no change");
        c.rechoke(t);
        assert!(!c.set_interested(2, true, t), "no free slot: waits for the periodic rechoke");
        assert!(!c.set_interested(2, false, t), "a choked peer losing interest frees nothing");
        assert!(!c.remove(2), "a choked peer held no slot");
        assert!(c.set_interested(1, false, t), "the slot holder lost interest");
        assert_eq!(c.rechoke(t), vec![(1, false)]);
        assert!(c.set_interested(1, true, t));
        c.rechoke(t);
        assert!(c.remove(1), "the slot holder left");
    }

    #[test]
    fn no_rotation_without_waiting_peers_and_removed_peers_free_slots() {
        let t = Instant::now();
        let mut c = Choker::new(1, Duration::from_secs(5));
        c.add(1, t);
        c.set_interested(1, true, t);
        c.rechoke(t);
        assert!(c.rechoke(t + Duration::from_secs(60)).is_empty());
        c.add(2, t);
        c.set_interested(2, true, t + Duration::from_secs(60));
        c.remove(1);
        assert_eq!(c.rechoke(t + Duration::from_secs(61)), vec![(2, true)]);
    }
}
