//! WeCom access tokens shared across PostgreSQL replicas. One replica refreshes at a time (an
//! advisory lock on the credential); the others find the fresh token in the row.

use sqlx::Row;

use super::{Result, Store};

/// A token as stored: its value and when it stops being valid (Unix ms).
#[derive(Clone)]
pub struct StoredToken {
    pub token: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StoredToken([redacted], expires_at: {})",
            self.expires_at
        )
    }
}

/// A held refresh lock on one credential (PostgreSQL only): read, and write after a refresh,
/// then [`TokenLock::release`]. Dropping it without release rolls back and frees the lock.
pub struct TokenLock {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    credential: String,
}

impl Store {
    /// Takes the refresh lock for `credential`, or `None` on SQLite (one process: the in-memory
    /// single flight is enough).
    pub async fn lock_token(&self, credential: &str) -> Result<Option<TokenLock>> {
        let Some(pool) = self.pg_pool() else {
            return Ok(None);
        };
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(credential)
            .execute(&mut *tx)
            .await?;
        Ok(Some(TokenLock {
            tx,
            credential: credential.to_string(),
        }))
    }
}

impl TokenLock {
    pub async fn read(&mut self) -> Result<Option<StoredToken>> {
        let row = sqlx::query("SELECT token, expires_at FROM wecom_tokens WHERE credential = $1")
            .bind(&self.credential)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(match row {
            Some(r) => Some(StoredToken {
                token: r.try_get("token")?,
                expires_at: r.try_get("expires_at")?,
            }),
            None => None,
        })
    }

    pub async fn write(&mut self, token: &StoredToken, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO wecom_tokens (credential, token, expires_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (credential) DO UPDATE SET token = excluded.token,
                 expires_at = excluded.expires_at, updated_at = excluded.updated_at",
        )
        .bind(&self.credential)
        .bind(&token.token)
        .bind(token.expires_at)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn release(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
