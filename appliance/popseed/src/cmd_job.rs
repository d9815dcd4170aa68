//! `popseed job push|list|cancel`: queue prewarm jobs on an origin (for one device or all of
//! them, through the origin's admin API) or directly on a box (its staff API), and with
//! `--wait` follow them with a live progress bar until they are ready or fail.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use popseed_control::{JobSpec, ReleaseSource};
use serde_json::{json, Value};

#[derive(Args)]
pub struct JobArgs {
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Args, Clone)]
pub struct Endpoint {
    /// The origin's admin API (what `popseed origin --admin` prints), e.g. http://127.0.0.1:9443.
    #[arg(long, value_name = "URL", conflicts_with = "appliance", required_unless_present = "appliance")]
    pub origin: Option<String>,
    /// A box's management address (its staff API), e.g. http://10.42.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub appliance: Option<String>,
    /// Bearer token (the origin's admin token or the box's staff token).
    #[arg(long, value_name = "TOKEN", required_unless_present = "token_file")]
    pub token: Option<String>,
    /// File whose first line is the token.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// Queue a prewarm job.
    Push(PushArgs),
    /// List jobs and their states.
    List(Endpoint),
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        at: Endpoint,
        /// The job id.
        id: String,
    },
}

#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub at: Endpoint,
    /// The device (its fingerprint, SHA256:...), when pushing through an origin.
    #[arg(long, value_name = "FINGERPRINT", conflicts_with = "all")]
    pub device: Option<String>,
    /// Every device on the origin's allow-list.
    #[arg(long)]
    pub all: bool,
    /// The release directory (manifest.json + release.torrent) to send.
    #[arg(long, value_name = "DIR", conflicts_with = "infohash", required_unless_present = "infohash")]
    pub release: Option<PathBuf>,
    /// Instead of --release: the box asks its origins for the release with this infohash.
    #[arg(long, value_name = "HEX")]
    pub infohash: Option<popseed_core::InfoHash>,
    /// A label for the job.
    #[arg(long)]
    pub name: Option<String>,
    /// A job id (default: generated).
    #[arg(long)]
    pub id: Option<String>,
    /// Ready by: an RFC 3339 time (2026-11-22T09:00:00Z) or a duration from now (2h, 30min).
    #[arg(long, value_name = "WHEN")]
    pub deadline: Option<String>,
    /// Higher goes first; equal priorities go earliest deadline first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Keep the release on the box until the job is cancelled or its ttl passes.
    #[arg(long)]
    pub pin: bool,
    /// After this long the release may be evicted (e.g. 30d).
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Show a progress bar until the job is ready (exit 0) or fails (exit 1).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "6h")]
    pub timeout: String,
}

struct Api {
    base: String,
    token: String,
    origin: bool,
}

impl Api {
    fn new(at: &Endpoint) -> Result<Api> {
        let token = match (&at.token, &at.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
            (None, None) => bail!("give --token or --token-file"),
        };
        let (base, origin) = match (&at.origin, &at.appliance) {
            (Some(o), _) => (o.trim_end_matches('/').to_owned(), true),
            (None, Some(a)) => (a.trim_end_matches('/').to_owned(), false),
            (None, None) => bail!("give --origin or --appliance"),
        };
        Ok(Api { base, token, origin })
    }

    fn jobs_url(&self) -> String {
        format!("{}/{}", self.base, if self.origin { "admin/jobs" } else { "api/jobs" })
    }

    fn call(&self, method: &str, url: &str, body: Option<Value>) -> Result<Value> {
        let req = ureq::request(method, url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(Duration::from_secs(15));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => r.into_json::<Value>().with_context(|| format!("{url}: the answer is not JSON")),
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                let reason = v
                    .get("reason")
                    .and_then(Value::as_str)
                    .or_else(|| v.get("error").and_then(Value::as_str))
                    .unwrap_or("");
                match code {
                    401 => bail!("{url}: 401 unauthorized: wrong or missing token"),
                    _ => bail!("{url}: {code}: {reason}"),
                }
            }
            Err(e) => Err(anyhow!("{url}: {e}")),
        }
    }
}

fn parse_deadline(s: &str) -> Result<u64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    }
    let d = humantime::parse_duration(s.trim_start_matches('+'))
        .map_err(|_| anyhow!("--deadline {s:?}: give an RFC 3339 time (2026-11-22T09:00:00Z) or a duration (2h)"))?;
    Ok((std::time::SystemTime::now() + d).duration_since(std::time::UNIX_EPOCH).map(|x| x.as_secs()).unwrap_or(0))
}

pub fn run(a: JobArgs) -> Result<()> {
    match a.command {
        JobCommand::Push(p) => push(p),
        JobCommand::List(at) => {
            let api = Api::new(&at)?;
            let v = api.call("GET", &api.jobs_url(), None)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        JobCommand::Cancel { at, id } => {
            let api = Api::new(&at)?;
            api.call("DELETE", &format!("{}/{id}", api.jobs_url()), None)?;
            println!("job {id} cancelled");
            Ok(())
        }
    }
}

fn push(p: PushArgs) -> Result<()> {
    let api = Api::new(&p.at)?;
    if api.origin && p.device.is_none() && !p.all {
        bail!("through an origin, give --device FINGERPRINT or --all");
    }
    if !api.origin && (p.device.is_some() || p.all) {
        bail!("--device and --all are for --origin; --appliance talks to one box");
    }
    let release = match (&p.release, &p.infohash) {
        (Some(dir), _) => {
            let m = dir.join(popseed_release::MANIFEST_FILE);
            let t = dir.join(popseed_release::TORRENT_FILE);
            let mb = std::fs::read(&m).with_context(|| format!("reading {}", m.display()))?;
            let tb = std::fs::read(&t).with_context(|| format!("reading {}", t.display()))?;
            ReleaseSource::Inline { manifest_b64: STANDARD.encode(mb), torrent_b64: STANDARD.encode(tb) }
        }
        (None, Some(ih)) => ReleaseSource::Origin { infohash: *ih },
        (None, None) => bail!("give --release DIR or --infohash HEX"),
    };
    let ttl_seconds = p
        .ttl
        .as_deref()
        .map(|t| humantime::parse_duration(t).map(|d| d.as_secs()).map_err(|e| anyhow!("--ttl {t:?}: {e}")))
        .transpose()?;
    let spec = JobSpec {
        id: p.id.clone(),
        name: p.name.clone(),
        release,
        deadline: p.deadline.as_deref().map(parse_deadline).transpose()?,
        priority: p.priority,
        pin: p.pin,
        ttl_seconds,
    };
    let timeout = humantime::parse_duration(&p.timeout).map_err(|e| anyhow!("--timeout {:?}: {e}", p.timeout))?;
    let body = if api.origin {
        json!({"device": p.device, "all": p.all, "job": spec, "name": p.name})
    } else {
        serde_json::to_value(&spec)?
    };
    let v = api.call("POST", &api.jobs_url(), Some(body))?;
    let id = v.get("id").and_then(Value::as_str).ok_or_else(|| anyhow!("the answer has no job id: {v}"))?.to_owned();
    println!("job {id} queued");
    if p.wait {
        wait(&api, &id, timeout)
    } else {
        Ok(())
    }
}

/// One device's (or the box's) view of the job, from either API's JSON.
struct Seen {
    who: String,
    state: String,
    reason: Option<String>,
    done: u64,
    total: u64,
    eta: Option<f64>,
}

fn seen(api: &Api, v: &Value) -> Vec<Seen> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    if !api.origin {
        return vec![Seen {
            who: "box".into(),
            state: s(v, "state").unwrap_or_default(),
            reason: s(v, "reason"),
            done: n(v, "bytes_done"),
            total: n(v, "bytes_total"),
            eta: v.get("eta_secs").and_then(Value::as_f64),
        }];
    }
    let devices = v.get("devices").and_then(Value::as_array).cloned().unwrap_or_default();
    devices
        .iter()
        .map(|d| {
            let label = s(d, "label").filter(|l| !l.is_empty()).or_else(|| s(d, "device")).unwrap_or_default();
            let report = d.get("report").filter(|r| !r.is_null());
            let (state, reason, done, total, eta) = match (s(d, "delivery").as_deref(), report) {
                (Some("refused"), _) => ("refused".into(), s(d, "reason"), 0, 0, None),
                (_, Some(r)) => (
                    s(r, "state").unwrap_or_default(),
                    s(r, "reason"),
                    n(r, "bytes_done"),
                    n(r, "bytes_total"),
                    r.get("eta_secs").and_then(Value::as_f64),
                ),
                (_, None) if d.get("connected").and_then(Value::as_bool) == Some(false) => {
                    ("waiting for the device to link".into(), None, 0, 0, None)
                }
                _ => ("pushing".into(), None, 0, 0, None),
            };
            Seen { who: label, state, reason, done, total, eta }
        })
        .collect()
}

fn wait(api: &Api, id: &str, timeout: Duration) -> Result<()> {
    let url = format!("{}/{id}", api.jobs_url());
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let started = Instant::now();
    loop {
        let v = api.call("GET", &url, None)?;
        let all = seen(api, &v);
        if all.is_empty() {
            bail!("job {id} targets no device (is the origin's allow-list empty?)");
        }
        for d in &all {
            let bar = bars.entry(d.who.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(0));
                b.set_style(style.clone());
                b.set_prefix(d.who.chars().take(16).collect::<String>());
                b
            });
            bar.set_length(d.total.max(1));
            bar.set_position(d.done);
            let eta = d.eta.filter(|e| *e > 0.0).map(|e| format!(" ETA {e:.0}s")).unwrap_or_default();
            bar.set_message(format!(
                "{}{}{}",
                d.state,
                eta,
                d.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        }
        let failed: Vec<&Seen> =
            all.iter().filter(|d| matches!(d.state.as_str(), "failed" | "refused" | "cancelled" | "expired")).collect();
        if !failed.is_empty() {
            for b in bars.values() {
                b.abandon();
            }
            let why: Vec<String> = failed
                .iter()
                .map(|d| {
                    format!("{}: {}{}", d.who, d.state, d.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())
                })
                .collect();
            bail!("job {id} did not complete: {}", why.join("; "));
        }
        if all.iter().all(|d| d.state == "ready") {
            for b in bars.values() {
                b.finish();
            }
            println!("job {id} ready on {} device{}", all.len(), if all.len() == 1 { "" } else { "s" });
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("job {id}: not ready after {}", humantime::format_duration(timeout));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
