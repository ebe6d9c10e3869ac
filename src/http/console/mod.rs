//! `/console/`: the operators' web console, server-rendered from `templates/console/` (embedded,
//! overridable from `templates.dir` like the other templates). Plain HTML forms that work
//! without JavaScript; a little script of our own only where it helps (the tier editor's live
//! preview).
//!
//! The console is a client of `/api/v1` inside the process: every page reads, and every form
//! changes, through the API's own routes, as the signed-in user. So the roles, the validation
//! and the audit log are the API's, with nothing to keep in step; the audit records the change
//! as made `via` the console.

mod admin;
mod campaigns;
mod channels;
mod customers;
mod groups;
mod jobs;
mod overview;
mod session;
mod tiers;

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tower::ServiceExt;

use super::AppState;
use super::auth::Acting;
use crate::app::sessions::{self, Session};
use crate::app::users::Role;

/// The largest form the console takes (a campaign's text, a tier rule set).
const FORM_LIMIT: usize = 256 * 1024;

pub(super) fn router(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/console/", get(overview::page))
        .route("/console/logout", axum::routing::post(session::sign_out))
        .merge(customers::router())
        .merge(channels::router())
        .merge(tiers::router())
        .merge(groups::router())
        .merge(campaigns::router())
        .merge(admin::router())
        .merge(jobs::router())
        .route_layer(axum::middleware::from_fn_with_state(state, signed_in));
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/login", get(session::form).post(session::sign_in))
        .route("/console/console.css", get(stylesheet))
        .merge(pages)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../templates/console/console.css"),
    )
        .into_response()
}

/// Who is signed in, for the pages behind [`signed_in`].
#[derive(Clone)]
pub(super) struct Visitor(pub Session);

/// Every page but the sign-in needs a session; a page asked for without one goes to the
/// sign-in (and comes back after). A form must carry the session's CSRF token.
async fn signed_in(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let found = match session::cookie(&request, session::SESSION_COOKIE) {
        Some(secret) => sessions::find(&state.services, &secret).await,
        None => Ok(None),
    };
    let session = match found {
        Ok(Some(s)) => s,
        Ok(None) => {
            let back = request
                .uri()
                .path_and_query()
                .map_or("/console/", |p| p.as_str());
            let to = if request.method() == Method::GET && back != "/console/" {
                format!("/console/login?{}", encode(&[("next", back)]))
            } else {
                "/console/login".to_string()
            };
            return Redirect::to(&to).into_response();
        }
        Err(e) => return error_page(&state, None, &e.to_string()),
    };
    let request = if request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, FORM_LIMIT).await {
            Ok(b) => b,
            Err(_) => {
                return error_page(
                    &state,
                    Some(&session),
                    &format!("表单太大（最多 {} KB）", FORM_LIMIT / 1024),
                );
            }
        };
        let form: HashMap<String, String> =
            serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let given = form.get("csrf").map_or("", String::as_str);
        if !bool::from(given.as_bytes().ct_eq(session.csrf.as_bytes())) {
            tracing::warn!(user = %session.principal.name, "a console form without its CSRF token was refused");
            return (
                StatusCode::FORBIDDEN,
                render_error(
                    &state,
                    Some(&session),
                    "表单已过期或来源不明（CSRF 校验失败），请刷新页面后重试。",
                ),
            )
                .into_response();
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    let mut request = request;
    request.extensions_mut().insert(Visitor(session));
    next.run(request).await
}

/// What an API call through the console answered when it was not a success.
#[derive(Debug)]
pub(super) struct Refused {
    pub status: StatusCode,
    pub message: String,
}

/// Calls `/api/v1{path}` as the signed-in user (the routes check the role and the audit records
/// the change as made via the console): the JSON answer (null for an empty one).
pub(super) async fn api(
    state: &AppState,
    session: &Session,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Refused> {
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, path, "a console call to the API failed");
        Refused {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "内部错误，详见服务器日志".into(),
        }
    };
    let router = state
        .reader
        .get()
        .and_then(std::sync::Weak::upgrade)
        .ok_or_else(|| internal(&"the server is stopping"))?;
    let mut request = Request::builder()
        .method(method)
        .uri(format!("/api/v1{path}"));
    let body = match body {
        Some(v) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let mut request = request.body(body).map_err(|e| internal(&e))?;
    request.extensions_mut().insert(Acting {
        principal: session.principal.clone(),
        via: "console",
    });
    let response = Router::clone(&router)
        .oneshot(request)
        .await
        .map_err(|e| internal(&e))?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| internal(&e))?;
    let value: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    if status.is_success() {
        Ok(value)
    } else {
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{status}"), str::to_string);
        Err(Refused { status, message })
    }
}

/// The messages a page shows after a form went (`?ok=` / `?error=` on the way back).
#[derive(Debug, Default, serde::Deserialize, Serialize)]
pub(super) struct Flash {
    pub ok: Option<String>,
    pub error: Option<String>,
}

impl Flash {
    /// The messages among a page's query parameters.
    pub(super) fn of(query: &HashMap<String, String>) -> Flash {
        Flash {
            ok: query.get("ok").cloned(),
            error: query.get("error").cloned(),
        }
    }
}

/// The query parameters among `keys` that have a value (trimmed), in `keys`' order: the
/// filters a page passes on to the API.
pub(super) fn given<'a>(
    query: &'a HashMap<String, String>,
    keys: &[&'static str],
) -> Vec<(&'static str, &'a str)> {
    keys.iter()
        .filter_map(|k| {
            query
                .get(*k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (*k, v))
        })
        .collect()
}

/// A form's action: the API call, then back to `page` saying `done`, or the API's reason.
pub(super) async fn act(
    state: &AppState,
    session: &Session,
    (method, path): (Method, &str),
    body: Option<Value>,
    page: &str,
    done: String,
) -> Response {
    let outcome = api(state, session, method, path, body).await.map(|_| done);
    back(page, outcome)
}

/// `path?ok=message` or `path?error=message`: where a form goes after it was handled.
pub(super) fn back(path: &str, outcome: Result<String, Refused>) -> Response {
    let query = match &outcome {
        Ok(ok) => encode(&[("ok", ok.as_str())]),
        Err(e) => encode(&[("error", e.message.as_str())]),
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{sep}{query}")).into_response()
}

pub(super) fn encode(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// A time typed in a form (a `datetime-local` has no zone) as RFC 3339 for the API, read in
/// `zone` (an IANA name; default `jobs.timezone`). A time that has its offset passes as it is.
pub(super) fn local_time(
    state: &AppState,
    text: &str,
    zone: Option<&str>,
) -> Result<String, Refused> {
    let refused = |why: String| Refused {
        status: StatusCode::BAD_REQUEST,
        message: why,
    };
    if chrono::DateTime::parse_from_rfc3339(text).is_ok() {
        return Ok(text.to_string());
    }
    let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .ok_or_else(|| refused(format!("时间 {text:?} 应写作 YYYY-MM-DDTHH:MM")))?;
    let zone: chrono_tz::Tz = match zone {
        Some(z) => z
            .parse()
            .map_err(|_| refused(format!("时区 {z:?} 不是 IANA 时区名")))?,
        None => state
            .services
            .settings
            .timezone()
            .map_err(|e| refused(e.to_string()))?,
    };
    naive
        .and_local_timezone(zone)
        .earliest()
        .map(|t| t.to_rfc3339())
        .ok_or_else(|| refused(format!("时间 {text:?} 在 {zone} 不存在")))
}

/// A path segment as part of an API path (a customer's id has characters a URL keeps apart).
pub(super) fn segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Renders a console page: the layout's parts (who is signed in, the CSRF token, the menu) and
/// the page's own data. A template that fails shows as a message, never a blank page.
pub(super) fn render(
    state: &AppState,
    session: &Session,
    template: &str,
    active: &str,
    flash: &Flash,
    data: Value,
) -> Response {
    let mut ctx = match data {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("data".into(), other);
            map
        }
    };
    ctx.insert("me".into(), me(session));
    ctx.insert("csrf".into(), json!(session.csrf));
    ctx.insert("active".into(), json!(active));
    ctx.insert("flash".into(), json!(flash));
    match state
        .services
        .templates
        .render(&format!("console/{template}"), Value::Object(ctx))
    {
        Ok(html) => html_response(html),
        Err(e) => {
            tracing::error!(error = %e, template, "a console page did not render");
            // The template's name and line help whoever overrode it; nothing secret is in it.
            error_page(state, Some(session), &format!("页面渲染失败：{e}"))
        }
    }
}

fn me(session: &Session) -> Value {
    let role = session.principal.role;
    json!({
        "name": session.principal.name,
        "role": role.as_str(),
        "operator": role >= Role::Operator,
        "admin": role >= Role::Admin,
    })
}

fn html_response(html: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        Html(html),
    )
        .into_response()
}

fn render_error(state: &AppState, session: Option<&Session>, message: &str) -> Response {
    let ctx = json!({
        "me": session.map(me),
        "csrf": session.map(|s| s.csrf.clone()),
        "active": "",
        "flash": Flash::default(),
        "message": message,
    });
    match state.services.templates.render("console/error.html", ctx) {
        Ok(html) => html_response(html),
        // The error page itself failed (an operator's broken override): plain text still says
        // what happened.
        Err(e) => {
            tracing::error!(error = %e, "the console's error page did not render");
            (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message.to_string(),
            )
                .into_response()
        }
    }
}

/// A page that could not be shown: the reason, inside the layout, with a status that says so.
pub(super) fn error_page(state: &AppState, session: Option<&Session>, message: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        render_error(state, session, message),
    )
        .into_response()
}

/// A page whose API read was refused: not found, forbidden, or our own failure.
pub(super) fn refused_page(state: &AppState, session: &Session, refused: &Refused) -> Response {
    (
        refused.status,
        render_error(state, Some(session), &refused.message),
    )
        .into_response()
}
