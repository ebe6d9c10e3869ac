//! The contact pipeline. A customer adds a member: the event handler decides, in one
//! transaction, the jobs that follow (welcome, sync); the sync job fetches the customer and
//! decides the tagging and the note. Every step is a job keyed by the event it came from, so a
//! redelivered event, a crash or a retry never tags, notes or welcomes twice.

use minijinja::context;
use serde::{Deserialize, Serialize};

use super::channels::attribute;
use super::tags::{self, CHANNEL, EXTRA, TIER};
use super::templates::truncate_chars;
use super::{AppError, Services, local_time};
use crate::app::dispatch::{EventContext, EventHandlers};
use crate::jobs::{self, JobError, Registry};
use crate::store::Tx;
use crate::store::contacts::{self, ContactEvent, Customer, Follow};
use crate::wecom::client::types::{MarkTagRequest, RemarkRequest, Text, WelcomeRequest};
use crate::wecom::client::{WecomError, code};
use crate::wecom::event::{ContactChange, Event};

pub const WELCOME_JOB: &str = "contact.welcome";
pub const SYNC_JOB: &str = "contact.sync";
pub const TAG_JOB: &str = "contact.tag";
pub const NOTE_JOB: &str = "contact.note";
pub const MEMBER_NOTICE_JOB: &str = "contact.member_notice";
pub const TAG_RESYNC_JOB: &str = "tags.resync";

#[derive(Debug, Serialize, Deserialize)]
pub struct WelcomeJob {
    pub welcome_code: String,
    pub userid: String,
    pub external_userid: String,
    pub state: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncReason {
    Add,
    Edit,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SyncJob {
    pub userid: String,
    pub external_userid: String,
    pub state: Option<String>,
    pub reason: SyncReason,
    /// The inbox event it came from: the key of every job it decides.
    pub event_id: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RelationJob {
    pub userid: String,
    pub external_userid: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MemberNoticeJob {
    pub userid: String,
}

/// Registers the contact event handlers and jobs.
pub fn register(services: &Services, events: &mut EventHandlers, registry: &mut Registry) {
    for change in [
        "add_external_contact",
        "add_half_external_contact",
        "edit_external_contact",
        "del_follow_user",
        "del_external_contact",
        "transfer_fail",
    ] {
        let s = services.clone();
        events.register(
            &format!("change_external_contact.{change}"),
            move |ctx, event| {
                let s = s.clone();
                async move {
                    on_contact_event(&s, &ctx, event)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        );
    }
    for change in ["create", "update", "delete", "shuffle"] {
        let s = services.clone();
        events.register(
            &format!("change_external_tag.{change}"),
            move |ctx, _event| {
                let s = s.clone();
                async move {
                    let key = format!("tagsync:{}", ctx.inbox_id);
                    enqueue_one(&s, TAG_RESYNC_JOB, &serde_json::json!({}), &key, None)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        );
    }

    macro_rules! job {
        ($kind:expr, $ty:ty, $f:path) => {{
            let s = services.clone();
            registry.register($kind, move |ctx| {
                let s = s.clone();
                async move {
                    let payload: $ty = ctx.payload()?;
                    $f(&s, &payload).await
                }
            });
        }};
    }
    job!(WELCOME_JOB, WelcomeJob, welcome);
    job!(SYNC_JOB, SyncJob, sync);
    job!(TAG_JOB, RelationJob, tag);
    job!(NOTE_JOB, RelationJob, note);
    job!(MEMBER_NOTICE_JOB, MemberNoticeJob, member_notice);
    job!(tags::RETAG_JOB, tags::Reapply, reapply);
    let s = services.clone();
    registry.register(TAG_RESYNC_JOB, move |_ctx| {
        let s = s.clone();
        async move { tags::ensure(&s).await.map(drop).map_err(JobError::from) }
    });
}

async fn reapply(services: &Services, r: &tags::Reapply) -> Result<(), JobError> {
    tags::reapply(services, r).await.map_err(JobError::from)
}

async fn enqueue(
    tx: &mut Tx,
    s: &Services,
    kind: &str,
    payload: &impl Serialize,
    key: &str,
    run_at: Option<i64>,
) -> Result<(), AppError> {
    jobs::enqueue(tx, &s.settings.jobs, &s.clock, kind, payload, key, run_at).await?;
    Ok(())
}

async fn enqueue_one(
    s: &Services,
    kind: &str,
    payload: &impl Serialize,
    key: &str,
    run_at: Option<i64>,
) -> Result<(), AppError> {
    let mut tx = s.store.begin().await?;
    enqueue(&mut tx, s, kind, payload, key, run_at).await?;
    tx.commit().await?;
    Ok(())
}

async fn on_contact_event(s: &Services, ctx: &EventContext, event: Event) -> Result<(), AppError> {
    let Event::ExternalContact {
        change,
        user_id,
        external_user_id,
        state,
        welcome_code,
        source,
        fail_reason,
        ..
    } = event
    else {
        return Ok(());
    };
    let (Some(userid), Some(external_userid)) = (user_id, external_user_id) else {
        return Err(AppError::Invalid(
            "contact event without UserID or ExternalUserID".into(),
        ));
    };
    let now = s.clock.now_ms();
    let mut tx = s.store.begin().await?;
    match change {
        ContactChange::Add | ContactChange::AddHalf => {
            // The welcome first: its code lives 20 seconds.
            if let Some(code) = welcome_code.filter(|c| !c.is_empty()) {
                let job = WelcomeJob {
                    welcome_code: code.clone(),
                    userid: userid.clone(),
                    external_userid: external_userid.clone(),
                    state: state.clone(),
                };
                enqueue(
                    &mut tx,
                    s,
                    WELCOME_JOB,
                    &job,
                    &format!("welcome:{code}"),
                    None,
                )
                .await?;
            }
            sync_job(
                &mut tx,
                s,
                ctx,
                userid,
                external_userid,
                state,
                SyncReason::Add,
            )
            .await?;
        }
        ContactChange::Edit => {
            sync_job(
                &mut tx,
                s,
                ctx,
                userid,
                external_userid,
                state,
                SyncReason::Edit,
            )
            .await?;
        }
        ContactChange::DelFollowUser => {
            // The customer deleted the member: churn, and the member and operators are told.
            if contacts::end_follow(&mut tx, &userid, &external_userid, "lost", now).await? {
                let event = ContactEvent {
                    external_userid,
                    userid: userid.clone(),
                    kind: "churn".into(),
                    detail: None,
                    at: now,
                };
                contacts::record_contact_event(&mut tx, &event).await?;
                enqueue_member_notice(&mut tx, s, &userid, now).await?;
            }
        }
        ContactChange::Del => {
            let handover = source.as_deref() == Some("DELETE_BY_TRANSFER");
            let (status, kind) = if handover {
                ("transferred", "handover")
            } else {
                ("deleted", "deleted")
            };
            contacts::end_follow(&mut tx, &userid, &external_userid, status, now).await?;
            let event = ContactEvent {
                external_userid,
                userid,
                kind: kind.into(),
                detail: source,
                at: now,
            };
            contacts::record_contact_event(&mut tx, &event).await?;
        }
        ContactChange::TransferFail => {
            let event = ContactEvent {
                external_userid,
                userid,
                kind: "transfer_fail".into(),
                detail: fail_reason,
                at: now,
            };
            contacts::record_contact_event(&mut tx, &event).await?;
        }
        ContactChange::Other(_) => {}
    }
    tx.commit().await?;
    Ok(())
}

/// Enqueues the sync of one relation, keyed by the event it came from.
async fn sync_job(
    tx: &mut Tx,
    s: &Services,
    ctx: &EventContext,
    userid: String,
    external_userid: String,
    state: Option<String>,
    reason: SyncReason,
) -> Result<(), AppError> {
    let job = SyncJob {
        userid,
        external_userid,
        state,
        reason,
        event_id: ctx.inbox_id,
    };
    enqueue(
        tx,
        s,
        SYNC_JOB,
        &job,
        &format!("sync:{}", ctx.inbox_id),
        None,
    )
    .await
}

/// Sends the channel's welcome message with the event's code. A used or expired code (41051,
/// 41050) is recorded as the job's failure and not retried. An unknown outcome may be retried:
/// the code is single-use, so a welcome that did go out makes the retry answer 41051.
async fn welcome(s: &Services, job: &WelcomeJob) -> Result<(), JobError> {
    let channel = attribute(s, job.state.as_deref())
        .await
        .map_err(JobError::from)?;
    let Some(w) = channel.welcome.as_ref() else {
        return Ok(());
    };
    let name = match s.wecom.get_customer(&job.external_userid).await {
        Ok(detail) => detail.external_contact.name,
        Err(e) => {
            // The welcome matters more than the name in it.
            tracing::warn!(error = %e, "customer not fetched for the welcome; sending it without the name");
            String::new()
        }
    };
    let text = match &w.text {
        Some(t) => Some(Text {
            content: s
                .templates
                .render_str(
                    "welcome",
                    t,
                    context! { name => name, channel => channel.name, staff => job.userid },
                )
                .map_err(|e| JobError::Permanent(e.to_string()))?,
        }),
        None => None,
    };
    let request = WelcomeRequest {
        welcome_code: job.welcome_code.clone(),
        text,
        attachments: w.attachments.clone(),
    };
    match s.wecom.send_welcome(&request).await {
        Ok(()) => Ok(()),
        Err(WecomError::OutcomeUnknown { reason, .. }) => Err(JobError::Retry(format!(
            "welcome outcome unknown ({reason})"
        ))),
        Err(
            e @ WecomError::Api {
                code:
                    code::WELCOME_CODE_USED | code::WELCOME_CODE_EXPIRED | code::WELCOME_CODE_MISSING,
                ..
            },
        ) => Err(JobError::Permanent(e.to_string())),
        Err(e) => Err(AppError::from(e).into()),
    }
}

/// Fetches the customer and records it and the relation. For an add, decides the tagging and
/// the note; for an edit, notices siyu's tags taken off and puts them back if configured.
async fn sync(s: &Services, job: &SyncJob) -> Result<(), JobError> {
    let detail = match s.wecom.get_customer_all(&job.external_userid).await {
        Ok(d) => d,
        Err(
            e @ WecomError::Api {
                code: code::NO_RELATIONSHIP | code::INVALID_EXTERNAL_USERID,
                ..
            },
        ) => {
            // Gone before we looked: nothing left to record.
            return Err(JobError::Permanent(e.to_string()));
        }
        Err(e) => return Err(AppError::from(e).into()),
    };
    let Some(info) = detail.follow_user.iter().find(|f| f.userid == job.userid) else {
        return Err(JobError::Permanent(format!(
            "{} no longer follows the customer",
            job.userid
        )));
    };
    let state = job
        .state
        .clone()
        .or_else(|| Some(info.state.clone()).filter(|s| !s.is_empty()));
    let channel = attribute(s, state.as_deref())
        .await
        .map_err(JobError::from)?;
    let now = s.clock.now_ms();
    let entry_tier = s
        .tiers()
        .await
        .map_err(JobError::from)?
        .first()
        .map(|t| t.code.clone())
        .unwrap_or_default();
    let customer = Customer {
        external_userid: job.external_userid.clone(),
        name: detail.external_contact.name.clone(),
        kind: detail.external_contact.kind,
        corp_name: detail.external_contact.corp_name.clone(),
        tier: entry_tier,
        channel: channel.code.clone(),
        first_added_at: if info.createtime > 0 {
            info.createtime * 1000
        } else {
            now
        },
    };
    let known = s
        .store
        .follow(&job.userid, &job.external_userid)
        .await
        .map_err(AppError::from)?;
    let follow = Follow {
        userid: job.userid.clone(),
        external_userid: job.external_userid.clone(),
        // A relation keeps the channel it was first attributed to.
        channel: known
            .as_ref()
            .map_or(channel.code.clone(), |k| k.channel.clone()),
        state: state.clone(),
        add_way: info.add_way,
        added_at: customer.first_added_at,
        remark: info.remark.clone(),
        description: info.description.clone(),
        tag_ids: info
            .tags
            .iter()
            .filter(|t| !t.tag_id.is_empty())
            .map(|t| t.tag_id.clone())
            .collect(),
        status: "connected".into(),
        ended_at: None,
        siyu_remark: known.as_ref().and_then(|k| k.siyu_remark.clone()),
    };
    let relation = RelationJob {
        userid: job.userid.clone(),
        external_userid: job.external_userid.clone(),
    };
    let mut tx = s.store.begin().await.map_err(AppError::from)?;
    contacts::upsert_customer(&mut tx, &customer, now)
        .await
        .map_err(AppError::from)?;
    contacts::upsert_follow(&mut tx, &follow, now)
        .await
        .map_err(AppError::from)?;
    match job.reason {
        SyncReason::Add => {
            enqueue(
                &mut tx,
                s,
                TAG_JOB,
                &relation,
                &format!("tag:{}", job.event_id),
                None,
            )
            .await?;
            enqueue(
                &mut tx,
                s,
                NOTE_JOB,
                &relation,
                &format!("note:{}", job.event_id),
                None,
            )
            .await?;
            // Activity the shop sent before the customer arrived now counts.
            let evaluation = super::tiers::EvaluateJob {
                customers: Some(vec![job.external_userid.clone()]),
            };
            let key = format!("evaluate:add:{}", job.event_id);
            enqueue(
                &mut tx,
                s,
                super::tiers::EVALUATE_JOB,
                &evaluation,
                &key,
                None,
            )
            .await?;
        }
        SyncReason::Edit => {
            let expected = expected_tags(s, &follow).await.map_err(JobError::from)?;
            let removed: Vec<&String> = expected
                .iter()
                .filter(|t| !follow.tag_ids.contains(t))
                .collect();
            if known.is_some_and(|k| removed.iter().any(|t| k.tag_ids.contains(t))) {
                let event = ContactEvent {
                    external_userid: job.external_userid.clone(),
                    userid: job.userid.clone(),
                    kind: "tag_removed".into(),
                    detail: Some(
                        removed
                            .iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    at: now,
                };
                contacts::record_contact_event(&mut tx, &event)
                    .await
                    .map_err(AppError::from)?;
                if s.settings.tags.reapply_removed {
                    enqueue(
                        &mut tx,
                        s,
                        TAG_JOB,
                        &relation,
                        &format!("retag:{}", job.event_id),
                        None,
                    )
                    .await?;
                }
            }
        }
    }
    tx.commit().await.map_err(AppError::from)?;
    Ok(())
}

/// The tag ids siyu keeps on a relation: its channel, the channel's extra tags, the customer's tier.
async fn expected_tags(s: &Services, follow: &Follow) -> Result<Vec<String>, AppError> {
    let channel = attribute(s, Some(&follow.channel)).await?;
    let tier = s
        .store
        .customer(&follow.external_userid)
        .await?
        .map(|c| c.tier);
    let all = s.store.siyu_tags().await?;
    let mut ids = Vec::new();
    let mut want = |kind: &str, code: &str| {
        if let Some(id) = all
            .iter()
            .find(|t| t.kind == kind && t.code == code)
            .and_then(|t| t.tag_id.clone())
        {
            ids.push(id);
        }
    };
    want(CHANNEL, &channel.code);
    for extra in &channel.tags {
        want(EXTRA, extra);
    }
    if let Some(tier) = &tier {
        want(TIER, tier);
    }
    Ok(ids)
}

/// Puts the channel tag, the channel's extra tags and the tier tag on the relation, in one call.
async fn tag(s: &Services, job: &RelationJob) -> Result<(), JobError> {
    let Some(follow) = s
        .store
        .follow(&job.userid, &job.external_userid)
        .await
        .map_err(AppError::from)?
    else {
        return Err(JobError::Permanent("relation not recorded".into()));
    };
    let mut ids = expected_tags(s, &follow).await.map_err(JobError::from)?;
    let channel = attribute(s, Some(&follow.channel))
        .await
        .map_err(JobError::from)?;
    if ids.len() < 2 + channel.tags.len() {
        // A tag is missing (new channel or tier, or never created): make sure, then look again.
        tags::ensure(s).await.map_err(JobError::from)?;
        ids = expected_tags(s, &follow).await.map_err(JobError::from)?;
    }
    if ids.is_empty() {
        return Err(JobError::Retry("siyu's tags are not in WeCom yet".into()));
    }
    let request = MarkTagRequest {
        userid: job.userid.clone(),
        external_userid: job.external_userid.clone(),
        add_tag: ids.clone(),
        remove_tag: vec![],
    };
    match s.wecom.mark_tag(&request).await {
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
        .add_follow_tags(&job.userid, &job.external_userid, &ids, s.clock.now_ms())
        .await
        .map_err(AppError::from)?;
    Ok(())
}

/// Writes the note (remark and description) from the templates. A remark the member typed by
/// hand is kept unless `notes.overwrite_manual_remark`.
async fn note(s: &Services, job: &RelationJob) -> Result<(), JobError> {
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
    let channel = attribute(s, Some(&follow.channel))
        .await
        .map_err(JobError::from)?;
    let tier = s
        .tiers()
        .await
        .map_err(JobError::from)?
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
    let request = RemarkRequest {
        userid: job.userid.clone(),
        external_userid: job.external_userid.clone(),
        remark: remark.clone(),
        description: Some(description.clone()),
        ..Default::default()
    };
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
    store
        .set_siyu_note(
            &job.userid,
            &job.external_userid,
            remark.as_deref(),
            &description,
            s.clock.now_ms(),
        )
        .await
        .map_err(AppError::from)?;
    Ok(())
}

/// Schedules the member's notice for the current window (one per member per window, sent when
/// the window closes, so a burst of news is one message within WeCom's per-member caps).
pub(crate) async fn enqueue_member_notice(
    tx: &mut Tx,
    s: &Services,
    userid: &str,
    now: i64,
) -> Result<(), AppError> {
    let batch_ms = (s.settings.notify.batch_secs.max(1) * 1000) as i64;
    let window = now - now.rem_euclid(batch_ms);
    let key = format!("member-notice:{userid}:{window}");
    let job = MemberNoticeJob {
        userid: userid.to_string(),
    };
    enqueue(
        tx,
        s,
        MEMBER_NOTICE_JOB,
        &job,
        &key,
        Some(window + batch_ms),
    )
    .await
}

/// Tells the member which customers deleted them and whose tier changed in the last window, in
/// one message; the operators are told of the churn too. WeCom's duplicate check (same message
/// within 30 minutes) makes a retry after an unknown outcome safe.
async fn member_notice(s: &Services, job: &MemberNoticeJob) -> Result<(), JobError> {
    let untold = s
        .store
        .untold_notices(&job.userid)
        .await
        .map_err(AppError::from)?;
    if untold.is_empty() {
        return Ok(());
    }
    let tiers_in_force = s.tiers().await.map_err(JobError::from)?;
    let tier_name = |code: &str| {
        tiers_in_force
            .iter()
            .find(|t| t.code == code)
            .map_or(code.to_string(), |t| t.name.clone())
    };
    let mut churned = Vec::new();
    let mut tiers = Vec::new();
    for (_, e) in &untold {
        let c = s
            .store
            .customer(&e.external_userid)
            .await
            .map_err(AppError::from)?;
        let follow = s
            .store
            .follow(&e.userid, &e.external_userid)
            .await
            .map_err(AppError::from)?;
        let channel = attribute(s, follow.as_ref().map(|f| f.channel.as_str()))
            .await
            .map_err(JobError::from)?;
        let name = c.map_or(e.external_userid.clone(), |c| c.name);
        if e.kind == "tier" {
            let (from, to) = e
                .detail
                .as_deref()
                .and_then(|d| d.split_once('→'))
                .unwrap_or(("", ""));
            tiers.push(context! { name => name, from => tier_name(from), to => tier_name(to) });
        } else {
            churned.push(context! { name => name, channel => channel.name });
        }
    }
    let text = s
        .templates
        .render(
            "member_notice.j2",
            context! { staff => job.userid, churned => churned, tiers => tiers },
        )
        .map_err(|e| JobError::Permanent(e.to_string()))?;
    let mut to: Vec<&str> = vec![job.userid.as_str()];
    if !churned.is_empty() {
        for op in &s.settings.notify.operators {
            if !to.contains(&op.as_str()) {
                to.push(op);
            }
        }
    }
    match s
        .wecom
        .send_text_to_members(&to, &truncate_bytes(&text, 2000))
        .await
    {
        Ok(_) => {}
        Err(WecomError::OutcomeUnknown { reason, .. }) => {
            return Err(JobError::Retry(format!(
                "notice outcome unknown ({reason})"
            )));
        }
        Err(e) => return Err(AppError::from(e).into()),
    }
    let ids: Vec<i64> = untold.iter().map(|(id, _)| *id).collect();
    s.store
        .mark_told(&ids, s.clock.now_ms())
        .await
        .map_err(AppError::from)?;
    Ok(())
}

fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
