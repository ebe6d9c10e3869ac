//! Settings: built-in defaults, then `config/siyu.toml` (or the file named by `--config`), then
//! `SIYU_SECTION__KEY` environment variables. Every key is documented in `config/siyu.toml`.
//!
//! Loading never panics: a bad or missing value becomes a [`ConfigError`] naming the key, which
//! the binary prints as one line before exiting.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The database backend, from the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl DbKind {
    pub fn from_url(url: &str) -> Result<DbKind, String> {
        if url.starts_with("sqlite:") {
            Ok(DbKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DbKind::Postgres)
        } else {
            Err("must start with sqlite: or postgres://".into())
        }
    }
}

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "config/siyu.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    FileMissing(PathBuf),
    #[error("config: {0}")]
    Parse(String),
    #[error("config: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// A value that must never reach a log line: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("[redacted]")
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub wecom: WecomSettings,
    pub api: ApiSettings,
    pub jobs: JobSettings,
    pub inbox: InboxSettings,
    pub tags: TagSettings,
    pub notes: NoteSettings,
    pub notify: NotifySettings,
    pub staff: StaffSettings,
    pub templates: TemplateSettings,
    pub groups: GroupSettings,
    pub media: MediaSettings,
    pub console: ConsoleSettings,
    pub retention: RetentionSettings,
    /// Tiers, lowest rank first; the first is the entry tier of every new customer.
    pub tiers: Vec<TierSettings>,
    /// Channels declared in the file (created or updated at start, like the API does).
    pub channels: Vec<ChannelSettings>,
    pub rfm: RfmSettings,
}

/// Value segments (RFM): recency, frequency and monetary value scored 1 to 5 and mapped to the
/// eight classic segments, kept as a third siyu tag group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RfmSettings {
    pub group_name: String,
    /// Orders within this window count for frequency and monetary value.
    pub window_days: u32,
    /// `quintiles` of the current population, or fixed `thresholds` below.
    pub mode: String,
    /// Days since the last order for scores 5, 4, 3, 2 (at most that many days); older is 1.
    pub recency_days: Vec<i64>,
    /// Orders for scores 2, 3, 4, 5 (at least that many).
    pub frequency: Vec<i64>,
    /// Spend in yuan for scores 2, 3, 4, 5 (at least that much).
    pub monetary: Vec<i64>,
}

impl Default for RfmSettings {
    fn default() -> Self {
        Self {
            group_name: "价值分层".into(),
            window_days: 365,
            mode: "quintiles".into(),
            recency_days: vec![7, 30, 90, 180],
            frequency: vec![2, 3, 5, 10],
            monetary: vec![500, 1000, 3000, 10_000],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    pub listen: String,
    /// Callback bodies above this size are answered 413 (WeCom's are a few KiB).
    pub body_limit_bytes: usize,
    /// How long shutdown waits for in-flight requests and jobs.
    pub shutdown_grace_secs: u64,
    /// The address operators reach siyu at (e.g. `https://siyu.example.com`), when it differs
    /// from `listen` (behind a proxy). The console's cookie is `Secure` when it is https.
    pub public_url: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 64 * 1024,
            shutdown_grace_secs: 10,
            public_url: String::new(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub max_connections: u32,
    /// SQLite only, for the commits that acknowledge WeCom's callbacks: `full` survives power
    /// loss, `normal` survives a process crash. Other commits always use `normal`.
    pub sqlite_synchronous: String,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://siyu.db"),
            max_connections: 8,
            sqlite_synchronous: "full".into(),
        }
    }
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(self.url.expose()))
            .field("max_connections", &self.max_connections)
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .finish()
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:***@host/db`, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WecomSettings {
    pub corp_id: String,
    pub agent_id: i64,
    pub secret: Secret,
    pub contact_secret: Secret,
    pub callback_token: Secret,
    pub encoding_aes_key: Secret,
    pub api_base: String,
    /// Connecting to WeCom gives up after this long.
    pub connect_timeout_ms: u64,
    /// A whole API call gives up after this long.
    pub request_timeout_ms: u64,
    /// Retries of a read or an idempotent write after -1, HTTP 5xx or a transport error.
    pub max_retries: u32,
    pub retry_base_ms: u64,
    /// Calls per API path per minute, for the corp: paced in the process, and on PostgreSQL
    /// across every replica through the database. WeCom allows 10,000 a minute per API and corp
    /// (api.md §2.2); the default 9000 keeps a 10% margin below that cap.
    pub calls_per_minute: u32,
    /// Calls per API path per hour, for the corp (shared like `calls_per_minute`). WeCom allows
    /// 150,000 an hour per API and corp, which a sustained 9000 a minute would pass in 17 minutes
    /// and then be blocked for the hour; the budget (a bucket of a tenth of it, refilling over the
    /// hour) keeps any hour below 1.1 × this, and the last tenth of the bucket for urgent calls
    /// (welcomes).
    pub calls_per_hour: u32,
    /// Calls of one API path in flight at once (lowered on 45033).
    pub concurrency: usize,
    /// A call waits at most this long for its turn before it is refused as throttled.
    pub max_limiter_wait_ms: u64,
    /// After errcode 45009 an API pauses this long (WeCom blocks for the window it counts in), in
    /// every replica on PostgreSQL.
    pub frequency_window_secs: u64,
}

impl Default for WecomSettings {
    fn default() -> Self {
        Self {
            corp_id: String::new(),
            agent_id: 0,
            secret: Secret::default(),
            contact_secret: Secret::default(),
            callback_token: Secret::default(),
            encoding_aes_key: Secret::default(),
            api_base: "https://qyapi.weixin.qq.com".into(),
            connect_timeout_ms: 3000,
            request_timeout_ms: 10_000,
            max_retries: 3,
            retry_base_ms: 200,
            calls_per_minute: 9000,
            calls_per_hour: 135_000,
            concurrency: 8,
            max_limiter_wait_ms: 2000,
            frequency_window_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    /// Bearer token for `/api/v1`. Empty disables the API (every call answers 401).
    pub token: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSettings {
    /// Jobs run at once by this process.
    pub workers: usize,
    /// Further workers that take only urgent jobs (welcome messages, whose code lives 20 s), so
    /// an urgent job never waits for a worker busy with a slow ordinary one.
    pub urgent_workers: usize,
    /// A claimed job's lease; a job whose lease ran out (dead worker) is taken again.
    pub lease_secs: u64,
    pub max_attempts: i64,
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    /// Fallback poll when no wake-up arrives (other processes on SQLite, missed notifications).
    pub poll_interval_ms: u64,
    /// Time zone of cron schedules.
    pub timezone: String,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            workers: 8,
            urgent_workers: 2,
            lease_secs: 60,
            max_attempts: 8,
            backoff_base_ms: 1000,
            backoff_max_secs: 3600,
            poll_interval_ms: 1000,
            timezone: "Asia/Shanghai".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InboxSettings {
    /// Most callbacks committed in one transaction (group commit).
    pub batch_max: usize,
    /// Lease on an event being handled; an expired lease makes it available again.
    pub lease_secs: u64,
}

impl Default for InboxSettings {
    fn default() -> Self {
        Self {
            batch_max: 512,
            lease_secs: 60,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::default(),
            database: DatabaseSettings::default(),
            wecom: WecomSettings::default(),
            api: ApiSettings::default(),
            jobs: JobSettings::default(),
            inbox: InboxSettings::default(),
            tags: TagSettings::default(),
            notes: NoteSettings::default(),
            notify: NotifySettings::default(),
            staff: StaffSettings::default(),
            templates: TemplateSettings::default(),
            groups: GroupSettings::default(),
            media: MediaSettings::default(),
            console: ConsoleSettings::default(),
            retention: RetentionSettings::default(),
            // Partner: 90-day spend ≥ 2,000 or referrals ≥ 3; senior partner: spend ≥ 10,000
            // and referrals ≥ 10; keeping a tier takes half.
            tiers: vec![
                TierSettings::new("member", "普通会员"),
                TierSettings::new("partner", "合作伙伴").with_rules(
                    RuleSet {
                        all: vec![],
                        any: vec![cond("spend", 2000), cond("referral", 3)],
                    },
                    RuleSet {
                        all: vec![],
                        any: vec![cond("spend", 1000), cond("referral", 2)],
                    },
                ),
                TierSettings::new("senior_partner", "高级合作伙伴").with_rules(
                    RuleSet {
                        all: vec![cond("spend", 10_000), cond("referral", 10)],
                        any: vec![],
                    },
                    RuleSet {
                        all: vec![cond("spend", 5000), cond("referral", 5)],
                        any: vec![],
                    },
                ),
            ],
            channels: Vec::new(),
            rfm: RfmSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TagSettings {
    /// The corp tag group holding one tag per channel.
    pub channel_group: String,
    /// The corp tag group holding one tag per tier.
    pub tier_group: String,
    /// When a member takes one of siyu's tags off a customer, put it back.
    pub reapply_removed: bool,
}

impl Default for TagSettings {
    fn default() -> Self {
        Self {
            channel_group: "渠道".into(),
            tier_group: "等级".into(),
            reapply_removed: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NoteSettings {
    /// Replace a remark the member typed by hand (siyu never does by default).
    pub overwrite_manual_remark: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifySettings {
    /// Members told (by app message) when a customer is lost, besides the member who lost them.
    pub operators: Vec<String>,
    /// Churn notices to a member are gathered this long and sent as one message.
    pub batch_secs: u64,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            operators: Vec::new(),
            batch_secs: 60,
        }
    }
}

/// Tier groups: the customer groups of each tier, and how siyu invites customers into them and
/// asks owners to remove those who no longer belong.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupSettings {
    /// Invitations to one member's customers are gathered this long and sent as one mass-message
    /// task per tier (the member confirms each task in their client).
    pub invite_batch_secs: u64,
    /// Removal requests to one group owner are gathered this long and sent as one app message.
    pub removal_batch_secs: u64,
    /// Unanswered removal requests are asked again once a day this many times, then overdue.
    pub removal_repeats: u32,
    /// Members a group holds before siyu counts it full (WeCom's customer groups hold 500; the
    /// join way keeps the newest 5 groups that are not full).
    pub room_capacity: usize,
    /// How often an invitation task's outcome is checked at WeCom.
    pub follow_every_secs: u64,
    /// A task still unsent after this long gets one reminder (`remind_groupmsg_send`).
    pub remind_after_hours: u64,
    /// A task still unsent after this many days is given up: its invitations are `unsent`.
    pub follow_for_days: u64,
    /// WeCom's cap on mass messages one customer receives: `month`, `week` or `day` (the corp
    /// admin's setting in 群发助手 → 设置群发规则; api.md §11).
    pub mass_cap_period: String,
    /// Messages per period; 0 means the number of days in the month (WeCom's default).
    pub mass_cap_count: u32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            invite_batch_secs: 60,
            removal_batch_secs: 300,
            removal_repeats: 3,
            room_capacity: 500,
            follow_every_secs: 1800,
            remind_after_hours: 24,
            follow_for_days: 7,
            mass_cap_period: "month".into(),
            mass_cap_count: 0,
        }
    }
}

/// The media library and the WeCom media_ids made from it (and from the join QR codes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MediaSettings {
    /// A WeCom media_id (valid 3 days) is uploaded again once less than this is left.
    pub margin_hours: u64,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self { margin_hours: 12 }
    }
}

/// How long what siyu has finished with is kept (activity, tier and segment history, the audit
/// log and every campaign's results are kept for good).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionSettings {
    /// Inbox events handled (`done`) are deleted this many days after they were handled. WeCom
    /// redelivers within seconds, so a redelivery always finds its event.
    pub inbox_days: u64,
    /// Jobs done are deleted this many days after they finished (failed ones are kept for a
    /// retry).
    pub jobs_days: u64,
    /// Console sessions are deleted this many days after they ended or went idle.
    pub sessions_days: u64,
    /// Rows deleted per statement: short writes that let the callback's commits through.
    pub batch: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            inbox_days: 30,
            jobs_days: 30,
            sessions_days: 30,
            batch: 1000,
        }
    }
}

/// The console's sign-ins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsoleSettings {
    /// A session unused this long is over (the next page asks to sign in again).
    pub session_idle_minutes: u64,
    /// A session is over this long after its sign-in, however busy.
    pub session_max_hours: u64,
    /// Failed sign-ins in a row for one name before the next must wait (1 s, doubling with each
    /// further failure, at most 15 minutes).
    pub free_sign_in_failures: u32,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            session_idle_minutes: 30,
            session_max_hours: 12,
            free_sign_in_failures: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StaffSettings {
    /// Which customers a member may ask the siyu app about: `own` (those they follow) or `all`.
    pub visibility: String,
}

impl Default for StaffSettings {
    fn default() -> Self {
        Self {
            visibility: "own".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplateSettings {
    /// A directory whose `*.j2` files replace the built-in templates of the same name.
    pub dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TierSettings {
    pub code: String,
    pub name: String,
    /// What it takes to enter this tier from below (none for the entry tier).
    #[serde(default, skip_serializing_if = "RuleSet::is_empty")]
    pub promote: RuleSet,
    /// What it takes to stay; failing it for `demote_after_days` moves the customer one tier down.
    #[serde(default, skip_serializing_if = "RuleSet::is_empty")]
    pub keep: RuleSet,
    #[serde(default = "default_demote_after_days")]
    pub demote_after_days: u32,
}

fn default_demote_after_days() -> u32 {
    30
}

/// Conditions over windowed metrics: every one in `all` must hold, and (when `any` is not
/// empty) at least one in `any`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RuleSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<Condition>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<Condition>,
}

impl RuleSet {
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.any.is_empty()
    }
}

/// `metric` over the last `window_days` is at least `min`. Metrics: `spend` (yuan: orders minus
/// refunds), `orders` (count of orders), or any activity kind (its count, e.g. `referral`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Condition {
    pub metric: String,
    pub window_days: u32,
    /// Yuan for `spend` (exact, as a string or number with at most two decimals); a count otherwise.
    pub min: serde_json::Value,
}

impl TierSettings {
    pub fn new(code: &str, name: &str) -> Self {
        Self {
            code: code.into(),
            name: name.into(),
            promote: RuleSet::default(),
            keep: RuleSet::default(),
            demote_after_days: default_demote_after_days(),
        }
    }

    fn with_rules(mut self, promote: RuleSet, keep: RuleSet) -> Self {
        self.promote = promote;
        self.keep = keep;
        self
    }
}

fn cond(metric: &str, min: i64) -> Condition {
    Condition {
        metric: metric.into(),
        window_days: 90,
        min: serde_json::Value::from(min),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelSettings {
    pub code: String,
    pub name: String,
    pub staff: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub welcome: Option<serde_json::Value>,
}

impl Settings {
    /// Defaults, then the file (the given one must exist; the default one may be absent), then
    /// `SIYU_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::FileMissing(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        figment = figment.merge(Env::prefixed("SIYU_").split("__"));
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        settings.validate_common()?;
        Ok(settings)
    }

    /// Checks every command needs: the database and the job settings.
    pub fn validate_common(&self) -> Result<(), ConfigError> {
        DbKind::from_url(self.database.url.expose())
            .map_err(|reason| invalid("database.url", reason))?;
        if !matches!(self.database.sqlite_synchronous.as_str(), "full" | "normal") {
            return Err(invalid(
                "database.sqlite_synchronous",
                "must be \"full\" or \"normal\"",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.jobs.workers == 0 {
            return Err(invalid("jobs.workers", "must be at least 1"));
        }
        if self.jobs.max_attempts < 1 {
            return Err(invalid("jobs.max_attempts", "must be at least 1"));
        }
        if self.jobs.lease_secs == 0 || self.inbox.lease_secs == 0 {
            return Err(invalid(
                "jobs.lease_secs",
                "leases must be at least 1 second",
            ));
        }
        if self.inbox.batch_max == 0 {
            return Err(invalid("inbox.batch_max", "must be at least 1"));
        }
        self.timezone()?;
        if self.media.margin_hours >= 72 {
            return Err(invalid(
                "media.margin_hours",
                "must be less than 72 (a WeCom media_id lives 3 days)",
            ));
        }
        if !matches!(self.staff.visibility.as_str(), "own" | "all") {
            return Err(invalid("staff.visibility", "must be \"own\" or \"all\""));
        }
        if self.tiers.is_empty() {
            return Err(invalid(
                "tiers",
                "at least one tier is needed (the entry tier)",
            ));
        }
        for (i, t) in self.tiers.iter().enumerate() {
            if t.code.trim().is_empty() || t.name.trim().is_empty() {
                return Err(invalid(
                    "tiers",
                    format!("tier {} needs a code and a name", i + 1),
                ));
            }
            if self.tiers[..i].iter().any(|o| o.code == t.code) {
                return Err(invalid(
                    "tiers",
                    format!("tier code {:?} appears twice", t.code),
                ));
            }
        }
        if !matches!(self.rfm.mode.as_str(), "quintiles" | "thresholds") {
            return Err(invalid(
                "rfm.mode",
                "must be \"quintiles\" or \"thresholds\"",
            ));
        }
        for (key, cuts) in [
            ("rfm.recency_days", &self.rfm.recency_days),
            ("rfm.frequency", &self.rfm.frequency),
            ("rfm.monetary", &self.rfm.monetary),
        ] {
            if cuts.len() != 4 || cuts.windows(2).any(|w| w[0] > w[1]) {
                return Err(invalid(key, "needs 4 cut points in increasing order"));
            }
        }
        if self.rfm.window_days == 0 {
            return Err(invalid("rfm.window_days", "must be at least 1"));
        }
        if self.tags.channel_group.trim().is_empty() || self.tags.tier_group.trim().is_empty() {
            return Err(invalid(
                "tags.channel_group",
                "tag group names cannot be empty",
            ));
        }
        Ok(())
    }

    /// Checks `serve` needs on top: where to listen and how to read WeCom's callbacks.
    pub fn validate_serve(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.wecom.corp_id.trim().is_empty() {
            return Err(invalid(
                "wecom.corp_id",
                "is missing (the corp id, ww..., from the WeCom admin console)",
            ));
        }
        if self.wecom.callback_token.is_empty() {
            return Err(invalid(
                "wecom.callback_token",
                "is missing (the Token of the app's callback settings)",
            ));
        }
        let token = self.wecom.callback_token.expose();
        if token.len() > 32 || !token.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid(
                "wecom.callback_token",
                "must be at most 32 letters or digits",
            ));
        }
        let key = self.wecom.encoding_aes_key.expose();
        if key.is_empty() {
            return Err(invalid(
                "wecom.encoding_aes_key",
                "is missing (the EncodingAESKey of the app's callback settings)",
            ));
        }
        if key.len() != 43 || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid(
                "wecom.encoding_aes_key",
                format!(
                    "must be exactly 43 letters or digits (got {} characters)",
                    key.chars().count()
                ),
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    self.server.listen
                ),
            )
        })
    }

    pub fn timezone(&self) -> Result<chrono_tz::Tz, ConfigError> {
        self.jobs.timezone.parse().map_err(|_| {
            invalid(
                "jobs.timezone",
                format!("{:?} is not an IANA time zone", self.jobs.timezone),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_settings() -> Settings {
        let mut s = Settings::default();
        s.wecom.corp_id = "ww1436e0e65a779aee".into();
        s.wecom.callback_token = Secret::new("hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo");
        s.wecom.encoding_aes_key = Secret::new("6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt");
        s
    }

    #[test]
    fn defaults_validate_for_common_commands() {
        Settings::default().validate_common().unwrap();
    }

    #[test]
    fn serve_names_the_missing_key() {
        let err = Settings::default().validate_serve().unwrap_err();
        assert!(err.to_string().contains("wecom.corp_id"), "{err}");
        let mut s = serve_settings();
        s.wecom.encoding_aes_key = Secret::new("tooshort");
        let err = s.validate_serve().unwrap_err().to_string();
        assert!(
            err.contains("wecom.encoding_aes_key") && err.contains("43"),
            "{err}"
        );
        assert!(
            !err.contains("tooshort"),
            "the key itself must not be printed"
        );
        serve_settings().validate_serve().unwrap();
    }

    #[test]
    fn bad_database_url_is_named() {
        let mut s = Settings::default();
        s.database.url = Secret::new("mysql://x");
        let err = s.validate_common().unwrap_err().to_string();
        assert!(err.contains("database.url"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut s = serve_settings();
        s.database.url = Secret::new("postgres://siyu:hunter2@db/siyu");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            !shown.contains("hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"),
            "{shown}"
        );
        assert!(!shown.contains("6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"));
        assert!(shown.contains("postgres://siyu:***@db/siyu"), "{shown}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail returns figment's large error type
    fn file_then_environment_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("siyu.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"127.0.0.1:9999\"\n[jobs]\nworkers = 2\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("SIYU_JOBS__WORKERS", "7");
            let s = Settings::load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(s.server.listen, "127.0.0.1:9999");
            assert_eq!(s.jobs.workers, 7);
            Ok(())
        });
    }

    #[test]
    fn the_shipped_config_file_documents_exactly_the_defaults() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/siyu.toml"));
        let text = std::fs::read_to_string(path).unwrap();
        let from_file: toml::Value = toml::from_str(&text).unwrap();
        let defaults = toml::Value::try_from(Settings::default()).unwrap();
        assert_eq!(
            from_file, defaults,
            "config/siyu.toml and Settings::default() disagree"
        );
    }

    #[test]
    fn a_named_file_must_exist_and_parse() {
        let err = Settings::load(Some(Path::new("/nonexistent/siyu.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::FileMissing(_)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[jobs]\nworkers = \"many\"\n").unwrap();
        let err = Settings::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("workers"), "{err}");
    }
}
