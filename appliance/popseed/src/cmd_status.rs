//! `popseed status --appliance URL --token T`: asks a box's management address for
//! `/api/status` and prints the summary an event team needs (READY / NOT READY and why, jobs,
//! store, rates, clients, recent errors). Exit 0 when ready; 1 when not ready, unreachable or
//! the token is refused.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use popseed_status::report::summary_text;
use popseed_status::StatusReport;

#[derive(Args)]
pub struct StatusArgs {
    /// The box's management address, e.g. `http://10.42.0.1:8080` (its `[control] listen`).
    #[arg(long, value_name = "URL")]
    pub appliance: String,
    /// The staff token from the box's provisioning file.
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
    /// Print the JSON report (as `/api/status` returns it) instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Give up after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// `http://host:port` (a bare `host:port` gets `http://`) + `/api/status`.
fn status_url(appliance: &str) -> String {
    let base = appliance.trim().trim_end_matches('/');
    if base.contains("://") {
        format!("{base}/api/status")
    } else {
        format!("http://{base}/api/status")
    }
}

pub fn run(a: StatusArgs) -> Result<()> {
    let url = status_url(&a.appliance);
    let agent = ureq::AgentBuilder::new().timeout(a.timeout).build();
    let (code, body) = match agent.get(&url).set("Authorization", &format!("Bearer {}", a.token)).call() {
        Ok(r) => {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut r.into_reader(), &mut body)
                .map_err(|e| anyhow!("reading the answer from {url}: {e}"))?;
            (200u16, body)
        }
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default().into_bytes()),
        Err(e) => bail!("cannot reach the appliance at {url}: {e}"),
    };
    match code {
        200 => {}
        401 => bail!("the appliance at {url} refused the token (401)"),
        403 => bail!("the appliance at {url} has no staff token configured (403): its dashboard and API are off"),
        c => bail!("the appliance at {url} answered HTTP {c}: {}", String::from_utf8_lossy(&body).trim()),
    }
    let report: StatusReport =
        serde_json::from_slice(&body).with_context(|| format!("the answer from {url} is not a status report"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary_text(&report));
    }
    if report.ready {
        Ok(())
    } else {
        bail!("not ready: {}", report.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(status_url("http://10.0.0.1:8080/"), "http://10.0.0.1:8080/api/status");
        assert_eq!(status_url("10.0.0.1:8080"), "http://10.0.0.1:8080/api/status");
    }
}
