//! The fetcher's async shell: one task per origin (connect with backoff, several request
//! streams in flight), a web seed task that takes over when no origin is reachable, and the
//! glue to the store (verified puts) and the scheduler (what next, what failed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use popseed_core::{chain, Backoff, InfoHash, PeerFill, PeerSourceId, PieceIndex, RateLimiter, ReadThrough};
use popseed_origin::proto::Status;
use popseed_origin::{OriginClient, OriginConnector, OriginSpec};
use popseed_release::VerifiedRelease;
use popseed_store::{Put, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::progress::{ReleaseProgress, Snapshot, Tracker};
use crate::scheduler::{Scheduler, Source};
use crate::webseed;

/// Most pieces one store put takes from a request stream.
const STORE_BATCH_MAX: usize = 16;
/// Longest a received piece waits in memory for the rest of its batch.
const STORE_BATCH_WAIT: Duration = Duration::from_millis(100);

/// A request stream asks for at most this many seconds of its measured rate at once (and at
/// most `request_bytes`; its first request, before its rate is known, is one piece): on a slow
/// uplink the streams' batches stay near the front of the plan, so a file read while it fills
/// arrives in order instead of in `streams_per_origin` far-apart places at a fraction of the
/// rate each.
pub const BATCH_SECONDS: f64 = 1.0;

/// First delay before dialling an origin again; it doubles up to `backoff_max`.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);

const WEB_SEED: Source = Source::WebSeed;

#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Request streams kept in flight per origin.
    pub streams_per_origin: usize,
    /// Bytes asked per request stream (whole pieces, at least one).
    pub request_bytes: u64,
    /// Cap on the fill's total download rate, bytes/s.
    pub rate_limit: Option<u64>,
    pub connect_timeout: Duration,
    pub backoff_max: Duration,
    /// Use web seeds once no origin has been connected for this long.
    pub web_seed_after: Duration,
    pub web_seed_parallel: usize,
    /// PEM file of CA certificates trusted for `https://` web seeds besides the built-in
    /// (Mozilla) roots: a publisher's own CA.
    pub web_seed_ca: Option<std::path::PathBuf>,
    /// The box's device certificate, shown to origins that serve allow-listed boxes only.
    pub device_identity: Option<popseed_origin::Identity>,
    /// For this long after a release is added (at start or by a job), uplink sources take its
    /// on-demand pieces only: the swarm finds the venue's boxes and peers first, so pieces they
    /// hold, or that a sibling box fetches, do not cross the uplink twice. Zero when the box
    /// downloads from no peer.
    pub venue_grace: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            // few streams with large requests: a batch of 16 pieces hashes in AVX-512 lanes and
            // costs one fdatasync (docs/decisions.md, "Fetch")
            streams_per_origin: 4,
            request_bytes: 16 << 20,
            rate_limit: None,
            connect_timeout: Duration::from_secs(5),
            backoff_max: Duration::from_secs(10),
            web_seed_after: Duration::from_secs(3),
            web_seed_parallel: 4,
            web_seed_ca: None,
            device_identity: None,
            venue_grace: Duration::ZERO,
        }
    }
}

pub struct Fetcher {
    store: Arc<Store>,
    origins: Vec<OriginSpec>,
    cfg: FetchConfig,
    sched: Mutex<Scheduler>,
    releases: Mutex<HashMap<InfoHash, Arc<VerifiedRelease>>>,
    tracker: Mutex<Tracker>,
    limiter: Option<RateLimiter>,
    work: Notify,
    progress_changed: Notify,
    connected: AtomicUsize,
    last_connected: Mutex<Option<Instant>>,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum Ended {
    Lost(String),
    Dropped,
    Shutdown,
}

impl Fetcher {
    pub fn new(store: Arc<Store>, origins: Vec<OriginSpec>, cfg: FetchConfig) -> Arc<Self> {
        let mut sched = Scheduler::new();
        let mut tracker = Tracker::new();
        for (i, o) in origins.iter().enumerate() {
            sched.add_origin(Source::Origin(i));
            tracker.origin(Source::Origin(i)).name = o.name.clone();
        }
        Arc::new(Fetcher {
            store,
            limiter: cfg.rate_limit.map(RateLimiter::new),
            origins,
            cfg,
            sched: Mutex::new(sched),
            releases: Mutex::new(HashMap::new()),
            tracker: Mutex::new(tracker),
            work: Notify::new(),
            progress_changed: Notify::new(),
            connected: AtomicUsize::new(0),
            last_connected: Mutex::new(None),
            started: Instant::now(),
        })
    }

    /// Adds a release (already in the store) to the fill. Pieces present are not fetched again.
    pub fn add_release(&self, release: Arc<VerifiedRelease>) -> Result<(), StoreError> {
        let ih = release.infohash();
        let bitfield = self.store.bitfield(&ih)?;
        let critical = release.critical_pieces();
        let layout = release.layout();
        let present_bytes: u64 = bitfield.iter_set().map(|i| layout.piece_size(i).unwrap_or(0) as u64).sum();
        {
            let mut s = lock(&self.sched);
            s.add_release(ih, layout.piece_count(), &critical, |i| bitfield.get(i));
            if !self.cfg.venue_grace.is_zero() {
                s.hold_for_venue(&ih, Instant::now() + self.cfg.venue_grace);
            }
        }
        lock(&self.tracker).add_release(ReleaseProgress {
            infohash: ih,
            name: release.manifest.name.clone(),
            piece_count: layout.piece_count(),
            pieces_done: bitfield.count(),
            total_bytes: layout.total_length,
            bytes_done: present_bytes,
            critical_pieces: critical.len() as u32,
            critical_done: critical.iter().filter(|&&i| bitfield.get(i)).count() as u32,
            first_critical_ms: None,
            fill_ms: None,
            arrival: Vec::new(),
            complete: bitfield.is_complete(),
        });
        lock(&self.releases).insert(ih, release);
        self.work.notify_waiters();
        Ok(())
    }

    /// Stops filling a release (a cancelled job). Pieces in flight still land in the store.
    pub fn remove_release(&self, ih: &InfoHash) {
        lock(&self.sched).remove_release(ih);
        lock(&self.releases).remove(ih);
        lock(&self.tracker).remove_release(ih);
        self.progress_changed.notify_waiters();
    }

    /// Fills releases in this order (the jobs' order); others follow in the order added.
    pub fn set_release_order(&self, order: &[InfoHash]) {
        lock(&self.sched).set_order(order);
    }

    /// Top-priority fetch of missing pieces (read-through). False when this fill does not
    /// hold the release (nothing would fetch them).
    pub fn demand(&self, ih: &InfoHash, pieces: &[PieceIndex]) -> bool {
        if !lock(&self.releases).contains_key(ih) {
            return false;
        }
        let pieces: Vec<u32> = pieces.iter().map(|p| p.get()).collect();
        lock(&self.sched).demand(ih, &pieces);
        self.work.notify_waiters();
        true
    }

    pub fn snapshot(&self) -> Snapshot {
        lock(&self.tracker).snapshot()
    }

    pub fn is_complete(&self) -> bool {
        lock(&self.sched).all_done()
    }

    /// Resolves when every release added so far is complete.
    pub async fn wait_complete(&self) {
        loop {
            let changed = self.progress_changed.notified();
            if self.is_complete() {
                return;
            }
            changed.await;
        }
    }

    /// Runs the fill until `shutdown` (it keeps running when complete, for read-through).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for id in (0..self.origins.len()).map(Source::Origin) {
            let me = self.clone();
            let sd = shutdown.clone();
            tasks.spawn(async move { me.origin_task(id, sd).await });
        }
        let me = self.clone();
        let sd = shutdown.clone();
        tasks.spawn(async move { me.web_seed_task(sd).await });
        shutdown.cancelled().await;
        tasks.shutdown().await;
    }

    fn record_error(&self, origin: Source, msg: String) {
        let mut t = lock(&self.tracker);
        let o = t.origin(origin);
        o.errors += 1;
        o.last_error = Some(msg);
    }

    async fn origin_task(self: Arc<Self>, id: Source, shutdown: CancellationToken) {
        let Source::Origin(n) = id else { return };
        let spec = self.origins[n].clone();
        let connector = match OriginConnector::pieces_as(
            spec.clone(),
            self.cfg.device_identity.clone(),
            self.cfg.connect_timeout,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(origin = %spec.name, error = %chain(&e), "origin TLS settings are unusable");
                self.record_error(id, chain(&e).to_string());
                return;
            }
        };
        let mut backoff = Backoff::new(RECONNECT_FIRST, self.cfg.backoff_max);
        loop {
            if shutdown.is_cancelled() || lock(&self.sched).is_dropped(id) {
                return;
            }
            let client = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = connector.connect() => c,
            };
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::info!(origin = %spec.name, error = %chain(&e), retry_in = ?delay, "origin unreachable");
                    self.record_error(id, chain(&e).to_string());
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            backoff.reset();
            tracing::info!(origin = %spec.name, addr = %spec.addr, "connected to origin");
            self.connected.fetch_add(1, Ordering::SeqCst);
            *lock(&self.last_connected) = Some(Instant::now());
            lock(&self.tracker).origin(id).connected = true;
            let ended = self.clone().drive(id, client.clone(), shutdown.clone()).await;
            client.close();
            self.connected.fetch_sub(1, Ordering::SeqCst);
            *lock(&self.last_connected) = Some(Instant::now());
            lock(&self.sched).origin_lost(id);
            lock(&self.tracker).origin(id).connected = false;
            self.work.notify_waiters();
            match ended {
                Ended::Shutdown => return,
                Ended::Dropped => {
                    tracing::warn!(origin = %spec.name, "origin sent bad data repeatedly; dropped for the rest of the fill");
                    lock(&self.tracker).origin(id).dropped = true;
                    return;
                }
                Ended::Lost(why) => {
                    tracing::info!(origin = %spec.name, error = %why, "origin connection lost; reconnecting");
                    self.record_error(id, why);
                }
            }
        }
    }

    /// Keeps `streams_per_origin` requests in flight on one connection until it fails.
    async fn drive(self: Arc<Self>, id: Source, client: OriginClient, shutdown: CancellationToken) -> Ended {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.cfg.streams_per_origin.max(1) {
            let me = self.clone();
            let c = client.clone();
            let sd = shutdown.clone();
            workers.spawn(async move { me.stream_worker(id, c, sd).await });
        }
        let ended = match workers.join_next().await {
            Some(Ok(e)) => e,
            Some(Err(e)) => Ended::Lost(format!("worker failed: {e}")),
            None => Ended::Shutdown,
        };
        workers.shutdown().await;
        ended
    }

    /// Pieces of `ih` per request on a stream that may ask for `bytes` at once.
    fn batch_size(&self, ih: &InfoHash, bytes: u64) -> usize {
        let pl = lock(&self.releases).get(ih).map(|r| r.layout().piece_length as u64).unwrap_or(1 << 20);
        (bytes.min(self.cfg.request_bytes) / pl).clamp(1, popseed_origin::proto::MAX_BATCH as u64) as usize
    }

    /// Next batch for `origin`, waiting for work to appear.
    async fn next_work(
        &self,
        origin: Source,
        batch_bytes: u64,
        shutdown: &CancellationToken,
    ) -> Option<Vec<crate::scheduler::Assignment>> {
        loop {
            let notified = self.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = lock(&self.sched);
                if s.is_dropped(origin) {
                    return None;
                }
                // size the batch by the release at the head of the queue
                let probe = s.next_batch(origin, 1, Instant::now());
                if let Some(first) = probe.first().copied() {
                    // Never more than an equal share of what is left, so one origin (or one
                    // stream) does not take a small release or a fill's tail for itself.
                    let origins = (0..self.origins.len()).filter(|&o| !s.is_dropped(Source::Origin(o))).count();
                    let slots = (origins * self.cfg.streams_per_origin).max(1);
                    let share = (s.unassigned(&first.infohash) + 1).div_ceil(slots);
                    let n = self.batch_size(&first.infohash, batch_bytes).min(share.max(1));
                    let mut batch = probe;
                    // on-demand pieces go alone, so a waiting peer is not behind a batch
                    if n > 1 && first.priority <= crate::scheduler::PRIORITY_CRITICAL {
                        for a in s.next_batch(origin, n - 1, Instant::now()) {
                            if a.infohash == first.infohash {
                                batch.push(a);
                            } else {
                                s.failed(&a.infohash, a.index);
                            }
                        }
                    }
                    return Some(batch);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = &mut notified => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn stream_worker(self: Arc<Self>, id: Source, client: OriginClient, shutdown: CancellationToken) -> Ended {
        // A batch is stored in the background while the stream goes on (and, after its last
        // batch, while the next request is already in flight), so the origin never waits on this
        // box's hashing and disk; one store per stream runs at a time, so a stream holds at most
        // two batches in memory.
        let mut storing = PendingStore::default();
        let end = self.clone().stream_loop(id, client, shutdown, &mut storing).await;
        match storing.finish().await {
            StoreOutcome::DropOrigin => Ended::Dropped,
            StoreOutcome::Ok => end,
        }
    }

    async fn stream_loop(
        self: Arc<Self>,
        id: Source,
        client: OriginClient,
        shutdown: CancellationToken,
        storing: &mut PendingStore,
    ) -> Ended {
        // what this stream may ask for at once: one piece (0 bytes rounds up to one), then
        // BATCH_SECONDS of the rate its last request came at
        let mut batch_bytes = 0;
        loop {
            let Some(batch) = self.next_work(id, batch_bytes, &shutdown).await else {
                return if shutdown.is_cancelled() { Ended::Shutdown } else { Ended::Dropped };
            };
            // next_work hands out pieces of one release per batch
            let ih = batch[0].infohash;
            let mine = batch;
            let Some(release) = lock(&self.releases).get(&ih).cloned() else { continue };
            let indices: Vec<u32> = mine.iter().map(|a| a.index).collect();
            let priority = mine.iter().map(|a| a.priority).max().unwrap_or(0);
            let result = tokio::select! {
                _ = shutdown.cancelled() => {
                    let mut s = lock(&self.sched);
                    for &i in &indices { s.failed(&ih, i); }
                    return Ended::Shutdown;
                }
                r = client.request_pieces(ih, priority, &indices, release.layout().piece_length) => r,
            };
            let mut pending: std::collections::HashSet<u32> = indices.iter().copied().collect();
            let mut arrived: Vec<(u32, bytes::Bytes)> = Vec::new();
            let mut batch_started = Instant::now();
            let (asked_at, mut received) = (Instant::now(), 0u64);
            let outcome = match result {
                Ok(mut stream) => loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => break Err(Ended::Shutdown),
                        n = stream.next(self.limiter.as_ref()) => n,
                    };
                    match next {
                        Ok(Some(reply)) => {
                            pending.remove(&reply.index);
                            received += reply.data.len() as u64;
                            if reply.status != Status::Ok {
                                tracing::debug!(index = reply.index, status = ?reply.status, "origin lacks piece");
                                lock(&self.sched).unavailable(&ih, reply.index, id);
                                self.work.notify_waiters();
                                continue;
                            }
                            // Planned pieces of a batch are stored together (their hashes run in
                            // SIMD lanes, one fdatasync and index flush for all); critical and
                            // on-demand pieces are stored the moment they arrive.
                            if priority > crate::scheduler::PRIORITY_NORMAL || indices.len() == 1 {
                                if self.store_piece(&release, reply.index, reply.data, id).await
                                    == StoreOutcome::DropOrigin
                                {
                                    break Err(Ended::Dropped);
                                }
                            } else {
                                if arrived.is_empty() {
                                    batch_started = Instant::now();
                                }
                                arrived.push((reply.index, reply.data));
                                // a slow link stores what it has every STORE_BATCH_WAIT, so a
                                // power cut loses little of what already arrived
                                if pending.is_empty()
                                    || arrived.len() >= STORE_BATCH_MAX
                                    || batch_started.elapsed() >= STORE_BATCH_WAIT
                                {
                                    let batch = std::mem::take(&mut arrived);
                                    if storing.start(&self, &release, batch, id).await == StoreOutcome::DropOrigin {
                                        break Err(Ended::Dropped);
                                    }
                                }
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(Ended::Lost(chain(&e).to_string())),
                    }
                },
                Err(e) => Err(Ended::Lost(chain(&e).to_string())),
            };
            let took = asked_at.elapsed().as_secs_f64();
            if outcome.is_ok() && received > 0 && took > 0.0 {
                batch_bytes = ((received as f64 / took) * BATCH_SECONDS) as u64;
            }
            // pieces received before the stream failed are still good to keep
            if !arrived.is_empty() {
                let batch = std::mem::take(&mut arrived);
                if storing.start(&self, &release, batch, id).await == StoreOutcome::DropOrigin {
                    return Ended::Dropped;
                }
            }
            if !pending.is_empty() {
                let mut s = lock(&self.sched);
                for &i in &pending {
                    s.failed(&ih, i);
                }
                drop(s);
                self.work.notify_waiters();
            }
            match outcome {
                Ok(()) => {}
                Err(Ended::Lost(e)) if client.close_reason().is_none() => self.record_error(id, e),
                Err(end) => return end,
            }
        }
    }

    /// Stores several pieces of one release in one put; if the batch fails (a bad piece among
    /// them), each piece is put on its own so the good ones land and the bad one is counted.
    async fn store_pieces(
        &self,
        release: &Arc<VerifiedRelease>,
        pieces: Vec<(u32, bytes::Bytes)>,
        origin: Source,
    ) -> StoreOutcome {
        if pieces.len() == 1 {
            let (index, data) = pieces.into_iter().next().expect("one piece");
            return self.store_piece(release, index, data, origin).await;
        }
        let ih = release.infohash();
        let store = self.store.clone();
        let indices: Vec<u32> = pieces.iter().map(|p| p.0).collect();
        let joined = tokio::task::spawn_blocking(move || {
            let refs: Vec<(PieceIndex, &[u8])> = pieces.iter().map(|(i, d)| (PieceIndex(*i), &d[..])).collect();
            let put = store.put_pieces(&ih, &refs);
            (put, pieces)
        })
        .await;
        let (put, pieces) = match joined {
            Ok(done) => done,
            Err(e) => {
                self.not_stored(&ih, &indices, origin, format!("put task failed: {e}")).await;
                return StoreOutcome::Ok;
            }
        };
        match put {
            Ok(outcomes) => {
                for ((index, data), put) in pieces.iter().zip(outcomes) {
                    if put != Put::InProgress {
                        self.piece_stored(&ih, *index, data.len() as u64, origin);
                    }
                }
                self.progress_changed.notify_waiters();
                StoreOutcome::Ok
            }
            Err(e) if !matches!(e, StoreError::HashMismatch { .. } | StoreError::WrongLength { .. }) => {
                self.not_stored(&ih, &indices, origin, chain(&e).to_string()).await;
                StoreOutcome::Ok
            }
            Err(_) => {
                // a bad piece among them: find it (and keep the good ones) one piece at a time
                let mut outcome = StoreOutcome::Ok;
                for (index, data) in pieces {
                    if self.store_piece(release, index, data, origin).await == StoreOutcome::DropOrigin {
                        outcome = StoreOutcome::DropOrigin;
                    }
                }
                outcome
            }
        }
    }

    fn piece_stored(&self, ih: &InfoHash, index: u32, len: u64, origin: Source) {
        let (first, critical) = {
            let mut s = lock(&self.sched);
            (s.done(ih, index), s.is_critical(ih, index))
        };
        // a copy stored twice (an origin given up on and another) counts once
        if first {
            lock(&self.tracker).stored(ih, index, len, critical, origin);
        }
    }

    async fn store_piece(
        &self,
        release: &Arc<VerifiedRelease>,
        index: u32,
        data: bytes::Bytes,
        origin: Source,
    ) -> StoreOutcome {
        let ih = release.infohash();
        let store = self.store.clone();
        let len = data.len() as u64;
        let put = match tokio::task::spawn_blocking(move || store.put_piece(&ih, PieceIndex(index), &data)).await {
            Ok(put) => put,
            Err(e) => {
                self.not_stored(&ih, &[index], origin, format!("put task failed: {e}")).await;
                return StoreOutcome::Ok;
            }
        };
        match put {
            Ok(Put::Stored) | Ok(Put::AlreadyPresent) => {
                self.piece_stored(&ih, index, len, origin);
                self.progress_changed.notify_waiters();
                StoreOutcome::Ok
            }
            Ok(Put::InProgress) => StoreOutcome::Ok,
            Err(StoreError::HashMismatch { .. }) | Err(StoreError::WrongLength { .. }) => {
                tracing::warn!(release = %ih, index, source = ?origin, "piece failed its hash check; discarded");
                lock(&self.tracker).origin(origin).hash_failures += 1;
                let drop = lock(&self.sched).hash_failed(&ih, index, origin);
                self.work.notify_waiters();
                if drop {
                    StoreOutcome::DropOrigin
                } else {
                    StoreOutcome::Ok
                }
            }
            Err(e) => {
                self.not_stored(&ih, &[index], origin, chain(&e).to_string()).await;
                StoreOutcome::Ok
            }
        }
    }

    /// Pieces the store could not take for a reason other than their data (e.g. store full):
    /// they go back to the queue after a pause, so a full disk does not spin the fill.
    async fn not_stored(&self, ih: &InfoHash, pieces: &[u32], origin: Source, error: String) {
        tracing::warn!(release = %ih, ?pieces, %error, "could not store pieces");
        self.record_error(origin, error);
        {
            let mut s = lock(&self.sched);
            for &i in pieces {
                s.failed(ih, i);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.work.notify_waiters();
    }

    fn web_seed_wanted(&self) -> bool {
        if self.connected.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let since = lock(&self.last_connected).unwrap_or(self.started);
        self.origins.is_empty() || since.elapsed() >= self.cfg.web_seed_after
    }

    async fn web_seed_task(self: Arc<Self>, shutdown: CancellationToken) {
        let client = match webseed::client(self.cfg.web_seed_ca.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %popseed_core::chain(&e), "cannot build the web seed HTTP client");
                return;
            }
        };
        lock(&self.tracker).origin(WEB_SEED).name = "web seed".into();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
            if !self.web_seed_wanted() {
                continue;
            }
            let batch = lock(&self.sched).next_batch(WEB_SEED, self.cfg.web_seed_parallel.max(1), Instant::now());
            if batch.is_empty() {
                continue;
            }
            let mut set = tokio::task::JoinSet::new();
            for a in batch {
                let Some(release) = lock(&self.releases).get(&a.infohash).cloned() else {
                    lock(&self.sched).failed(&a.infohash, a.index);
                    continue;
                };
                let client = client.clone();
                let me = self.clone();
                set.spawn(async move {
                    let seeds = release.metainfo.web_seeds.clone();
                    if seeds.is_empty() {
                        // nothing to try: give the piece back for the origins
                        lock(&me.sched).unavailable(&release.infohash(), a.index, WEB_SEED);
                        return;
                    }
                    let mut last_err = None;
                    for base in &seeds {
                        match webseed::fetch_piece(&client, base, &release, a.index).await {
                            Ok(data) => {
                                if let Some(l) = &me.limiter {
                                    l.acquire(data.len()).await;
                                }
                                me.store_piece(&release, a.index, bytes::Bytes::from(data), WEB_SEED).await;
                                return;
                            }
                            Err(e) => last_err = Some(chain(&e).to_string()),
                        }
                    }
                    if let Some(e) = last_err {
                        me.record_error(WEB_SEED, e);
                    }
                    lock(&me.sched).failed(&release.infohash(), a.index);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                });
            }
            while set.join_next().await.is_some() {}
        }
    }
}

/// The read-through port: what the portal and the swarm ask for becomes a top-priority fetch.
impl ReadThrough for Fetcher {
    fn request(&self, release: &InfoHash, pieces: &[PieceIndex]) -> bool {
        self.demand(release, pieces)
    }
}

/// The peer-fill port: the swarm's connections take pieces from the same scheduler as the
/// origins, outside the fill's rate cap (a LAN peer costs no uplink).
impl PeerFill for Fetcher {
    fn filling(&self) -> Vec<InfoHash> {
        lock(&self.sched).incomplete()
    }

    fn wants(&self, release: &InfoHash) -> bool {
        lock(&self.sched).missing(release).is_some_and(|m| m > 0)
    }

    fn assign(
        &self,
        release: &InfoHash,
        source: PeerSourceId,
        has: &dyn Fn(PieceIndex) -> bool,
        max: usize,
    ) -> Vec<PieceIndex> {
        let picked = lock(&self.sched).next_for_peer(release, Source::Peer(source), max, |i| has(PieceIndex(i)));
        picked.into_iter().map(PieceIndex).collect()
    }

    fn stored(&self, release: &InfoHash, piece: PieceIndex, bytes: u64, source: PeerSourceId) {
        lock(&self.sched).peer_progress(release, Instant::now());
        self.piece_stored(release, piece.get(), bytes, Source::Peer(source));
        self.progress_changed.notify_waiters();
    }

    fn bad_piece(&self, release: &InfoHash, piece: PieceIndex, source: PeerSourceId) {
        lock(&self.tracker).origin(Source::Peer(source)).hash_failures += 1;
        lock(&self.sched).hash_failed(release, piece.get(), Source::Peer(source));
        self.work.notify_waiters();
    }

    fn give_back(&self, release: &InfoHash, pieces: &[PieceIndex], source: PeerSourceId) {
        {
            let mut s = lock(&self.sched);
            for p in pieces {
                s.give_back(release, p.get(), Source::Peer(source));
            }
        }
        self.work.notify_waiters();
    }

    fn lost(&self, source: PeerSourceId) {
        lock(&self.sched).peer_gone(source);
        self.work.notify_waiters();
    }

    fn peer_holds(&self, release: &InfoHash, source: PeerSourceId, pieces: &[PieceIndex]) {
        let pieces: Vec<u32> = pieces.iter().map(|p| p.get()).collect();
        lock(&self.sched).peer_holds(release, source, &pieces);
    }

    fn siblings(&self, release: &InfoHash, me: [u8; 20], siblings: &[[u8; 20]]) {
        lock(&self.sched).set_siblings(release, me, siblings, Instant::now());
        self.work.notify_waiters();
    }
}

/// A stream worker's batch being stored in the background (one at a time).
#[derive(Default)]
struct PendingStore {
    task: Option<StoreTask>,
}

struct StoreTask {
    handle: tokio::task::JoinHandle<StoreOutcome>,
    fetcher: Arc<Fetcher>,
    infohash: InfoHash,
    indices: Vec<u32>,
    origin: Source,
}

impl PendingStore {
    /// Waits for the batch being stored, then starts storing `batch`; returns the outcome of
    /// the batch waited for.
    async fn start(
        &mut self,
        fetcher: &Arc<Fetcher>,
        release: &Arc<VerifiedRelease>,
        batch: Vec<(u32, bytes::Bytes)>,
        origin: Source,
    ) -> StoreOutcome {
        let before = self.finish().await;
        let indices = batch.iter().map(|p| p.0).collect();
        let (me, rel) = (fetcher.clone(), release.clone());
        let handle = tokio::spawn(async move { me.store_pieces(&rel, batch, origin).await });
        self.task = Some(StoreTask { handle, fetcher: fetcher.clone(), infohash: release.infohash(), indices, origin });
        before
    }

    /// Waits for the batch being stored, if any.
    async fn finish(&mut self) -> StoreOutcome {
        let Some(t) = self.task.take() else { return StoreOutcome::Ok };
        match t.handle.await {
            Ok(outcome) => outcome,
            Err(e) => {
                t.fetcher.not_stored(&t.infohash, &t.indices, t.origin, format!("store task failed: {e}")).await;
                StoreOutcome::Ok
            }
        }
    }
}

#[derive(PartialEq, Eq)]
enum StoreOutcome {
    Ok,
    DropOrigin,
}

#[cfg(test)]
mod tests {
    use super::*;
    use popseed_release::{publish, PublishOptions, SecretKey};
    use popseed_store::{AddOptions, StoreConfig};

    #[test]
    fn read_through_takes_pieces_of_releases_it_fills_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.bin"), vec![7u8; 100_000]).unwrap();
        let opts = PublishOptions { piece_size: Some(16384), ..Default::default() };
        let rel = publish(&src, &SecretKey::generate(), &dir.path().join("rel"), &opts).unwrap();
        let store = Arc::new(Store::open(StoreConfig::new(dir.path().join("store"))).unwrap());
        store.add_release(&rel, AddOptions::default()).unwrap();
        let fetcher = Fetcher::new(store.clone(), vec![], FetchConfig::default());
        let port: Arc<dyn ReadThrough> = fetcher.clone();
        let ih = rel.infohash();
        assert!(!port.request(&ih, &[PieceIndex(3)]), "a release this fill does not hold: refused at once");
        fetcher.add_release(Arc::new(rel)).unwrap();
        assert!(port.request(&ih, &[PieceIndex(3)]));
        let next = lock(&fetcher.sched).next_batch(WEB_SEED, 1, Instant::now());
        assert_eq!((next[0].infohash, next[0].index), (ih, 3), "the requested piece goes first");
        assert!(!port.request(&InfoHash([9; 20]), &[PieceIndex(0)]));
    }
}
