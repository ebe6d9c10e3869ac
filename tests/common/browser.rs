//! Headless Chromium driven through WebDriver, for the console's browser tests.
//!
//! A small client of our own over the W3C WebDriver protocol (JSON over HTTP) rather than a
//! crate: the handful of commands the tests need, with waiting built in, so a test reads as the
//! steps a person takes. Each [`Browser`] starts its own `chromedriver` on a free port and one
//! session in it; both go when it is dropped. Every [`Browser::screenshot`] lands in
//! `$CARGO_TARGET_DIR/screenshots/<test name>/<nn>-<name>.png` (CI keeps them as artifacts).
//!
//! Without `chromedriver` and `chromium` on `PATH`, [`Browser::start`] prints why and answers
//! `None`, so the tests pass on a machine without a browser; CI sets
//! `SIYU_BROWSER_TESTS=require` to make that a failure instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::binary::free_port;

/// How long [`Browser::find`] and the other waits look for what they want before giving up.
/// Pages come from a server on loopback; seconds are plenty even on a busy CI machine.
pub const WAIT: Duration = Duration::from_secs(5);

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(50);

/// How long chromedriver may take to answer `/status` ready, and Chromium to start a session.
const START: Duration = Duration::from_secs(30);

/// The key under which WebDriver hands out an element's id (W3C WebDriver §12.1).
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const INSTALL_HINT: &str = "(apt-get install chromium chromium-driver)";

/// An error answer from WebDriver: `{"value": {"error": ..., "message": ...}}`.
#[derive(Debug)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// The WebDriver endpoint of one session: what [`Browser`] and its [`Element`]s send commands to.
#[derive(Clone)]
struct Session {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    base: String,
}

impl Session {
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        send(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    async fn get(&self, path: &str) -> Result<Value, WdError> {
        self.command(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, WdError> {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }
}

/// One WebDriver command; answers its `value`, or the error WebDriver gave (a transport failure
/// is reported as one too, so callers have a single error to handle).
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WdError> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let transport = |e: reqwest::Error| WdError {
        error: "transport".into(),
        message: format!("{url}: {e}"),
    };
    let response = request.send().await.map_err(transport)?;
    let ok = response.status().is_success();
    let mut answer: Value = response.json().await.map_err(transport)?;
    let value = answer["value"].take();
    if ok {
        Ok(value)
    } else {
        Err(WdError {
            error: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        })
    }
}

/// A headless Chromium with one WebDriver session, and the chromedriver serving it.
pub struct Browser {
    session: Session,
    /// Killed on drop (after the session is deleted, which closes Chromium).
    _driver: Child,
    shots: PathBuf,
    shot_no: u32,
}

impl Browser {
    /// Starts chromedriver and a session in headless Chromium; `None` (after saying why on
    /// stderr) when either is not installed, unless `SIYU_BROWSER_TESTS=require`.
    pub async fn start() -> Option<Browser> {
        let (Some(driver), Some(chromium)) = (
            on_path(&["chromedriver"]),
            on_path(&["chromium", "chromium-browser"]),
        ) else {
            let missing = if on_path(&["chromedriver"]).is_none() {
                "chromedriver"
            } else {
                "chromium"
            };
            let why = format!("browser tests skipped: {missing} not found {INSTALL_HINT}");
            if std::env::var("SIYU_BROWSER_TESTS").as_deref() == Ok("require") {
                panic!("{why}; SIYU_BROWSER_TESTS=require");
            }
            // Past libtest's capture (which takes `eprintln!`), so `cargo test` shows it for a
            // test that passes; nextest shows it through `success-output` in its config.
            let _ = writeln!(std::io::stderr(), "{why}");
            return None;
        };

        let shots = screenshot_dir(&test_name());
        // A test's screenshots are the steps of its last run only: a rerun with fewer steps must
        // not leave older pictures beside the new ones.
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("create the screenshot directory");

        let port = free_port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                shots.join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        // Loopback only: a proxy in the environment must not see (or break) these requests.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(START)
            .build()
            .expect("http client");
        let root = format!("http://127.0.0.1:{port}");
        wait_ready(&http, &root).await;

        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                ],
            },
        }}});
        let created = send(
            &http,
            reqwest::Method::POST,
            &format!("{root}/session"),
            Some(capabilities),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver could not start Chromium ({}): {e}",
                chromium.display()
            )
        });
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {created}"));
        Some(Browser {
            session: Session {
                http,
                base: format!("{root}/session/{id}"),
            },
            _driver: driver,
            shots,
            shot_no: 0,
        })
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.session
            .post("/url", json!({"url": url}))
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        let url = self
            .session
            .get("/url")
            .await
            .unwrap_or_else(|e| panic!("read the URL: {e}"));
        url.as_str().unwrap_or_default().to_string()
    }

    /// The current page's source, as the browser serialises its DOM.
    pub async fn source(&self) -> String {
        let source = self
            .session
            .get("/source")
            .await
            .unwrap_or_else(|e| panic!("read the page source: {e}"));
        source.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let error = match self.try_find(css).await {
                Ok(element) => return element,
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "no element {css:?} on {} after {WAIT:?} (last answer: {error})",
                    self.url().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first element matching `css` now, without waiting.
    pub async fn try_find(&self, css: &str) -> Result<Element, WdError> {
        let found = self
            .session
            .post("/element", json!({"using": "css selector", "value": css}))
            .await?;
        Ok(Element::new(&self.session, css, &found))
    }

    /// Whether an element matches `css` now (no waiting: for asserting something is absent
    /// once the page that would have it has loaded).
    pub async fn has(&self, css: &str) -> bool {
        self.try_find(css).await.is_ok()
    }

    /// Types `text` into the field `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await;
        field.send_keys(text).await;
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await;
    }

    /// The visible text of the element `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await
    }

    /// Chooses the option whose `value` is `value` in the `<select>` `css`, by clicking it as a
    /// person would (so the page's change handlers run).
    pub async fn select(&self, css: &str, value: &str) {
        let select = self.find(css).await;
        let option = format!(
            "option[value=\"{}\"]",
            value.replace('\\', "\\\\").replace('"', "\\\"")
        );
        select.find(&option).await.click().await;
    }

    /// Waits up to [`WAIT`] until the element `css` exists and its text contains `needle`;
    /// answers the text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // The element may be replaced between finding and reading it (a page loading): look
            // again rather than fail.
            let seen = match self.try_find(css).await {
                Ok(element) => element.try_text().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Ok(text) = &seen
                && text.contains(needle)
            {
                return text.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{css:?} on {} did not show {needle:?} within {WAIT:?}; last seen: {seen:?}",
                    self.url().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to [`WAIT`] until the URL's path is `path` (after a click that navigates);
    /// answers the whole URL.
    pub async fn wait_for_path(&self, path: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let url = self.url().await;
            if url_path(&url) == path {
                return url;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("the browser is on {url}, not on path {path:?}, after {WAIT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sets the window's size in CSS pixels (a phone: 390 × 844).
    pub async fn set_window(&self, width: u32, height: u32) {
        self.session
            .post("/window/rect", json!({"width": width, "height": height}))
            .await
            .unwrap_or_else(|e| panic!("set the window to {width}x{height}: {e}"));
    }

    /// Runs `script` (a function body: `return ...` answers a value) with `args`.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.session
            .post("/execute/sync", json!({"script": script, "args": args}))
            .await
            .unwrap_or_else(|e| panic!("execute {script:?}: {e}"))
    }

    /// Saves what the browser shows as the next numbered PNG of this test; answers its path.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        let png = self
            .session
            .get("/screenshot")
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot {name}: not base64: {e}"));
        self.shot_no += 1;
        let path = self
            .shots
            .join(format!("{:02}-{}.png", self.shot_no, file_safe(name)));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Deleting the session closes Chromium; killing chromedriver alone could leave it behind.
        // Drop is synchronous: a short-lived runtime on its own thread sends the request.
        let session = self.session.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = session.command(reqwest::Method::DELETE, "", None).await;
                });
            }
        })
        .join();
    }
}

/// An element on the current page, as WebDriver names it.
pub struct Element {
    session: Session,
    /// The selector that found it, for error messages.
    css: String,
    /// `/element/<id>`.
    path: String,
}

impl Element {
    fn new(session: &Session, css: &str, found: &Value) -> Element {
        let id = found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element id in {found}"));
        Element {
            session: session.clone(),
            css: css.to_string(),
            path: format!("/element/{id}"),
        }
    }

    pub async fn click(&self) {
        self.session
            .post(&format!("{}/click", self.path), json!({}))
            .await
            .unwrap_or_else(|e| panic!("click {:?}: {e}", self.css));
    }

    pub async fn clear(&self) {
        self.session
            .post(&format!("{}/clear", self.path), json!({}))
            .await
            .unwrap_or_else(|e| panic!("clear {:?}: {e}", self.css));
    }

    /// Types `text` into the element, after what it holds.
    pub async fn send_keys(&self, text: &str) {
        self.session
            .post(&format!("{}/value", self.path), json!({"text": text}))
            .await
            .unwrap_or_else(|e| panic!("type into {:?}: {e}", self.css));
    }

    /// The element's visible text.
    pub async fn text(&self) -> String {
        self.try_text()
            .await
            .unwrap_or_else(|e| panic!("read the text of {:?}: {e}", self.css))
    }

    async fn try_text(&self) -> Result<String, WdError> {
        let text = self.session.get(&format!("{}/text", self.path)).await?;
        Ok(text.as_str().unwrap_or_default().to_string())
    }

    /// The element's HTML attribute `name` as written in the page (`None` when absent).
    pub async fn attribute(&self, name: &str) -> Option<String> {
        let value = self
            .session
            .get(&format!("{}/attribute/{name}", self.path))
            .await
            .unwrap_or_else(|e| panic!("read attribute {name} of {:?}: {e}", self.css));
        value.as_str().map(str::to_string)
    }

    /// The element's DOM property `name` as it is now (an input's `value` after typing).
    pub async fn property(&self, name: &str) -> Value {
        self.session
            .get(&format!("{}/property/{name}", self.path))
            .await
            .unwrap_or_else(|e| panic!("read property {name} of {:?}: {e}", self.css))
    }

    /// The first element matching `css` inside this one, waiting up to [`WAIT`].
    pub async fn find(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self
                .session
                .post(
                    &format!("{}/element", self.path),
                    json!({"using": "css selector", "value": css}),
                )
                .await;
            match found {
                Ok(found) => {
                    return Element::new(&self.session, &format!("{} {css}", self.css), &found);
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!(
                        "no element {css:?} inside {:?} after {WAIT:?}: {e}",
                        self.css
                    )
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
}

/// Polls chromedriver's `/status` until it says it is ready for a session.
async fn wait_ready(http: &reqwest::Client, root: &str) {
    let url = format!("{root}/status");
    let ready = super::eventually(START, || async {
        matches!(
            send(http, reqwest::Method::GET, &url, None).await,
            Ok(status) if status["ready"] == json!(true)
        )
    })
    .await;
    assert!(
        ready,
        "chromedriver did not answer ready at {url} within {START:?}"
    );
}

/// The first of `names` found as a file in a directory of `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The running test's name: libtest runs each test on a thread named after it (`cargo test` and
/// nextest alike), and `#[tokio::test]` polls the test's body on that thread.
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("browser")
        .to_string()
}

/// `$CARGO_TARGET_DIR/screenshots/<test>` (or `target/...` beside the crate, where cargo runs
/// the tests from).
fn screenshot_dir(test: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots").join(file_safe(test))
}

/// `name` with anything but letters, digits, `-` and `_` replaced, for a file name.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The path of `url` (`http://host:port/a/b?q` → `/a/b`).
pub fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or(path)
}
