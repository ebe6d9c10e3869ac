//! Value segments (RFM): recency, frequency and monetary value scored 1 to 5, by the configured
//! thresholds or by quintiles of the current population, mapped to the eight classic segments
//! (a score of 3 or more counts as high) and kept as tags in siyu's third tag group.
//!
//! Quintiles need the whole population, so segments are evaluated with the nightly full
//! evaluation, not incrementally; the inputs are three numbers per customer in memory.

use serde::Serialize;

use super::{AppError, Services};
use crate::ids::{ExternalUserId, UserId};
use crate::store::tiers::{self as store_tiers, RfmInput};

/// The eight segments, by (R high, F high, M high).
pub const SEGMENTS: [&str; 8] = [
    "重要价值",
    "重要发展",
    "重要保持",
    "重要挽留",
    "一般价值",
    "一般发展",
    "一般保持",
    "一般挽留",
];

const DAY_MS: i64 = 86_400_000;

pub fn segment(r: u8, f: u8, m: u8) -> &'static str {
    match (r >= 3, f >= 3, m >= 3) {
        (true, true, true) => "重要价值",
        (true, false, true) => "重要发展",
        (false, true, true) => "重要保持",
        (false, false, true) => "重要挽留",
        (true, true, false) => "一般价值",
        (true, false, false) => "一般发展",
        (false, true, false) => "一般保持",
        (false, false, false) => "一般挽留",
    }
}

/// Score 1 to 5: how many of the ascending `cuts` `value` reaches, plus one.
fn score_at_least(value: i64, cuts: &[i64; 4]) -> u8 {
    1 + cuts.iter().filter(|c| value >= **c).count() as u8
}

/// The cut points at the 20/40/60/80th percentiles of `values`.
fn quintile_cuts(mut values: Vec<i64>) -> [i64; 4] {
    values.sort_unstable();
    if values.is_empty() {
        return [i64::MAX; 4];
    }
    let at = |q: usize| values[(values.len() * q / 5).min(values.len() - 1)];
    [at(1), at(2), at(3), at(4)]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentChange {
    pub external_userid: ExternalUserId,
    pub from: Option<String>,
    pub to: String,
    pub rfm: String,
}

/// Scores every customer and answers the segment changes; with `apply`, records them and swaps
/// the segment tags at WeCom.
pub async fn evaluate(services: &Services, apply: bool) -> Result<Vec<SegmentChange>, AppError> {
    let rfm = &services.settings.rfm;
    let now = services.clock.now_ms();
    let inputs = services
        .store
        .rfm_inputs(now - i64::from(rfm.window_days) * DAY_MS)
        .await?;
    // Recency as "freshness" so that higher is better for all three: minus days since the order.
    let freshness = |i: &RfmInput| i.last_order.map(|t| -((now - t) / DAY_MS));
    let (r_cuts, f_cuts, m_cuts) = if rfm.mode == "thresholds" {
        let days = &rfm.recency_days;
        (
            [-days[3], -days[2], -days[1], -days[0]],
            [
                rfm.frequency[0],
                rfm.frequency[1],
                rfm.frequency[2],
                rfm.frequency[3],
            ],
            [
                rfm.monetary[0] * 100,
                rfm.monetary[1] * 100,
                rfm.monetary[2] * 100,
                rfm.monetary[3] * 100,
            ],
        )
    } else {
        let buyers: Vec<&RfmInput> = inputs.iter().filter(|i| i.orders > 0).collect();
        (
            quintile_cuts(buyers.iter().filter_map(|i| freshness(i)).collect()),
            quintile_cuts(buyers.iter().map(|i| i.orders).collect()),
            quintile_cuts(buyers.iter().map(|i| i.spend_fen).collect()),
        )
    };
    let mut changes = Vec::new();
    for i in &inputs {
        let (r, f, m) = if i.orders == 0 {
            (1, 1, 1)
        } else {
            (
                freshness(i).map_or(1, |v| score_at_least(v, &r_cuts)),
                score_at_least(i.orders, &f_cuts),
                score_at_least(i.spend_fen, &m_cuts),
            )
        };
        let to = segment(r, f, m);
        let scores = format!("R{r}F{f}M{m}");
        if i.segment.as_deref() != Some(to) {
            changes.push(SegmentChange {
                external_userid: i.external_userid.clone(),
                from: i.segment.clone(),
                to: to.into(),
                rfm: scores,
            });
        }
    }
    if apply {
        for chunk in changes.chunks(500) {
            apply_changes(services, chunk).await?;
        }
    }
    Ok(changes)
}

/// Records the new segments and, in the same transaction, calls what the features registered for
/// a segment change (the tags feature syncs each relation's tags) with the customers' connected
/// relations.
async fn apply_changes(services: &Services, changes: &[SegmentChange]) -> Result<(), AppError> {
    let rows: Vec<store_tiers::SegmentMove> = changes
        .iter()
        .map(|c| {
            (
                c.external_userid.clone(),
                c.from.clone(),
                c.to.clone(),
                c.rfm.clone(),
            )
        })
        .collect();
    let ids: Vec<ExternalUserId> = changes.iter().map(|c| c.external_userid.clone()).collect();
    let relations: Vec<(UserId, ExternalUserId)> = services
        .store
        .connected_follows_of(&ids)
        .await?
        .into_iter()
        .map(|f| (f.userid, f.external_userid))
        .collect();
    let now = services.clock.now_ms();
    let mut tx = services.store.begin().await?;
    store_tiers::set_segments(&mut tx, &rows, now).await?;
    services
        .hooks()
        .segment_changed(services, &mut tx, &relations, now)
        .await?;
    tx.commit().await?;
    crate::failpoint::hit("segments.recorded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eight_segments() {
        assert_eq!(segment(5, 5, 5), "重要价值");
        assert_eq!(segment(4, 1, 3), "重要发展");
        assert_eq!(segment(2, 3, 5), "重要保持");
        assert_eq!(segment(1, 1, 4), "重要挽留");
        assert_eq!(segment(3, 3, 2), "一般价值");
        assert_eq!(segment(5, 2, 1), "一般发展");
        assert_eq!(segment(2, 4, 2), "一般保持");
        assert_eq!(segment(1, 1, 1), "一般挽留");
        let mut all: Vec<&str> = (0..8u8)
            .map(|b| segment(1 + 2 * (b & 1), 1 + (b & 2), 1 + (b & 4) / 2))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn scores_and_quintiles() {
        assert_eq!(score_at_least(0, &[2, 3, 5, 10]), 1);
        assert_eq!(score_at_least(3, &[2, 3, 5, 10]), 3);
        assert_eq!(score_at_least(10, &[2, 3, 5, 10]), 5);
        assert_eq!(quintile_cuts((1..=10).collect()), [3, 5, 7, 9]);
        assert_eq!(quintile_cuts(vec![]), [i64::MAX; 4]);
    }
}
