//! Operating siyu: `/readyz` (ready only when the database has every migration) and
//! `siyu backup FILE` (a consistent copy of a SQLite database while siyu runs and writes).

mod common;

use std::process::Stdio;

use common::TestDb;
use common::binary::{NO_WECOM, siyu};
use siyu::app::users::{self, Principal, Role};
use siyu::store::Store;

async fn get(app: &siyu::App, path: &str) -> (u16, String) {
    let answer = reqwest::get(format!("http://{}{path}", app.addr()))
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// Runs `sql` on the test database directly (what an operator's restore or a newer binary's
/// absence would leave behind).
async fn execute(db: &TestDb, sql: &'static str) {
    if db.is_postgres() {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_with_every_migration_while_live_regardless() {
    let db = TestDb::new().await;
    let app = common::start(db.settings()).await;
    assert_eq!(get(&app, "/readyz").await, (200, "ready".into()));

    // The database lacks the newest migration (restored from an older copy, say).
    execute(&db, "DELETE FROM siyu_migrations WHERE version = 11").await;
    assert_eq!(
        get(&app, "/readyz").await,
        (503, "migrations pending: 11".into())
    );
    assert_eq!(get(&app, "/healthz").await.0, 200, "alive all the same");

    // `siyu migrate` would apply it; here the ledger gets its row back.
    execute(
        &db,
        "INSERT INTO siyu_migrations (version, name, applied_at) VALUES (11, 'segment_history', 0)",
    )
    .await;
    assert_eq!(get(&app, "/readyz").await.0, 200);
    app.shutdown().await;
}

/// `siyu backup <args>` on the test database: (success, stdout, stderr).
async fn backup(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["backup"];
    all.extend_from_slice(args);
    let out = siyu(&all, &db.url, dir.path(), NO_WECOM)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_a_whole_copy_taken_while_siyu_writes() {
    let db = TestDb::new().await;
    let app = common::start(db.settings()).await;
    let services = app.services().clone();
    users::add(
        &services,
        &Principal::cli(),
        "ada",
        Role::Admin,
        "a long secret!",
    )
    .await
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("siyu-backup.db");
    let copy_arg = copy.to_str().unwrap();

    if db.is_postgres() {
        let (ok, _, err) = backup(&db, &[copy_arg]).await;
        assert!(!ok, "a PostgreSQL database is not copied by siyu");
        assert!(err.contains("pg_dump"), "{err}");
        app.shutdown().await;
        return;
    }

    // A writer keeps adding users while the copy is taken.
    let writer = tokio::spawn(async move {
        for i in 0..200 {
            users::add(
                &services,
                &Principal::cli(),
                &format!("user{i}"),
                Role::Viewer,
                "a long secret!",
            )
            .await
            .unwrap();
        }
    });
    let (ok, printed, err) = backup(&db, &[copy_arg]).await;
    assert!(ok, "{err}");
    assert!(printed.contains("siyu-backup.db"), "{printed}");
    writer.await.unwrap();

    // The copy opens as a database of its own with everything up to its snapshot.
    let mut settings = db.settings();
    settings.database.url = siyu::config::Secret::new(format!("sqlite://{copy_arg}"));
    let store = Store::connect(&settings.database).await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    let names: Vec<String> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert!(names.contains(&"ada".to_string()), "{names:?}");
    // Users are added one by one, so a snapshot holds a prefix of them: user0..userK.
    let copied = names.iter().filter(|n| n.starts_with("user")).count();
    for i in 0..copied {
        assert!(names.contains(&format!("user{i}")), "user{i} in {names:?}");
    }
    store.close().await;

    // An existing file is never overwritten.
    let (ok, _, err) = backup(&db, &[copy_arg]).await;
    assert!(!ok);
    assert!(err.contains("exists"), "{err}");
    app.shutdown().await;
}
