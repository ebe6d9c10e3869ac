//! Client-side limits, so siyu stays below WeCom's caps instead of discovering them:
//! a pace per API path (below the per-corp 10,000 calls a minute), a pause for the whole path
//! after a 45009, fewer concurrent calls after a 45033, and the per-member cap on app messages
//! (30 a minute, 1000 an hour; WeCom silently drops the excess).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::error::WecomError;

pub struct Limiter {
    interval: Duration,
    concurrency: usize,
    max_wait: Duration,
    paths: Mutex<HashMap<&'static str, PathState>>,
}

struct PathState {
    next_free: Instant,
    blocked_until: Option<Instant>,
    permits: Arc<Semaphore>,
    /// Permits taken away after 45033; given back one at a time as calls succeed.
    withheld: usize,
}

impl Limiter {
    /// `per_minute` calls per path at most; `concurrency` calls of one path at once;
    /// a caller waits at most `max_wait` for its turn before getting `Throttled`.
    pub fn new(per_minute: u32, concurrency: usize, max_wait: Duration) -> Self {
        Self {
            interval: Duration::from_secs(60) / per_minute.max(1),
            concurrency: concurrency.max(1),
            max_wait,
            paths: Mutex::default(),
        }
    }

    /// Waits for this path's turn and a concurrency slot.
    pub async fn acquire(&self, path: &'static str) -> Result<OwnedSemaphorePermit, WecomError> {
        let (start_at, permits) = {
            let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let state = paths.entry(path).or_insert_with(|| PathState {
                next_free: now,
                blocked_until: None,
                permits: Arc::new(Semaphore::new(self.concurrency)),
                withheld: 0,
            });
            let mut start = state.next_free.max(now);
            if let Some(until) = state.blocked_until {
                start = start.max(until);
            }
            if start - now > self.max_wait {
                return Err(WecomError::Throttled {
                    what: format!("{path} is paused after WeCom's frequency limit"),
                    retry_after: start - now,
                });
            }
            state.next_free = start + self.interval;
            (start, state.permits.clone())
        };
        tokio::time::sleep_until(start_at).await;
        permits
            .acquire_owned()
            .await
            .map_err(|_| WecomError::Invalid("limiter closed".into()))
    }

    /// WeCom said 45009: nothing more on this path until the window has passed.
    pub fn block(&self, path: &'static str, window: Duration) {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = paths.get_mut(path) {
            state.blocked_until = Some(Instant::now() + window);
        }
    }

    /// WeCom said 45033: one fewer call of this path at once (never below one).
    pub fn reduce_concurrency(&self, path: &'static str) {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = paths.get_mut(path)
            && state.withheld + 1 < self.concurrency
        {
            state.permits.forget_permits(1);
            state.withheld += 1;
        }
    }

    /// A call succeeded: give back one withheld slot.
    pub fn recovered(&self, path: &'static str) {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = paths.get_mut(path)
            && state.withheld > 0
        {
            state.permits.add_permits(1);
            state.withheld -= 1;
        }
    }

    pub fn concurrency_of(&self, path: &'static str) -> usize {
        let paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        paths
            .get(path)
            .map_or(self.concurrency, |s| self.concurrency - s.withheld)
    }
}

/// App messages per member: at most 30 a minute and 1000 an hour per app.
pub struct MemberQuota {
    per_minute: usize,
    per_hour: usize,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Default for MemberQuota {
    fn default() -> Self {
        Self::new(30, 1000)
    }
}

impl MemberQuota {
    pub fn new(per_minute: usize, per_hour: usize) -> Self {
        Self {
            per_minute,
            per_hour,
            sent: Mutex::default(),
        }
    }

    /// Takes one message for each member, or none if any of them is at a cap (then says when
    /// the earliest slot frees up).
    pub fn take(&self, members: &[&str]) -> Result<(), WecomError> {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        for member in members {
            let log = sent.entry((*member).to_string()).or_default();
            while log.front().is_some_and(|t| now.duration_since(*t) >= hour) {
                log.pop_front();
            }
            let in_minute = log
                .iter()
                .filter(|t| now.duration_since(**t) < minute)
                .count();
            let wait = if in_minute >= self.per_minute {
                let oldest_in_minute = log.iter().rev().nth(self.per_minute - 1).copied();
                oldest_in_minute.map(|t| minute.saturating_sub(now.duration_since(t)))
            } else if log.len() >= self.per_hour {
                log.front()
                    .map(|t| hour.saturating_sub(now.duration_since(*t)))
            } else {
                None
            };
            if let Some(retry_after) = wait {
                return Err(WecomError::Throttled {
                    what: format!("app messages to member {member} are at WeCom's per-member cap"),
                    retry_after: retry_after.max(Duration::from_millis(1)),
                });
            }
        }
        for member in members {
            sent.entry((*member).to_string())
                .or_default()
                .push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_on_one_path_are_paced() {
        let limiter = Limiter::new(600, 8, Duration::from_secs(5)); // one per 100 ms
        let start = Instant::now();
        for _ in 0..5 {
            drop(limiter.acquire("a").await.unwrap());
        }
        assert!(start.elapsed() >= Duration::from_millis(400));
        // Another path has its own pace.
        let other = Instant::now();
        drop(limiter.acquire("b").await.unwrap());
        assert!(other.elapsed() < Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_path_refuses_rather_than_wait_past_the_limit() {
        let limiter = Limiter::new(6000, 8, Duration::from_secs(2));
        drop(limiter.acquire("p").await.unwrap());
        limiter.block("p", Duration::from_secs(60));
        let err = limiter.acquire("p").await.unwrap_err();
        assert!(err.retry_after().unwrap() > Duration::from_secs(50));
        limiter.reduce_concurrency("p");
        limiter.reduce_concurrency("p");
        assert_eq!(limiter.concurrency_of("p"), 6);
        limiter.recovered("p");
        assert_eq!(limiter.concurrency_of("p"), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn members_get_thirty_app_messages_a_minute() {
        let quota = MemberQuota::default();
        for _ in 0..30 {
            quota.take(&["zhangsan", "lisi"]).unwrap();
        }
        let err = quota.take(&["wangwu", "zhangsan"]).unwrap_err();
        assert!(err.to_string().contains("zhangsan"));
        // All or nothing: wangwu was not charged for the refused message.
        for _ in 0..30 {
            quota.take(&["wangwu"]).unwrap();
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        quota.take(&["zhangsan"]).unwrap();
    }
}
