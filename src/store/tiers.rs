//! Activity records, the shop's customer references, windowed metrics and tier history.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store, Tx, with_pool, with_tx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewActivity {
    pub id: String,
    pub customer: String,
    pub kind: String,
    pub amount_fen: i64,
    pub count: i64,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TierChange {
    pub external_userid: String,
    pub from_tier: String,
    pub to_tier: String,
    pub reason: String,
    pub at: i64,
}

/// Per customer, per activity kind: the amount (fen) and count summed over a window.
pub type WindowMetrics = HashMap<String, HashMap<String, (i64, i64)>>;

/// A customer's tier state, for evaluation.
#[derive(Debug, Clone)]
pub struct TierState {
    pub external_userid: String,
    pub tier: String,
    pub keep_failing_since: Option<i64>,
}

/// Stores the records that are new; answers how many were (the rest were stored before).
pub async fn insert_activity(tx: &mut Tx, records: &[NewActivity], now: i64) -> Result<u64> {
    let mut stored = 0;
    // Chunks keep each statement well under both backends' parameter limits.
    for chunk in records.chunks(500) {
        let n = with_tx!(tx, |conn| {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO activity (id, customer, kind, amount_fen, count, at, received_at) ",
            );
            q.push_values(chunk, |mut row, r| {
                row.push_bind(&r.id)
                    .push_bind(&r.customer)
                    .push_bind(&r.kind)
                    .push_bind(r.amount_fen)
                    .push_bind(r.count)
                    .push_bind(r.at)
                    .push_bind(now);
            });
            q.push(" ON CONFLICT (id) DO NOTHING");
            q.build().execute(&mut *conn).await?.rows_affected()
        });
        stored += n;
    }
    Ok(stored)
}

pub async fn record_tier_change(
    tx: &mut Tx,
    change: &TierChange,
    keep_failing_since: Option<i64>,
) -> Result<i64> {
    let id: i64 = with_tx!(tx, |conn| {
        sqlx::query("UPDATE customers SET tier = $1, keep_failing_since = $2, updated_at = $3 WHERE external_userid = $4")
            .bind(&change.to_tier)
            .bind(keep_failing_since)
            .bind(change.at)
            .bind(&change.external_userid)
            .execute(&mut *conn)
            .await?;
        sqlx::query_scalar(
            "INSERT INTO tier_history (external_userid, from_tier, to_tier, reason, at) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
        )
        .bind(&change.external_userid)
        .bind(&change.from_tier)
        .bind(&change.to_tier)
        .bind(&change.reason)
        .bind(change.at)
        .fetch_one(&mut *conn)
        .await?
    });
    Ok(id)
}

impl Store {
    /// Maps the shop's ids to a customer (replacing earlier mappings of the same ids).
    pub async fn set_customer_refs(&self, external_userid: &str, refs: &[String]) -> Result<()> {
        let mut tx = self.begin().await?;
        for r in refs {
            with_tx!(tx, |conn| {
                sqlx::query(
                    "INSERT INTO customer_refs (ref, external_userid) VALUES ($1, $2)
                     ON CONFLICT (ref) DO UPDATE SET external_userid = excluded.external_userid",
                )
                .bind(r)
                .bind(external_userid)
                .execute(&mut *conn)
                .await?;
            });
        }
        tx.commit().await
    }

    /// The customers (external_userid) that activity ids or references point to and that exist.
    pub async fn resolve_customers(&self, keys: &[String]) -> Result<Vec<String>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut out: Vec<String> = Vec::new();
        for chunk in keys.chunks(500) {
            let found: Vec<String> = with_pool!(self, |pool| {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT DISTINCT c.external_userid FROM customers c
                     LEFT JOIN customer_refs r ON r.external_userid = c.external_userid
                     WHERE c.external_userid IN (",
                );
                let mut list = q.separated(", ");
                for k in chunk {
                    list.push_bind(k);
                }
                q.push(") OR r.ref IN (");
                let mut list = q.separated(", ");
                for k in chunk {
                    list.push_bind(k);
                }
                q.push(")");
                q.build_query_scalar().fetch_all(pool).await?
            });
            out.extend(found);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Sums per customer and kind over `[from, to]`, for the given customers or (None) everyone,
    /// in one set-based query; records under a shop reference count for the mapped customer.
    pub async fn window_metrics(
        &self,
        from: i64,
        to: i64,
        customers: Option<&[String]>,
    ) -> Result<WindowMetrics> {
        let rows: Vec<(String, String, i64, i64)> = with_pool!(self, |pool| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT COALESCE(r.external_userid, a.customer) AS who, a.kind,
                        CAST(SUM(a.amount_fen) AS BIGINT), CAST(SUM(a.count) AS BIGINT)
                 FROM activity a LEFT JOIN customer_refs r ON r.ref = a.customer
                 WHERE a.at >= ",
            );
            q.push_bind(from).push(" AND a.at <= ").push_bind(to);
            if let Some(list) = customers {
                q.push(" AND COALESCE(r.external_userid, a.customer) IN (");
                let mut sep = q.separated(", ");
                for c in list {
                    sep.push_bind(c);
                }
                q.push(")");
            }
            q.push(" GROUP BY COALESCE(r.external_userid, a.customer), a.kind");
            q.build_query_as().fetch_all(pool).await?
        });
        let mut out: WindowMetrics = HashMap::new();
        for (who, kind, amount, count) in rows {
            out.entry(who).or_default().insert(kind, (amount, count));
        }
        Ok(out)
    }

    /// Tier state of the given customers, or of everyone.
    pub async fn tier_states(&self, customers: Option<&[String]>) -> Result<Vec<TierState>> {
        let rows = with_pool!(self, |pool| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT external_userid, tier, keep_failing_since FROM customers",
            );
            if let Some(list) = customers {
                if list.is_empty() {
                    return Ok(Vec::new());
                }
                q.push(" WHERE external_userid IN (");
                let mut sep = q.separated(", ");
                for c in list {
                    sep.push_bind(c);
                }
                q.push(")");
            }
            q.push(" ORDER BY external_userid");
            let rows = q.build().fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(TierState {
                        external_userid: r.try_get("external_userid")?,
                        tier: r.try_get("tier")?,
                        keep_failing_since: r.try_get("keep_failing_since")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// Records when a customer started (or stopped, with `None`) failing their keep rules.
    pub async fn set_keep_failing_since(
        &self,
        external_userid: &str,
        since: Option<i64>,
    ) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query("UPDATE customers SET keep_failing_since = $1 WHERE external_userid = $2")
                .bind(since)
                .bind(external_userid)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn tier_history(&self, external_userid: &str) -> Result<Vec<TierChange>> {
        let rows = with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT external_userid, from_tier, to_tier, reason, at FROM tier_history
                 WHERE external_userid = $1 ORDER BY id",
            )
            .bind(external_userid)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(TierChange {
                        external_userid: r.try_get("external_userid")?,
                        from_tier: r.try_get("from_tier")?,
                        to_tier: r.try_get("to_tier")?,
                        reason: r.try_get("reason")?,
                        at: r.try_get("at")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }
}
