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

/// A database name made only of lowercase letters, digits and `_` (it is spliced into SQL).
fn plain_name(name: &str) -> Result<&str> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(name)
    } else {
        Err(StoreError::Url(format!(
            "{name:?} is not a plain database name"
        )))
    }
}

/// Creates the empty database `name` on the server of `server_url` (connecting to the database
/// that URL names) and answers the URL of the new one: `siyu soak` runs on a database of its
/// own and never touches the one it was pointed at.
pub async fn create_scratch_database(server_url: &str, name: &str) -> Result<String> {
    use sqlx::Connection;
    let name = plain_name(name)?;
    let mut conn = admin_connection(server_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let mut url = url_without_query(server_url);
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b).len();
    url.truncate(base);
    Ok(format!("{url}/{name}{}", query_of(server_url)))
}

/// Drops a database [`create_scratch_database`] made, whoever is still connected to it.
pub async fn drop_scratch_database(server_url: &str, name: &str) -> Result<()> {
    use sqlx::Connection;
    let name = plain_name(name)?;
    let mut conn = admin_connection(server_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// A connection for creating and dropping databases, which take a second or two: sqlx's
/// slow-statement warning would only be noise.
async fn admin_connection(server_url: &str) -> Result<sqlx::PgConnection> {
    use sqlx::ConnectOptions;
    let options = PgConnectOptions::from_str(server_url)
        .map_err(|e| StoreError::Url(e.to_string()))?
        .disable_statement_logging();
    Ok(options.connect().await?)
}

fn url_without_query(url: &str) -> String {
    url.split_once('?').map_or(url, |(u, _)| u).to_owned()
}

fn query_of(url: &str) -> &str {
    url.find('?').map_or("", |i| &url[i..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_names_are_spliced_into_sql() {
        assert!(super::plain_name("siyu_soak_0f3a").is_ok());
        assert!(super::plain_name("x; DROP DATABASE test").is_err());
        assert!(super::plain_name("").is_err());
    }
}
