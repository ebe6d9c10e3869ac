//! SQLite connection settings: WAL (readers never wait for the writer), a busy timeout (several
//! connections and processes share one file), foreign keys on.
//!
//! Durability is split by what a lost commit would cost. The inbox writer has a connection of its
//! own with `database.sqlite_synchronous` (FULL by default): WeCom gets its 200 only once the
//! event is on disk. Everything else (job bookkeeping, records derived from events) commits with
//! NORMAL: durable across a process crash, and after a power loss only a suffix of the WAL can be
//! missing. That suffix is always recoverable, because every FULL commit of the inbox writes the
//! whole WAL before it, and the work behind it is leased and idempotent: events whose outcome was
//! lost are handled again, jobs whose completion was lost run again under their idempotency key.
//! One fsync per inbox batch instead of one per job step is what lets the welcome message go out
//! within milliseconds of the callback.
//!
//! The inbox connection never checkpoints the WAL itself: a checkpoint copies the WAL into the
//! database file and syncs it, a pause of milliseconds that every callback of the batch would
//! wait for. [`Store::checkpoint_wal`] does it beside the writer instead (the ingest writer asks
//! for one every few batches), and the other connections keep SQLite's automatic checkpoints.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Result, Store, StoreError};
use crate::config::DatabaseSettings;

/// SQLite keeps allocation statistics under one process-wide mutex unless told not to, and
/// sqlx copies every column value of every row it reads (and frees it on the reading task's
/// thread): with two connections reading and one task consuming, most of a full tier
/// evaluation's read was threads waiting on that mutex (`sqlite3_value_dup` and
/// `sqlite3_value_free` under `__lll_lock_wait` in `perf`). siyu never reads the statistics.
/// This must run before SQLite is first used in the process, so it runs once, at the first
/// connect; later it would be refused, which is harmless.
fn turn_off_memory_statistics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int; every SQLite connection of the process is
        // opened by `connect` below, after this has returned (call_once blocks the others).
        let rc = unsafe {
            libsqlite3_sys::sqlite3_config(
                libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            tracing::debug!(
                rc,
                "SQLite was already in use; its memory statistics stay on"
            );
        }
    });
}

/// The general pool, and the inbox writer's own one-connection pool.
pub(super) async fn connect(settings: &DatabaseSettings) -> Result<(SqlitePool, SqlitePool)> {
    turn_off_memory_statistics();
    let options = SqliteConnectOptions::from_str(settings.url.expose())
        .map_err(|e| StoreError::Url(e.to_string()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // Statement journals (an upsert of many rows needs one) in memory, not in temp files.
        .pragma("temp_store", "memory");
    let pool = SqlitePoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(super::acquire_timeout())
        .connect_with(options.clone())
        .await?;
    let inbox = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(super::acquire_timeout())
        .connect_with(
            options
                .synchronous(match settings.sqlite_synchronous.as_str() {
                    "normal" => SqliteSynchronous::Normal,
                    _ => SqliteSynchronous::Full,
                })
                .pragma("wal_autocheckpoint", "0"),
        )
        .await?;
    Ok((pool, inbox))
}

impl Store {
    /// Copies what it can of the WAL into the database file without waiting for anyone
    /// (`PASSIVE`: writers go on meanwhile, so it takes no write turn). A no-op on PostgreSQL.
    pub async fn checkpoint_wal(&self) -> Result<()> {
        if let super::Pool::Sqlite(pool) = &self.pool {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }
}
