//! The WeCom server API client production uses (api.md).
//!
//! It owns what WeCom imposes on callers: access tokens per secret (cached, single flight,
//! shared across PostgreSQL replicas, refreshed once on 40001/40014/42001); retries with backoff
//! and jitter on -1, HTTP 5xx and transport errors, for reads and idempotent writes only; a pause
//! after 45009 and fewer concurrent calls after 45033; a pace per path below WeCom's caps (the
//! pace, the hourly budget, the 45009 pause and the per-member app-message caps counted corp-wide
//! across PostgreSQL replicas, as WeCom counts them: see [`limit`]). Every
//! answer is judged by `errcode`, never by `errmsg`. A call that creates a send is never retried
//! after its request may have left: its outcome is reported unknown, for the caller to reconcile.
//! Only a request that provably never left (the connection was refused) is sent again; a 200
//! whose body broke off, a 5xx, a timeout or a dropped connection all mean it may have arrived.
//! Tokens, secrets and phone numbers never reach a log line (paths are logged, never URLs).
//!
//! A caller whose calls cannot wait behind a backlog (a welcome message has 20 s) runs them
//! inside [`urgent`]: a task-local mark, so no endpoint signature carries it, that the limiter
//! reads to serve those calls first on their path.

pub mod api;
pub mod error;
pub mod limit;
mod token;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::{WecomError, code};
use limit::{Limiter, MemberQuota};
use token::TokenSlot;

use crate::clock::Clock;
use crate::config::WecomSettings;
use crate::metrics::{Metrics, WecomAnswer};
use crate::store::Store;

tokio::task_local! {
    static URGENT: bool;
}

/// Runs `f` with its WeCom calls marked urgent: on each path they are served before ordinary
/// callers that are waiting for their turn (they still keep the pace and WeCom's limits). The
/// mark belongs to the task running `f`; tasks that `f` spawns are not urgent unless they are
/// wrapped too.
pub async fn urgent<F: Future>(f: F) -> F::Output {
    URGENT.scope(true, f).await
}

/// Whether the current task is running inside [`urgent`].
pub fn is_urgent() -> bool {
    URGENT.try_with(|urgent| *urgent).unwrap_or(false)
}

/// How a call may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Changes nothing: repeat freely.
    Read,
    /// Changes state, but doing it twice ends the same (mark_tag, remark, edit, delete).
    Idempotent,
    /// Creates a send (a message, a post, a welcome): doing it twice sends twice.
    Send,
}

/// Which secret's token a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    App,
    /// The customer-contact secret when `wecom.contact_secret` is set, else the app's.
    Contact,
}

#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub path: &'static str,
    pub post: bool,
    pub effect: Effect,
    pub credential: Credential,
}

pub type Result<T, E = WecomError> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct WecomClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    corp_id: String,
    agent_id: i64,
    app_secret: String,
    contact_secret: Option<String>,
    app_token: TokenSlot,
    contact_token: Option<TokenSlot>,
    limiter: Limiter,
    members: MemberQuota,
    max_retries: u32,
    retry_base: Duration,
    frequency_window: Duration,
    store: Option<Store>,
    clock: Clock,
    /// Where each request's latency goes (a server's `/metrics`); none for a client of the
    /// command line.
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for WecomClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WecomClient({}, corp {})",
            self.inner.base, self.inner.corp_id
        )
    }
}

enum Body {
    Json(serde_json::Value),
    /// Rebuilt for each attempt: a multipart form is consumed by sending it.
    Multipart {
        filename: String,
        bytes: Vec<u8>,
    },
}

/// The `errcode`/`errmsg` every answer carries.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

impl WecomClient {
    /// `store` shares tokens and WeCom's per-corp limits between PostgreSQL replicas (ignored
    /// on SQLite).
    pub fn new(
        settings: &WecomSettings,
        store: Option<Store>,
        clock: Clock,
    ) -> Result<WecomClient> {
        Self::observed(settings, store, clock, None)
    }

    /// [`WecomClient::new`], timing every request into `metrics`.
    pub fn observed(
        settings: &WecomSettings,
        store: Option<Store>,
        clock: Clock,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<WecomClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| WecomError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        let contact_secret =
            Some(settings.contact_secret.expose().to_string()).filter(|s| !s.is_empty());
        let corp_limits = store.as_ref().and_then(Store::corp_limits);
        Ok(WecomClient {
            inner: Arc::new(Inner {
                http,
                base: settings.api_base.trim_end_matches('/').to_string(),
                corp_id: settings.corp_id.clone(),
                agent_id: settings.agent_id,
                app_secret: settings.secret.expose().to_string(),
                app_token: TokenSlot::new(&settings.corp_id, settings.secret.expose()),
                contact_token: contact_secret
                    .as_deref()
                    .map(|s| TokenSlot::new(&settings.corp_id, s)),
                contact_secret,
                limiter: Limiter::new(
                    settings.calls_per_minute,
                    settings.concurrency,
                    Duration::from_millis(settings.max_limiter_wait_ms),
                )
                .with_hourly_budget(settings.calls_per_hour)
                .shared_with(corp_limits.clone()),
                members: MemberQuota::default().shared_with(corp_limits),
                max_retries: settings.max_retries,
                retry_base: Duration::from_millis(settings.retry_base_ms),
                frequency_window: Duration::from_secs(settings.frequency_window_secs),
                store,
                clock,
                metrics,
            }),
        })
    }

    pub fn agent_id(&self) -> i64 {
        self.inner.agent_id
    }

    /// The HTTP client (its timeouts), for fetching what WeCom serves outside its API.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub fn limiter(&self) -> &Limiter {
        &self.inner.limiter
    }

    fn slot(&self, credential: Credential) -> (&TokenSlot, &str) {
        match (
            credential,
            &self.inner.contact_token,
            &self.inner.contact_secret,
        ) {
            (Credential::Contact, Some(slot), Some(secret)) => (slot, secret),
            _ => (&self.inner.app_token, &self.inner.app_secret),
        }
    }

    /// A valid access token for `credential` (fetched when needed).
    pub async fn access_token(&self, credential: Credential) -> Result<String> {
        let (slot, secret) = self.slot(credential);
        slot.get(self.inner.store.as_ref(), &self.inner.clock, || {
            self.gettoken(secret)
        })
        .await
    }

    /// `GET gettoken`: retried like any read, never logged with its query.
    async fn gettoken(&self, secret: &str) -> Result<(String, i64)> {
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            access_token: String,
            expires_in: i64,
        }
        const PATH: &str = "gettoken";
        let url = format!("{}/cgi-bin/{PATH}", self.inner.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let sent = self
                .inner
                .http
                .get(&url)
                .query(&[
                    ("corpid", self.inner.corp_id.as_str()),
                    ("corpsecret", secret),
                ])
                .send()
                .await;
            let (outcome, answer) = match sent {
                Ok(response) => {
                    self.judge::<TokenAnswer>(PATH, Effect::Read, response)
                        .await
                }
                Err(e) => (
                    Err(WecomError::Transport {
                        path: PATH,
                        reason: transport_reason(&e),
                    }),
                    unanswered(&e),
                ),
            };
            self.observe(PATH, answer, started);
            match outcome {
                Ok(t) => return Ok((t.access_token, t.expires_in)),
                Err(e) if attempt <= self.inner.max_retries && retryable(&e, Effect::Read) => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                // Its callers wait the configured window, as after any API's 45009.
                Err(e) if e.errcode() == Some(code::FREQUENCY_LIMIT) => {
                    return Err(WecomError::RateLimited {
                        path: PATH,
                        retry_after: self.inner.frequency_window,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One API call with WeCom's rules: token, pace, retries as `endpoint.effect` allows.
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T> {
        let body = match body {
            Some(b) => Body::Json(
                serde_json::to_value(b)
                    .map_err(|e| WecomError::Invalid(format!("request does not serialize: {e}")))?,
            ),
            None => Body::Json(serde_json::json!({})),
        };
        self.send_call(endpoint, query, &body).await
    }

    /// A multipart upload (`media` part), with the same rules as [`WecomClient::call`].
    pub async fn call_multipart<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        query: &[(&str, String)],
        filename: &str,
        bytes: Vec<u8>,
    ) -> Result<T> {
        self.send_call(
            endpoint,
            query,
            &Body::Multipart {
                filename: filename.to_string(),
                bytes,
            },
        )
        .await
    }

    async fn send_call<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        query: &[(&str, String)],
        body: &Body,
    ) -> Result<T> {
        let path = endpoint.path;
        let mut attempt = 0;
        let mut token_refreshed = false;
        loop {
            attempt += 1;
            let permit = self.inner.limiter.acquire(path).await?;
            let token = self.access_token(endpoint.credential).await?;
            let url = format!("{}/cgi-bin/{path}", self.inner.base);
            let request = match (endpoint.post, body) {
                (false, _) => self.inner.http.get(&url),
                (true, Body::Json(json)) => self.inner.http.post(&url).json(json),
                (true, Body::Multipart { filename, bytes }) => {
                    let part =
                        reqwest::multipart::Part::bytes(bytes.clone()).file_name(filename.clone());
                    self.inner
                        .http
                        .post(&url)
                        .multipart(reqwest::multipart::Form::new().part("media", part))
                }
            };
            let started = std::time::Instant::now();
            let sent = request
                .query(&[("access_token", token.as_str())])
                .query(query)
                .send()
                .await;
            let (outcome, answer) = match sent {
                Ok(response) => self.judge::<T>(path, endpoint.effect, response).await,
                Err(e) => (
                    Err(self.transport_error(path, endpoint.effect, &e)),
                    unanswered(&e),
                ),
            };
            drop(permit);
            self.observe(path, answer, started);
            let err = match outcome {
                Ok(value) => {
                    self.inner.limiter.recovered(path);
                    return Ok(value);
                }
                Err(err) => err,
            };
            match err.errcode() {
                Some(code::INVALID_TOKEN | code::TOKEN_EXPIRED | code::INVALID_SECRET)
                    if !token_refreshed =>
                {
                    // One refresh, then the same call again; it does not count as a retry.
                    token_refreshed = true;
                    attempt -= 1;
                    let (slot, _) = self.slot(endpoint.credential);
                    slot.invalidate(self.inner.store.as_ref(), &token).await;
                    tracing::info!(path, "access token refused; fetched a new one");
                    continue;
                }
                Some(code::FREQUENCY_LIMIT) => {
                    let window = self.inner.frequency_window;
                    self.inner.limiter.block(path, window).await;
                    tracing::warn!(
                        path,
                        ?window,
                        "WeCom frequency limit (45009): pausing this API"
                    );
                    return Err(WecomError::RateLimited {
                        path,
                        retry_after: window,
                    });
                }
                Some(code::TOO_MANY_CONCURRENT) => {
                    self.inner.limiter.reduce_concurrency(path);
                    tracing::warn!(
                        path,
                        concurrency = self.inner.limiter.concurrency_of(path),
                        "WeCom 45033: fewer concurrent calls"
                    );
                }
                _ => {}
            }
            if attempt <= self.inner.max_retries && retryable(&err, endpoint.effect) {
                tracing::info!(path, attempt, error = %err, "retrying WeCom call");
                tokio::time::sleep(self.backoff(attempt)).await;
                continue;
            }
            return Err(err);
        }
    }

    /// Reads WeCom's answer: non-200 is an HTTP error, then `errcode` decides, then the body.
    /// Also says what came back, for the request's latency.
    ///
    /// An answer came, so the request arrived somewhere. For a send, an answer that does not
    /// say what happened (a gateway's 5xx, a 200 whose body broke off or is not WeCom's
    /// envelope) leaves the send's outcome unknown: WeCom may have acted on it.
    async fn judge<T: DeserializeOwned>(
        &self,
        path: &'static str,
        effect: Effect,
        response: reqwest::Response,
    ) -> (Result<T>, WecomAnswer) {
        let send = effect == Effect::Send;
        let status = response.status().as_u16();
        if status != 200 {
            let error = if send && status >= 500 {
                WecomError::OutcomeUnknown {
                    path,
                    reason: format!("HTTP {status}"),
                }
            } else {
                WecomError::Http { path, status }
            };
            return (Err(error), WecomAnswer::of_status(status));
        }
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                let reason = transport_reason(&e);
                let error = if send {
                    WecomError::OutcomeUnknown { path, reason }
                } else {
                    WecomError::Transport { path, reason }
                };
                return (Err(error), unanswered(&e));
            }
        };
        let envelope: Envelope = match serde_json::from_slice(&bytes) {
            Ok(envelope) => envelope,
            Err(e) => {
                let error = if send {
                    WecomError::OutcomeUnknown {
                        path,
                        reason: format!("HTTP 200 without WeCom's envelope: {e}"),
                    }
                } else {
                    WecomError::Decode {
                        path,
                        reason: e.to_string(),
                    }
                };
                return (Err(error), WecomAnswer::InvalidAnswer);
            }
        };
        let answer = WecomAnswer::Errcode(envelope.errcode);
        if envelope.errcode != 0 {
            let error = WecomError::Api {
                path,
                code: envelope.errcode,
                errmsg: envelope.errmsg,
            };
            return (Err(error), answer);
        }
        let decoded = serde_json::from_slice(&bytes).map_err(|e| WecomError::Decode {
            path,
            reason: e.to_string(),
        });
        (decoded, answer)
    }

    /// Records one request's latency: from sending it to having judged the answer.
    fn observe(&self, path: &'static str, answer: WecomAnswer, started: std::time::Instant) {
        if let Some(metrics) = &self.inner.metrics {
            metrics.wecom_called(path, answer, started.elapsed());
        }
    }

    fn transport_error(
        &self,
        path: &'static str,
        effect: Effect,
        e: &reqwest::Error,
    ) -> WecomError {
        // A refused connection means the request never left; anything later may have reached
        // WeCom, and for a send that means it may have happened.
        if effect == Effect::Send && !e.is_connect() {
            return WecomError::OutcomeUnknown {
                path,
                reason: transport_reason(e),
            };
        }
        WecomError::Transport {
            path,
            reason: transport_reason(e),
        }
    }

    /// `base · 2^(attempt-1)` with ±50% jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .inner
            .retry_base
            .saturating_mul(1 << attempt.saturating_sub(1).min(10));
        base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
    }

    /// Charges an app message to each recipient's per-member quota.
    pub(crate) async fn take_member_quota(&self, members: &[&str]) -> Result<()> {
        self.inner.members.take(members).await
    }
}

/// Whether `err` may be retried by the client itself for a call of this `effect`.
fn retryable(err: &WecomError, effect: Effect) -> bool {
    if effect == Effect::Send {
        // Only a request that provably never left may go again: for a send, `judge` and
        // `transport_error` give `Transport` only for a connection that was never made.
        return matches!(err, WecomError::Transport { .. });
    }
    match err {
        WecomError::Api { code, .. } => {
            matches!(*code, code::SYSTEM_BUSY | code::TOO_MANY_CONCURRENT)
        }
        WecomError::Http { status, .. } => *status >= 500,
        WecomError::Transport { .. } => true,
        _ => false,
    }
}

/// What a request that got no answer counts as, for its latency.
fn unanswered(e: &reqwest::Error) -> WecomAnswer {
    if e.is_timeout() {
        WecomAnswer::Timeout
    } else {
        WecomAnswer::Transport
    }
}

/// The error's kind without its URL (which carries the access token).
fn transport_reason(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}
