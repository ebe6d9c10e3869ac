//! Callback ingest with group commit: concurrent requests hand their event to one writer task,
//! which stores everything waiting in one transaction and answers each request once the commit
//! is durable. One fsync serves a whole batch instead of one per request.
//!
//! The writer stores new events already claimed by this process (leased, as if the dispatcher
//! had claimed them) and passes them to the dispatcher in memory: no second write to claim them,
//! no read to fetch them back. If the process dies first, the lease runs out and the dispatcher
//! of the next process takes them.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::store::Store;
use crate::store::inbox::{self, ClaimedEvent, InsertOutcome, NewInboxEvent};
use crate::wecom::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("storing the event failed: {0}")]
    Store(String),
    #[error("the inbox writer has stopped")]
    Stopped,
}

/// The key under which an event is stored once. `MsgId` (scoped to the receiver and the app)
/// when the event carries one; otherwise the SHA-256 of the decrypted XML, since a redelivery
/// repeats the event byte for byte while distinct events in the same second differ somewhere.
/// `FromUserName + CreateTime` is *not* unique: many customers can add in one second.
/// An event that did not parse (`None`) is keyed by its hash too.
///
/// The hash is prefixed with the event's `CreateTime` (part of the hashed XML, so the same for
/// every redelivery): keys then arrive roughly in order, and the unique index grows at its right
/// edge instead of dirtying a random page for every insert.
pub fn dedupe_key(receive_id: &str, event: Option<&Event>, xml: &str) -> String {
    use sha2::{Digest, Sha256};
    if let Some(ev) = event
        && let Some(msg_id) = ev.msg_id()
    {
        let agent = ev.header().agent_id.as_deref().unwrap_or("");
        return format!("msgid:{receive_id}:{agent}:{msg_id}");
    }
    let created = event.and_then(|ev| ev.header().create_time).unwrap_or(0);
    format!(
        "sha256:{created:011}:{}",
        hex::encode(Sha256::digest(xml.as_bytes()))
    )
}

/// The dedupe key of a decrypted callback, as the endpoint computes it.
pub fn dedupe_key_of_xml(receive_id: &str, xml: &str) -> String {
    dedupe_key(
        receive_id,
        crate::wecom::event::parse(xml).ok().as_ref(),
        xml,
    )
}

struct Pending {
    event: NewInboxEvent,
    /// The event as the callback parsed it, so the dispatcher need not parse the XML again.
    parsed: Option<Event>,
    reply: oneshot::Sender<Result<InsertOutcome, IngestError>>,
}

/// The handle requests use; cheap to clone. When every handle is dropped the writer finishes
/// what it holds and stops.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Pending>,
}

/// Events this process stored and claimed in the same transaction, handed to its dispatcher
/// without a second trip through the database.
pub type Handoff = mpsc::Sender<Vec<Handed>>;

/// A stored event handed to the dispatcher, with its parsed form when the callback had it.
pub struct Handed {
    pub claimed: ClaimedEvent,
    pub event: Option<Event>,
}

impl Ingest {
    /// Starts the writer. New events are stored already leased to this process and sent to
    /// `handoff`; when the dispatcher lags so far that the channel is full they are stored as
    /// pending instead, for the dispatcher to claim later.
    pub fn start(
        store: Store,
        batch_max: usize,
        lease_ms: i64,
        clock: Clock,
        handoff: Handoff,
    ) -> (Ingest, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(batch_max * 4);
        let writer = Writer {
            store,
            batch_max,
            lease_ms,
            clock,
            handoff,
        };
        (Ingest { tx }, tokio::spawn(writer.run(rx)))
    }

    /// Returns once the event is committed (or known to be a duplicate of a committed one).
    /// `parsed` is the event the XML holds, when the caller parsed it (it travels on to the
    /// dispatcher).
    pub async fn submit(
        &self,
        event: NewInboxEvent,
        parsed: Option<Event>,
    ) -> Result<InsertOutcome, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                event,
                parsed,
                reply,
            })
            .await
            .map_err(|_| IngestError::Stopped)?;
        answer.await.map_err(|_| IngestError::Stopped)?
    }
}

struct Writer {
    store: Store,
    batch_max: usize,
    lease_ms: i64,
    clock: Clock,
    handoff: Handoff,
}

/// How long the inbox writer goes without a callback before it tells the other writers that
/// callbacks no longer keep it busy: longer than the gap between two batches of a burst (the
/// time clients take to send again once answered), short against a handler's lag.
const LULL_AFTER: Duration = Duration::from_millis(2);

impl Writer {
    /// Waits for the callbacks of the next batch: false once every handle is gone. While they
    /// come one batch after another the store hears that callbacks keep the writer busy, so
    /// that the dispatcher holds back ([`Store::inbox_lull`]).
    async fn next_batch(&self, rx: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) -> bool {
        let more = tokio::time::timeout(LULL_AFTER, rx.recv_many(batch, self.batch_max));
        let n = match more.await {
            Ok(n) => n,
            Err(_) => {
                self.store.set_inbox_busy(false);
                rx.recv_many(batch, self.batch_max).await
            }
        };
        self.store.set_inbox_busy(n > 0);
        n > 0
    }

    async fn run(self, mut rx: mpsc::Receiver<Pending>) {
        let mut batch = Vec::with_capacity(self.batch_max);
        while self.next_batch(&mut rx, &mut batch).await {
            let events: Vec<&NewInboxEvent> = batch.iter().map(|p| &p.event).collect();
            // Reserve room in the dispatcher's queue first: with a permit the events are stored
            // leased to us and handed over; without one they are stored pending.
            let permit = self.handoff.clone().try_reserve_owned().ok();
            let lease_until = permit.as_ref().map(|_| self.clock.now_ms() + self.lease_ms);
            let stored = inbox::insert_batch(&self.store, &events, lease_until).await;
            drop(events);
            match stored {
                Ok(outcomes) => {
                    if let Some(permit) = permit {
                        // Taken, not copied: the request needs only its outcome from here on.
                        let handed: Vec<Handed> = batch
                            .iter_mut()
                            .zip(&outcomes)
                            .filter_map(|(p, o)| match o {
                                InsertOutcome::Stored(id) => Some(Handed {
                                    claimed: ClaimedEvent {
                                        id: *id,
                                        kind: std::mem::take(&mut p.event.kind),
                                        xml: std::mem::take(&mut p.event.xml),
                                        received_at: p.event.received_at,
                                        attempts: 1,
                                    },
                                    event: p.parsed.take(),
                                }),
                                InsertOutcome::Duplicate(_) => None,
                            })
                            .collect();
                        if !handed.is_empty() {
                            permit.send(handed);
                        }
                    }
                    for (pending, outcome) in batch.drain(..).zip(outcomes) {
                        let _ = pending.reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, events = batch.len(), "inbox batch failed; answering 500 so WeCom retries");
                    for pending in batch.drain(..) {
                        let _ = pending.reply.send(Err(IngestError::Store(e.to_string())));
                    }
                }
            }
        }
    }
}
