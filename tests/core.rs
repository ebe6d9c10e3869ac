//! The core's promises, at the fake WeCom: one owner per effect computes what to write from the
//! state when it runs (so tag jobs in any order, and calls landing out of order, end in the right
//! tags), and a send whose answer was lost is looked at before it is retried, never blindly sent
//! twice.

mod common;

use std::time::Duration;

use common::world::{self, World};
use common::{TestDb, eventually, wait_idle};
use siyu::app::RelationJob;
use siyu::app::tags;
use siyu::fake::{Failure, NewCustomer};
use siyu::store::tiers::{TierChange, record_tier_change};

/// A world whose WeCom client gives up on an answer after 500 ms, and a fake that holds the
/// answer of a "timeout" fault for 2 s after making the change: the change is made, the answer
/// is lost.
async fn world_with_short_timeouts() -> World {
    let db = TestDb::new().await;
    let fake = world::fake();
    fake.set_timeout_hold(Duration::from_secs(2));
    let (addr, _server) = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut settings = world::settings(&db, addr);
    settings.wecom.request_timeout_ms = 500;
    let app = common::start(settings).await;
    fake.set_callback_url(&format!("http://{}/wecom/callback", app.addr()));
    World {
        fake,
        app,
        db,
        http: reqwest::Client::new(),
    }
}

/// Moves the customer's tier in siyu's database alone (no hook, no job): the state a tag job
/// finds when it runs.
async fn set_tier(w: &World, external_userid: &str, from: &str, to: &str) {
    let mut tx = w.app.store().begin().await.unwrap();
    let change = TierChange {
        external_userid: external_userid.into(),
        from_tier: from.into(),
        to_tier: to.into(),
        reason: "test".into(),
        at: w.app.clock().now_ms(),
    };
    record_tier_change(&mut tx, &change, None).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_jobs_in_any_order_and_calls_landing_out_of_order_leave_exactly_the_right_tags() {
    let w = world::world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await;
    assert!(wait_idle(&w.app, Duration::from_secs(10)).await);
    let services = w.app.services();
    let job = RelationJob {
        userid: a.userid.clone().into(),
        external_userid: a.external_userid.clone().into(),
    };
    let tags_now = || w.tag_names(&w.follow(&a.userid, &a.external_userid).tags);
    assert_eq!(tags_now(), ["抖音", "普通会员", "短视频"]);

    // The add's tag job and the tier change's tag job, in one order and then the other, with the
    // state moving in between: each run writes the state it finds, whole.
    set_tier(&w, &a.external_userid, "member", "partner").await;
    tags::sync(services, &job).await.unwrap();
    tags::sync(services, &job).await.unwrap();
    assert_eq!(tags_now(), ["合作伙伴", "抖音", "短视频"]);
    set_tier(&w, &a.external_userid, "partner", "senior_partner").await;
    tags::sync(services, &job).await.unwrap();
    set_tier(&w, &a.external_userid, "senior_partner", "partner").await;
    tags::sync(services, &job).await.unwrap();
    assert_eq!(tags_now(), ["合作伙伴", "抖音", "短视频"]);

    // Out of order: a job plans "partner" and its call is slow; meanwhile the tier moves on and a
    // second job's call lands first. The slow call lands last with the older state, and its job
    // must notice and write the newer one.
    w.fake.set_latency(
        "/cgi-bin/externalcontact/mark_tag",
        Duration::from_millis(800),
    );
    let slow = tokio::spawn({
        let services = services.clone();
        let job = job.clone();
        async move { tags::sync(&services, &job).await }
    });
    let in_flight = eventually(Duration::from_secs(5), || async {
        w.fake
            .calls_to("/cgi-bin/externalcontact/mark_tag")
            .iter()
            .any(|c| c.http_status == 0)
    })
    .await;
    assert!(in_flight, "the slow mark_tag never reached the fake");
    w.fake.clear_faults();
    set_tier(&w, &a.external_userid, "partner", "senior_partner").await;
    tags::sync(services, &job).await.unwrap();
    assert_eq!(tags_now(), ["抖音", "短视频", "高级合作伙伴"]);
    slow.await.unwrap().unwrap();
    assert_eq!(
        tags_now(),
        ["抖音", "短视频", "高级合作伙伴"],
        "the slow call's older state was left at WeCom"
    );
    w.app.shutdown().await;
}

/// The soak found this: the add's note job read the customer as a member, its call was slow, the
/// tier change's note job wrote 合作伙伴 meanwhile, and the slow call landed last: the member saw
/// 普通会员 for good. A note job, like a tag job, goes again when the state moved under its call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_whose_call_lands_after_a_newer_one_is_written_again_with_the_newer_state() {
    let w = world::world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await;
    assert!(wait_idle(&w.app, Duration::from_secs(10)).await);
    let services = w.app.services();
    let job = RelationJob {
        userid: a.userid.clone().into(),
        external_userid: a.external_userid.clone().into(),
    };
    let description = || w.follow(&a.userid, &a.external_userid).description;
    assert!(description().starts_with("普通会员｜"), "{}", description());
    w.fake.set_latency(
        "/cgi-bin/externalcontact/remark",
        Duration::from_millis(800),
    );
    let slow = tokio::spawn({
        let services = services.clone();
        let job = job.clone();
        async move { siyu::app::notes::note(&services, &job).await }
    });
    let in_flight = eventually(Duration::from_secs(5), || async {
        w.fake
            .calls_to("/cgi-bin/externalcontact/remark")
            .iter()
            .any(|c| c.http_status == 0)
    })
    .await;
    assert!(in_flight, "the slow remark never reached the fake");
    w.fake.clear_faults();
    set_tier(&w, &a.external_userid, "member", "partner").await;
    siyu::app::notes::note(services, &job).await.unwrap();
    assert!(description().starts_with("合作伙伴｜"), "{}", description());
    slow.await.unwrap().unwrap();
    assert!(
        description().starts_with("合作伙伴｜"),
        "the slow call's older state was left at WeCom: {}",
        description()
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_whose_answer_was_lost_is_not_sent_twice_and_is_recorded_probably_sent() {
    let w = world_with_short_timeouts().await;
    w.channels().await;
    w.fake.fail_next(
        "/cgi-bin/externalcontact/send_welcome_msg",
        1,
        Failure::Timeout,
    );
    let a = w
        .fake
        .driver()
        .customer_adds_via_contact_way("douyin", NewCustomer::wechat("王小明"))
        .await
        .unwrap();
    assert!(w.settled(&a.userid, &a.external_userid, 3).await);
    let done = eventually(Duration::from_secs(15), || async {
        let jobs = w.app.store().jobs_of_kind("contact.welcome").await.unwrap();
        jobs.len() == 1 && jobs[0].state == "done"
    })
    .await;
    let jobs = w.app.store().jobs_of_kind("contact.welcome").await.unwrap();
    assert!(done, "the welcome job did not end done: {jobs:?}");
    let ledger: serde_json::Value =
        serde_json::from_str(jobs[0].ledger.as_deref().unwrap()).unwrap();
    assert_eq!(ledger["state"], "probably_sent", "{ledger}");
    assert_eq!(jobs[0].attempts, 2);
    // The retry sent the same request (its single-use code answered 41051); one welcome arrived.
    let calls = w.fake.calls_to("/cgi-bin/externalcontact/send_welcome_msg");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].body, calls[1].body, "the retry was re-rendered");
    assert_eq!(calls[1].errcode, Some(41051));
    let welcomes: Vec<_> = w
        .fake
        .welcome_messages()
        .into_iter()
        .filter(|m| m.external_userid == a.external_userid)
        .collect();
    assert_eq!(welcomes.len(), 1);
    w.app.shutdown().await;
}

/// The soak found this: a welcome whose answer was lost, whose repeat WeCom then refused for a
/// passing reason (45009), and whose next repeat met the used code, ended failed as "code used"
/// although the first send had gone out. A refusal of a repeat does not tell whether the first
/// went out: the next attempt still counts as one after an unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_whose_repeat_after_a_lost_answer_is_refused_once_is_still_recorded_probably_sent()
 {
    let w = world_with_short_timeouts().await;
    w.channels().await;
    let path = "/cgi-bin/externalcontact/send_welcome_msg";
    w.fake.fail_next(path, 1, Failure::Timeout);
    w.fake.fail_next(path, 1, Failure::Errcode(45009));
    let a = w
        .fake
        .driver()
        .customer_adds_via_contact_way("douyin", NewCustomer::wechat("王小明"))
        .await
        .unwrap();
    let settled = eventually(Duration::from_secs(20), || async {
        let jobs = w.app.store().jobs_of_kind("contact.welcome").await.unwrap();
        jobs.len() == 1 && matches!(jobs[0].state.as_str(), "done" | "failed")
    })
    .await;
    let jobs = w.app.store().jobs_of_kind("contact.welcome").await.unwrap();
    assert!(settled, "the welcome job did not finish: {jobs:?}");
    let calls = w.fake.calls_to(path);
    let codes: Vec<Option<i64>> = calls.iter().map(|c| c.errcode).collect();
    assert_eq!(codes, [Some(0), Some(45009), Some(41051)], "{calls:?}");
    assert_eq!(jobs[0].state, "done", "{jobs:?}");
    let ledger: serde_json::Value =
        serde_json::from_str(jobs[0].ledger.as_deref().unwrap()).unwrap();
    assert_eq!(ledger["state"], "probably_sent", "{ledger}");
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
async fn a_member_notice_retried_after_a_lost_answer_is_byte_identical_and_later_news_follows() {
    let w = world_with_short_timeouts().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await;
    let b = w.add("douyin", "李雷").await;
    w.fake
        .fail_next("/cgi-bin/message/send", 1, Failure::Timeout);
    let driver = w.fake.driver();
    driver
        .customer_deletes_staff(&a.userid, &a.external_userid)
        .await
        .unwrap();
    // The notice for 王小明 goes out at the end of its window; its answer is lost.
    let first_sent = eventually(Duration::from_secs(10), || async {
        !w.fake.calls_to("/cgi-bin/message/send").is_empty()
    })
    .await;
    assert!(first_sent);
    // News that arrives while the notice waits for its retry.
    driver
        .customer_deletes_staff(&b.userid, &b.external_userid)
        .await
        .unwrap();
    let both_told = eventually(Duration::from_secs(20), || async {
        let delivered = w.fake.app_messages();
        delivered.iter().any(|m| m.to_string().contains("王小明"))
            && delivered.iter().any(|m| m.to_string().contains("李雷"))
    })
    .await;
    let delivered = w.fake.app_messages();
    assert!(both_told, "{delivered:?}");
    let calls = w.fake.calls_to("/cgi-bin/message/send");
    assert!(calls.len() >= 3, "{calls:?}");
    assert_eq!(
        calls[0].body, calls[1].body,
        "the retry after the lost answer must send the recorded body, byte for byte"
    );
    // WeCom's duplicate check dropped the repeat: 王小明's churn reached the member once.
    let told_of_a = delivered
        .iter()
        .filter(|m| m.to_string().contains("王小明"))
        .count();
    assert_eq!(told_of_a, 1, "{delivered:?}");
    let told_of_b = delivered
        .iter()
        .filter(|m| m.to_string().contains("李雷"))
        .count();
    assert_eq!(told_of_b, 1, "{delivered:?}");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_job_looks_before_it_retries_and_does_not_send_what_the_look_finds_sent() {
    use siyu::jobs::send::{Look, Outcome};
    use siyu::wecom::client::WecomClient;

    let db = TestDb::new().await;
    let fake = world::fake();
    fake.set_timeout_hold(Duration::from_secs(2));
    let (addr, _server) = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut settings = world::settings(&db, addr);
    settings.wecom.request_timeout_ms = 500;
    // A send job of its own, as campaigns will have: its look reads what WeCom holds (here the
    // fake's delivered messages stand for a list endpoint such as get_groupmsg_list_v2).
    let client = WecomClient::new(&settings.wecom, None, siyu::clock::Clock::default()).unwrap();
    let mut components = siyu::Components::default();
    let looked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (fake, looked) = (fake.clone(), looked.clone());
        components.jobs.register("test.announce", move |ctx| {
            let (fake, client, looked) = (fake.clone(), client.clone(), looked.clone());
            async move {
                let (_, outcome) = ctx
                    .send_once(
                        || async { Ok("本周新品上架".to_string()) },
                        |text: &String| {
                            let text = text.clone();
                            looked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            async move {
                                let found = fake
                                    .app_messages()
                                    .iter()
                                    .any(|m| m["text"]["content"] == text.as_str());
                                Ok(if found { Look::Sent } else { Look::SendAgain })
                            }
                        },
                        |text: &String| {
                            let (client, text) = (client.clone(), text.clone());
                            async move {
                                let member = siyu::ids::UserId::from("zhangsan");
                                client.send_text_to_members(&[member], &text).await
                            }
                        },
                    )
                    .await?;
                match outcome {
                    Outcome::Sent(_) | Outcome::SentBefore => Ok(()),
                    Outcome::Refused { error, .. } => {
                        Err(siyu::jobs::JobError::Permanent(error.to_string()))
                    }
                }
            }
        });
    }
    let app = common::start_with(settings.clone(), components).await;
    fake.fail_next("/cgi-bin/message/send", 1, Failure::Timeout);
    let mut tx = app.store().begin().await.unwrap();
    siyu::jobs::enqueue(
        &mut tx,
        &settings.jobs,
        app.clock(),
        "test.announce",
        &serde_json::json!({}),
        "announce-1",
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let done = eventually(Duration::from_secs(15), || async {
        app.store()
            .job_by_key("announce-1")
            .await
            .unwrap()
            .is_some_and(|j| j.state == "done")
    })
    .await;
    let job = app.store().job_by_key("announce-1").await.unwrap().unwrap();
    assert!(done, "{job:?}");
    assert_eq!(job.attempts, 2, "the first attempt's answer was lost");
    assert_eq!(looked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        fake.calls_to("/cgi-bin/message/send").len(),
        1,
        "the look found it sent: no second call"
    );
    let ledger: serde_json::Value = serde_json::from_str(job.ledger.as_deref().unwrap()).unwrap();
    assert_eq!(ledger["state"], "sent", "{ledger}");
    app.shutdown().await;
}
