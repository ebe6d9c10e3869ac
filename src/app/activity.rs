//! Activity from the shop (`POST /api/v1/activity`, `siyu import activity`): orders, refunds,
//! referrals and custom kinds, checked whole, stored exactly (amounts in fen), idempotent by id.
//! A batch and the evaluation of the customers it touches commit together.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::tiers::{self, parse_yuan};
use super::{AppError, Services};
use crate::store::tiers::{self as store_tiers, NewActivity};

/// Most records in one activity batch.
pub const BATCH_MAX: usize = 10_000;

/// One record of a batch as the shop sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ActivityItem {
    #[schema(example = "order")]
    pub kind: Option<String>,
    pub customer: Option<String>,
    #[schema(value_type = Option<serde_json::Value>, example = "2500.50")]
    pub amount: Option<Box<RawValue>>,
    #[schema(value_type = Option<u64>)]
    pub count: Option<Box<RawValue>>,
    #[schema(example = "2026-11-20T10:00:00+08:00")]
    pub at: Option<String>,
    pub id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ActivityBatch {
    pub items: Vec<ActivityItem>,
}

/// What is wrong with one item of a batch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Problem {
    /// 1-based position in the batch (or the file's line number on import).
    pub line: usize,
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActivityOutcome {
    pub stored: u64,
    pub duplicates: u64,
    /// Customers re-evaluated because of this batch.
    pub customers: usize,
}

/// Checks a record; answers it in storable form, or the problems found.
pub fn check_item(line: usize, item: &ActivityItem) -> Result<NewActivity, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, reason: String| {
        problems.push(Problem {
            line,
            field: field.into(),
            reason,
        })
    };
    let text = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let kind = text(&item.kind);
    if kind.is_none() {
        problem(
            "kind",
            "missing (order, refund, referral or a custom kind)".into(),
        );
    }
    let customer = text(&item.customer);
    if customer.is_none() {
        problem(
            "customer",
            "missing (an external_userid or the shop's customer id)".into(),
        );
    }
    let id = text(&item.id);
    if id.is_none() {
        problem("id", "missing (it makes the record idempotent)".into());
    }
    let amount = match &item.amount {
        None => 0,
        Some(raw) => match parse_yuan(raw.get()) {
            Ok(fen) if fen < 0 => {
                problem(
                    "amount",
                    "must not be negative (send a refund instead)".into(),
                );
                0
            }
            Ok(fen) => fen,
            Err(e) => {
                problem("amount", e);
                0
            }
        },
    };
    let count = match &item.count {
        None => 1,
        Some(raw) => match raw.get().trim().parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                problem("count", format!("{} is not a whole number ≥ 0", raw.get()));
                1
            }
        },
    };
    let at = match text(&item.at) {
        None => {
            problem(
                "at",
                "missing (RFC 3339, e.g. 2026-11-20T10:00:00+08:00)".into(),
            );
            0
        }
        Some(t) => match chrono::DateTime::parse_from_rfc3339(&t) {
            Ok(dt) => dt.timestamp_millis(),
            Err(e) => {
                problem("at", format!("{t:?} is not an RFC 3339 time: {e}"));
                0
            }
        },
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let customer = customer.unwrap_or_default();
    Ok(NewActivity {
        id: id.unwrap_or_default(),
        who: customer.clone(),
        customer,
        kind: kind.unwrap_or_default(),
        amount_fen: amount,
        count,
        at,
    })
}

/// Stores a batch whole, or nothing with every problem listed, and decides in the same
/// transaction the re-evaluation of the customers it touches (records for customers siyu has
/// not seen yet count once they arrive). An id sent again with the same content is a duplicate
/// (nothing changes); an id sent again with other content is refused, naming the id.
pub async fn record_activity(
    services: &Services,
    batch: ActivityBatch,
) -> Result<ActivityOutcome, BatchError> {
    if batch.items.is_empty() || batch.items.len() > BATCH_MAX {
        return Err(BatchError::Problems(vec![Problem {
            line: 0,
            field: "items".into(),
            reason: format!(
                "a batch holds 1 to {BATCH_MAX} records, not {}",
                batch.items.len()
            ),
        }]));
    }
    let mut records = Vec::with_capacity(batch.items.len());
    let mut problems = Vec::new();
    let mut ids = HashSet::new();
    for (i, item) in batch.items.iter().enumerate() {
        match check_item(i + 1, item) {
            Ok(r) if !ids.insert(r.id.clone()) => problems.push(Problem {
                line: i + 1,
                field: "id".into(),
                reason: format!("{} appears twice in the batch", r.id),
            }),
            Ok(r) => records.push(r),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if !problems.is_empty() {
        return Err(BatchError::Problems(problems));
    }
    // Records under a shop reference count for the customer it maps to.
    let keys: Vec<String> = records
        .iter()
        .map(|r| r.customer.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let refs = services
        .store
        .refs_of(&keys)
        .await
        .map_err(AppError::from)?;
    for r in &mut records {
        if let Some(ext) = refs.get(&r.customer) {
            r.who = ext.to_string();
        }
    }
    let customers = services
        .store
        .resolve_customers(&keys)
        .await
        .map_err(AppError::from)?;
    let now = services.clock.now_ms();
    let mut tx = services.store.begin().await.map_err(AppError::from)?;
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let stored_before = store_tiers::activity_by_ids(&mut tx, &ids)
        .await
        .map_err(AppError::from)?;
    let reused: Vec<String> = stored_before
        .iter()
        .filter(|old| {
            records
                .iter()
                .find(|r| r.id == old.id)
                .is_some_and(|r| !same_record(old, r))
        })
        .map(|old| old.id.clone())
        .collect();
    if !reused.is_empty() {
        return Err(BatchError::Reused(reused));
    }
    let stored = store_tiers::insert_activity(&mut tx, &records, now)
        .await
        .map_err(AppError::from)?;
    if stored > 0 && !customers.is_empty() {
        let key = format!("evaluate:activity:{now}:{}", records[0].id);
        tiers::enqueue_evaluation(services, &mut tx, Some(customers.clone()), &key).await?;
    }
    tx.commit().await.map_err(AppError::from)?;
    crate::failpoint::hit("activity.recorded");
    Ok(ActivityOutcome {
        stored,
        duplicates: records.len() as u64 - stored,
        customers: customers.len(),
    })
}

/// The same record sent again (whom it counts for may have moved with a shop reference since).
fn same_record(old: &NewActivity, new: &NewActivity) -> bool {
    (&old.customer, &old.kind, old.amount_fen, old.count, old.at)
        == (&new.customer, &new.kind, new.amount_fen, new.count, new.at)
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the batch was rejected whole: {} problem(s)", .0.len())]
    Problems(Vec<Problem>),
    #[error("id already used for another record: {}", .0.join(", "))]
    Reused(Vec<String>),
    #[error(transparent)]
    App(#[from] AppError),
}
