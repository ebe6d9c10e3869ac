//! The inbox dispatcher: takes stored events in order of arrival and hands each to the handler
//! registered for its kind. An event whose kind has no handler yet is marked `unhandled`, visibly,
//! and waits for `siyu events replay`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::{InboxSettings, JobSettings};
use crate::jobs::BoxFuture;
use crate::store::Store;
use crate::store::inbox::{ClaimedEvent, InboxStatus};
use crate::wecom::event::{self, Event};

/// Kind stored for a callback whose decrypted XML does not parse: kept, never dropped, and
/// marked failed with the parse error so an operator sees it.
pub const UNPARSED_KIND: &str = "unparsed";

/// What an event handler gets besides the event.
#[derive(Clone)]
pub struct EventContext {
    pub store: Store,
    pub clock: Clock,
    pub jobs: JobSettings,
    pub inbox_id: i64,
}

type Handler =
    Arc<dyn Fn(EventContext, Event) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Event kinds (as [`Event::kind`] names them) and their handlers.
#[derive(Clone, Default)]
pub struct EventHandlers {
    handlers: HashMap<String, Handler>,
}

impl EventHandlers {
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
    pub jobs: JobSettings,
    pub inbox: InboxSettings,
    pub poll: Duration,
    pub handlers: EventHandlers,
}

impl Dispatcher {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let signals = self.store.signals().clone();
        let lease_ms = (self.inbox.lease_secs * 1000) as i64;
        while !*shutdown.borrow() {
            let notified = signals.inbox.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self
                .store
                .claim_inbox(self.clock.now_ms(), lease_ms, 64)
                .await
            {
                Ok(events) if !events.is_empty() => {
                    for event in events {
                        // Finish the claimed batch even during shutdown: each is quick, and an
                        // abandoned lease would only delay it.
                        self.handle(event).await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "claiming inbox events failed"),
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn handle(&self, claimed: ClaimedEvent) {
        let span = tracing::info_span!("event", id = claimed.id, kind = %claimed.kind);
        let (status, error) = self.outcome(&claimed).instrument(span).await;
        if let Err(e) = self
            .store
            .finish_inbox(claimed.id, status, error.as_deref(), self.clock.now_ms())
            .await
        {
            tracing::warn!(id = claimed.id, error = %e, "could not record the event's outcome; its lease will expire and it runs again");
        }
    }

    async fn outcome(&self, claimed: &ClaimedEvent) -> (InboxStatus, Option<String>) {
        let Some(handler) = self.handlers.handlers.get(&claimed.kind) else {
            if claimed.kind == UNPARSED_KIND {
                let why = event::parse(&claimed.xml).err().map(|e| e.to_string());
                return (InboxStatus::Failed, why.or(Some("unparsed".into())));
            }
            return (InboxStatus::Unhandled, None);
        };
        let event = match event::parse(&claimed.xml) {
            Ok(event) => event,
            Err(e) => return (InboxStatus::Failed, Some(e.to_string())),
        };
        let ctx = EventContext {
            store: self.store.clone(),
            clock: self.clock.clone(),
            jobs: self.jobs.clone(),
            inbox_id: claimed.id,
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
