//! What siyu knows of its tier groups, from `change_external_chat` and `groupchat/get`: who is in
//! them (joins mark invitations `joined`; a customer above their station is asked to be removed;
//! a leave closes the removal request), their owner, admins, name and notice, overflow groups
//! WeCom creates, dismissed groups, and the join way kept on the newest groups not full.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{MAX_JOIN_WAY_CHATS, Ranks, removal};
use crate::app::dispatch::EventContext;
use crate::app::{AppError, Registrar, Services, local_time};
use crate::ids::{ChatId, ExternalUserId, UserId};
use crate::jobs::send::Outcome;
use crate::jobs::{JobContext, JobError};
use crate::store::Tx;
use crate::store::groups::{self as store_groups, GroupChat, Membership, RemovalStatus};
use crate::wecom::client::WecomError;
use crate::wecom::client::types::{GroupChat as WecomGroupChat, JoinWayRequest};
use crate::wecom::event::{ChatChange, Event};

pub const CHAT_JOB: &str = "groups.chat";
pub const OPERATOR_NOTICE_JOB: &str = "groups.operator_notice";

/// groupchat/get on a dismissed group.
const GROUP_DISMISSED: i64 = 49008;
/// groupchat/get on a chat that is not a customer group.
const NOT_A_CUSTOMER_GROUP: i64 = 90501;

/// One `change_external_chat` event to act on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatJob {
    pub chat_id: ChatId,
    /// `create`, `update` or `dismiss`.
    pub change: String,
    pub detail: Option<String>,
    pub cur_mem_ver: Option<String>,
    #[serde(default)]
    pub changed: Vec<String>,
    #[serde(default)]
    pub join_scene: Option<i64>,
    pub quit_scene: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OperatorNotice {
    text: String,
}

pub fn register(services: &Services, r: &mut Registrar) {
    for kind in ["create", "update", "dismiss"] {
        let s = services.clone();
        r.events.register(
            &format!("change_external_chat.{kind}"),
            move |ctx: EventContext, event, tx| {
                let s = s.clone();
                Box::pin(async move {
                    on_chat_event(&s, &ctx, event, tx)
                        .await
                        .map_err(|e| e.to_string())
                })
            },
        );
    }
    let s = services.clone();
    r.jobs.register(CHAT_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: ChatJob = ctx.payload()?;
            chat_job(&s, &job).await.map_err(JobError::from)
        }
    });
    let s = services.clone();
    r.jobs.register(OPERATOR_NOTICE_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: OperatorNotice = ctx.payload()?;
            operator_notice(&s, &ctx, job).await
        }
    });
}

/// The event is kept as a job keyed by the inbox row: handled once, retried on WeCom's trouble.
async fn on_chat_event(
    s: &Services,
    ctx: &EventContext,
    event: Event,
    tx: &mut Tx,
) -> Result<(), AppError> {
    let Event::ExternalChat {
        change,
        chat_id: Some(chat_id),
        update_detail,
        join_scene,
        quit_scene,
        mem_change_list,
        cur_mem_ver,
        ..
    } = event
    else {
        return Ok(());
    };
    let change = match change {
        ChatChange::Create => "create",
        ChatChange::Update => "update",
        ChatChange::Dismiss => "dismiss",
        ChatChange::Other(_) => return Ok(()),
    };
    let job = ChatJob {
        chat_id,
        change: change.to_string(),
        detail: update_detail,
        cur_mem_ver,
        changed: mem_change_list,
        join_scene,
        quit_scene,
    };
    let key = format!("group-chat:{}", ctx.inbox_id);
    s.enqueue(tx, CHAT_JOB, &job, &key, None).await
}

async fn chat_job(s: &Services, job: &ChatJob) -> Result<(), AppError> {
    match job.change.as_str() {
        "dismiss" => dismissed(s, &job.chat_id).await,
        "create" => adopt_if_overflow(s, &job.chat_id).await.map(drop),
        _ => updated(s, job).await,
    }
}

async fn updated(s: &Services, job: &ChatJob) -> Result<(), AppError> {
    let known = s
        .store
        .group_chat(&job.chat_id)
        .await?
        .filter(|c| c.dismissed_at.is_none());
    let Some(known) = known else {
        // Someone scanned a group QR code into a group siyu does not know: an overflow group
        // whose `create` was lost? (Joins by invitation into the corp's other groups are not
        // worth a read; the nightly reconciliation finds what this misses.)
        if job.detail.as_deref() == Some("add_member") && job.join_scene == Some(3) {
            adopt_if_overflow(s, &job.chat_id).await?;
        }
        return Ok(());
    };
    let member_change = matches!(job.detail.as_deref(), Some("add_member" | "del_member"));
    // A redelivered event (or one whose change siyu has read already) needs no read.
    if member_change
        && !known.member_version.is_empty()
        && job.cur_mem_ver.as_deref() == Some(known.member_version.as_str())
    {
        return Ok(());
    }
    let read = match s.wecom.get_group_chat(&job.chat_id).await {
        Ok(read) => read,
        Err(WecomError::Api {
            code: GROUP_DISMISSED | NOT_A_CUSTOMER_GROUP,
            ..
        }) => return dismissed(s, &job.chat_id).await,
        Err(e) => return Err(e.into()),
    };
    let ranks = Ranks::load(s).await?;
    let hints = Hints {
        changed: job.changed.clone(),
        quit_scene: job.quit_scene,
    };
    record_read(s, &ranks, &known.tier, None, None, read, &hints).await?;
    Ok(())
}

/// What an event says beyond the group's state: who changed, and how they left.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    pub changed: Vec<String>,
    pub quit_scene: Option<i64>,
}

/// How a fresh read of a group differs from what siyu holds.
#[derive(Debug, Clone, Default)]
pub struct ChatDiff {
    pub joined: Vec<Membership>,
    pub left: Vec<(ExternalUserId, Option<i64>)>,
    /// Customers above their station in the group, not yet asked about: `(customer, reason)`.
    pub misplaced: Vec<(ExternalUserId, String)>,
    /// Joined customers of the group's tier: their invitations are `joined`.
    pub belong: Vec<ExternalUserId>,
}

impl ChatDiff {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty() && self.misplaced.is_empty()
    }
}

/// Why a customer of `customer_tier` does not belong in a group of `group_tier`, as the owner
/// reads it; `detail` says when or how they came in.
pub fn station_reason(
    ranks: &Ranks,
    customer_tier: &str,
    group_tier: &str,
    detail: &str,
) -> String {
    format!(
        "等级为{}，不属于{}群（{detail}）",
        ranks.name(customer_tier),
        ranks.name(group_tier)
    )
}

/// Compares a read of a group of `tier` with what siyu holds.
pub async fn diff(
    s: &Services,
    ranks: &Ranks,
    tier: &str,
    read: &WecomGroupChat,
    hints: &Hints,
) -> Result<ChatDiff, AppError> {
    let now = s.clock.now_ms();
    let held: HashSet<ExternalUserId> = s
        .store
        .members_of_chat(&read.chat_id)
        .await?
        .into_iter()
        .map(|m| m.external_userid)
        .collect();
    let current: Vec<_> = read.member_list.iter().filter(|m| m.kind == 2).collect();
    let ids: Vec<ExternalUserId> = current
        .iter()
        .map(|m| ExternalUserId::from(m.userid.as_str()))
        .collect();
    let tiers = s.store.tiers_of(&ids).await?;
    let asked: HashSet<ExternalUserId> = s
        .store
        .open_removals(None, Some(tier))
        .await?
        .into_iter()
        .filter(|r| r.chat_id == read.chat_id)
        .map(|r| r.external_userid)
        .collect();
    let mut d = ChatDiff::default();
    for m in &current {
        let id = ExternalUserId::from(m.userid.as_str());
        let customer_tier = tiers.get(&id);
        if !held.contains(&id) {
            d.joined.push(Membership {
                chat_id: read.chat_id.clone(),
                external_userid: id.clone(),
                joined_at: if m.join_time > 0 {
                    m.join_time * 1000
                } else {
                    now
                },
                join_scene: m.join_scene,
                state: Some(m.state.clone()).filter(|s| !s.is_empty()),
                left_at: None,
                quit_scene: None,
                lost_at: None,
            });
            if customer_tier.is_some_and(|t| t == tier) {
                d.belong.push(id.clone());
            }
        }
        if let Some(t) = customer_tier
            && ranks.above_station(t, tier)
            && !asked.contains(&id)
        {
            let joined = local_time(
                &s.settings,
                if m.join_time > 0 {
                    m.join_time * 1000
                } else {
                    now
                },
            );
            let reason = station_reason(ranks, t, tier, &format!("入群 {joined}"));
            d.misplaced.push((id, reason));
        }
    }
    let now_in: HashSet<&ExternalUserId> = ids.iter().collect();
    for gone in held.iter().filter(|h| !now_in.contains(h)) {
        let quit = hints
            .changed
            .iter()
            .any(|c| c == gone.as_str())
            .then_some(hints.quit_scene)
            .flatten();
        d.left.push((gone.clone(), quit));
    }
    Ok(d)
}

/// Records a read of a group of `tier`: the group, joins (invitations `joined`), leaves (removal
/// requests done), and removal requests for customers above their station. `origin` and
/// `in_join_way` are for a group siyu did not hold (None: keep what is stored).
pub async fn record_read(
    s: &Services,
    ranks: &Ranks,
    tier: &str,
    origin: Option<&str>,
    in_join_way: Option<bool>,
    read: WecomGroupChat,
    hints: &Hints,
) -> Result<ChatDiff, AppError> {
    let d = diff(s, ranks, tier, &read, hints).await?;
    let now = s.clock.now_ms();
    let mut tx = s.store.begin().await?;
    let known = store_groups::group_chat_in(&mut tx, &read.chat_id)
        .await?
        .filter(|c| c.dismissed_at.is_none());
    let chat = GroupChat {
        chat_id: read.chat_id.clone(),
        tier: tier.to_string(),
        name: read.name.clone(),
        owner: read.owner.clone(),
        admins: read.admin_list.iter().map(|a| a.userid.clone()).collect(),
        notice: read.notice.clone(),
        member_version: read.member_version.clone(),
        members: read.member_list.len() as i64,
        origin: origin
            .map(str::to_string)
            .or_else(|| known.as_ref().map(|k| k.origin.clone()))
            .unwrap_or_else(|| "operator".into()),
        in_join_way: in_join_way
            .or(known.as_ref().map(|k| k.in_join_way))
            .unwrap_or(false),
        added_at: known.as_ref().map_or(now, |k| k.added_at),
        read_at: Some(now),
        dismissed_at: None,
    };
    if let Some(k) = &known {
        let changes = [
            (
                "change_owner",
                &k.owner.to_string(),
                &chat.owner.to_string(),
            ),
            ("change_name", &k.name, &chat.name),
            ("change_notice", &k.notice, &chat.notice),
        ];
        for (kind, before, after) in changes {
            if before != after {
                let detail = format!("{before} → {after}");
                store_groups::record_chat_change(&mut tx, &chat.chat_id, kind, &detail, now)
                    .await?;
            }
        }
    }
    store_groups::upsert_group_chat(&mut tx, &chat).await?;
    for m in &d.joined {
        store_groups::upsert_membership(&mut tx, m).await?;
    }
    for id in &d.belong {
        store_groups::mark_invitations_joined(&mut tx, id, tier, now).await?;
    }
    for (id, quit) in &d.left {
        store_groups::mark_left(&mut tx, &chat.chat_id, id, *quit, now).await?;
        store_groups::close_removals(
            &mut tx,
            id,
            std::slice::from_ref(&chat.chat_id),
            RemovalStatus::Done,
            now,
        )
        .await?;
    }
    for (id, reason) in &d.misplaced {
        removal::request(s, &mut tx, &chat, id, reason, now).await?;
    }
    tx.commit().await?;
    if !d.is_empty() {
        tracing::info!(
            chat = %chat.chat_id,
            tier,
            joined = d.joined.len(),
            left = d.left.len(),
            misplaced = d.misplaced.len(),
            "tier group read"
        );
    }
    let was_full = known.is_some_and(|k| is_full(s, &k));
    if is_full(s, &chat) != was_full {
        keep_join_way(s, tier).await?;
    }
    Ok(d)
}

fn is_full(s: &Services, chat: &GroupChat) -> bool {
    chat.members >= s.settings.groups.room_capacity as i64
}

/// Which of a tier's groups the join way should lead to: the newest 5 that are not full (at
/// least one, so the way keeps working; WeCom opens an overflow group when it is full).
pub fn join_way_chats(s: &Services, chats: &[GroupChat]) -> Vec<ChatId> {
    let mut newest: Vec<&GroupChat> = chats.iter().collect();
    newest.sort_by_key(|c| std::cmp::Reverse((c.added_at, c.chat_id.clone())));
    let mut open: Vec<ChatId> = newest
        .iter()
        .filter(|c| !is_full(s, c))
        .take(MAX_JOIN_WAY_CHATS)
        .map(|c| c.chat_id.clone())
        .collect();
    if open.is_empty()
        && let Some(c) = newest.first()
    {
        open.push(c.chat_id.clone());
    }
    open.sort();
    open
}

/// Points the tier's join way at [`join_way_chats`] when it leads elsewhere.
pub async fn keep_join_way(s: &Services, tier: &str) -> Result<(), AppError> {
    let Some(tg) = s.store.tier_group(tier).await? else {
        return Ok(());
    };
    let Some(config_id) = tg.config_id.clone() else {
        return Ok(());
    };
    let chats = s.store.group_chats(Some(tier)).await?;
    if chats.is_empty() {
        return Ok(());
    }
    let wanted = join_way_chats(s, &chats);
    let mut current: Vec<ChatId> = chats
        .iter()
        .filter(|c| c.in_join_way)
        .map(|c| c.chat_id.clone())
        .collect();
    current.sort();
    if current == wanted {
        return Ok(());
    }
    let request = JoinWayRequest {
        config_id: Some(config_id),
        scene: 2,
        remark: None,
        auto_create_room: Some(i64::from(tg.auto_create_room)),
        room_base_name: tg.room_base_name.clone(),
        room_base_id: None,
        chat_id_list: wanted.clone(),
        state: Some(tg.state.clone()),
    };
    s.wecom.update_join_way(&request).await?;
    let mut tx = s.store.begin().await?;
    store_groups::set_join_way_chats(&mut tx, tier, &wanted).await?;
    tx.commit().await?;
    tracing::info!(tier, chats = ?wanted, "join way now leads to the newest groups not full");
    Ok(())
}

/// A group siyu does not hold: when it is a tier's overflow group (in the tier's join way, or
/// named from the tier's room_base_name by one of the tier's owners), it joins that tier.
/// Answers the tier it joined.
pub async fn adopt_if_overflow(s: &Services, chat_id: &ChatId) -> Result<Option<String>, AppError> {
    if s.store
        .group_chat(chat_id)
        .await?
        .is_some_and(|c| c.dismissed_at.is_none())
    {
        return Ok(None);
    }
    let Some((tier, in_way, read)) = overflow_tier(s, chat_id).await? else {
        return Ok(None);
    };
    let ranks = Ranks::load(s).await?;
    record_read(
        s,
        &ranks,
        &tier,
        Some("overflow"),
        Some(in_way),
        read,
        &Hints::default(),
    )
    .await?;
    tracing::info!(chat = %chat_id, tier, "an overflow group joined its tier");
    keep_join_way(s, &tier).await?;
    Ok(Some(tier))
}

/// The tier a group siyu does not hold overflows from, whether the join way leads to it, and
/// the group as read.
pub async fn overflow_tier(
    s: &Services,
    chat_id: &ChatId,
) -> Result<Option<(String, bool, WecomGroupChat)>, AppError> {
    let candidates: Vec<_> = s
        .store
        .tier_groups()
        .await?
        .into_iter()
        .filter(|t| t.auto_create_room && t.config_id.is_some())
        .collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    let read = match s.wecom.get_group_chat(chat_id).await {
        Ok(read) => read,
        Err(WecomError::Api {
            code: GROUP_DISMISSED | NOT_A_CUSTOMER_GROUP,
            ..
        }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let chats = s.store.group_chats(None).await?;
    for tg in candidates {
        let Some(config_id) = &tg.config_id else {
            continue;
        };
        let way = s.wecom.get_join_way(config_id).await?;
        if way.chat_id_list.contains(chat_id) {
            return Ok(Some((tg.tier, true, read)));
        }
        let owners: HashSet<&UserId> = chats
            .iter()
            .filter(|c| c.tier == tg.tier)
            .map(|c| &c.owner)
            .collect();
        if let Some(base) = tg.room_base_name.as_deref().filter(|b| !b.is_empty())
            && read.name.starts_with(base)
            && owners.contains(&read.owner)
        {
            return Ok(Some((tg.tier, false, read)));
        }
    }
    Ok(None)
}

/// A tier group was dismissed: it leaves its tier, its removal requests are moot, and the
/// operators are told.
pub async fn dismissed(s: &Services, chat_id: &ChatId) -> Result<(), AppError> {
    let Some(chat) = s
        .store
        .group_chat(chat_id)
        .await?
        .filter(|c| c.dismissed_at.is_none())
    else {
        return Ok(());
    };
    let ranks = Ranks::load(s).await?;
    let now = s.clock.now_ms();
    let mut tx = s.store.begin().await?;
    store_groups::dismiss_chat(&mut tx, chat_id, now).await?;
    store_groups::record_chat_change(&mut tx, chat_id, "dismiss", &chat.name, now).await?;
    if !s.settings.notify.operators.is_empty() {
        let text = format!(
            "客户群「{}」（{}群，群主 {}）已解散，siyu 已把它移出该等级的群。{}",
            chat.name,
            ranks.name(&chat.tier),
            chat.owner,
            if s.store.group_chats(Some(&chat.tier)).await?.len() <= 1 {
                "该等级已没有可用的群，请在 siyu 中为它设置新的群。"
            } else {
                ""
            }
        );
        let key = format!("group-dismissed:{chat_id}");
        s.enqueue(
            &mut tx,
            OPERATOR_NOTICE_JOB,
            &OperatorNotice { text },
            &key,
            None,
        )
        .await?;
    }
    tx.commit().await?;
    tracing::warn!(chat = %chat_id, tier = %chat.tier, "a tier group was dismissed");
    keep_join_way(s, &chat.tier).await?;
    Ok(())
}

/// Tells the operators (`notify.operators`) of something about the tier groups.
async fn operator_notice(
    s: &Services,
    ctx: &JobContext,
    job: OperatorNotice,
) -> Result<(), JobError> {
    let to: Vec<UserId> = s
        .settings
        .notify
        .operators
        .iter()
        .map(|o| UserId::from(o.as_str()))
        .collect();
    if to.is_empty() {
        return Ok(());
    }
    let (_, outcome) = ctx
        .send_once(
            || async move { Ok(job.text) },
            |_| async { Ok(crate::jobs::send::Look::SendAgain) },
            |text: &String| {
                let text = text.clone();
                let to = to.clone();
                let s = s.clone();
                async move { s.wecom.send_text_to_members(&to, &text).await }
            },
        )
        .await?;
    match outcome {
        Outcome::Refused { error, .. } => Err(AppError::from(error).into()),
        Outcome::Sent(_) | Outcome::SentBefore => Ok(()),
    }
}

/// Whether an error from groupchat/get says the group is gone.
pub fn is_gone(e: &WecomError) -> bool {
    matches!(
        e.errcode(),
        Some(GROUP_DISMISSED) | Some(NOT_A_CUSTOMER_GROUP)
    )
}

/// The names of customers, for messages.
pub async fn names(
    s: &Services,
    ids: &[ExternalUserId],
) -> Result<HashMap<ExternalUserId, String>, AppError> {
    let mut out = HashMap::new();
    for id in ids {
        if let Some(c) = s.store.customer(id).await? {
            out.insert(id.clone(), c.name);
        }
    }
    Ok(out)
}
