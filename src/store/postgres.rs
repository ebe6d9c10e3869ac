//! PostgreSQL connection settings.

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;

use super::{Result, StoreError};
use crate::config::DatabaseSettings;

/// The channel on which an enqueue wakes the workers of every replica.
pub(crate) const JOBS_CHANNEL: &str = "siyu_jobs";
/// The channel on which a stored callback wakes the inbox dispatchers of every replica.
pub(crate) const INBOX_CHANNEL: &str = "siyu_inbox";

pub(super) async fn connect(settings: &DatabaseSettings) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(settings.url.expose())
        .map_err(|e| StoreError::Url(e.to_string()))?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(super::acquire_timeout())
        .connect_with(options)
        .await?;
    Ok(pool)
}
