//! Route tests: the real router on a real store (tempdir), fake fill, swarm, portal and jobs views,
//! requests through `tower::ServiceExt::oneshot` (no sockets).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use popseed_core::JobState;
use popseed_release::{publish, PublishOptions, SecretKey, VerifiedRelease};
use popseed_store::{AddOptions, Store, StoreConfig};
use tower::ServiceExt;

use super::*;
use crate::errors::{ErrorEvent, RecentErrors};
use crate::jobs::{JobSummary, JobsView};
use crate::report::tests::job;
use crate::views::*;

const TOKEN: &str = "staff-token-0123456789";

struct FakeJobs(Mutex<Vec<JobSummary>>);

impl JobsView for FakeJobs {
    fn jobs(&self) -> Vec<JobSummary> {
        self.0.lock().unwrap().clone()
    }
}

/// The fill of one release, nothing moving yet.
struct FakeFill(FillStatus);

impl FillView for FakeFill {
    fn fill(&self) -> FillStatus {
        self.0.clone()
    }
}

struct FakePortal(PortalCounters);

impl PortalView for FakePortal {
    fn counters(&self) -> PortalCounters {
        self.0
    }
}

struct FakeSwarm;

impl SwarmView for FakeSwarm {
    fn counters(&self) -> SwarmCounters {
        SwarmCounters::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    release: VerifiedRelease,
    src: std::path::PathBuf,
    jobs: Arc<FakeJobs>,
    shared: Arc<Shared>,
    /// Calls that reached the staff API route handed in as `extra`.
    staff_calls: Arc<AtomicUsize>,
    app: Router,
}

fn fixture(token: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src").join("Keynote videos");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(src.join("talk.mp4"), &data).unwrap();
    let release = publish(
        &src,
        &SecretKey::generate(),
        &dir.path().join("rel"),
        &PublishOptions { piece_size: Some(16384), ..Default::default() },
    )
    .unwrap();
    let store = Arc::new(
        Store::open(StoreConfig {
            dir: dir.path().join("store"),
            capacity: popseed_store::Capacity { budget: Some(1 << 30), min_free: 0 },
        })
        .unwrap(),
    );
    store.add_release(&release, AddOptions { pin: true, ttl_seconds: None }).unwrap();
    let fill = FillStatus {
        releases: vec![ReleaseFill {
            infohash: release.infohash(),
            name: release.manifest.name.clone(),
            total_bytes: release.layout().total_length,
            ..Default::default()
        }],
        ..Default::default()
    };
    let jobs = Arc::new(FakeJobs(Mutex::new(Vec::new())));
    let portal = PortalCounters { bytes_served: 12345, dns_queries: 7, ..Default::default() };
    let sources = Sources {
        store: store.clone(),
        fill: Arc::new(FakeFill(fill)),
        swarm: Some(Arc::new(FakeSwarm)),
        portal: Some(Arc::new(FakePortal(portal))),
        jobs: jobs.clone(),
    };
    let errors = Arc::new(RecentErrors::new(10));
    errors.push(ErrorEvent {
        at: 1,
        level: "WARN".into(),
        target: "popseed_fetch::fill".into(),
        message: "origin unreachable".into(),
        count: 1,
    });
    let shared = Arc::new(Shared::new(
        token,
        DeviceInfo { name: "box-7".into(), fingerprint: Some("SHA256:abc".into()), venue: Some("Hall B".into()) },
        sources,
        errors,
    ));
    let staff_calls = Arc::new(AtomicUsize::new(0));
    let calls = staff_calls.clone();
    let extra = Router::new().route(
        "/api/jobs",
        post(move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                "queued"
            }
        })
        .get(|| async { "[]" }),
    );
    let app = router(shared.clone(), extra);
    Fixture { _dir: dir, store, release, src, jobs, shared, staff_calls, app }
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

fn get_req(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn with_bearer(path: &str, token: &str) -> Request<Body> {
    Request::get(path).header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).unwrap()
}

fn put_first_pieces(f: &Fixture, n: u32) {
    use std::os::unix::fs::FileExt;
    let l = f.release.layout();
    let file = std::fs::File::open(f.src.join("talk.mp4")).unwrap();
    for i in 0..n {
        let mut buf = vec![0u8; l.piece_size(i).unwrap() as usize];
        file.read_exact_at(&mut buf, l.piece_offset(i)).unwrap();
        f.store.put_piece(&f.release.infohash(), popseed_core::PieceIndex(i), &buf).unwrap();
    }
}

#[tokio::test]
async fn open_routes_need_no_token() {
    let f = fixture(Some(TOKEN));
    let (s, _, body) = send(&f.app, get_req("/healthz")).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "ok\n"));
    let (s, h, _) = send(&f.app, get_req("/metrics")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/openmetrics-text"));
    let (s, _, _) = send(&f.app, get_req("/nope")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn protected_routes_refuse_a_missing_or_wrong_token_and_change_nothing() {
    let f = fixture(Some(TOKEN));
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let mut req = Request::post("/api/jobs").header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let (s, h, body) = send(&f.app, req.body(Body::from("{}")).unwrap()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "token {token:?}: {body}");
        assert!(h.contains_key(header::WWW_AUTHENTICATE));
        let (s, _, _) =
            send(&f.app, token.map_or_else(|| get_req("/api/status"), |t| with_bearer("/api/status", t))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(f.staff_calls.load(Ordering::SeqCst), 0, "no staff API call got through");
    // a browser gets the login form, with 401
    let req = Request::get("/").header(header::ACCEPT, "text/html").body(Body::empty()).unwrap();
    let (s, h, body) = send(&f.app, req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("name=\"token\"") && !body.contains("Keynote"), "{body}");
    assert!(h[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("default-src 'none'"));
    // the right token reaches the staff API
    let req = Request::post("/api/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from("{}"))
        .unwrap();
    let (s, _, body) = send(&f.app, req).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "queued"));
    assert_eq!(f.staff_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn login_form_and_query_token_set_a_strict_httponly_cookie() {
    let f = fixture(Some(TOKEN));
    let form = |t: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={t}")))
            .unwrap()
    };
    let (s, h, _) = send(&f.app, form("wrong-token-0123456789")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(!h.contains_key(header::SET_COOKIE));
    let (s, h, _) = send(&f.app, form(TOKEN)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let cookie = h[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains(TOKEN), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let req = Request::get("/").header(header::COOKIE, &pair).body(Body::empty()).unwrap();
    let (s, _, body) = send(&f.app, req).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("Keynote videos") && body.contains("box-7") && body.contains("Hall B"), "{body}");
    // ?token= logs in and drops the token from the address
    let (s, h, _) = send(&f.app, get_req(&format!("/?token={TOKEN}"))).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/");
    let second = h[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert_ne!(second, cookie, "every login is its own random session");
    let (s, h, _) = send(&f.app, get_req("/?token=nope")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(!h.contains_key(header::SET_COOKIE));
    // logging out revokes that session on the box, not only in the browser
    let req = Request::post("/logout").header(header::COOKIE, &pair).body(Body::empty()).unwrap();
    let (s, _, _) = send(&f.app, req).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let req = Request::get("/").header(header::COOKIE, &pair).body(Body::empty()).unwrap();
    let (s, _, _) = send(&f.app, req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a logged-out cookie replayed is refused");
    let other = second.split(';').next().unwrap().to_owned();
    let req = Request::get("/").header(header::COOKIE, &other).body(Body::empty()).unwrap();
    assert_eq!(send(&f.app, req).await.0, StatusCode::OK, "the other session goes on");
}

#[tokio::test]
async fn wrong_tokens_are_rate_limited_per_client() {
    let f = fixture(Some(TOKEN));
    let from = |mut r: Request<Body>, ip: [u8; 4]| {
        r.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((ip, 5000))));
        r
    };
    let mut codes = Vec::new();
    for _ in 0..(auth::ATTEMPT_BURST as usize + 3) {
        codes.push(send(&f.app, from(with_bearer("/api/status", "guess-guess-guess"), [10, 0, 0, 9])).await.0);
    }
    assert!(codes[..auth::ATTEMPT_BURST as usize].iter().all(|c| *c == StatusCode::UNAUTHORIZED), "{codes:?}");
    assert!(codes[auth::ATTEMPT_BURST as usize..].iter().all(|c| *c == StatusCode::TOO_MANY_REQUESTS), "{codes:?}");
    // even the right token waits now: a guesser must not learn that a guess was right
    assert_eq!(
        send(&f.app, from(with_bearer("/api/status", TOKEN), [10, 0, 0, 9])).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // right tokens do not spend tries: staff tools polling with the token are never locked out
    for _ in 0..(3 * auth::ATTEMPT_BURST as usize) {
        assert_eq!(send(&f.app, from(with_bearer("/api/status", TOKEN), [10, 0, 0, 7])).await.0, StatusCode::OK);
    }
    assert_eq!(
        send(&f.app, from(with_bearer("/api/status", "x-guess"), [10, 0, 0, 8])).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn without_a_configured_token_the_dashboard_and_staff_api_are_off() {
    let f = fixture(None);
    let (s, _, _) = send(&f.app, with_bearer("/api/status", "")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = send(&f.app, get_req("/")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(f.staff_calls.load(Ordering::SeqCst), 0);
    let (s, _, _) = send(&f.app, get_req("/healthz")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn readyz_follows_the_pinned_jobs_and_the_configured_releases() {
    let f = fixture(Some(TOKEN));
    // the configured release is pinned and empty: not ready
    let (s, _, body) = send(&f.app, get_req("/readyz")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.starts_with("not ready: 0 of 1 pinned jobs ready; 'Keynote videos' 0%"), "{body}");
    // a job covering that release wins over the config entry
    let ih = f.release.infohash();
    let mut j = job("Keynote videos", JobState::Ready, true, 10, 10);
    j.infohash = Some(ih);
    let mut other = job("Maps", JobState::Failed, true, 0, 10);
    other.reason = Some("signed by an unknown key".into());
    *f.jobs.0.lock().unwrap() = vec![j.clone(), other];
    let (s, _, body) = send(&f.app, get_req("/readyz")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "not ready: 1 of 2 pinned jobs ready; 'Maps' failed: signed by an unknown key\n");
    *f.jobs.0.lock().unwrap() = vec![j];
    let (s, _, body) = send(&f.app, get_req("/readyz")).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "ready: 'Keynote videos' is ready\n"));
}

#[tokio::test]
async fn api_status_reports_jobs_store_clients_errors_and_device() {
    let f = fixture(Some(TOKEN));
    put_first_pieces(&f, 3);
    let (s, _, body) = send(&f.app, with_bearer("/api/status", TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let r: StatusReport = serde_json::from_str(&body).unwrap();
    assert!(!r.ready);
    assert_eq!(r.device.name, "box-7");
    assert_eq!(r.jobs.len(), 1);
    assert_eq!(r.jobs[0].source, "config");
    assert!(r.jobs[0].pinned);
    assert_eq!(r.store.pieces, 3);
    assert_eq!(r.store.used, 3 * 16384);
    assert_eq!(r.store.budget, Some(1 << 30));
    assert_eq!(r.peers, Some(0));
    assert_eq!(r.portal_clients, Some(0));
    assert_eq!(r.errors[0].message, "origin unreachable");
}

fn sample_value(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse");
    scrape.samples.iter().find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))).map(|s| {
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        }
    })
}

#[tokio::test]
async fn metrics_parse_and_counters_move_after_a_store_put() {
    let f = fixture(Some(TOKEN));
    let (_, _, before) = send(&f.app, get_req("/metrics")).await;
    assert!(before.trim_end().ends_with("# EOF"), "{before}");
    assert_eq!(sample_value(&before, "popseed_store_pieces_stored_total", None), Some(0.0));
    assert_eq!(sample_value(&before, "popseed_store_pieces", None), Some(0.0));
    assert_eq!(sample_value(&before, "popseed_ready", None), Some(0.0));
    assert_eq!(sample_value(&before, "popseed_portal_sent_bytes_total", None), Some(12345.0));
    assert_eq!(sample_value(&before, "popseed_dns_queries_total", None), Some(7.0));
    assert_eq!(sample_value(&before, "popseed_jobs", Some(("state", "filling"))), Some(1.0));
    assert_eq!(sample_value(&before, "popseed_jobs", Some(("state", "ready"))), Some(0.0));
    put_first_pieces(&f, 2);
    let (_, _, after) = send(&f.app, get_req("/metrics")).await;
    assert_eq!(sample_value(&after, "popseed_store_pieces_stored_total", None), Some(2.0));
    assert_eq!(sample_value(&after, "popseed_store_pieces", None), Some(2.0));
    assert_eq!(sample_value(&after, "popseed_store_used_bytes", None), Some(2.0 * 16384.0));
    let free = sample_value(&after, "popseed_store_free_bytes", None).unwrap();
    assert!(free > 0.0 && free <= (1u64 << 30) as f64 - 2.0 * 16384.0, "{free}");
    // every sample line parses as `name{labels} value`
    for l in after.lines().filter(|l| !l.starts_with('#')) {
        let v = l.rsplit(' ').next().unwrap();
        assert!(v.parse::<f64>().is_ok(), "bad sample line {l:?}");
    }
}

#[tokio::test]
async fn dashboard_live_fragment_and_sampler_rates() {
    let f = fixture(Some(TOKEN));
    f.shared.sample();
    put_first_pieces(&f, 1);
    f.shared.sample();
    let (s, _, body) = send(&f.app, with_bearer("/dashboard/live", TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("NOT READY") && body.contains("<svg") && !body.contains("<html"), "{body}");
    let r = f.shared.report();
    assert_eq!(r.rates.history.len(), 1);
}
