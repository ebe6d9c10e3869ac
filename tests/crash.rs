//! The real binary, killed with SIGKILL in the middle of a load: every callback it acknowledged
//! must be in the inbox after a restart, and every event it had claimed gets handled again.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::binary::{self, free_port, wait_healthy};
use common::{CORP_ID, TestDb, eventually};
use siyu::app::ingest::dedupe_key_of_xml;
use siyu::fake::sender::CallbackSender;
use siyu::store::Store;
use siyu::store::inbox::InboxStatus;
use siyu::testkit::add_contact_xml;
use tokio::process::{Child, Command};

fn spawn_siyu(db_url: &str, port: u16, workdir: &std::path::Path) -> Child {
    binary::spawn(binary::serve(db_url, port, workdir, binary::NO_WECOM))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_process_mid_load_loses_no_acknowledged_event() {
    let db = TestDb::new().await;
    let workdir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn_siyu(&db.url, port, workdir.path());
    wait_healthy(port).await;

    let sender = CallbackSender::new(
        format!("http://127.0.0.1:{port}/wecom/callback"),
        common::crypto(),
        "1000002",
    );
    let acknowledged: Arc<Mutex<Vec<u64>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let now = siyu::clock::system_now_ms() / 1000;
    let mut load = Vec::new();
    for _ in 0..16 {
        let (sender, acknowledged, next, stop, refused) = (
            sender.clone(),
            acknowledged.clone(),
            next.clone(),
            stop.clone(),
            refused.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let sealed = sender.seal(&add_contact_xml(CORP_ID, n, now));
                match sender.post(&sealed).await {
                    Ok(200) => acknowledged.lock().unwrap().push(n),
                    // An answer, only not 200: the server is there; try the next event.
                    Ok(_) => {}
                    Err(_) => {
                        // This sender has met the killed server; it stops rather than spin.
                        refused.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }));
    }
    let loaded = eventually(Duration::from_secs(20), || async {
        acknowledged.lock().unwrap().len() >= 500
    })
    .await;
    assert!(loaded, "the load did not get going");
    child.start_kill().unwrap(); // SIGKILL, mid-load
    child.wait().await.unwrap();
    // The load keeps going until every sender has met the dead server (a refused request).
    let met = eventually(Duration::from_secs(10), || async {
        refused.load(Ordering::Relaxed) >= 16
    })
    .await;
    assert!(met, "the load never met the killed server");
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let acked: HashSet<u64> = acknowledged.lock().unwrap().iter().copied().collect();

    // Restart on the same database: the acknowledged events are all there.
    let mut child = spawn_siyu(&db.url, port, workdir.path());
    wait_healthy(port).await;
    let mut settings = db.settings();
    settings.database.max_connections = 2;
    let store = Store::connect(&settings.database).await.unwrap();
    let stored: HashSet<String> = store
        .inbox_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| {
            !stored.contains(&dedupe_key_of_xml(
                CORP_ID,
                &add_contact_xml(CORP_ID, *n, now),
            ))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(stored.len() >= acked.len());

    // Events the dead process had claimed (or not reached) are handled by the new one.
    let drained = eventually(Duration::from_secs(20), || {
        let store = store.clone();
        async move {
            let counts = store.count_events_by_status().await.unwrap();
            counts.iter().all(|(st, n)| {
                !matches!(st, InboxStatus::Pending | InboxStatus::Processing) || *n == 0
            })
        }
    })
    .await;
    assert!(
        drained,
        "events left behind: {:?}",
        store.count_events_by_status().await.unwrap()
    );
    store.close().await;

    // SIGTERM stops it gracefully, with a zero exit code.
    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "graceful shutdown exited with {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_setting_stops_the_program_with_one_line_naming_it() {
    let workdir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_siyu"))
        .arg("serve")
        .current_dir(workdir.path())
        .env(
            "SIYU_DATABASE__URL",
            format!("sqlite://{}/x.db", workdir.path().display()),
        )
        .env("SIYU_WECOM__CORP_ID", CORP_ID)
        .env("SIYU_WECOM__CALLBACK_TOKEN", "abc")
        .env("SIYU_WECOM__ENCODING_AES_KEY", "short-and-secret")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("wecom.encoding_aes_key"), "{stderr}");
    assert!(
        !stderr.contains("short-and-secret"),
        "the key must not be printed: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_replay_from_the_command_line() {
    let db = TestDb::new().await;
    let workdir = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str]| {
        let db_url = db.url.clone();
        let dir = workdir.path().to_path_buf();
        async move {
            Command::new(env!("CARGO_BIN_EXE_siyu"))
                .args(args)
                .current_dir(dir)
                .env("SIYU_DATABASE__URL", db_url)
                .output()
                .await
                .unwrap()
        }
    };
    let migrated = run(&["migrate"]).await;
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert!(String::from_utf8_lossy(&migrated.stdout).contains("migration(s)"));

    // Three events that found no handler (member changes, batch jobs, approvals), stored by a
    // running siyu.
    let app = common::start(db.settings()).await;
    let sender = common::sender(&app);
    for xml in &common::unhandled_events() {
        sender.deliver(xml).await.unwrap();
    }
    let store = app.store().clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let store = store.clone();
            async move {
                store
                    .count_events_by_status()
                    .await
                    .unwrap()
                    .contains(&(InboxStatus::Unhandled, 3))
            }
        })
        .await
    );
    app.shutdown().await;

    let replayed = run(&["events", "replay", "--kind", "event.change_contact"]).await;
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("requeued 1 event"));
    let bad = run(&["events", "replay", "--status", "nonsense"]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--status"));
}

/// A customer siyu has recorded, at the entry tier, followed by zhangsan (and at the fake too,
/// silently, so WeCom knows the relation).
async fn seed_customer(store: &Store, fake: &siyu::fake::FakeWecom, name: &str) -> String {
    use siyu::store::contacts::{Customer, Follow, upsert_customer, upsert_follow};
    let external_userid = fake.seed_customer("zhangsan", siyu::fake::NewCustomer::wechat(name));
    let now = siyu::clock::system_now_ms();
    let mut tx = store.begin().await.unwrap();
    let customer = Customer {
        external_userid: external_userid.clone().into(),
        name: name.into(),
        kind: 1,
        corp_name: String::new(),
        tier: "member".into(),
        channel: "unattributed".into(),
        first_added_at: now,
    };
    upsert_customer(&mut tx, &customer, now).await.unwrap();
    let follow = Follow {
        userid: "zhangsan".into(),
        external_userid: external_userid.clone().into(),
        channel: "unattributed".into(),
        state: None,
        add_way: 1,
        added_at: now,
        remark: String::new(),
        description: String::new(),
        tag_ids: vec![],
        status: siyu::store::contacts::FollowStatus::Connected,
        ended_at: None,
        siyu_remark: None,
    };
    upsert_follow(&mut tx, &follow, now).await.unwrap();
    tx.commit().await.unwrap();
    external_userid
}

async fn fake_wecom() -> (siyu::fake::FakeWecom, String) {
    let fake = common::world::fake();
    let (addr, _server) = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (fake, format!("http://{addr}"))
}

async fn migrated_store(db: &TestDb) -> Store {
    let mut settings = db.settings();
    settings.database.max_connections = 2;
    let store = Store::connect(&settings.database).await.unwrap();
    store.migrate().await.unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_and_the_evaluation_it_decides_survive_a_kill_right_after_the_commit() {
    let db = TestDb::new().await;
    let workdir = tempfile::tempdir().unwrap();
    let (fake, api_base) = fake_wecom().await;
    let store = migrated_store(&db).await;
    let customer = seed_customer(&store, &fake, "王小明").await;

    // siyu dies right after it commits the shop's order (before it answers).
    let port = free_port();
    let mut armed = binary::serve(&db.url, port, workdir.path(), &api_base);
    armed.env("SIYU_FAILPOINT", "activity.recorded");
    let mut child = binary::spawn(armed);
    wait_healthy(port).await;
    let at = chrono::Utc::now().to_rfc3339();
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/activity"))
        .bearer_auth(binary::API_TOKEN)
        .json(&serde_json::json!({"items": [
            {"kind": "order", "customer": customer, "amount": 2500.00, "at": at, "id": "order-1"}]}))
        .send()
        .await;
    assert!(
        answer.as_ref().map_or(true, |r| !r.status().is_success()),
        "the failpoint did not stop siyu: {answer:?}"
    );
    let exit = child.wait().await.unwrap();
    assert!(!exit.success(), "siyu exited cleanly: {exit}");
    let tier = |store: Store, id: String| async move {
        store.customer(&id.into()).await.unwrap().unwrap().tier
    };
    assert_eq!(tier(store.clone(), customer.clone()).await, "member");

    // After a restart the evaluation decided with the order runs: the customer is promoted.
    let mut child = binary::spawn(binary::serve(&db.url, port, workdir.path(), &api_base));
    wait_healthy(port).await;
    let promoted = eventually(Duration::from_secs(20), || {
        let (store, id) = (store.clone(), customer.clone());
        async move { tier(store, id).await == "partner" }
    })
    .await;
    assert!(promoted, "the order's evaluation was lost with the process");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_segments_and_the_tag_syncs_they_decide_survive_a_kill_right_after_the_commit() {
    let db = TestDb::new().await;
    let workdir = tempfile::tempdir().unwrap();
    let (fake, api_base) = fake_wecom().await;
    let store = migrated_store(&db).await;
    let customer = seed_customer(&store, &fake, "李雷").await;

    // The full evaluation (as the nightly job runs it) dies right after it commits the segments.
    let mut armed = binary::siyu(&["tiers", "evaluate"], &db.url, workdir.path(), &api_base);
    armed.env("SIYU_FAILPOINT", "segments.recorded");
    let output = armed.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("failpoint segments.recorded"), "{stderr}");
    let segment = store
        .segment_of(&customer.as_str().into())
        .await
        .unwrap()
        .map(|(s, _)| s);
    assert_eq!(segment.as_deref(), Some("一般挽留"));

    // A siyu started afterwards runs the tag syncs decided with the segments.
    let port = free_port();
    let mut child = binary::spawn(binary::serve(&db.url, port, workdir.path(), &api_base));
    wait_healthy(port).await;
    let tagged = eventually(Duration::from_secs(20), || async {
        let library = fake.tag_library();
        let segment_tag = library
            .iter()
            .flat_map(|g| g.tag.iter())
            .find(|t| t.name == "一般挽留" && !t.deleted)
            .map(|t| t.id.clone());
        let follow = fake
            .customer(&customer)
            .and_then(|c| c.follow_user.into_iter().find(|f| f.userid == "zhangsan"));
        matches!((segment_tag, follow), (Some(id), Some(f)) if f.tags.contains(&id))
    })
    .await;
    assert!(tagged, "the segment's tag sync was lost with the process");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
