//! The inbox dispatcher: takes stored events in order of arrival and hands each to the handler
//! registered for its kind. An event whose kind has no handler yet is marked `unhandled`, visibly,
//! and waits for `siyu events replay`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::app::ingest::Handed;
use crate::clock::Clock;
use crate::config::InboxSettings;
use crate::jobs::BoxFuture;
use crate::store::Store;
use crate::store::inbox::{ClaimedEvent, EventOutcome, InboxStatus};
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

type Handler =
    Arc<dyn Fn(EventContext, Event) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

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

    pub fn register<F, Fut>(&mut self, kind: &str, handler: F)
    where
        F: Fn(EventContext, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.handlers.insert(
            kind.to_string(),
            Arc::new(move |ctx, ev| Box::pin(handler(ctx, ev))),
        );
    }
}

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

    /// Handles a claimed batch in order and records the outcomes together. The batch is finished
    /// even during shutdown: each event is quick, and an abandoned lease only delays it.
    async fn handle_batch(&self, events: Vec<Handed>) {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            outcomes.push(self.handle(event.claimed, event.event).await);
        }
        if let Err(e) = self
            .store
            .finish_events(&outcomes, self.clock.now_ms())
            .await
        {
            tracing::warn!(error = %e, "could not record event outcomes; their leases expire and they run again");
        }
    }

    async fn handle(&self, claimed: ClaimedEvent, parsed: Option<Event>) -> EventOutcome {
        let span = tracing::info_span!("event", id = claimed.id, kind = %claimed.kind);
        let (status, error) = self.outcome(&claimed, parsed).instrument(span).await;
        EventOutcome {
            id: claimed.id,
            status,
            error,
        }
    }

    async fn outcome(
        &self,
        claimed: &ClaimedEvent,
        parsed: Option<Event>,
    ) -> (InboxStatus, Option<String>) {
        let Some(handler) = self.handlers.handlers.get(&claimed.kind) else {
            if claimed.kind == UNPARSED_KIND {
                let why = event::parse(&claimed.xml).err().map(|e| e.to_string());
                return (InboxStatus::Failed, why.or(Some("unparsed".into())));
            }
            return (InboxStatus::Unhandled, None);
        };
        // Handed over by the callback already parsed; from the database, parsed here.
        let event = match parsed.map_or_else(|| event::parse(&claimed.xml), Ok) {
            Ok(event) => event,
            Err(e) => return (InboxStatus::Failed, Some(e.to_string())),
        };
        let ctx = EventContext {
            inbox_id: claimed.id,
            received_at: claimed.received_at,
        };
        match tokio::spawn(handler(ctx, event)).await {
            Ok(Ok(())) => (InboxStatus::Done, None),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "event handler failed");
                (InboxStatus::Failed, Some(e))
            }
            Err(e) => (InboxStatus::Failed, Some(format!("handler panicked: {e}"))),
        }
    }
}
