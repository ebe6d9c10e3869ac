//! The inbox dispatcher: takes stored events in order of arrival and hands each to the handler
//! registered for its kind. An event whose kind has no handler yet is marked `unhandled`, visibly,
//! and waits for `siyu events replay`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::app::ingest::Handed;
use crate::clock::Clock;
use crate::config::InboxSettings;
use crate::jobs::BoxFuture;
use crate::store::inbox::{ClaimedEvent, EventOutcome, InboxStatus, finish_events_in};
use crate::store::{Store, Tx};
use crate::wecom::event::{self, Event};

/// Kind stored for a callback whose decrypted XML does not parse: kept, never dropped, and
/// marked failed with the parse error so an operator sees it.
pub const UNPARSED_KIND: &str = "unparsed";

/// Pending events claimed at once from the database.
const CLAIM_BATCH: i64 = 256;

/// What an event handler gets besides the event. Handlers bring their own services (they
/// capture them when registered); the context says which stored event this is, the key of the
/// work it decides.
#[derive(Clone, Copy)]
pub struct EventContext {
    pub inbox_id: i64,
    /// When its callback arrived (Unix ms).
    pub received_at: i64,
}

/// A handler writes what an event decides in the transaction it is given, which it must not
/// commit: the dispatcher commits it with the event's outcome, for a batch of events at once.
/// A write through the `Store` instead of the `Tx` would wait for ever on SQLite, for the write
/// turn the dispatcher's own transaction holds.
type Handler = Arc<
    dyn for<'a> Fn(EventContext, Event, &'a mut Tx) -> BoxFuture<'a, Result<(), String>>
        + Send
        + Sync,
>;

/// Event kinds (as [`Event::kind`] names them) and their handlers.
#[derive(Clone, Default)]
pub struct EventHandlers {
    handlers: HashMap<String, Handler>,
}

impl EventHandlers {
    /// Takes `other`'s handlers, replacing any of the same kind.
    pub fn extend(&mut self, other: EventHandlers) {
        self.handlers.extend(other.handlers);
    }

    pub fn register<F>(&mut self, kind: &str, handler: F)
    where
        F: for<'a> Fn(EventContext, Event, &'a mut Tx) -> BoxFuture<'a, Result<(), String>>
            + Send
            + Sync
            + 'static,
    {
        self.handlers.insert(kind.to_string(), Arc::new(handler));
    }
}

/// Events handled in one transaction at most. On SQLite the transaction holds the process's one
/// write turn, which the inbox writer (and so every waiting callback) queues for.
const EVENTS_PER_TRANSACTION: usize = 64;

/// The longest a transaction of handlers waits for callbacks to stop keeping the inbox writer
/// busy. Under a burst that does not stop, [`EVENTS_WHEN_DEFERRED`] events are handled every
/// this long at least, and the rest once it ends.
const MOST_DEFERRED: Duration = Duration::from_millis(20);

/// Events a transaction that waited [`MOST_DEFERRED`] handles before it gives the write turn
/// back to a waiting inbox writer: a few milliseconds of handlers, the callbacks' wait short.
const EVENTS_WHEN_DEFERRED: usize = 8;

pub struct Dispatcher {
    pub store: Store,
    pub clock: Clock,
    pub inbox: InboxSettings,
    pub poll: Duration,
    pub handlers: EventHandlers,
}

impl Dispatcher {
    /// Handles events as they come: those the ingest writer hands over (already claimed), then
    /// pending ones in the database (replays; leftovers of a process that died). At shutdown it
    /// keeps taking handed-over events until the writer has stopped, so none is left leased.
    pub async fn run(
        self,
        mut handoff: mpsc::Receiver<Vec<Handed>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let signals = self.store.signals().clone();
        let lease_ms = (self.inbox.lease_secs * 1000) as i64;
        // The database is read only when there may be something in it: at start, when a commit
        // stored events pending (the signal), and once a poll interval. Events handed over need
        // no read, and under a steady stream of them a claim and a reclaim after every batch
        // were two writes competing with the inbox writer for SQLite's one write turn.
        let mut notified = Box::pin(signals.inbox.notified());
        notified.as_mut().enable();
        let mut look = true;
        // The first turn is a poll: leases left by a process that died are taken back at start.
        let mut next_poll = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                match handoff.recv().await {
                    Some(batch) => {
                        self.handle_batch(batch).await;
                        continue;
                    }
                    None => return,
                }
            }
            let now = tokio::time::Instant::now();
            let polled = now >= next_poll;
            if polled {
                next_poll = now + self.poll;
                look = true;
            }
            if let Ok(batch) = handoff.try_recv() {
                self.handle_batch(batch).await;
                if !polled {
                    continue;
                }
            }
            if look {
                // A fresh wait registered before the claim, so a commit between the claim and
                // the wait still wakes us.
                notified = Box::pin(signals.inbox.notified());
                notified.as_mut().enable();
                if self.claim_and_handle(lease_ms).await {
                    continue;
                }
                look = false;
            }
            // The moment to take back events whose handler died with its lease.
            if polled && self.reclaim_expired().await {
                look = true;
                continue;
            }
            tokio::select! {
                Some(batch) = handoff.recv() => self.handle_batch(batch).await,
                _ = &mut notified => look = true,
                _ = tokio::time::sleep_until(next_poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Claims pending events from the database and handles them: whether there were any. (A
    /// failed claim is logged and counts as none: the next poll tries again.)
    async fn claim_and_handle(&self, lease_ms: i64) -> bool {
        match self
            .store
            .claim_inbox(self.clock.now_ms(), lease_ms, CLAIM_BATCH)
            .await
        {
            Ok(events) if !events.is_empty() => {
                let claimed = events
                    .into_iter()
                    .map(|claimed| Handed {
                        claimed,
                        event: None,
                    })
                    .collect();
                self.handle_batch(claimed).await;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "claiming inbox events failed");
                false
            }
        }
    }

    /// Puts events whose lease ran out back to pending: whether there were any.
    async fn reclaim_expired(&self) -> bool {
        match self.store.reclaim_expired_events(self.clock.now_ms()).await {
            Ok(0) => false,
            Ok(n) => {
                tracing::info!(events = n, "took back events whose lease expired");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "reclaiming expired events failed");
                false
            }
        }
    }

    /// Handles a claimed batch in order, a transaction for up to [`EVENTS_PER_TRANSACTION`]
    /// events holding what their handlers wrote and their outcomes: one commit for them all.
    /// Should a handler fail, that transaction is undone and its events are handled again each in
    /// a transaction of its own, so one bad event fails alone. The batch is finished even during
    /// shutdown: each event is quick, and an abandoned lease only delays it.
    async fn handle_batch(&self, mut events: Vec<Handed>) {
        let mut start = 0;
        while start < events.len() {
            let end = events.len().min(start + EVENTS_PER_TRANSACTION);
            let these = &mut events[start..end];
            match self.handle_together(these).await {
                Ok(handled) => start += handled,
                Err(e) => {
                    if these.len() > 1 {
                        tracing::debug!(error = %e, events = these.len(), "handling events together failed; handling each alone");
                    }
                    for one in these.chunks_mut(1) {
                        self.handle_alone(one).await;
                    }
                    start = end;
                }
            }
        }
    }

    /// Handles one event in a transaction of its own; a failure is recorded as the event's.
    async fn handle_alone(&self, one: &mut [Handed]) {
        let Err(e) = self.handle_together(one).await else {
            return;
        };
        let claimed = &one[0].claimed;
        tracing::warn!(id = claimed.id, kind = %claimed.kind, error = %e, "event handler failed");
        let failed = EventOutcome {
            id: claimed.id,
            status: InboxStatus::Failed,
            error: Some(e),
        };
        if let Err(e) = self
            .store
            .finish_events(&[failed], self.clock.now_ms())
            .await
        {
            tracing::warn!(error = %e, "could not record an event's failure; its lease expires and it runs again");
        }
    }

    /// Handles events from the start of `events` in one transaction and commits it with their
    /// outcomes: how many it handled. It begins once callbacks no longer keep the inbox writer
    /// busy, or after [`MOST_DEFERRED`]. It handles all of them unless the inbox writer came to
    /// wait for the write turn the transaction holds (SQLite): then it commits after the event in
    /// hand (after [`EVENTS_WHEN_DEFERRED`] of them, when it waited the whole time), and the
    /// callbacks waiting on the inbox go first. Err: a handler failed, or the transaction did;
    /// nothing of it is kept. Each event's parsed form is taken from its `Handed` at the first
    /// try: a second parses the stored XML.
    async fn handle_together(&self, events: &mut [Handed]) -> Result<usize, String> {
        // In a burst of callbacks, their answers go first; a transaction that waited the whole
        // time then keeps the turn for a few events at least, so handling never stops.
        let yields = self.store.inbox_lull(MOST_DEFERRED).await;
        let mut tx = self.store.begin().await.map_err(|e| e.to_string())?;
        let mut outcomes = Vec::with_capacity(events.len());
        for handed in events.iter_mut() {
            let claimed = &handed.claimed;
            let span = tracing::info_span!("event", id = claimed.id, kind = %claimed.kind);
            let outcome = self
                .outcome(&mut tx, claimed, handed.event.take())
                .instrument(span)
                .await;
            match outcome {
                Ok((status, error)) => outcomes.push(EventOutcome {
                    id: claimed.id,
                    status,
                    error,
                }),
                Err(e) => {
                    // Undone now, not when the connection is next used: on SQLite it holds the
                    // file's write lock until then.
                    if let Err(undo) = tx.rollback().await {
                        tracing::warn!(error = %undo, "rolling back a failed event batch failed");
                    }
                    return Err(e);
                }
            }
            if self.store.inbox_writer_waiting()
                && (yields || outcomes.len() >= EVENTS_WHEN_DEFERRED)
            {
                break;
            }
        }
        let committed = async {
            finish_events_in(&mut tx, &outcomes, self.clock.now_ms()).await?;
            tx.commit().await
        };
        committed.await.map_err(|e| e.to_string())?;
        Ok(outcomes.len())
    }

    /// An event's outcome, its handler's writes in `tx`; Err when its handler failed (or
    /// panicked), for the caller to undo them.
    async fn outcome(
        &self,
        tx: &mut Tx,
        claimed: &ClaimedEvent,
        parsed: Option<Event>,
    ) -> Result<(InboxStatus, Option<String>), String> {
        let Some(handler) = self.handlers.handlers.get(&claimed.kind) else {
            if claimed.kind == UNPARSED_KIND {
                let why = event::parse(&claimed.xml).err().map(|e| e.to_string());
                return Ok((InboxStatus::Failed, why.or(Some("unparsed".into()))));
            }
            return Ok((InboxStatus::Unhandled, None));
        };
        // Handed over by the callback already parsed; from the database, parsed here.
        let event = match parsed.map_or_else(|| event::parse(&claimed.xml), Ok) {
            Ok(event) => event,
            Err(e) => return Ok((InboxStatus::Failed, Some(e.to_string()))),
        };
        let ctx = EventContext {
            inbox_id: claimed.id,
            received_at: claimed.received_at,
        };
        // A panic is this event's failure, not the dispatcher's end.
        match AssertUnwindSafe(handler(ctx, event, tx))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => Ok((InboxStatus::Done, None)),
            Ok(Err(e)) => Err(e),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(format!("handler panicked: {why}"))
            }
        }
    }
}
