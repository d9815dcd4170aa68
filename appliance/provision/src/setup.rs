//! The setup page a box with a bad provisioning file serves (axum): every error with its line,
//! and a form to paste a corrected popseed.toml, which is validated and, when valid, written
//! atomically to the provisioning path ("reboot to apply"). The page is on an open network, so
//! it never shows a secret (see [`crate::secrets`]: values read "unchanged" and are kept when
//! left so), and it saves only for whoever holds the current file's staff token or, when there
//! is none, the one-time setup code ([`crate::setup_code`]); wrong guesses are rate-limited per
//! client and compared in constant time. Any other GET shows the page too, so
//! OS captive-portal probes pop it up; the captive DNS responder (popseed-dns, the one the
//! portal runs) answers every name with the setup address.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use popseed_core::PerKey;
use serde::Deserialize;
use subtle::ConstantTimeEq;

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
/// Save attempts per client: a burst of this many, then one per [`ATTEMPT_EVERY`].
pub const ATTEMPT_BURST: f64 = 5.0;
pub const ATTEMPT_EVERY: Duration = Duration::from_secs(20);
/// Clients whose attempts are remembered at once.
const ATTEMPT_CLIENTS: usize = 4096;

/// What a save must be accompanied by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The staff token of the current (broken) file, which still names a valid one.
    StaffToken(String),
    /// The one-time setup code first boot issued (the file had no valid staff token).
    SetupCode { code: String, path: PathBuf },
    /// Neither: nothing can be saved from the network (fail closed).
    Nothing,
}

impl Credential {
    fn matches(&self, given: &str) -> bool {
        let want = match self {
            Credential::StaffToken(t) => t.as_str(),
            Credential::SetupCode { code, .. } => code.as_str(),
            Credential::Nothing => return false,
        };
        // constant time over the bytes; codes are compared without case or dashes' spacing
        let given = given.trim();
        let (a, b) = match self {
            Credential::SetupCode { .. } => (given.to_ascii_uppercase(), want.to_owned()),
            _ => (given.to_owned(), want.to_owned()),
        };
        a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
    }
}

/// Shared by the handlers.
pub struct SetupState {
    pub status: Status,
    pub profile: HwProfile,
    pub provision_path: PathBuf,
    /// What a save needs; after a save, the new file's staff token.
    pub credential: Mutex<Credential>,
    /// Save attempts per client address.
    attempts: Mutex<PerKey<IpAddr>>,
}

impl SetupState {
    pub fn new(status: Status, profile: HwProfile, credential: Credential) -> SetupState {
        let provision_path = status.provision_path.clone();
        SetupState {
            status,
            profile,
            provision_path,
            credential: Mutex::new(credential),
            attempts: Mutex::new(PerKey::new(1.0 / ATTEMPT_EVERY.as_secs_f64(), ATTEMPT_BURST, ATTEMPT_CLIENTS)),
        }
    }

    /// From first boot's status: the profile it used (re-read from its hw directory; the
    /// built-in one when missing), and what a save needs: the staff token the current file
    /// names, if valid, else the setup code first boot issued.
    pub fn from_status(status: Status) -> SetupState {
        let (profiles, _) = crate::profile::load_dir(&status.hw_dir);
        let profile = profiles.into_iter().find(|p| p.board == status.board).unwrap_or_else(HwProfile::builtin_generic);
        let token = std::fs::read_to_string(&status.provision_path)
            .ok()
            .and_then(|t| provfile::validate(&t, &profile).staff_token);
        let code =
            status.setup_code_path.as_ref().and_then(|p| crate::setup_code::load(p).map(|code| (code, p.clone())));
        let credential = match (token, code) {
            (Some(t), _) => Credential::StaffToken(t),
            (None, Some((code, path))) => Credential::SetupCode { code, path },
            (None, None) => Credential::Nothing,
        };
        SetupState::new(status, profile, credential)
    }

    fn credential(&self) -> Credential {
        self.credential.lock().unwrap_or_else(|p| p.into_inner()).clone()
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

/// The file as it is now (the template when there is none).
fn current_file(st: &SetupState) -> String {
    std::fs::read_to_string(&st.provision_path).unwrap_or_else(|_| TEMPLATE.to_owned())
}

async fn page(State(st): State<Arc<SetupState>>) -> Response {
    let current = current_file(&st);
    html_response(StatusCode::OK, render_page(&st, &st.status.errors, &current, None))
}

async fn submit(
    State(st): State<Arc<SetupState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<SetupForm>,
) -> Response {
    // browsers send CRLF line ends from a textarea
    let submitted = f.config.replace("\r\n", "\n");
    let allowed = st.attempts.lock().unwrap_or_else(|p| p.into_inner()).allow(peer.ip().to_canonical(), Instant::now());
    if !allowed {
        let msg = Notice::Error("Too many attempts from this device: wait a minute and try again.".into());
        return html_response(
            StatusCode::TOO_MANY_REQUESTS,
            render_page(&st, &st.status.errors, &submitted, Some(msg)),
        );
    }
    let credential = st.credential();
    if !credential.matches(&f.token) {
        tracing::warn!("setup page: a save with a wrong code or token was refused");
        let msg = Notice::Error(match credential {
            Credential::Nothing => {
                "This box has no setup code, so nothing can be saved from here: run first boot again.".into()
            }
            _ => "Wrong code or token: nothing was written.".into(),
        });
        return html_response(StatusCode::FORBIDDEN, render_page(&st, &st.status.errors, &submitted, Some(msg)));
    }
    let old = current_file(&st);
    let (text, missing) = crate::secrets::restore(&submitted, &old);
    if !missing.is_empty() {
        let msg = Notice::Error(format!(
            "{} say \"{}\" but the current file has no value to keep: type the new one. Nothing was written.",
            missing.join(", "),
            crate::secrets::UNCHANGED
        ));
        return html_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            render_page(&st, &st.status.errors, &submitted, Some(msg)),
        );
    }
    let v = provfile::validate(&text, &st.profile);
    if !v.errors.is_empty() {
        let msg = Notice::Error(format!("{} error(s): nothing was written.", v.errors.len()));
        return html_response(StatusCode::UNPROCESSABLE_ENTITY, render_page(&st, &v.errors, &text, Some(msg)));
    }
    match write_file(&st.provision_path, &text) {
        Ok(()) => {
            tracing::info!("setup page wrote {}", st.provision_path.display());
            if let Credential::SetupCode { path, .. } = &credential {
                // one-time: the code is spent; the saved file's staff token guards the page now
                crate::setup_code::retire(path.parent().unwrap_or(Path::new(".")), &st.provision_path);
            }
            if let Some(t) = v.staff_token {
                *st.credential.lock().unwrap_or_else(|p| p.into_inner()) = Credential::StaffToken(t);
            }
            let msg = Notice::Saved(format!("Saved to {}. Reboot to apply.", st.provision_path.display()));
            html_response(StatusCode::OK, render_page(&st, &[], &text, Some(msg)))
        }
        Err(e) => {
            tracing::warn!(error = %popseed_core::chain(&e), "setup page cannot write the file");
            let msg = Notice::Error(format!("The file is valid but could not be written: {}", popseed_core::chain(&e)));
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

/// The page. `text` is shown with every secret redacted, and no message may carry a secret
/// value either (of the file shown or of the file on disk).
fn render_page(st: &SetupState, errors: &[Diagnostic], text: &str, notice: Option<Notice>) -> Markup {
    let s = &st.status;
    let mut secrets = crate::secrets::values(text);
    secrets.extend(crate::secrets::values(&current_file(st)));
    let hide = |m: &str| secrets.iter().fold(m.to_owned(), |m, v| m.replace(v.as_str(), "(hidden)"));
    let shown = crate::secrets::redact(text);
    let credential = st.credential();
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
                    Some(Notice::Saved(m)) => p.ok id="saved" { (hide(m)) },
                    Some(Notice::Error(m)) => p.err id="notice" { (hide(m)) },
                    None => {},
                }
                @if !errors.is_empty() {
                    h2 { "Errors in " (PROVISION_NAME) }
                    ul.err id="errors" {
                        @for e in errors {
                            li { code { (hide(&e.render(PROVISION_NAME))) } }
                        }
                    }
                }
                form method="post" action="/setup" {
                    p { label for="config" { (PROVISION_NAME) } }
                    p { "Secret values (staff token, Wi-Fi passphrase) read " code { "\"unchanged\"" }
                        ": leave them so to keep them, or type new ones." }
                    textarea id="config" name="config" rows="30" spellcheck="false" { (shown) }
                    @match &credential {
                        Credential::StaffToken(_) => p { label for="token" { "Staff token of the current file: " }
                            input type="password" id="token" name="token" autocomplete="off"; },
                        Credential::SetupCode { .. } => p { label for="token" { "Setup code (on the box's console, and in "
                            code { (crate::setup_code::BOOT_COPY) } " next to " (PROVISION_NAME) " on its boot partition): " }
                            input type="password" id="token" name="token" autocomplete="off"; },
                        Credential::Nothing => p.err { "This box has no setup code: saving from this page is off. Run first boot again to get one." },
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
    let stop_http = tokio_util::sync::CancellationToken::new();
    let http_stats = Arc::new(popseed_http::HttpStats::default());
    let mut tasks = tokio::task::JoinSet::new();
    for addr in listen {
        let l =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ProvisionError::SetupListen { addr, source })?;
        tracing::info!("setup page on http://{}/", l.local_addr().unwrap_or(addr));
        let app = router(state.clone());
        tasks.spawn(popseed_http::serve(l, app, popseed_http::DEFAULT_LIMITS, http_stats.clone(), stop_http.clone()));
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
    stop_http.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provfile::tests::{good_file, pubkey};
    use crate::status::Mode;

    fn status(provision: &Path, code: Option<PathBuf>) -> Status {
        Status {
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
            provision_path: provision.to_path_buf(),
            hw_dir: "/nonexistent/hw".into(),
            ssid: "popseed-setup-ab12".into(),
            ap_interface: "wlan0".into(),
            portal_address: "10.42.0.1/24".into(),
            management_listen: "0.0.0.0:8080".into(),
            setup_code_path: code,
        }
    }

    #[test]
    fn page_lists_errors_and_escapes_the_file() {
        let st = SetupState::new(
            status(Path::new("/nonexistent/popseed.toml"), None),
            HwProfile::builtin_generic(),
            Credential::Nothing,
        );
        let html = render_page(&st, &st.status.errors, "venue = \"</textarea><script>\"", None).into_string();
        assert!(html.contains("popseed.toml:7:14: wifi.passphrase: too short"), "{html}");
        assert!(html.contains("&lt;/textarea&gt;&lt;script&gt;"), "{html}");
        assert!(!html.contains("name=\"token\""), "no credential: no field to guess into");
    }

    /// A broken file that still names secrets (a too-short token, a passphrase).
    const BROKEN: &str = "[wifi]\nssid = \"Fest\"\npassphrase = \"the real wifi secret\"\n\
        [management]\nlisten = \"0.0.0.0:8080\"\nstaff_token = \"short-tok\"\n";

    async fn send(app: &Router, req: axum::http::Request<axum::body::Body>) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let r = app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn post(config: &str, token: &str, from: [u8; 4]) -> axum::http::Request<axum::body::Body> {
        let body = format!(
            "config={}&token={}",
            percent_encoding::utf8_percent_encode(config, percent_encoding::NON_ALPHANUMERIC),
            percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
        );
        let mut req = axum::http::Request::post("/setup")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(body))
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from((from, 40000))));
        req
    }

    #[tokio::test]
    async fn the_page_never_shows_a_secret_and_saves_only_with_the_setup_code() {
        let d = tempfile::tempdir().unwrap();
        let (state, boot) = (d.path().join("state"), d.path().join("boot"));
        std::fs::create_dir_all(&boot).unwrap();
        let prov = boot.join("popseed.toml");
        std::fs::write(&prov, BROKEN).unwrap();
        let issued = crate::setup_code::issue(&state, &prov).unwrap();
        let st = Arc::new(SetupState::from_status(status(&prov, Some(issued.path.clone()))));
        assert!(matches!(st.credential(), Credential::SetupCode { .. }), "the broken file's token is not valid");
        let app = router(st.clone());
        let (code, page) = send(&app, axum::http::Request::get("/").body(axum::body::Body::empty()).unwrap()).await;
        assert_eq!(code, StatusCode::OK);
        for secret in ["the real wifi secret", "short-tok", issued.code.as_str()] {
            assert!(!page.contains(secret), "{secret} shown on the open network");
        }
        assert!(page.contains("passphrase = &quot;unchanged&quot;"), "{page}");

        // what a stranger sees, edits and posts back: the redacted file, a good token, no code
        let fixed = format!(
            "venue = \"Hall B\"\ntrusted_keys = [\"{}\"]\n{}[portal]\naddress = \"10.42.0.1/24\"\n",
            crate::provfile::tests::pubkey(),
            crate::secrets::redact(BROKEN)
                .replace("ssid = \"Fest\"", "ssid = \"Fest\"\ncountry = \"DE\"")
                .replace("staff_token = \"unchanged\"", "staff_token = \"a-new-long-staff-token-0123\"")
        );
        let (code, _) = send(&app, post(&fixed, "WRONG-CODE1", [10, 42, 0, 9])).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert_eq!(std::fs::read_to_string(&prov).unwrap(), BROKEN, "nothing written without the code");

        // with the code: the passphrase left "unchanged" keeps its old value
        let (code, body) = send(&app, post(&fixed, &issued.code.to_lowercase(), [10, 42, 0, 10])).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let saved = std::fs::read_to_string(&prov).unwrap();
        assert!(saved.contains("passphrase = \"the real wifi secret\""), "{saved}");
        assert!(!body.contains("the real wifi secret") && !body.contains("a-new-long-staff-token-0123"), "{body}");
        assert!(crate::setup_code::load(&issued.path).is_none(), "the code is spent");
        assert!(!boot.join(crate::setup_code::BOOT_COPY).exists());
        // from now on the saved file's token guards the page; the spent code no longer works
        let (code, _) = send(&app, post(&fixed, &issued.code, [10, 42, 0, 11])).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn guesses_are_rate_limited_per_client_and_no_code_means_no_save() {
        let d = tempfile::tempdir().unwrap();
        let prov = d.path().join("popseed.toml");
        std::fs::write(&prov, BROKEN).unwrap();
        let st = Arc::new(SetupState::new(
            status(&prov, None),
            HwProfile::builtin_generic(),
            Credential::SetupCode { code: "ABCDE-FGHJK".into(), path: d.path().join("setup-code") },
        ));
        let app = router(st);
        for _ in 0..ATTEMPT_BURST as usize {
            assert_eq!(send(&app, post(BROKEN, "guess", [10, 42, 0, 5])).await.0, StatusCode::FORBIDDEN);
        }
        assert_eq!(send(&app, post(BROKEN, "ABCDE-FGHJK", [10, 42, 0, 5])).await.0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            send(&app, post(BROKEN, "guess", [10, 42, 0, 6])).await.0,
            StatusCode::FORBIDDEN,
            "others are not locked out"
        );

        let nothing = Arc::new(SetupState::new(status(&prov, None), HwProfile::builtin_generic(), Credential::Nothing));
        let (code, body) = send(&router(nothing), post(BROKEN, "", [10, 42, 0, 7])).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(body.contains("no setup code"), "{body}");
        assert_eq!(std::fs::read_to_string(&prov).unwrap(), BROKEN);
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
    fn example_file_is_valid_but_for_its_publisher_key() {
        let mut hw = HwProfile::builtin_generic();
        hw.wifi.bands.push(crate::profile::Band::Ghz5);
        let v = provfile::validate(TEMPLATE, &hw);
        let keys: Vec<&str> = v.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["trusted_keys"], "the event team fills in the publisher key: {:?}", v.errors);
        let with_key = TEMPLATE
            .replace("trusted_keys = []", &format!("trusted_keys = [\"{}\"]", crate::provfile::tests::pubkey()));
        assert_eq!(provfile::validate(&with_key, &hw).errors, vec![], "otherwise popseed.example.toml must validate");
    }
}
