//! Bad input, at scale: properties of the callback crypto, the event parser, the operator API and
//! the callback endpoint, run by `tests/props.rs` with few cases and by `siyu fuzz` with many.
//!
//! They live in the library (not in a test) so the binary can run them against a server it
//! starts; each returns the first failure, shrunk, as text.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

use crate::testkit::{API_TOKEN, CallbackSecrets, local_settings};
use crate::wecom::crypto::{Crypto, CryptoError};
use crate::wecom::event;

/// Real callback XML (callback.md §3), the seeds of the mutated-XML property.
const SAMPLE_EVENTS: &str = include_str!("../tests/fixtures/callback_events.xml");
const UNHANDLED_EVENTS: &str = include_str!("../tests/fixtures/unhandled_events.xml");

/// The element names WeCom's callbacks use, so random XML looks like an event often enough to
/// reach the parser's field handling rather than stopping at the first unknown element.
const EVENT_ELEMENTS: &[&str] = &[
    "xml",
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "Event",
    "ChangeType",
    "UserID",
    "ExternalUserID",
    "State",
    "WelcomeCode",
    "ChatId",
    "UpdateDetail",
    "JoinScene",
    "QuitScene",
    "MemChangeCnt",
    "MemChangeList",
    "Item",
    "TagType",
    "Id",
    "StrategyId",
    "Content",
    "MsgId",
    "AgentID",
    "FailReason",
    "Source",
];

/// How each property ended.
#[derive(Debug, Clone)]
pub struct PropertyOutcome {
    pub name: &'static str,
    pub cases: u32,
    /// The shrunk failing input and why, when it failed.
    pub failure: Option<String>,
}

/// What [`run`] found, property by property.
#[derive(Debug, Clone, Default)]
pub struct FuzzReport {
    pub properties: Vec<PropertyOutcome>,
}

impl FuzzReport {
    pub fn passed(&self) -> usize {
        self.properties
            .iter()
            .filter(|p| p.failure.is_none())
            .count()
    }

    pub fn failed(&self) -> usize {
        self.properties.len() - self.passed()
    }

    fn record(&mut self, name: &'static str, cases: u32, result: Result<(), String>) {
        match &result {
            Ok(()) => println!("{name}: {cases} cases passed"),
            Err(why) => println!("{name}: FAILED after at most {cases} cases: {why}"),
        }
        self.properties.push(PropertyOutcome {
            name,
            cases,
            failure: result.err(),
        });
    }
}

/// `siyu fuzz` (and `siyu soak --fuzz`): siyu on a temporary SQLite database with the fake WeCom
/// as its API, every property with `cases` cases, then a last line
/// `fuzz: N properties passed, M failed`.
pub async fn run(cases: u32) -> FuzzReport {
    let mut report = FuzzReport::default();
    let cases_blocking = cases;
    let offline = tokio::task::spawn_blocking(move || {
        (
            crypto_properties(cases_blocking),
            xml_properties(cases_blocking),
        )
    })
    .await;
    match offline {
        Ok((crypto, xml)) => {
            report.record("crypto", cases, crypto);
            report.record("xml", cases, xml);
        }
        Err(e) => report.record("crypto+xml", cases, Err(e.to_string())),
    }
    match Server::start().await {
        Ok(server) => {
            let base_url = server.base_url();
            let api = api_properties(&base_url, API_TOKEN, cases).await;
            report.record("api", cases, api);
            let callback = callback_properties(
                &format!("{base_url}/wecom/callback"),
                &server.secrets,
                cases,
            )
            .await;
            report.record("callback", cases, callback);
            server.stop().await;
        }
        Err(why) => report.record("server", 0, Err(why)),
    }
    println!(
        "fuzz: {} properties passed, {} failed",
        report.passed(),
        report.failed()
    );
    report
}

/// siyu as `siyu serve` runs it, on a database of its own, with the fake WeCom behind it.
struct Server {
    app: crate::App,
    secrets: CallbackSecrets,
    dir: std::path::PathBuf,
    _fake: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Result<Server, String> {
        use crate::fake::{FakeConfig, FakeWecom};
        let secrets = CallbackSecrets::generate();
        let fake = FakeWecom::new(FakeConfig {
            corp_id: secrets.corp_id.clone(),
            callback_token: secrets.token.clone(),
            encoding_aes_key: secrets.encoding_aes_key.clone(),
            ..FakeConfig::default()
        });
        let any_port = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
        let (fake_addr, fake_server) = fake.serve(any_port).await.map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!(
            "siyu-fuzz-{}-{}",
            std::process::id(),
            crate::clock::system_now_ms()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut settings = local_settings(&format!("sqlite://{}/fuzz.db", dir.display()), &secrets);
        settings.wecom.api_base = format!("http://{fake_addr}");
        settings.wecom.secret = crate::config::Secret::new(&fake.config().app_secret);
        settings.wecom.contact_secret = crate::config::Secret::new(&fake.config().contact_secret);
        let app = crate::App::build(settings)
            .await
            .map_err(|e| e.to_string())?;
        fake.set_callback_url(&format!("http://{}/wecom/callback", app.addr()));
        Ok(Server {
            app,
            secrets,
            dir,
            _fake: fake_server,
        })
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.app.addr())
    }

    async fn stop(self) {
        self.app.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        // The binary has no source tree to keep regressions in; a failure is printed instead.
        failure_persistence: None,
        // Shrinking an HTTP case costs a request per step.
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// Runs one property; `Err` names it and carries the shrunk input.
fn check<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<(), String>
where
    S: Strategy,
{
    runner(cases)
        .run(&strategy, test)
        .map_err(|e| format!("{name}: {e}"))
}

/// A fresh corp's crypto: the properties hold for any valid key.
fn fresh_crypto() -> Crypto {
    CallbackSecrets::generate().crypto()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("our own ciphertext is base64")
}

/// The crypto of callback.md §1: encrypt→decrypt round-trips; random, truncated and bit-flipped
/// ciphertexts never panic and are refused (a flipped one at least by its signature).
pub fn crypto_properties(cases: u32) -> Result<(), String> {
    let crypto = fresh_crypto();
    check(
        "round trip",
        cases,
        prop::collection::vec(any::<u8>(), 0..2048),
        |msg| {
            let sealed = crypto.encrypt(&msg);
            let opened = crypto
                .decrypt(&sealed)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&opened.msg, &msg);
            prop_assert_eq!(opened.receive_id.as_str(), crypto.receive_id());
            Ok(())
        },
    )?;
    check("round trip of text", cases, any::<String>(), |text| {
        let sealed = crypto.encrypt(text.as_bytes());
        prop_assert_eq!(crypto.decrypt_checked(&sealed), Ok(text));
        Ok(())
    })?;
    check("random text", cases, any::<String>(), |text| {
        // Never a panic; only the random chance of valid base64 of whole blocks gets past the
        // first two checks.
        match crypto.decrypt(&text) {
            Err(CryptoError::Base64 | CryptoError::CiphertextLength) => Ok(()),
            other => {
                prop_assert!(is_block_aligned_base64(&text), "{text:?} gave {other:?}");
                Ok(())
            }
        }
    })?;
    check(
        "random blocks",
        cases,
        // Mostly a few blocks: a short frame is where a length or pad check can slip.
        prop_oneof![
            3 => prop::collection::vec(prop::array::uniform16(any::<u8>()), 1..4),
            1 => prop::collection::vec(prop::array::uniform16(any::<u8>()), 4..64),
        ],
        |blocks| {
            let bytes: Vec<u8> = blocks.concat();
            // Random blocks decrypt to noise: refused, or by a 2^-40 chance a well-formed frame
            // whose receive id is then wrong.
            prop_assert!(crypto.decrypt_checked(&b64(&bytes)).is_err());
            Ok(())
        },
    )?;
    check(
        "truncated",
        cases,
        (
            prop::collection::vec(any::<u8>(), 0..512),
            any::<prop::sample::Index>(),
        ),
        |(msg, cut)| {
            let sealed = crypto.encrypt(&msg);
            let truncated = &sealed[..cut.index(sealed.len())];
            prop_assert!(
                crypto.decrypt_checked(truncated).is_err(),
                "a ciphertext cut to {} of {} characters was accepted",
                truncated.len(),
                sealed.len()
            );
            Ok(())
        },
    )?;
    check(
        "bit-flipped",
        cases,
        (
            prop::collection::vec(any::<u8>(), 0..512),
            any::<prop::sample::Index>(),
            0u8..8,
        ),
        |(msg, at, bit)| {
            let sealed = crypto.encrypt(&msg);
            let mut bytes = unb64(&sealed);
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            let flipped = b64(&bytes);
            // Without a MAC a flip may still decrypt (CBC); it must not panic, and the
            // signature, which covers the ciphertext, is what refuses it.
            let _ = crypto.decrypt_checked(&flipped);
            let signature = crypto.signature("1700000000", "nonce", &sealed);
            prop_assert_eq!(
                crypto.verify_signature(&signature, "1700000000", "nonce", &flipped),
                Err(CryptoError::InvalidSignature)
            );
            Ok(())
        },
    )
}

fn is_block_aligned_base64(text: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .is_ok_and(|b| !b.is_empty() && b.len() % 16 == 0)
}

/// The real callback XML documents, one a line.
pub fn sample_xml() -> Vec<&'static str> {
    SAMPLE_EVENTS
        .lines()
        .chain(UNHANDLED_EVENTS.lines())
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Random XML built from WeCom's element names, text and CDATA, nested a few levels.
fn random_xml() -> impl Strategy<Value = String> {
    let name = prop::sample::select(EVENT_ELEMENTS);
    let text = prop_oneof![
        "[a-zA-Z0-9_]{0,12}",
        "[0-9]{1,12}",
        "-?[0-9]{1,25}",
        any::<String>().prop_map(|s| quick_xml::escape::escape(&s).into_owned()),
        any::<String>().prop_map(|s| format!("<![CDATA[{s}]]>")),
        Just("&amp;&lt;&#x0;&#1114112;&bogus;".to_string()),
    ];
    let leaf = (name.clone(), text).prop_map(|(n, t)| format!("<{n}>{t}</{n}>"));
    let tree = leaf.prop_recursive(4, 64, 8, move |inner| {
        (name.clone(), prop::collection::vec(inner, 0..8))
            .prop_map(|(n, kids)| format!("<{n}>{}</{n}>", kids.concat()))
    });
    prop::collection::vec(tree, 0..12).prop_map(|kids| format!("<xml>{}</xml>", kids.concat()))
}

/// A change to a document: cut, insert, overwrite or duplicate a span.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, String),
    Delete(prop::sample::Index, usize),
    FlipByte(prop::sample::Index, u8),
    Duplicate(prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>;
    prop_oneof![
        at().prop_map(Mutation::Truncate),
        (
            at(),
            prop_oneof!["[<>/!\\[\\]&;\"' =a-zA-Z]{1,8}", any::<String>()]
        )
            .prop_map(|(i, s)| Mutation::Insert(i, s)),
        (at(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (at(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipByte(i, b)),
        (at(), 1usize..80).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn mutate(doc: &str, mutations: &[Mutation]) -> String {
    let mut bytes = doc.as_bytes().to_vec();
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::Insert(i, s) => {
                let at = i.index(len).min(bytes.len());
                bytes.splice(at..at, s.bytes());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::FlipByte(i, b) => {
                if let Some(byte) = bytes.get_mut(i.index(len)) {
                    *byte ^= b;
                }
            }
            Mutation::Duplicate(i, n) => {
                let at = i.index(len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                let span = bytes[at..end].to_vec();
                bytes.splice(end..end, span);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Real callback XML mutated a few times each.
fn mutated_sample_xml() -> impl Strategy<Value = String> {
    (
        prop::sample::select(sample_xml()),
        prop::collection::vec(mutation(), 1..6),
    )
        .prop_map(|(doc, ms)| mutate(doc, &ms))
}

/// The event parser (src/wecom/event.rs) answers `Ok` or `Err` and never panics, on random XML,
/// on mutated real callbacks and on arbitrary text; the real callbacks themselves parse.
pub fn xml_properties(cases: u32) -> Result<(), String> {
    for doc in sample_xml() {
        event::parse(doc).map_err(|e| format!("a real callback does not parse: {e}: {doc}"))?;
    }
    check("random XML", cases, random_xml(), |xml| {
        let _ = event::parse(&xml);
        Ok(())
    })?;
    check("mutated callbacks", cases, mutated_sample_xml(), |xml| {
        let _ = event::parse(&xml);
        Ok(())
    })?;
    check("arbitrary text", cases, any::<String>(), |text| {
        let _ = event::parse(&text);
        Ok(())
    })
}

/// One operation of the API as the OpenAPI document describes it.
#[derive(Debug, Clone)]
struct Route {
    method: reqwest::Method,
    path: String,
    /// It takes a JSON body: bytes that are not JSON must be refused with a 4xx.
    json_body: bool,
}

/// Every operation of the served OpenAPI document except WeCom's callback (see
/// [`callback_properties`]), and every property name of its schemas (the keys random JSON
/// objects are made of, so some of them get past "unknown field").
async fn api_routes(
    http: &reqwest::Client,
    base_url: &str,
) -> Result<(Vec<Route>, Vec<String>), String> {
    let doc: Value = http
        .get(format!("{base_url}/api/v1/openapi.json"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("openapi.json: {e}"))?
        .json()
        .await
        .map_err(|e| format!("openapi.json: {e}"))?;
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        if path.starts_with("/wecom/") {
            continue;
        }
        for (method, op) in item.as_object().into_iter().flatten() {
            let Ok(method) = method.to_uppercase().parse::<reqwest::Method>() else {
                continue;
            };
            if !matches!(
                method,
                reqwest::Method::GET
                    | reqwest::Method::POST
                    | reqwest::Method::PUT
                    | reqwest::Method::PATCH
                    | reqwest::Method::DELETE
            ) {
                continue;
            }
            let json_body = op["requestBody"]["content"]
                .get("application/json")
                .is_some();
            routes.push(Route {
                method,
                path: path.clone(),
                json_body,
            });
        }
    }
    let mut keys = std::collections::BTreeSet::new();
    collect_property_names(&doc["components"], &mut keys);
    collect_property_names(&doc["paths"], &mut keys);
    if routes.is_empty() {
        return Err("the OpenAPI document lists no API route".into());
    }
    Ok((routes, keys.into_iter().collect()))
}

fn collect_property_names(node: &Value, keys: &mut std::collections::BTreeSet<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                keys.extend(props.keys().cloned());
            }
            if let Some(Value::String(name)) = map.get("name") {
                keys.insert(name.clone());
            }
            map.values().for_each(|v| collect_property_names(v, keys));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_property_names(v, keys)),
        _ => {}
    }
}

/// Random JSON whose object keys are mostly the API's own field names.
fn random_json(keys: Vec<String>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-3i64..1000).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[a-z0-9_]{0,10}".prop_map(Value::String),
    ];
    let key = prop_oneof![
        4 => prop::sample::select(keys),
        1 => any::<String>(),
    ];
    leaf.prop_recursive(3, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A request body: JSON, or bytes that are not JSON.
#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Garbage(Vec<u8>),
}

/// A path segment: ids that look real, names, and anything at all (percent-encoded).
fn path_param() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,6}",
        "-?[0-9]{1,20}",
        "[a-zA-Z0-9_.-]{1,16}",
        "\\PC{1,12}",
    ]
    .prop_map(|s| percent_encode(&s))
}

fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Replaces each `{param}` of an OpenAPI path with the next of `values` (cycled).
fn fill_path(template: &str, values: &[String]) -> String {
    let mut out = String::new();
    let mut rest = template;
    let mut n = 0;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&values[n % values.len()]);
        n += 1;
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

async fn healthy(http: &reqwest::Client, base_url: &str) -> Result<(), String> {
    let status = http
        .get(format!("{base_url}/healthz"))
        .send()
        .await
        .map_err(|e| format!("/healthz: {e}"))?
        .status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("/healthz answered {status}"))
    }
}

/// Runs an HTTP property on a blocking thread (proptest's runner is synchronous) that drives
/// its requests on the caller's runtime. The strategy is made there too: recursive ones are not
/// `Send`.
async fn check_http<M, S, F, Fut>(
    name: String,
    cases: u32,
    make_strategy: M,
    test: F,
) -> Result<(), String>
where
    M: FnOnce() -> S + Send + 'static,
    S: Strategy,
    F: Fn(S::Value) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), TestCaseError>>,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        check(&name, cases, make_strategy(), |value| {
            handle.block_on(test(value))
        })
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Random JSON and random bytes to every route of the API, path parameters random: never a 5xx,
/// a 4xx whenever a JSON route gets bytes that are not JSON (random JSON may be valid, so 2xx is
/// allowed there), and `/healthz` 200 after each route. `cases` are shared out among the routes,
/// at least 4 each.
pub async fn api_properties(base_url: &str, token: &str, cases: u32) -> Result<(), String> {
    let http = http_client()?;
    let (routes, keys) = api_routes(&http, base_url).await?;
    let per_route = (cases / routes.len() as u32).max(4);
    for route in routes {
        let keys = keys.clone();
        let strategy = move || {
            let body = prop_oneof![
                3 => random_json(keys).prop_map(Body::Json),
                1 => prop::collection::vec(any::<u8>(), 0..256)
                    .prop_filter("not JSON", |b| serde_json::from_slice::<Value>(b).is_err())
                    .prop_map(Body::Garbage),
            ];
            (prop::collection::vec(path_param(), 1..4), body)
        };
        let name = format!("{} {}", route.method, route.path);
        let (http2, base, token) = (http.clone(), base_url.to_string(), token.to_string());
        check_http(name, per_route, strategy, move |(params, body)| {
            let (http, route, base, token) =
                (http2.clone(), route.clone(), base.clone(), token.clone());
            async move {
                let url = format!("{base}{}", fill_path(&route.path, &params));
                let bytes = match &body {
                    Body::Json(v) => serde_json::to_vec(v).expect("a Value serialises"),
                    Body::Garbage(b) => b.clone(),
                };
                let status = http
                    .request(route.method.clone(), &url)
                    .bearer_auth(&token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes)
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?
                    .status();
                prop_assert!(!status.is_server_error(), "{url} answered {status}");
                if route.json_body && matches!(body, Body::Garbage(_)) {
                    prop_assert!(
                        status.is_client_error(),
                        "{url} answered {status} to a body that is not JSON"
                    );
                }
                Ok(())
            }
        })
        .await?;
        healthy(&http, base_url).await?;
    }
    Ok(())
}

/// What is posted to the callback URL.
#[derive(Debug, Clone)]
enum CallbackCase {
    /// Authentic: random XML (or text) sealed and signed as WeCom would.
    Sealed(String),
    /// A sealed callback's ciphertext changed, signed again over the change.
    Resigned(CipherChange),
    /// A sealed callback's ciphertext changed under its original signature.
    Forged(CipherChange),
    /// Random bytes as the body, the query signed or not.
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone)]
enum CipherChange {
    Truncate(prop::sample::Index),
    FlipBit(prop::sample::Index, u8),
    Random(Vec<u8>),
}

fn callback_case() -> impl Strategy<Value = CallbackCase> {
    let change = prop_oneof![
        any::<prop::sample::Index>().prop_map(CipherChange::Truncate),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| CipherChange::FlipBit(i, b)),
        prop::collection::vec(any::<u8>(), 1..300).prop_map(CipherChange::Random),
    ];
    prop_oneof![
        prop_oneof![random_xml(), mutated_sample_xml(), any::<String>()]
            .prop_map(CallbackCase::Sealed),
        change.clone().prop_map(CallbackCase::Resigned),
        change.prop_map(CallbackCase::Forged),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(CallbackCase::Garbage),
    ]
}

fn apply(change: &CipherChange, sealed: &str) -> String {
    match change {
        CipherChange::Truncate(at) => sealed[..at.index(sealed.len())].to_string(),
        CipherChange::FlipBit(at, bit) => {
            let mut bytes = unb64(sealed);
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            b64(&bytes)
        }
        CipherChange::Random(bytes) => b64(bytes),
    }
}

/// Random, truncated and bit-flipped encrypted callbacks posted to `callback_url`: what siyu
/// can decrypt for its corp is acknowledged 200 (stored, parsed or not: callback.md §4, a
/// refusal makes WeCom retry); what it cannot is 400; a wrong signature 403; never a 5xx; and
/// `/healthz` 200 after.
pub async fn callback_properties(
    callback_url: &str,
    secrets: &CallbackSecrets,
    cases: u32,
) -> Result<(), String> {
    let http = http_client()?;
    let crypto = std::sync::Arc::new(secrets.crypto());
    let (http2, url) = (http.clone(), callback_url.to_string());
    check_http("callback".into(), cases, callback_case, move |case| {
        let (http, url, crypto) = (http2.clone(), url.clone(), crypto.clone());
        async move {
            let (timestamp, nonce) = ("1700000000", "fuzz");
            let (signature, encrypt, expected) = match &case {
                CallbackCase::Sealed(xml) => {
                    let encrypt = crypto.encrypt(xml.as_bytes());
                    (crypto.signature(timestamp, nonce, &encrypt), encrypt, 200)
                }
                CallbackCase::Resigned(change) => {
                    let encrypt = apply(change, &crypto.encrypt(b"<xml></xml>"));
                    // The oracle is siyu's own crypto: what decrypts for this corp is authentic.
                    let expected = if crypto.decrypt_checked(&encrypt).is_ok() { 200 } else { 400 };
                    (crypto.signature(timestamp, nonce, &encrypt), encrypt, expected)
                }
                CallbackCase::Forged(change) => {
                    let sealed = crypto.encrypt(b"<xml></xml>");
                    let encrypt = apply(change, &sealed);
                    // An empty ciphertext is refused as a bad envelope before the signature.
                    let expected = if encrypt.is_empty() { 400 } else { 403 };
                    (crypto.signature(timestamp, nonce, &sealed), encrypt, expected)
                }
                CallbackCase::Garbage(bytes) => {
                    let status = http
                        .post(format!("{url}?msg_signature=x&timestamp={timestamp}&nonce={nonce}"))
                        .body(bytes.clone())
                        .send()
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?
                        .status();
                    prop_assert!(status.is_client_error(), "garbage answered {status}");
                    return Ok(());
                }
            };
            let body = format!(
                "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>",
                crypto.receive_id()
            );
            let status = http
                .post(format!(
                    "{url}?msg_signature={signature}&timestamp={timestamp}&nonce={nonce}"
                ))
                .body(body)
                .send()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .status();
            prop_assert_eq!(status.as_u16(), expected, "callback answered {}", status);
            Ok(())
        }
    })
    .await?;
    let base = callback_url
        .strip_suffix("/wecom/callback")
        .unwrap_or(callback_url);
    healthy(&http, base).await
}
