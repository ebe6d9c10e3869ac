//! Request and answer bodies of the endpoints siyu uses (api.md). Answers are lenient where WeCom
//! is inconsistent: missing fields default, timestamps come as numbers or strings.

use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{ChatId, ExternalUserId, TagId, UserId};

/// Accepts `123`, `"123"`, `""` and `null` (WeCom's examples use all of them for times).
pub fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Float(f64),
        Text(String),
        Null,
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        Some(Raw::Int(n)) => n,
        Some(Raw::Float(f)) => f as i64,
        Some(Raw::Text(s)) => s.trim().parse().unwrap_or(0),
        Some(Raw::Null) | None => 0,
    })
}

// ---- customers (api.md §3) ----

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExternalContact {
    pub external_userid: ExternalUserId,
    pub name: String,
    pub avatar: String,
    #[serde(rename = "type")]
    pub kind: i64,
    pub gender: i64,
    pub unionid: String,
    pub corp_name: String,
    pub corp_full_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FollowTag {
    pub group_name: String,
    pub tag_name: String,
    pub tag_id: TagId,
    #[serde(rename = "type")]
    pub kind: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FollowUser {
    pub userid: UserId,
    pub remark: String,
    pub description: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub createtime: i64,
    pub tags: Vec<FollowTag>,
    pub remark_corp_name: String,
    /// Phone numbers: never log them.
    pub remark_mobiles: Vec<String>,
    pub add_way: i64,
    pub oper_userid: UserId,
    pub state: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CustomerDetail {
    pub external_contact: ExternalContact,
    pub follow_user: Vec<FollowUser>,
    pub next_cursor: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FollowInfo {
    pub userid: UserId,
    pub remark: String,
    pub description: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub createtime: i64,
    pub tag_id: Vec<TagId>,
    pub add_way: i64,
    pub state: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContactWithFollow {
    pub external_contact: ExternalContact,
    pub follow_info: FollowInfo,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BatchCustomers {
    pub external_contact_list: Vec<ContactWithFollow>,
    pub next_cursor: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CustomerList {
    pub external_userid: Vec<ExternalUserId>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RemarkRequest {
    pub userid: UserId,
    pub external_userid: ExternalUserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark_company: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark_mobiles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark_pic_mediaid: Option<String>,
}

// ---- corp tags (api.md §4) ----

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct Tag {
    pub id: TagId,
    pub name: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub create_time: i64,
    pub order: i64,
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct TagGroup {
    pub group_id: String,
    pub group_name: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub create_time: i64,
    pub order: i64,
    pub deleted: bool,
    pub tag: Vec<Tag>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TagLibrary {
    pub tag_group: Vec<TagGroup>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AddedTags {
    pub tag_group: TagGroup,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewTag {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AddTagsRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i64>,
    pub tag: Vec<NewTag>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MarkTagRequest {
    pub userid: UserId,
    pub external_userid: ExternalUserId,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add_tag: Vec<TagId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove_tag: Vec<TagId>,
}

// ---- contact ways (api.md §5) ----

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContactWayRequest {
    /// 1 single member, 2 several.
    #[serde(rename = "type")]
    pub kind: i64,
    /// 1 mini-program button, 2 QR code.
    pub scene: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_verify: Option<bool>,
    /// The channel code, echoed in the add event (≤ 30 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub user: Vec<UserId>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AddedContactWay {
    pub config_id: String,
    pub qr_code: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContactWay {
    pub config_id: String,
    #[serde(rename = "type")]
    pub kind: i64,
    pub scene: i64,
    pub remark: String,
    pub skip_verify: bool,
    pub state: String,
    pub qr_code: String,
    pub user: Vec<UserId>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContactWayAnswer {
    pub contact_way: ContactWay,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateContactWayRequest {
    pub config_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Vec<UserId>>,
}

// ---- messages, welcome, attachments (api.md §6, §8) ----

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Text {
    pub content: String,
}

/// One attachment of a welcome or mass message: `{"msgtype": "image", "image": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "msgtype", rename_all = "lowercase")]
pub enum Attachment {
    Image { image: ImageAttachment },
    Link { link: LinkAttachment },
    Miniprogram { miniprogram: MiniprogramAttachment },
    Video { video: MediaAttachment },
    File { file: MediaAttachment },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageAttachment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pic_url: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkAttachment {
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picurl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    pub url: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MiniprogramAttachment {
    pub title: String,
    pub pic_media_id: String,
    pub appid: String,
    pub page: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MediaAttachment {
    pub media_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WelcomeRequest {
    pub welcome_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TagFilter {
    pub group_list: Vec<TagFilterGroup>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TagFilterGroup {
    pub tag_list: Vec<TagId>,
}

/// Deserializable too: a send job keeps the exact request in its ledger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MassMessageRequest {
    /// "single" (customers) or "group" (customer groups).
    pub chat_type: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_userid: Vec<ExternalUserId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chat_id_list: Vec<ChatId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_filter: Option<TagFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_select: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MassMessageCreated {
    /// The customers it cannot go to.
    pub fail_list: Vec<ExternalUserId>,
    pub msgid: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupMessage {
    pub msgid: String,
    pub creator: UserId,
    #[serde(deserialize_with = "lenient_i64")]
    pub create_time: i64,
    pub create_type: i64,
    pub text: Option<Text>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupMessageList {
    pub group_msg_list: Vec<GroupMessage>,
    pub next_cursor: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SenderTask {
    pub userid: UserId,
    /// 0 not sent, 2 sent.
    pub status: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub send_time: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SenderTasks {
    pub task_list: Vec<SenderTask>,
    pub next_cursor: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SendResult {
    pub external_userid: ExternalUserId,
    pub chat_id: ChatId,
    pub userid: UserId,
    /// 0 not sent, 1 sent, 2 not a friend, 3 the customer already got a mass message (cap).
    pub status: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub send_time: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SendResults {
    pub send_list: Vec<SendResult>,
    pub next_cursor: String,
}

// ---- customer groups and join ways (api.md §7) ----

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupChatEntry {
    pub chat_id: ChatId,
    pub status: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupChatList {
    pub group_chat_list: Vec<GroupChatEntry>,
    pub next_cursor: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupMember {
    /// A member's userid or a customer's external_userid, as `kind` says: left a string.
    pub userid: String,
    /// 1 corp member, 2 customer.
    #[serde(rename = "type")]
    pub kind: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub join_time: i64,
    pub join_scene: i64,
    pub group_nickname: String,
    pub name: String,
    pub state: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupChat {
    pub chat_id: ChatId,
    pub name: String,
    pub owner: UserId,
    #[serde(deserialize_with = "lenient_i64")]
    pub create_time: i64,
    pub notice: String,
    pub member_list: Vec<GroupMember>,
    pub admin_list: Vec<GroupAdmin>,
    pub member_version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupAdmin {
    pub userid: UserId,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupChatAnswer {
    pub group_chat: GroupChat,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct JoinWayRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_id: Option<String>,
    /// 1 mini-program plugin, 2 QR code.
    pub scene: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_create_room: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_base_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_base_id: Option<i64>,
    pub chat_id_list: Vec<ChatId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConfigId {
    pub config_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct JoinWay {
    pub config_id: String,
    pub scene: i64,
    pub remark: String,
    pub auto_create_room: i64,
    pub room_base_name: String,
    pub room_base_id: i64,
    pub chat_id_list: Vec<ChatId>,
    pub qr_code: String,
    pub state: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct JoinWayAnswer {
    pub join_way: JoinWay,
}

// ---- moments (api.md §9) ----

#[derive(Debug, Clone, Default, Serialize)]
pub struct MomentVisibleRange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_list: Option<MomentSenders>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_contact_list: Option<MomentCustomers>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MomentSenders {
    pub user_list: Vec<UserId>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MomentCustomers {
    pub tag_list: Vec<TagId>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MomentRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visible_range: Option<MomentVisibleRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
    /// `{"msgtype": "image", "image": {"media_id": ...}}` and the like (moments take image,
    /// video or link with media_id from upload_attachment).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct JobId {
    pub jobid: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MomentTaskOutcome {
    pub errcode: i64,
    pub errmsg: String,
    pub moment_id: String,
    /// Senders WeCom ignored (unknown or out of the app's scope).
    pub invalid_sender_list: MomentInvalidSenders,
    /// Tags not in the corp tag library, ignored.
    pub invalid_external_contact_list: MomentInvalidCustomers,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MomentInvalidSenders {
    pub user_list: Vec<UserId>,
    pub department_list: Vec<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MomentInvalidCustomers {
    pub tag_list: Vec<TagId>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MomentTaskResult {
    /// 1 started, 2 in progress, 3 done.
    pub status: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub result: MomentTaskOutcome,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct MomentMedia {
    pub media_id: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct MomentVideo {
    pub media_id: String,
    pub thumb_media_id: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct MomentLink {
    pub title: String,
    pub url: String,
}

/// One `get_moment_list` row.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Moment {
    pub moment_id: String,
    /// Empty for moments created through the API.
    pub creator: UserId,
    #[serde(deserialize_with = "lenient_i64")]
    pub create_time: i64,
    /// 0 corp, 1 personal.
    pub create_type: i64,
    /// 0 partially visible (a tag filter), 1 public.
    pub visible_type: i64,
    pub text: Option<Text>,
    pub image: Vec<MomentMedia>,
    pub video: Option<MomentVideo>,
    pub link: Option<MomentLink>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MomentList {
    pub moment_list: Vec<Moment>,
    pub next_cursor: String,
}

/// One `get_moment_task` row: a member asked to publish the moment.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct MomentTask {
    pub userid: UserId,
    /// 0 not published, 1 published.
    pub publish_status: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MomentTasks {
    pub task_list: Vec<MomentTask>,
    pub next_cursor: String,
}

// ---- media and app messages (api.md §10) ----

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UploadedMedia {
    #[serde(rename = "type")]
    pub kind: String,
    pub media_id: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AppMessageSent {
    pub invaliduser: String,
    pub invalidparty: String,
    pub invalidtag: String,
    pub unlicenseduser: String,
    pub msgid: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_may_be_numbers_or_strings() {
        let m: UploadedMedia =
            serde_json::from_str(r#"{"type":"image","media_id":"m1","created_at":"1380000000"}"#)
                .unwrap();
        assert_eq!(m.created_at, 1_380_000_000);
        let m: UploadedMedia =
            serde_json::from_str(r#"{"type":"image","media_id":"m1","created_at":1380000000}"#)
                .unwrap();
        assert_eq!(m.created_at, 1_380_000_000);
        let g: GroupMessage =
            serde_json::from_str(r#"{"msgid":"x","create_time":"xxxx"}"#).unwrap();
        assert_eq!(g.create_time, 0);
    }

    #[test]
    fn attachments_serialize_as_wecom_expects() {
        let a = Attachment::Link {
            link: LinkAttachment {
                title: "t".into(),
                url: "https://x".into(),
                ..Default::default()
            },
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"msgtype": "link", "link": {"title": "t", "url": "https://x"}})
        );
    }
}
