//! The origin side of the device link: which devices may link (an allow-list of device
//! fingerprints), the jobs queued for one device or for all, pushing them to each device on
//! streams the origin opens, and what each device reports back (accepted or refused with the
//! reason, then its job states). The admin HTTP API ([`crate::api::admin_router`]) reads and
//! feeds it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use popseed_core::{chain, unix_now};
use popseed_origin::connect::refuse;
use popseed_origin::ControlAcceptor;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::ControlError;
use crate::identity::cert_fingerprint;
use crate::job::{new_id, JobReport, JobSpec};
use crate::link::{self, DeviceMsg, FrameReader, OriginMsg, Reply};

/// Whom a job is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// One device, by fingerprint.
    Device(String),
    /// Every allowed device, including ones that link later.
    All,
}

/// How a job's delivery to one device went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "delivery", rename_all = "lowercase")]
pub enum Delivery {
    /// Not yet taken by the device (it is not linked, or the push is under way).
    Pending,
    Accepted,
    Refused {
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceJob {
    pub device: String,
    pub label: String,
    pub connected: bool,
    #[serde(flatten)]
    pub delivery: Delivery,
    /// The device's latest report on this job.
    pub report: Option<JobReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub target: Target,
    pub created: u64,
    pub cancelled: bool,
    pub devices: Vec<DeviceJob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    pub fingerprint: String,
    pub label: String,
    pub allowed: bool,
    pub connected: bool,
    /// The name the device gave in its hello.
    pub name: Option<String>,
    pub last_seen: Option<u64>,
    /// Why its last link attempt was refused (devices not on the allow-list).
    pub refused: Option<String>,
}

struct Queued {
    id: String,
    name: String,
    target: Target,
    spec: JobSpec,
    created: u64,
    cancelled: bool,
}

#[derive(Default)]
struct Device {
    name: Option<String>,
    links: usize,
    last_seen: Option<u64>,
    refused: Option<String>,
    delivery: HashMap<String, Delivery>,
    cancel_sent: HashMap<String, bool>,
    reports: HashMap<String, JobReport>,
}

#[derive(Default)]
struct State {
    jobs: Vec<Queued>,
    devices: BTreeMap<String, Device>,
    /// Refused devices forgotten to stay within [`MAX_REFUSED_REMEMBERED`].
    refused_forgotten: u64,
}

/// Devices not on the allow-list the origin remembers (for the admin API); past this, the one
/// seen longest ago is forgotten, so a stranger with fresh keys cannot grow the origin's memory.
pub const MAX_REFUSED_REMEMBERED: usize = 256;

impl State {
    /// Notes a refused link from `fp`, forgetting the oldest refused device when over the cap.
    fn remember_refused(&mut self, fp: &str, allow: &BTreeMap<String, String>, now: u64) {
        let d = self.devices.entry(fp.to_owned()).or_default();
        d.last_seen = Some(now);
        d.refused = Some("not on this origin's allow-list".into());
        let refused: Vec<(&String, Option<u64>)> =
            self.devices.iter().filter(|(k, _)| !allow.contains_key(*k)).map(|(k, d)| (k, d.last_seen)).collect();
        if refused.len() > MAX_REFUSED_REMEMBERED {
            if let Some(oldest) =
                refused.iter().filter(|(k, _)| k.as_str() != fp).min_by_key(|(_, t)| *t).map(|(k, _)| (*k).clone())
            {
                self.devices.remove(&oldest);
                self.refused_forgotten += 1;
            }
        }
    }
}

pub struct ControlHub {
    allow: BTreeMap<String, String>,
    state: Mutex<State>,
    version: watch::Sender<u64>,
}

impl ControlHub {
    /// `allow`: device fingerprint (`SHA256:...`) -> a label for people.
    pub fn new(allow: BTreeMap<String, String>) -> Arc<Self> {
        Arc::new(ControlHub { allow, state: Mutex::new(State::default()), version: watch::channel(0).0 })
    }

    /// Reads an allow-list file: one device per line, `SHA256:... [label]`; `#` comments.
    pub fn parse_allow_list(text: &str) -> Result<BTreeMap<String, String>, ControlError> {
        let mut out = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (fp, label) = line.split_once(char::is_whitespace).map(|(a, b)| (a, b.trim())).unwrap_or((line, ""));
            if !fp.starts_with("SHA256:") || fp.len() != 50 {
                return Err(ControlError::BadJob(format!(
                    "line {}: {fp:?} is not a device fingerprint (SHA256:... as the agent prints)",
                    n + 1
                )));
            }
            out.insert(fp.to_owned(), if label.is_empty() { fp[7..15].to_owned() } else { label.to_owned() });
        }
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Bumps when anything changes (jobs queued, deliveries, reports).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Queues a job; returns its id (the same on every device).
    pub fn queue(&self, target: Target, mut spec: JobSpec, name: String) -> Result<String, ControlError> {
        if let Target::Device(d) = &target {
            if !self.allow.contains_key(d) {
                return Err(ControlError::BadJob(format!("device {d} is not on this origin's allow-list")));
            }
        }
        let id = spec.id.clone().unwrap_or_else(new_id);
        spec.id = Some(id.clone());
        let mut st = self.lock();
        if st.jobs.iter().any(|j| j.id == id) {
            return Err(ControlError::BadJob(format!("a job with id {id} is already queued")));
        }
        st.jobs.push(Queued { id: id.clone(), name, target, spec, created: unix_now(), cancelled: false });
        drop(st);
        tracing::info!(job = %id, "job queued for push");
        self.bump();
        Ok(id)
    }

    pub fn cancel(&self, id: &str) -> Result<(), ControlError> {
        let mut st = self.lock();
        let j = st.jobs.iter_mut().find(|j| j.id == id).ok_or_else(|| ControlError::NoSuchJob(id.into()))?;
        j.cancelled = true;
        drop(st);
        self.bump();
        Ok(())
    }

    fn targets(&self, t: &Target) -> Vec<String> {
        match t {
            Target::Device(d) => vec![d.clone()],
            Target::All => self.allow.keys().cloned().collect(),
        }
    }

    pub fn jobs(&self) -> Vec<JobView> {
        let st = self.lock();
        st.jobs
            .iter()
            .map(|j| JobView {
                id: j.id.clone(),
                name: j.name.clone(),
                target: j.target.clone(),
                created: j.created,
                cancelled: j.cancelled,
                devices: self
                    .targets(&j.target)
                    .into_iter()
                    .map(|fp| {
                        let d = st.devices.get(&fp);
                        DeviceJob {
                            label: self.allow.get(&fp).cloned().unwrap_or_default(),
                            connected: d.is_some_and(|d| d.links > 0),
                            delivery: d.and_then(|d| d.delivery.get(&j.id).cloned()).unwrap_or(Delivery::Pending),
                            report: d.and_then(|d| d.reports.get(&j.id).cloned()),
                            device: fp,
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    pub fn devices(&self) -> Vec<DeviceView> {
        let st = self.lock();
        let mut out: Vec<DeviceView> = self
            .allow
            .iter()
            .map(|(fp, label)| {
                let d = st.devices.get(fp);
                DeviceView {
                    fingerprint: fp.clone(),
                    label: label.clone(),
                    allowed: true,
                    connected: d.is_some_and(|d| d.links > 0),
                    name: d.and_then(|d| d.name.clone()),
                    last_seen: d.and_then(|d| d.last_seen),
                    refused: None,
                }
            })
            .collect();
        for (fp, d) in st.devices.iter().filter(|(fp, _)| !self.allow.contains_key(*fp)) {
            out.push(DeviceView {
                fingerprint: fp.clone(),
                label: String::new(),
                allowed: false,
                connected: false,
                name: d.name.clone(),
                last_seen: d.last_seen,
                refused: d.refused.clone(),
            });
        }
        out
    }

    /// The commands `device` still has to receive.
    fn outstanding(&self, device: &str) -> Vec<(String, OriginMsg)> {
        let st = self.lock();
        let d = st.devices.get(device);
        let mut out = Vec::new();
        for j in &st.jobs {
            if !self.targets(&j.target).iter().any(|t| t == device) {
                continue;
            }
            let delivered = d.and_then(|d| d.delivery.get(&j.id)).is_some_and(|x| *x != Delivery::Pending);
            if j.cancelled {
                let accepted = d.and_then(|d| d.delivery.get(&j.id)) == Some(&Delivery::Accepted);
                let sent = d.and_then(|d| d.cancel_sent.get(&j.id)).copied().unwrap_or(false);
                if accepted && !sent {
                    out.push((j.id.clone(), OriginMsg::Cancel { id: j.id.clone() }));
                }
            } else if !delivered {
                out.push((j.id.clone(), OriginMsg::Push { job: j.spec.clone() }));
            }
        }
        out
    }

    fn record_reply(&self, device: &str, job: &str, reply: Reply) {
        let mut st = self.lock();
        let d = st.devices.entry(device.to_owned()).or_default();
        match reply {
            Reply::Accepted { .. } => {
                d.delivery.insert(job.to_owned(), Delivery::Accepted);
            }
            Reply::Refused { reason, .. } => {
                tracing::warn!(job = %job, device = %device, reason = %reason, "device refused the job");
                d.delivery.insert(job.to_owned(), Delivery::Refused { reason });
            }
            Reply::Cancelled { .. } => {
                d.cancel_sent.insert(job.to_owned(), true);
            }
            Reply::Error { reason } => {
                tracing::warn!(job = %job, device = %device, reason = %reason, "device could not take the command");
                d.cancel_sent.insert(job.to_owned(), true);
            }
        }
        drop(st);
        self.bump();
    }

    async fn serve_device(self: Arc<Self>, conn: quinn::Connection) {
        let fp = match conn
            .peer_identity()
            .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|c| c.first().cloned())
        {
            None => {
                refuse(&conn, "a device certificate is required");
                return;
            }
            Some(cert) => match cert_fingerprint(&cert) {
                Ok(fp) => fp,
                Err(e) => {
                    refuse(&conn, &chain(&e).to_string());
                    return;
                }
            },
        };
        if !self.allow.contains_key(&fp) {
            tracing::warn!(device = %fp, "device not on the allow-list; link refused");
            let mut st = self.lock();
            st.remember_refused(&fp, &self.allow, unix_now());
            drop(st);
            self.bump();
            refuse(&conn, "device not on this origin's allow-list");
            return;
        }
        {
            let mut st = self.lock();
            let d = st.devices.entry(fp.clone()).or_default();
            d.links += 1;
            d.last_seen = Some(unix_now());
        }
        self.bump();
        tracing::info!(device = %fp, "device linked");
        if let Err(e) = self.clone().device_session(&conn, &fp).await {
            tracing::info!(device = %fp, error = %chain(&e), "device link ended");
        }
        {
            let mut st = self.lock();
            if let Some(d) = st.devices.get_mut(&fp) {
                d.links = d.links.saturating_sub(1);
                d.last_seen = Some(unix_now());
            }
        }
        self.bump();
    }

    async fn device_session(self: Arc<Self>, conn: &quinn::Connection, fp: &str) -> Result<(), ControlError> {
        let (_send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
            .await
            .map_err(|_| ControlError::Timeout("no hello within 10 s"))??;
        // reports from the device
        let me = self.clone();
        let dev = fp.to_owned();
        let reader = tokio::spawn(async move {
            let mut frames = FrameReader::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match recv.read(&mut buf).await {
                    Ok(Some(n)) => n,
                    Ok(None) | Err(_) => return,
                };
                frames.push(&buf[..n]);
                loop {
                    match frames.next_message::<DeviceMsg>() {
                        Ok(Some(m)) => me.device_msg(&dev, m),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(device = %dev, error = %popseed_core::chain(&e), "bad message from device");
                            return;
                        }
                    }
                }
            }
        });
        let mut changes = self.subscribe();
        let mut retry = tokio::time::interval(Duration::from_secs(5));
        let result = loop {
            for (job, msg) in self.outstanding(fp) {
                match push(conn, &msg).await {
                    Ok(reply) => self.record_reply(fp, &job, reply),
                    Err(e) => log_push_failure(&e),
                }
                if conn.close_reason().is_some() {
                    break;
                }
            }
            tokio::select! {
                e = conn.closed() => break Err(ControlError::Connection(e)),
                c = changes.changed() => if c.is_err() { break Ok(()) },
                _ = retry.tick() => {}
            }
        };
        reader.abort();
        result
    }

    fn device_msg(&self, fp: &str, m: DeviceMsg) {
        let mut st = self.lock();
        let d = st.devices.entry(fp.to_owned()).or_default();
        d.last_seen = Some(unix_now());
        match m {
            DeviceMsg::Hello { name, version } => {
                tracing::info!(device = %fp, name = %name, version = %version, "device hello");
                d.name = Some(name);
            }
            DeviceMsg::Reports { jobs } => {
                for r in jobs {
                    // the report settles a delivery whose reply was lost
                    let settled = match r.reason.as_deref().and_then(|x| x.strip_prefix("refused: ")) {
                        Some(reason) if r.state == crate::job::JobState::Failed => {
                            Delivery::Refused { reason: reason.to_owned() }
                        }
                        _ => Delivery::Accepted,
                    };
                    if matches!(d.delivery.get(&r.id), None | Some(Delivery::Pending)) {
                        d.delivery.insert(r.id.clone(), settled);
                    }
                    d.reports.insert(r.id.clone(), r);
                }
            }
        }
        drop(st);
        self.bump();
    }
}

fn log_push_failure(e: &ControlError) {
    tracing::debug!(error = %chain(e), "push failed; retried on the next change or link");
}

/// How long a new device link may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a device may take to answer a pushed command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest reply read from a device.
const MAX_REPLY: usize = 1 << 20;

/// Sends one command on a new stream and reads the reply.
async fn push(conn: &quinn::Connection, msg: &OriginMsg) -> Result<Reply, ControlError> {
    let (mut tx, mut rx) = conn.open_bi().await?;
    tx.write_all(&link::encode(msg)).await?;
    let _ = tx.finish();
    let buf = tokio::time::timeout(REPLY_TIMEOUT, rx.read_to_end(MAX_REPLY))
        .await
        .map_err(|_| ControlError::Timeout("no reply within 30 s"))??;
    Ok(link::decode_one::<Reply>(&buf)?)
}

/// With `popseed origin --require-device`: pieces go only to boxes on the allow-list, known by
/// the device certificate they show.
impl popseed_origin::ClientGate for ControlHub {
    fn admits(&self, cert: Option<&CertificateDer<'_>>) -> bool {
        cert.and_then(|c| cert_fingerprint(c).ok()).is_some_and(|fp| self.allow.contains_key(&fp))
    }
}

/// Hands an origin's device-link connections to a hub.
pub struct HubAcceptor(pub Arc<ControlHub>);

impl ControlAcceptor for HubAcceptor {
    fn serve(&self, conn: quinn::Connection) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.0.clone().serve_device(conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_devices_are_remembered_up_to_a_bound() {
        let allow: BTreeMap<String, String> = [("SHA256:good".to_owned(), "box".to_owned())].into();
        let mut st = State::default();
        st.devices.entry("SHA256:good".into()).or_default().last_seen = Some(0);
        for i in 0..(MAX_REFUSED_REMEMBERED as u64 + 1000) {
            st.remember_refused(&format!("SHA256:stranger{i}"), &allow, 10 + i);
        }
        let refused = st.devices.keys().filter(|k| !allow.contains_key(*k)).count();
        assert_eq!(refused, MAX_REFUSED_REMEMBERED, "a stranger with fresh keys cannot grow the origin's memory");
        assert_eq!(st.refused_forgotten, 1000);
        assert!(st.devices.contains_key("SHA256:good"), "allowed devices are never forgotten");
        let last = format!("SHA256:stranger{}", MAX_REFUSED_REMEMBERED as u64 + 999);
        assert!(st.devices.contains_key(&last), "the newest refusal is kept");
        assert!(!st.devices.contains_key("SHA256:stranger0"), "the oldest refusal went first");
    }
}
