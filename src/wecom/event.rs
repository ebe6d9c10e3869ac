//! Typed events from the decrypted callback XML (`shared/wecom/callback.md` §3).
//!
//! Fields are read by element name, never by position: WeCom's element order differs between
//! events, values may or may not be CDATA-wrapped, and whitespace may sit between elements.
//! Anything not modelled becomes [`Event::Unknown`], which keeps the whole XML.
//!
//! Normalisation: optional text fields are trimmed and an empty value counts as absent (`None`),
//! so `<AgentID><![CDATA[]]></AgentID>`, an empty `EventKey` and an empty shuffle `Id` (meaning
//! "all tag groups") all read as `None`. `Content` is kept verbatim. A number field that does
//! not parse as `i64` is `None` rather than an error.

use quick_xml::events::Event as XmlEvent;
use serde::Deserialize;

use crate::ids::{ChatId, ExternalUserId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The text is not XML at all. Well-formed XML of an unexpected shape is [`Event::Unknown`].
    #[error("Callback payload is not valid XML: {0}")]
    Xml(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub to_user_name: Option<String>,
    pub from_user_name: Option<String>,
    pub create_time: Option<i64>,
    pub msg_type: Option<String>,
    pub agent_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ExternalContact {
        header: Header,
        change: ContactChange,
        user_id: Option<UserId>,
        external_user_id: Option<ExternalUserId>,
        state: Option<String>,
        welcome_code: Option<String>,
        source: Option<String>,
        fail_reason: Option<String>,
    },
    ExternalChat {
        header: Header,
        change: ChatChange,
        chat_id: Option<ChatId>,
        update_detail: Option<String>,
        join_scene: Option<i64>,
        quit_scene: Option<i64>,
        mem_change_cnt: Option<i64>,
        mem_change_list: Vec<String>,
        last_mem_ver: Option<String>,
        cur_mem_ver: Option<String>,
    },
    ExternalTag {
        header: Header,
        change: TagChange,
        id: Option<String>,
        tag_type: Option<String>,
        strategy_id: Option<i64>,
    },
    Text {
        header: Header,
        content: String,
        msg_id: Option<String>,
    },
    EnterAgent {
        header: Header,
        event_key: Option<String>,
    },
    /// Everything else, including a change_external_* event without a ChangeType and the
    /// third-party instruction flavour (InfoType instead of MsgType/Event).
    Unknown {
        header: Header,
        msg_type: Option<String>,
        event: Option<String>,
        change_type: Option<String>,
        /// The whole decrypted XML, so nothing WeCom sent is lost.
        raw: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContactChange {
    Add,
    Edit,
    AddHalf,
    Del,
    DelFollowUser,
    TransferFail,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChatChange {
    Create,
    Update,
    Dismiss,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TagChange {
    Create,
    Update,
    Delete,
    Shuffle,
    Other(String),
}

impl ContactChange {
    fn from_wire(change_type: &str) -> Self {
        match change_type {
            "add_external_contact" => Self::Add,
            "edit_external_contact" => Self::Edit,
            "add_half_external_contact" => Self::AddHalf,
            "del_external_contact" => Self::Del,
            "del_follow_user" => Self::DelFollowUser,
            "transfer_fail" => Self::TransferFail,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The ChangeType as WeCom spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Add => "add_external_contact",
            Self::Edit => "edit_external_contact",
            Self::AddHalf => "add_half_external_contact",
            Self::Del => "del_external_contact",
            Self::DelFollowUser => "del_follow_user",
            Self::TransferFail => "transfer_fail",
            Self::Other(other) => other,
        }
    }
}

impl ChatChange {
    fn from_wire(change_type: &str) -> Self {
        match change_type {
            "create" => Self::Create,
            "update" => Self::Update,
            "dismiss" => Self::Dismiss,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The ChangeType as WeCom spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Dismiss => "dismiss",
            Self::Other(other) => other,
        }
    }
}

impl TagChange {
    fn from_wire(change_type: &str) -> Self {
        match change_type {
            "create" => Self::Create,
            "update" => Self::Update,
            "delete" => Self::Delete,
            "shuffle" => Self::Shuffle,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The ChangeType as WeCom spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Shuffle => "shuffle",
            Self::Other(other) => other,
        }
    }
}

impl Event {
    pub fn header(&self) -> &Header {
        match self {
            Event::ExternalContact { header, .. }
            | Event::ExternalChat { header, .. }
            | Event::ExternalTag { header, .. }
            | Event::Text { header, .. }
            | Event::EnterAgent { header, .. }
            | Event::Unknown { header, .. } => header,
        }
    }

    /// A stable, low-cardinality kind for a DB column and metrics label.
    ///
    /// * change_external_* events: `"<Event>.<ChangeType>"`, e.g.
    ///   `"change_external_contact.add_external_contact"`, `"change_external_chat.update"`,
    ///   `"change_external_tag.shuffle"`; an unrecognised ChangeType keeps its wire name.
    /// * `"message.text"` and `"event.enter_agent"`.
    /// * [`Event::Unknown`]: `"event.<Event>"` when MsgType is `event` and Event is present,
    ///   otherwise `"message.<MsgType>"` when MsgType is present (e.g. `"message.image"`),
    ///   otherwise `"unknown"`.
    ///
    /// Wire names are used only if they are 1..=64 characters of `[A-Za-z0-9_]`; anything else
    /// becomes `"other"` (for a ChangeType) or `"unknown"`, so a label can never carry
    /// arbitrary text.
    pub fn kind(&self) -> String {
        match self {
            Event::ExternalContact { change, .. } => {
                format!(
                    "change_external_contact.{}",
                    label_or(change.as_str(), "other")
                )
            }
            Event::ExternalChat { change, .. } => {
                format!(
                    "change_external_chat.{}",
                    label_or(change.as_str(), "other")
                )
            }
            Event::ExternalTag { change, .. } => {
                format!("change_external_tag.{}", label_or(change.as_str(), "other"))
            }
            Event::Text { .. } => "message.text".to_owned(),
            Event::EnterAgent { .. } => "event.enter_agent".to_owned(),
            Event::Unknown {
                msg_type, event, ..
            } => match (msg_type.as_deref(), event.as_deref()) {
                (Some("event"), Some(event)) if is_label(event) => format!("event.{event}"),
                (Some(msg_type), _) if msg_type != "event" && is_label(msg_type) => {
                    format!("message.{msg_type}")
                }
                _ => "unknown".to_owned(),
            },
        }
    }

    /// The MsgId, when present: from text messages, and from the raw XML of unknown messages
    /// (image, voice, ...) so they can be deduplicated by it too. The modelled change_external_*
    /// and enter_agent events carry none (§3).
    pub fn msg_id(&self) -> Option<&str> {
        match self {
            Event::Text { msg_id, .. } => msg_id.as_deref(),
            Event::Unknown { raw, .. } => scan_msg_id(raw),
            _ => None,
        }
    }
}

fn is_label(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn label_or<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if is_label(s) { s } else { fallback }
}

/// Finds the top-level `<MsgId>` text without a second XML parse. Only digits are accepted,
/// which also keeps a stray match from returning markup.
fn scan_msg_id(raw: &str) -> Option<&str> {
    const OPEN: &str = "<MsgId>";
    let rest = raw.get(raw.find(OPEN)? + OPEN.len()..)?;
    let value = rest.get(..rest.find("</MsgId>")?)?.trim();
    let value = value
        .strip_prefix("<![CDATA[")
        .and_then(|v| v.strip_suffix("]]>"))
        .unwrap_or(value)
        .trim();
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())).then_some(value)
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "ToUserName")]
    to_user_name: Option<String>,
    #[serde(rename = "FromUserName")]
    from_user_name: Option<String>,
    #[serde(rename = "CreateTime")]
    create_time: Option<String>,
    #[serde(rename = "MsgType")]
    msg_type: Option<String>,
    #[serde(rename = "AgentID")]
    agent_id: Option<String>,
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "ChangeType")]
    change_type: Option<String>,
    #[serde(rename = "UserID")]
    user_id: Option<String>,
    #[serde(rename = "ExternalUserID")]
    external_user_id: Option<String>,
    #[serde(rename = "State")]
    state: Option<String>,
    #[serde(rename = "WelcomeCode")]
    welcome_code: Option<String>,
    #[serde(rename = "Source")]
    source: Option<String>,
    #[serde(rename = "FailReason")]
    fail_reason: Option<String>,
    #[serde(rename = "ChatId")]
    chat_id: Option<String>,
    #[serde(rename = "UpdateDetail")]
    update_detail: Option<String>,
    #[serde(rename = "JoinScene")]
    join_scene: Option<String>,
    #[serde(rename = "QuitScene")]
    quit_scene: Option<String>,
    #[serde(rename = "MemChangeCnt")]
    mem_change_cnt: Option<String>,
    #[serde(rename = "MemChangeList")]
    mem_change_list: Option<RawItems>,
    #[serde(rename = "LastMemVer")]
    last_mem_ver: Option<String>,
    #[serde(rename = "CurMemVer")]
    cur_mem_ver: Option<String>,
    #[serde(rename = "Id")]
    id: Option<String>,
    #[serde(rename = "TagType")]
    tag_type: Option<String>,
    #[serde(rename = "StrategyId")]
    strategy_id: Option<String>,
    #[serde(rename = "Content")]
    content: Option<String>,
    #[serde(rename = "MsgId")]
    msg_id: Option<String>,
    #[serde(rename = "EventKey")]
    event_key: Option<String>,
}

#[derive(Deserialize)]
struct RawItems {
    #[serde(rename = "Item", default)]
    items: Vec<String>,
}

/// The header alone, for XML whose other elements do not fit [`RawEvent`] (a repeated or
/// nested element); it still yields a useful [`Event::Unknown`].
#[derive(Deserialize)]
struct RawHeader {
    #[serde(rename = "ToUserName")]
    to_user_name: Option<String>,
    #[serde(rename = "FromUserName")]
    from_user_name: Option<String>,
    #[serde(rename = "CreateTime")]
    create_time: Option<String>,
    #[serde(rename = "MsgType")]
    msg_type: Option<String>,
    #[serde(rename = "AgentID")]
    agent_id: Option<String>,
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "ChangeType")]
    change_type: Option<String>,
}

/// Parses decrypted callback XML. Only text that is not XML is an error; XML whose elements
/// do not fit the typed model (a repeated or nested known element) becomes [`Event::Unknown`].
pub fn parse(xml: &str) -> Result<Event, EventError> {
    let error = match quick_xml::de::from_str::<RawEvent>(xml) {
        Ok(raw) => return Ok(build(raw, xml)),
        Err(error) => error,
    };
    if !is_well_formed(xml) {
        return Err(EventError::Xml(error.to_string()));
    }
    let (header, event, change_type) = match quick_xml::de::from_str::<RawHeader>(xml) {
        Ok(raw) => (
            header(
                raw.to_user_name,
                raw.from_user_name,
                raw.create_time,
                raw.msg_type,
                raw.agent_id,
            ),
            text(raw.event),
            text(raw.change_type),
        ),
        Err(_) => (header(None, None, None, None, None), None, None),
    };
    Ok(Event::Unknown {
        msg_type: header.msg_type.clone(),
        header,
        event,
        change_type,
        raw: xml.to_owned(),
    })
}

fn build(raw: RawEvent, xml: &str) -> Event {
    let header = header(
        raw.to_user_name,
        raw.from_user_name,
        raw.create_time,
        raw.msg_type,
        raw.agent_id,
    );
    let event = text(raw.event);
    let change_type = text(raw.change_type);

    match (
        header.msg_type.as_deref(),
        event.as_deref(),
        change_type.as_deref(),
    ) {
        (Some("event"), Some("change_external_contact"), Some(change)) => Event::ExternalContact {
            change: ContactChange::from_wire(change),
            header,
            user_id: text(raw.user_id).map(UserId::from),
            external_user_id: text(raw.external_user_id).map(ExternalUserId::from),
            state: text(raw.state),
            welcome_code: text(raw.welcome_code),
            source: text(raw.source),
            fail_reason: text(raw.fail_reason),
        },
        (Some("event"), Some("change_external_chat"), Some(change)) => Event::ExternalChat {
            change: ChatChange::from_wire(change),
            header,
            chat_id: text(raw.chat_id).map(ChatId::from),
            update_detail: text(raw.update_detail),
            join_scene: number(raw.join_scene),
            quit_scene: number(raw.quit_scene),
            mem_change_cnt: number(raw.mem_change_cnt),
            mem_change_list: raw
                .mem_change_list
                .map(|list| {
                    list.items
                        .into_iter()
                        .filter_map(|item| text(Some(item)))
                        .collect()
                })
                .unwrap_or_default(),
            last_mem_ver: text(raw.last_mem_ver),
            cur_mem_ver: text(raw.cur_mem_ver),
        },
        (Some("event"), Some("change_external_tag"), Some(change)) => Event::ExternalTag {
            change: TagChange::from_wire(change),
            header,
            id: text(raw.id),
            tag_type: text(raw.tag_type),
            strategy_id: number(raw.strategy_id),
        },
        (Some("event"), Some("enter_agent"), _) => Event::EnterAgent {
            header,
            event_key: text(raw.event_key),
        },
        (Some("text"), _, _) => Event::Text {
            header,
            content: raw.content.unwrap_or_default(),
            msg_id: text(raw.msg_id),
        },
        _ => Event::Unknown {
            msg_type: header.msg_type.clone(),
            header,
            event,
            change_type,
            raw: xml.to_owned(),
        },
    }
}

fn header(
    to_user_name: Option<String>,
    from_user_name: Option<String>,
    create_time: Option<String>,
    msg_type: Option<String>,
    agent_id: Option<String>,
) -> Header {
    Header {
        to_user_name: text(to_user_name),
        from_user_name: text(from_user_name),
        create_time: number(create_time),
        msg_type: text(msg_type),
        agent_id: text(agent_id),
    }
}

/// Trimmed, and empty means absent (see the module docs).
fn text(value: Option<String>) -> Option<String> {
    let value = value?;
    let trimmed = value.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == value.len() {
        Some(value)
    } else {
        Some(trimmed.to_owned())
    }
}

fn number(value: Option<String>) -> Option<i64> {
    value?.trim().parse().ok()
}

/// Whether the text is XML with at least one element; the serde pass does not tell a shape
/// mismatch from broken XML.
fn is_well_formed(xml: &str) -> bool {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut saw_element = false;
    loop {
        match reader.read_event() {
            Ok(XmlEvent::Start(_) | XmlEvent::Empty(_)) => saw_element = true,
            Ok(XmlEvent::Eof) => return saw_element,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};

    const CORP: &str = "ww1436e0e65a779aee";
    const EXTERNAL_A: &str = "wmAJ2GCAAAqLhRnbOi5A0PjX4kO0dN1Q";
    const EXTERNAL_B: &str = "wmAJ2GCAAAb3Xk1u6oZc9yTqVf2Wb7pA";
    const CHAT: &str = "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA";

    fn sys_header(create_time: i64) -> Header {
        Header {
            to_user_name: Some(CORP.to_owned()),
            from_user_name: Some("sys".to_owned()),
            create_time: Some(create_time),
            msg_type: Some("event".to_owned()),
            agent_id: None,
        }
    }

    /// Some text: a `String` or an id.
    fn s<T: for<'a> From<&'a str>>(value: &str) -> Option<T> {
        Some(T::from(value))
    }

    fn contact(
        create_time: i64,
        change: ContactChange,
        user_id: &str,
        external_user_id: &str,
    ) -> Event {
        Event::ExternalContact {
            header: sys_header(create_time),
            change,
            user_id: s(user_id),
            external_user_id: s(external_user_id),
            state: None,
            welcome_code: None,
            source: None,
            fail_reason: None,
        }
    }

    // §3.1
    const ADD_CONTACT: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700642907</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmAJ2GCAAAqLhRnbOi5A0PjX4kO0dN1Q]]></ExternalUserID><State><![CDATA[spring_expo_qr]]></State><WelcomeCode><![CDATA[Tk9uB2jC7Fq0s9E3xVb8LmQwRzYp]]></WelcomeCode></xml>"#;
    const EDIT_CONTACT: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700642931</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[edit_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmAJ2GCAAAqLhRnbOi5A0PjX4kO0dN1Q]]></ExternalUserID></xml>"#;
    const ADD_HALF_CONTACT: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700643010</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_half_external_contact]]></ChangeType><UserID><![CDATA[lisi]]></UserID><ExternalUserID><![CDATA[wmAJ2GCAAAb3Xk1u6oZc9yTqVf2Wb7pA]]></ExternalUserID><State><![CDATA[channel_07]]></State><WelcomeCode><![CDATA[Hq3Vd8sPz1Kx6Nw0Jr4Ty7Uc2Mb5]]></WelcomeCode></xml>"#;
    const DEL_CONTACT: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700643100</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[del_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmAJ2GCAAAqLhRnbOi5A0PjX4kO0dN1Q]]></ExternalUserID><Source><![CDATA[DELETE_BY_TRANSFER]]></Source></xml>"#;
    const DEL_FOLLOW_USER: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700643160</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[del_follow_user]]></ChangeType><UserID><![CDATA[lisi]]></UserID><ExternalUserID><![CDATA[wmAJ2GCAAAb3Xk1u6oZc9yTqVf2Wb7pA]]></ExternalUserID></xml>"#;
    const TRANSFER_FAIL: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700643222</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[transfer_fail]]></ChangeType><FailReason><![CDATA[customer_refused]]></FailReason><UserID><![CDATA[wangwu]]></UserID><ExternalUserID><![CDATA[wmAJ2GCAAAqLhRnbOi5A0PjX4kO0dN1Q]]></ExternalUserID></xml>"#;
    // §3.2
    const CHAT_CREATE: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700650000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA]]></ChatId><ChangeType><![CDATA[create]]></ChangeType></xml>"#;
    const CHAT_UPDATE: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700650123</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA]]></ChatId><ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><![CDATA[add_member]]></UpdateDetail><JoinScene>3</JoinScene><QuitScene>0</QuitScene><MemChangeCnt>2</MemChangeCnt><MemChangeList><Item>wmAJ2GCAAAqLhRnbOi5A0PjX4kO0dN1Q</Item><Item>lisi</Item></MemChangeList><LastMemVer>9c3f97c2ada667dfb5f6d03308d963e1</LastMemVer><CurMemVer>71217227bbd112ecfe3a49c482195cb4</CurMemVer></xml>"#;
    const CHAT_DISMISS: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700659999</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA]]></ChatId><ChangeType><![CDATA[dismiss]]></ChangeType></xml>"#;
    // §3.3
    const TAG_CREATE: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700660000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_tag]]></Event><Id><![CDATA[etAJ2GCAAAbYJ0hAtbHqzu2mq9Qi3Fwg]]></Id><TagType><![CDATA[tag]]></TagType><ChangeType><![CDATA[create]]></ChangeType><StrategyId>1</StrategyId></xml>"#;
    const TAG_UPDATE: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700660060</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_tag]]></Event><Id><![CDATA[etAJ2GCAAAw1sUf0kXgQxYJlB5eqzLhA]]></Id><TagType><![CDATA[tag_group]]></TagType><ChangeType><![CDATA[update]]></ChangeType></xml>"#;
    const TAG_DELETE: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700660120</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_tag]]></Event><Id><![CDATA[etAJ2GCAAAbYJ0hAtbHqzu2mq9Qi3Fwg]]></Id><TagType><![CDATA[tag]]></TagType><ChangeType><![CDATA[delete]]></ChangeType></xml>"#;
    const TAG_SHUFFLE: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700660180</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_tag]]></Event><Id><![CDATA[etAJ2GCAAAw1sUf0kXgQxYJlB5eqzLhA]]></Id><ChangeType><![CDATA[shuffle]]></ChangeType><StrategyId>1</StrategyId></xml>"#;
    // §3.4
    const TEXT: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1700670000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[查询订单 20231122-0042]]></Content><MsgId>7304512277196816385</MsgId><AgentID>1000002</AgentID></xml>"#;
    const ENTER_AGENT: &str = r#"<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1700670100</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event><EventKey><![CDATA[]]></EventKey><AgentID>1000002</AgentID></xml>"#;
    // vectors.json
    const V1B: &str = "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName><CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content><MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>";
    const V3B: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>";

    fn parsed(xml: &str) -> Event {
        parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"))
    }

    #[test]
    fn add_external_contact() {
        let event = parsed(ADD_CONTACT);
        assert_eq!(
            event,
            Event::ExternalContact {
                header: sys_header(1700642907),
                change: ContactChange::Add,
                user_id: s("zhangsan"),
                external_user_id: s(EXTERNAL_A),
                state: s("spring_expo_qr"),
                welcome_code: s("Tk9uB2jC7Fq0s9E3xVb8LmQwRzYp"),
                source: None,
                fail_reason: None,
            }
        );
        assert_eq!(event.kind(), "change_external_contact.add_external_contact");
        assert_eq!(event.msg_id(), None);
    }

    #[test]
    fn edit_external_contact() {
        let event = parsed(EDIT_CONTACT);
        assert_eq!(
            event,
            contact(1700642931, ContactChange::Edit, "zhangsan", EXTERNAL_A)
        );
        assert_eq!(
            event.kind(),
            "change_external_contact.edit_external_contact"
        );
    }

    #[test]
    fn add_half_external_contact() {
        let event = parsed(ADD_HALF_CONTACT);
        let Event::ExternalContact {
            change,
            user_id,
            external_user_id,
            state,
            welcome_code,
            ..
        } = &event
        else {
            panic!("{event:?}");
        };
        assert_eq!(change, &ContactChange::AddHalf);
        assert_eq!(user_id.as_ref().map(UserId::as_str), Some("lisi"));
        assert_eq!(
            external_user_id.as_ref().map(ExternalUserId::as_str),
            Some(EXTERNAL_B)
        );
        assert_eq!(state.as_deref(), Some("channel_07"));
        assert_eq!(
            welcome_code.as_deref(),
            Some("Hq3Vd8sPz1Kx6Nw0Jr4Ty7Uc2Mb5")
        );
        assert_eq!(
            event.kind(),
            "change_external_contact.add_half_external_contact"
        );
    }

    #[test]
    fn del_external_contact_with_source() {
        let event = parsed(DEL_CONTACT);
        let Event::ExternalContact { source, .. } = &event else {
            panic!("{event:?}")
        };
        assert_eq!(source.as_deref(), Some("DELETE_BY_TRANSFER"));
        assert_eq!(event.kind(), "change_external_contact.del_external_contact");
        let Event::ExternalContact { change, .. } = event else {
            unreachable!()
        };
        assert_eq!(change, ContactChange::Del);
    }

    #[test]
    fn del_follow_user() {
        let event = parsed(DEL_FOLLOW_USER);
        assert_eq!(
            event,
            contact(1700643160, ContactChange::DelFollowUser, "lisi", EXTERNAL_B)
        );
        assert_eq!(event.kind(), "change_external_contact.del_follow_user");
    }

    #[test]
    fn transfer_fail_with_fail_reason_first() {
        let event = parsed(TRANSFER_FAIL);
        let Event::ExternalContact {
            change,
            fail_reason,
            user_id,
            external_user_id,
            ..
        } = &event
        else {
            panic!("{event:?}");
        };
        assert_eq!(change, &ContactChange::TransferFail);
        assert_eq!(fail_reason.as_deref(), Some("customer_refused"));
        assert_eq!(user_id.as_ref().map(UserId::as_str), Some("wangwu"));
        assert_eq!(
            external_user_id.as_ref().map(ExternalUserId::as_str),
            Some(EXTERNAL_A)
        );
        assert_eq!(event.kind(), "change_external_contact.transfer_fail");
    }

    #[test]
    fn chat_create_and_dismiss() {
        for (xml, change, time, kind) in [
            (
                CHAT_CREATE,
                ChatChange::Create,
                1700650000,
                "change_external_chat.create",
            ),
            (
                CHAT_DISMISS,
                ChatChange::Dismiss,
                1700659999,
                "change_external_chat.dismiss",
            ),
        ] {
            let event = parsed(xml);
            assert_eq!(
                event,
                Event::ExternalChat {
                    header: sys_header(time),
                    change,
                    chat_id: s(CHAT),
                    update_detail: None,
                    join_scene: None,
                    quit_scene: None,
                    mem_change_cnt: None,
                    mem_change_list: vec![],
                    last_mem_ver: None,
                    cur_mem_ver: None,
                }
            );
            assert_eq!(event.kind(), kind);
        }
    }

    #[test]
    fn chat_update_with_member_list() {
        let event = parsed(CHAT_UPDATE);
        assert_eq!(
            event,
            Event::ExternalChat {
                header: sys_header(1700650123),
                change: ChatChange::Update,
                chat_id: s(CHAT),
                update_detail: s("add_member"),
                join_scene: Some(3),
                quit_scene: Some(0),
                mem_change_cnt: Some(2),
                mem_change_list: vec![EXTERNAL_A.to_owned(), "lisi".to_owned()],
                last_mem_ver: s("9c3f97c2ada667dfb5f6d03308d963e1"),
                cur_mem_ver: s("71217227bbd112ecfe3a49c482195cb4"),
            }
        );
        assert_eq!(event.kind(), "change_external_chat.update");
    }

    #[test]
    fn chat_update_with_cdata_numbers_and_versions() {
        // The shape of Senparc's "官方提供" capture (C15): everything CDATA, on change_name.
        let xml = "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime><![CDATA[1700650200]]></CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wr1]]></ChatId><ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><![CDATA[change_name]]></UpdateDetail><JoinScene><![CDATA[0]]></JoinScene><MemChangeCnt><![CDATA[ 1 ]]></MemChangeCnt><MemChangeList><Item><![CDATA[wm1]]></Item></MemChangeList><LastMemVer><![CDATA[aaa]]></LastMemVer><CurMemVer><![CDATA[bbb]]></CurMemVer></xml>";
        let Event::ExternalChat {
            header,
            update_detail,
            join_scene,
            mem_change_cnt,
            mem_change_list,
            last_mem_ver,
            cur_mem_ver,
            ..
        } = parsed(xml)
        else {
            panic!("not a chat event");
        };
        assert_eq!(header.create_time, Some(1700650200));
        assert_eq!(update_detail.as_deref(), Some("change_name"));
        assert_eq!(join_scene, Some(0));
        assert_eq!(mem_change_cnt, Some(1));
        assert_eq!(mem_change_list, vec!["wm1".to_owned()]);
        assert_eq!(last_mem_ver.as_deref(), Some("aaa"));
        assert_eq!(cur_mem_ver.as_deref(), Some("bbb"));
    }

    #[test]
    fn bad_numbers_become_none() {
        let xml = "<xml><CreateTime>soon</CreateTime><MsgType>event</MsgType><Event>change_external_chat</Event><ChangeType>update</ChangeType><JoinScene>3.5</JoinScene><QuitScene></QuitScene><MemChangeCnt>99999999999999999999999</MemChangeCnt></xml>";
        let Event::ExternalChat {
            header,
            join_scene,
            quit_scene,
            mem_change_cnt,
            ..
        } = parsed(xml)
        else {
            panic!("not a chat event");
        };
        assert_eq!(
            (header.create_time, join_scene, quit_scene, mem_change_cnt),
            (None, None, None, None)
        );
    }

    #[test]
    fn tag_events() {
        let event = parsed(TAG_CREATE);
        assert_eq!(
            event,
            Event::ExternalTag {
                header: sys_header(1700660000),
                change: TagChange::Create,
                id: s("etAJ2GCAAAbYJ0hAtbHqzu2mq9Qi3Fwg"),
                tag_type: s("tag"),
                strategy_id: Some(1),
            }
        );
        assert_eq!(event.kind(), "change_external_tag.create");

        assert_eq!(
            parsed(TAG_UPDATE),
            Event::ExternalTag {
                header: sys_header(1700660060),
                change: TagChange::Update,
                id: s("etAJ2GCAAAw1sUf0kXgQxYJlB5eqzLhA"),
                tag_type: s("tag_group"),
                strategy_id: None,
            }
        );
        let event = parsed(TAG_DELETE);
        assert_eq!(event.kind(), "change_external_tag.delete");
        let Event::ExternalTag {
            change, tag_type, ..
        } = event
        else {
            panic!()
        };
        assert_eq!(
            (change, tag_type.as_deref()),
            (TagChange::Delete, Some("tag"))
        );

        let event = parsed(TAG_SHUFFLE);
        assert_eq!(
            event,
            Event::ExternalTag {
                header: sys_header(1700660180),
                change: TagChange::Shuffle,
                id: s("etAJ2GCAAAw1sUf0kXgQxYJlB5eqzLhA"),
                tag_type: None,
                strategy_id: Some(1),
            }
        );
        assert_eq!(event.kind(), "change_external_tag.shuffle");
    }

    #[test]
    fn shuffle_of_all_groups_has_no_id() {
        let xml = "<xml><MsgType>event</MsgType><Event>change_external_tag</Event><Id><![CDATA[]]></Id><ChangeType>shuffle</ChangeType></xml>";
        let Event::ExternalTag { id, change, .. } = parsed(xml) else {
            panic!()
        };
        assert_eq!((id, change), (None, TagChange::Shuffle));
    }

    #[test]
    fn text_message_sample() {
        let event = parsed(TEXT);
        assert_eq!(
            event,
            Event::Text {
                header: Header {
                    to_user_name: s(CORP),
                    from_user_name: s("zhangsan"),
                    create_time: Some(1700670000),
                    msg_type: s("text"),
                    agent_id: s("1000002"),
                },
                content: "查询订单 20231122-0042".to_owned(),
                msg_id: s("7304512277196816385"),
            }
        );
        assert_eq!(event.kind(), "message.text");
        assert_eq!(event.msg_id(), Some("7304512277196816385"));
    }

    #[test]
    fn vector_plaintexts_are_text_messages() {
        let event = parsed(V1B);
        assert_eq!(
            event,
            Event::Text {
                header: Header {
                    to_user_name: s(CORP),
                    from_user_name: s("ChenJiaShun"),
                    create_time: Some(1476422779),
                    msg_type: s("text"),
                    agent_id: s("1000002"),
                },
                content: "你好".to_owned(),
                msg_id: s("1456453720"),
            }
        );
        let event = parsed(V3B);
        assert_eq!(
            event,
            Event::Text {
                header: Header {
                    to_user_name: s("wx5823bf96d3bd56c7"),
                    from_user_name: s("mycreate"),
                    create_time: Some(1409659813),
                    msg_type: s("text"),
                    agent_id: s("218"),
                },
                content: "hello".to_owned(),
                msg_id: s("4561255354251345929"),
            }
        );
        assert_eq!(event.msg_id(), Some("4561255354251345929"));
    }

    #[test]
    fn cdata_content_keeps_its_whitespace() {
        let xml =
            "<xml><MsgType>text</MsgType><Content><![CDATA[  two  spaces\n]]></Content></xml>";
        let Event::Text {
            content, msg_id, ..
        } = parsed(xml)
        else {
            panic!()
        };
        assert_eq!(content, "  two  spaces\n");
        assert_eq!(msg_id, None);
    }

    #[test]
    fn enter_agent() {
        let event = parsed(ENTER_AGENT);
        assert_eq!(
            event,
            Event::EnterAgent {
                header: Header {
                    to_user_name: s(CORP),
                    from_user_name: s("zhangsan"),
                    create_time: Some(1700670100),
                    msg_type: s("event"),
                    agent_id: s("1000002"),
                },
                event_key: None,
            }
        );
        assert_eq!(event.kind(), "event.enter_agent");
    }

    #[test]
    fn unknown_event_keeps_raw() {
        let xml = "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700680000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event><ChangeType>create_user</ChangeType><UserID><![CDATA[zhaoliu]]></UserID><Name><![CDATA[赵六]]></Name><Department><![CDATA[1,2]]></Department><ExtAttr><Item><Name><![CDATA[爱好]]></Name><Type>0</Type></Item></ExtAttr></xml>";
        let event = parsed(xml);
        assert_eq!(
            event,
            Event::Unknown {
                header: sys_header(1700680000),
                msg_type: s("event"),
                event: s("change_contact"),
                change_type: s("create_user"),
                raw: xml.to_owned(),
            }
        );
        assert_eq!(event.kind(), "event.change_contact");
        assert_eq!(event.header().create_time, Some(1700680000));
    }

    #[test]
    fn unknown_change_types_are_kept() {
        let xml = EDIT_CONTACT.replace("edit_external_contact", "merge_external_contact");
        let event = parsed(&xml);
        assert_eq!(
            event.kind(),
            "change_external_contact.merge_external_contact"
        );
        let Event::ExternalContact { change, .. } = event else {
            panic!()
        };
        assert_eq!(
            change,
            ContactChange::Other("merge_external_contact".to_owned())
        );

        let event = parsed(&CHAT_CREATE.replace("[create]", "[archive]"));
        assert_eq!(event.kind(), "change_external_chat.archive");
        let event = parsed(&TAG_CREATE.replace("[create]", "[merge]"));
        assert_eq!(event.kind(), "change_external_tag.merge");
        let Event::ExternalTag { change, .. } = event else {
            panic!()
        };
        assert_eq!(change, TagChange::Other("merge".to_owned()));

        // A change type that is not label-safe does not reach the label.
        let event = parsed(&TAG_CREATE.replace("[create]", "[a b/c]"));
        assert_eq!(event.kind(), "change_external_tag.other");
    }

    #[test]
    fn missing_change_type_is_unknown() {
        let xml = CHAT_CREATE.replace("<ChangeType><![CDATA[create]]></ChangeType>", "");
        let event = parsed(&xml);
        assert!(
            matches!(&event, Event::Unknown { raw, .. } if raw == &xml),
            "{event:?}"
        );
        assert_eq!(event.kind(), "event.change_external_chat");
    }

    #[test]
    fn other_messages_are_unknown_with_msg_id() {
        let xml = "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://example.invalid/p.jpg]]></PicUrl><MediaId><![CDATA[media_id]]></MediaId><MsgId><![CDATA[1234567890123456]]></MsgId><AgentID>1</AgentID></xml>";
        let event = parsed(xml);
        assert_eq!(event.kind(), "message.image");
        assert_eq!(event.msg_id(), Some("1234567890123456"));
        assert!(matches!(&event, Event::Unknown { raw, .. } if raw == xml));
    }

    #[test]
    fn third_party_instruction_flavour_is_unknown() {
        let xml = "<xml><SuiteId><![CDATA[ww4asffe99e54c0f4c]]></SuiteId><AuthCorpId><![CDATA[wxf8b4f85f3a794e77]]></AuthCorpId><InfoType><![CDATA[change_external_contact]]></InfoType><TimeStamp>1403610513</TimeStamp><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACH71w]]></ExternalUserID></xml>";
        let event = parsed(xml);
        assert_eq!(event.kind(), "unknown");
        assert!(
            matches!(&event, Event::Unknown { change_type: Some(c), raw, .. } if c == "add_external_contact" && raw == xml)
        );
    }

    #[test]
    fn element_order_does_not_matter() {
        let xml = "<xml>\n  <WelcomeCode>wc</WelcomeCode>\n  <ChangeType>add_external_contact</ChangeType>\n  <ExternalUserID>wm1</ExternalUserID>\n  <CreateTime>1700642907</CreateTime>\n  <Event>change_external_contact</Event>\n  <UserID>zhangsan</UserID>\n  <MsgType>event</MsgType>\n  <FromUserName>sys</FromUserName>\n  <ToUserName>ww1436e0e65a779aee</ToUserName>\n</xml>\n";
        assert_eq!(
            parsed(xml),
            Event::ExternalContact {
                header: sys_header(1700642907),
                change: ContactChange::Add,
                user_id: s("zhangsan"),
                external_user_id: s("wm1"),
                state: None,
                welcome_code: s("wc"),
                source: None,
                fail_reason: None,
            }
        );
        let text = "<xml><MsgId>42</MsgId><Content>hi</Content><MsgType>text</MsgType><AgentID>7</AgentID></xml>";
        let event = parsed(text);
        assert_eq!(event.msg_id(), Some("42"));
        assert_eq!(event.header().agent_id.as_deref(), Some("7"));
    }

    #[test]
    fn well_formed_but_odd_xml_is_unknown() {
        // A repeated element defeats the typed pass; the header pass still works.
        let xml = "<xml><MsgType>text</MsgType><Content>a</Content><Content>b</Content><MsgId>5</MsgId></xml>";
        let event = parsed(xml);
        assert_eq!(event.kind(), "message.text");
        assert_eq!(event.msg_id(), Some("5"));
        assert!(matches!(&event, Event::Unknown { raw, .. } if raw == xml));

        // Even the header is odd: keep the XML with an empty header.
        let xml = "<xml><MsgType>text</MsgType><MsgType>image</MsgType></xml>";
        let event = parsed(xml);
        assert_eq!(event.kind(), "unknown");
        assert!(matches!(&event, Event::Unknown { raw, .. } if raw == xml));
    }

    #[test]
    fn broken_xml_is_an_error() {
        for xml in [
            "",
            "   ",
            "hello",
            "{\"MsgType\":\"text\"}",
            "<xml><MsgType>text</Content></xml>",
            "<xml><MsgType>text</MsgType><MsgType>image</MsgType><broken",
        ] {
            assert!(
                matches!(parse(xml), Err(EventError::Xml(_))),
                "{xml:?} -> {:?}",
                parse(xml)
            );
        }
    }

    #[test]
    fn label_safety() {
        let event = Event::Unknown {
            header: header(None, None, None, Some("te xt".to_owned()), None),
            msg_type: s("te xt"),
            event: None,
            change_type: None,
            raw: String::new(),
        };
        assert_eq!(event.kind(), "unknown");
        assert_eq!(scan_msg_id("<MsgId><x/></MsgId>"), None);
        assert_eq!(scan_msg_id("<MsgId> 12 </MsgId>"), Some("12"));
        assert_eq!(scan_msg_id("<MsgId>12"), None);
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = StdRng::seed_from_u64(0x5159_0002);
        let samples = [
            ADD_CONTACT,
            CHAT_UPDATE,
            TAG_SHUFFLE,
            TEXT,
            ENTER_AGENT,
            V3B,
        ];
        let pieces = [
            "<xml>",
            "</xml>",
            "<MsgType>",
            "</MsgType>",
            "event",
            "text",
            "<Event>",
            "</Event>",
            "change_external_chat",
            "<ChangeType>",
            "</ChangeType>",
            "update",
            "<MemChangeList>",
            "</MemChangeList>",
            "<Item>",
            "</Item>",
            "<![CDATA[",
            "]]>",
            "<JoinScene>",
            "</JoinScene>",
            "-1",
            "99999999999999999999",
            "<MsgId>",
            "</MsgId>",
            "&amp;",
            "&",
            "<",
            ">",
            "\n",
            " ",
            "<?xml version=\"1.0\"?>",
            "<!--",
            "-->",
            "<a/>",
            "\u{0}",
            "中",
        ];
        for _ in 0..3000 {
            // Mutated real samples.
            let mut bytes = samples[rng.gen_range(0..samples.len())].as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..8) {
                let pos = rng.gen_range(0..bytes.len());
                match rng.gen_range(0..3) {
                    0 => bytes[pos] = rng.r#gen(),
                    1 => {
                        bytes.remove(pos);
                    }
                    _ => bytes.truncate(pos),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let _ = parse(&String::from_utf8_lossy(&bytes))
                .map(|e| (e.kind(), e.msg_id().map(str::to_owned)));

            // XML-ish soup.
            let soup: String = (0..rng.gen_range(0..40))
                .map(|_| pieces[rng.gen_range(0..pieces.len())])
                .collect();
            let _ = parse(&soup).map(|e| (e.kind(), e.msg_id().map(str::to_owned)));

            // Plain random bytes.
            let mut random = vec![0u8; rng.gen_range(0..64)];
            rng.fill_bytes(&mut random);
            let _ = parse(&String::from_utf8_lossy(&random));
        }
    }
}
