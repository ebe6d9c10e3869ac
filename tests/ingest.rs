//! The inbox writer at the store: one statement per batch, in arrival order; its place ahead of
//! the other writers; and the WAL checkpoints every writer leaves to the checkpointer beside
//! them (SQLite).

mod common;

use std::collections::HashMap;

use common::TestDb;
use siyu::store::Store;
use siyu::store::inbox::{EventFilter, InboxStatus, InsertOutcome, NewInboxEvent, insert_batch};

fn event(key: &str, xml: String) -> NewInboxEvent {
    NewInboxEvent {
        dedupe_key: key.to_string(),
        kind: "change_external_contact.add_external_contact".into(),
        msg_id: None,
        xml,
        received_at: 1_700_000_000_000,
    }
}

async fn store(db: &TestDb) -> Store {
    let store = Store::connect(&db.settings().database).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// A store on the migrated test database and its SQLite file; None on PostgreSQL. The store
/// that migrated is closed first (which checkpoints the whole WAL), so that no commit but the
/// test's own wakes the checkpointer of the one answered.
async fn sqlite_store(db: &TestDb) -> Option<(Store, std::path::PathBuf)> {
    if db.is_postgres() {
        return None;
    }
    let file = std::path::PathBuf::from(db.url.trim_start_matches("sqlite://"));
    store(db).await.close().await;
    let store = Store::connect(&db.settings().database).await.unwrap();
    Some((store, file))
}

fn file_size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn stored(outcome: InsertOutcome) -> i64 {
    match outcome {
        InsertOutcome::Stored(id) => id,
        other => panic!("expected a new row, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_is_stored_in_arrival_order_and_its_repeats_count_as_duplicates() {
    let db = TestDb::new().await;
    let store = store(&db).await;
    // XML with what JSON must escape, and text beyond ASCII: stored exactly.
    let xml = |n: u32| format!("<xml><n>{n}</n><q>\"引号\" \\ \t</q></xml>");
    let (a, b, c, d) = (
        event("a", xml(1)),
        event("b", xml(2)),
        event("c", xml(3)),
        event("d", xml(4)),
    );

    let first = insert_batch(&store, &[&a, &b, &a, &c], Some(i64::MAX))
        .await
        .unwrap();
    let (id_a, id_b, id_c) = (stored(first[0]), stored(first[1]), stored(first[3]));
    assert_eq!(first[2], InsertOutcome::Duplicate(id_a), "{first:?}");
    assert!(id_a < id_b && id_b < id_c, "ids follow arrival: {first:?}");

    let second = insert_batch(&store, &[&c, &d], None).await.unwrap();
    assert_eq!(second[0], InsertOutcome::Duplicate(id_c));
    assert!(stored(second[1]) > id_c);

    let keys = store.inbox_keys().await.unwrap();
    let expected: Vec<(String, i64)> = [("a", 1), ("b", 0), ("c", 1), ("d", 0)]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    assert_eq!(keys, expected);
    let status: HashMap<i64, String> = store
        .list_events(&EventFilter::default(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.status))
        .collect();
    assert_eq!(status[&id_a], InboxStatus::Processing.as_str());
    assert_eq!(status[&stored(second[1])], InboxStatus::Pending.as_str());
    assert_eq!(
        store.inbox_xml_of_kind(&a.kind).await.unwrap().as_deref(),
        Some(xml(4).as_str())
    );
}

/// While a transaction holds the write turn, three other writers queue, then the inbox writer:
/// it goes first once the turn is free, not after the three.
#[tokio::test]
async fn the_inbox_writer_goes_before_other_writers_already_queued() {
    let db = TestDb::new().await;
    if db.is_postgres() {
        eprintln!("skipped: the write turn is SQLite's (PostgreSQL takes concurrent writers)");
        return;
    }
    let store = store(&db).await;
    let (done, mut order) = tokio::sync::mpsc::unbounded_channel();
    let holder = store.begin().await.unwrap();
    for name in ["other 1", "other 2", "other 3"] {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            store.reclaim_expired_events(0).await.unwrap();
            done.send(name).unwrap();
        });
    }
    // On this single-threaded runtime a yield runs each spawned task up to its wait for the turn.
    tokio::task::yield_now().await;
    let inbox = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let e = event("k", "<xml/>".into());
            insert_batch(&store, &[&e], None).await.unwrap();
            done.send("inbox").unwrap();
        })
    };
    tokio::task::yield_now().await;
    holder.commit().await.unwrap();
    inbox.await.unwrap();
    drop(done);
    let mut seen = Vec::new();
    while let Some(name) = order.recv().await {
        seen.push(name);
    }
    assert_eq!(seen, ["inbox", "other 1", "other 2", "other 3"]);
}

/// Waits (up to 30 s) until the SQLite database file holds more than `bytes`: the checkpointer
/// beside the writers copies the WAL into it on its own time.
async fn wait_until_file_holds(file: &std::path::Path, bytes: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while file_size(file) <= bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "the rows never reached the database file: {} bytes, waiting for more than {bytes}",
            file_size(file)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The inbox writer never checkpoints the WAL itself (a callback never waits for one), yet what
/// it commits reaches the database file without anyone asking: its commits wake the
/// checkpointer beside the writers.
#[tokio::test]
async fn inbox_commits_are_checkpointed_beside_the_writer() {
    let db = TestDb::new().await;
    let Some((store, file)) = sqlite_store(&db).await else {
        eprintln!("skipped: the WAL is SQLite's");
        return;
    };
    let before = file_size(&file);
    let filler = "x".repeat(700);
    let mut xml_bytes = 0;
    for batch in 0..300 {
        let events: Vec<NewInboxEvent> = (0..10)
            .map(|i| event(&format!("k{batch}-{i}"), format!("<xml>{filler}{i}</xml>")))
            .collect();
        xml_bytes += events.iter().map(|e| e.xml.len() as u64).sum::<u64>();
        let refs: Vec<&NewInboxEvent> = events.iter().collect();
        insert_batch(&store, &refs, None).await.unwrap();
    }
    wait_until_file_holds(&file, before + xml_bytes).await;
    assert_eq!(store.inbox_keys().await.unwrap().len(), 3000);
}

/// Every other connection leaves checkpoints to the checkpointer beside it too (a commit never
/// waits for one): what they commit reaches the database file the same way.
#[tokio::test]
async fn other_commits_are_checkpointed_beside_the_writer() {
    let db = TestDb::new().await;
    let Some((store, file)) = sqlite_store(&db).await else {
        eprintln!("skipped: the WAL is SQLite's");
        return;
    };
    let before = file_size(&file);
    // Well past SQLite's own checkpoint threshold (1000 pages, about 4 MB).
    store
        .generate_tier_bench_data(20_000, 100_000, 1_700_000_000_000)
        .await
        .unwrap();
    wait_until_file_holds(&file, before + 4 * 1024 * 1024).await;
}

/// The dispatcher's outcomes, mixed in one call, each land on its own event.
#[tokio::test]
async fn outcomes_of_a_batch_are_recorded_each_on_its_event() {
    use siyu::store::inbox::EventOutcome;
    let db = TestDb::new().await;
    let store = store(&db).await;
    let events: Vec<NewInboxEvent> = (0..4)
        .map(|n| event(&format!("k{n}"), format!("<xml>{n}</xml>")))
        .collect();
    let refs: Vec<&NewInboxEvent> = events.iter().collect();
    let ids: Vec<i64> = insert_batch(&store, &refs, Some(i64::MAX))
        .await
        .unwrap()
        .into_iter()
        .map(stored)
        .collect();
    let outcome = |id, status, error: Option<&str>| EventOutcome {
        id,
        status,
        error: error.map(str::to_string),
    };
    store
        .finish_events(
            &[
                outcome(ids[0], InboxStatus::Done, None),
                outcome(ids[1], InboxStatus::Failed, Some("boom \"quoted\"")),
                outcome(ids[2], InboxStatus::Unhandled, None),
            ],
            42,
        )
        .await
        .unwrap();
    let listed: HashMap<i64, (String, Option<String>)> = store
        .list_events(&EventFilter::default(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, (e.status, e.error)))
        .collect();
    assert_eq!(listed[&ids[0]], ("done".into(), None));
    assert_eq!(
        listed[&ids[1]],
        ("failed".into(), Some("boom \"quoted\"".into()))
    );
    assert_eq!(listed[&ids[2]], ("unhandled".into(), None));
    assert_eq!(
        listed[&ids[3]],
        ("processing".into(), None),
        "not in the call"
    );
    // Nothing left leased but the one not finished.
    let stuck = store
        .requeue_stuck_events(None, None, i64::MAX)
        .await
        .unwrap();
    assert_eq!(stuck.leased, 1);
}
