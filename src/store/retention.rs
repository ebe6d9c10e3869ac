//! Deleting what siyu has finished with, a batch at a time (see `app::retention`).

use super::{Result, Store, with_pool};

/// What may be pruned, each a statement deleting at most `$2` rows older than `$1`: the oldest
/// first (by id), so a batch finds its rows at the start of the table.
const PRUNE: [(&str, &str); 3] = [
    (
        "inbox",
        "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox
           WHERE status = 'done' AND processed_at < $1 ORDER BY id LIMIT $2)",
    ),
    (
        "jobs",
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs
           WHERE state = 'done' AND updated_at < $1 ORDER BY id LIMIT $2)",
    ),
    (
        "sessions",
        "DELETE FROM console_sessions WHERE id_hash IN (SELECT id_hash FROM console_sessions
           WHERE COALESCE(ended_at, last_seen_at) < $1 LIMIT $2)",
    ),
];

/// The things [`Store::prune_batch`] prunes, by name.
pub const PRUNED: [&str; 3] = [PRUNE[0].0, PRUNE[1].0, PRUNE[2].0];

impl Store {
    /// Deletes at most `batch` rows of `what` (one of [`PRUNED`]) finished before `before`;
    /// answers how many went.
    pub async fn prune_batch(&self, what: &str, before: i64, batch: i64) -> Result<u64> {
        let Some((_, sql)) = PRUNE.iter().find(|(name, _)| *name == what) else {
            return Ok(0);
        };
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query(*sql)
                .bind(before)
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n)
    }
}
