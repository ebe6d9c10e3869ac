//! Campaigns end to end against the fake WeCom: Moments for a tier, mass messages per member,
//! group messages to tier groups, chunks of 10,000, the cap, exactly once through lost answers
//! and restarts, results as members confirm and publish, cancel, recurring runs, validation.

mod common;

use std::time::Duration;

use common::world::{World, world};
use common::{eventually, wait_idle};
use serde_json::{Value, json};
use siyu::fake::{Failure, MassMessageView};

const WAIT: Duration = Duration::from_secs(20);

/// RFC 3339 of the app's clock plus `ms`.
fn at_in(w: &World, ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(w.app.clock().now_ms() + ms)
        .unwrap()
        .to_rfc3339()
}

async fn pin(w: &World, id: &str, tier: &str) {
    let (status, body) = w
        .put(
            &format!("/customers/{id}/pin"),
            json!({"tier": tier, "reason": "test"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A PNG in the media library; answers its id.
async fn upload_png(w: &World) -> i64 {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.resize(256, 7);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name("poster.png"),
    );
    let r = w
        .http
        .post(w.api("/media"))
        .bearer_auth(siyu::testkit::API_TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

async fn create(w: &World, body: Value) -> Value {
    let (status, answer) = w.post("/campaigns", body).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

fn singles(w: &World) -> Vec<MassMessageView> {
    w.fake
        .mass_messages()
        .into_iter()
        .filter(|m| m.chat_type == "single")
        .collect()
}

async fn campaign_becomes(w: &World, id: &Value, check: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/campaigns/{id}");
    let ok = eventually(WAIT, || async { check(&w.get(&path).await) }).await;
    let c = w.get(&path).await;
    assert!(ok, "{c:#}");
    c
}

fn recipients(m: &MassMessageView) -> Vec<String> {
    let mut to: Vec<String> = m
        .results
        .iter()
        .filter_map(|r| r.external_userid.clone())
        .collect();
    to.sort();
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_senior_partners_is_one_task_per_member_with_exactly_their_customers() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    let b = w.add("douyin", "陈静").await.external_userid;
    let c = w.add("douyin", "李雷").await.external_userid;
    let d = w.add("xiaohongshu", "韩梅梅").await.external_userid;
    for id in [&a, &b, &d] {
        pin(&w, id, "senior_partner").await;
    }
    pin(&w, &c, "partner").await;
    assert!(wait_idle(&w.app, WAIT).await);
    let image = upload_png(&w).await;
    let campaign = create(
        &w,
        json!({"kind": "message", "name": "双十二高级合伙人专享",
               "audience": {"tiers": ["senior_partner"]},
               "content": {"text": "双十二专享价，今晚八点开抢", "images": [image],
                           "link": {"title": "活动", "url": "https://shop.example/1212"}},
               "schedule": {"at": at_in(&w, 1500)}}),
    )
    .await;
    assert_eq!(campaign["status"], "scheduled");
    let id = campaign["id"].clone();
    let ok = eventually(WAIT, || async { singles(&w).len() == 2 }).await;
    assert!(ok, "{:?}", singles(&w));
    assert!(wait_idle(&w.app, WAIT).await);
    let sent = singles(&w);
    assert_eq!(sent.len(), 2, "one task per member");
    let zhangsan = sent
        .iter()
        .find(|m| m.sender.as_deref() == Some("zhangsan"))
        .unwrap();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(recipients(zhangsan), expected, "not 李雷, a partner");
    let lisi = sent
        .iter()
        .find(|m| m.sender.as_deref() == Some("lisi"))
        .unwrap();
    assert_eq!(recipients(lisi), vec![d.clone()]);
    assert_eq!(zhangsan.text.as_deref(), Some("双十二专享价，今晚八点开抢"));
    assert_eq!(zhangsan.attachments[0]["msgtype"], "image");
    assert_eq!(zhangsan.attachments[1]["msgtype"], "link");
    assert_eq!(
        w.fake.calls_to("/cgi-bin/media/upload").len(),
        1,
        "both members' tasks share one upload of the image"
    );
    assert_eq!(
        zhangsan.attachments[0]["image"]["media_id"],
        lisi.attachments[0]["image"]["media_id"]
    );

    // zhangsan sends; lisi does not (yet): results follow.
    w.fake
        .driver()
        .staff_confirms_mass_message(&zhangsan.msgid, "zhangsan")
        .await
        .unwrap();
    let c = campaign_becomes(&w, &id, |c| c["runs"][0]["totals"]["delivered"] == 2).await;
    assert_eq!(c["runs"][0]["totals"]["pending"], 1, "{c:#}");
    assert_eq!(c["runs"][0]["audience"], 3);
    assert_eq!(c["status"], "done", "no run is to come");

    // A reminder by hand reaches lisi's task.
    let (status, reminded) = w.post(&format!("/campaigns/{id}/remind"), json!({})).await;
    assert_eq!(status, 200, "{reminded}");
    assert!(reminded["reminded"].as_i64().unwrap() >= 1, "{reminded}");
    let lisi_now = singles(&w)
        .into_iter()
        .find(|m| m.sender.as_deref() == Some("lisi"))
        .unwrap();
    assert_eq!(lisi_now.reminders.len(), 1);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moment_for_partners_carries_the_partner_tag_and_is_followed_to_its_moment_id() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    let d = w.add("xiaohongshu", "韩梅梅").await.external_userid;
    let _e = w.add("xiaohongshu", "路人").await.external_userid;
    pin(&w, &a, "partner").await;
    pin(&w, &d, "partner").await;
    assert!(wait_idle(&w.app, WAIT).await);
    let partner_tag = w
        .fake
        .tag_library()
        .iter()
        .flat_map(|g| g.tag.clone())
        .find(|t| t.name == "合作伙伴")
        .expect("siyu made the tier tag")
        .id;
    let image = upload_png(&w).await;
    let campaign = create(
        &w,
        json!({"kind": "moment", "name": "合伙人朋友圈",
               "audience": {"tiers": ["partner"]},
               "content": {"text": "合伙人专享：新品试用", "images": [image]},
               "schedule": {"at": at_in(&w, 1500)}}),
    )
    .await;
    let id = campaign["id"].clone();
    let ok = eventually(WAIT, || async { w.fake.moment_tasks().len() == 1 }).await;
    assert!(ok);
    let m = &w.fake.moment_tasks()[0];
    let body = serde_json::to_value(m).unwrap();
    let tags = body.to_string();
    assert!(
        tags.contains(&partner_tag),
        "the partner tag in tag_list: {body:#}"
    );
    assert_eq!(
        w.fake.calls_to("/cgi-bin/media/upload_attachment").len(),
        1,
        "the image went to WeCom as a Moments attachment"
    );
    let c = campaign_becomes(&w, &id, |c| {
        c["runs"][0]["sends"][0]["moment_id"].is_string()
    })
    .await;
    let moment_id = c["runs"][0]["sends"][0]["moment_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        c["runs"][0]["audience"], 2,
        "zhangsan and lisi publish: {c:#}"
    );
    // Both members publish: the run's results say so.
    for member in ["zhangsan", "lisi"] {
        w.fake
            .driver()
            .staff_publishes_moment(&moment_id, member)
            .await
            .unwrap();
    }
    let c = campaign_becomes(&w, &id, |c| c["runs"][0]["totals"]["published"] == 2).await;
    assert_eq!(c["runs"][0]["sends"][0]["status"], "sent");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_goes_to_the_tiers_groups_from_their_owners() {
    let w = world().await;
    w.channels().await;
    w.fake
        .add_group_chat("wrPartner1", "lisi", "合作伙伴一群", 100);
    w.fake
        .add_group_chat("wrPartner2", "lisi", "合作伙伴二群", 100);
    let (status, body) = w
        .put(
            "/tier-groups/partner",
            json!({"chat_ids": ["wrPartner1", "wrPartner2"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let campaign = create(
        &w,
        json!({"kind": "group_message", "name": "群公告",
               "audience": {"tiers": ["partner"]},
               "content": {"text": "本周五晚八点群直播"},
               "schedule": {"at": at_in(&w, 1500)}}),
    )
    .await;
    let id = campaign["id"].clone();
    let ok = eventually(WAIT, || async {
        w.fake
            .mass_messages()
            .iter()
            .any(|m| m.chat_type == "group")
    })
    .await;
    assert!(ok);
    let m = w
        .fake
        .mass_messages()
        .into_iter()
        .find(|m| m.chat_type == "group")
        .unwrap();
    assert_eq!(m.sender.as_deref(), Some("lisi"));
    let mut chats: Vec<String> = m.results.iter().filter_map(|r| r.chat_id.clone()).collect();
    chats.sort();
    assert_eq!(chats, vec!["wrPartner1", "wrPartner2"]);
    w.fake
        .driver()
        .staff_confirms_mass_message(&m.msgid, "lisi")
        .await
        .unwrap();
    campaign_becomes(&w, &id, |c| c["runs"][0]["totals"]["delivered"] == 2).await;
    let c = campaign_becomes(&w, &id, |c| c["runs"][0]["status"] == "sent").await;
    assert!(c["runs"][0]["finished_at"].is_i64(), "{c:#}");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_after_the_change_sends_nothing_twice() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    let b = w.add("douyin", "陈静").await.external_userid;
    pin(&w, &a, "partner").await;
    pin(&w, &b, "partner").await;
    assert!(wait_idle(&w.app, WAIT).await);
    // WeCom makes the task and the answer never comes.
    w.fake.fail_next(
        "/cgi-bin/externalcontact/add_msg_template",
        1,
        Failure::Timeout,
    );
    let first = create(
        &w,
        json!({"kind": "message", "name": "第一波", "audience": {"tiers": ["partner"]},
               "content": {"text": "第一波消息"}, "schedule": {"at": at_in(&w, 1000)}}),
    )
    .await;
    let c = campaign_becomes(&w, &first["id"], |c| {
        c["runs"][0]["sends"][0]["status"] == "tasked"
    })
    .await;
    assert!(wait_idle(&w.app, WAIT).await);
    assert_eq!(singles(&w).len(), 1, "sent once: {:?}", singles(&w));
    assert_eq!(
        c["runs"][0]["sends"][0]["msgid"],
        json!(singles(&w)[0].msgid),
        "the task was found at WeCom"
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_problem_is_a_400_naming_its_field_and_nothing_is_stored() {
    let w = world().await;
    w.channels().await;
    let (status, body) = w
        .post(
            "/campaigns",
            json!({"kind": "fax", "name": "", "audience": {"tiers": ["gold"], "segments": ["nope"], "channels": ["tv"]},
                   "content": {"text": "x".repeat(4001), "images": [999]},
                   "schedule": {"at": "2020-01-01T00:00:00+08:00"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    for field in [
        "kind:",
        "name:",
        "audience.tiers[0]",
        "audience.segments[0]",
        "audience.channels[0]",
        "content.text",
        "content.images[0]",
        "schedule.at",
    ] {
        assert!(error.contains(field), "{field} in {error}");
    }
    let (status, body) = w
        .post(
            "/campaigns",
            json!({"kind": "moment", "name": "混合", "audience": {"tiers": ["partner"]},
                   "content": {"text": "y".repeat(2001), "link": {"title": "t", "url": "ftp://x"}, "video": 1},
                   "schedule": {"cron": "every day"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    for field in [
        "content.text: 2001 characters",
        "content: a Moments post takes images, or one video, or one link",
        "content.link.url",
        "content.link.cover",
        "schedule.cron",
    ] {
        assert!(error.contains(field), "{field} in {error}");
    }
    let (status, body) = w
        .post(
            "/campaigns",
            json!({"kind": "message", "name": "全体", "content": {"text": "hi"},
                   "schedule": {"at": at_in(&w, 60_000)}}),
        )
        .await;
    assert_eq!(status, 400, "an empty audience is refused: {body}");
    assert!(body["error"].as_str().unwrap().contains("audience"));
    let listed = w.get("/campaigns").await;
    assert_eq!(listed["campaigns"], json!([]), "nothing stored");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_a_run_sends_nothing_and_after_cancels_the_unsent_tasks() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    let d = w.add("xiaohongshu", "韩梅梅").await.external_userid;
    pin(&w, &a, "partner").await;
    pin(&w, &d, "partner").await;
    assert!(wait_idle(&w.app, WAIT).await);
    let later = create(
        &w,
        json!({"kind": "message", "name": "取消的", "audience": {"tiers": ["partner"]},
               "content": {"text": "不会发出"}, "schedule": {"at": at_in(&w, 3_600_000)}}),
    )
    .await;
    let (status, body) = w
        .post(&format!("/campaigns/{}/cancel", later["id"]), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    w.app.clock().advance(3_700_000);
    assert!(wait_idle(&w.app, WAIT).await);
    assert!(singles(&w).is_empty(), "a cancelled campaign never runs");

    let now = create(
        &w,
        json!({"kind": "message", "name": "发出后取消", "audience": {"tiers": ["partner"]},
               "content": {"text": "发出后取消"}, "schedule": {"at": at_in(&w, 1000)}}),
    )
    .await;
    let ok = eventually(WAIT, || async { singles(&w).len() == 2 }).await;
    assert!(ok);
    assert!(wait_idle(&w.app, WAIT).await);
    let zhangsan = singles(&w)
        .into_iter()
        .find(|m| m.sender.as_deref() == Some("zhangsan"))
        .unwrap();
    w.fake
        .driver()
        .staff_confirms_mass_message(&zhangsan.msgid, "zhangsan")
        .await
        .unwrap();
    campaign_becomes(&w, &now["id"], |c| c["runs"][0]["totals"]["delivered"] == 1).await;
    w.post(&format!("/campaigns/{}/cancel", now["id"]), json!({}))
        .await;
    let ok = eventually(WAIT, || async {
        singles(&w)
            .iter()
            .any(|m| m.sender.as_deref() == Some("lisi") && m.cancelled)
    })
    .await;
    assert!(ok, "lisi's unsent task is cancelled at WeCom");
    let c = campaign_becomes(&w, &now["id"], |c| c["runs"][0]["totals"]["cancelled"] == 1).await;
    assert_eq!(
        c["runs"][0]["totals"]["delivered"], 1,
        "what was sent stays sent"
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurring_campaign_runs_once_per_due_time_on_a_moved_clock() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    pin(&w, &a, "partner").await;
    assert!(wait_idle(&w.app, WAIT).await);
    // Every minute, three times: the first due time is the next minute's start.
    let now = w.app.clock().now_ms();
    let first = (now / 60_000 + 1) * 60_000;
    let until = chrono::DateTime::from_timestamp_millis(first + 120_000)
        .unwrap()
        .to_rfc3339();
    let c = create(
        &w,
        json!({"kind": "message", "name": "每分钟", "audience": {"tiers": ["partner"]},
               "content": {"text": "定时消息"},
               "schedule": {"cron": "* * * * *", "until": until}}),
    )
    .await;
    let id = c["id"].clone();
    w.app.clock().advance(first - now + 100);
    for round in 1..=3 {
        let ok = eventually(WAIT, || async { singles(&w).len() == round }).await;
        assert!(ok, "round {round}: {:?}", singles(&w).len());
        assert!(wait_idle(&w.app, WAIT).await);
        w.app.clock().advance(60_000);
    }
    w.app.clock().advance(120_000);
    assert!(wait_idle(&w.app, WAIT).await);
    assert_eq!(singles(&w).len(), 3, "until has passed");
    let c = w.get(&format!("/campaigns/{id}")).await;
    assert_eq!(c["runs"].as_array().unwrap().len(), 3, "{c:#}");
    assert_eq!(c["status"], "done");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_over_the_cap_is_left_out_and_counted() {
    let w = common::world::world_with(|s| {
        s.groups.mass_cap_period = "day".into();
        s.groups.mass_cap_count = 1;
    })
    .await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    let b = w.add("douyin", "陈静").await.external_userid;
    pin(&w, &a, "partner").await;
    pin(&w, &b, "partner").await;
    assert!(wait_idle(&w.app, WAIT).await);
    let first = create(
        &w,
        json!({"kind": "message", "name": "第一条", "audience": {"members": ["zhangsan"], "tiers": ["partner"]},
               "content": {"text": "第一条"}, "schedule": {"at": at_in(&w, 1000)}}),
    )
    .await;
    let ok = eventually(WAIT, || async { singles(&w).len() == 1 }).await;
    assert!(ok);
    w.fake
        .driver()
        .staff_confirms_mass_message(&singles(&w)[0].msgid, "zhangsan")
        .await
        .unwrap();
    campaign_becomes(&w, &first["id"], |c| {
        c["runs"][0]["totals"]["delivered"] == 2
    })
    .await;
    // The preview says who the cap leaves out, and why.
    let body = json!({"kind": "message", "name": "第二条", "audience": {"tiers": ["partner"]},
                      "content": {"text": "第二条"}, "schedule": {"at": at_in(&w, 1000)}});
    let (status, preview) = w.post("/campaigns/preview", body.clone()).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["excluded"]["over_cap"], 2, "{preview}");
    assert_eq!(preview["audience"], 0);
    let second = create(&w, body).await;
    let c = campaign_becomes(&w, &second["id"], |c| c["runs"][0]["status"] == "sent").await;
    assert_eq!(c["runs"][0]["excluded_cap"], 2, "{c:#}");
    assert!(common::wait_settled(&w.app, WAIT).await);
    assert_eq!(singles(&w).len(), 1, "no second message past the cap");
    let _ = (a, b);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_thousand_customers_of_one_member_are_three_tasks() {
    use siyu::store::contacts::{Customer, Follow, FollowStatus, upsert_customer, upsert_follow};
    let w = world().await;
    w.channels().await;
    let now = w.app.clock().now_ms();
    let mut tx = w.app.store().begin().await.unwrap();
    for i in 0..25_000 {
        let name = format!("客户{i}");
        let id = w
            .fake
            .seed_customer("zhangsan", siyu::fake::NewCustomer::wechat(&name));
        let customer = Customer {
            external_userid: id.clone().into(),
            name,
            kind: 1,
            corp_name: String::new(),
            tier: "partner".into(),
            channel: "unattributed".into(),
            first_added_at: now,
        };
        upsert_customer(&mut tx, &customer, now).await.unwrap();
        let follow = Follow {
            userid: "zhangsan".into(),
            external_userid: id.into(),
            channel: "unattributed".into(),
            state: None,
            add_way: 1,
            added_at: now,
            remark: String::new(),
            description: String::new(),
            tag_ids: vec![],
            status: FollowStatus::Connected,
            ended_at: None,
            siyu_remark: None,
        };
        upsert_follow(&mut tx, &follow, now).await.unwrap();
    }
    tx.commit().await.unwrap();
    let c = create(
        &w,
        json!({"kind": "message", "name": "大促", "audience": {"tiers": ["partner"]},
               "content": {"text": "大促开始"}, "schedule": {"at": at_in(&w, 1000)}}),
    )
    .await;
    let ok = eventually(Duration::from_secs(60), || async { singles(&w).len() == 3 }).await;
    assert!(ok, "{}", singles(&w).len());
    let mut sizes: Vec<usize> = singles(&w).iter().map(|m| m.results.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![5_000, 10_000, 10_000]);
    let c = campaign_becomes(&w, &c["id"], |c| {
        c["runs"][0]["sends"]
            .as_array()
            .is_some_and(|s| s.len() == 3 && s.iter().all(|s| s["status"] == "tasked"))
    })
    .await;
    assert_eq!(c["runs"][0]["audience"], 25_000);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_a_run_sends_nothing_twice() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    let d = w.add("xiaohongshu", "韩梅梅").await.external_userid;
    pin(&w, &a, "partner").await;
    pin(&w, &d, "partner").await;
    assert!(wait_idle(&w.app, WAIT).await);
    // WeCom is slow to answer lisi's task: siyu stops while the call is in flight.
    w.fake.set_latency(
        "/cgi-bin/externalcontact/add_msg_template",
        Duration::from_millis(1500),
    );
    let c = create(
        &w,
        json!({"kind": "message", "name": "重启", "audience": {"tiers": ["partner"]},
               "content": {"text": "重启也只发一次"}, "schedule": {"at": at_in(&w, 500)}}),
    )
    .await;
    let started = eventually(WAIT, || async {
        !w.fake
            .calls_to("/cgi-bin/externalcontact/add_msg_template")
            .is_empty()
    })
    .await;
    assert!(started);
    let settings = (*w.app.services().settings).clone();
    w.app.shutdown().await;
    w.fake.clear_faults();
    // Started again on the same database: whatever was in flight is looked up, not resent.
    let app = common::start(settings).await;
    w.fake
        .set_callback_url(&format!("http://{}/wecom/callback", app.addr()));
    let done = eventually(WAIT, || async {
        let c = app
            .store()
            .runs_of(c["id"].as_i64().unwrap())
            .await
            .unwrap();
        let Some(run) = c.first() else { return false };
        let sends = app.store().sends_of_run(run.id).await.unwrap();
        sends.len() == 2 && sends.iter().all(|s| s.status.as_str() == "tasked")
    })
    .await;
    assert!(done);
    // A second replica (or a scheduler that fires again) starts the same run: nothing more.
    let run = app
        .store()
        .runs_of(c["id"].as_i64().unwrap())
        .await
        .unwrap()
        .remove(0);
    let mut tx = app.store().begin().await.unwrap();
    app.services()
        .enqueue(
            &mut tx,
            "campaigns.run",
            &json!({"campaign_id": run.campaign_id, "due_at": run.due_at}),
            "the same run again",
            None,
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(wait_idle(&app, WAIT).await);
    let again = app.store().jobs_of_kind("campaigns.run").await.unwrap();
    assert!(
        again.iter().filter(|j| j.state == "done").count() >= 2,
        "the second start ran: {again:?}"
    );
    let tasks = w
        .fake
        .mass_messages()
        .into_iter()
        .filter(|m| m.chat_type == "single")
        .count();
    assert_eq!(tasks, 2, "one task per member, none twice");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_ten_moments_tasks_a_minute_go_to_wecom() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    pin(&w, &a, "partner").await;
    assert!(wait_idle(&w.app, WAIT).await);
    for i in 0..12 {
        create(
            &w,
            json!({"kind": "moment", "name": format!("朋友圈{i}"), "audience": {"tiers": ["partner"]},
                   "content": {"text": format!("第{i}条")}, "schedule": {"at": at_in(&w, 1000)}}),
        )
        .await;
    }
    let ten = eventually(WAIT, || async { w.fake.moment_tasks().len() == 10 }).await;
    assert!(ten, "{}", w.fake.moment_tasks().len());
    assert!(wait_idle(&w.app, WAIT).await);
    assert_eq!(
        w.fake.moment_tasks().len(),
        10,
        "the other two wait for the minute"
    );
    assert_eq!(
        w.fake
            .calls_to("/cgi-bin/externalcontact/add_moment_task")
            .len(),
        10,
        "siyu never asked an eleventh time within the minute (no 45009)"
    );
    w.app.clock().advance(61_000);
    w.fake.advance_clock(Duration::from_secs(61));
    let twelve = eventually(WAIT, || async { w.fake.moment_tasks().len() == 12 }).await;
    assert!(twelve, "{}", w.fake.moment_tasks().len());
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_make_each_task_once() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    let d = w.add("xiaohongshu", "韩梅梅").await.external_userid;
    pin(&w, &a, "partner").await;
    pin(&w, &d, "partner").await;
    assert!(wait_idle(&w.app, WAIT).await);
    // A second replica on the same database, with its workers racing the first's.
    let second = common::start((*w.app.services().settings).clone()).await;
    for i in 0..3 {
        create(
            &w,
            json!({"kind": "message", "name": format!("双副本{i}"), "audience": {"tiers": ["partner"]},
                   "content": {"text": format!("双副本{i}")}, "schedule": {"at": at_in(&w, 800)}}),
        )
        .await;
    }
    let six = eventually(WAIT, || async { singles(&w).len() >= 6 }).await;
    assert!(six, "{}", singles(&w).len());
    assert!(wait_idle(&w.app, WAIT).await && wait_idle(&second, WAIT).await);
    assert_eq!(
        singles(&w).len(),
        6,
        "three campaigns, two members: six tasks, none twice"
    );
    second.shutdown().await;
    w.app.shutdown().await;
}
