//! WeCom's per-corp limits, shared by replicas on PostgreSQL: two (or three) clients on one
//! database, each with a store of its own as a replica has, against one fake WeCom, keep one
//! corp-wide pace per API, one 45009 pause and one count of app messages per member; an urgent
//! call does not queue behind the other replicas' ordinary calls; two servers sync the tag library
//! one at a time. PostgreSQL only (skipped with a line on stderr otherwise): on SQLite one process
//! keeps these limits in memory, as the unit tests of `wecom::client::limit` and
//! tests/wecom_client.rs show.

mod common;

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use siyu::clock::Clock;
use siyu::config::WecomSettings;
use siyu::fake::{Failure, FakeWecom, NewCustomer};
use siyu::store::Store;
use siyu::wecom::client::{Credential, WecomClient, WecomError, code, urgent};

const TAG_LIST: &str = "/cgi-bin/externalcontact/get_corp_tag_list";
const LIST_CUSTOMERS: &str = "/cgi-bin/externalcontact/list";
const ADD_TAG: &str = "/cgi-bin/externalcontact/add_corp_tag";
const APP_MESSAGE: &str = "/cgi-bin/message/send";

/// A PostgreSQL database of the test's own, or `None` (saying so) without one.
async fn postgres() -> Option<common::TestDb> {
    let db = common::TestDb::new().await;
    on_postgres(&db).then_some(db)
}

/// Whether `db` is on PostgreSQL; says on stderr that the test is skipped when it is not.
fn on_postgres(db: &common::TestDb) -> bool {
    if !db.is_postgres() {
        // Past libtest's capture, so the skip shows for a test that passes.
        let _ = writeln!(
            std::io::stderr(),
            "limits test skipped: replicas share their limits through PostgreSQL; set DATABASE_URL"
        );
    }
    db.is_postgres()
}

/// One fake WeCom and the WeCom settings of siyu's replicas for it.
async fn fake_wecom(db: &common::TestDb) -> (FakeWecom, WecomSettings) {
    let fake = common::world::fake();
    let (addr, _server) = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let settings = common::world::settings(db, addr).wecom;
    (fake, settings)
}

/// A replica's WeCom client: its own connections to the shared database, its own limiter.
async fn replica(db: &common::TestDb, settings: &WecomSettings) -> WecomClient {
    let store = Store::connect(&db.settings().database).await.unwrap();
    store.migrate().await.unwrap();
    let client = WecomClient::new(settings, Some(store), Clock::default()).unwrap();
    // The token first (shared through the store too), so only the paced calls are timed.
    client.access_token(Credential::Contact).await.unwrap();
    client
}

/// `n` callers of the tag library on `client` at once; every one must get through.
async fn burst(client: &WecomClient, n: usize) {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.tag_library().await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
}

/// When the fake received the calls of `path` from the `from`-th on.
fn arrivals(fake: &FakeWecom, path: &str, from: usize) -> Vec<SystemTime> {
    let mut at: Vec<_> = fake.calls_to(path)[from..].iter().map(|c| c.at).collect();
    at.sort();
    at
}

fn span(at: &[SystemTime]) -> Duration {
    at[at.len() - 1].duration_since(at[0]).unwrap()
}

/// The most arrivals within any `window`.
fn densest(at: &[SystemTime], window: Duration) -> usize {
    let mut most = 0;
    let mut first = 0;
    for (last, t) in at.iter().enumerate() {
        while t.duration_since(at[first]).unwrap() >= window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_one_corp_wide_pace_per_api() {
    let Some(db) = postgres().await else { return };
    let (fake, mut settings) = fake_wecom(&db).await;
    settings.calls_per_minute = 1200; // one call every 50 ms, for the corp
    let interval = Duration::from_millis(50);
    let a = replica(&db, &settings).await;
    let b = replica(&db, &settings).await;

    // Alone, a replica goes at the full pace: 20 calls in 19 intervals.
    let before = fake.calls_to(TAG_LIST).len();
    burst(&a, 20).await;
    let alone = span(&arrivals(&fake, TAG_LIST, before));
    assert!(
        alone >= interval * 18 && alone < interval * 25,
        "20 calls of one replica took {alone:?}, not about 950 ms"
    );

    // Together they keep one pace: 40 calls take 39 intervals, not 19.
    let before = fake.calls_to(TAG_LIST).len();
    tokio::join!(burst(&a, 20), burst(&b, 20));
    let together = arrivals(&fake, TAG_LIST, before);
    assert_eq!(together.len(), 40);
    assert!(
        span(&together) >= interval * 37,
        "40 calls of two replicas took {:?}, faster than one every {interval:?}",
        span(&together)
    );
    // Nowhere faster than the pace: a second holds 20 slots, one more where a slot was caught up
    // after the idle spell, and one for the jitter of arrivals at the fake.
    let densest = densest(&together, Duration::from_secs(1));
    assert!(densest <= 22, "{densest} calls within one second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_45009_at_one_replica_pauses_that_api_for_both() {
    let Some(db) = postgres().await else { return };
    let (fake, mut settings) = fake_wecom(&db).await;
    settings.frequency_window_secs = 2;
    settings.max_limiter_wait_ms = 200; // a paused API is refused, not waited for
    let window = Duration::from_secs(2);
    let a = replica(&db, &settings).await;
    let b = replica(&db, &settings).await;

    fake.fail_next(TAG_LIST, 1, Failure::Errcode(code::FREQUENCY_LIMIT));
    let err = a.tag_library().await.unwrap_err();
    assert_eq!(err.errcode(), Some(code::FREQUENCY_LIMIT));
    let hit = fake.calls_to(TAG_LIST).len();
    let hit_at = fake.calls_to(TAG_LIST)[hit - 1].at;

    // The other replica never met the limit, yet it does not call that API.
    let err = b.tag_library().await.unwrap_err();
    assert!(
        matches!(err, WecomError::Throttled { .. }) && err.to_string().contains("paused"),
        "{err}"
    );
    assert!(err.retry_after().unwrap() > window / 2, "{err}");
    // Other APIs go on.
    fake.seed_customer("zhangsan", NewCustomer::wechat("王小明"));
    b.list_customers(&"zhangsan".into()).await.unwrap();
    assert_eq!(fake.calls_to(LIST_CUSTOMERS).len(), 1);

    // It tries until the pause is over, every try refused without a call; then one goes.
    let tries_from = Instant::now();
    let mut tries = 0;
    let through = common::eventually(window * 3, || {
        tries += 1;
        let b = b.clone();
        async move { b.tag_library().await.is_ok() }
    })
    .await;
    assert!(through, "the API was still refused after its pause");
    assert!(tries > 5, "{tries} tries in {:?}", tries_from.elapsed());
    let after = fake.calls_to(TAG_LIST)[hit..].to_vec();
    assert_eq!(after.len(), 1, "one call after the pause: {after:?}");
    let waited = after[0].at.duration_since(hit_at).unwrap();
    assert!(
        waited >= window,
        "the next call came {waited:?} after the 45009"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_member_cap_counts_every_replicas_app_messages() {
    let Some(db) = postgres().await else { return };
    let (fake, settings) = fake_wecom(&db).await;
    let a = replica(&db, &settings).await;
    let b = replica(&db, &settings).await;
    let zhangsan = ["zhangsan".into()];

    // 30 a minute per member, whichever replica sends them.
    for i in 0..30 {
        let replica = if i % 3 == 0 { &b } else { &a };
        replica
            .send_text_to_members(&zhangsan, &format!("通知 {i}"))
            .await
            .unwrap();
    }
    for replica in [&a, &b] {
        let err = replica
            .send_text_to_members(&zhangsan, "第三十一条")
            .await
            .unwrap_err();
        assert!(
            matches!(err, WecomError::Throttled { .. }) && err.to_string().contains("zhangsan"),
            "{err}"
        );
        // The cap frees up when the first message of the minute is a minute old.
        assert!(
            err.retry_after().unwrap() > Duration::from_secs(50),
            "{err}"
        );
    }
    // All or nothing: a message to lisi and zhangsan is refused whole, lisi not charged.
    let both = ["lisi".into(), "zhangsan".into()];
    b.send_text_to_members(&both, "两人").await.unwrap_err();
    for i in 0..30 {
        let replica = if i % 2 == 0 { &a } else { &b };
        replica
            .send_text_to_members(&["lisi".into()], &format!("李四 {i}"))
            .await
            .unwrap();
    }
    assert_eq!(
        fake.calls_to(APP_MESSAGE).len(),
        60,
        "only the messages within the caps reached WeCom"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_messages_sent_at_once_by_two_replicas_stay_within_the_cap() {
    let Some(db) = postgres().await else { return };
    let (fake, settings) = fake_wecom(&db).await;
    let replicas = [replica(&db, &settings).await, replica(&db, &settings).await];
    let sends: Vec<_> = (0..40)
        .map(|i| {
            let replica = replicas[i % 2].clone();
            tokio::spawn(async move {
                replica
                    .send_text_to_members(&["zhangsan".into()], &format!("通知 {i}"))
                    .await
            })
        })
        .collect();
    let mut sent = 0;
    for send in sends {
        match send.await.unwrap() {
            Ok(_) => sent += 1,
            Err(WecomError::Throttled { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(sent, 30);
    assert_eq!(fake.calls_to(APP_MESSAGE).len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_spend_one_hourly_budget_and_keep_its_reserve_for_urgent_calls() {
    let Some(db) = postgres().await else { return };
    let (fake, mut settings) = fake_wecom(&db).await;
    // A bucket of 36 calls refilling at one every 10 s; ordinary calls leave 3.6 to urgent ones.
    settings.calls_per_hour = 360;
    settings.calls_per_minute = 60_000;
    settings.max_limiter_wait_ms = 200;
    let a = replica(&db, &settings).await;
    let b = replica(&db, &settings).await;

    let mut ordinary = 0;
    for replica in [&a, &b].iter().cycle().take(40) {
        match replica.tag_library().await {
            Ok(_) => ordinary += 1,
            Err(e) => assert!(e.to_string().contains("hourly budget"), "{e}"),
        }
    }
    // Each alone could spend 32: together they spend 32.
    assert_eq!(ordinary, 32);
    // What is left is the reserve, for urgent calls of either replica.
    urgent(b.tag_library()).await.unwrap();
    urgent(a.tag_library()).await.unwrap();
    assert_eq!(fake.calls_to(TAG_LIST).len(), 34);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_call_waits_at_most_one_slot_for_the_other_replicas_ordinary_calls() {
    let Some(db) = postgres().await else { return };
    let (fake, mut settings) = fake_wecom(&db).await;
    settings.calls_per_minute = 600; // one call every 100 ms, for the corp
    settings.max_limiter_wait_ms = 10_000;
    let interval = Duration::from_millis(100);
    let busy = [replica(&db, &settings).await, replica(&db, &settings).await];
    let welcoming = replica(&db, &settings).await;

    // Two replicas each with a backlog of ordinary calls, asking for twice the pace.
    let before = fake.calls_to(TAG_LIST).len();
    let backlogs: Vec<_> = busy
        .iter()
        .map(|r| {
            let r = r.clone();
            tokio::spawn(async move { burst(&r, 15).await })
        })
        .collect();
    // A second into it (ordinary calls booking ahead would have booked a second of slots by now).
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            fake.calls_to(TAG_LIST).len() >= before + 10
        })
        .await
    );
    let asked = Instant::now();
    urgent(welcoming.tag_library()).await.unwrap();
    let waited = asked.elapsed();
    // At most the slot under way, then its own; plus the call itself and the jitter of a busy
    // machine.
    assert!(
        waited < interval * 2 + Duration::from_millis(60),
        "the urgent call waited {waited:?} behind the other replicas' ordinary calls"
    );
    for backlog in backlogs {
        backlog.await.unwrap();
    }
    let all = arrivals(&fake, TAG_LIST, before);
    assert_eq!(all.len(), 31);
    assert!(span(&all) >= interval * 28, "{:?}", span(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sync_the_tag_library_one_at_a_time() {
    let Some(db) = postgres().await else { return };
    let fake = common::world::fake();
    let (addr, _server) = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // Each tag created slowly, so two syncs that could overlap would.
    fake.set_latency(ADD_TAG, Duration::from_millis(100));
    let settings = common::world::settings(&db, addr);
    let first = common::start(settings.clone()).await;
    let second = common::start(settings).await;

    // Each server syncs in the background as it starts; these two run on top of those.
    let (a, b) = tokio::join!(
        siyu::app::tags::ensure(first.services()),
        siyu::app::tags::ensure(second.services())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len(), b.len());
    assert!(a.iter().all(|t| t.tag_id.is_some()));

    let adds = fake.calls_to(ADD_TAG);
    let refused: Vec<_> = adds.iter().filter(|c| c.errcode != Some(0)).collect();
    assert!(
        refused.is_empty(),
        "a sync created what another was creating: {refused:?}"
    );
    assert_eq!(adds.len(), a.len(), "each tag was created once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_message_ledger_is_pruned_once_past_the_hour() {
    let w = common::world::world().await;
    if !on_postgres(&w.db) {
        return;
    }
    w.app
        .wecom()
        .send_text_to_members(&["zhangsan".into()], "刚发的")
        .await
        .unwrap();
    // Two messages of an hour ago and more, on the ledger's clock (the database's).
    let pool = sqlx::PgPool::connect(&w.db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO app_message_ledger (member, sent_at_us)
         VALUES ('lisi', siyu_now_us() - 3600000001), ('lisi', siyu_now_us() - 7200000000)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let pruned = siyu::app::retention::prune(w.app.services()).await.unwrap();
    assert_eq!(pruned["app_message_ledger"], 2, "{pruned:?}");
    let left: Vec<String> = sqlx::query_scalar("SELECT member FROM app_message_ledger")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["zhangsan"]);
}
