//! The device side of the device link: for each configured origin, dial out (venue NAT: the
//! box always dials), present the device certificate, say hello, take the jobs the origin
//! pushes on streams it opens, and send the states of that origin's jobs back whenever they
//! change. Reconnects with backoff for as long as the agent runs.

use std::sync::Arc;
use std::time::Duration;

use popseed_fetch::OriginSpec;
use popseed_origin::proto::CONTROL_ALPN;
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
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = std::time::Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&origin, &device, &hello, &jobs, &shutdown) => r,
        };
        match result {
            Ok(()) => tracing::info!(origin = %origin.name, "device link closed"),
            Err(ControlError::Refused(why)) => {
                // an origin that takes no device links, or does not allow this box: ask again
                // rarely, and say so once
                if backoff < REFUSED_RETRY {
                    tracing::warn!(origin = %origin.name, reason = %why, fingerprint = %device.fingerprint(), "origin refused the device link; retrying every minute");
                }
                backoff = REFUSED_RETRY;
            }
            Err(e) => tracing::warn!(origin = %origin.name, error = %e, "device link down"),
        }
        if started.elapsed() > Duration::from_secs(30) && backoff < REFUSED_RETRY {
            backoff = Duration::from_millis(500);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        if backoff < REFUSED_RETRY {
            backoff = (backoff * 2).min(Duration::from_secs(15));
        }
    }
}

const REFUSED_RETRY: Duration = Duration::from_secs(60);

/// The origin closed the link on purpose (application error `REFUSED`).
fn refusal(e: &quinn::ConnectionError) -> Option<String> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(popseed_origin::proto::code::REFUSED) =>
        {
            Some(String::from_utf8_lossy(&c.reason).into_owned())
        }
        _ => None,
    }
}

fn reports_for(jobs: &JobManager, origin: &str) -> Vec<JobReport> {
    jobs.list()
        .iter()
        .filter(|j| matches!(&j.source, JobSource::Origin { origin: o } if o == origin))
        .map(JobReport::from)
        .collect()
}

async fn session(
    origin: &OriginSpec,
    device: &DeviceIdentity,
    hello: &DeviceHello,
    jobs: &Arc<JobManager>,
    shutdown: &CancellationToken,
) -> Result<(), ControlError> {
    let link_err = |e: &dyn std::fmt::Display| ControlError::Link(e.to_string());
    let cfg = popseed_origin::tls::client_config_for(&origin.trust, CONTROL_ALPN, Some(device.tls_identity()?))
        .map_err(|e| link_err(&e))?;
    let ep = popseed_origin::client::client_endpoint(origin.addr).map_err(|e| link_err(&e))?;
    let connecting = ep.connect_with(cfg, origin.addr, &origin.server_name).map_err(|e| link_err(&e))?;
    let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| ControlError::Link("no answer within 5 s".into()))?
        .map_err(|e| link_err(&e))?;
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
    let link_err = |e: &dyn std::fmt::Display| ControlError::Link(e.to_string());
    let (mut send, _recv) = conn.open_bi().await.map_err(|e| link_err(&e))?;
    let hello = DeviceMsg::Hello { name: hello.name.clone(), version: env!("CARGO_PKG_VERSION").into() };
    send.write_all(&link::encode(&hello)).await.map_err(|e| link_err(&e))?;
    let mut changes = jobs.subscribe();
    let mut last: Option<Vec<JobReport>> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                conn.close(0u32.into(), b"agent stopping");
                return Ok(());
            }
            e = conn.closed() => return Err(link_err(&e)),
            s = conn.accept_bi() => {
                let (tx, rx) = s.map_err(|e| link_err(&e))?;
                let jobs = jobs.clone();
                let name = origin.name.clone();
                tokio::spawn(async move {
                    if let Err(e) = command(tx, rx, &jobs, &name).await {
                        tracing::warn!(origin = %name, error = %e, "origin command failed");
                    }
                });
            }
            _ = changes.changed() => {}
            _ = tick.tick() => {}
        }
        // at most two reports a second, only when something changed
        let now = reports_for(jobs, &origin.name);
        if last.as_ref() != Some(&now) {
            send.write_all(&link::encode(&DeviceMsg::Reports { jobs: now.clone() })).await.map_err(|e| link_err(&e))?;
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
    let buf = rx.read_to_end(MAX_FRAME + 4).await.map_err(|e| ControlError::Link(e.to_string()))?;
    let reply = match link::decode_one::<OriginMsg>(&buf) {
        Err(e) => Reply::Error { reason: e.to_string() },
        Ok(OriginMsg::Push { job }) => {
            let id_hint = job.id.clone().unwrap_or_default();
            match jobs.submit(job, JobSource::Origin { origin: origin.to_owned() }) {
                Ok(j) => Reply::Accepted { id: j.id },
                Err(ControlError::Refused(reason)) => Reply::Refused { id: id_hint, reason },
                Err(e) => Reply::Refused { id: id_hint, reason: e.to_string() },
            }
        }
        Ok(OriginMsg::Cancel { id }) => match jobs.get(&id) {
            Some(j) if matches!(&j.source, JobSource::Origin { origin: o } if o == origin) => match jobs.cancel(&id) {
                Ok(_) => Reply::Cancelled { id },
                Err(e) => Reply::Error { reason: e.to_string() },
            },
            _ => Reply::Error { reason: format!("no job {id} from this origin") },
        },
    };
    tx.write_all(&link::encode(&reply)).await.map_err(|e| ControlError::Link(e.to_string()))?;
    let _ = tx.finish();
    // let the reply reach the origin before the stream is dropped
    let _ = tx.stopped().await;
    Ok(())
}
