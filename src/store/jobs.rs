//! The job table: one row per unit of outbound work, unique by idempotency key, claimed under a
//! lease, retried with a backoff kept in the row.

use serde::Serialize;
use sqlx::Row;

use super::json_rows::{self, Field};
use super::{Pool, Result, Store, StoreError, Tx, stored, with_pool, with_tx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for JobState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: String,
    pub idempotency_key: String,
    pub run_at: i64,
    pub max_attempts: i64,
    pub priority: i64,
}

#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub idempotency_key: String,
    /// Counting this one.
    pub attempts: i64,
    pub max_attempts: i64,
    /// When it was due (Unix ms): how long it waited to be claimed is the queue's lag.
    pub run_at: i64,
    /// What an earlier attempt of a send recorded before calling WeCom (see
    /// [`Store::record_job_ledger`]).
    pub ledger: Option<String>,
}

/// A job as the queue holds it (`GET /api/v1/jobs`), named after its columns.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobRecord {
    pub id: i64,
    pub kind: String,
    pub idempotency_key: String,
    pub state: JobState,
    /// Higher runs first among due jobs.
    pub priority: i64,
    /// When it is (or was) due, Unix ms.
    pub run_at: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    /// The last failed attempt's reason (kept until an attempt succeeds).
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// A send job's ledger (the exact body it sent): not shown through the API, where the
    /// message texts and their recipients have no business.
    #[serde(skip)]
    pub ledger: Option<String>,
}

/// Which jobs `GET /api/v1/jobs` lists: newest first, `before` an id for the next page.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub before: Option<i64>,
    pub limit: i64,
}

const JOB_COLUMNS: &str = "id, kind, idempotency_key, state, priority, run_at, attempts, max_attempts, \
     last_error, created_at, updated_at, ledger";

macro_rules! job_from_row {
    ($r:expr) => {{
        let r = $r;
        Ok::<JobRecord, StoreError>(JobRecord {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            idempotency_key: r.try_get("idempotency_key")?,
            state: stored(
                "jobs.state",
                &r.try_get::<String, _>("state")?,
                JobState::parse,
            )?,
            priority: r.try_get("priority")?,
            run_at: r.try_get("run_at")?,
            attempts: r.try_get("attempts")?,
            max_attempts: r.try_get("max_attempts")?,
            last_error: r.try_get("last_error")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            ledger: r.try_get("ledger")?,
        })
    }};
}

const CLAIM_SQLITE: &str = "UPDATE jobs
    SET state = 'running', attempts = attempts + 1, lease_until = $1, worker = $2, updated_at = $3
    WHERE id IN (
        SELECT id FROM jobs WHERE state = 'queued' AND run_at <= $3 AND priority >= $5
        ORDER BY priority DESC, run_at, id LIMIT $4)
    RETURNING id, kind, payload, idempotency_key, attempts, max_attempts, run_at, ledger";

const CLAIM_POSTGRES: &str = "UPDATE jobs
    SET state = 'running', attempts = attempts + 1, lease_until = $1, worker = $2, updated_at = $3
    WHERE id IN (
        SELECT id FROM jobs WHERE state = 'queued' AND run_at <= $3 AND priority >= $5
        ORDER BY priority DESC, run_at, id LIMIT $4
        FOR UPDATE SKIP LOCKED)
    RETURNING id, kind, payload, idempotency_key, attempts, max_attempts, run_at, ledger";

/// Adds a job inside the caller's transaction. Returns its id, or `None` when a job with the same
/// idempotency key exists (in any state): the work was decided before and is not done twice.
pub async fn enqueue(tx: &mut Tx, job: &NewJob, now: i64) -> Result<Option<i64>> {
    let id: Option<i64> = with_tx!(tx, |conn| {
        sqlx::query_scalar(
            "INSERT INTO jobs (kind, payload, idempotency_key, run_at, max_attempts, created_at, updated_at, priority)
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING id",
        )
        .bind(&job.kind)
        .bind(&job.payload)
        .bind(&job.idempotency_key)
        .bind(job.run_at)
        .bind(job.max_attempts)
        .bind(now)
        .bind(job.priority)
        .fetch_optional(&mut *conn)
        .await?
    });
    if id.is_some() {
        wake_workers_on_commit(tx).await?;
    }
    Ok(id)
}

/// [`enqueue`] for many jobs in one statement: answers how many were new (the others'
/// idempotency keys were used before).
pub async fn enqueue_all(tx: &mut Tx, jobs: &[NewJob], now: i64) -> Result<u64> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let rows: Vec<_> = jobs
        .iter()
        .map(|j| {
            (
                &j.kind,
                &j.payload,
                &j.idempotency_key,
                j.run_at,
                j.max_attempts,
                now,
                j.priority,
            )
        })
        .collect();
    // `WHERE true`: SQLite reads an `ON CONFLICT` after a bare `SELECT … FROM` as a join's.
    let stored = json_rows::execute(
        tx,
        |rows| {
            format!(
                "INSERT INTO jobs (kind, payload, idempotency_key, run_at, max_attempts, created_at, updated_at, priority)
                 SELECT kind, payload, idempotency_key, run_at, max_attempts, created_at, created_at, priority
                 FROM ({rows}) AS v WHERE true
                 ON CONFLICT (idempotency_key) DO NOTHING"
            )
        },
        &[
            Field::Text("kind"),
            Field::Text("payload"),
            Field::Text("idempotency_key"),
            Field::Int("run_at"),
            Field::Int("max_attempts"),
            Field::Int("created_at"),
            Field::Int("priority"),
        ],
        &rows,
    )
    .await?;
    if stored > 0 {
        wake_workers_on_commit(tx).await?;
    }
    Ok(stored)
}

/// Wakes the workers of this process and, on PostgreSQL, of every replica once `tx` commits
/// (they may be asleep until their next poll or the next due job).
async fn wake_workers_on_commit(tx: &mut Tx) -> Result<()> {
    tx.wake_jobs_on_commit();
    if let super::TxInner::Postgres(t) = &mut tx.inner {
        // Delivered at commit, so no worker wakes for a job that was rolled back.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(super::postgres::JOBS_CHANNEL)
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}

/// Puts a `failed` job back in the queue, due now, with its attempts count reset so it gets its
/// full retries again. Its idempotency key and its ledger stay: a send job's next attempt reads
/// the ledger and looks before it sends again, so a retry never sends twice. Its last error
/// stays visible until an attempt replaces or clears it. False when the job is not `failed`
/// (or does not exist).
pub async fn retry_failed_job(tx: &mut Tx, id: i64, now: i64) -> Result<bool> {
    let n = with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = $1, attempts = 0, lease_until = NULL,
                 worker = NULL, updated_at = $1
             WHERE id = $2 AND state = 'failed'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    if n == 1 {
        wake_workers_on_commit(tx).await?;
    }
    Ok(n == 1)
}

impl Store {
    /// Claims up to `limit` due jobs of at least `min_priority` for `worker`, highest priority
    /// first, through the `jobs_queued` index. Jobs whose worker died come back through
    /// [`Store::reclaim_expired_jobs`].
    pub async fn claim_jobs(
        &self,
        worker: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
        min_priority: i64,
    ) -> Result<Vec<ClaimedJob>> {
        let _turn = self.write_turn().await;
        let jobs = with_pool!(self, |pool| {
            let sql = match self.pool {
                Pool::Sqlite(_) => CLAIM_SQLITE,
                Pool::Postgres(_) => CLAIM_POSTGRES,
            };
            let rows = sqlx::query(sql)
                .bind(now + lease_ms)
                .bind(worker)
                .bind(now)
                .bind(limit)
                .bind(min_priority)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(ClaimedJob {
                        id: r.try_get("id")?,
                        kind: r.try_get("kind")?,
                        payload: r.try_get("payload")?,
                        idempotency_key: r.try_get("idempotency_key")?,
                        attempts: r.try_get("attempts")?,
                        max_attempts: r.try_get("max_attempts")?,
                        run_at: r.try_get("run_at")?,
                        ledger: r.try_get("ledger")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(jobs)
    }

    /// Puts running jobs whose lease ran out (their worker died) back in the queue, due now.
    /// The interrupted attempt counts. Returns how many.
    pub async fn reclaim_expired_jobs(&self, now: i64) -> Result<u64> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE jobs SET state = 'queued', lease_until = NULL, worker = NULL, run_at = $1,
                     updated_at = $1
                 WHERE state = 'running' AND lease_until < $1",
            )
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n)
    }

    /// Records a send job's ledger durably, before the send it describes: false when this worker
    /// no longer holds the job (then it must not send).
    pub async fn record_job_ledger(&self, id: i64, worker: &str, ledger: &str) -> Result<bool> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE jobs SET ledger = $1 WHERE id = $2 AND worker = $3 AND state = 'running'",
            )
            .bind(ledger)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Extends the lease of a job this worker still holds; false when it lost it.
    pub async fn renew_job_lease(&self, id: i64, worker: &str, lease_until: i64) -> Result<bool> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND worker = $3 AND state = 'running'",
            )
            .bind(lease_until)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    pub async fn complete_job(&self, id: i64, worker: &str, now: i64) -> Result<bool> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE jobs SET state = 'done', lease_until = NULL, last_error = NULL, updated_at = $1
                 WHERE id = $2 AND worker = $3 AND state = 'running'",
            )
            .bind(now)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Records a failed attempt: back to `queued` at `retry_at`, or `failed` for good when
    /// `retry_at` is `None`.
    pub async fn fail_job(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<bool> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE jobs
                 SET state = CASE WHEN $1 IS NULL THEN 'failed' ELSE 'queued' END,
                     run_at = COALESCE($1, run_at), last_error = $2, lease_until = NULL,
                     updated_at = $3
                 WHERE id = $4 AND worker = $5 AND state = 'running'",
            )
            .bind(retry_at)
            .bind(error)
            .bind(now)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Puts a running job back in the queue until `run_at` without counting the attempt (it
    /// waited its turn; nothing failed).
    pub async fn defer_job(&self, id: i64, worker: &str, run_at: i64, now: i64) -> Result<bool> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE jobs SET state = 'queued', run_at = $1, lease_until = NULL, worker = NULL,
                     attempts = attempts - 1, updated_at = $2
                 WHERE id = $3 AND worker = $4 AND state = 'running'",
            )
            .bind(run_at)
            .bind(now)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Hands back the jobs held by the workers whose id starts with `worker_prefix` (a stopping
    /// process), without counting the interrupted attempt.
    pub async fn release_jobs(&self, worker_prefix: &str, now: i64) -> Result<u64> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE jobs SET state = 'queued', lease_until = NULL, worker = NULL,
                     attempts = attempts - 1, updated_at = $1
                 WHERE worker LIKE $2 AND state = 'running'",
            )
            .bind(now)
            .bind(format!("{worker_prefix}%"))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n)
    }

    pub async fn count_jobs_by_state(&self) -> Result<Vec<(JobState, i64)>> {
        self.count_by_status(
            "SELECT state, COUNT(*) FROM jobs GROUP BY state",
            &JobState::ALL,
            JobState::as_str,
        )
        .await
    }

    pub async fn job_by_key(&self, idempotency_key: &str) -> Result<Option<JobRecord>> {
        Ok(self.list_jobs(None, Some(idempotency_key)).await?.pop())
    }

    pub async fn jobs_of_kind(&self, kind: &str) -> Result<Vec<JobRecord>> {
        self.list_jobs(Some(kind), None).await
    }

    async fn list_jobs(&self, kind: Option<&str>, key: Option<&str>) -> Result<Vec<JobRecord>> {
        let jobs = with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR idempotency_key = $2)
                 ORDER BY id"
            )))
            .bind(kind)
            .bind(key)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| job_from_row!(r))
                .collect::<Result<Vec<_>>>()?
        });
        Ok(jobs)
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobRecord>> {
        let job = with_pool!(self, |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            row.map(|r| job_from_row!(&r)).transpose()?
        });
        Ok(job)
    }

    /// Jobs matching `filter`, newest (highest id) first.
    pub async fn jobs_page(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let jobs = with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR kind = $2)
                   AND ($3 IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT $4"
            )))
            .bind(filter.state.map(JobState::as_str))
            .bind(filter.kind.as_deref())
            .bind(filter.before)
            .bind(filter.limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| job_from_row!(r))
                .collect::<Result<Vec<_>>>()?
        });
        Ok(jobs)
    }

    /// When the longest-waiting job that is due now became due (None: none waits).
    pub async fn oldest_due_job(&self, now: i64) -> Result<Option<i64>> {
        let oldest: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT MIN(run_at) FROM jobs WHERE state = 'queued' AND run_at <= $1",
            )
            .bind(now)
            .fetch_one(pool)
            .await?
        });
        Ok(oldest)
    }
}

impl Store {
    /// True when no job is running and none is queued and due by `now` (tests wait for this;
    /// jobs queued for later do not count).
    pub async fn jobs_idle(&self, now: i64) -> Result<bool> {
        let busy: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs
                 WHERE state = 'running' OR (state = 'queued' AND run_at <= $1)",
            )
            .bind(now)
            .fetch_one(pool)
            .await?
        });
        Ok(busy == 0)
    }
}
