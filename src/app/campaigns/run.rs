//! A campaign's runs: at each due time, the audience in force then becomes WeCom's tasks — one
//! `add_msg_template` per member and 10,000 customers (messages), per group owner (group
//! messages), or one `add_moment_task` (Moments) — each a send with its own job, decided in the
//! run's transaction and sent at most once (the send ledger; an unknown outcome is looked up at
//! WeCom before anything is sent again). Each task is then followed until its results are final.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Audience, Content, When};
use crate::app::{AppError, Registrar, Services, mass};
use crate::ids::{ChatId, ExternalUserId, TagId, UserId};
use crate::jobs::send::{Look, Outcome};
use crate::jobs::{JobContext, JobError};
use crate::store::Tx;
use crate::store::campaigns::{
    self as store_campaigns, CampaignSend, CampaignSendKind, CampaignSendStatus, CampaignStatus,
    RunStatus,
};
use crate::store::contacts::TagKind;
use crate::store::groups as store_groups;
use crate::wecom::client::types::{
    Attachment, ImageAttachment, LinkAttachment, MassMessageRequest, MediaAttachment,
    MomentCustomers, MomentRequest, MomentSenders, MomentVisibleRange, Text,
};
use crate::wecom::client::{WecomError, code};

pub const RUN_JOB: &str = "campaigns.run";
pub const SEND_JOB: &str = "campaigns.send";
pub const FOLLOW_JOB: &str = "campaigns.follow";
pub const CANCEL_JOB: &str = "campaigns.cancel";

/// WeCom takes at most this many customers in one add_msg_template, and groups in one group send.
const MAX_CUSTOMERS: usize = 10_000;
const MAX_GROUPS: usize = 2_000;
/// WeCom takes at most 10 Moments tasks a minute per corp: counted in the database, so across
/// every replica.
const MOMENTS_PER_MINUTE: i64 = 10;
const HOUR_MS: i64 = 3600 * 1000;

#[derive(Debug, Serialize, Deserialize)]
struct RunJob {
    campaign_id: i64,
    due_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SendJob {
    send_id: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct FollowJob {
    send_id: i64,
    #[serde(default)]
    round: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct CancelJob {
    campaign_id: i64,
}

pub fn register(services: &Services, r: &mut Registrar) {
    let s = services.clone();
    r.jobs.register(RUN_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: RunJob = ctx.payload()?;
            start_run(&s, job.campaign_id, job.due_at)
                .await
                .map_err(JobError::from)
        }
    });
    let s = services.clone();
    r.jobs.register(SEND_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: SendJob = ctx.payload()?;
            send(&s, &ctx, job.send_id).await
        }
    });
    let s = services.clone();
    r.jobs.register(FOLLOW_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: FollowJob = ctx.payload()?;
            follow(&s, job.send_id, job.round)
                .await
                .map_err(JobError::from)
        }
    });
    let s = services.clone();
    r.jobs.register(CANCEL_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: CancelJob = ctx.payload()?;
            if cancel(&s, job.campaign_id).await? {
                Ok(())
            } else {
                Err(JobError::RetryAfter {
                    reason: "a Moments task is still being created; cancelled once it exists"
                        .into(),
                    after: Duration::from_secs(5),
                })
            }
        }
    });
}

/// The run at `due_at`, as a job due then (keyed: one per campaign and due time).
pub async fn enqueue_run(
    s: &Services,
    tx: &mut Tx,
    campaign_id: i64,
    due_at: i64,
) -> Result<(), AppError> {
    let key = format!("campaign-run:{campaign_id}:{due_at}");
    let job = RunJob {
        campaign_id,
        due_at,
    };
    s.enqueue(tx, RUN_JOB, &job, &key, Some(due_at)).await
}

pub async fn enqueue_cancel(s: &Services, tx: &mut Tx, campaign_id: i64) -> Result<(), AppError> {
    let key = format!("campaign-cancel:{campaign_id}");
    s.enqueue(tx, CANCEL_JOB, &CancelJob { campaign_id }, &key, None)
        .await
}

/// Who a run goes to, computed from the state when it starts.
#[derive(Debug, Default)]
pub struct Plan {
    pub kind: String,
    /// message: each member's customers (each customer once, with the member who added them
    /// first), those over the cap left out.
    pub per_member: BTreeMap<UserId, Vec<ExternalUserId>>,
    pub over_cap: Vec<ExternalUserId>,
    /// group_message: each owner's tier groups.
    pub per_owner: BTreeMap<UserId, Vec<ChatId>>,
    /// moment: who publishes, and the corp tags the post is visible to.
    pub senders: Vec<UserId>,
    pub tags: Vec<TagId>,
    /// Tiers, segments or channels whose siyu tag does not exist (yet) at WeCom.
    pub missing_tags: Vec<String>,
}

impl Plan {
    /// Customers (message), groups (group_message) or members (moment) it goes to.
    pub fn size(&self) -> usize {
        match self.kind.as_str() {
            "group_message" => self.per_owner.values().map(Vec::len).sum(),
            "moment" => self.senders.len(),
            _ => self.per_member.values().map(Vec::len).sum(),
        }
    }

    pub fn preview(&self) -> serde_json::Value {
        json!({
            "kind": self.kind,
            "audience": self.size(),
            "members": self.per_member.iter().map(|(m, c)| json!({"userid": m, "customers": c.len()})).collect::<Vec<_>>(),
            "excluded": {"over_cap": self.over_cap.len(), "why": "the customer received as many mass messages as WeCom's cap allows in this period (groups.mass_cap_period)"},
            "groups": self.per_owner.iter().map(|(o, g)| json!({"owner": o, "chat_ids": g})).collect::<Vec<_>>(),
            "senders": self.senders,
            "tags": self.tags,
            "missing_tags": self.missing_tags,
        })
    }
}

pub async fn plan(
    s: &Services,
    kind: &str,
    audience: &Audience,
    now: i64,
) -> Result<Plan, AppError> {
    let mut plan = Plan {
        kind: kind.to_string(),
        ..Plan::default()
    };
    match kind {
        "group_message" => {
            for tier in &audience.tiers {
                for chat in s.store.group_chats(Some(tier)).await? {
                    plan.per_owner
                        .entry(chat.owner.clone())
                        .or_default()
                        .push(chat.chat_id);
                }
            }
        }
        "moment" => {
            let rows = s
                .store
                .audience(
                    &audience.tiers,
                    &audience.segments,
                    &audience.channels,
                    &audience.members,
                )
                .await?;
            let senders: HashSet<UserId> = rows.into_iter().map(|(m, _, _)| m).collect();
            plan.senders = senders.into_iter().collect();
            plan.senders.sort();
            let tags = s.store.siyu_tags().await?;
            let wanted = audience
                .tiers
                .iter()
                .map(|t| (TagKind::Tier, t))
                .chain(audience.segments.iter().map(|t| (TagKind::Segment, t)))
                .chain(audience.channels.iter().map(|t| (TagKind::Channel, t)));
            for (k, code) in wanted {
                match tags
                    .iter()
                    .find(|t| t.kind == k && t.code == *code)
                    .and_then(|t| t.tag_id.clone())
                {
                    Some(id) => plan.tags.push(id),
                    None => plan.missing_tags.push(format!("{k} {code}")),
                }
            }
        }
        _ => {
            let rows = s
                .store
                .audience(
                    &audience.tiers,
                    &audience.segments,
                    &audience.channels,
                    &audience.members,
                )
                .await?;
            // Each customer once, from the member who added them first (rows come so ordered).
            let mut seen = HashSet::new();
            let mut chosen = Vec::new();
            for (member, customer, _) in rows {
                if seen.insert(customer.clone()) {
                    chosen.push((member, customer));
                }
            }
            let ids: Vec<ExternalUserId> = chosen.iter().map(|(_, c)| c.clone()).collect();
            let received = s
                .store
                .receipts_since(&ids, mass::cap_period_start(s, now))
                .await?;
            let cap = i64::from(mass::cap_count(s, now));
            for (member, customer) in chosen {
                if received.get(&customer).copied().unwrap_or(0) >= cap {
                    plan.over_cap.push(customer);
                } else {
                    plan.per_member.entry(member).or_default().push(customer);
                }
            }
        }
    }
    Ok(plan)
}

/// A run falls due: its audience is computed now, and its sends (with their jobs), the next
/// run's job and the campaign's status are decided in one transaction. A run that exists already
/// (a second replica, a retry) is left as it is.
async fn start_run(s: &Services, campaign_id: i64, due_at: i64) -> Result<(), AppError> {
    let Some(c) = s.store.campaign(campaign_id).await? else {
        return Ok(());
    };
    if c.status == CampaignStatus::Cancelled {
        return Ok(());
    }
    let audience: Audience = super::parse_json("audience", &c.audience)?;
    let schedule: super::Schedule = super::parse_json("schedule", &c.schedule)?;
    let now = s.clock.now_ms();
    let plan = plan(s, &c.kind, &audience, now).await?;
    let next = When::stored(&schedule).and_then(|w| w.next_after(due_at));
    let mut tx = s.store.begin().await?;
    let (mut run, _) = store_campaigns::run_for(&mut tx, campaign_id, due_at).await?;
    if run.status != RunStatus::Pending {
        return Ok(());
    }
    let mut sends = Vec::new();
    match c.kind.as_str() {
        "group_message" => {
            for (owner, chats) in &plan.per_owner {
                for (i, chunk) in chats.chunks(MAX_GROUPS).enumerate() {
                    let targets: Vec<String> = chunk.iter().map(|c| c.to_string()).collect();
                    sends.push((
                        CampaignSendKind::GroupTemplate,
                        owner.to_string(),
                        i,
                        targets,
                    ));
                }
            }
        }
        "moment" => {
            if !plan.senders.is_empty() {
                let targets = plan.senders.iter().map(|m| m.to_string()).collect();
                sends.push((CampaignSendKind::Moment, String::new(), 0, targets));
            }
        }
        _ => {
            for (member, customers) in &plan.per_member {
                for (i, chunk) in customers.chunks(MAX_CUSTOMERS).enumerate() {
                    let targets: Vec<String> = chunk.iter().map(|c| c.to_string()).collect();
                    sends.push((CampaignSendKind::Template, member.to_string(), i, targets));
                }
            }
        }
    }
    for (kind, sender, chunk, targets) in &sends {
        if let Some(id) = store_campaigns::insert_send(
            &mut tx,
            run.id,
            *kind,
            sender,
            *chunk as i64,
            targets,
            now,
        )
        .await?
        {
            let key = format!("campaign-send:{id}");
            s.enqueue(&mut tx, SEND_JOB, &SendJob { send_id: id }, &key, None)
                .await?;
        }
    }
    run.audience = plan.size() as i64;
    run.excluded_cap = plan.over_cap.len() as i64;
    run.started_at = Some(now);
    if sends.is_empty() {
        run.status = RunStatus::Sent;
        run.finished_at = Some(now);
    } else {
        run.status = RunStatus::Sending;
    }
    if !plan.missing_tags.is_empty() {
        run.error = Some(format!(
            "no siyu tag yet for {}: customers with them do not see the post",
            plan.missing_tags.join(", ")
        ));
    }
    store_campaigns::save_run(&mut tx, &run).await?;
    let status = match next {
        Some(next) => {
            enqueue_run(s, &mut tx, campaign_id, next).await?;
            CampaignStatus::Running
        }
        None => CampaignStatus::Done,
    };
    store_campaigns::set_campaign_status(&mut tx, campaign_id, status, now).await?;
    tx.commit().await?;
    tracing::info!(
        campaign = campaign_id,
        run = run.id,
        sends = sends.len(),
        audience = run.audience,
        over_cap = run.excluded_cap,
        "campaign run started"
    );
    Ok(())
}

/// The send's campaign content, and whether its campaign was cancelled.
async fn content_of(s: &Services, send: &CampaignSend) -> Result<(Content, bool), AppError> {
    let run = s
        .store
        .campaign_run(send.run_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no run {}", send.run_id)))?;
    let c = s
        .store
        .campaign(run.campaign_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no campaign {}", run.campaign_id)))?;
    Ok((
        super::parse_json("content", &c.content)?,
        c.status == CampaignStatus::Cancelled,
    ))
}

async fn send(s: &Services, ctx: &JobContext, send_id: i64) -> Result<(), JobError> {
    let Some(send) = s
        .store
        .campaign_send(send_id)
        .await
        .map_err(AppError::from)?
    else {
        return Err(JobError::Permanent(format!("no campaign send {send_id}")));
    };
    if send.status != CampaignSendStatus::Pending {
        return Ok(());
    }
    let (content, cancelled) = content_of(s, &send).await?;
    if cancelled && ctx.job.ledger.is_none() {
        finish(s, &send, CampaignSendStatus::Cancelled, "cancelled", None).await?;
        return Ok(());
    }
    let targets: Vec<String> = s
        .store
        .recipients_of(send.id)
        .await
        .map_err(AppError::from)?
        .into_iter()
        .map(|r| r.target)
        .collect();
    match send.kind {
        CampaignSendKind::Moment => send_moment(s, ctx, &send, &content, &targets).await,
        _ => send_template(s, ctx, &send, &content, &targets).await,
    }
}

/// Ends a send: its status, and every recipient still pending becomes `recipients`.
async fn finish(
    s: &Services,
    send: &CampaignSend,
    status: CampaignSendStatus,
    recipients: &str,
    error: Option<String>,
) -> Result<(), AppError> {
    let now = s.clock.now_ms();
    let mut done = send.clone();
    done.status = status;
    done.error = error;
    done.finished_at = Some(now);
    let mut tx = s.store.begin().await?;
    store_campaigns::save_send(&mut tx, &done).await?;
    store_campaigns::settle_pending_recipients(&mut tx, send.id, recipients, now).await?;
    tx.commit().await?;
    settle_run(s, send.run_id).await
}

/// A run whose every send is final is `sent` (`failed` when every send failed).
async fn settle_run(s: &Services, run_id: i64) -> Result<(), AppError> {
    let Some(mut run) = s.store.campaign_run(run_id).await? else {
        return Ok(());
    };
    if run.status != RunStatus::Sending {
        return Ok(());
    }
    let sends = s.store.sends_of_run(run_id).await?;
    let open = sends.iter().any(|x| {
        matches!(
            x.status,
            CampaignSendStatus::Pending | CampaignSendStatus::Tasked
        )
    });
    if open {
        return Ok(());
    }
    let all_failed = sends.iter().all(|x| x.status == CampaignSendStatus::Failed);
    run.status = if all_failed {
        RunStatus::Failed
    } else {
        RunStatus::Sent
    };
    run.finished_at = Some(s.clock.now_ms());
    let mut tx = s.store.begin().await?;
    store_campaigns::save_run(&mut tx, &run).await?;
    tx.commit().await?;
    tracing::info!(run = run_id, status = %run.status, "campaign run finished");
    Ok(())
}

async fn message_attachments(s: &Services, content: &Content) -> Result<Vec<Attachment>, AppError> {
    use crate::app::media::{WecomUpload, media_item_media_id};
    let mut out = Vec::new();
    for id in &content.images {
        let media_id = media_item_media_id(s, *id, WecomUpload::Upload).await?;
        out.push(Attachment::Image {
            image: ImageAttachment {
                media_id: Some(media_id),
                pic_url: None,
            },
        });
    }
    if let Some(id) = content.video {
        let media_id = media_item_media_id(s, id, WecomUpload::Upload).await?;
        out.push(Attachment::Video {
            video: MediaAttachment { media_id },
        });
    }
    if let Some(link) = &content.link {
        out.push(Attachment::Link {
            link: LinkAttachment {
                title: link.title.clone(),
                picurl: None,
                desc: None,
                url: link.url.clone(),
            },
        });
    }
    Ok(out)
}

async fn send_template(
    s: &Services,
    ctx: &JobContext,
    send: &CampaignSend,
    content: &Content,
    targets: &[String],
) -> Result<(), JobError> {
    let group = send.kind == CampaignSendKind::GroupTemplate;
    let render = || async {
        Ok::<_, JobError>(MassMessageRequest {
            chat_type: if group { "group" } else { "single" }.into(),
            external_userid: if group {
                Vec::new()
            } else {
                targets
                    .iter()
                    .map(|t| ExternalUserId::from(t.as_str()))
                    .collect()
            },
            chat_id_list: if group {
                targets.iter().map(|t| ChatId::from(t.as_str())).collect()
            } else {
                Vec::new()
            },
            sender: Some(send.sender.clone()),
            text: content.text.clone().map(|content| Text { content }),
            attachments: message_attachments(s, content).await?,
            ..Default::default()
        })
    };
    let (msgid, failed) =
        match mass::create_once(s, ctx, send.created_at, &send.sender, render).await? {
            mass::Created::Task {
                msgid, fail_list, ..
            } => (
                msgid,
                fail_list.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            ),
            mass::Created::Refused(error) => return Err(refused(s, send, content, error).await),
        };
    let now = s.clock.now_ms();
    let mut tasked = send.clone();
    tasked.status = CampaignSendStatus::Tasked;
    tasked.msgid = msgid;
    tasked.tasked_at = Some(now);
    let failed: Vec<(String, &str)> = failed.into_iter().map(|f| (f, "not_friend")).collect();
    let mut tx = s.store.begin().await.map_err(AppError::from)?;
    store_campaigns::save_send(&mut tx, &tasked)
        .await
        .map_err(AppError::from)?;
    store_campaigns::set_recipients(&mut tx, send.id, &failed, now)
        .await
        .map_err(AppError::from)?;
    enqueue_follow(s, &mut tx, send.id, 0, now).await?;
    tx.commit().await.map_err(AppError::from)?;
    tracing::info!(send = send.id, sender = %send.sender, recipients = send.recipients, "campaign task created");
    Ok(())
}

/// What a refused create means for the send.
async fn refused(
    s: &Services,
    send: &CampaignSend,
    content: &Content,
    error: WecomError,
) -> JobError {
    match error.errcode() {
        Some(41048) | Some(code::ALL_RECIPIENTS_INVALID) => {
            match finish(
                s,
                send,
                CampaignSendStatus::Failed,
                "not_friend",
                Some(error.to_string()),
            )
            .await
            {
                Ok(()) => JobError::Permanent(error.to_string()),
                Err(e) => e.into(),
            }
        }
        Some(code::INVALID_MEDIA) => {
            // An uploaded media_id WeCom no longer takes: upload again on the next attempt.
            for id in content
                .images
                .iter()
                .chain(content.video.iter())
                .chain(content.link.iter().filter_map(|l| l.cover.as_ref()))
            {
                let api = if send.kind == CampaignSendKind::Moment {
                    crate::app::media::WecomUpload::MomentAttachment
                } else {
                    crate::app::media::WecomUpload::Upload
                };
                if let Err(e) = crate::app::media::forget_item_media_id(s, *id, api).await {
                    return e.into();
                }
            }
            JobError::Retry(error.to_string())
        }
        _ => AppError::from(error).into(),
    }
}

async fn send_moment(
    s: &Services,
    ctx: &JobContext,
    send: &CampaignSend,
    content: &Content,
    senders: &[String],
) -> Result<(), JobError> {
    use crate::app::media::{WecomUpload, media_item_media_id};
    let now = s.clock.now_ms();
    if ctx.job.ledger.is_none() {
        let mut tx = s.store.begin().await.map_err(AppError::from)?;
        let slot = store_campaigns::reserve_moment_slot(&mut tx, send.id, now, MOMENTS_PER_MINUTE)
            .await
            .map_err(AppError::from)?;
        tx.commit().await.map_err(AppError::from)?;
        if !slot {
            return Err(JobError::Wait {
                reason: "WeCom takes 10 Moments tasks a minute per corp".into(),
                after: Duration::from_secs(5),
            });
        }
    }
    let run = s
        .store
        .campaign_run(send.run_id)
        .await
        .map_err(AppError::from)?
        .ok_or_else(|| JobError::Permanent("the run is gone".into()))?;
    let campaign = s
        .store
        .campaign(run.campaign_id)
        .await
        .map_err(AppError::from)?
        .ok_or_else(|| JobError::Permanent("the campaign is gone".into()))?;
    let audience: Audience = super::parse_json("audience", &campaign.audience)?;
    let render = || async {
        let plan = plan(s, "moment", &audience, now).await?;
        let mut attachments = Vec::new();
        for id in &content.images {
            let media_id = media_item_media_id(s, *id, WecomUpload::MomentAttachment).await?;
            attachments.push(json!({"msgtype": "image", "image": {"media_id": media_id}}));
        }
        if let Some(id) = content.video {
            let media_id = media_item_media_id(s, id, WecomUpload::MomentAttachment).await?;
            attachments.push(json!({"msgtype": "video", "video": {"media_id": media_id}}));
        }
        if let Some(link) = &content.link {
            let mut l = json!({"title": link.title, "url": link.url});
            if let Some(cover) = link.cover {
                l["media_id"] =
                    json!(media_item_media_id(s, cover, WecomUpload::MomentAttachment).await?);
            }
            attachments.push(json!({"msgtype": "link", "link": l}));
        }
        Ok::<_, JobError>(MomentBody {
            request_text: content.text.clone(),
            senders: senders.iter().map(|m| UserId::from(m.as_str())).collect(),
            tags: plan.tags,
            attachments,
        })
    };
    let (_, outcome) = ctx
        .send_once(
            render,
            |body: &MomentBody| {
                let body = body.clone();
                async move {
                    match find_moment(s, send.created_at, body.request_text.as_deref()).await? {
                        Some(_) => Ok(Look::Sent),
                        None => Ok(Look::SendAgain),
                    }
                }
            },
            |body: &MomentBody| {
                let request = body.request();
                async move { s.wecom.add_moment(&request).await }
            },
        )
        .await?;
    let jobid = match outcome {
        Outcome::Sent(jobid) => Some(jobid),
        Outcome::SentBefore => None,
        Outcome::Refused { error, .. } => return Err(refused(s, send, content, error).await),
    };
    let mut tasked = send.clone();
    tasked.status = CampaignSendStatus::Tasked;
    tasked.jobid = jobid;
    tasked.tasked_at = Some(now);
    if tasked.jobid.is_none() {
        tasked.moment_id = find_moment(s, send.created_at, content.text.as_deref()).await?;
    }
    let mut tx = s.store.begin().await.map_err(AppError::from)?;
    store_campaigns::save_send(&mut tx, &tasked)
        .await
        .map_err(AppError::from)?;
    enqueue_follow(s, &mut tx, send.id, 0, now).await?;
    tx.commit().await.map_err(AppError::from)?;
    tracing::info!(
        send = send.id,
        senders = senders.len(),
        "campaign Moments task created"
    );
    Ok(())
}

/// A Moments task as rendered on the first attempt (kept in the ledger).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MomentBody {
    request_text: Option<String>,
    senders: Vec<UserId>,
    tags: Vec<TagId>,
    attachments: Vec<serde_json::Value>,
}

impl MomentBody {
    fn request(&self) -> MomentRequest {
        MomentRequest {
            visible_range: Some(MomentVisibleRange {
                sender_list: Some(MomentSenders {
                    user_list: self.senders.clone(),
                }),
                external_contact_list: (!self.tags.is_empty()).then(|| MomentCustomers {
                    tag_list: self.tags.clone(),
                }),
            }),
            text: self.request_text.clone().map(|content| Text { content }),
            attachments: self.attachments.clone(),
        }
    }
}

/// After an unknown outcome: a corp moment created since the send was decided with the same
/// text (get_moment_list shows a task once WeCom has made its moment).
async fn find_moment(
    s: &Services,
    since_ms: i64,
    text: Option<&str>,
) -> Result<Option<String>, AppError> {
    let start = since_ms / 1000 - 60;
    let end = s.clock.now_ms() / 1000 + 60;
    let mut cursor = String::new();
    loop {
        let page = s.wecom.list_moments(start, end, &cursor).await?;
        if let Some(m) = page
            .moment_list
            .iter()
            .find(|m| m.text.as_ref().map(|t| t.content.as_str()) == text)
        {
            return Ok(Some(m.moment_id.clone()));
        }
        if page.next_cursor.is_empty() {
            return Ok(None);
        }
        cursor = page.next_cursor;
    }
}

async fn enqueue_follow(
    s: &Services,
    tx: &mut Tx,
    send_id: i64,
    round: u32,
    now: i64,
) -> Result<(), AppError> {
    // Polled with backoff: every `groups.follow_every_secs` at first, doubling up to 6 hours.
    let base = (s.settings.groups.follow_every_secs.max(1) * 1000) as i64;
    let delay = (base << round.min(12)).min(6 * HOUR_MS);
    let run_at = now + delay;
    let key = format!("campaign-follow:{send_id}:{round}");
    s.enqueue(
        tx,
        FOLLOW_JOB,
        &FollowJob { send_id, round },
        &key,
        Some(run_at),
    )
    .await
}

/// Follows a task until its results are final: who sent (or published) it and, for messages,
/// what came of each customer or group; a member who has not sent after
/// `groups.remind_after_hours` is reminded once; after `groups.follow_for_days` the rest is
/// `unsent`.
async fn follow(s: &Services, send_id: i64, round: u32) -> Result<(), AppError> {
    let Some(mut send) = s.store.campaign_send(send_id).await? else {
        return Ok(());
    };
    if send.status != CampaignSendStatus::Tasked {
        return Ok(());
    }
    let now = s.clock.now_ms();
    let tasked_at = send.tasked_at.unwrap_or(send.created_at);
    let give_up = now >= tasked_at + s.settings.groups.follow_for_days as i64 * 24 * HOUR_MS;
    let done = match send.kind {
        CampaignSendKind::Moment => follow_moment(s, &mut send, give_up).await?,
        _ => follow_template(s, &mut send, give_up).await?,
    };
    if done {
        return Ok(());
    }
    if give_up {
        return finish(
            s,
            &send,
            CampaignSendStatus::Unsent,
            "unsent",
            send.error.clone(),
        )
        .await;
    }
    let mut tx = s.store.begin().await?;
    store_campaigns::save_send(&mut tx, &send).await?;
    enqueue_follow(s, &mut tx, send.id, round + 1, now).await?;
    tx.commit().await?;
    Ok(())
}

/// True when the task's results are final and recorded.
async fn follow_template(
    s: &Services,
    send: &mut CampaignSend,
    give_up: bool,
) -> Result<bool, AppError> {
    let Some(msgid) = send.msgid.clone() else {
        return Ok(false);
    };
    let now = s.clock.now_ms();
    if mass::sender_sent(s, &msgid, &send.sender).await? {
        let results = mass::results(s, &msgid, &send.sender).await?;
        let group = send.kind == CampaignSendKind::GroupTemplate;
        let mut statuses: Vec<(String, &str)> = Vec::new();
        let mut delivered = Vec::new();
        for r in &results {
            let target = if group {
                r.chat_id.to_string()
            } else {
                r.external_userid.to_string()
            };
            let status = match r.status {
                1 => "delivered",
                2 => "not_friend",
                3 => "over_cap",
                _ => "unsent",
            };
            if r.status == 1 && !group {
                delivered.push(r.external_userid.clone());
            }
            statuses.push((target, status));
        }
        send.status = CampaignSendStatus::Sent;
        send.finished_at = Some(now);
        let mut tx = s.store.begin().await?;
        store_campaigns::save_send(&mut tx, send).await?;
        store_campaigns::set_recipients(&mut tx, send.id, &statuses, now).await?;
        // A group's unsent rows are not returned (api.md §8.4): the rest were not sent.
        store_campaigns::settle_pending_recipients(&mut tx, send.id, "unsent", now).await?;
        for customer in &delivered {
            store_groups::record_receipt(&mut tx, customer, &msgid, now).await?;
        }
        tx.commit().await?;
        tracing::info!(
            send = send.id,
            delivered = delivered.len(),
            "campaign task sent"
        );
        settle_run(s, send.run_id).await?;
        return Ok(true);
    }
    let remind_at = send.tasked_at.unwrap_or(send.created_at)
        + s.settings.groups.remind_after_hours as i64 * HOUR_MS;
    if !give_up && send.reminded_at.is_none() && now >= remind_at {
        match s.wecom.remind_mass_message(&msgid).await {
            Ok(())
            | Err(WecomError::Api {
                code: code::REMIND_LIMIT,
                ..
            }) => send.reminded_at = Some(now),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

async fn follow_moment(
    s: &Services,
    send: &mut CampaignSend,
    give_up: bool,
) -> Result<bool, AppError> {
    let now = s.clock.now_ms();
    if send.moment_id.is_none()
        && let Some(jobid) = send.jobid.clone()
    {
        let result = s.wecom.moment_result(&jobid).await?;
        if result.status != 3 {
            return Ok(false);
        }
        if result.result.errcode != 0 {
            let error = format!(
                "WeCom's Moments task failed: errcode {} {}",
                result.result.errcode, result.result.errmsg
            );
            finish(s, send, CampaignSendStatus::Failed, "unsent", Some(error)).await?;
            return Ok(true);
        }
        send.moment_id = Some(result.result.moment_id.clone()).filter(|m| !m.is_empty());
        let invalid_senders = &result.result.invalid_sender_list.user_list;
        let invalid_tags = &result.result.invalid_external_contact_list.tag_list;
        if !invalid_senders.is_empty() || !invalid_tags.is_empty() {
            send.error = Some(format!(
                "WeCom ignored senders {invalid_senders:?} and tags {invalid_tags:?}"
            ));
        }
        let mut tx = s.store.begin().await?;
        store_campaigns::save_send(&mut tx, send).await?;
        let ignored: Vec<(String, &str)> = invalid_senders
            .iter()
            .map(|u| (u.to_string(), "not_friend"))
            .collect();
        store_campaigns::set_recipients(&mut tx, send.id, &ignored, now).await?;
        tx.commit().await?;
    }
    let Some(moment_id) = send.moment_id.clone() else {
        return Ok(false);
    };
    let mut published = HashMap::new();
    let mut cursor = String::new();
    loop {
        let page = s.wecom.moment_tasks(&moment_id, &cursor).await?;
        for t in page.task_list {
            published.insert(t.userid.to_string(), t.publish_status == 1);
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let statuses: Vec<(String, &str)> = published
        .iter()
        .filter(|(_, p)| **p)
        .map(|(m, _)| (m.clone(), "published"))
        .collect();
    let all = published.values().all(|p| *p);
    let mut tx = s.store.begin().await?;
    store_campaigns::set_recipients(&mut tx, send.id, &statuses, now).await?;
    if all || give_up {
        send.status = if all {
            CampaignSendStatus::Sent
        } else {
            CampaignSendStatus::Unsent
        };
        send.finished_at = Some(now);
        store_campaigns::save_send(&mut tx, send).await?;
        store_campaigns::settle_pending_recipients(&mut tx, send.id, "unsent", now).await?;
    }
    tx.commit().await?;
    if all || give_up {
        settle_run(s, send.run_id).await?;
    }
    Ok(all || give_up)
}

/// Cancels a campaign's sends: those not yet made are dropped, WeCom's tasks are cancelled for
/// the members who have not sent them. False while a Moments task is still being made (its
/// moment must exist to be cancelled): the caller tries again.
async fn cancel(s: &Services, campaign_id: i64) -> Result<bool, AppError> {
    let now = s.clock.now_ms();
    let mut complete = true;
    for mut run in s.store.runs_of(campaign_id).await? {
        for send in s.store.sends_of_run(run.id).await? {
            match send.status {
                CampaignSendStatus::Pending => {
                    finish(s, &send, CampaignSendStatus::Cancelled, "cancelled", None).await?;
                }
                CampaignSendStatus::Tasked => {
                    let mut moment_id = send.moment_id.clone();
                    if moment_id.is_none()
                        && let Some(jobid) = &send.jobid
                    {
                        let result = s.wecom.moment_result(jobid).await?;
                        if result.status != 3 {
                            complete = false;
                            continue;
                        }
                        moment_id = Some(result.result.moment_id).filter(|m| !m.is_empty());
                    }
                    let result = match (&send.msgid, &moment_id) {
                        (Some(msgid), _) => s.wecom.cancel_mass_message(msgid).await,
                        (None, Some(moment_id)) => s.wecom.cancel_moment(moment_id).await,
                        (None, None) => Ok(()),
                    };
                    match result {
                        Ok(())
                        | Err(WecomError::Api {
                            code: code::GROUP_MSG_CANCELLED,
                            ..
                        }) => {}
                        Err(e) => return Err(e.into()),
                    }
                    finish(s, &send, CampaignSendStatus::Cancelled, "cancelled", None).await?;
                }
                _ => {}
            }
        }
        if matches!(run.status, RunStatus::Pending | RunStatus::Sending) {
            run.status = RunStatus::Cancelled;
            run.finished_at = Some(now);
            let mut tx = s.store.begin().await?;
            store_campaigns::save_run(&mut tx, &run).await?;
            tx.commit().await?;
        }
    }
    Ok(complete)
}

/// Reminds every member with an unsent task of the campaign; answers (reminded, refused).
pub async fn remind(s: &Services, campaign_id: i64) -> Result<(usize, Vec<String>), AppError> {
    let mut reminded = 0;
    let mut refused = Vec::new();
    for run in s.store.runs_of(campaign_id).await? {
        for send in s.store.sends_of_run(run.id).await? {
            let (CampaignSendStatus::Tasked, Some(msgid)) = (send.status, &send.msgid) else {
                continue;
            };
            match s.wecom.remind_mass_message(msgid).await {
                Ok(()) => reminded += 1,
                Err(e @ WecomError::Api { .. }) => refused.push(format!("{}: {e}", send.sender)),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok((reminded, refused))
}
