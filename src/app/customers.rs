//! The customer as operators see it (`GET /api/v1/customers/{id}`), and the shop's references
//! to a customer (`PUT /api/v1/customers/{id}/refs`).

use serde_json::json;

use super::{AppError, Services, groups, tiers};
use crate::ids::ExternalUserId;
use crate::store::tiers as store_tiers;

/// Profile, tier, pin, value segment, the metrics the rules look at, relations, tier history,
/// relation events, and tier groups (groups, pending invitation, removal requests).
pub async fn view(services: &Services, id: &ExternalUserId) -> Result<serde_json::Value, AppError> {
    let store = &services.store;
    let Some(customer) = store.customer(id).await? else {
        return Err(AppError::NotFound(format!("no customer {id:?}")));
    };
    let follows = store.follows_of(id).await?;
    let history = store.tier_history(id).await?;
    let events = store.contact_events_of(id).await?;
    let pin = store.pin(id).await?;
    let segment = store
        .segment_of(id)
        .await?
        .map(|(segment, rfm)| json!({ "segment": segment, "rfm": rfm }));
    let metrics = tiers::metrics_of(services, id).await?;
    let groups = groups::of_customer(services, id).await?;
    Ok(
        json!({ "customer": customer, "pin": pin, "segment": segment, "metrics": metrics,
               "follows": follows, "tier_history": history, "events": events, "groups": groups }),
    )
}

/// Maps the shop's customer ids to a customer: activity sent under them counts for the customer
/// from now on. The customers that held one of the ids before lose its activity; they and this
/// customer are re-evaluated, decided in the transaction that moves the ids.
pub async fn set_refs(
    services: &Services,
    id: &ExternalUserId,
    refs: &[String],
) -> Result<(), AppError> {
    if let Some(bad) = refs.iter().find(|r| r.trim().is_empty()) {
        return Err(AppError::Invalid(format!(
            "refs: {bad:?}: empty ids are not allowed"
        )));
    }
    let known = services.store.customer(id).await?.is_some();
    let mut tx = services.store.begin().await?;
    let mut affected = store_tiers::set_customer_refs(&mut tx, id, refs).await?;
    if known {
        affected.push(id.clone());
    }
    if !affected.is_empty() {
        let key = format!("evaluate:refs:{id}:{}", services.clock.now_ms());
        tiers::enqueue_evaluation(services, &mut tx, Some(affected), &key).await?;
    }
    tx.commit().await?;
    Ok(())
}
