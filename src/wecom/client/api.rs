//! The typed endpoints siyu calls, each declared once with how it may be repeated (api.md).

use serde::Serialize;
use serde_json::json;

use super::types::*;
use super::{Credential, Effect, Endpoint, Result, WecomClient, WecomError};
use crate::ids::{ChatId, ExternalUserId, TagId, UserId};

const fn read(path: &'static str, post: bool) -> Endpoint {
    Endpoint {
        path,
        post,
        effect: Effect::Read,
        credential: Credential::Contact,
    }
}
const fn write(path: &'static str) -> Endpoint {
    Endpoint {
        path,
        post: true,
        effect: Effect::Idempotent,
        credential: Credential::Contact,
    }
}
const fn send(path: &'static str) -> Endpoint {
    Endpoint {
        path,
        post: true,
        effect: Effect::Send,
        credential: Credential::Contact,
    }
}

pub const GET_CUSTOMER: Endpoint = read("externalcontact/get", false);
pub const LIST_CUSTOMERS: Endpoint = read("externalcontact/list", false);
pub const BATCH_CUSTOMERS: Endpoint = read("externalcontact/batch/get_by_user", true);
pub const REMARK: Endpoint = write("externalcontact/remark");
pub const TAG_LIST: Endpoint = read("externalcontact/get_corp_tag_list", true);
/// Adding a tag whose name exists answers 40071 rather than adding it twice.
pub const ADD_TAGS: Endpoint = write("externalcontact/add_corp_tag");
pub const EDIT_TAG: Endpoint = write("externalcontact/edit_corp_tag");
pub const DEL_TAGS: Endpoint = write("externalcontact/del_corp_tag");
pub const MARK_TAG: Endpoint = write("externalcontact/mark_tag");
/// Not idempotent (a retry makes a second QR code), but it sends nothing to anyone: a duplicate
/// is an orphan config, not a message twice. Treated as a send so it is never retried blindly.
pub const ADD_CONTACT_WAY: Endpoint = send("externalcontact/add_contact_way");
pub const GET_CONTACT_WAY: Endpoint = read("externalcontact/get_contact_way", true);
pub const UPDATE_CONTACT_WAY: Endpoint = write("externalcontact/update_contact_way");
pub const DEL_CONTACT_WAY: Endpoint = write("externalcontact/del_contact_way");
pub const SEND_WELCOME: Endpoint = send("externalcontact/send_welcome_msg");
pub const GROUP_LIST: Endpoint = read("externalcontact/groupchat/list", true);
pub const GROUP_GET: Endpoint = read("externalcontact/groupchat/get", true);
pub const ADD_JOIN_WAY: Endpoint = send("externalcontact/groupchat/add_join_way");
pub const GET_JOIN_WAY: Endpoint = read("externalcontact/groupchat/get_join_way", true);
pub const UPDATE_JOIN_WAY: Endpoint = write("externalcontact/groupchat/update_join_way");
pub const DEL_JOIN_WAY: Endpoint = write("externalcontact/groupchat/del_join_way");
pub const ADD_MASS_MESSAGE: Endpoint = send("externalcontact/add_msg_template");
pub const LIST_MASS_MESSAGES: Endpoint = read("externalcontact/get_groupmsg_list_v2", true);
pub const MASS_MESSAGE_TASKS: Endpoint = read("externalcontact/get_groupmsg_task", true);
pub const MASS_MESSAGE_RESULTS: Endpoint = read("externalcontact/get_groupmsg_send_result", true);
/// Each reminder notifies the members again (at most 3 a day): a send.
pub const REMIND_MASS_MESSAGE: Endpoint = send("externalcontact/remind_groupmsg_send");
pub const CANCEL_MASS_MESSAGE: Endpoint = write("externalcontact/cancel_groupmsg_send");
pub const ADD_MOMENT: Endpoint = send("externalcontact/add_moment_task");
pub const MOMENT_RESULT: Endpoint = read("externalcontact/get_moment_task_result", false);
pub const CANCEL_MOMENT: Endpoint = write("externalcontact/cancel_moment_task");
pub const LIST_MOMENTS: Endpoint = read("externalcontact/get_moment_list", true);
pub const MOMENT_TASKS: Endpoint = read("externalcontact/get_moment_task", true);
/// Uploads are repeatable: a second upload only makes a second media id.
pub const UPLOAD_MEDIA: Endpoint = Endpoint {
    path: "media/upload",
    post: true,
    effect: Effect::Idempotent,
    credential: Credential::App,
};
pub const UPLOAD_ATTACHMENT: Endpoint = Endpoint {
    path: "media/upload_attachment",
    post: true,
    effect: Effect::Idempotent,
    credential: Credential::Contact,
};
pub const SEND_APP_MESSAGE: Endpoint = Endpoint {
    path: "message/send",
    post: true,
    effect: Effect::Send,
    credential: Credential::App,
};

/// WeCom's length limits, checked before calling so the error names the field.
fn check_chars(field: &str, value: &str, max: usize) -> Result<()> {
    let n = value.chars().count();
    if n > max {
        return Err(WecomError::Invalid(format!(
            "{field} has {n} characters; WeCom allows {max}"
        )));
    }
    Ok(())
}

fn check_bytes(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(WecomError::Invalid(format!(
            "{field} has {} bytes; WeCom allows {max}",
            value.len()
        )));
    }
    Ok(())
}

impl WecomClient {
    async fn post<B: Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        ep: Endpoint,
        body: &B,
    ) -> Result<T> {
        self.call(ep, &[], Some(body)).await
    }

    // ---- customers ----

    /// `externalcontact/get`: the customer and its followers (first page of 500).
    pub async fn get_customer(&self, external_userid: &ExternalUserId) -> Result<CustomerDetail> {
        self.call::<(), _>(
            GET_CUSTOMER,
            &[("external_userid", external_userid.to_string())],
            None,
        )
        .await
    }

    /// Every follower page of a customer (beyond 500 followers WeCom pages them).
    pub async fn get_customer_all(
        &self,
        external_userid: &ExternalUserId,
    ) -> Result<CustomerDetail> {
        let mut detail = self.get_customer(external_userid).await?;
        let mut cursor = std::mem::take(&mut detail.next_cursor);
        while !cursor.is_empty() {
            let mut page: CustomerDetail = self
                .call::<(), _>(
                    GET_CUSTOMER,
                    &[
                        ("external_userid", external_userid.to_string()),
                        ("cursor", cursor.clone()),
                    ],
                    None,
                )
                .await?;
            detail.follow_user.append(&mut page.follow_user);
            cursor = page.next_cursor;
        }
        Ok(detail)
    }

    pub async fn list_customers(&self, userid: &UserId) -> Result<CustomerList> {
        self.call::<(), _>(LIST_CUSTOMERS, &[("userid", userid.to_string())], None)
            .await
    }

    pub async fn batch_customers(
        &self,
        userids: &[UserId],
        cursor: &str,
        limit: u32,
    ) -> Result<BatchCustomers> {
        if userids.len() > 100 {
            return Err(WecomError::Invalid(
                "batch/get_by_user takes at most 100 members".into(),
            ));
        }
        self.post(
            BATCH_CUSTOMERS,
            &json!({"userid_list": userids, "cursor": cursor, "limit": limit.min(100)}),
        )
        .await
    }

    /// `externalcontact/remark`: the note the member sees (remark ≤ 20, description ≤ 150 characters).
    pub async fn remark(&self, request: &RemarkRequest) -> Result<()> {
        if let Some(r) = &request.remark {
            check_chars("remark", r, 20)?;
        }
        if let Some(d) = &request.description {
            check_chars("description", d, 150)?;
        }
        self.post::<_, Empty>(REMARK, request).await.map(drop)
    }

    // ---- corp tags ----

    pub async fn tag_library(&self) -> Result<TagLibrary> {
        self.post(TAG_LIST, &json!({})).await
    }

    pub async fn tags_by_group(&self, group_ids: &[String]) -> Result<TagLibrary> {
        self.post(TAG_LIST, &json!({"group_id": group_ids})).await
    }

    pub async fn add_tags(&self, request: &AddTagsRequest) -> Result<TagGroup> {
        if let Some(name) = &request.group_name {
            check_chars("group_name", name, 30)?;
        }
        for t in &request.tag {
            check_chars("tag name", &t.name, 30)?;
        }
        self.post::<_, AddedTags>(ADD_TAGS, request)
            .await
            .map(|a| a.tag_group)
    }

    pub async fn edit_tag(&self, id: &TagId, name: Option<&str>, order: Option<i64>) -> Result<()> {
        if let Some(n) = name {
            check_chars("name", n, 30)?;
        }
        let mut body = json!({ "id": id });
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        if let Some(o) = order {
            body["order"] = json!(o);
        }
        self.post::<_, Empty>(EDIT_TAG, &body).await.map(drop)
    }

    pub async fn delete_tags(&self, tag_ids: &[TagId], group_ids: &[String]) -> Result<()> {
        if tag_ids.is_empty() && group_ids.is_empty() {
            return Err(WecomError::Invalid(
                "del_corp_tag needs a tag or a group".into(),
            ));
        }
        self.post::<_, Empty>(DEL_TAGS, &json!({"tag_id": tag_ids, "group_id": group_ids}))
            .await
            .map(drop)
    }

    /// `externalcontact/mark_tag`: add and remove in one call (a tier swap is one call).
    pub async fn mark_tag(&self, request: &MarkTagRequest) -> Result<()> {
        if request.add_tag.is_empty() && request.remove_tag.is_empty() {
            return Err(WecomError::Invalid(
                "mark_tag needs tags to add or remove".into(),
            ));
        }
        self.post::<_, Empty>(MARK_TAG, request).await.map(drop)
    }

    // ---- contact ways ----

    pub async fn add_contact_way(&self, request: &ContactWayRequest) -> Result<AddedContactWay> {
        if let Some(state) = &request.state {
            check_chars("state", state, 30)?;
        }
        if let Some(remark) = &request.remark {
            check_chars("remark", remark, 30)?;
        }
        if request.user.len() > 100 {
            return Err(WecomError::Invalid(
                "a contact way takes at most 100 members".into(),
            ));
        }
        self.post(ADD_CONTACT_WAY, request).await
    }

    pub async fn get_contact_way(&self, config_id: &str) -> Result<ContactWay> {
        self.post::<_, ContactWayAnswer>(GET_CONTACT_WAY, &json!({ "config_id": config_id }))
            .await
            .map(|a| a.contact_way)
    }

    pub async fn update_contact_way(&self, request: &UpdateContactWayRequest) -> Result<()> {
        if let Some(state) = &request.state {
            check_chars("state", state, 30)?;
        }
        self.post::<_, Empty>(UPDATE_CONTACT_WAY, request)
            .await
            .map(drop)
    }

    pub async fn delete_contact_way(&self, config_id: &str) -> Result<()> {
        self.post::<_, Empty>(DEL_CONTACT_WAY, &json!({ "config_id": config_id }))
            .await
            .map(drop)
    }

    // ---- welcome ----

    /// `externalcontact/send_welcome_msg`: once, within 20 s of the add event.
    pub async fn send_welcome(&self, request: &WelcomeRequest) -> Result<()> {
        if request.text.is_none() && request.attachments.is_empty() {
            return Err(WecomError::Invalid(
                "a welcome message needs text or an attachment".into(),
            ));
        }
        if let Some(t) = &request.text {
            check_bytes("welcome text", &t.content, 4000)?;
        }
        if request.attachments.len() > 9 {
            return Err(WecomError::Invalid("at most 9 attachments".into()));
        }
        self.post::<_, Empty>(SEND_WELCOME, request).await.map(drop)
    }

    // ---- customer groups ----

    pub async fn list_group_chats(
        &self,
        owners: &[UserId],
        cursor: &str,
        limit: u32,
    ) -> Result<GroupChatList> {
        let mut body =
            json!({ "status_filter": 0, "cursor": cursor, "limit": limit.clamp(1, 1000) });
        if !owners.is_empty() {
            body["owner_filter"] = json!({ "userid_list": owners });
        }
        self.post(GROUP_LIST, &body).await
    }

    pub async fn get_group_chat(&self, chat_id: &ChatId) -> Result<GroupChat> {
        self.post::<_, GroupChatAnswer>(GROUP_GET, &json!({ "chat_id": chat_id, "need_name": 1 }))
            .await
            .map(|a| a.group_chat)
    }

    pub async fn add_join_way(&self, request: &JoinWayRequest) -> Result<String> {
        check_join_way(request)?;
        self.post::<_, ConfigId>(ADD_JOIN_WAY, request)
            .await
            .map(|c| c.config_id)
    }

    pub async fn get_join_way(&self, config_id: &str) -> Result<JoinWay> {
        self.post::<_, JoinWayAnswer>(GET_JOIN_WAY, &json!({ "config_id": config_id }))
            .await
            .map(|a| a.join_way)
    }

    pub async fn update_join_way(&self, request: &JoinWayRequest) -> Result<()> {
        if request.config_id.is_none() {
            return Err(WecomError::Invalid(
                "update_join_way needs the config_id".into(),
            ));
        }
        check_join_way(request)?;
        self.post::<_, Empty>(UPDATE_JOIN_WAY, request)
            .await
            .map(drop)
    }

    pub async fn delete_join_way(&self, config_id: &str) -> Result<()> {
        self.post::<_, Empty>(DEL_JOIN_WAY, &json!({ "config_id": config_id }))
            .await
            .map(drop)
    }

    // ---- mass messages ----

    /// `externalcontact/add_msg_template`: at most 10,000 customers per message. Never retried
    /// after it may have reached WeCom (see `OutcomeUnknown`).
    pub async fn add_mass_message(
        &self,
        request: &MassMessageRequest,
    ) -> Result<MassMessageCreated> {
        if request.external_userid.len() > 10_000 {
            return Err(WecomError::Invalid(format!(
                "{} recipients; WeCom takes at most 10,000 per mass message",
                request.external_userid.len()
            )));
        }
        if request.chat_type == "group" && request.sender.is_none() {
            return Err(WecomError::Invalid(
                "a group mass message needs a sender".into(),
            ));
        }
        if let Some(t) = &request.text {
            check_bytes("text", &t.content, 4000)?;
        }
        self.post(ADD_MASS_MESSAGE, request).await
    }

    pub async fn list_mass_messages(
        &self,
        chat_type: &str,
        start: i64,
        end: i64,
        cursor: &str,
    ) -> Result<GroupMessageList> {
        self.post(
            LIST_MASS_MESSAGES,
            &json!({"chat_type": chat_type, "start_time": start, "end_time": end, "filter_type": 2, "limit": 100, "cursor": cursor}),
        )
        .await
    }

    pub async fn mass_message_tasks(&self, msgid: &str, cursor: &str) -> Result<SenderTasks> {
        self.post(
            MASS_MESSAGE_TASKS,
            &json!({"msgid": msgid, "limit": 1000, "cursor": cursor}),
        )
        .await
    }

    pub async fn mass_message_results(
        &self,
        msgid: &str,
        userid: &UserId,
        cursor: &str,
    ) -> Result<SendResults> {
        self.post(
            MASS_MESSAGE_RESULTS,
            &json!({"msgid": msgid, "userid": userid, "limit": 1000, "cursor": cursor}),
        )
        .await
    }

    pub async fn remind_mass_message(&self, msgid: &str) -> Result<()> {
        self.post::<_, Empty>(REMIND_MASS_MESSAGE, &json!({ "msgid": msgid }))
            .await
            .map(drop)
    }

    pub async fn cancel_mass_message(&self, msgid: &str) -> Result<()> {
        self.post::<_, Empty>(CANCEL_MASS_MESSAGE, &json!({ "msgid": msgid }))
            .await
            .map(drop)
    }

    // ---- moments ----

    pub async fn add_moment(&self, request: &MomentRequest) -> Result<String> {
        if let Some(t) = &request.text {
            check_chars("moment text", &t.content, 2000)?;
        }
        self.post::<_, JobId>(ADD_MOMENT, request)
            .await
            .map(|j| j.jobid)
    }

    pub async fn moment_result(&self, jobid: &str) -> Result<MomentTaskResult> {
        self.call::<(), _>(MOMENT_RESULT, &[("jobid", jobid.to_string())], None)
            .await
    }

    pub async fn cancel_moment(&self, moment_id: &str) -> Result<()> {
        self.post::<_, Empty>(CANCEL_MOMENT, &json!({ "moment_id": moment_id }))
            .await
            .map(drop)
    }

    /// `externalcontact/get_moment_list`: the corp's moments created between `start` and `end`
    /// (Unix seconds, an exclusive range of at most 30 days), 20 a page.
    pub async fn list_moments(&self, start: i64, end: i64, cursor: &str) -> Result<MomentList> {
        if end < start || end - start > 30 * 86_400 {
            return Err(WecomError::Invalid(format!(
                "get_moment_list spans at most 30 days; {start}..{end} asked"
            )));
        }
        self.post(
            LIST_MOMENTS,
            &json!({"start_time": start, "end_time": end, "filter_type": 2, "limit": 20, "cursor": cursor}),
        )
        .await
    }

    /// `externalcontact/get_moment_task`: the members asked to publish a moment and whether
    /// they did, 1000 a page.
    pub async fn moment_tasks(&self, moment_id: &str, cursor: &str) -> Result<MomentTasks> {
        self.post(
            MOMENT_TASKS,
            &json!({"moment_id": moment_id, "limit": 1000, "cursor": cursor}),
        )
        .await
    }

    // ---- media ----

    /// Fetches a file WeCom serves at a URL it gave (a join way's `qr_code`), at most 10 MB.
    pub async fn fetch_url(&self, url: &str) -> Result<Vec<u8>> {
        const MAX: usize = 10 * 1024 * 1024;
        let transport = |reason: String| WecomError::Transport {
            path: "qr_code",
            reason,
        };
        let answer = self
            .http()
            .get(url)
            .send()
            .await
            .map_err(|e| transport(e.without_url().to_string()))?;
        if !answer.status().is_success() {
            return Err(WecomError::Http {
                path: "qr_code",
                status: answer.status().as_u16(),
            });
        }
        let bytes = answer
            .bytes()
            .await
            .map_err(|e| transport(e.without_url().to_string()))?;
        if bytes.len() > MAX {
            return Err(WecomError::Invalid(format!(
                "the file at the QR code's URL has {} bytes; at most {MAX}",
                bytes.len()
            )));
        }
        Ok(bytes.to_vec())
    }

    /// `media/upload?type=`: for welcome and mass messages (media ids live 3 days).
    pub async fn upload_media(
        &self,
        kind: &str,
        filename: &str,
        bytes: Vec<u8>,
    ) -> Result<UploadedMedia> {
        self.upload(UPLOAD_MEDIA, &[("type", kind.to_string())], filename, bytes)
            .await
    }

    /// `media/upload_attachment`: for moments (`attachment_type=1`).
    pub async fn upload_moment_attachment(
        &self,
        kind: &str,
        filename: &str,
        bytes: Vec<u8>,
    ) -> Result<UploadedMedia> {
        let query = [
            ("media_type", kind.to_string()),
            ("attachment_type", "1".to_string()),
        ];
        self.upload(UPLOAD_ATTACHMENT, &query, filename, bytes)
            .await
    }

    async fn upload(
        &self,
        ep: Endpoint,
        query: &[(&str, String)],
        filename: &str,
        bytes: Vec<u8>,
    ) -> Result<UploadedMedia> {
        if bytes.len() <= 5 {
            return Err(WecomError::Invalid(
                "WeCom refuses files of 5 bytes or less".into(),
            ));
        }
        self.call_multipart(ep, query, filename, bytes).await
    }

    // ---- app messages to staff ----

    /// `message/send` of a text to members (≤ 2048 bytes), within each member's 30/min and
    /// 1000/h cap (beyond it WeCom drops messages silently, so the client refuses instead).
    pub async fn send_text_to_members(
        &self,
        members: &[UserId],
        content: &str,
    ) -> Result<AppMessageSent> {
        if members.is_empty() || members.len() > 1000 {
            return Err(WecomError::Invalid(
                "message/send takes 1 to 1000 members".into(),
            ));
        }
        check_bytes("message text", content, 2048)?;
        let members: Vec<&str> = members.iter().map(UserId::as_str).collect();
        self.take_member_quota(&members).await?;
        let body = json!({
            "touser": members.join("|"),
            "msgtype": "text",
            "agentid": self.agent_id(),
            "text": { "content": content },
            // WeCom drops an identical message within the window: a second line of defence.
            "enable_duplicate_check": 1,
            "duplicate_check_interval": 1800,
        });
        self.post(SEND_APP_MESSAGE, &body).await
    }
}

fn check_join_way(request: &JoinWayRequest) -> Result<()> {
    if request.chat_id_list.is_empty() || request.chat_id_list.len() > 5 {
        return Err(WecomError::Invalid(
            "a join way holds 1 to 5 group chats".into(),
        ));
    }
    if let Some(state) = &request.state {
        check_chars("state", state, 30)?;
    }
    Ok(())
}
