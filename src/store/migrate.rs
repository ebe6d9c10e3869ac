//! Migrations: one ordered list per backend, embedded in the binary, each applied once in its
//! own transaction and recorded in `siyu_migrations`. On PostgreSQL an advisory lock keeps
//! replicas that start together from racing.

use sqlx::{Connection, PgPool, SqlitePool};

use super::{Result, StoreError};

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "spine",
        sql: include_str!("../../migrations/sqlite/0001_spine.sql"),
    },
    Migration {
        version: 3,
        name: "contacts",
        sql: include_str!("../../migrations/sqlite/0003_contacts.sql"),
    },
    Migration {
        version: 4,
        name: "tiers",
        sql: include_str!("../../migrations/sqlite/0004_tiers.sql"),
    },
    Migration {
        version: 5,
        name: "core",
        sql: include_str!("../../migrations/sqlite/0005_core.sql"),
    },
    Migration {
        version: 6,
        name: "groups",
        sql: include_str!("../../migrations/sqlite/0006_groups.sql"),
    },
    Migration {
        version: 7,
        name: "campaigns",
        sql: include_str!("../../migrations/sqlite/0007_campaigns.sql"),
    },
    Migration {
        version: 8,
        name: "users",
        sql: include_str!("../../migrations/sqlite/0008_users.sql"),
    },
    Migration {
        version: 9,
        name: "audit",
        sql: include_str!("../../migrations/sqlite/0009_audit.sql"),
    },
    Migration {
        version: 10,
        name: "console",
        sql: include_str!("../../migrations/sqlite/0010_console.sql"),
    },
    Migration {
        version: 11,
        name: "segment_history",
        sql: include_str!("../../migrations/sqlite/0011_segment_history.sql"),
    },
];

const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "spine",
        sql: include_str!("../../migrations/postgres/0001_spine.sql"),
    },
    // Only PostgreSQL has several processes that must share WeCom's tokens.
    Migration {
        version: 2,
        name: "wecom_tokens",
        sql: include_str!("../../migrations/postgres/0002_wecom_tokens.sql"),
    },
    Migration {
        version: 3,
        name: "contacts",
        sql: include_str!("../../migrations/postgres/0003_contacts.sql"),
    },
    Migration {
        version: 4,
        name: "tiers",
        sql: include_str!("../../migrations/postgres/0004_tiers.sql"),
    },
    Migration {
        version: 5,
        name: "core",
        sql: include_str!("../../migrations/postgres/0005_core.sql"),
    },
    Migration {
        version: 6,
        name: "groups",
        sql: include_str!("../../migrations/postgres/0006_groups.sql"),
    },
    Migration {
        version: 7,
        name: "campaigns",
        sql: include_str!("../../migrations/postgres/0007_campaigns.sql"),
    },
    Migration {
        version: 8,
        name: "users",
        sql: include_str!("../../migrations/postgres/0008_users.sql"),
    },
    Migration {
        version: 9,
        name: "audit",
        sql: include_str!("../../migrations/postgres/0009_audit.sql"),
    },
    Migration {
        version: 10,
        name: "console",
        sql: include_str!("../../migrations/postgres/0010_console.sql"),
    },
    Migration {
        version: 11,
        name: "segment_history",
        sql: include_str!("../../migrations/postgres/0011_segment_history.sql"),
    },
    // Only PostgreSQL has several processes that must share WeCom's per-corp limits.
    Migration {
        version: 12,
        name: "limits",
        sql: include_str!("../../migrations/postgres/0012_limits.sql"),
    },
];

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS siyu_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// An arbitrary constant naming siyu's migration lock.
const PG_LOCK_KEY: i64 = 0x5179_7500;

macro_rules! apply_all {
    ($conn:expr, $list:expr) => {{
        sqlx::query(LEDGER).execute(&mut *$conn).await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM siyu_migrations")
            .fetch_all(&mut *$conn)
            .await?;
        let mut ran = 0;
        for m in $list.iter().filter(|m| !applied.contains(&m.version)) {
            let mut tx = $conn.begin().await?;
            let fail = |source| StoreError::Migration {
                version: m.version,
                name: m.name,
                source,
            };
            sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(fail)?;
            sqlx::query(
                "INSERT INTO siyu_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(crate::clock::system_now_ms())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "applied migration");
            ran += 1;
        }
        Ok::<usize, StoreError>(ran)
    }};
}

pub(super) async fn run_sqlite(pool: &SqlitePool) -> Result<usize> {
    let mut conn = pool.acquire().await?;
    apply_all!(conn, SQLITE)
}

pub(super) async fn run_postgres(pool: &PgPool) -> Result<usize> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    let result = apply_all!(conn, POSTGRES);
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    result
}

/// The versions of `list` that `applied` lacks.
fn missing(list: &[Migration], applied: &[i64]) -> Vec<i64> {
    list.iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect()
}

/// The migrations this binary has that the database has not applied (all of them when it was
/// never migrated).
pub(super) async fn pending_sqlite(pool: &SqlitePool) -> Result<Vec<i64>> {
    let applied: Vec<i64> = match sqlx::query_scalar("SELECT version FROM siyu_migrations")
        .fetch_all(pool)
        .await
    {
        Ok(v) => v,
        Err(sqlx::Error::Database(e)) if e.message().contains("no such table") => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(missing(SQLITE, &applied))
}

pub(super) async fn pending_postgres(pool: &PgPool) -> Result<Vec<i64>> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT CAST(to_regclass('siyu_migrations') AS TEXT)")
            .fetch_one(pool)
            .await?;
    let applied: Vec<i64> = if exists.is_some() {
        sqlx::query_scalar("SELECT version FROM siyu_migrations")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(missing(POSTGRES, &applied))
}
