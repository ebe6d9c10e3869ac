//! The audit log at the API's edge: every change through `/api/v1` is recorded with who made it,
//! when, what was asked, the answer's status, and the resource as it was before and after (read
//! through the API itself, with the caller's own token, so every route is covered the same way).
//! `GET /api/v1/audit` (admins) reads it back.

use axum::body::Body;
use axum::extract::{OriginalUri, Query, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::api::{ApiError, INTERNAL, UNAUTHORIZED};
use super::auth::Acting;
use super::doc::ErrorBody;
use crate::app::users::Principal;
use crate::store::audit::{AuditFilter, AuditRecord};

/// Bodies kept in a record at most this long (a media upload is recorded by its answer).
const MAX_KEPT: usize = 64 * 1024;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Whether a request changes something (and so is recorded).
fn is_change(method: &Method, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    !(*method == Method::GET
        || *method == Method::HEAD
        || path.ends_with("/campaigns/preview")
        || path.ends_with("/tiers/preview"))
}

/// The resource a change acts on, to read before and after: the path itself, or its parent for
/// an action (`/campaigns/{id}/cancel`, `/customers/{id}/pin`, `/jobs/{id}/retry`,
/// `/users/{name}/password`). None for a collection (a create, whose answer is what it made: a
/// user's new token too).
fn resource_of(path: &str) -> Option<String> {
    let path = path.trim_end_matches('/');
    if path
        .strip_prefix("/api/v1/users/")
        .is_some_and(|user| user.ends_with("/tokens"))
    {
        return None;
    }
    let path = ["/cancel", "/remind", "/pin", "/refs", "/password", "/retry"]
        .iter()
        .find_map(|suffix| path.strip_suffix(suffix))
        .unwrap_or(path);
    let segments = path.split('/').filter(|s| !s.is_empty()).count();
    (segments >= 4 || path == "/api/v1/tiers").then(|| path.to_string())
}

/// Whether a JSON field holds a secret that no record may keep: a password asked for (`POST
/// /users`, `PUT /users/{name}/password`, or a misspelt field the handler refused), a token's
/// secret answered (`POST /users/{name}/tokens`).
fn is_secret(field: &str) -> bool {
    let field = field.to_ascii_lowercase();
    field == "token" || SECRET_WORDS.iter().any(|s| field.contains(s))
}

const SECRET_WORDS: [&str; 3] = ["password", "passwd", "secret"];

fn names_a_secret(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("token") || SECRET_WORDS.iter().any(|s| text.contains(s))
}

/// Replaces the value of every secret field (at any depth) with `"***"`; true when it did.
fn hide_secrets(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Object(fields) => {
            let mut hid = false;
            for (field, v) in fields.iter_mut() {
                if is_secret(field) {
                    *v = Value::String("***".into());
                    hid = true;
                } else {
                    hid |= hide_secrets(v);
                }
            }
            hid
        }
        Value::Array(items) => items.iter_mut().fold(false, |hid, v| hide_secrets(v) | hid),
        _ => false,
    }
}

/// A body as a record may keep it: its secrets hidden. A body that is not JSON (malformed, or
/// cut at [`MAX_KEPT`]) cannot be searched for fields, so it is dropped if it names a secret.
fn redacted(text: String) -> String {
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(mut value) => {
            if hide_secrets(&mut value) {
                value.to_string()
            } else {
                text
            }
        }
        Err(_) if names_a_secret(&text) => {
            "\"not JSON, and not kept: it may hold a secret\"".into()
        }
        Err(_) => text,
    }
}

/// The resource as a GET through the API answers it now (None when it is not there).
async fn read(state: &AppState, path: &str, principal: &Principal) -> Option<String> {
    let router = Router::clone(&*state.reader.get()?.upgrade()?);
    let mut request = Request::get(path).body(Body::empty()).ok()?;
    request.extensions_mut().insert(Acting {
        principal: principal.clone(),
        via: "api",
    });
    let response = router.oneshot(request).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let bytes = axum::body::to_bytes(response.into_body(), MAX_KEPT)
        .await
        .ok()?;
    String::from_utf8(bytes.to_vec()).ok()
}

pub(super) async fn record_changes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.extensions().get::<OriginalUri>().map_or_else(
        || request.uri().path().to_string(),
        |u| u.path().to_string(),
    );
    let method = request.method().clone();
    if !is_change(&method, &path) {
        return next.run(request).await;
    }
    let Some(principal) = request.extensions().get::<Principal>().cloned() else {
        return next.run(request).await;
    };
    let via = request
        .extensions()
        .get::<Acting>()
        .map_or("api", |a| a.via);
    let resource = resource_of(&path);
    let before = match &resource {
        Some(r) => read(&state, r, &principal).await,
        None => None,
    };
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // Only a body small enough to keep is read here; the others go on untouched (the handler
    // applies its own limit and says so).
    let (request, asked) = if multipart {
        (request, Some("\"a multipart upload\"".to_string()))
    } else if let Some(n) = declared.filter(|n| *n > MAX_KEPT) {
        (request, Some(format!("\"{n} bytes, not kept\"")))
    } else {
        let (parts, body) = request.into_parts();
        match axum::body::to_bytes(body, state.body_limit.max(MAX_KEPT)).await {
            Ok(bytes) => {
                let text =
                    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_KEPT)]).into_owned();
                (
                    Request::from_parts(parts, Body::from(bytes)),
                    Some(redacted(text)).filter(|t| !t.is_empty()),
                )
            }
            Err(e) => {
                return ApiError::bad_request(format!("the request body: {e}")).into_response();
            }
        }
    };
    let response = next.run(request).await;
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "could not read an answer to audit it");
            return ApiError::internal(e).into_response();
        }
    };
    let after = if !status.is_success() || method == Method::DELETE {
        None
    } else {
        match &resource {
            Some(r) => read(&state, r, &principal).await,
            None => Some(String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_KEPT)]).into_owned()),
        }
        .map(redacted)
    };
    let what = format!("{method} {path}");
    if let Err(e) = state
        .store
        .record_audit(
            state.clock.now_ms(),
            &principal.name,
            principal.role.as_str(),
            via,
            &what,
            i64::from(status.as_u16()),
            asked.as_deref(),
            before.as_deref().filter(|_| status.is_success()),
            after.as_deref(),
        )
        .await
    {
        tracing::warn!(error = %e, what, "could not record a change in the audit log");
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only changes by this user (`api.token` for the bootstrap token, `cli` for `siyu users`).
    who: Option<String>,
    /// Only changes whose `what` contains this (`channels`, `PUT /api/v1/tiers`).
    what: Option<String>,
    /// From this time (RFC 3339).
    since: Option<String>,
    /// Before this time (RFC 3339).
    until: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditList {
    pub records: Vec<AuditRecord>,
}

fn time(field: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis())
            .map_err(|e| {
                ApiError::bad_request(format!("{field}: {t:?} is not an RFC 3339 time ({e})"))
            })
    })
    .transpose()
}

/// The audit log, newest first: who changed what, when, and the resource before and after.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "the records", body = AuditList),
        (status = 400, description = "a bad filter (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_audit(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: 1 to 1000"));
    }
    let filter = AuditFilter {
        who: q.who,
        what: q.what,
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        limit,
    };
    let records = state
        .store
        .audit(&filter)
        .await
        .map_err(|e| ApiError::from(crate::app::AppError::from(e)))?;
    Ok(Json(AuditList { records }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_from_kept_bodies() {
        let kept = redacted(r#"{"name":"li","role":"viewer","password":"hunter2 hunter2"}"#.into());
        assert!(!kept.contains("hunter2"), "{kept}");
        assert!(kept.contains(r#""password":"***""#) && kept.contains(r#""name":"li""#));
        let kept = redacted(r#"{"id":3,"user":"li","label":"shop","token":"siyu_abc"}"#.into());
        assert!(
            !kept.contains("siyu_abc") && kept.contains(r#""label":"shop""#),
            "{kept}"
        );
        let kept = redacted(r#"{"Passwd":"hunter2 hunter2"}"#.into());
        assert!(!kept.contains("hunter2"), "a misspelt field: {kept}");
        let kept = redacted(r#"{"password":"hunter2 hunter2""#.into());
        assert!(!kept.contains("hunter2"), "malformed JSON: {kept}");
        let plain = r#"{"code":"douyin","staff":["zhangsan"]}"#;
        assert_eq!(
            redacted(plain.into()),
            plain,
            "nothing to hide: kept as sent"
        );
    }

    #[test]
    fn a_users_password_and_tokens_map_to_the_user_or_to_nothing() {
        assert_eq!(
            resource_of("/api/v1/users/li/password").as_deref(),
            Some("/api/v1/users/li")
        );
        assert_eq!(
            resource_of("/api/v1/users/li").as_deref(),
            Some("/api/v1/users/li")
        );
        assert_eq!(resource_of("/api/v1/users/li/tokens"), None);
        assert_eq!(resource_of("/api/v1/users"), None);
        assert_eq!(
            resource_of("/api/v1/tokens/7").as_deref(),
            Some("/api/v1/tokens/7")
        );
    }
}
