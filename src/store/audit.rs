//! The audit log: every change made through the API or `siyu users`.

use serde::Serialize;

use super::{Result, Store, with_pool};

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub who: String,
    pub role: String,
    pub via: String,
    pub what: String,
    pub status: i64,
    #[schema(value_type = Option<Object>)]
    pub request: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

/// Filters of `GET /api/v1/audit`; an empty one does not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub who: Option<String>,
    /// A part of `what` (`channels`, `PUT /api/v1/tiers`).
    pub what: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: i64,
}

type AuditRow = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn json(text: Option<String>) -> Option<serde_json::Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)))
}

impl Store {
    #[allow(clippy::too_many_arguments)]
    pub async fn record_audit(
        &self,
        at: i64,
        who: &str,
        role: &str,
        via: &str,
        what: &str,
        status: i64,
        request: Option<&str>,
        before: Option<&str>,
        after: Option<&str>,
    ) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO audit (at, who, role, via, what, status, request, before, after)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(at)
            .bind(who)
            .bind(role)
            .bind(via)
            .bind(what)
            .bind(status)
            .bind(request)
            .bind(before)
            .bind(after)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Audit records, newest first.
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let what = f.what.as_ref().map(|w| format!("%{w}%"));
        let rows: Vec<AuditRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, at, who, role, via, what, status, request, before, after FROM audit
                 WHERE ($1 IS NULL OR who = $1) AND ($2 IS NULL OR what LIKE $2)
                 AND ($3 IS NULL OR at >= $3) AND ($4 IS NULL OR at < $4)
                 ORDER BY id DESC LIMIT $5",
            )
            .bind(&f.who)
            .bind(&what)
            .bind(f.since)
            .bind(f.until)
            .bind(f.limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                id: r.0,
                at: r.1,
                who: r.2,
                role: r.3,
                via: r.4,
                what: r.5,
                status: r.6,
                request: json(r.7),
                before: json(r.8),
                after: json(r.9),
            })
            .collect())
    }
}
