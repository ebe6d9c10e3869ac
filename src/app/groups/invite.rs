//! Invitations into a tier's groups. Queued in the transaction that decided them, gathered per
//! member over `groups.invite_batch_secs`, and sent as one `add_msg_template` per member and tier
//! (the member who follows the customers is the sender; the tier's join QR code is attached as an
//! image, uploaded with `media/upload` and uploaded again before its 3 days run out). The member
//! confirms the task in their client; siyu follows it (`get_groupmsg_task`,
//! `get_groupmsg_send_result`), reminds once after `groups.remind_after_hours`, and records per
//! customer: tasked, delivered, not a friend, over the cap. A customer over WeCom's monthly cap
//! gets no template: the member gets an app message naming them, with the QR link.

use std::collections::BTreeMap;

use minijinja::context;
use serde::{Deserialize, Serialize};

use super::Ranks;
use crate::app::mass;
use crate::app::notes::enqueue_member_notice;
use crate::app::templates::truncate_bytes;
use crate::app::{AppError, Registrar, Services};
use crate::ids::{ExternalUserId, UserId};
use crate::jobs::send::{Look, Outcome};
use crate::jobs::{JobContext, JobError};
use crate::store::Tx;
use crate::store::contacts::{self as store_contacts, ContactEvent, ContactEventKind};
use crate::store::groups::{
    self as store_groups, Invitation, InvitationStatus, InviteSend, NewInvitation, SendKind,
    SendStatus, TierGroup,
};
use crate::wecom::client::types::{Attachment, ImageAttachment, MassMessageRequest, Text};
use crate::wecom::client::{WecomError, code};

pub const INVITE_JOB: &str = "groups.invite";
pub const INVITE_SEND_JOB: &str = "groups.invite_send";
pub const INVITE_FOLLOW_JOB: &str = "groups.invite_follow";

/// WeCom takes at most this many customers in one add_msg_template.
const MAX_RECIPIENTS: usize = 10_000;
const HOUR_MS: i64 = 3600 * 1000;

#[derive(Debug, Serialize, Deserialize)]
struct MemberJob {
    userid: UserId,
}

#[derive(Debug, Serialize, Deserialize)]
struct SendJob {
    send_id: i64,
}

/// An app message as rendered on the first attempt, kept in the job's ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ByHand {
    to: Vec<UserId>,
    text: String,
}

pub fn register(services: &Services, r: &mut Registrar) {
    let s = services.clone();
    r.jobs.register(INVITE_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: MemberJob = ctx.payload()?;
            gather(&s, &job.userid).await.map_err(JobError::from)
        }
    });
    let s = services.clone();
    r.jobs.register(INVITE_SEND_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: SendJob = ctx.payload()?;
            send(&s, &ctx, job.send_id).await
        }
    });
    let s = services.clone();
    r.jobs.register(INVITE_FOLLOW_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: SendJob = ctx.payload()?;
            follow(&s, job.send_id).await.map_err(JobError::from)
        }
    });
}

/// Queues an invitation (in `tx`, once per `cause`) and the member's window.
pub async fn queue(
    s: &Services,
    tx: &mut Tx,
    customer: &ExternalUserId,
    tier: &str,
    member: &UserId,
    cause: &str,
    at: i64,
) -> Result<(), AppError> {
    let new = NewInvitation {
        external_userid: customer,
        tier,
        userid: member,
        cause,
        at,
    };
    if store_groups::insert_invitation(tx, &new).await? {
        let batch_ms = (s.settings.groups.invite_batch_secs.max(1) * 1000) as i64;
        let window = at - at.rem_euclid(batch_ms);
        let key = format!("group-invite:{member}:{window}");
        let job = MemberJob {
            userid: member.clone(),
        };
        s.enqueue(tx, INVITE_JOB, &job, &key, Some(window + batch_ms))
            .await?;
    }
    Ok(())
}

/// The member's window closed: their queued invitations still wanted become one send per tier
/// (over-cap customers one app message), decided in one transaction.
async fn gather(s: &Services, member: &UserId) -> Result<(), AppError> {
    let queued = s.store.queued_invitations_of(member).await?;
    if queued.is_empty() {
        return Ok(());
    }
    let now = s.clock.now_ms();
    let configured: Vec<String> = s
        .store
        .tier_groups()
        .await?
        .into_iter()
        .map(|t| t.tier)
        .collect();
    let ids: Vec<ExternalUserId> = queued.iter().map(|i| i.external_userid.clone()).collect();
    let tiers = s.store.tiers_of(&ids).await?;
    let since = mass::cap_period_start(s, now);
    let received = s.store.receipts_since(&ids, since).await?;
    let cap = i64::from(mass::cap_count(s, now));
    let mut cancelled = Vec::new();
    let mut joined = Vec::new();
    let mut by_tier: BTreeMap<String, (Vec<i64>, Vec<i64>)> = BTreeMap::new();
    for i in &queued {
        if tiers.get(&i.external_userid) != Some(&i.tier) || !configured.contains(&i.tier) {
            cancelled.push(i.id);
            continue;
        }
        if in_tier_group(s, &i.external_userid, &i.tier).await? {
            joined.push(i.id);
            continue;
        }
        let (normal, over) = by_tier.entry(i.tier.clone()).or_default();
        if received.get(&i.external_userid).copied().unwrap_or(0) >= cap {
            over.push(i.id);
        } else {
            normal.push(i.id);
        }
    }
    let mut tx = s.store.begin().await?;
    store_groups::set_invitations(&mut tx, &cancelled, InvitationStatus::Cancelled, None, now)
        .await?;
    store_groups::set_invitations(&mut tx, &joined, InvitationStatus::Joined, None, now).await?;
    for (tier, (normal, over)) in &by_tier {
        for chunk in normal.chunks(MAX_RECIPIENTS) {
            let id =
                store_groups::insert_send(&mut tx, member, tier, SendKind::Template, now).await?;
            store_groups::set_invitations(&mut tx, chunk, InvitationStatus::Queued, Some(id), now)
                .await?;
            enqueue_send(s, &mut tx, id).await?;
        }
        if !over.is_empty() {
            let id =
                store_groups::insert_send(&mut tx, member, tier, SendKind::AppMessage, now).await?;
            store_groups::set_invitations(&mut tx, over, InvitationStatus::OverCap, Some(id), now)
                .await?;
            enqueue_send(s, &mut tx, id).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn enqueue_send(s: &Services, tx: &mut Tx, send_id: i64) -> Result<(), AppError> {
    let key = format!("group-invite-send:{send_id}");
    s.enqueue(tx, INVITE_SEND_JOB, &SendJob { send_id }, &key, None)
        .await
}

async fn in_tier_group(
    s: &Services,
    customer: &ExternalUserId,
    tier: &str,
) -> Result<bool, AppError> {
    for m in s.store.memberships_of(customer).await? {
        if m.left_at.is_none()
            && let Some(chat) = s.store.group_chat(&m.chat_id).await?
            && chat.tier == tier
            && chat.dismissed_at.is_none()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn send(s: &Services, ctx: &JobContext, send_id: i64) -> Result<(), JobError> {
    let Some(send) = s.store.invite_send(send_id).await.map_err(AppError::from)? else {
        return Err(JobError::Permanent(format!("no invitation send {send_id}")));
    };
    if send.status != SendStatus::Pending {
        return Ok(());
    }
    let invitations = s
        .store
        .invitations_of_send(send_id)
        .await
        .map_err(AppError::from)?;
    let Some(tg) = s
        .store
        .tier_group(&send.tier)
        .await
        .map_err(AppError::from)?
    else {
        finish(
            s,
            &send,
            SendStatus::Failed,
            Some("the tier has no groups any more"),
        )
        .await?;
        return Ok(());
    };
    // A template carries the invitations still queued; an app message those over the cap.
    let carried = match send.kind {
        SendKind::Template => InvitationStatus::Queued,
        SendKind::AppMessage => InvitationStatus::OverCap,
    };
    let wanted: Vec<Invitation> = invitations
        .into_iter()
        .filter(|i| i.status == carried)
        .collect();
    // (After an attempt, the ledger holds what was sent: that decides, not the state now.)
    if wanted.is_empty() && ctx.job.ledger.is_none() {
        finish(
            s,
            &send,
            SendStatus::Failed,
            Some("no invitation left to send"),
        )
        .await?;
        return Ok(());
    }
    match send.kind {
        SendKind::Template => send_template(s, ctx, &send, &tg, wanted).await,
        SendKind::AppMessage => send_by_hand(s, ctx, &send, &tg, &wanted).await,
    }
}

async fn finish(
    s: &Services,
    send: &InviteSend,
    status: SendStatus,
    error: Option<&str>,
) -> Result<(), AppError> {
    let mut done = send.clone();
    done.status = status;
    done.error = error.map(str::to_string);
    done.finished_at = Some(s.clock.now_ms());
    let mut tx = s.store.begin().await?;
    store_groups::save_send(&mut tx, &done).await?;
    tx.commit().await?;
    Ok(())
}

/// The invitation's text: the tier's template with the tier's name, the member and the QR link.
fn invitation_text(
    s: &Services,
    ranks: &Ranks,
    tg: &TierGroup,
    member: &UserId,
) -> Result<String, AppError> {
    let text = s.templates.render_str(
        "the tier's invitation",
        &tg.invitation,
        context! { tier => ranks.name(&tg.tier), staff => member, qr_code => tg.qr_code },
    )?;
    Ok(truncate_bytes(&text, 4000))
}

async fn send_template(
    s: &Services,
    ctx: &JobContext,
    send: &InviteSend,
    tg: &TierGroup,
    invitations: Vec<Invitation>,
) -> Result<(), JobError> {
    let render = || async {
        let ranks = Ranks::load(s).await?;
        let media_id = qr_media_id(s, tg).await?;
        Ok::<_, JobError>(MassMessageRequest {
            chat_type: "single".into(),
            external_userid: invitations
                .iter()
                .map(|i| i.external_userid.clone())
                .collect(),
            sender: Some(send.userid.clone()),
            text: Some(Text {
                content: invitation_text(s, &ranks, tg, &send.userid)?,
            }),
            attachments: vec![Attachment::Image {
                image: ImageAttachment {
                    media_id: Some(media_id),
                    pic_url: None,
                },
            }],
            ..Default::default()
        })
    };
    let (msgid, fail_list, body) =
        match mass::create_once(s, ctx, send.created_at, &send.userid, render).await? {
            mass::Created::Task {
                msgid,
                fail_list,
                request,
            } => (msgid, fail_list, request),
            mass::Created::Refused(error) => return Err(refused(s, send, tg, error).await),
        };
    tasked(s, send, msgid, &body.external_userid, &fail_list)
        .await
        .map_err(JobError::from)
}

/// What a refused add_msg_template means for the send.
async fn refused(s: &Services, send: &InviteSend, tg: &TierGroup, error: WecomError) -> JobError {
    match error.errcode() {
        // Nobody it could go to: every customer is no longer the member's contact.
        Some(41048) | Some(code::ALL_RECIPIENTS_INVALID) => {
            let result = async {
                let ids: Vec<i64> = s
                    .store
                    .invitations_of_send(send.id)
                    .await?
                    .iter()
                    .map(|i| i.id)
                    .collect();
                let now = s.clock.now_ms();
                let mut tx = s.store.begin().await?;
                store_groups::set_invitations(
                    &mut tx,
                    &ids,
                    InvitationStatus::NotFriend,
                    None,
                    now,
                )
                .await?;
                tx.commit().await?;
                finish(s, send, SendStatus::Failed, Some(&error.to_string())).await
            }
            .await;
            match result {
                Ok(()) => JobError::Permanent(error.to_string()),
                Err(e) => e.into(),
            }
        }
        // The QR image's media_id is not valid (any more): upload it again next time.
        Some(code::INVALID_MEDIA) => {
            if let Some(qr) = &tg.qr_code
                && let Err(e) = crate::app::media::forget_media_id(
                    s,
                    qr,
                    crate::app::media::WecomUpload::Upload,
                )
                .await
            {
                return e.into();
            }
            JobError::Retry(error.to_string())
        }
        _ => AppError::from(error).into(),
    }
}

/// The task was created: the invitations are `tasked` (those WeCom could not send to, not
/// friends), the member hears of it in their notice, and the task is followed.
async fn tasked(
    s: &Services,
    send: &InviteSend,
    msgid: Option<String>,
    recipients: &[ExternalUserId],
    fail_list: &[ExternalUserId],
) -> Result<(), AppError> {
    let now = s.clock.now_ms();
    let invitations = s.store.invitations_of_send(send.id).await?;
    let (failed, ok): (Vec<&Invitation>, Vec<&Invitation>) = invitations
        .iter()
        .filter(|i| recipients.contains(&i.external_userid))
        .partition(|i| fail_list.contains(&i.external_userid));
    let mut updated = send.clone();
    updated.status = SendStatus::Tasked;
    updated.msgid = msgid;
    updated.tasked_at = Some(now);
    let mut tx = s.store.begin().await?;
    store_groups::save_send(&mut tx, &updated).await?;
    let ok_ids: Vec<i64> = ok.iter().map(|i| i.id).collect();
    let failed_ids: Vec<i64> = failed.iter().map(|i| i.id).collect();
    store_groups::set_invitations(&mut tx, &ok_ids, InvitationStatus::Tasked, None, now).await?;
    store_groups::set_invitations(&mut tx, &failed_ids, InvitationStatus::NotFriend, None, now)
        .await?;
    for i in &ok {
        let event = ContactEvent {
            external_userid: i.external_userid.clone(),
            userid: send.userid.clone(),
            kind: ContactEventKind::GroupInvited,
            detail: Some(send.tier.clone()),
            at: now,
        };
        store_contacts::record_contact_event(&mut tx, &event).await?;
    }
    if !ok.is_empty() {
        enqueue_member_notice(s, &mut tx, &send.userid, now).await?;
    }
    enqueue_follow(s, &mut tx, send.id, now).await?;
    tx.commit().await?;
    tracing::info!(
        send = send.id,
        member = %send.userid,
        tier = %send.tier,
        customers = ok.len(),
        "invitation task created"
    );
    Ok(())
}

async fn enqueue_follow(s: &Services, tx: &mut Tx, send_id: i64, now: i64) -> Result<(), AppError> {
    let run_at = now + (s.settings.groups.follow_every_secs.max(1) * 1000) as i64;
    let key = format!("group-follow:{send_id}:{run_at}");
    s.enqueue(
        tx,
        INVITE_FOLLOW_JOB,
        &SendJob { send_id },
        &key,
        Some(run_at),
    )
    .await
}

/// The tier's join QR code as a WeCom image media_id: the one uploaded before while it has more
/// than `media.margin_hours` of its 3 days left, else fetched and uploaded again.
async fn qr_media_id(s: &Services, tg: &TierGroup) -> Result<String, AppError> {
    use crate::app::media::{self, MediaKind, WecomUpload};
    let Some(qr) = tg.qr_code.as_deref() else {
        return Err(AppError::Invalid(format!(
            "the join way of tier {:?} has no QR code",
            tg.tier
        )));
    };
    let filename = format!("{}-qr.png", tg.tier);
    let fetch = || async { Ok(s.wecom.fetch_url(qr).await?) };
    media::wecom_media_id(
        s,
        qr,
        WecomUpload::Upload,
        MediaKind::Image,
        &filename,
        fetch,
    )
    .await
}

/// Customers over the cap: the member is asked to pass the QR code on by hand.
async fn send_by_hand(
    s: &Services,
    ctx: &JobContext,
    send: &InviteSend,
    tg: &TierGroup,
    invitations: &[Invitation],
) -> Result<(), JobError> {
    let render = || async {
        let ranks = Ranks::load(s).await?;
        let ids: Vec<ExternalUserId> = invitations
            .iter()
            .map(|i| i.external_userid.clone())
            .collect();
        let names = super::chats::names(s, &ids).await?;
        let customers: Vec<String> = ids
            .iter()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.to_string()))
            .collect();
        let text = s
            .templates
            .render(
                "group_invite_by_hand.j2",
                context! {
                    staff => send.userid, tier => ranks.name(&tg.tier), customers => customers,
                    qr_code => tg.qr_code, period => mass::cap_period_word(s),
                },
            )
            .map_err(AppError::from)?;
        Ok::<_, JobError>(ByHand {
            to: vec![send.userid.clone()],
            text: truncate_bytes(&text, 2000),
        })
    };
    let (_, outcome) = ctx
        .send_once(
            render,
            // WeCom drops an identical app message within 30 minutes: sending again is safe.
            |_| async { Ok(Look::SendAgain) },
            |body: &ByHand| {
                let body = body.clone();
                async move { s.wecom.send_text_to_members(&body.to, &body.text).await }
            },
        )
        .await?;
    match outcome {
        Outcome::Refused { error, .. } => Err(AppError::from(error).into()),
        Outcome::Sent(_) | Outcome::SentBefore => {
            finish(s, send, SendStatus::Sent, None).await?;
            Ok(())
        }
    }
}

/// Follows a task: once the member sent it, records each customer's result; while unsent,
/// reminds once after `groups.remind_after_hours` and gives up after `groups.follow_for_days`.
async fn follow(s: &Services, send_id: i64) -> Result<(), AppError> {
    let Some(send) = s.store.invite_send(send_id).await? else {
        return Ok(());
    };
    if send.status != SendStatus::Tasked {
        return Ok(());
    }
    let now = s.clock.now_ms();
    let tasked_at = send.tasked_at.unwrap_or(send.created_at);
    let give_up = tasked_at + s.settings.groups.follow_for_days as i64 * 24 * HOUR_MS;
    let msgid = send.msgid.clone();
    let sent = match &msgid {
        Some(msgid) => mass::sender_sent(s, msgid, &send.userid).await?,
        None => false,
    };
    if sent && let Some(msgid) = &msgid {
        return record_results(s, &send, msgid).await;
    }
    if now >= give_up {
        let ids: Vec<i64> = s
            .store
            .invitations_of_send(send.id)
            .await?
            .into_iter()
            .filter(|i| i.status == InvitationStatus::Tasked)
            .map(|i| i.id)
            .collect();
        let mut done = send.clone();
        done.status = SendStatus::Unsent;
        done.finished_at = Some(now);
        let mut tx = s.store.begin().await?;
        store_groups::set_invitations(&mut tx, &ids, InvitationStatus::Unsent, None, now).await?;
        store_groups::save_send(&mut tx, &done).await?;
        tx.commit().await?;
        tracing::info!(send = send.id, member = %send.userid, "an invitation task was never sent");
        return Ok(());
    }
    let mut updated = send.clone();
    let remind_at = tasked_at + s.settings.groups.remind_after_hours as i64 * HOUR_MS;
    if send.reminded_at.is_none()
        && now >= remind_at
        && let Some(msgid) = &msgid
    {
        match s.wecom.remind_mass_message(msgid).await {
            Ok(())
            | Err(WecomError::Api {
                code: code::REMIND_LIMIT,
                ..
            }) => {
                updated.reminded_at = Some(now);
                tracing::info!(send = send.id, member = %send.userid, "member reminded of an invitation task");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut tx = s.store.begin().await?;
    store_groups::save_send(&mut tx, &updated).await?;
    enqueue_follow(s, &mut tx, send.id, now).await?;
    tx.commit().await?;
    Ok(())
}

/// The member sent the task: each customer delivered (a receipt against the cap), not a friend,
/// or over the cap (then the member is given the QR code by hand).
async fn record_results(s: &Services, send: &InviteSend, msgid: &str) -> Result<(), AppError> {
    let results = mass::results(s, msgid, &send.userid).await?;
    let now = s.clock.now_ms();
    let invitations = s.store.invitations_of_send(send.id).await?;
    let mut by_status: BTreeMap<&'static str, Vec<i64>> = BTreeMap::new();
    let mut delivered = Vec::new();
    for i in invitations
        .iter()
        .filter(|i| i.status == InvitationStatus::Tasked)
    {
        let status = results
            .iter()
            .find(|r| r.external_userid == i.external_userid)
            .map_or(0, |r| r.status);
        let to = match status {
            1 => {
                delivered.push(i.external_userid.clone());
                InvitationStatus::Delivered
            }
            2 => InvitationStatus::NotFriend,
            3 => InvitationStatus::OverCap,
            _ => InvitationStatus::Unsent,
        };
        by_status.entry(to.as_str()).or_default().push(i.id);
    }
    let mut done = send.clone();
    done.status = SendStatus::Sent;
    done.finished_at = Some(now);
    let mut tx = s.store.begin().await?;
    for (status, ids) in &by_status {
        let Some(status) = InvitationStatus::parse(status) else {
            continue;
        };
        if status == InvitationStatus::OverCap {
            let id = store_groups::insert_send(
                &mut tx,
                &send.userid,
                &send.tier,
                SendKind::AppMessage,
                now,
            )
            .await?;
            store_groups::set_invitations(&mut tx, ids, status, Some(id), now).await?;
            enqueue_send(s, &mut tx, id).await?;
        } else {
            store_groups::set_invitations(&mut tx, ids, status, None, now).await?;
        }
    }
    for customer in &delivered {
        store_groups::record_receipt(&mut tx, customer, msgid, now).await?;
    }
    store_groups::save_send(&mut tx, &done).await?;
    tx.commit().await?;
    tracing::info!(
        send = send.id,
        delivered = delivered.len(),
        "invitation task sent by the member"
    );
    Ok(())
}
