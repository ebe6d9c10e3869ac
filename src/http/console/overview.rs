//! 概览: the dashboard. Customers by tier and segment, and how tiers moved.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::Response;
use serde_json::json;

use super::{AppState, Flash, Visitor, api, render};

pub(super) async fn page(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Query(flash): Query<Flash>,
) -> Response {
    let mut flash = flash;
    let summary = match api(&state, &session, Method::GET, "/tiers/summary", None).await {
        Ok(v) => v,
        Err(e) => {
            flash.error = Some(e.message);
            json!({})
        }
    };
    render(
        &state,
        &session,
        "overview.html",
        "overview",
        &flash,
        json!({ "summary": summary }),
    )
}
