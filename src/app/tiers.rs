//! Tiers: rules over windowed activity metrics, promotion and demotion (after a grace period),
//! operators' pins, and the record of every change. What a change sets off (the tier tag, the
//! note, the member's notice, and next the tier groups) belongs to the features that registered
//! for it: [`apply_changes`] records each change and calls the tier-change hooks in the same
//! transaction.
//!
//! Evaluation is one streaming, set-based pass: every customer's row carries its rule terms
//! summed in SQL; the rules then run over those sums customer by customer.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::hooks::TierChanged;
use super::{AppError, Registrar, Services};
use crate::config::{Condition, RuleSet, Settings, TierSettings};
use crate::ids::{ExternalUserId, UserId};
use crate::store::Tx;
use crate::store::tiers::{self as store_tiers, TierChange, TierState};

pub const EVALUATE_JOB: &str = "tiers.evaluate";
/// The nightly full evaluation: windows slide and grace periods end without any new activity.
pub const NIGHTLY: &str = "tiers.nightly";

const DAY_MS: i64 = 86_400_000;

// ---- money ----

/// Parses yuan with at most two decimals ("2500", "2500.5", "2500.00") into fen, exactly.
pub fn parse_yuan(text: &str) -> Result<i64, String> {
    let t = text.trim().trim_matches('"');
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{text} is not an amount in yuan"));
    }
    if frac.len() > 2 {
        return Err(format!("{text} has more than two decimals"));
    }
    let whole: i64 = whole.parse().map_err(|_| format!("{text} is too large"))?;
    let frac: i64 = format!("{frac:0<2}").parse().unwrap_or(0);
    let fen = whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(|| format!("{text} is too large"))?;
    Ok(if neg { -fen } else { fen })
}

pub(crate) fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, (fen % 100).abs())
}

// ---- rules ----

#[derive(Debug, Clone)]
struct Cond {
    metric: String,
    window_ms: i64,
    /// Fen for spend, a count otherwise.
    min: i64,
    /// Where `(metric, window_ms)` is among the terms evaluation reads (see [`index_terms`]).
    term: usize,
}

#[derive(Debug, Clone, Default)]
struct Rules {
    all: Vec<Cond>,
    any: Vec<Cond>,
}

#[derive(Debug, Clone)]
struct Tier {
    code: String,
    promote: Rules,
    keep: Rules,
    demote_after_ms: i64,
}

fn compile_cond(where_: &str, c: &Condition) -> Result<Cond, String> {
    if c.window_days == 0 {
        return Err(format!("{where_}: window_days must be at least 1"));
    }
    let text = c.min.to_string();
    let min = if c.metric == "spend" {
        parse_yuan(&text).map_err(|e| format!("{where_}: min {e}"))?
    } else {
        c.min
            .as_i64()
            .ok_or_else(|| format!("{where_}: min of {} must be a whole count", c.metric))?
    };
    Ok(Cond {
        metric: c.metric.clone(),
        window_ms: i64::from(c.window_days) * DAY_MS,
        min,
        term: 0,
    })
}

fn compile_rules(where_: &str, r: &RuleSet) -> Result<Rules, String> {
    let conds = |list: &[Condition], part: &str| {
        list.iter()
            .enumerate()
            .map(|(i, c)| compile_cond(&format!("{where_}.{part}[{i}]"), c))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Rules {
        all: conds(&r.all, "all")?,
        any: conds(&r.any, "any")?,
    })
}

fn compile(tiers: &[TierSettings]) -> Result<Vec<Tier>, String> {
    tiers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i > 0 && t.promote.is_empty() {
                return Err(format!(
                    "tiers[{i}] ({}): a tier above the entry tier needs promote rules",
                    t.code
                ));
            }
            Ok(Tier {
                code: t.code.clone(),
                promote: compile_rules(&format!("tiers[{i}].promote"), &t.promote)?,
                keep: compile_rules(&format!("tiers[{i}].keep"), &t.keep)?,
                demote_after_ms: i64::from(t.demote_after_days) * DAY_MS,
            })
        })
        .collect()
}

/// Checks the tier rules of `settings` (at start, and before a change takes effect).
pub fn validate(settings: &Settings) -> Result<(), String> {
    check_tiers(&settings.tiers)
}

fn check_tiers(tiers: &[TierSettings]) -> Result<(), String> {
    if tiers.is_empty() {
        return Err("tiers: at least one tier is needed (the entry tier)".into());
    }
    for (i, t) in tiers.iter().enumerate() {
        if t.code.trim().is_empty() || t.name.trim().is_empty() || t.name.chars().count() > 30 {
            return Err(format!(
                "tiers[{i}]: needs a code and a name of at most 30 characters"
            ));
        }
        if tiers[..i].iter().any(|o| o.code == t.code) {
            return Err(format!("tiers[{i}]: code {:?} appears twice", t.code));
        }
    }
    compile(tiers).map(drop)
}

/// Metrics every installation has: `spend` (orders − refunds), `orders`, and the shop's
/// built-in activity kinds.
const BUILT_IN_METRICS: [&str; 5] = ["spend", "orders", "order", "refund", "referral"];

/// The conditions (by place, e.g. `tiers[1].promote.any[0]: metric "refunds"`) whose metric is
/// neither built in nor an activity kind siyu has received: a rule over one would read 0 forever.
pub async fn unknown_metrics(
    services: &Services,
    tiers: &[TierSettings],
) -> Result<Vec<String>, AppError> {
    let mut unknown = Vec::new();
    for (i, t) in tiers.iter().enumerate() {
        for (part, list) in [
            ("promote.all", &t.promote.all),
            ("promote.any", &t.promote.any),
            ("keep.all", &t.keep.all),
            ("keep.any", &t.keep.any),
        ] {
            for (j, c) in list.iter().enumerate() {
                if !BUILT_IN_METRICS.contains(&c.metric.as_str())
                    && !services.store.activity_kind_exists(&c.metric).await?
                {
                    unknown.push(format!("tiers[{i}].{part}[{j}]: metric {:?}", c.metric));
                }
            }
        }
    }
    Ok(unknown)
}

/// Checks proposed tier rules as a change would (the rules themselves, their metrics, and that
/// no tier left out still holds customers), naming the wrong field.
async fn check_proposed(services: &Services, tiers: &[TierSettings]) -> Result<(), AppError> {
    check_tiers(tiers).map_err(AppError::Invalid)?;
    let unknown = unknown_metrics(services, tiers).await?;
    if !unknown.is_empty() {
        return Err(AppError::Invalid(format!(
            "{}: not spend, orders, or an activity kind siyu has received",
            unknown.join("; ")
        )));
    }
    for (code, n) in services.store.customers_per_tier().await? {
        if n > 0 && !tiers.iter().any(|t| t.code == code) {
            return Err(AppError::Conflict(format!(
                "tiers: {code:?} still holds {n} customers; keep it or move them first"
            )));
        }
    }
    Ok(())
}

/// Replaces the tier rules, validated first; they take effect at the next evaluation. Every
/// change is kept with who made it. A tier that still holds customers cannot be removed.
pub async fn change_rules(
    services: &Services,
    tiers: Vec<TierSettings>,
    by: &str,
) -> Result<(), AppError> {
    if by.trim().is_empty() {
        return Err(AppError::Invalid("by: say who makes the change".into()));
    }
    check_proposed(services, &tiers).await?;
    let json = serde_json::to_string(&tiers).map_err(|e| AppError::Invalid(e.to_string()))?;
    services
        .store
        .save_tier_rules(&json, by, services.clock.now_ms())
        .await?;
    // A new tier's tag is created by the first tag sync that wants it.
    tracing::info!(by, tiers = tiers.len(), "tier rules changed");
    Ok(())
}

/// At most this many changes are shown by a preview.
const PREVIEW_SAMPLE: usize = 20;

/// What proposed tier rules would do to every customer now (`POST /api/v1/tiers/preview`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// Customers evaluated.
    pub customers: u64,
    /// Customers whose tier would change.
    pub changes: u64,
    /// Of those, moved to a higher tier (later in the list).
    pub up: u64,
    /// Of those, moved to a lower one.
    pub down: u64,
    /// The first changes, at most 20.
    pub sample: Vec<PreviewChange>,
}

/// One change a preview found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PreviewChange {
    pub external_userid: ExternalUserId,
    /// The customer's name (empty when the customer is not recorded).
    pub name: String,
    pub from: String,
    pub to: String,
    /// The rule that decided it, with the metric values behind it (as the tier history would
    /// keep it).
    #[schema(example = "promote to partner: spend 90d 600.00 (≥ 500.00)")]
    pub rule: String,
    /// Every metric the proposed rules use, with the customer's value.
    pub metrics: Vec<MetricValue>,
}

/// Evaluates every customer against proposed rules (validated as [`change_rules`] validates
/// them) without saving the rules or changing anything.
pub async fn preview(services: &Services, tiers: &[TierSettings]) -> Result<Preview, AppError> {
    check_proposed(services, tiers).await?;
    let rank = |code: &str| tiers.iter().position(|t| t.code == code);
    let (mut up, mut down) = (0, 0);
    let mut sample = Vec::new();
    let report = run(services, tiers, None, false, |d, metrics| {
        if rank(&d.to) > rank(&d.from) {
            up += 1;
        } else {
            down += 1;
        }
        if sample.len() < PREVIEW_SAMPLE {
            sample.push(PreviewChange {
                external_userid: d.external_userid.clone(),
                name: String::new(),
                from: d.from.clone(),
                to: d.to.clone(),
                rule: d.reason.clone(),
                metrics: metrics.values(),
            });
        }
    })
    .await?;
    for change in &mut sample {
        if let Some(c) = services.store.customer(&change.external_userid).await? {
            change.name = c.name;
        }
    }
    Ok(Preview {
        customers: report.customers,
        changes: report.changes,
        up,
        down,
        sample,
    })
}

/// One metric the tier rules use, over its window, and a customer's value of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MetricValue {
    #[schema(example = "spend")]
    pub metric: String,
    pub window_days: i64,
    pub value: MetricAmount,
}

/// Yuan as a string with two decimals for `spend` (e.g. `"2500.50"`); a count otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum MetricAmount {
    Yuan(String),
    Count(i64),
}

/// A customer's value of every `(metric, window)` term the rules use.
pub struct Metrics<'a> {
    terms: &'a [(String, i64)],
    values: &'a [i64],
}

impl Metrics<'_> {
    /// Every term with its value, as the API shows them.
    pub fn values(&self) -> Vec<MetricValue> {
        self.terms
            .iter()
            .zip(self.values.iter().copied().chain(std::iter::repeat(0)))
            .map(|((metric, window), v)| MetricValue {
                metric: metric.clone(),
                window_days: window / DAY_MS,
                value: if metric == "spend" {
                    MetricAmount::Yuan(yuan(v))
                } else {
                    MetricAmount::Count(v)
                },
            })
            .collect()
    }

    fn value(&self, c: &Cond) -> i64 {
        self.values.get(c.term).copied().unwrap_or(0)
    }

    fn describe(&self, c: &Cond) -> String {
        let v = self.value(c);
        let days = c.window_ms / DAY_MS;
        if c.metric == "spend" {
            format!("spend {days}d {} (≥ {})", yuan(v), yuan(c.min))
        } else {
            format!("{} {days}d {v} (≥ {})", c.metric, c.min)
        }
    }

    /// Whether the rules hold (for every customer, so it allocates nothing).
    fn holds(&self, r: &Rules) -> bool {
        let holds = |c: &Cond| self.value(c) >= c.min;
        r.all.iter().all(holds) && (r.any.is_empty() || r.any.iter().any(holds))
    }

    /// The metric values behind the answer of [`Metrics::holds`] (for a change's reason).
    fn why(&self, r: &Rules) -> String {
        let why: Vec<String> = r
            .all
            .iter()
            .chain(&r.any)
            .map(|c| self.describe(c))
            .collect();
        why.join(", ")
    }
}

/// What evaluation decided for one customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub external_userid: ExternalUserId,
    pub from: String,
    pub to: String,
    pub reason: String,
}

enum Outcome {
    Change(Decision, Option<i64>),
    /// No tier change, but the keep-failing clock started or stopped.
    Failing(Option<i64>),
    Same,
}

fn decide(tiers: &[Tier], state: &TierState, metrics: &Metrics, now: i64) -> Outcome {
    // A pin wins over the rules until it expires.
    if let Some(pin) = state
        .pin
        .as_ref()
        .filter(|p| p.expires_at.is_none_or(|e| e > now))
    {
        if pin.tier != state.tier {
            let d = Decision {
                external_userid: state.external_userid.clone(),
                from: state.tier.clone(),
                to: pin.tier.clone(),
                reason: format!("pinned by {}: {}", pin.pinned_by, pin.reason),
            };
            return Outcome::Change(d, None);
        }
        return if state.keep_failing_since.is_some() {
            Outcome::Failing(None)
        } else {
            Outcome::Same
        };
    }
    let current = tiers.iter().position(|t| t.code == state.tier).unwrap_or(0);
    // The highest tier above the current one whose promote rules hold.
    for (i, tier) in tiers.iter().enumerate().rev().filter(|(i, _)| *i > current) {
        if metrics.holds(&tier.promote) {
            let d = Decision {
                external_userid: state.external_userid.clone(),
                from: state.tier.clone(),
                to: tiers[i].code.clone(),
                reason: format!("promote to {}: {}", tier.code, metrics.why(&tier.promote)),
            };
            return Outcome::Change(d, None);
        }
    }
    if current == 0 {
        return if state.keep_failing_since.is_some() {
            Outcome::Failing(None)
        } else {
            Outcome::Same
        };
    }
    let tier = &tiers[current];
    match (metrics.holds(&tier.keep), state.keep_failing_since) {
        (true, None) => Outcome::Same,
        (true, Some(_)) => Outcome::Failing(None),
        (false, None) => Outcome::Failing(Some(now)),
        (false, Some(since)) if now - since >= tier.demote_after_ms => {
            let d = Decision {
                external_userid: state.external_userid.clone(),
                from: state.tier.clone(),
                to: tiers[current - 1].code.clone(),
                reason: format!(
                    "failed keep of {} for {} days: {}",
                    tier.code,
                    (now - since) / DAY_MS,
                    metrics.why(&tier.keep)
                ),
            };
            Outcome::Change(d, None)
        }
        (false, Some(_)) => Outcome::Same,
    }
}

/// Every `(metric, window)` the rules look at, once; each condition learns where its own is.
fn index_terms(tiers: &mut [Tier]) -> Vec<(String, i64)> {
    let terms: Vec<(String, i64)> = tiers
        .iter()
        .flat_map(|t| {
            t.promote
                .all
                .iter()
                .chain(&t.promote.any)
                .chain(&t.keep.all)
                .chain(&t.keep.any)
        })
        .map(|c| (c.metric.clone(), c.window_ms))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for t in tiers.iter_mut() {
        for c in t
            .promote
            .all
            .iter_mut()
            .chain(t.promote.any.iter_mut())
            .chain(t.keep.all.iter_mut())
            .chain(t.keep.any.iter_mut())
        {
            c.term = terms
                .iter()
                .position(|(m, w)| *m == c.metric && *w == c.window_ms)
                .unwrap_or(usize::MAX);
        }
    }
    terms
}

/// Evaluates the given customers (or everyone) and answers the changes (for small sets, tests
/// and dry runs; the nightly job uses [`evaluate_with`], which keeps nothing).
pub async fn evaluate(
    services: &Services,
    customers: Option<&[ExternalUserId]>,
    apply: bool,
) -> Result<Vec<Decision>, AppError> {
    let mut decisions = Vec::new();
    evaluate_with(services, customers, apply, |d| decisions.push(d.clone())).await?;
    Ok(decisions)
}

/// How an evaluation went.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Evaluated {
    pub customers: u64,
    pub changes: u64,
}

/// Evaluates the given customers (or everyone) against the rules in force at `now` in one
/// streaming pass, applying changes in batches as they are decided (with `apply`): memory stays
/// bounded however many customers there are and however many change. `on_change` sees every
/// decision.
pub async fn evaluate_with(
    services: &Services,
    customers: Option<&[ExternalUserId]>,
    apply: bool,
    mut on_change: impl FnMut(&Decision),
) -> Result<Evaluated, AppError> {
    let in_force = services.tiers().await?;
    run(services, &in_force, customers, apply, |d, _| on_change(d)).await
}

/// Changes decided are written this many at a time (or a read batch more), each lot in one
/// transaction with what it sets off.
const CHANGES_PER_TRANSACTION: usize = 2000;

/// The evaluation pass of [`evaluate_with`] over the given `rules` (those in force, or with
/// `apply` false, proposed ones); `on_change` sees each decision with the metric values behind it.
async fn run(
    services: &Services,
    rules: &[TierSettings],
    customers: Option<&[ExternalUserId]>,
    apply: bool,
    mut on_change: impl FnMut(&Decision, &Metrics),
) -> Result<Evaluated, AppError> {
    let mut tiers = compile(rules).map_err(AppError::Invalid)?;
    let now = services.clock.now_ms();
    let terms = index_terms(&mut tiers);
    // A few batches in flight: the read runs ahead of the decisions, but not far.
    let (rows_tx, rows) = tokio::sync::mpsc::channel(4);
    let read = services
        .store
        .for_each_customer_metrics(now, &terms, customers, rows_tx);
    // What was decided is written while the next customers are read and decided: the read and
    // the writes run on their own threads, so the evaluation takes about the longer of the two,
    // not their sum.
    let (writes_tx, writes) = tokio::sync::mpsc::channel::<Writes>(2);
    let deciding = async {
        // Owned here, so a failed decision or write closes the channel and stops the read.
        let mut rows = rows;
        let mut report = Evaluated::default();
        let mut lot = Writes::default();
        while let Some(batch) = rows.recv().await {
            batch.for_each(|state, values| {
                report.customers += 1;
                let metrics = Metrics {
                    terms: &terms,
                    values,
                };
                match decide(&tiers, &state, &metrics, now) {
                    Outcome::Change(d, since) => {
                        on_change(&d, &metrics);
                        report.changes += 1;
                        if apply {
                            lot.changes.push((d, since));
                        }
                    }
                    Outcome::Failing(since) if apply => {
                        lot.failing.push((state.external_userid, since))
                    }
                    Outcome::Failing(_) | Outcome::Same => {}
                }
            });
            if apply && lot.is_full() && writes_tx.send(std::mem::take(&mut lot)).await.is_err() {
                // The writer failed: its error is the evaluation's.
                break;
            }
        }
        if apply {
            let _ = writes_tx.send(lot).await;
        }
        drop(writes_tx);
        report
    };
    // Two tasks of their own, so their side of the writes runs on another thread than the
    // decisions: one reads the members each lot's changes set off to while the lot before it
    // is written by the other (the reads and the writes are on different connections).
    let (prepared_tx, prepared) = tokio::sync::mpsc::channel::<(Writes, Members)>(1);
    let reader = services.clone();
    let preparing = tokio::spawn(async move {
        let mut writes = writes;
        while let Some(lot) = writes.recv().await {
            let members = members_of_changes(&reader, &lot.changes).await?;
            if prepared_tx.send((lot, members)).await.is_err() {
                // The writer failed: its error is the evaluation's.
                break;
            }
        }
        Ok::<_, AppError>(())
    });
    let writer = services.clone();
    let writing = tokio::spawn(async move {
        let mut prepared = prepared;
        while let Some((lot, members)) = prepared.recv().await {
            apply_changes(&writer, &lot.changes, &members, now).await?;
            writer.store.set_keep_failing_since(&lot.failing).await?;
        }
        Ok::<_, AppError>(())
    });
    // The writer's error first: it is why the members' read stopped short.
    let writing = async {
        let (written, prepared) = tokio::join!(writing, preparing);
        joined(written)?;
        joined(prepared)
    };
    let (read, report, written) = tokio::join!(read, deciding, writing);
    // A failed write stops the decisions, which stops the read: report the cause first.
    written?;
    read?;
    Ok(report)
}

/// The outcome of a task of the evaluation, as if it had run in the evaluation's own: a panic
/// goes on up.
fn joined<T>(outcome: Result<Result<T, AppError>, tokio::task::JoinError>) -> Result<T, AppError> {
    match outcome {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(AppError::Conflict(
            "the tier writes were stopped: siyu is shutting down".into(),
        )),
    }
}

/// The members who follow each customer, for what a change sets off.
type Members = HashMap<ExternalUserId, Vec<UserId>>;

/// The connected members of the customers of `changes`, in the order they added them.
async fn members_of_changes(
    services: &Services,
    changes: &[(Decision, Option<i64>)],
) -> Result<Members, AppError> {
    let mut members = Members::new();
    if changes.is_empty() {
        return Ok(members);
    }
    let ids: Vec<ExternalUserId> = changes
        .iter()
        .map(|(d, _)| d.external_userid.clone())
        .collect();
    for (customer, member) in services.store.connected_members_of(&ids).await? {
        members.entry(customer).or_default().push(member);
    }
    Ok(members)
}

/// What a lot of decisions writes: tier changes, and keep-failing clocks started or stopped.
#[derive(Default)]
struct Writes {
    changes: Vec<(Decision, Option<i64>)>,
    failing: Vec<(ExternalUserId, Option<i64>)>,
}

impl Writes {
    fn is_full(&self) -> bool {
        self.changes.len() >= CHANGES_PER_TRANSACTION
            || self.failing.len() >= CHANGES_PER_TRANSACTION
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EvaluateJob {
    /// None: everyone.
    pub customers: Option<Vec<ExternalUserId>>,
}

/// Records changes and, in the same transaction, calls what each feature registered for a tier
/// change (the tag, the note and the member's notice; next, the groups) with the members who
/// follow each customer. The change and what it sets off commit together or not at all.
async fn apply_changes(
    services: &Services,
    changes: &[(Decision, Option<i64>)],
    members: &Members,
    now: i64,
) -> Result<(), AppError> {
    if changes.is_empty() {
        return Ok(());
    }
    let records: Vec<(TierChange, Option<i64>)> = changes
        .iter()
        .map(|(d, failing)| {
            let change = TierChange {
                external_userid: d.external_userid.clone(),
                from_tier: d.from.clone(),
                to_tier: d.to.clone(),
                reason: d.reason.clone(),
                at: now,
            };
            (change, *failing)
        })
        .collect();
    let mut tx = services.store.begin().await?;
    let ids = store_tiers::record_tier_changes(&mut tx, &records).await?;
    let recorded: Vec<TierChanged> = changes
        .iter()
        .zip(ids)
        // None: another evaluation made this change first; it set off what the change sets off.
        .filter_map(|((d, _), id)| {
            Some(TierChanged {
                change_id: id?,
                external_userid: d.external_userid.clone(),
                from: d.from.clone(),
                to: d.to.clone(),
                at: now,
                members: members.get(&d.external_userid).cloned().unwrap_or_default(),
            })
        })
        .collect();
    services
        .hooks()
        .tier_changed(services, &mut tx, &recorded)
        .await?;
    tx.commit().await?;
    tracing::info!(changes = recorded.len(), "tier changes recorded");
    Ok(())
}

/// The metric values the rules look at, for one customer (the customer view).
pub async fn metrics_of(
    services: &Services,
    external_userid: &ExternalUserId,
) -> Result<Vec<MetricValue>, AppError> {
    let mut tiers = compile(&services.tiers().await?).map_err(AppError::Invalid)?;
    let terms = index_terms(&mut tiers);
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let who = [external_userid.clone()];
    let read =
        services
            .store
            .for_each_customer_metrics(services.clock.now_ms(), &terms, Some(&who), tx);
    let (read, values) = tokio::join!(read, async {
        rx.recv().await.map(|batch| {
            let mut first = None;
            batch.for_each(|_, v| {
                first.get_or_insert_with(|| v.to_vec());
            });
            first.unwrap_or_default()
        })
    });
    read?;
    let values = values.unwrap_or_default();
    Ok(Metrics {
        terms: &terms,
        values: &values,
    }
    .values())
}

/// Customers per tier and the moves of the last day, week and month.
pub async fn summary(services: &Services) -> Result<serde_json::Value, AppError> {
    let counts = services.store.customers_per_tier().await?;
    let in_force = services.tiers().await?;
    let tiers: Vec<serde_json::Value> = in_force
        .iter()
        .map(|t| {
            let n = counts
                .iter()
                .find(|(code, _)| *code == t.code)
                .map_or(0, |(_, n)| *n);
            serde_json::json!({ "code": t.code, "name": t.name, "customers": n })
        })
        .collect();
    let now = services.clock.now_ms();
    let mut moves = serde_json::Map::new();
    for (label, days) in [("day", 1), ("week", 7), ("month", 30)] {
        let rows = services.store.tier_moves_since(now - days * DAY_MS).await?;
        let (mut up, mut down) = (0, 0);
        let detail: Vec<serde_json::Value> = rows
            .iter()
            .map(|(from, to, n)| {
                if is_promotion(&in_force, from, to) {
                    up += n;
                } else {
                    down += n;
                }
                serde_json::json!({ "from": from, "to": to, "customers": n })
            })
            .collect();
        moves.insert(
            label.into(),
            serde_json::json!({ "promoted": up, "demoted": down, "moves": detail }),
        );
    }
    let segments: Vec<serde_json::Value> = services
        .store
        .customers_per_segment()
        .await?
        .into_iter()
        .map(|(segment, n)| serde_json::json!({ "segment": segment, "customers": n }))
        .collect();
    Ok(serde_json::json!({ "tiers": tiers, "segments": segments, "moves": moves }))
}

/// Whether a move from `from` to `to` is a promotion: to a higher tier in the order in force. A
/// move to a tier no longer in force counts as a demotion, one from such a tier as a promotion.
pub fn is_promotion(in_force: &[TierSettings], from: &str, to: &str) -> bool {
    let rank = |code: &str| in_force.iter().position(|t| t.code == code);
    rank(to) > rank(from)
}

/// What an operator sends to pin a customer's tier.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinInput {
    pub tier: String,
    pub reason: String,
    /// RFC 3339; none: until unpinned.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Who pins (shown in the history).
    #[serde(default)]
    pub by: Option<String>,
}

/// Pins (or with `None` unpins) a customer's tier, and re-evaluates the customer at once.
pub async fn pin(
    services: &Services,
    external_userid: &ExternalUserId,
    input: Option<PinInput>,
) -> Result<(), AppError> {
    if services.store.customer(external_userid).await?.is_none() {
        return Err(AppError::NotFound(format!(
            "no customer {external_userid:?}"
        )));
    }
    let now = services.clock.now_ms();
    let pin = match input {
        None => None,
        Some(p) => {
            let in_force = services.tiers().await?;
            if !in_force.iter().any(|t| t.code == p.tier) {
                let codes: Vec<&str> = in_force.iter().map(|t| t.code.as_str()).collect();
                return Err(AppError::Invalid(format!(
                    "tier: {:?} is not one of {}",
                    p.tier,
                    codes.join(", ")
                )));
            }
            if p.reason.trim().is_empty() {
                return Err(AppError::Invalid(
                    "reason: say why the customer is pinned".into(),
                ));
            }
            let expires_at = match p.expires_at.as_deref() {
                None => None,
                Some(t) => Some(
                    chrono::DateTime::parse_from_rfc3339(t)
                        .map_err(|e| {
                            AppError::Invalid(format!(
                                "expires_at: {t:?} is not an RFC 3339 time: {e}"
                            ))
                        })?
                        .timestamp_millis(),
                ),
            };
            if expires_at.is_some_and(|e| e <= now) {
                return Err(AppError::Invalid("expires_at: already past".into()));
            }
            Some(store_tiers::Pin {
                tier: p.tier,
                reason: p.reason,
                pinned_by: p.by.unwrap_or_else(|| "operator".into()),
                expires_at,
            })
        }
    };
    services
        .store
        .set_pin(external_userid, pin.as_ref(), now)
        .await?;
    evaluate(services, Some(std::slice::from_ref(external_userid)), true).await?;
    Ok(())
}

/// Enqueues, in the transaction that decided it, the evaluation of some customers (incremental)
/// or everyone (`None`).
pub async fn enqueue_evaluation(
    services: &Services,
    tx: &mut Tx,
    customers: Option<Vec<ExternalUserId>>,
    key: &str,
) -> Result<(), AppError> {
    services
        .enqueue(tx, EVALUATE_JOB, &EvaluateJob { customers }, key, None)
        .await
}

pub fn register(services: &Services, r: &mut Registrar) {
    let s = services.clone();
    r.jobs.register(EVALUATE_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: EvaluateJob = ctx.payload()?;
            let report = evaluate_with(&s, job.customers.as_deref(), true, |_| {}).await?;
            tracing::info!(
                customers = report.customers,
                changes = report.changes,
                "tiers evaluated"
            );
            // Segments rank customers against everyone: only a full evaluation updates them.
            if job.customers.is_none() {
                super::segments::evaluate(&s, true).await?;
            }
            Ok(())
        }
    });
    r.recurring.push(nightly());
}

/// The nightly full evaluation, as a recurring job (03:00 in `jobs.timezone`).
pub fn nightly() -> crate::jobs::scheduler::Recurring {
    crate::jobs::scheduler::Recurring {
        name: NIGHTLY.into(),
        cron: "0 3 * * *".into(),
        job_kind: EVALUATE_JOB.into(),
        payload: serde_json::to_value(EvaluateJob::default()).unwrap_or(serde_json::Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_are_parsed_exactly() {
        assert_eq!(parse_yuan("2500.00"), Ok(250_000));
        assert_eq!(parse_yuan("2500"), Ok(250_000));
        assert_eq!(parse_yuan("0.1"), Ok(10));
        assert_eq!(parse_yuan("1999.99"), Ok(199_999));
        assert_eq!(parse_yuan("\"12.34\""), Ok(1234));
        assert!(parse_yuan("1.234").unwrap_err().contains("two decimals"));
        assert!(parse_yuan("1e3").is_err());
        assert!(parse_yuan("").is_err());
        assert!(parse_yuan("99999999999999999999").is_err());
        assert_eq!(yuan(199_999), "1999.99");
    }

    #[test]
    fn the_default_rules_compile() {
        validate(&Settings::default()).unwrap();
        let mut s = Settings::default();
        s.tiers[1].promote.any[0].min = serde_json::json!("12.345");
        assert!(
            validate(&s)
                .unwrap_err()
                .contains("tiers[1].promote.any[0]")
        );
    }
}
