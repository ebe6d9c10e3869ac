//! 审计 and 用户 (admins): the audit log, filtered by who, what and when; the users.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::json;

use super::{AppState, Flash, Visitor, api, encode, local_time, refused_page, render};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/console/audit", get(audit))
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
