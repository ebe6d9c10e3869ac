//! The durable job queue, small enough to own (crates.io's and zero-to-production's are the
//! model): one table, jobs enqueued in the transaction that decided them, claimed under a lease,
//! retried with a backoff kept in the row, unique by idempotency key.
//!
//! Workers wake at once when a transaction that enqueued a job commits (an in-process signal,
//! and `LISTEN/NOTIFY` across PostgreSQL replicas); a slow poll is only the fallback.

pub mod scheduler;
pub mod send;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::JobSettings;
use crate::metrics::Metrics;
use crate::store::jobs::{ClaimedJob, NewJob};
use crate::store::{self, Store, StoreError, Tx};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a job attempt failed, which decides what happens next.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A passing failure (busy, timeout before sending, database hiccup): retry with backoff.
    #[error("{0}")]
    Retry(String),
    /// Retry, but not before this long (WeCom's 45009 frequency window, say).
    #[error("{reason} (retry in {after:?})")]
    RetryAfter { reason: String, after: Duration },
    /// Nothing failed: the job waits its turn (a quota slot) and runs again after `after`,
    /// without spending an attempt (a long queue must not exhaust them).
    #[error("{reason} (waiting {after:?})")]
    Wait { reason: String, after: Duration },
    /// Retrying cannot help (bad input, a code already used): fail now.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        JobError::Retry(e.to_string())
    }
}

/// What a handler gets: the claimed job and the means to do its work.
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub clock: Clock,
    pub job: Arc<ClaimedJob>,
    /// The worker that holds the job's lease (a ledger write checks it still does).
    pub worker: Arc<str>,
    /// The server's metrics (a welcome records its latency).
    pub metrics: Arc<Metrics>,
}

impl JobContext {
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_str(&self.job.payload)
            .map_err(|e| JobError::Permanent(format!("bad payload for {}: {e}", self.job.kind)))
    }
}

type Handler = Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync>;

/// Job kinds and the code that runs them.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Handler>,
}

impl Registry {
    /// Takes `other`'s handlers, replacing any of the same kind.
    pub fn extend(&mut self, other: Registry) {
        self.handlers.extend(other.handlers);
    }

    pub fn register<F, Fut>(&mut self, kind: &str, handler: F)
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.handlers.insert(
            kind.to_string(),
            Arc::new(move |ctx| Box::pin(handler(ctx))),
        );
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

/// Enqueues `payload` as a job of `kind` inside `tx`. `run_at` defaults to now. Returns `None`
/// when the idempotency key was used before: that work is already decided.
pub async fn enqueue(
    tx: &mut Tx,
    settings: &JobSettings,
    clock: &Clock,
    kind: &str,
    payload: &impl Serialize,
    idempotency_key: &str,
    run_at: Option<i64>,
) -> Result<Option<i64>, StoreError> {
    enqueue_with_priority(
        tx,
        settings,
        clock,
        kind,
        payload,
        idempotency_key,
        run_at,
        0,
    )
    .await
}

/// Priority of jobs whose deadline is seconds away (a welcome message's code lives 20 s): they
/// are claimed before every other due job, and `jobs.urgent_workers` take nothing else.
pub const URGENT: i64 = 10;

/// [`enqueue`] with a priority: among due jobs, higher ones are claimed first.
#[allow(clippy::too_many_arguments)]
pub async fn enqueue_with_priority(
    tx: &mut Tx,
    settings: &JobSettings,
    clock: &Clock,
    kind: &str,
    payload: &impl Serialize,
    idempotency_key: &str,
    run_at: Option<i64>,
    priority: i64,
) -> Result<Option<i64>, StoreError> {
    let now = clock.now_ms();
    let job = new_job(
        settings,
        kind,
        payload,
        idempotency_key.to_string(),
        run_at.unwrap_or(now),
        priority,
    )?;
    store::jobs::enqueue(tx, &job, now).await
}

/// A job row of `kind` as the enqueuers store it, its payload serialized.
fn new_job(
    settings: &JobSettings,
    kind: &str,
    payload: &impl Serialize,
    idempotency_key: String,
    run_at: i64,
    priority: i64,
) -> Result<NewJob, StoreError> {
    Ok(NewJob {
        kind: kind.to_string(),
        payload: serde_json::to_string(payload)
            .map_err(|e| StoreError::Corrupt(format!("job payload does not serialize: {e}")))?,
        idempotency_key,
        run_at,
        max_attempts: settings.max_attempts,
        priority,
    })
}

/// [`enqueue`] for many jobs of one `kind`, each a `(payload, idempotency key, run_at)`, in one
/// statement; answers how many were new.
pub async fn enqueue_all<P: Serialize>(
    tx: &mut Tx,
    settings: &JobSettings,
    clock: &Clock,
    kind: &str,
    jobs: impl IntoIterator<Item = (P, String, Option<i64>)>,
) -> Result<u64, StoreError> {
    let now = clock.now_ms();
    let jobs = jobs
        .into_iter()
        .map(|(payload, idempotency_key, run_at)| {
            new_job(
                settings,
                kind,
                &payload,
                idempotency_key,
                run_at.unwrap_or(now),
                0,
            )
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    store::jobs::enqueue_all(tx, &jobs, now).await
}

/// `base · 2^(attempt-1)`, capped, with ±20% jitter so a burst of failures doesn't retry in step.
pub fn backoff(settings: &JobSettings, attempt: i64) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let raw = settings.backoff_base_ms.saturating_mul(1u64 << exp);
    let capped = raw.min(settings.backoff_max_secs.saturating_mul(1000));
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    Duration::from_millis((capped as f64 * jitter) as u64)
}

/// The workers of one process.
pub struct WorkerPool {
    store: Store,
    clock: Clock,
    settings: JobSettings,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    process_id: String,
}

impl WorkerPool {
    pub fn new(
        store: Store,
        clock: Clock,
        settings: JobSettings,
        registry: Registry,
        metrics: Arc<Metrics>,
    ) -> Self {
        let process_id = format!(
            "{}-{:08x}",
            std::process::id(),
            rand::thread_rng().r#gen::<u32>()
        );
        metrics.job_kinds(registry.kinds());
        Self {
            store,
            clock,
            settings,
            registry: Arc::new(registry),
            metrics,
            process_id,
        }
    }

    /// Prefix of the ids of this process's workers (leases are released by it).
    pub fn process_id(&self) -> &str {
        &self.process_id
    }

    /// Runs `jobs.workers` workers until `shutdown` turns true, then lets each finish its job and
    /// hands back whatever is still leased.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut workers = JoinSet::new();
        let ordinary = (0..self.settings.workers).map(|i| (format!("{i}"), i64::MIN));
        let urgent = (0..self.settings.urgent_workers).map(|i| (format!("u{i}"), URGENT));
        for (name, min_priority) in ordinary.chain(urgent) {
            let worker = Worker {
                id: format!("{}-{name}", self.process_id),
                min_priority,
                store: self.store.clone(),
                clock: self.clock.clone(),
                settings: self.settings.clone(),
                registry: self.registry.clone(),
                metrics: self.metrics.clone(),
            };
            workers.spawn(worker.run(shutdown.clone()));
        }
        workers.spawn(reap_expired_leases(
            self.store.clone(),
            self.clock.clone(),
            Duration::from_millis(self.settings.poll_interval_ms),
            shutdown.clone(),
        ));
        while workers.join_next().await.is_some() {}
        release_leases(&self.store, &self.clock, &self.process_id).await;
    }
}

/// Every poll interval, puts back the jobs of workers that died with a lease, and wakes the
/// workers for them.
async fn reap_expired_leases(
    store: Store,
    clock: Clock,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        match store.reclaim_expired_jobs(clock.now_ms()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(jobs = n, "took back jobs whose lease expired");
                store.signals().jobs.notify_waiters();
            }
            Err(e) => tracing::warn!(error = %e, "reclaiming expired jobs failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Hands back the jobs still leased by the workers of process `process_id`.
pub async fn release_leases(store: &Store, clock: &Clock, process_id: &str) {
    match store
        .release_jobs(&format!("{process_id}-"), clock.now_ms())
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "released job leases"),
        Err(e) => {
            tracing::warn!(error = %e, "could not release job leases; they expire on their own")
        }
    }
}

struct Worker {
    id: String,
    /// Claims only jobs of at least this priority (an urgent-only worker: [`URGENT`]).
    min_priority: i64,
    store: Store,
    clock: Clock,
    settings: JobSettings,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

impl Worker {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let signals = self.store.signals().clone();
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let lease_ms = (self.settings.lease_secs * 1000) as i64;
        loop {
            if *shutdown.borrow() {
                return;
            }
            // Registered before the claim, so a commit between the claim and the wait still wakes us.
            let notified = signals.jobs.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.clock.now_ms();
            let claimed = self
                .store
                .claim_jobs(&self.id, now, lease_ms, 1, self.min_priority)
                .await;
            match claimed {
                Ok(mut jobs) if !jobs.is_empty() => {
                    let job = jobs.remove(0);
                    let waited =
                        Duration::from_millis(u64::try_from(now - job.run_at).unwrap_or(0));
                    self.run_one(job, waited).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(worker = %self.id, error = %e, "claiming jobs failed"),
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Runs a job claimed `waited` after it was due.
    async fn run_one(&self, job: ClaimedJob, waited: Duration) {
        let span =
            tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempts);
        self.attempt(Arc::new(job), waited).instrument(span).await
    }

    async fn attempt(&self, job: Arc<ClaimedJob>, waited: Duration) {
        let started = std::time::Instant::now();
        let result = if job.attempts > job.max_attempts {
            // Its worker died during the last attempt; don't go beyond the limit.
            Err(JobError::Permanent(
                "lease expired during the last attempt".into(),
            ))
        } else if let Some(handler) = self.registry.handlers.get(&job.kind).cloned() {
            let ctx = JobContext {
                store: self.store.clone(),
                clock: self.clock.clone(),
                job: job.clone(),
                worker: Arc::from(self.id.as_str()),
                metrics: self.metrics.clone(),
            };
            self.with_heartbeat(job.id, tokio::spawn(handler(ctx)))
                .await
        } else {
            Err(JobError::Permanent(format!(
                "no handler for job kind {:?}",
                job.kind
            )))
        };
        self.metrics.job_ran(&job.kind, waited, started.elapsed());
        let now = self.clock.now_ms();
        let recorded = match &result {
            Ok(()) => self.store.complete_job(job.id, &self.id, now).await,
            Err(JobError::Wait { reason, after }) => {
                let run_at = now + after.as_millis() as i64;
                tracing::debug!(reason, "job waits its turn");
                self.store.defer_job(job.id, &self.id, run_at, now).await
            }
            Err(err) => {
                let retry_at = match err {
                    JobError::Permanent(_) => None,
                    _ if job.attempts >= job.max_attempts => None,
                    JobError::RetryAfter { after, .. } | JobError::Wait { after, .. } => Some(
                        now + after
                            .max(&backoff(&self.settings, job.attempts))
                            .as_millis() as i64,
                    ),
                    JobError::Retry(_) => {
                        Some(now + backoff(&self.settings, job.attempts).as_millis() as i64)
                    }
                };
                if retry_at.is_none() {
                    tracing::warn!(error = %err, "job failed for good");
                } else {
                    tracing::info!(error = %err, "job attempt failed; will retry");
                }
                self.store
                    .fail_job(job.id, &self.id, &err.to_string(), retry_at, now)
                    .await
            }
        };
        match recorded {
            Ok(true) => {}
            Ok(false) => tracing::warn!("job lease was lost before its outcome was recorded"),
            Err(e) => {
                tracing::warn!(error = %e, "could not record job outcome; its lease will expire")
            }
        }
    }

    /// Awaits the handler while renewing the lease, so a long job is not taken by another worker.
    async fn with_heartbeat(
        &self,
        id: i64,
        mut task: tokio::task::JoinHandle<Result<(), JobError>>,
    ) -> Result<(), JobError> {
        let lease_ms = (self.settings.lease_secs * 1000) as i64;
        let period = Duration::from_millis((lease_ms / 3).max(1) as u64);
        loop {
            tokio::select! {
                joined = &mut task => {
                    return joined.unwrap_or_else(|e| Err(JobError::Retry(format!("handler panicked: {e}"))));
                }
                _ = tokio::time::sleep(period) => {
                    let until = self.clock.now_ms() + lease_ms;
                    if let Ok(false) = self.store.renew_job_lease(id, &self.id, until).await {
                        tracing::warn!("lost the job's lease while it ran");
                    }
                }
            }
        }
    }
}

/// Relays PostgreSQL notifications (`pg_notify` at commit in any replica) to this process's
/// workers and dispatcher. Returns at shutdown; reconnects after a lost connection.
pub async fn relay_postgres_notifications(store: Store, mut shutdown: watch::Receiver<bool>) {
    use crate::store::{INBOX_CHANNEL, JOBS_CHANNEL};
    let Some(pool) = store.pg_pool().cloned() else {
        return;
    };
    let signals = store.signals().clone();
    while !*shutdown.borrow() {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling until it is back");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        if let Err(e) = listener.listen_all([JOBS_CHANNEL, INBOX_CHANNEL]).await {
            tracing::warn!(error = %e, "LISTEN failed");
            continue;
        }
        loop {
            tokio::select! {
                received = listener.recv() => match received {
                    Ok(n) if n.channel() == INBOX_CHANNEL => signals.inbox.notify_waiters(),
                    Ok(_) => signals.jobs.notify_waiters(),
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = JobSettings {
            backoff_base_ms: 1000,
            backoff_max_secs: 60,
            ..JobSettings::default()
        };
        let first = backoff(&s, 1).as_millis();
        let third = backoff(&s, 3).as_millis();
        assert!((800..=1200).contains(&first), "{first}");
        assert!((3200..=4800).contains(&third), "{third}");
        assert!(backoff(&s, 40).as_millis() <= 72_000);
    }
}
