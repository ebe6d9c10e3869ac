//! The note on a relation (the remark and description sales staff see on the customer, from
//! `templates/note_*.j2`) and the member's batched notice (which of their customers deleted them
//! or changed tier). Every write of a remark or description, and every notice, is decided here.

use minijinja::context;
use serde::{Deserialize, Serialize};

use super::channels::attribute;
use super::hooks::{Hooks, TierChanged};
use super::templates::{truncate_bytes, truncate_chars};
use super::{
    AppError, Registrar, RelationJob, RelationsJob, Services, for_each_relation, local_time,
};
use crate::ids::{ExternalUserId, UserId};
use crate::jobs::send::{Look, Outcome};
use crate::jobs::{BoxFuture, JobContext, JobError};
use crate::store::Tx;
use crate::store::contacts::{self, ContactEvent, ContactEventKind};
use crate::wecom::client::types::RemarkRequest;
use crate::wecom::client::{WecomError, code};

pub const NOTE_JOB: &str = "contact.note";
pub const MEMBER_NOTICE_JOB: &str = "contact.member_notice";
/// Job: [`NOTE_JOB`] for each of many relations (a batch of tier changes).
pub const NOTE_BATCH_JOB: &str = "contact.note_batch";

#[derive(Debug, Serialize, Deserialize)]
pub struct MemberNoticeJob {
    pub userid: UserId,
}

/// A notice as rendered on the first attempt and kept in the job's ledger, so that a retry sends
/// byte for byte the same message (and WeCom's duplicate check can catch a repeat).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NoticeBody {
    to: Vec<UserId>,
    text: String,
    /// The contact events it tells of, marked told once it is sent.
    told: Vec<i64>,
}

pub fn register(services: &Services, r: &mut Registrar) {
    let s = services.clone();
    r.jobs.register(NOTE_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: RelationJob = ctx.payload()?;
            note(&s, &job).await
        }
    });
    let s = services.clone();
    r.jobs.register(NOTE_BATCH_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: RelationsJob = ctx.payload()?;
            for_each_relation(&job, |relation| {
                let s = s.clone();
                async move { note(&s, &relation).await }
            })
            .await
        }
    });
    let s = services.clone();
    r.jobs.register(MEMBER_NOTICE_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: MemberNoticeJob = ctx.payload()?;
            member_notice(&s, &ctx, &job).await
        }
    });
}

/// A tier change rewrites the note and is news for the member.
pub fn hooks(h: &mut Hooks) {
    h.on_tier_change("notes", on_tier_change);
}

/// Enqueues writing the note of one relation in `tx`, keyed by its cause.
pub async fn enqueue_note(
    s: &Services,
    tx: &mut Tx,
    userid: &UserId,
    external_userid: &ExternalUserId,
    key: &str,
) -> Result<(), AppError> {
    s.enqueue_for_relation(tx, NOTE_JOB, userid, external_userid, key)
        .await
}

/// A tier change rewrites the note (it names the tier) and is news for the member.
fn on_tier_change<'a>(
    s: &'a Services,
    tx: &'a mut Tx,
    changes: &'a [TierChanged],
) -> BoxFuture<'a, Result<(), AppError>> {
    Box::pin(async move {
        let Some((relations, first)) = super::hooks::relation_batch(changes) else {
            return Ok(());
        };
        s.enqueue_for_relations(
            tx,
            NOTE_BATCH_JOB,
            &relations,
            &format!("tier-notes:{first}"),
        )
        .await?;
        let events: Vec<ContactEvent> = TierChanged::relations(changes)
            .map(|(c, member)| ContactEvent {
                external_userid: c.external_userid.clone(),
                userid: member.clone(),
                kind: ContactEventKind::Tier,
                detail: Some(format!("{}→{}", c.from, c.to)),
                at: c.at,
            })
            .collect();
        contacts::record_contact_events(tx, &events).await?;
        // One notice per member per window, however many of their customers changed.
        let mut told = std::collections::HashSet::new();
        let notices = TierChanged::relations(changes)
            .filter(|(_, member)| told.insert(*member))
            .map(|(c, member)| member_notice_job(s, member, c.at))
            .collect::<Vec<_>>();
        s.enqueue_all(tx, MEMBER_NOTICE_JOB, notices).await
    })
}

/// The note the relation should carry now, rendered from the state: the remark (None when the
/// member typed their own and `notes.overwrite_manual_remark` is off) and the description.
async fn planned_note(s: &Services, job: &RelationJob) -> Result<RemarkRequest, JobError> {
    let store = &s.store;
    let (Some(follow), Some(customer)) = (
        store
            .follow(&job.userid, &job.external_userid)
            .await
            .map_err(AppError::from)?,
        store
            .customer(&job.external_userid)
            .await
            .map_err(AppError::from)?,
    ) else {
        return Err(JobError::Permanent("relation not recorded".into()));
    };
    let channel = attribute(s, Some(&follow.channel)).await?;
    let tier = s
        .tiers()
        .await?
        .iter()
        .find(|t| t.code == customer.tier)
        .map_or(customer.tier.clone(), |t| t.name.clone());
    let ctx = context! {
        name => customer.name,
        channel => channel.name,
        tier => tier,
        staff => follow.userid,
        added_at => local_time(&s.settings, follow.added_at),
    };
    let render = |name: &str, max: usize| {
        s.templates
            .render(name, &ctx)
            .map(|t| truncate_chars(&t, max))
            .map_err(|e| JobError::Permanent(e.to_string()))
    };
    let remark = render("note_remark.j2", 20)?;
    let description = render("note_description.j2", 150)?;
    let typed_by_hand =
        !follow.remark.is_empty() && Some(&follow.remark) != follow.siyu_remark.as_ref();
    let remark = (!typed_by_hand || s.settings.notes.overwrite_manual_remark).then_some(remark);
    Ok(RemarkRequest {
        userid: job.userid.clone(),
        external_userid: job.external_userid.clone(),
        remark,
        description: Some(description),
        ..Default::default()
    })
}

/// Writes the note (remark and description) from the templates. A remark the member typed by
/// hand is kept unless `notes.overwrite_manual_remark`. When the state changed while the call
/// was on its way (a tier change committed meanwhile), it goes again with the new state, so the
/// last call to land is never an older state's (as [`super::tags::sync`] does).
pub async fn note(s: &Services, job: &RelationJob) -> Result<(), JobError> {
    let mut request = planned_note(s, job).await?;
    for _ in 0..5 {
        match s.wecom.remark(&request).await {
            Ok(()) => {}
            Err(
                e @ WecomError::Api {
                    code: code::NO_RELATIONSHIP,
                    ..
                },
            ) => return Err(JobError::Permanent(e.to_string())),
            Err(e) => return Err(AppError::from(e).into()),
        }
        s.store
            .set_siyu_note(
                &job.userid,
                &job.external_userid,
                request.remark.as_deref(),
                request.description.as_deref().unwrap_or_default(),
                s.clock.now_ms(),
            )
            .await
            .map_err(AppError::from)?;
        let now_wanted = planned_note(s, job).await?;
        if now_wanted.remark == request.remark && now_wanted.description == request.description {
            return Ok(());
        }
        request = now_wanted;
    }
    Err(JobError::Retry(
        "the relation's state kept changing while its note was written".into(),
    ))
}

/// Schedules the member's notice for the current window (one per member per window, sent when
/// the window closes, so a burst of news is one message within WeCom's per-member caps).
pub async fn enqueue_member_notice(
    s: &Services,
    tx: &mut Tx,
    userid: &UserId,
    now: i64,
) -> Result<(), AppError> {
    let (job, key, run_at) = member_notice_job(s, userid, now);
    s.enqueue(tx, MEMBER_NOTICE_JOB, &job, &key, run_at).await
}

/// The member's notice job for the window `now` falls in: its payload, key and when it runs
/// (at the window's end, so the window's news goes out in one message).
fn member_notice_job(
    s: &Services,
    userid: &UserId,
    now: i64,
) -> (MemberNoticeJob, String, Option<i64>) {
    let batch_ms = (s.settings.notify.batch_secs.max(1) * 1000) as i64;
    let window = now - now.rem_euclid(batch_ms);
    let job = MemberNoticeJob {
        userid: userid.clone(),
    };
    (
        job,
        format!("member-notice:{userid}:{window}"),
        Some(window + batch_ms),
    )
}

/// Tells the member which customers deleted them and whose tier changed since their last notice,
/// in one message; the operators are told of the churn too. Rendered once: a retry after an
/// unknown outcome sends the recorded text again, which WeCom's duplicate check (an identical
/// message within 30 minutes) drops if the first went out.
async fn member_notice(
    s: &Services,
    ctx: &JobContext,
    job: &MemberNoticeJob,
) -> Result<(), JobError> {
    let first = if ctx.job.ledger.is_none() {
        match render_notice(s, job).await? {
            Some(body) => Some(body),
            None => return Ok(()),
        }
    } else {
        None
    };
    let (_, outcome) = ctx
        .send_once(
            || async move {
                first.ok_or_else(|| JobError::Permanent("the notice was never rendered".into()))
            },
            |_| async { Ok(Look::SendAgain) },
            |body: &NoticeBody| {
                let body = body.clone();
                let s = s.clone();
                async move {
                    // Told from the moment the notice is on its way (its body is in the ledger):
                    // the next window's notice must not tell the same news again.
                    s.store.mark_told(&body.told, s.clock.now_ms()).await?;
                    Ok::<_, NoticeError>(s.wecom.send_text_to_members(&body.to, &body.text).await?)
                }
            },
        )
        .await?;
    match outcome {
        Outcome::Refused {
            error: NoticeError::Wecom(error),
            ..
        } => return Err(AppError::from(error).into()),
        Outcome::Refused {
            error: NoticeError::Store(error),
            ..
        } => return Err(AppError::from(error).into()),
        Outcome::Sent(_) | Outcome::SentBefore => {}
    }
    // News that arrived after the notice was rendered (while a retry waited) goes in the next one.
    if !s
        .store
        .untold_notices(&job.userid)
        .await
        .map_err(AppError::from)?
        .is_empty()
    {
        let mut tx = s.store.begin().await.map_err(AppError::from)?;
        enqueue_member_notice(s, &mut tx, &job.userid, s.clock.now_ms()).await?;
        tx.commit().await.map_err(AppError::from)?;
    }
    Ok(())
}

/// What can stop a notice on its way: marking its news told, or WeCom.
#[derive(Debug, thiserror::Error)]
enum NoticeError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Wecom(#[from] WecomError),
}

impl crate::jobs::send::SendError for NoticeError {
    fn outcome_unknown(&self) -> bool {
        matches!(self, NoticeError::Wecom(WecomError::OutcomeUnknown { .. }))
    }
}

async fn render_notice(
    s: &Services,
    job: &MemberNoticeJob,
) -> Result<Option<NoticeBody>, AppError> {
    let untold = s.store.untold_notices(&job.userid).await?;
    if untold.is_empty() {
        return Ok(None);
    }
    let tiers_in_force = s.tiers().await?;
    let tier_name = |code: &str| {
        tiers_in_force
            .iter()
            .find(|t| t.code == code)
            .map_or(code.to_string(), |t| t.name.clone())
    };
    let mut churned = Vec::new();
    let mut tiers = Vec::new();
    let mut invited = Vec::new();
    let mut removals = Vec::new();
    for (_, e) in &untold {
        let c = s.store.customer(&e.external_userid).await?;
        let name = c.map_or(e.external_userid.to_string(), |c| c.name);
        if e.kind == ContactEventKind::GroupInvited {
            let tier = e.detail.as_deref().unwrap_or_default();
            invited.push(context! { name => name, tier => tier_name(tier) });
        } else if e.kind == ContactEventKind::GroupRemoval {
            removals.push(context! { name => name, group => e.detail.clone().unwrap_or_default() });
        } else if e.kind == ContactEventKind::Tier {
            let (from, to) = e
                .detail
                .as_deref()
                .and_then(|d| d.split_once('→'))
                .unwrap_or(("", ""));
            tiers.push(context! { name => name, from => tier_name(from), to => tier_name(to) });
        } else {
            let follow = s.store.follow(&e.userid, &e.external_userid).await?;
            let channel = attribute(s, follow.as_ref().map(|f| f.channel.as_str())).await?;
            churned.push(context! { name => name, channel => channel.name });
        }
    }
    let text = s.templates.render(
        "member_notice.j2",
        context! { staff => job.userid, churned => churned, tiers => tiers, invited => invited, removals => removals },
    )?;
    let mut to = vec![job.userid.clone()];
    if !churned.is_empty() {
        for op in &s.settings.notify.operators {
            if !to.iter().any(|t| t == op) {
                to.push(UserId::from(op));
            }
        }
    }
    Ok(Some(NoticeBody {
        to,
        text: truncate_bytes(&text, 2000),
        told: untold.iter().map(|(id, _)| *id).collect(),
    }))
}
