//! The console's sign-ins: a session per browser, found by the secret in its cookie (kept as its
//! SHA-256), over after `console.session_idle_minutes` unused or `console.session_max_hours`
//! after the sign-in; each carries the CSRF token its forms must send back. Failed sign-ins are
//! counted per name (whether or not the user exists, so the answer tells nothing) and, past
//! `console.free_sign_in_failures` in a row, each further attempt must wait, longer each time.

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::users::{self, Principal, Role};
use super::{AppError, Services};

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// What every form of this session carries in its hidden `csrf` field.
    pub csrf: String,
}

/// Why a sign-in did not work.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The name or the password is wrong, or the user is disabled (one answer for all three).
    #[error("wrong user name or password")]
    Refused,
    /// Too many failures in a row: the next attempt may come after this many seconds.
    #[error("too many failed sign-ins; try again in {0} s")]
    Wait(u64),
    #[error(transparent)]
    App(#[from] AppError),
}

/// Looking a session up writes its last use at most this often (a page load is not a write).
const TOUCH_EVERY_MS: i64 = 60_000;
/// The longest wait between attempts after many failures.
const MAX_WAIT_SECS: u64 = 15 * 60;

/// A fresh random secret, hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// How long the next attempt must wait after `failures` in a row (0: it may come now).
fn wait_secs(failures: i64, free: u32) -> u64 {
    let over = failures - i64::from(free);
    if over < 0 {
        return 0;
    }
    // 1 s after the first failure past the free ones, doubling after each further one.
    1u64.checked_shl(u32::try_from(over).unwrap_or(u32::MAX))
        .unwrap_or(MAX_WAIT_SECS)
        .min(MAX_WAIT_SECS)
}

/// Checks the name and password and starts a session: answers the cookie's secret and the
/// session.
pub async fn sign_in(
    s: &Services,
    name: &str,
    password: &str,
) -> Result<(String, Session), SignInError> {
    let key = name.trim().to_lowercase();
    let now = s.clock.now_ms();
    if let Some((failures, last_at)) = s
        .store
        .sign_in_failures(&key)
        .await
        .map_err(AppError::from)?
    {
        let wait_ms = wait_secs(failures, s.settings.console.free_sign_in_failures) * 1000;
        let left = last_at + i64::try_from(wait_ms).unwrap_or(i64::MAX) - now;
        if left > 0 {
            return Err(SignInError::Wait(
                u64::try_from(left).unwrap_or(0).div_ceil(1000),
            ));
        }
    }
    let principal = match users::sign_in(s, name.trim(), password).await {
        Ok(p) => p,
        Err(AppError::Invalid(_)) => {
            s.store
                .record_sign_in_failure(&key, now)
                .await
                .map_err(AppError::from)?;
            // The name is what the person typed; it may be a mistyped password, so it is not
            // logged.
            tracing::warn!("a console sign-in failed");
            return Err(SignInError::Refused);
        }
        Err(e) => return Err(e.into()),
    };
    s.store
        .clear_sign_in_failures(&key)
        .await
        .map_err(AppError::from)?;
    let user = users::user(s, &principal.name).await?;
    let secret = random_secret();
    let csrf = random_secret();
    s.store
        .insert_session(&hash(&secret), user.id, &csrf, now)
        .await
        .map_err(AppError::from)?;
    tracing::info!(user = %principal.name, "signed in to the console");
    Ok((secret, Session { principal, csrf }))
}

/// The live session a cookie's secret belongs to: None when there is none, it ended, it was idle
/// too long or is too old, or its user is disabled.
pub async fn find(s: &Services, secret: &str) -> Result<Option<Session>, AppError> {
    let id = hash(secret);
    let Some(row) = s.store.session(&id).await? else {
        return Ok(None);
    };
    let now = s.clock.now_ms();
    let console = &s.settings.console;
    let idle_ms = i64::try_from(console.session_idle_minutes * 60_000).unwrap_or(i64::MAX);
    let max_ms = i64::try_from(console.session_max_hours * 3_600_000).unwrap_or(i64::MAX);
    if row.ended_at.is_some()
        || row.user.disabled
        || now - row.last_seen_at > idle_ms
        || now - row.created_at > max_ms
    {
        return Ok(None);
    }
    let Some(role) = Role::parse(&row.user.role) else {
        return Ok(None);
    };
    if now - row.last_seen_at > TOUCH_EVERY_MS.min(idle_ms / 2) {
        s.store.touch_session(&id, now).await?;
    }
    Ok(Some(Session {
        principal: Principal {
            name: row.user.name,
            role,
        },
        csrf: row.csrf,
    }))
}

pub async fn sign_out(s: &Services, secret: &str) -> Result<(), AppError> {
    s.store.end_session(&hash(secret), s.clock.now_ms()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_starts_after_the_free_failures_and_doubles_up_to_its_cap() {
        assert_eq!(wait_secs(0, 5), 0);
        assert_eq!(wait_secs(4, 5), 0);
        assert_eq!(wait_secs(5, 5), 1);
        assert_eq!(wait_secs(6, 5), 2);
        assert_eq!(wait_secs(9, 5), 16);
        assert_eq!(wait_secs(40, 5), MAX_WAIT_SECS);
        assert_eq!(wait_secs(i64::MAX, 5), MAX_WAIT_SECS);
    }
}
