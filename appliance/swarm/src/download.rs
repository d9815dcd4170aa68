//! The downloading half of one peer connection, with no I/O and no clock of its own: what the
//! peer holds (bitfield, have, BEP 6 have_all/have_none), whether it chokes us, what it lets us
//! fetch while choked (BEP 6 allowed_fast) and suggests (BEP 6 suggest_piece), the pieces the
//! fill handed this connection, the block requests in flight (a pipeline sized from the measured
//! rate), arriving blocks assembled into whole pieces, and the timers that give work back (a
//! peer that stops sending, or keeps us choked). [`crate::proto::PeerProto`] owns one and feeds it
//! the peer's messages; the shell asks the fill for pieces ([`Download::pieces_wanted`]) and hands
//! each whole piece to the store, whose hash check decides whether the peer lied.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use popseed_store::Bitfield;

use crate::proto::DropReason;

/// Block size requested (every client serves 16 KiB blocks; BEP 3).
pub const BLOCK: u32 = 16 * 1024;
/// Blocks kept in flight to a peer at least, and before its rate is known.
pub const PIPELINE_MIN: usize = 8;
pub const PIPELINE_START: usize = 32;
/// Blocks kept in flight to a peer at most (4 MiB), and never more than the `reqq` it
/// advertises.
pub const PIPELINE_MAX: usize = 256;
/// The pipeline holds this many seconds of the peer's measured rate.
pub const PIPELINE_SECONDS: f64 = 1.0;
/// `reqq` assumed for a peer that advertises none (libtorrent's historical default).
pub const DEFAULT_PEER_REQQ: usize = 250;
/// With requests in flight and no block for this long, the peer is snubbed: its pieces go back
/// to the fill and it gets one piece at a time until a block arrives.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Pieces held by a peer that chokes us go back to the fill after this long.
pub const CHOKED_GIVE_BACK: Duration = Duration::from_secs(10);
/// Blocks that answer no request (late after a cancel or choke, or never asked for) tolerated
/// per connection before the peer is dropped.
pub const MAX_UNREQUESTED_BLOCKS: u32 = 256;
/// Pieces held at once by one connection, whatever its rate.
pub const MAX_PIECES_HELD: usize = 64;
/// How often the rate behind the pipeline size is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// BEP 6 allowed_fast pieces kept per connection (a peer offers about 10); more are ignored.
pub const MAX_ALLOWED_FAST_KEPT: usize = 32;
/// BEP 6 suggest_piece hints remembered per connection, the most recent first.
pub const MAX_SUGGESTED_KEPT: usize = 32;

/// A piece handed to this connection, being filled block by block.
struct Held {
    size: u32,
    /// Allocated at the first block, so pieces waiting for an unchoke hold no memory.
    data: Vec<u8>,
    /// Next offset not yet requested.
    next: u32,
    /// Bytes received.
    received: u32,
    /// Per block: received.
    got: Vec<bool>,
}

impl Held {
    fn new(size: u32) -> Self {
        Held { size, data: Vec::new(), next: 0, received: 0, got: vec![false; size.div_ceil(BLOCK) as usize] }
    }

    fn unrequested_blocks(&self) -> usize {
        (self.size - self.next).div_ceil(BLOCK) as usize
    }
}

/// One connection's download state.
pub struct Download {
    peer_has: Bitfield,
    peer_choking: bool,
    choked_since: Option<Instant>,
    interested: bool,
    /// Whether the box wants pieces of this release (the fill is running and it is incomplete).
    wanted: bool,
    /// Something interest depends on changed since [`Download::update_interest`] last looked
    /// (what the peer has, `wanted`; what the box has is seen by its count, `ours_seen`): it
    /// runs on every read, the scan only when something changed.
    interest_stale: bool,
    ours_seen: Option<u32>,
    held: BTreeMap<u32, Held>,
    /// Requests in flight: (index, begin) -> (length, when sent).
    requests: BTreeMap<(u32, u32), u32>,
    /// When the last block (or the first request after a quiet spell) happened.
    last_progress: Instant,
    snubbed: bool,
    unrequested: u32,
    peer_reqq: usize,
    rate: f64,
    window_start: Instant,
    window_bytes: u64,
    downloaded: u64,
    complete: VecDeque<(u32, Vec<u8>)>,
    released: Vec<u32>,
    /// Pieces the peer announced since the last [`Download::take_new_holdings`].
    new_holdings: Vec<u32>,
    /// Pieces the peer serves us even while it chokes us (BEP 6 allowed_fast).
    allowed_fast: Vec<u32>,
    /// Pieces the peer suggested (BEP 6), the most recent first: asked for before others.
    suggested: VecDeque<u32>,
}

impl Download {
    pub fn new(pieces: u32, now: Instant) -> Self {
        Download {
            peer_has: Bitfield::new(pieces),
            peer_choking: true,
            choked_since: Some(now),
            interested: false,
            wanted: false,
            interest_stale: true,
            ours_seen: None,
            held: BTreeMap::new(),
            requests: BTreeMap::new(),
            last_progress: now,
            snubbed: false,
            unrequested: 0,
            peer_reqq: DEFAULT_PEER_REQQ,
            rate: 0.0,
            window_start: now,
            window_bytes: 0,
            downloaded: 0,
            complete: VecDeque::new(),
            released: Vec::new(),
            new_holdings: Vec::new(),
            allowed_fast: Vec::new(),
            suggested: VecDeque::new(),
        }
    }

    pub fn peer_has(&self) -> &Bitfield {
        &self.peer_has
    }
    pub fn is_interested(&self) -> bool {
        self.interested
    }
    pub fn is_snubbed(&self) -> bool {
        self.snubbed
    }
    /// Block bytes received that answered a request.
    pub fn downloaded(&self) -> u64 {
        self.downloaded
    }
    /// Pieces held (handed by the fill, not yet complete or given back).
    pub fn held(&self) -> impl Iterator<Item = u32> + '_ {
        self.held.keys().copied()
    }
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// The `reqq` of the peer's extension handshake.
    pub fn set_peer_reqq(&mut self, reqq: usize) {
        self.peer_reqq = reqq.max(1);
    }

    /// Whether the box wants this release's pieces now.
    pub fn set_wanted(&mut self, wanted: bool) {
        self.interest_stale |= wanted != self.wanted;
        self.wanted = wanted;
        if !wanted {
            self.give_back_all();
        }
    }

    pub fn on_bitfield(&mut self, bytes: &[u8]) {
        for i in 0..self.peer_has.len() {
            if bytes.get((i / 8) as usize).is_some_and(|b| b & (0x80 >> (i % 8)) != 0) {
                self.on_have(i);
            }
        }
    }

    pub fn on_have(&mut self, index: u32) {
        if self.peer_has.set(index) {
            self.new_holdings.push(index);
            self.interest_stale = true;
        }
    }

    /// Pieces the peer announced since the last call (the shell tells the fill, which leaves
    /// them to the venue instead of the uplink).
    pub fn take_new_holdings(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.new_holdings)
    }

    /// BEP 6 allowed_fast: the peer serves `index` even while it chokes us (kept up to
    /// [`MAX_ALLOWED_FAST_KEPT`]; an index past the end is ignored).
    pub fn on_allowed_fast(&mut self, index: u32) {
        if index < self.peer_has.len()
            && self.allowed_fast.len() < MAX_ALLOWED_FAST_KEPT
            && !self.allowed_fast.contains(&index)
        {
            self.allowed_fast.push(index);
        }
    }

    /// BEP 6 suggest_piece: a hint, asked for before other pieces the peer has.
    pub fn on_suggest(&mut self, index: u32) {
        if index < self.peer_has.len() {
            self.suggested.retain(|&i| i != index);
            self.suggested.push_front(index);
            self.suggested.truncate(MAX_SUGGESTED_KEPT);
        }
    }

    fn allowed_now(&self, index: u32) -> bool {
        !self.peer_choking || self.allowed_fast.contains(&index)
    }

    /// Whether the fill may hand this connection piece `index` now: the peer has it, and it
    /// does not choke us or lets us fetch it anyway (allowed_fast).
    pub fn assignable(&self, index: u32) -> bool {
        self.peer_has.get(index) && self.allowed_now(index)
    }

    /// Whether the peer suggested piece `index` (the shell offers those to the fill first).
    pub fn is_suggested(&self, index: u32) -> bool {
        self.suggested.contains(&index)
    }

    /// Whether the peer suggested any piece.
    pub fn has_suggestions(&self) -> bool {
        !self.suggested.is_empty()
    }

    /// BEP 6 have_all (`true`) or have_none (nothing to add: a peer never loses pieces here).
    pub fn on_have_all(&mut self, all: bool) {
        if all {
            for i in 0..self.peer_has.len() {
                self.on_have(i);
            }
        }
    }

    /// The peer choked us: its pending requests are void (BEP 3); the pieces stay held for
    /// [`CHOKED_GIVE_BACK`] and their blocks are asked again after an unchoke.
    pub fn on_choke(&mut self, now: Instant) {
        if self.peer_choking {
            return;
        }
        self.peer_choking = true;
        self.choked_since = Some(now);
        let allowed = std::mem::take(&mut self.allowed_fast);
        self.requests.retain(|&(i, _), _| allowed.contains(&i));
        // Rewind each other piece to its first block not received: the voided blocks are asked
        // again after the unchoke (`next_requests` skips those received). Allowed-fast pieces
        // go on (the peer serves or rejects each of those requests).
        for (i, h) in self.held.iter_mut() {
            if !allowed.contains(i) {
                let first_missing = h.got.iter().position(|g| !g).map_or(h.size, |b| b as u32 * BLOCK);
                h.next = first_missing;
            }
        }
        self.allowed_fast = allowed;
    }

    pub fn on_unchoke(&mut self, now: Instant) {
        if !self.peer_choking {
            return;
        }
        self.peer_choking = false;
        self.choked_since = None;
        self.last_progress = now;
    }

    /// BEP 6 reject of one of our requests: that block is asked again later (after a choke) or
    /// the piece goes back to the fill.
    pub fn on_reject(&mut self, index: u32, begin: u32) {
        if self.requests.remove(&(index, begin)).is_some() {
            self.release(index);
        }
    }

    /// A block arrived. A block of a held piece that is still missing is taken even when its
    /// request was voided (late after a choke: BEP 6 peers answer every request); other blocks
    /// nobody asked for are dropped (a few are normal after a cancel) and more than
    /// [`MAX_UNREQUESTED_BLOCKS`] drop the peer.
    pub fn on_block(&mut self, index: u32, begin: u32, block: &[u8], now: Instant) -> Result<(), DropReason> {
        let asked = self.requests.get(&(index, begin)).copied();
        let late = asked.is_none()
            && self.held.get(&index).is_some_and(|h| {
                begin.is_multiple_of(BLOCK)
                    && h.got.get((begin / BLOCK) as usize) == Some(&false)
                    && block.len() as u32 == BLOCK.min(h.size.saturating_sub(begin))
            });
        if asked != Some(block.len() as u32) && !late {
            self.unrequested += 1;
            if self.unrequested > MAX_UNREQUESTED_BLOCKS {
                return Err(DropReason::UnrequestedBlocks(self.unrequested));
            }
            return Ok(());
        }
        self.requests.remove(&(index, begin));
        self.last_progress = now;
        self.snubbed = false;
        self.downloaded += block.len() as u64;
        self.window_bytes += block.len() as u64;
        let Some(h) = self.held.get_mut(&index) else { return Ok(()) };
        let b = (begin / BLOCK) as usize;
        if h.got.get(b).copied() != Some(false) {
            return Ok(());
        }
        if h.data.is_empty() {
            h.data = vec![0; h.size as usize];
        }
        h.data[begin as usize..begin as usize + block.len()].copy_from_slice(block);
        h.got[b] = true;
        h.received += block.len() as u32;
        if h.received >= h.size {
            if let Some(done) = self.held.remove(&index) {
                self.complete.push_back((index, done.data));
            }
        }
        Ok(())
    }

    /// A whole piece received, for the store's hash check.
    pub fn take_complete(&mut self) -> Option<(u32, Vec<u8>)> {
        self.complete.pop_front()
    }

    /// Pieces given back since the last call (the shell tells the fill).
    pub fn take_released(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.released)
    }

    /// The piece is in the store now (from any source): stop fetching it here. Returns the
    /// requests to cancel.
    pub fn piece_present(&mut self, index: u32) -> Vec<(u32, u32, u32)> {
        if self.held.remove(&index).is_none() {
            return Vec::new();
        }
        self.cancel_requests_of(index)
    }

    fn cancel_requests_of(&mut self, index: u32) -> Vec<(u32, u32, u32)> {
        let gone: Vec<((u32, u32), u32)> =
            self.requests.range((index, 0)..=(index, u32::MAX)).map(|(k, v)| (*k, *v)).collect();
        for (k, _) in &gone {
            self.requests.remove(k);
        }
        gone.into_iter().map(|((i, b), l)| (i, b, l)).collect()
    }

    fn release(&mut self, index: u32) {
        if self.held.remove(&index).is_some() {
            self.cancel_requests_of(index);
            self.released.push(index);
        }
    }

    fn give_back_all(&mut self) -> Vec<(u32, u32, u32)> {
        let cancels: Vec<(u32, u32, u32)> = self.requests.iter().map(|(&(i, b), &l)| (i, b, l)).collect();
        self.requests.clear();
        let held: Vec<u32> = self.held.keys().copied().collect();
        self.held.clear();
        self.released.extend(held);
        cancels
    }

    /// Whether we should be interested: the box wants the release and the peer has a piece
    /// `ours` lacks. Returns the new state when it changed (the caller sends the message).
    pub fn update_interest(&mut self, ours: &Bitfield) -> Option<bool> {
        let ours_changed = self.ours_seen.replace(ours.count()) != Some(ours.count());
        if !std::mem::take(&mut self.interest_stale) && !ours_changed {
            return None;
        }
        let want = self.wanted && self.peer_has.iter_set().any(|i| !ours.get(i));
        if want == self.interested {
            return None;
        }
        self.interested = want;
        if !want {
            self.give_back_all();
        }
        Some(want)
    }

    /// Blocks to keep in flight: [`PIPELINE_SECONDS`] of the measured rate, within
    /// [`PIPELINE_MIN`]..=[`PIPELINE_MAX`] and the peer's `reqq`.
    pub fn pipeline(&self) -> usize {
        let by_rate = if self.rate > 0.0 {
            (self.rate * PIPELINE_SECONDS / BLOCK as f64).ceil() as usize + PIPELINE_MIN
        } else {
            PIPELINE_START
        };
        by_rate.clamp(PIPELINE_MIN, PIPELINE_MAX).min(self.peer_reqq)
    }

    /// How many more pieces of `piece_length` this connection should be handed now.
    pub fn pieces_wanted(&self, piece_length: u32) -> usize {
        if !self.interested {
            return 0;
        }
        if self.peer_choking {
            // only what it lets us fetch while choked, not yet held
            let open = self.allowed_fast.iter().filter(|&&i| self.peer_has.get(i) && !self.held.contains_key(&i));
            return open.count().min(MAX_PIECES_HELD.saturating_sub(self.held.len()));
        }
        if self.snubbed {
            return usize::from(self.held.is_empty());
        }
        let queued: usize = self.held.values().map(Held::unrequested_blocks).sum::<usize>() + self.requests.len();
        let want_blocks = self.pipeline().saturating_sub(queued);
        let per_piece = piece_length.div_ceil(BLOCK).max(1) as usize;
        want_blocks.div_ceil(per_piece).min(MAX_PIECES_HELD.saturating_sub(self.held.len()))
    }

    /// Takes pieces handed by the fill (`size`: each piece's length).
    pub fn add_piece(&mut self, index: u32, size: u32) {
        if size > 0 && !self.held.contains_key(&index) {
            self.held.insert(index, Held::new(size));
        }
    }

    /// Block requests to send now (index, begin, length), up to the pipeline, lowest piece first.
    pub fn next_requests(&mut self, now: Instant) -> Vec<(u32, u32, u32)> {
        if !self.interested || (self.peer_choking && self.allowed_fast.is_empty()) {
            return Vec::new();
        }
        let room = self.pipeline().saturating_sub(self.requests.len());
        if room == 0 {
            return Vec::new();
        }
        if self.requests.is_empty() {
            self.last_progress = now;
        }
        let mut out = Vec::new();
        let (choked, allowed) = (self.peer_choking, &self.allowed_fast);
        for (&index, h) in self.held.iter_mut() {
            if choked && !allowed.contains(&index) {
                continue;
            }
            while h.next < h.size && out.len() < room {
                let len = BLOCK.min(h.size - h.next);
                if !h.got[(h.next / BLOCK) as usize] {
                    out.push((index, h.next, len));
                }
                h.next += len;
            }
            if out.len() >= room {
                break;
            }
        }
        for &(i, b, l) in &out {
            self.requests.insert((i, b), l);
        }
        out
    }

    /// When [`Download::handle_timeout`] wants to run next, if anything is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = (!self.requests.is_empty()).then(|| self.last_progress + REQUEST_TIMEOUT);
        if let (Some(since), true) = (self.choked_since, self.held.keys().any(|i| !self.allowed_fast.contains(i))) {
            let c = since + CHOKED_GIVE_BACK;
            t = Some(t.map_or(c, |t| t.min(c)));
        }
        if self.window_bytes > 0 || self.rate > 0.0 {
            let r = self.window_start + RATE_WINDOW;
            t = Some(t.map_or(r, |t| t.min(r)));
        }
        t
    }

    /// Timers: the rate window, the request timeout (snub), the choke give-back. Returns the
    /// requests to cancel.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(u32, u32, u32)> {
        let span = now.saturating_duration_since(self.window_start);
        if span >= RATE_WINDOW {
            self.rate = self.window_bytes as f64 / span.as_secs_f64();
            self.window_bytes = 0;
            self.window_start = now;
        }
        if !self.requests.is_empty() && now >= self.last_progress + REQUEST_TIMEOUT {
            self.snubbed = true;
            self.last_progress = now;
            return self.give_back_all();
        }
        if self.choked_since.is_some_and(|s| now >= s + CHOKED_GIVE_BACK) {
            // what it lets us fetch while choked stays
            let stuck: Vec<u32> = self.held.keys().copied().filter(|i| !self.allowed_fast.contains(i)).collect();
            let mut cancels = Vec::new();
            for i in stuck {
                cancels.extend(self.cancel_requests_of(i));
                self.held.remove(&i);
                self.released.push(i);
            }
            return cancels;
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to a peer holding all `n` pieces, interested and unchoked.
    fn unchoked(n: u32, t: Instant) -> Download {
        let mut d = Download::new(n, t);
        d.on_have_all(true);
        d.set_wanted(true);
        d.update_interest(&ours(n, &[]));
        d.on_unchoke(t);
        d
    }

    fn ours(n: u32, have: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &i in have {
            b.set(i);
        }
        b
    }

    #[test]
    fn interested_only_in_a_peer_with_something_we_lack_and_only_while_wanted() {
        let t = Instant::now();
        let mut d = Download::new(10, t);
        d.on_bitfield(&[0b1000_0000, 0]);
        assert_eq!(d.update_interest(&ours(10, &[])), None, "not wanted");
        d.set_wanted(true);
        assert_eq!(d.update_interest(&ours(10, &[0])), None, "it has only what we have");
        d.on_have(3);
        assert_eq!(d.update_interest(&ours(10, &[0])), Some(true));
        assert_eq!(d.update_interest(&ours(10, &[0, 3])), Some(false));
    }

    #[test]
    fn pieces_are_requested_block_by_block_and_assembled() {
        let t = Instant::now();
        let mut d = Download::new(4, t);
        d.on_have_all(true);
        d.set_wanted(true);
        d.update_interest(&ours(4, &[]));
        assert_eq!(d.pieces_wanted(40_000), 0, "choked");
        d.on_unchoke(t);
        // 32 blocks in flight before the rate is known; a piece is 3 blocks
        assert_eq!(d.pieces_wanted(40_000), 11);
        d.add_piece(2, 40_000);
        let reqs = d.next_requests(t);
        assert_eq!(reqs, vec![(2, 0, BLOCK), (2, BLOCK, BLOCK), (2, 2 * BLOCK, 40_000 - 2 * BLOCK)]);
        assert!(d.next_requests(t).is_empty(), "everything held is asked for");
        let piece: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        for &(i, b, l) in reqs.iter().rev() {
            d.on_block(i, b, &piece[b as usize..(b + l) as usize], t).unwrap();
        }
        assert_eq!(d.take_complete(), Some((2, piece)));
        assert_eq!(d.held().count(), 0);
        assert_eq!(d.downloaded(), 40_000);
    }

    #[test]
    fn unrequested_blocks_are_dropped_then_drop_the_peer() {
        let t = Instant::now();
        let mut d = Download::new(4, t);
        for _ in 0..MAX_UNREQUESTED_BLOCKS {
            d.on_block(0, 0, &[1; 16], t).unwrap();
        }
        assert!(d.take_complete().is_none());
        assert_eq!(d.on_block(0, 0, &[1; 16], t), Err(DropReason::UnrequestedBlocks(MAX_UNREQUESTED_BLOCKS + 1)));
    }

    #[test]
    fn a_block_of_the_wrong_length_is_not_taken() {
        let t = Instant::now();
        let mut d = unchoked(1, t);
        d.add_piece(0, 100);
        assert_eq!(d.next_requests(t), vec![(0, 0, 100)]);
        d.on_block(0, 0, &[0; 99], t).unwrap();
        assert!(d.take_complete().is_none());
        assert_eq!(d.requests_in_flight(), 1);
    }

    #[test]
    fn a_choke_voids_requests_and_the_blocks_are_asked_again_after_the_unchoke() {
        let t = Instant::now();
        let mut d = unchoked(2, t);
        d.add_piece(0, 3 * BLOCK);
        let reqs = d.next_requests(t);
        assert_eq!(reqs.len(), 3);
        d.on_block(0, 0, &vec![0; BLOCK as usize], t).unwrap();
        d.on_choke(t);
        assert_eq!(d.requests_in_flight(), 0);
        assert!(d.next_requests(t).is_empty(), "choked");
        d.on_unchoke(t);
        assert_eq!(d.next_requests(t), vec![(0, BLOCK, BLOCK), (0, 2 * BLOCK, BLOCK)]);
    }

    #[test]
    fn a_late_block_of_a_voided_request_is_taken_not_counted_as_unrequested() {
        let t = Instant::now();
        let mut d = unchoked(2, t);
        d.add_piece(0, 2 * BLOCK);
        d.next_requests(t);
        d.on_choke(t);
        // a BEP 6 peer answers requests that crossed its choke
        d.on_block(0, 0, &vec![1; BLOCK as usize], t).unwrap();
        d.on_block(0, BLOCK, &vec![2; BLOCK as usize], t).unwrap();
        assert_eq!(d.take_complete().map(|(i, data)| (i, data.len())), Some((0, 2 * BLOCK as usize)));
        assert_eq!(d.unrequested, 0);
    }

    #[test]
    fn allowed_fast_pieces_go_on_through_a_choke_and_are_not_given_back() {
        let t = Instant::now();
        let mut d = unchoked(4, t);
        d.on_allowed_fast(2);
        d.add_piece(1, BLOCK);
        d.add_piece(2, BLOCK);
        assert_eq!(d.next_requests(t).len(), 2);
        d.on_choke(t);
        assert_eq!(d.requests_in_flight(), 1, "the allowed-fast request stands");
        d.handle_timeout(t + CHOKED_GIVE_BACK);
        assert_eq!(d.take_released(), vec![1]);
        assert_eq!(d.held().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn choked_too_long_gives_the_pieces_back() {
        let t = Instant::now();
        let mut d = unchoked(2, t);
        d.add_piece(1, BLOCK);
        d.next_requests(t);
        d.on_choke(t);
        assert!(d.handle_timeout(t + CHOKED_GIVE_BACK / 2).is_empty());
        assert_eq!(d.poll_timeout(), Some(t + CHOKED_GIVE_BACK));
        d.handle_timeout(t + CHOKED_GIVE_BACK);
        assert_eq!(d.take_released(), vec![1]);
    }

    #[test]
    fn a_silent_peer_is_snubbed_its_pieces_go_back_and_it_gets_one_at_a_time() {
        let t = Instant::now();
        let mut d = unchoked(8, t);
        d.add_piece(0, BLOCK);
        d.add_piece(1, BLOCK);
        d.next_requests(t);
        assert_eq!(d.poll_timeout(), Some(t + REQUEST_TIMEOUT));
        let cancels = d.handle_timeout(t + REQUEST_TIMEOUT);
        assert_eq!(cancels, vec![(0, 0, BLOCK), (1, 0, BLOCK)]);
        assert_eq!(d.take_released(), vec![0, 1]);
        assert!(d.is_snubbed());
        assert_eq!(d.pieces_wanted(BLOCK), 1);
        d.add_piece(4, BLOCK);
        d.next_requests(t + REQUEST_TIMEOUT);
        d.on_block(4, 0, &vec![0; BLOCK as usize], t + REQUEST_TIMEOUT).unwrap();
        assert!(!d.is_snubbed(), "a block ends the snub");
    }

    #[test]
    fn the_pipeline_follows_the_rate_within_its_bounds_and_the_peers_reqq() {
        let t = Instant::now();
        let mut d = unchoked(1000, t);
        assert_eq!(d.pipeline(), PIPELINE_START);
        for i in 0..100 {
            d.add_piece(i, BLOCK);
        }
        for (i, b, l) in d.next_requests(t) {
            d.on_block(i, b, &vec![0; l as usize], t).unwrap();
        }
        d.handle_timeout(t + RATE_WINDOW);
        // 32 blocks in a second: 512 KiB/s, so 32 + 8 blocks
        assert_eq!(d.pipeline(), 40);
        d.set_peer_reqq(20);
        assert_eq!(d.pipeline(), 20);
        d.handle_timeout(t + RATE_WINDOW * 2);
        d.set_peer_reqq(10_000);
        assert_eq!(d.pipeline(), PIPELINE_START, "a second with nothing in it: the rate is 0 again");
    }

    #[test]
    fn a_piece_stored_from_elsewhere_is_cancelled_here() {
        let t = Instant::now();
        let mut d = unchoked(2, t);
        d.add_piece(1, 2 * BLOCK);
        d.next_requests(t);
        assert_eq!(d.piece_present(1), vec![(1, 0, BLOCK), (1, BLOCK, BLOCK)]);
        assert_eq!(d.held().count(), 0);
        assert!(d.take_released().is_empty(), "stored, not given back");
    }
}
