//! The WeCom client against the fake WeCom: tokens, retries, sends that are never retried
//! blindly, limits, and errcodes.

mod common;

use std::time::{Duration, Instant};

use siyu::clock::Clock;
use siyu::config::{Secret, WecomSettings};
use siyu::fake::{AddedCustomer, Failure, FakeConfig, FakeWecom, NewCustomer};
use siyu::wecom::client::types::{MarkTagRequest, RemarkRequest, Text, WelcomeRequest};
use siyu::wecom::client::{WecomClient, WecomError, code};

const GETTOKEN: &str = "/cgi-bin/gettoken";
const GET_CUSTOMER: &str = "/cgi-bin/externalcontact/get";
const MARK_TAG: &str = "/cgi-bin/externalcontact/mark_tag";
const WELCOME: &str = "/cgi-bin/externalcontact/send_welcome_msg";
const TAG_LIST: &str = "/cgi-bin/externalcontact/get_corp_tag_list";
const APP_MESSAGE: &str = "/cgi-bin/message/send";

struct World {
    fake: FakeWecom,
    settings: WecomSettings,
    _siyu: Option<siyu::App>,
}

fn fake_config() -> FakeConfig {
    let s = common::secrets();
    FakeConfig {
        corp_id: s.corp_id,
        agent_id: 1_000_002,
        app_secret: "app-secret".into(),
        contact_secret: "contact-secret".into(),
        callback_url: None,
        callback_token: s.token,
        encoding_aes_key: s.encoding_aes_key,
        mass_cap: Default::default(),
    }
}

async fn world() -> World {
    let fake = FakeWecom::new(fake_config());
    fake.add_staff("zhangsan", "张三");
    let (addr, _server) = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut settings = WecomSettings {
        corp_id: common::CORP_ID.into(),
        agent_id: 1_000_002,
        secret: Secret::new("app-secret"),
        contact_secret: Secret::new("contact-secret"),
        api_base: format!("http://{addr}"),
        ..WecomSettings::default()
    };
    settings.retry_base_ms = 10;
    World {
        fake,
        settings,
        _siyu: None,
    }
}

/// A world where a customer has just added zhangsan through the driver (delivered to a real
/// siyu), so a welcome code is live.
async fn world_with_new_customer() -> (World, AddedCustomer, common::TestDb) {
    let mut w = world().await;
    let db = common::TestDb::new().await;
    let app = common::start(db.settings()).await;
    w.fake
        .set_callback_url(&format!("http://{}/wecom/callback", app.addr()));
    let added = w
        .fake
        .driver()
        .customer_adds_staff("zhangsan", Some("douyin"), NewCustomer::wechat("王小明"))
        .await
        .unwrap();
    w._siyu = Some(app);
    (w, added, db)
}

/// A world where a customer follows zhangsan, seeded without any callback.
async fn world_with_customer() -> (World, String) {
    let w = world().await;
    let customer = w
        .fake
        .seed_customer("zhangsan", NewCustomer::wechat("王小明"));
    (w, customer)
}

fn client(settings: &WecomSettings) -> WecomClient {
    WecomClient::new(settings, None, Clock::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_serves_many_concurrent_calls() {
    let w = world().await;
    // A slow gettoken, so the callers really arrive while the first fetch is under way.
    w.fake.set_latency(GETTOKEN, Duration::from_millis(300));
    let client = client(&w.settings);
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.tag_library().await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        w.fake.calls_to(GETTOKEN).len(),
        1,
        "single flight: one gettoken for 40 callers"
    );
    assert_eq!(w.fake.calls_to(TAG_LIST).len(), 40);
    // The token never reaches the call log.
    assert!(
        w.fake
            .calls()
            .iter()
            .all(|c| !c.query.contains("access_token=") || c.query.contains("REDACTED"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_refused_token_is_fetched_again_once() {
    let w = world().await;
    let client = client(&w.settings);
    client.tag_library().await.unwrap();
    w.fake.expire_tokens();
    client.tag_library().await.unwrap();
    assert_eq!(w.fake.calls_to(GETTOKEN).len(), 2);

    w.fake
        .fail_next(TAG_LIST, 1, Failure::Errcode(code::INVALID_TOKEN));
    client.tag_library().await.unwrap();
    assert_eq!(w.fake.calls_to(GETTOKEN).len(), 3);

    // A refusal that persists is reported after one refresh, not looped on.
    w.fake
        .fail_next(TAG_LIST, 5, Failure::Errcode(code::TOKEN_EXPIRED));
    let err = client.tag_library().await.unwrap_err();
    assert_eq!(err.errcode(), Some(code::TOKEN_EXPIRED));
    assert_eq!(w.fake.calls_to(GETTOKEN).len(), 4);
    // The soak found a note job failed for good on this: a job tries again later, with the
    // token it gets then.
    assert!(err.is_transient(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_retried_on_busy_and_5xx() {
    let (w, customer) = world_with_customer().await;
    let client = client(&w.settings);
    w.fake
        .fail_next(GET_CUSTOMER, 2, Failure::Errcode(code::SYSTEM_BUSY));
    let detail = client
        .get_customer(&customer.as_str().into())
        .await
        .unwrap();
    assert_eq!(detail.external_contact.name, "王小明");
    assert_eq!(detail.follow_user[0].userid, "zhangsan");
    assert_eq!(w.fake.calls_to(GET_CUSTOMER).len(), 3);

    w.fake.fail_next(GET_CUSTOMER, 1, Failure::Http(502));
    client
        .get_customer(&customer.as_str().into())
        .await
        .unwrap();
    assert_eq!(w.fake.calls_to(GET_CUSTOMER).len(), 5);

    // Past the retries, the error is reported with its code.
    w.fake
        .fail_next(GET_CUSTOMER, 10, Failure::Errcode(code::SYSTEM_BUSY));
    let err = client
        .get_customer(&customer.as_str().into())
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(-1));
    assert_eq!(
        w.fake.calls_to(GET_CUSTOMER).len(),
        5 + 4,
        "the first try and 3 retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_never_retried_after_a_timeout_or_a_busy_answer() {
    let (mut w, added, _db) = world_with_new_customer().await;
    w.settings.request_timeout_ms = 500;
    w.fake.set_timeout_hold(Duration::from_secs(2));
    let client = client(&w.settings);
    let request = WelcomeRequest {
        welcome_code: added
            .welcome_code
            .clone()
            .expect("the add issued a welcome code"),
        text: Some(Text {
            content: "欢迎".into(),
        }),
        attachments: vec![],
    };
    w.fake.fail_next(WELCOME, 1, Failure::Timeout);
    let err = client.send_welcome(&request).await.unwrap_err();
    assert!(matches!(err, WecomError::OutcomeUnknown { .. }), "{err}");
    assert_eq!(w.fake.calls_to(WELCOME).len(), 1, "no second try");
    // It did happen (the answer was only late): a blind retry would have been a second welcome.
    // (The fake records it before holding the answer; waiting covers a slow fake.)
    assert!(
        common::eventually(Duration::from_secs(2), || async {
            w.fake.welcome_messages().len() == 1
        })
        .await,
        "the welcome was sent"
    );
    let err = client.send_welcome(&request).await.unwrap_err();
    assert_eq!(err.errcode(), Some(code::WELCOME_CODE_USED));

    w.fake
        .fail_next(WELCOME, 1, Failure::Errcode(code::SYSTEM_BUSY));
    let err = client.send_welcome(&request).await.unwrap_err();
    assert_eq!(err.errcode(), Some(-1));
    assert_eq!(
        w.fake.calls_to(WELCOME).len(),
        3,
        "a send is not retried by the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_answer_breaks_off_after_200_is_outcome_unknown_and_not_retried() {
    let (w, added, _db) = world_with_new_customer().await;
    let client = client(&w.settings);
    let request = WelcomeRequest {
        welcome_code: added.welcome_code.expect("the add issued a welcome code"),
        text: Some(Text {
            content: "欢迎".into(),
        }),
        attachments: vec![],
    };
    w.fake.fail_next(WELCOME, 1, Failure::BrokenBody);
    let err = client.send_welcome(&request).await.unwrap_err();
    assert!(matches!(err, WecomError::OutcomeUnknown { .. }), "{err}");
    assert_eq!(w.fake.calls_to(WELCOME).len(), 1, "no second try");
    assert_eq!(
        w.fake.welcome_messages().len(),
        1,
        "the welcome was sent although its answer broke off"
    );

    // The same for an app message to staff.
    w.fake.fail_next(APP_MESSAGE, 1, Failure::BrokenBody);
    let err = client
        .send_text_to_members(&["zhangsan".into()], "新客户：王小明")
        .await
        .unwrap_err();
    assert!(matches!(err, WecomError::OutcomeUnknown { .. }), "{err}");
    assert_eq!(w.fake.calls_to(APP_MESSAGE).len(), 1, "no second try");
    assert_eq!(w.fake.app_messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_answer_breaks_off_is_retried() {
    let (w, customer) = world_with_customer().await;
    let client = client(&w.settings);
    // Set through the admin endpoint, as `siyu fake-wecom` is driven from another process.
    let answer = reqwest::Client::new()
        .post(format!("{}/fake/faults", w.settings.api_base))
        .json(&serde_json::json!({"path": "externalcontact/get", "broken_body": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let detail = client
        .get_customer(&customer.as_str().into())
        .await
        .unwrap();
    assert_eq!(detail.external_contact.name, "王小明");
    let calls = w.fake.calls_to(GET_CUSTOMER);
    assert_eq!(calls.len(), 2, "the broken answer, then the retry");
    assert_eq!(
        calls[0].http_status, 200,
        "the fake answered the first call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_45009_the_api_pauses_instead_of_hammering() {
    let (w, customer) = world_with_customer().await;
    let client = client(&w.settings);
    let request = MarkTagRequest {
        userid: "zhangsan".into(),
        external_userid: customer.clone().into(),
        add_tag: vec!["etNOSUCHTAG".into()],
        remove_tag: vec![],
    };
    w.fake
        .fail_next(MARK_TAG, 1, Failure::Errcode(code::FREQUENCY_LIMIT));
    let err = client.mark_tag(&request).await.unwrap_err();
    assert_eq!(err.errcode(), Some(45009));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    let started = Instant::now();
    let err = client.mark_tag(&request).await.unwrap_err();
    assert!(matches!(err, WecomError::Throttled { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not after a long wait"
    );
    assert_eq!(
        w.fake.calls_to(MARK_TAG).len(),
        1,
        "the paused API was not called again"
    );
    // Other APIs are not paused.
    client.tag_library().await.unwrap();
}

/// The soak found this: a 45009 from gettoken made every caller wait a fixed 60 s, whatever
/// `wecom.frequency_window_secs` said; it pauses for the configured window, as any API's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_45009_from_gettoken_waits_the_configured_window_like_any_api() {
    let mut w = world().await;
    w.settings.frequency_window_secs = 2;
    let client = client(&w.settings);
    w.fake
        .fail_next(GETTOKEN, 1, Failure::Errcode(code::FREQUENCY_LIMIT));
    let err = client.tag_library().await.unwrap_err();
    assert_eq!(err.errcode(), Some(45009), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)), "{err}");
    assert!(err.is_transient());
    assert_eq!(w.fake.calls_to(TAG_LIST).len(), 0, "no token, no call");
    client.tag_library().await.unwrap_or_else(|e| {
        panic!("after the window a token is fetched again: {e}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_paces_calls() {
    let mut w = world().await;
    w.settings.calls_per_minute = 600; // one every 100 ms
    let client = client(&w.settings);
    let started = Instant::now();
    for _ in 0..5 {
        client.tag_library().await.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

/// Calls of `path` the fake has received and not yet answered.
fn in_flight(fake: &FakeWecom, path: &str) -> usize {
    fake.calls_to(path)
        .iter()
        .filter(|c| c.http_status == 0)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_45033_fewer_calls_run_at_once_until_calls_succeed_again() {
    const PATH: &str = "externalcontact/get_corp_tag_list";
    let mut w = world().await;
    w.settings.concurrency = 2;
    let client = client(&w.settings);
    client.tag_library().await.unwrap(); // the token, fetched once
    assert_eq!(client.limiter().concurrency_of(PATH), 2);

    // Every try answers 45033 (the first and 3 retries): the concurrency drops to its floor.
    w.fake
        .fail_next(TAG_LIST, 4, Failure::Errcode(code::TOO_MANY_CONCURRENT));
    let err = client.tag_library().await.unwrap_err();
    assert_eq!(err.errcode(), Some(code::TOO_MANY_CONCURRENT));
    assert_eq!(client.limiter().concurrency_of(PATH), 1);

    // Lowered, two callers take turns: the second call reaches WeCom after the first answered.
    let latency = Duration::from_millis(400);
    w.fake.set_latency(TAG_LIST, latency);
    let before = w.fake.calls_to(TAG_LIST).len();
    let (a, b) = tokio::join!(client.tag_library(), client.tag_library());
    a.unwrap();
    b.unwrap();
    let calls = w.fake.calls_to(TAG_LIST);
    let (first, second) = (&calls[before], &calls[before + 1]);
    let gap = second.at.duration_since(first.at).unwrap();
    assert!(gap >= latency, "the calls overlapped: {gap:?} apart");

    // Each success gave back a withheld slot: two calls run at once again.
    assert_eq!(client.limiter().concurrency_of(PATH), 2);
    w.fake.set_latency(TAG_LIST, Duration::from_secs(2));
    let (c, d) = (client.clone(), client.clone());
    let calls = tokio::spawn(async move { tokio::join!(c.tag_library(), d.tag_library()) });
    assert!(
        common::eventually(Duration::from_secs(2), || async {
            in_flight(&w.fake, TAG_LIST) == 2
        })
        .await,
        "two calls in flight at the fake"
    );
    let (c, d) = calls.await.unwrap();
    c.unwrap();
    d.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errcodes_are_typed_and_explained() {
    let (w, customer) = world_with_customer().await;
    let client = client(&w.settings);
    let err = client
        .mark_tag(&MarkTagRequest {
            userid: "zhangsan".into(),
            external_userid: "wmSOMEONEELSE".into(),
            add_tag: vec!["etX".into()],
            remove_tag: vec![],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.errcode(),
            Some(code::NO_RELATIONSHIP)
                | Some(code::INVALID_EXTERNAL_USERID)
                | Some(code::INVALID_TAG)
        ),
        "{err}"
    );
    assert!(siyu::wecom::client::error::meaning(err.errcode().unwrap()).is_some());

    // A remark over 20 characters is refused before calling, naming the field.
    let err = client
        .remark(&RemarkRequest {
            userid: "zhangsan".into(),
            external_userid: customer.into(),
            remark: Some("一".repeat(21)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("remark"), "{err}");

    // A wrong secret: 40001 from gettoken, typed.
    let mut wrong = w.settings.clone();
    wrong.secret = Secret::new("nope");
    wrong.contact_secret = Secret::new("nope");
    let err = client_of(&wrong).tag_library().await.unwrap_err();
    assert_eq!(err.errcode(), Some(code::INVALID_SECRET));
}

fn client_of(settings: &WecomSettings) -> WecomClient {
    client(settings)
}

/// On PostgreSQL two clients on one database play two replicas: the second finds the first
/// one's token in the store. On SQLite (one process) the callers share one client, whose single
/// flight makes one fetch serve them all. gettoken is slowed so the callers really overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_token_on_either_backend() {
    let db = common::TestDb::new().await;
    let w = world().await;
    let store = siyu::store::Store::connect(&db.settings().database)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    w.fake.set_latency(GETTOKEN, Duration::from_millis(300));
    let a = WecomClient::new(&w.settings, Some(store.clone()), Clock::default()).unwrap();
    let b = if db.is_postgres() {
        WecomClient::new(&w.settings, Some(store.clone()), Clock::default()).unwrap()
    } else {
        a.clone()
    };
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let client = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { client.tag_library().await })
        })
        .collect();
    for c in callers {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        w.fake.calls_to(GETTOKEN).len(),
        1,
        "one gettoken served every caller"
    );
    assert_eq!(w.fake.calls_to(TAG_LIST).len(), 4);
    let credential = siyu::wecom::client::Credential::Contact;
    let same =
        a.access_token(credential).await.unwrap() == b.access_token(credential).await.unwrap();
    assert!(same, "both hold the same token");
}
