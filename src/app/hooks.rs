//! How features hear of each other's decisions without calling each other's jobs.
//!
//! A feature that decides something others react to (tiers decides a customer's tier) calls the
//! hooks registered for it *inside the transaction that records the decision*; each hook adds
//! its own rows and jobs to that transaction. The decision and everything it sets off then commit
//! together or not at all, and the deciding feature knows nothing of who listens.

use crate::ids::{ExternalUserId, UserId};
use crate::jobs::BoxFuture;
use crate::store::Tx;

use super::{AppError, Services};

/// One recorded tier change, with the members who follow the customer (connected relations).
#[derive(Debug, Clone)]
pub struct TierChanged {
    /// The `tier_history` row: the key of every job the change sets off.
    pub change_id: i64,
    pub external_userid: ExternalUserId,
    pub from: String,
    pub to: String,
    pub at: i64,
    pub members: Vec<UserId>,
}

impl TierChanged {
    /// Each (change, member) pair of a batch: one relation whose customer changed tier.
    pub fn relations(changes: &[TierChanged]) -> impl Iterator<Item = (&TierChanged, &UserId)> {
        changes
            .iter()
            .flat_map(|c| c.members.iter().map(move |m| (c, m)))
    }
}

/// The relations of a batch of changes, as the payloads of a batch job, and the key of the
/// jobs they set off (the batch's first change: a change belongs to one batch).
pub fn relation_batch(changes: &[TierChanged]) -> Option<(Vec<super::RelationJob>, i64)> {
    let first = changes.iter().map(|c| c.change_id).min()?;
    let relations = TierChanged::relations(changes)
        .map(|(c, member)| super::RelationJob {
            userid: member.clone(),
            external_userid: c.external_userid.clone(),
        })
        .collect();
    Some((relations, first))
}

/// Called with a batch of tier changes inside the transaction that records them.
pub type TierHook =
    for<'a> fn(&'a Services, &'a mut Tx, &'a [TierChanged]) -> BoxFuture<'a, Result<(), AppError>>;

/// Called with the relations whose value segment changed, inside the transaction that records it.
pub type SegmentHook = for<'a> fn(
    &'a Services,
    &'a mut Tx,
    &'a [(UserId, ExternalUserId)],
    i64,
) -> BoxFuture<'a, Result<(), AppError>>;

/// A relation that began or ended (a member and a customer), recorded in the transaction the
/// hooks are called in.
#[derive(Debug, Clone)]
pub struct RelationChanged {
    pub userid: UserId,
    pub external_userid: ExternalUserId,
    pub at: i64,
    /// What recorded it (the inbox event): the key of the work it sets off.
    pub key: String,
}

/// Called when a relation begins or ends, inside the transaction that records it.
pub type RelationHook = for<'a> fn(
    &'a Services,
    &'a mut Tx,
    &'a RelationChanged,
) -> BoxFuture<'a, Result<(), AppError>>;

/// What the features registered, in registration order.
#[derive(Default)]
pub struct Hooks {
    tier_changed: Vec<(&'static str, TierHook)>,
    segment_changed: Vec<(&'static str, SegmentHook)>,
    relation_added: Vec<(&'static str, RelationHook)>,
    relation_ended: Vec<(&'static str, RelationHook)>,
}

impl Hooks {
    /// `feature` names the listener in errors and logs.
    pub fn on_tier_change(&mut self, feature: &'static str, hook: TierHook) {
        self.tier_changed.push((feature, hook));
    }

    pub fn on_segment_change(&mut self, feature: &'static str, hook: SegmentHook) {
        self.segment_changed.push((feature, hook));
    }

    /// A member and a customer became contacts (the relation is recorded connected).
    pub fn on_relation_added(&mut self, feature: &'static str, hook: RelationHook) {
        self.relation_added.push((feature, hook));
    }

    /// A relation ended: the customer deleted the member, or the member the customer.
    pub fn on_relation_ended(&mut self, feature: &'static str, hook: RelationHook) {
        self.relation_ended.push((feature, hook));
    }

    /// Calls every tier-change hook in `tx`; the first failure aborts (and so rolls back) all.
    pub async fn tier_changed(
        &self,
        services: &Services,
        tx: &mut Tx,
        changes: &[TierChanged],
    ) -> Result<(), AppError> {
        for (feature, hook) in &self.tier_changed {
            hook(services, tx, changes).await.map_err(|e| {
                tracing::warn!(feature, error = %e, "a tier-change hook failed");
                e
            })?;
        }
        Ok(())
    }

    /// Calls every segment-change hook in `tx` with the `(userid, external_userid)` relations of
    /// customers whose segment changed at `at`.
    pub async fn segment_changed(
        &self,
        services: &Services,
        tx: &mut Tx,
        relations: &[(UserId, ExternalUserId)],
        at: i64,
    ) -> Result<(), AppError> {
        for (feature, hook) in &self.segment_changed {
            hook(services, tx, relations, at).await.map_err(|e| {
                tracing::warn!(feature, error = %e, "a segment-change hook failed");
                e
            })?;
        }
        Ok(())
    }

    pub async fn relation_added(
        &self,
        services: &Services,
        tx: &mut Tx,
        relation: &RelationChanged,
    ) -> Result<(), AppError> {
        call_relation_hooks(&self.relation_added, services, tx, relation).await
    }

    pub async fn relation_ended(
        &self,
        services: &Services,
        tx: &mut Tx,
        relation: &RelationChanged,
    ) -> Result<(), AppError> {
        call_relation_hooks(&self.relation_ended, services, tx, relation).await
    }
}

async fn call_relation_hooks(
    hooks: &[(&'static str, RelationHook)],
    services: &Services,
    tx: &mut Tx,
    relation: &RelationChanged,
) -> Result<(), AppError> {
    for (feature, hook) in hooks {
        hook(services, tx, relation).await.map_err(|e| {
            tracing::warn!(feature, error = %e, "a relation hook failed");
            e
        })?;
    }
    Ok(())
}
