//! `siyu bench ingest`: the real callback endpoint (verify, decrypt, parse, group-committed
//! insert on a temporary SQLite file) against a bare axum handler that reads the body and answers
//! 200, driven in the same run by the same load (a process of its own: [`load`]), with the same
//! number of keep-alive connections. The ratio of their throughputs is the figure to watch; absolute numbers depend on
//! the machine and its neighbours.

pub mod load;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

use crate::app::ingest::dedupe_key_of_xml;
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
    /// Ordinary jobs queued before the adds start: `tags.sync` of this many existing relations
    /// (a nightly evaluation's fan-out), seeded at the fake and in siyu's database.
    #[arg(long, default_value_t = 0)]
    pub backlog: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TiersArgs {
    /// Customers generated.
    #[arg(long, default_value_t = 1_000_000)]
    pub customers: u64,
    /// Activity records generated (orders, refunds, referrals over 120 days).
    #[arg(long, default_value_t = 10_000_000)]
    pub activity: u64,
    /// The whole measurement at 10 k, 100 k and 1 M customers (activity 10 × each), each on a
    /// fresh database, then a table of the three; `--customers` and `--activity` do not apply.
    #[arg(long, conflicts_with_all = ["customers", "activity"])]
    pub scale: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// How long siyu is left idle while its CPU time is measured.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench setup: {0}")]
    Setup(String),
    #[error("bench check failed: {0}")]
    Check(String),
}

pub async fn ingest(args: IngestArgs) -> Result<(), BenchError> {
    let concurrency = args.concurrency.max(1);
    let secrets = CallbackSecrets::generate();
    let create_time = crate::clock::system_now_ms() / 1000;
    let before_servers_mib = rss_kib() as f64 / 1024.0;

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
    let (stop_bare, bare_stopped) = tokio::sync::oneshot::channel::<()>();
    let bare_server = tokio::spawn(async move {
        let _ = axum::serve(bare, bare_router)
            .with_graceful_shutdown(async {
                let _ = bare_stopped.await;
            })
            .await;
    });

    println!(
        "siyu bench ingest: {} events per target, concurrency {concurrency}, SQLite at {}",
        args.events,
        dir.display()
    );
    let bare_url = format!("http://{bare_addr}/wecom/callback");
    let real_url = format!("http://{}/wecom/callback", app.addr());
    // A short warm-up of the bare handler opens the connections and faults in the code paths.
    let bare_cpu = CpuSpent::start();
    let bare_run = load::run_apart(
        &secrets,
        &bare_url,
        args.events,
        concurrency,
        create_time,
        200,
    )
    .await?;
    let bare_cpu = bare_cpu.per_event(bare_run.accepted.len());
    report("bare axum", &bare_run);
    // Its connections closed with the load process; the server ends once it sees that (or is
    // cut short: a connection left open is no reason to fail the bench).
    let _ = stop_bare.send(());
    let bare_abort = bare_server.abort_handle();
    if tokio::time::timeout(Duration::from_secs(10), bare_server)
        .await
        .is_err()
    {
        bare_abort.abort();
    }
    let real_cpu = CpuSpent::start();
    let real_run = load::run_apart(
        &secrets,
        &real_url,
        args.events,
        concurrency,
        create_time,
        0,
    )
    .await?;
    // With the handlers that ran meanwhile: what the burst cost siyu while it lasted.
    let real_cpu = real_cpu.per_event(real_run.accepted.len());
    report("callback ingest", &real_run);
    // Acknowledged is not yet handled: the burst's events wait in the inbox for their handlers.
    wait_handled(app.store(), Duration::from_secs(300)).await?;
    // From the first request of the timed run, which the load's clock marks: the load's start-up
    // and sealing come before it.
    let handled_after = Duration::from_millis(
        (crate::clock::system_now_ms() - real_run.started_at_ms).max(1) as u64,
    );
    println!(
        "{:>16}: {:>9.0} events/s  the last {:.2} s after the burst began",
        "handled",
        real_run.accepted.len() as f64 / handled_after.as_secs_f64(),
        handled_after.as_secs_f64()
    );

    // Every event that got 200 must be in the inbox, and nothing else.
    let expected: HashSet<String> = real_run
        .accepted
        .iter()
        .map(|&i| {
            let xml = add_contact_xml(&secrets.corp_id, i as u64, create_time);
            dedupe_key_of_xml(&secrets.corp_id, &xml)
        })
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
    // The load runs in a process of its own: this process's peak is siyu's (and the bare
    // handler's, whose connections were closed before siyu's run).
    println!("rss_before_servers_mib={before_servers_mib:.1}");
    println!("peak_rss_mib={:.1}", peak_rss_kib() as f64 / 1024.0);
    println!(
        "load_peak_rss_mib={:.1}",
        real_run.peak_rss_kib.max(bare_run.peak_rss_kib) as f64 / 1024.0
    );
    // This process's CPU while each load ran (the load's own is in its process), per event.
    if let (Some(bare), Some(real)) = (bare_cpu, real_cpu) {
        println!("bare_cpu_us_per_event={bare:.1}");
        println!("ingest_cpu_us_per_event={real:.1}");
    }
    println!(
        "ingest_vs_bare_ratio={:.2}",
        real_run.events_per_sec / bare_run.events_per_sec
    );
    Ok(())
}

/// Waits until no event in the inbox waits for its handler (none pending or processing).
async fn wait_handled(store: &crate::store::Store, within: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + within;
    while !store
        .inbox_idle()
        .await
        .map_err(|e| BenchError::Check(e.to_string()))?
    {
        if Instant::now() >= deadline {
            return Err(BenchError::Check(format!(
                "events still wait for their handler after {within:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn report(name: &str, run: &load::LoadResult) {
    println!(
        "{name:>16}: {:>9.0} events/s  p50 {:>7.2} ms  p99 {:>7.2} ms  accepted {}",
        run.events_per_sec,
        run.p50_ms,
        run.p99_ms,
        run.accepted.len()
    );
}

/// This process's CPU time from [`CpuSpent::start`] on.
struct CpuSpent(Option<Duration>);

impl CpuSpent {
    fn start() -> CpuSpent {
        CpuSpent(process_cpu_time())
    }

    /// Microseconds of CPU per event over `events`; None where /proc is not available.
    fn per_event(self, events: usize) -> Option<f64> {
        let spent = process_cpu_time()?.checked_sub(self.0?)?;
        Some(spent.as_secs_f64() * 1e6 / events.max(1) as f64)
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
    proc_status_kib("VmHWM:")
}

/// Resident set size of this process now (VmRSS), in KiB; 0 where /proc is not available.
fn rss_kib() -> u64 {
    proc_status_kib("VmRSS:")
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time this process has used, user and system, all threads (`/proc/self/stat` fields 14
/// and 15, in clock ticks of 1/100 s); `None` where /proc is not available.
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / CLOCK_TICKS_PER_SEC,
    ))
}

/// `sysconf(_SC_CLK_TCK)`, which Linux fixes at 100 for user space.
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// What an idle siyu may use: 1 % of one core and 32 MiB resident.
const IDLE_CPU_BUDGET_PERCENT: f64 = 1.0;
const IDLE_RSS_BUDGET_MIB: f64 = 32.0;

/// The fake WeCom a bench runs siyu against, for these callback secrets.
fn bench_fake(secrets: &CallbackSecrets) -> crate::fake::FakeWecom {
    crate::fake::FakeWecom::new(crate::fake::FakeConfig {
        corp_id: secrets.corp_id.clone(),
        agent_id: 1_000_002,
        app_secret: "bench-app".into(),
        contact_secret: "bench-contact".into(),
        callback_url: None,
        callback_token: secrets.token.clone(),
        encoding_aes_key: secrets.encoding_aes_key.clone(),
        mass_cap: Default::default(),
    })
}

/// `siyu bench idle`: siyu as `siyu serve` runs it (its default settings, a temporary SQLite
/// database, the fake WeCom as its API) left alone for `--seconds` once its start-up work is
/// done; prints the CPU it used meanwhile (of one core) and its resident memory at the end,
/// each against its budget.
pub async fn idle(args: IdleArgs) -> Result<(), BenchError> {
    let setup = |e: &dyn std::fmt::Display| BenchError::Setup(e.to_string());
    let secrets = CallbackSecrets::generate();
    let fake = bench_fake(&secrets);
    let (fake_addr, _fake_server) = fake
        .serve("127.0.0.1:0".parse().map_err(|e| setup(&e))?)
        .await
        .map_err(|e| setup(&e))?;
    let dir = tempfile_dir()?;
    let db_url = format!("sqlite://{}/bench.db", dir.display());
    let mut settings = local_settings(&db_url, &secrets);
    // What `siyu serve` polls at, not the tests' quicker pace.
    let defaults = crate::config::Settings::default();
    settings.jobs.poll_interval_ms = defaults.jobs.poll_interval_ms;
    settings.wecom.api_base = format!("http://{fake_addr}");
    settings.wecom.secret = crate::config::Secret::new("bench-app");
    settings.wecom.contact_secret = crate::config::Secret::new("bench-contact");
    settings.validate_common().map_err(|e| setup(&e))?;
    let app = App::build(settings).await.map_err(|e| setup(&e))?;
    fake.set_callback_url(&format!("http://{}/wecom/callback", app.addr()));

    // Start-up work (the tag library, the first scheduler tick) is not idling: wait it out.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let store = app.store();
        let now = app.clock().now_ms();
        if store.jobs_idle(now).await.unwrap_or(false) && store.inbox_idle().await.unwrap_or(false)
        {
            break;
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Setup(
                "siyu was still busy with its start-up work after 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!(
        "siyu bench idle: siyu serve on SQLite at {}, idle for {} s",
        dir.display(),
        args.seconds
    );
    let cpu_before = process_cpu_time()
        .ok_or_else(|| BenchError::Setup("/proc/self/stat is not readable".into()))?;
    let started = Instant::now();
    // The measurement itself: nothing happens, on purpose, for this long.
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let wall = started.elapsed();
    let cpu = process_cpu_time()
        .ok_or_else(|| BenchError::Setup("/proc/self/stat is not readable".into()))?
        .saturating_sub(cpu_before);
    let rss_mib = rss_kib() as f64 / 1024.0;
    app.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);

    let cpu_percent = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "cpu {:.3} s in {:.1} s (all threads, the fake WeCom's too)",
        cpu.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!("idle_cpu_percent={cpu_percent:.2}");
    println!("idle_rss_mib={rss_mib:.1}");
    println!(
        "idle_cpu_vs_budget_ratio={:.2}",
        cpu_percent / IDLE_CPU_BUDGET_PERCENT
    );
    println!(
        "idle_rss_vs_budget_ratio={:.2}",
        rss_mib / IDLE_RSS_BUDGET_MIB
    );
    Ok(())
}

/// `siyu bench welcome`: customers add through a channel at a steady rate; for each, the time
/// from the moment WeCom (the fake's driver) posts the add callback to the moment the fake
/// receives `send_welcome_msg` for its welcome code. WeCom allows 20 s; the ratio printed last is
/// p99 / 20 s, and `missed_welcomes` counts the adds whose welcome was not accepted within them.
/// The client keeps its default pace (`wecom.calls_per_minute`), below WeCom's real cap.
///
/// With `--backlog N`, N existing relations (seeded at the fake without callbacks, recorded in
/// siyu's database) each have an ordinary `tags.sync` job queued before the adds start.
pub async fn welcome(args: WelcomeArgs) -> Result<(), BenchError> {
    use crate::app::channels::{self, ChannelInput};
    use crate::fake::NewCustomer;
    use crate::store::contacts::Welcome;
    use std::time::SystemTime;

    let setup = |e: &dyn std::fmt::Display| BenchError::Setup(e.to_string());
    let secrets = CallbackSecrets::generate();
    let fake = bench_fake(&secrets);
    fake.add_staff("zhangsan", "张三");
    let (fake_addr, _fake_server) = fake
        .serve("127.0.0.1:0".parse().map_err(|e| setup(&e))?)
        .await
        .map_err(|e| setup(&e))?;
    let dir = tempfile_dir()?;
    let db_url = format!("sqlite://{}/bench.db", dir.display());
    let mut settings = local_settings(&db_url, &secrets);
    settings.wecom.api_base = format!("http://{fake_addr}");
    settings.wecom.secret = crate::config::Secret::new("bench-app");
    settings.wecom.contact_secret = crate::config::Secret::new("bench-contact");
    settings.database.sqlite_synchronous = args.sqlite_synchronous.clone();
    if let Some(w) = args.workers {
        settings.jobs.workers = w;
    }
    settings.validate_common().map_err(|e| setup(&e))?;
    let pace = settings.wecom.calls_per_minute;
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
    // A reader of its own for counting the backlog, so counting takes no turn from siyu's pool.
    let backlog_left = BacklogCounter::open(&db_url).await?;
    if args.backlog > 0 {
        let started = Instant::now();
        let (at_fake, in_db) = seed_backlog(&fake, app.services(), args.backlog).await?;
        println!(
            "backlog: {} relations and tags.sync jobs seeded in {:.2} s (fake {:.2} s, database {:.2} s); {} left when the adds start",
            args.backlog,
            started.elapsed().as_secs_f64(),
            at_fake.as_secs_f64(),
            in_db.as_secs_f64(),
            backlog_left.count().await
        );
    }

    let total = (args.rate * args.seconds) as usize;
    println!(
        "siyu bench welcome: {total} adds at {} per second through the fake WeCom, pace {pace} calls/min per API, backlog {}",
        args.rate, args.backlog
    );
    let driver = fake.driver();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let mut adds = Vec::with_capacity(total);
    for n in 0..total {
        ticker.tick().await;
        let driver = driver.clone();
        adds.push(tokio::spawn(async move {
            let sent = SystemTime::now();
            let added = driver
                .customer_adds_via_contact_way("douyin", NewCustomer::wechat(&format!("客户{n}")))
                .await;
            added.map(|a| (a.welcome_code, a.external_userid, sent))
        }));
    }
    // welcome code -> (external_userid, when the callback was posted)
    let mut sent_at = std::collections::HashMap::new();
    for add in adds {
        if let Ok(Ok((Some(code), external_userid, sent))) = add.await {
            sent_at.insert(code, (external_userid, sent));
        }
    }
    let offered = started.elapsed();
    let adds_done_wall = SystemTime::now();
    let left_after_adds = backlog_left.count().await;
    // Wait for every welcome, or until the last add's code is past WeCom's 20 s (and a margin):
    // after that no welcome can count as in time.
    let deadline = Instant::now() + Duration::from_secs(21);
    while fake.welcome_messages().len() < sent_at.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left_at_end = backlog_left.count().await;
    let calls = fake.calls();
    app.shutdown().await;
    backlog_left.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    let welcome_path = "/cgi-bin/externalcontact/send_welcome_msg";
    // Per welcome code: the first accepted send, and the errcodes of refused ones.
    let mut accepted: std::collections::HashMap<&str, SystemTime> = Default::default();
    let mut refused: std::collections::HashMap<&str, Vec<i64>> = Default::default();
    for call in calls.iter().filter(|c| c.path == welcome_path) {
        let Ok(body) = serde_json::from_str::<serde_json::Value>(&call.body) else {
            continue;
        };
        let Some((code, _)) = body["welcome_code"]
            .as_str()
            .and_then(|c| sent_at.get_key_value(c))
        else {
            continue;
        };
        match call.errcode {
            Some(0) => {
                accepted.entry(code.as_str()).or_insert(call.at);
            }
            Some(e) => refused.entry(code.as_str()).or_default().push(e),
            None => {}
        }
    }
    let window = Duration::from_secs(20);
    let mut latencies = Vec::with_capacity(sent_at.len());
    let (mut late, mut expired, mut other_refusal, mut not_sent) = (0usize, 0usize, 0usize, 0usize);
    for (code, (_, sent)) in &sent_at {
        match accepted.get(code.as_str()) {
            Some(at) => {
                let latency = at.duration_since(*sent).unwrap_or_default();
                if latency > window {
                    late += 1;
                }
                latencies.push(latency);
            }
            None => match refused.get(code.as_str()) {
                Some(codes)
                    if codes.contains(&crate::wecom::client::code::WELCOME_CODE_EXPIRED) =>
                {
                    expired += 1
                }
                Some(_) => other_refusal += 1,
                None => not_sent += 1,
            },
        }
    }
    let failed_adds = total - sent_at.len();
    let missed = late + expired + other_refusal + not_sent + failed_adds;
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
    print_stages(&calls, &sent_at, started_wall, adds_done_wall, offered);
    if args.backlog > 0 {
        println!(
            "backlog left: {left_after_adds} of {} when the adds finished, {left_at_end} at the end",
            args.backlog
        );
    }
    println!(
        "missed: {late} sent after 20 s, {expired} refused 41050, {other_refusal} refused otherwise, {not_sent} never sent, {failed_adds} adds whose callback failed"
    );
    println!("missed_welcomes={missed}");
    println!("peak_rss_mib={:.1}", peak_rss_kib() as f64 / 1024.0);
    println!(
        "p99_vs_welcome_window_ratio={:.4}",
        p99.as_secs_f64() / 20.0
    );
    if missed > 0 {
        return Err(BenchError::Check(format!(
            "{missed} of {total} customers were not welcomed within 20 s"
        )));
    }
    Ok(())
}

/// Seeds `n` customers following `zhangsan` at the fake (no callbacks), records the same
/// customers and relations in siyu's store and queues a `tags.sync` job for each, in
/// transactions of a few thousand relations. Returns the time taken at the fake and in the store.
async fn seed_backlog(
    fake: &crate::fake::FakeWecom,
    s: &crate::app::Services,
    n: usize,
) -> Result<(Duration, Duration), BenchError> {
    use crate::store::contacts::{self, Customer, Follow};
    let setup = |e: &dyn std::fmt::Display| BenchError::Setup(e.to_string());
    let started = Instant::now();
    let ids: Vec<String> = (0..n)
        .map(|i| {
            fake.seed_customer(
                "zhangsan",
                crate::fake::NewCustomer::wechat(&format!("老客户{i}")),
            )
        })
        .collect();
    let at_fake = started.elapsed();
    let started = Instant::now();
    let tier = s
        .tiers()
        .await
        .map_err(|e| setup(&e))?
        .first()
        .map(|t| t.code.clone())
        .unwrap_or_default();
    let now = s.clock.now_ms();
    for (chunk_no, chunk) in ids.chunks(5_000).enumerate() {
        let mut tx = s.store.begin().await.map_err(|e| setup(&e))?;
        let member = crate::ids::UserId::from("zhangsan");
        for (i, id) in chunk.iter().enumerate() {
            let id = crate::ids::ExternalUserId::from(id.as_str());
            let customer = Customer {
                external_userid: id.clone(),
                name: format!("老客户{}", chunk_no * 5_000 + i),
                kind: 1,
                corp_name: String::new(),
                tier: tier.clone(),
                channel: "douyin".into(),
                first_added_at: now,
            };
            let follow = Follow {
                userid: member.clone(),
                external_userid: id.clone(),
                channel: "douyin".into(),
                state: None,
                add_way: 0,
                added_at: now,
                remark: String::new(),
                description: String::new(),
                tag_ids: Vec::new(),
                status: contacts::FollowStatus::Connected,
                ended_at: None,
                siyu_remark: None,
            };
            contacts::upsert_customer(&mut tx, &customer, now)
                .await
                .map_err(|e| setup(&e))?;
            contacts::upsert_follow(&mut tx, &follow, now)
                .await
                .map_err(|e| setup(&e))?;
            crate::app::tags::enqueue_sync(s, &mut tx, &member, &id, &format!("{BACKLOG_KEY}{id}"))
                .await
                .map_err(|e| setup(&e))?;
        }
        tx.commit().await.map_err(|e| setup(&e))?;
    }
    Ok((at_fake, started.elapsed()))
}

/// Idempotency-key prefix of the backlog's `tags.sync` jobs.
const BACKLOG_KEY: &str = "bench-backlog:";

/// Counts the backlog's jobs not yet done, through a read-only connection of its own.
struct BacklogCounter {
    pool: sqlx::SqlitePool,
}

impl BacklogCounter {
    async fn open(url: &str) -> Result<BacklogCounter, BenchError> {
        use std::str::FromStr;
        let setup = |e: &dyn std::fmt::Display| BenchError::Setup(e.to_string());
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .map_err(|e| setup(&e))?
            .read_only(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| setup(&e))?;
        Ok(BacklogCounter { pool })
    }

    /// Backlog jobs queued or running (a job waiting to retry counts); -1 if the count failed.
    async fn count(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')
             AND substr(idempotency_key, 1, length($1)) = $1",
        )
        .bind(BACKLOG_KEY)
        .fetch_one(&self.pool)
        .await
        .unwrap_or(-1)
    }

    async fn close(self) {
        self.pool.close().await;
    }
}

/// Where the time of a welcome goes, from the fake's call log: callback to the customer read,
/// read to the send (p50/p99 over the adds that have both), the calls each API answered while
/// the adds ran, and the welcomes sent without a name (their read did not happen in time).
fn print_stages(
    calls: &[crate::fake::Call],
    sent_at: &std::collections::HashMap<String, (String, std::time::SystemTime)>,
    adds_started: std::time::SystemTime,
    adds_done: std::time::SystemTime,
    offered: Duration,
) {
    use std::collections::HashMap;
    let get_path = "/cgi-bin/externalcontact/get";
    let welcome_path = "/cgi-bin/externalcontact/send_welcome_msg";
    let mut first_read: HashMap<&str, std::time::SystemTime> = HashMap::new();
    let mut per_path: HashMap<&str, (usize, usize)> = HashMap::new();
    for call in calls {
        if call.at >= adds_started && call.at <= adds_done {
            let e = per_path.entry(call.path.as_str()).or_default();
            e.0 += 1;
            if call.errcode != Some(0) {
                e.1 += 1;
            }
        }
        if call.path == get_path
            && let Some(id) = call
                .query
                .split('&')
                .find_map(|kv| kv.strip_prefix("external_userid="))
        {
            first_read.entry(id).or_insert(call.at);
        }
    }
    let mut to_read = Vec::new();
    let mut read_to_send = Vec::new();
    let mut nameless = 0usize;
    let by_code: HashMap<&str, (std::time::SystemTime, bool)> = calls
        .iter()
        .filter(|c| c.path == welcome_path && c.errcode == Some(0))
        .filter_map(|c| {
            let body: serde_json::Value = serde_json::from_str(&c.body).ok()?;
            let code = body["welcome_code"].as_str()?;
            let (key, _) = sent_at.get_key_value(code)?;
            let named = !body["text"]["content"]
                .as_str()
                .unwrap_or_default()
                .starts_with('，');
            Some((key.as_str(), (c.at, named)))
        })
        .collect();
    for (code, (external_userid, sent)) in sent_at {
        let read = first_read.get(external_userid.as_str());
        if let Some(read) = read {
            to_read.push(read.duration_since(*sent).unwrap_or_default());
        }
        if let Some((at, named)) = by_code.get(code.as_str()) {
            if !named {
                nameless += 1;
            }
            if let Some(read) = read {
                read_to_send.push(at.duration_since(*read).unwrap_or_default());
            }
        }
    }
    let ms = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "stages: callback to read p50 {:.1} ms p99 {:.1} ms ({} read); read to send p50 {:.1} ms p99 {:.1} ms; {nameless} welcomes sent without the name",
        ms(&mut to_read, 0.5),
        ms(&mut to_read, 0.99),
        to_read.len(),
        ms(&mut read_to_send, 0.5),
        ms(&mut read_to_send, 0.99),
    );
    let mut paths: Vec<_> = per_path.into_iter().collect();
    paths.sort();
    let secs = offered.as_secs_f64().max(0.001);
    let listed: Vec<String> = paths
        .iter()
        .map(|(path, (n, failed))| {
            format!(
                "{} {:.0}/s ({failed} not errcode 0)",
                path.trim_start_matches("/cgi-bin/"),
                *n as f64 / secs
            )
        })
        .collect();
    println!(
        "calls at the fake while the adds ran: {}",
        listed.join(", ")
    );
    // The spacing of the two welcome APIs' calls while the adds ran: against the pace's
    // interval, it shows whether the limiter delivers the pace it is set to.
    for path in [get_path, welcome_path] {
        let mut at: Vec<std::time::SystemTime> = calls
            .iter()
            .filter(|c| c.path == path && c.at >= adds_started && c.at <= adds_done)
            .map(|c| c.at)
            .collect();
        at.sort();
        let mut gaps: Vec<Duration> = at
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).unwrap_or_default())
            .collect();
        if gaps.is_empty() {
            continue;
        }
        println!(
            "spacing of {}: p10 {:.2} ms  p50 {:.2} ms  p90 {:.2} ms  ({} calls)",
            path.trim_start_matches("/cgi-bin/"),
            ms(&mut gaps, 0.1),
            ms(&mut gaps, 0.5),
            ms(&mut gaps, 0.9),
            at.len()
        );
    }
}

/// `siyu bench tiers`: on a temporary SQLite database with `customers` customers and `activity`
/// records, one plain scan of the activity table, then in the same run: the decide pass alone
/// (dry run), the first full evaluation (changes applied), and a nightly one (the clock a day on,
/// about 1 % of customers with new activity), each as a ratio to the scan. With `--scale`, the
/// whole measurement at 10 k, 100 k and 1 M customers, each on a fresh database.
pub async fn tiers(args: TiersArgs) -> Result<(), BenchError> {
    if !args.scale {
        let m = measure_tiers(args.customers, args.activity, "").await?;
        println!("peak_rss_mib={:.1}", m.peak_rss_mib);
        m.print_ratios("");
        return Ok(());
    }
    let mut curve = Vec::new();
    for customers in SCALE_CUSTOMERS {
        let prefix = format!("customers={customers} ");
        // Each scale's own peak: without the reset, VmHWM would carry the largest so far.
        reset_peak_rss();
        let m = measure_tiers(customers, customers * 10, &prefix).await?;
        println!("{prefix}peak_rss_mib={:.1}", m.peak_rss_mib);
        m.print_ratios(&prefix);
        curve.push(m);
    }
    println!();
    println!(
        "{:>9} {:>10} {:>8} {:>9} {:>8} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>8}",
        "customers",
        "activity",
        "scan s",
        "dry run s",
        "ratio",
        "evaluate",
        "ratio",
        "changes",
        "nightly s",
        "ratio",
        "changes",
        "rss MiB"
    );
    for m in &curve {
        println!(
            "{:>9} {:>10} {:>8.2} {:>9.2} {:>8.2} {:>9.2} {:>8.2} {:>9} {:>9.2} {:>8.2} {:>9} {:>8.1}",
            m.customers,
            m.activity,
            m.scan.as_secs_f64(),
            m.dry_run.as_secs_f64(),
            m.ratio(m.dry_run),
            m.evaluate.as_secs_f64(),
            m.ratio(m.evaluate),
            m.evaluate_changes,
            m.nightly.as_secs_f64(),
            m.ratio(m.nightly),
            m.nightly_changes,
            m.peak_rss_mib
        );
    }
    Ok(())
}

/// The customer counts of `--scale` (activity 10 × each).
const SCALE_CUSTOMERS: [u64; 3] = [10_000, 100_000, 1_000_000];

/// Share of the customers given new activity before the nightly run.
const NIGHTLY_FRACTION: f64 = 0.01;

/// One measurement of `siyu bench tiers`.
struct TiersMeasured {
    customers: u64,
    activity: u64,
    scan: Duration,
    dry_run: Duration,
    evaluate: Duration,
    evaluate_changes: u64,
    nightly: Duration,
    nightly_changes: u64,
    peak_rss_mib: f64,
}

impl TiersMeasured {
    fn ratio(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.scan.as_secs_f64()
    }

    fn print_ratios(&self, prefix: &str) {
        println!(
            "{prefix}dry_run_vs_scan_ratio={:.2}",
            self.ratio(self.dry_run)
        );
        println!(
            "{prefix}evaluate_vs_scan_ratio={:.2}",
            self.ratio(self.evaluate)
        );
        println!(
            "{prefix}nightly_vs_scan_ratio={:.2}",
            self.ratio(self.nightly)
        );
    }
}

async fn measure_tiers(
    customers: u64,
    activity: u64,
    prefix: &str,
) -> Result<TiersMeasured, BenchError> {
    use crate::app::tiers::evaluate_with;
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
        "{prefix}siyu bench tiers: generating {customers} customers and {activity} activity records in {}",
        dir.display()
    );
    let started = Instant::now();
    store
        .generate_tier_bench_data(customers, activity, now)
        .await
        .map_err(|e| setup(&e))?;
    // The generated rows into the database file before anything is timed: the checkpoint runs
    // beside the writers, and would otherwise fall into the scans.
    store.checkpoint_wal_whole().await.map_err(|e| setup(&e))?;
    println!(
        "{prefix}generated in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let services = Services::new(
        store.clone(),
        crate::wecom::client::WecomClient::new(&settings.wecom, None, clock.clone())
            .map_err(|e| setup(&e))?,
        clock.clone(),
        Arc::new(settings),
        Arc::new(Templates::load("").map_err(|e| setup(&e))?),
    );
    // The baseline is the median of three scans: one alone swings by half on a shared machine
    // (the first after generating, especially).
    let mut scans = Vec::new();
    let mut scanned = 0;
    for _ in 0..3 {
        let started = Instant::now();
        scanned = store.scan_activity().await.map_err(|e| setup(&e))?;
        scans.push(started.elapsed());
    }
    scans.sort();
    let scan = scans[1];
    println!(
        "{prefix}plain scan of {scanned} activity rows: {:.2} s (median of {:.2}, {:.2}, {:.2} s)",
        scan.as_secs_f64(),
        scans[0].as_secs_f64(),
        scans[1].as_secs_f64(),
        scans[2].as_secs_f64()
    );

    let started = Instant::now();
    let would = evaluate_with(&services, None, false, |_| {})
        .await
        .map_err(|e| setup(&e))?;
    let dry_run = started.elapsed();
    println!(
        "{prefix}dry run (decide only): {:.2} s, {} customers would change tier",
        dry_run.as_secs_f64(),
        would.changes
    );

    let started = Instant::now();
    let first = evaluate_with(&services, None, true, |_| {})
        .await
        .map_err(|e| setup(&e))?;
    // What the evaluation wrote is copied into the database file beside it: the copy's end is
    // the evaluation's, so the cost is counted and does not fall into the next measurement.
    store.checkpoint_wal_whole().await.map_err(|e| setup(&e))?;
    let evaluate = started.elapsed();
    println!(
        "{prefix}full evaluation of {customers} customers: {:.2} s ({:.0} customers/s), {} customers changed tier",
        evaluate.as_secs_f64(),
        customers as f64 / evaluate.as_secs_f64(),
        first.changes
    );

    // The next night: a day on, with a little new activity, as the nightly job would find it.
    clock.advance(86_400_000);
    let started = Instant::now();
    let active = store
        .generate_tier_bench_nightly(NIGHTLY_FRACTION, clock.now_ms())
        .await
        .map_err(|e| setup(&e))?;
    store.checkpoint_wal_whole().await.map_err(|e| setup(&e))?;
    println!(
        "{prefix}a day on: new activity for {active} customers, inserted in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let night = evaluate_with(&services, None, true, |_| {})
        .await
        .map_err(|e| setup(&e))?;
    store.checkpoint_wal_whole().await.map_err(|e| setup(&e))?;
    let nightly = started.elapsed();
    println!(
        "{prefix}nightly evaluation: {:.2} s, {} customers changed tier",
        nightly.as_secs_f64(),
        night.changes
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(TiersMeasured {
        customers,
        activity,
        scan,
        dry_run,
        evaluate,
        evaluate_changes: first.changes,
        nightly,
        nightly_changes: night.changes,
        peak_rss_mib: peak_rss_kib() as f64 / 1024.0,
    })
}

/// Resets this process's peak RSS (VmHWM) to its current RSS, so a later read gives the peak
/// since now; does nothing where /proc does not allow it.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The idle bench's CPU clock counts this process's CPU time in the right unit: a thread
    /// spinning shows up, and never as more CPU than the time it spun.
    #[test]
    fn process_cpu_time_counts_a_spinning_thread_in_seconds() {
        let before = process_cpu_time().expect("/proc/self/stat on Linux");
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        let mut spun = 0u64;
        let used = loop {
            spun = std::hint::black_box(spun.wrapping_add(1));
            let used = process_cpu_time().unwrap().saturating_sub(before);
            if used >= Duration::from_millis(200) || Instant::now() >= deadline {
                break used;
            }
        };
        let wall = started.elapsed();
        assert!(used >= Duration::from_millis(200), "{used:?} in {wall:?}");
        // One busy thread (and the test harness idling): at most the wall time, plus a tick.
        assert!(
            used <= wall + Duration::from_millis(20),
            "{used:?} in {wall:?}"
        );
    }
}
