//! The customer as operators see it (`GET /api/v1/customers/{id}`), the search over customers
//! (`GET /api/v1/customers`), and the shop's references to a customer
//! (`PUT /api/v1/customers/{id}/refs`).

use serde::Serialize;
use serde_json::json;

use super::{AppError, Services, groups, tiers};
use crate::ids::{ExternalUserId, TagId, UserId};
use crate::store::contacts::{CustomerFilter, FollowStatus};
use crate::store::tiers as store_tiers;

/// The newest activity records a customer's view shows.
const RECENT_ACTIVITY: i64 = 20;

/// Profile, tier, pin, value segment, the metrics the rules look at, relations (with the names
/// of siyu's tags), tier and segment history, the newest activity, relation events, and tier
/// groups (groups, pending invitation, removal requests).
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
    let segment_history = store.segment_history(id).await?;
    let activity = store.recent_activity(id, RECENT_ACTIVITY).await?;
    // The names of siyu's own tags among the relations' tag ids (the others are the corp's).
    let tag_names: serde_json::Map<String, serde_json::Value> = store
        .siyu_tags()
        .await?
        .into_iter()
        .filter_map(|t| Some((t.tag_id?.to_string(), json!(t.name))))
        .filter(|(tag_id, _)| {
            follows
                .iter()
                .any(|f| f.tag_ids.iter().any(|t| t.as_str() == tag_id.as_str()))
        })
        .collect();
    Ok(
        json!({ "customer": customer, "pin": pin, "segment": segment, "metrics": metrics,
               "follows": follows, "tag_names": tag_names, "tier_history": history,
               "segment_history": segment_history, "activity": activity, "events": events,
               "groups": groups }),
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

/// What `GET /api/v1/customers` asks for: the filter, and the page.
#[derive(Debug, Clone, Default)]
pub struct SearchInput {
    pub q: Option<String>,
    pub tier: Option<String>,
    pub segment: Option<String>,
    pub channel: Option<String>,
    /// A tag's name (one of siyu's tags) or its WeCom id.
    pub tag: Option<String>,
    pub member: Option<UserId>,
    pub after: Option<ExternalUserId>,
    pub limit: i64,
}

/// A page of customers; `next_after` asks for the next one (None: this was the last).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CustomerPage {
    pub customers: Vec<CustomerItem>,
    pub next_after: Option<ExternalUserId>,
    /// Customers matching the filter, on every page.
    pub total: i64,
}

/// A customer as a search lists them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CustomerItem {
    pub external_userid: ExternalUserId,
    pub name: String,
    pub tier: String,
    /// The value segment, once the customer has been segmented.
    pub segment: Option<String>,
    /// The channels the customer came through: of the first add, then of the other relations.
    pub channels: Vec<String>,
    /// The members following the customer now, with the remark each sees.
    pub members: Vec<MemberRemark>,
    /// When the customer first added a member, Unix ms.
    pub added_at: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberRemark {
    pub userid: UserId,
    pub remark: String,
}

/// Customers matching every given filter, by external_userid.
pub async fn search(services: &Services, input: SearchInput) -> Result<CustomerPage, AppError> {
    let store = &services.store;
    if let Some(tier) = &input.tier {
        let in_force = services.tiers().await?;
        if !in_force.iter().any(|t| &t.code == tier) {
            let codes: Vec<&str> = in_force.iter().map(|t| t.code.as_str()).collect();
            return Err(AppError::Invalid(format!(
                "tier: {tier:?} is not one of {}",
                codes.join(", ")
            )));
        }
    }
    // A name names siyu's own tags (the only ones whose names siyu keeps); anything else is
    // taken as a WeCom tag id.
    let tag_ids = match &input.tag {
        None => None,
        Some(tag) => {
            let mut ids: Vec<TagId> = store
                .siyu_tags()
                .await?
                .into_iter()
                .filter(|t| &t.name == tag)
                .filter_map(|t| t.tag_id)
                .collect();
            ids.push(TagId::from(tag.as_str()));
            Some(ids)
        }
    };
    let filter = CustomerFilter {
        q: input.q,
        tier: input.tier,
        segment: input.segment,
        channel: input.channel,
        tag_ids,
        member: input.member,
    };
    // One more than asked tells whether another page exists.
    let mut rows = store
        .search_customers(&filter, input.after.as_ref(), input.limit + 1)
        .await?;
    let more = rows.len() as i64 > input.limit;
    rows.truncate(usize::try_from(input.limit).unwrap_or(0));
    let total = store.count_matching_customers(&filter).await?;
    let ids: Vec<ExternalUserId> = rows.iter().map(|r| r.external_userid.clone()).collect();
    let follows = store.follows_of_customers(&ids, None).await?;
    let customers: Vec<CustomerItem> = rows
        .into_iter()
        .map(|r| {
            let theirs = || {
                follows
                    .iter()
                    .filter(|f| f.external_userid == r.external_userid)
            };
            let mut channels = vec![r.channel.clone()];
            for f in theirs() {
                if !channels.contains(&f.channel) {
                    channels.push(f.channel.clone());
                }
            }
            let members = theirs()
                .filter(|f| f.status == FollowStatus::Connected)
                .map(|f| MemberRemark {
                    userid: f.userid.clone(),
                    remark: f.remark.clone(),
                })
                .collect();
            CustomerItem {
                external_userid: r.external_userid,
                name: r.name,
                tier: r.tier,
                segment: r.segment,
                channels,
                members,
                added_at: r.first_added_at,
            }
        })
        .collect();
    let next_after = if more {
        customers.last().map(|c| c.external_userid.clone())
    } else {
        None
    };
    Ok(CustomerPage {
        customers,
        next_after,
        total,
    })
}
