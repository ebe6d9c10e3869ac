//! The dashboard's numbers (`GET /api/v1/stats`): customers per tier and segment, new relations
//! per channel and day, promotions and demotions per week, how fast welcomes go out, the job
//! queue. Days and weeks are those of the configured zone (`jobs.timezone`), weeks start on
//! Monday, and "now" is the app's clock (which the demo moves).

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;
use serde::Serialize;

use super::channels::unattributed;
use super::contacts::WELCOME_JOB;
use super::tiers::is_promotion;
use super::{AppError, Services};
use crate::store::jobs::JobState;

pub const DEFAULT_DAYS: i64 = 30;
pub const DEFAULT_WEEKS: i64 = 12;
/// The most welcome latencies read for the percentiles: the newest ones, plenty for a p95, and a
/// bound on what one dashboard view reads however busy the window was.
const LATENCY_SAMPLE: i64 = 10_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Every tier in force, in rank order (entry tier first), with those of no customers.
    pub customers_by_tier: Vec<TierTotal>,
    /// Customers per value segment (customers not yet segmented are left out).
    pub customers_by_segment: Vec<SegmentTotal>,
    pub adds_per_channel: AddsPerChannel,
    /// The last `weeks` weeks, oldest first; the last is the current week.
    pub tier_changes_per_week: Vec<WeekChanges>,
    pub welcome: WelcomeStats,
    pub jobs: JobTotals,
    /// Jobs that failed for good within the last `days` days.
    pub failed_jobs_recent: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TierTotal {
    #[schema(example = "member")]
    pub tier: String,
    #[schema(example = "普通会员")]
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SegmentTotal {
    #[schema(example = "重要价值")]
    pub segment: String,
    pub count: i64,
}

/// New customer relations (a member following a customer) per channel per day.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AddsPerChannel {
    /// The last `days` days, oldest first; the last is today.
    #[schema(example = json!(["2026-11-01", "2026-11-02"]))]
    pub days: Vec<String>,
    /// Every channel (with zeros when none came), then channels since deleted that had adds,
    /// then `unattributed` (adds through no channel) when there were any.
    pub channels: Vec<ChannelAdds>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelAdds {
    #[schema(example = "douyin")]
    pub code: String,
    #[schema(example = "抖音")]
    pub name: String,
    /// One count per day of `days`.
    pub counts: Vec<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WeekChanges {
    /// The Monday the week starts on.
    #[schema(example = "2026-10-05")]
    pub week_start: String,
    /// Moves to a higher tier in the order in force.
    pub promotions: i64,
    /// Moves to a lower tier (or to one no longer in force).
    pub demotions: i64,
}

/// Welcome messages over the last `days` days.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WelcomeStats {
    /// Welcomes sent.
    pub sent: i64,
    /// Welcomes that failed for good (the 20-second code expired or was used, or the tries ran
    /// out).
    pub missed: i64,
    /// Median time from the add callback's arrival to the welcome sent (none when none was sent).
    #[schema(required = true)]
    pub p50_ms: Option<i64>,
    #[schema(required = true)]
    pub p95_ms: Option<i64>,
}

/// The job queue now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobTotals {
    pub queued: i64,
    pub running: i64,
    /// Every job that failed for good, ever.
    pub failed: i64,
}

/// The dashboard's numbers over the last `days` days (1 to 90, default 30) and `weeks` weeks
/// (1 to 52, default 12).
pub async fn stats(s: &Services, days: Option<i64>, weeks: Option<i64>) -> Result<Stats, AppError> {
    let days = in_range("days", days.unwrap_or(DEFAULT_DAYS), 90)?;
    let weeks = in_range("weeks", weeks.unwrap_or(DEFAULT_WEEKS), 52)?;
    // Validated at start; the default only guards a settings value built by hand.
    let tz = s.settings.timezone().unwrap_or(chrono_tz::Asia::Shanghai);
    let now = s.clock.now_ms();
    let today = local_date(tz, now);
    let first_day = today - chrono::Days::new(days - 1);
    let day_window = (start_of_day(tz, first_day), start_of_day(tz, next(today)));

    let in_force = s.tiers().await?;
    let per_tier = s.store.customers_per_tier().await?;
    let customers_by_tier = in_force
        .iter()
        .map(|t| TierTotal {
            tier: t.code.clone(),
            name: t.name.clone(),
            count: per_tier
                .iter()
                .find(|(code, _)| *code == t.code)
                .map_or(0, |(_, n)| *n),
        })
        .collect();
    let customers_by_segment = s
        .store
        .customers_per_segment()
        .await?
        .into_iter()
        .map(|(segment, count)| SegmentTotal { segment, count })
        .collect();

    let adds_per_channel = adds_per_channel(s, tz, first_day, days, day_window).await?;

    let this_monday = today - chrono::Days::new(u64::from(today.weekday().num_days_from_monday()));
    let first_monday = this_monday - chrono::Days::new(7 * (weeks - 1));
    let mut tier_changes_per_week: Vec<WeekChanges> = (0..weeks)
        .map(|w| WeekChanges {
            week_start: (first_monday + chrono::Days::new(7 * w)).to_string(),
            promotions: 0,
            demotions: 0,
        })
        .collect();
    let changes = s
        .store
        .tier_changes_between(
            start_of_day(tz, first_monday),
            start_of_day(tz, this_monday + chrono::Days::new(7)),
        )
        .await?;
    for c in changes {
        let days_in = (local_date(tz, c.at) - first_monday).num_days();
        let Some(week) = usize::try_from(days_in / 7)
            .ok()
            .and_then(|w| tier_changes_per_week.get_mut(w))
        else {
            continue;
        };
        if is_promotion(&in_force, &c.from_tier, &c.to_tier) {
            week.promotions += c.count;
        } else {
            week.demotions += c.count;
        }
    }

    let (since, until) = day_window;
    let counts = s.store.welcome_counts(WELCOME_JOB, since, until).await?;
    let mut latencies = s
        .store
        .welcome_latencies(WELCOME_JOB, since, until, LATENCY_SAMPLE)
        .await?;
    latencies.sort_unstable();
    let welcome = WelcomeStats {
        sent: counts.sent,
        missed: counts.missed,
        p50_ms: percentile(&latencies, 50),
        p95_ms: percentile(&latencies, 95),
    };

    let by_state = s.store.count_jobs_by_state().await?;
    let of = |state: JobState| {
        by_state
            .iter()
            .find(|(st, _)| *st == state)
            .map_or(0, |(_, n)| *n)
    };
    let jobs = JobTotals {
        queued: of(JobState::Queued),
        running: of(JobState::Running),
        failed: of(JobState::Failed),
    };
    let failed_jobs_recent = s.store.failed_jobs_since(since).await?;

    Ok(Stats {
        customers_by_tier,
        customers_by_segment,
        adds_per_channel,
        tier_changes_per_week,
        welcome,
        jobs,
        failed_jobs_recent,
    })
}

async fn adds_per_channel(
    s: &Services,
    tz: Tz,
    first_day: NaiveDate,
    days: u64,
    (since, until): (i64, i64),
) -> Result<AddsPerChannel, AppError> {
    let n = usize::try_from(days).unwrap_or_default();
    let zeros = || vec![0; n];
    let mut channels: Vec<ChannelAdds> = s
        .store
        .channels()
        .await?
        .into_iter()
        .map(|c| ChannelAdds {
            code: c.code,
            name: c.name,
            counts: zeros(),
        })
        .collect();
    let unattributed = unattributed();
    let mut rows = s.store.adds_per_channel(since, until).await?;
    // Channels deleted since (their customers keep the code) before the unattributed, in order.
    rows.sort_by(|a, b| {
        (a.channel == unattributed.code)
            .cmp(&(b.channel == unattributed.code))
            .then_with(|| a.channel.cmp(&b.channel))
    });
    for row in rows {
        let Some(day) = usize::try_from((local_date(tz, row.at) - first_day).num_days())
            .ok()
            .filter(|d| *d < n)
        else {
            continue;
        };
        let i = match channels.iter().position(|c| c.code == row.channel) {
            Some(i) => i,
            None => {
                let name = if row.channel == unattributed.code {
                    unattributed.name.clone()
                } else {
                    row.channel.clone()
                };
                channels.push(ChannelAdds {
                    code: row.channel,
                    name,
                    counts: zeros(),
                });
                channels.len() - 1
            }
        };
        channels[i].counts[day] += row.count;
    }
    Ok(AddsPerChannel {
        days: (0..days)
            .map(|d| (first_day + chrono::Days::new(d)).to_string())
            .collect(),
        channels,
    })
}

/// `value` when it is within `1..=max`, else an error naming `field`.
fn in_range(field: &str, value: i64, max: u64) -> Result<u64, AppError> {
    u64::try_from(value)
        .ok()
        .filter(|v| (1..=max).contains(v))
        .ok_or_else(|| AppError::Invalid(format!("{field}: must be between 1 and {max}")))
}

fn local_date(tz: Tz, ms: i64) -> NaiveDate {
    tz.timestamp_millis_opt(ms).single().map_or_else(
        || chrono::DateTime::UNIX_EPOCH.date_naive(),
        |t| t.date_naive(),
    )
}

fn next(date: NaiveDate) -> NaiveDate {
    date + chrono::Days::new(1)
}

/// The first instant of `date` in `tz`, Unix ms: midnight, or where a clock change skips
/// midnight, the first quarter hour of the day that exists.
fn start_of_day(tz: Tz, date: NaiveDate) -> i64 {
    (0..96)
        .find_map(|q| {
            let local = date.and_hms_opt(0, 0, 0)? + chrono::Duration::minutes(15 * q);
            tz.from_local_datetime(&local).earliest()
        })
        .map_or_else(
            || {
                date.and_hms_opt(0, 0, 0)
                    .map_or(0, |t| t.and_utc().timestamp_millis())
            },
            |t| t.timestamp_millis(),
        )
}

/// The nearest-rank `p`th percentile of `sorted` (ascending); none of nothing.
fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).map(|v| (*v).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 95), Some(7));
        let hundred: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50), Some(50));
        assert_eq!(percentile(&hundred, 95), Some(95));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
    }

    #[test]
    fn days_start_at_local_midnight() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        // 2026-11-02 00:00 +08:00 is 2026-11-01 16:00 UTC.
        assert_eq!(
            start_of_day(chrono_tz::Asia::Shanghai, d),
            chrono::DateTime::parse_from_rfc3339("2026-11-02T00:00:00+08:00")
                .unwrap()
                .timestamp_millis()
        );
        // Havana skips midnight when summer time begins (2026-03-08 00:00 → 01:00).
        let skipped = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        assert_eq!(
            start_of_day(chrono_tz::America::Havana, skipped),
            chrono::DateTime::parse_from_rfc3339("2026-03-08T01:00:00-04:00")
                .unwrap()
                .timestamp_millis()
        );
    }

    #[test]
    fn out_of_range_names_the_field() {
        assert!(in_range("days", 90, 90).is_ok());
        let e = in_range("weeks", 0, 52).unwrap_err().to_string();
        assert_eq!(e, "weeks: must be between 1 and 52");
        assert!(in_range("days", -3, 90).is_err());
    }
}
