//! The job manager: admits jobs (the manifest's signature checked against the publisher keys
//! the box was provisioned with before anything is fetched; refusals are recorded), adds their
//! releases to the store and the fetcher, asks origins for releases named only by infohash,
//! orders the fill by [`crate::book::ordered`], and once a second re-plans states from the
//! store's progress. Jobs persist in the store's `jobs` record table, so a restarted agent
//! resumes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use popseed_core::{chain, unix_now, Backoff, InfoHash};
use popseed_fetch::Fetcher;
use popseed_origin::{OriginSpec, DEFAULT_CONNECT_TIMEOUT};
use popseed_release::{PublicKey, VerifiedRelease};
use popseed_store::{AddOptions, Store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::book::{plan, JobBook, Progress};
use crate::error::ControlError;
use crate::job::{new_id, JobRecord, JobSource, JobSpec, JobState, ReleaseSource};

pub struct JobManager {
    book: Mutex<JobBook>,
    store: Arc<Store>,
    fetcher: Arc<Fetcher>,
    trusted: Vec<PublicKey>,
    origins: Vec<OriginSpec>,
    version: watch::Sender<u64>,
}

fn lock(m: &Mutex<JobBook>) -> MutexGuard<'_, JobBook> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl JobManager {
    /// Opens the job book in the store's database and resumes unfinished jobs. `trusted`: the
    /// provisioned publisher keys (empty: every release is refused); `origins`: where to ask for
    /// releases named by infohash.
    pub fn open(
        store: Arc<Store>,
        fetcher: Arc<Fetcher>,
        trusted: Vec<PublicKey>,
        origins: Vec<OriginSpec>,
    ) -> Result<Arc<Self>, ControlError> {
        let book = JobBook::open(store.records(JOBS_TABLE)?)?;
        let mut resumed = 0;
        for j in book.list() {
            if matches!(j.state, JobState::Queued | JobState::Filling) {
                if let Some(ih) = j.infohash {
                    if let Ok(r) = store.release(&ih) {
                        fetcher.add_release(r)?;
                        resumed += 1;
                    }
                }
            }
        }
        if resumed > 0 {
            tracing::info!(jobs = resumed, "resuming unfinished jobs");
        }
        Ok(Arc::new(JobManager {
            book: Mutex::new(book),
            store,
            fetcher,
            trusted,
            origins,
            version: watch::channel(0).0,
        }))
    }

    /// Bumps on every change of any job (for the device links and the dashboard).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn list(&self) -> Vec<JobRecord> {
        lock(&self.book).list()
    }

    pub fn get(&self, id: &str) -> Option<JobRecord> {
        lock(&self.book).get(id).cloned()
    }

    /// Takes a job. A job whose id is already known is not taken twice (origins push again
    /// after a reconnect): its record is returned. Refusals are recorded as failed jobs with
    /// the reason, and returned as [`ControlError::Refused`].
    pub fn submit(self: &Arc<Self>, spec: JobSpec, source: JobSource) -> Result<JobRecord, ControlError> {
        let id = spec.id.clone().unwrap_or_else(new_id);
        if !valid_id(&id) {
            return Err(ControlError::BadJob(format!("job id {id:?}: use 1-64 letters, digits, '-', '_' or '.'")));
        }
        if let Some(j) = self.get(&id) {
            return match (j.state, &j.reason) {
                (JobState::Failed, Some(r)) if r.starts_with("refused: ") => {
                    Err(ControlError::Refused(r["refused: ".len()..].to_owned()))
                }
                _ => Ok(j),
            };
        }
        let t = unix_now();
        let mut rec = JobRecord {
            id: id.clone(),
            name: spec.name.clone().unwrap_or_default(),
            infohash: None,
            source,
            pending: None,
            deadline: spec.deadline,
            priority: spec.priority,
            pin: spec.pin,
            ttl_seconds: spec.ttl_seconds,
            state: JobState::Queued,
            reason: None,
            created: t,
            updated: t,
            ready_at: None,
            bytes_done: 0,
            bytes_total: 0,
            eta_secs: None,
            at_risk: false,
        };
        let outcome = match &spec.release {
            ReleaseSource::Inline { manifest_b64, torrent_b64 } => {
                match (STANDARD.decode(manifest_b64), STANDARD.decode(torrent_b64)) {
                    (Ok(m), Ok(tb)) => self.admit(&mut rec, &m, &tb),
                    _ => Err(Admit::Refused("the manifest or .torrent is not valid base64".into())),
                }
            }
            ReleaseSource::Origin { infohash } => {
                if self.origins.is_empty() {
                    Err(Admit::Failed("the box has no origin to ask for the release".into()))
                } else {
                    rec.pending = Some(spec.release.clone());
                    rec.reason = Some("asking the origins for the release".into());
                    if rec.name.is_empty() {
                        rec.name = infohash.to_string();
                    }
                    Ok(())
                }
            }
        };
        let result = match outcome {
            Ok(()) => Ok(()),
            Err(Admit::Refused(r)) => {
                tracing::warn!(job = %id, reason = %r, "job refused");
                rec.state = JobState::Failed;
                rec.reason = Some(format!("refused: {r}"));
                Err(ControlError::Refused(r))
            }
            Err(Admit::Failed(r)) => {
                tracing::warn!(job = %id, reason = %r, "job failed");
                rec.state = JobState::Failed;
                rec.reason = Some(r.clone());
                Err(ControlError::BadJob(r))
            }
        };
        let pending = rec.pending.is_some();
        lock(&self.book).put(rec.clone())?;
        self.replan();
        if pending {
            let me = self.clone();
            let id = id.clone();
            tokio::spawn(async move { me.resolve(id).await });
        }
        tracing::info!(job = %id, name = %rec.name, state = rec.state.as_str(), "job recorded");
        result.map(|_| self.get(&id).unwrap_or(rec))
    }

    /// Verifies and stores the release of a job.
    fn admit(&self, rec: &mut JobRecord, manifest: &[u8], torrent: &[u8]) -> Result<(), Admit> {
        // no provisioned key trusts nobody: the release is refused with that reason
        let trusted = Some(&self.trusted[..]);
        let release = VerifiedRelease::from_bytes(manifest, torrent, trusted)
            .map_err(|e| Admit::Refused(chain(&e).to_string()))?;
        let ih = release.infohash();
        self.store
            .add_release(&release, AddOptions { pin: rec.pin, ttl_seconds: rec.ttl_seconds })
            .map_err(|e| Admit::Failed(format!("the store cannot take the release: {}", chain(&e))))?;
        let release = self.store.release(&ih).map_err(|e| Admit::Failed(chain(&e).to_string()))?;
        self.fetcher.add_release(release.clone()).map_err(|e| Admit::Failed(chain(&e).to_string()))?;
        if rec.name.is_empty() || rec.name == ih.to_string() {
            rec.name = format!("{} {}", release.manifest.name, release.manifest.version).trim().to_owned();
        }
        rec.infohash = Some(ih);
        rec.bytes_total = release.layout().total_length;
        rec.pending = None;
        rec.reason = None;
        Ok(())
    }

    /// Asks the origins for a job's release until one answers, the job ends, or the release
    /// is refused.
    async fn resolve(self: Arc<Self>, id: String) {
        let mut backoff = Backoff::new(RESOLVE_RETRY_FIRST, RESOLVE_RETRY_MAX);
        loop {
            let Some(job) = self.get(&id) else { return };
            let Some(ReleaseSource::Origin { infohash: ih }) = job.pending.clone() else { return };
            if job.state.is_final() {
                return;
            }
            let mut last_err = String::new();
            for o in &self.origins {
                match fetch_release(o, ih).await {
                    Ok((m, t)) => {
                        let mut rec = job.clone();
                        let outcome = self.admit(&mut rec, &m, &t);
                        let mut book = lock(&self.book);
                        // cancelled meanwhile?
                        if book.get(&id).is_some_and(|j| j.state.is_final()) {
                            return;
                        }
                        match outcome {
                            Ok(()) => tracing::info!(job = %id, origin = %o.name, "release received"),
                            Err(Admit::Refused(r)) => {
                                rec.state = JobState::Failed;
                                rec.reason = Some(format!("refused: {r}"));
                            }
                            Err(Admit::Failed(r)) => {
                                rec.state = JobState::Failed;
                                rec.reason = Some(r);
                            }
                        }
                        rec.updated = unix_now();
                        if let Err(e) = book.put(rec) {
                            tracing::error!(job = %id, error = %chain(&e), "cannot record the job");
                        }
                        drop(book);
                        self.replan();
                        return;
                    }
                    Err(e) => last_err = format!("{}: {}", o.name, chain(&e)),
                }
            }
            {
                let mut book = lock(&self.book);
                if let Some(j) = book.get(&id).cloned() {
                    let reason = format!("asking the origins for the release (last: {last_err})");
                    if j.reason.as_deref() != Some(reason.as_str()) {
                        let mut j = j;
                        j.reason = Some(reason);
                        j.updated = unix_now();
                        let _ = book.put(j);
                    }
                }
            }
            self.bump();
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Cancels a job: its release stops filling (unless another live job wants it) and is
    /// unpinned (unless another live pinned job holds it). Pieces already stored stay until
    /// evicted.
    pub fn cancel(&self, id: &str) -> Result<JobRecord, ControlError> {
        let mut book = lock(&self.book);
        let Some(mut j) = book.get(id).cloned() else { return Err(ControlError::NoSuchJob(id.into())) };
        if j.state.is_final() {
            return Ok(j);
        }
        j.state = JobState::Cancelled;
        j.reason = Some("cancelled".into());
        j.at_risk = false;
        j.eta_secs = None;
        j.updated = unix_now();
        book.put(j.clone())?;
        self.release_hold(&book, &j);
        drop(book);
        tracing::info!(job = %id, "job cancelled");
        self.replan();
        Ok(j)
    }

    /// After a job ended: stop filling and unpin its release unless another live job holds it.
    fn release_hold(&self, book: &JobBook, ended: &JobRecord) {
        let Some(ih) = ended.infohash else { return };
        let others: Vec<JobRecord> = book
            .list()
            .into_iter()
            .filter(|o| o.id != ended.id && !o.state.is_final() && o.infohash == Some(ih))
            .collect();
        if !others.iter().any(|o| o.state != JobState::Ready) && ended.state == JobState::Cancelled {
            self.fetcher.remove_release(&ih);
        }
        if ended.pin && !others.iter().any(|o| o.pin) {
            if let Err(e) = self.store.set_pinned(&ih, false) {
                tracing::warn!(error = %chain(&e), "cannot unpin a release");
            }
        }
    }

    /// Re-plans every job from the store's progress and the fill rate (called every second).
    pub fn replan(&self) {
        let progress: HashMap<InfoHash, Progress> = self
            .store
            .releases()
            .into_iter()
            .map(|r| (r.infohash, Progress { done: r.bytes_present, total: r.total_size }))
            .collect();
        let rate = self.fetcher.snapshot().rate;
        let mut book = lock(&self.book);
        let before: Vec<(u64, u64)> = book.list().iter().map(|j| (j.bytes_done, j.updated)).collect();
        let changed = plan(&mut book, &progress, rate, unix_now());
        for id in &changed {
            if let Some(j) = book.get(id).cloned() {
                tracing::info!(job = %id, state = j.state.as_str(), reason = j.reason.as_deref().unwrap_or(""), "job state");
                if j.state == JobState::Expired {
                    self.release_hold(&book, &j);
                }
            }
        }
        if let Err(e) = book.persist(&changed) {
            tracing::error!(error = %chain(&e), "cannot persist job states");
        }
        let order: Vec<InfoHash> = book.fill_order();
        let after: Vec<(u64, u64)> = book.list().iter().map(|j| (j.bytes_done, j.updated)).collect();
        drop(book);
        self.fetcher.set_release_order(&order);
        if !changed.is_empty() || before != after {
            self.bump();
        }
    }

    /// Re-plans once a second until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // resume jobs that were still asking an origin for their release
        for j in self.list() {
            if j.pending.is_some() && !j.state.is_final() {
                tokio::spawn(self.clone().resolve(j.id));
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.replan(),
            }
        }
    }

    /// True when every pinned job is ready (what `/readyz` reports), with the reason otherwise.
    pub fn readiness(&self) -> (bool, String) {
        let pinned: Vec<JobRecord> = self
            .list()
            .into_iter()
            .filter(|j| j.pin && j.state != JobState::Cancelled && j.state != JobState::Expired)
            .collect();
        let ready = pinned.iter().filter(|j| j.state == JobState::Ready).count();
        if ready == pinned.len() {
            (true, format!("{ready} of {} pinned jobs ready", pinned.len()))
        } else {
            let waiting: Vec<String> = pinned
                .iter()
                .filter(|j| j.state != JobState::Ready)
                .map(|j| match &j.reason {
                    Some(r) => format!("{} {} ({r})", j.name, j.state.as_str()),
                    None => format!("{} {}", j.name, j.state.as_str()),
                })
                .collect();
            (false, format!("{ready} of {} pinned jobs ready; {}", pinned.len(), waiting.join("; ")))
        }
    }
}

enum Admit {
    /// The job is refused (signature, key, .torrent mismatch, bad input).
    Refused(String),
    /// Accepted but cannot proceed (store full...).
    Failed(String),
}

/// The record table jobs live in.
const JOBS_TABLE: &str = "jobs";
/// First wait before asking the origins again for a job's release; it doubles up to the max.
const RESOLVE_RETRY_FIRST: Duration = Duration::from_secs(1);
const RESOLVE_RETRY_MAX: Duration = Duration::from_secs(30);

async fn fetch_release(
    o: &OriginSpec,
    ih: InfoHash,
) -> Result<(bytes::Bytes, bytes::Bytes), popseed_origin::OriginError> {
    let c = popseed_origin::connect(o, DEFAULT_CONNECT_TIMEOUT).await?;
    let r = c.get_release(ih).await;
    c.close();
    r
}
