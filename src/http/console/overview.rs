//! 概览: the dashboard. Customers by tier and by segment, adds per channel per day, promotions
//! and demotions per week, welcome latency and failed jobs; the charts drawn here as inline SVG
//! from `GET /api/v1/stats` (no script, no CDN).

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::super::charts;
use super::{AppState, Flash, Visitor, api, refused_page, render};

/// `(label, count)` pairs from a list of objects.
fn pairs(list: &Value, label: &str, count: &str) -> Vec<(String, i64)> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    (
                        i[label].as_str().unwrap_or_default().to_string(),
                        i[count].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn numbers(list: &Value) -> Vec<i64> {
    list.as_array()
        .map(|l| l.iter().map(|v| v.as_i64().unwrap_or(0)).collect())
        .unwrap_or_default()
}

/// The dashboard's charts, as SVG, from the stats.
fn draw(stats: &Value) -> Value {
    let adds = &stats["adds_per_channel"];
    let series: Vec<(String, Vec<i64>)> = adds["channels"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        numbers(&c["counts"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let weeks = stats["tier_changes_per_week"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let week_labels: Vec<String> = weeks
        .iter()
        .map(|w| {
            // "2026-11-02" reads as "11-02" under a column.
            let start = w["week_start"].as_str().unwrap_or_default();
            start.get(5..).unwrap_or(start).to_string()
        })
        .collect();
    let promotions: Vec<i64> = weeks
        .iter()
        .map(|w| w["promotions"].as_i64().unwrap_or(0))
        .collect();
    let demotions: Vec<i64> = weeks
        .iter()
        .map(|w| w["demotions"].as_i64().unwrap_or(0))
        .collect();
    json!({
        "tiers": charts::bars("客户等级", &pairs(&stats["customers_by_tier"], "name", "count")),
        "segments": charts::bars("价值分层", &pairs(&stats["customers_by_segment"], "segment", "count")),
        "adds": charts::daily_lines("各渠道每日新增", &strings(&adds["days"]), &series),
        "moves": charts::paired_columns("每周升降级", &week_labels, ("升级", &promotions), ("降级", &demotions)),
    })
}

pub(super) async fn page(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Query(flash): Query<Flash>,
) -> Response {
    let stats = match api(&state, &session, Method::GET, "/stats", None).await {
        Ok(v) => v,
        Err(e) => return refused_page(&state, &session, &e),
    };
    let queue = api(&state, &session, Method::GET, "/queue", None)
        .await
        .unwrap_or_default();
    let customers: i64 = pairs(&stats["customers_by_tier"], "tier", "count")
        .iter()
        .map(|(_, n)| n)
        .sum();
    render(
        &state,
        &session,
        "overview.html",
        "overview",
        &flash,
        json!({ "stats": stats, "charts": draw(&stats), "queue": queue, "customers": customers,
                "inbox_lag_secs": queue["inbox_lag_ms"].as_i64().unwrap_or(0) / 1000 }),
    )
}
