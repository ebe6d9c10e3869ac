//! A faithful in-process WeCom (企业微信) for siyu's client and integration tests and the demo:
//! the HTTP API under `/cgi-bin/` (paths, JSON fields, limits and errcodes of
//! `shared/wecom/api.md`), fault injection and a call log, an admin API under `/fake/`, and a
//! [`Driver`] that plays WeCom's side of the story (customers adding staff, joining groups, admins
//! editing tags, staff confirming mass messages) and delivers the encrypted callbacks exactly as
//! WeCom does.
//!
//! One corp, all state in memory behind one `std::sync::Mutex` that is never held across an
//! `.await`. As in WeCom, API writes never trigger callbacks (api.md §1): only the driver does.

mod admin;
mod api;
mod campaigns;
mod contacts;
mod driver;
mod faults;
mod groups;
mod rules;
pub mod sender;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::any;
use tokio::task::JoinHandle;

use crate::wecom::crypto::Crypto;

pub use driver::{AddedCustomer, Driver, DriverError, NewCustomer, TagEdit};
pub use faults::{Call, Failure, FaultMix, MixedFault};
pub use state::{
    ApiCaps, ContactWay, CustomerView, FollowView, GroupChatView, GroupMemberView, JoinWay,
    MassCap, MassMessageView, Media, MediaNamespace, MomentSenderView, MomentView, SendResultView,
    SenderTaskView, SentWelcome, Staff, TagGroupView, TagView,
};

use faults::normalize_path;
use state::{GroupMemberView as Member, State, random_hex};

/// The corp id of the official vector V1 and of every sample in callback.md §3.
pub const DEFAULT_CORP_ID: &str = "ww1436e0e65a779aee";
/// The callback token of the official vector V1.
pub const DEFAULT_CALLBACK_TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
/// The EncodingAESKey of the official vector V1.
pub const DEFAULT_ENCODING_AES_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
pub const DEFAULT_AGENT_ID: i64 = 1_000_002;

#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub corp_id: String,
    pub agent_id: i64,
    /// The self-built app's secret (tokens for every API, message/send included).
    pub app_secret: String,
    /// The customer-contact secret (its tokens serve the externalcontact APIs only).
    pub contact_secret: String,
    /// Where the driver posts callbacks: siyu's `/wecom/callback`.
    pub callback_url: Option<String>,
    pub callback_token: String,
    pub encoding_aes_key: String,
    pub mass_cap: MassCap,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            corp_id: DEFAULT_CORP_ID.to_owned(),
            agent_id: DEFAULT_AGENT_ID,
            app_secret: "app-secret".to_owned(),
            contact_secret: "contact-secret".to_owned(),
            callback_url: None,
            callback_token: DEFAULT_CALLBACK_TOKEN.to_owned(),
            encoding_aes_key: DEFAULT_ENCODING_AES_KEY.to_owned(),
            mass_cap: MassCap::default(),
        }
    }
}

/// A handle on the fake; clones share one corp.
#[derive(Clone)]
pub struct FakeWecom {
    inner: Arc<Inner>,
}

struct Inner {
    config: FakeConfig,
    /// Invalid callback settings are reported by the driver when it tries to seal a callback,
    /// so the API side still works for tests that never use callbacks.
    crypto: Result<Arc<Crypto>, String>,
    state: Mutex<State>,
    /// WeCom gives each callback try 5 s (callback.md §4).
    http: reqwest::Client,
}

impl FakeWecom {
    pub fn new(config: FakeConfig) -> FakeWecom {
        let crypto = Crypto::new(
            &config.callback_token,
            &config.encoding_aes_key,
            &config.corp_id,
        )
        .map(Arc::new)
        .map_err(|e| e.to_string());
        let http = reqwest::Client::builder()
            .timeout(sender::ANSWER_TIMEOUT)
            .build()
            .unwrap_or_default();
        let state = State::new(config.mass_cap, config.callback_url.clone());
        FakeWecom {
            inner: Arc::new(Inner {
                config,
                crypto,
                state: Mutex::new(state),
                http,
            }),
        }
    }

    pub fn config(&self) -> &FakeConfig {
        &self.inner.config
    }

    /// A poisoned lock still holds consistent data (no handler panics mid-update by design),
    /// so recover it rather than take the whole fake down.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// WeCom's paths under `/cgi-bin/` plus the admin endpoints under `/fake/`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/cgi-bin/{*api}", any(api::entry))
            .merge(admin::router())
            .layer(DefaultBodyLimit::max(api::BODY_LIMIT))
            .with_state(self.clone())
    }

    /// Serves [`Self::router`] on `addr` (port 0 picks a free port); returns the bound address.
    /// Join ways created from then on get a `qr_code` on this address (`/fake/qr/..`).
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        self.lock().served_at = Some(bound);
        let router = self.router();
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "fake WeCom server stopped");
            }
        });
        Ok((bound, handle))
    }

    pub fn set_callback_url(&self, url: &str) {
        self.lock().callback_url = Some(url.to_owned());
    }

    pub fn callback_url(&self) -> Option<String> {
        self.lock().callback_url.clone()
    }

    // ---- seed data ----------------------------------------------------------------------

    pub fn add_staff(&self, userid: &str, name: &str) {
        self.lock().staff.insert(
            userid.to_owned(),
            Staff {
                userid: userid.to_owned(),
                name: name.to_owned(),
            },
        );
    }

    /// An existing customer group owned by `owner` (who is its first member). `capacity` counts
    /// every member, owner included; a join way overflows once it is reached.
    pub fn add_group_chat(&self, chat_id: &str, owner: &str, name: &str, capacity: usize) {
        let mut st = self.lock();
        st.dismissed_chats.remove(chat_id);
        let now = st.now_secs();
        let owner_name = st
            .staff
            .get(owner)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        st.group_chats.insert(
            chat_id.to_owned(),
            GroupChatView {
                chat_id: chat_id.to_owned(),
                name: name.to_owned(),
                owner: owner.to_owned(),
                create_time: now,
                notice: String::new(),
                member_list: vec![Member::staff(owner, owner_name, None, now)],
                admin_list: Vec::new(),
                member_version: random_hex(32),
                capacity: capacity.max(1),
            },
        );
    }

    /// The group's admins (staff userids, the owner left out), as `groupchat/get` lists them in
    /// `admin_list`. Admins are members: one who is not yet joins (seed data, no callback, so
    /// member_version changes). Does nothing for an unknown group.
    pub fn set_group_admins(&self, chat_id: &str, admins: &[&str]) {
        let mut st = self.lock();
        let now = st.now_secs();
        let names: Vec<String> = admins
            .iter()
            .map(|a| st.staff.get(*a).map(|s| s.name.clone()).unwrap_or_default())
            .collect();
        let Some(chat) = st.group_chats.get_mut(chat_id) else {
            return;
        };
        chat.admin_list.clear();
        for (admin, name) in admins.iter().zip(names) {
            if *admin == chat.owner || chat.admin_list.iter().any(|a| a == admin) {
                continue;
            }
            if !chat.member_list.iter().any(|m| m.userid == *admin) {
                let invitor = Some(chat.owner.clone());
                chat.member_list
                    .push(Member::staff(admin, name, invitor, now));
                chat.member_version = random_hex(32);
            }
            chat.admin_list.push((*admin).to_owned());
        }
    }

    /// A customer who already follows `userid` (seeded, no callback): for tests that need a
    /// relation without playing the add. Returns the external_userid.
    pub fn seed_customer(&self, userid: &str, customer: NewCustomer) -> String {
        let mut st = self.lock();
        let id = driver::upsert_customer(&mut st, customer);
        st.add_relation(&id, userid, 0, None);
        id
    }

    // ---- knobs --------------------------------------------------------------------------

    /// How long a welcome code stays usable (20 s in WeCom).
    pub fn set_welcome_code_ttl(&self, ttl: Duration) {
        self.lock().welcome_code_ttl = ttl;
    }

    /// How long a new mass message answers reads with 41063 (0 by default).
    pub fn set_dispatch_delay(&self, delay: Duration) {
        self.lock().dispatch_delay = delay;
    }

    /// How long `Failure::Timeout` holds the answer (30 s by default).
    pub fn set_timeout_hold(&self, hold: Duration) {
        self.lock().timeout_hold = hold;
    }

    pub fn set_mass_cap(&self, cap: MassCap) {
        self.lock().mass_cap = cap;
    }

    /// The corp's calls per API allowed in a minute and an hour (10,000 and 150,000 by default,
    /// as WeCom); over either, 45009 and the API is blocked for the window.
    pub fn set_api_caps(&self, caps: ApiCaps) {
        self.lock().api_caps = caps;
    }

    /// Wrong-secret gettoken calls within an hour that ban the caller for an hour (2000).
    pub fn set_bad_secret_ban_threshold(&self, calls: usize) {
        self.lock().bad_secret_ban_threshold = calls.max(1);
    }

    /// Moves the fake's clock forward: token, welcome-code, media and job lifetimes, rate
    /// windows and the mass-message cap windows all read it.
    pub fn advance_clock(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let mut st = self.lock();
        st.clock_offset_ms = st.clock_offset_ms.saturating_add(ms);
    }

    // ---- fault injection ----------------------------------------------------------------

    /// The next `times` calls to `path` (e.g. `/cgi-bin/externalcontact/mark_tag`, or `*` for
    /// every API) fail with `failure`.
    pub fn fail_next(&self, path: &str, times: u32, failure: Failure) {
        self.lock().faults.fail_next(path, times, failure);
    }

    pub fn set_error_rate(&self, path: &str, rate: f64, failure: Failure) {
        self.lock().faults.set_error_rate(path, rate, failure);
    }

    pub fn set_latency(&self, path: &str, latency: Duration) {
        self.lock().faults.set_latency(path, latency);
    }

    /// A random share of the calls to `path` (`*`: every API) each get one fault of `mix`.
    pub fn set_fault_mix(&self, path: &str, mix: FaultMix) {
        self.lock().faults.set_mix(path, mix);
    }

    /// Every fault injected so far (by any rule), by kind (see [`MixedFault::label`]).
    pub fn faults_injected(&self) -> std::collections::BTreeMap<String, u64> {
        self.lock().faults.injected()
    }

    /// Every token issued so far now answers 42001.
    pub fn expire_tokens(&self) {
        for token in self.lock().tokens.values_mut() {
            token.revoked = true;
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    // ---- call log -----------------------------------------------------------------------

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        let path = normalize_path(path);
        self.lock()
            .calls
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    fn log_call(&self, call: Call) -> usize {
        let mut st = self.lock();
        st.calls.push(call);
        st.calls.len() - 1
    }

    fn finish_call(
        &self,
        index: usize,
        errcode: Option<i64>,
        http_status: u16,
        fault: Option<Failure>,
    ) {
        if let Some(call) = self.lock().calls.get_mut(index) {
            call.errcode = errcode;
            call.http_status = http_status;
            call.fault = fault;
        }
    }

    // ---- inspection ---------------------------------------------------------------------

    pub fn customer(&self, external_userid: &str) -> Option<CustomerView> {
        self.lock().customers.get(external_userid).cloned()
    }

    pub fn customers(&self) -> Vec<CustomerView> {
        self.lock().customers.values().cloned().collect()
    }

    pub fn welcome_messages(&self) -> Vec<SentWelcome> {
        self.lock().welcomes.clone()
    }

    /// message/send bodies accepted and delivered to at least one member (duplicates inside
    /// the duplicate-check window and messages over the per-member caps are dropped silently,
    /// as WeCom drops them).
    pub fn app_messages(&self) -> Vec<serde_json::Value> {
        self.lock().app_messages.clone()
    }

    /// Every tag group, deleted ones included (with their `deleted` flag).
    pub fn tag_library(&self) -> Vec<TagGroupView> {
        self.lock().tag_groups.clone()
    }

    pub fn mass_messages(&self) -> Vec<MassMessageView> {
        self.lock().mass.clone()
    }

    pub fn moment_tasks(&self) -> Vec<MomentView> {
        self.lock().moments.clone()
    }

    /// The group as WeCom holds it now; None once dismissed.
    pub fn group_chat(&self, chat_id: &str) -> Option<GroupChatView> {
        self.lock().group_chats.get(chat_id).cloned()
    }

    /// Every live group (dismissed ones are gone), by chat_id.
    pub fn group_chats(&self) -> Vec<GroupChatView> {
        self.lock().group_chats.values().cloned().collect()
    }

    pub fn contact_way(&self, config_id: &str) -> Option<ContactWay> {
        self.lock().contact_ways.get(config_id).cloned()
    }

    pub fn join_way(&self, config_id: &str) -> Option<JoinWay> {
        self.lock().join_ways.get(config_id).cloned()
    }

    /// The whole corp as JSON (`GET /fake/state`).
    pub fn dump(&self) -> serde_json::Value {
        let st = self.lock();
        serde_json::json!({
            "now_ms": st.now_ms(),
            "callback_url": st.callback_url,
            "mass_cap": st.mass_cap,
            "staff": st.staff.values().collect::<Vec<_>>(),
            "customers": st.customers.values().collect::<Vec<_>>(),
            "tag_groups": st.tag_groups,
            "contact_ways": st.contact_ways.values().collect::<Vec<_>>(),
            "join_ways": st.join_ways.values().collect::<Vec<_>>(),
            "group_chats": st.group_chats.values().collect::<Vec<_>>(),
            "dismissed_chats": st.dismissed_chats,
            "welcome_messages": st.welcomes,
            "app_messages": st.app_messages,
            "media": st.media.values().collect::<Vec<_>>(),
            "mass_messages": st.mass,
            "moments": st.moments,
            "tokens_issued": st.tokens.len(),
            "calls": st.calls.len(),
        })
    }

    pub fn driver(&self) -> Driver {
        Driver::new(self.clone())
    }
}
