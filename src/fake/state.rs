//! The in-memory model of one corp: staff, customers and their follow relations, the corp tag
//! library, contact ways, customer groups and join ways, media, mass messages, moments, tokens,
//! plus the fault rules and the call log. Everything sits behind one `std::sync::Mutex` in
//! [`super::FakeWecom`]; it is never held across an `.await`.
//!
//! The model's public structs double as the inspection views the tests read ("what a sales member
//! would see in their client"), so they carry `pub` fields and `Serialize` for `GET /fake/state`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{Datelike, FixedOffset, NaiveDate, TimeZone};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde::Serialize;
use serde_json::Value;

use super::faults::{Call, Faults};

/// The per-customer mass-message receipt cap (api.md §11): an admin setting of the corp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MassCap {
    /// As many as the current month has days (the default per doc 92135).
    #[default]
    PerMonth,
    /// 7 per natural week (Monday to Sunday).
    PerWeek,
    /// 1 per natural day.
    PerDay,
}

/// WeCom's natural days, weeks and months are China's (UTC+8, no DST).
const CHINA_OFFSET_SECS: i32 = 8 * 3600;

impl MassCap {
    /// How many mass messages one recipient may receive in the window containing `now_ms`,
    /// and where that window starts (Unix ms).
    pub fn window(self, now_ms: i64) -> (usize, i64) {
        let Some(tz) = FixedOffset::east_opt(CHINA_OFFSET_SECS) else {
            return (usize::MAX, i64::MIN);
        };
        let Some(now) = tz.timestamp_millis_opt(now_ms).single() else {
            return (usize::MAX, i64::MIN);
        };
        let today = now.date_naive();
        let start_of = |d: NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .and_then(|dt| tz.from_local_datetime(&dt).single())
                .map_or(i64::MIN, |dt| dt.timestamp_millis())
        };
        match self {
            MassCap::PerDay => (1, start_of(today)),
            MassCap::PerWeek => {
                let monday = today
                    - chrono::Duration::days(i64::from(today.weekday().num_days_from_monday()));
                (7, start_of(monday))
            }
            MassCap::PerMonth => {
                let first = today.with_day(1).unwrap_or(today);
                let next_first = if first.month() == 12 {
                    NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
                };
                let days = next_first.map_or(31, |n| (n - first).num_days()) as usize;
                (days, start_of(first))
            }
        }
    }
}

/// Which secret a token was issued for: each has its own tokens (api.md §2.1).
/// WeCom's frequency limits per corp and API: 10,000 calls a minute and 150,000 an hour; over
/// either, 45009, and the API stays blocked for the window (a minute, an hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCaps {
    pub per_minute: usize,
    pub per_hour: usize,
}

impl Default for ApiCaps {
    fn default() -> Self {
        Self {
            per_minute: 10_000,
            per_hour: 150_000,
        }
    }
}

/// One API's calls of the last hour (fake-clock ms, oldest first) and its block.
#[derive(Debug, Default)]
pub(crate) struct ApiCalls {
    pub at: VecDeque<i64>,
    pub blocked_until_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    App,
    Contact,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub kind: SecretKind,
    pub expires_ms: i64,
    /// `expire_tokens` was called after it was issued.
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Staff {
    pub userid: String,
    pub name: String,
}

/// A customer's profile and every member's follow relation with them.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerView {
    pub external_userid: String,
    pub name: String,
    pub avatar: String,
    /// 1 WeChat user, 2 WeCom user.
    #[serde(rename = "type")]
    pub kind: i64,
    pub gender: i64,
    pub unionid: Option<String>,
    pub corp_name: Option<String>,
    pub follow_user: Vec<FollowView>,
}

/// One member's relation with a customer, as that member sees it in the client.
#[derive(Debug, Clone, Serialize)]
pub struct FollowView {
    pub userid: String,
    pub remark: String,
    pub description: String,
    pub remark_corp_name: String,
    pub remark_mobiles: Vec<String>,
    pub remark_pic_mediaid: Option<String>,
    /// Corp tag ids, in the order they were put on.
    pub tags: Vec<String>,
    pub add_way: i64,
    pub oper_userid: String,
    pub state: Option<String>,
    pub createtime: i64,
    /// The customer deleted this member (del_follow_user). WeCom keeps the one-way relation on
    /// the member's side, so it still lists, but nothing can be delivered to the customer.
    pub lost: bool,
    /// The member deleted the customer (del_external_contact): the relation is gone (84061).
    pub deleted: bool,
}

impl FollowView {
    /// Mass messages and welcome messages can reach the customer.
    pub fn sendable(&self) -> bool {
        !self.lost && !self.deleted
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TagView {
    pub id: String,
    pub name: String,
    pub order: u32,
    pub create_time: i64,
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TagGroupView {
    pub group_id: String,
    pub group_name: String,
    pub order: u32,
    pub create_time: i64,
    pub deleted: bool,
    pub tag: Vec<TagView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContactWay {
    pub config_id: String,
    #[serde(rename = "type")]
    pub kind: i64,
    pub scene: i64,
    pub style: Option<i64>,
    pub remark: String,
    pub skip_verify: bool,
    pub state: Option<String>,
    pub user: Vec<String>,
    pub party: Vec<i64>,
    pub is_temp: bool,
    pub expires_in: Option<i64>,
    pub chat_expires_in: Option<i64>,
    pub unionid: Option<String>,
    pub conclusions: Option<Value>,
    pub qr_code: Option<String>,
    /// Which of `user` the next scanning customer reaches (the driver's round robin).
    #[serde(skip)]
    pub next_pick: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct JoinWay {
    pub config_id: String,
    pub scene: i64,
    pub remark: String,
    pub auto_create_room: i64,
    pub room_base_name: Option<String>,
    pub room_base_id: Option<i64>,
    pub chat_id_list: Vec<String>,
    pub state: Option<String>,
    pub qr_code: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupMemberView {
    pub userid: String,
    /// 1 corp member, 2 external contact.
    #[serde(rename = "type")]
    pub kind: i64,
    pub join_time: i64,
    /// 1 invited directly, 2 invited by link, 3 scanned the group QR code.
    pub join_scene: i64,
    pub invitor: Option<String>,
    pub group_nickname: String,
    pub name: String,
    pub state: Option<String>,
}

impl GroupMemberView {
    /// A member of staff in the group, invited directly (join_scene 1) by `invitor`.
    pub(crate) fn staff(userid: &str, name: String, invitor: Option<String>, now: i64) -> Self {
        GroupMemberView {
            userid: userid.to_owned(),
            kind: 1,
            join_time: now,
            join_scene: 1,
            invitor,
            group_nickname: String::new(),
            name,
            state: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupChatView {
    pub chat_id: String,
    pub name: String,
    pub owner: String,
    pub create_time: i64,
    pub notice: String,
    pub member_list: Vec<GroupMemberView>,
    pub admin_list: Vec<String>,
    pub member_version: String,
    /// Members (owner included) the group holds before a join way overflows to another group.
    pub capacity: usize,
}

impl GroupChatView {
    pub fn is_full(&self) -> bool {
        self.member_list.len() >= self.capacity
    }
}

/// What `send_welcome_msg` delivered.
#[derive(Debug, Clone, Serialize)]
pub struct SentWelcome {
    pub welcome_code: String,
    pub external_userid: String,
    pub userid: String,
    pub text: Option<String>,
    pub attachments: Vec<Value>,
    pub sent_at: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct WelcomeCode {
    pub external_userid: String,
    pub userid: String,
    pub issued_ms: i64,
    pub used: bool,
}

/// The two media namespaces: ids of one are 40007 in the other (api.md §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaNamespace {
    Upload,
    /// `media/upload_attachment` with its attachment_type (1 moments, 2 product album).
    Attachment(i64),
}

#[derive(Debug, Clone, Serialize)]
pub struct Media {
    pub media_id: String,
    pub namespace: MediaNamespace,
    /// image | voice | video | file
    pub media_type: String,
    pub filename: String,
    pub size: usize,
    pub created_ms: i64,
}

/// One row of `get_groupmsg_task`.
#[derive(Debug, Clone, Serialize)]
pub struct SenderTaskView {
    pub userid: String,
    /// 0 not sent, 2 sent.
    pub status: i64,
    pub send_time: Option<i64>,
}

/// One row of `get_groupmsg_send_result`.
#[derive(Debug, Clone, Serialize)]
pub struct SendResultView {
    pub userid: String,
    pub external_userid: Option<String>,
    pub chat_id: Option<String>,
    /// 0 not sent, 1 sent, 2 not a friend, 3 over the receipt cap.
    pub status: i64,
    pub send_time: Option<i64>,
}

/// An `add_msg_template` task.
#[derive(Debug, Clone, Serialize)]
pub struct MassMessageView {
    pub msgid: String,
    pub chat_type: String,
    pub sender: Option<String>,
    pub create_time: i64,
    pub text: Option<String>,
    pub attachments: Vec<Value>,
    pub fail_list: Vec<String>,
    pub tasks: Vec<SenderTaskView>,
    pub results: Vec<SendResultView>,
    pub cancelled: bool,
    /// Unix ms of each accepted remind_groupmsg_send.
    pub reminders: Vec<i64>,
    /// Reads answer 41063 until this Unix ms.
    #[serde(skip)]
    pub dispatched_at_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MomentSenderView {
    pub userid: String,
    /// 0 not published, 1 published.
    pub publish_status: i64,
}

/// An `add_moment_task` moment.
#[derive(Debug, Clone, Serialize)]
pub struct MomentView {
    pub moment_id: String,
    pub jobid: String,
    pub create_time: i64,
    pub text: Option<String>,
    pub attachments: Vec<Value>,
    /// 0 partially visible (tag filter), 1 public.
    pub visible_type: i64,
    pub tag_list: Vec<String>,
    pub senders: Vec<MomentSenderView>,
    pub invalid_senders: Vec<String>,
    pub invalid_tags: Vec<String>,
    pub cancelled: bool,
    /// `get_moment_task_result` calls so far (the job reports "started" on the first).
    #[serde(skip)]
    pub polls: u32,
    #[serde(skip)]
    pub created_ms: i64,
}

impl MomentView {
    /// The creation job has reported status 3 with the moment_id (on its second poll): from
    /// then on the moment exists for `get_moment_list`.
    pub fn job_done(&self) -> bool {
        self.polls >= 2
    }
}

/// The whole corp.
#[derive(Debug)]
pub(crate) struct State {
    /// Calls per corp and API allowed in a minute and in an hour (api.md §2.2).
    pub api_caps: ApiCaps,
    /// Per API: when its calls of the last hour came, and until when it is blocked.
    pub api_calls: HashMap<String, ApiCalls>,
    pub clock_offset_ms: i64,
    pub welcome_code_ttl: Duration,
    pub dispatch_delay: Duration,
    pub timeout_hold: Duration,
    pub mass_cap: MassCap,
    pub callback_url: Option<String>,
    /// Where [`super::FakeWecom::serve`] listens: join-way QR codes are served from there.
    pub served_at: Option<SocketAddr>,
    pub tokens: HashMap<String, Token>,
    /// Unix ms of recent wrong-secret gettoken calls (the 1-hour ban of api.md §2.1).
    pub bad_secret_calls: VecDeque<i64>,
    pub bad_secret_ban_threshold: usize,
    pub banned_until_ms: i64,
    pub staff: BTreeMap<String, Staff>,
    pub customers: BTreeMap<String, CustomerView>,
    pub tag_groups: Vec<TagGroupView>,
    pub contact_ways: BTreeMap<String, ContactWay>,
    pub join_ways: BTreeMap<String, JoinWay>,
    pub group_chats: BTreeMap<String, GroupChatView>,
    /// Groups the owner dismissed: groupchat/get answers 49008 for them.
    pub dismissed_chats: BTreeSet<String>,
    pub welcome_codes: HashMap<String, WelcomeCode>,
    pub welcomes: Vec<SentWelcome>,
    pub app_messages: Vec<Value>,
    /// Hash of each message/send body with duplicate check on, and when it was accepted.
    pub app_message_dedupe: HashMap<String, i64>,
    /// Unix ms of each app message delivered to a member, kept for an hour (the per-member
    /// 30/min and 1000/h caps, api.md §2.2).
    pub app_message_deliveries: HashMap<String, VecDeque<i64>>,
    pub media: HashMap<String, Media>,
    pub mass: Vec<MassMessageView>,
    pub moments: Vec<MomentView>,
    /// Unix ms of each accepted add_moment_task (10 per minute per corp).
    pub moment_task_times: VecDeque<i64>,
    pub faults: Faults,
    pub calls: Vec<Call>,
}

pub const DEFAULT_WELCOME_CODE_TTL: Duration = Duration::from_secs(20);
pub const DEFAULT_TIMEOUT_HOLD: Duration = Duration::from_secs(30);
pub const TOKEN_TTL_SECS: i64 = 7200;
pub const MEDIA_TTL_MS: i64 = 3 * 86_400_000;
pub const MOMENT_JOB_TTL_MS: i64 = 86_400_000;

impl State {
    pub fn new(mass_cap: MassCap, callback_url: Option<String>) -> State {
        State {
            clock_offset_ms: 0,
            welcome_code_ttl: DEFAULT_WELCOME_CODE_TTL,
            dispatch_delay: Duration::ZERO,
            timeout_hold: DEFAULT_TIMEOUT_HOLD,
            mass_cap,
            callback_url,
            served_at: None,
            tokens: HashMap::new(),
            bad_secret_calls: VecDeque::new(),
            bad_secret_ban_threshold: 2000,
            banned_until_ms: 0,
            api_caps: ApiCaps::default(),
            api_calls: HashMap::new(),
            staff: BTreeMap::new(),
            customers: BTreeMap::new(),
            tag_groups: Vec::new(),
            contact_ways: BTreeMap::new(),
            join_ways: BTreeMap::new(),
            group_chats: BTreeMap::new(),
            dismissed_chats: BTreeSet::new(),
            welcome_codes: HashMap::new(),
            welcomes: Vec::new(),
            app_messages: Vec::new(),
            app_message_dedupe: HashMap::new(),
            app_message_deliveries: HashMap::new(),
            media: HashMap::new(),
            mass: Vec::new(),
            moments: Vec::new(),
            moment_task_times: VecDeque::new(),
            faults: Faults::default(),
            calls: Vec::new(),
        }
    }

    /// The fake's "now" in Unix ms: the system clock moved by [`super::FakeWecom::advance_clock`].
    pub fn now_ms(&self) -> i64 {
        crate::clock::system_now_ms() + self.clock_offset_ms
    }

    pub fn now_secs(&self) -> i64 {
        self.now_ms() / 1000
    }

    pub fn follow(&self, userid: &str, external_userid: &str) -> Option<&FollowView> {
        self.customers
            .get(external_userid)?
            .follow_user
            .iter()
            .find(|f| f.userid == userid)
    }

    pub fn follow_mut(&mut self, userid: &str, external_userid: &str) -> Option<&mut FollowView> {
        self.customers
            .get_mut(external_userid)?
            .follow_user
            .iter_mut()
            .find(|f| f.userid == userid)
    }

    /// A live tag (not deleted) and its group.
    pub fn find_tag(&self, tag_id: &str) -> Option<(&TagGroupView, &TagView)> {
        self.tag_groups.iter().filter(|g| !g.deleted).find_map(|g| {
            g.tag
                .iter()
                .find(|t| t.id == tag_id && !t.deleted)
                .map(|t| (g, t))
        })
    }

    pub fn live_tag_count(&self) -> usize {
        self.tag_groups
            .iter()
            .filter(|g| !g.deleted)
            .flat_map(|g| g.tag.iter())
            .filter(|t| !t.deleted)
            .count()
    }

    /// Takes deleted tags off every customer, as WeCom does when a tag leaves the library.
    pub fn strip_deleted_tags(&mut self) {
        let live: std::collections::HashSet<String> = self
            .tag_groups
            .iter()
            .filter(|g| !g.deleted)
            .flat_map(|g| g.tag.iter())
            .filter(|t| !t.deleted)
            .map(|t| t.id.clone())
            .collect();
        for customer in self.customers.values_mut() {
            for follow in &mut customer.follow_user {
                follow.tags.retain(|t| live.contains(t));
            }
        }
    }

    /// Creates or refreshes a follow relation (a new add resets a deleted or lost one).
    pub fn add_relation(
        &mut self,
        external_userid: &str,
        userid: &str,
        add_way: i64,
        state: Option<String>,
    ) {
        let now = self.now_secs();
        let Some(customer) = self.customers.get_mut(external_userid) else {
            return;
        };
        let fresh = FollowView {
            userid: userid.to_owned(),
            remark: String::new(),
            description: String::new(),
            remark_corp_name: String::new(),
            remark_mobiles: Vec::new(),
            remark_pic_mediaid: None,
            tags: Vec::new(),
            add_way,
            oper_userid: external_userid.to_owned(),
            state,
            createtime: now,
            lost: false,
            deleted: false,
        };
        match customer.follow_user.iter_mut().find(|f| f.userid == userid) {
            Some(existing) => *existing = fresh,
            None => customer.follow_user.push(fresh),
        }
    }

    pub fn issue_welcome_code(&mut self, external_userid: &str, userid: &str) -> String {
        let code = random_alnum(32);
        let issued_ms = self.now_ms();
        self.welcome_codes.insert(
            code.clone(),
            WelcomeCode {
                external_userid: external_userid.to_owned(),
                userid: userid.to_owned(),
                issued_ms,
                used: false,
            },
        );
        code
    }

    /// A media id usable in `namespace` as `media_type`; the errcode otherwise (40007).
    pub fn check_media(
        &self,
        media_id: &str,
        accept: impl Fn(MediaNamespace) -> bool,
        media_type: Option<&str>,
    ) -> bool {
        let now = self.now_ms();
        self.media.get(media_id).is_some_and(|m| {
            accept(m.namespace)
                && now - m.created_ms <= MEDIA_TTL_MS
                && media_type.is_none_or(|t| m.media_type == t)
        })
    }

    /// Mass messages the recipient (external_userid or chat_id) received in the current cap
    /// window.
    pub fn received_in_window(&self, recipient: &str, window_start_ms: i64) -> usize {
        self.mass
            .iter()
            .flat_map(|m| m.results.iter())
            .filter(|r| {
                r.status == 1
                    && r.send_time.is_some_and(|t| t * 1000 >= window_start_ms)
                    && (r.external_userid.as_deref() == Some(recipient)
                        || r.chat_id.as_deref() == Some(recipient))
            })
            .count()
    }
}

pub fn random_alnum(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn random_hex(len: usize) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(HEX[rng.gen_range(0..HEX.len())]))
        .collect()
}

/// Ids shaped like WeCom's: a two-letter kind prefix and random characters.
pub fn new_id(prefix: &str, len: usize) -> String {
    format!("{prefix}{}", random_alnum(len.saturating_sub(prefix.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_windows_follow_china_natural_periods() {
        // 2024-02-10 12:00 China time (a Saturday) = 04:00 UTC.
        let t = 1_707_537_600_000;
        let (cap, start) = MassCap::PerDay.window(t);
        assert_eq!(cap, 1);
        assert_eq!(start, 1_707_494_400_000); // 2024-02-10 00:00 +08:00
        let (cap, start) = MassCap::PerWeek.window(t);
        assert_eq!(cap, 7);
        assert_eq!(start, 1_707_062_400_000); // Monday 2024-02-05 00:00 +08:00
        let (cap, start) = MassCap::PerMonth.window(t);
        assert_eq!(cap, 29, "February 2024 has 29 days");
        assert_eq!(start, 1_706_716_800_000); // 2024-02-01 00:00 +08:00
    }
}
