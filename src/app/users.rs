//! Who may do what: users with a role (admin, operator, viewer), passwords hashed with Argon2id,
//! and API tokens for scripts (shown once, kept as their SHA-256, revocable). `api.token` in the
//! config stays a bootstrap admin token.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{AppError, Services};
use crate::store::users::{ApiToken, User, UserChange};

/// What a user may do; each role may do what the ones below it may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
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

impl Principal {
    /// `siyu users` on this machine: whoever may run siyu here is an admin (audited as `cli`).
    pub fn cli() -> Principal {
        Principal {
            name: "cli".into(),
            role: Role::Admin,
        }
    }
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
    if !ok {
        return Err(AppError::Invalid(format!(
            "name {name:?}: 1 to 64 letters, digits, _ - . @"
        )));
    }
    // The audit log names the bootstrap token and the command line so; a user of either name
    // could not be told apart from them.
    if RESERVED_NAMES.contains(&name.to_lowercase().as_str()) {
        return Err(AppError::Invalid(format!(
            "name {name:?}: reserved (the audit log uses it for {})",
            if name.eq_ignore_ascii_case("cli") {
                "siyu users"
            } else {
                "the config's api.token"
            }
        )));
    }
    Ok(())
}

/// Names the audit log gives callers that are not users.
const RESERVED_NAMES: [&str; 2] = ["api.token", "cli"];

pub async fn add(
    s: &Services,
    by: &Principal,
    name: &str,
    role: Role,
    password: &str,
) -> Result<User, AppError> {
    check_name(name)?;
    let hash = hash_password(password)?;
    let now = s.clock.now_ms();
    if !s.store.insert_user(name, role.as_str(), &hash, now).await? {
        return Err(AppError::Conflict(format!("a user {name:?} exists")));
    }
    tracing::info!(by = %by.name, user = name, role = role.as_str(), "user added");
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

pub async fn set_password(
    s: &Services,
    by: &Principal,
    name: &str,
    password: &str,
) -> Result<(), AppError> {
    let hash = hash_password(password)?;
    if !s
        .store
        .set_password_hash(name, &hash, s.clock.now_ms())
        .await?
    {
        return Err(AppError::NotFound(format!("no user {name:?}")));
    }
    // Whoever knew the old password is signed out of every browser.
    s.store.end_sessions_of(name, s.clock.now_ms()).await?;
    tracing::info!(by = %by.name, user = name, "password changed");
    Ok(())
}

/// A change of a user's role or disabled mark; `None` leaves it as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Change {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

/// Changes a user's role or disables (or enables) them: a disabled user's sign-ins and tokens
/// stop working at once. An admin may not lower their own role or disable themselves, and the
/// last enabled admin stays one: either would leave nobody to manage users (but `api.token`).
pub async fn change(
    s: &Services,
    by: &Principal,
    name: &str,
    change: Change,
) -> Result<User, AppError> {
    if by.name == name {
        if change.disabled == Some(true) {
            return Err(AppError::Conflict(format!(
                "disabled: {name} may not disable themselves; another admin may"
            )));
        }
        if change.role.is_some_and(|r| r < by.role) {
            return Err(AppError::Conflict(format!(
                "role: {name} may not lower their own role; another admin may"
            )));
        }
    }
    let now = s.clock.now_ms();
    let role = change.role.map(Role::as_str);
    match s
        .store
        .change_user(name, role, change.disabled, now)
        .await?
    {
        UserChange::Changed(user) => {
            tracing::info!(
                by = %by.name,
                user = name,
                role = user.role,
                disabled = user.disabled,
                "user changed"
            );
            Ok(user)
        }
        UserChange::NotFound => Err(AppError::NotFound(format!("no user {name:?}"))),
        UserChange::LastAdmin => Err(AppError::Conflict(format!(
            "{name} is the last enabled admin; make another admin first"
        ))),
    }
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

/// A token as made: the secret is in this answer only (siyu keeps its SHA-256).
#[derive(Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NewToken {
    pub id: i64,
    /// The user it acts as.
    pub user: String,
    pub label: String,
    /// The secret, for `Authorization: Bearer`; shown this once.
    pub token: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NewToken({} of {} ({}), [redacted])",
            self.id, self.user, self.label
        )
    }
}

/// A new API token for a user: its id and the secret, which is never shown again.
pub async fn create_token(
    s: &Services,
    by: &Principal,
    user_name: &str,
    label: &str,
) -> Result<NewToken, AppError> {
    if label.trim().is_empty() || label.chars().count() > 64 {
        return Err(AppError::Invalid("label: 1 to 64 characters".into()));
    }
    let u = user(s, user_name).await?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = format!("siyu_{}", hex::encode(bytes));
    let id = s
        .store
        .insert_api_token(u.id, label, &token_hash(&secret), s.clock.now_ms())
        .await?;
    tracing::info!(by = %by.name, user = user_name, token = id, label, "API token created");
    Ok(NewToken {
        id,
        user: u.name,
        label: label.to_string(),
        token: secret,
    })
}

pub async fn tokens(s: &Services) -> Result<Vec<ApiToken>, AppError> {
    Ok(s.store.api_tokens().await?)
}

pub async fn token(s: &Services, id: i64) -> Result<ApiToken, AppError> {
    s.store
        .api_token(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no token {id}")))
}

/// Revokes a token: the next request with it is refused (tokens are checked on every request).
pub async fn revoke_token(s: &Services, by: &Principal, id: i64) -> Result<(), AppError> {
    if !s.store.revoke_api_token(id, s.clock.now_ms()).await? {
        return Err(AppError::NotFound(format!("no live token {id}")));
    }
    tracing::info!(by = %by.name, token = id, "API token revoked");
    Ok(())
}

/// The user a bearer token belongs to (None: no such live token, or the user is disabled).
pub async fn by_token(s: &Services, secret: &str) -> Result<Option<Principal>, AppError> {
    match s.store.user_of_token(&token_hash(secret)).await? {
        Some(u) if !u.disabled => principal_of(&u).map(Some),
        _ => Ok(None),
    }
}
