//! Who may do what: users with a role (admin, operator, viewer), passwords hashed with Argon2id,
//! and API tokens for scripts (shown once, kept as their SHA-256, revocable). `api.token` in the
//! config stays a bootstrap admin token.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{AppError, Services};
use crate::store::users::{ApiToken, User};

/// What a user may do; each role may do what the ones below it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Channels, pins, tier groups, campaigns, activity, retrying failed jobs.
    Operator,
    /// Everything, including users, tier rules and settings.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Who makes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's name, or `api.token` for the bootstrap token.
    pub name: String,
    pub role: Role,
}

/// Passwords shorter than this are refused.
pub const MIN_PASSWORD_CHARS: usize = 10;

fn hash_password(password: &str) -> Result<String, AppError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AppError::Invalid(format!(
            "password: at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| AppError::Invalid(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::Invalid(format!("password: {e}")))
}

fn check_name(name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid(format!(
            "name {name:?}: 1 to 64 letters, digits, _ - . @"
        )))
    }
}

pub async fn add(s: &Services, name: &str, role: Role, password: &str) -> Result<User, AppError> {
    check_name(name)?;
    let hash = hash_password(password)?;
    let now = s.clock.now_ms();
    if !s.store.insert_user(name, role.as_str(), &hash, now).await? {
        return Err(AppError::Conflict(format!("a user {name:?} exists")));
    }
    tracing::info!(user = name, role = role.as_str(), "user added");
    user(s, name).await
}

pub async fn user(s: &Services, name: &str) -> Result<User, AppError> {
    s.store
        .user_credentials(name)
        .await?
        .map(|c| c.user)
        .ok_or_else(|| AppError::NotFound(format!("no user {name:?}")))
}

pub async fn list(s: &Services) -> Result<Vec<User>, AppError> {
    Ok(s.store.users().await?)
}

pub async fn set_password(s: &Services, name: &str, password: &str) -> Result<(), AppError> {
    let hash = hash_password(password)?;
    if !s
        .store
        .update_user(name, Some(&hash), None, None, s.clock.now_ms())
        .await?
    {
        return Err(AppError::NotFound(format!("no user {name:?}")));
    }
    tracing::info!(user = name, "password changed");
    Ok(())
}

/// Disables (or enables again) a user: their sign-ins and tokens stop working.
pub async fn set_disabled(s: &Services, name: &str, disabled: bool) -> Result<(), AppError> {
    let now = s.clock.now_ms();
    let mark = Some(disabled.then_some(now));
    if !s.store.update_user(name, None, None, mark, now).await? {
        return Err(AppError::NotFound(format!("no user {name:?}")));
    }
    tracing::info!(user = name, disabled, "user disabled or enabled");
    Ok(())
}

/// Checks a password; the user when it is theirs and they are not disabled.
pub async fn sign_in(s: &Services, name: &str, password: &str) -> Result<Principal, AppError> {
    let refused = || AppError::Invalid("wrong user name or password".into());
    let Some(c) = s.store.user_credentials(name).await? else {
        return Err(refused());
    };
    let parsed = PasswordHash::new(&c.password_hash)
        .map_err(|e| AppError::Invalid(format!("stored password hash of {name:?}: {e}")))?;
    if c.user.disabled
        || Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_err()
    {
        return Err(refused());
    }
    principal_of(&c.user)
}

fn principal_of(user: &User) -> Result<Principal, AppError> {
    let role = Role::parse(&user.role).ok_or_else(|| {
        AppError::Invalid(format!(
            "user {:?} has an unknown role {:?}",
            user.name, user.role
        ))
    })?;
    Ok(Principal {
        name: user.name.clone(),
        role,
    })
}

fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new API token for a user: answers its id and the secret, which is never shown again.
pub async fn create_token(
    s: &Services,
    user_name: &str,
    token_name: &str,
) -> Result<(i64, String), AppError> {
    let u = user(s, user_name).await?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = format!("siyu_{}", hex::encode(bytes));
    let id = s
        .store
        .insert_api_token(u.id, token_name, &token_hash(&secret), s.clock.now_ms())
        .await?;
    tracing::info!(user = user_name, token = id, "API token created");
    Ok((id, secret))
}

pub async fn tokens(s: &Services) -> Result<Vec<ApiToken>, AppError> {
    Ok(s.store.api_tokens().await?)
}

pub async fn revoke_token(s: &Services, id: i64) -> Result<(), AppError> {
    if !s.store.revoke_api_token(id, s.clock.now_ms()).await? {
        return Err(AppError::NotFound(format!("no live token {id}")));
    }
    tracing::info!(token = id, "API token revoked");
    Ok(())
}

/// The user a bearer token belongs to (None: no such live token, or the user is disabled).
pub async fn by_token(s: &Services, secret: &str) -> Result<Option<Principal>, AppError> {
    match s.store.user_of_token(&token_hash(secret)).await? {
        Some(u) if !u.disabled => principal_of(&u).map(Some),
        _ => Ok(None),
    }
}
