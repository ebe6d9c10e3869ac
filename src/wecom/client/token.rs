//! Access tokens: one per secret (the app's, and the customer-contact secret when set), cached
//! with its expiry and refreshed a little before it. However many callers need a token at once,
//! one of them fetches it (single flight); the others wait and share it. On PostgreSQL the token
//! also lives in the database, so replicas share one instead of fighting over it.

use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::error::WecomError;
use crate::clock::Clock;
use crate::store::Store;
use crate::store::tokens::StoredToken;

/// Refresh this long before WeCom's expiry, so no call goes out with a token about to lapse.
const REFRESH_MARGIN_MS: i64 = 5 * 60 * 1000;

pub struct TokenSlot {
    /// A hash naming corp and secret, for the shared row and for logs; never the secret.
    credential: String,
    current: Mutex<Option<StoredToken>>,
    refresh: tokio::sync::Mutex<()>,
}

impl TokenSlot {
    pub fn new(corp_id: &str, secret: &str) -> Self {
        let digest = Sha256::digest(format!("{corp_id}\n{secret}").as_bytes());
        Self {
            credential: format!("wecom:{}", &hex::encode(digest)[..16]),
            current: Mutex::default(),
            refresh: tokio::sync::Mutex::default(),
        }
    }

    fn cached(&self, now: i64) -> Option<String> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .filter(|t| t.expires_at - REFRESH_MARGIN_MS > now)
            .map(|t| t.token.clone())
    }

    /// A valid token, fetching one with `fetch` (which returns the token and its lifetime in
    /// seconds) only when neither this process nor (on PostgreSQL) a replica has one.
    pub async fn get<F, Fut>(
        &self,
        store: Option<&Store>,
        clock: &Clock,
        fetch: F,
    ) -> Result<String, WecomError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(String, i64), WecomError>>,
    {
        if let Some(token) = self.cached(clock.now_ms()) {
            return Ok(token);
        }
        let _single_flight = self.refresh.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(token) = self.cached(clock.now_ms()) {
            return Ok(token);
        }
        let shared_lock = match store {
            Some(store) => store.lock_token(&self.credential).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "shared token lock unavailable; fetching a token for this process");
                None
            }),
            None => None,
        };
        let fresh = match shared_lock {
            Some(mut lock) => {
                let stored = lock.read().await.ok().flatten();
                match stored.filter(|t| t.expires_at - REFRESH_MARGIN_MS > clock.now_ms()) {
                    Some(t) => {
                        let _ = lock.release().await;
                        t
                    }
                    None => {
                        let t = self.fetch(clock, fetch).await?;
                        if let Err(e) = lock.write(&t, clock.now_ms()).await {
                            tracing::warn!(error = %e, "could not share the new token with the other replicas");
                        }
                        let _ = lock.release().await;
                        t
                    }
                }
            }
            None => self.fetch(clock, fetch).await?,
        };
        let token = fresh.token.clone();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        Ok(token)
    }

    async fn fetch<F, Fut>(&self, clock: &Clock, fetch: F) -> Result<StoredToken, WecomError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(String, i64), WecomError>>,
    {
        let (token, expires_in) = fetch().await?;
        tracing::info!(credential = %self.credential, expires_in, "fetched a WeCom access token");
        Ok(StoredToken {
            token,
            expires_at: clock.now_ms() + expires_in.max(0) * 1000,
        })
    }

    /// WeCom refused `bad` (40001/40014/42001): forget it here and in the shared row, unless a
    /// fresher token has already replaced it.
    pub async fn invalidate(&self, store: Option<&Store>, bad: &str) {
        {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if current.as_ref().is_some_and(|t| t.token == bad) {
                *current = None;
            }
        }
        let Some(store) = store else { return };
        if let Ok(Some(mut lock)) = store.lock_token(&self.credential).await {
            if let Ok(Some(t)) = lock.read().await
                && t.token == bad
            {
                let expired = StoredToken {
                    token: String::new(),
                    expires_at: 0,
                };
                let _ = lock.write(&expired, 0).await;
            }
            let _ = lock.release().await;
        }
    }
}
