//! What every mass message (企业群发, `add_msg_template`) siyu creates shares, whoever decides it
//! (tier-group invitations, campaigns): WeCom's per-customer cap (api.md §11, a per-corp policy
//! counted over invitations and campaigns alike), finding the task an attempt with an unknown
//! outcome made, and reading what the member did with it.

use std::collections::HashSet;

use chrono::{Datelike, TimeZone};

use super::{AppError, Services};
use crate::ids::{ExternalUserId, UserId};
use crate::wecom::client::types::{MassMessageRequest, SendResult};

/// Since when WeCom's per-customer mass-message cap counts (`groups.mass_cap_period`: the day,
/// the week from Monday, or the month, in the configured time zone).
pub fn cap_period_start(s: &Services, now: i64) -> i64 {
    let tz = s.settings.timezone().unwrap_or(chrono_tz::Asia::Shanghai);
    let Some(local) = tz.timestamp_millis_opt(now).single() else {
        return now;
    };
    let date = local.date_naive();
    let start = match s.settings.groups.mass_cap_period.as_str() {
        "day" => date,
        "week" => date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday())),
        _ => date.with_day(1).unwrap_or(date),
    };
    start
        .and_hms_opt(0, 0, 0)
        .and_then(|t| tz.from_local_datetime(&t).earliest())
        .map_or(now, |t| t.timestamp_millis())
}

/// The cap's period as a member reads it.
pub fn cap_period_word(s: &Services) -> &'static str {
    match s.settings.groups.mass_cap_period.as_str() {
        "day" => "今天",
        "week" => "本周",
        _ => "本月",
    }
}

/// How many mass messages a customer may receive in the period (0 in the settings: the days of
/// the month, WeCom's default).
pub fn cap_count(s: &Services, now: i64) -> u32 {
    let configured = s.settings.groups.mass_cap_count;
    if configured > 0 {
        return configured;
    }
    let tz = s.settings.timezone().unwrap_or(chrono_tz::Asia::Shanghai);
    let Some(local) = tz.timestamp_millis_opt(now).single() else {
        return 28;
    };
    let (y, m) = (local.year(), local.month());
    let next = if m == 12 {
        chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    next.and_then(|n| n.pred_opt()).map_or(28, |d| d.day())
}

/// After an unknown outcome: the task an attempt made, if any — a message of `request`'s chat
/// type created since `since_ms`, with the same text, whose sender is `sender`.
///
/// A member's texts repeat (every invitation to a tier's group reads the same), so where the
/// request names its customers the task must also be theirs: every customer it went to is one
/// the request names. Of several such tasks, the one reaching most of them is this attempt's; an
/// earlier task to other customers is never taken for it.
pub async fn find_task(
    s: &Services,
    since_ms: i64,
    sender: &UserId,
    request: &MassMessageRequest,
) -> Result<Option<String>, AppError> {
    let start = since_ms / 1000 - 60;
    let end = s.clock.now_ms() / 1000 + 60;
    let text = request.text.as_ref().map(|t| t.content.as_str());
    let named: Option<HashSet<&ExternalUserId>> = (request.chat_type == "single"
        && !request.external_userid.is_empty())
    .then(|| request.external_userid.iter().collect());
    let mut best: Option<(usize, String)> = None;
    let mut cursor = String::new();
    loop {
        let page = s
            .wecom
            .list_mass_messages(&request.chat_type, start, end, &cursor)
            .await?;
        for m in &page.group_msg_list {
            if m.text.as_ref().map(|t| t.content.as_str()) != text {
                continue;
            }
            let tasks = s.wecom.mass_message_tasks(&m.msgid, "").await?;
            if !tasks.task_list.iter().any(|t| t.userid == *sender) {
                continue;
            }
            let Some(named) = &named else {
                return Ok(Some(m.msgid.clone()));
            };
            let reached = results(s, &m.msgid, sender).await?;
            let theirs =
                !reached.is_empty() && reached.iter().all(|r| named.contains(&r.external_userid));
            if theirs && best.as_ref().is_none_or(|(n, _)| reached.len() > *n) {
                best = Some((reached.len(), m.msgid.clone()));
            }
        }
        if page.next_cursor.is_empty() {
            return Ok(best.map(|(_, msgid)| msgid));
        }
        cursor = page.next_cursor;
    }
}

/// Whether the member sent the task.
pub async fn sender_sent(s: &Services, msgid: &str, member: &UserId) -> Result<bool, AppError> {
    let mut cursor = String::new();
    loop {
        let page = s.wecom.mass_message_tasks(msgid, &cursor).await?;
        if let Some(t) = page.task_list.iter().find(|t| t.userid == *member) {
            return Ok(t.status == 2);
        }
        if page.next_cursor.is_empty() {
            return Ok(false);
        }
        cursor = page.next_cursor;
    }
}

/// What came of the member's task, per customer (or group): every page.
pub async fn results(
    s: &Services,
    msgid: &str,
    member: &UserId,
) -> Result<Vec<SendResult>, AppError> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = s.wecom.mass_message_results(msgid, member, &cursor).await?;
        out.extend(page.send_list);
        if page.next_cursor.is_empty() {
            return Ok(out);
        }
        cursor = page.next_cursor;
    }
}

/// What became of one `add_msg_template` sent at most once.
pub enum Created {
    /// The task exists: its msgid (None when an earlier attempt made it and WeCom's list no
    /// longer shows it), the customers WeCom could not send to, and the request as sent.
    Task {
        msgid: Option<String>,
        fail_list: Vec<crate::ids::ExternalUserId>,
        request: MassMessageRequest,
    },
    /// WeCom refused it.
    Refused(crate::wecom::client::WecomError),
}

/// Creates a mass-message task at most once: `render` builds the request on the first attempt
/// (kept in the job's ledger, sent byte for byte the same on a retry); after an attempt whose
/// outcome is unknown, the task is looked for at WeCom ([`find_task`]) before sending again.
pub async fn create_once<R, RF>(
    s: &Services,
    ctx: &crate::jobs::JobContext,
    since_ms: i64,
    sender: &UserId,
    render: R,
) -> Result<Created, crate::jobs::JobError>
where
    R: FnOnce() -> RF,
    RF: std::future::Future<Output = Result<MassMessageRequest, crate::jobs::JobError>>,
{
    use crate::jobs::send::{Look, Outcome};
    use std::sync::{Arc, Mutex};
    let found: Arc<Mutex<Option<String>>> = Arc::default();
    let found_by_look = found.clone();
    let (request, outcome) = ctx
        .send_once(
            render,
            |body: &MassMessageRequest| {
                let body = body.clone();
                let found = found_by_look.clone();
                async move {
                    match find_task(s, since_ms, sender, &body).await? {
                        Some(msgid) => {
                            *found.lock().unwrap_or_else(|e| e.into_inner()) = Some(msgid);
                            Ok(Look::Sent)
                        }
                        None => Ok(Look::SendAgain),
                    }
                }
            },
            |body: &MassMessageRequest| {
                let body = body.clone();
                async move { s.wecom.add_mass_message(&body).await }
            },
        )
        .await?;
    Ok(match outcome {
        Outcome::Sent(created) => Created::Task {
            msgid: Some(created.msgid),
            fail_list: created.fail_list,
            request,
        },
        Outcome::SentBefore => {
            let known = found.lock().unwrap_or_else(|e| e.into_inner()).take();
            let msgid = match known {
                Some(id) => Some(id),
                None => find_task(s, since_ms, sender, &request).await?,
            };
            Created::Task {
                msgid,
                fail_list: Vec::new(),
                request,
            }
        }
        Outcome::Refused { error, .. } => Created::Refused(error),
    })
}
