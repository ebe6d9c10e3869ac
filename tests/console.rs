//! The console over plain HTTP (the browser tests drive it in Chromium): sessions by cookie,
//! CSRF tokens on every form, failed sign-ins slowed and counted, idle expiry, roles through the
//! API, every change in the audit log as made via the console, and every page rendering.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use siyu::app::users::{self, Role};

/// A browser without a browser: keeps the console's cookies and the last page's CSRF token.
struct Console {
    base: String,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
    /// The `Set-Cookie` lines of the last answer, as sent.
    last_set_cookie: Vec<String>,
}

/// An answer: status, where it redirects, the body.
struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Page {
    /// The hidden CSRF field of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in the page:\n{}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Console {
    fn new(app: &siyu::App) -> Console {
        Console {
            base: format!("http://{}", app.addr()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
            last_set_cookie: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = if self.cookies.is_empty() {
            request
        } else {
            request.header(COOKIE, self.cookie_header())
        };
        let response = request.send().await.unwrap();
        self.last_set_cookie.clear();
        for v in response.headers().get_all(SET_COOKIE) {
            let line = v.to_str().unwrap().to_string();
            let pair = line.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !v.is_empty() && !line.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), v.to_string()));
            }
            self.last_set_cookie.push(line);
        }
        Page {
            status: response.status(),
            location: response
                .headers()
                .get(LOCATION)
                .map(|l| l.to_str().unwrap().to_string()),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }

    /// Opens the sign-in form and sends it (as a browser that has no session yet).
    async fn sign_in(&mut self, user: &str, password: &str) -> Page {
        self.cookies.retain(|(k, _)| k != "siyu_session");
        let form = self.get("/console/login").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let csrf = form.csrf();
        self.post(
            "/console/login",
            &[("user", user), ("password", password), ("csrf", &csrf)],
        )
        .await
    }
}

const PASSWORD: &str = "a long enough secret";

async fn with_user(app: &siyu::App, name: &str, role: Role) {
    users::add(
        app.services(),
        &users::Principal::cli(),
        name,
        role,
        PASSWORD,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_a_safe_cookie_that_ends_when_idle_or_signed_out() {
    let db = common::TestDb::new().await;
    let app = common::start(db.settings()).await;
    with_user(&app, "ada", Role::Admin).await;
    let mut c = Console::new(&app);

    // Without a session every page goes to the sign-in, and comes back after.
    let page = c.get("/console/tiers").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location.as_deref(),
        Some("/console/login?next=%2Fconsole%2Ftiers")
    );
    let form = c.get("/console/login?next=%2Fconsole%2Ftiers").await;
    let csrf = form.csrf();
    let signed = c
        .post(
            "/console/login",
            &[
                ("user", "ada"),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("next", "/console/tiers"),
            ],
        )
        .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    assert_eq!(signed.location.as_deref(), Some("/console/tiers"));
    let session_cookie = c
        .last_set_cookie
        .iter()
        .find(|l| l.starts_with("siyu_session="))
        .expect("a session cookie")
        .clone();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/console"] {
        assert!(session_cookie.contains(flag), "{session_cookie}");
    }
    assert!(
        !session_cookie.contains("Secure"),
        "not Secure on plain http: {session_cookie}"
    );
    let page = c.get("/console/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"<span id="whoami">ada</span>"#));

    // Used within the idle time, the session lives on; left idle longer, it is over.
    app.clock().advance(20 * 60_000);
    assert_eq!(c.get("/console/").await.status, StatusCode::OK);
    app.clock().advance(20 * 60_000);
    assert_eq!(c.get("/console/").await.status, StatusCode::OK);
    app.clock().advance(31 * 60_000);
    let page = c.get("/console/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "idle for 31 minutes");
    assert_eq!(page.location.as_deref(), Some("/console/login"));

    // Signing out ends the session at the server: the old cookie no longer works.
    c.sign_in("ada", PASSWORD).await;
    let stolen = c.cookies.clone();
    let page = c.get("/console/").await;
    let csrf = page.csrf();
    let out = c.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.location.as_deref(), Some("/console/login"));
    c.cookies = stolen;
    assert_eq!(c.get("/console/").await.status, StatusCode::SEE_OTHER);

    // A new password signs the user out of every browser.
    c.sign_in("ada", PASSWORD).await;
    assert_eq!(c.get("/console/").await.status, StatusCode::OK);
    users::set_password(
        app.services(),
        &users::Principal::cli(),
        "ada",
        "another long one",
    )
    .await
    .unwrap();
    assert_eq!(c.get("/console/").await.status, StatusCode::SEE_OTHER);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_https_the_cookie_is_secure() {
    let db = common::TestDb::new().await;
    let mut settings = db.settings();
    settings.server.public_url = "https://siyu.example.com".into();
    let app = common::start(settings).await;
    with_user(&app, "ada", Role::Admin).await;
    let mut c = Console::new(&app);
    c.sign_in("ada", PASSWORD).await;
    let line = c
        .last_set_cookie
        .iter()
        .find(|l| l.starts_with("siyu_session="))
        .unwrap();
    assert!(line.contains("; Secure"), "{line}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_refused_slowed_and_counted() {
    let db = common::TestDb::new().await;
    let app = common::start(db.settings()).await;
    with_user(&app, "ada", Role::Admin).await;
    let mut c = Console::new(&app);

    let page = c.sign_in("ada", "not the password").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("用户名或密码错误"), "{}", page.body);
    assert!(!c.cookies.iter().any(|(k, _)| k == "siyu_session"));
    // An unknown name gets the same answer.
    let page = c.sign_in("nobody", PASSWORD).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("用户名或密码错误"));

    // Five in a row are free; then even the right password must wait, longer each time.
    for _ in 0..4 {
        assert_eq!(
            c.sign_in("ada", "wrong again").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let page = c.sign_in("ada", PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(page.body.contains("秒后再试"), "{}", page.body);
    app.clock().advance(1_100);
    let page = c.sign_in("ada", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "after the wait");
    // A sign-in that worked starts the count again.
    assert_eq!(
        c.sign_in("ada", "wrong").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.sign_in("ada", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );

    let metrics = reqwest::get(format!("http://{}/metrics", app.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("siyu_console_sign_in_failures_total 7"),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_its_csrf_token_changes_nothing() {
    let db = common::TestDb::new().await;
    let app = common::start(db.settings()).await;
    with_user(&app, "ada", Role::Admin).await;
    let mut c = Console::new(&app);

    // The sign-in form's token must match its cookie.
    let mut stranger = Console::new(&app);
    let page = stranger
        .post(
            "/console/login",
            &[("user", "ada"), ("password", PASSWORD), ("csrf", "guess")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(!stranger.cookies.iter().any(|(k, _)| k == "siyu_session"));

    c.sign_in("ada", PASSWORD).await;
    let form = [
        ("code", "douyin"),
        ("name", "抖音"),
        ("staff", "zhangsan"),
        ("tags", "短视频"),
    ];
    let page = c.post("/console/channels", &form).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("CSRF"), "{}", page.body);
    let mut wrong = form.to_vec();
    wrong.push(("csrf", "0000"));
    assert_eq!(
        c.post("/console/channels", &wrong).await.status,
        StatusCode::FORBIDDEN
    );
    // Sign-out is a form too.
    assert_eq!(
        c.post("/console/logout", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(app.store().channels().await.unwrap().is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_go_through_the_api_with_its_roles_and_its_audit_log() {
    let w = common::world::world().await;
    with_user(&w.app, "ada", Role::Admin).await;
    with_user(&w.app, "watcher", Role::Viewer).await;

    // A viewer reads, and is refused a change with the reason.
    let mut viewer = Console::new(&w.app);
    viewer.sign_in("watcher", PASSWORD).await;
    let page = viewer.get("/console/channels").await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.csrf();
    let form = |csrf: &str| {
        vec![
            ("code".to_string(), "douyin".to_string()),
            ("name".into(), "抖音".into()),
            ("staff".into(), "zhangsan, lisi".into()),
            ("tags".into(), "短视频".into()),
            ("welcome".into(), "欢迎{{ name }}！".into()),
            ("csrf".into(), csrf.to_string()),
        ]
    };
    let pairs = form(&csrf);
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let page = viewer.post("/console/channels", &refs).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let back = viewer.get(page.location.as_deref().unwrap()).await;
    assert!(
        back.body
            .contains("watcher is a viewer; this needs an operator"),
        "{}",
        back.body
    );
    assert!(w.app.store().channels().await.unwrap().is_empty());

    // An admin's change is made, its QR image served, and recorded as via the console.
    let mut admin = Console::new(&w.app);
    admin.sign_in("ada", PASSWORD).await;
    let csrf = admin.get("/console/channels").await.csrf();
    let pairs = form(&csrf);
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let page = admin.post("/console/channels", &refs).await;
    assert_eq!(
        page.location.as_deref(),
        Some("/console/channels?ok=%E6%B8%A0%E9%81%93+douyin+%E5%B7%B2%E5%88%9B%E5%BB%BA")
    );
    let list = admin.get(page.location.as_deref().unwrap()).await;
    assert!(list.body.contains("渠道 douyin 已创建"), "{}", list.body);
    assert!(
        list.body
            .contains(r#"src="/console/channels/douyin/qr.png""#)
    );
    let qr = admin
        .http
        .get(format!("{}/console/channels/douyin/qr.png", admin.base))
        .header(COOKIE, admin.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(qr.status(), StatusCode::OK);
    assert_eq!(qr.headers()["content-type"], "image/png");
    assert!(qr.bytes().await.unwrap().starts_with(b"\x89PNG"));

    let records = w
        .app
        .store()
        .audit(&siyu::store::audit::AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let made = records
        .iter()
        .find(|r| r.what == "POST /api/v1/channels" && r.status == 201)
        .expect("the create is in the audit log");
    assert_eq!((made.who.as_str(), made.via.as_str()), ("ada", "console"));
    let refused = records
        .iter()
        .find(|r| r.what == "POST /api/v1/channels" && r.status == 403);
    assert!(refused.is_none(), "a refused role is not a change");
    assert!(
        common::wait_idle(&w.app, Duration::from_secs(10)).await,
        "the channel's jobs finish"
    );
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_with_data_for_each_role() {
    let w = common::world::world().await;
    w.channels().await;
    let added = w.add("douyin", "小红").await;
    assert!(w.settled("zhangsan", &added.external_userid, 2).await);
    // A campaign, so its page has something to show.
    let (status, campaign) = w
        .post(
            "/campaigns",
            serde_json::json!({ "kind": "message", "name": "双十二", "audience": { "tiers": ["member"] },
                "content": { "text": "你好" }, "schedule": { "at": "2099-01-01T10:00:00+08:00" } }),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    with_user(&w.app, "ada", Role::Admin).await;
    with_user(&w.app, "watcher", Role::Viewer).await;
    let customer = format!("/console/customers/{}", added.external_userid);
    let campaign = format!("/console/campaigns/{}", campaign["id"]);
    let pages = [
        "/console/",
        "/console/channels",
        "/console/channels/douyin",
        customer.as_str(),
        "/console/tiers",
        "/console/groups",
        "/console/campaigns",
        campaign.as_str(),
    ];
    let jobs = [
        "/console/jobs",
        "/console/jobs?state=done",
        "/console/jobs?event_status=done",
    ];
    for (user, extra) in [
        ("ada", vec!["/console/audit", "/console/users"]),
        ("watcher", vec![]),
    ] {
        let mut c = Console::new(&w.app);
        c.sign_in(user, PASSWORD).await;
        for path in pages.iter().chain(&jobs).copied().chain(extra) {
            let page = c.get(path).await;
            assert_eq!(page.status, StatusCode::OK, "{user} {path}:\n{}", page.body);
            assert!(
                !page.body.contains("出错了"),
                "{user} {path}:\n{}",
                page.body
            );
            assert!(
                page.body
                    .contains(&format!(r#"<span id="whoami">{user}</span>"#))
            );
        }
    }
    // The dashboard's charts are drawn inline, from the data.
    let mut c = Console::new(&w.app);
    c.sign_in("ada", PASSWORD).await;
    let page = c.get("/console/").await;
    assert_eq!(page.body.matches("<svg").count(), 4, "{}", page.body);
    assert!(
        page.body.contains("<title>客户等级</title>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"<b id="customers-total">1</b>"#),
        "{}",
        page.body
    );
    let p50 = page.body.split(r#"<b id="welcome-p50">"#).nth(1).unwrap();
    let p50 = &p50[..p50.find('<').unwrap()];
    assert!(
        p50.ends_with("毫秒") || p50.ends_with(" 秒"),
        "the welcome's latency: {p50}"
    );

    // The audit log and the users are for admins: a viewer is told so, on a page.
    let mut c = Console::new(&w.app);
    c.sign_in("watcher", PASSWORD).await;
    for path in ["/console/audit", "/console/users"] {
        let page = c.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains("this needs an admin"), "{}", page.body);
    }
    w.app.shutdown().await;
}
