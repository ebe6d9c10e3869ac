//! 审计 and 用户 (admins): the audit log, filtered by who, what and when; the users.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde_json::{Value, json};

use super::{
    AppState, Flash, Visitor, api, back, encode, local_time, refused_page, render, segment,
};
use crate::app::sessions::Session;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/console/audit", get(audit))
        .route("/console/users", get(users).post(add_user))
        .route("/console/users/{name}", post(change_user))
        .route("/console/users/{name}/password", post(set_password))
        .route("/console/users/{name}/tokens", post(new_token))
        .route("/console/tokens/{id}/revoke", post(revoke_token))
}

async fn audit(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut flash = Flash::default();
    let value = |k: &str| query.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut filters: Vec<(&str, String)> = Vec::new();
    for k in ["who", "what"] {
        if let Some(v) = value(k) {
            filters.push((k, v.to_string()));
        }
    }
    // The form's dates are whole days: from the start of `since` to the end of `until`.
    for (k, clock) in [("since", "T00:00:00"), ("until", "T23:59:59")] {
        if let Some(day) = value(k) {
            match local_time(&state, &format!("{day}{clock}"), None) {
                Ok(t) => filters.push((k, t)),
                Err(e) => flash.error = Some(e.message),
            }
        }
    }
    let pairs: Vec<(&str, &str)> = filters.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = format!("/audit?{}", encode(&pairs));
    match api(&state, &session, Method::GET, &path, None).await {
        Ok(v) => render(
            &state,
            &session,
            "audit.html",
            "audit",
            &flash,
            json!({ "records": v["records"], "filters": query }),
        ),
        Err(e) => refused_page(&state, &session, &e),
    }
}

/// The users page; `new_token` is a token just made, shown this once (never put in a URL).
async fn show_users(
    state: &AppState,
    session: &Session,
    flash: &Flash,
    new_token: Option<Value>,
) -> Response {
    let users = match api(state, session, Method::GET, "/users", None).await {
        Ok(v) => v,
        Err(e) => return refused_page(state, session, &e),
    };
    let tokens = api(state, session, Method::GET, "/tokens", None)
        .await
        .unwrap_or_default();
    render(
        state,
        session,
        "users.html",
        "users",
        flash,
        json!({ "users": users["users"], "tokens": tokens["tokens"], "new_token": new_token }),
    )
}

async fn users(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Query(flash): Query<Flash>,
) -> Response {
    show_users(&state, &session, &flash, None).await
}

fn field(form: &HashMap<String, String>, k: &str) -> String {
    form.get(k).map_or("", |v| v.trim()).to_string()
}

async fn add_user(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let name = field(&form, "name");
    let body = json!({ "name": name, "role": field(&form, "role"),
                       "password": form.get("password").cloned().unwrap_or_default() });
    let outcome = api(&state, &session, Method::POST, "/users", Some(body))
        .await
        .map(|_| format!("已添加用户 {name}"));
    back("/console/users", outcome)
}

/// A role or the disabled mark, whichever the form sent.
async fn change_user(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut body = serde_json::Map::new();
    if let Some(role) = form.get("role").filter(|r| !r.is_empty()) {
        body.insert("role".into(), json!(role));
    }
    if let Some(disabled) = form.get("disabled") {
        body.insert("disabled".into(), json!(disabled == "true"));
    }
    let outcome = api(
        &state,
        &session,
        Method::PATCH,
        &format!("/users/{}", segment(&name)),
        Some(Value::Object(body)),
    )
    .await
    .map(|_| format!("已修改用户 {name}"));
    back("/console/users", outcome)
}

async fn set_password(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let body = json!({ "password": form.get("password").cloned().unwrap_or_default() });
    let outcome = api(
        &state,
        &session,
        Method::PUT,
        &format!("/users/{}/password", segment(&name)),
        Some(body),
    )
    .await
    .map(|_| format!("已为 {name} 设置新密码"));
    back("/console/users", outcome)
}

async fn new_token(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let label = field(&form, "label");
    let body = json!({ "label": (!label.is_empty()).then_some(label) });
    let path = format!("/users/{}/tokens", segment(&name));
    match api(&state, &session, Method::POST, &path, Some(body)).await {
        Ok(token) => show_users(&state, &session, &Flash::default(), Some(token)).await,
        Err(e) => back("/console/users", Err(e)),
    }
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(id): Path<i64>,
) -> Response {
    let outcome = api(
        &state,
        &session,
        Method::DELETE,
        &format!("/tokens/{id}"),
        None,
    )
    .await
    .map(|_| format!("令牌 {id} 已吊销"));
    back("/console/users", outcome)
}
