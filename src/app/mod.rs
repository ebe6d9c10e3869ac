//! The use-cases, one module per feature. Each effect siyu has on WeCom has one owner:
//! `tags` writes every siyu tag on a relation, `notes` every remark, description and member
//! notice, `contacts` the welcome message. Features meet through hooks ([`hooks`]), not by calling
//! each other's jobs: a tier change calls, in its own transaction, what tags, notes and groups
//! registered for it. Each feature registers its own event handlers, jobs, schedules and
//! hooks in [`register_features`]; the composition root names none of them.
//!
//! The modules depend on each other in one direction only (no circle), from the edge inwards:
//! `staff`, `customers`, `import`, `activity`, `stats` → `contacts` → `tiers` → `segments` → `groups` →
//! `notes`, `channels` → `tags` → `hooks`, `templates`.

pub mod activity;
pub mod campaigns;
pub mod channels;
pub mod contacts;
pub mod customers;
pub mod dispatch;
pub mod groups;
pub mod hooks;
pub mod import;
pub mod ingest;
pub mod mass;
pub mod media;
pub mod notes;
pub mod queue;
pub mod retention;
pub mod segments;
pub mod sessions;
pub mod staff;
pub mod stats;
pub mod tags;
pub mod templates;
pub mod tiers;
pub mod users;

use std::sync::Arc;

use serde::Serialize;

use crate::clock::Clock;
use crate::config::Settings;
use crate::ids::{ExternalUserId, UserId};
use crate::jobs::scheduler::Recurring;
use crate::jobs::{self, Registry};
use crate::store::{Store, Tx};
use crate::wecom::client::{WecomClient, WecomError};
use dispatch::EventHandlers;
use hooks::Hooks;
use templates::Templates;

/// What the use-cases work with; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub wecom: WecomClient,
    pub clock: Clock,
    pub settings: Arc<Settings>,
    pub templates: Arc<Templates>,
    /// One tag-library sync at a time in this process (two would create the same tag twice);
    /// `tags::ensure` also takes the store's lock for it, which holds across replicas.
    pub tag_sync: Arc<tokio::sync::Mutex<()>>,
    /// What the features registered for each other's decisions (see [`Services::new`]).
    hooks: Arc<Hooks>,
}

impl Services {
    /// The services, with every feature's hooks in place (a decision made through them sets off
    /// what the features registered for it, in a server or in a one-shot command alike).
    pub fn new(
        store: Store,
        wecom: WecomClient,
        clock: Clock,
        settings: Arc<Settings>,
        templates: Arc<Templates>,
    ) -> Services {
        let mut hooks = Hooks::default();
        tags::hooks(&mut hooks);
        notes::hooks(&mut hooks);
        groups::hooks(&mut hooks);
        Services {
            store,
            wecom,
            clock,
            settings,
            templates,
            tag_sync: Arc::default(),
            hooks: Arc::new(hooks),
        }
    }

    /// What the features registered for each other's decisions.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Enqueues a job inside `tx` (the transaction that decided it), keyed so that the same
    /// decision never makes two jobs; `run_at` defaults to now.
    pub async fn enqueue(
        &self,
        tx: &mut Tx,
        kind: &str,
        payload: &impl Serialize,
        key: &str,
        run_at: Option<i64>,
    ) -> Result<(), AppError> {
        let settings = &self.settings.jobs;
        jobs::enqueue(tx, settings, &self.clock, kind, payload, key, run_at).await?;
        Ok(())
    }

    /// [`Services::enqueue`] for many jobs of `kind`, each a `(payload, key, run_at)`, in one
    /// statement.
    pub async fn enqueue_all<P: Serialize>(
        &self,
        tx: &mut Tx,
        kind: &str,
        jobs: impl IntoIterator<Item = (P, String, Option<i64>)>,
    ) -> Result<(), AppError> {
        jobs::enqueue_all(tx, &self.settings.jobs, &self.clock, kind, jobs).await?;
        Ok(())
    }

    /// [`Services::enqueue`] at urgent priority: claimed before every other due job.
    pub async fn enqueue_urgent(
        &self,
        tx: &mut Tx,
        kind: &str,
        payload: &impl Serialize,
        key: &str,
    ) -> Result<(), AppError> {
        let settings = &self.settings.jobs;
        jobs::enqueue_with_priority(
            tx,
            settings,
            &self.clock,
            kind,
            payload,
            key,
            None,
            jobs::URGENT,
        )
        .await?;
        Ok(())
    }

    /// The tiers in force: the latest change made through the API, else the config's. Read at
    /// each use, so every replica follows a change at once.
    pub async fn tiers(&self) -> Result<Vec<crate::config::TierSettings>, AppError> {
        Ok(self.tiers_in_force().await?.0)
    }

    /// The tiers in force and where they come from: `"api"` or `"config"`.
    pub async fn tiers_in_force(
        &self,
    ) -> Result<(Vec<crate::config::TierSettings>, &'static str), AppError> {
        match self.store.current_tier_rules().await? {
            Some(json) => serde_json::from_str(&json)
                .map(|t| (t, "api"))
                .map_err(|e| AppError::Invalid(format!("stored tier rules do not parse: {e}"))),
            None => Ok((self.settings.tiers.clone(), "config")),
        }
    }
}

/// The payload of a job about one relation (a member following a customer): its tags, its note.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RelationJob {
    pub userid: UserId,
    pub external_userid: ExternalUserId,
}

impl Services {
    /// Enqueues a job of `kind` about one relation in `tx`, keyed by its cause.
    pub async fn enqueue_for_relation(
        &self,
        tx: &mut Tx,
        kind: &str,
        userid: &UserId,
        external_userid: &ExternalUserId,
        key: &str,
    ) -> Result<(), AppError> {
        let job = RelationJob {
            userid: userid.clone(),
            external_userid: external_userid.clone(),
        };
        self.enqueue(tx, kind, &job, key, None).await
    }
}

/// The payload of a job about many relations: a tier change's fan-out is one job per batch of
/// relations, not one per relation.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RelationsJob {
    pub relations: Vec<RelationJob>,
}

/// At most this many relations in one [`RelationsJob`]: a job stays short enough to retry.
const RELATIONS_PER_JOB: usize = 500;

impl Services {
    /// Enqueues jobs of `kind` in `tx` that work through `relations` (none when empty), at most
    /// [`RELATIONS_PER_JOB`] to a job, keyed `{key}:{n}` by their cause.
    pub async fn enqueue_for_relations(
        &self,
        tx: &mut Tx,
        kind: &str,
        relations: &[RelationJob],
        key: &str,
    ) -> Result<(), AppError> {
        let jobs = relations
            .chunks(RELATIONS_PER_JOB)
            .enumerate()
            .map(|(n, chunk)| {
                let job = RelationsJob {
                    relations: chunk.to_vec(),
                };
                (job, format!("{key}:{n}"), None)
            });
        self.enqueue_all(tx, kind, jobs).await
    }
}

/// Works through a batch job's relations in order with `each`, the one-relation job. A passing
/// failure stops the batch, to run again later: the relations before it are in step by then,
/// and since each computes what to write from the state when it runs, they write nothing
/// twice. A permanent failure is kept while the rest go on; the batch then fails naming them.
pub async fn for_each_relation<F, Fut>(
    job: &RelationsJob,
    mut each: F,
) -> Result<(), jobs::JobError>
where
    F: FnMut(RelationJob) -> Fut,
    Fut: std::future::Future<Output = Result<(), jobs::JobError>>,
{
    let mut failed = Vec::new();
    for relation in &job.relations {
        match each(relation.clone()).await {
            Ok(()) => {}
            Err(jobs::JobError::Permanent(why)) => failed.push(format!(
                "{}/{}: {why}",
                relation.userid, relation.external_userid
            )),
            Err(passing) => return Err(passing),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(jobs::JobError::Permanent(format!(
            "{} of {} relations failed: {}",
            failed.len(),
            job.relations.len(),
            failed.join("; ")
        )))
    }
}

/// What the features register to run: event handlers, job kinds and recurring jobs. (Their
/// hooks are in place from [`Services::new`].)
#[derive(Default)]
pub struct Registrar {
    pub events: EventHandlers,
    pub jobs: Registry,
    pub recurring: Vec<Recurring>,
}

/// Every feature registers itself here; the caller (the composition root) names none of them.
pub fn register_features(services: &Services, r: &mut Registrar) {
    tags::register(services, r);
    notes::register(services, r);
    contacts::register(services, r);
    tiers::register(services, r);
    groups::register(services, r);
    campaigns::register(services, r);
    retention::register(services, r);
    staff::register(r);
}

/// What the features check in the settings before siyu starts (one line naming the problem).
pub fn validate_settings(settings: &Settings) -> Result<(), String> {
    tiers::validate(settings)
}

/// What the features do once at start: the channels declared in the config are created or
/// updated (an error stops the start, naming the channel), and siyu's corp tags are made sure of
/// in the background (siyu takes callbacks even while WeCom is slow; tagging makes sure again).
pub async fn start_features(services: &Services) -> Result<(), String> {
    channels::declare(services, &services.settings.channels)
        .await
        .map_err(|e| format!("channels declared in the config: {e}"))?;
    // In the background: siyu starts (and takes callbacks) even while WeCom is slow or
    // unreachable, and checking a custom metric may scan the activity table.
    let background = services.clone();
    tokio::spawn(async move {
        warn_of_unknown_metrics(&background).await;
        if let Err(e) = tags::ensure(&background).await {
            tracing::warn!(error = %e, "could not make sure siyu's corp tags exist at start");
        }
    });
    Ok(())
}

/// A rule over a metric nobody sends reads 0 forever: say so at start (the API refuses one).
async fn warn_of_unknown_metrics(services: &Services) {
    let unknown = match services.tiers().await {
        Ok(in_force) => tiers::unknown_metrics(services, &in_force).await,
        Err(e) => Err(e),
    };
    match unknown {
        Ok(unknown) if !unknown.is_empty() => tracing::warn!(
            conditions = %unknown.join("; "),
            "tier rules name metrics that are not spend, orders or a received activity kind; they read 0 until such activity arrives"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not check the tier rules' metrics"),
    }
}

impl jobs::send::SendError for WecomError {
    fn outcome_unknown(&self) -> bool {
        matches!(self, WecomError::OutcomeUnknown { .. })
    }
}

/// Formats Unix ms as `YYYY-MM-DD HH:MM` in the configured time zone (for notes and answers).
pub fn local_time(settings: &Settings, ms: i64) -> String {
    use chrono::TimeZone;
    let tz = settings.timezone().unwrap_or(chrono_tz::Asia::Shanghai);
    match tz.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        None => String::new(),
    }
}

/// Errors of the use-cases. The HTTP layer turns `Invalid`, `NotFound` and `Conflict` into
/// 4xx answers naming the problem; the rest are ours (5xx, detail in the log).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Wecom(#[from] crate::wecom::client::WecomError),
    #[error(transparent)]
    Template(#[from] templates::TemplateError),
}

impl From<AppError> for crate::jobs::JobError {
    /// How a job reacts to a use-case error: passing trouble is retried (after WeCom's window
    /// when it gave one), the rest fails the job with the reason kept.
    fn from(e: AppError) -> Self {
        use crate::jobs::JobError;
        match &e {
            AppError::Store(_) => JobError::Retry(e.to_string()),
            AppError::Wecom(w) if w.is_transient() => match w.retry_after() {
                Some(after) => JobError::RetryAfter {
                    reason: e.to_string(),
                    after,
                },
                None => JobError::Retry(e.to_string()),
            },
            _ => JobError::Permanent(e.to_string()),
        }
    }
}
