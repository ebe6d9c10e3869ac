//! Who calls `/api/v1`, and whether their role allows the request: the bearer token
//! (`api.token`, the bootstrap admin, or a user's API token) or a caller already known inside
//! the process (a console session, the audit reading a resource as the caller).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::api::ApiError;
use super::doc::ErrorBody;
use crate::app::users::{self, Principal, Role};

/// Who the bearer token says the caller is: `api.token` (the bootstrap admin) or a user's API
/// token (`siyu users token`), and whether their role allows the request; the principal goes
/// with the request to the handlers.
pub(super) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(acting) = request.extensions().get::<Acting>().cloned() {
        return authorize(acting.principal, request, next).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let expected = state.api_token.expose().as_bytes();
    let principal = match given {
        Some(given) if !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected)) => {
            Some(Principal {
                name: "api.token".into(),
                role: Role::Admin,
            })
        }
        Some(given) => match users::by_token(&state.services, &given).await {
            Ok(p) => p,
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => None,
    };
    let Some(principal) = principal else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(ErrorBody {
                error: "missing or wrong bearer token (config api.token, or a user's token from `siyu users token`)".into(),
            }),
        )
            .into_response();
    };
    authorize(principal, request, next).await
}

/// A caller already known inside the process (a console session; the audit reading a resource
/// as the caller): a request extension, which nothing from the network can set.
#[derive(Debug, Clone)]
pub(super) struct Acting {
    pub principal: Principal,
    /// Where the change came from, as the audit log records it (`api`, `console`).
    pub via: &'static str,
}

/// Lets the request through when the principal's role allows it.
async fn authorize(principal: Principal, mut request: Request, next: Next) -> Response {
    let needed = required_role(request.method(), request.uri().path());
    if principal.role < needed {
        return ApiError::status(
            StatusCode::FORBIDDEN,
            format!(
                "{} is a {}; this needs an {}",
                principal.name,
                principal.role.as_str(),
                needed.as_str()
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The role a request needs: reads are for viewers (a campaign or tier-rules preview changes
/// nothing too), tier rules are for admins, every other change for operators. Users, tokens and
/// the audit log are for admins, reads too (who may do what is itself a secret worth keeping).
pub(super) fn required_role(method: &axum::http::Method, path: &str) -> Role {
    use axum::http::Method;
    let path = path.trim_end_matches('/');
    let first = path
        .strip_prefix("/api/v1")
        .unwrap_or(path)
        .split('/')
        .find(|s| !s.is_empty());
    if path.ends_with("/audit") || matches!(first, Some("users" | "tokens")) {
        Role::Admin
    } else if *method == Method::GET
        || *method == Method::HEAD
        || path.ends_with("/campaigns/preview")
        || path.ends_with("/tiers/preview")
    {
        Role::Viewer
    } else if path.ends_with("/tiers") {
        Role::Admin
    } else {
        Role::Operator
    }
}
