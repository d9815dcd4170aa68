//! The operator dashboard: one server-rendered page (maud) with inline CSS, inline SVG
//! sparklines and a few lines of inline script that re-fetch the live part every two seconds
//! (a meta refresh without script). No external resource. The banner says READY or NOT READY
//! and why, big enough to read across a room; below it the jobs with progress and ETA, the
//! store, live rates, peers, portal clients, origins and recent errors. Also the login form.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use popseed_core::{ByteSize, JobState};

use crate::report::{fmt_deadline, fmt_eta, StatusReport};
use crate::samples::sparkline;

/// Content-Security-Policy of every page here.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; \
img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Seconds between live refreshes.
pub const REFRESH_SECS: u32 = 2;

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f3f4f6;color:#111827}
header{display:flex;flex-wrap:wrap;gap:.3em 1em;align-items:baseline;padding:.6em 1em;background:#111827;color:#e5e7eb}
header h1{font-size:1.1em;margin:0}
header .meta{font-size:.85em;color:#9ca3af}
header form{margin-left:auto}
header button{background:none;border:1px solid #4b5563;color:#e5e7eb;border-radius:4px;padding:.15em .6em;cursor:pointer}
main{max-width:1100px;margin:0 auto;padding:1em}
.banner{border-radius:10px;padding:1em 1.2em;color:#fff;margin-bottom:1em}
.banner.ready{background:#15803d}
.banner.notready{background:#b91c1c}
.banner .word{font-size:3em;font-weight:800;letter-spacing:.02em;line-height:1}
.banner .why{font-size:1.25em;margin-top:.35em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(250px,1fr));gap:1em;margin-bottom:1em}
.card{background:#fff;border-radius:8px;padding:.8em 1em;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card h2{font-size:.8em;text-transform:uppercase;letter-spacing:.06em;color:#6b7280;margin:0 0 .4em}
.big{font-size:1.6em;font-weight:700}
.sub{color:#6b7280;font-size:.85em}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:.35em .4em;border-bottom:1px solid #e5e7eb;vertical-align:top}
th{font-size:.75em;text-transform:uppercase;color:#6b7280}
.bar{height:10px;background:#e5e7eb;border-radius:5px;overflow:hidden;min-width:80px}
.bar>span{display:block;height:100%;background:#2563eb}
.state{font-weight:600;white-space:nowrap}
.s-ready{color:#15803d}.s-failed{color:#b91c1c}.s-filling{color:#1d4ed8}.s-queued{color:#6b7280}
.s-expired,.s-cancelled{color:#9ca3af}
.risk{background:#fef3c7;color:#92400e;border-radius:4px;padding:0 .35em;font-size:.8em;font-weight:700}
.spark{display:block;width:100%;height:40px}
.spark .area{fill:#bfdbfe}.spark .line{fill:none;stroke:#2563eb;stroke-width:1.5}.spark .base{stroke:#d1d5db}
.out .spark .area{fill:#bbf7d0}.out .spark .line{stroke:#15803d}
.errors li{font-family:ui-monospace,monospace;font-size:.82em;margin:.25em 0;word-break:break-word}
.errors .lvl-ERROR{color:#b91c1c;font-weight:700}.errors .lvl-WARN{color:#b45309;font-weight:700}
.muted{color:#9ca3af}
.login{max-width:360px;margin:10vh auto;background:#fff;padding:1.5em;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.1)}
.login input{width:100%;font-size:1.1em;padding:.4em;margin:.5em 0}
.login button{font-size:1.1em;padding:.4em 1em}
.login .err{color:#b91c1c}
"#;

const SCRIPT: &str = r#"
(function(){
  var live=document.getElementById('live');
  function tick(){
    fetch('/dashboard/live',{credentials:'same-origin',cache:'no-store'}).then(function(r){
      if(r.status===401){location.reload();return null;}
      return r.ok?r.text():null;
    }).then(function(t){ if(t!==null&&t!==undefined){live.innerHTML=t;} }).catch(function(){
      var s=document.getElementById('updated'); if(s){s.textContent='appliance unreachable';}
    });
  }
  setInterval(tick, REFRESH_MS);
})();
"#;

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn state_cell(state: &str) -> Markup {
    html! { span class={ "state s-" (state) } { (state) } }
}

/// The live part (re-fetched every [`REFRESH_SECS`]).
pub fn live(r: &StatusReport) -> Markup {
    let in_hist: Vec<f64> = r.rates.history.iter().map(|s| s.bytes_in).collect();
    let out_hist: Vec<f64> = r.rates.history.iter().map(|s| s.bytes_out()).collect();
    let used_frac =
        if r.store.used + r.store.free > 0 { r.store.used as f64 / (r.store.used + r.store.free) as f64 } else { 0.0 };
    html! {
        section #banner class={ "banner " (if r.ready { "ready" } else { "notready" }) } {
            div.word { (if r.ready { "READY" } else { "NOT READY" }) }
            div.why #reason { (r.reason) }
        }
        div.grid {
            div.card {
                h2 { "Fill in" }
                div.big #rate-in { (ByteSize::human(r.rates.now.bytes_in)) "/s" }
                (PreEscaped(sparkline(&in_hist, 238, 40, "bytes in per second, last two minutes")))
            }
            div.card.out {
                h2 { "Out to peers + portal" }
                div.big #rate-out { (ByteSize::human(r.rates.now.bytes_out())) "/s" }
                (PreEscaped(sparkline(&out_hist, 238, 40, "bytes out per second, last two minutes")))
                div.sub { "peers " (ByteSize::human(r.rates.now.bytes_out_peers)) "/s · portal " (ByteSize::human(r.rates.now.bytes_out_portal)) "/s" }
            }
            div.card {
                h2 { "Store" }
                div.big #store-used { (ByteSize::human(r.store.used as f64)) }
                div.bar { span style={ "width:" (format!("{:.1}", used_frac * 100.0)) "%" } {} }
                div.sub { (ByteSize::human(r.store.free as f64)) " free · " (plural(r.store.releases as u64, "release")) " · " (plural(r.store.evictions, "eviction")) }
            }
            div.card {
                h2 { "Clients" }
                div.big {
                    span #peers { (r.peers.map(|p| p.to_string()).unwrap_or_else(|| "off".into())) } " "
                    span.sub { "peers" }
                }
                div.big {
                    span #portal-clients { (r.portal_clients.map(|p| p.to_string()).unwrap_or_else(|| "off".into())) } " "
                    span.sub { "portal clients" }
                }
            }
        }
        div.card {
            h2 { "Jobs" }
            @if r.jobs.is_empty() {
                p.muted { "No jobs." }
            } @else {
                table #jobs {
                    tr { th { "Job" } th { "State" } th { "Progress" } th { "ETA" } th { "Deadline" } th { "Source" } }
                    @for j in &r.jobs {
                        tr.job {
                            td {
                                strong { (j.name) }
                                @if j.pinned { " " span.sub { "pinned" } }
                                @if let Some(why) = &j.reason { div.sub { (why) } }
                            }
                            td { (state_cell(j.state.as_str())) }
                            td {
                                div.bar { span style={ "width:" (format!("{:.1}", j.fraction() * 100.0)) "%" } {} }
                                div.sub { (format!("{:.0}", (j.fraction() * 100.0).floor())) "% · " (ByteSize::human(j.bytes_done as f64)) " of " (ByteSize::human(j.bytes_total as f64)) }
                            }
                            td {
                                @if j.state == JobState::Ready { "done" }
                                @else if let Some(e) = j.eta_secs { (fmt_eta(e)) }
                                @else { span.muted { "—" } }
                            }
                            td {
                                @if let Some(d) = j.deadline { (fmt_deadline(d, r.now)) } @else { span.muted { "—" } }
                                @if j.at_risk { " " span.risk { "AT RISK" } }
                            }
                            td.sub { (j.source) }
                        }
                    }
                }
            }
        }
        div.grid {
            div.card {
                h2 { "Origins" }
                @if r.origins.is_empty() { p.muted { "None configured." } }
                @for o in &r.origins {
                    div {
                        strong { (o.name) } " "
                        @if o.dropped { span.state.s-failed { "dropped" } }
                        @else if o.connected { span.state.s-ready { "connected" } }
                        @else { span.state.s-queued { "not connected" } }
                        div.sub {
                            (ByteSize::human(o.bytes as f64)) " received · " (o.hash_failures) " hash failures"
                            @if let Some(e) = &o.last_error { " · last error: " (e) }
                        }
                    }
                }
            }
            div.card.errors {
                h2 { "Recent errors" }
                @if r.errors.is_empty() { p.muted #no-errors { "None." } }
                ul #errors {
                    @for e in r.errors.iter().take(15) {
                        li {
                            span.muted { (fmt_deadline(e.at, r.now)) } " "
                            span class={ "lvl-" (e.level) } { (e.level) } " "
                            span.muted { (e.target) } " " (e.message)
                            @if e.count > 1 { " " span.sub { "(×" (e.count) ")" } }
                        }
                    }
                }
            }
        }
        p.sub #updated { "Updated " (fmt_deadline(r.now, r.now)) " · popseed " (r.version) " · up " (fmt_eta(r.uptime_secs as f64)) }
    }
}

/// The whole dashboard page.
pub fn page(r: &StatusReport) -> Markup {
    let title = format!("{} — {}", if r.ready { "READY" } else { "NOT READY" }, r.device.name);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
                noscript { meta http-equiv="refresh" content="5"; }
            }
            body {
                header {
                    h1 #device { (r.device.name) }
                    @if let Some(v) = &r.device.venue { span.meta #venue { (v) } }
                    @if let Some(f) = &r.device.fingerprint { span.meta #fingerprint { "device key " (f) } }
                    form method="post" action="/logout" { button type="submit" { "Log out" } }
                }
                main #live { (live(r)) }
                script { (PreEscaped(SCRIPT.replace("REFRESH_MS", &(REFRESH_SECS * 1000).to_string()))) }
            }
        }
    }
}

/// The login form (answered with 401 to a browser without a session).
pub fn login(device: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { "Log in — " (device) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                form.login method="post" action="/login" {
                    h1 { (device) }
                    p { "Enter the staff token from the provisioning file." }
                    @if let Some(e) = error { p.err #login-error { (e) } }
                    input type="password" name="token" autocomplete="current-password" autofocus required;
                    button type="submit" { "Log in" }
                }
            }
        }
    }
}
