//! What the soak holds siyu to at the end, each check a pure function of a [`Snapshot`]: what
//! WeCom (the fake) saw and holds, what the balancer carried, and what siyu's database says. A
//! check answers every problem it finds, each naming the relation, job, event or API path and
//! what is wrong, so that an engineer can go and look.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::fake::{
    Call, Failure, FollowView, GroupChatView, MassMessageView, MomentView, SentWelcome,
    TagGroupView,
};
use crate::store::campaigns::{CampaignSend, CampaignSendKind, CampaignSendStatus, Run, RunStatus};
use crate::store::contacts::{Channel, CustomerRow, Follow, FollowStatus, SiyuTag, TagKind};
use crate::store::groups::{Invitation, InvitationStatus, InviteSend, Membership, Removal};
use crate::store::inbox::InboxEntry;
use crate::store::jobs::{JobRecord, JobState};
use crate::wecom::event::{ContactChange, Event};

pub const WELCOME_PATH: &str = "/cgi-bin/externalcontact/send_welcome_msg";
/// WeCom accepts a welcome within 20 s of the add.
pub const WELCOME_WINDOW: Duration = Duration::from_secs(20);
/// WeCom counts its frequency limits per minute.
const PACE_WINDOW_MS: i64 = 60_000;
/// The WeCom answer of a welcome code used before.
const CODE_USED: i64 = 41051;

/// A callback as WeCom sent it.
#[derive(Debug, Clone)]
pub struct SentCallback {
    /// siyu's dedupe key of the event.
    pub key: String,
    pub kind: String,
    pub xml: String,
    pub first_sent: SystemTime,
    /// Tries (redeliveries included) a replica answered 200.
    pub acknowledged: u32,
}

/// One relation siyu holds, with what WeCom holds of it.
#[derive(Debug, Clone)]
pub struct Relation {
    pub follow: Follow,
    pub customer: CustomerRow,
    /// The member's view at WeCom (None: WeCom has no such relation).
    pub at_wecom: Option<FollowView>,
    /// The remark and description the templates make of siyu's state.
    pub expected_note: (String, String),
}

/// A campaign with its runs and their sends.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: i64,
    pub kind: String,
    pub text: String,
    pub runs: Vec<(Run, Vec<CampaignSend>)>,
    /// Each send's recipients (external userids, or chat ids for a group send), by send id.
    pub targets: HashMap<i64, Vec<String>>,
}

/// A tier that has groups, as siyu holds it and as WeCom does.
#[derive(Debug, Clone, Default)]
pub struct TierGroups {
    pub tier: String,
    /// The tier's live groups, as siyu lists them.
    pub chats: Vec<String>,
    /// Customers siyu records in them now.
    pub members: Vec<Membership>,
    /// Those groups at WeCom.
    pub at_wecom: Vec<GroupChatView>,
    pub open_removals: Vec<Removal>,
    /// Each customer's latest invitation to the tier.
    pub invitations: HashMap<String, Invitation>,
    /// Customers who were in one of its groups and left.
    pub left_before: HashSet<String>,
}

/// Everything the checks look at, taken once the queue has drained.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When it was taken (Unix ms).
    pub now_ms: i64,
    pub calls: Vec<Call>,
    pub callbacks: Vec<SentCallback>,
    pub inbox: Vec<InboxEntry>,
    pub welcomes: Vec<SentWelcome>,
    pub jobs: Vec<JobRecord>,
    pub channels: Vec<Channel>,
    pub relations: Vec<Relation>,
    pub siyu_tags: Vec<SiyuTag>,
    pub library: Vec<TagGroupView>,
    /// Tag id → the name an admin gave it in the console.
    pub renames: HashMap<String, String>,
    /// Tier codes and names, lowest first.
    pub tiers: Vec<(String, String)>,
    pub campaigns: Vec<Campaign>,
    pub mass_messages: Vec<MassMessageView>,
    pub moments: Vec<MomentView>,
    pub tier_groups: Vec<TierGroups>,
    pub invite_sends: HashMap<i64, InviteSend>,
    /// Job kinds that poll WeCom for an outcome on their own schedule (they may be queued for
    /// later at the end).
    pub poll_kinds: Vec<String>,
    /// `wecom.calls_per_minute`: the pace per API path.
    pub calls_per_minute: u32,
}

/// How one check came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: &'static str,
    pub problems: Vec<String>,
}

impl Outcome {
    fn new(name: &'static str, problems: Vec<String>) -> Outcome {
        Outcome { name, problems }
    }

    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// `check <name>: ok`, or `check <name>: FAILED <count> problem(s): <the first few>`.
    pub fn line(&self) -> String {
        const SHOWN: usize = 5;
        if self.passed() {
            return format!("check {}: ok", self.name);
        }
        let mut shown: Vec<&str> = self
            .problems
            .iter()
            .take(SHOWN)
            .map(String::as_str)
            .collect();
        if self.problems.len() > SHOWN {
            shown.push("…");
        }
        format!(
            "check {}: FAILED {} problem(s): {}",
            self.name,
            self.problems.len(),
            shown.join("; ")
        )
    }
}

/// Every check, in the order the issue lists them.
pub fn run_all(s: &Snapshot) -> Vec<Outcome> {
    vec![
        callbacks_stored_and_handled_once(s),
        welcome_codes_used_once(s),
        welcomes_in_time_or_missed_with_why(s),
        siyu_tags_in_the_library(s),
        relation_tags(s),
        relation_notes(s),
        campaign_tasks_once(s),
        invitations_and_removals(s),
        jobs_finished(s),
        pace_per_path(s),
    ]
}

fn wall_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn short(key: &str) -> &str {
    &key[..key.len().min(16)]
}

/// Every acknowledged callback is in the inbox (by siyu's key: once) and was handled: done,
/// with every redelivery counted as a duplicate rather than handled again. No stored event is
/// left failed, unhandled or waiting.
pub fn callbacks_stored_and_handled_once(s: &Snapshot) -> Outcome {
    let inbox: HashMap<&str, &InboxEntry> =
        s.inbox.iter().map(|e| (e.dedupe_key.as_str(), e)).collect();
    let mut problems = Vec::new();
    for c in s.callbacks.iter().filter(|c| c.acknowledged > 0) {
        match inbox.get(c.key.as_str()) {
            None => problems.push(format!(
                "{} event {} acknowledged {} time(s) but not in the inbox",
                c.kind,
                short(&c.key),
                c.acknowledged
            )),
            Some(e) if i64::from(c.acknowledged) - 1 > e.duplicates => problems.push(format!(
                "{} event {}: acknowledged {} times, {} counted as duplicates",
                c.kind,
                short(&c.key),
                c.acknowledged,
                e.duplicates
            )),
            Some(_) => {}
        }
    }
    for e in s.inbox.iter().filter(|e| e.status != "done") {
        problems.push(format!(
            "inbox event {} ({}) is {}{}",
            short(&e.dedupe_key),
            e.kind,
            e.status,
            e.error
                .as_deref()
                .map(|why| format!(": {why}"))
                .unwrap_or_default()
        ));
    }
    Outcome::new("callbacks stored and handled once", problems)
}

/// The welcome code of a `send_welcome_msg` call.
fn welcome_code_of(call: &Call) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(&call.body).ok()?;
    body["welcome_code"].as_str().map(str::to_owned)
}

/// A call whose effect happened at WeCom while its caller never read the answer.
fn answer_lost(call: &Call) -> bool {
    call.errcode == Some(0) && matches!(call.fault, Some(Failure::Timeout | Failure::BrokenBody))
}

/// Each welcome code was used at most once: at most one accepted `send_welcome_msg` and one
/// delivered welcome per code, and a 41051 only after a send of the same code whose answer was
/// lost (siyu then resends byte for byte to learn the outcome), with its job reconciled (done).
pub fn welcome_codes_used_once(s: &Snapshot) -> Outcome {
    let mut problems = Vec::new();
    let mut by_code: BTreeMap<String, Vec<&Call>> = BTreeMap::new();
    for call in s.calls.iter().filter(|c| c.path == WELCOME_PATH) {
        if let Some(code) = welcome_code_of(call) {
            by_code.entry(code).or_default().push(call);
        }
    }
    for (code, calls) in &by_code {
        let accepted = calls.iter().filter(|c| c.errcode == Some(0)).count();
        if accepted > 1 {
            problems.push(format!("welcome code {code}: accepted {accepted} times"));
        }
        for (i, used) in calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.errcode == Some(CODE_USED))
        {
            let lost_before = calls[..i].iter().any(|c| answer_lost(c));
            if !lost_before {
                problems.push(format!(
                    "welcome code {code}: 41051 at {} ms with no earlier send whose answer was lost (siyu sent a code it knew was used)",
                    wall_ms(used.at)
                ));
                continue;
            }
            let job = s
                .jobs
                .iter()
                .find(|j| j.idempotency_key == format!("welcome:{code}"));
            if let Some(job) = job.filter(|j| j.state != JobState::Done) {
                problems.push(format!(
                    "welcome code {code}: 41051 after a lost answer, but its job {} is {} ({}) rather than reconciled as sent",
                    job.id,
                    job.state,
                    job.last_error.as_deref().unwrap_or("")
                ));
            }
        }
    }
    let mut delivered: HashMap<&str, usize> = HashMap::new();
    for w in &s.welcomes {
        *delivered.entry(w.welcome_code.as_str()).or_default() += 1;
    }
    for (code, n) in delivered.into_iter().filter(|(_, n)| *n > 1) {
        problems.push(format!("welcome code {code}: {n} welcomes delivered"));
    }
    Outcome::new("welcome codes used once", problems)
}

/// An acknowledged add that siyu should welcome: the add's code, member, customer, and when
/// WeCom first sent it.
struct Add<'a> {
    code: String,
    userid: String,
    external_userid: String,
    sent: SystemTime,
    callback: &'a SentCallback,
}

fn welcomed_adds(s: &Snapshot) -> Vec<Add<'_>> {
    let welcoming: HashSet<&str> = s
        .channels
        .iter()
        .filter(|c| c.welcome.is_some())
        .map(|c| c.code.as_str())
        .collect();
    s.callbacks
        .iter()
        .filter(|c| c.acknowledged > 0)
        .filter_map(|c| match crate::wecom::event::parse(&c.xml).ok()? {
            Event::ExternalContact {
                change: ContactChange::Add | ContactChange::AddHalf,
                user_id: Some(userid),
                external_user_id: Some(external_userid),
                state,
                welcome_code: Some(code),
                ..
            } if !code.is_empty() && state.as_deref().is_some_and(|st| welcoming.contains(st)) => {
                Some(Add {
                    code,
                    userid: userid.to_string(),
                    external_userid: external_userid.to_string(),
                    sent: c.first_sent,
                    callback: c,
                })
            }
            _ => None,
        })
        .collect()
}

/// When WeCom accepted a `send_welcome_msg` of each welcome code.
fn accepted_welcomes(s: &Snapshot) -> HashMap<String, SystemTime> {
    s.calls
        .iter()
        .filter(|c| c.path == WELCOME_PATH && c.errcode == Some(0))
        .filter_map(|c| Some((welcome_code_of(c)?, c.at)))
        .collect()
}

/// The latencies (first send of the callback to the accepted `send_welcome_msg`) of the
/// welcomes that went out, sorted, and the misses by reason.
pub fn welcome_figures(s: &Snapshot) -> (Vec<Duration>, BTreeMap<String, usize>) {
    let accepted = accepted_welcomes(s);
    let mut latencies = Vec::new();
    let mut missed: BTreeMap<String, usize> = BTreeMap::new();
    for add in welcomed_adds(s) {
        match accepted.get(&add.code) {
            Some(at) => latencies.push(at.duration_since(add.sent).unwrap_or_default()),
            None => {
                let why = s
                    .jobs
                    .iter()
                    .find(|j| j.idempotency_key == format!("welcome:{}", add.code))
                    .and_then(|j| j.last_error.clone())
                    .unwrap_or_else(|| "no job".into());
                *missed.entry(reason_class(&why)).or_default() += 1;
            }
        }
    }
    latencies.sort();
    (latencies, missed)
}

/// A failure's reason without what varies from one to the next (ids, codes, times).
pub fn reason_class(why: &str) -> String {
    let cut: String = why.chars().take(90).collect();
    cut.split_whitespace()
        .map(|w| {
            if w.chars().filter(char::is_ascii_alphanumeric).count() >= 16 {
                "…"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every acknowledged add through a channel with a welcome was welcomed within WeCom's 20 s,
/// or its welcome job failed and says why (the code expired, or was used).
pub fn welcomes_in_time_or_missed_with_why(s: &Snapshot) -> Outcome {
    let accepted = accepted_welcomes(s);
    let delivered: HashMap<&str, &SentWelcome> = s
        .welcomes
        .iter()
        .map(|w| (w.welcome_code.as_str(), w))
        .collect();
    let mut problems = Vec::new();
    for add in welcomed_adds(s) {
        let who = format!("{}/{}", add.userid, add.external_userid);
        if let Some(at) = accepted.get(&add.code) {
            let latency = at.duration_since(add.sent).unwrap_or_default();
            if latency > WELCOME_WINDOW {
                problems.push(format!(
                    "{who}: welcomed {:.1} s after the add, past WeCom's 20 s",
                    latency.as_secs_f64()
                ));
            }
            match delivered.get(add.code.as_str()) {
                Some(w) if w.external_userid != add.external_userid || w.userid != add.userid => {
                    problems.push(format!(
                        "{who}: the welcome of code {} went to {}/{}",
                        add.code, w.userid, w.external_userid
                    ))
                }
                Some(_) => {}
                None => problems.push(format!(
                    "{who}: send_welcome_msg accepted but WeCom delivered no welcome"
                )),
            }
            continue;
        }
        let key = format!("welcome:{}", add.code);
        match s.jobs.iter().find(|j| j.idempotency_key == key) {
            None => problems.push(format!(
                "{who}: acknowledged add ({} tries) but no welcome job and no welcome",
                add.callback.acknowledged
            )),
            Some(j) if j.state == JobState::Failed && j.last_error.is_some() => {}
            Some(j) => problems.push(format!(
                "{who}: no welcome went out, yet job {} is {}{}",
                j.id,
                j.state,
                j.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )),
        }
    }
    Outcome::new("welcomes within 20 s or missed with why", problems)
}

/// The tag siyu means for a relation's channel, extras, tier and segment, by kind and code.
fn wanted(r: &Relation, channels: &[Channel]) -> Vec<(TagKind, String)> {
    let mut want = vec![(TagKind::Channel, r.follow.channel.clone())];
    if let Some(c) = channels.iter().find(|c| c.code == r.follow.channel) {
        want.extend(c.tags.iter().map(|t| (TagKind::Extra, t.clone())));
    }
    want.push((TagKind::Tier, r.customer.tier.clone()));
    if let Some(segment) = &r.customer.segment {
        want.push((TagKind::Segment, segment.clone()));
    }
    want
}

/// The name siyu gives a tag of its own (before any admin renames it).
fn intended_name(s: &Snapshot, tag: &SiyuTag) -> String {
    match tag.kind {
        TagKind::Channel => s.channels.iter().find(|c| c.code == tag.code).map_or_else(
            || crate::app::tags::UNATTRIBUTED_NAME.to_owned(),
            |c| c.name.clone(),
        ),
        TagKind::Tier => s
            .tiers
            .iter()
            .find(|(code, _)| *code == tag.code)
            .map_or_else(|| tag.code.clone(), |(_, name)| name.clone()),
        TagKind::Extra | TagKind::Segment => tag.code.clone(),
    }
}

fn live_tag<'a>(library: &'a [TagGroupView], id: &str) -> Option<(&'a TagGroupView, &'a str)> {
    library.iter().filter(|g| !g.deleted).find_map(|g| {
        g.tag
            .iter()
            .find(|t| t.id == id && !t.deleted)
            .map(|t| (g, t.name.as_str()))
    })
}

/// Each of siyu's tags is live in WeCom's library under the id siyu holds, with the name siyu
/// gave it, or the one an admin renamed it to (siyu follows the id).
pub fn siyu_tags_in_the_library(s: &Snapshot) -> Outcome {
    let mut problems = Vec::new();
    for tag in &s.siyu_tags {
        let what = format!("{} tag {:?}", tag.kind, tag.code);
        let Some(id) = &tag.tag_id else {
            problems.push(format!("{what}: siyu has no WeCom id for it"));
            continue;
        };
        match live_tag(&s.library, id.as_str()) {
            None => problems.push(format!(
                "{what}: siyu holds id {id}, which WeCom's library no longer has"
            )),
            Some((group, name)) => {
                let expected = s
                    .renames
                    .get(id.as_str())
                    .cloned()
                    .unwrap_or_else(|| intended_name(s, tag));
                if name != expected {
                    problems.push(format!(
                        "{what} ({id}): WeCom names it {name:?}, expected {expected:?}"
                    ));
                }
                if group.group_name != tag.group_name {
                    problems.push(format!(
                        "{what} ({id}): in WeCom's group {:?}, siyu says {:?}",
                        group.group_name, tag.group_name
                    ));
                }
            }
        }
    }
    Outcome::new("siyu's tags in the library", problems)
}

/// Relations both sides hold as live: siyu's connected ones WeCom can still reach.
fn live_relations(s: &Snapshot) -> impl Iterator<Item = (&Relation, &FollowView)> {
    s.relations.iter().filter_map(|r| {
        let at = r.at_wecom.as_ref()?;
        (r.follow.status == FollowStatus::Connected && at.sendable()).then_some((r, at))
    })
}

fn relation_name(r: &Relation) -> String {
    format!("{}/{}", r.follow.userid, r.follow.external_userid)
}

/// Every live relation carries at WeCom exactly the siyu tags its channel, the channel's extra
/// tags, the customer's tier and segment say — no more of siyu's, no fewer.
pub fn relation_tags(s: &Snapshot) -> Outcome {
    let by_code: HashMap<(TagKind, &str), &str> = s
        .siyu_tags
        .iter()
        .filter_map(|t| Some(((t.kind, t.code.as_str()), t.tag_id.as_ref()?.as_str())))
        .collect();
    let siyus: HashSet<&str> = by_code.values().copied().collect();
    let name_of =
        |id: &str| live_tag(&s.library, id).map_or_else(|| id.to_owned(), |(_, n)| n.to_owned());
    let mut problems = Vec::new();
    for (r, at) in live_relations(s) {
        let mut expected = Vec::new();
        for (kind, code) in wanted(r, &s.channels) {
            match by_code.get(&(kind, code.as_str())) {
                Some(id) => expected.push(*id),
                None => problems.push(format!(
                    "{}: siyu has no tag for {kind} {code:?}",
                    relation_name(r)
                )),
            }
        }
        let mut actual: Vec<&str> = at
            .tags
            .iter()
            .map(String::as_str)
            .filter(|t| siyus.contains(t))
            .collect();
        expected.sort_unstable();
        expected.dedup();
        actual.sort_unstable();
        actual.dedup();
        if actual != expected {
            let names = |ids: &[&str]| {
                ids.iter()
                    .map(|i| name_of(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            problems.push(format!(
                "{} (channel {}, tier {}, segment {}): WeCom has [{}], siyu's state says [{}]",
                relation_name(r),
                r.follow.channel,
                r.customer.tier,
                r.customer.segment.as_deref().unwrap_or("-"),
                names(&actual),
                names(&expected)
            ));
        }
    }
    Outcome::new("relation tags", problems)
}

/// Every live relation's remark and description at WeCom are what the note templates make of
/// siyu's state.
pub fn relation_notes(s: &Snapshot) -> Outcome {
    let mut problems = Vec::new();
    for (r, at) in live_relations(s) {
        let (remark, description) = &r.expected_note;
        if &at.remark != remark {
            problems.push(format!(
                "{}: remark {:?}, the template says {remark:?}",
                relation_name(r),
                at.remark
            ));
        }
        if &at.description != description {
            problems.push(format!(
                "{}: description {:?}, the template says {description:?}",
                relation_name(r),
                at.description
            ));
        }
    }
    Outcome::new("relation notes", problems)
}

/// A one-to-one send none of whose recipients is, at WeCom, still a customer of its sender.
fn nobody_left_to_send_to(s: &Snapshot, c: &Campaign, send: &CampaignSend) -> bool {
    if send.kind != CampaignSendKind::Template {
        return false;
    }
    let Some(targets) = c.targets.get(&send.id) else {
        return false;
    };
    // WeCom's view alone decides: siyu may not have heard yet of a customer who came back.
    !targets.iter().any(|t| {
        s.relations.iter().any(|r| {
            r.follow.userid == send.sender
                && r.follow.external_userid.as_str() == t.as_str()
                && r.at_wecom.as_ref().is_some_and(|at| at.sendable())
        })
    })
}

/// Every campaign ran, and each of its runs' sends (one per sender and chunk, or one Moments
/// task) is exactly one task at WeCom: `add_msg_template` / `add_moment_task` once, none left
/// pending, none made without a send.
pub fn campaign_tasks_once(s: &Snapshot) -> Outcome {
    let mut problems = Vec::new();
    for c in &s.campaigns {
        let name = format!("campaign {} ({})", c.id, c.kind);
        if c.runs.is_empty() {
            problems.push(format!("{name}: never ran"));
        }
        // What WeCom holds for this campaign: its tasks by their text.
        let templates: Vec<&MassMessageView> = s
            .mass_messages
            .iter()
            .filter(|m| m.text.as_deref() == Some(c.text.as_str()))
            .collect();
        let moments: Vec<&MomentView> = s
            .moments
            .iter()
            .filter(|m| m.text.as_deref() == Some(c.text.as_str()))
            .collect();
        let mut expected_templates: HashMap<(&str, &str), usize> = HashMap::new();
        let mut expected_moments = 0usize;
        for (run, sends) in &c.runs {
            // A run stays `sending` while its tasks' results are followed; `pending` means it
            // never made its sends.
            if run.status == RunStatus::Pending {
                problems.push(format!("{name}: run {} is still pending", run.id));
            }
            for send in sends {
                let what = format!(
                    "{name} run {} send {} ({} chunk {})",
                    run.id, send.id, send.sender, send.chunk
                );
                match send.status {
                    CampaignSendStatus::Pending => {
                        problems.push(format!("{what}: still pending"));
                        continue;
                    }
                    // WeCom refuses a task when every recipient has left the sender since the
                    // run was planned (41048): a right outcome, when WeCom agrees none is left.
                    CampaignSendStatus::Failed if nobody_left_to_send_to(s, c, send) => continue,
                    CampaignSendStatus::Failed => {
                        problems.push(format!(
                            "{what}: failed ({})",
                            send.error.as_deref().unwrap_or("no reason")
                        ));
                        continue;
                    }
                    CampaignSendStatus::Cancelled => continue,
                    CampaignSendStatus::Tasked
                    | CampaignSendStatus::Sent
                    | CampaignSendStatus::Unsent => {}
                }
                match send.kind {
                    CampaignSendKind::Moment => expected_moments += 1,
                    CampaignSendKind::Template => {
                        *expected_templates
                            .entry(("single", send.sender.as_str()))
                            .or_default() += 1
                    }
                    CampaignSendKind::GroupTemplate => {
                        *expected_templates
                            .entry(("group", send.sender.as_str()))
                            .or_default() += 1
                    }
                }
                let found = match send.kind {
                    CampaignSendKind::Moment => send
                        .jobid
                        .as_deref()
                        .is_some_and(|j| moments.iter().any(|m| m.jobid == j)),
                    _ => send
                        .msgid
                        .as_deref()
                        .is_some_and(|id| templates.iter().any(|m| m.msgid == id)),
                };
                if !found {
                    problems.push(format!(
                        "{what}: {} but WeCom has no task of its id",
                        send.status
                    ));
                }
            }
        }
        let mut made: HashMap<(&str, &str), usize> = HashMap::new();
        for m in &templates {
            *made
                .entry((m.chat_type.as_str(), m.sender.as_deref().unwrap_or("")))
                .or_default() += 1;
        }
        for (key, n) in &made {
            let want = expected_templates.get(key).copied().unwrap_or(0);
            if *n != want {
                problems.push(format!(
                    "{name}: WeCom has {n} {} add_msg_template task(s) from {}, siyu's sends say {want}",
                    key.0, key.1
                ));
            }
        }
        for (key, want) in &expected_templates {
            if !made.contains_key(key) {
                problems.push(format!(
                    "{name}: siyu's sends say {want} {} task(s) from {}, WeCom has none",
                    key.0, key.1
                ));
            }
        }
        if moments.len() != expected_moments {
            problems.push(format!(
                "{name}: WeCom has {} add_moment_task task(s), siyu's sends say {expected_moments}",
                moments.len()
            ));
        }
    }
    Outcome::new("campaign tasks made once", problems)
}

/// Invitations and removal requests match the tiers: for each tier with groups, siyu's record of
/// who is in its groups is WeCom's; a customer in a group above their tier has an open removal
/// request and no one else has; a customer of the tier who is in none of its groups was invited
/// (or was in one and left, or can no longer be reached); each invitation handed to a member
/// is in that member's task at WeCom.
pub fn invitations_and_removals(s: &Snapshot) -> Outcome {
    let rank = |tier: &str| s.tiers.iter().position(|(code, _)| code == tier);
    let tier_of: HashMap<&str, &str> = s
        .relations
        .iter()
        .map(|r| {
            (
                r.customer.external_userid.as_str(),
                r.customer.tier.as_str(),
            )
        })
        .collect();
    let reachable: HashSet<&str> = live_relations(s)
        .map(|(r, _)| r.customer.external_userid.as_str())
        .collect();
    let mut problems = Vec::new();
    for tg in &s.tier_groups {
        let tier = tg.tier.as_str();
        let mut siyu_in: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for m in &tg.members {
            siyu_in
                .entry(m.external_userid.as_str())
                .or_default()
                .push(m.chat_id.as_str());
        }
        let mut wecom_in: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for chat in &tg.at_wecom {
            for m in chat.member_list.iter().filter(|m| m.kind == 2) {
                wecom_in
                    .entry(m.userid.as_str())
                    .or_default()
                    .push(chat.chat_id.as_str());
            }
        }
        for v in siyu_in.values_mut().chain(wecom_in.values_mut()) {
            v.sort_unstable();
        }
        for id in siyu_in
            .keys()
            .chain(wecom_in.keys())
            .collect::<HashSet<_>>()
        {
            let (ours, theirs) = (siyu_in.get(id), wecom_in.get(id));
            if ours != theirs {
                problems.push(format!(
                    "{id} in {tier}'s groups: siyu records {:?}, WeCom has {:?}",
                    ours.cloned().unwrap_or_default(),
                    theirs.cloned().unwrap_or_default()
                ));
            }
        }
        for (id, chats) in &wecom_in {
            let customer_tier = tier_of.get(id).copied();
            let above = match (customer_tier.and_then(rank), rank(tier)) {
                (Some(c), Some(g)) => g > c,
                _ => false,
            };
            let removal = tg
                .open_removals
                .iter()
                .any(|r| r.external_userid.as_str() == *id);
            if above && !removal {
                problems.push(format!(
                    "{id} ({}) is in {tier}'s group {chats:?} and no owner was asked to remove them",
                    customer_tier.unwrap_or("unknown")
                ));
            }
            if !above && removal {
                problems.push(format!(
                    "{id} ({}) belongs in {tier}'s group {chats:?}, yet a removal request is open",
                    customer_tier.unwrap_or("unknown")
                ));
            }
        }
        for r in &tg.open_removals {
            if !wecom_in.contains_key(r.external_userid.as_str()) {
                problems.push(format!(
                    "removal request {} for {} in {}: open, but they are in none of {tier}'s groups",
                    r.id, r.external_userid, r.chat_id
                ));
            }
        }
        let of_tier: Vec<&str> = tier_of
            .iter()
            .filter(|(_, t)| **t == tier)
            .map(|(id, _)| *id)
            .collect();
        for id in of_tier {
            if wecom_in.contains_key(id) || tg.left_before.contains(id) || !reachable.contains(id) {
                continue;
            }
            match tg.invitations.get(id) {
                None => problems.push(format!(
                    "{id} is of {tier}, in none of its groups, never invited"
                )),
                Some(i) if i.status == InvitationStatus::Cancelled => problems.push(format!(
                    "{id} is of {tier}, in none of its groups, and its invitation {} was cancelled",
                    i.id
                )),
                Some(_) => {}
            }
        }
        for (id, i) in &tg.invitations {
            if i.status == InvitationStatus::Queued {
                problems.push(format!(
                    "invitation {} of {id} to {tier}: still queued (never handed to {})",
                    i.id, i.userid
                ));
            }
            if !matches!(
                i.status,
                InvitationStatus::Tasked | InvitationStatus::Delivered
            ) {
                continue;
            }
            let Some(send) = i.send_id.and_then(|sid| s.invite_sends.get(&sid)) else {
                problems.push(format!(
                    "invitation {} of {id} to {tier}: {} without a send",
                    i.id, i.status
                ));
                continue;
            };
            let Some(msgid) = &send.msgid else {
                continue;
            };
            let in_task = s.mass_messages.iter().any(|m| {
                &m.msgid == msgid
                    && m.sender.as_deref() == Some(i.userid.as_str())
                    && m.results
                        .iter()
                        .any(|r| r.external_userid.as_deref() == Some(id.as_str()))
            });
            if !in_task {
                problems.push(format!(
                    "invitation {} of {id} to {tier}: {} in task {msgid}, which at WeCom is not {}'s to them",
                    i.id, i.status, i.userid
                ));
            }
        }
    }
    Outcome::new("invitations and removal requests match the tiers", problems)
}

/// Why a failed job failed, when that points at siyu rather than at WeCom's answer.
fn not_permanent(job: &JobRecord) -> Option<&'static str> {
    let why = job.last_error.as_deref().unwrap_or("");
    if why.contains("lease expired during the last attempt") {
        Some("its workers kept dying")
    } else if why.contains("panicked") {
        Some("a handler panicked")
    } else if why.starts_with("no handler") || why.starts_with("bad payload") {
        Some("siyu cannot run it")
    } else if job.attempts >= job.max_attempts {
        Some("its retries ran out")
    } else {
        None
    }
}

/// No job is left running or due and not run (those polling WeCom for an outcome may wait for
/// later); every failed job failed for a permanent reason (its handler said retrying cannot help)
/// rather than running out of retries or of workers.
pub fn jobs_finished(s: &Snapshot) -> Outcome {
    let mut problems = Vec::new();
    for j in &s.jobs {
        let what = format!("job {} ({}, {})", j.id, j.kind, j.idempotency_key);
        match j.state {
            JobState::Running => problems.push(format!("{what}: still running")),
            JobState::Queued if j.run_at <= s.now_ms => problems.push(format!(
                "{what}: queued and due {} ms ago, not run{}",
                s.now_ms - j.run_at,
                j.last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            )),
            JobState::Queued if !s.poll_kinds.contains(&j.kind) => problems.push(format!(
                "{what}: queued for {} ms from now{}",
                j.run_at - s.now_ms,
                j.last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            )),
            JobState::Failed => {
                if let Some(why) = not_permanent(j) {
                    problems.push(format!(
                        "{what}: failed after {} attempt(s), {why}: {}",
                        j.attempts,
                        j.last_error.as_deref().unwrap_or("")
                    ));
                }
            }
            JobState::Queued | JobState::Done => {}
        }
    }
    Outcome::new("no job left behind, failures permanent", problems)
}

/// For each API path, the most calls WeCom received in any 60 s, and where that window began.
pub fn peak_per_minute(calls: &[Call]) -> BTreeMap<String, (usize, i64)> {
    let mut times: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for c in calls {
        times
            .entry(c.path.as_str())
            .or_default()
            .push(wall_ms(c.at));
    }
    let mut peaks = BTreeMap::new();
    for (path, mut at) in times {
        at.sort_unstable();
        let (mut best, mut best_start, mut start) = (0usize, 0i64, 0usize);
        for end in 0..at.len() {
            while at[end] - at[start] >= PACE_WINDOW_MS {
                start += 1;
            }
            if end + 1 - start > best {
                best = end + 1 - start;
                best_start = at[start];
            }
        }
        peaks.insert(path.to_owned(), (best, best_start));
    }
    peaks
}

/// No API path was called more often in any 60 s than `wecom.calls_per_minute`, counting the
/// calls of every replica together (WeCom counts per corp). Calls paced evenly put one more than
/// the pace into a minute that begins with one of them and ends just after another (their
/// arrival a little later than their start): that one is allowed.
pub fn pace_per_path(s: &Snapshot) -> Outcome {
    let pace = s.calls_per_minute as usize;
    let problems = peak_per_minute(&s.calls)
        .into_iter()
        .filter(|(_, (n, _))| *n > pace + 1)
        .map(|(path, (n, start))| {
            format!("{path}: {n} calls in the 60 s from {start} ms, over the pace of {pace}")
        })
        .collect();
    Outcome::new("calls per API path within the pace", problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(path: &str, at_ms: u64) -> Call {
        Call {
            method: "POST".into(),
            path: path.into(),
            query: String::new(),
            body: String::new(),
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms),
            errcode: Some(0),
            http_status: 200,
            fault: None,
        }
    }

    #[test]
    fn the_pace_counts_every_window_of_a_minute() {
        let mut calls: Vec<Call> = (0..10).map(|i| call("/cgi-bin/a", i * 7_000)).collect();
        calls.push(call("/cgi-bin/b", 0));
        let peaks = peak_per_minute(&calls);
        assert_eq!(
            peaks["/cgi-bin/a"].0, 9,
            "0 to 56 s: nine calls within a minute"
        );
        assert_eq!(peaks["/cgi-bin/b"].0, 1);
        let s = Snapshot {
            calls,
            calls_per_minute: 7,
            ..Snapshot::default()
        };
        let outcome = pace_per_path(&s);
        assert_eq!(outcome.problems.len(), 1, "{:?}", outcome.problems);
        assert!(outcome.problems[0].starts_with("/cgi-bin/a: 9 calls"));
        let s = Snapshot {
            calls_per_minute: 8,
            ..s
        };
        assert!(
            pace_per_path(&s).passed(),
            "one over: the window's two ends"
        );
    }

    #[test]
    fn a_41051_is_fine_only_after_a_lost_answer() {
        let send = |at: u64, errcode: i64, fault: Option<Failure>| Call {
            body: r#"{"welcome_code":"CODE1","text":{"content":"hi"}}"#.into(),
            errcode: Some(errcode),
            fault,
            ..call(WELCOME_PATH, at)
        };
        let lost_then_used = Snapshot {
            calls: vec![
                send(0, 0, Some(Failure::Timeout)),
                send(3_000, CODE_USED, None),
            ],
            ..Snapshot::default()
        };
        assert!(welcome_codes_used_once(&lost_then_used).passed());
        let read_then_used = Snapshot {
            calls: vec![send(0, 0, None), send(3_000, CODE_USED, None)],
            ..Snapshot::default()
        };
        let outcome = welcome_codes_used_once(&read_then_used);
        assert_eq!(outcome.problems.len(), 1, "{:?}", outcome.problems);
        assert!(
            outcome.line().contains("welcome code CODE1: 41051"),
            "{}",
            outcome.line()
        );
    }

    #[test]
    fn a_failure_line_names_the_count_and_the_first_problems() {
        let o = Outcome::new("x", (0..7).map(|i| format!("p{i}")).collect());
        assert_eq!(
            o.line(),
            "check x: FAILED 7 problem(s): p0; p1; p2; p3; p4; …"
        );
        assert_eq!(Outcome::new("x", vec![]).line(), "check x: ok");
    }
}
