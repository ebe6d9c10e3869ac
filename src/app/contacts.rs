//! The contact pipeline. A customer adds a member: the event handler decides, in one
//! transaction, what follows. When the channel has a welcome message, one urgent job reads the
//! customer, sends the welcome (its code lives 20 s) and then records the customer and the
//! relation; otherwise an ordinary sync job reads and records. Recording decides the tag sync,
//! the note and the tier evaluation in the same transaction. Every step is a job keyed by the
//! event it came from, so a redelivered event, a crash or a retry never tags, notes or welcomes
//! twice; the customer is read from WeCom once per add.

use std::time::Duration;

use minijinja::context;
use serde::{Deserialize, Serialize};

use super::channels::{attribute, attribute_in};
use super::hooks::RelationChanged;
use super::notes::{self, enqueue_member_notice};
use super::{AppError, Registrar, Services, tags, tiers};
use crate::app::dispatch::EventContext;
use crate::ids::{ExternalUserId, TagId, UserId};
use crate::jobs::send::{Look, Outcome};
use crate::jobs::{JobContext, JobError};
use crate::store::Tx;
use crate::store::contacts::{
    self, ContactEvent, ContactEventKind, Customer, Follow, FollowStatus,
};
use crate::wecom::client::types::{Attachment, CustomerDetail, Text, WelcomeRequest};
use crate::wecom::client::{WecomError, code};
use crate::wecom::event::{ContactChange, Event};

pub const WELCOME_JOB: &str = "contact.welcome";
pub const SYNC_JOB: &str = "contact.sync";

#[derive(Debug, Serialize, Deserialize)]
pub struct WelcomeJob {
    pub welcome_code: String,
    pub userid: UserId,
    pub external_userid: ExternalUserId,
    pub state: Option<String>,
    /// The inbox event it came from (the key of what recording decides); absent in jobs queued
    /// by earlier versions, which then key by the welcome code.
    #[serde(default)]
    pub event_id: Option<i64>,
    /// When the customer added, as near as siyu can tell (Unix ms, see [`when_added`]): where the
    /// welcome's latency starts. Absent in jobs queued by earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_at: Option<i64>,
}

/// The latest instant an add can have happened: its callback's arrival, or the end of the second
/// its `CreateTime` names when that is earlier (a redelivered callback arrives seconds after the
/// add, and WeCom's 20 s run from the add). `CreateTime` counts whole seconds on WeCom's clock,
/// so the arrival, on ours and to the millisecond, is the start whenever it came within that
/// second.
fn when_added(create_time: Option<i64>, received_at: i64) -> i64 {
    create_time
        .map(|secs| secs.saturating_mul(1000).saturating_add(999))
        .map_or(received_at, |end| end.min(received_at))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncReason {
    Add,
    Edit,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SyncJob {
    pub userid: UserId,
    pub external_userid: ExternalUserId,
    pub state: Option<String>,
    pub reason: SyncReason,
    /// The inbox event it came from: the key of every job it decides.
    pub event_id: i64,
    /// Keys the jobs it decides instead of `event_id` (set by a welcome job that could not read
    /// the customer and was queued by an earlier version, without an event id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Registers the contact event handlers and jobs.
pub fn register(services: &Services, r: &mut Registrar) {
    for change in [
        "add_external_contact",
        "add_half_external_contact",
        "edit_external_contact",
        "del_follow_user",
        "del_external_contact",
        "transfer_fail",
    ] {
        let s = services.clone();
        r.events.register(
            &format!("change_external_contact.{change}"),
            move |ctx, event, tx| {
                let s = s.clone();
                Box::pin(async move {
                    on_contact_event(&s, &ctx, event, tx)
                        .await
                        .map_err(|e| e.to_string())
                })
            },
        );
    }
    let s = services.clone();
    r.jobs.register(WELCOME_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: WelcomeJob = ctx.payload()?;
            welcome(&s, &ctx, &job).await
        }
    });
    let s = services.clone();
    r.jobs.register(SYNC_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: SyncJob = ctx.payload()?;
            sync(&s, &job).await
        }
    });
}

async fn on_contact_event(
    s: &Services,
    ctx: &EventContext,
    event: Event,
    tx: &mut Tx,
) -> Result<(), AppError> {
    let Event::ExternalContact {
        header,
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
    // An add with a code, through a channel that has a welcome, is welcomed.
    let welcome_code = match welcome_code.filter(|c| !c.is_empty()) {
        Some(code) if attribute_in(tx, state.as_deref()).await?.welcome.is_some() => Some(code),
        _ => None,
    };
    match change {
        ContactChange::Add | ContactChange::AddHalf => {
            if let Some(code) = welcome_code {
                // The welcome first, urgently: its code lives 20 seconds. The same job reads the
                // customer once and records them after sending.
                let job = WelcomeJob {
                    welcome_code: code.clone(),
                    userid,
                    external_userid,
                    state,
                    event_id: Some(ctx.inbox_id),
                    added_at: Some(when_added(header.create_time, ctx.received_at)),
                };
                s.enqueue_urgent(tx, WELCOME_JOB, &job, &format!("welcome:{code}"))
                    .await?;
            } else {
                sync_job(tx, s, ctx, userid, external_userid, state, SyncReason::Add).await?;
            }
        }
        ContactChange::Edit => {
            sync_job(tx, s, ctx, userid, external_userid, state, SyncReason::Edit).await?;
        }
        ContactChange::DelFollowUser => {
            // The customer deleted the member: churn, and the member and operators are told.
            if contacts::end_follow(tx, &userid, &external_userid, FollowStatus::Lost, now).await? {
                let event = ContactEvent {
                    external_userid,
                    userid: userid.clone(),
                    kind: ContactEventKind::Churn,
                    detail: None,
                    at: now,
                };
                contacts::record_contact_event(tx, &event).await?;
                enqueue_member_notice(s, tx, &userid, now).await?;
                let ended = RelationChanged {
                    userid: userid.clone(),
                    external_userid: event.external_userid.clone(),
                    at: now,
                    key: format!("event:{}", ctx.inbox_id),
                };
                s.hooks().relation_ended(s, tx, &ended).await?;
            }
        }
        ContactChange::Del => {
            let handover = source.as_deref() == Some("DELETE_BY_TRANSFER");
            let (status, kind) = if handover {
                (FollowStatus::Transferred, ContactEventKind::Handover)
            } else {
                (FollowStatus::Deleted, ContactEventKind::Deleted)
            };
            if contacts::end_follow(tx, &userid, &external_userid, status, now).await? {
                let ended = RelationChanged {
                    userid: userid.clone(),
                    external_userid: external_userid.clone(),
                    at: now,
                    key: format!("event:{}", ctx.inbox_id),
                };
                s.hooks().relation_ended(s, tx, &ended).await?;
            }
            let event = ContactEvent {
                external_userid,
                userid,
                kind,
                detail: source,
                at: now,
            };
            contacts::record_contact_event(tx, &event).await?;
        }
        ContactChange::TransferFail => {
            let event = ContactEvent {
                external_userid,
                userid,
                kind: ContactEventKind::TransferFail,
                detail: fail_reason,
                at: now,
            };
            contacts::record_contact_event(tx, &event).await?;
        }
        ContactChange::Other(_) => {}
    }
    Ok(())
}

/// Enqueues the sync of one relation, keyed by the event it came from.
async fn sync_job(
    tx: &mut Tx,
    s: &Services,
    ctx: &EventContext,
    userid: UserId,
    external_userid: ExternalUserId,
    state: Option<String>,
    reason: SyncReason,
) -> Result<(), AppError> {
    let job = SyncJob {
        userid,
        external_userid,
        state,
        reason,
        event_id: ctx.inbox_id,
        key: None,
    };
    s.enqueue(tx, SYNC_JOB, &job, &format!("sync:{}", ctx.inbox_id), None)
        .await
}

/// Reads the customer, sends the channel's welcome message with the event's code, and records the
/// customer and the relation — all at urgent priority, with the client serving these calls before
/// ordinary ones. The send goes through the job's ledger ([`JobContext::send_once`]): after an
/// unknown outcome the same request is sent again, and WeCom's single-use code makes that safe —
/// 41051 then means the first one went out, recorded as probably sent. A used or expired code
/// otherwise (41051, 41050) fails the job, not retried; the customer is recorded all the same.
async fn welcome(s: &Services, ctx: &JobContext, job: &WelcomeJob) -> Result<(), JobError> {
    crate::wecom::client::urgent(async {
        let detail = s.wecom.get_customer_all(&job.external_userid).await;
        let sent = send_welcome(s, ctx, job, detail.as_ref().ok()).await;
        let event_key = job
            .event_id
            .map_or_else(|| format!("welcome:{}", job.welcome_code), |id| id.to_string());
        let relation = Relation {
            userid: &job.userid,
            external_userid: &job.external_userid,
            state: job.state.as_deref(),
            reason: SyncReason::Add,
            event_key: &event_key,
        };
        match detail {
            Ok(detail) => record(s, &relation, detail).await?,
            Err(e) => {
                // Not read now: an ordinary sync reads and records the customer later.
                tracing::warn!(error = %e, "customer not read for the welcome; a sync will read it");
                let mut tx = s.store.begin().await.map_err(AppError::from)?;
                let sync = SyncJob {
                    userid: job.userid.clone(),
                    external_userid: job.external_userid.clone(),
                    state: job.state.clone(),
                    reason: SyncReason::Add,
                    event_id: job.event_id.unwrap_or_default(),
                    key: job.event_id.is_none().then(|| event_key.clone()),
                };
                s.enqueue(&mut tx, SYNC_JOB, &sync, &format!("sync:{event_key}"), None)
                    .await?;
                tx.commit().await.map_err(AppError::from)?;
            }
        }
        sent
    })
    .await
}

async fn send_welcome(
    s: &Services,
    ctx: &JobContext,
    job: &WelcomeJob,
    detail: Option<&CustomerDetail>,
) -> Result<(), JobError> {
    let channel = attribute(s, job.state.as_deref()).await?;
    let Some(w) = channel.welcome.as_ref() else {
        return Ok(());
    };
    let render = || async {
        let name = detail.map_or(String::new(), |d| d.external_contact.name.clone());
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
        let attachments = w
            .attachments
            .iter()
            .map(|a| serde_json::from_value::<Attachment>(a.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JobError::Permanent(format!("the channel's welcome attachments: {e}")))?;
        Ok(WelcomeRequest {
            welcome_code: job.welcome_code.clone(),
            text,
            attachments,
        })
    };
    let (body, outcome) = ctx
        .send_once(
            render,
            // The code is single-use: sending the same request again is the look.
            |_| async { Ok(Look::SendAgain) },
            |request: &WelcomeRequest| {
                let request = request.clone();
                let wecom = s.wecom.clone();
                async move {
                    let sent = wecom.send_welcome(&request).await;
                    if let (Ok(()), Some(added_at)) = (&sent, job.added_at) {
                        let latency = u64::try_from(ctx.clock.now_ms() - added_at).unwrap_or(0);
                        ctx.metrics.welcome_sent(Duration::from_millis(latency));
                    }
                    sent
                }
            },
        )
        .await?;
    match outcome {
        Outcome::Sent(()) | Outcome::SentBefore => Ok(()),
        Outcome::Refused {
            error:
                WecomError::Api {
                    code: code::WELCOME_CODE_USED,
                    ..
                },
            after_unknown: true,
        } => {
            tracing::info!("welcome code used after an unknown outcome: the welcome went out");
            ctx.record_probably_sent(&body).await
        }
        Outcome::Refused {
            error:
                e @ WecomError::Api {
                    code:
                        code::WELCOME_CODE_USED
                        | code::WELCOME_CODE_EXPIRED
                        | code::WELCOME_CODE_MISSING,
                    ..
                },
            ..
        } => Err(JobError::Permanent(e.to_string())),
        Outcome::Refused { error, .. } => Err(AppError::from(error).into()),
    }
}

/// Reads the customer and records it and the relation (an add without a welcome, or an edit).
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
    let event_key = job.key.clone().unwrap_or_else(|| job.event_id.to_string());
    let relation = Relation {
        userid: &job.userid,
        external_userid: &job.external_userid,
        state: job.state.as_deref(),
        reason: job.reason,
        event_key: &event_key,
    };
    record(s, &relation, detail).await
}

/// One relation to record, and why.
struct Relation<'a> {
    userid: &'a UserId,
    external_userid: &'a ExternalUserId,
    state: Option<&'a str>,
    reason: SyncReason,
    /// What keys the jobs recording decides (the inbox event).
    event_key: &'a str,
}

/// Records the customer and the relation as WeCom has them. For an add, decides the tag sync,
/// the note and the tier evaluation; for an edit, notices siyu's tags taken off and has them put
/// back if configured — all in the transaction that records.
async fn record(s: &Services, r: &Relation<'_>, detail: CustomerDetail) -> Result<(), JobError> {
    let Some(info) = detail.follow_user.iter().find(|f| f.userid == *r.userid) else {
        return Err(JobError::Permanent(format!(
            "{} no longer follows the customer",
            r.userid
        )));
    };
    let state = r
        .state
        .map(str::to_string)
        .or_else(|| Some(info.state.clone()).filter(|s| !s.is_empty()));
    let channel = attribute(s, state.as_deref()).await?;
    let now = s.clock.now_ms();
    let entry_tier = s
        .tiers()
        .await?
        .first()
        .map(|t| t.code.clone())
        .unwrap_or_default();
    let customer = Customer {
        external_userid: r.external_userid.clone(),
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
        .follow(r.userid, r.external_userid)
        .await
        .map_err(AppError::from)?;
    let follow = Follow {
        userid: r.userid.clone(),
        external_userid: r.external_userid.clone(),
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
        status: FollowStatus::Connected,
        ended_at: None,
        siyu_remark: known.as_ref().and_then(|k| k.siyu_remark.clone()),
    };
    // Read before the transaction: on SQLite the transaction holds the process's write turn.
    // siyu's tags the relation should carry and WeCom says it lacks. Those siyu's record has
    // were taken off by the member; the others siyu's record may not have caught up with (a tag
    // job's write on its way): either way they are put on, or WeCom's tags, recorded below,
    // would stand without them.
    let missing: Vec<TagId> = match r.reason {
        SyncReason::Add => Vec::new(),
        SyncReason::Edit => tags::wanted_ids(s, &follow)
            .await?
            .into_iter()
            .filter(|t| !follow.tag_ids.contains(t))
            .collect(),
    };
    let removed: Vec<TagId> = missing
        .iter()
        .filter(|t| known.as_ref().is_some_and(|k| k.tag_ids.contains(t)))
        .cloned()
        .collect();
    let key = r.event_key;
    let mut tx = s.store.begin().await.map_err(AppError::from)?;
    contacts::upsert_customer(&mut tx, &customer, now)
        .await
        .map_err(AppError::from)?;
    contacts::upsert_follow(&mut tx, &follow, now)
        .await
        .map_err(AppError::from)?;
    match r.reason {
        SyncReason::Add => {
            tags::enqueue_sync(
                s,
                &mut tx,
                r.userid,
                r.external_userid,
                &format!("tag:{key}"),
            )
            .await?;
            notes::enqueue_note(
                s,
                &mut tx,
                r.userid,
                r.external_userid,
                &format!("note:{key}"),
            )
            .await?;
            let added = RelationChanged {
                userid: r.userid.clone(),
                external_userid: r.external_userid.clone(),
                at: now,
                key: key.to_string(),
            };
            s.hooks().relation_added(s, &mut tx, &added).await?;
            // Activity the shop sent before the customer arrived now counts.
            tiers::enqueue_evaluation(
                s,
                &mut tx,
                Some(vec![r.external_userid.clone()]),
                &format!("evaluate:add:{key}"),
            )
            .await?;
        }
        SyncReason::Edit if removed.is_empty() && !missing.is_empty() => {
            let key = format!("retag:{key}");
            tags::enqueue_sync(s, &mut tx, r.userid, r.external_userid, &key).await?;
        }
        SyncReason::Edit if !removed.is_empty() => {
            // A member took one of siyu's tags off by hand.
            let event = ContactEvent {
                external_userid: r.external_userid.clone(),
                userid: r.userid.clone(),
                kind: ContactEventKind::TagRemoved,
                detail: Some(
                    removed
                        .iter()
                        .map(TagId::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                at: now,
            };
            contacts::record_contact_event(&mut tx, &event)
                .await
                .map_err(AppError::from)?;
            if s.settings.tags.reapply_removed {
                let key = format!("retag:{key}");
                tags::enqueue_sync(s, &mut tx, r.userid, r.external_userid, &key).await?;
            }
        }
        SyncReason::Edit => {}
    }
    tx.commit().await.map_err(AppError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::when_added;

    #[test]
    fn an_add_happened_by_its_arrival_or_by_the_end_of_its_create_time_second() {
        // Delivered within its second: the arrival, to the millisecond.
        assert_eq!(
            when_added(Some(1_700_000_000), 1_700_000_000_420),
            1_700_000_000_420
        );
        // Redelivered seconds later: the end of the second WeCom stamped.
        assert_eq!(
            when_added(Some(1_700_000_000), 1_700_000_007_300),
            1_700_000_000_999
        );
        // A CreateTime ahead of our clock, or none: the arrival.
        assert_eq!(
            when_added(Some(1_700_000_009), 1_700_000_000_420),
            1_700_000_000_420
        );
        assert_eq!(when_added(None, 1_700_000_000_420), 1_700_000_000_420);
    }
}
