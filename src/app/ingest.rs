//! Callback ingest with group commit: concurrent requests hand their event to one writer task,
//! which stores everything waiting in one transaction and answers each request once the commit
//! is durable. One fsync serves a whole batch instead of one per request.

use tokio::sync::{mpsc, oneshot};

use crate::store::inbox::{self, InsertOutcome, NewInboxEvent};
use crate::store::{Store, StoreError, Tx};
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
pub fn dedupe_key(receive_id: &str, event: Option<&Event>, xml: &str) -> String {
    use sha2::{Digest, Sha256};
    match event.and_then(|ev| Some((ev, ev.msg_id()?))) {
        Some((ev, msg_id)) => format!(
            "msgid:{receive_id}:{}:{msg_id}",
            ev.header().agent_id.as_deref().unwrap_or("")
        ),
        None => format!("sha256:{}", hex::encode(Sha256::digest(xml.as_bytes()))),
    }
}

struct Pending {
    event: NewInboxEvent,
    reply: oneshot::Sender<Result<InsertOutcome, IngestError>>,
}

/// The handle requests use; cheap to clone. When every handle is dropped the writer finishes
/// what it holds and stops.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Pending>,
}

impl Ingest {
    pub fn start(store: Store, batch_max: usize) -> (Ingest, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(batch_max * 4);
        let writer = tokio::spawn(write_batches(store, rx, batch_max));
        (Ingest { tx }, writer)
    }

    /// Returns once the event is committed (or known to be a duplicate of a committed one).
    pub async fn submit(&self, event: NewInboxEvent) -> Result<InsertOutcome, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { event, reply })
            .await
            .map_err(|_| IngestError::Stopped)?;
        answer.await.map_err(|_| IngestError::Stopped)?
    }
}

async fn write_batches(store: Store, mut rx: mpsc::Receiver<Pending>, batch_max: usize) {
    let mut batch = Vec::with_capacity(batch_max);
    while rx.recv_many(&mut batch, batch_max).await > 0 {
        let events: Vec<&NewInboxEvent> = batch.iter().map(|p| &p.event).collect();
        let result = store_batch(&store, &events).await;
        match result {
            Ok(outcomes) => {
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

async fn store_batch(
    store: &Store,
    events: &[&NewInboxEvent],
) -> Result<Vec<InsertOutcome>, StoreError> {
    let mut tx: Tx = store.begin().await?;
    let mut outcomes = Vec::with_capacity(events.len());
    for event in events {
        outcomes.push(inbox::insert(&mut tx, event).await?);
    }
    if outcomes
        .iter()
        .any(|o| matches!(o, InsertOutcome::Stored(_)))
    {
        inbox::notify_replicas(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}
