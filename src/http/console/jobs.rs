//! 事件与任务: the inbox and the job queue by state, their lag, a failed job's error and a retry
//! button.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::json;

use super::{AppState, Flash, Visitor, api, back, encode, refused_page, render};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/console/jobs", get(page))
        .route("/console/jobs/{id}/retry", post(retry))
}

async fn page(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let flash = Flash {
        ok: query.get("ok").cloned(),
        error: query.get("error").cloned(),
    };
    let filters: Vec<(&str, &str)> = ["state", "kind", "before"]
        .iter()
        .filter_map(|k| {
            query
                .get(*k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (*k, v))
        })
        .collect();
    let jobs = match api(
        &state,
        &session,
        Method::GET,
        &format!("/jobs?{}", encode(&filters)),
        None,
    )
    .await
    {
        Ok(v) => v,
        Err(e) => return refused_page(&state, &session, &e),
    };
    let queue = api(&state, &session, Method::GET, "/queue", None)
        .await
        .unwrap_or_default();
    let event_filter: Vec<(&str, &str)> = query
        .get("event_status")
        .filter(|s| !s.is_empty())
        .map(|s| vec![("status", s.as_str()), ("limit", "50")])
        .unwrap_or_else(|| vec![("limit", "20")]);
    let events = api(
        &state,
        &session,
        Method::GET,
        &format!("/events?{}", encode(&event_filter)),
        None,
    )
    .await
    .unwrap_or_default();
    let kept: HashMap<&str, &str> = filters
        .iter()
        .copied()
        .filter(|(k, _)| *k != "before")
        .collect();
    let next = jobs["next_before"].as_i64().map(|before| {
        let before = before.to_string();
        let mut pairs: Vec<(&str, &str)> = kept.iter().map(|(k, v)| (*k, *v)).collect();
        pairs.push(("before", &before));
        format!("/console/jobs?{}", encode(&pairs))
    });
    render(
        &state,
        &session,
        "jobs.html",
        "jobs",
        &flash,
        json!({ "jobs": jobs["jobs"], "queue": queue, "events": events["events"],
                "filters": kept, "event_status": query.get("event_status"), "next": next,
                "job_lag_secs": queue["job_lag_ms"].as_i64().unwrap_or(0) / 1000,
                "inbox_lag_secs": queue["inbox_lag_ms"].as_i64().unwrap_or(0) / 1000 }),
    )
}

async fn retry(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(id): Path<i64>,
) -> Response {
    let outcome = api(
        &state,
        &session,
        Method::POST,
        &format!("/jobs/{id}/retry"),
        None,
    )
    .await
    .map(|_| format!("任务 {id} 已重新排队"));
    back("/console/jobs?state=failed", outcome)
}
