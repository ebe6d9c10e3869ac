//! The admin endpoints under `/fake/`, for `siyu fake-wecom --listen ADDR` driven from another
//! process (a shell script, the demo, a manual test): faults, token expiry, the call log, the
//! state dump, staff and the callback URL; and the join-way QR code images the fake hands out
//! as `qr_code`, and the contact ways' (`GET /fake/qr/{config_id}.png`).

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{Failure, FakeWecom, groups};

pub(super) fn router() -> Router<FakeWecom> {
    Router::new()
        .route("/fake/faults", post(add_fault).delete(clear_faults))
        .route("/fake/expire-tokens", post(expire_tokens))
        .route("/fake/calls", get(calls))
        .route("/fake/state", get(state))
        .route("/fake/staff", post(add_staff))
        .route("/fake/callback-url", post(callback_url))
        .route("/fake/qr/{file}", get(join_way_qr))
}

fn bad_request(why: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": why.to_string() })),
    )
        .into_response()
}

fn ok() -> Response {
    Json(json!({ "ok": true })).into_response()
}

/// `{"path", "times"?, "errcode" | "http_status" | "timeout" | "broken_body", "error_rate"?,
/// "latency_ms"?}`
#[derive(Deserialize)]
struct FaultIn {
    path: String,
    times: Option<u32>,
    errcode: Option<i64>,
    http_status: Option<u16>,
    timeout: Option<bool>,
    broken_body: Option<bool>,
    error_rate: Option<f64>,
    latency_ms: Option<u64>,
}

async fn add_fault(
    Extract(fake): Extract<FakeWecom>,
    body: Result<Json<FaultIn>, JsonRejection>,
) -> Response {
    let Ok(Json(f)) = body else {
        return bad_request(
            "expected {\"path\", \"times\"?, \"errcode\"|\"http_status\"|\"timeout\"|\"broken_body\", \"error_rate\"?, \"latency_ms\"?}",
        );
    };
    let timeout = f.timeout.unwrap_or(false);
    let broken_body = f.broken_body.unwrap_or(false);
    let failure = match (f.errcode, f.http_status, timeout, broken_body) {
        (Some(c), None, false, false) => Some(Failure::Errcode(c)),
        (None, Some(s), false, false) => {
            if StatusCode::from_u16(s).is_err() {
                return bad_request(format!("http_status {s} is not an HTTP status"));
            }
            Some(Failure::Http(s))
        }
        (None, None, true, false) => Some(Failure::Timeout),
        (None, None, false, true) => Some(Failure::BrokenBody),
        (None, None, false, false) => None,
        _ => return bad_request("give one of errcode, http_status, timeout, broken_body"),
    };
    if failure.is_none() && f.latency_ms.is_none() {
        return bad_request("nothing to inject: give a failure or latency_ms");
    }
    if let Some(failure) = failure {
        match (f.error_rate, f.times) {
            (Some(rate), _) => fake.set_error_rate(&f.path, rate, failure),
            // A failure without a count or a rate fails the next call.
            (None, times) => fake.fail_next(&f.path, times.unwrap_or(1), failure),
        }
    }
    if let Some(ms) = f.latency_ms {
        fake.set_latency(&f.path, Duration::from_millis(ms));
    }
    ok()
}

async fn clear_faults(Extract(fake): Extract<FakeWecom>) -> Response {
    fake.clear_faults();
    ok()
}

async fn expire_tokens(Extract(fake): Extract<FakeWecom>) -> Response {
    fake.expire_tokens();
    ok()
}

async fn calls(Extract(fake): Extract<FakeWecom>) -> Response {
    Json(fake.calls()).into_response()
}

async fn state(Extract(fake): Extract<FakeWecom>) -> Response {
    Json(fake.dump()).into_response()
}

#[derive(Deserialize)]
struct StaffIn {
    userid: String,
    name: String,
}

async fn add_staff(
    Extract(fake): Extract<FakeWecom>,
    body: Result<Json<StaffIn>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(s)) if !s.userid.is_empty() => {
            fake.add_staff(&s.userid, &s.name);
            ok()
        }
        _ => bad_request("expected {\"userid\", \"name\"}"),
    }
}

#[derive(Deserialize)]
struct UrlIn {
    url: String,
}

async fn callback_url(
    Extract(fake): Extract<FakeWecom>,
    body: Result<Json<UrlIn>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(u)) if u.url.starts_with("http://") || u.url.starts_with("https://") => {
            fake.set_callback_url(&u.url);
            ok()
        }
        _ => bad_request("expected {\"url\": \"http://host:port/wecom/callback\"}"),
    }
}

/// `{config_id}.png`: the QR code of a join way that has one (scene 2), else 404.
async fn join_way_qr(Extract(fake): Extract<FakeWecom>, Path(file): Path<String>) -> Response {
    let png = file
        .strip_suffix(".png")
        .and_then(|config_id| groups::join_way_qr(&fake.lock(), config_id));
    match png {
        Some(png) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        None => (StatusCode::NOT_FOUND, "no such join way QR code").into_response(),
    }
}
