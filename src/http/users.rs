//! `/api/v1/users` and `/api/v1/tokens`: the users, their roles and passwords, and their API
//! tokens (admins only, see `auth::required_role`). What `siyu users` does, for the console.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::api::{ApiError, INTERNAL, UNAUTHORIZED, body};
use super::doc::ErrorBody;
use crate::app::users::{self, Change, NewToken, Principal, Role};
use crate::store::users::{ApiToken, User};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, patch_user))
        .routes(routes!(put_password))
        .routes(routes!(create_token))
        .routes(routes!(list_tokens))
        .routes(routes!(get_token, revoke_token))
}

const NOT_ADMIN: &str = "not an admin";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    /// By name.
    pub users: Vec<User>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Oldest first, revoked ones too.
    pub tokens: Vec<ApiToken>,
}

/// A new user. No `Debug`: it holds the password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    /// 1 to 64 letters, digits, `_ - . @`.
    name: String,
    role: Role,
    /// At least 10 characters; kept as an Argon2id hash only.
    password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    /// The new role (not lower than your own for yourself).
    role: Option<Role>,
    /// `true` disables the user (their sign-ins and tokens stop working at once), `false`
    /// enables them again.
    disabled: Option<bool>,
}

/// No `Debug`: it holds the password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    /// At least 10 characters.
    password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    /// What the token is for, e.g. "shop" (1 to 64 characters; default "api").
    label: Option<String>,
}

/// The users, by name (never their password hashes).
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    responses(
        (status = 200, description = "the users", body = UserList),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_users(State(state): State<AppState>) -> Result<Response, ApiError> {
    let users = users::list(&state.services).await?;
    Ok(Json(UserList { users }).into_response())
}

/// Adds a user with the checks of `siyu users add`.
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "added", body = User),
        (status = 400, description = "a bad name, role or a weak password (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 409, description = "a user of this name exists", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn create_user(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    payload: Result<Json<NewUser>, JsonRejection>,
) -> Result<Response, ApiError> {
    let new = body(payload)?;
    let user = users::add(&state.services, &by, &new.name, new.role, &new.password).await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// One user.
#[utoipa::path(
    get,
    path = "/users/{name}",
    tag = "users",
    params(("name" = String, Path, description = "the user's name")),
    responses(
        (status = 200, description = "the user", body = User),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_user(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(users::user(&state.services, &name).await?).into_response())
}

/// Changes a user's role or disables (enables) them. Refused for yourself when it would lower
/// your role or disable you, and for the last enabled admin.
#[utoipa::path(
    patch,
    path = "/users/{name}",
    tag = "users",
    params(("name" = String, Path, description = "the user's name")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "changed", body = User),
        (status = 400, description = "the body is wrong (the field is named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 409, description = "it would lock you or the last admin out", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn patch_user(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    Path(name): Path<String>,
    payload: Result<Json<UserPatch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let patch = body(payload)?;
    let change = Change {
        role: patch.role,
        disabled: patch.disabled,
    };
    Ok(Json(users::change(&state.services, &by, &name, change).await?).into_response())
}

/// Sets a user's password (never shown again, nor kept in the audit log).
#[utoipa::path(
    put,
    path = "/users/{name}/password",
    tag = "users",
    params(("name" = String, Path, description = "the user's name")),
    request_body = PasswordBody,
    responses(
        (status = 204, description = "set"),
        (status = 400, description = "a weak password (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn put_password(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    Path(name): Path<String>,
    payload: Result<Json<PasswordBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let password = body(payload)?.password;
    users::set_password(&state.services, &by, &name, &password).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A new API token acting as the user; the secret is in this answer only.
#[utoipa::path(
    post,
    path = "/users/{name}/tokens",
    tag = "users",
    params(("name" = String, Path, description = "the user's name")),
    request_body = TokenBody,
    responses(
        (status = 201, description = "made; `token` is shown this once", body = NewToken),
        (status = 400, description = "the body is wrong (the field is named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn create_token(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    Path(name): Path<String>,
    payload: Result<Json<TokenBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let label = body(payload)?.label.unwrap_or_else(|| "api".into());
    let made = users::create_token(&state.services, &by, &name, &label).await?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// Every API token, revoked ones too (never a secret).
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "users",
    responses(
        (status = 200, description = "the tokens", body = TokenList),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_tokens(State(state): State<AppState>) -> Result<Response, ApiError> {
    let tokens = users::tokens(&state.services).await?;
    Ok(Json(TokenList { tokens }).into_response())
}

/// The token's id as a path segment; anything else names no token.
fn token_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::status(StatusCode::NOT_FOUND, format!("no token {id:?}")))
}

/// One API token (never its secret).
#[utoipa::path(
    get,
    path = "/tokens/{id}",
    tag = "users",
    params(("id" = i64, Path, description = "the token's id")),
    responses(
        (status = 200, description = "the token", body = ApiToken),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "no such token", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(users::token(&state.services, token_id(&id)?).await?).into_response())
}

/// Revokes an API token: the next request with it gets 401.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "users",
    params(("id" = i64, Path, description = "the token's id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "no such token, or it was revoked", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn revoke_token(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    users::revoke_token(&state.services, &by, token_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
