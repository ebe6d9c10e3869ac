//! Users and roles: `siyu users ...` on the command line, API tokens per user with their role on
//! every `/api/v1` route, revocation and disabling, passwords kept as Argon2id hashes.

mod common;

use std::process::Stdio;

use common::TestDb;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// `siyu users <args>` with `stdin` fed in; answers (success, stdout, stderr).
async fn users(db: &TestDb, args: &[&str], stdin: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["users"];
    all.extend_from_slice(args);
    let mut child = common::binary::siyu(&all, &db.url, dir.path(), "http://127.0.0.1:9")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn token(db: &TestDb, user: &str) -> String {
    let (ok, out, err) = users(db, &["token", user, "--label", "test"], "").await;
    assert!(ok, "{err}");
    out.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_every_route_and_tokens_can_be_revoked() {
    let db = TestDb::new().await;
    let (ok, out, err) = users(
        &db,
        &["add", "ops", "--role", "operator"],
        "correct horse battery\n",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("added ops (operator)"), "{out}");
    let (ok, _, err) = users(
        &db,
        &["add", "watcher", "--role", "viewer"],
        "another long secret\n",
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = users(
        &db,
        &["add", "ops", "--role", "viewer"],
        "whatever long one\n",
    )
    .await;
    assert!(!ok && err.contains("exists"), "a second ops: {err}");
    let (ok, _, err) = users(&db, &["add", "weak", "--role", "viewer"], "short\n").await;
    assert!(!ok && err.contains("at least 10"), "{err}");
    let (ok, _, err) = users(
        &db,
        &["add", "boss", "--role", "king"],
        "long enough pass\n",
    )
    .await;
    assert!(!ok && err.contains("--role"), "{err}");
    let (_, listed, _) = users(&db, &["list"], "").await;
    assert!(
        listed.contains("ops  operator") && listed.contains("watcher  viewer"),
        "{listed}"
    );

    let ops = token(&db, "ops").await;
    let watcher = token(&db, "watcher").await;
    assert!(ops.starts_with("siyu_") && ops.len() > 40, "{ops}");

    // The password and the token are kept hashed only.
    let store = common::start(db.settings()).await;
    let app = store;
    let creds = app.store().user_credentials("ops").await.unwrap().unwrap();
    assert!(
        creds.password_hash.starts_with("$argon2id$"),
        "{}",
        creds.password_hash
    );
    assert!(!creds.password_hash.contains("correct horse"));

    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{}/api/v1{p}", app.addr());
    let call = |method: reqwest::Method, path: &str, token: &str| {
        http.request(method, url(path))
            .bearer_auth(token)
            .json(&json!({"code": "douyin", "name": "抖音", "staff": ["zhangsan"]}))
            .send()
    };
    use reqwest::Method;
    // A viewer reads and is refused changes; an operator changes channels but not tier rules.
    assert_eq!(
        call(Method::GET, "/channels", &watcher)
            .await
            .unwrap()
            .status(),
        200
    );
    let refused = call(Method::POST, "/channels", &watcher).await.unwrap();
    assert_eq!(refused.status(), 403);
    let why: serde_json::Value = refused.json().await.unwrap();
    assert!(
        why["error"]
            .as_str()
            .unwrap()
            .contains("watcher is a viewer"),
        "{why}"
    );
    assert_eq!(
        call(Method::PUT, "/tiers", &ops).await.unwrap().status(),
        403
    );
    let tiers = call(Method::GET, "/tiers", &watcher).await.unwrap();
    assert_eq!(tiers.status(), 200);
    assert_eq!(
        call(Method::GET, "/events", "siyu_not_a_token")
            .await
            .unwrap()
            .status(),
        401
    );

    // Revoked: the token stops working at once; disabled: every token of the user does.
    let (_, listed, _) = users(&db, &["tokens"], "").await;
    let watcher_id = listed
        .lines()
        .find(|l| l.contains("watcher"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let (ok, _, err) = users(&db, &["revoke", &watcher_id], "").await;
    assert!(ok, "{err}");
    assert_eq!(
        call(Method::GET, "/channels", &watcher)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        call(Method::GET, "/channels", &ops).await.unwrap().status(),
        200
    );
    let (ok, _, err) = users(&db, &["disable", "ops"], "").await;
    assert!(ok, "{err}");
    assert_eq!(
        call(Method::GET, "/channels", &ops).await.unwrap().status(),
        401
    );
    let (ok, _, err) = users(&db, &["enable", "ops"], "").await;
    assert!(ok, "{err}");
    assert_eq!(
        call(Method::GET, "/channels", &ops).await.unwrap().status(),
        200
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_checked_against_its_hash_and_can_be_changed() {
    let db = TestDb::new().await;
    let (ok, _, err) = users(
        &db,
        &["add", "admin", "--role", "admin"],
        "first password!\n",
    )
    .await;
    assert!(ok, "{err}");
    let app = common::start(db.settings()).await;
    let s = app.services();
    let who = siyu::app::users::sign_in(s, "admin", "first password!")
        .await
        .unwrap();
    assert_eq!(who.role, siyu::app::users::Role::Admin);
    assert!(
        siyu::app::users::sign_in(s, "admin", "wrong password")
            .await
            .is_err()
    );
    assert!(
        siyu::app::users::sign_in(s, "nobody", "first password!")
            .await
            .is_err()
    );
    let (ok, _, err) = users(&db, &["passwd", "admin"], "second password!\n").await;
    assert!(ok, "{err}");
    assert!(
        siyu::app::users::sign_in(s, "admin", "first password!")
            .await
            .is_err()
    );
    assert!(
        siyu::app::users::sign_in(s, "admin", "second password!")
            .await
            .is_ok()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_checks_the_role() {
    let db = TestDb::new().await;
    for (name, role) in [("watcher", "viewer"), ("ops", "operator")] {
        let (ok, _, err) = users(&db, &["add", name, "--role", role], "long enough secret\n").await;
        assert!(ok, "{err}");
    }
    let viewer = token(&db, "watcher").await;
    let operator = token(&db, "ops").await;
    let app = common::start(db.settings()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.addr());
    let spec: serde_json::Value = http
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
            continue;
        }
        let concrete = path
            .replace("{id}", "1")
            .replace("{code}", "nope")
            .replace("{tier}", "partner");
        for method in ops.as_object().unwrap().keys() {
            let m: reqwest::Method = method.to_uppercase().parse().unwrap();
            let status = |token: String| {
                let request = http
                    .request(m.clone(), format!("{base}{concrete}"))
                    .bearer_auth(token)
                    .json(&json!({}));
                async move { request.send().await.unwrap().status().as_u16() }
            };
            let as_viewer = status(viewer.clone()).await;
            let as_operator = status(operator.clone()).await;
            // Previews change nothing: a viewer may ask for them.
            let reads = method == "get"
                || path.ends_with("/campaigns/preview")
                || path.ends_with("/tiers/preview");
            if path == "/api/v1/audit" {
                assert_eq!(
                    (as_viewer, as_operator),
                    (403, 403),
                    "the audit log is for admins"
                );
            } else if reads {
                assert_ne!(as_viewer, 403, "{method} {path}: a viewer reads");
            } else {
                assert_eq!(as_viewer, 403, "{method} {path}: a viewer changes nothing");
                let admin_only = path == "/api/v1/tiers";
                assert_eq!(
                    as_operator == 403,
                    admin_only,
                    "{method} {path}: an operator ({as_operator})"
                );
            }
            assert_ne!(as_viewer, 401, "{method} {path}");
            checked.push(format!("{method} {path}"));
        }
    }
    assert!(checked.len() > 20, "{} routes", checked.len());
    // The console's routes are among those walked.
    for route in [
        "get /api/v1/customers",
        "get /api/v1/jobs",
        "get /api/v1/jobs/{id}",
        "post /api/v1/jobs/{id}/retry",
        "get /api/v1/queue",
        "post /api/v1/tiers/preview",
    ] {
        assert!(checked.iter().any(|c| c == route), "{route} in {checked:?}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_in_the_audit_log_with_who_before_and_after() {
    let w = common::world::world().await;
    let db = &w.db;
    let (ok, _, err) = users(
        db,
        &["add", "ops", "--role", "operator"],
        "long enough secret\n",
    )
    .await;
    assert!(ok, "{err}");
    let ops = token(db, "ops").await;
    let app = &w.app;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{}/api/v1{p}", app.addr());
    let r = http
        .post(url("/channels"))
        .bearer_auth(&ops)
        .json(&json!({"code": "douyin", "name": "抖音", "staff": ["zhangsan"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .put(url("/channels/douyin"))
        .bearer_auth(&ops)
        .json(&json!({"code": "douyin", "name": "抖音直播", "staff": ["zhangsan"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = http
        .delete(url("/channels/douyin"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let admin = siyu::testkit::API_TOKEN;
    let log: serde_json::Value = http
        .get(url("/audit?who=ops"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = log["records"].as_array().unwrap();
    let whats: Vec<&str> = records
        .iter()
        .map(|r| r["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        whats,
        vec![
            "DELETE /api/v1/channels/douyin",
            "PUT /api/v1/channels/douyin",
            "POST /api/v1/channels"
        ],
        "{log:#}"
    );
    let put = &records[1];
    assert_eq!(put["who"], "ops");
    assert_eq!(put["role"], "operator");
    assert_eq!(put["status"], 200);
    assert_eq!(put["before"]["name"], "抖音", "{put:#}");
    assert_eq!(put["after"]["name"], "抖音直播", "{put:#}");
    assert_eq!(put["request"]["name"], "抖音直播");
    assert_eq!(
        records[2]["after"]["code"], "douyin",
        "a create records what it made"
    );
    assert_eq!(records[0]["before"]["name"], "抖音直播");
    assert!(records[0]["after"].is_null(), "deleted");
    let filtered: serde_json::Value = http
        .get(url("/audit?what=PUT"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["records"].as_array().unwrap().len(), 1);
    let cli: serde_json::Value = http
        .get(url("/audit?who=cli"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cli: Vec<&str> = cli["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["what"].as_str().unwrap())
        .collect();
    assert!(cli.contains(&"users add ops"), "{cli:?}");
    assert!(
        cli.iter().any(|w| w.starts_with("users token ops")),
        "{cli:?}"
    );
    let refused = http
        .get(url("/audit"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    w.app.shutdown().await;
}
