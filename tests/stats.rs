//! The dashboard's numbers (`GET /api/v1/stats`) from what really happened: customers adding
//! through channels at the fake WeCom, welcomed (or not), promoted by the shop's orders, a week
//! apart on the app's clock.

mod common;

use std::time::Duration;

use chrono::{Datelike, NaiveDate};
use common::world::{World, world};
use common::{eventually, wait_idle};
use serde_json::{Value, json};
use siyu::app::users::{self, Role};
use siyu::fake::{Failure, NewCustomer};
use siyu::wecom::client::code;

const DAY_MS: i64 = 86_400_000;

/// The app clock's date now, in the configured zone (the tests' default, Asia/Shanghai).
fn today(w: &World) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(w.app.clock().now_ms())
        .unwrap()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
}

fn monday_of(d: NaiveDate) -> NaiveDate {
    d - chrono::Days::new(u64::from(d.weekday().num_days_from_monday()))
}

/// The shop posts an order of 2000 yuan for the customer (the partner threshold), and the
/// customer is promoted.
async fn promote(w: &World, customer: &str, id: &str) {
    let at = chrono::DateTime::from_timestamp_millis(w.app.clock().now_ms())
        .unwrap()
        .to_rfc3339();
    let (status, body) = w
        .post(
            "/activity",
            json!({"items": [{"kind": "order", "customer": customer, "amount": 2000, "at": at, "id": id}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let promoted = eventually(Duration::from_secs(10), || async {
        w.app
            .store()
            .customer(&customer.into())
            .await
            .unwrap()
            .is_some_and(|c| c.tier == "partner")
    })
    .await;
    assert!(promoted, "{customer} was not promoted");
}

async fn get_as(w: &World, token: &str, query: &str) -> (u16, Value) {
    let r = w
        .http
        .get(w.api(&format!("/stats{query}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn channel<'a>(stats: &'a Value, code: &str) -> &'a Value {
    stats["adds_per_channel"]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == code)
        .unwrap_or_else(|| panic!("no row for {code}: {stats}"))
}

/// The counts of a row as (day index, count) for the days with any.
fn nonzero_days(row: &Value) -> Vec<(usize, i64)> {
    row["counts"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((i, n.as_i64().unwrap())).filter(|(_, n)| *n > 0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_per_channel_and_day_promotions_per_week_and_welcomes_are_counted() {
    let w = world().await;
    let services = w.app.services();
    let cli = users::Principal::cli();
    users::add(
        services,
        &cli,
        "watcher",
        Role::Viewer,
        "long enough secret",
    )
    .await
    .unwrap();
    let viewer = users::create_token(services, &cli, "watcher", "dashboard")
        .await
        .unwrap()
        .token;

    // Nothing yet: every tier at zero, a zero-filled window, no latency to speak of.
    let (status, empty) = get_as(&w, &viewer, "?days=7&weeks=4").await;
    assert_eq!(status, 200, "a viewer reads the dashboard: {empty}");
    assert_eq!(
        empty["customers_by_tier"],
        json!([
            {"tier": "member", "name": "普通会员", "count": 0},
            {"tier": "partner", "name": "合作伙伴", "count": 0},
            {"tier": "senior_partner", "name": "高级合作伙伴", "count": 0},
        ])
    );
    assert_eq!(
        empty["adds_per_channel"]["days"].as_array().unwrap().len(),
        7
    );
    assert_eq!(
        empty["adds_per_channel"]["days"][6],
        json!(today(&w).to_string())
    );
    assert_eq!(empty["adds_per_channel"]["channels"], json!([]));
    assert_eq!(empty["tier_changes_per_week"].as_array().unwrap().len(), 4);
    assert_eq!(
        empty["welcome"],
        json!({"sent": 0, "missed": 0, "p50_ms": null, "p95_ms": null})
    );

    // Week one: two customers through 抖音 and one through 小红书, all welcomed; one is promoted.
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    w.add("douyin", "陈静").await;
    w.add("xiaohongshu", "李雷").await;
    promote(&w, &a, "o-1").await;
    let first_day = today(&w);

    // A week later on both clocks: one through 小红书 whose welcome code was already used (no
    // welcome), promoted too, and one through a poster no channel knows.
    w.app.clock().advance(7 * DAY_MS);
    w.fake.advance_clock(Duration::from_secs(7 * 86_400));
    w.fake.fail_next(
        "/cgi-bin/externalcontact/send_welcome_msg",
        1,
        Failure::Errcode(code::WELCOME_CODE_USED),
    );
    let b = w.add("xiaohongshu", "韩梅梅").await.external_userid;
    promote(&w, &b, "o-2").await;
    let c = w
        .fake
        .driver()
        .customer_adds_staff(
            "zhangsan",
            Some("spring_expo_qr"),
            NewCustomer::wechat("路人甲"),
        )
        .await
        .unwrap();
    assert!(w.settled("zhangsan", &c.external_userid, 2).await);
    assert!(wait_idle(&w.app, Duration::from_secs(10)).await);
    let second_day = today(&w);

    let (status, stats) = get_as(&w, &viewer, "").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        stats["customers_by_tier"],
        json!([
            {"tier": "member", "name": "普通会员", "count": 3},
            {"tier": "partner", "name": "合作伙伴", "count": 2},
            {"tier": "senior_partner", "name": "高级合作伙伴", "count": 0},
        ])
    );

    // 30 days by default, today last; each add on the day it happened.
    let days = stats["adds_per_channel"]["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert_eq!(days[29], json!(second_day.to_string()));
    let first = days
        .iter()
        .position(|d| *d == json!(first_day.to_string()))
        .unwrap();
    assert_eq!(first, 29 - (second_day - first_day).num_days() as usize);
    let codes: Vec<&Value> = stats["adds_per_channel"]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["code"])
        .collect();
    assert_eq!(codes, vec!["douyin", "xiaohongshu", "unattributed"]);
    assert_eq!(channel(&stats, "douyin")["name"], "抖音");
    assert_eq!(nonzero_days(channel(&stats, "douyin")), vec![(first, 2)]);
    assert_eq!(
        nonzero_days(channel(&stats, "xiaohongshu")),
        vec![(first, 1), (29, 1)]
    );
    assert_eq!(channel(&stats, "unattributed")["name"], "未归因");
    assert_eq!(nonzero_days(channel(&stats, "unattributed")), vec![(29, 1)]);

    // 12 weeks by default, from Monday, this one last; each promotion in its week.
    let weeks = stats["tier_changes_per_week"].as_array().unwrap();
    assert_eq!(weeks.len(), 12);
    assert_eq!(
        weeks[11]["week_start"],
        json!(monday_of(second_day).to_string())
    );
    for (i, week) in weeks.iter().enumerate() {
        let start: NaiveDate = week["week_start"].as_str().unwrap().parse().unwrap();
        assert_eq!(start.weekday(), chrono::Weekday::Mon, "{week}");
        let promotions = if start == monday_of(first_day) || start == monday_of(second_day) {
            1
        } else {
            0
        };
        assert_eq!(
            (week["promotions"].as_i64(), week["demotions"].as_i64()),
            (Some(promotions), Some(0)),
            "week {i}: {week}"
        );
    }

    // Three welcomes went out; 韩梅梅's did not (her code was used): that job failed.
    let welcome = &stats["welcome"];
    assert_eq!(
        (welcome["sent"].as_i64(), welcome["missed"].as_i64()),
        (Some(3), Some(1))
    );
    let (p50, p95) = (
        welcome["p50_ms"].as_i64().unwrap(),
        welcome["p95_ms"].as_i64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p95 && p95 < 20_000, "{welcome}");
    assert_eq!(stats["jobs"]["failed"], 1, "{stats}");
    assert_eq!(stats["jobs"]["running"], 0, "{stats}");
    assert_eq!(stats["failed_jobs_recent"], 1);

    // A window that ends before the first week no longer sees its adds.
    let (_, short) = get_as(&w, &viewer, "?days=3&weeks=1").await;
    assert_eq!(nonzero_days(channel(&short, "xiaohongshu")), vec![(2, 1)]);
    assert!(
        short["adds_per_channel"]["channels"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["counts"].as_array().unwrap().len() == 3)
    );
    assert_eq!(
        short["tier_changes_per_week"],
        json!([{"week_start": monday_of(second_day).to_string(), "promotions": 1, "demotions": 0}])
    );
    assert_eq!(short["welcome"]["sent"], 0);
    assert_eq!(short["welcome"]["missed"], 1);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_out_of_range_names_the_parameter() {
    let w = world().await;
    let token = siyu::testkit::API_TOKEN;
    for (query, error) in [
        ("?days=0", "days: must be between 1 and 90"),
        ("?days=91", "days: must be between 1 and 90"),
        ("?weeks=53", "weeks: must be between 1 and 52"),
    ] {
        let (status, body) = get_as(&w, token, query).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(error)),
            "{query}"
        );
    }
    let (status, body) = get_as(&w, token, "?weeks=many").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("weeks"), "{body}");
    let (status, body) = get_as(&w, token, "?days=90&weeks=52").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["adds_per_channel"]["days"].as_array().unwrap().len(),
        90
    );
    assert_eq!(body["tier_changes_per_week"].as_array().unwrap().len(), 52);
    w.app.shutdown().await;
}
