//! The inbox: every callback WeCom delivered, stored once, then handed to a handler in order of
//! arrival.

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store, StoreError, Tx, with_pool, with_tx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

/// The operator's view of one event.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: i64,
    pub kind: String,
    pub received_at: i64,
    pub status: String,
    pub error: Option<String>,
    pub duplicates: i64,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub status: Option<InboxStatus>,
}

const UPSERT: &str = "INSERT INTO inbox (dedupe_key, kind, msg_id, xml, received_at)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (dedupe_key) DO UPDATE SET duplicates = inbox.duplicates + 1
    RETURNING id, duplicates";

const CLAIM_SQLITE: &str = "UPDATE inbox
    SET status = 'processing', attempts = attempts + 1, lease_until = $1
    WHERE id IN (
        SELECT id FROM inbox
        WHERE status = 'pending' OR (status = 'processing' AND lease_until < $2)
        ORDER BY id LIMIT $3)
    RETURNING id, kind, xml, received_at, attempts";

const CLAIM_POSTGRES: &str = "UPDATE inbox
    SET status = 'processing', attempts = attempts + 1, lease_until = $1
    WHERE id IN (
        SELECT id FROM inbox
        WHERE status = 'pending' OR (status = 'processing' AND lease_until < $2)
        ORDER BY id LIMIT $3
        FOR UPDATE SKIP LOCKED)
    RETURNING id, kind, xml, received_at, attempts";

/// Stores each event in `tx`, or counts it as a duplicate of the stored one. A key that occurs
/// twice in one batch is a duplicate the second time, as it would be across batches.
pub async fn insert(tx: &mut Tx, event: &NewInboxEvent) -> Result<InsertOutcome> {
    let (id, duplicates): (i64, i64) = with_tx!(tx, |conn| {
        let row = sqlx::query(UPSERT)
            .bind(&event.dedupe_key)
            .bind(&event.kind)
            .bind(&event.msg_id)
            .bind(&event.xml)
            .bind(event.received_at)
            .fetch_one(&mut *conn)
            .await?;
        (row.try_get("id")?, row.try_get("duplicates")?)
    });
    Ok(if duplicates == 0 {
        tx.wake_inbox_on_commit();
        InsertOutcome::Stored(id)
    } else {
        InsertOutcome::Duplicate(id)
    })
}

impl Store {
    /// Claims up to `limit` events in order of arrival: pending ones, and those whose handler's
    /// lease ran out (a process died while handling them).
    pub async fn claim_inbox(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedEvent>> {
        let mut events: Vec<ClaimedEvent> = with_pool!(self, |pool| {
            let sql = if matches!(self.pool, super::Pool::Sqlite(_)) {
                CLAIM_SQLITE
            } else {
                CLAIM_POSTGRES
            };
            let rows = sqlx::query(sql)
                .bind(now + lease_ms)
                .bind(now)
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

    /// Records the outcome of handling a claimed event.
    pub async fn finish_inbox(
        &self,
        id: i64,
        status: InboxStatus,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE inbox SET status = $1, error = $2, processed_at = $3, lease_until = NULL
                 WHERE id = $4",
            )
            .bind(status.as_str())
            .bind(error)
            .bind(now)
            .bind(id)
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
        let affected = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE inbox SET status = 'pending', error = NULL, lease_until = NULL
                 WHERE status <> 'processing' AND status <> 'pending'
                   AND ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR status = $2)
                   AND ($3 IS NULL OR id = $3)",
            )
            .bind(&filter.kind)
            .bind(filter.status.map(InboxStatus::as_str))
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(affected)
    }

    /// Events per status (every status present, zero when none).
    pub async fn count_events_by_status(&self) -> Result<Vec<(InboxStatus, i64)>> {
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT status, COUNT(*) FROM inbox GROUP BY status")
                .fetch_all(pool)
                .await?
        });
        Ok(InboxStatus::ALL
            .into_iter()
            .map(|st| {
                let n = rows
                    .iter()
                    .find(|(s, _)| s == st.as_str())
                    .map_or(0, |(_, n)| *n);
                (st, n)
            })
            .collect())
    }

    /// When the oldest event still waiting for a handler arrived.
    pub async fn oldest_pending_event(&self) -> Result<Option<i64>> {
        let oldest: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT MIN(received_at) FROM inbox WHERE status IN ('pending', 'processing')",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(oldest)
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
pub async fn notify_replicas(tx: &mut Tx) -> Result<()> {
    if let super::TxInner::Postgres(t) = &mut tx.inner {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(super::INBOX_CHANNEL)
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}
