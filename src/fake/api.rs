//! The WeCom HTTP surface under `/cgi-bin/`: one entry point that logs the call, applies the
//! injected faults, checks the token and the method, then hands the request to the endpoint.
//!
//! Every answer is a JSON object with `errcode`/`errmsg` and HTTP 200, errors included, as
//! WeCom answers (api.md §1); only an injected `Failure::Http`, an injected
//! `Failure::BrokenBody` (a 200 cut off mid-body) or an unknown path answer otherwise. Request input never panics: bad input is 40058 or the endpoint's own code.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::extract::{FromRequest, Multipart, Query, Request, State as Extract};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::faults::{Call, Failure, loggable_body, redact_query};
use super::rules::{ApiError, ApiResult, Req, Upload, err, invalid, max_bytes, parse_json};
use super::state::{Media, MediaNamespace, SecretKind, State, TOKEN_TTL_SECS, Token, new_id};
use super::{FakeConfig, FakeWecom, campaigns, contacts, groups};

/// Largest request accepted: media/upload allows 20 MB files, plus multipart framing.
pub(crate) const BODY_LIMIT: usize = 24 * 1024 * 1024;

/// The APIs that are GET with query parameters (api.md §1). Everything else is POST.
const GET_APIS: &[&str] = &[
    "gettoken",
    "externalcontact/get",
    "externalcontact/list",
    "externalcontact/get_moment_task_result",
];

pub(crate) async fn entry(Extract(fake): Extract<FakeWecom>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let raw_query = request.uri().query().unwrap_or_default().to_owned();
    let query: HashMap<String, String> = Query::try_from_uri(request.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let is_upload = path.starts_with("/cgi-bin/media/upload") && method == Method::POST;

    // Read the body first: multipart for uploads, bytes for everything else.
    let (body, upload) = if is_upload {
        let upload = read_upload(request).await;
        let summary = match &upload {
            Ok(u) => format!(
                "multipart: media filename={:?}, {} bytes",
                u.filename,
                u.data.len()
            ),
            Err(e) => format!("multipart: {}", e.errmsg),
        };
        (summary.into_bytes(), Some(upload))
    } else {
        match axum::body::to_bytes(request.into_body(), BODY_LIMIT).await {
            Ok(b) => (b.to_vec(), None),
            Err(_) => {
                let e = invalid("request body unreadable or larger than the limit");
                return json_answer(Err(e));
            }
        }
    };

    let index = fake.log_call(Call {
        method: method.to_string(),
        path: path.clone(),
        query: redact_query(&raw_query),
        body: loggable_body(&body),
        at: SystemTime::now(),
        errcode: None,
        http_status: 0,
        fault: None,
    });
    let decision = fake.lock().faults.decide(&path);
    if let Some(latency) = decision.latency {
        tokio::time::sleep(latency).await;
    }
    let (status, answer) = match decision.failure {
        Some(Failure::Errcode(code)) => (
            StatusCode::OK,
            Some(json!({"errcode": code, "errmsg": format!("injected errcode {code}")})),
        ),
        Some(Failure::Http(s)) => (
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            None,
        ),
        Some(Failure::Timeout | Failure::BrokenBody) | None => {
            let result = {
                let mut st = fake.lock();
                handle(
                    &mut st,
                    &fake.inner.config,
                    &method,
                    &path,
                    &query,
                    &body,
                    upload,
                )
            };
            match result {
                Some(result) => (StatusCode::OK, Some(envelope(result))),
                None => (
                    StatusCode::NOT_FOUND,
                    Some(
                        json!({"errcode": 40058, "errmsg": format!("api {path} is not modelled by the fake WeCom")}),
                    ),
                ),
            }
        }
    };
    let errcode = answer
        .as_ref()
        .and_then(|a| a.get("errcode"))
        .and_then(Value::as_i64);
    fake.finish_call(index, errcode, status.as_u16(), decision.failure);
    if decision.failure == Some(Failure::Timeout) {
        // The effect has happened; the caller just never hears about it in time.
        let hold = fake.lock().timeout_hold;
        tokio::time::sleep(hold).await;
    }
    match answer {
        Some(answer) if decision.failure == Some(Failure::BrokenBody) => broken_body(&answer),
        Some(answer) => (status, axum::Json(answer)).into_response(),
        None => (status, format!("injected HTTP {}", status.as_u16())).into_response(),
    }
}

/// HTTP 200 announcing the whole answer's length, then half of it and a cut connection.
fn broken_body(answer: &Value) -> Response {
    let full = answer.to_string().into_bytes();
    let half = axum::body::Bytes::copy_from_slice(&full[..full.len() / 2]);
    let chunks = futures_util::stream::unfold(Some(half), |half| async move {
        match half {
            Some(half) => Some((Ok(half), None)),
            None => {
                // A pause first, so the status line, headers and half the body go out before
                // the connection is cut: the caller gets its 200 and then a broken body.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let cut = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "broken body");
                Some((Err::<axum::body::Bytes, _>(cut), None))
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .header(axum::http::header::CONTENT_LENGTH, full.len())
        .body(axum::body::Body::from_stream(chunks))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn envelope(result: ApiResult) -> Value {
    match result {
        Ok(Value::Object(mut m)) => {
            m.insert("errcode".into(), json!(0));
            m.insert("errmsg".into(), json!("ok"));
            Value::Object(m)
        }
        Ok(_) => json!({"errcode": 0, "errmsg": "ok"}),
        Err(e) => json!({"errcode": e.errcode, "errmsg": e.errmsg}),
    }
}

fn json_answer(result: ApiResult) -> Response {
    axum::Json(envelope(result)).into_response()
}

async fn read_upload(request: Request) -> Result<Upload, ApiError> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| err(44001, format!("empty media data: {e}")))?;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| err(44001, format!("bad multipart body: {e}")))?;
        let Some(field) = field else {
            return Err(err(
                44001,
                "empty media data: no multipart field named media",
            ));
        };
        if field.name() != Some("media") {
            continue;
        }
        let filename = field.file_name().unwrap_or_default().to_owned();
        let data = field
            .bytes()
            .await
            .map_err(|e| err(45001, format!("media too large or unreadable: {e}")))?;
        return Ok(Upload {
            filename,
            data: data.to_vec(),
        });
    }
}

/// Routes one call; `None` when the path is not a modelled API.
fn handle(
    st: &mut State,
    config: &FakeConfig,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &[u8],
    upload: Option<Result<Upload, ApiError>>,
) -> Option<ApiResult> {
    let api = path.strip_prefix("/cgi-bin/")?;
    if api == "gettoken" {
        return Some(gettoken(st, config, query));
    }
    type Endpoint = fn(&mut State, &FakeConfig, &Req) -> ApiResult;
    let endpoint: Endpoint = match api {
        "externalcontact/get" => |st, _, r| contacts::get(st, r),
        "externalcontact/list" => |st, _, r| contacts::list(st, r),
        "externalcontact/batch/get_by_user" => |st, _, r| contacts::batch_get_by_user(st, r),
        "externalcontact/remark" => |st, _, r| contacts::remark(st, r),
        "externalcontact/get_corp_tag_list" => |st, _, r| contacts::get_corp_tag_list(st, r),
        "externalcontact/add_corp_tag" => |st, _, r| contacts::add_corp_tag(st, r),
        "externalcontact/edit_corp_tag" => |st, _, r| contacts::edit_corp_tag(st, r),
        "externalcontact/del_corp_tag" => |st, _, r| contacts::del_corp_tag(st, r),
        "externalcontact/mark_tag" => |st, _, r| contacts::mark_tag(st, r),
        "externalcontact/add_contact_way" => |st, _, r| contacts::add_contact_way(st, r),
        "externalcontact/get_contact_way" => |st, _, r| contacts::get_contact_way(st, r),
        "externalcontact/update_contact_way" => |st, _, r| contacts::update_contact_way(st, r),
        "externalcontact/del_contact_way" => |st, _, r| contacts::del_contact_way(st, r),
        "externalcontact/send_welcome_msg" => |st, _, r| contacts::send_welcome_msg(st, r),
        "externalcontact/groupchat/list" => |st, _, r| groups::list(st, r),
        "externalcontact/groupchat/get" => |st, _, r| groups::get(st, r),
        "externalcontact/groupchat/add_join_way" => |st, _, r| groups::add_join_way(st, r),
        "externalcontact/groupchat/get_join_way" => |st, _, r| groups::get_join_way(st, r),
        "externalcontact/groupchat/update_join_way" => |st, _, r| groups::update_join_way(st, r),
        "externalcontact/groupchat/del_join_way" => |st, _, r| groups::del_join_way(st, r),
        "externalcontact/add_msg_template" => |st, _, r| campaigns::add_msg_template(st, r),
        "externalcontact/get_groupmsg_list_v2" => |st, _, r| campaigns::get_groupmsg_list_v2(st, r),
        "externalcontact/get_groupmsg_task" => |st, _, r| campaigns::get_groupmsg_task(st, r),
        "externalcontact/get_groupmsg_send_result" => {
            |st, _, r| campaigns::get_groupmsg_send_result(st, r)
        }
        "externalcontact/remind_groupmsg_send" => |st, _, r| campaigns::remind_groupmsg_send(st, r),
        "externalcontact/cancel_groupmsg_send" => |st, _, r| campaigns::cancel_groupmsg_send(st, r),
        "externalcontact/add_moment_task" => |st, _, r| campaigns::add_moment_task(st, r),
        "externalcontact/get_moment_task_result" => {
            |st, _, r| campaigns::get_moment_task_result(st, r)
        }
        "externalcontact/cancel_moment_task" => |st, _, r| campaigns::cancel_moment_task(st, r),
        "externalcontact/get_moment_task" => |st, _, r| campaigns::get_moment_task(st, r),
        "externalcontact/get_moment_list" => |st, _, r| campaigns::get_moment_list(st, r),
        "media/upload" => |st, _, r| media_upload(st, r),
        "media/upload_attachment" => |st, _, r| media_upload_attachment(st, r),
        "message/send" => message_send,
        _ => return None,
    };
    let token = match authenticate(st, query) {
        Ok(kind) => kind,
        Err(e) => return Some(Err(e)),
    };
    if let Err(e) = count_call(st, api) {
        return Some(Err(e));
    }
    // A POST API called with GET sees an empty body (api.md §1).
    if *method == Method::GET && !GET_APIS.contains(&api) {
        return Some(Err(invalid(format!("{api} must be called with POST"))));
    }
    let req = Req {
        query,
        body,
        token,
        upload,
    };
    Some(endpoint(st, config, &req))
}

// ---- frequency limits (§2.2) ----------------------------------------------------------------

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Counts one call of `api` against the corp's caps: over 10,000 in a minute or 150,000 in an
/// hour it is 45009, and the API stays blocked for the rest of that window.
fn count_call(st: &mut State, api: &str) -> Result<(), ApiError> {
    let now = st.now_ms();
    let caps = st.api_caps;
    let calls = st.api_calls.entry(api.to_string()).or_default();
    if now < calls.blocked_until_ms {
        return Err(err(
            45009,
            format!("api freq out of limit: {api} is blocked"),
        ));
    }
    while calls.at.front().is_some_and(|t| now - t >= HOUR_MS) {
        calls.at.pop_front();
    }
    let in_minute = calls.at.len() - calls.at.partition_point(|t| now - t >= MINUTE_MS);
    let block = if in_minute >= caps.per_minute {
        Some(MINUTE_MS)
    } else if calls.at.len() >= caps.per_hour {
        Some(HOUR_MS)
    } else {
        None
    };
    if let Some(window) = block {
        calls.blocked_until_ms = now + window;
        return Err(err(
            45009,
            format!(
                "api freq out of limit: {api} over the corp's calls per {}",
                if window == MINUTE_MS {
                    "minute"
                } else {
                    "hour"
                }
            ),
        ));
    }
    calls.at.push_back(now);
    Ok(())
}

// ---- token (§2.1) ---------------------------------------------------------------------------

const BAN_WINDOW_MS: i64 = 3_600_000;

fn gettoken(st: &mut State, config: &FakeConfig, q: &HashMap<String, String>) -> ApiResult {
    let now = st.now_ms();
    // Repeated wrong secrets ban the calling IP for an hour (api.md §2.1).
    if now < st.banned_until_ms {
        return Err(err(
            45009,
            "api freq out of limit: too many invalid secrets from this IP, banned for 1 hour",
        ));
    }
    let corpid = q.get("corpid").filter(|s| !s.is_empty());
    let secret = q.get("corpsecret").filter(|s| !s.is_empty());
    let Some(corpid) = corpid else {
        return Err(err(41002, "corpid missing"));
    };
    let Some(secret) = secret else {
        return Err(err(41004, "corpsecret missing"));
    };
    if *corpid != config.corp_id {
        return Err(err(40013, format!("invalid corpid {corpid:?}")));
    }
    let kind = if *secret == config.app_secret {
        SecretKind::App
    } else if *secret == config.contact_secret {
        SecretKind::Contact
    } else {
        while st
            .bad_secret_calls
            .front()
            .is_some_and(|t| now - *t >= BAN_WINDOW_MS)
        {
            st.bad_secret_calls.pop_front();
        }
        st.bad_secret_calls.push_back(now);
        if st.bad_secret_calls.len() >= st.bad_secret_ban_threshold {
            st.banned_until_ms = now + BAN_WINDOW_MS;
            st.bad_secret_calls.clear();
        }
        return Err(err(40001, "invalid credential: secret"));
    };
    // A fresh token on every call: the current doc no longer promises the same one.
    let access_token = new_id("", 128);
    st.tokens.insert(
        access_token.clone(),
        Token {
            kind,
            expires_ms: now + TOKEN_TTL_SECS * 1000,
            revoked: false,
        },
    );
    Ok(json!({ "access_token": access_token, "expires_in": TOKEN_TTL_SECS }))
}

/// The token in the query (never the body: 41001 otherwise), unknown 40014, expired 42001.
fn authenticate(st: &State, q: &HashMap<String, String>) -> Result<SecretKind, ApiError> {
    let Some(token) = q.get("access_token").filter(|t| !t.is_empty()) else {
        return Err(err(41001, "access_token missing"));
    };
    let Some(t) = st.tokens.get(token) else {
        return Err(err(40014, "invalid access_token"));
    };
    if t.revoked || st.now_ms() >= t.expires_ms {
        return Err(err(42001, "access_token expired"));
    }
    Ok(t.kind)
}

// ---- media (§10.1, §10.2) -------------------------------------------------------------------

/// WeCom refuses files of 5 bytes or less.
const MIN_MEDIA_BYTES: usize = 6;
const MB: usize = 1024 * 1024;

fn size_limit(media_type: &str) -> (usize, i64) {
    match media_type {
        "image" => (10 * MB, 40009),
        "voice" => (2 * MB, 40006),
        "video" => (10 * MB, 40011),
        _ => (20 * MB, 40006),
    }
}

fn take_upload<'a>(req: &'a Req<'_>) -> Result<&'a Upload, ApiError> {
    match &req.upload {
        Some(Ok(u)) => Ok(u),
        Some(Err(e)) => Err(e.clone()),
        None => Err(err(44001, "empty media data")),
    }
}

fn store_media(
    st: &mut State,
    namespace: MediaNamespace,
    media_type: &str,
    u: &Upload,
) -> (String, i64) {
    let created_ms = st.now_ms();
    let media_id = match namespace {
        MediaNamespace::Upload => new_id("3", 64),
        MediaNamespace::Attachment(_) => new_id("2", 64),
    };
    st.media.insert(
        media_id.clone(),
        Media {
            media_id: media_id.clone(),
            namespace,
            media_type: media_type.to_owned(),
            filename: u.filename.clone(),
            size: u.data.len(),
            created_ms,
        },
    );
    (media_id, created_ms / 1000)
}

fn media_upload(st: &mut State, req: &Req) -> ApiResult {
    let media_type = req.query_str("type").unwrap_or_default().to_owned();
    if !["image", "voice", "video", "file"].contains(&media_type.as_str()) {
        return Err(err(40005, format!("invalid media type {media_type:?}")));
    }
    let upload = take_upload(req)?;
    if upload.data.len() < MIN_MEDIA_BYTES {
        return Err(err(
            40006,
            "invalid file size: files must be larger than 5 bytes",
        ));
    }
    let (limit, code) = size_limit(&media_type);
    if upload.data.len() > limit {
        return Err(err(
            code,
            format!("{media_type} larger than {} MB", limit / MB),
        ));
    }
    let (media_id, created_at) = store_media(st, MediaNamespace::Upload, &media_type, upload);
    // created_at is a string here, as in the official example (api.md §1 type quirks).
    Ok(json!({ "type": media_type, "media_id": media_id, "created_at": created_at.to_string() }))
}

fn media_upload_attachment(st: &mut State, req: &Req) -> ApiResult {
    let media_type = req.query_str("media_type").unwrap_or_default().to_owned();
    if !["image", "video", "file"].contains(&media_type.as_str()) {
        return Err(err(41072, format!("invalid media_type {media_type:?}")));
    }
    let attachment_type = match req.query_str("attachment_type") {
        Some("1") => 1,
        Some("2") => 2,
        other => return Err(err(41072, format!("invalid attachment_type {other:?}"))),
    };
    // Moments take images and videos only.
    if attachment_type == 1 && media_type == "file" {
        return Err(err(
            41072,
            "attachment_type 1 (moments) takes image or video",
        ));
    }
    let upload = take_upload(req)?;
    if upload.data.len() < MIN_MEDIA_BYTES {
        return Err(err(
            40006,
            "invalid file size: files must be larger than 5 bytes",
        ));
    }
    if upload.data.len() > size_limit(&media_type).0 {
        return Err(err(41080, "attachment larger than the limit"));
    }
    let (media_id, created_at) = store_media(
        st,
        MediaNamespace::Attachment(attachment_type),
        &media_type,
        upload,
    );
    Ok(json!({ "type": media_type, "media_id": media_id, "created_at": created_at }))
}

// ---- app message (§10.4) --------------------------------------------------------------------

const MSGTYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "file",
    "textcard",
    "news",
    "mpnews",
    "markdown",
    "miniprogram_notice",
    "template_card",
];

fn message_send(st: &mut State, config: &FakeConfig, req: &Req) -> ApiResult {
    // The customer-contact secret's token is not an app: it cannot send app messages.
    if req.token != SecretKind::App {
        return Err(err(
            48002,
            "api forbidden: message/send needs the app's token",
        ));
    }
    let v: Value = parse_json(req.body)?;
    let Some(obj) = v.as_object() else {
        return Err(invalid("the body must be a JSON object"));
    };
    let agentid = match obj.get("agentid") {
        None => return Err(err(41011, "missing agentid")),
        Some(a) => a
            .as_i64()
            .or_else(|| a.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| err(40056, "invalid agentid"))?,
    };
    if agentid != config.agent_id {
        return Err(err(
            301002,
            format!("no privilege to access agentid {agentid}"),
        ));
    }
    let field = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
    let (touser, toparty, totag) = (field("touser"), field("toparty"), field("totag"));
    if touser.is_empty() && toparty.is_empty() && totag.is_empty() {
        return Err(invalid("touser, toparty and totag are all empty"));
    }
    let msgtype = field("msgtype");
    if !MSGTYPES.contains(&msgtype) {
        return Err(err(40008, format!("invalid message type {msgtype:?}")));
    }
    if !obj.get(msgtype).is_some_and(Value::is_object) {
        return Err(invalid(format!("missing the {msgtype} object")));
    }
    if msgtype == "text" {
        let content = obj
            .get("text")
            .and_then(|t| t.get("content"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if content.is_empty() {
            return Err(err(44004, "empty content"));
        }
        max_bytes("text.content", content, 2048)
            .map_err(|_| err(45002, "content size out of limit"))?;
    }
    let users: Vec<&str> = touser.split('|').filter(|u| !u.is_empty()).collect();
    if users.len() > 1000 {
        return Err(err(40032, "at most 1000 users"));
    }
    let all = touser == "@all";
    let invalid_users: Vec<String> = if all {
        Vec::new()
    } else {
        users
            .iter()
            .filter(|u| !st.staff.contains_key(**u))
            .map(|u| u.to_lowercase())
            .collect()
    };
    // Departments and member tags are not modelled, so every one named is reported invalid.
    let split = |s: &str| {
        s.split('|')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("|")
    };
    let valid_users = all || users.len() > invalid_users.len();
    if !valid_users {
        return Err(err(81013, "user & party & tag all invalid"));
    }
    let msgid = new_id("", 40);
    // Identical JSON inside the duplicate-check window is accepted but not delivered again.
    let now = st.now_ms();
    let duplicate = if obj.get("enable_duplicate_check").and_then(Value::as_i64) == Some(1) {
        let interval = obj
            .get("duplicate_check_interval")
            .and_then(Value::as_i64)
            .unwrap_or(1800)
            .clamp(1, 4 * 3600);
        let key = String::from_utf8_lossy(req.body).into_owned();
        let seen = st
            .app_message_dedupe
            .get(&key)
            .is_some_and(|t| now - t < interval * 1000);
        if !seen {
            st.app_message_dedupe.insert(key, now);
        }
        seen
    } else {
        false
    };
    // Per app, one member gets at most 30 messages a minute and 1000 an hour; WeCom drops the
    // excess silently (errcode 0 all the same). A message no member received is not recorded.
    let recipients: Vec<String> = if all {
        st.staff.keys().cloned().collect()
    } else {
        users
            .iter()
            .filter(|u| st.staff.contains_key(**u))
            .map(|u| (*u).to_owned())
            .collect()
    };
    let mut delivered = 0;
    if !duplicate {
        for user in recipients {
            let log = st.app_message_deliveries.entry(user).or_default();
            while log.front().is_some_and(|t| now - *t >= 3_600_000) {
                log.pop_front();
            }
            let last_minute = log.iter().filter(|t| now - **t < 60_000).count();
            if last_minute < 30 && log.len() < 1000 {
                log.push_back(now);
                delivered += 1;
            }
        }
    }
    if delivered > 0 {
        st.app_messages.push(v.clone());
    }
    Ok(json!({
        "invaliduser": invalid_users.join("|"),
        "invalidparty": split(toparty),
        "invalidtag": split(totag),
        "unlicenseduser": "",
        "msgid": msgid,
    }))
}
