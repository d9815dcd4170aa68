//! The intake of pieces downloaded from peers: one task checks them against the signed release
//! and stores them in batches (whatever is queued when the previous batch is done, up to
//! [`BATCH_MAX`] pieces of one release), so a fast download costs one fdatasync and one index
//! flush per batch instead of per piece, and the hashes of a batch run in SIMD lanes. Each piece
//! is then reported to the fill; one that fails its hash check is reported to its connection,
//! which drops (and bans) the peer.

use std::collections::VecDeque;
use std::sync::Arc;

use popseed_core::{InfoHash, PeerFill, PeerSourceId, PieceIndex};
use popseed_store::{Put, Store, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// Most pieces stored in one batch.
pub const BATCH_MAX: usize = 16;

/// A whole piece from a peer, on its way to the store.
pub(crate) struct Downloaded {
    pub(crate) infohash: InfoHash,
    pub(crate) index: u32,
    pub(crate) data: Vec<u8>,
    pub(crate) source: PeerSourceId,
    /// Where a hash failure is reported (the connection's task).
    pub(crate) bad: mpsc::UnboundedSender<u32>,
}

/// Stores what arrives on `rx` until `shutdown` (what is queued then is dropped: the fill
/// fetches those pieces again after a restart).
pub(crate) async fn run(
    store: Arc<Store>,
    fill: Arc<dyn PeerFill>,
    stats: Arc<Stats>,
    mut rx: mpsc::UnboundedReceiver<Downloaded>,
    shutdown: CancellationToken,
) {
    let mut pending: VecDeque<Downloaded> = VecDeque::new();
    loop {
        if pending.is_empty() {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                d = rx.recv() => d,
            };
            match next {
                Some(d) => pending.push_back(d),
                None => return,
            }
        }
        while let Ok(d) = rx.try_recv() {
            pending.push_back(d);
        }
        let batch = take_batch(&mut pending);
        let (store, fill, stats) = (store.clone(), fill.clone(), stats.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || store_batch(&store, &*fill, &stats, batch)).await {
            tracing::warn!(error = %e, "the store task for downloaded pieces failed");
        }
    }
}

/// The oldest piece's release, and up to [`BATCH_MAX`] of its pieces, in arrival order.
fn take_batch(pending: &mut VecDeque<Downloaded>) -> Vec<Downloaded> {
    let Some(ih) = pending.front().map(|d| d.infohash) else { return Vec::new() };
    let mut batch = Vec::new();
    let mut rest = VecDeque::with_capacity(pending.len());
    while let Some(d) = pending.pop_front() {
        if d.infohash == ih && batch.len() < BATCH_MAX {
            batch.push(d);
        } else {
            rest.push_back(d);
        }
    }
    *pending = rest;
    batch
}

fn store_batch(store: &Store, fill: &dyn PeerFill, stats: &Stats, batch: Vec<Downloaded>) {
    let Some(ih) = batch.first().map(|d| d.infohash) else { return };
    if batch.len() > 1 {
        let refs: Vec<(PieceIndex, &[u8])> = batch.iter().map(|d| (PieceIndex(d.index), &d.data[..])).collect();
        match store.put_pieces(&ih, &refs) {
            Ok(puts) => {
                for (d, put) in batch.iter().zip(puts) {
                    report(fill, stats, d, Ok(put));
                }
                return;
            }
            // a bad piece among them: find it (and keep the good ones) one piece at a time
            Err(StoreError::HashMismatch { .. }) | Err(StoreError::WrongLength { .. }) => {}
            Err(e) => {
                for d in &batch {
                    report(fill, stats, d, Err(&e));
                }
                return;
            }
        }
    }
    for d in &batch {
        let put = store.put_piece(&d.infohash, PieceIndex(d.index), &d.data);
        report(fill, stats, d, put.as_ref().map(|p| *p));
    }
}

fn report(fill: &dyn PeerFill, stats: &Stats, d: &Downloaded, put: Result<Put, &StoreError>) {
    let piece = PieceIndex(d.index);
    match put {
        Ok(Put::Stored) | Ok(Put::AlreadyPresent) => {
            stats.add_downloaded_piece(d.data.len() as u64);
            fill.stored(&d.infohash, piece, d.data.len() as u64, d.source);
        }
        // another source is storing the same piece right now
        Ok(Put::InProgress) => {}
        Err(StoreError::HashMismatch { .. }) | Err(StoreError::WrongLength { .. }) => {
            tracing::warn!(release = %d.infohash, piece = d.index, "a peer sent a piece that failed its hash check");
            stats.bad_piece();
            fill.bad_piece(&d.infohash, piece, d.source);
            let _ = d.bad.send(d.index);
        }
        Err(e) => {
            tracing::warn!(release = %d.infohash, piece = d.index, error = %popseed_core::chain(e), "could not store a piece from a peer");
            fill.give_back(&d.infohash, &[piece], d.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(ih: u8, index: u32) -> Downloaded {
        let (bad, _) = mpsc::unbounded_channel();
        Downloaded { infohash: InfoHash([ih; 20]), index, data: Vec::new(), source: PeerSourceId(1), bad }
    }

    #[test]
    fn a_batch_is_one_release_in_arrival_order_and_at_most_batch_max() {
        let mut q: VecDeque<Downloaded> = [piece(1, 0), piece(2, 0), piece(1, 1)].into_iter().collect();
        q.extend((2..30).map(|i| piece(1, i)));
        let b = take_batch(&mut q);
        assert_eq!(b.iter().map(|d| d.index).collect::<Vec<_>>(), (0..16).collect::<Vec<_>>());
        assert!(b.iter().all(|d| d.infohash == InfoHash([1; 20])));
        assert_eq!(
            q.front().map(|d| (d.infohash, d.index)),
            Some((InfoHash([2; 20]), 0)),
            "the other release waits its turn"
        );
        assert_eq!(q.len(), 1 + 14);
    }
}
