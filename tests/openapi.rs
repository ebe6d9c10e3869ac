//! `GET /api/v1/openapi.json` describes every route the binary serves, and only those.
//!
//! The routes are read from the real router itself (not from a list kept here): axum's `Router`
//! prints its route table in its `Debug` output, which this test parses, and then checks by
//! asking the router (a method it does not route answers 405, a routed one does not).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use siyu::app::Services;
use siyu::app::ingest::Ingest;
use siyu::app::templates::Templates;
use siyu::clock::Clock;
use siyu::http::{self, AppState};
use siyu::metrics::Metrics;
use siyu::store::Store;
use siyu::wecom::client::WecomClient;
use siyu::wecom::crypto::Crypto;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// The state of a server, without the server: no dispatcher, workers or WeCom.
async fn state(db: &common::TestDb) -> AppState {
    let settings = db.settings();
    let store = Store::connect(&settings.database).await.unwrap();
    store.migrate().await.unwrap();
    let clock = Clock::default();
    let crypto = Crypto::new(
        settings.wecom.callback_token.expose(),
        settings.wecom.encoding_aes_key.expose(),
        &settings.wecom.corp_id,
    )
    .unwrap();
    let wecom = WecomClient::new(&settings.wecom, None, clock.clone()).unwrap();
    let (handoff, _handed) = tokio::sync::mpsc::channel(64);
    let (ingest, _writer) = Ingest::start(store.clone(), 10, 60_000, clock.clone(), handoff);
    let services = Services::new(
        store.clone(),
        wecom,
        clock.clone(),
        Arc::new(settings.clone()),
        Arc::new(Templates::load(&settings.templates.dir).unwrap()),
    );
    AppState {
        store,
        clock,
        crypto: Arc::new(crypto),
        ingest,
        metrics: Arc::new(Metrics::default()),
        api_token: settings.api.token.clone(),
        body_limit: settings.server.body_limit_bytes,
        services,
        reader: Default::default(),
    }
}

/// `(method, path)` of every route in axum's `Debug` of a `Router`: the node's
/// `paths: {RouteId(n): "/path", ...}` and each `RouteId(n): MethodRouter(MethodRouter { get:
/// Route, head: None, ... })`.
fn routed(debug: &str) -> BTreeSet<(String, String)> {
    let mut paths = std::collections::BTreeMap::new();
    let start = debug
        .find("paths: {")
        .expect("a route table in the Debug output");
    let mut rest = &debug[start + "paths: {".len()..];
    // Entries `RouteId(n): "/path"` up to the map's closing brace (paths hold braces too).
    while let Some(entry) = rest.trim_start_matches([',', ' ']).strip_prefix("RouteId(") {
        let (n, tail) = entry.split_once("): \"").unwrap();
        let (path, tail) = tail.split_once('"').unwrap();
        paths.insert(format!("RouteId({n})"), path.to_string());
        rest = tail;
    }
    assert!(rest.starts_with('}'), "unexpected route table: {rest:.80}");
    let mut routes = BTreeSet::new();
    for (id, path) in &paths {
        let marker = format!("{id}: MethodRouter(MethodRouter {{ ");
        let at = debug
            .find(&marker)
            .unwrap_or_else(|| panic!("{path} is routed to something other than a MethodRouter"));
        let fields = &debug[at + marker.len()..];
        let fields = &fields[..fields.find("fallback:").unwrap()];
        for field in fields.split(", ").filter(|f| !f.is_empty()) {
            let (method, endpoint) = field.split_once(": ").unwrap();
            // HEAD is answered by every GET route; CONNECT is not HTTP an API uses.
            if endpoint != "None" && METHODS.contains(&method) {
                routes.insert((method.to_string(), path.clone()));
            }
        }
    }
    routes
}

fn documented(spec: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths is an object") {
        for (method, _) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) || method == "head" || method == "options" {
                ops.insert((method.clone(), path.clone()));
            }
        }
    }
    ops
}

/// A request path for a route's template: every `{param}` filled.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_served_route_and_no_other() {
    let db = common::TestDb::new().await;
    let router = http::router(state(&db).await);
    // The console's pages are HTML for people, not API: the document leaves them out.
    let routed: BTreeSet<_> = routed(&format!("{router:?}"))
        .into_iter()
        .filter(|(_, path)| !path.starts_with("/console"))
        .collect();
    assert!(
        routed.contains(&("get".into(), "/api/v1/openapi.json".into()))
            && routed.contains(&("post".into(), "/wecom/callback".into()))
            && routed.len() > 10,
        "the route table was not read from the router: {routed:?}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = reqwest::Client::new();

    // The route table read above is the router's: each path answers exactly its methods (with
    // the token: the API's token check answers 401 before the method is looked at). Nothing a
    // handler is asked here changes anything: no body, no such channel or customer.
    let paths: BTreeSet<&String> = routed.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in METHODS {
            let answer = client
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{base}{}", concrete(path)),
                )
                .bearer_auth(siyu::testkit::API_TOKEN)
                .send()
                .await
                .unwrap();
            let is_routed = routed.contains(&(method.to_string(), path.clone()));
            assert_eq!(
                answer.status() != 405,
                is_routed,
                "{method} {path} answered {} but the route table says routed={is_routed}",
                answer.status()
            );
        }
    }

    let answer = client
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "the document is public");
    assert_eq!(answer.headers()["content-type"], "application/json");
    let spec: Value = answer.json().await.unwrap();

    // An OpenAPI 3 document with the bearer scheme.
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        spec["openapi"]
    );
    assert_eq!(spec["info"]["title"], "siyu");
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"],
        serde_json::json!({"type": "http", "scheme": "bearer", "description": "the `api.token` of the configuration"})
    );
    assert_eq!(spec["security"], serde_json::json!([{ "bearer": [] }]));

    let documented = documented(&spec);
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "served but not in the document: {missing:?}; in the document but not served: {extra:?}"
    );

    for (method, path) in &documented {
        let op = &spec["paths"][path][method];
        let public = !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json";
        // Public routes say so (an empty requirement); the others inherit the bearer.
        assert_eq!(
            op.get("security"),
            public.then(|| serde_json::json!([{}])).as_ref(),
            "{method} {path}: security"
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path}: no success answer"
        );
        if !public {
            for status in ["401", "500"] {
                let error = &responses
                    .get(status)
                    .unwrap_or_else(|| panic!("{method} {path}: no {status}"))["content"]["application/json"]
                    ["schema"]["$ref"];
                assert_eq!(error, "#/components/schemas/ErrorBody", "{method} {path}");
            }
        }
        // Actions on a resource (cancel, remind, retry) take no body; every other change does.
        let action =
            path.ends_with("/cancel") || path.ends_with("/remind") || path.ends_with("/retry");
        if (method == "post" || method == "put") && !action {
            assert!(
                op["requestBody"]["content"].is_object(),
                "{method} {path}: no body"
            );
        }
        // Every parameter of the path template is described as one.
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, in_template, "{method} {path}: path parameters");
    }

    // What the brief promised callers: the activity batch's 400 carries its problems.
    let problem = &spec["components"]["schemas"]["Problem"]["properties"];
    for field in ["line", "field", "reason"] {
        assert!(problem[field].is_object(), "Problem.{field}");
    }
    assert_eq!(
        spec["paths"]["/api/v1/activity"]["post"]["responses"]["400"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/ActivityRejected"
    );
    // Every schema referenced is defined.
    let text = spec.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(
            spec["components"]["schemas"][name].is_object(),
            "{name} is referenced but not defined"
        );
    }

    server.abort();
}
