//! WeCom's side of the story: what customers, staff and admins do in their clients. Each action
//! changes the fake's state as WeCom would, then delivers the callback WeCom would send (the XML
//! of callback.md §3, sealed per send by [`CallbackSender`]: 3 tries, 5 s each). An action whose
//! callback siyu never accepted still happened, as in WeCom; the error says it was not delivered.
//! A [`Driver::silent`] driver plays the same actions but loses every callback, as WeCom
//! sometimes does, so only a reconciliation that reads the API can find the change.

use std::sync::Arc;

use rand::Rng;

use super::FakeWecom;
use super::campaigns::{self, ClientRefusal};
use super::contacts::delete_tags;
use super::state::{
    CustomerView, GroupChatView, GroupMemberView, State, TagView, new_id, random_hex,
};
use crate::fake::sender::{ANSWER_TIMEOUT, CallbackSender, SendError, TRIES};
use crate::wecom::crypto::Crypto;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("no callback URL: call FakeWecom::set_callback_url first")]
    NoCallbackUrl,
    #[error("callback crypto settings are invalid: {0}")]
    Crypto(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the client refuses: {0}")]
    Refused(String),
    /// The change happened in WeCom, but siyu never answered 200.
    #[error("callback not delivered: {0}")]
    NotDelivered(#[from] SendError),
}

impl From<ClientRefusal> for DriverError {
    fn from(r: ClientRefusal) -> Self {
        match r {
            ClientRefusal::NotFound(what) => DriverError::NotFound(what),
            ClientRefusal::Refused(why) => DriverError::Refused(why),
        }
    }
}

/// A customer about to add a member. `external_userid: Some(..)` names a customer the corp
/// already knows (adding a second member); otherwise WeCom assigns a new id.
#[derive(Debug, Clone)]
pub struct NewCustomer {
    pub external_userid: Option<String>,
    pub name: String,
    /// 1 WeChat user, 2 WeCom user.
    pub kind: i64,
    /// 0 unknown, 1 male, 2 female.
    pub gender: i64,
    pub unionid: Option<String>,
    pub avatar: Option<String>,
    /// WeCom-user customers only.
    pub corp_name: Option<String>,
}

impl Default for NewCustomer {
    fn default() -> Self {
        NewCustomer::wechat("客户")
    }
}

impl NewCustomer {
    /// A WeChat user.
    pub fn wechat(name: &str) -> NewCustomer {
        NewCustomer {
            external_userid: None,
            name: name.to_owned(),
            kind: 1,
            gender: 0,
            unionid: None,
            avatar: None,
            corp_name: None,
        }
    }

    /// A WeCom user of another company.
    pub fn wecom(name: &str, corp_name: &str) -> NewCustomer {
        NewCustomer {
            kind: 2,
            corp_name: Some(corp_name.to_owned()),
            ..NewCustomer::wechat(name)
        }
    }

    /// The same person again (an existing external_userid).
    pub fn existing(external_userid: &str) -> NewCustomer {
        NewCustomer {
            external_userid: Some(external_userid.to_owned()),
            ..NewCustomer::wechat("")
        }
    }
}

/// What a customer's add produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedCustomer {
    pub external_userid: String,
    pub userid: String,
    pub state: Option<String>,
    pub welcome_code: Option<String>,
}

/// An admin's change to the corp tag library in the admin console.
#[derive(Debug, Clone)]
pub enum TagEdit {
    CreateTag {
        group_id: String,
        name: String,
    },
    /// `id` is a tag or a tag group.
    RenameTag {
        id: String,
        name: String,
    },
    DeleteTag {
        id: String,
    },
    DeleteGroup {
        id: String,
    },
}

#[derive(Clone)]
pub struct Driver {
    fake: FakeWecom,
    /// Callbacks are dropped instead of delivered (see [`Driver::silent`]).
    silent: bool,
}

/// Creates the customer or returns the known one's id.
pub(crate) fn upsert_customer(st: &mut State, c: NewCustomer) -> String {
    if let Some(id) = &c.external_userid
        && st.customers.contains_key(id)
    {
        return id.clone();
    }
    // WeChat customers' ids start with wm, WeCom customers' with wo.
    let prefix = if c.kind == 2 { "wo" } else { "wm" };
    let id = c.external_userid.unwrap_or_else(|| new_id(prefix, 32));
    let avatar = c
        .avatar
        .unwrap_or_else(|| format!("https://wework.qpic.cn/wwhead/fake/{id}/0"));
    st.customers.insert(
        id.clone(),
        CustomerView {
            external_userid: id.clone(),
            name: c.name,
            avatar,
            kind: c.kind,
            gender: c.gender,
            unionid: c.unionid,
            corp_name: c.corp_name,
            follow_user: Vec::new(),
        },
    );
    id
}

// ---- the callback XML of callback.md §3 -----------------------------------------------------

fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

fn el(name: &str, value: &str) -> String {
    format!("<{name}>{}</{name}>", cdata(value))
}

fn plain(name: &str, value: impl std::fmt::Display) -> String {
    format!("<{name}>{value}</{name}>")
}

/// The common header of a system event, then the event's own elements in order.
fn event_xml(corp_id: &str, create_time: i64, event: &str, elements: &[String]) -> String {
    format!(
        "<xml>{}{}{}{}{}{}</xml>",
        el("ToUserName", corp_id),
        el("FromUserName", "sys"),
        plain("CreateTime", create_time),
        el("MsgType", "event"),
        el("Event", event),
        elements.concat()
    )
}

fn contact_event(corp_id: &str, now: i64, change: &str, fields: &[String]) -> String {
    let mut elements = vec![el("ChangeType", change)];
    elements.extend_from_slice(fields);
    event_xml(corp_id, now, "change_external_contact", &elements)
}

struct MemberChange<'a> {
    chat_id: &'a str,
    detail: &'a str,
    join_scene: i64,
    quit_scene: i64,
    members: &'a [String],
    last: &'a str,
    cur: &'a str,
}

fn chat_update_event(corp_id: &str, now: i64, c: &MemberChange) -> String {
    let items: String = c
        .members
        .iter()
        .map(|m| plain("Item", quick_xml::escape::escape(m.as_str())))
        .collect();
    let elements = [
        el("ChatId", c.chat_id),
        el("ChangeType", "update"),
        el("UpdateDetail", c.detail),
        plain("JoinScene", c.join_scene),
        plain("QuitScene", c.quit_scene),
        plain("MemChangeCnt", c.members.len()),
        plain("MemChangeList", items),
        plain("LastMemVer", c.last),
        plain("CurMemVer", c.cur),
    ];
    event_xml(corp_id, now, "change_external_chat", &elements)
}

/// `create` and `dismiss` carry the ChatId only.
fn chat_event(corp_id: &str, now: i64, chat_id: &str, change: &str) -> String {
    let elements = [el("ChatId", chat_id), el("ChangeType", change)];
    event_xml(corp_id, now, "change_external_chat", &elements)
}

/// An update that is no member change (change_owner, change_name, change_notice): no member
/// fields, the typical shape of callback.md §3.2.
fn chat_detail_event(corp_id: &str, now: i64, chat_id: &str, detail: &str) -> String {
    let elements = [
        el("ChatId", chat_id),
        el("ChangeType", "update"),
        el("UpdateDetail", detail),
    ];
    event_xml(corp_id, now, "change_external_chat", &elements)
}

/// Puts `member` into `chat` and bumps member_version; the add_member callback, with the
/// JoinScene of callback.md §3.2 (0 invited by a member, 3 scanned the group QR code).
fn add_group_member(
    corp_id: &str,
    now: i64,
    chat: &mut GroupChatView,
    member: GroupMemberView,
    callback_join_scene: i64,
) -> Result<String, DriverError> {
    if chat.member_list.iter().any(|m| m.userid == member.userid) {
        return Err(DriverError::Refused(format!(
            "{:?} is already in {:?}",
            member.userid, chat.chat_id
        )));
    }
    let members = [member.userid.clone()];
    chat.member_list.push(member);
    let last = std::mem::replace(&mut chat.member_version, random_hex(32));
    Ok(chat_update_event(
        corp_id,
        now,
        &MemberChange {
            chat_id: &chat.chat_id,
            detail: "add_member",
            join_scene: callback_join_scene,
            quit_scene: 0,
            members: &members,
            last: &last,
            cur: &chat.member_version,
        },
    ))
}

fn group_missing(chat_id: &str) -> DriverError {
    DriverError::NotFound(format!("group {chat_id:?}"))
}

fn tag_event(corp_id: &str, now: i64, id: &str, tag_type: &str, change: &str) -> String {
    let elements = [
        el("Id", id),
        el("TagType", tag_type),
        el("ChangeType", change),
    ];
    event_xml(corp_id, now, "change_external_tag", &elements)
}

impl Driver {
    pub(crate) fn new(fake: FakeWecom) -> Driver {
        Driver {
            fake,
            silent: false,
        }
    }

    /// The same driver with its callbacks lost: every action changes the fake exactly as
    /// before, but the callback WeCom would send is dropped, recorded nowhere, and the action
    /// answers `Ok` (no callback URL needed). WeCom sometimes loses a callback; this is how a
    /// test makes a change that only siyu's reconciliation (reading the API) can find.
    /// [`Driver::staff_sends_text`] answers an empty reply.
    pub fn silent(&self) -> Driver {
        Driver {
            fake: self.fake.clone(),
            silent: true,
        }
    }

    fn corp_id(&self) -> &str {
        &self.fake.inner.config.corp_id
    }

    fn sender(&self) -> Result<CallbackSender, DriverError> {
        let url = self.fake.callback_url().ok_or(DriverError::NoCallbackUrl)?;
        let crypto: Arc<Crypto> = self
            .fake
            .inner
            .crypto
            .clone()
            .map_err(DriverError::Crypto)?;
        let agent_id = self.fake.inner.config.agent_id.to_string();
        Ok(CallbackSender::new(url, crypto, agent_id).with_client(self.fake.inner.http.clone()))
    }

    /// Delivers each callback in order, as WeCom would: 3 tries of 5 s each.
    async fn deliver(&self, xmls: &[String]) -> Result<(), DriverError> {
        if self.silent {
            return Ok(());
        }
        let sender = self.sender()?;
        for xml in xmls {
            sender.deliver(xml).await?;
        }
        Ok(())
    }

    fn add(
        &self,
        st: &mut State,
        userid: &str,
        add_way: i64,
        state: Option<String>,
        customer: NewCustomer,
    ) -> (AddedCustomer, String) {
        let id = upsert_customer(st, customer);
        st.add_relation(&id, userid, add_way, state.clone());
        let code = st.issue_welcome_code(&id, userid);
        let mut fields = vec![el("UserID", userid), el("ExternalUserID", &id)];
        if let Some(s) = &state {
            fields.push(el("State", s));
        }
        fields.push(el("WelcomeCode", &code));
        let xml = contact_event(
            self.corp_id(),
            st.now_secs(),
            "add_external_contact",
            &fields,
        );
        let added = AddedCustomer {
            external_userid: id,
            userid: userid.to_owned(),
            state,
            welcome_code: Some(code),
        };
        (added, xml)
    }

    /// A customer scans a 「联系我」 code (by config_id, or by its state): one member of the
    /// contact way (round robin) gets the customer with add_way 1 and the way's state, and a
    /// welcome code valid 20 s.
    pub async fn customer_adds_via_contact_way(
        &self,
        config_id_or_state: &str,
        customer: NewCustomer,
    ) -> Result<AddedCustomer, DriverError> {
        let (added, xml) = {
            let mut st = self.fake.lock();
            let key = st
                .contact_ways
                .values()
                .find(|w| {
                    w.config_id == config_id_or_state
                        || w.state.as_deref() == Some(config_id_or_state)
                })
                .map(|w| w.config_id.clone())
                .ok_or_else(|| {
                    DriverError::NotFound(format!("contact way {config_id_or_state:?}"))
                })?;
            let staff: Vec<String> = st.staff.keys().cloned().collect();
            let Some(way) = st.contact_ways.get_mut(&key) else {
                return Err(DriverError::NotFound(format!("contact way {key:?}")));
            };
            let mut candidates: Vec<String> = way
                .user
                .iter()
                .filter(|u| staff.contains(u))
                .cloned()
                .collect();
            if candidates.is_empty() && !way.party.is_empty() {
                // Departments are not modelled: a department-only way reaches any member.
                candidates = staff;
            }
            if candidates.is_empty() {
                return Err(DriverError::Refused(format!(
                    "contact way {key:?} has no member"
                )));
            }
            let userid = candidates[way.next_pick % candidates.len()].clone();
            way.next_pick = way.next_pick.wrapping_add(1);
            let state = way.state.clone();
            self.add(&mut st, &userid, 1, state, customer)
        };
        self.deliver(&[xml]).await?;
        Ok(added)
    }

    /// A customer adds a member directly (add_way 1 with a state, else 2: searched the phone).
    pub async fn customer_adds_staff(
        &self,
        userid: &str,
        state: Option<&str>,
        customer: NewCustomer,
    ) -> Result<AddedCustomer, DriverError> {
        let (added, xml) = {
            let mut st = self.fake.lock();
            if !st.staff.contains_key(userid) {
                return Err(DriverError::NotFound(format!("member {userid:?}")));
            }
            let add_way = if state.is_some() { 1 } else { 2 };
            self.add(&mut st, userid, add_way, state.map(str::to_owned), customer)
        };
        self.deliver(&[xml]).await?;
        Ok(added)
    }

    /// The member edits the customer in the client: a new remark and/or tags taken off.
    pub async fn staff_edits_customer(
        &self,
        userid: &str,
        external_userid: &str,
        remark: Option<&str>,
        remove_tags: &[&str],
    ) -> Result<(), DriverError> {
        let xml = {
            let mut st = self.fake.lock();
            let now = st.now_secs();
            let f = st
                .follow_mut(userid, external_userid)
                .filter(|f| !f.deleted)
                .ok_or_else(|| relation_missing(userid, external_userid))?;
            if let Some(r) = remark {
                // The client enforces the same 20 characters as the API.
                if r.chars().count() > 20 {
                    return Err(DriverError::Refused(
                        "a remark holds at most 20 characters".into(),
                    ));
                }
                f.remark = r.to_owned();
            }
            f.tags.retain(|t| !remove_tags.contains(&t.as_str()));
            let fields = [el("UserID", userid), el("ExternalUserID", external_userid)];
            contact_event(self.corp_id(), now, "edit_external_contact", &fields)
        };
        self.deliver(&[xml]).await
    }

    /// The customer deletes the member: the relation is kept on the member's side, flagged lost.
    pub async fn customer_deletes_staff(
        &self,
        userid: &str,
        external_userid: &str,
    ) -> Result<(), DriverError> {
        let xml = {
            let mut st = self.fake.lock();
            let now = st.now_secs();
            let f = st
                .follow_mut(userid, external_userid)
                .filter(|f| !f.deleted && !f.lost)
                .ok_or_else(|| relation_missing(userid, external_userid))?;
            f.lost = true;
            let fields = [el("UserID", userid), el("ExternalUserID", external_userid)];
            contact_event(self.corp_id(), now, "del_follow_user", &fields)
        };
        self.deliver(&[xml]).await
    }

    /// The member deletes the customer (or 在职继承 removes them: `by_transfer`).
    pub async fn staff_deletes_customer(
        &self,
        userid: &str,
        external_userid: &str,
        by_transfer: bool,
    ) -> Result<(), DriverError> {
        let xml = {
            let mut st = self.fake.lock();
            let now = st.now_secs();
            let f = st
                .follow_mut(userid, external_userid)
                .filter(|f| !f.deleted)
                .ok_or_else(|| relation_missing(userid, external_userid))?;
            f.deleted = true;
            let mut fields = vec![el("UserID", userid), el("ExternalUserID", external_userid)];
            if by_transfer {
                fields.push(el("Source", "DELETE_BY_TRANSFER"));
            }
            contact_event(self.corp_id(), now, "del_external_contact", &fields)
        };
        self.deliver(&[xml]).await
    }

    /// A customer transfer to `takeover_userid` failed (`customer_refused` or
    /// `customer_limit_exceed`); the customer stays where they were.
    pub async fn transfer_fails(
        &self,
        takeover_userid: &str,
        external_userid: &str,
        reason: &str,
    ) -> Result<(), DriverError> {
        let xml = {
            let st = self.fake.lock();
            if !st.staff.contains_key(takeover_userid) {
                return Err(DriverError::NotFound(format!("member {takeover_userid:?}")));
            }
            if !st.customers.contains_key(external_userid) {
                return Err(DriverError::NotFound(format!(
                    "customer {external_userid:?}"
                )));
            }
            // FailReason comes before UserID in WeCom's XML.
            let fields = [
                el("FailReason", reason),
                el("UserID", takeover_userid),
                el("ExternalUserID", external_userid),
            ];
            contact_event(self.corp_id(), st.now_secs(), "transfer_fail", &fields)
        };
        self.deliver(&[xml]).await
    }

    /// A customer scans a join way's group QR code: they join the first group of the way that is
    /// not full, or, when all are full and the way auto-creates rooms, a new group named
    /// room_base_name + room_base_id (then +1...). Returns the chat_id joined.
    pub async fn customer_joins_via_join_way(
        &self,
        config_id: &str,
        external_userid: &str,
    ) -> Result<String, DriverError> {
        let (chat_id, xmls) = {
            let mut st = self.fake.lock();
            let now = st.now_secs();
            let way = st
                .join_ways
                .get(config_id)
                .cloned()
                .ok_or_else(|| DriverError::NotFound(format!("join way {config_id:?}")))?;
            let open = way
                .chat_id_list
                .iter()
                .find(|id| st.group_chats.get(*id).is_some_and(|c| !c.is_full()));
            let mut xmls = Vec::new();
            let chat_id = match open {
                Some(id) => id.clone(),
                None if way.auto_create_room == 1 => {
                    let template = way
                        .chat_id_list
                        .iter()
                        .rev()
                        .find_map(|id| st.group_chats.get(id))
                        .cloned()
                        .ok_or_else(|| {
                            DriverError::NotFound(format!("groups of join way {config_id:?}"))
                        })?;
                    let base_id = way.room_base_id.unwrap_or(1);
                    let base_name = way
                        .room_base_name
                        .clone()
                        .unwrap_or_else(|| template.name.clone());
                    let new_chat = new_id("wr", 30);
                    let owner = template
                        .member_list
                        .iter()
                        .find(|m| m.userid == template.owner)
                        .cloned();
                    st.group_chats.insert(
                        new_chat.clone(),
                        GroupChatView {
                            chat_id: new_chat.clone(),
                            name: format!("{base_name}{base_id}"),
                            owner: template.owner.clone(),
                            create_time: now,
                            notice: String::new(),
                            member_list: owner
                                .map(|o| GroupMemberView {
                                    join_time: now,
                                    ..o
                                })
                                .into_iter()
                                .collect(),
                            admin_list: Vec::new(),
                            member_version: random_hex(32),
                            capacity: template.capacity,
                        },
                    );
                    if let Some(w) = st.join_ways.get_mut(config_id) {
                        w.room_base_id = Some(base_id + 1);
                        w.chat_id_list.push(new_chat.clone());
                    }
                    xmls.push(chat_event(self.corp_id(), now, &new_chat, "create"));
                    new_chat
                }
                None => {
                    return Err(DriverError::Refused(format!(
                        "every group of join way {config_id:?} is full and auto_create_room is 0"
                    )));
                }
            };
            let name = st
                .customers
                .get(external_userid)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            let chat = st
                .group_chats
                .get_mut(&chat_id)
                .ok_or_else(|| group_missing(&chat_id))?;
            let member = GroupMemberView {
                userid: external_userid.to_owned(),
                kind: 2,
                join_time: now,
                join_scene: 3,
                invitor: None,
                group_nickname: String::new(),
                name,
                state: way.state.clone(),
            };
            xmls.push(add_group_member(self.corp_id(), now, chat, member, 3)?);
            (chat_id, xmls)
        };
        self.deliver(&xmls).await?;
        Ok(chat_id)
    }

    /// The owner adds one of their customers to the group from the client (no QR code, no
    /// state): the member has join_scene 1 and the owner as invitor; the callback's JoinScene
    /// is 0 (invited by a member). The customer must be the owner's, as the client's picker
    /// offers only those.
    pub async fn owner_adds_customer(
        &self,
        chat_id: &str,
        external_userid: &str,
    ) -> Result<(), DriverError> {
        let xml = {
            let mut st = self.fake.lock();
            let now = st.now_secs();
            let owner = st
                .group_chats
                .get(chat_id)
                .map(|c| c.owner.clone())
                .ok_or_else(|| group_missing(chat_id))?;
            if st.follow(&owner, external_userid).is_none_or(|f| f.deleted) {
                return Err(relation_missing(&owner, external_userid));
            }
            let name = st
                .customers
                .get(external_userid)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            let chat = st
                .group_chats
                .get_mut(chat_id)
                .ok_or_else(|| group_missing(chat_id))?;
            if chat.is_full() {
                return Err(DriverError::Refused(format!("group {chat_id:?} is full")));
            }
            let member = GroupMemberView {
                userid: external_userid.to_owned(),
                kind: 2,
                join_time: now,
                join_scene: 1,
                invitor: Some(owner),
                group_nickname: String::new(),
                name,
                state: None,
            };
            add_group_member(self.corp_id(), now, chat, member, 0)?
        };
        self.deliver(&[xml]).await
    }

    /// The group passes to `new_owner`, a member of staff, who joins it if they were not in it
    /// (and stops being an admin); the old owner stays an ordinary member. The callback is
    /// change_owner with no member fields. member_version is unchanged unless the new owner had
    /// to join (the membership then did change, api.md §7.2).
    pub async fn owner_changes(&self, chat_id: &str, new_owner: &str) -> Result<(), DriverError> {
        let xml = {
            let mut st = self.fake.lock();
            let now = st.now_secs();
            let name = st
                .staff
                .get(new_owner)
                .map(|s| s.name.clone())
                .ok_or_else(|| DriverError::NotFound(format!("member {new_owner:?}")))?;
            let chat = st
                .group_chats
                .get_mut(chat_id)
                .ok_or_else(|| group_missing(chat_id))?;
            if chat.owner == new_owner {
                return Err(DriverError::Refused(format!(
                    "{new_owner:?} already owns {chat_id:?}"
                )));
            }
            if !chat.member_list.iter().any(|m| m.userid == new_owner) {
                let invitor = Some(chat.owner.clone());
                chat.member_list
                    .push(GroupMemberView::staff(new_owner, name, invitor, now));
                chat.member_version = random_hex(32);
            }
            chat.admin_list.retain(|a| a != new_owner);
            chat.owner = new_owner.to_owned();
            chat_detail_event(self.corp_id(), now, chat_id, "change_owner")
        };
        self.deliver(&[xml]).await
    }

    /// The owner or an admin renames the group: change_name.
    pub async fn group_renamed(&self, chat_id: &str, name: &str) -> Result<(), DriverError> {
        self.edit_group(chat_id, "change_name", |chat| {
            chat.name = name.to_owned();
        })
        .await
    }

    /// The owner or an admin edits the group notice: change_notice.
    pub async fn group_notice_changed(
        &self,
        chat_id: &str,
        notice: &str,
    ) -> Result<(), DriverError> {
        self.edit_group(chat_id, "change_notice", |chat| {
            chat.notice = notice.to_owned();
        })
        .await
    }

    async fn edit_group(
        &self,
        chat_id: &str,
        detail: &str,
        edit: impl FnOnce(&mut GroupChatView),
    ) -> Result<(), DriverError> {
        let xml = {
            let mut st = self.fake.lock();
            let now = st.now_secs();
            let chat = st
                .group_chats
                .get_mut(chat_id)
                .ok_or_else(|| group_missing(chat_id))?;
            edit(chat);
            chat_detail_event(self.corp_id(), now, chat_id, detail)
        };
        self.deliver(&[xml]).await
    }

    /// The owner dismisses the group: it is gone (groupchat/get answers 49008, groupchat/list
    /// and [`FakeWecom::group_chat`] no longer have it) and every join way drops it, keeping an
    /// empty chat_id_list if it was the way's only group. Callback: dismiss.
    pub async fn group_dismissed(&self, chat_id: &str) -> Result<(), DriverError> {
        let xml = {
            let mut st = self.fake.lock();
            let now = st.now_secs();
            st.group_chats
                .remove(chat_id)
                .ok_or_else(|| group_missing(chat_id))?;
            st.dismissed_chats.insert(chat_id.to_owned());
            for way in st.join_ways.values_mut() {
                way.chat_id_list.retain(|c| c != chat_id);
            }
            chat_event(self.corp_id(), now, chat_id, "dismiss")
        };
        self.deliver(&[xml]).await
    }

    /// A member leaves a group by themselves (QuitScene 0) or is removed by the owner (1).
    pub async fn member_leaves_group(
        &self,
        chat_id: &str,
        member: &str,
        removed_by_owner: bool,
    ) -> Result<(), DriverError> {
        let xml = {
            let mut st = self.fake.lock();
            let now = st.now_secs();
            let chat = st
                .group_chats
                .get_mut(chat_id)
                .ok_or_else(|| group_missing(chat_id))?;
            if chat.owner == member {
                return Err(DriverError::Refused(
                    "the owner cannot leave; transfer the group first".into(),
                ));
            }
            let before = chat.member_list.len();
            chat.member_list.retain(|m| m.userid != member);
            if chat.member_list.len() == before {
                return Err(DriverError::NotFound(format!(
                    "{member:?} in group {chat_id:?}"
                )));
            }
            chat.admin_list.retain(|a| a != member);
            let last = std::mem::replace(&mut chat.member_version, random_hex(32));
            let members = [member.to_owned()];
            chat_update_event(
                self.corp_id(),
                now,
                &MemberChange {
                    chat_id,
                    detail: "del_member",
                    join_scene: 0,
                    quit_scene: i64::from(removed_by_owner),
                    members: &members,
                    last: &last,
                    cur: &chat.member_version,
                },
            )
        };
        self.deliver(&[xml]).await
    }

    /// An admin edits the corp tag library in the admin console.
    pub async fn admin_edits_tag(&self, change: TagEdit) -> Result<(), DriverError> {
        let xmls = {
            let mut st = self.fake.lock();
            let now = st.now_secs();
            let corp = self.corp_id();
            match change {
                TagEdit::CreateTag { group_id, name } => {
                    let group = st
                        .tag_groups
                        .iter_mut()
                        .find(|g| g.group_id == group_id && !g.deleted)
                        .ok_or_else(|| DriverError::NotFound(format!("tag group {group_id:?}")))?;
                    if group.tag.iter().any(|t| !t.deleted && t.name == name) {
                        return Err(DriverError::Refused(format!(
                            "tag {name:?} exists in the group"
                        )));
                    }
                    let id = new_id("et", 32);
                    group.tag.push(TagView {
                        id: id.clone(),
                        name,
                        order: 0,
                        create_time: now,
                        deleted: false,
                    });
                    vec![tag_event(corp, now, &id, "tag", "create")]
                }
                TagEdit::RenameTag { id, name } => {
                    let mut tag_type = None;
                    for g in st.tag_groups.iter_mut().filter(|g| !g.deleted) {
                        if g.group_id == id {
                            g.group_name = name.clone();
                            tag_type = Some("tag_group");
                            break;
                        }
                        if let Some(t) = g.tag.iter_mut().find(|t| t.id == id && !t.deleted) {
                            t.name = name.clone();
                            tag_type = Some("tag");
                            break;
                        }
                    }
                    let tag_type = tag_type
                        .ok_or_else(|| DriverError::NotFound(format!("tag or group {id:?}")))?;
                    vec![tag_event(corp, now, &id, tag_type, "update")]
                }
                TagEdit::DeleteTag { id } => {
                    if st.find_tag(&id).is_none() {
                        return Err(DriverError::NotFound(format!("tag {id:?}")));
                    }
                    let emptied = delete_tags(&mut st, std::slice::from_ref(&id), &[]);
                    let mut xmls = vec![tag_event(corp, now, &id, "tag", "delete")];
                    xmls.extend(
                        emptied
                            .iter()
                            .map(|g| tag_event(corp, now, g, "tag_group", "delete")),
                    );
                    xmls
                }
                TagEdit::DeleteGroup { id } => {
                    if !st.tag_groups.iter().any(|g| g.group_id == id && !g.deleted) {
                        return Err(DriverError::NotFound(format!("tag group {id:?}")));
                    }
                    delete_tags(&mut st, &[], std::slice::from_ref(&id));
                    vec![tag_event(corp, now, &id, "tag_group", "delete")]
                }
            }
        };
        self.deliver(&xmls).await
    }

    /// The member confirms their mass-message task in the client. WeCom sends no callback.
    pub async fn staff_confirms_mass_message(
        &self,
        msgid: &str,
        userid: &str,
    ) -> Result<(), DriverError> {
        let mut st = self.fake.lock();
        campaigns::confirm_mass_message(&mut st, msgid, userid).map_err(DriverError::from)
    }

    /// The member publishes a moment task from the client. WeCom sends no callback.
    pub async fn staff_publishes_moment(
        &self,
        moment_id: &str,
        userid: &str,
    ) -> Result<(), DriverError> {
        let mut st = self.fake.lock();
        campaigns::publish_moment(&mut st, moment_id, userid).map_err(DriverError::from)
    }

    /// A member writes to the siyu app. Returns siyu's raw HTTP answer body: empty, or a passive
    /// encrypted reply (callback.md §1.7).
    pub async fn staff_sends_text(
        &self,
        userid: &str,
        content: &str,
    ) -> Result<String, DriverError> {
        let xml = {
            let st = self.fake.lock();
            if !st.staff.contains_key(userid) {
                return Err(DriverError::NotFound(format!("member {userid:?}")));
            }
            let msg_id: i64 = rand::thread_rng().gen_range(1_000_000_000_000_000_000..i64::MAX);
            format!(
                "<xml>{}{}{}{}{}{}{}</xml>",
                el("ToUserName", self.corp_id()),
                el("FromUserName", userid),
                plain("CreateTime", st.now_secs()),
                el("MsgType", "text"),
                el("Content", content),
                plain("MsgId", msg_id),
                plain("AgentID", self.fake.inner.config.agent_id),
            )
        };
        if self.silent {
            return Ok(String::new());
        }
        let sender = self.sender()?;
        let url = self.fake.callback_url().ok_or(DriverError::NoCallbackUrl)?;
        // CallbackSender::post reports only the status; the answer body is the point here, so the
        // sealed message is posted directly, with WeCom's tries and timeout.
        let sealed = sender.seal(&xml);
        let mut last = String::new();
        for _ in 0..TRIES {
            let answer = self
                .fake
                .inner
                .http
                .post(format!("{url}?{}", sealed.query))
                .header("content-type", "text/xml")
                .timeout(ANSWER_TIMEOUT)
                .body(sealed.body.clone())
                .send()
                .await;
            match answer {
                Ok(r) if r.status().as_u16() == 200 => {
                    return r.text().await.map_err(|e| {
                        DriverError::NotDelivered(SendError::NotAccepted {
                            tries: TRIES,
                            last: e.to_string(),
                        })
                    });
                }
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(DriverError::NotDelivered(SendError::NotAccepted {
            tries: TRIES,
            last,
        }))
    }
}

fn relation_missing(userid: &str, external_userid: &str) -> DriverError {
    DriverError::NotFound(format!(
        "a live relation between {userid:?} and {external_userid:?}"
    ))
}
