//! Recurring jobs. Each schedule is a row with its next due time; every process looks at due
//! schedules, and the one whose compare-and-set moves the due time forward enqueues the job,
//! keyed `schedule:<name>:<due ms>`, so a due time runs once however many processes there are.
//! Due times missed while no process ran are not run one by one: one run catches up.

use std::str::FromStr;
use std::time::Duration;

use chrono::TimeZone;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::JobSettings;
use crate::store::schedules::{self, Schedule};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule {name}: {cron:?} is not a cron expression: {reason}")]
    BadCron {
        name: String,
        cron: String,
        reason: String,
    },
    #[error("schedule {name}: {tz:?} is not an IANA time zone")]
    BadTimezone { name: String, tz: String },
    #[error("schedule {name}: {cron:?} never fires")]
    NeverFires { name: String, cron: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A recurring job as code declares it.
#[derive(Debug, Clone)]
pub struct Recurring {
    pub name: String,
    /// Five fields (`min hour day month weekday`) or six with seconds first.
    pub cron: String,
    pub job_kind: String,
    pub payload: serde_json::Value,
}

fn parse_cron(name: &str, expr: &str) -> Result<cron::Schedule, ScheduleError> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    cron::Schedule::from_str(&full).map_err(|e| ScheduleError::BadCron {
        name: name.into(),
        cron: expr.into(),
        reason: e.to_string(),
    })
}

/// The first due time strictly after `after_ms`, in the schedule's time zone.
pub fn next_due(name: &str, expr: &str, tz: &str, after_ms: i64) -> Result<i64, ScheduleError> {
    let schedule = parse_cron(name, expr)?;
    let zone: chrono_tz::Tz = tz.parse().map_err(|_| ScheduleError::BadTimezone {
        name: name.into(),
        tz: tz.into(),
    })?;
    let after = zone
        .timestamp_millis_opt(after_ms)
        .single()
        .ok_or_else(|| ScheduleError::NeverFires {
            name: name.into(),
            cron: expr.into(),
        })?;
    schedule
        .after(&after)
        .next()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| ScheduleError::NeverFires {
            name: name.into(),
            cron: expr.into(),
        })
}

pub struct Scheduler {
    store: Store,
    clock: Clock,
    settings: JobSettings,
}

impl Scheduler {
    /// Validates and stores the declared schedules (at start, so a bad cron stops the program).
    pub async fn declare(
        store: Store,
        clock: Clock,
        settings: JobSettings,
        recurring: &[Recurring],
    ) -> Result<Scheduler, ScheduleError> {
        let now = clock.now_ms();
        for r in recurring {
            let next_run_at = next_due(&r.name, &r.cron, &settings.timezone, now)?;
            let schedule = Schedule {
                name: r.name.clone(),
                cron: r.cron.clone(),
                timezone: settings.timezone.clone(),
                job_kind: r.job_kind.clone(),
                payload: r.payload.to_string(),
                next_run_at,
            };
            store.declare_schedule(&schedule, now).await?;
        }
        Ok(Scheduler {
            store,
            clock,
            settings,
        })
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        while !*shutdown.borrow() {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "scheduler tick failed");
            }
            // Sleep until the next due time, but never past the poll interval: another process
            // may have declared an earlier schedule, and the demo may move the clock.
            let wait = match self.store.next_schedule_due().await {
                Ok(Some(due)) => {
                    let ms = (due - self.clock.now_ms()).clamp(0, poll.as_millis() as i64);
                    Duration::from_millis(ms as u64)
                }
                _ => poll,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Enqueues the job of every due schedule this process wins; returns how many it enqueued.
    pub async fn tick(&self) -> Result<usize, ScheduleError> {
        let now = self.clock.now_ms();
        let mut enqueued = 0;
        for s in self.store.due_schedules(now).await? {
            let next = next_due(&s.name, &s.cron, &s.timezone, now.max(s.next_run_at))?;
            let mut tx = self.store.begin().await?;
            if !schedules::advance(&mut tx, &s.name, s.next_run_at, next, now).await? {
                tx.rollback().await?;
                continue;
            }
            let payload: serde_json::Value =
                serde_json::from_str(&s.payload).unwrap_or(serde_json::Value::Null);
            let key = format!("schedule:{}:{}", s.name, s.next_run_at);
            let id = super::enqueue(
                &mut tx,
                &self.settings,
                &self.clock,
                &s.job_kind,
                &payload,
                &key,
                Some(s.next_run_at),
            )
            .await?;
            tx.commit().await?;
            if id.is_some() {
                enqueued += 1;
                tracing::info!(schedule = %s.name, due = s.next_run_at, "enqueued recurring job");
            }
        }
        Ok(enqueued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_at_three_in_shanghai() {
        // 2026-11-22 00:00:00 UTC = 08:00 in Shanghai; the next 03:00 Shanghai is 2026-11-22 19:00 UTC.
        let after = 1_795_305_600_000;
        let due = next_due("t", "0 3 * * *", "Asia/Shanghai", after).unwrap();
        assert_eq!(due, 1_795_305_600_000 + 19 * 3_600_000);
    }

    #[test]
    fn bad_expressions_are_named() {
        let err = next_due("nightly", "not a cron", "Asia/Shanghai", 0).unwrap_err();
        assert!(err.to_string().contains("nightly"), "{err}");
        let err = next_due("nightly", "0 3 * * *", "Mars/Base", 0).unwrap_err();
        assert!(matches!(err, ScheduleError::BadTimezone { .. }));
    }
}
