//! Asking a group's owner (and its admins) to remove customers who no longer belong there: one
//! app message per owner and window, listing whom and why; asked again once a day up to
//! `groups.removal_repeats` times, then shown overdue. A leave (`del_member`) marks it done.

use std::collections::BTreeMap;

use minijinja::context;
use serde::{Deserialize, Serialize};

use super::Ranks;
use crate::app::notes::enqueue_member_notice;
use crate::app::{AppError, Registrar, Services};
use crate::ids::{ChatId, ExternalUserId, UserId};
use crate::jobs::scheduler::Recurring;
use crate::jobs::send::{Look, Outcome};
use crate::jobs::{JobContext, JobError};
use crate::store::Tx;
use crate::store::contacts::{self as store_contacts, ContactEvent, ContactEventKind};
use crate::store::groups::{self as store_groups, GroupChat};

pub const REMOVAL_NOTICE_JOB: &str = "groups.removal_notice";
pub const SWEEP_JOB: &str = "groups.sweep";
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Serialize, Deserialize)]
struct OwnerJob {
    owner: UserId,
}

/// The message as rendered on the first attempt, kept in the job's ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RemovalNotice {
    to: Vec<UserId>,
    text: String,
    /// The requests it asks about, with how often each was asked before.
    requests: Vec<(i64, i64)>,
}

pub fn register(services: &Services, r: &mut Registrar) {
    let s = services.clone();
    r.jobs.register(REMOVAL_NOTICE_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: OwnerJob = ctx.payload()?;
            notice(&s, &ctx, &job).await
        }
    });
    let s = services.clone();
    r.jobs.register(SWEEP_JOB, move |_ctx| {
        let s = s.clone();
        async move { sweep(&s).await.map_err(JobError::from) }
    });
    r.recurring.push(Recurring {
        name: "groups.sweep".into(),
        cron: "0 * * * *".into(),
        job_kind: SWEEP_JOB.into(),
        payload: serde_json::Value::Null,
    });
}

/// Opens a request to remove `customer` from `chat` (in `tx`) and schedules the owner's message
/// for the current window. Nothing when one is open already.
pub async fn request(
    s: &Services,
    tx: &mut Tx,
    chat: &GroupChat,
    customer: &ExternalUserId,
    reason: &str,
    at: i64,
) -> Result<(), AppError> {
    if store_groups::insert_removal(tx, &chat.chat_id, customer, reason, at)
        .await?
        .is_some()
    {
        enqueue_notice(s, tx, &chat.owner, at).await?;
    }
    Ok(())
}

async fn enqueue_notice(
    s: &Services,
    tx: &mut Tx,
    owner: &UserId,
    now: i64,
) -> Result<(), AppError> {
    let batch_ms = (s.settings.groups.removal_batch_secs.max(1) * 1000) as i64;
    let window = now - now.rem_euclid(batch_ms);
    let key = format!("group-removal:{owner}:{window}");
    let job = OwnerJob {
        owner: owner.clone(),
    };
    s.enqueue(tx, REMOVAL_NOTICE_JOB, &job, &key, Some(window + batch_ms))
        .await
}

/// One message to the owner and the admins of their groups listing whom to remove and why.
async fn notice(s: &Services, ctx: &JobContext, job: &OwnerJob) -> Result<(), JobError> {
    let first = if ctx.job.ledger.is_none() {
        match render(s, &job.owner).await? {
            Some(body) => Some(body),
            None => return Ok(()),
        }
    } else {
        None
    };
    let (body, outcome) = ctx
        .send_once(
            || async move {
                first.ok_or_else(|| JobError::Permanent("the notice was never rendered".into()))
            },
            // WeCom drops an identical app message within 30 minutes: sending again is safe.
            |_| async { Ok(Look::SendAgain) },
            |body: &RemovalNotice| {
                let body = body.clone();
                let s = s.clone();
                async move { s.wecom.send_text_to_members(&body.to, &body.text).await }
            },
        )
        .await?;
    match outcome {
        Outcome::Refused { error, .. } => return Err(AppError::from(error).into()),
        Outcome::Sent(_) | Outcome::SentBefore => {}
    }
    asked(s, &body).await.map_err(JobError::from)
}

/// Records that the owner was asked; on the first ask, the customers' members hear of it in
/// their next notice.
async fn asked(s: &Services, body: &RemovalNotice) -> Result<(), AppError> {
    let now = s.clock.now_ms();
    let ids: Vec<i64> = body.requests.iter().map(|(id, _)| *id).collect();
    let first_asks: Vec<i64> = body
        .requests
        .iter()
        .filter(|(_, asks)| *asks == 0)
        .map(|(id, _)| *id)
        .collect();
    let mut told = Vec::new();
    for id in &first_asks {
        if let Some(r) = s.store.removal(*id).await? {
            let chat = s.store.group_chat(&r.chat_id).await?;
            for f in s
                .store
                .connected_follows_of(std::slice::from_ref(&r.external_userid))
                .await?
            {
                told.push(ContactEvent {
                    external_userid: r.external_userid.clone(),
                    userid: f.userid,
                    kind: ContactEventKind::GroupRemoval,
                    detail: chat.as_ref().map(|c| c.name.clone()),
                    at: now,
                });
            }
        }
    }
    let mut tx = s.store.begin().await?;
    store_groups::mark_asked(&mut tx, &ids, now + DAY_MS).await?;
    for event in &told {
        store_contacts::record_contact_event(&mut tx, event).await?;
        enqueue_member_notice(s, &mut tx, &event.userid, now).await?;
    }
    tx.commit().await?;
    tracing::info!(
        requests = ids.len(),
        "group owners asked to remove customers"
    );
    Ok(())
}

async fn render(s: &Services, owner: &UserId) -> Result<Option<RemovalNotice>, AppError> {
    let now = s.clock.now_ms();
    let max_asks = i64::from(s.settings.groups.removal_repeats) + 1;
    let due: Vec<_> = s
        .store
        .due_removals_of_owner(owner, now)
        .await?
        .into_iter()
        .filter(|r| r.asks < max_asks)
        .collect();
    if due.is_empty() {
        return Ok(None);
    }
    let ranks = Ranks::load(s).await?;
    let mut by_chat: BTreeMap<ChatId, Vec<_>> = BTreeMap::new();
    for r in &due {
        by_chat.entry(r.chat_id.clone()).or_default().push(r);
    }
    let mut to = vec![owner.clone()];
    let mut groups = Vec::new();
    for (chat_id, requests) in by_chat {
        let Some(chat) = s.store.group_chat(&chat_id).await? else {
            continue;
        };
        for admin in &chat.admins {
            if !to.contains(admin) {
                to.push(admin.clone());
            }
        }
        let mut customers = Vec::new();
        for r in requests {
            let name = s
                .store
                .customer(&r.external_userid)
                .await?
                .map_or_else(|| r.external_userid.to_string(), |c| c.name);
            customers.push(context! { name => name, reason => r.reason, again => r.asks > 0 });
        }
        groups.push(
            context! { name => chat.name, tier => ranks.name(&chat.tier), customers => customers },
        );
    }
    let text = s.templates.render(
        "group_removal.j2",
        context! { owner => owner, groups => groups },
    )?;
    Ok(Some(RemovalNotice {
        to,
        text: crate::app::templates::truncate_bytes(&text, 2000),
        requests: due.iter().map(|r| (r.id, r.asks)).collect(),
    }))
}

/// Hourly: requests unanswered for a day are asked again (up to `groups.removal_repeats` times),
/// then marked overdue.
pub async fn sweep(s: &Services) -> Result<(), AppError> {
    let now = s.clock.now_ms();
    let max_asks = i64::from(s.settings.groups.removal_repeats) + 1;
    let due = s.store.due_removals(now).await?;
    if due.is_empty() {
        return Ok(());
    }
    let overdue: Vec<i64> = due
        .iter()
        .filter(|(r, _)| r.asks >= max_asks)
        .map(|(r, _)| r.id)
        .collect();
    let mut owners: Vec<UserId> = due
        .iter()
        .filter(|(r, _)| r.asks < max_asks)
        .map(|(_, owner)| owner.clone())
        .collect();
    owners.sort();
    owners.dedup();
    let mut tx = s.store.begin().await?;
    store_groups::mark_overdue(&mut tx, &overdue).await?;
    for owner in &owners {
        enqueue_notice(s, &mut tx, owner, now).await?;
    }
    tx.commit().await?;
    if !overdue.is_empty() {
        tracing::warn!(requests = overdue.len(), "removal requests are overdue");
    }
    Ok(())
}
