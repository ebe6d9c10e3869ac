//! 社群: each tier's customer groups (their join way and QR code, members and fullness), the
//! configuration form, and a tier's members by status (joined, invited, removal requested, …).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde_json::json;

use super::channels::list_of;
use super::{AppState, Flash, Visitor, act, api, encode, given, refused_page, render, segment};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/console/groups", get(list).post(configure))
        .route("/console/groups/{tier}", get(members))
        .route("/console/groups/{tier}/delete", post(delete))
}

async fn list(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Query(flash): Query<Flash>,
) -> Response {
    let groups = match api(&state, &session, Method::GET, "/tier-groups", None).await {
        Ok(v) => v,
        Err(e) => return refused_page(&state, &session, &e),
    };
    let tiers = api(&state, &session, Method::GET, "/tiers/summary", None)
        .await
        .unwrap_or_default();
    render(
        &state,
        &session,
        "groups.html",
        "groups",
        &flash,
        json!({ "tier_groups": groups["tier_groups"], "tiers": tiers["tiers"] }),
    )
}

async fn configure(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let tier = form.get("tier").map_or("", |t| t.trim()).to_string();
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let body = json!({
        "chat_ids": list_of(form.get("chat_ids")),
        "invitation": text("invitation"),
        "room_base_name": text("room_base_name"),
        "auto_create_room": form.contains_key("auto_create_room"),
    });
    let path = format!("/tier-groups/{}", segment(&tier));
    act(
        &state,
        &session,
        (Method::PUT, &path),
        Some(body),
        "/console/groups",
        format!("{tier} 的社群已保存"),
    )
    .await
}

async fn delete(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(tier): Path<String>,
) -> Response {
    let path = format!("/tier-groups/{}", segment(&tier));
    act(
        &state,
        &session,
        (Method::DELETE, &path),
        None,
        "/console/groups",
        format!("{tier} 不再有社群"),
    )
    .await
}

async fn members(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(tier): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let flash = Flash::of(&query);
    let filters = given(&query, &["status", "after"]);
    let path = format!(
        "/tier-groups/{}/members?{}",
        segment(&tier),
        encode(&filters)
    );
    let listing = match api(&state, &session, Method::GET, &path, None).await {
        Ok(v) => v,
        Err(e) => return refused_page(&state, &session, &e),
    };
    render(
        &state,
        &session,
        "group_members.html",
        "groups",
        &flash,
        json!({ "tier": tier, "listing": listing, "status": query.get("status") }),
    )
}
