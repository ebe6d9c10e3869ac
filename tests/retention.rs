//! Retention: what siyu has finished with goes after its age; what is open, recent, or history
//! stays.

mod common;

use std::time::Duration;

use serde_json::json;
use siyu::store::inbox::InboxStatus;
use siyu::store::jobs::JobState;

const DAY_MS: i64 = 86_400_000;

async fn events(app: &siyu::App, status: InboxStatus) -> i64 {
    let counts = app.store().count_events_by_status().await.unwrap();
    counts
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

async fn jobs(app: &siyu::App, state: JobState) -> i64 {
    let counts = app.store().count_jobs_by_state().await.unwrap();
    counts
        .iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_events_and_jobs_go_after_their_age_and_history_stays() {
    let w = common::world::world_with(|s| {
        s.retention.inbox_days = 30;
        s.retention.jobs_days = 7;
        // Small batches, so pruning takes several.
        s.retention.batch = 2;
    })
    .await;
    w.channels().await;
    let old = w.add("douyin", "老客户").await;
    assert!(w.settled("zhangsan", &old.external_userid, 2).await);
    let at = chrono::DateTime::from_timestamp_millis(w.app.clock().now_ms() - DAY_MS)
        .unwrap()
        .to_rfc3339();
    let (status, body) = w
        .post(
            "/activity",
            json!({"items": [{"id": "o1", "kind": "order", "customer": old.external_userid,
                              "amount": "2500.00", "at": at}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(common::wait_settled(&w.app, Duration::from_secs(20)).await);
    let old_events = events(&w.app, InboxStatus::Done).await;
    let old_jobs = jobs(&w.app, JobState::Done).await;
    assert!(old_events >= 1 && old_jobs >= 3, "{old_events} {old_jobs}");
    let history = w.get(&format!("/customers/{}", old.external_userid)).await;

    // Ten days on: the jobs are past their 7 days, the events not yet past their 30. (The
    // hourly retention job may run first, as the clock jumps; pruning again changes nothing.)
    w.app.clock().advance(10 * DAY_MS);
    w.fake
        .advance_clock(Duration::from_millis(10 * DAY_MS as u64));
    let new = w.add("douyin", "新客户").await;
    assert!(w.settled("zhangsan", &new.external_userid, 2).await);
    assert!(common::wait_settled(&w.app, Duration::from_secs(20)).await);
    siyu::app::retention::prune(w.app.services()).await.unwrap();
    let now = w.app.clock().now_ms();
    let done = w.get("/jobs?state=done&limit=500").await;
    let done = done["jobs"].as_array().unwrap();
    assert!(!done.is_empty());
    assert!(
        done.iter()
            .all(|j| j["updated_at"].as_i64().unwrap() >= now - 7 * DAY_MS),
        "no job done more than 7 days ago is left: {done:?}"
    );
    assert!(
        done.iter().any(|j| j["kind"] == "retention.prune"),
        "the hourly job ran: {done:?}"
    );
    assert_eq!(
        events(&w.app, InboxStatus::Done).await,
        old_events * 2,
        "events stay their 30 days"
    );
    assert!(jobs(&w.app, JobState::Done).await < old_jobs * 2);

    // Thirty-one days after the first: their events go too; the newer ones stay.
    w.app.clock().advance(21 * DAY_MS);
    siyu::app::retention::prune(w.app.services()).await.unwrap();
    assert_eq!(events(&w.app, InboxStatus::Done).await, old_events);

    // What happened is kept: the customer, their activity and tier history read the same.
    let after = w.get(&format!("/customers/{}", old.external_userid)).await;
    assert_eq!(after["tier_history"], history["tier_history"]);
    assert_eq!(after["activity"], history["activity"]);
    assert_eq!(after["customer"]["tier"], history["customer"]["tier"]);
    // Nothing is left to prune a second time.
    let again = siyu::app::retention::prune(w.app.services()).await.unwrap();
    assert!(again.values().all(|n| *n == 0), "{again:?}");
    w.app.shutdown().await;
}
