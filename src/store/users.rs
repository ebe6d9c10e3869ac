//! Users, their roles and password hashes, and their API tokens (kept as SHA-256).

use serde::Serialize;

use super::{Result, Store, with_pool};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: i64,
}

/// A user with the hash of their password (for checking a sign-in; never shown).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked: bool,
}

type UserRow = (i64, String, String, String, Option<i64>, i64);
type TokenRow = (i64, String, String, i64, Option<i64>, Option<i64>);

fn credentials(r: UserRow) -> Credentials {
    Credentials {
        user: User {
            id: r.0,
            name: r.1,
            role: r.2,
            disabled: r.4.is_some(),
            created_at: r.5,
        },
        password_hash: r.3,
    }
}

impl Store {
    /// Adds a user; false when the name is taken.
    pub async fn insert_user(
        &self,
        name: &str,
        role: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<bool> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO users (name, role, password_hash, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(role)
            .bind(password_hash)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    pub async fn user_credentials(&self, name: &str) -> Result<Option<Credentials>> {
        let row: Option<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, name, role, password_hash, disabled_at, created_at FROM users WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(credentials))
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows: Vec<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, name, role, password_hash, disabled_at, created_at FROM users ORDER BY name",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|r| credentials(r).user).collect())
    }

    /// Sets a user's password hash, role or disabled mark; false when there is no such user.
    pub async fn update_user(
        &self,
        name: &str,
        password_hash: Option<&str>,
        role: Option<&str>,
        disabled_at: Option<Option<i64>>,
        now: i64,
    ) -> Result<bool> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE users SET password_hash = COALESCE($1, password_hash), role = COALESCE($2, role),
                   disabled_at = CASE WHEN $3 THEN $4 ELSE disabled_at END, updated_at = $5
                 WHERE name = $6",
            )
            .bind(password_hash)
            .bind(role)
            .bind(disabled_at.is_some())
            .bind(disabled_at.flatten())
            .bind(now)
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    pub async fn insert_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<i64> {
        let _turn = self.write_turn().await;
        let id = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(user_id)
            .bind(name)
            .bind(token_hash)
            .bind(now)
            .fetch_one(pool)
            .await?
        });
        Ok(id)
    }

    /// The live user a token (by its hash) belongs to, if the token is not revoked.
    pub async fn user_of_token(&self, token_hash: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT u.id, u.name, u.role, u.password_hash, u.disabled_at, u.created_at
                 FROM api_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|r| credentials(r).user))
    }

    pub async fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        let rows: Vec<TokenRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT t.id, u.name, t.name, t.created_at, t.last_used_at, t.revoked_at
                     FROM api_tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| ApiToken {
                id: r.0,
                user: r.1,
                name: r.2,
                created_at: r.3,
                last_used_at: r.4,
                revoked: r.5.is_some(),
            })
            .collect())
    }

    /// Revokes a token; false when there is none of that id (or it was revoked).
    pub async fn revoke_api_token(&self, id: i64, now: i64) -> Result<bool> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }
}
