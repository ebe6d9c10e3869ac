//! Client-side limits, so siyu stays below WeCom's caps instead of discovering them:
//! a pace per API path (below the per-corp 10,000 calls a minute), an hourly budget per path
//! (below the per-corp 150,000 calls an hour, with a reserve only urgent calls may use), a pause
//! for the whole path
//! after a 45009, fewer concurrent calls after a 45033, and the per-member cap on app messages
//! (30 a minute, 1000 an hour; WeCom silently drops the excess).
//!
//! A path's next slot goes to whoever is first in its queue when the slot is free, not to
//! whoever asked first: callers marked urgent (`super::urgent`) queue ahead of ordinary ones, in
//! arrival order within each kind. So an urgent call (a welcome message, which WeCom accepts
//! only for 20 s after the add) waits for at most the calls already in flight, never for a
//! backlog of ordinary calls queued before it. A waiter sleeps until the next slot or until the
//! queue or the in-flight count changes (a `Notify` registered under the lock, so no wake-up is
//! lost), then checks again.
//!
//! WeCom counts per corp, and on PostgreSQL several replicas call it for one corp. There the
//! pace, the hourly budget and the 45009 pause of each path are kept corp-wide as well, in the
//! database (`store::limits`), and so is the log of app messages per member. The queue, urgency,
//! concurrency and the 45033 cut stay in each process, the fast path: once a process's own queue,
//! pace and concurrency let a caller through, it asks the ledger for the path's next corp-wide
//! slot (one statement, no lock held across the call to WeCom) and sleeps until it starts. One
//! caller of a path at a time asks, the one its process let through, so each process takes its
//! slots in its own queue's order. Across replicas:
//! - an ordinary caller takes a corp-wide slot only if it is free now; else it waits until the
//!   slot the ledger named and asks again. So no replica books ordinary slots ahead;
//! - an urgent caller books the next slot even if it starts later (up to `max_wait`).
//!
//! So an urgent call waits for its own process's turn as on SQLite, then for at most one slot
//! taken by another replica's ordinary call (the slot under way when it asked), and for urgent
//! calls booked before it. Ordinary calls of different replicas share the slots in no set order.
//! A 45009 is written to the ledger: every replica refuses the path at its next slot until the
//! pause is over (a call whose slot was already taken still goes).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::Instant;

use super::error::WecomError;
use crate::store::limits::{CorpLimits, HourlyBudget, SlotRequest};

/// How long a caller refused because the corp-wide ledger could not be read waits to try again.
const LEDGER_RETRY: Duration = Duration::from_secs(1);

pub struct Limiter {
    interval: Duration,
    concurrency: usize,
    max_wait: Duration,
    hourly: Option<Budget>,
    /// PostgreSQL: the corp-wide slots every replica takes its turn in (see the module's doc).
    corp: Option<CorpLimits>,
    paths: Mutex<HashMap<&'static str, Arc<Path>>>,
}

/// A path's hourly budget, as a token bucket: it refills at `per_hour / 3600` a second and
/// holds at most a tenth of the hour, so no rolling hour sees more than 1.1 × `per_hour` calls
/// (below WeCom's 150,000 with the default 135,000). Ordinary calls leave the last tenth of the
/// bucket to urgent ones: a nightly fan-out cannot spend the budget a welcome needs.
#[derive(Debug, Clone, Copy)]
struct Budget {
    per_second: f64,
    capacity: f64,
    reserve: f64,
}

impl Budget {
    /// What the bucket must hold for a caller to take a call out of it.
    fn need(&self, place: Place) -> f64 {
        if place.ordinary {
            self.reserve + 1.0
        } else {
            1.0
        }
    }
}

struct Path {
    state: Mutex<PathState>,
    /// Woken whenever a waiter may now go: the head of the queue left, a call finished, a
    /// withheld slot came back, or the path was blocked (waiters then give up).
    changed: Notify,
}

struct PathState {
    /// The earliest time the next call of this path may start.
    next_free: Instant,
    blocked_until: Option<Instant>,
    /// Callers waiting for their turn, served in order: urgent ones first, then by arrival.
    queue: BTreeSet<Place>,
    next_ticket: u64,
    in_flight: usize,
    /// Slots taken away after 45033; given back one at a time as calls succeed.
    withheld: usize,
    /// The hourly budget left (see [`Budget`]), as of `refilled_at`.
    tokens: f64,
    refilled_at: Instant,
    /// The waiter let through and taking its slot (asking the corp-wide ledger for it, on
    /// PostgreSQL): no other is let through meanwhile.
    taking: Option<Place>,
    /// The corp-wide ledger has no slot for an ordinary caller before this (it said so).
    corp_free_at: Option<Instant>,
}

impl PathState {
    /// When the next slot is due (it may have passed).
    fn due(&self) -> Instant {
        match self.blocked_until {
            Some(until) => self.next_free.max(until),
            None => self.next_free,
        }
    }
}

/// A waiter's place in a path's queue; orders urgent before ordinary, then by arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    ordinary: bool,
    ticket: u64,
}

impl Path {
    fn lock(&self) -> MutexGuard<'_, PathState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One call of a path in flight; dropping it lets the next caller in.
#[must_use = "the call holds its slot until the permit is dropped"]
pub struct Permit {
    path: Arc<Path>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.path.lock().in_flight -= 1;
        self.path.changed.notify_waiters();
    }
}

/// Takes a waiter out of the queue however `acquire` ends (a slot, a refusal, or the caller
/// dropping the future), and wakes the others: the head may have changed.
struct Waiting<'a> {
    path: &'a Path,
    place: Place,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut st = self.path.lock();
        st.queue.remove(&self.place);
        if st.taking == Some(self.place) {
            // Dropped while asking the ledger: the others may go.
            st.taking = None;
        }
        drop(st);
        self.path.changed.notify_waiters();
    }
}

/// What a waiter does next.
enum Turn<'a> {
    /// It is let through: it takes its slot now.
    Go,
    /// It waits for a change, or until the instant (its slot).
    Wait(Notified<'a>, Option<Instant>),
}

impl Limiter {
    /// `per_minute` calls per path at most; `concurrency` calls of one path at once;
    /// a caller whose turn is more than `max_wait` away gets `Throttled` instead of waiting.
    pub fn new(per_minute: u32, concurrency: usize, max_wait: Duration) -> Self {
        Self {
            interval: Duration::from_secs(60) / per_minute.max(1),
            concurrency: concurrency.max(1),
            max_wait,
            hourly: None,
            corp: None,
            paths: Mutex::default(),
        }
    }

    /// At most about `per_hour` calls per path in any hour (see [`Budget`]).
    pub fn with_hourly_budget(mut self, per_hour: u32) -> Self {
        let per_hour = f64::from(per_hour.max(10));
        let capacity = per_hour / 10.0;
        self.hourly = Some(Budget {
            per_second: per_hour / 3600.0,
            capacity,
            reserve: capacity / 10.0,
        });
        self
    }

    /// The pace, the hourly budget and the 45009 pause kept corp-wide in `corp` too, shared
    /// with every replica (`None`: this process alone calls WeCom for the corp).
    pub fn shared_with(mut self, corp: Option<CorpLimits>) -> Self {
        self.corp = corp;
        self
    }

    fn path(&self, path: &'static str) -> Arc<Path> {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        paths
            .entry(path)
            .or_insert_with(|| {
                Arc::new(Path {
                    state: Mutex::new(PathState {
                        next_free: Instant::now(),
                        blocked_until: None,
                        queue: BTreeSet::new(),
                        next_ticket: 0,
                        in_flight: 0,
                        withheld: 0,
                        tokens: self.hourly.map_or(0.0, |b| b.capacity),
                        refilled_at: Instant::now(),
                        taking: None,
                        corp_free_at: None,
                    }),
                    changed: Notify::new(),
                })
            })
            .clone()
    }

    /// Waits for this path's turn and a concurrency slot; urgent callers (see
    /// [`super::urgent`]) are served before ordinary ones. Refuses with `Throttled` when the
    /// turn is more than `max_wait` away (the path is paused after a 45009, or too many
    /// callers are ahead at this pace); waiting for a call in flight to finish is not counted.
    pub async fn acquire(&self, path: &'static str) -> Result<Permit, WecomError> {
        let shared = self.path(path);
        let place = {
            let mut st = shared.lock();
            let place = Place {
                ordinary: !super::is_urgent(),
                ticket: st.next_ticket,
            };
            st.next_ticket += 1;
            st.queue.insert(place);
            place
        };
        let waiting = Waiting {
            path: &shared,
            place,
        };
        loop {
            match self.turn(path, &shared, place)? {
                Turn::Go => {
                    let starts_in = match &self.corp {
                        Some(corp) => match self.corp_slot(corp, path, &shared, place).await? {
                            Some(starts_in) => starts_in,
                            // No corp-wide slot for it yet: it waits in the queue again.
                            None => continue,
                        },
                        None => Duration::ZERO,
                    };
                    self.let_through(&shared);
                    drop(waiting);
                    let permit = Permit {
                        path: shared.clone(),
                    };
                    if !starts_in.is_zero() {
                        // An urgent caller's slot, booked ahead.
                        tokio::time::sleep(starts_in).await;
                    }
                    return Ok(permit);
                }
                Turn::Wait(changed, Some(at)) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                Turn::Wait(changed, None) => changed.await,
            }
        }
    }

    /// Whether the waiter at `place` goes now (it is let through, to take its slot) or what it
    /// waits for; refuses when its turn is more than `max_wait` away.
    fn turn<'a>(
        &self,
        path: &'static str,
        shared: &'a Path,
        place: Place,
    ) -> Result<Turn<'a>, WecomError> {
        let mut st = shared.lock();
        let now = Instant::now();
        // When the next slot was due; it may have passed while the waiter woke up.
        let due = st.due();
        let mut free_at = due.max(now);
        let mut over_budget = false;
        if let Some(budget) = self.hourly {
            let gained = now.duration_since(st.refilled_at).as_secs_f64() * budget.per_second;
            st.tokens = (st.tokens + gained).min(budget.capacity);
            st.refilled_at = now;
            let need = budget.need(place);
            if st.tokens < need {
                let short = (need - st.tokens) / budget.per_second;
                let refilled = now + Duration::from_secs_f64(short);
                over_budget = refilled > free_at;
                free_at = free_at.max(refilled);
            }
        }
        // The ledger named its next slot for ordinary callers; an urgent one books ahead.
        let mut corp_busy = false;
        if place.ordinary
            && let Some(at) = st.corp_free_at
            && at > free_at
        {
            corp_busy = true;
            free_at = at;
        }
        let ahead = st.queue.range(..place).count() as u32;
        let turn = free_at + self.interval * ahead;
        if turn - now > self.max_wait {
            let paused = st.blocked_until.is_some_and(|until| until > now);
            return Err(WecomError::Throttled {
                what: if paused {
                    format!("{path} is paused after WeCom's frequency limit")
                } else if corp_busy {
                    format!("{path} waits for the corp-wide pace it shares with other replicas")
                } else if over_budget {
                    format!("{path} has used its hourly budget")
                } else {
                    format!("{path} has {ahead} calls queued ahead at its pace")
                },
                retry_after: turn - now,
            });
        }
        let room = st.in_flight < self.concurrency - st.withheld;
        if ahead == 0 && free_at <= now && room && st.taking.is_none() {
            st.taking = Some(place);
            return Ok(Turn::Go);
        }
        // Registered before the lock is released: any change after this check wakes it.
        let changed = shared.changed.notified();
        let wake_at = (ahead == 0 && free_at > now).then_some(free_at);
        Ok(Turn::Wait(changed, wake_at))
    }

    /// The waiter [`Limiter::turn`] let through takes its slot: its call is in flight.
    fn let_through(&self, shared: &Path) {
        let mut st = shared.lock();
        let now = Instant::now();
        // The next slot follows this one's due time, not the moment the waiter woke: timers
        // fire on whole milliseconds and wake-ups come late, and scheduling from `now` let
        // that lateness add up to a pace well below the setting (133 calls/s for 150/s
        // measured). After an idle spell it catches up by one slot at most, so calls never
        // burst past the pace.
        let floor = now.checked_sub(self.interval).unwrap_or(now);
        st.next_free = st.due().max(floor) + self.interval;
        if self.hourly.is_some() {
            st.tokens -= 1.0;
        }
        st.in_flight += 1;
        st.taking = None;
    }

    /// Asks the corp-wide ledger for the slot of the waiter at `place`, whom this process let
    /// through: `Some(starts_in)` when it took one, `None` when the ledger has none for it yet
    /// (it waits in the queue for the slot the ledger named), a refusal when that slot is more
    /// than `max_wait` away or the ledger cannot be read.
    async fn corp_slot(
        &self,
        corp: &CorpLimits,
        path: &'static str,
        shared: &Path,
        place: Place,
    ) -> Result<Option<Duration>, WecomError> {
        let request = SlotRequest {
            interval: self.interval,
            // Ordinary callers take only a slot free now, so none books ahead of an urgent
            // caller, who books the next slot (see the module's doc).
            horizon: if place.ordinary {
                Duration::ZERO
            } else {
                self.max_wait
            },
            budget: self.hourly.map(|b| HourlyBudget {
                capacity: b.capacity,
                per_second: b.per_second,
                need: b.need(place),
            }),
        };
        let answer = corp.take_slot(path, &request).await;
        if let Ok(slot) = &answer
            && slot.taken
        {
            return Ok(Some(slot.wait));
        }
        let mut st = shared.lock();
        st.taking = None;
        let now = Instant::now();
        let refusal = match answer {
            Err(e) => WecomError::Throttled {
                what: format!("{path}: the corp-wide limits in the database cannot be read ({e})"),
                retry_after: LEDGER_RETRY,
            },
            Ok(slot) => {
                if !slot.paused.is_zero() {
                    // A replica met a 45009: this process pauses the path too, so its other
                    // callers are refused without asking the ledger.
                    let until = now + slot.paused;
                    st.blocked_until = Some(st.blocked_until.map_or(until, |u| u.max(until)));
                }
                if place.ordinary && slot.wait <= self.max_wait {
                    st.corp_free_at = Some(now + slot.wait);
                    drop(st);
                    shared.changed.notify_waiters();
                    return Ok(None);
                }
                WecomError::Throttled {
                    what: if slot.paused >= slot.wait {
                        format!("{path} is paused after WeCom's frequency limit")
                    } else if slot.short >= slot.wait {
                        format!("{path} has used its corp-wide hourly budget")
                    } else {
                        format!("{path} waits for the corp-wide pace it shares with other replicas")
                    },
                    retry_after: slot.wait,
                }
            }
        };
        drop(st);
        shared.changed.notify_waiters();
        Err(refusal)
    }

    /// WeCom said 45009: nothing more on this path until the window has passed, in this process
    /// and (on PostgreSQL) in every replica.
    pub async fn block(&self, path: &'static str, window: Duration) {
        let shared = self.path(path);
        shared.lock().blocked_until = Some(Instant::now() + window);
        shared.changed.notify_waiters();
        if let Some(corp) = &self.corp
            && let Err(e) = corp.pause(path, window).await
        {
            tracing::warn!(path, error = %e, "could not pause this API for the other replicas");
        }
    }

    /// WeCom said 45033: one fewer call of this path at once (never below one). Calls already
    /// in flight finish; no new one starts until the count is below the lowered limit.
    pub fn reduce_concurrency(&self, path: &'static str) {
        let shared = self.path(path);
        let mut st = shared.lock();
        if st.withheld + 1 < self.concurrency {
            st.withheld += 1;
        }
    }

    /// A call succeeded: give back one withheld slot.
    pub fn recovered(&self, path: &'static str) {
        let shared = self.path(path);
        let mut st = shared.lock();
        if st.withheld > 0 {
            st.withheld -= 1;
            drop(st);
            shared.changed.notify_waiters();
        }
    }

    /// Callers of `path` waiting for their turn.
    #[cfg(test)]
    fn queued(&self, path: &'static str) -> usize {
        self.path(path).lock().queue.len()
    }

    pub fn concurrency_of(&self, path: &'static str) -> usize {
        let paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        paths
            .get(path)
            .map_or(self.concurrency, |p| self.concurrency - p.lock().withheld)
    }
}

/// App messages per member: at most 30 a minute and 1000 an hour per app.
pub struct MemberQuota {
    per_minute: usize,
    per_hour: usize,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// PostgreSQL: the log every replica charges its messages to.
    corp: Option<CorpLimits>,
}

impl Default for MemberQuota {
    fn default() -> Self {
        Self::new(30, 1000)
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl MemberQuota {
    pub fn new(per_minute: usize, per_hour: usize) -> Self {
        Self {
            per_minute,
            per_hour,
            sent: Mutex::default(),
            corp: None,
        }
    }

    /// The caps counted corp-wide in `corp`, over every replica's messages (`None`: this
    /// process alone sends the corp's app messages).
    pub fn shared_with(mut self, corp: Option<CorpLimits>) -> Self {
        self.corp = corp;
        self
    }

    /// Takes one message for each member, or none if any of them is at a cap (then says when
    /// the earliest slot frees up).
    pub async fn take(&self, members: &[&str]) -> Result<(), WecomError> {
        let Some(corp) = &self.corp else {
            return self.take_here(members);
        };
        corp.charge_app_messages(members, |sent| self.check(members, sent))
            .await
            .unwrap_or_else(|e| {
                Err(WecomError::Throttled {
                    what: format!(
                        "app messages: the corp-wide caps in the database cannot be read ({e})"
                    ),
                    retry_after: LEDGER_RETRY,
                })
            })
    }

    /// [`MemberQuota::take`] against this process's own log.
    fn take_here(&self, members: &[&str]) -> Result<(), WecomError> {
        let now = Instant::now();
        let mut log = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let mut sent = HashMap::new();
        for member in members {
            let times = log.entry((*member).to_string()).or_default();
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= HOUR)
            {
                times.pop_front();
            }
            let ages = times.iter().rev().map(|t| now.duration_since(*t)).collect();
            sent.insert((*member).to_string(), ages);
        }
        self.check(members, &sent)?;
        for member in members {
            log.entry((*member).to_string()).or_default().push_back(now);
        }
        Ok(())
    }

    /// Refuses, saying when the earliest slot frees up, if any of `members` is at a cap; `sent`
    /// holds how long ago each member's messages of the last hour went, newest first.
    fn check(
        &self,
        members: &[&str],
        sent: &HashMap<String, Vec<Duration>>,
    ) -> Result<(), WecomError> {
        for member in members {
            let ages = sent.get(*member).map_or(&[][..], Vec::as_slice);
            let in_minute = ages.iter().filter(|age| **age < MINUTE).count();
            let wait = if in_minute >= self.per_minute {
                let oldest_in_minute = ages.get(self.per_minute.saturating_sub(1));
                oldest_in_minute.map(|age| MINUTE.saturating_sub(*age))
            } else if ages.len() >= self.per_hour {
                ages.last().map(|age| HOUR.saturating_sub(*age))
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
    async fn the_pace_holds_at_wecoms_rate_without_drifting_below_it() {
        // 9000 a minute is one call per 6.667 ms; the timer fires on whole milliseconds.
        let limiter = Limiter::new(9000, 8, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..900 {
            drop(limiter.acquire("p").await.unwrap());
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(5_990) && took <= Duration::from_millis(6_050),
            "900 calls at 9000/min took {took:?}, not 6 s"
        );
        // After an idle spell, at most one slot is caught up: no burst.
        tokio::time::advance(Duration::from_secs(10)).await;
        let idle = Instant::now();
        for _ in 0..10 {
            drop(limiter.acquire("p").await.unwrap());
        }
        assert!(
            idle.elapsed() >= Duration::from_millis(8 * 20 / 3),
            "{:?}",
            idle.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_hourly_budget_holds_ordinary_calls_and_keeps_a_reserve_for_urgent_ones() {
        // 3600 an hour: a bucket of 360 refilling at one a second, the last 36 for urgent calls.
        let limiter = Limiter::new(60_000, 8, Duration::from_secs(60)).with_hourly_budget(3600);
        let start = Instant::now();
        for _ in 0..324 {
            drop(limiter.acquire("p").await.unwrap());
        }
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        // Ordinary calls now wait for the bucket to refill above the reserve: one a second.
        let ordinary = Instant::now();
        drop(limiter.acquire("p").await.unwrap());
        assert!(
            ordinary.elapsed() >= Duration::from_millis(600),
            "{:?}",
            ordinary.elapsed()
        );
        let next = Instant::now();
        drop(limiter.acquire("p").await.unwrap());
        assert!(
            next.elapsed() >= Duration::from_millis(990),
            "{:?}",
            next.elapsed()
        );
        // An urgent call still goes at once, out of the reserve.
        let urgent = Instant::now();
        drop(super::super::urgent(limiter.acquire("p")).await.unwrap());
        assert!(
            urgent.elapsed() < Duration::from_millis(10),
            "{:?}",
            urgent.elapsed()
        );
        // Over an hour, about the budget and never more than 1.1 × it.
        let hour = Instant::now();
        let mut calls = 0;
        while hour.elapsed() < Duration::from_secs(3600) {
            drop(limiter.acquire("p").await.unwrap());
            calls += 1;
        }
        assert!(
            (3500..=3600).contains(&calls),
            "{calls} calls in the next hour"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_path_refuses_rather_than_wait_past_the_limit() {
        let limiter = Limiter::new(6000, 8, Duration::from_secs(2));
        drop(limiter.acquire("p").await.unwrap());
        limiter.block("p", Duration::from_secs(60)).await;
        let err = limiter.acquire("p").await.unwrap_err();
        assert!(err.retry_after().unwrap() > Duration::from_secs(50));
        limiter.reduce_concurrency("p");
        limiter.reduce_concurrency("p");
        assert_eq!(limiter.concurrency_of("p"), 6);
        limiter.recovered("p");
        assert_eq!(limiter.concurrency_of("p"), 7);
    }

    /// Waits (on the paused clock, without advancing it) until `n` callers of `path` queue.
    async fn until_queued(limiter: &Limiter, path: &'static str, n: usize) {
        while limiter.queued(path) < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_urgent_caller_takes_the_next_slot_ahead_of_queued_ordinary_ones() {
        let limiter = Arc::new(Limiter::new(600, 8, Duration::from_secs(5))); // one per 100 ms
        let start = Instant::now();
        drop(limiter.acquire("p").await.unwrap()); // the slot at 0 ms
        let served = Arc::new(Mutex::new(Vec::new()));
        let caller = |name: &'static str, urgent: bool| {
            let limiter = limiter.clone();
            let served = served.clone();
            tokio::spawn(async move {
                let permit = if urgent {
                    crate::wecom::client::urgent(limiter.acquire("p")).await
                } else {
                    limiter.acquire("p").await
                };
                drop(permit.unwrap());
                served.lock().unwrap().push((name, start.elapsed()));
            })
        };
        let mut callers = Vec::new();
        for name in ["o1", "o2", "o3", "o4"] {
            callers.push(caller(name, false));
        }
        until_queued(&limiter, "p", 4).await;
        callers.push(caller("urgent", true));
        for c in callers {
            c.await.unwrap();
        }
        let served = served.lock().unwrap().clone();
        let order: Vec<_> = served.iter().map(|(name, _)| *name).collect();
        assert_eq!(order, ["urgent", "o1", "o2", "o3", "o4"]);
        // The pace holds over all of them: one slot every 100 ms after the first call's.
        for (i, (_, at)) in served.iter().enumerate() {
            let slot = Duration::from_millis(100 * (i as u64 + 1));
            assert!(
                *at >= slot && *at < slot + Duration::from_millis(5),
                "{served:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_counts_the_callers_ahead_and_urgent_ones_skip_the_queue() {
        let limiter = Arc::new(Limiter::new(600, 8, Duration::from_millis(250)));
        drop(limiter.acquire("p").await.unwrap());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.acquire("p").await.map(drop) })
            })
            .collect();
        until_queued(&limiter, "p", 2).await;
        // Third in line: its turn is 300 ms away, past max_wait.
        let err = limiter.acquire("p").await.unwrap_err();
        assert!(matches!(err, WecomError::Throttled { .. }), "{err}");
        assert_eq!(err.retry_after(), Some(Duration::from_millis(300)));
        // An urgent caller has nobody ahead: its turn is the next slot.
        let started = Instant::now();
        drop(
            crate::wecom::client::urgent(limiter.acquire("p"))
                .await
                .unwrap(),
        );
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        // It pushed the second ordinary caller's turn past max_wait: that one is refused too.
        let mut results = Vec::new();
        for w in waiters {
            results.push(w.await.unwrap());
        }
        assert!(results[0].is_ok());
        assert!(
            matches!(results[1], Err(WecomError::Throttled { .. })),
            "{results:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_urgent_caller_that_gives_up_lets_the_queue_move_on() {
        let limiter = Arc::new(Limiter::new(600, 8, Duration::from_secs(5)));
        drop(limiter.acquire("p").await.unwrap());
        let ordinary = {
            let limiter = limiter.clone();
            tokio::spawn(async move { drop(limiter.acquire("p").await.unwrap()) })
        };
        until_queued(&limiter, "p", 1).await;
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            crate::wecom::client::urgent(limiter.acquire("p")),
        )
        .await;
        assert!(gave_up.is_err());
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(1), ordinary)
            .await
            .expect("the ordinary caller was not left waiting")
            .unwrap();
        assert!(started.elapsed() <= Duration::from_millis(55));
        assert_eq!(limiter.queued("p"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_enforced_lowered_after_45033_and_urgent_callers_go_first() {
        let limiter = Arc::new(Limiter::new(60_000, 2, Duration::from_secs(5)));
        limiter.reduce_concurrency("p");
        assert_eq!(limiter.concurrency_of("p"), 1);
        let first = limiter.acquire("p").await.unwrap();
        let served = Arc::new(Mutex::new(Vec::new()));
        let spawn = |name: &'static str, urgent: bool| {
            let limiter = limiter.clone();
            let served = served.clone();
            tokio::spawn(async move {
                let permit = if urgent {
                    crate::wecom::client::urgent(limiter.acquire("p")).await
                } else {
                    limiter.acquire("p").await
                };
                served.lock().unwrap().push(name);
                drop(permit.unwrap());
            })
        };
        let ordinary = spawn("ordinary", false);
        until_queued(&limiter, "p", 1).await;
        let urgent = spawn("urgent", true);
        until_queued(&limiter, "p", 2).await;
        // One call at once: both wait, however long the first call takes.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(served.lock().unwrap().is_empty());
        drop(first);
        ordinary.await.unwrap();
        urgent.await.unwrap();
        assert_eq!(*served.lock().unwrap(), ["urgent", "ordinary"]);
        limiter.recovered("p");
        assert_eq!(limiter.concurrency_of("p"), 2);
        let a = limiter.acquire("p").await.unwrap();
        let b = limiter.acquire("p").await.unwrap();
        drop((a, b));
    }

    #[tokio::test(start_paused = true)]
    async fn members_get_thirty_app_messages_a_minute() {
        let quota = MemberQuota::default();
        for _ in 0..30 {
            quota.take(&["zhangsan", "lisi"]).await.unwrap();
        }
        let err = quota.take(&["wangwu", "zhangsan"]).await.unwrap_err();
        assert!(err.to_string().contains("zhangsan"));
        // All or nothing: wangwu was not charged for the refused message.
        for _ in 0..30 {
            quota.take(&["wangwu"]).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        quota.take(&["zhangsan"]).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn members_get_a_thousand_app_messages_an_hour() {
        let quota = MemberQuota::default();
        // 25 a minute for 40 minutes: within the minute's cap, at the hour's by then.
        for _ in 0..40 {
            for _ in 0..25 {
                quota.take(&["zhangsan"]).await.unwrap();
            }
            tokio::time::advance(Duration::from_secs(60)).await;
        }
        let err = quota.take(&["zhangsan"]).await.unwrap_err();
        // The first of them went 40 minutes ago: the hour frees a slot 20 minutes on.
        assert_eq!(err.retry_after(), Some(Duration::from_secs(20 * 60)));
        tokio::time::advance(Duration::from_secs(20 * 60)).await;
        quota.take(&["zhangsan"]).await.unwrap();
    }
}
