//! Retention: every hour, what siyu has finished with is deleted after `retention.*_days`, in
//! batches of `retention.batch` rows, each its own short statement (on SQLite it waits its turn
//! like any write and holds the lock for one batch only, so callbacks commit in between).
//! Activity, tier and segment history, the audit log and campaign results are never pruned. The
//! corp-wide log of app messages per member (PostgreSQL) goes once past the hour it counts in.

use std::collections::BTreeMap;

use super::{AppError, Registrar, Services};
use crate::store::retention::PRUNED;

pub const PRUNE_JOB: &str = "retention.prune";
const DAY_MS: i64 = 86_400_000;

/// Prunes everything due now; answers how many rows of each went.
pub async fn prune(s: &Services) -> Result<BTreeMap<&'static str, u64>, AppError> {
    let r = &s.settings.retention;
    let now = s.clock.now_ms();
    let batch = i64::from(r.batch.max(1));
    let mut pruned = BTreeMap::new();
    for what in PRUNED {
        let days = match what {
            "inbox" => r.inbox_days,
            "jobs" => r.jobs_days,
            "sessions" => r.sessions_days,
            // A table the store prunes that has no setting here is left alone, not given
            // another table's age.
            other => {
                tracing::warn!(table = other, "retention: no age is configured; not pruned");
                continue;
            }
        };
        let before = now - i64::try_from(days).unwrap_or(i64::MAX / DAY_MS) * DAY_MS;
        let total = in_batches(batch, || s.store.prune_batch(what, before, batch)).await?;
        pruned.insert(what, total);
    }
    // The corp-wide log of app messages (PostgreSQL) counts for an hour, on the database's
    // clock; older rows are of no use.
    let total = in_batches(batch, || s.store.prune_app_message_ledger(batch)).await?;
    pruned.insert("app_message_ledger", total);
    Ok(pruned)
}

/// Runs `prune` (deleting at most `batch` rows) until a batch comes back short; answers how many
/// rows went in all.
async fn in_batches<F, Fut>(batch: i64, mut prune: F) -> Result<u64, AppError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, crate::store::StoreError>>,
{
    let mut total = 0;
    loop {
        let n = prune().await?;
        total += n;
        if n < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(total);
        }
        // Between batches, whatever waits for the database goes first.
        tokio::task::yield_now().await;
    }
}

pub fn register(services: &Services, r: &mut Registrar) {
    let s = services.clone();
    r.jobs.register(PRUNE_JOB, move |_ctx| {
        let s = s.clone();
        async move {
            let pruned = prune(&s).await?;
            tracing::info!(?pruned, "retention: finished rows pruned");
            Ok(())
        }
    });
    r.recurring.push(crate::jobs::scheduler::Recurring {
        name: "retention".into(),
        cron: "17 * * * *".into(),
        job_kind: PRUNE_JOB.into(),
        payload: serde_json::Value::Null,
    });
}
