//! `/api/v1`: the operator's JSON API, behind the token check of [`super::auth`].

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::doc::{
    ActivityRejected, ChannelList, CustomerRefs, CustomerView, ErrorBody, EventList, TierRules,
    TierSummary,
};
use crate::app::activity::{self, ActivityBatch, ActivityOutcome, BatchError};
use crate::app::channels::{self, ChannelInput, ChannelView};
use crate::app::{AppError, customers, tiers};
use crate::ids::ExternalUserId;
use crate::store::contacts::Channel;
use crate::store::inbox::{EventFilter, InboxStatus};

/// The routes and their description; `routes!` registers a handler with its `#[utoipa::path]`,
/// so a route cannot be served without being in the document.
/// `features` are the routes other modules of `http` serve under `/api/v1`, behind the same token.
pub(super) fn router(features: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(list_channels, create_channel))
        .routes(routes!(get_channel, update_channel, delete_channel))
        .routes(routes!(post_activity))
        .routes(routes!(list_customers))
        .routes(routes!(get_customer))
        .routes(routes!(put_refs))
        .routes(routes!(put_pin, delete_pin))
        .routes(routes!(tier_summary))
        .routes(routes!(get_tiers, put_tiers))
        .routes(routes!(preview_tiers))
        .merge(features)
}

/// `GET /api/v1/openapi.json`: public, outside the token check (it holds no data).
pub(super) fn document() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi))
}

/// The document `GET /api/v1/openapi.json` serves (set by `http::router`).
#[derive(Clone)]
pub(super) struct Document(pub axum::body::Bytes);

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
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Only events of this kind, e.g. `change_external_contact.add_external_contact`.
    kind: Option<String>,
    /// Only events in this status.
    #[param(value_type = Option<InboxStatus>)]
    status: Option<String>,
    /// How many, 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

/// Inbox events, newest first.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "the events", body = EventList),
        (status = 400, description = "a query parameter is wrong (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
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
    Ok(Json(EventList { events }).into_response())
}

/// This document (OpenAPI 3.1), generated from the handlers. Public: it holds no data.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json", body = Object))
)]
async fn openapi(Extension(doc): Extension<Document>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0).into_response()
}

pub(super) const UNAUTHORIZED: &str = "no bearer token, or the wrong one (config `api.token`)";
pub(super) const INTERNAL: &str = "siyu failed; the detail is in the server log";
pub(super) const WECOM_REFUSED: &str = "WeCom refused the change (`error` names the errcode)";

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
pub(super) fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload
        .map(|Json(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// The query string, or a 400 in the API's own error shape naming the parameter that is wrong.
pub(super) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// Channels with their numbers, and the `unattributed` pseudo-channel last.
#[utoipa::path(
    get,
    path = "/channels",
    tag = "channels",
    responses(
        (status = 200, description = "the channels", body = ChannelList),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_channels(State(state): State<AppState>) -> Result<Response, ApiError> {
    let channels = channels::list(&state.services).await?;
    Ok(Json(ChannelList { channels }).into_response())
}

/// One channel with its numbers.
#[utoipa::path(
    get,
    path = "/channels/{code}",
    tag = "channels",
    params(("code" = String, Path, description = "the channel's code (its contact way's `state`)")),
    responses(
        (status = 200, description = "the channel", body = ChannelView),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such channel", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_channel(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(channels::get(&state.services, &code).await?).into_response())
}

/// Creates a channel and its contact way (the QR code).
#[utoipa::path(
    post,
    path = "/channels",
    tag = "channels",
    request_body = ChannelInput,
    responses(
        (status = 201, description = "created, with its QR code", body = Channel),
        (status = 400, description = "the body is wrong (the field is named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "a channel of this code exists", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 502, description = WECOM_REFUSED, body = ErrorBody),
    )
)]
async fn create_channel(
    State(state): State<AppState>,
    payload: Result<Json<ChannelInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    let created = channels::create(&state.services, body(payload)?, "api").await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Replaces a channel's settings and its contact way's members, state and remark.
#[utoipa::path(
    put,
    path = "/channels/{code}",
    tag = "channels",
    params(("code" = String, Path, description = "the channel's code; the body's `code` must equal it")),
    request_body = ChannelInput,
    responses(
        (status = 200, description = "updated", body = Channel),
        (status = 400, description = "the body is wrong (the field is named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such channel", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 502, description = WECOM_REFUSED, body = ErrorBody),
    )
)]
async fn update_channel(
    State(state): State<AppState>,
    Path(code): Path<String>,
    payload: Result<Json<ChannelInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    Ok(Json(channels::update(&state.services, &code, body(payload)?).await?).into_response())
}

/// Deletes a channel and its contact way; its tag stays on the customers who came through it.
#[utoipa::path(
    delete,
    path = "/channels/{code}",
    tag = "channels",
    params(("code" = String, Path, description = "the channel's code")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such channel", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 502, description = WECOM_REFUSED, body = ErrorBody),
    )
)]
async fn delete_channel(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    channels::delete(&state.services, &code).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Activity from the shop: stored whole, or rejected whole with every problem listed.
///
/// Idempotent by each record's `id`; the customers it touches are re-evaluated.
#[utoipa::path(
    post,
    path = "/activity",
    tag = "activity",
    request_body(
        content = ActivityBatch,
        description = "1 to 10000 items. Each needs `kind` (order, refund, referral or a custom \
            kind), `customer` (an external_userid or a shop id mapped by \
            `PUT /api/v1/customers/{id}/refs`), `id` (the shop's, making the record idempotent) \
            and `at` (RFC 3339); `amount` is yuan (a number or a string, at most two decimals, \
            default 0) and `count` a whole number (default 1)."
    ),
    responses(
        (status = 200, description = "stored", body = ActivityOutcome),
        (status = 400, description = "rejected whole: `problems` lists every bad record (line, field, reason); \
            a body that is no batch answers `error` alone", body = ActivityRejected),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "an `id` was used before for another record", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn post_activity(
    State(state): State<AppState>,
    payload: Result<Json<ActivityBatch>, JsonRejection>,
) -> Result<Response, ApiError> {
    match activity::record_activity(&state.services, body(payload)?).await {
        Ok(outcome) => Ok(Json(outcome).into_response()),
        Err(BatchError::Problems(problems)) => Ok((
            StatusCode::BAD_REQUEST,
            Json(ActivityRejected {
                error: "the batch was rejected whole; nothing was stored".into(),
                problems,
            }),
        )
            .into_response()),
        Err(e @ BatchError::Reused(_)) => {
            Err(ApiError::status(StatusCode::CONFLICT, e.to_string()))
        }
        Err(BatchError::App(e)) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct RefsBody {
    /// The shop's customer ids (replacing those mapped before).
    refs: Vec<String>,
}

/// Maps the shop's customer ids to a customer; activity sent under them counts for the customer.
///
/// The customer need not be known yet. Customers that held one of the ids lose its activity.
#[utoipa::path(
    put,
    path = "/customers/{id}/refs",
    tag = "customers",
    params(("id" = String, Path, description = "the customer's external_userid")),
    request_body = RefsBody,
    responses(
        (status = 200, description = "mapped", body = CustomerRefs),
        (status = 400, description = "the body is wrong (the field is named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn put_refs(
    State(state): State<AppState>,
    Path(id): Path<ExternalUserId>,
    payload: Result<Json<RefsBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let refs = body(payload)?.refs;
    customers::set_refs(&state.services, &id, &refs).await?;
    Ok(Json(CustomerRefs {
        external_userid: id,
        refs,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CustomersQuery {
    /// A part of the name or of a member's remark, in any case.
    q: Option<String>,
    /// Only customers in this tier (its code).
    tier: Option<String>,
    /// Only customers in this value segment.
    segment: Option<String>,
    /// Only customers who came through this channel (its code), first or later.
    channel: Option<String>,
    /// Only customers with this tag (one of siyu's tag names, or a WeCom tag id) on a relation.
    tag: Option<String>,
    /// Only customers this member (a userid) follows.
    member: Option<String>,
    /// Only customers after this external_userid (the previous page's `next_after`).
    after: Option<String>,
    /// How many, 1 to 200.
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<i64>,
}

/// Customers matching every given filter, by external_userid, with the number matching.
#[utoipa::path(
    get,
    path = "/customers",
    tag = "customers",
    params(CustomersQuery),
    responses(
        (status = 200, description = "a page of customers", body = customers::CustomerPage),
        (status = 400, description = "a query parameter is wrong (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_customers(
    State(state): State<AppState>,
    Query(q): Query<CustomersQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit: must be between 1 and 200"));
    }
    // A console's form sends empty fields for "any".
    let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let input = customers::SearchInput {
        q: given(q.q),
        tier: given(q.tier),
        segment: given(q.segment),
        channel: given(q.channel),
        tag: given(q.tag),
        member: given(q.member).map(crate::ids::UserId::from),
        after: given(q.after).map(ExternalUserId::from),
        limit,
    };
    Ok(Json(customers::search(&state.services, input).await?).into_response())
}

/// A customer: profile, tier, pin, segment, metrics, relations, tier history and relation events.
#[utoipa::path(
    get,
    path = "/customers/{id}",
    tag = "customers",
    params(("id" = String, Path, description = "the customer's external_userid")),
    responses(
        (status = 200, description = "the customer", body = CustomerView),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such customer", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_customer(
    State(state): State<AppState>,
    Path(id): Path<ExternalUserId>,
) -> Result<Response, ApiError> {
    Ok(Json(customers::view(&state.services, &id).await?).into_response())
}

/// Pins a customer's tier and re-evaluates the customer at once.
#[utoipa::path(
    put,
    path = "/customers/{id}/pin",
    tag = "customers",
    params(("id" = String, Path, description = "the customer's external_userid")),
    request_body = tiers::PinInput,
    responses(
        (status = 200, description = "pinned; the customer as `GET /api/v1/customers/{id}` answers it", body = CustomerView),
        (status = 400, description = "the body is wrong (the field is named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such customer", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn put_pin(
    State(state): State<AppState>,
    Path(id): Path<ExternalUserId>,
    payload: Result<Json<tiers::PinInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    tiers::pin(&state.services, &id, Some(body(payload)?)).await?;
    get_customer(State(state), Path(id)).await
}

/// Unpins a customer's tier and re-evaluates the customer at once.
#[utoipa::path(
    delete,
    path = "/customers/{id}/pin",
    tag = "customers",
    params(("id" = String, Path, description = "the customer's external_userid")),
    responses(
        (status = 200, description = "unpinned; the customer as `GET /api/v1/customers/{id}` answers it", body = CustomerView),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such customer", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn delete_pin(
    State(state): State<AppState>,
    Path(id): Path<ExternalUserId>,
) -> Result<Response, ApiError> {
    tiers::pin(&state.services, &id, None).await?;
    get_customer(State(state), Path(id)).await
}

/// Customers per tier and per segment, and the tier moves of the last day, week and month.
#[utoipa::path(
    get,
    path = "/tiers/summary",
    tag = "tiers",
    responses(
        (status = 200, description = "the summary", body = TierSummary),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn tier_summary(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(tiers::summary(&state.services).await?).into_response())
}

/// The tier rules in force, where they come from, and the changes made through the API.
#[utoipa::path(
    get,
    path = "/tiers",
    tag = "tiers",
    responses(
        (status = 200, description = "the rules", body = TierRules),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_tiers(State(state): State<AppState>) -> Result<Response, ApiError> {
    let services = &state.services;
    let (tiers, source) = services.tiers_in_force().await?;
    let history = services
        .store
        .tier_rules_history()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(TierRules {
        tiers,
        source,
        changes: history,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TiersBody {
    /// Every tier, entry tier first.
    tiers: Vec<crate::config::TierSettings>,
    /// Who makes the change (kept in the history).
    by: String,
}

/// Replaces the tier rules (validated; in force from the next evaluation).
#[utoipa::path(
    put,
    path = "/tiers",
    tag = "tiers",
    request_body = TiersBody,
    responses(
        (status = 200, description = "replaced; the rules as `GET /api/v1/tiers` answers them", body = TierRules),
        (status = 400, description = "the body or a rule is wrong (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "a tier left out still holds customers", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn put_tiers(
    State(state): State<AppState>,
    payload: Result<Json<TiersBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(payload)?;
    tiers::change_rules(&state.services, b.tiers, &b.by).await?;
    get_tiers(State(state)).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TiersPreviewBody {
    /// Every tier, entry tier first (as `PUT /api/v1/tiers` takes them).
    tiers: Vec<crate::config::TierSettings>,
}

/// What proposed tier rules would do to every customer now: how many would move up and down,
/// and the first changes with the rule and metrics behind each. Nothing is saved or changed.
#[utoipa::path(
    post,
    path = "/tiers/preview",
    tag = "tiers",
    request_body = TiersPreviewBody,
    responses(
        (status = 200, description = "what the rules would change", body = tiers::Preview),
        (status = 400, description = "the body or a rule is wrong (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "a tier left out still holds customers", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn preview_tiers(
    State(state): State<AppState>,
    payload: Result<Json<TiersPreviewBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(payload)?;
    Ok(Json(tiers::preview(&state.services, &b.tiers).await?).into_response())
}
