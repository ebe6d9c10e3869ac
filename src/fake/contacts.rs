//! Customers, corp tags, 「联系我」 contact ways and welcome messages (api.md §3–§6).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::rules::{
    ApiResult, Req, check_message_attachments, err, invalid, max_bytes, max_chars, page,
    parse_json, required, strip_nulls,
};
use super::state::{
    ContactWay, CustomerView, FollowView, MediaNamespace, SentWelcome, State, TagGroupView,
    TagView, new_id, random_hex,
};

/// The live relations of a customer: a member who deleted the customer no longer has one.
fn visible_follows(customer: &CustomerView) -> impl Iterator<Item = &FollowView> {
    customer.follow_user.iter().filter(|f| !f.deleted)
}

pub(crate) fn external_contact_json(c: &CustomerView) -> Value {
    let mut m = Map::new();
    m.insert("external_userid".into(), json!(c.external_userid));
    m.insert("name".into(), json!(c.name));
    m.insert("avatar".into(), json!(c.avatar));
    m.insert("type".into(), json!(c.kind));
    m.insert("gender".into(), json!(c.gender));
    if let Some(unionid) = &c.unionid {
        m.insert("unionid".into(), json!(unionid));
    }
    // Company fields exist only for WeCom-user contacts (type 2).
    if c.kind == 2
        && let Some(corp) = &c.corp_name
    {
        m.insert("corp_name".into(), json!(corp));
        m.insert("corp_full_name".into(), json!(corp));
    }
    Value::Object(m)
}

fn follow_common(f: &FollowView) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("userid".into(), json!(f.userid));
    m.insert("remark".into(), json!(f.remark));
    m.insert("description".into(), json!(f.description));
    m.insert("createtime".into(), json!(f.createtime));
    m.insert("remark_corp_name".into(), json!(f.remark_corp_name));
    m.insert("remark_mobiles".into(), json!(f.remark_mobiles));
    m.insert("oper_userid".into(), json!(f.oper_userid));
    m.insert("add_way".into(), json!(f.add_way));
    if let Some(state) = &f.state {
        m.insert("state".into(), json!(state));
    }
    m
}

/// `follow_user[]` of externalcontact/get: tags with their names and group.
fn follow_user_json(st: &State, f: &FollowView) -> Value {
    let mut m = follow_common(f);
    let tags: Vec<Value> = f
        .tags
        .iter()
        .filter_map(|id| st.find_tag(id))
        .map(|(g, t)| json!({"group_name": g.group_name, "tag_name": t.name, "type": 1, "tag_id": t.id}))
        .collect();
    m.insert("tags".into(), json!(tags));
    Value::Object(m)
}

/// `follow_info` of batch/get_by_user: tags as ids only.
fn follow_info_json(f: &FollowView) -> Value {
    let mut m = follow_common(f);
    m.insert("tag_id".into(), json!(f.tags));
    Value::Object(m)
}

// ---- customers (§3) -------------------------------------------------------------------------

pub(crate) fn get(st: &State, req: &Req) -> ApiResult {
    let id = req.query_str("external_userid");
    let Some(id) = id.filter(|s| !s.is_empty()) else {
        return Err(err(41035, "missing external_userid"));
    };
    let customer = st
        .customers
        .get(id)
        .ok_or_else(|| err(40096, format!("invalid external_userid {id:?}")))?;
    let follows: Vec<&FollowView> = visible_follows(customer).collect();
    if follows.is_empty() {
        return Err(err(84061, "not external contact"));
    }
    let (slice, next) = page(&follows, req.query_str("cursor"), 500)?;
    let follow_user: Vec<Value> = slice.iter().map(|f| follow_user_json(st, f)).collect();
    let mut out = json!({
        "external_contact": external_contact_json(customer),
        "follow_user": follow_user,
    });
    if !next.is_empty() {
        out["next_cursor"] = json!(next);
    }
    Ok(out)
}

pub(crate) fn list(st: &State, req: &Req) -> ApiResult {
    let Some(userid) = req.query_str("userid").filter(|s| !s.is_empty()) else {
        return Err(err(41009, "missing userid"));
    };
    if !st.staff.contains_key(userid) {
        return Err(err(60111, format!("userid not found: {userid:?}")));
    }
    let ids: Vec<&str> = st
        .customers
        .values()
        .filter(|c| visible_follows(c).any(|f| f.userid == userid))
        .map(|c| c.external_userid.as_str())
        .collect();
    // WeCom answers 84061 rather than an empty list for a member without customers.
    if ids.is_empty() {
        return Err(err(84061, "not external contact"));
    }
    Ok(json!({ "external_userid": ids }))
}

#[derive(Deserialize)]
struct BatchGetByUser {
    #[serde(default)]
    userid_list: Vec<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

pub(crate) fn batch_get_by_user(st: &State, req: &Req) -> ApiResult {
    let r: BatchGetByUser = parse_json(req.body)?;
    if r.userid_list.is_empty() || r.userid_list.len() > 100 {
        return Err(invalid("userid_list must hold 1 to 100 userids"));
    }
    // Values above the maximum are clamped to it (api.md §3.3).
    let limit = r.limit.filter(|l| *l > 0).unwrap_or(50).min(100);
    let mut rows: Vec<(&CustomerView, &FollowView)> = Vec::new();
    for userid in &r.userid_list {
        for customer in st.customers.values() {
            if let Some(f) = visible_follows(customer).find(|f| &f.userid == userid) {
                rows.push((customer, f));
            }
        }
    }
    let (slice, next) = page(&rows, r.cursor.as_deref(), limit)?;
    let list: Vec<Value> = slice
        .iter()
        .map(|(c, f)| json!({"external_contact": external_contact_json(c), "follow_info": follow_info_json(f)}))
        .collect();
    Ok(json!({ "external_contact_list": list, "next_cursor": next }))
}

#[derive(Deserialize)]
struct Remark {
    userid: Option<String>,
    external_userid: Option<String>,
    remark: Option<String>,
    description: Option<String>,
    remark_company: Option<String>,
    remark_mobiles: Option<Vec<String>>,
    remark_pic_mediaid: Option<String>,
}

/// The member's relation with the customer, or WeCom's errcode: 40096 unknown customer, 84061
/// no relation (never added, or the member deleted the customer).
fn live_follow_check(
    st: &State,
    userid: &str,
    external_userid: &str,
) -> Result<(), super::rules::ApiError> {
    let customer = st.customers.get(external_userid).ok_or_else(|| {
        err(
            40096,
            format!("invalid external_userid {external_userid:?}"),
        )
    })?;
    if !visible_follows(customer).any(|f| f.userid == userid) {
        return Err(err(
            84061,
            format!("{userid:?} has no relationship with {external_userid:?}"),
        ));
    }
    Ok(())
}

pub(crate) fn remark(st: &mut State, req: &Req) -> ApiResult {
    let r: Remark = parse_json(req.body)?;
    let userid = required("userid", &r.userid, 41009)?;
    let external_userid = required("external_userid", &r.external_userid, 41035)?;
    if r.remark.is_none()
        && r.description.is_none()
        && r.remark_company.is_none()
        && r.remark_mobiles.is_none()
        && r.remark_pic_mediaid.is_none()
    {
        return Err(invalid(
            "one of remark, description, remark_company, remark_mobiles, remark_pic_mediaid is required",
        ));
    }
    if let Some(v) = &r.remark {
        max_chars("remark", v, 20)?;
    }
    if let Some(v) = &r.description {
        max_chars("description", v, 150)?;
    }
    if let Some(v) = &r.remark_company {
        max_chars("remark_company", v, 20)?;
    }
    if let Some(pic) = r.remark_pic_mediaid.as_deref().filter(|p| !p.is_empty())
        && !st.check_media(pic, |ns| ns == MediaNamespace::Upload, Some("image"))
    {
        return Err(err(40007, format!("invalid media_id {pic:?}")));
    }
    live_follow_check(st, userid, external_userid)?;
    let is_wechat_user = st
        .customers
        .get(external_userid)
        .is_some_and(|c| c.kind == 1);
    let Some(f) = st.follow_mut(userid, external_userid) else {
        return Err(err(84061, "not external contact"));
    };
    if let Some(v) = r.remark {
        f.remark = v;
    }
    if let Some(v) = r.description {
        f.description = v;
    }
    // Only effective for WeChat-user customers (api.md §3.4).
    if let Some(v) = r.remark_company
        && is_wechat_user
    {
        f.remark_corp_name = v;
    }
    if let Some(v) = r.remark_mobiles {
        // `[""]` is how the doc says to clear the list.
        f.remark_mobiles = v.into_iter().filter(|m| !m.is_empty()).collect();
    }
    if let Some(v) = r.remark_pic_mediaid {
        f.remark_pic_mediaid = Some(v).filter(|p| !p.is_empty());
    }
    Ok(json!({}))
}

// ---- corp tags (§4) -------------------------------------------------------------------------

const MAX_CORP_TAGS: usize = 3000;

fn tag_json(t: &TagView, with_deleted: bool) -> Value {
    let mut v = json!({"id": t.id, "name": t.name, "create_time": t.create_time, "order": t.order});
    if with_deleted {
        v["deleted"] = json!(t.deleted);
    }
    v
}

/// Larger `order` sorts first (api.md §4.1); ties keep creation order.
fn sorted_tags<'a>(tags: impl Iterator<Item = &'a TagView>) -> Vec<&'a TagView> {
    let mut v: Vec<&TagView> = tags.collect();
    v.sort_by_key(|t| std::cmp::Reverse(t.order));
    v
}

#[derive(Deserialize)]
struct TagFilter {
    #[serde(default)]
    tag_id: Vec<String>,
    #[serde(default)]
    group_id: Vec<String>,
}

pub(crate) fn get_corp_tag_list(st: &State, req: &Req) -> ApiResult {
    let r: TagFilter = parse_json(req.body)?;
    let mut groups: Vec<&TagGroupView> = st.tag_groups.iter().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.order));
    let out: Vec<Value> = if !r.group_id.is_empty() {
        // With both filters, tag_id is ignored (api.md §4.1).
        groups
            .iter()
            .filter(|g| !g.deleted && r.group_id.contains(&g.group_id))
            .map(|g| group_json(g, sorted_tags(g.tag.iter().filter(|t| !t.deleted)), false))
            .collect()
    } else if !r.tag_id.is_empty() {
        groups
            .iter()
            .filter_map(|g| {
                let tags = sorted_tags(g.tag.iter().filter(|t| r.tag_id.contains(&t.id)));
                (!tags.is_empty()).then(|| group_json(g, tags, true))
            })
            .collect()
    } else {
        groups
            .iter()
            .filter(|g| !g.deleted)
            .map(|g| group_json(g, sorted_tags(g.tag.iter().filter(|t| !t.deleted)), false))
            .collect()
    };
    Ok(json!({ "tag_group": out }))
}

fn group_json(g: &TagGroupView, tags: Vec<&TagView>, with_deleted: bool) -> Value {
    let tags: Vec<Value> = tags
        .into_iter()
        .map(|t| tag_json(t, with_deleted))
        .collect();
    let mut v = json!({
        "group_id": g.group_id, "group_name": g.group_name, "create_time": g.create_time,
        "order": g.order, "tag": tags,
    });
    if with_deleted {
        v["deleted"] = json!(g.deleted);
    }
    v
}

#[derive(Deserialize)]
struct TagIn {
    name: Option<String>,
    order: Option<u32>,
}

#[derive(Deserialize)]
struct AddCorpTag {
    group_id: Option<String>,
    group_name: Option<String>,
    order: Option<u32>,
    #[serde(default)]
    tag: Vec<TagIn>,
}

fn check_tag_name(name: &str) -> Result<(), super::rules::ApiError> {
    let n = name.chars().count();
    if n == 0 || n > 30 {
        return Err(err(
            40072,
            format!("invalid tag name length: {n} characters (1 to 30)"),
        ));
    }
    Ok(())
}

pub(crate) fn add_corp_tag(st: &mut State, req: &Req) -> ApiResult {
    let r: AddCorpTag = parse_json(req.body)?;
    if r.tag.is_empty() {
        return Err(invalid("tag is empty: empty groups are not allowed"));
    }
    // Duplicate names inside one request are created once.
    let mut new_tags: Vec<(String, u32)> = Vec::new();
    for t in &r.tag {
        let name = t.name.clone().unwrap_or_default();
        check_tag_name(&name)?;
        if !new_tags.iter().any(|(n, _)| *n == name) {
            new_tags.push((name, t.order.unwrap_or(0)));
        }
    }
    let group_index = match r.group_id.as_deref().filter(|g| !g.is_empty()) {
        Some(gid) => Some(
            st.tag_groups
                .iter()
                .position(|g| g.group_id == gid && !g.deleted)
                .ok_or_else(|| err(40068, format!("invalid tag group id {gid:?}")))?,
        ),
        None => {
            let name = r.group_name.as_deref().unwrap_or_default();
            check_tag_name(name)?;
            st.tag_groups
                .iter()
                .position(|g| g.group_name == name && !g.deleted)
        }
    };
    if let Some(i) = group_index {
        let group = &st.tag_groups[i];
        if let Some((dup, _)) = new_tags
            .iter()
            .find(|(n, _)| group.tag.iter().any(|t| !t.deleted && t.name == *n))
        {
            return Err(err(40071, format!("tag name exists: {dup:?}")));
        }
    }
    if st.live_tag_count() + new_tags.len() > MAX_CORP_TAGS {
        return Err(err(40126, "corp tag count reached the limit of 3000"));
    }
    let now = st.now_secs();
    let index = match group_index {
        Some(i) => i,
        None => {
            st.tag_groups.push(TagGroupView {
                group_id: new_id("et", 32),
                group_name: r.group_name.unwrap_or_default(),
                order: r.order.unwrap_or(0),
                create_time: now,
                deleted: false,
                tag: Vec::new(),
            });
            st.tag_groups.len() - 1
        }
    };
    let group = &mut st.tag_groups[index];
    let created: Vec<TagView> = new_tags
        .into_iter()
        .map(|(name, order)| TagView {
            id: new_id("et", 32),
            name,
            order,
            create_time: now,
            deleted: false,
        })
        .collect();
    group.tag.extend(created.iter().cloned());
    let tags: Vec<Value> = created.iter().map(|t| tag_json(t, false)).collect();
    Ok(json!({"tag_group": {
        "group_id": group.group_id, "group_name": group.group_name,
        "create_time": group.create_time, "order": group.order, "tag": tags,
    }}))
}

#[derive(Deserialize)]
struct EditCorpTag {
    id: Option<String>,
    name: Option<String>,
    order: Option<u32>,
}

pub(crate) fn edit_corp_tag(st: &mut State, req: &Req) -> ApiResult {
    let r: EditCorpTag = parse_json(req.body)?;
    let id = required("id", &r.id, 40068)?;
    if let Some(name) = &r.name {
        check_tag_name(name)?;
    }
    if let Some(gi) = st
        .tag_groups
        .iter()
        .position(|g| g.group_id == id && !g.deleted)
    {
        if let Some(name) = &r.name
            && st
                .tag_groups
                .iter()
                .any(|g| !g.deleted && g.group_id != id && g.group_name == *name)
        {
            return Err(err(40071, format!("tag group name exists: {name:?}")));
        }
        let g = &mut st.tag_groups[gi];
        if let Some(name) = r.name {
            g.group_name = name;
        }
        if let Some(order) = r.order {
            g.order = order;
        }
        return Ok(json!({}));
    }
    for g in st.tag_groups.iter_mut().filter(|g| !g.deleted) {
        let Some(ti) = g.tag.iter().position(|t| t.id == id && !t.deleted) else {
            continue;
        };
        if let Some(name) = &r.name
            && g.tag
                .iter()
                .any(|t| !t.deleted && t.id != id && t.name == *name)
        {
            return Err(err(40071, format!("tag name exists: {name:?}")));
        }
        let t = &mut g.tag[ti];
        if let Some(name) = r.name {
            t.name = name;
        }
        if let Some(order) = r.order {
            t.order = order;
        }
        return Ok(json!({}));
    }
    Err(err(40068, format!("invalid tag id {id:?}")))
}

pub(crate) fn del_corp_tag(st: &mut State, req: &Req) -> ApiResult {
    let r: TagFilter = parse_json(req.body)?;
    if r.tag_id.is_empty() && r.group_id.is_empty() {
        return Err(err(40068, "tag_id and group_id are both empty"));
    }
    for id in &r.tag_id {
        if st.find_tag(id).is_none() {
            return Err(err(40068, format!("invalid tag id {id:?}")));
        }
    }
    for id in &r.group_id {
        if !st
            .tag_groups
            .iter()
            .any(|g| g.group_id == *id && !g.deleted)
        {
            return Err(err(40068, format!("invalid tag group id {id:?}")));
        }
    }
    delete_tags(st, &r.tag_id, &r.group_id);
    Ok(json!({}))
}

/// Deletes tags and groups; a group left without live tags goes too (api.md §4.4). Returns the
/// ids of groups that disappeared because their last tag did.
pub(crate) fn delete_tags(st: &mut State, tag_ids: &[String], group_ids: &[String]) -> Vec<String> {
    let mut emptied = Vec::new();
    for g in st.tag_groups.iter_mut().filter(|g| !g.deleted) {
        let whole = group_ids.contains(&g.group_id);
        for t in &mut g.tag {
            if whole || tag_ids.contains(&t.id) {
                t.deleted = true;
            }
        }
        if whole {
            g.deleted = true;
        } else if g.tag.iter().all(|t| t.deleted) {
            g.deleted = true;
            emptied.push(g.group_id.clone());
        }
    }
    st.strip_deleted_tags();
    emptied
}

#[derive(Deserialize)]
struct MarkTag {
    userid: Option<String>,
    external_userid: Option<String>,
    #[serde(default)]
    add_tag: Vec<String>,
    #[serde(default)]
    remove_tag: Vec<String>,
}

/// One member may put at most this many tags on one customer (api.md §4.5).
const MAX_TAGS_PER_CUSTOMER: usize = 3000;

pub(crate) fn mark_tag(st: &mut State, req: &Req) -> ApiResult {
    let r: MarkTag = parse_json(req.body)?;
    let userid = required("userid", &r.userid, 41009)?;
    let external_userid = required("external_userid", &r.external_userid, 41035)?;
    if r.add_tag.is_empty() && r.remove_tag.is_empty() {
        return Err(invalid("add_tag and remove_tag are both empty"));
    }
    live_follow_check(st, userid, external_userid)?;
    for id in r.add_tag.iter().chain(&r.remove_tag) {
        if st.find_tag(id).is_none() {
            return Err(err(40068, format!("invalid tag id {id:?}")));
        }
    }
    let Some(f) = st.follow_mut(userid, external_userid) else {
        return Err(err(84061, "not external contact"));
    };
    let mut tags = f.tags.clone();
    for id in &r.add_tag {
        if !tags.contains(id) {
            tags.push(id.clone());
        }
    }
    tags.retain(|t| !r.remove_tag.contains(t));
    if tags.len() > MAX_TAGS_PER_CUSTOMER {
        return Err(invalid(
            "a member can put at most 3000 tags on one customer",
        ));
    }
    f.tags = tags;
    Ok(json!({}))
}

// ---- contact ways (§5) ----------------------------------------------------------------------

#[derive(Deserialize)]
struct ContactWayIn {
    config_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<i64>,
    scene: Option<i64>,
    style: Option<i64>,
    remark: Option<String>,
    skip_verify: Option<bool>,
    state: Option<String>,
    user: Option<Vec<String>>,
    party: Option<Vec<i64>>,
    is_temp: Option<bool>,
    expires_in: Option<i64>,
    chat_expires_in: Option<i64>,
    unionid: Option<String>,
    conclusions: Option<Value>,
}

const MAX_STATE_CHARS: usize = 30;
const FOURTEEN_DAYS: i64 = 14 * 86_400;

fn check_contact_way_fields(
    st: &State,
    r: &ContactWayIn,
    kind: i64,
    scene: i64,
) -> Result<(), super::rules::ApiError> {
    if let Some(state) = &r.state {
        max_chars("state", state, MAX_STATE_CHARS)?;
    }
    if let Some(remark) = &r.remark {
        max_chars("remark", remark, 30)?;
    }
    if let Some(style) = r.style
        && scene == 1
    {
        let max = if kind == 1 { 3 } else { 2 };
        if !(1..=max).contains(&style) {
            return Err(err(41042, format!("invalid style {style}")));
        }
    }
    if let Some(users) = &r.user {
        if users.len() > 100 {
            return Err(err(41041, "more than 100 members"));
        }
        if let Some(unknown) = users.iter().find(|u| !st.staff.contains_key(*u)) {
            return Err(err(
                41054,
                format!("member {unknown:?} is not an activated member"),
            ));
        }
    }
    for (field, value) in [
        ("expires_in", r.expires_in),
        ("chat_expires_in", r.chat_expires_in),
    ] {
        if let Some(v) = value
            && !(1..=FOURTEEN_DAYS).contains(&v)
        {
            return Err(invalid(format!("{field} {v}: 1 second to 14 days")));
        }
    }
    if r.is_temp == Some(true) && kind != 1 {
        return Err(invalid("is_temp is for single-member contact ways only"));
    }
    Ok(())
}

pub(crate) fn add_contact_way(st: &mut State, req: &Req) -> ApiResult {
    let r: ContactWayIn = parse_json(req.body)?;
    let kind = r.kind.ok_or_else(|| err(41037, "missing type"))?;
    let scene = r.scene.ok_or_else(|| err(41038, "missing scene"))?;
    if !(1..=2).contains(&kind) {
        return Err(err(41039, format!("invalid type {kind}")));
    }
    if !(1..=2).contains(&scene) {
        return Err(err(41040, format!("invalid scene {scene}")));
    }
    check_contact_way_fields(st, &r, kind, scene)?;
    let users = r.user.clone().unwrap_or_default();
    let party = r.party.clone().unwrap_or_default();
    if kind == 1 && (users.len() != 1 || !party.is_empty()) {
        return Err(invalid(
            "a single-member contact way needs exactly one user",
        ));
    }
    if kind == 2 && users.is_empty() && party.is_empty() {
        return Err(invalid("user and party are both empty"));
    }
    let config_id = random_hex(32);
    let qr_code = (scene == 2).then(|| super::groups::qr_code_url(st, &config_id));
    let way = ContactWay {
        config_id: config_id.clone(),
        kind,
        scene,
        style: r.style,
        remark: r.remark.unwrap_or_default(),
        skip_verify: r.skip_verify.unwrap_or(true),
        state: r.state.filter(|s| !s.is_empty()),
        user: users,
        party,
        is_temp: r.is_temp.unwrap_or(false),
        expires_in: r.expires_in,
        chat_expires_in: r.chat_expires_in,
        unionid: r.unionid,
        conclusions: r.conclusions,
        qr_code: qr_code.clone(),
        next_pick: 0,
    };
    st.contact_ways.insert(config_id.clone(), way);
    let mut out = json!({ "config_id": config_id });
    if let Some(qr) = qr_code {
        out["qr_code"] = json!(qr);
    }
    Ok(out)
}

#[derive(Deserialize)]
struct ConfigIdIn {
    config_id: Option<String>,
}

fn config_id_of(req: &Req) -> Result<String, super::rules::ApiError> {
    let r: ConfigIdIn = parse_json(req.body)?;
    Ok(required("config_id", &r.config_id, 41043)?.to_owned())
}

pub(crate) fn get_contact_way(st: &State, req: &Req) -> ApiResult {
    let config_id = config_id_of(req)?;
    let way = st
        .contact_ways
        .get(&config_id)
        .ok_or_else(|| err(41044, format!("invalid config_id {config_id:?}")))?;
    let v = serde_json::to_value(way).map_err(|e| err(-1, e.to_string()))?;
    Ok(json!({ "contact_way": strip_nulls(v) }))
}

pub(crate) fn update_contact_way(st: &mut State, req: &Req) -> ApiResult {
    let r: ContactWayIn = parse_json(req.body)?;
    let config_id = required("config_id", &r.config_id, 41043)?.to_owned();
    let (kind, scene) = st
        .contact_ways
        .get(&config_id)
        .map(|w| (w.kind, w.scene))
        .ok_or_else(|| err(41044, format!("invalid config_id {config_id:?}")))?;
    check_contact_way_fields(st, &r, kind, scene)?;
    if kind == 1 && r.user.as_ref().is_some_and(|u| u.len() != 1) {
        return Err(invalid(
            "a single-member contact way needs exactly one user",
        ));
    }
    let Some(way) = st.contact_ways.get_mut(&config_id) else {
        return Err(err(41044, "invalid config_id"));
    };
    // type and scene cannot change; everything given replaces the old value.
    if let Some(v) = r.remark {
        way.remark = v;
    }
    if let Some(v) = r.skip_verify {
        way.skip_verify = v;
    }
    if let Some(v) = r.style {
        way.style = Some(v);
    }
    if let Some(v) = r.state {
        way.state = Some(v).filter(|s| !s.is_empty());
    }
    if let Some(v) = r.user {
        way.user = v;
        way.next_pick = 0;
    }
    if let Some(v) = r.party {
        way.party = v;
    }
    if let Some(v) = r.expires_in {
        way.expires_in = Some(v);
    }
    if let Some(v) = r.chat_expires_in {
        way.chat_expires_in = Some(v);
    }
    if let Some(v) = r.unionid {
        way.unionid = Some(v);
    }
    if let Some(v) = r.conclusions {
        way.conclusions = Some(v);
    }
    Ok(json!({}))
}

pub(crate) fn del_contact_way(st: &mut State, req: &Req) -> ApiResult {
    let config_id = config_id_of(req)?;
    st.contact_ways
        .remove(&config_id)
        .ok_or_else(|| err(41044, format!("invalid config_id {config_id:?}")))?;
    Ok(json!({}))
}

// ---- welcome message (§6) -------------------------------------------------------------------

#[derive(Deserialize)]
struct TextIn {
    content: Option<String>,
}

#[derive(Deserialize)]
struct SendWelcome {
    welcome_code: Option<String>,
    text: Option<TextIn>,
    #[serde(default)]
    attachments: Vec<Value>,
}

pub(crate) fn send_welcome_msg(st: &mut State, req: &Req) -> ApiResult {
    let r: SendWelcome = parse_json(req.body)?;
    let code = required("welcome_code", &r.welcome_code, 41049)?.to_owned();
    let text = r.text.and_then(|t| t.content).filter(|c| !c.is_empty());
    if text.is_none() && r.attachments.is_empty() {
        return Err(invalid("text and attachments are both empty"));
    }
    if let Some(t) = &text {
        max_bytes("text.content", t, 4000)?;
    }
    check_message_attachments(st, &r.attachments)?;
    let now = st.now_ms();
    let ttl = i64::try_from(st.welcome_code_ttl.as_millis()).unwrap_or(i64::MAX);
    let Some(wc) = st.welcome_codes.get_mut(&code) else {
        return Err(err(41050, "invalid welcome_code"));
    };
    // A consumed code stays consumed (41051) even after its 20 s, like the first-app-wins rule.
    if wc.used {
        return Err(err(41051, "welcome_code already used"));
    }
    if now - wc.issued_ms > ttl {
        return Err(err(41050, "welcome_code expired (valid 20 s)"));
    }
    wc.used = true;
    let sent = SentWelcome {
        welcome_code: code,
        external_userid: wc.external_userid.clone(),
        userid: wc.userid.clone(),
        text,
        attachments: r.attachments,
        sent_at: now / 1000,
    };
    st.welcomes.push(sent);
    Ok(json!({}))
}
