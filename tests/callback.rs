//! The callback endpoint, driven over HTTP like WeCom drives it, against a real database
//! (SQLite, or PostgreSQL when DATABASE_URL is set).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{TestDb, eventually, sample_events, sender, start};
use siyu::store::inbox::{EventFilter, InboxStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_shape_delivered_three_times_at_once_is_stored_once() {
    let db = TestDb::new().await;
    let app = start(db.settings()).await;
    let sender = sender(&app);
    let events = sample_events();
    assert_eq!(
        events.len(),
        16,
        "every shape of callback.md §3 and a text message"
    );

    let mut tries = Vec::new();
    for xml in &events {
        // Sealed separately each time (fresh nonce and random prefix), as a re-encrypting retry
        // would be: the dedupe key must not depend on the ciphertext.
        for _ in 0..3 {
            let sender = sender.clone();
            let sealed = sender.seal(xml);
            tries.push(tokio::spawn(async move { sender.post(&sealed).await }));
        }
    }
    for t in tries {
        assert_eq!(t.await.unwrap(), Ok(200));
    }

    let keys = app.store().inbox_keys().await.unwrap();
    assert_eq!(keys.len(), events.len(), "each event stored once");
    assert!(keys.iter().all(|(_, dups)| *dups == 2), "{keys:?}");
    assert_eq!(app.metrics().duplicates(), 2 * events.len() as u64);

    let listed = app
        .store()
        .list_events(&EventFilter::default(), 100)
        .await
        .unwrap();
    let mut kinds: Vec<&str> = listed.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort();
    let mut expected = vec![
        "change_external_chat.create",
        "change_external_chat.dismiss",
        "change_external_chat.update",
        "change_external_contact.add_external_contact",
        "change_external_contact.add_half_external_contact",
        "change_external_contact.del_external_contact",
        "change_external_contact.del_follow_user",
        "change_external_contact.edit_external_contact",
        "change_external_contact.transfer_fail",
        "change_external_tag.create",
        "change_external_tag.delete",
        "change_external_tag.shuffle",
        "change_external_tag.update",
        "event.enter_agent",
        "message.text",
        "message.text",
    ];
    expected.sort();
    assert_eq!(kinds, expected);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_distinct_events_sent_concurrently_are_all_stored_and_acknowledged() {
    let db = TestDb::new().await;
    let app = start(db.settings()).await;
    let sender = sender(&app);
    let now = siyu::clock::system_now_ms() / 1000;
    let mut tasks = Vec::new();
    // 1,000 adds in the same second through one channel: FromUserName+CreateTime is the same
    // for all of them, and none may be taken for a duplicate.
    for chunk in (0..1000u64).collect::<Vec<_>>().chunks(20) {
        let sender = sender.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for n in chunk {
                let xml = siyu::testkit::add_contact_xml(common::CORP_ID, n, now);
                if sender.post(&sender.seal(&xml)).await == Ok(200) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut acknowledged = 0;
    for t in tasks {
        acknowledged += t.await.unwrap();
    }
    assert_eq!(acknowledged, 1000);
    let keys = app.store().inbox_keys().await.unwrap();
    assert_eq!(keys.len(), 1000);
    assert!(keys.iter().all(|(_, d)| *d == 0));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_check_answers_the_echostr_plaintext_exactly() {
    let db = TestDb::new().await;
    let app = start(db.settings()).await;
    // Vector V1a of the official sample, with its raw (percent-encoded) echostr.
    let echostr = "fsi1xnbH4yQh0%2BPJxcOdhhK6TDXkjMyhEPA7xB2TGz6b%2Bg7xyAbEkRxN%2F3cNXW9qdqjnoVzEtpbhnFyq6SVHyA%3D%3D";
    let url = format!(
        "http://{}/wecom/callback?msg_signature=012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb&timestamp=1476416373&nonce=47744683&echostr={echostr}",
        app.addr()
    );
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "not JSON-quoted"
    );
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        b"1288432023552776189"
    );

    let forged = url.replace("012bc692", "112bc692");
    assert_eq!(reqwest::get(&forged).await.unwrap().status(), 403);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_and_oversized_callbacks_are_refused_and_nothing_is_stored() {
    let db = TestDb::new().await;
    let app = start(db.settings()).await;
    let sender = sender(&app);
    let client = reqwest::Client::new();
    let url = format!("http://{}/wecom/callback", app.addr());
    let xml = &sample_events()[0];
    let sealed = sender.seal(xml);
    let post = |query: String, body: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(format!("{url}?{query}"))
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            (status, body)
        }
    };

    // One signature digit changed.
    let bad_sig = tamper_signature(&sealed.query);
    assert_eq!(
        post(bad_sig, sealed.body.clone()).await,
        (403, String::new())
    );
    // The ciphertext changed after signing.
    let tampered = sealed
        .body
        .replacen("<Encrypt><![CDATA[", "<Encrypt><![CDATA[A", 1);
    assert_eq!(post(sealed.query.clone(), tampered).await.0, 403);
    // No signature at all.
    assert_eq!(post(String::new(), sealed.body.clone()).await.0, 400);
    // Not an envelope.
    assert_eq!(post(sealed.query.clone(), "hello".into()).await.0, 400);
    // Signed and encrypted for another corp (right token and key, wrong receive_id).
    let other = siyu::wecom::crypto::Crypto::new(
        &common::secrets().token,
        &common::secrets().encoding_aes_key,
        "wwsomeoneelse00000",
    )
    .unwrap();
    let (sig, body) = other.seal_callback(xml, "1000002", "1700000000", "12345");
    assert_eq!(
        post(
            format!("msg_signature={sig}&timestamp=1700000000&nonce=12345"),
            body
        )
        .await
        .0,
        400
    );
    // Far over the body limit.
    let huge = format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(200_000));
    assert_eq!(post(sealed.query.clone(), huge).await.0, 413);

    assert!(app.store().inbox_keys().await.unwrap().is_empty());
    let metrics = reqwest::get(format!("http://{}/metrics", app.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, n) in [
        ("bad_signature", 2),
        ("missing_params", 1),
        ("bad_envelope", 1),
        ("wrong_receiver", 1),
        ("too_large", 1),
    ] {
        let line = format!("siyu_callbacks_rejected_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "missing {line:?} in\n{metrics}");
    }
    app.shutdown().await;
}

fn tamper_signature(query: &str) -> String {
    let (signature, rest) = query.split_once('&').unwrap();
    let digits = signature.strip_prefix("msg_signature=").unwrap();
    let first = if digits.starts_with('a') { 'b' } else { 'a' };
    format!("msg_signature={first}{}&{rest}", &digits[1..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_a_handler_are_marked_unhandled_and_replayable() {
    let db = TestDb::new().await;
    let app = start(db.settings()).await;
    let sender = sender(&app);
    // Member changes, batch jobs and approvals have no handler.
    for xml in &common::unhandled_events() {
        assert_eq!(sender.deliver(xml).await.unwrap(), 1);
    }
    let store = app.store().clone();
    let all_unhandled = eventually(Duration::from_secs(5), || {
        let store = store.clone();
        async move {
            let counts: HashMap<_, _> = store
                .count_events_by_status()
                .await
                .unwrap()
                .into_iter()
                .collect();
            counts[&InboxStatus::Unhandled] == 3
        }
    })
    .await;
    assert!(
        all_unhandled,
        "the dispatcher marks events it has no handler for"
    );
    app.shutdown().await;

    // A newer siyu knows how to handle member changes: replay them, and only them.
    let mut components = siyu::Components::default();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    components
        .events
        .register("event.change_contact", move |_ctx, event, _tx| {
            let seen_tx = seen_tx.clone();
            Box::pin(async move { seen_tx.send(event).map_err(|e| e.to_string()) })
        });
    let app = common::start_with(db.settings(), components).await;
    let filter = EventFilter {
        kind: Some("event.change_contact".into()),
        status: Some(InboxStatus::Unhandled),
    };
    assert_eq!(app.store().requeue_events(&filter, None).await.unwrap(), 1);
    let event = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
        .await
        .unwrap()
        .unwrap();
    match event {
        siyu::wecom::event::Event::Unknown { event, raw, .. } => {
            assert_eq!(event.as_deref(), Some("change_contact"));
            assert!(raw.contains("create_user"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let store = app.store().clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let store = store.clone();
            async move {
                let done = EventFilter {
                    kind: None,
                    status: Some(InboxStatus::Done),
                };
                store.list_events(&done, 10).await.unwrap().len() == 1
            }
        })
        .await
    );
    app.shutdown().await;
}

/// Events claimed together are handled in one transaction. One whose handler fails (or panics)
/// must fail alone: what its handler wrote is undone, while the others of its batch are done
/// with what theirs wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_fails_its_own_event_alone_and_its_writes_are_undone() {
    use siyu::store::inbox::{NewInboxEvent, insert_batch};
    use siyu::wecom::event::Event;

    let db = TestDb::new().await;
    let settings = db.settings();
    // Stored pending before siyu starts, so its dispatcher claims all four in one batch.
    let store = siyu::store::Store::connect(&settings.database)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let corp = common::secrets().corp_id;
    let events: Vec<NewInboxEvent> = (1..=4)
        .map(|n| NewInboxEvent {
            dedupe_key: format!("dispatch-test-{n}"),
            kind: "change_external_contact.add_external_contact".into(),
            msg_id: None,
            xml: siyu::testkit::add_contact_xml(&corp, n, 1_700_000_000),
            received_at: 1_700_000_000_000,
        })
        .collect();
    insert_batch(&store, &events.iter().collect::<Vec<_>>(), None)
        .await
        .unwrap();
    store.close().await;

    // The handler writes a job for each event, then fails for customer 2 and panics for 3.
    let mut components = siyu::Components::default();
    let jobs = settings.jobs.clone();
    let clock = components.clock.clone();
    components.events.register(
        "change_external_contact.add_external_contact",
        move |ctx, event, tx| {
            let (jobs, clock) = (jobs.clone(), clock.clone());
            Box::pin(async move {
                let Event::ExternalContact {
                    external_user_id: Some(who),
                    ..
                } = event
                else {
                    return Err("not a contact event".to_string());
                };
                let key = format!("probe:{who}");
                siyu::jobs::enqueue(tx, &jobs, &clock, "probe", &ctx.inbox_id, &key, None)
                    .await
                    .map_err(|e| e.to_string())?;
                match who.as_str().chars().last() {
                    Some('2') => Err("customer 2 is refused".to_string()),
                    Some('3') => panic!("customer 3 breaks the handler"),
                    _ => Ok(()),
                }
            })
        },
    );
    let app = common::start_with(settings, components).await;
    let store = app.store().clone();
    let by_status = |status: InboxStatus| {
        let store = store.clone();
        async move {
            let filter = EventFilter {
                kind: None,
                status: Some(status),
            };
            store.list_events(&filter, 10).await.unwrap()
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            by_status(InboxStatus::Done).await.len() + by_status(InboxStatus::Failed).await.len()
                == 4
        })
        .await,
        "all four events are settled"
    );
    let customer = |n: u64| format!("wm{n:030}");
    let errors: Vec<Option<String>> = {
        let mut failed = by_status(InboxStatus::Failed).await;
        failed.sort_by_key(|e| e.id);
        failed.into_iter().map(|e| e.error).collect()
    };
    assert_eq!(by_status(InboxStatus::Done).await.len(), 2);
    assert_eq!(
        errors,
        vec![
            Some("customer 2 is refused".to_string()),
            Some("handler panicked: customer 3 breaks the handler".to_string()),
        ]
    );
    for (n, kept) in [(1, true), (2, false), (3, false), (4, true)] {
        let job = store
            .job_by_key(&format!("probe:{}", customer(n)))
            .await
            .unwrap();
        assert_eq!(job.is_some(), kept, "the job written for customer {n}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_api_needs_the_token_and_filters() {
    let db = TestDb::new().await;
    let app = start(db.settings()).await;
    let sender = sender(&app);
    for xml in sample_events().iter().take(4) {
        sender.deliver(xml).await.unwrap();
    }
    let client = reqwest::Client::new();
    let base = format!("http://{}/api/v1/events", app.addr());
    assert_eq!(client.get(&base).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .get(&base)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let auth = siyu::testkit::API_TOKEN;
    let body: serde_json::Value = client
        .get(format!(
            "{base}?kind=change_external_contact.del_external_contact"
        ))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["kind"],
        "change_external_contact.del_external_contact"
    );

    let body: serde_json::Value = client
        .get(format!("{base}?limit=2"))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] > ids[1], "newest first");

    let bad = client
        .get(format!("{base}?status=weird"))
        .bearer_auth(auth)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let err: serde_json::Value = bad.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("status"));

    let health = reqwest::get(format!("http://{}/healthz", app.addr()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let spec: serde_json::Value =
        reqwest::get(format!("http://{}/api/v1/openapi.json", app.addr()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(spec["paths"]["/api/v1/events"].is_object());
    app.shutdown().await;
}

/// `siyu events replay ARGS` from the real binary, on the test's database, outside the repo (so
/// no `config/siyu.toml` is read).
async fn replay(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(["events", "replay"])
        .args(args)
        .current_dir(dir.path())
        .env("SIYU_DATABASE__URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_pending_and_takes_back_only_events_whose_lease_ran_out() {
    use siyu::store::inbox::{NewInboxEvent, insert_batch};
    let db = TestDb::new().await;
    let store = siyu::store::Store::connect(&db.settings().database)
        .await
        .unwrap();
    store.migrate().await.unwrap();

    let (ok, stdout, stderr) = replay(&db, &["--status", "pending"]).await;
    assert!(!ok, "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--status pending")
            && stderr.contains("unhandled, failed, done, processing"),
        "{stderr}"
    );
    let (ok, _, stderr) = replay(&db, &["--status", "stuck"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("unhandled, failed, done, processing"),
        "{stderr}"
    );

    // Two events claimed by dispatchers: one died a second ago, one is alive for a minute more.
    let now = siyu::clock::Clock::default().now_ms();
    let event = |key: &str| NewInboxEvent {
        dedupe_key: key.into(),
        kind: "change_external_chat.update".into(),
        msg_id: None,
        xml: "<xml></xml>".into(),
        received_at: now,
    };
    let (dead, alive) = (event("dead"), event("alive"));
    let dead_id = match insert_batch(&store, &[&dead], Some(now - 1000))
        .await
        .unwrap()[..]
    {
        [siyu::store::inbox::InsertOutcome::Stored(id)] => id,
        ref other => panic!("{other:?}"),
    };
    insert_batch(&store, &[&alive], Some(now + 60_000))
        .await
        .unwrap();

    let (ok, stdout, stderr) = replay(&db, &["--status", "processing"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("requeued 1 event(s) stuck in processing"),
        "{stdout}"
    );
    assert!(stdout.contains("left 1 event(s) alone"), "{stdout}");
    let status_of = |status| EventFilter {
        kind: None,
        status: Some(status),
    };
    let pending = store
        .list_events(&status_of(InboxStatus::Pending), 10)
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![dead_id],
        "only the event whose lease ran out is pending again"
    );
    let processing = store
        .list_events(&status_of(InboxStatus::Processing), 10)
        .await
        .unwrap();
    assert_eq!(processing.len(), 1, "the live lease is left alone");
    store.close().await;
}

/// An authentic callback whose plaintext holds U+0000 (PostgreSQL's text cannot store it) is
/// acknowledged and stored once, with U+FFFD in its place: answering 500 would have WeCom retry
/// it for ever. Sent twice, it is one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_holding_u0000_is_stored_with_u_fffd_in_its_place() {
    let db = TestDb::new().await;
    let app = start(db.settings()).await;
    let sender = sender(&app);
    let text = sample_events()
        .into_iter()
        .find(|xml| xml.contains("<MsgType><![CDATA[text]]>"))
        .expect("a text message among the samples");
    let xml = text.replace("查询订单", "查询\0订单");
    assert_ne!(xml, text);
    for _ in 0..2 {
        assert_eq!(sender.post(&sender.seal(&xml)).await, Ok(200));
    }
    let stored = app
        .store()
        .inbox_xml_of_kind("message.text")
        .await
        .unwrap()
        .expect("the message is stored");
    assert!(stored.contains("查询\u{FFFD}订单"), "{stored}");
    assert!(!stored.contains('\0'));
    let keys = app.store().inbox_keys().await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    app.shutdown().await;
}
