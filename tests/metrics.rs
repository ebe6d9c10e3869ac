//! `GET /metrics`: the latency histograms (callbacks, jobs, WeCom calls, welcomes) appear with
//! their labels once the server has done each thing, and the lines operators' scripts read before
//! them stay exactly as they were.

mod common;

use std::time::Duration;

use common::wait_settled;
use common::world::{World, world, world_with};
use siyu::fake::Failure;
use siyu::store::groups::{InvitationStatus, RemovalStatus};

/// The names the histograms add; every line after the old ones belongs to one of them.
const HISTOGRAMS: [&str; 5] = [
    "siyu_callback_duration_seconds",
    "siyu_job_duration_seconds",
    "siyu_job_wait_seconds",
    "siyu_wecom_call_duration_seconds",
    "siyu_welcome_latency_seconds",
];

async fn scrape(w: &World) -> String {
    let r = w
        .http
        .get(format!("http://{}/metrics", w.app.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The value of the sample `series` (name and labels, exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

/// Scrapes until the `_count` of `series` is at least 1 (the scrape folds in what was recorded
/// up to then; a job's latency is recorded just after its WeCom calls land at the fake).
async fn counted(w: &World, series: &str) -> String {
    let (name, labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l));
    let count = if labels.is_empty() {
        format!("{name}_count")
    } else {
        format!("{name}_count{{{labels}")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(w).await;
        if sample(&text, &count).is_some_and(|n| n >= 1.0) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {count} of at least 1 in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_jobs_wecom_calls_and_welcomes_have_latency_histograms() {
    let w = world_with(|s| s.wecom.request_timeout_ms = 1000).await;
    w.channels().await;
    // Each failure a WeCom call can end in, once, on a call the client repeats.
    let get = "/cgi-bin/externalcontact/get";
    w.fake.fail_next(get, 1, Failure::Http(503));
    w.fake.fail_next(get, 1, Failure::BrokenBody);
    w.fake
        .fail_next("/cgi-bin/externalcontact/mark_tag", 1, Failure::Errcode(-1));
    w.fake
        .fail_next("/cgi-bin/externalcontact/remark", 1, Failure::Timeout);
    w.fake.set_timeout_hold(Duration::from_secs(2));

    let added = w.add("douyin", "王小明").await;
    assert_eq!(w.fake.welcome_messages().len(), 1);
    // WeCom delivers the add again (a retry after a lost answer), and someone posts nonsense.
    let xml = w
        .app
        .store()
        .inbox_xml_of_kind("change_external_contact.add_external_contact")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(common::sender(&w.app).deliver(&xml).await.unwrap(), 1);
    let refused = w
        .http
        .post(format!("http://{}/wecom/callback", w.app.addr()))
        .body("<xml/>")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let text = counted(&w, "siyu_welcome_latency_seconds").await;
    for outcome in ["stored", "duplicate", "rejected"] {
        let series = format!("siyu_callback_duration_seconds_count{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in\n{text}");
    }
    // Registered before anything failed: a dashboard sees 0, not nothing.
    assert_eq!(
        sample(
            &text,
            "siyu_callback_duration_seconds_count{outcome=\"failed\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.contains("siyu_callback_duration_seconds_bucket{outcome=\"stored\",le=\"5\"} 1"),
        "WeCom's 5 s is a bucket bound:\n{text}"
    );

    // The welcome: one, under WeCom's 20 s, which is a bucket bound.
    assert_eq!(
        sample(&text, "siyu_welcome_latency_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "siyu_welcome_latency_seconds_bucket{le=\"20\"}"),
        Some(1.0),
        "{text}"
    );
    let latency = sample(&text, "siyu_welcome_latency_seconds_sum").unwrap();
    assert!(latency > 0.0 && latency < 20.0, "{latency}");

    for kind in ["contact.welcome", "tags.sync"] {
        let text = counted(&w, &format!("siyu_job_duration_seconds{{kind=\"{kind}\"}}")).await;
        let series = format!("siyu_job_wait_seconds_count{{kind=\"{kind}\"}}");
        assert!(
            sample(&text, &series).is_some_and(|n| n >= 1.0),
            "{series} in\n{text}"
        );
    }

    // Every request, by path and what came back: WeCom's errcode, or what came instead.
    let text = scrape(&w).await;
    for (path, errcode) in [
        ("gettoken", "0"),
        ("externalcontact/send_welcome_msg", "0"),
        ("externalcontact/get", "http_5xx"),
        ("externalcontact/get", "transport"),
        ("externalcontact/get", "0"),
        ("externalcontact/mark_tag", "-1"),
        ("externalcontact/mark_tag", "0"),
        ("externalcontact/remark", "timeout"),
        ("externalcontact/remark", "0"),
    ] {
        let series = format!(
            "siyu_wecom_call_duration_seconds_count{{path=\"{path}\",errcode=\"{errcode}\"}}"
        );
        assert!(
            sample(&text, &series).is_some_and(|n| n >= 1.0),
            "{series} in\n{text}"
        );
    }
    let timed_out =
        "siyu_wecom_call_duration_seconds_sum{path=\"externalcontact/remark\",errcode=\"timeout\"}";
    assert!(
        sample(&text, timed_out).is_some_and(|s| s >= 1.0),
        "a timed-out request counts its wait (the 1 s timeout): {text}"
    );
    assert!(w.settled(&added.userid, &added.external_userid, 3).await);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lines_before_the_histograms_read_as_they_always_did() {
    let w = world().await;
    // One event stored (no handler: nothing follows from it), delivered again, and one refused.
    let sender = common::sender(&w.app);
    let xml = &common::unhandled_events()[0];
    assert_eq!(sender.deliver(xml).await.unwrap(), 1);
    assert_eq!(sender.deliver(xml).await.unwrap(), 1);
    let refused = w
        .http
        .post(format!("http://{}/wecom/callback", w.app.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(wait_settled(&w.app, Duration::from_secs(10)).await);

    let text = scrape(&w).await;
    let jobs: String = w
        .app
        .store()
        .count_jobs_by_state()
        .await
        .unwrap()
        .into_iter()
        .map(|(state, n)| format!("siyu_jobs{{state=\"{}\"}} {n}\n", state.as_str()))
        .collect();
    let invitations: String = InvitationStatus::ALL
        .iter()
        .map(|s| format!("siyu_group_invitations{{status=\"{s}\"}} 0\n"))
        .collect();
    let removals: String = RemovalStatus::ALL
        .iter()
        .map(|s| format!("siyu_group_removals{{status=\"{s}\"}} 0\n"))
        .collect();
    let old = format!(
        "# HELP siyu_callbacks_received_total Callback POSTs received.
# TYPE siyu_callbacks_received_total counter
siyu_callbacks_received_total 3
# HELP siyu_callbacks_stored_total Callbacks stored in the inbox.
# TYPE siyu_callbacks_stored_total counter
siyu_callbacks_stored_total 1
# HELP siyu_callbacks_duplicate_total Redelivered callbacks acknowledged without storing.
# TYPE siyu_callbacks_duplicate_total counter
siyu_callbacks_duplicate_total 1
# HELP siyu_callbacks_failed_total Valid callbacks that could not be stored (answered 500).
# TYPE siyu_callbacks_failed_total counter
siyu_callbacks_failed_total 0
# HELP siyu_url_checks_total URL verification requests answered.
# TYPE siyu_url_checks_total counter
siyu_url_checks_total 0
# HELP siyu_callbacks_rejected_total Callbacks refused, by reason.
# TYPE siyu_callbacks_rejected_total counter
siyu_callbacks_rejected_total{{reason=\"missing_params\"}} 1
siyu_callbacks_rejected_total{{reason=\"bad_envelope\"}} 0
siyu_callbacks_rejected_total{{reason=\"bad_signature\"}} 0
siyu_callbacks_rejected_total{{reason=\"decrypt_failed\"}} 0
siyu_callbacks_rejected_total{{reason=\"wrong_receiver\"}} 0
siyu_callbacks_rejected_total{{reason=\"too_large\"}} 0
# HELP siyu_inbox_lag_seconds Age of the oldest event not yet handled.
# TYPE siyu_inbox_lag_seconds gauge
siyu_inbox_lag_seconds 0
# HELP siyu_inbox_events Events in the inbox, by status.
# TYPE siyu_inbox_events gauge
siyu_inbox_events{{status=\"pending\"}} 0
siyu_inbox_events{{status=\"processing\"}} 0
siyu_inbox_events{{status=\"done\"}} 0
siyu_inbox_events{{status=\"unhandled\"}} 1
siyu_inbox_events{{status=\"failed\"}} 0
# HELP siyu_jobs Jobs, by state.
# TYPE siyu_jobs gauge
{jobs}# HELP siyu_group_invitations Tier-group invitations, by status.
# TYPE siyu_group_invitations gauge
{invitations}# HELP siyu_group_removals Requests to group owners to remove a customer, by status.
# TYPE siyu_group_removals gauge
{removals}# HELP siyu_group_joins_total Customers who joined a tier group.
# TYPE siyu_group_joins_total counter
siyu_group_joins_total 0
# HELP siyu_group_members Customers in tier groups now.
# TYPE siyu_group_members gauge
siyu_group_members 0
# HELP siyu_console_sign_in_failures_total Console sign-ins refused for a wrong name or password.
# TYPE siyu_console_sign_in_failures_total counter
siyu_console_sign_in_failures_total 0
"
    );
    assert!(
        text.starts_with(&old),
        "the old lines changed:\n--- expected\n{old}\n--- got\n{text}"
    );
    // What follows is the histograms' own text, nothing else.
    for line in text[old.len()..].lines().filter(|l| !l.is_empty()) {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        assert!(
            HISTOGRAMS.iter().any(|h| name.starts_with(h)),
            "{line:?} is neither an old line nor a histogram's"
        );
    }
    w.app.shutdown().await;
}
