//! The job queue and the scheduler, on a real database (SQLite, or PostgreSQL when DATABASE_URL
//! is set), with several workers and several app instances standing in for processes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestDb, eventually, start_with, wait_idle};
use siyu::clock::Clock;
use siyu::config::Settings;
use siyu::jobs::scheduler::Recurring;
use siyu::jobs::{self, JobError};
use siyu::store::Store;
use siyu::{App, Components};

async fn enqueue(
    app: &App,
    settings: &Settings,
    kind: &str,
    key: &str,
    run_at: Option<i64>,
) -> Option<i64> {
    let mut tx = app.store().begin().await.unwrap();
    let id = jobs::enqueue(
        &mut tx,
        &settings.jobs,
        app.clock(),
        kind,
        &serde_json::json!({"key": key}),
        key,
        run_at,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn job_state(store: &Store, key: &str) -> (String, i64, Option<String>) {
    let job = store.job_by_key(key).await.unwrap().expect("job exists");
    (job.state.to_string(), job.attempts, job.last_error)
}

async fn wait_state(store: &Store, key: &str, state: &str, within: Duration) -> bool {
    eventually(within, || async { job_state(store, key).await.0 == state }).await
}

/// Records (job key, time it ran) for every run.
type Runs = Arc<Mutex<Vec<(String, i64)>>>;

fn recording(kind: &str, runs: &Runs, clock: &Clock) -> Components {
    let mut components = Components {
        clock: clock.clone(),
        ..Components::default()
    };
    let runs = runs.clone();
    components.jobs.register(kind, move |ctx| {
        let runs = runs.clone();
        async move {
            // Every run is recorded: a job claimed twice shows up twice, whether or not the two
            // runs overlap.
            runs.lock()
                .unwrap()
                .push((ctx.job.idempotency_key.clone(), ctx.clock.now_ms()));
            Ok(())
        }
    });
    components
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_waits_for_its_time_and_a_key_is_used_once() {
    let db = TestDb::new().await;
    let settings = db.settings();
    let runs: Runs = Arc::default();
    let clock = Clock::default();
    let app = start_with(settings.clone(), recording("later", &runs, &clock)).await;

    // Due in an hour of the app's clock (which the test moves instead of waiting).
    let run_at = clock.now_ms() + 3_600_000;
    assert!(
        enqueue(&app, &settings, "later", "later-1", Some(run_at))
            .await
            .is_some()
    );
    assert!(
        enqueue(&app, &settings, "later", "later-1", None)
            .await
            .is_none(),
        "the same idempotency key is not enqueued twice"
    );
    // A job due now, enqueued after it: once it has run, the workers have claimed what was due,
    // and a claim that ignored run_at would have taken the later job too.
    enqueue(&app, &settings, "later", "now-1", None).await;
    assert!(wait_state(app.store(), "now-1", "done", Duration::from_secs(5)).await);
    assert!(wait_idle(&app, Duration::from_secs(5)).await);
    assert_eq!(job_state(app.store(), "later-1").await.0, "queued");
    assert_eq!(runs.lock().unwrap().len(), 1, "only the job due now ran");

    clock.advance(3_600_000);
    app.store().signals().jobs.notify_waiters();
    assert!(wait_state(app.store(), "later-1", "done", Duration::from_secs(5)).await);
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2);
    let later = runs.iter().find(|(k, _)| k == "later-1").unwrap();
    assert!(
        later.1 >= run_at,
        "ran at {} before its time {run_at}",
        later.1
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_backs_off_and_ends_failed_after_the_last_attempt() {
    let db = TestDb::new().await;
    let mut settings = db.settings();
    settings.jobs.max_attempts = 3;
    settings.jobs.backoff_base_ms = 100;
    let attempts: Runs = Arc::default();
    let mut components = Components::default();
    let seen = attempts.clone();
    components.jobs.register("flaky", move |ctx| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap()
                .push((ctx.job.idempotency_key.clone(), ctx.clock.now_ms()));
            Err(JobError::Retry("WeCom said -1 (system busy)".into()))
        }
    });
    components.jobs.register("doomed", |_ctx| async {
        Err(JobError::Permanent(
            "41051: welcome code already used".into(),
        ))
    });
    let app = start_with(settings.clone(), components).await;

    enqueue(&app, &settings, "flaky", "flaky-1", None).await;
    enqueue(&app, &settings, "doomed", "doomed-1", None).await;
    assert!(wait_state(app.store(), "flaky-1", "failed", Duration::from_secs(10)).await);
    let (_, tries, error) = job_state(app.store(), "flaky-1").await;
    assert_eq!(tries, 3);
    assert!(error.unwrap().contains("system busy"));
    let times: Vec<i64> = attempts.lock().unwrap().iter().map(|(_, t)| *t).collect();
    assert_eq!(times.len(), 3, "no attempt after the last");
    // base 100 ms, doubled, jitter ±20%: at least 80 ms, then at least 160 ms.
    assert!(times[1] - times[0] >= 80, "{times:?}");
    assert!(times[2] - times[1] >= 160, "{times:?}");

    assert!(wait_state(app.store(), "doomed-1", "failed", Duration::from_secs(5)).await);
    let (_, tries, error) = job_state(app.store(), "doomed-1").await;
    assert_eq!(tries, 1, "a permanent error is not retried");
    assert!(error.unwrap().contains("41051"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_several_workers_never_run_the_same_job() {
    let db = TestDb::new().await;
    let mut settings = db.settings();
    settings.jobs.workers = 4;
    let runs: Runs = Arc::default();
    let clock = Clock::default();
    let first = start_with(settings.clone(), recording("work", &runs, &clock)).await;
    let second = start_with(settings.clone(), recording("work", &runs, &clock)).await;

    let total = 200;
    for i in 0..total {
        let app = if i % 2 == 0 { &first } else { &second };
        enqueue(app, &settings, "work", &format!("work-{i}"), None).await;
    }
    let all_done = eventually(Duration::from_secs(30), || async {
        runs.lock().unwrap().len() >= total
    })
    .await;
    assert!(all_done, "ran {} of {total}", runs.lock().unwrap().len());
    assert!(wait_idle(&first, Duration::from_secs(10)).await);
    assert!(wait_idle(&second, Duration::from_secs(10)).await);
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for (key, _) in runs.lock().unwrap().iter() {
        *per_key.entry(key.clone()).or_default() += 1;
    }
    assert_eq!(per_key.len(), total);
    assert!(per_key.values().all(|n| *n == 1), "a job ran twice");
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurring_job_runs_once_per_due_time_across_two_processes() {
    let db = TestDb::new().await;
    let settings = db.settings();
    let runs: Runs = Arc::default();
    let clock = Clock::default();
    let recurring = vec![Recurring {
        name: "heartbeat".into(),
        cron: "* * * * * *".into(), // every second
        job_kind: "heartbeat".into(),
        payload: serde_json::json!({}),
    }];
    let mut a = recording("heartbeat", &runs, &clock);
    a.recurring = recurring.clone();
    let mut b = recording("heartbeat", &runs, &clock);
    b.recurring = recurring;
    let first = start_with(settings.clone(), a).await;
    let second = start_with(settings.clone(), b).await;
    let three = eventually(Duration::from_secs(10), || async {
        runs.lock().unwrap().len() >= 3
    })
    .await;
    assert!(wait_idle(&first, Duration::from_secs(5)).await);
    first.shutdown().await;
    second.shutdown().await;

    let runs = runs.lock().unwrap().clone();
    assert!(three, "expected a run a second, got {runs:?}");
    let mut keys: Vec<&String> = runs.iter().map(|(k, _)| k).collect();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(before, keys.len(), "a due time ran twice: {runs:?}");
}

/// The scheduler's compare-and-set, raced as two processes race it: two stores on one database
/// (each its own pool and write gate) both saw the same due time and both try to move it on. The
/// job key `schedule:<name>:<due>` would hide a double fire from the job table, so this looks at
/// the CAS itself: exactly one of the two wins each due time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_racing_one_due_time_fire_it_once() {
    use siyu::store::schedules::{Schedule, advance};
    let db = TestDb::new().await;
    let settings = db.settings();
    let a = Store::connect(&settings.database).await.unwrap();
    a.migrate().await.unwrap();
    let b = Store::connect(&settings.database).await.unwrap();
    let due0 = 1_000_000;
    let schedule = Schedule {
        name: "race".into(),
        cron: "* * * * * *".into(),
        timezone: "Asia/Shanghai".into(),
        job_kind: "race".into(),
        payload: "{}".into(),
        next_run_at: due0,
    };
    a.declare_schedule(&schedule, 0).await.unwrap();
    for round in 0..20 {
        let due = due0 + round * 1000;
        let now = due + 10;
        // Both processes look first, and see the same due time.
        let seen_a = a.due_schedules(now).await.unwrap();
        let seen_b = b.due_schedules(now).await.unwrap();
        assert_eq!(seen_a[0].next_run_at, due);
        assert_eq!(seen_b[0].next_run_at, due);
        let fire = |store: Store| async move {
            let mut tx = store.begin().await.unwrap();
            let won = advance(&mut tx, "race", due, due + 1000, now)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            won
        };
        let (won_a, won_b) =
            tokio::join!(tokio::spawn(fire(a.clone())), tokio::spawn(fire(b.clone())));
        let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
        assert!(
            won_a ^ won_b,
            "due time {due}: a won {won_a}, b won {won_b}; exactly one may fire it"
        );
    }
    a.close().await;
    b.close().await;
}

#[test]
fn a_job_leased_by_a_process_that_died_runs_again() {
    let db = futures_block_on(TestDb::new());
    let mut settings = db.settings();
    settings.jobs.lease_secs = 1;

    // Process one claims the job and dies mid-run: its runtime is dropped without any shutdown.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    doomed.block_on(async {
        let mut components = Components::default();
        components
            .jobs
            .register("send", |_ctx| std::future::pending());
        let app = start_with(settings.clone(), components).await;
        enqueue(&app, &settings, "send", "send-1", None).await;
        assert!(wait_state(app.store(), "send-1", "running", Duration::from_secs(5)).await);
        std::mem::forget(app);
    });
    doomed.shutdown_background();

    // Process two takes it once the lease has run out.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let runs: Runs = Arc::default();
        let app = start_with(
            settings.clone(),
            recording("send", &runs, &Clock::default()),
        )
        .await;
        assert!(wait_state(app.store(), "send-1", "done", Duration::from_secs(10)).await);
        let (_, attempts, _) = job_state(app.store(), "send-1").await;
        assert_eq!(attempts, 2, "the dead worker's attempt counts");
        assert_eq!(runs.lock().unwrap().len(), 1);
        app.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_hands_back_the_lease_of_a_job_that_did_not_finish() {
    let db = TestDb::new().await;
    let mut settings = db.settings();
    settings.server.shutdown_grace_secs = 1;
    settings.jobs.lease_secs = 600; // only a release, not an expiry, can free it in time
    let mut components = Components::default();
    components.jobs.register("slow", |_ctx| async {
        // Never finishes on its own.
        std::future::pending::<()>().await;
        Ok(())
    });
    let app = start_with(settings.clone(), components).await;
    enqueue(&app, &settings, "slow", "slow-1", None).await;
    assert!(wait_state(app.store(), "slow-1", "running", Duration::from_secs(5)).await);
    app.shutdown().await;

    let runs: Runs = Arc::default();
    let app = start_with(
        settings.clone(),
        recording("slow", &runs, &Clock::default()),
    )
    .await;
    assert!(wait_state(app.store(), "slow-1", "done", Duration::from_secs(5)).await);
    let (_, attempts, _) = job_state(app.store(), "slow-1").await;
    assert_eq!(attempts, 1, "the interrupted attempt is not counted");
    app.shutdown().await;
}

fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_the_dispatcher_wake_at_once_not_on_their_poll() {
    let db = TestDb::new().await;
    let mut settings = db.settings();
    settings.jobs.poll_interval_ms = 30_000;
    let runs: Runs = Arc::default();
    let clock = Clock::default();
    let mut components = recording("now", &runs, &clock);
    let (handled_tx, mut handled_rx) = tokio::sync::mpsc::unbounded_channel();
    components.events.register(
        "change_external_contact.add_external_contact",
        move |_ctx, _event, _tx| {
            let handled_tx = handled_tx.clone();
            Box::pin(async move {
                handled_tx
                    .send(std::time::Instant::now())
                    .map_err(|e| e.to_string())
            })
        },
    );
    let app = start_with(settings.clone(), components).await;
    // Nothing to do: every worker and the dispatcher are (about to be) parked in their wait.
    assert!(wait_idle(&app, Duration::from_secs(5)).await);

    let enqueued_at = clock.now_ms();
    enqueue(&app, &settings, "now", "now-1", None).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            !runs.lock().unwrap().is_empty()
        })
        .await
    );
    let waited = runs.lock().unwrap()[0].1 - enqueued_at;
    assert!(waited < 500, "job started {waited} ms after enqueue");

    let sent = std::time::Instant::now();
    common::sender(&app)
        .deliver(&common::sample_events()[0])
        .await
        .unwrap();
    let handled = tokio::time::timeout(Duration::from_secs(5), handled_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        handled - sent < Duration::from_millis(500),
        "event handled {:?} after it was sent",
        handled - sent
    );

    if db.is_postgres() {
        // Another replica enqueues: only LISTEN/NOTIFY can wake this one before its poll.
        let other = Store::connect(&settings.database).await.unwrap();
        let mut tx = other.begin().await.unwrap();
        let enqueued_at = clock.now_ms();
        jobs::enqueue(
            &mut tx,
            &settings.jobs,
            &clock,
            "now",
            &serde_json::json!({}),
            "now-2",
            None,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || async {
                runs.lock().unwrap().len() == 2
            })
            .await
        );
        let waited = runs.lock().unwrap()[1].1 - enqueued_at;
        assert!(
            waited < 500,
            "job from another replica started {waited} ms after enqueue"
        );
        other.close().await;
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_enqueued_together_keep_their_payloads_exactly_and_skip_keys_already_used() {
    // enqueue_all hands the database its rows as one JSON text: payloads that are themselves
    // JSON with quotes, backslashes, newlines and Chinese must come back byte for byte, integers
    // must stay integers, and a key already used is skipped without failing the others.
    let db = TestDb::new().await;
    let settings = db.settings();
    let clock = Clock::default();
    let seen: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut components = Components {
        clock: clock.clone(),
        ..Components::default()
    };
    let recorded = seen.clone();
    components.jobs.register("together", move |ctx| {
        let recorded = recorded.clone();
        async move {
            recorded
                .lock()
                .unwrap()
                .insert(ctx.job.idempotency_key.clone(), ctx.job.payload.clone());
            Ok(())
        }
    });
    let app = start_with(settings.clone(), components).await;
    enqueue(&app, &settings, "together", "together-used", None).await;
    assert!(wait_state(app.store(), "together-used", "done", Duration::from_secs(5)).await);

    let later = clock.now_ms() + 3_600_000;
    let texts = [
        "王小明说：\"你好\"\n第二行 \\ 反斜杠",
        "{\"nested\": [1, 2]}",
        "plain",
    ];
    let jobs = vec![
        (
            serde_json::json!({ "text": texts[0] }),
            "together-a".to_string(),
            None,
        ),
        (
            serde_json::json!({ "text": texts[1] }),
            "together-used".to_string(),
            None,
        ),
        (
            serde_json::json!({ "text": texts[2] }),
            "together-later".to_string(),
            Some(later),
        ),
    ];
    let mut tx = app.store().begin().await.unwrap();
    let new = jobs::enqueue_all(&mut tx, &settings.jobs, app.clock(), "together", jobs)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(new, 2, "the used key is skipped, the other two are new");

    assert!(wait_state(app.store(), "together-a", "done", Duration::from_secs(5)).await);
    let payload = seen.lock().unwrap()["together-a"].clone();
    assert_eq!(payload, serde_json::json!({ "text": texts[0] }).to_string());
    let used = seen.lock().unwrap()["together-used"].clone();
    assert_eq!(
        used,
        serde_json::json!({"key": "together-used"}).to_string()
    );

    let waiting = app
        .store()
        .job_by_key("together-later")
        .await
        .unwrap()
        .expect("the later job is stored");
    assert_eq!(waiting.run_at, later);
    assert_eq!(waiting.max_attempts, settings.jobs.max_attempts);
    assert_eq!(waiting.state.to_string(), "queued");
    clock.advance(3_600_000);
    app.store().signals().jobs.notify_waiters();
    assert!(
        wait_state(
            app.store(),
            "together-later",
            "done",
            Duration::from_secs(5)
        )
        .await
    );
    let payload = seen.lock().unwrap()["together-later"].clone();
    assert_eq!(payload, serde_json::json!({ "text": texts[2] }).to_string());
    app.shutdown().await;
}
