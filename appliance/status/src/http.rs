//! The management HTTP application (axum): open `/healthz`, `/readyz` and `/metrics`; the
//! dashboard, `/api/status` and the staff API routes handed in by the jobs component behind
//! one token layer ([`crate::auth`]); the login form.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use popseed_core::unix_now;

use axum::extract::{ConnectInfo, Form, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::{self, Auth, Verdict};
use crate::dashboard;
use crate::errors::RecentErrors;
use crate::gather::Sources;
use crate::metrics;
use crate::report::{readiness, DeviceInfo, OriginStatus, Rates, StatusReport, StoreStatus};
use crate::samples::{Samples, Totals};

/// State shared by the handlers and the sampler.
pub struct Shared {
    pub(crate) auth: Auth,
    pub(crate) device: DeviceInfo,
    pub(crate) sources: Sources,
    pub(crate) samples: Mutex<Samples>,
    pub(crate) errors: Arc<RecentErrors>,
    /// What the management listener refused (connection cap, slow or oversized heads).
    pub(crate) http: Arc<popseed_http::HttpStats>,
    started: Instant,
}

impl Shared {
    pub fn new(token: Option<&str>, device: DeviceInfo, sources: Sources, errors: Arc<RecentErrors>) -> Self {
        Shared {
            auth: Auth::new(token),
            device,
            sources,
            samples: Mutex::new(Samples::new()),
            errors,
            http: Arc::default(),
            started: Instant::now(),
        }
    }

    /// Takes one rate sample (the server calls this every second).
    pub fn sample(&self) {
        let totals = Totals {
            bytes_in: self.sources.fill.fill().bytes_fetched,
            bytes_out_peers: self.sources.swarm.as_ref().map_or(0, |s| s.counters().bytes_uploaded),
            bytes_out_portal: self.sources.portal.as_ref().map_or(0, |p| p.counters().bytes_served),
        };
        let t = self.started.elapsed().as_secs_f64();
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).record(totals, t);
    }

    /// The full report.
    pub fn report(&self) -> StatusReport {
        let g = self.sources.gather();
        let now = unix_now();
        let ready = readiness(&g.jobs, now);
        let (rate_now, history) = {
            let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            (s.current(3), s.history())
        };
        let pieces = g.releases.iter().map(|r| r.pieces_present as u64).sum();
        StatusReport {
            ready: ready.ready,
            reason: ready.reason,
            device: self.device.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            now,
            store: StoreStatus {
                used: g.usage.map_or(0, |u| u.used),
                free: g.store_free(),
                budget: g.usage.and_then(|u| u.budget),
                releases: g.releases.len(),
                pieces,
                evictions: g.store.evictions,
            },
            rates: Rates { now: rate_now, history },
            origins: g
                .fetch
                .sources
                .iter()
                .map(|o| OriginStatus {
                    name: o.name.clone(),
                    kind: o.kind.clone(),
                    connected: o.connected,
                    dropped: o.dropped,
                    bytes: o.bytes,
                    hash_failures: o.hash_failures,
                    last_error: o.last_error.clone(),
                })
                .collect(),
            peers: g.swarm.as_ref().map(|s| s.peers_connected),
            portal_clients: g.portal.map(|p| p.clients),
            errors: self.errors.recent(),
            jobs: g.jobs,
        }
    }
}

type St = State<Arc<Shared>>;

fn html(status: StatusCode, m: maud::Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(dashboard::CSP)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        m.into_string(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): St) -> Response {
    let g = st.sources.gather();
    let r = readiness(&g.jobs, unix_now());
    if r.ready {
        (StatusCode::OK, format!("ready: {}\n", r.reason)).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", r.reason)).into_response()
    }
}

async fn metrics_text(State(st): St) -> Response {
    let g = st.sources.gather();
    let ready = readiness(&g.jobs, unix_now()).ready;
    match metrics::encode(g, ready) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

async fn api_status(State(st): St) -> Response {
    let r = tokio::task::spawn_blocking(move || st.report()).await;
    match r {
        Ok(r) => ([(header::CACHE_CONTROL, "no-store")], Json(r)).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "status failed\n").into_response(),
    }
}

async fn dashboard_page(State(st): St) -> Response {
    html(StatusCode::OK, dashboard::page(&st.report()))
}

async fn dashboard_live(State(st): St) -> Response {
    html(StatusCode::OK, dashboard::live(&st.report()))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// The client's address (the listener hands it in; requests made in tests may lack it).
fn client_ip(ext: &axum::http::Extensions) -> std::net::IpAddr {
    ext.get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

fn too_many_tries(st: &Shared, html_page: bool) -> Response {
    let msg = "too many wrong tokens from this address: wait a minute and try again";
    let mut r = if html_page {
        html(StatusCode::TOO_MANY_REQUESTS, dashboard::login(&st.device.name, Some(msg)))
    } else {
        (StatusCode::TOO_MANY_REQUESTS, Json(serde_json::json!({ "error": msg }))).into_response()
    };
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    r
}

async fn login(State(st): St, req: Request) -> Response {
    if !st.auth.configured() {
        return not_configured(true);
    }
    let ip = client_ip(req.extensions());
    let Ok(Form(f)) = Form::<LoginForm>::from_request(req, &()).await else {
        return html(StatusCode::BAD_REQUEST, dashboard::login(&st.device.name, Some("Give the staff token.")));
    };
    let now = Instant::now();
    if !st.auth.may_try(ip, now) {
        return too_many_tries(&st, true);
    }
    if st.auth.token_ok(f.token.trim()) {
        logged_in(&st.auth, "/")
    } else {
        st.auth.failed(ip, now);
        tracing::info!("dashboard login with a wrong token");
        html(StatusCode::UNAUTHORIZED, dashboard::login(&st.device.name, Some("Wrong token.")))
    }
}

async fn logout(State(st): St, h: HeaderMap) -> Response {
    st.auth.logout(h.get(header::COOKIE).and_then(|v| v.to_str().ok()));
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::logout_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn logged_in(a: &Auth, to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    if let Some(v) = a.login(Instant::now()).and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn wants_html(h: &HeaderMap, path: &str) -> bool {
    !path.starts_with("/api/")
        && h.get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|a| a.contains("text/html") || a.contains("*/*"))
}

fn not_configured(html_page: bool) -> Response {
    let msg = "the staff API and the dashboard are off: this box has no staff token ([control] staff_token)";
    if html_page {
        (StatusCode::FORBIDDEN, format!("{msg}\n")).into_response()
    } else {
        (StatusCode::FORBIDDEN, Json(serde_json::json!({ "error": msg }))).into_response()
    }
}

/// The token layer in front of every protected route.
async fn require_token(State(st): St, req: Request, next: Next) -> Response {
    let h = req.headers();
    let path = req.uri().path().to_owned();
    let html_page = wants_html(h, &path);
    let get = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok());
    let now = Instant::now();
    let ip = client_ip(req.extensions());
    let presented = get(header::AUTHORIZATION).is_some()
        || req.uri().query().is_some_and(|q| q.contains("token="))
        || get(header::COOKIE).is_some_and(|c| c.contains(auth::COOKIE));
    // a client out of tries is refused whatever it presents, so guessing learns nothing
    if presented && !st.auth.may_try(ip, now) {
        return too_many_tries(&st, html_page);
    }
    match st.auth.check(get(header::AUTHORIZATION), get(header::COOKIE), now) {
        Verdict::Allowed => next.run(req).await,
        Verdict::NotConfigured => not_configured(html_page),
        Verdict::Denied => {
            if presented {
                st.auth.failed(ip, now);
            }
            // `?token=T` on a page: log the browser in and drop the token from the address.
            if req.method() == Method::GET && html_page {
                let token = req.uri().query().and_then(serde_urlencoded_token);
                if let Some(t) = token {
                    if st.auth.token_ok(&t) {
                        return logged_in(&st.auth, &path);
                    }
                    st.auth.failed(ip, now);
                    return html(StatusCode::UNAUTHORIZED, dashboard::login(&st.device.name, Some("Wrong token.")));
                }
            }
            if html_page {
                html(StatusCode::UNAUTHORIZED, dashboard::login(&st.device.name, None))
            } else {
                let mut r = (
                    StatusCode::UNAUTHORIZED,
                    Json(
                        serde_json::json!({ "error": "a valid staff token is required (Authorization: Bearer TOKEN)" }),
                    ),
                )
                    .into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"popseed\""));
                r
            }
        }
    }
}

/// The `token` parameter of a query string.
fn serde_urlencoded_token(q: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Q {
        token: Option<String>,
    }
    axum::extract::Query::<Q>::try_from_uri(&format!("/?{q}").parse().ok()?).ok().and_then(|q| q.0.token)
}

/// The whole management application. `extra` (the staff API, routes with their full paths
/// such as `/api/jobs`) sits behind the same token layer as the dashboard.
pub fn router(shared: Arc<Shared>, extra: Router) -> Router {
    let protected = Router::new()
        .route("/", get(dashboard_page))
        .route("/dashboard/live", get(dashboard_live))
        .route("/api/status", get(api_status))
        .route("/logout", post(logout))
        .with_state(shared.clone())
        .merge(extra)
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/login", post(login))
        .with_state(shared)
        .merge(protected)
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
