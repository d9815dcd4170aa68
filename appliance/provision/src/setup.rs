//! The setup page a box with a bad provisioning file serves (axum): every error with its line,
//! and a form to paste a corrected popseed.toml, which is validated and, when valid, written
//! atomically to the provisioning path ("reboot to apply"). Any other GET shows the page too, so
//! OS captive-portal probes pop it up; the captive DNS responder (popseed-dns, the one the
//! portal runs) answers every name with the setup address.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Form, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use crate::diag::Diagnostic;
use crate::error::{ProvisionError, Result};
use crate::firstboot::PROVISION_NAME;
use crate::profile::HwProfile;
use crate::provfile;
use crate::status::Status;

/// DNS queries per second per client the setup network's responder answers, and its burst.
const SETUP_DNS_RATE: u32 = 50;
const SETUP_DNS_BURST: u32 = 100;
/// Largest accepted form body.
pub const MAX_BODY: usize = 256 * 1024;

/// Shared by the handlers.
pub struct SetupState {
    pub status: Status,
    pub profile: HwProfile,
    pub provision_path: PathBuf,
    /// Required in the form when the bad file still had a valid staff token.
    pub token: Option<String>,
}

impl SetupState {
    /// From first boot's status: the profile it used (re-read from its hw directory; the
    /// built-in one when missing) and the staff token the current file names, if valid.
    pub fn from_status(status: Status) -> SetupState {
        let (profiles, _) = crate::profile::load_dir(&status.hw_dir);
        let profile = profiles.into_iter().find(|p| p.board == status.board).unwrap_or_else(HwProfile::builtin_generic);
        let token = std::fs::read_to_string(&status.provision_path)
            .ok()
            .and_then(|t| provfile::validate(&t, &profile).staff_token);
        let provision_path = status.provision_path.clone();
        SetupState { status, profile, provision_path, token }
    }
}

#[derive(Deserialize)]
struct SetupForm {
    config: String,
    #[serde(default)]
    token: String,
}

/// The router: `GET` anything shows the page, `POST /setup` takes the form.
pub fn router(state: Arc<SetupState>) -> Router {
    Router::new()
        .route("/setup", get(page).post(submit))
        .fallback(page)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn html_response(code: StatusCode, body: Markup) -> Response {
    (
        code,
        [(header::CACHE_CONTROL, "no-store"), (header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.into_string(),
    )
        .into_response()
}

const TEMPLATE: &str = include_str!("../popseed.example.toml");

async fn page(State(st): State<Arc<SetupState>>) -> Response {
    let current = std::fs::read_to_string(&st.provision_path).unwrap_or_else(|_| TEMPLATE.to_owned());
    html_response(StatusCode::OK, render_page(&st, &st.status.errors, &current, None))
}

async fn submit(State(st): State<Arc<SetupState>>, Form(f): Form<SetupForm>) -> Response {
    if let Some(tok) = &st.token {
        if f.token.trim() != tok {
            let msg = Notice::Error("Wrong staff token: nothing was written.".into());
            return html_response(StatusCode::FORBIDDEN, render_page(&st, &st.status.errors, &f.config, Some(msg)));
        }
    }
    // browsers send CRLF line ends from a textarea
    let text = f.config.replace("\r\n", "\n");
    let v = provfile::validate(&text, &st.profile);
    if !v.errors.is_empty() {
        let msg = Notice::Error(format!("{} error(s): nothing was written.", v.errors.len()));
        return html_response(StatusCode::UNPROCESSABLE_ENTITY, render_page(&st, &v.errors, &text, Some(msg)));
    }
    match write_file(&st.provision_path, &text) {
        Ok(()) => {
            tracing::info!("setup page wrote {}", st.provision_path.display());
            let msg = Notice::Saved(format!("Saved to {}. Reboot to apply.", st.provision_path.display()));
            html_response(StatusCode::OK, render_page(&st, &[], &text, Some(msg)))
        }
        Err(e) => {
            tracing::warn!("setup page: {e}");
            let msg = Notice::Error(format!("The file is valid but could not be written: {e}"));
            html_response(StatusCode::INTERNAL_SERVER_ERROR, render_page(&st, &[], &text, Some(msg)))
        }
    }
}

/// Temp file next to `path`, fsync, rename over it.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| PROVISION_NAME.into());
    crate::firstboot::write_atomic(dir, &name, text)
}

enum Notice {
    Saved(String),
    Error(String),
}

fn render_page(st: &SetupState, errors: &[Diagnostic], text: &str, notice: Option<Notice>) -> Markup {
    let s = &st.status;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "popseed setup" }
                style { "body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em}\
                    textarea{width:100%;font-family:monospace}.err{color:#a00}.ok{color:#070;font-weight:bold}\
                    code{background:#eee;padding:0 .2em}" }
            }
            body {
                h1 { "popseed setup" }
                p { "This box could not use its provisioning file, so it started this open setup network ("
                    code { (s.ssid) } "). Fix the file below and save it, then reboot the box." }
                p { "Board: " code { (s.board) } " · device fingerprint: " code { (s.device_fingerprint) } }
                @match &notice {
                    Some(Notice::Saved(m)) => p.ok id="saved" { (m) },
                    Some(Notice::Error(m)) => p.err id="notice" { (m) },
                    None => {},
                }
                @if !errors.is_empty() {
                    h2 { "Errors in " (PROVISION_NAME) }
                    ul.err id="errors" {
                        @for e in errors {
                            li { code { (e.render(PROVISION_NAME)) } }
                        }
                    }
                }
                form method="post" action="/setup" {
                    p { label for="config" { (PROVISION_NAME) } }
                    textarea id="config" name="config" rows="30" spellcheck="false" { (text) }
                    @if st.token.is_some() {
                        p { label for="token" { "Staff token (from the current file): " } input type="password" id="token" name="token"; }
                    }
                    p { button type="submit" { "Check and save" } }
                }
            }
        }
    }
}

/// Serves the setup page on every address in `listen` and, with `dns`, a captive DNS responder
/// answering every name with `portal_ip`, until `shutdown` resolves.
pub async fn serve(
    state: Arc<SetupState>,
    listen: Vec<SocketAddr>,
    dns: Option<(SocketAddr, IpAddr)>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for addr in listen {
        let l =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ProvisionError::SetupListen { addr, source })?;
        tracing::info!("setup page on http://{}/", l.local_addr().unwrap_or(addr));
        let app = router(state.clone());
        let mut rx = stop_rx.clone();
        tasks.spawn(async move {
            let r = axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::warn!("setup page server: {e}");
            }
        });
    }
    if let Some((addr, portal_ip)) = dns {
        let rules = popseed_dns::DnsRules { portal_ip, box_name: "popseed.lan".into(), lan_ip: portal_ip, ttl: 10 };
        let resp = Arc::new(popseed_dns::Responder::new(
            rules,
            SETUP_DNS_RATE,
            SETUP_DNS_BURST,
            Arc::new(popseed_dns::DnsStats::default()),
        ));
        match (tokio::net::UdpSocket::bind(addr).await, tokio::net::TcpListener::bind(addr).await) {
            (Ok(u), Ok(t)) => {
                tasks.spawn(popseed_dns::serve_udp(u, resp.clone(), stop_rx.clone()));
                tasks.spawn(popseed_dns::serve_tcp(t, resp, stop_rx.clone()));
            }
            (u, t) => {
                // the page matters more than DNS: go on without it
                let e = u.err().map(|e| e.to_string()).or_else(|| t.err().map(|e| e.to_string())).unwrap_or_default();
                tracing::warn!("setup DNS on {addr}: {e}");
            }
        }
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provfile::tests::{good_file, pubkey};
    use crate::status::Mode;

    #[test]
    fn page_lists_errors_and_escapes_the_file() {
        let st = SetupState {
            status: Status {
                mode: Mode::Setup,
                errors: vec![Diagnostic {
                    line: 7,
                    column: 14,
                    key: "wifi.passphrase".into(),
                    message: "too short".into(),
                }],
                device_fingerprint: "SHA256:abc".into(),
                board: "generic-x86_64".into(),
                board_picked_by: "built-in".into(),
                warnings: vec![],
                provision_path: "/boot/popseed/popseed.toml".into(),
                hw_dir: "/usr/share/popseed/hw".into(),
                ssid: "popseed-setup-ab12".into(),
                ap_interface: "wlan0".into(),
                portal_address: "10.42.0.1/24".into(),
                management_listen: "0.0.0.0:8080".into(),
            },
            profile: HwProfile::builtin_generic(),
            provision_path: "/boot/popseed/popseed.toml".into(),
            token: None,
        };
        let html = render_page(&st, &st.status.errors, "venue = \"</textarea><script>\"", None).into_string();
        assert!(html.contains("popseed.toml:7:14: wifi.passphrase: too short"), "{html}");
        assert!(html.contains("&lt;/textarea&gt;&lt;script&gt;"), "{html}");
        assert!(!html.contains("name=\"token\""));
    }

    #[test]
    fn write_file_replaces_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("popseed.toml");
        std::fs::write(&p, "old").unwrap();
        let text = good_file(&pubkey());
        write_file(&p, &text).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn example_file_is_valid() {
        let mut hw = HwProfile::builtin_generic();
        hw.wifi.bands.push(crate::profile::Band::Ghz5);
        let v = provfile::validate(TEMPLATE, &hw);
        assert_eq!(v.errors, vec![], "popseed.example.toml must validate");
    }
}
