//! The job book: every prewarm job the box knows, persisted in a record table the store owns
//! (`jobs`, id -> JSON record), and [`plan`], the pure function that orders jobs (priority, then
//! earliest deadline, then age) and derives each one's state, ETA and deadline risk from the
//! store's progress and the fill rate. No I/O besides the record table; unit-tested.

use std::collections::{BTreeMap, HashMap, HashSet};

use popseed_core::{ByteSize, InfoHash};
use popseed_store::RecordTable;

use crate::error::ControlError;
use crate::job::{JobRecord, JobState};

pub struct JobBook {
    table: Option<RecordTable>,
    jobs: BTreeMap<String, JobRecord>,
}

impl JobBook {
    /// Loads every job from `table`. A record that does not parse is logged and kept on disk
    /// untouched (nothing is lost), but not loaded.
    pub fn open(table: RecordTable) -> Result<JobBook, ControlError> {
        let mut jobs = BTreeMap::new();
        for (k, v) in table.entries()? {
            match serde_json::from_slice::<JobRecord>(&v) {
                Ok(j) => {
                    jobs.insert(j.id.clone(), j);
                }
                Err(e) => tracing::warn!(key = %k, error = %popseed_core::chain(&e), "unreadable job record; skipped"),
            }
        }
        Ok(JobBook { table: Some(table), jobs })
    }

    /// A book that persists nothing (tests).
    pub fn in_memory() -> JobBook {
        JobBook { table: None, jobs: BTreeMap::new() }
    }

    pub fn get(&self, id: &str) -> Option<&JobRecord> {
        self.jobs.get(id)
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobRecord> {
        let mut v: Vec<JobRecord> = self.jobs.values().cloned().collect();
        v.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        v
    }

    /// Stores a job durably (flushed before returning).
    pub fn put(&mut self, job: JobRecord) -> Result<(), ControlError> {
        if let Some(t) = &self.table {
            t.put(&job.id, &serde_json::to_vec(&job).map_err(ControlError::Encode)?)?;
        }
        self.jobs.insert(job.id.clone(), job);
        Ok(())
    }

    pub fn jobs_mut(&mut self) -> impl Iterator<Item = &mut JobRecord> {
        self.jobs.values_mut()
    }

    /// Persists the given jobs as they are now.
    pub fn persist(&mut self, ids: &[String]) -> Result<(), ControlError> {
        let Some(t) = &self.table else { return Ok(()) };
        let mut records = Vec::new();
        for id in ids {
            if let Some(j) = self.jobs.get(id) {
                records.push((id.as_str(), serde_json::to_vec(j).map_err(ControlError::Encode)?));
            }
        }
        t.put_many(records.iter().map(|(k, v)| (*k, v.as_slice())))?;
        Ok(())
    }

    /// Infohashes of the jobs that still fill, in fill order.
    pub fn fill_order(&self) -> Vec<InfoHash> {
        let mut seen = HashSet::new();
        ordered(self.jobs.values())
            .into_iter()
            .filter(|j| matches!(j.state, JobState::Queued | JobState::Filling))
            .filter_map(|j| j.infohash)
            .filter(|ih| seen.insert(*ih))
            .collect()
    }
}

/// Jobs in scheduling order: higher priority first, then earliest deadline (none last), then
/// the oldest.
pub fn ordered<'a>(jobs: impl Iterator<Item = &'a JobRecord>) -> Vec<&'a JobRecord> {
    let mut v: Vec<&JobRecord> = jobs.collect();
    v.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.deadline.unwrap_or(u64::MAX).cmp(&b.deadline.unwrap_or(u64::MAX)))
            .then(a.created.cmp(&b.created))
            .then(a.id.cmp(&b.id))
    });
    v
}

/// One release's progress in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

fn human_secs(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Recomputes every live job's state, progress, ETA and deadline risk. `progress` is keyed by
/// infohash and holds the releases the store has; `rate` is the fill's bytes per second.
/// Jobs are filled one after another in [`ordered`] order, so a job's ETA counts the bytes of
/// the jobs ahead of it. Returns the ids whose state, reason or risk changed (to persist and
/// report).
pub fn plan(book: &mut JobBook, progress: &HashMap<InfoHash, Progress>, rate: f64, now: u64) -> Vec<String> {
    let order: Vec<String> = ordered(book.jobs.values()).into_iter().map(|j| j.id.clone()).collect();
    let mut changed = Vec::new();
    let mut ahead_bytes = 0u64;
    let mut counted: HashSet<InfoHash> = HashSet::new();
    let mut filling_seen = false;
    for id in order {
        let Some(j) = book.jobs.get_mut(&id) else { continue };
        let before = (j.state, j.reason.clone(), j.at_risk);
        if j.state.is_final() {
            continue;
        }
        if let Some(ttl) = j.ttl_seconds {
            if now >= j.created.saturating_add(ttl) {
                j.state = JobState::Expired;
                j.reason = Some("its ttl elapsed; the release may be evicted".into());
                j.at_risk = false;
                j.eta_secs = None;
                j.updated = now;
                changed.push(id);
                continue;
            }
        }
        let Some(ih) = j.infohash else {
            // still asking the origins for the release: the manager keeps its reason
            continue;
        };
        let Some(p) = progress.get(&ih).copied() else {
            if j.state == JobState::Ready || j.bytes_total > 0 {
                j.state = JobState::Failed;
                j.reason = Some("the release is no longer in the store (evicted)".into());
                j.updated = now;
                changed.push(id);
            }
            continue;
        };
        j.bytes_done = p.done;
        j.bytes_total = p.total;
        if p.done >= p.total {
            j.state = JobState::Ready;
            j.reason = None;
            j.eta_secs = Some(0.0);
            j.at_risk = false;
            if j.ready_at.is_none() {
                j.ready_at = Some(now);
            }
        } else {
            let remaining = p.total - p.done;
            if counted.insert(ih) {
                ahead_bytes += remaining;
            }
            let eta = if rate > 0.0 { Some(ahead_bytes as f64 / rate) } else { None };
            j.eta_secs = eta;
            j.state = if filling_seen { JobState::Queued } else { JobState::Filling };
            filling_seen = true;
            j.at_risk = match (j.deadline, eta) {
                (None, _) => false,
                (Some(d), Some(e)) => now as f64 + e > d as f64,
                // nothing is arriving: at this rate no deadline can be met
                (Some(_), None) => true,
            };
            j.reason = match (j.at_risk, j.deadline, eta) {
                (true, Some(d), Some(e)) => Some(format!(
                    "at risk: needs about {} at {}, deadline {}",
                    human_secs(e),
                    ByteSize::human_rate(rate),
                    if d > now { format!("in {}", human_secs((d - now) as f64)) } else { "passed".into() }
                )),
                (true, _, None) => Some("at risk: no data is arriving from any origin".into()),
                (false, _, _) if j.state == JobState::Queued => Some("waiting for higher-priority jobs".into()),
                _ => None,
            };
        }
        if (j.state, j.reason.clone(), j.at_risk) != before {
            j.updated = now;
            changed.push(id);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSource;

    /// A distinct infohash per label.
    fn ih(label: &str) -> InfoHash {
        InfoHash([label.as_bytes()[0]; 20])
    }

    fn job(id: &str, ih: &str, priority: i32, deadline: Option<u64>, created: u64) -> JobRecord {
        JobRecord {
            id: id.into(),
            name: id.into(),
            infohash: Some(self::ih(ih)),
            source: JobSource::Staff,
            pending: None,
            deadline,
            priority,
            pin: true,
            ttl_seconds: None,
            state: JobState::Queued,
            reason: None,
            created,
            updated: created,
            ready_at: None,
            bytes_done: 0,
            bytes_total: 0,
            eta_secs: None,
            at_risk: false,
        }
    }

    fn prog(pairs: &[(&str, u64, u64)]) -> HashMap<InfoHash, Progress> {
        pairs.iter().map(|(l, d, t)| (ih(l), Progress { done: *d, total: *t })).collect()
    }

    #[test]
    fn earliest_deadline_first_within_priority() {
        let mut b = JobBook::in_memory();
        b.put(job("late", "a", 0, Some(2000), 1)).unwrap();
        b.put(job("early", "b", 0, Some(1000), 2)).unwrap();
        b.put(job("none", "c", 0, None, 0)).unwrap();
        b.put(job("urgent", "d", 5, Some(9000), 3)).unwrap();
        assert_eq!(b.fill_order(), vec![ih("d"), ih("b"), ih("a"), ih("c")]);
    }

    #[test]
    fn states_eta_and_risk_follow_progress() {
        let mut b = JobBook::in_memory();
        b.put(job("first", "a", 0, Some(100 + 10), 1)).unwrap();
        b.put(job("second", "b", 0, Some(100 + 1000), 2)).unwrap();
        // 100 bytes/s; a has 500 left, b 300: a needs 5 s, b waits for a (8 s)
        let changed = plan(&mut b, &prog(&[("a", 500, 1000), ("b", 0, 300)]), 100.0, 100);
        assert_eq!(changed.len(), 2);
        let (a, s) = (b.get("first").unwrap().clone(), b.get("second").unwrap().clone());
        assert_eq!((a.state, s.state), (JobState::Filling, JobState::Queued));
        assert_eq!((a.eta_secs, s.eta_secs), (Some(5.0), Some(8.0)));
        assert!(!a.at_risk && !s.at_risk);
        // the rate drops to 10 bytes/s: 50 s > the 10 s left
        plan(&mut b, &prog(&[("a", 500, 1000), ("b", 0, 300)]), 10.0, 100);
        let a = b.get("first").unwrap();
        assert!(a.at_risk, "{a:?}");
        assert!(a.reason.as_deref().unwrap_or("").starts_with("at risk"), "{:?}", a.reason);
        // a completes
        plan(&mut b, &prog(&[("a", 1000, 1000), ("b", 10, 300)]), 10.0, 101);
        let (a, s) = (b.get("first").unwrap(), b.get("second").unwrap());
        assert_eq!((a.state, a.ready_at, a.at_risk), (JobState::Ready, Some(101), false));
        assert_eq!(s.state, JobState::Filling);
        assert_eq!(s.bytes_done, 10);
    }

    #[test]
    fn no_rate_means_at_risk_only_with_a_deadline() {
        let mut b = JobBook::in_memory();
        b.put(job("d", "a", 0, Some(500), 1)).unwrap();
        b.put(job("n", "b", 0, None, 1)).unwrap();
        plan(&mut b, &prog(&[("a", 0, 10), ("b", 0, 10)]), 0.0, 100);
        assert!(b.get("d").unwrap().at_risk);
        assert!(!b.get("n").unwrap().at_risk);
    }

    #[test]
    fn ttl_expires_and_final_states_stay() {
        let mut b = JobBook::in_memory();
        let mut j = job("t", "a", 0, None, 100);
        j.ttl_seconds = Some(50);
        b.put(j).unwrap();
        let mut c = job("c", "a", 0, None, 100);
        c.state = JobState::Cancelled;
        b.put(c).unwrap();
        assert!(plan(&mut b, &prog(&[("a", 10, 10)]), 0.0, 120).contains(&"t".to_string()));
        assert_eq!(b.get("t").unwrap().state, JobState::Ready);
        plan(&mut b, &prog(&[("a", 10, 10)]), 0.0, 150);
        assert_eq!(b.get("t").unwrap().state, JobState::Expired);
        assert_eq!(b.get("c").unwrap().state, JobState::Cancelled);
        assert!(plan(&mut b, &prog(&[("a", 10, 10)]), 0.0, 160).is_empty());
    }

    #[test]
    fn evicted_release_fails_the_job() {
        let mut b = JobBook::in_memory();
        b.put(job("e", "a", 0, None, 1)).unwrap();
        plan(&mut b, &prog(&[("a", 10, 10)]), 0.0, 2);
        plan(&mut b, &prog(&[]), 0.0, 3);
        let e = b.get("e").unwrap();
        assert_eq!(e.state, JobState::Failed);
        assert!(e.reason.as_deref().unwrap_or("").contains("evicted"));
    }

    #[test]
    fn jobs_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = popseed_store::Store::open(popseed_store::StoreConfig::new(dir.path())).unwrap();
        let mut b = JobBook::open(store.records("jobs").unwrap()).unwrap();
        b.put(job("x", "a", 3, Some(7), 1)).unwrap();
        store.records("jobs").unwrap().put("junk", b"not json").unwrap();
        drop(b);
        let b = JobBook::open(store.records("jobs").unwrap()).unwrap();
        assert_eq!(b.get("x").unwrap().priority, 3);
        assert_eq!(b.list().len(), 1);
        assert!(store.records("jobs").unwrap().get("junk").unwrap().is_some(), "unreadable records are kept");
    }
}
