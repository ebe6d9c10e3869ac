//! The use-cases: getting callbacks into the inbox and out to their handlers, channels, siyu's
//! corp tags, the contact pipeline, and answering staff.

pub mod channels;
pub mod contacts;
pub mod dispatch;
pub mod import;
pub mod ingest;
pub mod segments;
pub mod staff;
pub mod tags;
pub mod templates;
pub mod tiers;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Store;
use crate::wecom::client::WecomClient;
use templates::Templates;

/// What the use-cases work with; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub wecom: WecomClient,
    pub clock: Clock,
    pub settings: Arc<Settings>,
    pub templates: Arc<Templates>,
    /// One tag-library sync at a time in this process (two would create the same tag twice).
    pub tag_sync: Arc<tokio::sync::Mutex<()>>,
}

impl Services {
    /// The tiers in force: the latest change made through the API, else the config's. Read at
    /// each use, so every replica follows a change at once.
    pub async fn tiers(&self) -> Result<Vec<crate::config::TierSettings>, AppError> {
        match self.store.current_tier_rules().await? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| AppError::Invalid(format!("stored tier rules do not parse: {e}"))),
            None => Ok(self.settings.tiers.clone()),
        }
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
