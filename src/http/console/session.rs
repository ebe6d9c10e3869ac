//! Signing in and out. The session's secret lives in an HttpOnly, SameSite=Lax cookie (Secure
//! when `server.public_url` is https); the sign-in form, before there is a session, carries a
//! CSRF token matched against a cookie of its own (double submit).

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{AppState, Visitor, error_page, html_response};
use crate::app::sessions::{self, SignInError};

pub(super) const SESSION_COOKIE: &str = "siyu_session";
const LOGIN_COOKIE: &str = "siyu_login";

/// A cookie's value from the request.
pub(super) fn cookie(request: &Request, name: &str) -> Option<String> {
    cookie_in(request.headers(), name)
}

fn cookie_in(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` for the console: HttpOnly, SameSite=Lax, `Secure` behind https.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age_secs: Option<u64>) -> HeaderValue {
    let secure = state
        .services
        .settings
        .server
        .public_url
        .to_ascii_lowercase()
        .starts_with("https://");
    let mut text = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age_secs {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        text.push_str("; Secure");
    }
    // Built from hex secrets and fixed words only.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

/// Only a console page is a place to go back to after signing in (never another site).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/console/") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/console/",
    }
}

fn login_page(
    state: &AppState,
    status: StatusCode,
    name: &str,
    next: &str,
    error: Option<String>,
) -> Response {
    let token = sessions::random_secret();
    let ctx = json!({
        "me": null,
        "flash": {},
        "csrf": token,
        "user": name,
        "next": next,
        "error": error,
    });
    match state.services.templates.render("console/login.html", ctx) {
        Ok(html) => {
            let mut response = (status, html_response(html)).into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(state, LOGIN_COOKIE, &token, Some(3600)),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "the sign-in page did not render");
            error_page(state, None, "登录页渲染失败，详见服务器日志")
        }
    }
}

/// `GET /console/login`: the sign-in form (straight to the console when already signed in).
pub(super) async fn form(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(secret) = cookie_in(&headers, SESSION_COOKIE)
        && let Ok(Some(_)) = sessions::find(&state.services, &secret).await
    {
        return Redirect::to(safe_next(query.next.as_deref())).into_response();
    }
    login_page(
        &state,
        StatusCode::OK,
        "",
        safe_next(query.next.as_deref()),
        None,
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// `POST /console/login`: checks the form's token against its cookie, then the password.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return login_page(
            &state,
            StatusCode::BAD_REQUEST,
            "",
            "/console/",
            Some("请填写用户名和密码".into()),
        );
    };
    let next = safe_next(form.next.as_deref()).to_string();
    let expected = cookie_in(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !bool::from(form.csrf.as_bytes().ct_eq(expected.as_bytes())) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            &form.user,
            &next,
            Some("登录表单已过期，请重试（需要允许 Cookie）".into()),
        );
    }
    match sessions::sign_in(&state.services, &form.user, &form.password).await {
        Ok((secret, _)) => {
            let mut response = Redirect::to(&next).into_response();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                set_cookie(&state, SESSION_COOKIE, &secret, None),
            );
            headers.append(
                header::SET_COOKIE,
                set_cookie(&state, LOGIN_COOKIE, "", Some(0)),
            );
            response
        }
        Err(SignInError::Refused) => login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            &form.user,
            &next,
            Some("用户名或密码错误".into()),
        ),
        Err(SignInError::Wait(secs)) => login_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &form.user,
            &next,
            Some(format!("失败次数过多，请 {secs} 秒后再试")),
        ),
        Err(SignInError::App(e)) => {
            tracing::error!(error = %e, "a console sign-in could not be checked");
            error_page(&state, None, "登录暂时不可用，详见服务器日志")
        }
    }
}

/// `POST /console/logout`: ends the session (its CSRF token was checked on the way in).
pub(super) async fn sign_out(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    headers: HeaderMap,
) -> Response {
    if let Some(secret) = cookie_in(&headers, SESSION_COOKIE)
        && let Err(e) = sessions::sign_out(&state.services, &secret).await
    {
        return error_page(&state, Some(&session), &e.to_string());
    }
    tracing::info!(user = %session.principal.name, "signed out of the console");
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", Some(0)),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_console_page_is_somewhere_to_go_back_to() {
        assert_eq!(safe_next(Some("/console/tiers")), "/console/tiers");
        assert_eq!(safe_next(Some("https://evil.example/")), "/console/");
        assert_eq!(safe_next(Some("//evil.example/console/")), "/console/");
        assert_eq!(safe_next(Some("/api/v1/tiers")), "/console/");
        assert_eq!(safe_next(None), "/console/");
    }

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; siyu_session=abc; b=2"),
        );
        assert_eq!(cookie_in(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie_in(&headers, LOGIN_COOKIE), None);
    }
}
