//! 客户: search the customers; a customer's page (tags, notes, tier and segment history with the
//! rule and metrics that decided, activity, groups and invitations) and the pin form.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde_json::json;

use super::{
    AppState, Flash, Visitor, act, api, back, encode, given, local_time, refused_page, render,
    segment,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/console/customers", get(search))
        .route("/console/customers/{id}", get(page))
        .route("/console/customers/{id}/pin", post(pin))
        .route("/console/customers/{id}/unpin", post(unpin))
}

/// The search filters the page passes on to `GET /api/v1/customers`.
const FILTERS: &[&str] = &["q", "tier", "segment", "channel", "tag", "member", "after"];

async fn search(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let flash = Flash::of(&query);
    let filters = given(&query, FILTERS);
    let path = format!("/customers?{}", encode(&filters));
    let found = match api(&state, &session, Method::GET, &path, None).await {
        Ok(v) => v,
        Err(e) => return refused_page(&state, &session, &e),
    };
    let tiers = api(&state, &session, Method::GET, "/tiers/summary", None)
        .await
        .unwrap_or_default();
    let channels = api(&state, &session, Method::GET, "/channels", None)
        .await
        .unwrap_or_default();
    let kept: HashMap<&str, &str> = filters
        .iter()
        .copied()
        .filter(|(k, _)| *k != "after")
        .collect();
    let next = found
        .get("next_after")
        .and_then(|v| v.as_str())
        .map(|after| {
            let mut pairs: Vec<(&str, &str)> = kept.iter().map(|(k, v)| (*k, *v)).collect();
            pairs.push(("after", after));
            format!("/console/customers?{}", encode(&pairs))
        });
    render(
        &state,
        &session,
        "customers.html",
        "customers",
        &flash,
        json!({ "found": found, "filters": kept, "tiers": tiers["tiers"],
                "segments": tiers["segments"], "channels": channels["channels"], "next": next }),
    )
}

async fn page(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let path = format!("/customers/{}", segment(&id));
    let view = match api(&state, &session, Method::GET, &path, None).await {
        Ok(v) => v,
        Err(e) => return refused_page(&state, &session, &e),
    };
    let tiers = api(&state, &session, Method::GET, "/tiers/summary", None)
        .await
        .unwrap_or_default();
    render(
        &state,
        &session,
        "customer.html",
        "customers",
        &flash,
        json!({ "id": id, "view": view, "tiers": tiers["tiers"] }),
    )
}

async fn pin(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    // A pin lasts to the end of the day the form's date input names.
    let end_of_day = |d: String| local_time(&state, &format!("{d}T23:59:59"), None);
    let expires_at = match field("expires_on").map(end_of_day) {
        Some(Err(e)) => return back(&format!("/console/customers/{}", segment(&id)), Err(e)),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let body = json!({
        "tier": field("tier").unwrap_or_default(),
        "reason": field("reason").unwrap_or_default(),
        "expires_at": expires_at,
        "by": session.principal.name,
    });
    let path = format!("/customers/{}/pin", segment(&id));
    act(
        &state,
        &session,
        (Method::PUT, &path),
        Some(body),
        &format!("/console/customers/{}", segment(&id)),
        "已固定等级".to_string(),
    )
    .await
}

async fn unpin(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/customers/{}/pin", segment(&id));
    act(
        &state,
        &session,
        (Method::DELETE, &path),
        None,
        &format!("/console/customers/{}", segment(&id)),
        "已取消固定".to_string(),
    )
    .await
}
