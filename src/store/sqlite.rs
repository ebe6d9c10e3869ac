//! SQLite connection settings: WAL (readers never wait for the writer), a busy timeout (several
//! connections and processes share one file), foreign keys on.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Result, StoreError};
use crate::config::DatabaseSettings;

pub(super) async fn connect(settings: &DatabaseSettings) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(settings.url.expose())
        .map_err(|e| StoreError::Url(e.to_string()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match settings.sqlite_synchronous.as_str() {
            "normal" => SqliteSynchronous::Normal,
            _ => SqliteSynchronous::Full,
        })
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // Statement journals (an upsert of many rows needs one) in memory, not in temp files.
        .pragma("temp_store", "memory");
    let pool = SqlitePoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(super::acquire_timeout())
        .connect_with(options)
        .await?;
    Ok(pool)
}
