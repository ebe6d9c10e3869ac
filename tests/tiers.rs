//! Tiers end to end: the shop posts activity, siyu promotes and demotes by the rules, swaps the
//! tier tag and rewrites the note at the fake WeCom.

mod common;

use std::time::Duration;

use common::eventually;
use common::world::{World, world};
use serde_json::{Value, json};
use siyu::app::tiers;
use siyu::fake::NewCustomer;
use siyu::ids::ExternalUserId;

const DAY_MS: i64 = 86_400_000;

/// RFC 3339 of the app's clock (which the tests move), minus `days_ago`.
fn at(w: &World, days_ago: i64) -> String {
    let ms = w.app.clock().now_ms() - days_ago * DAY_MS;
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339()
}

async fn customer(w: &World, name: &str) -> String {
    w.add("douyin", name).await.external_userid
}

async fn activity(w: &World, items: Value) -> (u16, Value) {
    w.post("/activity", json!({ "items": items })).await
}

async fn tier_of(w: &World, id: &str) -> String {
    w.app
        .store()
        .customer(&id.into())
        .await
        .unwrap()
        .unwrap()
        .tier
}

/// Waits for the incremental evaluation (and for the customer to be recorded at all).
async fn tier_becomes(w: &World, id: &str, tier: &str) -> bool {
    eventually(Duration::from_secs(10), || async {
        w.app
            .store()
            .customer(&id.into())
            .await
            .unwrap()
            .is_some_and(|c| c.tier == tier)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_at_the_threshold_swaps_the_tag_and_rewrites_the_note_and_not_a_fen_below() {
    let w = world().await;
    w.channels().await;
    let a = customer(&w, "王小明").await;
    let b = customer(&w, "陈静").await;
    let (status, body) = activity(
        &w,
        json!([
            {"kind": "order", "customer": a, "amount": 1500.00, "at": at(&w, 3), "id": "o-1"},
            {"kind": "order", "customer": a, "amount": "500.00", "at": at(&w, 1), "id": "o-2"},
            {"kind": "order", "customer": b, "amount": 1999.99, "at": at(&w, 1), "id": "o-3"},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stored"], 3);
    assert!(tier_becomes(&w, &a, "partner").await);
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    assert_eq!(tier_of(&w, &b).await, "member", "1999.99 is one fen short");

    let history = w
        .app
        .store()
        .tier_history(&ExternalUserId::from(&a))
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert!(
        history[0].reason.contains("spend 90d 2000.00 (≥ 2000.00)"),
        "{}",
        history[0].reason
    );
    let swapped = eventually(Duration::from_secs(10), || async {
        let f = w.follow("zhangsan", &a);
        let names = w.tag_names(&f.tags);
        names.contains(&"合作伙伴".to_string())
            && !names.contains(&"普通会员".to_string())
            && f.description.starts_with("合作伙伴｜抖音")
    })
    .await;
    assert!(
        swapped,
        "tag swap and note at the fake: {:?}",
        w.follow("zhangsan", &a)
    );
    let detail = w.get(&format!("/customers/{a}")).await;
    assert_eq!(detail["customer"]["tier"], "partner");
    assert!(
        detail["metrics"]
            .as_array()
            .unwrap()
            .contains(&json!({"metric": "spend", "window_days": 90, "value": "2000.00"})),
        "{}",
        detail["metrics"]
    );
    assert_eq!(detail["tier_history"][0]["to_tier"], "partner");
    // zhangsan, who owns the customer, is told once; the operators are not (no churn).
    let told = eventually(Duration::from_secs(10), || async {
        !w.fake.app_messages().is_empty()
    })
    .await;
    assert!(told);
    // Every notice decided so far has run (they wait for their window's end).
    assert!(common::wait_settled(&w.app, Duration::from_secs(10)).await);
    let messages = w.fake.app_messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["touser"], "zhangsan");
    assert!(
        messages[0]["text"]["content"]
            .as_str()
            .unwrap()
            .contains("客户「王小明」等级变化：普通会员 → 合作伙伴"),
        "{messages:?}"
    );
    let summary = w.get("/tiers/summary").await;
    assert_eq!(
        summary["tiers"][0],
        json!({"code": "member", "name": "普通会员", "customers": 1})
    );
    assert_eq!(summary["tiers"][1]["customers"], 1);
    assert_eq!(summary["moves"]["day"]["promoted"], 1);
    assert_eq!(summary["moves"]["month"]["demoted"], 0);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_lower_spend_and_rules_combine_with_any_and_all() {
    let w = world().await;
    w.channels().await;
    let a = customer(&w, "王小明").await;
    let b = customer(&w, "陈静").await;
    activity(
        &w,
        json!([
            {"kind": "order", "customer": a, "amount": 2500, "at": at(&w, 5), "id": "o-1"},
            {"kind": "refund", "customer": a, "amount": 600, "at": at(&w, 4), "id": "r-1"},
            // Referrals alone reach partner (`any`), but not senior partner (`all`).
            {"kind": "referral", "customer": b, "count": 3, "at": at(&w, 2), "id": "ref-1"},
            {"kind": "order", "customer": b, "amount": 12000, "at": at(&w, 2), "id": "o-2"},
        ]),
    )
    .await;
    assert!(tier_becomes(&w, &b, "partner").await);
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    assert_eq!(tier_of(&w, &a).await, "member", "2500 - 600 = 1900 < 2000");
    assert_eq!(
        tier_of(&w, &b).await,
        "partner",
        "spend 12000 but only 3 referrals: not senior"
    );
    activity(
        &w,
        json!([{"kind": "referral", "customer": b, "count": 7, "at": at(&w, 1), "id": "ref-2"}]),
    )
    .await;
    assert!(tier_becomes(&w, &b, "senior_partner").await);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_twice_changes_nothing_and_a_bad_batch_stores_nothing() {
    let w = world().await;
    let batch = json!([
        {"kind": "order", "customer": "shop-1", "amount": 10, "at": "2026-11-20T10:00:00+08:00", "id": "x-1"},
        {"kind": "order", "customer": "shop-2", "amount": 20, "at": "2026-11-20T11:00:00+08:00", "id": "x-2"},
    ]);
    let (status, first) = activity(&w, batch.clone()).await;
    assert_eq!((status, first["stored"].clone()), (200, json!(2)));
    let (status, again) = activity(&w, batch).await;
    assert_eq!(
        (status, again["stored"].clone(), again["duplicates"].clone()),
        (200, json!(0), json!(2))
    );

    let (status, body) = activity(
        &w,
        json!([
            {"kind": "order", "customer": "shop-3", "amount": 5, "at": "2026-11-20T10:00:00+08:00", "id": "y-1"},
            {"kind": "order", "customer": "shop-3", "amount": 12.345, "at": "yesterday", "id": "y-2"},
            {"kind": "", "customer": "shop-3", "at": "2026-11-20T10:00:00+08:00"},
        ]),
    )
    .await;
    assert_eq!(status, 400);
    let problems: Vec<(u64, String)> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["line"].as_u64().unwrap(),
                p["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        vec![
            (2, "amount".into()),
            (2, "at".into()),
            (3, "kind".into()),
            (3, "id".into())
        ],
        "{body}"
    );
    // Nothing of it was kept: the good record is new when sent alone.
    let (_, alone) = activity(&w, json!([{"kind": "order", "customer": "shop-3", "amount": 5, "at": "2026-11-20T10:00:00+08:00", "id": "y-1"}])).await;
    assert_eq!(alone["stored"], 1);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_for_a_customer_not_seen_yet_counts_when_they_arrive() {
    let w = world().await;
    w.channels().await;
    // Under the shop's own id, mapped later; and under the external_userid WeCom will give.
    activity(
        &w,
        json!([
            {"kind": "order", "customer": "shop-42", "amount": 3000, "at": at(&w, 2), "id": "o-1"},
            {"kind": "referral", "customer": "wmFutureCustomer000000000001", "count": 3, "at": at(&w, 2), "id": "ref-1"},
        ]),
    )
    .await;
    let a = customer(&w, "王小明").await;
    let r = w
        .http
        .put(w.api(&format!("/customers/{a}/refs")))
        .bearer_auth(siyu::testkit::API_TOKEN)
        .json(&json!({"refs": ["shop-42"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        tier_becomes(&w, &a, "partner").await,
        "the shop's order counts once mapped"
    );

    let mut future = NewCustomer::wechat("陈静");
    future.external_userid = Some("wmFutureCustomer000000000001".into());
    let b = w
        .fake
        .driver()
        .customer_adds_via_contact_way("douyin", future)
        .await
        .unwrap();
    assert!(
        tier_becomes(&w, &b.external_userid, "partner").await,
        "referrals sent before the add count on arrival"
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demotion_waits_for_the_grace_period_and_recovery_inside_it_keeps_the_tier() {
    let w = world().await;
    w.channels().await;
    let a = customer(&w, "王小明").await;
    activity(
        &w,
        json!([{"kind": "order", "customer": a, "amount": 2000, "at": at(&w, 0), "id": "o-1"}]),
    )
    .await;
    assert!(tier_becomes(&w, &a, "partner").await);
    let services = w.app.services();
    let clock = w.app.clock();
    let evaluate = || async { tiers::evaluate(services, None, true).await.unwrap() };

    clock.advance(91 * DAY_MS); // the order left the 90-day window: keep fails from now
    assert!(evaluate().await.is_empty());
    clock.advance(10 * DAY_MS);
    assert!(evaluate().await.is_empty(), "inside the grace period");
    assert_eq!(tier_of(&w, &a).await, "partner");
    // A new order inside the grace period: keep (spend ≥ 1000) holds again, the clock resets.
    activity(
        &w,
        json!([{"kind": "order", "customer": a, "amount": 1000, "at": at(&w, 0), "id": "o-2"}]),
    )
    .await;
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    assert!(evaluate().await.is_empty());
    assert_eq!(
        w.app
            .store()
            .tier_states(Some(std::slice::from_ref(&ExternalUserId::from(&a))))
            .await
            .unwrap()[0]
            .keep_failing_since,
        None
    );

    clock.advance(91 * DAY_MS);
    assert!(
        evaluate().await.is_empty(),
        "failing again, grace starts over"
    );
    clock.advance(29 * DAY_MS);
    assert!(evaluate().await.is_empty(), "29 days is still inside 30");
    clock.advance(2 * DAY_MS);
    let changes = evaluate().await;
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].from.as_str(), changes[0].to.as_str()),
        ("partner", "member")
    );
    assert!(
        changes[0]
            .reason
            .contains("failed keep of partner for 31 days"),
        "{}",
        changes[0].reason
    );
    let back = eventually(Duration::from_secs(10), || async {
        w.tag_names(&w.follow("zhangsan", &a).tags)
            .contains(&"普通会员".to_string())
    })
    .await;
    assert!(back, "the member tag is back at the fake");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_change_takes_effect_on_the_next_evaluation_and_a_dry_run_changes_nothing() {
    let w = world().await;
    w.channels().await;
    let a = customer(&w, "王小明").await;
    activity(
        &w,
        json!([{"kind": "order", "customer": a, "amount": 600, "at": at(&w, 1), "id": "o-1"}]),
    )
    .await;
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    assert_eq!(tier_of(&w, &a).await, "member");
    let mut settings = common::world::settings(&w.db, w.fake_addr());
    settings.tiers[1].promote.any[0].min = json!(500);
    w.app.shutdown().await;
    let app = common::start(settings).await;
    let dry = tiers::evaluate(app.services(), None, false).await.unwrap();
    assert_eq!(dry.len(), 1);
    assert_eq!(
        app.store()
            .customer(&ExternalUserId::from(&a))
            .await
            .unwrap()
            .unwrap()
            .tier,
        "member",
        "a dry run changes nothing"
    );
    let applied = tiers::evaluate(app.services(), None, true).await.unwrap();
    assert_eq!(applied, dry);
    assert_eq!(
        app.store()
            .customer(&ExternalUserId::from(&a))
            .await
            .unwrap()
            .unwrap()
            .tier,
        "partner"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_wins_over_the_rules_until_it_expires() {
    let w = world().await;
    w.channels().await;
    let a = customer(&w, "王小明").await;
    let pin = |body: Value| {
        let w = &w;
        let a = a.clone();
        async move {
            let r = w
                .http
                .put(w.api(&format!("/customers/{a}/pin")))
                .bearer_auth(siyu::testkit::API_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = pin(json!({"tier": "gold", "reason": "vip"})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().starts_with("tier:"),
        "{body}"
    );

    // Held at member for ten days, whatever they spend.
    let in_ten_days = chrono::DateTime::from_timestamp_millis(w.app.clock().now_ms() + 10 * DAY_MS)
        .unwrap()
        .to_rfc3339();
    let (status, body) = pin(json!({"tier": "member", "reason": "refund dispute", "expires_at": in_ten_days, "by": "ops-li"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pin"]["pinned_by"], "ops-li");
    activity(
        &w,
        json!([{"kind": "order", "customer": a, "amount": 5000, "at": at(&w, 0), "id": "o-1"}]),
    )
    .await;
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    assert_eq!(
        tier_of(&w, &a).await,
        "member",
        "the pin holds against the rules"
    );

    w.app.clock().advance(11 * DAY_MS);
    let changes = tiers::evaluate(w.app.services(), None, true).await.unwrap();
    assert_eq!(
        changes.len(),
        1,
        "the expired pin no longer holds: {changes:?}"
    );
    assert_eq!(tier_of(&w, &a).await, "partner");

    // A pin upward applies at once, with the pin as the reason in the history.
    let (status, _) = pin(json!({"tier": "senior_partner", "reason": "key account"})).await;
    assert_eq!(status, 200);
    assert_eq!(tier_of(&w, &a).await, "senior_partner");
    let history = w
        .app
        .store()
        .tier_history(&ExternalUserId::from(&a))
        .await
        .unwrap();
    assert!(
        history
            .last()
            .unwrap()
            .reason
            .contains("pinned by operator: key account"),
        "{history:?}"
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_import_in_chunks_with_rejects_and_resume_after_an_interruption() {
    use siyu::app::import::{checkpoint_path, import_activity, rejects_path};
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();

    let csv = dir.path().join("orders.csv");
    std::fs::write(
        &csv,
        "kind,customer,amount,count,at,id\n\
         order,shop-1,100.50,,2026-11-20T10:00:00+08:00,c-1\n\
         order,shop-2,12.345,,2026-11-20T10:00:00+08:00,c-2\n\
         \n\
         referral,shop-1,,2,2026-11-21T10:00:00+08:00,c-3\n\
         order,shop-1,100.50,,2026-11-20T10:00:00+08:00,c-1\n",
    )
    .unwrap();
    let s = import_activity(w.app.services(), &csv, false)
        .await
        .unwrap();
    assert_eq!((s.lines, s.stored, s.duplicates, s.rejected), (4, 2, 1, 1));
    let rejects = std::fs::read_to_string(rejects_path(&csv)).unwrap();
    assert!(
        rejects.contains("\"line\":3") && rejects.contains("two decimals"),
        "{rejects}"
    );
    assert!(
        !checkpoint_path(&csv).exists(),
        "a finished import leaves no checkpoint"
    );

    let jsonl = dir.path().join("more.jsonl");
    let lines = [
        r#"{"kind": "order", "customer": "shop-9", "amount": 5, "at": "2026-11-20T10:00:00+08:00", "id": "j-1"}"#,
        r#"{"kind": "order", "customer": "shop-9", "amount": 6, "at": "2026-11-20T10:00:00+08:00", "id": "j-2"}"#,
        r#"{"kind": "order", "customer": "shop-9", "amount": 7, "at": "2026-11-20T10:00:00+08:00", "id": "j-3"}"#,
        r#"not json"#,
    ];
    let text = lines.join("\n") + "\n";
    std::fs::write(&jsonl, &text).unwrap();
    // An earlier run stopped after committing the first two lines.
    let offset = lines[0].len() + lines[1].len() + 2;
    let checkpoint = json!({"offset": offset, "size": text.len(),
        "summary": {"lines": 2, "stored": 2, "duplicates": 0, "rejected": 0}});
    std::fs::write(checkpoint_path(&jsonl), checkpoint.to_string()).unwrap();
    let s = import_activity(w.app.services(), &jsonl, false)
        .await
        .unwrap();
    assert!(s.resumed);
    assert_eq!((s.lines, s.stored, s.rejected), (4, 3, 1));
    // The resumed run read on from the checkpoint: the first two lines were not read again.
    let (_, again) = activity(
        &w,
        json!([{"kind": "order", "customer": "shop-9", "amount": 5, "at": "2026-11-20T10:00:00+08:00", "id": "j-1"}]),
    )
    .await;
    assert_eq!(
        again["stored"], 1,
        "j-1 was skipped by the resume, so it is new now"
    );
    let err = import_activity(w.app.services(), &dir.path().join("x.txt"), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(".csv or .jsonl"), "{err}");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_segments_on_a_known_population() {
    let w = world().await;
    w.channels().await;
    let a = customer(&w, "王小明").await;
    let b = customer(&w, "陈静").await;
    let c = customer(&w, "路人甲").await;
    let mut items = vec![
        json!({"kind": "order", "customer": b, "amount": 600, "at": at(&w, 200), "id": "b-1"}),
    ];
    for i in 0..10 {
        items.push(json!({"kind": "order", "customer": a, "amount": 1200, "at": at(&w, 3 + i), "id": format!("a-{i}")}));
    }
    activity(&w, json!(items)).await;

    // Fixed thresholds: a is recent, frequent and big; b ordered once, long ago; c never.
    let mut settings = common::world::settings(&w.db, w.fake_addr());
    settings.rfm.mode = "thresholds".into();
    w.app.shutdown().await;
    let app = common::start(settings).await;
    w.fake
        .set_callback_url(&format!("http://{}/wecom/callback", app.addr()));
    let w = World { app, ..w };
    let changes = siyu::app::segments::evaluate(w.app.services(), true)
        .await
        .unwrap();
    let of = |id: &str| {
        changes
            .iter()
            .find(|c| c.external_userid == id)
            .map(|c| (c.to.clone(), c.rfm.clone()))
            .unwrap()
    };
    assert_eq!(of(&a), ("重要价值".into(), "R5F5M5".into()));
    assert_eq!(of(&b), ("一般挽留".into(), "R1F1M2".into()));
    assert_eq!(of(&c), ("一般挽留".into(), "R1F1M1".into()));
    assert!(
        siyu::app::segments::evaluate(w.app.services(), true)
            .await
            .unwrap()
            .is_empty(),
        "nothing changes twice"
    );
    let tagged = eventually(Duration::from_secs(10), || async {
        w.tag_names(&w.follow("zhangsan", &a).tags)
            .contains(&"重要价值".to_string())
    })
    .await;
    assert!(
        tagged,
        "the segment tag is at the fake: {:?}",
        w.follow("zhangsan", &a)
    );
    let detail = w.get(&format!("/customers/{a}")).await;
    assert_eq!(
        detail["segment"],
        json!({"segment": "重要价值", "rfm": "R5F5M5"})
    );
    // The change is kept, once (the second evaluation changed nothing), with its scores.
    let history = detail["segment_history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        (&history[0]["from"], &history[0]["to"], &history[0]["rfm"]),
        (&json!(null), &json!("重要价值"), &json!("R5F5M5"))
    );
    let summary = w.get("/tiers/summary").await;
    assert!(
        summary["segments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["segment"] == "一般挽留" && s["customers"] == 2)
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_changed_through_the_api_are_validated_kept_with_who_and_used_next_time() {
    let w = world().await;
    w.channels().await;
    let a = customer(&w, "王小明").await;
    activity(
        &w,
        json!([{"kind": "order", "customer": a, "amount": 600, "at": at(&w, 1), "id": "o-1"}]),
    )
    .await;
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    assert_eq!(tier_of(&w, &a).await, "member");
    let put = |body: Value| {
        let w = &w;
        async move {
            let r = w
                .http
                .put(w.api("/tiers"))
                .bearer_auth(siyu::testkit::API_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let in_force = w.get("/tiers").await;
    assert_eq!(in_force["source"], "config", "{in_force}");
    let mut tiers = in_force["tiers"].clone();
    // A metric nobody sends would read 0 forever: refused, naming the condition.
    let mut typo = tiers.clone();
    typo[1]["promote"]["any"][1]["metric"] = json!("refferal");
    let (status, body) = put(json!({"tiers": typo, "by": "ops-li"})).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("tiers[1].promote.any[1]") && error.contains("refferal"),
        "{body}"
    );
    tiers[1]["promote"]["any"][0]["min"] = json!("12.345");
    let (status, body) = put(json!({"tiers": tiers, "by": "ops-li"})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("tiers[1].promote.any[0]"),
        "{body}"
    );
    let (status, body) =
        put(json!({"tiers": [w.get("/tiers").await["tiers"][1]], "by": "ops-li"})).await;
    assert_eq!(status, 409, "the member tier still holds customers: {body}");

    tiers[1]["promote"]["any"][0]["min"] = json!(500);
    let (status, body) = put(json!({"tiers": tiers, "by": "ops-li"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"][0]["changed_by"], "ops-li");
    assert_eq!(body["source"], "api");
    assert_eq!(
        tier_of(&w, &a).await,
        "member",
        "in force from the next evaluation"
    );
    tiers::evaluate(w.app.services(), None, true).await.unwrap();
    assert_eq!(tier_of(&w, &a).await, "partner");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_id_sent_again_with_other_content_is_refused_naming_it() {
    let w = world().await;
    w.channels().await;
    let a = customer(&w, "王小明").await;
    let order =
        json!({"kind": "order", "customer": a, "amount": 300, "at": at(&w, 1), "id": "o-1"});
    let (status, body) = activity(&w, json!([order])).await;
    assert_eq!((status, body["stored"].clone()), (200, json!(1)), "{body}");
    // The same record again: a duplicate, nothing changes.
    let (status, body) = activity(&w, json!([order])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["stored"].clone(), body["duplicates"].clone()),
        (json!(0), json!(1))
    );
    // The same id for another amount: the shop has a bug, and siyu says which id.
    let mut other = order.clone();
    other["amount"] = json!(3000);
    let fresh = json!({"kind": "order", "customer": a, "amount": 10, "at": at(&w, 1), "id": "o-2"});
    let (status, body) = activity(&w, json!([fresh, other])).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("o-1"), "{body}");
    // Nothing of the refused batch was stored, and the customer was not promoted by it.
    let (_, body) = activity(&w, json!([fresh])).await;
    assert_eq!(body["stored"], 1, "{body}");
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    assert_eq!(tier_of(&w, &a).await, "member");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_shop_ref_to_another_customer_re_evaluates_the_one_who_lost_it() {
    let w = world().await;
    w.channels().await;
    let a = customer(&w, "王小明").await;
    let b = customer(&w, "李雷").await;
    let put_refs = |id: String| {
        let w = &w;
        async move {
            w.http
                .put(w.api(&format!("/customers/{id}/refs")))
                .bearer_auth(siyu::testkit::API_TOKEN)
                .json(&json!({"refs": ["shop-42"]}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(put_refs(a.clone()).await, 200);
    activity(
        &w,
        json!([{"kind": "order", "customer": "shop-42", "amount": 2500, "at": at(&w, 1), "id": "o-1"}]),
    )
    .await;
    assert!(tier_becomes(&w, &a, "partner").await);
    // The shop says shop-42 was 李雷 all along: the order counts for him, and no longer for 王小明.
    assert_eq!(put_refs(b.clone()).await, 200);
    assert!(tier_becomes(&w, &b, "partner").await);
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    let metrics = w.get(&format!("/customers/{a}")).await["metrics"].clone();
    assert!(
        metrics
            .as_array()
            .unwrap()
            .contains(&json!({"metric": "spend", "window_days": 90, "value": "0.00"})),
        "{metrics}"
    );
    // Demotion waits for the grace period; the failing clock started at the re-evaluation.
    let state = w
        .app
        .store()
        .tier_states(Some(std::slice::from_ref(&ExternalUserId::from(&a))))
        .await
        .unwrap();
    assert!(
        state[0].keep_failing_since.is_some(),
        "王小明 was not re-evaluated when the ref moved"
    );
    w.app.shutdown().await;
}

/// The bench's nightly activity (`siyu bench tiers`) on this backend: about the asked share of
/// customers gets one record, a second night's records stand beside the first's, and the ends of
/// the range hold exactly.
#[tokio::test]
async fn bench_nightly_activity_reaches_about_the_asked_share() {
    let db = common::TestDb::new().await;
    let app = common::start(db.settings()).await;
    let store = app.store();
    let now = app.clock().now_ms();
    store
        .generate_tier_bench_data(2_000, 2_000, now)
        .await
        .unwrap();
    let first = store
        .generate_tier_bench_nightly(0.25, now + DAY_MS)
        .await
        .unwrap();
    // 500 expected; the bounds are over ten standard deviations (about 19) away.
    assert!(
        (300..=700).contains(&first),
        "{first} of 2000 drawn at 25 %"
    );
    let second = store
        .generate_tier_bench_nightly(0.25, now + 2 * DAY_MS)
        .await
        .unwrap();
    assert!(
        (300..=700).contains(&second),
        "{second} of 2000 drawn at 25 %"
    );
    assert_eq!(
        store
            .generate_tier_bench_nightly(0.0, now + 3 * DAY_MS)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .generate_tier_bench_nightly(1.0, now + 4 * DAY_MS)
            .await
            .unwrap(),
        2_000
    );
    assert_eq!(
        store.scan_activity().await.unwrap() as u64,
        2_000 + first + second + 2_000
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_decided_twice_from_the_same_state_is_recorded_once() {
    // A customer's own evaluation and the nightly one can both decide member → partner from the
    // same read; the second to commit finds the customer moved and writes nothing.
    let w = world().await;
    w.channels().await;
    let a = customer(&w, "王小明").await;
    let change = siyu::store::tiers::TierChange {
        external_userid: a.as_str().into(),
        from_tier: "member".into(),
        to_tier: "partner".into(),
        reason: "test".into(),
        at: w.app.clock().now_ms(),
    };
    let mut recorded = Vec::new();
    for _ in 0..2 {
        let mut tx = w.app.store().begin().await.unwrap();
        recorded.push(
            siyu::store::tiers::record_tier_change(&mut tx, &change, None)
                .await
                .unwrap(),
        );
        tx.commit().await.unwrap();
    }
    assert!(
        recorded[0].is_some() && recorded[1].is_none(),
        "{recorded:?}"
    );
    let history = w
        .app
        .store()
        .tier_history(&a.as_str().into())
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(tier_of(&w, &a).await, "partner");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_written_together_skip_only_the_customers_moved_meanwhile() {
    // Of three changes decided together, the middle customer was moved by another evaluation
    // first: the other two are recorded, and it is left as the other evaluation put it.
    let w = world().await;
    w.channels().await;
    let ids = [
        customer(&w, "王小明").await,
        customer(&w, "李小红").await,
        customer(&w, "张小刚").await,
    ];
    let change = |who: &String| siyu::store::tiers::TierChange {
        external_userid: who.as_str().into(),
        from_tier: "member".into(),
        to_tier: "partner".into(),
        reason: "test".into(),
        at: w.app.clock().now_ms(),
    };
    let mut tx = w.app.store().begin().await.unwrap();
    let mut first = change(&ids[1]);
    first.to_tier = "senior_partner".into();
    siyu::store::tiers::record_tier_change(&mut tx, &first, None)
        .await
        .unwrap()
        .expect("the first move is recorded");
    let all: Vec<_> = ids.iter().map(|c| (change(c), None)).collect();
    let recorded = siyu::store::tiers::record_tier_changes(&mut tx, &all)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        recorded[0].is_some() && recorded[1].is_none() && recorded[2].is_some(),
        "{recorded:?}"
    );
    assert_eq!(tier_of(&w, &ids[0]).await, "partner");
    assert_eq!(tier_of(&w, &ids[1]).await, "senior_partner");
    assert_eq!(tier_of(&w, &ids[2]).await, "partner");
    for (who, moves) in [(&ids[0], 1), (&ids[1], 1), (&ids[2], 1)] {
        let history = w
            .app
            .store()
            .tier_history(&who.as_str().into())
            .await
            .unwrap();
        assert_eq!(history.len(), moves, "{history:?}");
    }
    w.app.shutdown().await;
}

/// A customer in the entry tier, named by its id, stored straight into the database.
fn member_named_by_id(id: &str, now: i64) -> siyu::store::contacts::Customer {
    siyu::store::contacts::Customer {
        external_userid: id.into(),
        name: id.to_string(),
        kind: 1,
        corp_name: String::new(),
        tier: "member".into(),
        channel: "unattributed".into(),
        first_added_at: now,
    }
}

/// What a tier change fans out to: each customer's connected members, earliest added first
/// (the first one invites into the tier's group), across more customers than one statement asks
/// for; a lost relation and a customer without members give none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_of_changed_customers_come_earliest_added_first() {
    use siyu::store::contacts::{Follow, FollowStatus, upsert_customer, upsert_follow};
    let db = common::TestDb::new().await;
    let app = common::start(db.settings()).await;
    let now = app.clock().now_ms();
    let follow = |userid: &str, who: &str, added_at: i64, status: FollowStatus| Follow {
        userid: userid.into(),
        external_userid: who.into(),
        channel: "unattributed".into(),
        state: None,
        add_way: 1,
        added_at,
        remark: String::new(),
        description: String::new(),
        tag_ids: vec![],
        status,
        ended_at: None,
        siyu_remark: None,
    };
    let mut tx = app.store().begin().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..1_200 {
        let id = format!("wm{i:06}");
        upsert_customer(&mut tx, &member_named_by_id(&id, now), now)
            .await
            .unwrap();
        // Every third customer has no members; the others two, the later-added one first by
        // id, and a lost one.
        if i % 3 != 0 {
            for (member, ago, status) in [
                ("zz_first", 2_000, FollowStatus::Connected),
                ("aa_second", 1_000, FollowStatus::Connected),
                ("mm_lost", 3_000, FollowStatus::Lost),
            ] {
                upsert_follow(&mut tx, &follow(member, &id, now - ago, status), now)
                    .await
                    .unwrap();
            }
        }
        ids.push(siyu::ids::ExternalUserId::from(id));
    }
    tx.commit().await.unwrap();
    let got = app.store().connected_members_of(&ids).await.unwrap();
    let expected: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .flat_map(|(_, id)| {
            [
                (id.as_str().to_string(), "zz_first".to_string()),
                (id.as_str().to_string(), "aa_second".to_string()),
            ]
        })
        .collect();
    let got: Vec<(String, String)> = got
        .into_iter()
        .map(|(c, m)| (c.as_str().to_string(), m.as_str().to_string()))
        .collect();
    assert_eq!(got, expected);
    app.shutdown().await;
}

/// The one-pass read (one `GROUP BY` over the activity, merged with the customers) gives each
/// customer exactly the sums a plain reading of its records gives, for everyone and for a list:
/// ids whose order differs between collations, customers without records, records of a
/// reference no customer holds, records at the window's edge and after `now`, and a pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_pass_read_gives_every_customer_the_sums_of_its_own_records() {
    use siyu::store::contacts::upsert_customer;
    use siyu::store::tiers::{NewActivity, Pin, insert_activity};

    let db = common::TestDb::new().await;
    let app = common::start(db.settings()).await;
    let store = app.store();
    let now = app.clock().now_ms();
    // Byte order puts "WM0" < "wm-b" < "wmA1" < "wmZ" < "wm_a" < "wma" < "wm~" < "wmé"; a
    // linguistic collation would not.
    let mut ids: Vec<String> = ["wmA1", "wm_a", "wm-b", "wmZ", "wma", "WM0", "wm~", "wmé"]
        .map(String::from)
        .to_vec();
    // More than one batch of rows (1024), inserted out of order.
    ids.extend((0..1500).map(|i| format!("wm{:05}", i * 7 % 1501)));
    // A small linear congruential generator: the same population every run.
    let mut seed: u64 = 0x5eed;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut tx = store.begin().await.unwrap();
    for id in &ids {
        upsert_customer(&mut tx, &member_named_by_id(id, now), now)
            .await
            .unwrap();
    }
    let kinds = ["order", "refund", "referral", "view"];
    let mut records = Vec::new();
    // Every third customer has no records; two references no customer holds have some.
    let whos: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 1)
        .map(|(_, id)| id.clone())
        .chain(["wmA0-unknown".to_string(), "zz-unknown".to_string()])
        .collect();
    for (n, who) in whos.iter().enumerate() {
        for k in 0..next(12) {
            let days_back = next(200) as i64;
            let at = match k {
                0 => now - 90 * DAY_MS,     // on the edge of the 90-day window: counted
                1 => now - 90 * DAY_MS - 1, // just outside it
                2 => now + 1,               // after now: not counted
                _ => now - days_back * DAY_MS - next(DAY_MS as u64) as i64,
            };
            records.push(NewActivity {
                id: format!("r{n}-{k}"),
                customer: who.clone(),
                who: who.clone(),
                kind: kinds[next(4) as usize].into(),
                amount_fen: next(50_000) as i64,
                count: 1 + next(3) as i64,
                at,
            });
        }
    }
    insert_activity(&mut tx, &records, now).await.unwrap();
    tx.commit().await.unwrap();
    let pin = Pin {
        tier: "partner".into(),
        reason: "VIP".into(),
        pinned_by: "ops".into(),
        expires_at: None,
    };
    store
        .set_pin(&"wm_a".into(), Some(&pin), now)
        .await
        .unwrap();

    let terms: Vec<(String, i64)> = [
        ("orders", 90),
        ("referral", 60),
        ("spend", 30),
        ("spend", 90),
        ("unsent", 30),
        ("view", 7),
    ]
    .map(|(m, d)| (m.to_string(), d * DAY_MS))
    .to_vec();
    let expected = |id: &str| -> Vec<i64> {
        terms
            .iter()
            .map(|(metric, window)| {
                records
                    .iter()
                    .filter(|r| r.who == id && r.at >= now - window && r.at <= now)
                    .map(|r| match (metric.as_str(), r.kind.as_str()) {
                        ("spend", "order") => r.amount_fen,
                        ("spend", "refund") => -r.amount_fen,
                        ("orders", "order") => r.count,
                        (m, k) if m == k => r.count,
                        _ => 0,
                    })
                    .sum()
            })
            .collect()
    };
    let read = |customers: Option<Vec<ExternalUserId>>| {
        let terms = terms.clone();
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let read = store.for_each_customer_metrics(now, &terms, customers.as_deref(), tx);
            let (n, rows) = tokio::join!(read, async {
                let mut rows = Vec::new();
                while let Some(batch) = rx.recv().await {
                    batch.for_each(|state, values| rows.push((state, values.to_vec())));
                }
                rows
            });
            assert_eq!(n.unwrap() as usize, rows.len());
            rows
        }
    };

    let everyone = read(None).await;
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    let got: Vec<&str> = everyone
        .iter()
        .map(|(s, _)| s.external_userid.as_str())
        .collect();
    assert_eq!(got, sorted, "every customer once, in byte order");
    assert!(
        everyone.iter().any(|(_, v)| v.iter().any(|x| *x != 0)),
        "the population has activity"
    );
    for (state, values) in &everyone {
        let id = state.external_userid.as_str();
        assert_eq!(*values, expected(id), "{id}: sums for everyone");
        assert_eq!(state.pin.as_ref(), (id == "wm_a").then_some(&pin), "{id}");
    }
    let some: Vec<ExternalUserId> = sorted
        .iter()
        .step_by(2)
        .map(|id| id.as_str().into())
        .collect();
    let listed = read(Some(some.clone())).await;
    assert_eq!(listed.len(), some.len());
    for (state, values) in &listed {
        let id = state.external_userid.as_str();
        assert_eq!(*values, expected(id), "{id}: sums for a list");
    }
    app.shutdown().await;
}

/// A batch of tier changes sets off one tag job and one note job for all their relations, not
/// one of each per relation, and each relation still ends with its own tags and note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_decided_together_fan_out_as_one_job_per_effect() {
    let w = world().await;
    w.channels().await;
    let names = ["王小明", "陈静", "李雷"];
    let mut ids = Vec::new();
    for name in names {
        ids.push(customer(&w, name).await);
    }
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    let per_relation = |kind: &'static str| {
        let store = w.app.store().clone();
        async move { store.jobs_of_kind(kind).await.unwrap().len() }
    };
    let (tags_before, notes_before) = (
        per_relation("tags.sync").await,
        per_relation("contact.note").await,
    );
    let items: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"kind": "order", "customer": id, "amount": 2500, "at": at(&w, 1), "id": format!("o-{i}")}))
        .collect();
    let (status, body) = activity(&w, json!(items)).await;
    assert_eq!(status, 200, "{body}");
    for id in &ids {
        assert!(tier_becomes(&w, id, "partner").await, "{id}");
    }
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    let tag_batches = w.app.store().jobs_of_kind("tags.sync_batch").await.unwrap();
    let note_batches = w
        .app
        .store()
        .jobs_of_kind("contact.note_batch")
        .await
        .unwrap();
    assert_eq!((tag_batches.len(), note_batches.len()), (1, 1));
    assert_eq!(per_relation("tags.sync").await, tags_before);
    assert_eq!(per_relation("contact.note").await, notes_before);
    for id in &ids {
        let done = eventually(Duration::from_secs(10), || async {
            let f = w.follow("zhangsan", id);
            w.tag_names(&f.tags).contains(&"合作伙伴".to_string())
                && f.description.starts_with("合作伙伴｜抖音")
        })
        .await;
        assert!(done, "{id}: {:?}", w.follow("zhangsan", id));
    }
    w.app.shutdown().await;
}
