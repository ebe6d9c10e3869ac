//! The inbox: every callback WeCom delivered, stored once, then handed to a handler in order of
//! arrival.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store, StoreError, Tx, with_pool, with_tx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    /// Stored, waiting for the dispatcher.
    Pending,
    /// Claimed by a dispatcher (leased).
    Processing,
    Done,
    /// No handler exists for its kind yet; kept for `siyu events replay`.
    Unhandled,
    /// The handler failed; the error is kept.
    Failed,
}

impl InboxStatus {
    pub const ALL: [InboxStatus; 5] = [
        InboxStatus::Pending,
        InboxStatus::Processing,
        InboxStatus::Done,
        InboxStatus::Unhandled,
        InboxStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Pending => "pending",
            InboxStatus::Processing => "processing",
            InboxStatus::Done => "done",
            InboxStatus::Unhandled => "unhandled",
            InboxStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<InboxStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A decrypted callback on its way in.
#[derive(Debug, Clone)]
pub struct NewInboxEvent {
    pub dedupe_key: String,
    pub kind: String,
    pub msg_id: Option<String>,
    pub xml: String,
    pub received_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Stored(i64),
    /// WeCom delivered this event before; it is counted, not stored again.
    Duplicate(i64),
}

/// An event claimed for handling.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub id: i64,
    pub kind: String,
    pub xml: String,
    pub received_at: i64,
    pub attempts: i64,
}

/// How handling one event ended.
#[derive(Debug, Clone)]
pub struct EventOutcome {
    pub id: i64,
    pub status: InboxStatus,
    pub error: Option<String>,
}

/// The operator's view of one event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventSummary {
    pub id: i64,
    pub kind: String,
    pub received_at: i64,
    #[schema(value_type = InboxStatus)]
    pub status: String,
    pub error: Option<String>,
    pub duplicates: i64,
}

/// One stored event as `siyu soak` checks it: its key, how far it got, how many times a
/// dispatcher claimed it, and how many redeliveries were counted against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    pub dedupe_key: String,
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub duplicates: i64,
    pub error: Option<String>,
}

/// What [`Store::requeue_stuck_events`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StuckRequeue {
    /// Put back to pending.
    pub requeued: u64,
    /// Left alone: still leased by a live dispatcher.
    pub leased: u64,
    /// When the last of those leases ends (Unix ms).
    pub lease_until: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub status: Option<InboxStatus>,
}

const CLAIM_SQLITE: &str = "UPDATE inbox
    SET status = 'processing', attempts = attempts + 1, lease_until = $1
    WHERE id IN (SELECT id FROM inbox WHERE status = 'pending' ORDER BY id LIMIT $2)
    RETURNING id, kind, xml, received_at, attempts";

const CLAIM_POSTGRES: &str = "UPDATE inbox
    SET status = 'processing', attempts = attempts + 1, lease_until = $1
    WHERE id IN (
        SELECT id FROM inbox WHERE status = 'pending' ORDER BY id LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING id, kind, xml, received_at, attempts";

/// The insert of one event of a batch on SQLite, run for each in one transaction on the inbox
/// writer's own connection (no round trip per statement there), in arrival order: ids follow
/// arrival. Answers the row's id and duplicates.
const INSERT_ONE_SQLITE: &str = "INSERT INTO inbox
        (dedupe_key, kind, msg_id, xml, received_at, duplicates, status, attempts, lease_until)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT (dedupe_key) DO UPDATE SET duplicates = inbox.duplicates + 1 + excluded.duplicates
    RETURNING id, duplicates";

/// The insert of a whole batch on PostgreSQL: the events come as one JSON array of
/// `[dedupe_key, kind, msg_id, xml, received_at, duplicates]`, so the statement is the same for
/// every batch size (prepared once, and one cached statement instead of one per size: a statement
/// of 500 rows of placeholders is half a MB). Rows go in in the array's order: ids follow arrival.
const INSERT_BATCH_POSTGRES: &str = "INSERT INTO inbox
        (dedupe_key, kind, msg_id, xml, received_at, duplicates, status, attempts, lease_until)
    SELECT e ->> 0, e ->> 1, e ->> 2, e ->> 3, (e ->> 4)::bigint, (e ->> 5)::bigint, $2, $3, $4
    FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS t(e, n) ORDER BY n
    ON CONFLICT (dedupe_key) DO UPDATE SET duplicates = inbox.duplicates + 1 + excluded.duplicates
    RETURNING dedupe_key, id, duplicates";

/// The outcomes of handled events, as a JSON array of `[id, status, error]`.
const FINISH_SQLITE: &str = "UPDATE inbox
    SET status = o.value ->> 1, error = o.value ->> 2, processed_at = $1, lease_until = NULL
    FROM jsonb_each($2) AS o WHERE inbox.id = o.value ->> 0";

const FINISH_POSTGRES: &str = "UPDATE inbox
    SET status = o.e ->> 1, error = o.e ->> 2, processed_at = $1, lease_until = NULL
    FROM jsonb_array_elements($2::text::jsonb) AS o(e) WHERE inbox.id = (o.e ->> 0)::bigint";

/// Stores a batch of events with one statement, or counts each as a duplicate of the stored
/// one. Outcomes come back in the order of `events`. A key that occurs twice in one batch is a
/// duplicate the second time, as it would be across batches.
///
/// With `lease_until`, new rows are stored already claimed (`processing`) by the caller; without,
/// they are `pending` for a dispatcher to claim.
///
/// One statement is its own transaction: durable when this returns, with a single round trip to
/// the database (no BEGIN/COMMIT), which is what bounds ingest throughput on SQLite.
pub async fn insert_batch(
    store: &Store,
    events: &[&NewInboxEvent],
    lease_until: Option<i64>,
) -> Result<Vec<InsertOutcome>> {
    // First occurrence of each key in the batch, and how many times it repeats after that.
    let mut first: HashMap<&str, (usize, i64)> = HashMap::with_capacity(events.len());
    let mut unique: Vec<&NewInboxEvent> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        first
            .entry(e.dedupe_key.as_str())
            .and_modify(|(_, extra)| *extra += 1)
            .or_insert_with(|| {
                unique.push(e);
                (i, 0)
            });
    }
    if unique.is_empty() {
        return Ok(Vec::new());
    }
    // A new row starts with its in-batch repeats as duplicates; an existing one adds the
    // delivery plus the repeats. So a row is new exactly when `duplicates` equals the repeats.
    let status = if lease_until.is_some() {
        InboxStatus::Processing
    } else {
        InboxStatus::Pending
    };
    let turn = store.inbox_write_turn().await;
    let rows: Vec<(String, i64, i64)> = match store.inbox_connection() {
        Some(inbox) => {
            let rows: Vec<InboxRow> = unique
                .iter()
                .map(|e| InboxRow {
                    event: (*e).clone(),
                    repeats: first[e.dedupe_key.as_str()].1,
                })
                .collect();
            inbox
                .run(move |conn| insert_rows_sqlite(conn, rows, status, lease_until))
                .await?
        }
        None => {
            let rows: Vec<_> = unique
                .iter()
                .map(|e| {
                    (
                        &e.dedupe_key,
                        &e.kind,
                        &e.msg_id,
                        &e.xml,
                        e.received_at,
                        first[e.dedupe_key.as_str()].1,
                    )
                })
                .collect();
            let rows = serde_json::to_string(&rows)
                .map_err(|e| StoreError::Corrupt(format!("inbox batch does not serialize: {e}")))?;
            let pool = store.pg_pool().ok_or_else(|| {
                StoreError::InboxWriter("is missing: a SQLite store without one".into())
            })?;
            sqlx::query_as(INSERT_BATCH_POSTGRES)
                .bind(&rows)
                .bind(status.as_str())
                .bind(i64::from(lease_until.is_some()))
                .bind(lease_until)
                .fetch_all(pool)
                .await?
        }
    };
    drop(turn);
    let mut outcomes: Vec<Option<InsertOutcome>> = vec![None; events.len()];
    let mut stored_any = false;
    for (key, id, duplicates) in rows {
        let Some(&(index, extra)) = first.get(key.as_str()) else {
            return Err(StoreError::Corrupt(format!(
                "inbox insert returned an unknown key {key}"
            )));
        };
        let is_new = duplicates == extra;
        stored_any |= is_new;
        outcomes[index] = Some(if is_new {
            InsertOutcome::Stored(id)
        } else {
            InsertOutcome::Duplicate(id)
        });
    }
    if stored_any && lease_until.is_none() {
        store.signals().inbox.notify_waiters();
        store.notify_inbox_replicas().await?;
    }
    // Later occurrences within the batch duplicate their first.
    let mut result = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let (index, _) = first[e.dedupe_key.as_str()];
        let outcome = outcomes[index].ok_or_else(|| {
            StoreError::Corrupt(format!("inbox insert returned no row for {}", e.dedupe_key))
        })?;
        result.push(match outcome {
            InsertOutcome::Stored(id) | InsertOutcome::Duplicate(id) if i != index => {
                InsertOutcome::Duplicate(id)
            }
            other => other,
        });
    }
    Ok(result)
}

/// An event for [`insert_rows_sqlite`], with how many times it repeats later in its batch.
struct InboxRow {
    event: NewInboxEvent,
    repeats: i64,
}

/// Stores `rows` in one transaction on the inbox writer's connection: durable (with the
/// configured synchronous) when this returns. Answers each row's key, id and duplicates.
fn insert_rows_sqlite(
    conn: &mut rusqlite::Connection,
    rows: Vec<InboxRow>,
    status: InboxStatus,
    lease_until: Option<i64>,
) -> Result<Vec<(String, i64, i64)>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut stored = Vec::with_capacity(rows.len());
    {
        let mut insert = tx.prepare_cached(INSERT_ONE_SQLITE)?;
        for InboxRow { event, repeats } in rows {
            let (id, duplicates) = insert.query_row(
                rusqlite::params![
                    event.dedupe_key,
                    event.kind,
                    event.msg_id,
                    event.xml,
                    event.received_at,
                    repeats,
                    status.as_str(),
                    i64::from(lease_until.is_some()),
                    lease_until,
                ],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            stored.push((event.dedupe_key, id, duplicates));
        }
    }
    // Dropped without a commit (an error above), the transaction rolls back.
    tx.commit()?;
    Ok(stored)
}

/// Records the outcomes of handled events in `tx`, so they commit with what handling them
/// wrote. One statement for any number of events and outcomes: a statement of its own per batch
/// size would crowd the other statements out of each connection's cache.
pub async fn finish_events_in(tx: &mut Tx, outcomes: &[EventOutcome], now: i64) -> Result<()> {
    let Some(outcomes) = outcomes_json(outcomes)? else {
        return Ok(());
    };
    let sql = finish_sql(tx.kind());
    with_tx!(tx, |conn| {
        sqlx::query(sql)
            .bind(now)
            .bind(&outcomes)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// The outcomes as the finishing statement reads them; None when there are none.
fn outcomes_json(outcomes: &[EventOutcome]) -> Result<Option<String>> {
    if outcomes.is_empty() {
        return Ok(None);
    }
    let outcomes: Vec<(i64, &str, Option<&str>)> = outcomes
        .iter()
        .map(|o| (o.id, o.status.as_str(), o.error.as_deref()))
        .collect();
    serde_json::to_string(&outcomes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("event outcomes do not serialize: {e}")))
}

fn finish_sql(kind: super::DbKind) -> &'static str {
    match kind {
        super::DbKind::Sqlite => FINISH_SQLITE,
        super::DbKind::Postgres => FINISH_POSTGRES,
    }
}

impl Store {
    /// Claims up to `limit` pending events in order of arrival. (The claim reads only pending
    /// rows, through the `(status, id)` index, however large the inbox grows; expired leases are
    /// put back to pending separately by [`Store::reclaim_expired_events`].)
    pub async fn claim_inbox(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedEvent>> {
        let _turn = self.write_turn().await;
        let mut events: Vec<ClaimedEvent> = with_pool!(self, |pool| {
            let sql = if matches!(self.pool, super::Pool::Sqlite(_)) {
                CLAIM_SQLITE
            } else {
                CLAIM_POSTGRES
            };
            let rows = sqlx::query(sql)
                .bind(now + lease_ms)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(ClaimedEvent {
                        id: r.try_get("id")?,
                        kind: r.try_get("kind")?,
                        xml: r.try_get("xml")?,
                        received_at: r.try_get("received_at")?,
                        attempts: r.try_get("attempts")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?
        });
        // RETURNING gives no order; arrival order is the contract.
        events.sort_by_key(|e| e.id);
        Ok(events)
    }

    /// Puts events whose handler's lease ran out (the process died while handling them) back
    /// to pending, ahead of newer ones. Returns how many.
    pub async fn reclaim_expired_events(&self, now: i64) -> Result<u64> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE inbox SET status = 'pending', lease_until = NULL
                 WHERE status = 'processing' AND lease_until < $1",
            )
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n)
    }

    /// Records the outcomes of handled events with one statement (atomic on its own: no
    /// transaction). See [`finish_events_in`].
    pub async fn finish_events(&self, outcomes: &[EventOutcome], now: i64) -> Result<()> {
        let Some(outcomes) = outcomes_json(outcomes)? else {
            return Ok(());
        };
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query(finish_sql(self.kind()))
                .bind(now)
                .bind(&outcomes)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Newest first.
    pub async fn list_events(&self, filter: &EventFilter, limit: i64) -> Result<Vec<EventSummary>> {
        let rows = with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, kind, received_at, status, error, duplicates FROM inbox
                 WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR status = $2)
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(&filter.kind)
            .bind(filter.status.map(InboxStatus::as_str))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(EventSummary {
                        id: r.try_get("id")?,
                        kind: r.try_get("kind")?,
                        received_at: r.try_get("received_at")?,
                        status: r.try_get("status")?,
                        error: r.try_get("error")?,
                        duplicates: r.try_get("duplicates")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// Puts matching events back to `pending` so the dispatcher hands them to the (now present)
    /// handlers. Events being handled right now are left alone. Returns how many were requeued.
    pub async fn requeue_events(&self, filter: &EventFilter, id: Option<i64>) -> Result<u64> {
        if filter.status == Some(InboxStatus::Processing) {
            return Err(StoreError::Corrupt(
                "events being processed cannot be replayed".into(),
            ));
        }
        let mut tx = self.begin().await?;
        let affected = with_tx!(tx, |conn| {
            sqlx::query(
                "UPDATE inbox SET status = 'pending', error = NULL, lease_until = NULL
                 WHERE status <> 'processing' AND status <> 'pending'
                   AND ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR status = $2)
                   AND ($3 IS NULL OR id = $3)",
            )
            .bind(&filter.kind)
            .bind(filter.status.map(InboxStatus::as_str))
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        if affected > 0 {
            tx.wake_inbox_on_commit();
            notify_replicas(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(affected)
    }

    /// Takes back events stuck in `processing`: those whose lease ran out by `now` (the process
    /// that claimed them died or hangs) go back to `pending`, ahead of newer ones, and keep their
    /// attempts. Events still under a lease are being handled by a live dispatcher and are left
    /// alone: the answer counts them, with the latest lease end among them.
    pub async fn requeue_stuck_events(
        &self,
        kind: Option<&str>,
        id: Option<i64>,
        now: i64,
    ) -> Result<StuckRequeue> {
        let mut tx = self.begin().await?;
        let (requeued, leased, lease_until) = with_tx!(tx, |conn| {
            let requeued = sqlx::query(
                "UPDATE inbox SET status = 'pending', lease_until = NULL
                 WHERE status = 'processing' AND (lease_until IS NULL OR lease_until < $1)
                   AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR id = $3)",
            )
            .bind(now)
            .bind(kind)
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            let (leased, lease_until): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), MAX(lease_until) FROM inbox
                 WHERE status = 'processing'
                   AND ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR id = $2)",
            )
            .bind(kind)
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
            (requeued, leased, lease_until)
        });
        if requeued > 0 {
            tx.wake_inbox_on_commit();
            notify_replicas(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(StuckRequeue {
            requeued,
            leased: leased as u64,
            lease_until,
        })
    }

    /// True when no event waits for the dispatcher or is being handled (tests wait for this).
    pub async fn inbox_idle(&self) -> Result<bool> {
        let open: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                // Two terms, so each reads its small partial index: with `OR`, SQLite reads the
                // whole table, every stored event's XML with it.
                "SELECT (SELECT COUNT(*) FROM inbox WHERE status = 'pending')
                      + (SELECT COUNT(*) FROM inbox WHERE status = 'processing')",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(open == 0)
    }

    /// Events per status (every status present, zero when none).
    pub async fn count_events_by_status(&self) -> Result<Vec<(InboxStatus, i64)>> {
        self.count_by_status(
            "SELECT status, COUNT(*) FROM inbox GROUP BY status",
            &InboxStatus::ALL,
            InboxStatus::as_str,
        )
        .await
    }

    /// When the oldest event still waiting for a handler arrived.
    pub async fn oldest_pending_event(&self) -> Result<Option<i64>> {
        let oldest: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                // Two terms, so each reads its small partial index rather than the whole table.
                "SELECT MIN(m) FROM (
                     SELECT MIN(received_at) AS m FROM inbox WHERE status = 'pending'
                     UNION ALL
                     SELECT MIN(received_at) AS m FROM inbox WHERE status = 'processing') AS open",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(oldest)
    }

    /// The decrypted XML of the newest event of `kind` (tests replay it as WeCom's retry would).
    pub async fn inbox_xml_of_kind(&self, kind: &str) -> Result<Option<String>> {
        let xml: Option<String> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT xml FROM inbox WHERE kind = $1 ORDER BY id DESC LIMIT 1")
                .bind(kind)
                .fetch_optional(pool)
                .await?
        });
        Ok(xml)
    }

    /// Every stored event's key, status, claims and duplicates, in order of arrival (the soak
    /// checks the inbox against what was acknowledged).
    pub async fn inbox_entries(&self) -> Result<Vec<InboxEntry>> {
        let rows: Vec<(String, String, String, i64, i64, Option<String>)> = with_pool!(
            self,
            |pool| {
                sqlx::query_as(
                    "SELECT dedupe_key, kind, status, attempts, duplicates, error FROM inbox ORDER BY id",
                )
                .fetch_all(pool)
                .await?
            }
        );
        Ok(rows
            .into_iter()
            .map(
                |(dedupe_key, kind, status, attempts, duplicates, error)| InboxEntry {
                    dedupe_key,
                    kind,
                    status,
                    attempts,
                    duplicates,
                    error,
                },
            )
            .collect())
    }

    /// Every stored dedupe key with its duplicate count (tests and the benchmark check the inbox
    /// against what was acknowledged).
    pub async fn inbox_keys(&self) -> Result<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT dedupe_key, duplicates FROM inbox ORDER BY id")
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }
}

/// Wakes the dispatchers of other PostgreSQL replicas at commit. A no-op on SQLite, where other
/// processes on the same file find new events by their poll.
async fn notify_replicas(tx: &mut Tx) -> Result<()> {
    if let super::TxInner::Postgres(t) = &mut tx.inner {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(super::INBOX_CHANNEL)
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}

impl Store {
    /// [`notify_replicas`] outside a transaction.
    async fn notify_inbox_replicas(&self) -> Result<()> {
        if let Some(pool) = self.pg_pool() {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(super::INBOX_CHANNEL)
                .execute(pool)
                .await?;
        }
        Ok(())
    }
}
