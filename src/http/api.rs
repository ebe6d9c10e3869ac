//! `/api/v1`: the operator's JSON API, behind `Authorization: Bearer <api.token>`.

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::app::activity::{self, ActivityBatch, BatchError};
use crate::app::channels::{self, ChannelInput};
use crate::app::{AppError, customers, tiers};
use crate::ids::ExternalUserId;
use crate::store::inbox::{EventFilter, InboxStatus};

pub(super) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/events", get(list_events))
        .route("/channels", get(list_channels).post(create_channel))
        .route(
            "/channels/{code}",
            get(get_channel).put(update_channel).delete(delete_channel),
        )
        .route("/activity", post(post_activity))
        .route("/customers/{id}", get(get_customer))
        .route("/customers/{id}/refs", put(put_refs))
        .route("/customers/{id}/pin", put(put_pin).delete(delete_pin))
        .route("/tiers/summary", get(tier_summary))
        .route("/tiers", get(get_tiers).put(put_tiers))
        .route_layer(axum::middleware::from_fn_with_state(state, require_token))
        // The API description is public: it holds no data.
        .route("/openapi.json", get(openapi))
}

/// The API's error answer: a status and a message naming what is wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    pub fn status(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "API request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error; see the server log".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let expected = state.api_token.expose().as_bytes();
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    match given {
        Some(given) if !expected.is_empty() && bool::from(given.ct_eq(expected)) => {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "missing or wrong bearer token (config api.token)" })),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    kind: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

/// Newest first: id, kind, received_at (Unix ms), status, error, duplicates.
async fn list_events(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(InboxStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status: {s:?} is not one of pending, processing, done, unhandled, failed"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: must be between 1 and 1000"));
    }
    let filter = EventFilter {
        kind: q.kind.filter(|k| !k.is_empty()),
        status,
    };
    let events = state
        .store
        .list_events(&filter, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "events": events })).into_response())
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(m) => ApiError::bad_request(m),
            AppError::NotFound(m) => ApiError::status(StatusCode::NOT_FOUND, m),
            AppError::Conflict(m) => ApiError::status(StatusCode::CONFLICT, m),
            // WeCom refused: the operator should see why (the message names the errcode).
            AppError::Wecom(w) => {
                tracing::warn!(error = %w, "WeCom refused an operator's change");
                ApiError::status(StatusCode::BAD_GATEWAY, w.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}

/// The JSON body, or a 400 in the API's own error shape naming what is wrong.
fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload
        .map(|Json(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn list_channels(State(state): State<AppState>) -> Result<Response, ApiError> {
    let channels = channels::list(&state.services).await?;
    Ok(Json(json!({ "channels": channels })).into_response())
}

async fn get_channel(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(channels::get(&state.services, &code).await?).into_response())
}

async fn create_channel(
    State(state): State<AppState>,
    payload: Result<Json<ChannelInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    let created = channels::create(&state.services, body(payload)?, "api").await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn update_channel(
    State(state): State<AppState>,
    Path(code): Path<String>,
    payload: Result<Json<ChannelInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    Ok(Json(channels::update(&state.services, &code, body(payload)?).await?).into_response())
}

async fn delete_channel(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    channels::delete(&state.services, &code).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `{"items": [...]}` from the shop: stored whole, or rejected whole with every problem listed.
async fn post_activity(
    State(state): State<AppState>,
    payload: Result<Json<ActivityBatch>, JsonRejection>,
) -> Result<Response, ApiError> {
    match activity::record_activity(&state.services, body(payload)?).await {
        Ok(outcome) => Ok(Json(outcome).into_response()),
        Err(BatchError::Problems(problems)) => Ok((
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "the batch was rejected whole; nothing was stored", "problems": problems })),
        )
            .into_response()),
        Err(e @ BatchError::Reused(_)) => Err(ApiError::status(StatusCode::CONFLICT, e.to_string())),
        Err(BatchError::App(e)) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
struct RefsBody {
    refs: Vec<String>,
}

/// Maps the shop's customer ids to a customer; activity sent under them counts for the customer.
async fn put_refs(
    State(state): State<AppState>,
    Path(id): Path<ExternalUserId>,
    payload: Result<Json<RefsBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let refs = body(payload)?.refs;
    customers::set_refs(&state.services, &id, &refs).await?;
    Ok(Json(json!({ "external_userid": id, "refs": refs })).into_response())
}

/// A customer: profile, tier, relations and tier history.
async fn get_customer(
    State(state): State<AppState>,
    Path(id): Path<ExternalUserId>,
) -> Result<Response, ApiError> {
    Ok(Json(customers::view(&state.services, &id).await?).into_response())
}

async fn put_pin(
    State(state): State<AppState>,
    Path(id): Path<ExternalUserId>,
    payload: Result<Json<tiers::PinInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    tiers::pin(&state.services, &id, Some(body(payload)?)).await?;
    get_customer(State(state), Path(id)).await
}

async fn delete_pin(
    State(state): State<AppState>,
    Path(id): Path<ExternalUserId>,
) -> Result<Response, ApiError> {
    tiers::pin(&state.services, &id, None).await?;
    get_customer(State(state), Path(id)).await
}

async fn tier_summary(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(tiers::summary(&state.services).await?).into_response())
}

async fn get_tiers(State(state): State<AppState>) -> Result<Response, ApiError> {
    let services = &state.services;
    let (tiers, source) = services.tiers_in_force().await?;
    let history = services
        .store
        .tier_rules_history()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "tiers": tiers, "source": source, "changes": history })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TiersBody {
    tiers: Vec<crate::config::TierSettings>,
    by: String,
}

/// Replaces the tier rules (validated; in force from the next evaluation).
async fn put_tiers(
    State(state): State<AppState>,
    payload: Result<Json<TiersBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(payload)?;
    tiers::change_rules(&state.services, b.tiers, &b.by).await?;
    get_tiers(State(state)).await
}
