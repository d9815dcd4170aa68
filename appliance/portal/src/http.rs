//! The portal's HTTP application (an axum [`Router`]): the captive gate (RFC 8908 API, OS probes,
//! unknown hosts), the catalog page, the acknowledge form, .torrent files and downloads with
//! Range/ETag/If-Range. Downloads answer with headers only plus a [`SendFileExt`] that the
//! connection shell (`conn.rs`) streams with sendfile(2); the router needs that shell. A file
//! the box is still filling streams as it arrives: the response starts once the piece under the
//! first byte is stored, and the shell waits for each next piece ([`bytes_ready`]), asking the
//! fetcher for the pieces just ahead of the reader ([`READ_AHEAD`]).

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use percent_encoding::percent_decode_str;
use popseed_core::{InfoHash, ReadThrough};
use popseed_store::{Store, StoreEvent};
use tokio::sync::broadcast::error::RecvError;

use crate::ack::AckTable;
use crate::config::{PortalConfig, Urls};
use crate::error::PortalError;
use crate::limits::{Refused, SlotGuard, Slots};
use crate::page::{self, Catalog};
use crate::probe::{self, classify};
use crate::range::{self, RangeOutcome};
use crate::Stats;

/// The client's address, put on every request by the connection shell.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Bytes ahead of a reader of a file still filling whose missing pieces are asked for at once
/// (on-demand: before every planned piece), as the reader advances.
pub const READ_AHEAD: u64 = 8 << 20;

/// A file region to send after the response head (taken once by the shell).
#[derive(Debug)]
pub struct SendFile {
    pub file: std::fs::File,
    pub offset: u64,
    pub len: u64,
    pub slot: Option<SlotGuard>,
    /// Set when the region is not all stored yet: the file whose pieces the shell waits for
    /// ([`bytes_ready`]) before sending each part.
    pub filling: Option<Filling>,
}

/// A file being read while it fills.
#[derive(Debug, Clone, Copy)]
pub struct Filling {
    pub infohash: InfoHash,
    pub file: usize,
    /// The fetcher has been asked for the missing pieces up to this file offset.
    pub asked_until: u64,
}

/// Response extension carrying a [`SendFile`] (extensions must be `Clone`).
#[derive(Debug, Clone)]
pub struct SendFileExt(pub Arc<Mutex<Option<SendFile>>>);

impl SendFileExt {
    pub fn take(&self) -> Option<SendFile> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Shared state of the HTTP application.
pub struct AppState {
    pub store: Arc<Store>,
    /// Where missing pieces of a download are asked for (the fetcher).
    pub read_through: Arc<dyn ReadThrough>,
    pub cfg: PortalConfig,
    pub urls: Urls,
    pub acks: AckTable,
    pub slots: Slots,
    pub stats: Arc<Stats>,
    pub qr: Option<String>,
    /// Normalized hosts that name the portal itself (anything else is redirected).
    pub own_hosts: Vec<String>,
}

impl AppState {
    pub fn new(
        store: Arc<Store>,
        read_through: Arc<dyn ReadThrough>,
        cfg: PortalConfig,
        urls: Urls,
        stats: Arc<Stats>,
    ) -> AppState {
        // The portal's own names, plus loopback and the listen address so the box itself (and a
        // developer running `popseed portal`) can open it; attendees never send those.
        let mut own_hosts: Vec<String> = [
            cfg.portal_ip.to_string(),
            cfg.lan_ip().to_string(),
            cfg.box_name.clone(),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ]
        .iter()
        .map(|h| probe::normalize_host(h))
        .collect();
        if !cfg.http_listen.ip().is_unspecified() {
            own_hosts.push(probe::normalize_host(&cfg.http_listen.ip().to_string()));
        }
        AppState {
            read_through,
            acks: AckTable::new(cfg.ack_expiry(), cfg.ack_max_clients),
            slots: Slots::new(cfg.max_downloads_per_client, cfg.max_downloads_total),
            qr: page::qr_svg(&urls.portal),
            store,
            cfg,
            urls,
            stats,
            own_hosts,
        }
    }

    fn is_own_host(&self, host: &str) -> bool {
        let h = probe::normalize_host(host);
        h.is_empty() || self.own_hosts.contains(&h)
    }

    fn acknowledged(&self, client: Option<IpAddr>) -> bool {
        client.is_some_and(|c| self.acks.is_acknowledged(c, Instant::now()))
    }
}

/// Builds the router. Every request must carry a [`ClientAddr`] extension.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(portal_page))
        .route("/ack", post(acknowledge))
        .route("/api/captive", get(captive_api))
        .route("/torrent/{file}", get(torrent))
        .route("/files/{*rest}", get(download))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

fn client_of(req: &Request) -> Option<IpAddr> {
    req.extensions().get::<ClientAddr>().map(|c| c.0)
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response {
    no_store((status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// 302 to the portal: makes an OS open its captive sheet.
fn to_portal(st: &AppState) -> Response {
    let url = &st.urls.portal;
    let body = format!("<html><body><a href=\"{url}\">Continue to the portal</a></body></html>");
    let mut r = (StatusCode::FOUND, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    no_store(r)
}

fn captive_json(st: &AppState, acknowledged: bool) -> Response {
    let body = serde_json::json!({
        "captive": !acknowledged,
        "user-portal-url": st.urls.portal,
        "venue-info-url": st.urls.venue_info,
    });
    no_store((StatusCode::OK, [(header::CONTENT_TYPE, "application/captive+json")], body.to_string()).into_response())
}

/// Content-Security-Policy of the catalog page: its own inline styles, media and images from the
/// box, its one form posting to the box; no script, no frame, nothing from elsewhere.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; media-src 'self'; \
form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every response says `nosniff`: a file is what its `Content-Type` says (see [`crate::media`]).
async fn gate(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let mut r = gate_inner(st, req, next).await;
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// The captive gate, before routing: RFC 8908 API, OS probes, foreign hosts.
async fn gate_inner(st: Arc<AppState>, req: Request, next: Next) -> Response {
    st.stats.http_requests.fetch_add(1, Ordering::Relaxed);
    let client = client_of(&req);
    let wants_api = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains("application/captive+json")));
    if wants_api {
        return captive_json(&st, st.acknowledged(client));
    }
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if let Some(platform) = classify(&host, req.uri().path()) {
        st.stats.probes.fetch_add(1, Ordering::Relaxed);
        if !st.acknowledged(client) {
            tracing::debug!(platform = platform.name(), "probe before acknowledge: redirect");
            return to_portal(&st);
        }
        let r = platform.online_reply();
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
        return no_store((status, [(header::CONTENT_TYPE, r.content_type)], r.body).into_response());
    }
    if !st.is_own_host(&host) {
        return to_portal(&st);
    }
    next.run(req).await
}

async fn portal_page(State(st): State<Arc<AppState>>, req: Request) -> Response {
    st.stats.portal_pages.fetch_add(1, Ordering::Relaxed);
    let acknowledged = st.acknowledged(client_of(&req));
    let catalog = Catalog::gather(&st.store, &st.urls);
    let html = page::render(&st.cfg.venue_name, &catalog, &st.urls, st.qr.as_deref(), acknowledged).into_string();
    let mut r = no_store((StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response());
    r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    r
}

async fn acknowledge(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let Some(client) = client_of(&req) else { return text(StatusCode::BAD_REQUEST, "no client address\n") };
    st.acks.acknowledge(client, Instant::now());
    st.stats.acknowledgements.fetch_add(1, Ordering::Relaxed);
    st.stats.portal_clients.store(st.acks.len() as u64, Ordering::Relaxed);
    tracing::debug!("client acknowledged the portal");
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/"));
    no_store(r)
}

async fn captive_api(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let acknowledged = st.acknowledged(client_of(&req));
    captive_json(&st, acknowledged)
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

async fn torrent(State(st): State<Arc<AppState>>, axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let Some(ih) = file.strip_suffix(".torrent").and_then(|h| h.parse::<InfoHash>().ok()) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let Ok(r) = st.store.release(&ih) else { return text(StatusCode::NOT_FOUND, "no such release\n") };
    let tiers = vec![vec![st.urls.tracker.clone()]];
    match popseed_release::metainfo::with_trackers(&r.torrent_bytes, &tiers, &[st.urls.web_seed(&ih)]) {
        Ok(bytes) => {
            let disp = crate::media::disposition("attachment", &format!("{}.torrent", r.metainfo.name));
            let mut resp =
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-bittorrent")], bytes).into_response();
            if let Ok(v) = HeaderValue::from_str(&disp) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(e) => {
            tracing::warn!(error = %popseed_core::chain(&e), "cannot re-issue torrent");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the .torrent\n")
        }
    }
}

/// Which stored file a `/files/...` path names: (infohash, file index). Path segments are
/// percent-decoded and compared with the release's layout; nothing from the URL ever becomes a
/// filesystem path, so `..` and friends can only fail to match.
pub fn resolve_file(store: &Store, path: &str) -> Option<(InfoHash, usize)> {
    let rest = path.strip_prefix("/files/")?;
    let mut segs = rest.split('/');
    let ih: InfoHash = segs.next()?.parse().ok()?;
    let decoded: Vec<String> =
        segs.map(|s| percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned())).collect::<Option<_>>()?;
    let (name, comps) = decoded.split_first()?;
    let r = store.release(&ih).ok()?;
    if *name != r.metainfo.name {
        return None;
    }
    if r.metainfo.single_file {
        return comps.is_empty().then_some((ih, 0));
    }
    r.layout().files.iter().position(|f| f.components == comps).map(|i| (ih, i))
}

fn last_modified(created: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(created).ok()
}

async fn download(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let method = req.method().clone();
    let client = client_of(&req);
    let Some((ih, file)) = resolve_file(&st.store, req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "no such file\n");
    };
    let Ok(r) = st.store.release(&ih) else { return text(StatusCode::NOT_FOUND, "no such release\n") };
    let Some(f) = r.layout().files.get(file) else { return text(StatusCode::NOT_FOUND, "no such file\n") };
    let len = f.length;
    let name = f.components.last().cloned().unwrap_or_else(|| r.metainfo.name.clone());
    let etag = range::etag(&ih, file);
    let lm = last_modified(&r.manifest.created);
    let headers = req.headers();
    let hdr = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());

    let mut common = HeaderMap::new();
    let put = |m: &mut HeaderMap, k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            m.insert(k, v);
        }
    };
    put(&mut common, header::ETAG, &etag);
    if let Some(t) = lm {
        put(&mut common, header::LAST_MODIFIED, &httpdate::fmt_http_date(t));
    }
    put(&mut common, header::ACCEPT_RANGES, "bytes");
    put(&mut common, header::CACHE_CONTROL, "public, max-age=31536000, immutable");

    if range::if_none_match_hits(hdr(header::IF_NONE_MATCH), &etag) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        resp.headers_mut().extend(common);
        return resp;
    }
    let range_hdr = if range::if_range_allows(hdr(header::IF_RANGE), &etag, lm) { hdr(header::RANGE) } else { None };
    let (status, start, count) = match range::parse_range(range_hdr, len) {
        RangeOutcome::Full => (StatusCode::OK, 0, len),
        RangeOutcome::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeOutcome::Unsatisfiable => {
            let mut resp = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            put(resp.headers_mut(), header::CONTENT_RANGE, &format!("bytes */{len}"));
            resp.headers_mut().extend(common);
            return resp;
        }
    };
    let (content_type, disposition) =
        crate::media::content_headers(&name, crate::media::wants_download(req.uri().query()));
    put(&mut common, header::CONTENT_TYPE, content_type);
    put(&mut common, header::CONTENT_DISPOSITION, &disposition);
    put(&mut common, header::CONTENT_LENGTH, &count.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        put(&mut common, header::CONTENT_RANGE, &range::content_range(start, start + count - 1, len));
    }
    let head_only = method == Method::HEAD;
    let slot = if head_only {
        None
    } else {
        match client.map(|c| st.slots.acquire(c)) {
            Some(Ok(g)) => Some(g),
            Some(Err(why)) => {
                st.stats.downloads_refused.fetch_add(1, Ordering::Relaxed);
                let msg = match why {
                    Refused::PerClient => "too many downloads from your device at once; try again when one finishes\n",
                    Refused::Total => "the box is busy; try again in a moment\n",
                };
                let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, msg);
                put(resp.headers_mut(), header::RETRY_AFTER, "5");
                return resp;
            }
            None => return text(StatusCode::BAD_REQUEST, "no client address\n"),
        }
    };
    // The response starts once the piece under its first byte is stored; the rest streams as
    // it arrives (the shell waits for each next piece).
    let mut filling = None;
    if count > 0 && !head_only {
        let asked = match ensure_present(&st, &ih, file, start, 1, count).await {
            Ok(asked) => asked,
            Err(resp) => {
                st.stats.downloads_unavailable.fetch_add(1, Ordering::Relaxed);
                return resp;
            }
        };
        if st.store.missing_for_file_range(&ih, file, start, count).is_ok_and(|m| !m.is_empty()) {
            // pieces of the range are missing: only worth starting if something fetches them
            // (an empty request asks just that), and the reader's read-ahead is asked for now
            let fetched = asked
                || (st.read_through.request(&ih, &[])
                    && ask_ahead(&st, &ih, file, start, start + count).unwrap_or(false));
            if !fetched {
                st.stats.downloads_unavailable.fetch_add(1, Ordering::Relaxed);
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "this part of the file is not on this box yet\n");
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                return r;
            }
            filling = Some(Filling { infohash: ih, file, asked_until: start + count.min(READ_AHEAD) });
        }
    }
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp.headers_mut().extend(common);
    if head_only || count == 0 {
        return resp;
    }
    let opened =
        st.store.file_path(&ih, file).map_err(PortalError::from).and_then(|p| {
            std::fs::File::open(&p).map_err(|source| PortalError::OpenStored { path: p.clone(), source })
        });
    let file_handle = match opened {
        Ok(fh) => fh,
        Err(e) => {
            tracing::warn!(error = %popseed_core::chain(&e), "cannot open stored file");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
        }
    };
    // Marks the release as used (the store's eviction order) and re-checks presence.
    let mut one = [0u8; 1];
    if st.store.read_file_at(&ih, file, start, &mut one).is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the file is not on this box right now\n");
    }
    st.stats.downloads.fetch_add(1, Ordering::Relaxed);
    resp.extensions_mut().insert(SendFileExt(Arc::new(Mutex::new(Some(SendFile {
        file: file_handle,
        offset: start,
        len: count,
        slot,
        filling,
    })))));
    resp
}

/// The missing pieces of `[start, start + len)` of a file and [`READ_AHEAD`] beyond it (within
/// `end`), asked of the fetcher; false when no fetcher takes them.
fn ask_ahead(st: &AppState, ih: &InfoHash, file: usize, start: u64, end: u64) -> Result<bool, ()> {
    let ahead = end.saturating_sub(start).min(READ_AHEAD);
    if ahead == 0 {
        return Ok(true);
    }
    let missing = st.store.missing_for_file_range(ih, file, start, ahead).map_err(|_| ())?;
    Ok(missing.is_empty() || st.read_through.request(ih, &missing))
}

/// How many bytes from `offset` (up to `end`) of a file being read while it fills are stored,
/// waiting for the piece under `offset` when it is missing, at most `demand_timeout_secs`. The
/// fetcher is asked for the missing pieces up to [`READ_AHEAD`] ahead of the reader, each range
/// once (`f.asked_until`). An error ends the response where it stands: the client has the bytes
/// sent so far and resumes with a Range.
pub async fn bytes_ready(st: &AppState, f: &mut Filling, offset: u64, end: u64) -> Result<u64, ()> {
    let (ih, file) = (f.infohash, f.file);
    let release = st.store.release(&ih).map_err(|_| ())?;
    let layout = release.layout();
    let file_start = layout.files.get(file).ok_or(())?.offset;
    let window = (end - offset).min(READ_AHEAD);
    let mut events = st.store.subscribe();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(st.cfg.demand_timeout_secs);
    let horizon = offset + window;
    if f.asked_until < horizon {
        let from = f.asked_until.max(offset);
        if !ask_ahead(st, &ih, file, from, horizon)? {
            return Err(());
        }
        f.asked_until = horizon;
    }
    loop {
        let missing = st.store.missing_for_file_range(&ih, file, offset, window).map_err(|_| ())?;
        let Some(first) = missing.first() else { return Ok(window) };
        let piece_start = layout.piece_offset(first.get()).saturating_sub(file_start);
        if piece_start > offset {
            // the stored bytes before the first missing piece go now
            return Ok(piece_start - offset);
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) | Ok(Err(RecvError::Closed)) => return Err(()),
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
        }
    }
}

/// Waits until `[start, start+len)` of the file is present: asks the fetcher (read-through) for
/// its pieces and those up to [`READ_AHEAD`] beyond (within `range_len` from `start`) and waits
/// for them with a timeout; 503 at once when no fetcher is attached. True when it asked.
async fn ensure_present(
    st: &AppState,
    ih: &InfoHash,
    file: usize,
    start: u64,
    len: u64,
    range_len: u64,
) -> Result<bool, Response> {
    let unavailable = |msg: &'static str, retry: &'static str| {
        let mut r = text(StatusCode::SERVICE_UNAVAILABLE, msg);
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(retry));
        r
    };
    // Subscribe before checking so no PieceStored between the check and the wait is missed.
    let mut events = st.store.subscribe();
    let missing = match st.store.missing_for_file_range(ih, file, start, len) {
        Ok(m) => m,
        Err(_) => return Err(text(StatusCode::NOT_FOUND, "no such release\n")),
    };
    if missing.is_empty() {
        return Ok(false);
    }
    if !ask_ahead(st, ih, file, start, start + range_len).unwrap_or(false) {
        return Err(unavailable("this part of the file is not on this box yet\n", "60"));
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(st.cfg.demand_timeout_secs);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return Err(unavailable("still fetching this part of the file; try again shortly\n", "10")),
            Ok(Err(RecvError::Closed)) => return Err(unavailable("the store is shutting down\n", "30")),
            Ok(Ok(StoreEvent::PieceStored { infohash, .. })) if infohash != *ih => continue,
            Ok(Ok(StoreEvent::ReleaseAdded { .. })) => continue,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
        }
        match st.store.missing_for_file_range(ih, file, start, len) {
            Ok(m) if m.is_empty() => return Ok(true),
            Ok(_) => {}
            Err(_) => return Err(text(StatusCode::NOT_FOUND, "no such release\n")),
        }
    }
}
