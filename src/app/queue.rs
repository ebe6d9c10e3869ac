//! The job queue and the inbox as operators watch them (`/api/v1/jobs`, `/api/v1/queue`), and
//! the retry of a job that failed for good.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{AppError, Services};
use crate::store::jobs::{self as store_jobs, JobFilter, JobRecord, JobState};

/// A page of jobs, newest first; `next_before` asks for the next page (None: this was the last).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    pub next_before: Option<i64>,
}

/// How much work waits, and for how long the oldest has waited.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueView {
    /// Jobs per state (every state, zero when none).
    #[schema(example = json!({"queued": 2, "running": 1, "done": 40, "failed": 0}))]
    pub jobs: BTreeMap<&'static str, i64>,
    /// Inbox events per status (every status, zero when none).
    #[schema(example = json!({"pending": 0, "processing": 0, "done": 12, "unhandled": 1, "failed": 0}))]
    pub inbox: BTreeMap<&'static str, i64>,
    /// How long the longest-waiting due job has been due, in ms (0 when none waits).
    pub job_lag_ms: i64,
    /// How long ago the oldest event still waiting for its handler arrived, in ms (0 if none).
    pub inbox_lag_ms: i64,
}

/// Jobs matching `filter`, newest first, with the cursor of the next page.
pub async fn list(services: &Services, filter: &JobFilter) -> Result<JobPage, AppError> {
    // One more than asked tells whether another page exists without a second query.
    let mut jobs = services
        .store
        .jobs_page(&JobFilter {
            limit: filter.limit + 1,
            ..filter.clone()
        })
        .await?;
    let more = jobs.len() as i64 > filter.limit;
    jobs.truncate(usize::try_from(filter.limit).unwrap_or(0));
    let next_before = if more {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    Ok(JobPage { jobs, next_before })
}

pub async fn get(services: &Services, id: i64) -> Result<JobRecord, AppError> {
    services
        .store
        .job(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no job {id}")))
}

/// Puts a job that failed for good back in the queue, due now, with its full retries again (see
/// [`store_jobs::retry_failed_job`] for why a retried send never goes out twice). The workers,
/// here and in other replicas, are woken at commit. Answers the job as it is then (a worker may
/// already have taken it).
pub async fn retry(services: &Services, id: i64) -> Result<JobRecord, AppError> {
    let mut tx = services.store.begin().await?;
    let retried = store_jobs::retry_failed_job(&mut tx, id, services.clock.now_ms()).await?;
    tx.commit().await?;
    let job = get(services, id).await?;
    if !retried {
        return Err(AppError::Conflict(format!(
            "job {id} is {}; only a failed job can be retried",
            job.state
        )));
    }
    tracing::info!(job = id, kind = %job.kind, "failed job put back in the queue");
    Ok(job)
}

pub async fn overview(services: &Services) -> Result<QueueView, AppError> {
    let store = &services.store;
    let now = services.clock.now_ms();
    let jobs = store
        .count_jobs_by_state()
        .await?
        .into_iter()
        .map(|(state, n)| (JobState::as_str(state), n))
        .collect();
    let inbox = store
        .count_events_by_status()
        .await?
        .into_iter()
        .map(|(status, n)| (status.as_str(), n))
        .collect();
    let lag = |since: Option<i64>| since.map_or(0, |t| (now - t).max(0));
    Ok(QueueView {
        jobs,
        inbox,
        job_lag_ms: lag(store.oldest_due_job(now).await?),
        inbox_lag_ms: lag(store.oldest_pending_event().await?),
    })
}
