//! 渠道: the channels with their stats and QR codes; create, edit (with the welcome message),
//! delete, and the QR image to show and to download.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde_json::{Value, json};

use super::{AppState, Flash, Visitor, act, api, refused_page, render, segment};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/console/channels", get(list).post(create))
        .route("/console/channels/{code}", get(edit).post(update))
        .route("/console/channels/{code}/delete", post(delete))
        .route("/console/channels/{code}/qr.png", get(qr))
}

async fn list(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Query(flash): Query<Flash>,
) -> Response {
    match api(&state, &session, Method::GET, "/channels", None).await {
        Ok(v) => render(&state, &session, "channels.html", "channels", &flash, v),
        Err(e) => refused_page(&state, &session, &e),
    }
}

async fn edit(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(code): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let path = format!("/channels/{}", segment(&code));
    match api(&state, &session, Method::GET, &path, None).await {
        Ok(v) => render(
            &state,
            &session,
            "channel.html",
            "channels",
            &flash,
            json!({ "channel": v }),
        ),
        Err(e) => refused_page(&state, &session, &e),
    }
}

/// A list typed into one field: split on commas, Chinese commas, spaces or new lines.
pub(super) fn list_of(text: Option<&String>) -> Vec<String> {
    text.map(|t| {
        t.split([',', '，', ' ', '\n', '\r', '、'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// The API's channel body from the form's fields.
fn channel_body(code: &str, form: &HashMap<String, String>) -> Value {
    let welcome = form
        .get("welcome")
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty());
    json!({
        "code": code,
        "name": form.get("name").map_or("", |n| n.trim()),
        "staff": list_of(form.get("staff")),
        "tags": list_of(form.get("tags")),
        "welcome": welcome.map(|text| json!({ "text": text })),
    })
}

async fn create(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let code = form.get("code").map_or("", |c| c.trim());
    act(
        &state,
        &session,
        (Method::POST, "/channels"),
        Some(channel_body(code, &form)),
        "/console/channels",
        format!("渠道 {code} 已创建"),
    )
    .await
}

async fn update(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(code): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = format!("/channels/{}", segment(&code));
    act(
        &state,
        &session,
        (Method::PUT, &path),
        Some(channel_body(&code, &form)),
        &format!("/console{path}"),
        format!("渠道 {code} 已保存"),
    )
    .await
}

async fn delete(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(code): Path<String>,
) -> Response {
    let path = format!("/channels/{}", segment(&code));
    act(
        &state,
        &session,
        (Method::DELETE, &path),
        None,
        "/console/channels",
        format!("渠道 {code} 已删除"),
    )
    .await
}

#[derive(Debug, serde::Deserialize)]
struct QrQuery {
    download: Option<String>,
}

/// The channel's QR code image, fetched from WeCom through siyu (the browser need not reach
/// WeCom's image host); `?download=1` saves it as a file.
async fn qr(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Path(code): Path<String>,
    Query(query): Query<QrQuery>,
) -> Response {
    let path = format!("/channels/{}", segment(&code));
    let channel = match api(&state, &session, Method::GET, &path, None).await {
        Ok(v) => v,
        Err(e) => return refused_page(&state, &session, &e),
    };
    let Some(url) = channel.get("qr_code").and_then(Value::as_str) else {
        return (StatusCode::NOT_FOUND, "this channel has no QR code yet").into_response();
    };
    match state.services.wecom.fetch_url(url).await {
        Ok(png) => {
            let mut response = (
                [
                    (header::CONTENT_TYPE, "image/png".to_string()),
                    (header::CACHE_CONTROL, "private, max-age=600".to_string()),
                ],
                png,
            )
                .into_response();
            if query.download.is_some() {
                // The code is letters, digits, _ - . only (the API checks it).
                let disposition = format!("attachment; filename=\"siyu-{code}-qr.png\"");
                if let Ok(v) = header::HeaderValue::from_str(&disposition) {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_DISPOSITION, v);
                }
            }
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, channel = %code, "the channel's QR code could not be fetched");
            (
                StatusCode::BAD_GATEWAY,
                "the QR code could not be fetched from WeCom",
            )
                .into_response()
        }
    }
}
