//! Shared test harness: a fresh database per test (SQLite always; PostgreSQL when
//! `DATABASE_URL` names one), the real app on a random port, and WeCom's side of a callback.

#![allow(dead_code)]

pub mod binary;
pub mod browser;
pub mod world;

use std::sync::Arc;
use std::time::Duration;

use siyu::config::Settings;
use siyu::fake::sender::CallbackSender;
use siyu::testkit::{CallbackSecrets, local_settings};
use siyu::wecom::crypto::Crypto;
use siyu::{App, Components};

/// The corp of the official vectors and of every sample in callback.md §3.
pub const CORP_ID: &str = "ww1436e0e65a779aee";

pub fn secrets() -> CallbackSecrets {
    CallbackSecrets {
        corp_id: CORP_ID.into(),
        token: "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo".into(),
        encoding_aes_key: "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt".into(),
    }
}

/// Every event shape of callback.md §3, one XML document a line.
/// Events of kinds siyu has no handler for (member changes, batch jobs, approvals).
pub fn unhandled_events() -> Vec<String> {
    include_str!("../fixtures/unhandled_events.xml")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

pub fn sample_events() -> Vec<String> {
    include_str!("../fixtures/callback_events.xml")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A database of its own for one test, removed when dropped (PostgreSQL: dropped by name at
/// the next start of the same test binary if a test died).
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    pub async fn new() -> TestDb {
        match std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| u.starts_with("postgres"))
        {
            Some(admin_url) => {
                use sqlx::Connection;
                let name = format!("siyu_t_{}", rand_suffix());
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("DATABASE_URL must be reachable");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url.as_str(), |(b, _)| b);
                TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    pg_admin: Some((admin_url.clone(), name)),
                }
            }
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                TestDb {
                    url: format!("sqlite://{}/siyu.db", dir.path().display()),
                    _dir: Some(dir),
                    pg_admin: None,
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.pg_admin.is_some()
    }

    pub fn settings(&self) -> Settings {
        let mut s = local_settings(&self.url, &secrets());
        s.database.max_connections = 5;
        s
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg_admin.take() else {
            return;
        };
        // Drop is synchronous; a short-lived runtime on its own thread does the async work.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}

pub fn rand_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().r#gen();
    format!("{n:016x}")
}

pub async fn start(settings: Settings) -> App {
    start_with(settings, Components::default()).await
}

pub async fn start_with(settings: Settings, components: Components) -> App {
    App::build_with(settings, components)
        .await
        .expect("app starts")
}

pub fn crypto() -> Arc<Crypto> {
    Arc::new(secrets().crypto())
}

pub fn sender(app: &App) -> CallbackSender {
    CallbackSender::new(
        format!("http://{}/wecom/callback", app.addr()),
        crypto(),
        "1000002",
    )
}

/// How often the wait helpers look again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` every [`POLL`] until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `app` has nothing left to do now: no job running, none queued and due, no inbox
/// event pending or processing; seen twice in a row 50 ms apart, so a job or event that starts
/// another is caught. False when that does not happen within `timeout`. Assert "nothing
/// happened" only after this.
pub async fn wait_idle(app: &App, timeout: Duration) -> bool {
    let idle = || async {
        let store = app.store();
        store.jobs_idle(app.clock().now_ms()).await.unwrap() && store.inbox_idle().await.unwrap()
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if idle().await {
            tokio::time::sleep(POLL).await;
            if idle().await {
                return true;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Like [`wait_idle`], but also waits for jobs that are due later (a member's notice waits for
/// the end of its window): true once no job is queued or running at all.
pub async fn wait_settled(app: &App, timeout: Duration) -> bool {
    use siyu::store::jobs::JobState;
    eventually(timeout, || async {
        let counts = app.store().count_jobs_by_state().await.unwrap();
        let busy = counts
            .iter()
            .any(|(state, n)| matches!(state, JobState::Queued | JobState::Running) && *n > 0);
        !busy && wait_idle(app, timeout).await
    })
    .await
}
