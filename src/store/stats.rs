//! The dashboard's counts: adds and tier changes over time, welcome outcomes, failed jobs.
//!
//! Times are grouped into quarter-hour buckets here and into the configured zone's days and weeks
//! by the caller: every UTC offset in use is a whole number of quarter hours, so a bucket never
//! straddles a local midnight, and the SQL stays free of time-zone functions (which the two
//! backends do not share).

use super::{Pool, Result, Store, with_pool};

/// The width of the buckets the queries answer, in milliseconds.
pub const BUCKET_MS: i64 = 15 * 60 * 1000;

/// New relations of one channel within one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddsInBucket {
    pub channel: String,
    /// The bucket's start, Unix ms.
    pub at: i64,
    pub count: i64,
}

/// Tier changes from one tier to another within one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesInBucket {
    pub from_tier: String,
    pub to_tier: String,
    /// The bucket's start, Unix ms.
    pub at: i64,
    pub count: i64,
}

/// Welcome jobs finished within a window: sent (done, with a send in the ledger) and failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WelcomeCounts {
    pub sent: i64,
    pub missed: i64,
}

// The welcome job's payload names the inbox event of the add (`event_id`); jobs queued before it
// did have none and fall back to the job's own creation, a moment after the callback.
const WELCOME_LATENCIES_SQLITE: &str = "SELECT j.updated_at - COALESCE(i.received_at, j.created_at)
    FROM jobs j LEFT JOIN inbox i ON i.id = json_extract(j.payload, '$.event_id')
    WHERE j.kind = $1 AND j.state = 'done' AND j.ledger IS NOT NULL
      AND j.updated_at >= $2 AND j.updated_at < $3
    ORDER BY j.updated_at DESC LIMIT $4";

const WELCOME_LATENCIES_POSTGRES: &str =
    "SELECT j.updated_at - COALESCE(i.received_at, j.created_at)
    FROM jobs j LEFT JOIN inbox i ON i.id = CAST(CAST(j.payload AS jsonb) ->> 'event_id' AS BIGINT)
    WHERE j.kind = $1 AND j.state = 'done' AND j.ledger IS NOT NULL
      AND j.updated_at >= $2 AND j.updated_at < $3
    ORDER BY j.updated_at DESC LIMIT $4";

impl Store {
    /// Relations added in `[since, until)` per channel and bucket (a relation's add time is
    /// WeCom's `createtime` of the follow).
    pub async fn adds_per_channel(&self, since: i64, until: i64) -> Result<Vec<AddsInBucket>> {
        let rows: Vec<(String, i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT channel, added_at / 900000, COUNT(*) FROM follows
                 WHERE added_at >= $1 AND added_at < $2
                 GROUP BY channel, added_at / 900000",
            )
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(channel, bucket, count)| AddsInBucket {
                channel,
                at: bucket * BUCKET_MS,
                count,
            })
            .collect())
    }

    /// Tier changes in `[since, until)` per (from, to) and bucket.
    pub async fn tier_changes_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<ChangesInBucket>> {
        let rows: Vec<(String, String, i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT from_tier, to_tier, at / 900000, COUNT(*) FROM tier_history
                 WHERE at >= $1 AND at < $2
                 GROUP BY from_tier, to_tier, at / 900000",
            )
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(from_tier, to_tier, bucket, count)| ChangesInBucket {
                from_tier,
                to_tier,
                at: bucket * BUCKET_MS,
                count,
            })
            .collect())
    }

    /// Jobs of `kind` (the welcome's) that finished in `[since, until)`: those done after a send
    /// (a done job with no ledger sent nothing: its channel's welcome was gone by then) and those
    /// that failed for good.
    pub async fn welcome_counts(
        &self,
        kind: &str,
        since: i64,
        until: i64,
    ) -> Result<WelcomeCounts> {
        let (sent, missed): (i64, i64) = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT COUNT(CASE WHEN state = 'done' AND ledger IS NOT NULL THEN 1 END),
                        COUNT(CASE WHEN state = 'failed' THEN 1 END)
                 FROM jobs WHERE kind = $1 AND updated_at >= $2 AND updated_at < $3",
            )
            .bind(kind)
            .bind(since)
            .bind(until)
            .fetch_one(pool)
            .await?
        });
        Ok(WelcomeCounts { sent, missed })
    }

    /// The latencies (ms) of the latest `limit` welcomes sent in `[since, until)`: from the add
    /// callback's arrival to the welcome job's completion (the send, then recording the customer:
    /// an upper bound of the send by a few milliseconds).
    pub async fn welcome_latencies(
        &self,
        kind: &str,
        since: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<i64>> {
        let sql = match self.pool {
            Pool::Sqlite(_) => WELCOME_LATENCIES_SQLITE,
            Pool::Postgres(_) => WELCOME_LATENCIES_POSTGRES,
        };
        let rows: Vec<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(sql)
                .bind(kind)
                .bind(since)
                .bind(until)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Jobs that failed for good since `since`.
    pub async fn failed_jobs_since(&self, since: i64) -> Result<i64> {
        let n: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE state = 'failed' AND updated_at >= $1",
            )
            .bind(since)
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }
}
