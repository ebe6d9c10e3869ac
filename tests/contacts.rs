//! The contact pipeline end to end: the real siyu, a real database, the fake WeCom's driver
//! playing customers, and what the sales member would see at the fake.

mod common;

use std::time::Duration;

use common::world::{World, fake, settings, world};
use common::{TestDb, eventually};
use serde_json::json;
use siyu::App;
use siyu::fake::{Failure, NewCustomer, TagEdit};
use siyu::ids::{ExternalUserId, UserId};
use siyu::wecom::client::code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_through_two_channels_and_an_unknown_state_are_tagged_noted_and_welcomed() {
    let w = world().await;
    w.channels().await;
    let listed = w.get("/channels").await;
    let douyin = listed["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "douyin")
        .unwrap()
        .clone();
    let config_id = douyin["config_id"].as_str().unwrap();
    assert!(douyin["qr_code"].as_str().unwrap().starts_with("http"));
    assert_eq!(
        w.fake.contact_way(config_id).unwrap().state.as_deref(),
        Some("douyin")
    );

    let driver = w.fake.driver();
    let a = driver
        .customer_adds_via_contact_way("douyin", NewCustomer::wechat("王小明"))
        .await
        .unwrap();
    let b = driver
        .customer_adds_via_contact_way("xiaohongshu", NewCustomer::wechat("陈静"))
        .await
        .unwrap();
    let c = driver
        .customer_adds_staff(
            "zhangsan",
            Some("spring_expo_qr"),
            NewCustomer::wechat("路人甲"),
        )
        .await
        .unwrap();

    assert!(w.settled("zhangsan", &a.external_userid, 3).await);
    let fa = w.follow("zhangsan", &a.external_userid);
    assert_eq!(w.tag_names(&fa.tags), vec!["抖音", "普通会员", "短视频"]);
    assert_eq!(fa.remark, "王小明·抖音");
    assert!(
        fa.description.starts_with("普通会员｜抖音｜20"),
        "{}",
        fa.description
    );

    assert!(w.settled("lisi", &b.external_userid, 2).await);
    let fb = w.follow("lisi", &b.external_userid);
    assert_eq!(w.tag_names(&fb.tags), vec!["小红书", "普通会员"]);
    assert_eq!(fb.remark, "陈静·小红书");

    assert!(w.settled("zhangsan", &c.external_userid, 2).await);
    let fc = w.follow("zhangsan", &c.external_userid);
    assert_eq!(w.tag_names(&fc.tags), vec!["普通会员", "未归因"]);
    assert_eq!(fc.remark, "路人甲·未归因");

    let welcomes = w.fake.welcome_messages();
    let wa = welcomes
        .iter()
        .find(|m| m.external_userid == a.external_userid)
        .unwrap();
    assert_eq!(wa.text.as_deref(), Some("王小明，欢迎从抖音来！"));
    let wb = welcomes
        .iter()
        .find(|m| m.external_userid == b.external_userid)
        .unwrap();
    assert_eq!(wb.text.as_deref(), Some("你好陈静"));
    assert_eq!(wb.attachments.len(), 1);
    assert!(
        welcomes
            .iter()
            .all(|m| m.external_userid != c.external_userid),
        "the unattributed channel has no welcome message"
    );

    let listed = w.get("/channels").await;
    let stats = |code: &str| {
        listed["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["code"] == code)
            .unwrap()["stats"]
            .clone()
    };
    assert_eq!(
        stats("douyin"),
        json!({"added": 1, "connected": 1, "lost": 0})
    );
    assert_eq!(
        stats("unattributed"),
        json!({"added": 1, "connected": 1, "lost": 0})
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_channel_body_names_the_field_and_a_taken_code_is_409() {
    let w = world().await;
    w.channels().await;
    let (status, body) = w
        .post(
            "/channels",
            json!({"code": "douyin", "name": "抖音2", "staff": ["zhangsan"]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = w
        .post(
            "/channels",
            json!({"code": "x".repeat(31), "name": "长", "staff": ["zhangsan"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().starts_with("code:"),
        "{body}"
    );
    let (status, body) = w
        .post("/channels", json!({"code": "wx", "name": "微信"}))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("staff"), "{body}");
    let (status, body) = w
        .post("/channels", json!({"code": "wx", "name": "微信", "staff": ["zhangsan"], "welcome": {"text": "{{ name"}}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("welcome.text"),
        "{body}"
    );
    // Updating and deleting reach the contact way.
    let r = w
        .http
        .put(w.api("/channels/douyin"))
        .bearer_auth(siyu::testkit::API_TOKEN)
        .json(&json!({"code": "douyin", "name": "抖音", "staff": ["zhangsan", "lisi"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let config_id = w.get("/channels/douyin").await["config_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        w.fake.contact_way(&config_id).unwrap().user,
        vec!["zhangsan", "lisi"]
    );
    let r = w
        .http
        .delete(w.api("/channels/douyin"))
        .bearer_auth(siyu::testkit::API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(w.fake.contact_way(&config_id).is_none());
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_and_a_restart_between_steps_change_nothing_more() {
    let w = world().await;
    w.channels().await;
    // The note's call is slow: the restart lands between tagging and the note.
    w.fake.set_latency(
        "/cgi-bin/externalcontact/remark",
        Duration::from_millis(1500),
    );
    let a = w
        .fake
        .driver()
        .customer_adds_via_contact_way("douyin", NewCustomer::wechat("王小明"))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            !w.fake
                .calls_to("/cgi-bin/externalcontact/remark")
                .is_empty()
        })
        .await
    );
    let settings = settings(&w.db, w.fake_addr());
    w.app.shutdown().await;
    w.fake
        .set_latency("/cgi-bin/externalcontact/remark", Duration::ZERO);
    let app = common::start(settings).await;
    w.fake
        .set_callback_url(&format!("http://{}/wecom/callback", app.addr()));

    // WeCom delivers the same add twice more (its retries after a lost answer).
    let xml = stored_xml(&app, "change_external_contact.add_external_contact").await;
    let sender = common::sender(&app);
    for _ in 0..2 {
        sender.deliver(&xml).await.unwrap();
    }
    let world = World { app, ..w };
    assert!(world.settled("zhangsan", &a.external_userid, 3).await);
    assert!(common::wait_settled(&world.app, Duration::from_secs(10)).await);
    assert_eq!(world.fake.welcome_messages().len(), 1, "welcomed once");
    assert_eq!(
        world
            .fake
            .calls_to("/cgi-bin/externalcontact/send_welcome_msg")
            .len(),
        1
    );
    assert_eq!(
        world
            .fake
            .calls_to("/cgi-bin/externalcontact/mark_tag")
            .len(),
        1,
        "tagged once"
    );
    let f = world.follow("zhangsan", &a.external_userid);
    assert_eq!(f.remark, "王小明·抖音");
    assert_eq!(world.tag_names(&f.tags), vec!["抖音", "普通会员", "短视频"]);
    world.app.shutdown().await;
}

async fn stored_xml(app: &App, kind: &str) -> String {
    app.store()
        .inbox_xml_of_kind(kind)
        .await
        .unwrap()
        .expect("stored")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_welcome_codes_busy_and_rate_limited_answers_are_handled() {
    let w = world().await;
    w.channels().await;
    w.fake.fail_next(
        "/cgi-bin/externalcontact/send_welcome_msg",
        1,
        Failure::Errcode(code::WELCOME_CODE_USED),
    );
    w.fake.fail_next(
        "/cgi-bin/externalcontact/mark_tag",
        1,
        Failure::Errcode(code::FREQUENCY_LIMIT),
    );
    w.fake.fail_next(
        "/cgi-bin/externalcontact/get",
        2,
        Failure::Errcode(code::SYSTEM_BUSY),
    );
    let a = w
        .fake
        .driver()
        .customer_adds_via_contact_way("douyin", NewCustomer::wechat("王小明"))
        .await
        .unwrap();
    // 45009: the tag waits out the window (1 s here) and then goes through.
    assert!(w.settled("zhangsan", &a.external_userid, 3).await);
    let welcome = w.app.store().jobs_of_kind("contact.welcome").await.unwrap();
    assert_eq!(welcome.len(), 1);
    assert_eq!(welcome[0].state, "failed");
    assert_eq!(welcome[0].attempts, 1, "41051 is recorded, not retried");
    assert!(welcome[0].last_error.as_deref().unwrap().contains("41051"));
    assert_eq!(
        w.fake
            .calls_to("/cgi-bin/externalcontact/send_welcome_msg")
            .len(),
        1
    );
    let tag = w.app.store().jobs_of_kind("tags.sync").await.unwrap();
    assert_eq!(tag[0].state, "done");
    assert_eq!(tag[0].attempts, 2);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_deleted_in_the_console_is_recreated_and_put_back() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await;
    let douyin_id = w
        .fake
        .tag_library()
        .iter()
        .flat_map(|g| g.tag.clone())
        .find(|t| t.name == "抖音" && !t.deleted)
        .unwrap()
        .id;
    w.fake
        .driver()
        .admin_edits_tag(TagEdit::DeleteTag {
            id: douyin_id.clone(),
        })
        .await
        .unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        let f = w.follow("zhangsan", &a.external_userid);
        w.tag_names(&f.tags).contains(&"抖音".to_string()) && !f.tags.contains(&douyin_id)
    })
    .await;
    assert!(
        back,
        "the recreated 抖音 tag is back on the customer: {:?}",
        w.follow("zhangsan", &a.external_userid)
    );
    w.app.shutdown().await;
}

/// The soak found this: a member took a tag off just as siyu's tag job put it on, and the edit's
/// sync read siyu's record of the relation before that job had written it down, so it saw no
/// tag of siyu's taken off, recorded WeCom's tags as the relation's, and the tag stayed off for
/// good. An edit that leaves a relation without a tag siyu wants has it put on, whatever siyu's
/// record says it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_taken_off_while_siyu_had_not_recorded_it_yet_is_put_back() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await;
    let follow = w.follow("zhangsan", &a.external_userid);
    let douyin = follow
        .tags
        .iter()
        .find(|t| w.tag_names(&[t.to_string()]) == ["抖音"])
        .unwrap()
        .clone();
    // siyu's record as it stands while the tag job's write is still on its way: no tags yet.
    w.app
        .store()
        .edit_follow_tags(
            &"zhangsan".into(),
            &a.external_userid.as_str().into(),
            w.app.clock().now_ms(),
            |tags| tags.clear(),
        )
        .await
        .unwrap();
    w.fake
        .driver()
        .staff_edits_customer("zhangsan", &a.external_userid, None, &[douyin.as_str()])
        .await
        .unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        w.follow("zhangsan", &a.external_userid)
            .tags
            .contains(&douyin)
    })
    .await;
    assert!(
        back,
        "抖音 is put back: {:?}",
        w.follow("zhangsan", &a.external_userid)
    );
    w.app.shutdown().await;
}

/// The soak found this: when the tag siyu finds in place of a deleted one of its own is not one
/// it made (an admin typed the name again, or a replica made it and died before it said so),
/// siyu adopted it by name but did not put it back on the customers who had the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_deleted_and_made_again_by_hand_is_adopted_and_put_back() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await;
    let library = w.fake.tag_library();
    let (group_id, old) = library
        .iter()
        .filter(|g| !g.deleted)
        .find_map(|g| {
            g.tag
                .iter()
                .find(|t| t.name == "抖音" && !t.deleted)
                .map(|t| (g.group_id.clone(), t.id.clone()))
        })
        .unwrap();
    // The deletion's callback is lost; the admin makes the tag again by hand.
    w.fake
        .driver()
        .silent()
        .admin_edits_tag(TagEdit::DeleteTag { id: old.clone() })
        .await
        .unwrap();
    assert!(!w.follow("zhangsan", &a.external_userid).tags.contains(&old));
    w.fake
        .driver()
        .admin_edits_tag(TagEdit::CreateTag {
            group_id,
            name: "抖音".into(),
        })
        .await
        .unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        w.tag_names(&w.follow("zhangsan", &a.external_userid).tags)
            .contains(&"抖音".to_string())
    })
    .await;
    assert!(
        back,
        "the 抖音 tag made by hand is put back on the customer: {:?}",
        w.follow("zhangsan", &a.external_userid)
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_churned_customer_shows_as_lost_and_the_member_and_operators_are_told_once() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await;
    w.fake
        .driver()
        .customer_deletes_staff("zhangsan", &a.external_userid)
        .await
        .unwrap();
    let xml = stored_xml(&w.app, "change_external_contact.del_follow_user").await;
    common::sender(&w.app).deliver(&xml).await.unwrap();

    let told = eventually(Duration::from_secs(10), || async {
        !w.fake.app_messages().is_empty()
    })
    .await;
    assert!(told, "the churn notice was sent");
    assert!(common::wait_settled(&w.app, Duration::from_secs(10)).await);
    let messages = w.fake.app_messages();
    assert_eq!(messages.len(), 1, "told once: {messages:?}");
    assert_eq!(messages[0]["touser"], "zhangsan|boss");
    assert!(
        messages[0]["text"]["content"]
            .as_str()
            .unwrap()
            .contains("王小明")
    );
    let follow = w
        .app
        .store()
        .follow(
            &UserId::from("zhangsan"),
            &ExternalUserId::from(&a.external_userid),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(follow.status, "lost");
    let listed = w.get("/channels").await;
    let douyin = listed["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "douyin")
        .unwrap()
        .clone();
    assert_eq!(
        douyin["stats"],
        json!({"added": 1, "connected": 0, "lost": 1})
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_asking_about_a_customer_gets_an_encrypted_answer() {
    let w = world().await;
    w.channels().await;
    w.add("douyin", "王小明").await;

    let body = w
        .fake
        .driver()
        .staff_sends_text("zhangsan", "查 王小明")
        .await
        .unwrap();
    let answer = open_reply(&body);
    for part in [
        "王小明",
        "普通会员",
        "抖音",
        "短视频",
        "王小明·抖音",
        "zhangsan",
    ] {
        assert!(answer.contains(part), "{part:?} missing in {answer}");
    }
    // lisi follows nobody: with visibility `own` she learns nothing about zhangsan's customer.
    let answer = open_reply(
        &w.fake
            .driver()
            .staff_sends_text("lisi", "王小明")
            .await
            .unwrap(),
    );
    assert!(answer.contains("没有找到"), "{answer}");
    w.app.shutdown().await;
}

/// Verifies and decrypts a passive reply as WeCom does; returns its Content.
fn open_reply(body: &str) -> String {
    let xml = common::crypto()
        .open_passive_reply(body)
        .expect("the reply verifies and decrypts");
    match siyu::wecom::event::parse(&xml).unwrap() {
        siyu::wecom::event::Event::Text {
            content, header, ..
        } => {
            assert_eq!(header.from_user_name.as_deref(), Some(common::CORP_ID));
            content
        }
        other => panic!("not a text reply: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_a_member_takes_off_is_recorded_and_put_back() {
    let w = world().await;
    w.channels().await;
    let a = w.add("douyin", "王小明").await;
    let before = w.follow("zhangsan", &a.external_userid);
    let douyin = before
        .tags
        .iter()
        .find(|id| w.tag_names(&[(*id).clone()]) == ["抖音"])
        .unwrap()
        .clone();
    w.fake
        .driver()
        .staff_edits_customer(
            "zhangsan",
            &a.external_userid,
            Some("小明"),
            &[douyin.as_str()],
        )
        .await
        .unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        w.follow("zhangsan", &a.external_userid)
            .tags
            .contains(&douyin)
    })
    .await;
    assert!(back, "tags.reapply_removed puts it back");
    let events = w
        .app
        .store()
        .contact_events_of(&ExternalUserId::from(&a.external_userid))
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "tag_removed" && e.detail.as_deref() == Some(douyin.as_str())),
        "{events:?}"
    );
    // Putting the tag back leaves the remark the member typed alone (a rewritten note keeps it
    // too: see a_remark_typed_by_hand_is_kept_unless_configured_otherwise).
    assert_eq!(w.follow("zhangsan", &a.external_userid).remark, "小明");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_handovers_and_failed_transfers_are_recorded_apart_from_churn() {
    let w = world().await;
    w.channels().await;
    let driver = w.fake.driver();
    let a = w.add("douyin", "王小明").await;
    let b = w.add("xiaohongshu", "陈静").await;
    driver
        .staff_deletes_customer("zhangsan", &a.external_userid, true)
        .await
        .unwrap();
    driver
        .staff_deletes_customer("lisi", &b.external_userid, false)
        .await
        .unwrap();
    driver
        .transfer_fails("lisi", &a.external_userid, "customer_refused")
        .await
        .unwrap();
    let store = w.app.store();
    let recorded = eventually(Duration::from_secs(5), || async {
        store
            .contact_events_of(&ExternalUserId::from(&a.external_userid))
            .await
            .unwrap()
            .len()
            == 2
            && store
                .contact_events_of(&ExternalUserId::from(&b.external_userid))
                .await
                .unwrap()
                .len()
                == 1
    })
    .await;
    assert!(recorded);
    let a_events = store
        .contact_events_of(&ExternalUserId::from(&a.external_userid))
        .await
        .unwrap();
    assert_eq!(a_events[0].kind, "handover");
    assert_eq!(a_events[1].kind, "transfer_fail");
    assert_eq!(a_events[1].detail.as_deref(), Some("customer_refused"));
    assert_eq!(
        store
            .follow(
                &UserId::from("zhangsan"),
                &ExternalUserId::from(&a.external_userid)
            )
            .await
            .unwrap()
            .unwrap()
            .status,
        "transferred"
    );
    assert_eq!(
        store
            .follow(
                &UserId::from("lisi"),
                &ExternalUserId::from(&b.external_userid)
            )
            .await
            .unwrap()
            .unwrap()
            .status,
        "deleted"
    );
    // Neither is churn: nobody is told, nothing counts as lost.
    assert!(common::wait_settled(&w.app, Duration::from_secs(10)).await);
    assert!(w.fake.app_messages().is_empty());
    let listed = w.get("/channels").await;
    assert!(
        listed["channels"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["stats"]["lost"] == 0)
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_matches_get_a_short_list_and_nonsense_gets_help() {
    let w = world().await;
    w.channels().await;
    let driver = w.fake.driver();
    w.add("douyin", "王小明").await;
    let b = w.add("douyin", "王小红").await;
    let list = open_reply(&driver.staff_sends_text("zhangsan", "查 王").await.unwrap());
    assert!(
        list.contains("找到 2 位客户") && list.contains("王小明") && list.contains("王小红"),
        "{list}"
    );
    let by_id = open_reply(
        &driver
            .staff_sends_text("zhangsan", &b.external_userid)
            .await
            .unwrap(),
    );
    assert!(by_id.starts_with("王小红"), "{by_id}");
    let help = open_reply(
        &driver
            .staff_sends_text("zhangsan", "今天天气如何")
            .await
            .unwrap(),
    );
    assert!(help.contains("没有找到"), "{help}");
    assert_eq!(help.lines().count(), 1, "one line of help: {help}");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_declared_in_the_config_are_created_at_start() {
    let db = TestDb::new().await;
    let fake = fake();
    let (addr, _server) = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut s = settings(&db, addr);
    s.channels = vec![siyu::config::ChannelSettings {
        code: "offline".into(),
        name: "线下门店".into(),
        staff: vec!["zhangsan".into()],
        tags: vec![],
        welcome: Some(json!({"text": "欢迎光临"})),
    }];
    let app = common::start(s.clone()).await;
    let channel = app.store().channel("offline").await.unwrap().unwrap();
    assert_eq!(channel.source, "config");
    let config_id = channel.config_id.unwrap();
    assert_eq!(
        fake.contact_way(&config_id).unwrap().state.as_deref(),
        Some("offline")
    );
    app.shutdown().await;
    // A restart with the same config makes no second contact way.
    let app = common::start(s).await;
    assert_eq!(
        fake.calls_to("/cgi-bin/externalcontact/add_contact_way")
            .len(),
        1
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remark_typed_by_hand_is_kept_unless_configured_otherwise() {
    for overwrite in [false, true] {
        let db = TestDb::new().await;
        let fake = fake();
        let (addr, _server) = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut s = settings(&db, addr);
        s.notes.overwrite_manual_remark = overwrite;
        let app = common::start(s.clone()).await;
        fake.set_callback_url(&format!("http://{}/wecom/callback", app.addr()));
        let w = World {
            fake,
            app,
            db,
            http: reqwest::Client::new(),
        };
        w.channels().await;
        let a = w.add("douyin", "王小明").await;
        // The member types a remark of their own; siyu hears of it through the edit event.
        w.fake
            .driver()
            .staff_edits_customer("zhangsan", &a.external_userid, Some("老客户王"), &[])
            .await
            .unwrap();
        let store = w.app.store().clone();
        let synced = eventually(Duration::from_secs(5), || async {
            store
                .follow(
                    &UserId::from("zhangsan"),
                    &ExternalUserId::from(&a.external_userid),
                )
                .await
                .unwrap()
                .is_some_and(|f| f.remark == "老客户王")
        })
        .await;
        assert!(synced);
        // Then siyu writes the note again (a tier change will do this).
        let mut tx = store.begin().await.unwrap();
        let payload = json!({"userid": "zhangsan", "external_userid": a.external_userid});
        siyu::jobs::enqueue(
            &mut tx,
            &s.jobs,
            w.app.clock(),
            "contact.note",
            &payload,
            "note:again",
            None,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let written = eventually(Duration::from_secs(5), || async {
            store
                .job_by_key("note:again")
                .await
                .unwrap()
                .is_some_and(|j| j.state == "done")
        })
        .await;
        assert!(written);
        let expected = if overwrite {
            "王小明·抖音"
        } else {
            "老客户王"
        };
        assert_eq!(
            w.follow("zhangsan", &a.external_userid).remark,
            expected,
            "overwrite = {overwrite}"
        );
        assert!(
            w.follow("zhangsan", &a.external_userid)
                .description
                .starts_with("普通会员｜抖音")
        );
        w.app.shutdown().await;
    }
}
