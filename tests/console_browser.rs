//! The web console in a real browser: headless Chromium through WebDriver against the real
//! server, a screenshot at each step (`$CARGO_TARGET_DIR/screenshots/<test>/`).
//!
//! Skipped, with a line on stderr saying so, where chromium and chromedriver are not installed;
//! CI sets `SIYU_BROWSER_TESTS=require` so there they must run. nextest runs this binary's tests
//! one at a time (`.config/nextest.toml`): each starts a Chromium of its own.

mod common;

use std::time::Duration;

use common::browser::{Browser, WAIT, url_path};
use common::world::{World, world};
use common::{TestDb, eventually};
use serde_json::{Value, json};
use siyu::App;
use siyu::app::users::{self, Role};
use siyu::fake::Failure;

const NAME: &str = "ada";
const PASSWORD: &str = "correct horse battery";

const DAY_MS: i64 = 86_400_000;

/// The WeCom call that sends a new customer's welcome: failed with an errcode WeCom does not
/// ask to retry, its job fails for good at once.
const WELCOME: &str = "/cgi-bin/externalcontact/send_welcome_msg";

/// What the browser talks to: a server on its own, or one wired to the fake WeCom (which the
/// pages showing QR codes, tags and welcomes need).
enum Server {
    Alone { app: App, _db: TestDb },
    World(World),
}

/// A browser and a server with one admin, [`NAME`]; `None` when there is no browser here.
/// The browser is declared first so it closes before the server stops.
struct Console {
    browser: Browser,
    server: Server,
}

impl Console {
    /// On a server without WeCom: for the pages that need none.
    async fn start() -> Option<Console> {
        let browser = Browser::start().await?;
        let db = TestDb::new().await;
        let app = common::start(db.settings()).await;
        Some(Console::with(browser, Server::Alone { app, _db: db }).await)
    }

    /// On a [`world`]: siyu wired to the fake WeCom, which is served, so a channel's QR code
    /// loads and customers can add through it.
    async fn on_world() -> Option<Console> {
        let browser = Browser::start().await?;
        let w = world().await;
        Some(Console::with(browser, Server::World(w)).await)
    }

    async fn with(browser: Browser, server: Server) -> Console {
        let c = Console { browser, server };
        c.add_user(NAME, Role::Admin).await;
        c
    }

    fn app(&self) -> &App {
        match &self.server {
            Server::Alone { app, .. } => app,
            Server::World(w) => &w.app,
        }
    }

    fn world(&self) -> &World {
        match &self.server {
            Server::World(w) => w,
            Server::Alone { .. } => panic!("this console has no fake WeCom: use Console::on_world"),
        }
    }

    async fn add_user(&self, name: &str, role: Role) {
        users::add(
            self.app().services(),
            &users::Principal::cli(),
            name,
            role,
            PASSWORD,
        )
        .await
        .unwrap_or_else(|e| panic!("add the user {name}: {e}"));
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app().addr())
    }

    /// Fills the sign-in form on the page the browser shows and submits it.
    async fn submit_login(&self, user: &str, password: &str) {
        self.browser.fill("#user", user).await;
        self.browser.fill("#password", password).await;
        self.browser.click("#sign-in").await;
    }

    /// Signs `user` (added with [`PASSWORD`]) in and waits for the overview.
    async fn sign_in(&self, user: &str) {
        self.browser.goto(&self.url("/console/login")).await;
        self.submit_login(user, PASSWORD).await;
        self.browser.wait_for_path("/console/").await;
        self.browser.wait_for_text("#whoami", user).await;
    }

    /// Waits until the browser's URL satisfies `ok` (a form sent to the page it is on changes
    /// only the query, which [`Browser::wait_for_path`] cannot see); answers the URL.
    async fn wait_for_url(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let reached = eventually(WAIT, || async { ok(&self.browser.url().await) }).await;
        let url = self.browser.url().await;
        assert!(
            reached,
            "the browser is on {url}, not {what}, after {WAIT:?}"
        );
        url
    }

    /// Fills the new-channel form on 渠道 for the channel `code` (staff zhangsan and lisi, the
    /// extra tag 短视频 that [`World::add`] expects of douyin) and submits it.
    async fn submit_new_channel(&mut self, code: &str) {
        self.browser.goto(&self.url("/console/channels")).await;
        self.browser.find("form#new-channel").await;
        self.browser.fill("#code", code).await;
        self.browser.fill("#name", "抖音").await;
        self.browser.fill("#staff", "zhangsan, lisi").await;
        self.browser.fill("#tags", "短视频").await;
        self.browser
            .fill("#welcome", "{{ name }}，欢迎从抖音来！")
            .await;
        self.browser.screenshot("channel-form").await;
        self.browser.click("#create-channel").await;
    }

    /// Creates the channel `code` through the form and sees it said so.
    async fn create_channel(&mut self, code: &str) {
        self.submit_new_channel(code).await;
        self.browser
            .wait_for_text("#ok", &format!("渠道 {code} 已创建"))
            .await;
        self.browser.wait_for_path("/console/channels").await;
        self.browser.screenshot("channel-created").await;
    }

    /// Waits for the image `css` to have loaded; answers its natural width.
    async fn image_width(&self, css: &str) -> i64 {
        let script = "const i = document.querySelector(arguments[0]); \
                      return i && i.complete ? i.naturalWidth : -1;";
        let width = || async {
            self.browser
                .execute(script, vec![json!(css)])
                .await
                .as_i64()
                .unwrap_or(-1)
        };
        eventually(WAIT, || async { width().await >= 0 }).await;
        width().await
    }

    /// On 等级: lowers partner's spend threshold from 2000 to 1000 yuan in the editor and sees
    /// the live dry run promote `ups` customers, then the form's preview (no script) say the
    /// same, with nothing saved by either; then saves the rules and sees them in force.
    async fn lower_partner_threshold(&mut self, ups: u64) {
        let w = self.world();
        let rules_before = w.get("/tiers").await;
        let summary_before = w.get("/tiers/summary").await;
        assert_eq!(partner_spend_min(&rules_before), 2000.0, "{rules_before}");

        self.browser.goto(&self.url("/console/tiers")).await;
        self.browser.find("textarea#rules").await;
        self.browser.screenshot("tiers").await;
        let text = self
            .browser
            .execute("return document.getElementById('rules').value", vec![])
            .await;
        let mut tiers: Value =
            serde_json::from_str(text.as_str().unwrap()).expect("the editor holds JSON");
        set_partner_spend_min(&mut tiers, 1000);
        let changed = serde_json::to_string_pretty(&tiers).unwrap();
        // As typing would: the value changes, then the editor's `input` listener runs.
        self.browser
            .execute(
                "const e = document.getElementById('rules'); e.value = arguments[0]; \
                 e.dispatchEvent(new Event('input', { bubbles: true }));",
                vec![json!(changed)],
            )
            .await;
        let summary = self
            .browser
            .wait_for_text("#preview-summary", &format!("，{ups} 位升级，"))
            .await;
        assert!(summary.contains("，0 位降级"), "{summary}");
        // Each promotion says the rule that decided it.
        let why = "(≥ 1000.00)";
        self.browser.wait_for_text("#preview-body table", why).await;
        self.browser.screenshot("live-dry-run").await;
        self.assert_unchanged(&rules_before, &summary_before).await;

        // Without the script: the form's preview shows the same and keeps the text.
        self.browser.click("#preview-rules").await;
        self.browser.wait_for_path("/console/tiers/preview").await;
        assert_eq!(self.browser.text("#preview-up").await, ups.to_string());
        assert_eq!(self.browser.text("#preview-down").await, "0");
        assert!(self.browser.text("#preview-body table").await.contains(why));
        let kept = self
            .browser
            .execute("return document.getElementById('rules').value", vec![])
            .await;
        let kept: Value = serde_json::from_str(kept.as_str().unwrap()).unwrap();
        assert_eq!(kept, tiers, "the preview page kept the edited rules");
        self.browser.screenshot("form-preview").await;
        self.assert_unchanged(&rules_before, &summary_before).await;

        self.browser.click("#save-rules").await;
        self.browser.wait_for_text("#ok", "等级规则已保存").await;
        self.browser.wait_for_path("/console/tiers").await;
        self.browser.screenshot("rules-saved").await;
        let after = self.world().get("/tiers").await;
        assert_eq!(partner_spend_min(&after), 1000.0, "{after}");
        assert_eq!(after["changes"][0]["changed_by"], NAME, "{after}");
        // The page's history of changes names who made this one.
        let history = self.browser.text("#rules-history").await;
        assert!(history.contains(NAME), "{history}");
    }

    /// A dry run leaves the rules and every customer's tier as they were.
    async fn assert_unchanged(&self, rules: &Value, summary: &Value) {
        let w = self.world();
        assert_eq!(&w.get("/tiers").await, rules, "a dry run saved the rules");
        assert_eq!(
            &w.get("/tiers/summary").await,
            summary,
            "a dry run changed a customer's tier"
        );
    }

    /// The DOM `value` of the field `css` (what it holds now, not its attribute).
    async fn value(&self, css: &str) -> Value {
        self.browser.find(css).await.property("value").await
    }

    /// Finds the customer `name` through 客户's search, opens their page and pins them to
    /// `tier`; sees the pin on the page and through the API.
    async fn pin(&mut self, name: &str, external_userid: &str, tier: &str) {
        self.browser.goto(&self.url("/console/customers")).await;
        self.browser.fill("#q", name).await;
        self.browser.click("#search-customers").await;
        self.wait_for_url("the search's answer", |u| u.contains("q="))
            .await;
        self.browser.wait_for_text("table#customers", name).await;
        self.browser.screenshot("customer-found").await;
        let page = format!("/console/customers/{}", percent(external_userid));
        self.browser
            .click(&format!("#customers a[href=\"{page}\"]"))
            .await;
        self.browser.wait_for_path(&page).await;
        self.browser.find("form#pin-form").await;
        self.browser.select("select#pin-tier", tier).await;
        self.browser.fill("#pin-reason", "线下大客户").await;
        self.browser.screenshot("pin-form").await;
        self.browser.click("#pin-save").await;
        self.browser.wait_for_text("#ok", "已固定等级").await;
        let pin = self.browser.wait_for_text("#pin", tier).await;
        assert!(pin.contains("线下大客户"), "{pin}");
        assert_eq!(self.browser.text("#tier").await, tier);
        self.browser.screenshot("pinned").await;
        let view = self
            .world()
            .get(&format!("/customers/{external_userid}"))
            .await;
        assert_eq!(view["customer"]["tier"], tier, "{view}");
        assert_eq!(view["pin"]["tier"], tier, "{view}");
    }

    /// Composes a message to the members on 群发, previews its audience (`audience` customers),
    /// schedules it a day ahead and sees it scheduled and listed; answers its id.
    async fn schedule_campaign(&mut self, name: &str, audience: u64) -> i64 {
        let at = a_day_ahead(self.app());
        self.browser.goto(&self.url("/console/campaigns")).await;
        self.browser.find("form#compose").await;
        self.browser.select("select#c-kind", "message").await;
        self.browser.fill("#c-name", name).await;
        let member = self.browser.find("#c-tier-member").await;
        if member.property("checked").await != json!(true) {
            member.click().await;
        }
        self.browser
            .fill("#c-text", "双十二会员专享，全场八折")
            .await;
        // A datetime-local takes no typing that is the same in every locale: set its value.
        self.browser
            .execute(
                "document.getElementById('c-at').value = arguments[0];",
                vec![json!(at)],
            )
            .await;
        self.browser.screenshot("composed").await;

        self.browser.click("#preview-campaign").await;
        self.browser
            .wait_for_path("/console/campaigns/preview")
            .await;
        let size = self.browser.wait_for_text("#audience-size", "位客户").await;
        assert!(size.contains(&format!("共 {audience} 位客户")), "{size}");
        self.browser.screenshot("audience").await;
        // The preview page keeps what was composed.
        assert_eq!(self.value("#c-kind").await, "message");
        assert_eq!(self.value("#c-name").await, name);
        assert_eq!(self.value("#c-at").await, at.as_str());
        assert_eq!(self.value("#c-text").await, "双十二会员专享，全场八折");
        assert_eq!(
            self.browser
                .find("#c-tier-member")
                .await
                .property("checked")
                .await,
            true
        );

        self.browser.click("#schedule-campaign").await;
        let url = self
            .wait_for_url("a campaign's page", |u| campaign_id(u).is_some())
            .await;
        let id = campaign_id(&url).unwrap();
        self.browser.wait_for_text("#ok", "已排期").await;
        assert_eq!(self.browser.text("#status").await, "scheduled");
        self.browser.screenshot("scheduled").await;

        self.browser.goto(&self.url("/console/campaigns")).await;
        self.browser.wait_for_text("table#campaigns", name).await;
        let link = format!("table#campaigns a[href=\"/console/campaigns/{id}\"]");
        assert_eq!(self.browser.text(&link).await, name);
        self.browser.screenshot("listed").await;
        id
    }

    /// Retries the failed job `id` from 事件与任务 and waits for it to run to done.
    async fn retry(&mut self, id: i64) {
        self.browser
            .goto(&self.url("/console/jobs?state=failed"))
            .await;
        let row = format!("table#jobs tr[data-job=\"{id}\"]");
        assert_eq!(
            self.browser.text(&format!("{row} td.state")).await,
            "failed"
        );
        let error = self.browser.text(&format!("{row} td.error")).await;
        assert!(error.contains("60011"), "{error}");
        self.browser.screenshot("failed-job").await;
        self.browser.click(&format!("button#retry-{id}")).await;
        self.browser.wait_for_text("#ok", "已重新排队").await;
        self.browser.wait_for_path("/console/jobs").await;
        self.browser.screenshot("retried").await;
        let store = self.app().store();
        let done = eventually(Duration::from_secs(10), || async {
            store
                .job(id)
                .await
                .unwrap()
                .is_some_and(|j| j.state == "done")
        })
        .await;
        let job = store.job(id).await.unwrap();
        assert!(done, "the retried job did not run: {job:?}");
    }
}

/// Partner's spend threshold in the rules as `GET /api/v1/tiers` answers them.
fn partner_spend_min(rules: &Value) -> f64 {
    let partner = rules["tiers"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["code"] == "partner"))
        .unwrap_or_else(|| panic!("no partner tier in {rules}"));
    let spend = partner["promote"]["any"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["metric"] == "spend"))
        .unwrap_or_else(|| panic!("no spend condition for partner in {partner}"));
    match &spend["min"] {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("min {other}"),
    }
}

/// Sets partner's spend threshold in the editor's list of tiers.
fn set_partner_spend_min(tiers: &mut Value, yuan: i64) {
    let partner = tiers
        .as_array_mut()
        .and_then(|t| t.iter_mut().find(|t| t["code"] == "partner"))
        .unwrap_or_else(|| panic!("no partner tier in the editor"));
    let spend = partner["promote"]["any"]
        .as_array_mut()
        .and_then(|c| c.iter_mut().find(|c| c["metric"] == "spend"))
        .unwrap_or_else(|| panic!("no spend condition for partner in the editor"));
    spend["min"] = json!(yuan);
}

/// The shop reports an order of `yuan` by the customer yesterday.
async fn order(w: &World, external_userid: &str, yuan: u32, id: &str) {
    let at = chrono::DateTime::from_timestamp_millis(w.app.clock().now_ms() - DAY_MS)
        .unwrap()
        .to_rfc3339();
    let (status, body) = w
        .post(
            "/activity",
            json!({ "items": [
                {"kind": "order", "customer": external_userid, "amount": yuan, "at": at, "id": id}] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
}

/// A day from the app's now, as a `datetime-local` input holds it, in siyu's time zone.
fn a_day_ahead(app: &App) -> String {
    let zone = app.services().settings.timezone().unwrap();
    chrono::DateTime::from_timestamp_millis(app.clock().now_ms() + DAY_MS)
        .unwrap()
        .with_timezone(&zone)
        .format("%Y-%m-%dT%H:%M")
        .to_string()
}

/// The id in a campaign's page URL (`/console/campaigns/12?ok=...`).
fn campaign_id(url: &str) -> Option<i64> {
    url_path(url)
        .strip_prefix("/console/campaigns/")
        .and_then(|id| id.parse().ok())
}

/// Makes the next welcome WeCom is asked to send fail for good.
fn fail_next_welcome(w: &World) {
    w.fake.fail_next(WELCOME, 1, Failure::Errcode(60011));
}

/// Waits for the welcome job that [`fail_next_welcome`] made fail for good; answers its id.
async fn failed_welcome(w: &World) -> i64 {
    let failed = || async {
        w.app
            .store()
            .jobs_of_kind("contact.welcome")
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.state == "failed")
    };
    let found = eventually(Duration::from_secs(10), || async {
        failed().await.is_some()
    })
    .await;
    assert!(found, "the welcome did not fail for good");
    assert!(common::wait_idle(&w.app, Duration::from_secs(10)).await);
    failed().await.unwrap().id
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_is_refused_an_edit() {
    let Some(mut c) = Console::on_world().await else {
        return;
    };
    c.add_user("watcher", Role::Viewer).await;
    c.sign_in("watcher").await;
    c.submit_new_channel("douyin").await;
    let error = c.browser.wait_for_text("#error", "viewer").await;
    assert!(error.contains("this needs an operator"), "{error}");
    assert!(!c.browser.has("#ok").await);
    c.browser.screenshot("refused").await;
    assert!(c.app().store().channels().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_a_channel_and_see_its_qr() {
    let Some(mut c) = Console::on_world().await else {
        return;
    };
    c.sign_in(NAME).await;
    c.create_channel("douyin").await;
    let row = "tr[data-code=\"douyin\"]";
    assert!(
        c.image_width(&format!("{row} img.qr")).await > 0,
        "the QR code did not load"
    );
    assert!(c.browser.text(row).await.contains("zhangsan"));
    c.browser.screenshot("qr-in-list").await;
    let channels = c.app().store().channels().await.unwrap();
    assert_eq!(channels.len(), 1);

    c.browser
        .click(&format!("{row} a[href=\"/console/channels/douyin\"]"))
        .await;
    c.browser.wait_for_path("/console/channels/douyin").await;
    assert!(
        c.image_width("img#qr").await > 0,
        "the QR code did not load"
    );
    let download = c.browser.find("a#download-qr").await;
    assert_eq!(
        download.attribute("href").await.as_deref(),
        Some("/console/channels/douyin/qr.png?download=1")
    );
    c.browser.screenshot("channel-page").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_a_tier_rule_and_see_the_dry_run_before_saving() {
    let Some(mut c) = Console::on_world().await else {
        return;
    };
    let w = c.world();
    w.channels().await;
    let big = w.add("douyin", "王小明").await.external_userid;
    let small = w.add("xiaohongshu", "李雷").await.external_userid;
    w.add("douyin", "陈静").await;
    // Partner asks 2000 yuan in 90 days: 1500 promotes under a 1000 threshold, 500 does not.
    order(w, &big, 1500, "o-1").await;
    order(w, &small, 500, "o-2").await;
    c.sign_in(NAME).await;
    c.lower_partner_threshold(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_a_customer() {
    let Some(mut c) = Console::on_world().await else {
        return;
    };
    let w = c.world();
    w.channels().await;
    let a = w.add("douyin", "王小明").await.external_userid;
    w.add("douyin", "李雷").await;
    c.sign_in(NAME).await;
    c.pin("王小明", &a, "partner").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_a_campaign_and_see_it_listed() {
    let Some(mut c) = Console::on_world().await else {
        return;
    };
    let w = c.world();
    w.channels().await;
    w.add("douyin", "王小明").await;
    c.sign_in(NAME).await;
    let id = c.schedule_campaign("双十二", 1).await;
    let campaign = c.world().get(&format!("/campaigns/{id}")).await;
    assert_eq!(campaign["status"], "scheduled", "{campaign}");
    assert_eq!(campaign["created_by"], NAME, "{campaign}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_a_failed_job() {
    let Some(mut c) = Console::on_world().await else {
        return;
    };
    let w = c.world();
    w.channels().await;
    fail_next_welcome(w);
    w.add("douyin", "王小明").await;
    let id = failed_welcome(w).await;
    c.sign_in(NAME).await;
    c.retry(id).await;
    assert_eq!(c.world().fake.welcome_messages().len(), 1);
}

/// One row of 审计 as the page shows it.
#[derive(Debug, serde::Deserialize)]
struct AuditRow {
    who: String,
    via: String,
    what: String,
    status: String,
}

impl Console {
    /// The rows of `table#audit` on the page shown.
    async fn audit_rows(&self) -> Vec<AuditRow> {
        let rows = self
            .browser
            .execute(
                "return Array.from(document.querySelectorAll('#audit tr'))
                   .filter(r => r.querySelector('td.what code'))
                   .map(r => ({ who: r.cells[1].innerText, via: r.cells[2].innerText,
                                what: r.querySelector('td.what code').innerText,
                                status: r.cells[4].innerText }));",
                vec![],
            )
            .await;
        serde_json::from_value(rows).expect("the audit rows")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_in_the_audit_log() {
    let Some(mut c) = Console::on_world().await else {
        return;
    };
    c.sign_in(NAME).await;
    fail_next_welcome(c.world());
    c.create_channel("douyin").await;
    let a = c.world().add("douyin", "王小明").await.external_userid;
    order(c.world(), &a, 1500, "o-1").await;
    let campaign = c.schedule_campaign("双十二", 1).await;
    c.lower_partner_threshold(1).await;
    c.pin("王小明", &a, "senior_partner").await;
    let job = failed_welcome(c.world()).await;
    c.retry(job).await;

    c.browser.goto(&c.url("/console/audit")).await;
    c.browser.find("table#audit").await;
    c.browser.screenshot("audit").await;
    let rows = c.audit_rows().await;
    let pin = format!("PUT /api/v1/customers/{a}/pin");
    let retry = format!("POST /api/v1/jobs/{job}/retry");
    for what in [
        "POST /api/v1/channels",
        "PUT /api/v1/tiers",
        pin.as_str(),
        "POST /api/v1/campaigns",
        retry.as_str(),
    ] {
        let row = rows
            .iter()
            .find(|r| r.what == what && r.status.starts_with('2'))
            .unwrap_or_else(|| panic!("no {what} in the audit log: {rows:#?}"));
        assert_eq!(row.who.split_whitespace().next(), Some(NAME), "{row:?}");
        assert_eq!(row.via, "console", "{row:?}");
    }
    let campaign_page = c.world().get(&format!("/campaigns/{campaign}")).await;
    assert_eq!(campaign_page["status"], "scheduled");

    // The filter: ada's pins only.
    c.browser.fill("#who", NAME).await;
    c.browser.fill("#what", "/pin").await;
    c.browser.click("#filter-audit").await;
    c.wait_for_url("the filtered log", |u| u.contains("what="))
        .await;
    c.browser.find("table#audit").await;
    c.browser.screenshot("audit-filtered").await;
    let rows = c.audit_rows().await;
    assert!(rows.iter().any(|r| r.what == pin), "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r.what.contains("/pin") && r.who.starts_with(NAME)),
        "{rows:#?}"
    );
}

/// `text` percent-encoded (everything but unreserved ASCII), for a `data:` URL or a path
/// segment.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_fit_a_phone() {
    let Some(mut c) = Console::on_world().await else {
        return;
    };
    c.world().channels().await;
    let added = c.world().add("douyin", "小红").await;
    assert!(
        c.world()
            .settled("zhangsan", &added.external_userid, 2)
            .await
    );
    c.browser.set_window(390, 844).await;
    c.sign_in(NAME).await;
    let customer = format!("/console/customers/{}", added.external_userid);
    for (path, name) in [
        ("/console/", "overview"),
        ("/console/customers", "customers"),
        (customer.as_str(), "customer"),
        ("/console/channels", "channels"),
        ("/console/tiers", "tiers"),
        ("/console/campaigns", "campaigns"),
        ("/console/jobs", "jobs"),
    ] {
        c.browser.goto(&c.url(path)).await;
        c.browser.find("#whoami").await;
        // Wide tables scroll inside their own box; the page itself never scrolls sideways.
        let overflow = c
            .browser
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth",
                vec![],
            )
            .await;
        c.browser.screenshot(&format!("phone-{name}")).await;
        assert!(
            overflow.as_i64().unwrap_or(i64::MAX) <= 0,
            "{path} is {overflow} px wider than a phone"
        );
    }
}
