//! 群发: campaigns (Moments posts and mass messages): compose with an audience preview,
//! schedule, follow each run's results, cancel, remind.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde_json::{Value, json};

use super::channels::list_of;
use super::{AppState, Flash, Refused, Visitor, act, api, back, local_time, refused_page, render};
use crate::app::sessions::Session;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/console/campaigns", get(list).post(create))
        .route("/console/campaigns/preview", post(preview))
        .route("/console/campaigns/{id}", get(page))
        .route("/console/campaigns/{id}/cancel", post(cancel))
        .route("/console/campaigns/{id}/remind", post(remind))
}

/// Lists of choices (tiers, segments, channels) for the composer.
async fn choices(state: &AppState, session: &Session) -> Value {
    let summary = api(state, session, Method::GET, "/tiers/summary", None)
        .await
        .unwrap_or_default();
    let channels = api(state, session, Method::GET, "/channels", None)
        .await
        .unwrap_or_default();
    json!({ "tiers": summary["tiers"], "segments": summary["segments"],
            "channels": channels["channels"] })
}

async fn show(
    state: &AppState,
    session: &Session,
    flash: &Flash,
    form: Option<&HashMap<String, String>>,
    preview: Option<Result<Value, String>>,
) -> Response {
    let campaigns = match api(state, session, Method::GET, "/campaigns", None).await {
        Ok(v) => v,
        Err(e) => return refused_page(state, session, &e),
    };
    let (preview, preview_error) = match preview {
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let mut data = choices(state, session).await;
    data["campaigns"] = campaigns["campaigns"].clone();
    data["form"] = json!(form);
    data["preview"] = json!(preview);
    data["preview_error"] = json!(preview_error);
    render(state, session, "campaigns.html", "campaigns", flash, data)
}

async fn list(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Query(flash): Query<Flash>,
) -> Response {
    show(&state, &session, &flash, None, None).await
}

/// Every checkbox of a name (`tiers=a&tiers=b`) arrives joined by the form reader as one value
/// per key; the composer names them `tiers.a`, `tiers.b` instead, so each is its own key.
fn checked(form: &HashMap<String, String>, group: &str) -> Vec<String> {
    let prefix = format!("{group}.");
    let mut out: Vec<String> = form
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
        .collect();
    out.sort();
    out
}

/// The API's campaign body from the composer's fields.
fn campaign_body(
    state: &AppState,
    session: &Session,
    form: &HashMap<String, String>,
) -> Result<Value, Refused> {
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let images: Vec<Value> = list_of(form.get("images"))
        .into_iter()
        .map(|i| i.parse::<i64>().map_or(json!(i), |n| json!(n)))
        .collect();
    let zone = text("timezone");
    let at = text("at")
        .map(|a| local_time(state, &a, zone.as_deref()))
        .transpose()?;
    let schedule = match text("cron") {
        Some(cron) => json!({ "cron": cron, "until": text("until"), "timezone": text("timezone") }),
        None => json!({ "at": at, "timezone": text("timezone") }),
    };
    Ok(json!({
        "kind": text("kind").unwrap_or_default(),
        "name": text("name").unwrap_or_default(),
        "audience": {
            "tiers": checked(form, "tiers"),
            "segments": checked(form, "segments"),
            "channels": checked(form, "channels"),
            "members": list_of(form.get("members")),
        },
        "content": { "text": text("text"), "images": images },
        "schedule": schedule,
        "by": session.principal.name,
    }))
}

async fn preview(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let answer = match campaign_body(&state, &session, &form) {
        Ok(body) => api(
            &state,
            &session,
            Method::POST,
            "/campaigns/preview",
            Some(body),
        )
        .await
        .map_err(|e| e.message),
        Err(e) => Err(e.message),
    };
    show(
        &state,
        &session,
        &Flash::default(),
        Some(&form),
        Some(answer),
    )
    .await
}

async fn create(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let created = match campaign_body(&state, &session, &form) {
        Ok(body) => api(&state, &session, Method::POST, "/campaigns", Some(body)).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(created) => {
            let id = created["id"].as_i64().unwrap_or_default();
            back(
                &format!("/console/campaigns/{id}"),
                Ok("已排期".to_string()),
            )
        }
        // The composed campaign stays on the page with the reason.
        Err(Refused { message, .. }) => {
            let flash = Flash {
                ok: None,
                error: Some(message),
            };
            show(&state, &session, &flash, Some(&form), None).await
        }
    }
}

async fn page(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(id): Path<i64>,
    Query(flash): Query<Flash>,
) -> Response {
    match api(
        &state,
        &session,
        Method::GET,
        &format!("/campaigns/{id}"),
        None,
    )
    .await
    {
        Ok(c) => render(
            &state,
            &session,
            "campaign.html",
            "campaigns",
            &flash,
            json!({ "c": c }),
        ),
        Err(e) => refused_page(&state, &session, &e),
    }
}

async fn cancel(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(id): Path<i64>,
) -> Response {
    act(
        &state,
        &session,
        (Method::POST, &format!("/campaigns/{id}/cancel")),
        None,
        &format!("/console/campaigns/{id}"),
        "已取消".to_string(),
    )
    .await
}

async fn remind(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(id): Path<i64>,
) -> Response {
    act(
        &state,
        &session,
        (Method::POST, &format!("/campaigns/{id}/remind")),
        None,
        &format!("/console/campaigns/{id}"),
        "已提醒成员".to_string(),
    )
    .await
}
