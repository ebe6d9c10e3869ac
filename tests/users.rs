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
            .replace("{tier}", "partner")
            .replace("{name}", "nope");
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
            // Who may do what, and what they did: for admins only, reads too.
            let for_admins = path == "/api/v1/audit"
                || path.starts_with("/api/v1/users")
                || path.starts_with("/api/v1/tokens");
            if for_admins {
                assert_eq!(
                    (as_viewer, as_operator),
                    (403, 403),
                    "{method} {path} is for admins"
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

/// An admin's console: users and tokens through `/api/v1`, with the refusals that keep an admin
/// from locking everyone out, and an audit log that keeps no password and no token secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_users_and_tokens_through_the_api() {
    use reqwest::Method;
    use serde_json::Value;

    let db = TestDb::new().await;
    let app = common::start(db.settings()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/api/v1", app.addr());
    let call = |method: Method, path: &str, token: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            let text = answer.text().await.unwrap();
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            (status, json)
        }
    };
    let bootstrap = siyu::testkit::API_TOKEN;
    const BOSS_PASSWORD: &str = "boss password 1";
    const FIRST: &str = "li's first password";
    const SECOND: &str = "li's second password";

    // The first admin, made with the bootstrap token, and their own token.
    let (status, boss) = call(
        Method::POST,
        "/users",
        bootstrap,
        Some(json!({"name": "boss", "role": "admin", "password": BOSS_PASSWORD})),
    )
    .await;
    assert_eq!(status, 201, "{boss}");
    assert_eq!(boss["name"], "boss");
    assert_eq!(boss["role"], "admin");
    assert_eq!(boss["disabled"], false);
    assert!(
        boss["created_at"].is_i64() && boss["updated_at"].is_i64(),
        "{boss}"
    );
    assert!(
        boss.get("password_hash").is_none() && boss.get("password").is_none(),
        "{boss}"
    );
    let (status, made) = call(
        Method::POST,
        "/users/boss/tokens",
        bootstrap,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["label"], "api", "the default label");
    let boss_token = made["token"].as_str().unwrap().to_string();

    // Bad input is refused with the field named; the checks are `siyu users add`'s.
    let add = |name: &str, role: &str, password: &str| {
        call(
            Method::POST,
            "/users",
            &boss_token,
            Some(json!({"name": name, "role": role, "password": password})),
        )
    };
    let (status, why) = add("li lei", "operator", FIRST).await;
    assert_eq!(status, 400);
    assert!(why["error"].as_str().unwrap().contains("name"), "{why}");
    // The audit log's names for the bootstrap token and the command line are not for users.
    for reserved in ["api.token", "CLI"] {
        let (status, why) = add(reserved, "operator", FIRST).await;
        assert_eq!(status, 400, "{reserved}");
        assert!(why["error"].as_str().unwrap().contains("reserved"), "{why}");
    }
    let (status, why) = add("li", "king", FIRST).await;
    assert_eq!(status, 400);
    let error = why["error"].as_str().unwrap();
    assert!(
        error.contains("role")
            && ["admin", "operator", "viewer"]
                .iter()
                .all(|r| error.contains(r)),
        "{why}"
    );
    let (status, why) = add("li", "operator", "weak-pw").await;
    assert_eq!(status, 400);
    assert!(
        why["error"]
            .as_str()
            .unwrap()
            .contains("password: at least 10"),
        "{why}"
    );
    let (status, li) = add("li", "operator", FIRST).await;
    assert_eq!(status, 201, "{li}");
    assert_eq!(li["role"], "operator");
    let (status, why) = add("li", "viewer", FIRST).await;
    assert_eq!(status, 409, "a second li: {why}");

    let (status, list) = call(Method::GET, "/users", &boss_token, None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["boss", "li"]);
    assert!(!list.to_string().contains("argon2"), "no hash: {list}");
    let (status, _) = call(Method::GET, "/users/nobody", &boss_token, None).await;
    assert_eq!(status, 404);

    // A token for li, which acts as an operator: channels yes, users no.
    let (status, made) = call(
        Method::POST,
        "/users/li/tokens",
        &boss_token,
        Some(json!({"label": "shop"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        (&made["user"], &made["label"]),
        (&json!("li"), &json!("shop"))
    );
    let li_token_id = made["id"].as_i64().unwrap();
    let li_token = made["token"].as_str().unwrap().to_string();
    assert!(li_token.starts_with("siyu_"), "{made}");
    assert_eq!(call(Method::GET, "/channels", &li_token, None).await.0, 200);
    let (status, why) = call(Method::GET, "/users", &li_token, None).await;
    assert_eq!(status, 403, "an operator reads no users: {why}");
    let (status, _) = add("li2", "admin", FIRST).await;
    assert_eq!(status, 201);
    let (status, _) = call(
        Method::PATCH,
        "/users/li",
        &li_token,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(
        status, 403,
        "an operator makes nobody an admin, not even themselves"
    );

    // A role changed; a user disabled (their token stops at once) and enabled again.
    let patch = |name: &str, token: &str, body: Value| {
        call(Method::PATCH, &format!("/users/{name}"), token, Some(body))
    };
    let (status, li) = patch("li", &boss_token, json!({"role": "viewer"})).await;
    assert_eq!((status, &li["role"]), (200, &json!("viewer")), "{li}");
    let (status, why) = patch("li", &boss_token, json!({"role": "king"})).await;
    assert_eq!(status, 400);
    assert!(why["error"].as_str().unwrap().contains("role"), "{why}");
    let (status, _) = patch("li", &boss_token, json!({"password": FIRST})).await;
    assert_eq!(status, 400, "a password is not patched");
    assert_eq!(
        patch("nobody", &boss_token, json!({"disabled": true}))
            .await
            .0,
        404
    );
    let (status, li) = patch("li", &boss_token, json!({"disabled": true})).await;
    assert_eq!((status, &li["disabled"]), (200, &json!(true)), "{li}");
    assert_eq!(call(Method::GET, "/channels", &li_token, None).await.0, 401);
    let (status, li) = patch("li", &boss_token, json!({"disabled": false})).await;
    assert_eq!((status, &li["disabled"]), (200, &json!(false)), "{li}");
    assert_eq!(call(Method::GET, "/channels", &li_token, None).await.0, 200);

    // An admin does not lock themselves out, and the last enabled admin stays one.
    let (status, why) = patch("boss", &boss_token, json!({"disabled": true})).await;
    assert_eq!(status, 409, "{why}");
    let (status, why) = patch("boss", &boss_token, json!({"role": "operator"})).await;
    assert_eq!(status, 409, "{why}");
    assert!(why["error"].as_str().unwrap().contains("own role"), "{why}");
    // li2 is an admin, but disabled admins manage nothing: boss is the last enabled one.
    assert_eq!(
        patch("li2", &boss_token, json!({"disabled": true})).await.0,
        200
    );
    for change in [json!({"role": "viewer"}), json!({"disabled": true})] {
        let (status, why) = patch("boss", bootstrap, change).await;
        assert_eq!(status, 409, "{why}");
        assert!(
            why["error"]
                .as_str()
                .unwrap()
                .contains("last enabled admin"),
            "{why}"
        );
    }
    let (status, boss) = call(Method::GET, "/users/boss", &boss_token, None).await;
    assert_eq!(
        (status, &boss["role"], &boss["disabled"]),
        (200, &json!("admin"), &json!(false))
    );

    // A password changed: the old one no longer signs in, the new one does.
    let password = |name: &str, password: &str| {
        call(
            Method::PUT,
            &format!("/users/{name}/password"),
            &boss_token,
            Some(json!({ "password": password })),
        )
    };
    let s = app.services();
    assert!(siyu::app::users::sign_in(s, "li", FIRST).await.is_ok());
    assert_eq!(password("li", "weak-pw").await.0, 400);
    assert_eq!(password("nobody", SECOND).await.0, 404);
    let (status, answer) = password("li", SECOND).await;
    assert_eq!((status, answer), (204, Value::Null));
    assert!(siyu::app::users::sign_in(s, "li", FIRST).await.is_err());
    assert!(siyu::app::users::sign_in(s, "li", SECOND).await.is_ok());

    // The tokens, never a secret; revoked, li's token is refused on the next request.
    let (status, tokens) = call(Method::GET, "/tokens", &boss_token, None).await;
    assert_eq!(status, 200);
    let listed = tokens["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{tokens}");
    let li_listed = listed.iter().find(|t| t["id"] == li_token_id).unwrap();
    assert_eq!(li_listed["user"], "li");
    assert_eq!(li_listed["label"], "shop");
    assert!(li_listed["created_at"].is_i64() && li_listed["revoked_at"].is_null());
    assert!(li_listed.get("token").is_none(), "{li_listed}");
    assert!(!tokens.to_string().contains(&li_token), "{tokens}");
    let one = format!("/tokens/{li_token_id}");
    assert_eq!(call(Method::DELETE, &one, &boss_token, None).await.0, 204);
    assert_eq!(call(Method::GET, "/channels", &li_token, None).await.0, 401);
    let (status, revoked) = call(Method::GET, &one, &boss_token, None).await;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
    assert_eq!(
        call(Method::DELETE, &one, &boss_token, None).await.0,
        404,
        "revoked once"
    );
    assert_eq!(
        call(Method::DELETE, "/tokens/x", &boss_token, None).await.0,
        404
    );

    // Every change is in the audit log, by boss, and no password or token secret is kept.
    let stored = app
        .store()
        .audit(&siyu::store::audit::AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let text = serde_json::to_string(&stored).unwrap();
    for secret in [
        BOSS_PASSWORD,
        FIRST,
        SECOND,
        "weak-pw",
        li_token.as_str(),
        boss_token.as_str(),
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} is in the audit log: {text}"
        );
    }
    let record = |what: &str| {
        stored
            .iter()
            .find(|r| r.what == what && r.status < 300)
            .unwrap_or_else(|| panic!("no {what} in {text}"))
    };
    let put = record("PUT /api/v1/users/li/password");
    assert_eq!(put.who, "boss");
    assert_eq!(put.request.as_ref().unwrap()["password"], "***");
    assert_eq!(put.before.as_ref().unwrap()["name"], "li", "{put:?}");
    assert_eq!(put.after.as_ref().unwrap()["name"], "li", "{put:?}");
    let created = record("POST /api/v1/users/li/tokens");
    let after = created.after.as_ref().unwrap();
    assert_eq!(
        (&after["label"], &after["token"]),
        (&json!("shop"), &json!("***"))
    );
    let added = record("POST /api/v1/users");
    assert_eq!(added.request.as_ref().unwrap()["password"], "***");
    // Newest first: the first change of li is the last of them.
    let first_patch = stored
        .iter()
        .rfind(|r| r.what == "PATCH /api/v1/users/li" && r.status == 200)
        .unwrap();
    assert_eq!(first_patch.before.as_ref().unwrap()["role"], "operator");
    assert_eq!(first_patch.after.as_ref().unwrap()["role"], "viewer");
    let revoke = record(&format!("DELETE /api/v1/tokens/{li_token_id}"));
    assert_eq!(revoke.before.as_ref().unwrap()["label"], "shop");
    app.shutdown().await;
}

/// Two admins disabling each other at the same moment (two requests, two replicas) leave one
/// admin enabled: the check and the change are one step for the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_disabled_at_once_leave_one_enabled() {
    use siyu::store::users::UserChange;
    let db = TestDb::new().await;
    let app = common::start(db.settings()).await;
    let store = app.store();
    for name in ["ann", "bob"] {
        assert!(
            store
                .insert_user(name, "admin", "$argon2id$x", 0)
                .await
                .unwrap()
        );
    }
    for round in 0..20 {
        for name in ["ann", "bob"] {
            store
                .change_user(name, None, Some(false), round)
                .await
                .unwrap();
        }
        let (ann, bob) = tokio::join!(
            store.change_user("ann", None, Some(true), round),
            store.change_user("bob", None, Some(true), round),
        );
        let refused = [ann.unwrap(), bob.unwrap()]
            .iter()
            .filter(|c| **c == UserChange::LastAdmin)
            .count();
        assert_eq!(
            refused, 1,
            "round {round}: exactly one of the two is refused"
        );
    }
    app.shutdown().await;
}
