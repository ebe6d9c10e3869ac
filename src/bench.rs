//! `siyu bench ingest`: the real callback endpoint (verify, decrypt, parse, group-committed
//! insert on a temporary SQLite file) against a bare axum handler that reads the body and answers
//! 200, driven in the same run by the same client with the same keep-alive connections and
//! concurrency. The ratio of their throughputs is the figure to watch; absolute numbers depend on
//! the machine and its neighbours.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

use crate::app::ingest::dedupe_key_of_xml;
use crate::fake::sender::{CallbackSender, Sealed};
use crate::server::App;
use crate::testkit::{CallbackSecrets, add_contact_xml, local_settings};

#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Distinct events sent to each target.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Requests in flight at once (one keep-alive connection each).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// SQLite durability for the run: full (the default setting) or normal.
    #[arg(long, default_value = "full")]
    pub sqlite_synchronous: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WelcomeArgs {
    /// Customer adds per second, held steady.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// How long the load runs.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// SQLite durability for the run: full (the default setting) or normal.
    #[arg(long, default_value = "full")]
    pub sqlite_synchronous: String,
    /// Job workers (default: the jobs.workers default).
    #[arg(long)]
    pub workers: Option<usize>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TiersArgs {
    /// Customers generated.
    #[arg(long, default_value_t = 1_000_000)]
    pub customers: u64,
    /// Activity records generated (orders, refunds, referrals over 120 days).
    #[arg(long, default_value_t = 10_000_000)]
    pub activity: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench setup: {0}")]
    Setup(String),
    #[error("bench check failed: {0}")]
    Check(String),
}

struct RunResult {
    events_per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Index of every request answered 200.
    accepted: Vec<usize>,
}

pub async fn ingest(args: IngestArgs) -> Result<(), BenchError> {
    let concurrency = args.concurrency.max(1);
    let secrets = CallbackSecrets::generate();
    let dir = tempfile_dir()?;
    let db_url = format!("sqlite://{}/bench.db", dir.display());
    let mut settings = local_settings(&db_url, &secrets);
    settings.database.max_connections = 4;
    settings.database.sqlite_synchronous = args.sqlite_synchronous.clone();
    settings
        .validate_common()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let app = App::build(settings)
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;

    let bare = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let bare_addr = bare
        .local_addr()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let bare_router = Router::new().route(
        "/wecom/callback",
        post(|body: Bytes| async move {
            std::hint::black_box(body.len());
            ""
        }),
    );
    let bare_server = tokio::spawn(async move {
        let _ = axum::serve(bare, bare_router).await;
    });

    let crypto = Arc::new(secrets.crypto());
    let create_time = crate::clock::system_now_ms() / 1000;
    let xmls: Vec<String> = (0..args.events as u64)
        .map(|n| add_contact_xml(&secrets.corp_id, n, create_time))
        .collect();
    // Sealed before timing: the client's encryption is not what we measure.
    let sealer = CallbackSender::new("", crypto.clone(), "1000002");
    let sealed: Arc<Vec<Sealed>> = Arc::new(xmls.iter().map(|x| sealer.seal(x)).collect());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .http1_only()
        .build()
        .map_err(|e| BenchError::Setup(e.to_string()))?;

    println!(
        "siyu bench ingest: {} events per target, concurrency {concurrency}, SQLite at {}",
        args.events,
        dir.display()
    );
    let bare_url = format!("http://{bare_addr}/wecom/callback");
    let real_url = format!("http://{}/wecom/callback", app.addr());
    // A short warm-up of each opens the connections and faults in the code paths.
    let warm = Arc::new(sealed[..sealed.len().min(200)].to_vec());
    drive(
        &client,
        &bare_url,
        crypto.clone(),
        warm.clone(),
        concurrency,
    )
    .await;

    let bare_run = drive(
        &client,
        &bare_url,
        crypto.clone(),
        sealed.clone(),
        concurrency,
    )
    .await;
    report("bare axum", &bare_run);
    let real_run = drive(
        &client,
        &real_url,
        crypto.clone(),
        sealed.clone(),
        concurrency,
    )
    .await;
    report("callback ingest", &real_run);

    // Every event that got 200 must be in the inbox, and nothing else.
    let expected: HashSet<String> = real_run
        .accepted
        .iter()
        .map(|&i| dedupe_key_of_xml(&secrets.corp_id, &xmls[i]))
        .collect();
    let stored: HashSet<String> = app
        .store()
        .inbox_keys()
        .await
        .map_err(|e| BenchError::Check(e.to_string()))?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    app.shutdown().await;
    bare_server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    if stored != expected {
        return Err(BenchError::Check(format!(
            "inbox holds {} events, {} were acknowledged ({} missing, {} unexpected)",
            stored.len(),
            expected.len(),
            expected.difference(&stored).count(),
            stored.difference(&expected).count()
        )));
    }
    println!(
        "inbox check: all {} acknowledged events stored exactly once",
        expected.len()
    );
    println!("peak_rss_mib={:.1}", peak_rss_kib() as f64 / 1024.0);
    println!(
        "ingest_vs_bare_ratio={:.2}",
        real_run.events_per_sec / bare_run.events_per_sec
    );
    Ok(())
}

fn report(name: &str, run: &RunResult) {
    println!(
        "{name:>16}: {:>9.0} events/s  p50 {:>7.2} ms  p99 {:>7.2} ms  accepted {}",
        run.events_per_sec,
        run.p50.as_secs_f64() * 1000.0,
        run.p99.as_secs_f64() * 1000.0,
        run.accepted.len()
    );
}

async fn drive(
    client: &reqwest::Client,
    url: &str,
    crypto: Arc<crate::wecom::crypto::Crypto>,
    sealed: Arc<Vec<Sealed>>,
    concurrency: usize,
) -> RunResult {
    let next = Arc::new(AtomicUsize::new(0));
    let sender = CallbackSender::new(url, crypto, "1000002").with_client(client.clone());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let next = next.clone();
        let sealed = sealed.clone();
        let sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut accepted = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(s) = sealed.get(i) else { break };
                let t = Instant::now();
                let status = sender.post(s).await;
                latencies.push(t.elapsed());
                if status == Ok(200) {
                    accepted.push(i);
                }
            }
            (latencies, accepted)
        }));
    }
    let mut latencies = Vec::with_capacity(sealed.len());
    let mut accepted = Vec::with_capacity(sealed.len());
    for task in tasks {
        if let Ok((l, a)) = task.await {
            latencies.extend(l);
            accepted.extend(a);
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    RunResult {
        events_per_sec: accepted.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        accepted,
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!(
        "siyu-bench-{}-{}",
        std::process::id(),
        crate::clock::system_now_ms()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Setup(e.to_string()))?;
    Ok(dir)
}

/// Peak resident set size of this process (VmHWM), in KiB; 0 where /proc is not available.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `siyu bench welcome`: customers add through a channel at a steady rate; for each, the time
/// from the moment WeCom (the fake's driver) posts the add callback to the moment the fake
/// receives `send_welcome_msg` for its welcome code. WeCom allows 20 s; the ratio printed last is
/// p99 / 20 s.
pub async fn welcome(args: WelcomeArgs) -> Result<(), BenchError> {
    use crate::app::channels::{self, ChannelInput};
    use crate::fake::{FakeConfig, FakeWecom, NewCustomer};
    use crate::store::contacts::Welcome;
    use std::time::SystemTime;

    let setup = |e: &dyn std::fmt::Display| BenchError::Setup(e.to_string());
    let secrets = CallbackSecrets::generate();
    let fake = FakeWecom::new(FakeConfig {
        corp_id: secrets.corp_id.clone(),
        agent_id: 1_000_002,
        app_secret: "bench-app".into(),
        contact_secret: "bench-contact".into(),
        callback_url: None,
        callback_token: secrets.token.clone(),
        encoding_aes_key: secrets.encoding_aes_key.clone(),
        mass_cap: Default::default(),
    });
    fake.add_staff("zhangsan", "张三");
    let (fake_addr, _fake_server) = fake
        .serve("127.0.0.1:0".parse().map_err(|e| setup(&e))?)
        .await
        .map_err(|e| setup(&e))?;
    let dir = tempfile_dir()?;
    let mut settings = local_settings(&format!("sqlite://{}/bench.db", dir.display()), &secrets);
    settings.wecom.api_base = format!("http://{fake_addr}");
    settings.wecom.secret = crate::config::Secret::new("bench-app");
    settings.wecom.contact_secret = crate::config::Secret::new("bench-contact");
    settings.wecom.calls_per_minute = 60_000;
    settings.database.sqlite_synchronous = args.sqlite_synchronous.clone();
    if let Some(w) = args.workers {
        settings.jobs.workers = w;
    }
    settings.validate_common().map_err(|e| setup(&e))?;
    let app = App::build(settings).await.map_err(|e| setup(&e))?;
    fake.set_callback_url(&format!("http://{}/wecom/callback", app.addr()));
    let input = ChannelInput {
        code: "douyin".into(),
        name: "抖音".into(),
        staff: vec!["zhangsan".into()],
        tags: vec![],
        welcome: Some(Welcome {
            text: Some("{{ name }}，欢迎！".into()),
            attachments: vec![],
        }),
    };
    channels::create(app.services(), input, "api")
        .await
        .map_err(|e| setup(&e))?;

    let total = (args.rate * args.seconds) as usize;
    println!(
        "siyu bench welcome: {total} adds at {} per second through the fake WeCom",
        args.rate
    );
    let driver = fake.driver();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut adds = Vec::with_capacity(total);
    for n in 0..total {
        ticker.tick().await;
        let driver = driver.clone();
        adds.push(tokio::spawn(async move {
            let sent = SystemTime::now();
            let added = driver
                .customer_adds_via_contact_way("douyin", NewCustomer::wechat(&format!("客户{n}")))
                .await;
            added.map(|a| (a.welcome_code, sent))
        }));
    }
    let mut sent_at = std::collections::HashMap::new();
    for add in adds {
        if let Ok(Ok((Some(code), sent))) = add.await {
            sent_at.insert(code, sent);
        }
    }
    let offered = started.elapsed();
    // Give the last welcomes time to go out.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.welcome_messages().len() < sent_at.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies: Vec<Duration> = fake
        .calls_to("/cgi-bin/externalcontact/send_welcome_msg")
        .iter()
        .filter_map(|call| {
            let body: serde_json::Value = serde_json::from_str(&call.body).ok()?;
            let sent = sent_at.get(body["welcome_code"].as_str()?)?;
            call.at.duration_since(*sent).ok()
        })
        .collect();
    app.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort();
    if latencies.is_empty() {
        return Err(BenchError::Check("no welcome message was sent".into()));
    }
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let (p50, p99, max) = (pick(0.5), pick(0.99), latencies[latencies.len() - 1]);
    println!(
        "offered {:.0} adds/s; welcomed {} of {}",
        total as f64 / offered.as_secs_f64(),
        latencies.len(),
        total
    );
    println!(
        "callback to send_welcome_msg: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    println!("peak_rss_mib={:.1}", peak_rss_kib() as f64 / 1024.0);
    println!(
        "p99_vs_welcome_window_ratio={:.4}",
        p99.as_secs_f64() / 20.0
    );
    if latencies.len() < total {
        return Err(BenchError::Check(format!(
            "only {} of {total} customers were welcomed",
            latencies.len()
        )));
    }
    Ok(())
}

/// `siyu bench tiers`: a temporary SQLite database with `customers` customers and `activity`
/// records; times the full evaluation (one set-based pass, changes applied) against one plain
/// scan of the activity table, in the same run.
pub async fn tiers(args: TiersArgs) -> Result<(), BenchError> {
    use crate::app::{Services, templates::Templates};
    use std::sync::Arc;

    let setup = |e: &dyn std::fmt::Display| BenchError::Setup(e.to_string());
    let dir = tempfile_dir()?;
    let secrets = CallbackSecrets::generate();
    let settings = local_settings(&format!("sqlite://{}/bench.db", dir.display()), &secrets);
    let store = crate::store::Store::connect(&settings.database)
        .await
        .map_err(|e| setup(&e))?;
    store.migrate().await.map_err(|e| setup(&e))?;
    let clock = crate::clock::Clock::default();
    let now = clock.now_ms();
    println!(
        "siyu bench tiers: generating {} customers and {} activity records in {}",
        args.customers,
        args.activity,
        dir.display()
    );
    let started = Instant::now();
    store
        .generate_tier_bench_data(args.customers, args.activity, now)
        .await
        .map_err(|e| setup(&e))?;
    println!("generated in {:.1} s", started.elapsed().as_secs_f64());

    let services = Services::new(
        store.clone(),
        crate::wecom::client::WecomClient::new(&settings.wecom, None, clock.clone())
            .map_err(|e| setup(&e))?,
        clock,
        Arc::new(settings),
        Arc::new(Templates::load("").map_err(|e| setup(&e))?),
    );
    let scan_started = Instant::now();
    let scanned = store.scan_activity().await.map_err(|e| setup(&e))?;
    let scan = scan_started.elapsed();
    use crate::app::tiers::evaluate_with;
    let pass_started = Instant::now();
    let would = evaluate_with(&services, None, false, |_| {})
        .await
        .map_err(|e| setup(&e))?;
    let pass = pass_started.elapsed();
    println!(
        "evaluation pass alone (dry run): {:.2} s, {} changes decided",
        pass.as_secs_f64(),
        would.changes
    );
    let eval_started = Instant::now();
    let done = evaluate_with(&services, None, true, |_| {})
        .await
        .map_err(|e| setup(&e))?;
    let eval = eval_started.elapsed();
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "plain scan of {scanned} activity rows: {:.2} s",
        scan.as_secs_f64()
    );
    println!(
        "full evaluation of {} customers: {:.2} s ({:.0} customers/s), {} tier changes applied",
        args.customers,
        eval.as_secs_f64(),
        args.customers as f64 / eval.as_secs_f64(),
        done.changes
    );
    println!("peak_rss_mib={:.1}", peak_rss_kib() as f64 / 1024.0);
    println!(
        "evaluate_vs_scan_ratio={:.2}",
        eval.as_secs_f64() / scan.as_secs_f64()
    );
    Ok(())
}
