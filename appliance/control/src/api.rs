//! HTTP+JSON APIs: the box's staff API (`/api/jobs`: submit, list, show, cancel) and the
//! origin's admin API (`/admin/jobs`, `/admin/devices`: queue jobs for devices and see what
//! they report). Both require `Authorization: Bearer <token>`, compared in constant time;
//! without it they answer 401 and change nothing.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::error::ControlError;
use crate::hub::{ControlHub, Target};
use crate::job::{JobSource, JobSpec};
use crate::manager::JobManager;

/// True when the request carries `Authorization: Bearer <token>`.
pub fn bearer_ok(req: &Request, token: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim().as_bytes().ct_eq(token.as_bytes()).into())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "missing or wrong bearer token"})),
    )
        .into_response()
}

/// Wraps a router so every route needs the bearer token.
pub fn require_bearer(router: Router, token: String) -> Router {
    let token = Arc::new(token);
    router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move {
            if bearer_ok(&req, &token) {
                next.run(req).await
            } else {
                unauthorized()
            }
        }
    }))
}

fn error(status: StatusCode, e: &ControlError) -> Response {
    let kind = match e {
        ControlError::Refused(_) => "refused",
        ControlError::NoSuchJob(_) => "not_found",
        ControlError::BadJob(_) => "invalid",
        _ => "internal",
    };
    (status, Json(json!({"error": kind, "reason": popseed_core::chain(e).to_string()}))).into_response()
}

/// The staff API routes (mounted under the management address; the caller adds auth with
/// [`require_bearer`] or its own layer).
pub fn staff_router(jobs: Arc<JobManager>) -> Router {
    Router::new()
        .route("/api/jobs", post(submit).get(list))
        .route("/api/jobs/{id}", get(show).delete(cancel))
        .with_state(jobs)
}

async fn submit(
    State(jobs): State<Arc<JobManager>>,
    body: Result<Json<JobSpec>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(spec) = match body {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid", "reason": e.body_text()})))
                .into_response()
        }
    };
    match jobs.submit(spec, JobSource::Staff) {
        Ok(j) => (StatusCode::CREATED, Json(j)).into_response(),
        Err(e @ ControlError::Refused(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        Err(e @ ControlError::BadJob(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

async fn list(State(jobs): State<Arc<JobManager>>) -> Response {
    Json(jobs.list()).into_response()
}

async fn show(State(jobs): State<Arc<JobManager>>, Path(id): Path<String>) -> Response {
    match jobs.get(&id) {
        Some(j) => Json(j).into_response(),
        None => error(StatusCode::NOT_FOUND, &ControlError::NoSuchJob(id)),
    }
}

async fn cancel(State(jobs): State<Arc<JobManager>>, Path(id): Path<String>) -> Response {
    match jobs.cancel(&id) {
        Ok(j) => Json(j).into_response(),
        Err(e @ ControlError::NoSuchJob(_)) => error(StatusCode::NOT_FOUND, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// A job as `popseed job push` sends it to an origin.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// A device fingerprint, or absent with `all: true`.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub all: bool,
    pub job: JobSpec,
    /// A label for the origin's list.
    #[serde(default)]
    pub name: Option<String>,
}

/// The origin's admin routes, token-protected.
pub fn admin_router(hub: Arc<ControlHub>, token: String) -> Router {
    let r = Router::new()
        .route("/admin/jobs", post(admin_push).get(admin_jobs))
        .route("/admin/jobs/{id}", get(admin_job).delete(admin_cancel))
        .route("/admin/devices", get(admin_devices))
        .with_state(hub);
    require_bearer(r, token)
}

async fn admin_push(
    State(hub): State<Arc<ControlHub>>,
    body: Result<Json<PushRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid", "reason": e.body_text()})))
                .into_response()
        }
    };
    let target = match (req.device, req.all) {
        (Some(d), false) => Target::Device(d),
        (None, true) => Target::All,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                &ControlError::BadJob("give exactly one of `device` and `all`".into()),
            )
        }
    };
    let name = req.name.or(req.job.name.clone()).unwrap_or_default();
    match hub.queue(target, req.job, name) {
        Ok(id) => (StatusCode::CREATED, Json(json!({"id": id}))).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
    }
}

async fn admin_jobs(State(hub): State<Arc<ControlHub>>) -> Response {
    Json(hub.jobs()).into_response()
}

async fn admin_job(State(hub): State<Arc<ControlHub>>, Path(id): Path<String>) -> Response {
    match hub.jobs().into_iter().find(|j| j.id == id) {
        Some(j) => Json(j).into_response(),
        None => error(StatusCode::NOT_FOUND, &ControlError::NoSuchJob(id)),
    }
}

async fn admin_cancel(State(hub): State<Arc<ControlHub>>, Path(id): Path<String>) -> Response {
    match hub.cancel(&id) {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"id": id, "cancelled": true}))).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, &e),
    }
}

async fn admin_devices(State(hub): State<Arc<ControlHub>>) -> Response {
    Json(hub.devices()).into_response()
}
