//! The web console in a real browser: headless Chromium through WebDriver against the real
//! server, a screenshot at each step (`$CARGO_TARGET_DIR/screenshots/<test>/`).
//!
//! Skipped, with a line on stderr saying so, where chromium and chromedriver are not installed;
//! CI sets `SIYU_BROWSER_TESTS=require` so there they must run. nextest runs this binary's tests
//! one at a time (`.config/nextest.toml`): each starts a Chromium of its own.

mod common;

use common::TestDb;
use common::browser::{Browser, url_path};
use siyu::App;
use siyu::app::users::{self, Role};

const NAME: &str = "ada";
const PASSWORD: &str = "correct horse battery";

/// A browser and a server with one admin, [`NAME`]; `None` when there is no browser here.
/// The browser is declared first so it closes before the server stops.
struct Console {
    browser: Browser,
    app: App,
    _db: TestDb,
}

impl Console {
    async fn start() -> Option<Console> {
        let browser = Browser::start().await?;
        let db = TestDb::new().await;
        let app = common::start(db.settings()).await;
        users::add(
            app.services(),
            &users::Principal::cli(),
            NAME,
            Role::Admin,
            PASSWORD,
        )
        .await
        .expect("add the admin");
        Some(Console {
            browser,
            app,
            _db: db,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.addr())
    }

    /// Fills the sign-in form on the page the browser shows and submits it.
    async fn submit_login(&self, user: &str, password: &str) {
        self.browser.fill("#user", user).await;
        self.browser.fill("#password", password).await;
        self.browser.click("#sign-in").await;
    }
}

/// The harness itself, on a page that needs no console: the OpenAPI document as the browser
/// shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_reads_a_page_of_the_server() {
    let Some(mut c) = Console::start().await else {
        return;
    };
    let url = c.url("/api/v1/openapi.json");
    c.browser.goto(&url).await;
    assert_eq!(c.browser.url().await, url);
    let body = c.browser.wait_for_text("body", "\"openapi\"").await;
    let doc: serde_json::Value =
        serde_json::from_str(&body).expect("the page is the JSON document");
    assert!(doc["paths"]["/api/v1/openapi.json"].is_object(), "{doc}");
    assert!(c.browser.source().await.contains("/api/v1/openapi.json"));
    let shot = c.browser.screenshot("openapi").await;
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        shot.display()
    );
    assert!(
        shot.ends_with("the_browser_reads_a_page_of_the_server/01-openapi.png"),
        "{}",
        shot.display()
    );
}

/// The harness's form helpers (typing, replacing, choosing an option, waiting for text that a
/// script writes later), on a page of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_fills_forms() {
    let Some(mut c) = Console::start().await else {
        return;
    };
    let page = r#"<!doctype html><meta charset="utf-8"><form>
        <input id="name" value="old">
        <select id="tier"><option value="member">会员</option><option value="partner">合伙人</option></select>
        <button type="button" id="go">go</button></form><p id="out"></p>
        <script>
        document.getElementById('go').onclick = () => setTimeout(() => {
          document.getElementById('out').textContent =
            document.getElementById('name').value + '/' + document.getElementById('tier').value;
        }, 300);
        </script>"#;
    c.browser
        .goto(&format!("data:text/html;charset=utf-8,{}", percent(page)))
        .await;
    c.browser.fill("#name", "新名字").await;
    c.browser.select("#tier", "partner").await;
    let name = c.browser.find("#name").await;
    assert_eq!(name.property("value").await, "新名字");
    assert_eq!(name.attribute("value").await.as_deref(), Some("old"));
    c.browser.click("#go").await;
    assert_eq!(c.browser.wait_for_text("#out", "/").await, "新名字/partner");
    assert_eq!(
        c.browser
            .execute("return document.title.length", vec![])
            .await,
        0
    );
    assert!(!c.browser.has("#nothing").await);
    c.browser.screenshot("filled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_out() {
    let Some(mut c) = Console::start().await else {
        return;
    };
    c.browser.goto(&c.url("/console/login")).await;
    let form = c.browser.find("form[action=\"/console/login\"]").await;
    assert_eq!(form.attribute("method").await.as_deref(), Some("post"));
    let csrf = c.browser.find("input[name=\"csrf\"]").await;
    assert_eq!(csrf.attribute("type").await.as_deref(), Some("hidden"));
    assert!(
        !csrf.attribute("value").await.unwrap_or_default().is_empty(),
        "the form carries a CSRF token"
    );
    assert_eq!(c.browser.text("#sign-in").await, "登录");
    c.browser.screenshot("login").await;

    c.browser.fill("#user", NAME).await;
    c.browser.fill("#password", PASSWORD).await;
    c.browser.screenshot("filled").await;
    c.browser.click("#sign-in").await;
    c.browser.wait_for_path("/console/").await;
    assert_eq!(c.browser.wait_for_text("#whoami", NAME).await, NAME);
    c.browser.screenshot("signed-in").await;

    c.browser.click("#sign-out").await;
    c.browser.wait_for_path("/console/login").await;
    c.browser.find("#sign-in").await;
    assert!(!c.browser.has("#whoami").await);
    c.browser.screenshot("signed-out").await;

    // Signed out means the session is gone, not only that the page changed.
    c.browser.goto(&c.url("/console/")).await;
    c.browser.wait_for_path("/console/login").await;
    c.browser.screenshot("after-sign-out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused() {
    let Some(mut c) = Console::start().await else {
        return;
    };
    c.browser.goto(&c.url("/console/login")).await;
    c.submit_login(NAME, "not the password").await;
    c.browser.wait_for_text("#error", "用户名或密码错误").await;
    assert_eq!(url_path(&c.browser.url().await), "/console/login");
    assert!(!c.browser.has("#whoami").await);
    c.browser.screenshot("wrong-password").await;

    // A user who does not exist gets the same answer: the form tells nobody which names exist.
    c.submit_login("nobody", PASSWORD).await;
    c.browser.wait_for_text("#error", "用户名或密码错误").await;
    assert!(!c.browser.has("#whoami").await);
    c.browser.screenshot("unknown-user").await;

    // The form shown again works (its CSRF token is a live one).
    c.submit_login(NAME, PASSWORD).await;
    c.browser.wait_for_path("/console/").await;
    c.browser.wait_for_text("#whoami", NAME).await;
    c.browser.screenshot("then-right").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_without_a_session_goes_to_login() {
    let Some(mut c) = Console::start().await else {
        return;
    };
    c.browser.goto(&c.url("/console/")).await;
    c.browser.wait_for_path("/console/login").await;
    c.browser.find("#sign-in").await;
    assert!(!c.browser.has("#whoami").await);
    c.browser.screenshot("redirected").await;
}

/// `text` percent-encoded for a `data:` URL (everything but unreserved ASCII).
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
