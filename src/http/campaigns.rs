//! `/api/v1/campaigns`: scheduled Moments posts and mass messages.

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
use crate::app::campaigns::{self, CampaignInput, CampaignView};
use crate::store::campaigns::CampaignStatus;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(preview_campaign))
        .routes(routes!(get_campaign))
        .routes(routes!(cancel_campaign))
        .routes(routes!(remind_campaign))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only campaigns in this status: scheduled, running, done or cancelled.
    status: Option<String>,
}

/// Campaigns, newest first, with their runs and results.
#[utoipa::path(
    get,
    path = "/campaigns",
    tag = "campaigns",
    params(ListQuery),
    responses(
        (status = 200, description = "the campaigns", body = CampaignList),
        (status = 400, description = "an unknown status", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_campaigns(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(text) => Some(CampaignStatus::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status: {text:?} is not one of scheduled, running, done, cancelled"
            ))
        })?),
    };
    let campaigns = campaigns::list(&state.services, status).await?;
    Ok(Json(CampaignList { campaigns }).into_response())
}

/// Schedules a campaign, validated whole first: every problem is listed with its field and
/// nothing is stored.
#[utoipa::path(
    post,
    path = "/campaigns",
    tag = "campaigns",
    request_body = CampaignInput,
    responses(
        (status = 201, description = "scheduled", body = CampaignView),
        (status = 400, description = "the campaign is wrong (every problem named with its field)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn create_campaign(
    State(state): State<AppState>,
    payload: Result<Json<CampaignInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    let input = body(payload)?;
    let view = campaigns::create(&state.services, input).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The audience a campaign would have now: customers per member, groups per owner, Moments
/// senders and tags, and how many the caps leave out and why. Nothing is stored.
#[utoipa::path(
    post,
    path = "/campaigns/preview",
    tag = "campaigns",
    request_body = CampaignInput,
    responses(
        (status = 200, description = "the audience now", body = Object),
        (status = 400, description = "the campaign is wrong (every problem named with its field)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn preview_campaign(
    State(state): State<AppState>,
    payload: Result<Json<CampaignInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    let input = body(payload)?;
    Ok(Json(campaigns::preview(&state.services, input).await?).into_response())
}

/// A campaign with its runs and each run's tasks and results.
#[utoipa::path(
    get,
    path = "/campaigns/{id}",
    tag = "campaigns",
    params(("id" = i64, Path, description = "the campaign's id")),
    responses(
        (status = 200, description = "the campaign", body = CampaignView),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such campaign", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_campaign(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    Ok(Json(campaigns::get(&state.services, id).await?).into_response())
}

/// Cancels a campaign: before a run nothing is sent; after, WeCom's tasks are cancelled for the
/// members who have not sent them (`cancel_groupmsg_send`, `cancel_moment_task`).
#[utoipa::path(
    post,
    path = "/campaigns/{id}/cancel",
    tag = "campaigns",
    params(("id" = i64, Path, description = "the campaign's id")),
    responses(
        (status = 200, description = "cancelled (WeCom's tasks are cancelled by a job)", body = CampaignView),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such campaign", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn cancel_campaign(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    Ok(Json(campaigns::cancel(&state.services, id).await?).into_response())
}

/// Reminds the members who have not sent the campaign's mass messages (WeCom allows 3 reminders
/// a day per message).
#[utoipa::path(
    post,
    path = "/campaigns/{id}/remind",
    tag = "campaigns",
    params(("id" = i64, Path, description = "the campaign's id")),
    responses(
        (status = 200, description = "how many tasks were reminded, and WeCom's refusals", body = Object),
        (status = 400, description = "a Moments campaign (WeCom has no reminder for it)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such campaign", body = ErrorBody),
        (status = 502, description = WECOM_REFUSED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn remind_campaign(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    Ok(Json(campaigns::remind(&state.services, id).await?).into_response())
}
