//! `/api/v1/tier-groups`: each tier's customer groups, their join way and who is where.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::api::{ApiError, INTERNAL, UNAUTHORIZED, WECOM_REFUSED, body};
use super::doc::ErrorBody;
use crate::app::groups::{self, MemberStatus, TierGroupsInput, TierGroupsView, TierMembers};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tier_groups))
        .routes(routes!(
            get_tier_groups,
            put_tier_groups,
            delete_tier_groups
        ))
        .routes(routes!(tier_group_members))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TierGroupsList {
    pub tier_groups: Vec<TierGroupsView>,
}

/// Every tier's groups, with their member counts.
#[utoipa::path(
    get,
    path = "/tier-groups",
    tag = "tier-groups",
    responses(
        (status = 200, description = "every tier that has groups", body = TierGroupsList),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_tier_groups(State(state): State<AppState>) -> Result<Response, ApiError> {
    let tier_groups = groups::list(&state.services).await?;
    Ok(Json(TierGroupsList { tier_groups }).into_response())
}

/// One tier's groups, its join way and QR code.
#[utoipa::path(
    get,
    path = "/tier-groups/{tier}",
    tag = "tier-groups",
    params(("tier" = String, Path, description = "the tier's code")),
    responses(
        (status = 200, description = "the tier's groups", body = TierGroupsView),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "the tier has no groups", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_tier_groups(
    State(state): State<AppState>,
    Path(tier): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(groups::get(&state.services, &tier).await?).into_response())
}

/// Sets a tier's groups (1 to 5 existing customer groups): siyu checks them at WeCom, creates
/// or updates the tier's 「加入群聊」 join way (scene 2, a `state` naming the tier) and answers
/// with its `config_id` and `qr_code`.
#[utoipa::path(
    put,
    path = "/tier-groups/{tier}",
    tag = "tier-groups",
    params(("tier" = String, Path, description = "the tier's code")),
    request_body = TierGroupsInput,
    responses(
        (status = 200, description = "set; the tier's groups as `GET` answers them", body = TierGroupsView),
        (status = 400, description = "the body is wrong (every problem named with its field)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such tier", body = ErrorBody),
        (status = 409, description = "a group belongs to another tier", body = ErrorBody),
        (status = 502, description = WECOM_REFUSED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn put_tier_groups(
    State(state): State<AppState>,
    Path(tier): Path<String>,
    payload: Result<Json<TierGroupsInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    let input = body(payload)?;
    Ok(Json(groups::put(&state.services, &tier, input).await?).into_response())
}

/// Removes a tier's groups and deletes its join way (the groups stay at WeCom).
#[utoipa::path(
    delete,
    path = "/tier-groups/{tier}",
    tag = "tier-groups",
    params(("tier" = String, Path, description = "the tier's code")),
    responses(
        (status = 204, description = "removed"),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "the tier has no groups", body = ErrorBody),
        (status = 502, description = WECOM_REFUSED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn delete_tier_groups(
    State(state): State<AppState>,
    Path(tier): Path<String>,
) -> Result<Response, ApiError> {
    groups::delete(&state.services, &tier).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// Only this status: joined, invited, removal_requested, misplaced or outside.
    status: Option<String>,
    /// The page after this external_userid (the last answer's `next`).
    after: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// Each customer of the tier and each customer in its groups, with a status: `joined`,
/// `invited` (with the invitation's own status), `removal_requested`, `misplaced` (in the
/// tier's group but not of the tier) or `outside` (of the tier, in no group, no invitation
/// pending).
#[utoipa::path(
    get,
    path = "/tier-groups/{tier}/members",
    tag = "tier-groups",
    params(("tier" = String, Path, description = "the tier's code"), MembersQuery),
    responses(
        (status = 200, description = "the tier's customers and group members", body = TierMembers),
        (status = 400, description = "a bad query parameter (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "the tier has no groups", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn tier_group_members(
    State(state): State<AppState>,
    Path(tier): Path<String>,
    Query(q): Query<MembersQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(text) => Some(MemberStatus::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status: {text:?} is not one of joined, invited, removal_requested, misplaced, outside"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: 1 to 1000"));
    }
    let members =
        groups::members(&state.services, &tier, status, q.after.as_deref(), limit).await?;
    Ok(Json(members).into_response())
}
