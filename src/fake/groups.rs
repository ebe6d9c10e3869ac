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
    let chat = st
        .group_chats
        .get(chat_id)
        .ok_or_else(|| err(90501, format!("{chat_id:?} is not a customer group")))?;
    Ok(json!({ "group_chat": group_chat_json(chat, r.need_name == Some(1)) }))
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
    if let Some(unknown) = chats.iter().find(|c| !st.group_chats.contains_key(*c)) {
        return Err(err(90501, format!("{unknown:?} is not a customer group")));
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
    let qr_code =
        (scene == 2).then(|| format!("https://wework.qpic.cn/wwpic/fake/join/{config_id}/0"));
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
