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
//! No connection checkpoints the WAL itself: a checkpoint copies the WAL into the database file
//! and syncs it, a pause of milliseconds (tens, after a large transaction) that the committing
//! writer would wait for, holding up every callback of an inbox batch or the next lot of a tier
//! evaluation. Checkpoints run beside the writers instead: [`checkpoint_after_commits`], woken by
//! the commits of every connection, the inbox writer's among them.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

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

/// The general pool, and the inbox writer's own connection.
pub(super) async fn connect(settings: &DatabaseSettings) -> Result<(SqlitePool, InboxConnection)> {
    turn_off_memory_statistics();
    let options = SqliteConnectOptions::from_str(settings.url.expose())
        .map_err(|e| StoreError::Url(e.to_string()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        // Statement journals (an upsert of many rows needs one) in memory, not in temp files.
        .pragma("temp_store", "memory")
        .pragma("wal_autocheckpoint", "0");
    let committed = Arc::new(Notify::new());
    let pool = SqlitePoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(super::acquire_timeout())
        .after_connect(wake_on_commit(&committed))
        .connect_with(options.clone())
        .await?;
    // Opened after the pool, which created the file and put it in WAL mode.
    let synchronous = match settings.sqlite_synchronous.as_str() {
        "normal" => "NORMAL",
        _ => "FULL",
    };
    let inbox = InboxConnection::open(
        options.get_filename().to_path_buf(),
        synchronous,
        committed.clone(),
    )
    .await?;
    tokio::spawn(checkpoint_after_commits(pool.clone(), committed));
    Ok((pool, inbox))
}

/// How long a connection waits for another process's write to end before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Work for the inbox writer's connection, run on its thread.
type InboxWork = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// The inbox writer's connection: rusqlite on a thread of its own, given each batch as one
/// closure. Through sqlx, a batch was a hop to the connection's thread for the statement and a
/// hop back for every row it returned, while the callbacks of the batch waited; here it is one
/// hop each way, and a prepared insert per event with nothing to encode or parse in between.
pub(crate) struct InboxConnection {
    /// Taken by [`InboxConnection::close`]; the thread ends when it is gone.
    work: std::sync::Mutex<Option<std::sync::mpsc::Sender<InboxWork>>>,
    /// Fired by the thread once the connection is closed.
    closed: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl InboxConnection {
    /// Opens the connection on its thread (`synchronous` is `FULL` or `NORMAL`); every batch run
    /// on it wakes the checkpointer.
    async fn open(
        file: std::path::PathBuf,
        synchronous: &'static str,
        committed: Arc<Notify>,
    ) -> Result<InboxConnection> {
        let (work, queue) = std::sync::mpsc::channel::<InboxWork>();
        let (opened, open_result) = tokio::sync::oneshot::channel();
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("siyu-inbox-writer".into())
            .spawn(move || {
                let mut conn = match open_inbox_connection(&file, synchronous) {
                    Ok(conn) => {
                        let _ = opened.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = opened.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    // A job that panics fails alone (its caller hears that the writer stopped,
                    // and its transaction rolls back as it unwinds); the next batch still runs.
                    let _ =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
                    // Each job is an inbox batch, one commit (a commit hook would need
                    // rusqlite's hooks feature).
                    committed.notify_one();
                }
                drop(conn);
                let _ = closed_tx.send(());
            })
            .map_err(|e| StoreError::InboxWriter(format!("did not start: {e}")))?;
        open_result
            .await
            .map_err(|_| StoreError::InboxWriter("did not start".into()))??;
        Ok(InboxConnection {
            work: std::sync::Mutex::new(Some(work)),
            closed: tokio::sync::Mutex::new(Some(closed)),
        })
    }

    /// Runs `f` on the connection's thread and answers what it returned.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: InboxWork = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        let sent = match &*self.work.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(work) => work.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::InboxWriter("is closed".into()));
        }
        answer
            .await
            .map_err(|_| StoreError::InboxWriter("stopped".into()))?
    }

    /// Lets the thread finish the work it was given, then waits for it to close the connection.
    pub(crate) async fn close(&self) {
        drop(self.work.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(closed) = self.closed.lock().await.take() {
            let _ = closed.await;
        }
    }
}

fn open_inbox_connection(
    file: &std::path::Path,
    synchronous: &str,
) -> Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA wal_autocheckpoint = 0;
         PRAGMA temp_store = memory; PRAGMA foreign_keys = ON;"
    ))?;
    Ok(conn)
}

/// An `after_connect` hook: every commit of the connection wakes the checkpointer.
fn wake_on_commit(
    committed: &Arc<Notify>,
) -> impl Fn(
    &mut sqlx::SqliteConnection,
    sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, std::result::Result<(), sqlx::Error>>
+ Send
+ Sync
+ 'static {
    let committed = committed.clone();
    move |conn, _| {
        let committed = committed.clone();
        Box::pin(async move {
            // Called inside SQLite's commit: it may only wake the checkpointer.
            conn.lock_handle().await?.set_commit_hook(move || {
                committed.notify_one();
                true
            });
            Ok(())
        })
    }
}

/// The least time between two checkpoints of [`checkpoint_after_commits`]: under a stream of
/// commits each one copies what the WAL gathered meanwhile (SQLite's own would run every 1000
/// pages), and a lone commit is checkpointed soon after it.
const CHECKPOINT_SPACING: Duration = Duration::from_millis(250);

/// Copies the WAL into the database file after the commits of every connection, the inbox
/// writer's too (woken by their commit hooks; nothing runs while nobody writes), until the pool
/// closes. `PASSIVE`: it takes no
/// write turn, and copies what no reader still needs (a long read holds the rest back, and a
/// later checkpoint takes it).
async fn checkpoint_after_commits(pool: SqlitePool, committed: Arc<Notify>) {
    let mut closed = pool.close_event();
    let work = async {
        loop {
            committed.notified().await;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "WAL checkpoint failed; the next one catches up");
            }
            tokio::time::sleep(CHECKPOINT_SPACING).await;
        }
    };
    let _ = closed.do_until(work).await;
}

impl Store {
    /// Copies the whole WAL into the database file, waiting for a checkpoint under way beside
    /// the writers and for readers, then empties it: for a benchmark, so that no checkpoint falls
    /// into what it times. A no-op on PostgreSQL.
    pub async fn checkpoint_wal_whole(&self) -> Result<()> {
        if let super::Pool::Sqlite(pool) = &self.pool {
            // A checkpoint beside the writers ends within seconds; a reader that never lets go
            // would keep this one busy for ever, so it gives up after a minute.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let (busy, _, _): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                        .fetch_one(pool)
                        .await?;
                if busy == 0 {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(StoreError::Corrupt(
                        "the WAL checkpoint stayed busy for a minute: a reader holds the WAL"
                            .into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}
