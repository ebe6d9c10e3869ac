//! Customer groups and 「加入群聊」 join ways (api.md §7). Read-only plus join ways: no API adds or
//! removes members (§7.4); membership changes only through the driver.

use serde::Deserialize;
use serde_json::{Value, json};

use super::rules::{
    ApiError, ApiResult, Req, err, invalid, max_chars, page, parse_json, required, strip_nulls,
};
use super::state::{GroupChatView, JoinWay, State, random_hex};

#[derive(Deserialize)]
struct OwnerFilter {
    #[serde(default)]
    userid_list: Vec<String>,
}

#[derive(Deserialize)]
struct GroupChatList {
    status_filter: Option<i64>,
    owner_filter: Option<OwnerFilter>,
    cursor: Option<String>,
    limit: Option<usize>,
}

pub(crate) fn list(st: &State, req: &Req) -> ApiResult {
    let r: GroupChatList = parse_json(req.body)?;
    let limit = r
        .limit
        .filter(|l| (1..=1000).contains(l))
        .ok_or_else(|| invalid("limit is required, 1 to 1000"))?;
    let owners = r.owner_filter.map(|f| f.userid_list).unwrap_or_default();
    if owners.len() > 100 {
        return Err(invalid(
            "owner_filter.userid_list holds at most 100 userids",
        ));
    }
    // Every modelled group is in status 0 (normal): filters 1-3 (owner resigned, transferring,
    // transferred) match nothing.
    let status = r.status_filter.unwrap_or(0);
    let chats: Vec<Value> = st
        .group_chats
        .values()
        .filter(|c| st.staff.contains_key(&c.owner))
        .filter(|c| owners.is_empty() || owners.contains(&c.owner))
        .filter(|_| status == 0)
        .map(|c| json!({"chat_id": c.chat_id, "status": 0}))
        .collect();
    let (slice, next) = page(&chats, r.cursor.as_deref(), limit)?;
    Ok(json!({ "group_chat_list": slice, "next_cursor": next }))
}

#[derive(Deserialize)]
struct GroupChatGet {
    chat_id: Option<String>,
    need_name: Option<i64>,
}

pub(crate) fn get(st: &State, req: &Req) -> ApiResult {
    let r: GroupChatGet = parse_json(req.body)?;
    let chat_id = required("chat_id", &r.chat_id, 40058)?;
    let chat = live_chat(st, chat_id)?;
    Ok(json!({ "group_chat": group_chat_json(chat, r.need_name == Some(1)) }))
}

/// A group that exists: 49008 once dismissed, 90501 if it never was a customer group.
fn live_chat<'a>(st: &'a State, chat_id: &str) -> Result<&'a GroupChatView, ApiError> {
    if st.dismissed_chats.contains(chat_id) {
        return Err(err(49008, format!("group {chat_id:?} was dismissed")));
    }
    st.group_chats
        .get(chat_id)
        .ok_or_else(|| err(90501, format!("{chat_id:?} is not a customer group")))
}

fn group_chat_json(chat: &GroupChatView, need_name: bool) -> Value {
    let members: Vec<Value> = chat
        .member_list
        .iter()
        .map(|m| {
            let mut v = json!({
                "userid": m.userid, "type": m.kind, "join_time": m.join_time,
                "join_scene": m.join_scene, "group_nickname": m.group_nickname,
            });
            if let Some(invitor) = &m.invitor {
                v["invitor"] = json!({ "userid": invitor });
            }
            if need_name {
                v["name"] = json!(m.name);
            }
            if let Some(state) = &m.state {
                v["state"] = json!(state);
            }
            v
        })
        .collect();
    let admins: Vec<Value> = chat
        .admin_list
        .iter()
        .map(|a| json!({ "userid": a }))
        .collect();
    json!({
        "chat_id": chat.chat_id, "name": chat.name, "owner": chat.owner,
        "create_time": chat.create_time, "notice": chat.notice, "member_list": members,
        "admin_list": admins, "member_version": chat.member_version,
    })
}

#[derive(Deserialize)]
struct JoinWayIn {
    config_id: Option<String>,
    scene: Option<i64>,
    remark: Option<String>,
    auto_create_room: Option<i64>,
    room_base_name: Option<String>,
    room_base_id: Option<i64>,
    chat_id_list: Option<Vec<String>>,
    state: Option<String>,
}

/// The checked fields of add_join_way / update_join_way (the update is a full overwrite).
fn join_way_from(st: &State, r: JoinWayIn, config_id: String) -> Result<JoinWay, ApiError> {
    let scene = r.scene.ok_or_else(|| invalid("missing scene"))?;
    if !(1..=2).contains(&scene) {
        return Err(invalid(format!("invalid scene {scene}")));
    }
    let chats = r
        .chat_id_list
        .filter(|l| !l.is_empty())
        .ok_or_else(|| invalid("chat_id_list is required"))?;
    if chats.len() > 5 {
        return Err(err(41091, "a join way links at most 5 groups"));
    }
    for chat_id in &chats {
        live_chat(st, chat_id)?;
    }
    if let Some(state) = &r.state {
        max_chars("state", state, 30)?;
    }
    if let Some(name) = &r.room_base_name {
        max_chars("room_base_name", name, 40)?;
    }
    let auto_create_room = r.auto_create_room.unwrap_or(1);
    if !(0..=1).contains(&auto_create_room) {
        return Err(invalid("auto_create_room is 0 or 1"));
    }
    // The remark is cut at 30 characters rather than refused (api.md §7.3).
    let remark: String = r.remark.unwrap_or_default().chars().take(30).collect();
    let qr_code = (scene == 2).then(|| qr_code_url(st, &config_id));
    Ok(JoinWay {
        config_id,
        scene,
        remark,
        auto_create_room,
        room_base_name: r.room_base_name,
        room_base_id: r.room_base_id,
        chat_id_list: chats,
        state: r.state.filter(|s| !s.is_empty()),
        qr_code,
    })
}

pub(crate) fn add_join_way(st: &mut State, req: &Req) -> ApiResult {
    let r: JoinWayIn = parse_json(req.body)?;
    let way = join_way_from(st, r, random_hex(32))?;
    let config_id = way.config_id.clone();
    st.join_ways.insert(config_id.clone(), way);
    Ok(json!({ "config_id": config_id }))
}

fn config_id(req: &Req) -> Result<String, ApiError> {
    #[derive(Deserialize)]
    struct In {
        config_id: Option<String>,
    }
    let r: In = parse_json(req.body)?;
    Ok(required("config_id", &r.config_id, 41043)?.to_owned())
}

pub(crate) fn get_join_way(st: &State, req: &Req) -> ApiResult {
    let id = config_id(req)?;
    let way = st
        .join_ways
        .get(&id)
        .ok_or_else(|| err(41044, format!("invalid config_id {id:?}")))?;
    let v = serde_json::to_value(way).map_err(|e| err(-1, e.to_string()))?;
    Ok(json!({ "join_way": strip_nulls(v) }))
}

pub(crate) fn update_join_way(st: &mut State, req: &Req) -> ApiResult {
    let r: JoinWayIn = parse_json(req.body)?;
    let id = required("config_id", &r.config_id, 41043)?.to_owned();
    if !st.join_ways.contains_key(&id) {
        return Err(err(41044, format!("invalid config_id {id:?}")));
    }
    let way = join_way_from(st, r, id.clone())?;
    st.join_ways.insert(id, way);
    Ok(json!({}))
}

pub(crate) fn del_join_way(st: &mut State, req: &Req) -> ApiResult {
    let id = config_id(req)?;
    st.join_ways
        .remove(&id)
        .ok_or_else(|| err(41044, format!("invalid config_id {id:?}")))?;
    Ok(json!({}))
}

/// A scene-2 join way's QR code: a PNG the fake itself serves at `GET /fake/qr/{config_id}.png`
/// once it listens (so siyu can download it and upload it again, as it does with WeCom's); a
/// WeCom-shaped URL nobody can fetch when the fake was never served.
pub(crate) fn qr_code_url(st: &State, config_id: &str) -> String {
    match st.served_at {
        Some(addr) => format!("http://{addr}/fake/qr/{config_id}.png"),
        None => format!("https://wework.qpic.cn/wwpic/fake/join/{config_id}/0"),
    }
}

/// What `GET /fake/qr/{config_id}.png` answers for every join way with a QR code: one white
/// pixel, a complete PNG (signature, IHDR, IDAT, IEND, each with its CRC), 67 bytes, so it also
/// passes media/upload's "more than 5 bytes".
pub(crate) const QR_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, // signature
    0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, // IHDR, 13 bytes:
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, // 1 x 1,
    0x08, 0x00, 0x00, 0x00, 0x00, 0x3a, 0x7e, 0x9b, 0x55, // 8-bit grayscale; CRC
    0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, // IDAT, 10 bytes: zlib of filter 0, pixel
    0x78, 0xda, 0x63, 0xf8, 0x0f, 0x00, 0x01, 0x01, 0x01, 0x00, 0x1c, 0xb0, 0x8c, 0x99, // CRC
    0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82, // IEND and CRC
];

/// The QR code image of the join way or contact way (「联系我」) `config_id`, if it has one.
pub(crate) fn join_way_qr(st: &State, config_id: &str) -> Option<&'static [u8]> {
    let join = st.join_ways.get(config_id).and_then(|w| w.qr_code.as_ref());
    let contact = st
        .contact_ways
        .get(config_id)
        .and_then(|w| w.qr_code.as_ref());
    join.or(contact).map(|_| QR_PNG)
}
