//! Reconciliation, nightly and by hand (`siyu groups reconcile [--dry-run]`): every tier group
//! read again at WeCom (`groupchat/list` by the groups' owners, `groupchat/get` for each) and
//! compared with what siyu holds. It fixes the membership table (a join or leave whose callback
//! was lost), asks for removals where one is missing, adopts overflow groups, drops dismissed
//! ones, and invites customers who entered a tier after its groups were set and were never
//! invited.

use std::collections::HashSet;

use serde::Serialize;

use super::chats::{self, Hints};
use super::{Ranks, invite};
use crate::app::{AppError, Registrar, Services};
use crate::ids::{ChatId, UserId};
use crate::jobs::JobError;
use crate::jobs::scheduler::Recurring;

pub const RECONCILE_JOB: &str = "groups.reconcile";

/// What a reconciliation found (and, unless a dry run, changed): one line each.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub groups_read: usize,
    pub changes: Vec<String>,
    pub dry_run: bool,
}

pub fn register(services: &Services, r: &mut Registrar) {
    let s = services.clone();
    r.jobs.register(RECONCILE_JOB, move |_ctx| {
        let s = s.clone();
        async move {
            let report = reconcile(&s, false).await.map_err(JobError::from)?;
            tracing::info!(
                groups = report.groups_read,
                changes = report.changes.len(),
                "tier groups reconciled"
            );
            Ok(())
        }
    });
    r.recurring.push(Recurring {
        name: "groups.reconcile".into(),
        cron: "30 4 * * *".into(),
        job_kind: RECONCILE_JOB.into(),
        payload: serde_json::Value::Null,
    });
}

pub async fn reconcile(s: &Services, dry_run: bool) -> Result<Report, AppError> {
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let tier_groups = s.store.tier_groups().await?;
    if tier_groups.is_empty() {
        return Ok(report);
    }
    let ranks = Ranks::load(s).await?;
    let known = s.store.group_chats(None).await?;
    let mut owners: Vec<UserId> = known.iter().map(|c| c.owner.clone()).collect();
    owners.sort();
    owners.dedup();
    let listed = list_groups(s, &owners).await?;
    let known_ids: HashSet<ChatId> = known.iter().map(|c| c.chat_id.clone()).collect();

    for chat in &known {
        let read = match s.wecom.get_group_chat(&chat.chat_id).await {
            Ok(read) => read,
            Err(e) if chats::is_gone(&e) => {
                report.changes.push(format!(
                    "dismissed: {} 「{}」 leaves {}",
                    chat.chat_id, chat.name, chat.tier
                ));
                if !dry_run {
                    chats::dismissed(s, &chat.chat_id).await?;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        report.groups_read += 1;
        let d = chats::diff(s, &ranks, &chat.tier, &read, &Hints::default()).await?;
        for m in &d.joined {
            report.changes.push(format!(
                "joined: {} in {} 「{}」 (not recorded)",
                m.external_userid, chat.chat_id, chat.name
            ));
        }
        for (id, _) in &d.left {
            report.changes.push(format!(
                "left: {} from {} 「{}」 (not recorded)",
                id, chat.chat_id, chat.name
            ));
        }
        for (id, reason) in &d.misplaced {
            report.changes.push(format!(
                "misplaced: {} in {} 「{}」: ask the owner {} to remove ({reason})",
                id, chat.chat_id, chat.name, chat.owner
            ));
        }
        if !dry_run && (!d.is_empty() || read.member_version != chat.member_version) {
            chats::record_read(s, &ranks, &chat.tier, None, None, read, &Hints::default()).await?;
        }
    }

    for chat_id in listed.iter().filter(|c| !known_ids.contains(*c)) {
        if let Some((tier, in_way, read)) = chats::overflow_tier(s, chat_id).await? {
            report.groups_read += 1;
            report.changes.push(format!(
                "overflow: {} 「{}」 joins {}",
                chat_id, read.name, tier
            ));
            if !dry_run {
                chats::record_read(
                    s,
                    &ranks,
                    &tier,
                    Some("overflow"),
                    Some(in_way),
                    read,
                    &Hints::default(),
                )
                .await?;
            }
        }
    }

    for tg in &tier_groups {
        let since = s.store.tier_since(&tg.tier).await?;
        let latest = s.store.latest_invitations_to(&tg.tier).await?;
        let inside: HashSet<_> = s
            .store
            .members_of_tier(&tg.tier)
            .await?
            .into_iter()
            .map(|m| m.external_userid)
            .collect();
        let mut missing: Vec<_> = since
            .into_iter()
            .filter(|(id, at)| {
                *at >= tg.configured_at
                    && !inside.contains(id)
                    && latest.get(id).is_none_or(|i| i.created_at < *at)
            })
            .collect();
        missing.sort();
        for (id, at) in missing {
            let Some(member) = s
                .store
                .connected_follows_of(std::slice::from_ref(&id))
                .await?
                .into_iter()
                .map(|f| f.userid)
                .next()
            else {
                continue;
            };
            report.changes.push(format!(
                "invite: {id} into {} (entered it and was never invited)",
                tg.tier
            ));
            if !dry_run {
                let mut tx = s.store.begin().await?;
                let cause = format!("reconcile:{}:{id}:{at}", tg.tier);
                invite::queue(s, &mut tx, &id, &tg.tier, &member, &cause, s.clock.now_ms()).await?;
                tx.commit().await?;
            }
        }
        if !dry_run {
            chats::keep_join_way(s, &tg.tier).await?;
        }
    }
    Ok(report)
}

/// Every customer group the owners own, as `groupchat/list` pages them (100 owners a call).
async fn list_groups(s: &Services, owners: &[UserId]) -> Result<Vec<ChatId>, AppError> {
    let mut out = Vec::new();
    for chunk in owners.chunks(100) {
        let mut cursor = String::new();
        loop {
            let page = s.wecom.list_group_chats(chunk, &cursor, 1000).await?;
            out.extend(page.group_chat_list.into_iter().map(|g| g.chat_id));
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
    }
    Ok(out)
}
