//! Process counters, rendered in Prometheus text format by `GET /metrics` together with gauges
//! read from the database at scrape time (inbox lag, events and jobs by state).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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

#[derive(Debug, Default)]
pub struct Metrics {
    callbacks_received: AtomicU64,
    callbacks_stored: AtomicU64,
    callbacks_duplicate: AtomicU64,
    callbacks_failed: AtomicU64,
    url_checks: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
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
        Ok(out)
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
