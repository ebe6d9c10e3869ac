//! `/api/v1/stats`: the dashboard's numbers.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::api::{ApiError, INTERNAL, UNAUTHORIZED, query};
use super::doc::ErrorBody;
use crate::app::stats::{self, Stats};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_stats))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StatsQuery {
    /// Days of new relations, welcomes and failed jobs, counting today.
    #[param(minimum = 1, maximum = 90, default = 30)]
    days: Option<i64>,
    /// Weeks of tier changes, counting this one.
    #[param(minimum = 1, maximum = 52, default = 12)]
    weeks: Option<i64>,
}

/// The dashboard's numbers: customers per tier and segment, new relations per channel per day,
/// promotions and demotions per week, welcome outcomes and latency, the job queue. Days and
/// weeks (from Monday) are those of `jobs.timezone`.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "stats",
    params(StatsQuery),
    responses(
        (status = 200, description = "the numbers", body = Stats),
        (status = 400, description = "a query parameter is wrong (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_stats(
    State(state): State<AppState>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    Ok(Json(stats::stats(&state.services, q.days, q.weeks).await?).into_response())
}
