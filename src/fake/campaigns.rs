//! Mass messages (企业群发, api.md §8) and customer moments (§9).
//!
//! Neither API sends anything itself: each sender member gets a task in the client and must
//! confirm or publish it. The driver plays that member ([`confirm_mass_message`],
//! [`publish_moment`]); the receipt cap is applied at confirm time (send_result status 3).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};

use super::rules::{
    ApiError, ApiResult, Req, check_message_attachments, check_moment_attachments, err, invalid,
    max_bytes, max_chars, page, parse_json, required,
};
use super::state::{
    MOMENT_JOB_TTL_MS, MassMessageView, MomentSenderView, MomentView, SendResultView,
    SenderTaskView, State, new_id,
};

const MAX_SINGLE_RECIPIENTS: usize = 10_000;
const MAX_GROUP_RECIPIENTS: usize = 2_000;

#[derive(Deserialize)]
struct TagGroupFilter {
    #[serde(default)]
    tag_list: Vec<String>,
}

#[derive(Deserialize)]
struct TagFilter {
    #[serde(default)]
    group_list: Vec<TagGroupFilter>,
}

#[derive(Deserialize)]
struct TextIn {
    content: Option<String>,
}

#[derive(Deserialize)]
struct AddMsgTemplate {
    chat_type: Option<String>,
    #[serde(default)]
    external_userid: Vec<String>,
    #[serde(default)]
    chat_id_list: Vec<String>,
    tag_filter: Option<TagFilter>,
    sender: Option<String>,
    // allow_select only changes what the member may re-pick in the client: nothing to model.
    text: Option<TextIn>,
    #[serde(default)]
    attachments: Vec<Value>,
}

pub(crate) fn add_msg_template(st: &mut State, req: &Req) -> ApiResult {
    let r: AddMsgTemplate = parse_json(req.body)?;
    let chat_type = r.chat_type.clone().unwrap_or_else(|| "single".to_owned());
    let text = r
        .text
        .as_ref()
        .and_then(|t| t.content.clone())
        .filter(|c| !c.is_empty());
    if text.is_none() && r.attachments.is_empty() {
        return Err(invalid("text and attachments are both empty"));
    }
    if let Some(t) = &text {
        max_bytes("text.content", t, 4000)?;
    }
    check_message_attachments(st, &r.attachments)?;
    let sender = r.sender.clone().filter(|s| !s.is_empty());
    if let Some(s) = &sender
        && !st.staff.contains_key(s)
    {
        return Err(err(40003, format!("invalid userid {s:?}")));
    }
    let (rows, fail_list) = match chat_type.as_str() {
        "single" => single_recipients(st, &r, sender.as_deref())?,
        "group" => group_recipients(st, &r, sender.as_deref())?,
        other => return Err(invalid(format!("chat_type {other:?}: single or group"))),
    };
    if rows.is_empty() {
        return Err(err(41048, "no customer to send to"));
    }
    let senders: BTreeSet<&str> = rows.iter().map(|r| r.userid.as_str()).collect();
    let tasks = senders
        .into_iter()
        .map(|u| SenderTaskView {
            userid: u.to_owned(),
            status: 0,
            send_time: None,
        })
        .collect();
    let now = st.now_ms();
    let msgid = new_id("msg", 30);
    let dispatch_ms = i64::try_from(st.dispatch_delay.as_millis()).unwrap_or(i64::MAX);
    st.mass.push(MassMessageView {
        msgid: msgid.clone(),
        chat_type,
        sender,
        create_time: now / 1000,
        text,
        attachments: r.attachments,
        fail_list: fail_list.clone(),
        tasks,
        results: rows,
        cancelled: false,
        reminders: Vec::new(),
        dispatched_at_ms: now.saturating_add(dispatch_ms),
    });
    Ok(json!({ "fail_list": fail_list, "msgid": msgid }))
}

type Recipients = (Vec<SendResultView>, Vec<String>);

fn single_recipients(
    st: &State,
    r: &AddMsgTemplate,
    sender: Option<&str>,
) -> Result<Recipients, ApiError> {
    if r.external_userid.len() > MAX_SINGLE_RECIPIENTS {
        return Err(invalid(format!(
            "external_userid holds {} customers, at most 10000",
            r.external_userid.len()
        )));
    }
    if r.external_userid.is_empty() && sender.is_none() {
        return Err(invalid("external_userid and sender are both empty"));
    }
    let targets: Vec<String> = if r.external_userid.is_empty() {
        // Only `sender`: all of that member's customers.
        st.customers
            .values()
            .filter(|c| {
                c.follow_user
                    .iter()
                    .any(|f| !f.deleted && Some(f.userid.as_str()) == sender)
            })
            .map(|c| c.external_userid.clone())
            .collect()
    } else {
        let mut seen = BTreeSet::new();
        r.external_userid
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .cloned()
            .collect()
    };
    let groups: Vec<&Vec<String>> = r
        .tag_filter
        .as_ref()
        .map(|f| f.group_list.iter().map(|g| &g.tag_list).collect())
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut fail_list = Vec::new();
    for id in targets {
        let Some(customer) = st.customers.get(&id) else {
            fail_list.push(id);
            continue;
        };
        // The task goes to the member who most recently dealt with the customer (api.md §8.1);
        // the fake has no chat history and takes the newest relation.
        let follow = customer
            .follow_user
            .iter()
            .filter(|f| f.sendable() && sender.is_none_or(|s| s == f.userid))
            .max_by_key(|f| f.createtime);
        let Some(follow) = follow else {
            fail_list.push(id);
            continue;
        };
        // Tags are OR-ed inside one group entry and AND-ed across entries.
        let matches = groups
            .iter()
            .all(|tags| tags.is_empty() || tags.iter().any(|t| follow.tags.contains(t)));
        if !matches {
            continue;
        }
        rows.push(SendResultView {
            userid: follow.userid.clone(),
            external_userid: Some(id),
            chat_id: None,
            status: 0,
            send_time: None,
        });
    }
    Ok((rows, fail_list))
}

fn group_recipients(
    st: &State,
    r: &AddMsgTemplate,
    sender: Option<&str>,
) -> Result<Recipients, ApiError> {
    let sender = sender.ok_or_else(|| invalid("sender is required for chat_type group"))?;
    if r.chat_id_list.len() > MAX_GROUP_RECIPIENTS {
        return Err(invalid("chat_id_list holds at most 2000 groups"));
    }
    let mut rows = Vec::new();
    let mut fail_list = Vec::new();
    let owned = |chat_id: &str| {
        st.group_chats
            .get(chat_id)
            .is_some_and(|c| c.owner == sender)
    };
    let chats: Vec<String> = if r.chat_id_list.is_empty() {
        st.group_chats
            .values()
            .filter(|c| c.owner == sender)
            .map(|c| c.chat_id.clone())
            .collect()
    } else {
        r.chat_id_list.clone()
    };
    for chat_id in chats {
        if owned(&chat_id) {
            rows.push(SendResultView {
                userid: sender.to_owned(),
                external_userid: None,
                chat_id: Some(chat_id),
                status: 0,
                send_time: None,
            });
        } else {
            fail_list.push(chat_id);
        }
    }
    Ok((rows, fail_list))
}

#[derive(Deserialize)]
struct GroupMsgList {
    chat_type: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    creator: Option<String>,
    filter_type: Option<i64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(crate) fn get_groupmsg_list_v2(st: &State, req: &Req) -> ApiResult {
    let r: GroupMsgList = parse_json(req.body)?;
    let chat_type = required("chat_type", &r.chat_type, 40058)?;
    if chat_type != "single" && chat_type != "group" {
        return Err(invalid(format!("chat_type {chat_type:?}")));
    }
    let (Some(start), Some(end)) = (r.start_time, r.end_time) else {
        return Err(invalid("start_time and end_time are required"));
    };
    if end < start || end - start > 31 * 86_400 {
        return Err(invalid("the time range spans at most one month"));
    }
    // Larger than the maximum falls back to the default (api.md §8.2).
    let limit = r.limit.filter(|l| (1..=100).contains(l)).unwrap_or(50);
    // Every task of the fake is API-created: create_type 0, no creator.
    let filter_type = r.filter_type.unwrap_or(2);
    let wanted = filter_type != 1 && r.creator.as_deref().is_none_or(str::is_empty);
    let list: Vec<Value> = st
        .mass
        .iter()
        .filter(|m| wanted && m.chat_type == chat_type)
        .filter(|m| (start..=end).contains(&m.create_time))
        .map(|m| {
            let mut v = json!({
                "msgid": m.msgid, "create_time": m.create_time, "create_type": 0,
                "attachments": m.attachments,
            });
            if let Some(text) = &m.text {
                v["text"] = json!({ "content": text });
            }
            v
        })
        .collect();
    let (slice, next) = page(&list, r.cursor.as_deref(), limit)?;
    Ok(json!({ "group_msg_list": slice, "next_cursor": next }))
}

/// The mass message a read names; 41046 missing, 41047 unknown, 41063 still dispatching.
fn readable_mass<'a>(
    st: &'a State,
    msgid: &Option<String>,
) -> Result<&'a MassMessageView, ApiError> {
    let msgid = required("msgid", msgid, 41046)?;
    let m = st
        .mass
        .iter()
        .find(|m| m.msgid == msgid)
        .ok_or_else(|| err(41047, format!("invalid msgid {msgid:?}")))?;
    if st.now_ms() < m.dispatched_at_ms {
        return Err(err(
            41063,
            "the message is still being dispatched, try again later",
        ));
    }
    Ok(m)
}

#[derive(Deserialize)]
struct GroupMsgTask {
    msgid: Option<String>,
    userid: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(crate) fn get_groupmsg_task(st: &State, req: &Req) -> ApiResult {
    let r: GroupMsgTask = parse_json(req.body)?;
    let m = readable_mass(st, &r.msgid)?;
    let limit = r.limit.filter(|l| (1..=1000).contains(l)).unwrap_or(500);
    let tasks: Vec<Value> = m
        .tasks
        .iter()
        .map(|t| {
            let mut v = json!({ "userid": t.userid, "status": t.status });
            if let Some(at) = t.send_time {
                v["send_time"] = json!(at);
            }
            v
        })
        .collect();
    let (slice, next) = page(&tasks, r.cursor.as_deref(), limit)?;
    Ok(json!({ "task_list": slice, "next_cursor": next }))
}

pub(crate) fn get_groupmsg_send_result(st: &State, req: &Req) -> ApiResult {
    let r: GroupMsgTask = parse_json(req.body)?;
    let m = readable_mass(st, &r.msgid)?;
    let userid = required("userid", &r.userid, 41009)?;
    let limit = r.limit.filter(|l| (1..=1000).contains(l)).unwrap_or(500);
    let rows: Vec<Value> = m
        .results
        .iter()
        .filter(|row| row.userid == userid)
        // For group tasks the unsent rows are not returned (the owner has not picked yet).
        .filter(|row| row.chat_id.is_none() || row.status != 0)
        .map(|row| {
            let mut v = json!({ "userid": row.userid, "status": row.status });
            if let Some(id) = &row.external_userid {
                v["external_userid"] = json!(id);
            }
            if let Some(id) = &row.chat_id {
                v["chat_id"] = json!(id);
            }
            if let Some(at) = row.send_time {
                v["send_time"] = json!(at);
            }
            v
        })
        .collect();
    let (slice, next) = page(&rows, r.cursor.as_deref(), limit)?;
    Ok(json!({ "send_list": slice, "next_cursor": next }))
}

#[derive(Deserialize)]
struct MsgIdIn {
    msgid: Option<String>,
}

const REMINDERS_PER_DAY: usize = 3;

pub(crate) fn remind_groupmsg_send(st: &mut State, req: &Req) -> ApiResult {
    let r: MsgIdIn = parse_json(req.body)?;
    let msgid = required("msgid", &r.msgid, 41046)?;
    let now = st.now_ms();
    let m = st
        .mass
        .iter_mut()
        .find(|m| m.msgid == msgid)
        .ok_or_else(|| err(41047, format!("invalid msgid {msgid:?}")))?;
    if m.cancelled {
        return Err(err(41093, "the mass message was cancelled"));
    }
    let recent = m
        .reminders
        .iter()
        .filter(|t| now - **t < 86_400_000)
        .count();
    if recent >= REMINDERS_PER_DAY {
        return Err(err(41094, "at most 3 reminders per message in 24 hours"));
    }
    m.reminders.push(now);
    Ok(json!({}))
}

pub(crate) fn cancel_groupmsg_send(st: &mut State, req: &Req) -> ApiResult {
    let r: MsgIdIn = parse_json(req.body)?;
    let msgid = required("msgid", &r.msgid, 41046)?;
    let m = st
        .mass
        .iter_mut()
        .find(|m| m.msgid == msgid)
        .ok_or_else(|| err(41047, format!("invalid msgid {msgid:?}")))?;
    if m.cancelled {
        return Err(err(41093, "the mass message was already cancelled"));
    }
    // Pending member tasks stop; what was delivered stays delivered.
    m.cancelled = true;
    Ok(json!({}))
}

/// Why the driver could not play a member's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientRefusal {
    NotFound(String),
    Refused(String),
}

/// The member confirms their task in the client: each recipient row becomes 1 (sent), 2 (not a
/// friend any more) or 3 (over the per-recipient cap), and the task becomes 2 (sent).
pub(crate) fn confirm_mass_message(
    st: &mut State,
    msgid: &str,
    userid: &str,
) -> Result<(), ClientRefusal> {
    let now = st.now_ms();
    let (cap, window_start) = st.mass_cap.window(now);
    let index = st
        .mass
        .iter()
        .position(|m| m.msgid == msgid)
        .ok_or_else(|| ClientRefusal::NotFound(format!("mass message {msgid:?}")))?;
    let m = &st.mass[index];
    if m.cancelled {
        return Err(ClientRefusal::Refused(format!(
            "mass message {msgid:?} was cancelled"
        )));
    }
    let task =
        m.tasks.iter().find(|t| t.userid == userid).ok_or_else(|| {
            ClientRefusal::NotFound(format!("{userid:?} has no task in {msgid:?}"))
        })?;
    if task.status == 2 {
        return Err(ClientRefusal::Refused(format!(
            "{userid:?} already sent {msgid:?}"
        )));
    }
    let mut outcomes = Vec::new();
    for (i, row) in m
        .results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.userid == userid)
    {
        let (recipient, reachable) = match (&row.external_userid, &row.chat_id) {
            (Some(ext), _) => (
                ext.as_str(),
                st.follow(userid, ext).is_some_and(|f| f.sendable()),
            ),
            (None, Some(chat)) => (
                chat.as_str(),
                st.group_chats.get(chat).is_some_and(|c| c.owner == userid),
            ),
            (None, None) => continue,
        };
        let status = if !reachable {
            2
        } else if st.received_in_window(recipient, window_start) >= cap {
            3
        } else {
            1
        };
        outcomes.push((i, status));
    }
    let now_secs = now / 1000;
    let m = &mut st.mass[index];
    for (i, status) in outcomes {
        if let Some(row) = m.results.get_mut(i) {
            row.status = status;
            row.send_time = (status == 1).then_some(now_secs);
        }
    }
    if let Some(task) = m.tasks.iter_mut().find(|t| t.userid == userid) {
        task.status = 2;
        task.send_time = Some(now_secs);
    }
    Ok(())
}

// ---- moments (§9) ---------------------------------------------------------------------------

const MOMENT_TASKS_PER_MINUTE: usize = 10;

#[derive(Deserialize)]
struct SenderList {
    #[serde(default)]
    user_list: Vec<String>,
    #[serde(default)]
    department_list: Vec<i64>,
}

#[derive(Deserialize)]
struct ExternalContactList {
    #[serde(default)]
    tag_list: Vec<String>,
}

#[derive(Deserialize)]
struct VisibleRange {
    sender_list: Option<SenderList>,
    external_contact_list: Option<ExternalContactList>,
}

#[derive(Deserialize)]
struct AddMomentTask {
    text: Option<TextIn>,
    #[serde(default)]
    attachments: Vec<Value>,
    visible_range: Option<VisibleRange>,
}

pub(crate) fn add_moment_task(st: &mut State, req: &Req) -> ApiResult {
    let r: AddMomentTask = parse_json(req.body)?;
    let text = r.text.and_then(|t| t.content).filter(|c| !c.is_empty());
    if text.is_none() && r.attachments.is_empty() {
        return Err(err(41089, "text and attachments are both empty"));
    }
    if let Some(t) = &text {
        max_chars("text.content", t, 2000).map_err(|_| invalid("invalid text size"))?;
    }
    check_moment_attachments(st, &r.attachments)?;
    let (user_list, tag_list) = match r.visible_range {
        Some(v) => {
            let users = v.sender_list.map(|s| {
                // Departments are not modelled: the fake has one flat staff list.
                let _ = s.department_list;
                s.user_list
            });
            (
                users.unwrap_or_default(),
                v.external_contact_list
                    .map(|e| e.tag_list)
                    .unwrap_or_default(),
            )
        }
        None => (Vec::new(), Vec::new()),
    };
    if user_list.len() > 100_000 {
        return Err(invalid(
            "sender_list.user_list holds at most 100000 userids",
        ));
    }
    let now = st.now_ms();
    while st
        .moment_task_times
        .front()
        .is_some_and(|t| now - *t >= 60_000)
    {
        st.moment_task_times.pop_front();
    }
    if st.moment_task_times.len() >= MOMENT_TASKS_PER_MINUTE {
        return Err(err(
            45009,
            "api freq out of limit: at most 10 moment tasks per minute",
        ));
    }
    st.moment_task_times.push_back(now);

    let (valid_tags, invalid_tags): (Vec<String>, Vec<String>) =
        tag_list.into_iter().partition(|t| st.find_tag(t).is_some());
    let (valid_users, invalid_users): (Vec<String>, Vec<String>) = user_list
        .into_iter()
        .partition(|u| st.staff.contains_key(u));
    // Who gets a publish task (api.md §9.1 visibility semantics).
    let senders: Vec<String> = if !valid_users.is_empty() {
        valid_users
    } else if !valid_tags.is_empty() {
        st.staff
            .keys()
            .filter(|u| {
                st.customers.values().any(|c| {
                    c.follow_user.iter().any(|f| {
                        &f.userid == *u
                            && !f.deleted
                            && f.tags.iter().any(|t| valid_tags.contains(t))
                    })
                })
            })
            .cloned()
            .collect()
    } else {
        st.staff.keys().cloned().collect()
    };
    let jobid = new_id("", 40);
    st.moments.push(MomentView {
        moment_id: new_id("mom", 30),
        jobid: jobid.clone(),
        create_time: now / 1000,
        text,
        attachments: r.attachments,
        visible_type: if valid_tags.is_empty() { 1 } else { 0 },
        tag_list: valid_tags,
        senders: senders
            .into_iter()
            .map(|userid| MomentSenderView {
                userid,
                publish_status: 0,
            })
            .collect(),
        invalid_senders: invalid_users,
        invalid_tags,
        cancelled: false,
        polls: 0,
        created_ms: now,
    });
    Ok(json!({ "jobid": jobid }))
}

pub(crate) fn get_moment_task_result(st: &mut State, req: &Req) -> ApiResult {
    let Some(jobid) = req.query_str("jobid").filter(|j| !j.is_empty()) else {
        return Err(invalid("missing jobid"));
    };
    let now = st.now_ms();
    let moment = st
        .moments
        .iter_mut()
        .find(|m| m.jobid == jobid && now - m.created_ms < MOMENT_JOB_TTL_MS)
        .ok_or_else(|| err(40088, format!("jobid {jobid:?} does not exist")))?;
    moment.polls += 1;
    // Creation is asynchronous: the first poll sees the job started, later ones see it done.
    if !moment.job_done() {
        return Ok(json!({ "status": 1, "type": "add_moment_task" }));
    }
    Ok(json!({
        "status": 3,
        "type": "add_moment_task",
        "result": {
            "errcode": 0, "errmsg": "ok", "moment_id": moment.moment_id,
            "invalid_sender_list": { "user_list": moment.invalid_senders, "department_list": [] },
            "invalid_external_contact_list": { "tag_list": moment.invalid_tags },
        }
    }))
}

#[derive(Deserialize)]
struct MomentList {
    start_time: Option<i64>,
    end_time: Option<i64>,
    creator: Option<String>,
    filter_type: Option<i64>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// At most 30 days between start_time and end_time (api.md §9.3).
const MOMENT_LIST_SPAN_SECS: i64 = 30 * 86_400;

/// `get_moment_list`: the moments whose creation job is done, created strictly between
/// start_time and end_time (an exclusive range, api.md §9.3). Cancelled moments are still
/// listed (published posts stay); the fake has no deleted moments.
pub(crate) fn get_moment_list(st: &State, req: &Req) -> ApiResult {
    let r: MomentList = parse_json(req.body)?;
    let (Some(start), Some(end)) = (r.start_time, r.end_time) else {
        return Err(invalid("start_time and end_time are required"));
    };
    if end < start || end - start > MOMENT_LIST_SPAN_SECS {
        return Err(invalid("the time range spans at most 30 days"));
    }
    let limit = r.limit.filter(|l| (1..=20).contains(l)).unwrap_or(20);
    // Every moment of the fake is API-created: create_type 0, no creator.
    let filter_type = r.filter_type.unwrap_or(2);
    let wanted = filter_type != 1 && r.creator.as_deref().is_none_or(str::is_empty);
    let list: Vec<Value> = st
        .moments
        .iter()
        .filter(|m| wanted && m.job_done())
        .filter(|m| start < m.create_time && m.create_time < end)
        .map(listed_moment)
        .collect();
    let (slice, next) = page(&list, r.cursor.as_deref(), limit)?;
    Ok(json!({ "moment_list": slice, "next_cursor": next }))
}

/// One `moment_list` row: the content as WeCom gives it back (images and video by media_id,
/// the link by title and url).
fn listed_moment(m: &MomentView) -> Value {
    let mut v = json!({
        "moment_id": m.moment_id, "create_time": m.create_time, "create_type": 0,
        "visible_type": m.visible_type,
    });
    if let Some(text) = &m.text {
        v["text"] = json!({ "content": text });
    }
    let body = |a: &Value, kind: &str| a.get(kind).cloned().unwrap_or_default();
    let field = |b: &Value, key: &str| b.get(key).cloned().unwrap_or_else(|| json!(""));
    let mut images = Vec::new();
    for a in &m.attachments {
        match a.get("msgtype").and_then(Value::as_str) {
            Some("image") => {
                images.push(json!({ "media_id": field(&body(a, "image"), "media_id") }))
            }
            Some("video") => {
                v["video"] = json!({ "media_id": field(&body(a, "video"), "media_id") })
            }
            Some("link") => {
                let link = body(a, "link");
                v["link"] = json!({ "title": field(&link, "title"), "url": field(&link, "url") });
            }
            _ => {}
        }
    }
    if !images.is_empty() {
        v["image"] = json!(images);
    }
    v
}

#[derive(Deserialize)]
struct MomentIdIn {
    moment_id: Option<String>,
}

fn moment_index(st: &State, moment_id: &Option<String>) -> Result<usize, ApiError> {
    let id = required("moment_id", moment_id, 41059)?;
    st.moments
        .iter()
        .position(|m| m.moment_id == id)
        .ok_or_else(|| err(41060, format!("invalid moment_id {id:?}")))
}

pub(crate) fn cancel_moment_task(st: &mut State, req: &Req) -> ApiResult {
    let r: MomentIdIn = parse_json(req.body)?;
    let i = moment_index(st, &r.moment_id)?;
    // Members who already published keep their post; the others can no longer publish.
    st.moments[i].cancelled = true;
    Ok(json!({}))
}

pub(crate) fn get_moment_task(st: &State, req: &Req) -> ApiResult {
    #[derive(Deserialize)]
    struct In {
        moment_id: Option<String>,
        cursor: Option<String>,
        limit: Option<usize>,
    }
    let r: In = parse_json(req.body)?;
    let i = moment_index(st, &r.moment_id)?;
    let limit = r.limit.filter(|l| (1..=1000).contains(l)).unwrap_or(500);
    let tasks: Vec<Value> = st.moments[i]
        .senders
        .iter()
        .map(|s| json!({ "userid": s.userid, "publish_status": s.publish_status }))
        .collect();
    let (slice, next) = page(&tasks, r.cursor.as_deref(), limit)?;
    Ok(json!({ "task_list": slice, "next_cursor": next }))
}

/// The member publishes the moment from the client.
pub(crate) fn publish_moment(
    st: &mut State,
    moment_id: &str,
    userid: &str,
) -> Result<(), ClientRefusal> {
    let m = st
        .moments
        .iter_mut()
        .find(|m| m.moment_id == moment_id)
        .ok_or_else(|| ClientRefusal::NotFound(format!("moment {moment_id:?}")))?;
    if m.cancelled {
        return Err(ClientRefusal::Refused(format!(
            "moment {moment_id:?} was cancelled"
        )));
    }
    let sender = m
        .senders
        .iter_mut()
        .find(|s| s.userid == userid)
        .ok_or_else(|| {
            ClientRefusal::NotFound(format!("{userid:?} has no task for {moment_id:?}"))
        })?;
    sender.publish_status = 1;
    Ok(())
}
