//! The API the console reads and changes through: the job queue (list, one job, the retry of a
//! job that failed for good, the queue's numbers), the customer search, and the dry run of
//! proposed tier rules.

mod common;

use std::time::Duration;

use common::world::{World, world, world_with};
use common::{eventually, wait_idle};
use serde_json::{Value, json};
use siyu::app::tiers;
use siyu::fake::Failure;
use siyu::ids::ExternalUserId;

const DAY_MS: i64 = 86_400_000;

async fn get(w: &World, path: &str) -> (u16, Value) {
    let r = w
        .http
        .get(w.api(path))
        .bearer_auth(siyu::testkit::API_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(page: &Value, list: &str) -> Vec<String> {
    page[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {page}"))
        .iter()
        .map(|c| {
            c.get("external_userid")
                .or_else(|| c.get("id"))
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap()
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_that_failed_for_good_is_retried_from_the_api_and_sent_once_with_its_recorded_body()
 {
    // Workers that would sleep a minute between polls: the retry must wake them.
    let w = world_with(|s| s.jobs.poll_interval_ms = 60_000).await;
    w.channels().await;
    let send = "/cgi-bin/externalcontact/send_welcome_msg";
    w.fake.fail_next(send, 1, Failure::Errcode(60011));
    let a = w.add("douyin", "王小明").await;
    let failed = eventually(Duration::from_secs(10), || async {
        w.app
            .store()
            .jobs_of_kind("contact.welcome")
            .await
            .unwrap()
            .iter()
            .any(|j| j.state == "failed")
    })
    .await;
    assert!(failed, "the welcome did not fail for good");
    assert!(wait_idle(&w.app, Duration::from_secs(10)).await);

    // The listing: newest first, by state and kind, paged by id.
    let (status, all) = get(&w, "/jobs").await;
    assert_eq!(status, 200, "{all}");
    let all_ids: Vec<i64> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert!(all_ids.len() >= 4, "{all}");
    assert!(all_ids.windows(2).all(|p| p[0] > p[1]), "newest first");
    assert!(all["next_before"].is_null());
    let (_, failed) = get(&w, "/jobs?state=failed").await;
    let failed = failed["jobs"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let job = &failed[0];
    let id = job["id"].as_i64().unwrap();
    assert_eq!(job["kind"], "contact.welcome");
    assert_eq!(job["state"], "failed");
    assert!(
        job["last_error"].as_str().unwrap().contains("60011"),
        "{job}"
    );
    for field in [
        "attempts",
        "run_at",
        "created_at",
        "updated_at",
        "idempotency_key",
    ] {
        assert!(!job[field].is_null(), "{field} in {job}");
    }
    assert!(job.get("ledger").is_none(), "the sent text stays inside");
    let (_, tags) = get(&w, "/jobs?kind=tags.sync").await;
    let tags = tags["jobs"].as_array().unwrap();
    assert!(!tags.is_empty());
    assert!(
        tags.iter()
            .all(|j| j["kind"] == "tags.sync" && j["state"] == "done"),
        "{tags:?}"
    );
    let (_, first) = get(&w, "/jobs?limit=2").await;
    let firsts: Vec<String> = all_ids[..2].iter().map(i64::to_string).collect();
    assert_eq!(ids(&first, "jobs"), firsts);
    let before = first["next_before"].as_i64().unwrap();
    assert_eq!(before, all_ids[1]);
    let (_, second) = get(&w, &format!("/jobs?limit=2&before={before}")).await;
    assert_eq!(second["jobs"][0]["id"].as_i64(), Some(all_ids[2]));
    let (status, bad) = get(&w, "/jobs?state=stuck").await;
    assert_eq!(status, 400);
    let error = bad["error"].as_str().unwrap();
    assert!(
        error.starts_with("state:") && error.contains("queued, running, done, failed"),
        "{bad}"
    );
    assert_eq!(get(&w, "/jobs?limit=0").await.0, 400);
    assert_eq!(get(&w, "/jobs?limit=501").await.0, 400);
    let (status, one) = get(&w, &format!("/jobs/{id}")).await;
    assert_eq!((status, &one["state"]), (200, &json!("failed")));
    assert_eq!(get(&w, "/jobs/999999").await.0, 404);
    let (_, queue) = get(&w, "/queue").await;
    assert_eq!(queue["jobs"]["failed"], 1, "{queue}");
    assert_eq!(queue["jobs"]["queued"], 0, "{queue}");
    assert!(queue["inbox"]["done"].as_i64().unwrap() >= 1, "{queue}");
    assert_eq!(queue["inbox"]["pending"], 0, "{queue}");
    assert_eq!(
        (&queue["job_lag_ms"], &queue["inbox_lag_ms"]),
        (&json!(0), &json!(0))
    );

    // The retry: queued again with its full attempts, run at once (not at the next poll), and
    // its recorded request sent again byte for byte (WeCom refused the first; it never went out).
    let stored_before = w.app.store().job(id).await.unwrap().unwrap();
    let (status, retried) = w.post(&format!("/jobs/{id}/retry"), json!({})).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["id"], id);
    assert_ne!(retried["state"], "failed");
    let done = eventually(Duration::from_secs(10), || async {
        w.app.store().job(id).await.unwrap().unwrap().state == "done"
    })
    .await;
    let after = w.app.store().job(id).await.unwrap().unwrap();
    assert!(done, "the retried job did not run: {after:?}");
    assert_eq!(after.attempts, 1, "its attempts were reset");
    assert_eq!(after.last_error, None);
    assert_eq!(after.idempotency_key, stored_before.idempotency_key);
    let ledger: Value = serde_json::from_str(after.ledger.as_deref().unwrap()).unwrap();
    assert_eq!(ledger["state"], "sent", "{ledger}");
    let calls = w.fake.calls_to(send);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[0].body, calls[1].body,
        "the retry re-rendered the welcome"
    );
    let welcomes = w
        .fake
        .welcome_messages()
        .into_iter()
        .filter(|m| m.external_userid == a.external_userid)
        .count();
    assert_eq!(welcomes, 1);

    // Only a failed job goes back; the answer says what it is.
    let (status, refused) = w.post(&format!("/jobs/{id}/retry"), json!({})).await;
    assert_eq!(status, 409);
    assert!(
        refused["error"].as_str().unwrap().contains("is done"),
        "{refused}"
    );
    assert_eq!(w.post("/jobs/999999/retry", json!({})).await.0, 404);
    let (_, queue) = get(&w, "/queue").await;
    assert_eq!(queue["jobs"]["failed"], 0, "{queue}");

    // The audit has the retry with the job before and after.
    let (_, log) = get(&w, "/audit?what=retry").await;
    let records = log["records"].as_array().unwrap();
    let what = format!("POST /api/v1/jobs/{id}/retry");
    let ok = records
        .iter()
        .find(|r| r["what"] == what.as_str() && r["status"] == 200)
        .unwrap_or_else(|| panic!("{log:#}"));
    assert_eq!(ok["before"]["state"], "failed", "{ok:#}");
    assert_eq!(ok["after"]["id"], id, "{ok:#}");
    assert_ne!(ok["after"]["state"], "failed", "{ok:#}");
    assert!(
        records
            .iter()
            .any(|r| r["what"] == what.as_str() && r["status"] == 409)
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_whose_answer_was_lost_on_its_last_attempt_is_retried_by_looking_not_sent_twice()
{
    // One attempt per job, and an answer that comes after the client gave up: the welcome goes
    // out, its job fails for good with the send's outcome unknown in its ledger.
    let w = world_with(|s| {
        s.jobs.max_attempts = 1;
        s.wecom.request_timeout_ms = 500;
    })
    .await;
    w.fake.set_timeout_hold(Duration::from_secs(2));
    w.channels().await;
    let send = "/cgi-bin/externalcontact/send_welcome_msg";
    w.fake.fail_next(send, 1, Failure::Timeout);
    let a = w.add("douyin", "王小明").await;
    let job = || async {
        let jobs = w.app.store().jobs_of_kind("contact.welcome").await.unwrap();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        jobs[0].clone()
    };
    let failed = eventually(Duration::from_secs(10), || async {
        job().await.state == "failed"
    })
    .await;
    assert!(failed, "{:?}", job().await);
    let id = job().await.id;
    let (status, retried) = w.post(&format!("/jobs/{id}/retry"), json!({})).await;
    assert_eq!(status, 200, "{retried}");
    let done = eventually(Duration::from_secs(10), || async {
        job().await.state == "done"
    })
    .await;
    let after = job().await;
    assert!(done, "{after:?}");
    // The retry read the ledger: it repeated the recorded request, whose used code told that
    // the first had gone out. One welcome reached the customer.
    let ledger: Value = serde_json::from_str(after.ledger.as_deref().unwrap()).unwrap();
    assert_eq!(ledger["state"], "probably_sent", "{ledger}");
    let calls = w.fake.calls_to(send);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].body, calls[1].body);
    let welcomes = w
        .fake
        .welcome_messages()
        .into_iter()
        .filter(|m| m.external_userid == a.external_userid)
        .count();
    assert_eq!(welcomes, 1);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_are_found_by_name_remark_tier_segment_channel_tag_and_member_and_paged() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    let b = w.add("xiaohongshu", "李雷").await.external_userid;
    let c = w.add("douyin", "Anna_Lee").await.external_userid;
    let find = |query: &str| {
        let w = &w;
        let query = query.to_string();
        async move {
            let (status, page) = get(w, &format!("/customers{query}")).await;
            assert_eq!(status, 200, "{query}: {page}");
            sorted(ids(&page, "customers"))
        }
    };
    let everyone = sorted(vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(find("").await, everyone);
    assert_eq!(
        find("?q=&tier=&tag=").await,
        everyone,
        "empty fields are no filter"
    );
    // Name, in any case; `_` and `%` are letters, not wildcards.
    assert_eq!(find("?q=anna").await, vec![c.clone()]);
    assert_eq!(find("?q=_").await, vec![c.clone()]);
    assert_eq!(find("?q=%25").await, Vec::<String>::new());
    assert_eq!(find("?q=小明").await, vec![a.clone()]);
    // The remark siyu wrote for the member ("name·channel").
    assert_eq!(
        find("?q=%C2%B7%E5%B0%8F%E7%BA%A2%E4%B9%A6").await,
        vec![b.clone()],
        "·小红书 is only in 李雷's remark"
    );
    assert_eq!(
        find("?channel=douyin").await,
        sorted(vec![a.clone(), c.clone()])
    );
    assert_eq!(find("?member=lisi").await, vec![b.clone()]);
    assert_eq!(find("?member=zhangsan&q=lee").await, vec![c.clone()]);
    // A tag by its name (douyin's extra tag) or by its id.
    assert_eq!(
        find("?tag=%E7%9F%AD%E8%A7%86%E9%A2%91").await,
        sorted(vec![a.clone(), c.clone()])
    );
    let tag_id = w.follow("lisi", &b).tags[0].clone();
    assert!(find(&format!("?tag={tag_id}")).await.contains(&b));
    assert_eq!(find("?tag=nosuchtag").await, Vec::<String>::new());

    // Tier and segment after a promotion and a full evaluation.
    let at = chrono::DateTime::from_timestamp_millis(w.app.clock().now_ms())
        .unwrap()
        .to_rfc3339();
    let (status, body) = w
        .post(
            "/activity",
            json!({"items": [{"kind": "order", "customer": a, "amount": 2000, "at": at, "id": "o-1"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let promoted = eventually(Duration::from_secs(10), || async {
        find("?tier=partner").await == vec![a.clone()]
    })
    .await;
    assert!(promoted);
    assert_eq!(
        find("?tier=member").await,
        sorted(vec![b.clone(), c.clone()])
    );
    let (status, bad) = get(&w, "/customers?tier=gold").await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().starts_with("tier:"), "{bad}");
    siyu::app::segments::evaluate(w.app.services(), true)
        .await
        .unwrap();
    let segment = w.get(&format!("/customers/{a}")).await["segment"]["segment"]
        .as_str()
        .unwrap()
        .to_string();
    let same: Vec<String> = {
        let mut same = Vec::new();
        for id in &everyone {
            let view = w.get(&format!("/customers/{id}")).await;
            if view["segment"]["segment"] == segment.as_str() {
                same.push(id.clone());
            }
        }
        same
    };
    let by_segment = find(&format!("?segment={}", url_escape(&segment))).await;
    assert!(by_segment.contains(&a));
    assert_eq!(by_segment, same);

    // What an item says.
    let (_, page) = get(&w, "/customers?q=%E7%8E%8B%E5%B0%8F%E6%98%8E").await;
    let item = &page["customers"][0];
    assert_eq!(item["name"], "王小明");
    assert_eq!(item["tier"], "partner");
    assert_eq!(item["segment"], segment.as_str());
    assert_eq!(item["channels"], json!(["douyin"]));
    assert_eq!(
        item["members"],
        json!([{"userid": "zhangsan", "remark": "王小明·抖音"}])
    );
    assert!(item["added_at"].as_i64().unwrap() > 0);
    assert_eq!(page["total"], 1);

    // Pages by external_userid, with the total on each.
    let (_, first) = get(&w, "/customers?limit=2").await;
    assert_eq!(ids(&first, "customers"), everyone[..2].to_vec());
    assert_eq!(first["total"], 3);
    let after = first["next_after"].as_str().unwrap().to_string();
    assert_eq!(after, everyone[1]);
    let (_, second) = get(&w, &format!("/customers?limit=2&after={after}")).await;
    assert_eq!(ids(&second, "customers"), everyone[2..].to_vec());
    assert!(second["next_after"].is_null());
    assert_eq!(second["total"], 3);
    for bad in ["?limit=0", "?limit=201"] {
        let (status, body) = get(&w, &format!("/customers{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].as_str().unwrap().starts_with("limit:"));
    }
    w.app.shutdown().await;
}

fn url_escape(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_rules_preview_counts_ups_and_downs_and_changes_nothing() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    let b = w.add("douyin", "李雷").await.external_userid;
    let at = |w: &World, days_ago: i64| {
        chrono::DateTime::from_timestamp_millis(w.app.clock().now_ms() - days_ago * DAY_MS)
            .unwrap()
            .to_rfc3339()
    };
    let (status, _) = w
        .post(
            "/activity",
            json!({"items": [{"kind": "order", "customer": a, "amount": 2000, "at": at(&w, 0), "id": "o-1"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.app
                .store()
                .customer(&ExternalUserId::from(&a))
                .await
                .unwrap()
                .is_some_and(|c| c.tier == "partner")
        })
        .await
    );
    // 王小明's order leaves the window: he fails the partner keep rules, 10 days into the 30-day
    // grace. 李雷 spends 600, short of the 2000 a promotion needs.
    let services = w.app.services();
    w.app.clock().advance(91 * DAY_MS);
    assert!(
        tiers::evaluate(services, None, true)
            .await
            .unwrap()
            .is_empty()
    );
    w.app.clock().advance(10 * DAY_MS);
    let (status, _) = w
        .post(
            "/activity",
            json!({"items": [{"kind": "order", "customer": b, "amount": 600, "at": at(&w, 1), "id": "o-2"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(wait_idle(&w.app, Duration::from_secs(10)).await);
    assert!(
        tiers::evaluate(services, None, true)
            .await
            .unwrap()
            .is_empty()
    );
    // The clock's jump passed 03:00: the nightly evaluation may run at any moment now, and it
    // scores value segments too. Score them first, so that run changes nothing either.
    siyu::app::segments::evaluate(services, true).await.unwrap();

    let summary = w.get("/tiers/summary").await;
    let rules = w.get("/tiers").await;
    let states = w.app.store().tier_states(None).await.unwrap();
    let store = w.app.store().clone();
    let history = |id: &str| {
        let (store, id) = (store.clone(), ExternalUserId::from(id));
        async move { store.tier_history(&id).await.unwrap() }
    };
    let (history_a, history_b) = (history(&a).await, history(&b).await);

    // Proposed: promotion at 500, and a 5-day grace.
    let mut proposed = rules["tiers"].clone();
    proposed[1]["promote"]["any"][0]["min"] = json!(500);
    proposed[1]["demote_after_days"] = json!(5);
    let (status, preview) = w.post("/tiers/preview", json!({"tiers": proposed})).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        (
            &preview["customers"],
            &preview["changes"],
            &preview["up"],
            &preview["down"]
        ),
        (&json!(2), &json!(2), &json!(1), &json!(1)),
        "{preview:#}"
    );
    let sample = preview["sample"].as_array().unwrap();
    let of = |id: &str| {
        sample
            .iter()
            .find(|s| s["external_userid"] == id)
            .unwrap_or_else(|| panic!("{id} not in {preview:#}"))
    };
    let up = of(&b);
    assert_eq!(
        (&up["name"], &up["from"], &up["to"]),
        (&json!("李雷"), &json!("member"), &json!("partner"))
    );
    assert!(
        up["rule"]
            .as_str()
            .unwrap()
            .starts_with("promote to partner"),
        "{up}"
    );
    assert!(
        up["metrics"]
            .as_array()
            .unwrap()
            .contains(&json!({"metric": "spend", "window_days": 90, "value": "600.00"})),
        "{up}"
    );
    let down = of(&a);
    assert_eq!(
        (&down["from"], &down["to"]),
        (&json!("partner"), &json!("member"))
    );
    assert!(
        down["rule"]
            .as_str()
            .unwrap()
            .contains("failed keep of partner for 10 days"),
        "{down}"
    );

    // Nothing changed: tiers, the keep-failing clocks, history, the summary, the rules.
    assert_eq!(w.get("/tiers/summary").await, summary);
    assert_eq!(w.get("/tiers").await, rules);
    assert_eq!(w.app.store().tier_states(None).await.unwrap(), states);
    assert_eq!(history(&a).await, history_a);
    assert_eq!(history(&b).await, history_b);
    assert!(wait_idle(&w.app, Duration::from_secs(10)).await);
    assert_eq!(w.app.store().tier_states(None).await.unwrap(), states);
    let (_, log) = get(&w, "/audit?what=preview").await;
    assert_eq!(log["records"], json!([]), "a preview is not a change");

    // Validated as a change is.
    let mut wrong = proposed.clone();
    wrong[1]["promote"]["any"][0]["min"] = json!("12.345");
    let (status, body) = w.post("/tiers/preview", json!({"tiers": wrong})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("tiers[1].promote.any[0]"),
        "{body}"
    );
    let (status, body) = w
        .post("/tiers/preview", json!({"tiers": [proposed[1].clone()]}))
        .await;
    assert_eq!(status, 409, "the member tier holds customers: {body}");
    let (status, body) = w.post("/tiers/preview", json!({"tier": proposed})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("tier"), "{body}");
    w.app.shutdown().await;
}
