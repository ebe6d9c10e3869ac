//! Process counters and latency histograms, rendered in Prometheus text format by `GET /metrics`
//! together with gauges read from the database at scrape time (inbox lag, events and jobs by
//! state).
//!
//! The counters and gauges are written by hand, and their text stays exactly as it is: operators'
//! scripts read those lines. The histograms are the `metrics` crate's, appended after them, kept
//! by a Prometheus recorder that each [`Metrics`] owns rather than the process-wide one: tests run
//! several servers in one process, and each server's `/metrics` must count only what that server
//! did (with one global recorder, a test would see its neighbours' observations and pass without
//! its own). Every histogram handle is registered once and kept, so recording is a push onto the
//! handle's atomic bucket: no lookup by name, no label formatting, on any hot path.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Histogram, Label};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::groups::{GroupCounts, InvitationStatus, RemovalStatus};
use crate::store::{Store, StoreError};

/// Why a callback was refused. Low cardinality on purpose: these are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingParams,
    BadEnvelope,
    BadSignature,
    DecryptFailed,
    WrongReceiver,
    TooLarge,
}

impl Rejection {
    pub const ALL: [Rejection; 6] = [
        Rejection::MissingParams,
        Rejection::BadEnvelope,
        Rejection::BadSignature,
        Rejection::DecryptFailed,
        Rejection::WrongReceiver,
        Rejection::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MissingParams => "missing_params",
            Rejection::BadEnvelope => "bad_envelope",
            Rejection::BadSignature => "bad_signature",
            Rejection::DecryptFailed => "decrypt_failed",
            Rejection::WrongReceiver => "wrong_receiver",
            Rejection::TooLarge => "too_large",
        }
    }
}

/// How a callback POST was answered: the label of its latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// Stored in the inbox: 200.
    Stored,
    /// A redelivery of a stored event: 200.
    Duplicate,
    /// Refused (see [`Rejection`]): 4xx.
    Rejected,
    /// Valid, but not stored: 500, and WeCom retries.
    Failed,
}

impl CallbackOutcome {
    pub const ALL: [CallbackOutcome; 4] = [
        CallbackOutcome::Stored,
        CallbackOutcome::Duplicate,
        CallbackOutcome::Rejected,
        CallbackOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallbackOutcome::Stored => "stored",
            CallbackOutcome::Duplicate => "duplicate",
            CallbackOutcome::Rejected => "rejected",
            CallbackOutcome::Failed => "failed",
        }
    }
}

/// What one WeCom call came back with: the `errcode` label of its latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WecomAnswer {
    /// WeCom's envelope, with its `errcode` (0: done).
    Errcode(i64),
    /// HTTP 5xx: a gateway's failure, no envelope.
    Http5xx,
    /// HTTP 4xx.
    Http4xx,
    /// Any other status than 200.
    HttpOther,
    /// HTTP 200 whose body is not WeCom's envelope.
    InvalidAnswer,
    /// No answer within the request timeout.
    Timeout,
    /// No answer otherwise: the connection failed, or broke off.
    Transport,
}

impl WecomAnswer {
    /// By the HTTP status of an answer that has no envelope.
    pub fn of_status(status: u16) -> WecomAnswer {
        match status {
            500.. => WecomAnswer::Http5xx,
            400..500 => WecomAnswer::Http4xx,
            _ => WecomAnswer::HttpOther,
        }
    }

    fn label(self) -> String {
        match self {
            WecomAnswer::Errcode(code) => code.to_string(),
            WecomAnswer::Http5xx => "http_5xx".into(),
            WecomAnswer::Http4xx => "http_4xx".into(),
            WecomAnswer::HttpOther => "http_other".into(),
            WecomAnswer::InvalidAnswer => "invalid_answer".into(),
            WecomAnswer::Timeout => "timeout".into(),
            WecomAnswer::Transport => "transport".into(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    callbacks_received: AtomicU64,
    callbacks_stored: AtomicU64,
    callbacks_duplicate: AtomicU64,
    callbacks_failed: AtomicU64,
    url_checks: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
    latency: Latencies,
}

impl Metrics {
    pub fn received(&self) {
        self.callbacks_received.fetch_add(1, Ordering::Relaxed);
    }
    pub fn stored(&self) {
        self.callbacks_stored.fetch_add(1, Ordering::Relaxed);
    }
    pub fn duplicate(&self) {
        self.callbacks_duplicate.fetch_add(1, Ordering::Relaxed);
    }
    /// A valid callback we could not store (answered 500, so WeCom retries).
    pub fn failed(&self) {
        self.callbacks_failed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn url_check(&self) {
        self.url_checks.fetch_add(1, Ordering::Relaxed);
    }
    pub fn rejected(&self, why: Rejection) {
        let i = Rejection::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }
    pub fn duplicates(&self) -> u64 {
        self.callbacks_duplicate.load(Ordering::Relaxed)
    }

    /// A callback POST answered `took` after it arrived.
    pub fn callback_answered(&self, outcome: CallbackOutcome, took: Duration) {
        let i = CallbackOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.latency.callbacks[i].record(took.as_secs_f64());
    }

    /// Registers the job kinds this process runs, so each shows in `/metrics` (a count of 0)
    /// before its first run.
    pub fn job_kinds<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        let l = &self.latency;
        for kind in kinds {
            // Registering is the point: the families keep the handles.
            let _ = l.job_runs.handle(&l.recorder, kind, || kind_label(kind));
            let _ = l.job_waits.handle(&l.recorder, kind, || kind_label(kind));
        }
    }

    /// A job attempt of `kind` was claimed `waited` after it was due, and its handler ran `took`.
    pub fn job_ran(&self, kind: &str, waited: Duration, took: Duration) {
        let l = &self.latency;
        l.job_waits
            .handle(&l.recorder, kind, || kind_label(kind))
            .record(waited.as_secs_f64());
        l.job_runs
            .handle(&l.recorder, kind, || kind_label(kind))
            .record(took.as_secs_f64());
    }

    /// One WeCom API request to `path` (as the client names it: `externalcontact/mark_tag`)
    /// came back with `answer` after `took`.
    pub fn wecom_called(&self, path: &'static str, answer: WecomAnswer, took: Duration) {
        let l = &self.latency;
        l.wecom_calls
            .handle(&l.recorder, &(path, answer), || {
                vec![
                    Label::new("path", path),
                    Label::new("errcode", answer.label()),
                ]
            })
            .record(took.as_secs_f64());
    }

    /// WeCom accepted a welcome message `latency` after the customer's add.
    pub fn welcome_sent(&self, latency: Duration) {
        self.latency.welcome.record(latency.as_secs_f64());
    }

    /// Folds the histograms' new samples into their buckets, until `shutdown` turns true. The
    /// samples wait in memory until then (or until a scrape): without it, a server nobody
    /// scrapes would keep every sample.
    pub async fn keep_up(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(UPKEEP_EVERY) => self.latency.prometheus.run_upkeep(),
                _ = shutdown.changed() => {}
            }
        }
    }

    pub async fn render(&self, store: &Store, clock: &Clock) -> Result<String, StoreError> {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            &mut out,
            "siyu_callbacks_received_total",
            "Callback POSTs received.",
            &self.callbacks_received,
        );
        counter(
            &mut out,
            "siyu_callbacks_stored_total",
            "Callbacks stored in the inbox.",
            &self.callbacks_stored,
        );
        counter(
            &mut out,
            "siyu_callbacks_duplicate_total",
            "Redelivered callbacks acknowledged without storing.",
            &self.callbacks_duplicate,
        );
        counter(
            &mut out,
            "siyu_callbacks_failed_total",
            "Valid callbacks that could not be stored (answered 500).",
            &self.callbacks_failed,
        );
        counter(
            &mut out,
            "siyu_url_checks_total",
            "URL verification requests answered.",
            &self.url_checks,
        );
        let _ = writeln!(
            out,
            "# HELP siyu_callbacks_rejected_total Callbacks refused, by reason.\n# TYPE siyu_callbacks_rejected_total counter"
        );
        for (r, v) in Rejection::ALL.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "siyu_callbacks_rejected_total{{reason=\"{}\"}} {}",
                r.as_str(),
                v.load(Ordering::Relaxed)
            );
        }

        let lag_secs = match store.oldest_pending_event().await? {
            Some(oldest) => ((clock.now_ms() - oldest).max(0) as f64) / 1000.0,
            None => 0.0,
        };
        let _ = writeln!(
            out,
            "# HELP siyu_inbox_lag_seconds Age of the oldest event not yet handled.\n# TYPE siyu_inbox_lag_seconds gauge\nsiyu_inbox_lag_seconds {lag_secs}"
        );
        let _ = writeln!(
            out,
            "# HELP siyu_inbox_events Events in the inbox, by status.\n# TYPE siyu_inbox_events gauge"
        );
        for (status, n) in store.count_events_by_status().await? {
            let _ = writeln!(
                out,
                "siyu_inbox_events{{status=\"{}\"}} {n}",
                status.as_str()
            );
        }
        let _ = writeln!(
            out,
            "# HELP siyu_jobs Jobs, by state.\n# TYPE siyu_jobs gauge"
        );
        for (state, n) in store.count_jobs_by_state().await? {
            let _ = writeln!(out, "siyu_jobs{{state=\"{}\"}} {n}", state.as_str());
        }
        render_groups(&mut out, &store.group_counts().await?);
        let failures = store.sign_in_failures_total().await?;
        let _ = writeln!(
            out,
            "# HELP siyu_console_sign_in_failures_total Console sign-ins refused for a wrong name or password.\n# TYPE siyu_console_sign_in_failures_total counter\nsiyu_console_sign_in_failures_total {failures}"
        );
        out.push_str(&self.latency.prometheus.render());
        Ok(out)
    }
}

/// How often the histograms' samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

const CALLBACK_DURATION: &str = "siyu_callback_duration_seconds";
const JOB_DURATION: &str = "siyu_job_duration_seconds";
const JOB_WAIT: &str = "siyu_job_wait_seconds";
const WECOM_CALL_DURATION: &str = "siyu_wecom_call_duration_seconds";
const WELCOME_LATENCY: &str = "siyu_welcome_latency_seconds";

/// Each histogram: its name, its help, and its bucket bounds in seconds, chosen for what it
/// times.
const HISTOGRAMS: [(&str, &str, &[f64]); 5] = [
    (
        CALLBACK_DURATION,
        "Callback POSTs, from arrival to the answer, by outcome (WeCom waits 5 s).",
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ],
    ),
    (
        JOB_DURATION,
        "Job attempts, how long the handler ran, by kind.",
        &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 300.0,
        ],
    ),
    (
        JOB_WAIT,
        "Job attempts, from due (run_at) to claimed by a worker, by kind.",
        &[
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            300.0, 900.0, 3600.0,
        ],
    ),
    (
        WECOM_CALL_DURATION,
        "WeCom API requests (each attempt), by path and errcode (or http_5xx, http_4xx, http_other, invalid_answer, timeout, transport).",
        &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ],
    ),
    (
        WELCOME_LATENCY,
        "Welcome messages WeCom accepted, from the customer's add (its callback's arrival, or the end of its CreateTime's second when earlier) to the accepted send_welcome_msg (WeCom allows 20 s).",
        &[
            0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
        ],
    ),
];

/// The histograms of one server, and the recorder that keeps them.
struct Latencies {
    recorder: PrometheusRecorder,
    prometheus: PrometheusHandle,
    /// By [`CallbackOutcome::ALL`]'s order.
    callbacks: [Histogram; CallbackOutcome::ALL.len()],
    welcome: Histogram,
    job_runs: Labelled<String>,
    job_waits: Labelled<String>,
    wecom_calls: Labelled<(&'static str, WecomAnswer)>,
}

impl Default for Latencies {
    fn default() -> Self {
        let mut builder = PrometheusBuilder::new();
        for (name, _, buckets) in HISTOGRAMS {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
                .expect("every histogram has buckets");
        }
        let recorder = builder.build_recorder();
        metrics::with_local_recorder(&recorder, || {
            for (name, help, _) in HISTOGRAMS {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
            }
        });
        let callbacks = CallbackOutcome::ALL.map(|outcome| {
            register(
                &recorder,
                CALLBACK_DURATION,
                vec![Label::new("outcome", outcome.as_str())],
            )
        });
        let welcome = register(&recorder, WELCOME_LATENCY, Vec::new());
        Latencies {
            prometheus: recorder.handle(),
            recorder,
            callbacks,
            welcome,
            job_runs: Labelled::new(JOB_DURATION),
            job_waits: Labelled::new(JOB_WAIT),
            wecom_calls: Labelled::new(WECOM_CALL_DURATION),
        }
    }
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latencies").finish_non_exhaustive()
    }
}

fn register(recorder: &PrometheusRecorder, name: &'static str, labels: Vec<Label>) -> Histogram {
    metrics::with_local_recorder(recorder, || metrics::histogram!(name, labels))
}

fn kind_label(kind: &str) -> Vec<Label> {
    vec![Label::new("kind", kind.to_string())]
}

/// A histogram with labels whose values are known only as they come (job kinds, WeCom's paths
/// and errcodes): each set is registered the first time it is seen, and its handle kept.
struct Labelled<K> {
    name: &'static str,
    handles: RwLock<HashMap<K, Histogram>>,
}

impl<K: Hash + Eq> Labelled<K> {
    fn new(name: &'static str) -> Self {
        Labelled {
            name,
            handles: RwLock::default(),
        }
    }

    /// The handle for `key`, registered with `labels` if it is new.
    fn handle<Q>(
        &self,
        recorder: &PrometheusRecorder,
        key: &Q,
        labels: impl FnOnce() -> Vec<Label>,
    ) -> Histogram
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(handle) = self
            .handles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return handle.clone();
        }
        self.handles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_insert_with(|| register(recorder, self.name, labels()))
            .clone()
    }
}

/// Tier groups: invitations and removal requests by status (overdue among them), joins.
fn render_groups(out: &mut String, counts: &GroupCounts) {
    let _ = writeln!(
        out,
        "# HELP siyu_group_invitations Tier-group invitations, by status.\n# TYPE siyu_group_invitations gauge"
    );
    for status in InvitationStatus::ALL {
        let n = counts
            .invitations
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "siyu_group_invitations{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP siyu_group_removals Requests to group owners to remove a customer, by status.\n# TYPE siyu_group_removals gauge"
    );
    for status in RemovalStatus::ALL {
        let n = counts
            .removals
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "siyu_group_removals{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP siyu_group_joins_total Customers who joined a tier group.\n# TYPE siyu_group_joins_total counter\nsiyu_group_joins_total {}",
        counts.joins
    );
    let _ = writeln!(
        out,
        "# HELP siyu_group_members Customers in tier groups now.\n# TYPE siyu_group_members gauge\nsiyu_group_members {}",
        counts.members_now
    );
}
