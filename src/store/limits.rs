//! What the PostgreSQL replicas share to stay within WeCom's per-corp limits (the rules are in
//! `wecom::client::limit`, which asks here): each API path's corp-wide slots (its pace, its hourly
//! budget, its pause after a 45009), the log of app messages to each member, and locks that make
//! a piece of work one at a time across replicas. SQLite has one process: there all of this lives
//! in memory, [`Store::corp_limits`] is `None` and [`Store::corp_lock`] holds nothing.
//!
//! Times are the database's clock (`siyu_now_us()`, migration 0012), so the replicas agree on one
//! clock whatever their hosts say, and the application clock that tests and the demo move forward
//! never reaches real pacing.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};

use super::{Result, Store};

/// The advisory-lock class of [`Store::corp_lock`]'s locks (the two-key form, a key space of
/// its own apart from the single-key locks of migrations and tokens).
const WORK_LOCKS: i32 = 0x5179_7501;
/// The advisory-lock class of the per-member app-message locks.
const MEMBER_LOCKS: i32 = 0x5179_7502;
/// How long an app message counts against its member's caps (the longer of the two windows).
const MESSAGE_LOG_SPAN: Duration = Duration::from_secs(3600);

/// The corp-wide ledger, on PostgreSQL (cheap to clone).
#[derive(Clone)]
pub struct CorpLimits {
    pool: PgPool,
}

/// What a caller asks of a path's corp-wide slots.
#[derive(Debug, Clone, Copy)]
pub struct SlotRequest {
    /// One call of the path per this, corp-wide.
    pub interval: Duration,
    /// Take the next slot only if it starts within this from now.
    pub horizon: Duration,
    pub budget: Option<HourlyBudget>,
}

/// A path's hourly budget as a token bucket (see `wecom::client::limit`).
#[derive(Debug, Clone, Copy)]
pub struct HourlyBudget {
    pub capacity: f64,
    pub per_second: f64,
    /// What the bucket must hold for this caller to take a slot (it takes one).
    pub need: f64,
}

/// The ledger's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub taken: bool,
    /// Until the slot starts: taken, call after this; not taken, ask again after this.
    pub wait: Duration,
    /// What is left of the path's pause after a 45009 (zero when none).
    pub paused: Duration,
    /// How long the hourly budget alone keeps this caller waiting (zero when it holds enough).
    pub short: Duration,
}

impl Store {
    /// The corp-wide ledger, when replicas may share this database (PostgreSQL).
    pub fn corp_limits(&self) -> Option<CorpLimits> {
        self.pg_pool().map(|pool| CorpLimits { pool: pool.clone() })
    }

    /// Holds the lock named `name` for every replica until [`CorpLock::release`] (PostgreSQL; on
    /// SQLite `None`, the caller's in-process lock being enough). It is a transaction's advisory
    /// lock: a replica that dies, even by SIGKILL, loses its connection and with it the lock.
    pub async fn corp_lock(&self, name: &str) -> Result<Option<CorpLock>> {
        let Some(pool) = self.pg_pool() else {
            return Ok(None);
        };
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(WORK_LOCKS)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        Ok(Some(CorpLock { tx }))
    }

    /// Deletes at most `batch` app-message ledger rows past the hour they count in; answers how
    /// many went (none on SQLite, which keeps the log in memory).
    pub async fn prune_app_message_ledger(&self, batch: i64) -> Result<u64> {
        let Some(pool) = self.pg_pool() else {
            return Ok(0);
        };
        let n = sqlx::query(
            "DELETE FROM app_message_ledger WHERE id IN (SELECT id FROM app_message_ledger
               WHERE sent_at_us < siyu_now_us() - $1 ORDER BY id LIMIT $2)",
        )
        .bind(micros(MESSAGE_LOG_SPAN))
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        Ok(n)
    }
}

/// A lock held for every replica (see [`Store::corp_lock`]); dropping it also frees it.
pub struct CorpLock {
    tx: Transaction<'static, Postgres>,
}

impl CorpLock {
    pub async fn release(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn duration(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

impl CorpLimits {
    /// Takes `path`'s next corp-wide slot if `request` allows it, in one statement.
    pub async fn take_slot(&self, path: &str, request: &SlotRequest) -> Result<Slot> {
        let budget = request.budget;
        let (taken, wait, paused, short): (bool, i64, i64, i64) =
            sqlx::query_as("SELECT * FROM siyu_take_api_slot($1, $2, $3, $4, $5, $6)")
                .bind(path)
                .bind(micros(request.interval))
                .bind(micros(request.horizon))
                .bind(budget.map(|b| b.capacity))
                .bind(budget.map(|b| b.per_second / 1e6))
                .bind(budget.map(|b| b.need))
                .fetch_one(&self.pool)
                .await?;
        Ok(Slot {
            taken,
            wait: duration(wait),
            paused: duration(paused),
            short: duration(short),
        })
    }

    /// WeCom answered 45009 on `path`: no replica starts a call of it for `window`.
    pub async fn pause(&self, path: &str, window: Duration) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_pace (path, next_free_us, blocked_until_us, refilled_us)
             SELECT $1, now_us, now_us + $2, now_us FROM (SELECT siyu_now_us() AS now_us) AS clock
             ON CONFLICT (path) DO UPDATE SET blocked_until_us =
                 GREATEST(api_pace.blocked_until_us, excluded.blocked_until_us)",
        )
        .bind(path)
        .bind(micros(window))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Charges one app message to each of `members` if `decide` allows it, atomically for every
    /// replica: `decide` gets, for each member, how long ago each of its messages of the last
    /// hour went (newest first; a member with none is absent). Answers `decide`'s refusal, if
    /// any, with nothing charged.
    pub async fn charge_app_messages<E>(
        &self,
        members: &[&str],
        decide: impl FnOnce(&HashMap<String, Vec<Duration>>) -> Result<(), E>,
    ) -> Result<Result<(), E>> {
        let mut tx = self.pool.begin().await?;
        // In one order, so two replicas charging overlapping members cannot deadlock.
        let mut locks: Vec<&str> = members.to_vec();
        locks.sort_unstable();
        locks.dedup();
        for member in &locks {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(MEMBER_LOCKS)
                .bind(member)
                .execute(&mut *tx)
                .await?;
        }
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT member, clock.now_us - sent_at_us
             FROM app_message_ledger, (SELECT siyu_now_us() AS now_us) AS clock
             WHERE member = ANY($1) AND sent_at_us > clock.now_us - $2
             ORDER BY member, sent_at_us DESC",
        )
        .bind(&locks)
        .bind(micros(MESSAGE_LOG_SPAN))
        .fetch_all(&mut *tx)
        .await?;
        let mut sent: HashMap<String, Vec<Duration>> = HashMap::new();
        for (member, ago) in rows {
            sent.entry(member).or_default().push(duration(ago));
        }
        if let Err(refused) = decide(&sent) {
            tx.rollback().await?;
            return Ok(Err(refused));
        }
        sqlx::query(
            "INSERT INTO app_message_ledger (member, sent_at_us)
             SELECT member, siyu_now_us() FROM unnest($1::TEXT[]) AS member",
        )
        .bind(members)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }
}
