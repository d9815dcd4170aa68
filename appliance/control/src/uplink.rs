//! The device side of the device link: for each configured origin, dial out (venue NAT: the
//! box always dials), present the device certificate, say hello, take the jobs the origin
//! pushes on streams it opens, and send the states of that origin's jobs back whenever they
//! change. Reconnects with backoff for as long as the agent runs.

use std::sync::Arc;
use std::time::Duration;

use popseed_core::{chain, Backoff};
use popseed_origin::connect::refusal;
use popseed_origin::{OriginConnector, OriginSpec, DEFAULT_CONNECT_TIMEOUT};
use tokio_util::sync::CancellationToken;

use crate::error::ControlError;
use crate::identity::DeviceIdentity;
use crate::job::{JobReport, JobSource};
use crate::link::{self, DeviceMsg, OriginMsg, Reply, MAX_FRAME};
use crate::manager::JobManager;

/// What the device says about itself.
#[derive(Debug, Clone)]
pub struct DeviceHello {
    pub name: String,
}

/// Keeps a link to `origin` until `shutdown`.
pub async fn run(
    origin: OriginSpec,
    device: Arc<DeviceIdentity>,
    hello: DeviceHello,
    jobs: Arc<JobManager>,
    shutdown: CancellationToken,
) {
    let connector = match device.tls_identity().and_then(|id| {
        OriginConnector::device_link(origin.clone(), id, DEFAULT_CONNECT_TIMEOUT).map_err(ControlError::Dial)
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(origin = %origin.name, error = %chain(&e), "cannot set up the device link");
            return;
        }
    };
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut refused_before = false;
    loop {
        let started = std::time::Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&connector, &hello, &jobs, &shutdown) => r,
        };
        if started.elapsed() > STABLE_LINK {
            backoff.reset();
        }
        let delay = match result {
            Ok(()) => {
                tracing::info!(origin = %origin.name, "device link closed");
                backoff.next_delay()
            }
            Err(ControlError::Refused(why)) => {
                // an origin that takes no device links, or does not allow this box: ask again
                // rarely, and say so once
                if !refused_before {
                    tracing::warn!(origin = %origin.name, reason = %why, fingerprint = %device.fingerprint(), "origin refused the device link; retrying every minute");
                    refused_before = true;
                }
                REFUSED_RETRY
            }
            Err(e) => {
                tracing::warn!(origin = %origin.name, error = %chain(&e), "device link down");
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// First wait before dialling an origin again; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// A link that stayed up this long starts the backoff over.
const STABLE_LINK: Duration = Duration::from_secs(30);
/// How often an origin that refused the link is asked again.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// How often at most the box sends its job reports (only when they changed).
const REPORT_INTERVAL: Duration = Duration::from_millis(500);

fn reports_for(jobs: &JobManager, origin: &str) -> Vec<JobReport> {
    jobs.list()
        .iter()
        .filter(|j| matches!(&j.source, JobSource::Origin { origin: o } if o == origin))
        .map(JobReport::from)
        .collect()
}

async fn session(
    connector: &OriginConnector,
    hello: &DeviceHello,
    jobs: &Arc<JobManager>,
    shutdown: &CancellationToken,
) -> Result<(), ControlError> {
    let origin = connector.spec();
    let conn = match connector.connect_raw().await {
        Ok(c) => c,
        Err(popseed_origin::OriginError::Handshake { source, .. }) if refusal(&source).is_some() => {
            return Err(ControlError::Refused(refusal(&source).unwrap_or_default()));
        }
        Err(e) => return Err(ControlError::Dial(e)),
    };
    tracing::info!(origin = %origin.name, "device link up");
    let r = serve_link(&conn, origin, hello, jobs, shutdown).await;
    // whatever failed first, a deliberate close by the origin is the real story
    match conn.close_reason().as_ref().and_then(refusal) {
        Some(why) => Err(ControlError::Refused(why)),
        None => r,
    }
}

async fn serve_link(
    conn: &quinn::Connection,
    origin: &OriginSpec,
    hello: &DeviceHello,
    jobs: &Arc<JobManager>,
    shutdown: &CancellationToken,
) -> Result<(), ControlError> {
    let (mut send, _recv) = conn.open_bi().await?;
    let hello = DeviceMsg::Hello { name: hello.name.clone(), version: env!("CARGO_PKG_VERSION").into() };
    send.write_all(&link::encode(&hello)).await?;
    let mut changes = jobs.subscribe();
    let mut last: Option<Vec<JobReport>> = None;
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                conn.close(0u32.into(), b"agent stopping");
                return Ok(());
            }
            e = conn.closed() => return Err(ControlError::Connection(e)),
            s = conn.accept_bi() => {
                let (tx, rx) = s?;
                let jobs = jobs.clone();
                let name = origin.name.clone();
                tokio::spawn(async move {
                    if let Err(e) = command(tx, rx, &jobs, &name).await {
                        tracing::warn!(origin = %name, error = %chain(&e), "origin command failed");
                    }
                });
            }
            _ = changes.changed() => {}
            _ = tick.tick() => {}
        }
        // at most two reports a second, only when something changed
        let now = reports_for(jobs, &origin.name);
        if last.as_ref() != Some(&now) {
            send.write_all(&link::encode(&DeviceMsg::Reports { jobs: now.clone() })).await?;
            last = Some(now);
        }
    }
}

/// One origin command: read it whole, act, reply.
async fn command(
    mut tx: quinn::SendStream,
    mut rx: quinn::RecvStream,
    jobs: &Arc<JobManager>,
    origin: &str,
) -> Result<(), ControlError> {
    let buf = rx.read_to_end(MAX_FRAME + 4).await?;
    let reply = match link::decode_one::<OriginMsg>(&buf) {
        Err(e) => Reply::Error { reason: chain(&e).to_string() },
        Ok(OriginMsg::Push { job }) => {
            let id_hint = job.id.clone().unwrap_or_default();
            match jobs.submit(job, JobSource::Origin { origin: origin.to_owned() }) {
                Ok(j) => Reply::Accepted { id: j.id },
                Err(ControlError::Refused(reason)) => Reply::Refused { id: id_hint, reason },
                Err(e) => Reply::Refused { id: id_hint, reason: chain(&e).to_string() },
            }
        }
        Ok(OriginMsg::Cancel { id }) => match jobs.get(&id) {
            Some(j) if matches!(&j.source, JobSource::Origin { origin: o } if o == origin) => match jobs.cancel(&id) {
                Ok(_) => Reply::Cancelled { id },
                Err(e) => Reply::Error { reason: chain(&e).to_string() },
            },
            _ => Reply::Error { reason: format!("no job {id} from this origin") },
        },
    };
    tx.write_all(&link::encode(&reply)).await?;
    let _ = tx.finish();
    // let the reply reach the origin before the stream is dropped
    let _ = tx.stopped().await;
    Ok(())
}
