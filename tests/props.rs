//! The properties of `siyu::fuzz` with few cases, so every run of the suite tries some bad input;
//! `siyu fuzz --cases N` runs the same properties with many.

mod common;

use std::time::Duration;

use siyu::testkit::API_TOKEN;

/// Few enough to keep this file under ~20 s on a shared machine.
const CASES: u32 = 256;

#[test]
fn crypto_never_panics_and_round_trips() {
    siyu::fuzz::crypto_properties(CASES).unwrap();
}

#[test]
fn event_parser_never_panics() {
    siyu::fuzz::xml_properties(CASES).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_routes_answer_garbage_with_4xx_and_stay_healthy() {
    let db = common::TestDb::new().await;
    let app = common::start(db.settings()).await;
    let base = format!("http://{}", app.addr());
    // Each route gets at least 4 cases; CASES * 4 spreads a few more over them.
    siyu::fuzz::api_properties(&base, API_TOKEN, CASES * 4)
        .await
        .unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_refuses_bad_ciphertexts_and_stays_healthy() {
    let db = common::TestDb::new().await;
    let app = common::start(db.settings()).await;
    let url = format!("http://{}/wecom/callback", app.addr());
    siyu::fuzz::callback_properties(&url, &common::secrets(), CASES * 2)
        .await
        .unwrap();
    // What was acknowledged was stored, and the dispatcher gets through it all.
    assert!(common::wait_idle(&app, Duration::from_secs(30)).await);
    app.shutdown().await;
}
