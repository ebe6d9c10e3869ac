//! The console's sessions (by the SHA-256 of the cookie's secret) and failed sign-ins per name.

use super::users::User;
use super::{Result, Store, with_pool};

/// A session and its user, as the cookie finds it.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user: User,
    pub csrf: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub ended_at: Option<i64>,
}

type Row = (
    i64,
    String,
    String,
    Option<i64>,
    i64,
    i64,
    String,
    i64,
    i64,
    Option<i64>,
);

impl Store {
    pub async fn insert_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf: &str,
        now: i64,
    ) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO console_sessions (id_hash, user_id, csrf, created_at, last_seen_at)
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(id_hash)
            .bind(user_id)
            .bind(csrf)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRow>> {
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT u.id, u.name, u.role, u.disabled_at, u.created_at, u.updated_at,
                        s.csrf, s.created_at, s.last_seen_at, s.ended_at
                 FROM console_sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.id_hash = $1",
            )
            .bind(id_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|r| SessionRow {
            user: User {
                id: r.0,
                name: r.1,
                role: r.2,
                disabled: r.3.is_some(),
                created_at: r.4,
                updated_at: r.5,
            },
            csrf: r.6,
            created_at: r.7,
            last_seen_at: r.8,
            ended_at: r.9,
        }))
    }

    pub async fn touch_session(&self, id_hash: &str, now: i64) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query("UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2")
                .bind(now)
                .bind(id_hash)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    pub async fn end_session(&self, id_hash: &str, now: i64) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE console_sessions SET ended_at = $1 WHERE id_hash = $2 AND ended_at IS NULL",
            )
            .bind(now)
            .bind(id_hash)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Ends every session of a user (a new password signs every browser out).
    pub async fn end_sessions_of(&self, user_name: &str, now: i64) -> Result<u64> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE console_sessions SET ended_at = $1
                 WHERE ended_at IS NULL AND user_id = (SELECT id FROM users WHERE name = $2)",
            )
            .bind(now)
            .bind(user_name)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n)
    }

    /// Failed sign-ins in a row for a name, and when the last was (None: none since the last
    /// sign-in that worked).
    pub async fn sign_in_failures(&self, name: &str) -> Result<Option<(i64, i64)>> {
        let row: Option<(i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT failures, last_at FROM sign_in_failures WHERE name = $1 AND failures > 0",
            )
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    pub async fn record_sign_in_failure(&self, name: &str, now: i64) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO sign_in_failures (name, failures, total, last_at) VALUES ($1, 1, 1, $2)
                 ON CONFLICT (name) DO UPDATE SET failures = sign_in_failures.failures + 1,
                   total = sign_in_failures.total + 1, last_at = $2",
            )
            .bind(name)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    pub async fn clear_sign_in_failures(&self, name: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query("UPDATE sign_in_failures SET failures = 0 WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Every failed sign-in ever (for `/metrics`).
    pub async fn sign_in_failures_total(&self) -> Result<i64> {
        let n: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT CAST(SUM(total) AS BIGINT) FROM sign_in_failures")
                .fetch_one(pool)
                .await?
        });
        Ok(n.unwrap_or(0))
    }
}
