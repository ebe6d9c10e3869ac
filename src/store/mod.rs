//! SQL storage: SQLite (the default, one file) and PostgreSQL (several replicas) behind one
//! [`Store`]. The backend is chosen once, from the URL scheme; nothing above this module knows
//! which one it talks to.
//!
//! The SQL is shared wherever the two dialects agree (`$1` placeholders work on both); where they
//! differ (identity columns, `FOR UPDATE SKIP LOCKED`) each backend module holds its own text.
//! [`with_pool!`] and [`with_tx!`] expand one block of query code once per backend, so row
//! mapping is written once and compiled against each driver's concrete types.
//!
//! Times are stored as Unix milliseconds (`BIGINT`) on both backends: portable, exact, and
//! compared with the application's [`Clock`](crate::clock::Clock), which the demo can move.

/// A string-valued enum stored and serialized as its snake_case name.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The name as stored and serialized.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant stored as `text`, if any.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

pub mod audit;
pub mod campaigns;
pub mod contacts;
pub mod groups;
pub mod inbox;
pub mod jobs;
mod json_rows;
pub mod limits;
pub mod media;
mod migrate;
mod postgres;
pub mod retention;
pub mod schedules;
pub mod sessions;
mod sqlite;
pub mod stats;
pub mod tiers;
pub mod tokens;
pub mod users;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use sqlx::{PgPool, SqlitePool};

use crate::config::DatabaseSettings;
pub use crate::config::DbKind;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// From a SQLite connection siyu drives without sqlx (the inbox writer's).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the inbox writer's connection {0}")]
    InboxWriter(String),
    #[error("database URL: {0}")]
    Url(String),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: sqlx::Error,
    },
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// Asked of a backend that does not do it.
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The database handle, cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    /// SQLite: the inbox writer's connection, with the configured durability (see `sqlite`).
    inbox_connection: Option<Arc<sqlite::InboxConnection>>,
    signals: Arc<Signals>,
    /// SQLite allows one writer at a time, and a connection that finds the file locked sleeps in
    /// SQLite's busy handler (1, 2, 5 ... 100 ms steps): fatal to latency. So every write in this
    /// process queues here first, and SQLite never sees two writers of ours at once.
    /// Unused on PostgreSQL. Never call a writing `Store` method while holding a [`Tx`]: write
    /// through the `Tx` instead, or the process waits for itself.
    write_gate: Arc<WriteGate>,
}

/// The queue of this process's SQLite writers. The inbox writer's commit is what every waiting
/// callback's answer waits for, while the other writers (the dispatcher, job workers, the
/// scheduler) do work that may lag a little: so the other writers queue among themselves first
/// and only one of them at a time waits for the turn itself. The inbox writer waits for at most
/// the write in progress and one other, however many workers queue; and since a waiting writer
/// takes the turn before the next one queues, the two alternate under load: neither starves.
#[derive(Default)]
struct WriteGate {
    /// Held while writing.
    turn: Arc<Mutex<()>>,
    /// Held by the one writer other than the inbox's that waits for `turn` or holds it.
    others: Arc<Mutex<()>>,
    /// Whether the inbox writer waits for `turn`: a long transaction (the dispatcher's batch)
    /// commits early when it does, so callbacks are not kept waiting behind it.
    inbox_waiting: AtomicBool,
    /// Whether callbacks keep the inbox writer busy: set while it stores batch after batch,
    /// cleared once none has come for a moment ([`Store::set_inbox_busy`]).
    inbox_busy: AtomicBool,
    /// Fired when `inbox_busy` is cleared.
    inbox_lull: Notify,
}

/// A turn to write (SQLite); dropping it lets the next writer in.
pub(crate) struct WriteTurn {
    // Declared first so it is released first: a waiting inbox writer goes before the next
    // other writer even reaches the turn.
    _turn: OwnedMutexGuard<()>,
    _queued: Option<OwnedMutexGuard<()>>,
}

/// In-process wake-ups, fired after a commit that added work. Workers of other processes learn of
/// it through `LISTEN/NOTIFY` on PostgreSQL and through their poll on SQLite.
#[derive(Debug, Default)]
pub struct Signals {
    pub jobs: Notify,
    pub inbox: Notify,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.kind())
    }
}

/// A transaction on either backend. Business rows and the jobs they decide are written in one
/// `Tx`, so they commit together or not at all (the transactional outbox).
pub struct Tx {
    pub(crate) inner: TxInner,
    _gate: Option<WriteTurn>,
    signals: Arc<Signals>,
    wake_jobs: bool,
    wake_inbox: bool,
}

pub(crate) enum TxInner {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs `$body` with `$pool` bound to the backend's pool (`&SqlitePool` or `&PgPool`).
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$conn` bound to the transaction's connection (`&mut SqliteConnection` or
/// `&mut PgConnection`); reborrow it as `&mut *$conn` for each query.
macro_rules! with_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match &mut $tx.inner {
            $crate::store::TxInner::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::store::TxInner::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}

pub(crate) use postgres::{INBOX_CHANNEL, JOBS_CHANNEL};
pub use postgres::{create_scratch_database, drop_scratch_database};
pub(crate) use {with_pool, with_tx};

impl Store {
    /// Connects, creating the SQLite file if needed. Does not migrate: call [`Store::migrate`].
    pub async fn connect(settings: &DatabaseSettings) -> Result<Store> {
        let url = settings.url.expose();
        let (pool, inbox_connection) = match DbKind::from_url(url).map_err(StoreError::Url)? {
            DbKind::Sqlite => {
                let (general, inbox) = sqlite::connect(settings).await?;
                (Pool::Sqlite(general), Some(Arc::new(inbox)))
            }
            DbKind::Postgres => (Pool::Postgres(postgres::connect(settings).await?), None),
        };
        Ok(Store {
            pool,
            inbox_connection,
            signals: Arc::default(),
            write_gate: Arc::default(),
        })
    }

    pub fn kind(&self) -> DbKind {
        match self.pool {
            Pool::Sqlite(_) => DbKind::Sqlite,
            Pool::Postgres(_) => DbKind::Postgres,
        }
    }

    /// Applies the backend's pending migrations; returns how many ran.
    pub async fn migrate(&self) -> Result<usize> {
        match &self.pool {
            Pool::Sqlite(pool) => migrate::run_sqlite(pool).await,
            Pool::Postgres(pool) => migrate::run_postgres(pool).await,
        }
    }

    /// The migrations this binary has that the database has not applied (for `/readyz`).
    pub async fn pending_migrations(&self) -> Result<Vec<i64>> {
        match &self.pool {
            Pool::Sqlite(pool) => migrate::pending_sqlite(pool).await,
            Pool::Postgres(pool) => migrate::pending_postgres(pool).await,
        }
    }

    /// A consistent copy of a SQLite database in `file` (which must not exist), taken while
    /// siyu runs: `VACUUM INTO` reads one snapshot, so writers go on and the copy is whole.
    pub async fn backup_sqlite(&self, file: &std::path::Path) -> Result<()> {
        let Pool::Sqlite(pool) = &self.pool else {
            return Err(StoreError::Unsupported(
                "siyu backup copies a SQLite database; back PostgreSQL up with pg_dump".into(),
            ));
        };
        let path = file.to_str().ok_or_else(|| {
            StoreError::Unsupported(format!("{}: not a UTF-8 path", file.display()))
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(path)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Waits for this process's turn to write (SQLite only; see `write_gate`).
    pub(crate) async fn write_turn(&self) -> Option<WriteTurn> {
        match self.pool {
            Pool::Sqlite(_) => {
                let queued = self.write_gate.others.clone().lock_owned().await;
                Some(WriteTurn {
                    _turn: self.write_gate.turn.clone().lock_owned().await,
                    _queued: Some(queued),
                })
            }
            Pool::Postgres(_) => None,
        }
    }

    /// The inbox writer's turn to write: ahead of the other writers (see [`WriteGate`]).
    pub(crate) async fn inbox_write_turn(&self) -> Option<WriteTurn> {
        match self.pool {
            Pool::Sqlite(_) => {
                let gate = &self.write_gate;
                gate.inbox_waiting.store(true, Ordering::Relaxed);
                let turn = gate.turn.clone().lock_owned().await;
                gate.inbox_waiting.store(false, Ordering::Relaxed);
                Some(WriteTurn {
                    _turn: turn,
                    _queued: None,
                })
            }
            Pool::Postgres(_) => None,
        }
    }

    /// Whether the inbox writer waits for the write turn (SQLite; never on PostgreSQL, where
    /// writers do not wait for one another's transactions).
    pub fn inbox_writer_waiting(&self) -> bool {
        self.write_gate.inbox_waiting.load(Ordering::Relaxed)
    }

    /// Said by the inbox writer: whether callbacks keep it busy (see [`Store::inbox_lull`]).
    pub(crate) fn set_inbox_busy(&self, busy: bool) {
        let gate = &self.write_gate;
        if gate.inbox_busy.swap(busy, Ordering::Relaxed) && !busy {
            gate.inbox_lull.notify_waiters();
        }
    }

    /// Waits, at most `within`, until callbacks no longer keep the inbox writer busy: whether
    /// they stopped (false: it waited the whole time). For a writer whose work may lag (the
    /// dispatcher), so that in a burst of callbacks the inbox writer, for which every callback's
    /// answer waits, is not kept waiting for SQLite's one write turn at each batch. At once on
    /// PostgreSQL, where writers do not wait for one another.
    pub async fn inbox_lull(&self, within: Duration) -> bool {
        if matches!(self.pool, Pool::Postgres(_)) {
            return true;
        }
        let gate = &self.write_gate;
        let lull = gate.inbox_lull.notified();
        tokio::pin!(lull);
        // Registered before the check: a lull between the two still wakes us.
        lull.as_mut().enable();
        if !gate.inbox_busy.load(Ordering::Relaxed) {
            return true;
        }
        tokio::time::timeout(within, lull).await.is_ok()
    }

    pub async fn begin(&self) -> Result<Tx> {
        let gate = self.write_turn().await;
        let inner = match &self.pool {
            Pool::Sqlite(pool) => TxInner::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => TxInner::Postgres(pool.begin().await?),
        };
        Ok(Tx {
            inner,
            _gate: gate,
            signals: self.signals.clone(),
            wake_jobs: false,
            wake_inbox: false,
        })
    }

    pub fn signals(&self) -> &Arc<Signals> {
        &self.signals
    }

    /// `SELECT 1`, for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Runs a `SELECT status, COUNT(*) ... GROUP BY status` and answers a count for every one
    /// of `all`, zero for those with no rows.
    pub(crate) async fn count_by_status<T: Copy>(
        &self,
        sql: &'static str,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> Result<Vec<(T, i64)>> {
        let rows: Vec<(String, i64)> =
            with_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(all
            .iter()
            .map(|&st| {
                let n = rows
                    .iter()
                    .find(|(s, _)| s == name(st))
                    .map_or(0, |(_, n)| *n);
                (st, n)
            })
            .collect())
    }

    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await);
        if let Some(inbox) = &self.inbox_connection {
            inbox.close().await;
        }
    }

    /// SQLite: the inbox writer's connection.
    pub(crate) fn inbox_connection(&self) -> Option<&sqlite::InboxConnection> {
        self.inbox_connection.as_deref()
    }

    pub(crate) fn pg_pool(&self) -> Option<&PgPool> {
        match &self.pool {
            Pool::Postgres(pool) => Some(pool),
            Pool::Sqlite(_) => None,
        }
    }
}

impl Tx {
    /// The backend the transaction runs on (for statements that differ between the two).
    pub fn kind(&self) -> DbKind {
        match self.inner {
            TxInner::Sqlite(_) => DbKind::Sqlite,
            TxInner::Postgres(_) => DbKind::Postgres,
        }
    }

    /// Commits, then wakes this process's workers for the work the transaction added.
    pub async fn commit(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(t) => t.commit().await?,
            TxInner::Postgres(t) => t.commit().await?,
        }
        if self.wake_jobs {
            self.signals.jobs.notify_waiters();
        }
        if self.wake_inbox {
            self.signals.inbox.notify_waiters();
        }
        Ok(())
    }

    pub(crate) fn wake_jobs_on_commit(&mut self) {
        self.wake_jobs = true;
    }

    pub(crate) fn wake_inbox_on_commit(&mut self) {
        self.wake_inbox = true;
    }

    pub async fn rollback(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(t) => t.rollback().await?,
            TxInner::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

pub(crate) fn acquire_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Reads a stored enum; an unknown value is corrupt data, named with its column.
pub(crate) fn stored<T>(column: &str, value: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    parse(value)
        .ok_or_else(|| StoreError::Corrupt(format!("{column} has an unknown value {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    /// A store on a SQLite file in a directory of its own, removed when the directory is dropped.
    async fn sqlite_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&DatabaseSettings {
            url: Secret::new(format!("sqlite://{}/gate.db", dir.path().display())),
            max_connections: 2,
            ..DatabaseSettings::default()
        })
        .await
        .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_lull_comes_at_once_when_callbacks_do_not_keep_the_inbox_writer_busy() {
        let (_dir, store) = sqlite_store().await;
        assert!(store.inbox_lull(Duration::from_secs(3600)).await);
        store.set_inbox_busy(true);
        store.set_inbox_busy(false);
        assert!(store.inbox_lull(Duration::from_secs(3600)).await);
        store.close().await;
    }

    #[tokio::test]
    async fn a_writer_waiting_for_a_lull_goes_on_when_the_inbox_writer_is_no_longer_busy() {
        let (_dir, store) = sqlite_store().await;
        store.set_inbox_busy(true);
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.inbox_lull(Duration::from_secs(3600)).await }
        });
        // Still busy after the waiter has had every chance to run: it keeps waiting.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        store.set_inbox_busy(false);
        assert!(waiting.await.unwrap(), "woken by the lull, not by the time");
        store.close().await;
    }

    #[tokio::test]
    async fn a_panic_on_the_inbox_writers_connection_fails_that_work_alone() {
        let (_dir, store) = sqlite_store().await;
        let inbox = store.inbox_connection().expect("SQLite has one");
        let failed = inbox
            .run(|_| -> Result<()> { panic!("a batch that panics, on purpose") })
            .await;
        assert!(
            matches!(failed, Err(StoreError::InboxWriter(_))),
            "{failed:?}"
        );
        let next: i64 = inbox
            .run(|conn| Ok(conn.query_row("SELECT 41 + 1", [], |row| row.get(0))?))
            .await
            .expect("the connection still takes work");
        assert_eq!(next, 42);
        store.close().await;
    }

    #[tokio::test]
    async fn a_writer_waits_for_a_lull_no_longer_than_it_was_told() {
        let (_dir, store) = sqlite_store().await;
        store.set_inbox_busy(true);
        // Paused once connected: the clock moves only when every task waits for it.
        tokio::time::pause();
        let started = tokio::time::Instant::now();
        assert!(!store.inbox_lull(Duration::from_millis(20)).await);
        // The timer's millisecond granularity may add one.
        let waited = started.elapsed();
        assert!(
            (Duration::from_millis(20)..Duration::from_millis(22)).contains(&waited),
            "{waited:?}"
        );
        tokio::time::resume();
        store.close().await;
    }
}
