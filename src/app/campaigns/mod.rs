//! Campaigns: an operator writes a Moments post or a mass message once, picks who should get it
//! (tiers, segments, channels, members) and when (once, or on a cron until a date); siyu turns
//! each due time into WeCom's tasks for the audience in force then, exactly once, within WeCom's
//! caps, and follows what came of them. Every campaign message siyu writes to WeCom is decided
//! here ([`run`]).

pub mod run;

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{AppError, Registrar, Services};
use crate::ids::UserId;
use crate::store::campaigns::{
    self as store_campaigns, CampaignRow, CampaignSend, CampaignStatus, NewCampaign, Run,
};

pub fn register(services: &Services, r: &mut Registrar) {
    run::register(services, r);
}

/// Who a campaign is for. Every list that is not empty narrows the audience (a customer must be
/// of one of the tiers, and of one of the segments, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Audience {
    pub tiers: Vec<String>,
    pub segments: Vec<String>,
    pub channels: Vec<String>,
    /// Members (userids) who send; their customers only.
    #[schema(value_type = Vec<String>)]
    pub members: Vec<UserId>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Link {
    pub title: String,
    pub url: String,
    /// A media library image (`POST /api/v1/media`).
    pub cover: Option<i64>,
}

/// What is sent: text and attachments from the media library.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Content {
    pub text: Option<String>,
    /// Media library images.
    pub images: Vec<i64>,
    /// A media library video.
    pub video: Option<i64>,
    pub link: Option<Link>,
}

/// When: once `at` (RFC 3339), or on a `cron` (five fields, in `timezone`, default
/// Asia/Shanghai) until `until`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    pub at: Option<String>,
    pub cron: Option<String>,
    pub until: Option<String>,
    pub timezone: Option<String>,
}

/// `POST /api/v1/campaigns` (and `/campaigns/preview`).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    /// `moment`, `message` or `group_message`.
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub audience: Audience,
    #[serde(default)]
    pub content: Content,
    #[serde(default)]
    pub schedule: Schedule,
    /// Who creates it (shown with the campaign).
    #[serde(default)]
    pub by: Option<String>,
}

pub const KINDS: [&str; 3] = ["moment", "message", "group_message"];
pub const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

/// A checked schedule: its due times.
#[derive(Debug, Clone)]
pub enum When {
    Once(i64),
    Cron {
        schedule: Box<cron::Schedule>,
        until: Option<i64>,
        tz: chrono_tz::Tz,
    },
}

impl When {
    /// The first due time after `after` (ms), if any.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        match self {
            When::Once(at) => (*at > after).then_some(*at),
            When::Cron {
                schedule,
                until,
                tz,
            } => {
                let from = chrono::DateTime::from_timestamp_millis(after)?.with_timezone(tz);
                let next = schedule.after(&from).next()?.timestamp_millis();
                until.is_none_or(|u| next <= u).then_some(next)
            }
        }
    }

    /// Checks a schedule the operator sent at `now` (a time in the past is a problem).
    pub fn parse(schedule: &Schedule, now: i64) -> Result<When, Vec<String>> {
        Self::read(schedule, Some(now))
    }

    /// A stored schedule (checked when it was stored).
    pub fn stored(schedule: &Schedule) -> Option<When> {
        Self::read(schedule, None).ok()
    }

    fn read(schedule: &Schedule, now: Option<i64>) -> Result<When, Vec<String>> {
        let past = |t: i64| now.is_some_and(|n| t <= n);
        let mut problems = Vec::new();
        let tz_name = schedule.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE);
        let tz = chrono_tz::Tz::from_str(tz_name).unwrap_or_else(|_| {
            problems.push(format!("schedule.timezone: {tz_name:?} is not a time zone"));
            chrono_tz::Asia::Shanghai
        });
        let time = |field: &str, text: &str, problems: &mut Vec<String>| {
            match chrono::DateTime::parse_from_rfc3339(text) {
                Ok(t) => Some(t.timestamp_millis()),
                Err(e) => {
                    problems.push(format!(
                        "schedule.{field}: {text:?} is not an RFC 3339 time ({e})"
                    ));
                    None
                }
            }
        };
        let when = match (&schedule.at, &schedule.cron) {
            (Some(_), Some(_)) => {
                problems.push("schedule: give `at` or `cron`, not both".into());
                None
            }
            (None, None) => {
                problems.push("schedule: give `at` (once) or `cron` (recurring)".into());
                None
            }
            (Some(at), None) => {
                if schedule.until.is_some() {
                    problems.push("schedule.until: only with `cron`".into());
                }
                match time("at", at, &mut problems) {
                    Some(t) if past(t) => {
                        problems.push(format!("schedule.at: {at} is in the past"));
                        None
                    }
                    Some(t) => Some(When::Once(t)),
                    None => None,
                }
            }
            (None, Some(expr)) => {
                let until = match &schedule.until {
                    Some(u) => match time("until", u, &mut problems) {
                        Some(t) if past(t) => {
                            problems.push(format!("schedule.until: {u} is in the past"));
                            None
                        }
                        t => t,
                    },
                    None => None,
                };
                let fields = expr.split_whitespace().count();
                let full = if fields == 5 {
                    format!("0 {expr}")
                } else {
                    expr.clone()
                };
                match (fields, cron::Schedule::from_str(&full)) {
                    (5, Ok(s)) => Some(When::Cron {
                        schedule: Box::new(s),
                        until,
                        tz,
                    }),
                    (5, Err(e)) => {
                        problems.push(format!("schedule.cron: {expr:?} is not a cron ({e})"));
                        None
                    }
                    _ => {
                        problems.push(format!(
                            "schedule.cron: {expr:?} needs five fields (minute hour day month weekday)"
                        ));
                        None
                    }
                }
            }
        };
        match when {
            Some(w) if problems.is_empty() => {
                if let Some(now) = now
                    && w.next_after(now).is_none()
                {
                    return Err(vec!["schedule: it never falls due".into()]);
                }
                Ok(w)
            }
            _ => Err(problems),
        }
    }
}

/// Checks a campaign whole; every problem named with its field.
pub async fn validate(s: &Services, input: &CampaignInput) -> Result<When, AppError> {
    let now = s.clock.now_ms();
    let mut problems = Vec::new();
    let kind = input.kind.as_str();
    if !KINDS.contains(&kind) {
        problems.push(format!(
            "kind: {kind:?} is not one of moment, message, group_message"
        ));
    }
    let name_chars = input.name.trim().chars().count();
    if name_chars == 0 {
        problems.push("name: empty".into());
    } else if name_chars > 100 {
        problems.push(format!("name: {name_chars} characters; at most 100"));
    }
    check_audience(s, kind, &input.audience, &mut problems).await?;
    check_content(s, kind, &input.content, &mut problems).await?;
    let when = match When::parse(&input.schedule, now) {
        Ok(w) => Some(w),
        Err(p) => {
            problems.extend(p);
            None
        }
    };
    match when {
        Some(w) if problems.is_empty() => Ok(w),
        _ => Err(AppError::Invalid(problems.join("; "))),
    }
}

async fn check_audience(
    s: &Services,
    kind: &str,
    a: &Audience,
    problems: &mut Vec<String>,
) -> Result<(), AppError> {
    let tiers = s.tiers().await?;
    for (i, t) in a.tiers.iter().enumerate() {
        if !tiers.iter().any(|k| k.code == *t) {
            problems.push(format!("audience.tiers[{i}]: no tier {t:?}"));
        }
    }
    for (i, seg) in a.segments.iter().enumerate() {
        if !crate::app::segments::SEGMENTS.contains(&seg.as_str()) {
            problems.push(format!(
                "audience.segments[{i}]: no segment {seg:?} (one of {})",
                crate::app::segments::SEGMENTS.join(", ")
            ));
        }
    }
    let channels: HashSet<String> = s
        .store
        .channels()
        .await?
        .into_iter()
        .map(|c| c.code)
        .chain([crate::app::channels::unattributed().code])
        .collect();
    for (i, c) in a.channels.iter().enumerate() {
        if !channels.contains(c) {
            problems.push(format!("audience.channels[{i}]: no channel {c:?}"));
        }
    }
    for (i, m) in a.members.iter().enumerate() {
        if m.as_str().trim().is_empty() {
            problems.push(format!("audience.members[{i}]: empty"));
        }
    }
    let empty = a.tiers.is_empty()
        && a.segments.is_empty()
        && a.channels.is_empty()
        && a.members.is_empty();
    if kind == "group_message" {
        if a.tiers.is_empty() {
            problems.push("audience.tiers: a group_message goes to tier groups; name tiers".into());
        }
        if !a.segments.is_empty() || !a.channels.is_empty() {
            problems.push(
                "audience: a group_message goes to whole tier groups; segments and channels do not apply"
                    .into(),
            );
        }
        for (i, t) in a.tiers.iter().enumerate() {
            if s.store.tier_group(t).await?.is_none() && tiers.iter().any(|k| k.code == *t) {
                problems.push(format!("audience.tiers[{i}]: tier {t:?} has no groups"));
            }
        }
    } else if empty {
        problems.push(
            "audience: name at least one tier, segment, channel or member (siyu never sends to everyone by default)"
                .into(),
        );
    }
    Ok(())
}

async fn check_content(
    s: &Services,
    kind: &str,
    c: &Content,
    problems: &mut Vec<String>,
) -> Result<(), AppError> {
    let text = c.text.as_deref().unwrap_or("");
    let attachments =
        c.images.len() + usize::from(c.video.is_some()) + usize::from(c.link.is_some());
    if text.trim().is_empty() && attachments == 0 {
        problems.push("content: give text, images, a video or a link".into());
    }
    if kind == "moment" {
        let chars = text.chars().count();
        if chars > 2000 {
            problems.push(format!(
                "content.text: {chars} characters; a Moments post holds at most 2000"
            ));
        }
        let kinds = usize::from(!c.images.is_empty())
            + usize::from(c.video.is_some())
            + usize::from(c.link.is_some());
        if kinds > 1 {
            problems.push(
                "content: a Moments post takes images, or one video, or one link, not a mix".into(),
            );
        }
        if c.images.len() > 9 {
            problems.push(format!(
                "content.images: {}; a Moments post takes at most 9",
                c.images.len()
            ));
        }
        if let Some(link) = &c.link {
            if link.title.len() > 64 {
                problems.push(format!(
                    "content.link.title: {} bytes; a Moments link title holds at most 64",
                    link.title.len()
                ));
            }
            if link.cover.is_none() {
                problems.push("content.link.cover: a Moments link needs a cover image".into());
            }
        }
    } else {
        if text.len() > 4000 {
            problems.push(format!(
                "content.text: {} bytes; a mass message holds at most 4000",
                text.len()
            ));
        }
        if attachments > 9 {
            problems.push(format!(
                "content: {attachments} attachments; a mass message takes at most 9"
            ));
        }
        if let Some(link) = &c.link
            && link.title.len() > 128
        {
            problems.push(format!(
                "content.link.title: {} bytes; at most 128",
                link.title.len()
            ));
        }
    }
    if let Some(link) = &c.link {
        if link.title.trim().is_empty() {
            problems.push("content.link.title: empty".into());
        }
        if !(link.url.starts_with("https://") || link.url.starts_with("http://")) {
            problems.push(format!(
                "content.link.url: {:?} is not an http(s) URL",
                link.url
            ));
        } else if link.url.len() > 2048 {
            problems.push("content.link.url: longer than 2048 bytes".into());
        }
    }
    let mut wanted: Vec<(String, i64, &str)> = c
        .images
        .iter()
        .enumerate()
        .map(|(i, id)| (format!("content.images[{i}]"), *id, "image"))
        .collect();
    if let Some(v) = c.video {
        wanted.push(("content.video".into(), v, "video"));
    }
    if let Some(cover) = c.link.as_ref().and_then(|l| l.cover) {
        wanted.push(("content.link.cover".into(), cover, "image"));
    }
    for (field, id, kind) in wanted {
        match crate::app::media::item(s, id).await {
            Ok(item) if item.kind.as_str() == kind => {}
            Ok(item) => problems.push(format!(
                "{field}: media {id} is a {}, not a {kind}",
                item.kind
            )),
            Err(AppError::NotFound(_)) => problems.push(format!(
                "{field}: no media {id} (upload it to POST /api/v1/media)"
            )),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A campaign as the operator sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    pub id: i64,
    pub kind: String,
    pub name: String,
    pub status: CampaignStatus,
    pub audience: Audience,
    pub content: Content,
    pub schedule: Schedule,
    pub timezone: String,
    pub created_by: String,
    pub created_at: i64,
    /// The next due time, if one is to come.
    pub next_run_at: Option<i64>,
    pub runs: Vec<RunView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunView {
    #[serde(flatten)]
    pub run: Run,
    /// Recipients by what came of them: pending, delivered, not_friend, over_cap, unsent,
    /// published, cancelled.
    pub totals: BTreeMap<String, i64>,
    pub sends: Vec<CampaignSend>,
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, AppError> {
    serde_json::from_str(text)
        .map_err(|e| AppError::Invalid(format!("stored campaign {what} does not parse: {e}")))
}

pub async fn view(s: &Services, c: CampaignRow) -> Result<CampaignView, AppError> {
    let schedule: Schedule = parse_json("schedule", &c.schedule)?;
    let mut runs = Vec::new();
    for r in s.store.runs_of(c.id).await? {
        let totals = s.store.run_totals(r.id).await?.into_iter().collect();
        let sends = s.store.sends_of_run(r.id).await?;
        runs.push(RunView {
            run: r,
            totals,
            sends,
        });
    }
    let next_run_at = if matches!(c.status, CampaignStatus::Cancelled | CampaignStatus::Done) {
        None
    } else {
        let last = runs.last().map_or(c.created_at, |r| r.run.due_at);
        When::stored(&schedule).and_then(|w| w.next_after(last.max(s.clock.now_ms() - 1)))
    };
    Ok(CampaignView {
        id: c.id,
        kind: c.kind,
        name: c.name,
        status: c.status,
        audience: parse_json("audience", &c.audience)?,
        content: parse_json("content", &c.content)?,
        schedule,
        timezone: c.timezone,
        created_by: c.created_by,
        created_at: c.created_at,
        next_run_at,
        runs,
    })
}

/// Stores a campaign and, in the same transaction, its first run's job at the first due time.
pub async fn create(s: &Services, input: CampaignInput) -> Result<CampaignView, AppError> {
    let when = validate(s, &input).await?;
    let now = s.clock.now_ms();
    let first = when
        .next_after(now)
        .ok_or_else(|| AppError::Invalid("schedule: it never falls due".into()))?;
    let audience = to_json(&input.audience);
    let content = to_json(&input.content);
    let schedule = to_json(&input.schedule);
    let timezone = input
        .schedule
        .timezone
        .clone()
        .unwrap_or_else(|| DEFAULT_TIMEZONE.to_string());
    let by = input.by.clone().unwrap_or_else(|| "api".into());
    let mut tx = s.store.begin().await?;
    let id = store_campaigns::insert_campaign(
        &mut tx,
        &NewCampaign {
            kind: &input.kind,
            name: input.name.trim(),
            audience: &audience,
            content: &content,
            schedule: &schedule,
            timezone: &timezone,
            created_by: &by,
            at: now,
        },
    )
    .await?;
    run::enqueue_run(s, &mut tx, id, first).await?;
    tx.commit().await?;
    tracing::info!(campaign = id, kind = %input.kind, first_run = first, "campaign scheduled");
    get(s, id).await
}

/// A part of the input as stored (plain data: it always serializes).
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

pub async fn get(s: &Services, id: i64) -> Result<CampaignView, AppError> {
    let c = s
        .store
        .campaign(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no campaign {id}")))?;
    view(s, c).await
}

pub async fn list(
    s: &Services,
    status: Option<CampaignStatus>,
) -> Result<Vec<CampaignView>, AppError> {
    let mut out = Vec::new();
    for c in s.store.campaigns(status).await? {
        out.push(view(s, c).await?);
    }
    Ok(out)
}

/// Cancels a campaign: no run starts any more; WeCom's tasks of runs already made are cancelled
/// for members who have not sent (a job, so it survives a crash).
pub async fn cancel(s: &Services, id: i64) -> Result<CampaignView, AppError> {
    let now = s.clock.now_ms();
    let mut tx = s.store.begin().await?;
    let Some(c) = store_campaigns::campaign_in(&mut tx, id).await? else {
        return Err(AppError::NotFound(format!("no campaign {id}")));
    };
    if c.status == CampaignStatus::Cancelled {
        drop(tx);
        return get(s, id).await;
    }
    store_campaigns::set_campaign_status(&mut tx, id, CampaignStatus::Cancelled, now).await?;
    run::enqueue_cancel(s, &mut tx, id).await?;
    tx.commit().await?;
    tracing::info!(campaign = id, "campaign cancelled");
    get(s, id).await
}

/// Reminds the members who have not sent a campaign's mass messages (WeCom allows 3 a day).
pub async fn remind(s: &Services, id: i64) -> Result<serde_json::Value, AppError> {
    let c = get(s, id).await?;
    if c.kind == "moment" {
        return Err(AppError::Invalid(
            "a Moments post has no reminder at WeCom; members are reminded in their client".into(),
        ));
    }
    let (reminded, refused) = run::remind(s, id).await?;
    Ok(serde_json::json!({ "reminded": reminded, "refused": refused }))
}

/// The audience as it would be now: customers per member, those the caps leave out, and why.
pub async fn preview(s: &Services, input: CampaignInput) -> Result<serde_json::Value, AppError> {
    validate(s, &input).await?;
    let plan = run::plan(s, &input.kind, &input.audience, s.clock.now_ms()).await?;
    Ok(plan.preview())
}
