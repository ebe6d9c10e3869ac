//! `/api/v1/jobs` and `/api/v1/queue`: the job queue as the console shows it, and the retry of a
//! job that failed for good.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::api::{ApiError, INTERNAL, UNAUTHORIZED};
use super::doc::ErrorBody;
use crate::app::queue::{self, JobPage, QueueView};
use crate::store::jobs::{JobFilter, JobRecord, JobState};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(retry_job))
        .routes(routes!(get_queue))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Only jobs of this kind, e.g. `contact.welcome`.
    kind: Option<String>,
    /// How many, 1 to 500.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// Only jobs older than this id (the previous page's `next_before`).
    before: Option<i64>,
}

/// Jobs, newest first.
#[utoipa::path(
    get,
    path = "/jobs",
    tag = "jobs",
    params(JobsQuery),
    responses(
        (status = 200, description = "a page of jobs", body = JobPage),
        (status = 400, description = "a query parameter is wrong (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_jobs(
    State(state): State<AppState>,
    Query(q): Query<JobsQuery>,
) -> Result<Response, ApiError> {
    // A console's form sends empty fields for "any".
    let wanted = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            let all: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("state: {s:?} is not one of {}", all.join(", ")))
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: must be between 1 and 500"));
    }
    let filter = JobFilter {
        state: wanted,
        kind: q.kind.filter(|k| !k.is_empty()),
        before: q.before,
        limit,
    };
    Ok(Json(queue::list(&state.services, &filter).await?).into_response())
}

/// One job.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    tag = "jobs",
    params(("id" = i64, Path, description = "the job's id")),
    responses(
        (status = 200, description = "the job", body = JobRecord),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_job(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    Ok(Json(queue::get(&state.services, id).await?).into_response())
}

/// Puts a job that failed for good back in the queue, due now, with its full retries again. It
/// keeps its idempotency key and its send ledger, so a send that went out before is not sent
/// again; its last error stays until it runs.
#[utoipa::path(
    post,
    path = "/jobs/{id}/retry",
    tag = "jobs",
    params(("id" = i64, Path, description = "the job's id")),
    responses(
        (status = 200, description = "queued again; the job", body = JobRecord),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "the job is not failed (its state is named)", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn retry_job(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    Ok(Json(queue::retry(&state.services, id).await?).into_response())
}

/// Jobs per state, inbox events per status, and how long the oldest due job and the oldest
/// waiting event have waited.
#[utoipa::path(
    get,
    path = "/queue",
    tag = "jobs",
    responses(
        (status = 200, description = "the queue now", body = QueueView),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_queue(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(queue::overview(&state.services).await?).into_response())
}
