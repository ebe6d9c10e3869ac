//! Users, their roles and password hashes, and their API tokens (kept as SHA-256).

use serde::Serialize;

use super::{DbKind, Result, Store, with_pool, with_tx};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub name: String,
    /// admin, operator or viewer.
    pub role: String,
    pub disabled: bool,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms: the last change of role, password or disabled mark.
    pub updated_at: i64,
}

/// A user with the hash of their password (for checking a sign-in; never shown).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// An API token as listed: never its secret or the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub id: i64,
    /// The user it acts as.
    pub user: String,
    /// What it is for, e.g. "shop".
    pub label: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub last_used_at: Option<i64>,
    /// Unix ms; a revoked token is refused.
    pub revoked_at: Option<i64>,
}

/// What [`Store::change_user`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    Changed(User),
    NotFound,
    /// Refused: no enabled admin would be left.
    LastAdmin,
}

type UserRow = (i64, String, String, String, Option<i64>, i64, i64);
type TokenRow = (i64, String, String, i64, Option<i64>, Option<i64>);

const USER_COLUMNS: &str = "id, name, role, password_hash, disabled_at, created_at, updated_at";

const TOKEN_SELECT: &str = "SELECT t.id, u.name, t.name, t.created_at, t.last_used_at, t.revoked_at
    FROM api_tokens t JOIN users u ON u.id = t.user_id";

/// The enabled admins, locked on PostgreSQL until the transaction ends: two admins demoted at
/// once by two requests would otherwise each see the other still an admin and leave none.
/// SQLite has one writer at a time, so reading inside the write transaction is enough.
const ENABLED_ADMINS_SQLITE: &str =
    "SELECT name FROM users WHERE role = 'admin' AND disabled_at IS NULL";
const ENABLED_ADMINS_POSTGRES: &str =
    "SELECT name FROM users WHERE role = 'admin' AND disabled_at IS NULL FOR UPDATE";

fn credentials(r: UserRow) -> Credentials {
    Credentials {
        user: User {
            id: r.0,
            name: r.1,
            role: r.2,
            disabled: r.4.is_some(),
            created_at: r.5,
            updated_at: r.6,
        },
        password_hash: r.3,
    }
}

fn api_token(r: TokenRow) -> ApiToken {
    ApiToken {
        id: r.0,
        user: r.1,
        label: r.2,
        created_at: r.3,
        last_used_at: r.4,
        revoked_at: r.5,
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
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE name = $1"
            )))
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(credentials))
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows: Vec<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users ORDER BY name"
            )))
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|r| credentials(r).user).collect())
    }

    /// Sets a user's password hash; false when there is no such user.
    pub async fn set_password_hash(
        &self,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<bool> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE name = $3")
                .bind(password_hash)
                .bind(now)
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Sets a user's role and disabled mark (`Some(true)` disables, keeping the first time it
    /// was disabled); refused when no enabled admin would be left.
    pub async fn change_user(
        &self,
        name: &str,
        role: Option<&str>,
        disabled: Option<bool>,
        now: i64,
    ) -> Result<UserChange> {
        let admins_sql = match self.kind() {
            DbKind::Sqlite => ENABLED_ADMINS_SQLITE,
            DbKind::Postgres => ENABLED_ADMINS_POSTGRES,
        };
        let mut tx = self.begin().await?;
        let admins: Vec<String> = with_tx!(tx, |conn| {
            sqlx::query_scalar(admins_sql).fetch_all(&mut *conn).await?
        });
        let row: Option<UserRow> = with_tx!(tx, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE name = $1"
            )))
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
        });
        let Some(row) = row else {
            return Ok(UserChange::NotFound);
        };
        let role = role.unwrap_or(&row.2).to_string();
        let disabled_at = match disabled {
            Some(true) => row.4.or(Some(now)),
            Some(false) => None,
            None => row.4,
        };
        let is_admin = admins.iter().any(|a| a == name);
        let stays_admin = role == "admin" && disabled_at.is_none();
        // Nobody else could manage users (the bootstrap `api.token` aside).
        if is_admin && !stays_admin && admins.len() == 1 {
            return Ok(UserChange::LastAdmin);
        }
        with_tx!(tx, |conn| {
            sqlx::query(
                "UPDATE users SET role = $1, disabled_at = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(&role)
            .bind(disabled_at)
            .bind(now)
            .bind(row.0)
            .execute(&mut *conn)
            .await?;
        });
        tx.commit().await?;
        let mut user = credentials(row).user;
        user.role = role;
        user.disabled = disabled_at.is_some();
        user.updated_at = now;
        Ok(UserChange::Changed(user))
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
                "SELECT u.id, u.name, u.role, u.password_hash, u.disabled_at, u.created_at, u.updated_at
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
            sqlx::query_as(sqlx::AssertSqlSafe(format!("{TOKEN_SELECT} ORDER BY t.id")))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(api_token).collect())
    }

    pub async fn api_token(&self, id: i64) -> Result<Option<ApiToken>> {
        let row: Option<TokenRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{TOKEN_SELECT} WHERE t.id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(api_token))
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
