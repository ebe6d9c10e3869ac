//! Tier groups: each tier's customer groups (客户群), kept in step with promotions and demotions.
//!
//! WeCom's API cannot put a customer into a group or take one out (api.md §7.4). So siyu
//! **invites** ([`invite`]: a mass-message task from the customer's member with the tier's join
//! QR code), **asks** the owner to remove ([`removal`]: one app message per owner and window), and
//! **watches** `change_external_chat` ([`chats`]) to see it done; [`reconcile`] compares with
//! WeCom nightly and by hand. Every group-related thing siyu writes to WeCom is decided here.
//!
//! A tier change reaches this feature through its hook (in the transaction that records the
//! change), as does a new or ended relation; nothing outside calls its jobs.

pub mod chats;
pub mod invite;
pub mod reconcile;
pub mod removal;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::hooks::{Hooks, RelationChanged, TierChanged};
use super::{AppError, Registrar, Services, local_time};
use crate::config::TierSettings;
use crate::ids::{ChatId, ExternalUserId};
use crate::jobs::BoxFuture;
use crate::store::Tx;
use crate::store::groups::{
    self as store_groups, GroupChat, Invitation, Membership, Removal, RemovalStatus, TierGroup,
};
use crate::wecom::client::WecomError;
use crate::wecom::client::types::JoinWayRequest;

/// At most this many groups behind one join way (WeCom's limit, api.md §7.3).
pub const MAX_JOIN_WAY_CHATS: usize = 5;

pub fn register(services: &Services, r: &mut Registrar) {
    chats::register(services, r);
    invite::register(services, r);
    removal::register(services, r);
    reconcile::register(services, r);
}

/// A tier change invites, asks for removals and cancels them; a new relation invites into the
/// entry tier's group; a customer who deleted every member keeps their memberships, marked lost.
pub fn hooks(h: &mut Hooks) {
    h.on_tier_change("groups", on_tier_change);
    h.on_relation_added("groups", on_relation_added);
    h.on_relation_ended("groups", on_relation_ended);
}

/// The tiers in force, lowest first: ranks and names.
pub struct Ranks(Vec<TierSettings>);

impl Ranks {
    pub async fn load(s: &Services) -> Result<Ranks, AppError> {
        Ok(Ranks(s.tiers().await?))
    }

    /// The tier's rank (0 = the entry tier); None for a tier no longer in force.
    pub fn rank(&self, tier: &str) -> Option<usize> {
        self.0.iter().position(|t| t.code == tier)
    }

    pub fn name<'a>(&'a self, tier: &'a str) -> &'a str {
        self.0
            .iter()
            .find(|t| t.code == tier)
            .map_or(tier, |t| t.name.as_str())
    }

    /// Whether a customer of `customer_tier` is above their station in a group of `group_tier`
    /// (a forwarded QR code, or a demotion): such a customer is asked to be removed.
    pub fn above_station(&self, customer_tier: &str, group_tier: &str) -> bool {
        match (self.rank(customer_tier), self.rank(group_tier)) {
            (Some(c), Some(g)) => g > c,
            _ => false,
        }
    }
}

/// The join way's `state`: names the tier, at most 30 characters (api.md §7.3).
pub fn join_way_state(tier: &str) -> String {
    format!("siyu-group:{tier}").chars().take(30).collect()
}

/// What the operator sends to `PUT /api/v1/tier-groups/{tier}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierGroupsInput {
    /// 1 to 5 existing customer groups (chat ids) for the tier.
    #[schema(value_type = Vec<String>)]
    pub chat_ids: Vec<ChatId>,
    /// The invitation's text, a template: `{{ tier }}`, `{{ staff }}`, `{{ qr_code }}`.
    #[serde(default)]
    pub invitation: Option<String>,
    /// The name WeCom gives groups it creates when the others are full (≤ 40 characters).
    #[serde(default)]
    pub room_base_name: Option<String>,
    /// Let WeCom create a new group when every group is full (default true).
    #[serde(default = "yes")]
    pub auto_create_room: bool,
}

fn yes() -> bool {
    true
}

/// The invitation's text when the operator gives none.
pub const DEFAULT_INVITATION: &str =
    "恭喜您成为{{ tier }}！扫描图中二维码，加入{{ tier }}专属客户群，享受专属服务。";

/// One group as the operator sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupView {
    #[schema(value_type = String)]
    pub chat_id: ChatId,
    pub name: String,
    #[schema(value_type = String)]
    pub owner: crate::ids::UserId,
    #[schema(value_type = Vec<String>)]
    pub admins: Vec<crate::ids::UserId>,
    /// Members of every kind, as WeCom last said.
    pub members: i64,
    /// Customers in it, as siyu records them.
    pub customers: i64,
    /// `operator` (named in the settings) or `overflow` (created by WeCom when the others were full).
    pub origin: String,
    /// One of the groups the join way leads to.
    pub in_join_way: bool,
    pub full: bool,
}

/// A tier's groups as the operator sees them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TierGroupsView {
    pub tier: String,
    pub tier_name: String,
    /// The tier's live groups (those the operator named and the overflow groups WeCom made).
    #[schema(value_type = Vec<String>)]
    pub chat_ids: Vec<ChatId>,
    pub invitation: String,
    pub room_base_name: Option<String>,
    pub auto_create_room: bool,
    pub config_id: Option<String>,
    pub qr_code: Option<String>,
    pub state: String,
    pub groups: Vec<GroupView>,
    pub updated_at: i64,
}

async fn view(s: &Services, ranks: &Ranks, tg: TierGroup) -> Result<TierGroupsView, AppError> {
    let chats = s.store.group_chats(Some(&tg.tier)).await?;
    let members = s.store.members_of_tier(&tg.tier).await?;
    let capacity = s.settings.groups.room_capacity as i64;
    let groups = chats
        .iter()
        .map(|c| GroupView {
            chat_id: c.chat_id.clone(),
            name: c.name.clone(),
            owner: c.owner.clone(),
            admins: c.admins.clone(),
            members: c.members,
            customers: members.iter().filter(|m| m.chat_id == c.chat_id).count() as i64,
            origin: c.origin.clone(),
            in_join_way: c.in_join_way,
            full: c.members >= capacity,
        })
        .collect();
    Ok(TierGroupsView {
        tier_name: ranks.name(&tg.tier).to_string(),
        chat_ids: chats.iter().map(|c| c.chat_id.clone()).collect(),
        tier: tg.tier,
        invitation: tg.invitation,
        room_base_name: tg.room_base_name,
        auto_create_room: tg.auto_create_room,
        config_id: tg.config_id,
        qr_code: tg.qr_code,
        state: tg.state,
        groups,
        updated_at: tg.updated_at,
    })
}

fn validate(
    s: &Services,
    ranks: &Ranks,
    tier: &str,
    input: &TierGroupsInput,
) -> Result<(), AppError> {
    let mut problems = Vec::new();
    if ranks.rank(tier).is_none() {
        return Err(AppError::NotFound(format!("no tier {tier:?}")));
    }
    if input.chat_ids.is_empty() {
        problems.push("chat_ids: name 1 to 5 customer groups".to_string());
    }
    if input.chat_ids.len() > MAX_JOIN_WAY_CHATS {
        problems.push(format!(
            "chat_ids: {} groups; a join way leads to at most {MAX_JOIN_WAY_CHATS} (WeCom's limit)",
            input.chat_ids.len()
        ));
    }
    let mut seen = HashSet::new();
    for (i, c) in input.chat_ids.iter().enumerate() {
        if c.as_str().trim().is_empty() {
            problems.push(format!("chat_ids[{i}]: empty"));
        } else if !seen.insert(c) {
            problems.push(format!("chat_ids[{i}]: {c} is named twice"));
        }
    }
    if let Some(text) = &input.invitation {
        if text.trim().is_empty() {
            problems.push("invitation: empty (leave it out for the default)".into());
        } else if let Err(e) = s.templates.check_str(text) {
            problems.push(format!("invitation: not a valid template: {e}"));
        } else if text.len() > 4000 {
            problems.push(format!(
                "invitation: {} bytes; a mass message's text holds at most 4000",
                text.len()
            ));
        }
    }
    if let Some(name) = &input.room_base_name
        && name.chars().count() > 40
    {
        problems.push(format!(
            "room_base_name: {} characters; WeCom allows 40",
            name.chars().count()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AppError::Invalid(problems.join("; ")))
    }
}

/// Sets a tier's groups: checks them at WeCom, creates or updates the tier's join way and
/// records the groups with who is in them.
pub async fn put(
    s: &Services,
    tier: &str,
    input: TierGroupsInput,
) -> Result<TierGroupsView, AppError> {
    let ranks = Ranks::load(s).await?;
    validate(s, &ranks, tier, &input)?;
    for (i, c) in input.chat_ids.iter().enumerate() {
        if let Some(known) = s.store.group_chat(c).await?
            && known.dismissed_at.is_none()
            && known.tier != tier
        {
            return Err(AppError::Conflict(format!(
                "chat_ids[{i}]: {c} is a group of the tier {:?}; take it out there first",
                known.tier
            )));
        }
    }
    let mut reads = Vec::with_capacity(input.chat_ids.len());
    for (i, c) in input.chat_ids.iter().enumerate() {
        match s.wecom.get_group_chat(c).await {
            Ok(read) => reads.push(read),
            Err(e @ WecomError::Api { .. }) => {
                return Err(AppError::Invalid(format!("chat_ids[{i}]: {e}")));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let before = s.store.tier_group(tier).await?;
    let state = join_way_state(tier);
    let mut request = JoinWayRequest {
        config_id: None,
        scene: 2,
        remark: Some(
            format!("siyu {}", ranks.name(tier))
                .chars()
                .take(30)
                .collect(),
        ),
        auto_create_room: Some(i64::from(input.auto_create_room)),
        room_base_name: input.room_base_name.clone(),
        room_base_id: input.room_base_name.as_ref().map(|_| 1),
        chat_id_list: input.chat_ids.clone(),
        state: Some(state.clone()),
    };
    let config_id = match before.as_ref().and_then(|b| b.config_id.clone()) {
        Some(id) => {
            request.config_id = Some(id.clone());
            match s.wecom.update_join_way(&request).await {
                Ok(()) => id,
                // The join way was deleted at WeCom: make a new one.
                Err(WecomError::Api { code: 41044, .. }) => {
                    request.config_id = None;
                    s.wecom.add_join_way(&request).await?
                }
                Err(e) => return Err(join_way_error(e)),
            }
        }
        None => s
            .wecom
            .add_join_way(&request)
            .await
            .map_err(join_way_error)?,
    };
    let way = s.wecom.get_join_way(&config_id).await?;
    let now = s.clock.now_ms();
    let group = TierGroup {
        tier: tier.to_string(),
        invitation: input
            .invitation
            .clone()
            .unwrap_or_else(|| DEFAULT_INVITATION.to_string()),
        room_base_name: input.room_base_name.clone(),
        auto_create_room: input.auto_create_room,
        config_id: Some(config_id),
        qr_code: Some(way.qr_code).filter(|q| !q.is_empty()),
        state,
        configured_at: before.as_ref().map_or(now, |b| b.configured_at),
        updated_at: now,
    };
    {
        let mut tx = s.store.begin().await?;
        store_groups::upsert_tier_group(&mut tx, &group).await?;
        store_groups::drop_chats_of_tier(&mut tx, tier, &input.chat_ids).await?;
        tx.commit().await?;
    }
    for read in reads {
        chats::record_read(
            s,
            &ranks,
            tier,
            Some("operator"),
            Some(true),
            read,
            &chats::Hints::default(),
        )
        .await?;
    }
    chats::keep_join_way(s, tier).await?;
    tracing::info!(tier, groups = input.chat_ids.len(), "tier groups set");
    let stored = s
        .store
        .tier_group(tier)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("tier {tier:?} has no groups")))?;
    view(s, &ranks, stored).await
}

fn join_way_error(e: WecomError) -> AppError {
    match e {
        e @ WecomError::Api { .. } => AppError::Invalid(format!("chat_ids: {e}")),
        e => e.into(),
    }
}

/// Every tier's groups with their member counts.
pub async fn list(s: &Services) -> Result<Vec<TierGroupsView>, AppError> {
    let ranks = Ranks::load(s).await?;
    let mut out = Vec::new();
    for tg in s.store.tier_groups().await? {
        out.push(view(s, &ranks, tg).await?);
    }
    Ok(out)
}

pub async fn get(s: &Services, tier: &str) -> Result<TierGroupsView, AppError> {
    let ranks = Ranks::load(s).await?;
    let tg = s
        .store
        .tier_group(tier)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("tier {tier:?} has no groups")))?;
    view(s, &ranks, tg).await
}

/// Removes a tier's groups and its join way. The groups stay at WeCom; siyu forgets them, and
/// cancels the tier's queued invitations and open removal requests.
pub async fn delete(s: &Services, tier: &str) -> Result<(), AppError> {
    let Some(tg) = s.store.tier_group(tier).await? else {
        return Err(AppError::NotFound(format!("tier {tier:?} has no groups")));
    };
    if let Some(config_id) = &tg.config_id {
        match s.wecom.delete_join_way(config_id).await {
            Ok(()) | Err(WecomError::Api { code: 41044, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut tx = s.store.begin().await?;
    store_groups::delete_tier_group(&mut tx, tier, s.clock.now_ms()).await?;
    tx.commit().await?;
    tracing::info!(tier, "tier groups removed");
    Ok(())
}

/// A customer's place in a tier's groups (`GET /api/v1/tier-groups/{tier}/members`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Of this tier, in one of its groups.
    Joined,
    /// Of this tier, invited (the invitation says how far it got).
    Invited,
    /// In one of the groups, and its owner was asked to remove them.
    RemovalRequested,
    /// In one of the groups but not of this tier.
    Misplaced,
    /// Of this tier, in no group, no invitation pending.
    Outside,
}

impl MemberStatus {
    pub fn parse(text: &str) -> Option<MemberStatus> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TierMember {
    #[schema(value_type = String)]
    pub external_userid: ExternalUserId,
    pub name: String,
    /// The customer's tier (None: not a customer siyu knows).
    pub tier: Option<String>,
    pub status: MemberStatus,
    /// The tier's groups they are in.
    #[schema(value_type = Vec<String>)]
    pub chat_ids: Vec<ChatId>,
    #[schema(value_type = Option<Object>)]
    pub invitation: Option<Invitation>,
    #[schema(value_type = Option<Object>)]
    pub removal: Option<Removal>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TierMembers {
    pub tier: String,
    /// How many of each status (before the filter and the page).
    pub counts: BTreeMap<String, usize>,
    pub members: Vec<TierMember>,
    /// Pass as `after` for the next page; absent on the last.
    #[schema(value_type = Option<String>)]
    pub next: Option<ExternalUserId>,
}

/// Each customer of `tier` and each customer in its groups, with a status; filtered by
/// `status`, in id order, `limit` at a time after `after`.
pub async fn members(
    s: &Services,
    tier: &str,
    status: Option<MemberStatus>,
    after: Option<&str>,
    limit: usize,
) -> Result<TierMembers, AppError> {
    if s.store.tier_group(tier).await?.is_none() {
        return Err(AppError::NotFound(format!("tier {tier:?} has no groups")));
    }
    let customers = s.store.customers_of_tier(tier).await?;
    let in_groups = s.store.members_of_tier(tier).await?;
    let invitations = s.store.latest_invitations_to(tier).await?;
    let removals = s.store.open_removals(None, Some(tier)).await?;
    let mut rows: BTreeMap<ExternalUserId, TierMember> = BTreeMap::new();
    for (id, name) in customers {
        rows.insert(
            id.clone(),
            TierMember {
                external_userid: id,
                name,
                tier: Some(tier.to_string()),
                status: MemberStatus::Outside,
                chat_ids: Vec::new(),
                invitation: None,
                removal: None,
            },
        );
    }
    for m in &in_groups {
        if !rows.contains_key(&m.external_userid) {
            let customer = s.store.customer(&m.external_userid).await?;
            rows.insert(
                m.external_userid.clone(),
                TierMember {
                    external_userid: m.external_userid.clone(),
                    name: customer
                        .as_ref()
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                    tier: customer.map(|c| c.tier),
                    status: MemberStatus::Misplaced,
                    chat_ids: Vec::new(),
                    invitation: None,
                    removal: None,
                },
            );
        }
        if let Some(row) = rows.get_mut(&m.external_userid) {
            row.chat_ids.push(m.chat_id.clone());
        }
    }
    for row in rows.values_mut() {
        row.invitation = invitations.get(&row.external_userid).cloned();
        row.removal = removals
            .iter()
            .find(|r| r.external_userid == row.external_userid)
            .cloned();
        let of_tier = row.tier.as_deref() == Some(tier);
        row.status = if row.removal.is_some() {
            MemberStatus::RemovalRequested
        } else if !of_tier {
            MemberStatus::Misplaced
        } else if !row.chat_ids.is_empty() {
            MemberStatus::Joined
        } else if row.invitation.as_ref().is_some_and(|i| i.status.is_open()) {
            MemberStatus::Invited
        } else {
            MemberStatus::Outside
        };
    }
    let mut counts = BTreeMap::new();
    for row in rows.values() {
        *counts.entry(status_name(row.status)).or_insert(0) += 1;
    }
    let mut page: Vec<TierMember> = rows
        .into_values()
        .filter(|r| status.is_none_or(|s| r.status == s))
        .filter(|r| after.is_none_or(|a| r.external_userid.as_str() > a))
        .take(limit + 1)
        .collect();
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last().map(|r| r.external_userid.clone())
    });
    Ok(TierMembers {
        tier: tier.to_string(),
        counts,
        members: page,
        next: next.flatten(),
    })
}

fn status_name(status: MemberStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The customer view's part: their groups (past ones too), invitations and removal requests.
pub async fn of_customer(s: &Services, id: &ExternalUserId) -> Result<serde_json::Value, AppError> {
    let memberships: Vec<Membership> = s.store.memberships_of(id).await?;
    let mut groups = Vec::new();
    for m in memberships {
        let chat: Option<GroupChat> = s.store.group_chat(&m.chat_id).await?;
        groups.push(serde_json::json!({
            "chat_id": m.chat_id, "name": chat.as_ref().map(|c| c.name.clone()),
            "tier": chat.as_ref().map(|c| c.tier.clone()), "joined_at": m.joined_at,
            "join_scene": m.join_scene, "state": m.state, "left_at": m.left_at,
            "lost": m.lost_at.is_some(), "in_group": m.left_at.is_none(),
        }));
    }
    let invitations = s.store.invitations_of_customer(id).await?;
    let pending: Vec<&Invitation> = invitations.iter().filter(|i| i.status.is_open()).collect();
    let removals = s.store.removals_of_customer(id).await?;
    let open: Vec<&Removal> = removals
        .iter()
        .filter(|r| matches!(r.status, RemovalStatus::Requested | RemovalStatus::Overdue))
        .collect();
    Ok(serde_json::json!({
        "groups": groups, "invitation": pending.last(), "removal_requests": open,
        "invitations": invitations, "removals": removals,
    }))
}

// ---- hooks -----------------------------------------------------------------------------------

/// In the tier-change transaction: invites into the new tier's group, asks the owners of higher
/// groups the customer is in to remove them, and cancels what the change made moot.
fn on_tier_change<'a>(
    s: &'a Services,
    tx: &'a mut Tx,
    changes: &'a [TierChanged],
) -> BoxFuture<'a, Result<(), AppError>> {
    Box::pin(async move {
        let with_groups: HashSet<String> = store_groups::tier_groups_in(tx)
            .await?
            .into_iter()
            .map(|g| g.tier)
            .collect();
        if with_groups.is_empty() {
            return Ok(());
        }
        let ranks = Ranks::load(s).await?;
        for c in changes {
            let customer = &c.external_userid;
            let chats = store_groups::chats_of_customer(tx, customer).await?;
            store_groups::cancel_queued_invitations(tx, customer, Some(&c.to), c.at).await?;
            let (above, fitting): (Vec<_>, Vec<_>) = chats
                .iter()
                .partition(|(_, group_tier)| ranks.above_station(&c.to, group_tier));
            let fitting: Vec<ChatId> = fitting.into_iter().map(|(id, _)| id.clone()).collect();
            store_groups::close_removals(tx, customer, &fitting, RemovalStatus::Cancelled, c.at)
                .await?;
            let reason = format!(
                "{}→{}（{}）",
                ranks.name(&c.from),
                ranks.name(&c.to),
                local_time(&s.settings, c.at)
            );
            for (chat_id, _) in above {
                if let Some(chat) = store_groups::group_chat_in(tx, chat_id).await? {
                    removal::request(s, tx, &chat, customer, &reason, c.at).await?;
                }
            }
            let in_new = chats.iter().any(|(_, t)| *t == c.to);
            if with_groups.contains(&c.to)
                && !in_new
                && let Some(member) = c.members.first()
                && !store_groups::open_invitation_exists(tx, customer, &c.to).await?
            {
                let cause = format!("tier:{}", c.change_id);
                invite::queue(s, tx, customer, &c.to, member, &cause, c.at).await?;
            }
        }
        Ok(())
    })
}

/// A new customer entering the entry tier (their first relation) whose tier has groups, and
/// who was never invited to it, is invited. A customer who adds another member later is not:
/// customers already in a tier when its groups were set are invited only by a tier change.
/// A customer already in a group above their tier (they joined it before siyu recorded them, so
/// their join could not be judged) has the group's owner asked to remove them.
fn on_relation_added<'a>(
    s: &'a Services,
    tx: &'a mut Tx,
    r: &'a RelationChanged,
) -> BoxFuture<'a, Result<(), AppError>> {
    Box::pin(async move {
        let Some(tier) = store_groups::tier_of(tx, &r.external_userid).await? else {
            return Ok(());
        };
        let ranks = Ranks::load(s).await?;
        for (chat_id, group_tier) in store_groups::chats_of_customer(tx, &r.external_userid).await?
        {
            if ranks.above_station(&tier, &group_tier)
                && let Some(chat) = store_groups::group_chat_in(tx, &chat_id).await?
            {
                let reason =
                    chats::station_reason(&ranks, &tier, &group_tier, "入群时尚未成为客户");
                removal::request(s, tx, &chat, &r.external_userid, &reason, r.at).await?;
            }
        }
        let with_groups = store_groups::tier_groups_in(tx).await?;
        if !with_groups.iter().any(|g| g.tier == tier) {
            return Ok(());
        }
        if store_groups::connected_follows(tx, &r.external_userid).await? > 1
            || store_groups::invited_ever(tx, &r.external_userid, &tier).await?
        {
            return Ok(());
        }
        let chats = store_groups::chats_of_customer(tx, &r.external_userid).await?;
        if chats.iter().any(|(_, t)| *t == tier) {
            return Ok(());
        }
        let cause = format!("entry:{}", r.key);
        invite::queue(s, tx, &r.external_userid, &tier, &r.userid, &cause, r.at).await
    })
}

/// A customer who deleted every member keeps their memberships, marked lost; their queued
/// invitations are cancelled.
fn on_relation_ended<'a>(
    _s: &'a Services,
    tx: &'a mut Tx,
    r: &'a RelationChanged,
) -> BoxFuture<'a, Result<(), AppError>> {
    Box::pin(async move {
        if store_groups::connected_follows(tx, &r.external_userid).await? > 0 {
            return Ok(());
        }
        store_groups::mark_memberships_lost(tx, &r.external_userid, r.at).await?;
        store_groups::cancel_queued_invitations(tx, &r.external_userid, None, r.at).await?;
        Ok(())
    })
}
