//! Recurring schedules. `next_run_at` moves forward by compare-and-set, so however many
//! processes look at a due schedule, one of them enqueues its job.

use sqlx::Row;

use super::{Result, Store, Tx, with_pool, with_tx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub job_kind: String,
    pub payload: String,
    pub next_run_at: i64,
}

impl Store {
    /// Declares a schedule at start. A schedule whose definition changed gets the new one and a
    /// new `next_run_at`; an unchanged one keeps its due time, so a restart skips nothing.
    pub async fn declare_schedule(&self, s: &Schedule, now: i64) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO schedules (name, cron, timezone, job_kind, payload, next_run_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (name) DO UPDATE SET
                     cron = excluded.cron, timezone = excluded.timezone,
                     job_kind = excluded.job_kind, payload = excluded.payload,
                     next_run_at = excluded.next_run_at, updated_at = excluded.updated_at
                 WHERE schedules.cron <> excluded.cron OR schedules.timezone <> excluded.timezone
                    OR schedules.job_kind <> excluded.job_kind OR schedules.payload <> excluded.payload",
            )
            .bind(&s.name)
            .bind(&s.cron)
            .bind(&s.timezone)
            .bind(&s.job_kind)
            .bind(&s.payload)
            .bind(s.next_run_at)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn due_schedules(&self, now: i64) -> Result<Vec<Schedule>> {
        let rows = with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT name, cron, timezone, job_kind, payload, next_run_at FROM schedules
                 WHERE next_run_at <= $1 ORDER BY next_run_at",
            )
            .bind(now)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(Schedule {
                        name: r.try_get("name")?,
                        cron: r.try_get("cron")?,
                        timezone: r.try_get("timezone")?,
                        job_kind: r.try_get("job_kind")?,
                        payload: r.try_get("payload")?,
                        next_run_at: r.try_get("next_run_at")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// The earliest due time of any schedule, to know how long the scheduler may sleep.
    pub async fn next_schedule_due(&self) -> Result<Option<i64>> {
        let next: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT MIN(next_run_at) FROM schedules")
                .fetch_one(pool)
                .await?
        });
        Ok(next)
    }
}

/// Moves a schedule from the due time this process saw to the next one; false when another
/// process got there first.
pub async fn advance(
    tx: &mut Tx,
    name: &str,
    seen_due: i64,
    next_due: i64,
    now: i64,
) -> Result<bool> {
    let n = with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE schedules SET next_run_at = $1, updated_at = $2
             WHERE name = $3 AND next_run_at = $4",
        )
        .bind(next_due)
        .bind(now)
        .bind(name)
        .bind(seen_due)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}
