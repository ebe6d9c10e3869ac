//! `siyu soak`: several `siyu serve` replicas on one database, a fake WeCom that gets a share of
//! its calls wrong, and a random replica killed with SIGKILL every few seconds, while customers,
//! members, an admin, the shop and the operator do what they do (see [`drive`]). At the end the
//! faults stop, the queue drains, and [`checks`] hold siyu to DESIGN.md's promises — nothing
//! acknowledged lost, nothing sent twice, every relation's tags and note right, every task once,
//! the pace kept — printing each figure, each check, and last `soak: N checks passed, M failed`.
//!
//! The parts: [`replicas`] starts and kills the child processes, [`proxy`] is the balancer the
//! fake's callbacks go through (and where the soak sees what WeCom sent), [`drive`] is the load,
//! [`snapshot`] reads everything once the queue is drained, and [`checks`] judge it.

pub mod checks;
pub mod drive;
pub mod proxy;
pub mod replicas;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;

use crate::config::{DatabaseSettings, DbKind, Secret, redact_url};
use crate::fake::{FakeConfig, FakeWecom, FaultMix};
use crate::store::Store;
use crate::store::jobs::JobState;
use crate::testkit::CallbackSecrets;
use drive::{Api, Ctx, Paces, Retry};
use proxy::Balancer;
use replicas::{Backends, ReplicaSettings, Replicas};

/// Jobs that poll WeCom for a task's outcome on their own schedule (backing off for hours while
/// a member has not confirmed): at the end they may wait for later without anything being left
/// behind.
pub const POLL_KINDS: [&str; 2] = [
    crate::app::campaigns::run::FOLLOW_JOB,
    crate::app::groups::invite::INVITE_FOLLOW_JOB,
];

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// `siyu serve` processes on the one database (SQLite: one).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// The database server, e.g. postgres://postgres@127.0.0.1:5432/test: the soak makes a fresh
    /// database `siyu_soak_<random>` on it and drops it afterwards. Default: a fresh SQLite file.
    #[arg(long)]
    pub database_url: Option<String>,
    /// How long the load runs.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// The share of WeCom calls that get a fault (-1, 45009, 42001/40014, 5xx, a lost answer
    /// after the change was made, latency).
    #[arg(long, default_value_t = 0.2)]
    pub fault_rate: f64,
    /// Seconds between killing a random replica with SIGKILL (and starting it again); 0 never.
    #[arg(long, default_value_t = 5)]
    pub kill_every: u64,
    /// Fixes the load's choices (the faults' draws and the timing still vary).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Customers adding a member per second; the other actors keep in proportion.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// `wecom.calls_per_minute` of every replica: the pace per API path the corp must keep.
    #[arg(long, default_value_t = 300)]
    pub pace: u32,
    /// How long the queue may take to drain once the load and the faults stop.
    #[arg(long, default_value_t = 180)]
    pub drain_secs: u64,
    /// Keep the working directory (config files, replica logs, WeCom's call log) even when every
    /// check passes, and the scratch PostgreSQL database.
    #[arg(long)]
    pub keep: bool,
    /// Instead of the soak: the bad-input properties with many cases each (`siyu fuzz`, which
    /// see), on siyu of its own; the other options do not apply.
    #[arg(long)]
    pub fuzz: bool,
    /// Cases per property with `--fuzz`.
    #[arg(long, default_value_t = 2000)]
    pub cases: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("soak setup: {0}")]
    Setup(String),
    #[error("soak: reading the outcome: {0}")]
    Collect(String),
}

fn setup(e: impl std::fmt::Display) -> SoakError {
    SoakError::Setup(e.to_string())
}

/// The database the soak runs on, and how to be rid of it afterwards.
struct Database {
    url: String,
    kind: DbKind,
    /// PostgreSQL: the server URL and the scratch database's name, dropped at the end.
    scratch: Option<(String, String)>,
    label: String,
}

impl Database {
    async fn open(url: Option<&str>, dir: &std::path::Path) -> Result<Database, SoakError> {
        let Some(url) = url else {
            let file = dir.join("soak.db");
            return Ok(Database {
                url: format!("sqlite://{}", file.display()),
                kind: DbKind::Sqlite,
                scratch: None,
                label: format!("SQLite {}", file.display()),
            });
        };
        match DbKind::from_url(url).map_err(|e| setup(format!("--database-url: {e}")))? {
            DbKind::Sqlite => Ok(Database {
                url: url.to_owned(),
                kind: DbKind::Sqlite,
                scratch: None,
                label: format!("SQLite {url}"),
            }),
            DbKind::Postgres => {
                let name = format!("siyu_soak_{:016x}", rand::thread_rng().r#gen::<u64>());
                let scratch_url = crate::store::create_scratch_database(url, &name)
                    .await
                    .map_err(|e| {
                        setup(format!("cannot create {name} on {}: {e}", redact_url(url)))
                    })?;
                Ok(Database {
                    label: format!("PostgreSQL {}", redact_url(&scratch_url)),
                    url: scratch_url,
                    kind: DbKind::Postgres,
                    scratch: Some((url.to_owned(), name)),
                })
            }
        }
    }

    async fn drop_scratch(&self) {
        if let Some((server, name)) = &self.scratch
            && let Err(e) = crate::store::drop_scratch_database(server, name).await
        {
            eprintln!("soak: could not drop {name}: {e}");
        }
    }
}

fn work_dir() -> Result<PathBuf, SoakError> {
    let dir = std::env::temp_dir().join(format!(
        "siyu-soak-{}-{}",
        std::process::id(),
        crate::clock::system_now_ms()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| setup(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

fn random_token() -> String {
    use rand::distributions::Alphanumeric;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// How many checks passed and failed.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    passed: usize,
    failed: usize,
}

/// Runs the soak; true when every check passed. Everything it has to say is printed, the
/// verdict last.
pub async fn run(args: SoakArgs) -> Result<bool, SoakError> {
    let dir = work_dir()?;
    let db = Database::open(args.database_url.as_deref(), &dir).await?;
    let result = soak(&args, &db, &dir).await;
    if args.keep {
        println!("soak: the database is kept: {}", db.label);
    } else {
        db.drop_scratch().await;
    }
    match &result {
        Ok(v) if v.failed == 0 && !args.keep => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => println!(
            "soak: config files, replica logs and WeCom's call log kept in {}",
            dir.display()
        ),
    }
    let v = result?;
    println!("soak: {} checks passed, {} failed", v.passed, v.failed);
    Ok(v.failed == 0)
}

async fn soak(args: &SoakArgs, db: &Database, dir: &std::path::Path) -> Result<Verdict, SoakError> {
    let seed = args
        .seed
        .unwrap_or_else(|| rand::thread_rng().r#gen::<u32>().into());
    let replicas_wanted = args.replicas.max(1);
    let replicas_n = if db.kind == DbKind::Sqlite && replicas_wanted > 1 {
        println!(
            "soak: SQLite is one process's database: running 1 replica, not {replicas_wanted} (give --database-url postgres://... for more)"
        );
        1
    } else {
        replicas_wanted
    };
    println!(
        "soak: {replicas_n} replica(s) on {}, {} s, fault rate {:.2}, kill every {}, {} adds/s, pace {}/min per API path, seed {seed}",
        db.label,
        args.seconds,
        args.fault_rate,
        if args.kill_every == 0 {
            "never".to_owned()
        } else {
            format!("{} s", args.kill_every)
        },
        args.rate,
        args.pace
    );

    // The fake WeCom, with the corp's staff and the tier groups' chats.
    let secrets = CallbackSecrets::generate();
    let (app_secret, contact_secret, api_token) = (random_token(), random_token(), random_token());
    let fake = FakeWecom::new(FakeConfig {
        corp_id: secrets.corp_id.clone(),
        agent_id: crate::fake::DEFAULT_AGENT_ID,
        app_secret: app_secret.clone(),
        contact_secret: contact_secret.clone(),
        callback_url: None,
        callback_token: secrets.token.clone(),
        encoding_aes_key: secrets.encoding_aes_key.clone(),
        mass_cap: Default::default(),
    });
    for (userid, name) in [
        ("zhangsan", "张三"),
        ("lisi", "李四"),
        ("wangwu", "王五"),
        (drive::OPERATOR, "运营"),
    ] {
        fake.add_staff(userid, name);
    }
    for (tier, chat, owner) in drive::TIER_GROUPS {
        fake.add_group_chat(chat, owner, &format!("{tier} 群"), 200);
    }
    // Longer than the replicas' request timeout: a lost answer is lost, not late.
    fake.set_timeout_hold(Duration::from_secs(3));
    let (fake_addr, _fake_server) = fake
        .serve("127.0.0.1:0".parse().map_err(setup)?)
        .await
        .map_err(setup)?;

    let backends = Arc::new(Backends::default());
    let balancer = Balancer::new(
        backends.clone(),
        Arc::new(secrets.crypto()),
        &secrets.corp_id,
        0.1,
    );
    let (callback_url, _balancer_server) = balancer.serve().await.map_err(setup)?;
    fake.set_callback_url(&callback_url);

    let settings = ReplicaSettings {
        database_url: db.url.clone(),
        fake_base: format!("http://{fake_addr}"),
        corp_id: secrets.corp_id.clone(),
        agent_id: crate::fake::DEFAULT_AGENT_ID,
        app_secret,
        contact_secret,
        callback_token: secrets.token.clone(),
        encoding_aes_key: secrets.encoding_aes_key.clone(),
        api_token: api_token.clone(),
        calls_per_minute: args.pace,
        operators: vec![drive::OPERATOR.into()],
    };
    let mut rig = Rig {
        replicas: Replicas::new(replicas_n, dir, &settings, backends.clone())?,
        fake,
        backends,
        balancer,
        db,
        api_token,
        dir,
    };
    // One at a time: the first applies the migrations.
    for i in 0..rig.replicas.len() {
        rig.replicas.start(i).await?;
    }
    let result = soak_with(args, seed, &mut rig).await;
    rig.replicas.stop_all().await;
    result
}

/// What the run is made of once it is set up.
struct Rig<'a> {
    fake: FakeWecom,
    backends: Arc<Backends>,
    balancer: Arc<Balancer>,
    replicas: Replicas,
    db: &'a Database,
    api_token: String,
    dir: &'a std::path::Path,
}

/// The operator's setup through the API, before any fault: the channels and the tier groups.
/// Answers each tier's join way.
async fn operator_setup(api: &Api) -> Result<HashMap<String, String>, SoakError> {
    for channel in drive::channels() {
        match api
            .call(
                reqwest::Method::POST,
                "/channels",
                Some(&channel),
                Retry::Never,
            )
            .await
            .map_err(setup)?
        {
            (201, _) => {}
            (status, body) => return Err(setup(format!("POST /channels: {status} {body}"))),
        }
    }
    let mut join_ways = HashMap::new();
    for (tier, chat, _) in drive::TIER_GROUPS {
        let body = json!({"chat_ids": [chat], "invitation": "恭喜成为{{ tier }}！扫码加入专属群。",
                          "room_base_name": format!("{tier}-群"), "auto_create_room": true});
        match api
            .call(
                reqwest::Method::PUT,
                &format!("/tier-groups/{tier}"),
                Some(&body),
                Retry::Safe,
            )
            .await
            .map_err(setup)?
        {
            (200, answer) => {
                let config_id = answer["config_id"].as_str().ok_or_else(|| {
                    setup(format!("PUT /tier-groups/{tier}: no config_id: {answer}"))
                })?;
                join_ways.insert(tier.to_owned(), config_id.to_owned());
            }
            (status, answer) => {
                return Err(setup(format!("PUT /tier-groups/{tier}: {status} {answer}")));
            }
        }
    }
    Ok(join_ways)
}

/// A replica that exited without being killed: its index and exit status.
type Crash = (usize, String);

/// Every `every` (±30 %) SIGKILLs a random replica and starts it again (counting in `kills`),
/// until `stop`; replicas that died by themselves are started again too. Answers those.
async fn killer(
    replicas: &mut Replicas,
    every: Duration,
    seed: u64,
    kills: &std::sync::atomic::AtomicU64,
    mut stop: watch::Receiver<bool>,
) -> Result<Vec<Crash>, SoakError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let mut crashed = Vec::new();
    loop {
        let ms = every.as_millis().max(10) as u64;
        let wait = if every.is_zero() {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(rng.gen_range(ms * 7 / 10..=ms * 13 / 10))
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        while let Some((i, status)) = replicas.exited() {
            eprintln!(
                "soak: replica {i} exited by itself ({status}); see {}",
                replicas.log_of(i).display()
            );
            crashed.push((i, status));
            replicas.restart(i).await?;
        }
        if *stop.borrow() {
            return Ok(crashed);
        }
        if !every.is_zero() {
            let i = rng.gen_range(0..replicas.len());
            replicas.restart(i).await?;
            kills.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A line every few seconds while the load runs.
async fn progress(
    started: Instant,
    store: Store,
    fake: FakeWecom,
    balancer: Arc<Balancer>,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
        let (sent, acked) = {
            let t = balancer.traffic();
            let acked = t.callbacks.values().filter(|c| c.acknowledged > 0).count();
            (t.callbacks.len(), acked)
        };
        let jobs: BTreeMap<&str, i64> = store
            .count_jobs_by_state()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(s, n)| (s.as_str(), n))
            .collect();
        let faults: u64 = fake.faults_injected().values().sum();
        println!(
            "[{:>4} s] callbacks {sent} sent, {acked} acknowledged; jobs {} done, {} queued, {} running, {} failed; faults {faults}; kills {}; adds {}",
            started.elapsed().as_secs(),
            jobs.get("done").unwrap_or(&0),
            jobs.get("queued").unwrap_or(&0),
            jobs.get("running").unwrap_or(&0),
            jobs.get("failed").unwrap_or(&0),
            ctx.counters.kills.load(Ordering::Relaxed),
            ctx.counters.adds.load(Ordering::Relaxed),
        );
    }
}

/// Waits until nothing is left to do: `GET /api/v1/queue` shows no inbox event waiting or
/// being handled, no job running and none due, and no job but WeCom polls is due soon (a
/// member's notice waits for its window); seen twice in a row. Meanwhile the members confirm
/// the tasks that still come (invitations decided at the end), so that their polls end. False
/// at the deadline.
async fn drain(ctx: &Ctx, store: &Store, poll_kinds: &[&str], within: Duration) -> bool {
    let api = &ctx.api;
    let deadline = Instant::now() + within;
    let mut quiet_in_a_row = 0;
    while Instant::now() < deadline {
        drive::confirm_tasks(ctx, None).await;
        let quiet = match api.get("/queue").await {
            Ok(q) => {
                let n = |v: &serde_json::Value| v.as_i64().unwrap_or(i64::MAX);
                let idle = n(&q["jobs"]["running"]) == 0
                    && n(&q["inbox"]["pending"]) == 0
                    && n(&q["inbox"]["processing"]) == 0
                    && n(&q["job_lag_ms"]) == 0;
                idle && !soon_due(store, poll_kinds).await
            }
            Err(_) => false,
        };
        quiet_in_a_row = if quiet { quiet_in_a_row + 1 } else { 0 };
        if quiet_in_a_row >= 2 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// A queued job other than a poll is due within a few seconds (a notice window, a backoff).
async fn soon_due(store: &Store, poll_kinds: &[&str]) -> bool {
    let soon = crate::clock::system_now_ms() + 10_000;
    let filter = crate::store::jobs::JobFilter {
        state: Some(JobState::Queued),
        limit: 500,
        ..Default::default()
    };
    match store.jobs_page(&filter).await {
        Ok(jobs) => jobs
            .iter()
            .any(|j| j.run_at <= soon && !poll_kinds.contains(&j.kind.as_str())),
        Err(_) => true,
    }
}

async fn soak_with(args: &SoakArgs, seed: u64, rig: &mut Rig<'_>) -> Result<Verdict, SoakError> {
    let (fake, balancer, replicas, dir) = (
        rig.fake.clone(),
        rig.balancer.clone(),
        &mut rig.replicas,
        rig.dir,
    );
    let store = Store::connect(&DatabaseSettings {
        url: Secret::new(&rig.db.url),
        max_connections: 2,
        ..DatabaseSettings::default()
    })
    .await
    .map_err(setup)?;
    let api = Api::new(rig.backends.clone(), &rig.api_token);
    let join_ways = operator_setup(&api).await?;
    fake.set_fault_mix(
        "*",
        FaultMix::wecom_like(args.fault_rate, Duration::from_millis(300)),
    );
    let ctx = Arc::new(Ctx::new(fake.clone(), api.clone(), join_ways, seed));
    let (stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    let mut actors = drive::start(&ctx, Paces::for_rate(args.rate), seed, &stop);
    let printer = tokio::spawn(progress(
        started,
        store.clone(),
        fake.clone(),
        balancer.clone(),
        ctx.clone(),
        stop.clone(),
    ));
    let run_for = tokio::time::sleep(Duration::from_secs(args.seconds));
    let crashed = {
        let killing = killer(
            replicas,
            Duration::from_secs(args.kill_every),
            seed,
            &ctx.counters.kills,
            stop.clone(),
        );
        tokio::pin!(killing);
        tokio::select! {
            _ = run_for => {
                let _ = stop_tx.send(true);
                killing.await?
            }
            killed = &mut killing => {
                let _ = stop_tx.send(true);
                killed?
            }
        }
    };
    while actors.join_next().await.is_some() {}
    let _ = printer.await;
    let load_secs = started.elapsed().as_secs_f64();

    // The end: WeCom behaves, the members confirm what waits for them, the queue drains.
    fake.clear_faults();
    let drain_started = Instant::now();
    let drained = drain(
        &ctx,
        &store,
        &POLL_KINDS,
        Duration::from_secs(args.drain_secs),
    )
    .await;
    println!(
        "load ran {load_secs:.0} s; {} in {:.1} s",
        if drained {
            "the queue drained"
        } else {
            "the queue had NOT drained"
        },
        drain_started.elapsed().as_secs_f64()
    );
    let snapshot = snapshot::take(&store, &ctx, &balancer, args.pace).await?;
    keep_evidence(dir, &fake);
    print_figures(
        &snapshot, &ctx, &balancer, &fake, &crashed, replicas, &store,
    )
    .await;

    let mut outcomes = checks::run_all(&snapshot);
    outcomes.push(checks::Outcome {
        name: "replicas died only when killed",
        problems: crashed
            .iter()
            .map(|(i, status)| {
                format!(
                    "replica {i} exited by itself ({status}); see {}",
                    replicas.log_of(*i).display()
                )
            })
            .collect(),
    });
    for o in &outcomes {
        println!("{}", o.line());
    }
    store.close().await;
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    Ok(Verdict {
        passed: outcomes.len() - failed,
        failed,
    })
}

/// The fake's call log (one JSON object a line) and its state, beside the replicas' logs, for an
/// engineer following up a failed check.
fn keep_evidence(dir: &std::path::Path, fake: &FakeWecom) {
    let calls: Vec<String> = fake
        .calls()
        .iter()
        .filter_map(|c| serde_json::to_string(c).ok())
        .collect();
    let state = serde_json::to_string_pretty(&fake.dump()).unwrap_or_default();
    for (file, text) in [
        ("wecom-calls.jsonl", calls.join("\n")),
        ("wecom-state.json", state),
    ] {
        if let Err(e) = std::fs::write(dir.join(file), text) {
            eprintln!("soak: could not write {file}: {e}");
        }
    }
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64()
}

fn joined<K: std::fmt::Display, V: std::fmt::Display>(
    items: impl IntoIterator<Item = (K, V)>,
) -> String {
    let parts: Vec<String> = items.into_iter().map(|(k, v)| format!("{k} {v}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

async fn print_figures(
    s: &checks::Snapshot,
    ctx: &Ctx,
    balancer: &Balancer,
    fake: &FakeWecom,
    crashed: &[Crash],
    replicas: &Replicas,
    store: &Store,
) {
    let c = &ctx.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let acked = s.callbacks.iter().filter(|c| c.acknowledged > 0).count();
    let duplicates: i64 = s.inbox.iter().map(|e| e.duplicates).sum();
    let reclaimed = s.inbox.iter().filter(|e| e.attempts > 1).count();
    println!("figures:");
    println!(
        "  callbacks: {} sent, {acked} acknowledged, {} never acknowledged, {} redelivered on purpose, {duplicates} counted as duplicates by siyu, {reclaimed} handled again after a kill; balancer answered 502 {} times, 503 {} times",
        s.callbacks.len(),
        s.callbacks.len() - acked,
        balancer.redelivered.load(Ordering::Relaxed),
        balancer.answered_502.load(Ordering::Relaxed),
        balancer.answered_503.load(Ordering::Relaxed),
    );
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for j in &s.jobs {
        *by_state.entry(j.state.as_str()).or_default() += 1;
        if j.state == JobState::Failed {
            let why = checks::reason_class(j.last_error.as_deref().unwrap_or(""));
            *failed.entry(format!("{}: {why}", j.kind)).or_default() += 1;
        }
    }
    println!("  jobs: {} ({})", s.jobs.len(), joined(by_state));
    for (why, n) in &failed {
        println!("    failed {n}× {why}");
    }
    println!("  faults injected: {}", joined(fake.faults_injected()));
    println!(
        "  kills: {} (SIGKILL and restart, {} starts after the first); replicas that died by themselves: {}",
        get(&c.kills),
        replicas.restarts,
        crashed.len()
    );
    let peaks = checks::peak_per_minute(&s.calls);
    let mut busiest: Vec<(&String, &(usize, i64))> = peaks.iter().collect();
    busiest.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
    println!(
        "  WeCom calls: {}; most in a minute (pace {}): {}",
        s.calls.len(),
        s.calls_per_minute,
        joined(
            busiest
                .iter()
                .take(4)
                .map(|(p, (n, _))| (p.trim_start_matches("/cgi-bin/"), n))
        )
    );
    let (latencies, missed) = checks::welcome_figures(s);
    println!(
        "  welcomes: {} sent, callback to send_welcome_msg p50 {:.2} s, p99 {:.2} s, max {:.2} s; missed {} ({})",
        latencies.len(),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        latencies.last().map_or(0.0, Duration::as_secs_f64),
        missed.values().sum::<usize>(),
        joined(missed.iter())
    );
    let tiers = store.customers_per_tier().await.unwrap_or_default();
    let moves = store.tier_moves_since(0).await.unwrap_or_default();
    println!(
        "  customers by tier: {}; tier changes: {}",
        joined(tiers),
        joined(
            moves
                .iter()
                .map(|(from, to, n)| (format!("{from}→{to}"), n))
        )
    );
    println!(
        "  campaigns: {} created, {} runs; mass-message tasks at WeCom {}, Moments tasks {}",
        s.campaigns.len(),
        s.campaigns.iter().map(|c| c.runs.len()).sum::<usize>(),
        s.mass_messages.len(),
        s.moments.len()
    );
    println!(
        "  load: adds {} ({} never acknowledged), edits {} ({} took a siyu tag off), customers left {}, deleted by members {}, tag renames {}, tag deletes {}, tags added {}, activity {} batches ({} items), joins {} (+{} through a forwarded code), leaves {}, removals by owners {}, campaigns {}, confirmations {}, publications {}, other callbacks never acknowledged {}, API requests without an answer {}",
        get(&c.adds),
        get(&c.adds_undelivered),
        get(&c.edits),
        get(&c.tags_taken_off),
        get(&c.customers_left),
        get(&c.customers_deleted),
        get(&c.tag_renames),
        get(&c.tag_deletes),
        get(&c.tag_creates),
        get(&c.activity_batches),
        get(&c.activity_items),
        get(&c.joins),
        get(&c.misplaced_joins),
        get(&c.leaves),
        get(&c.removals_done),
        get(&c.campaigns),
        get(&c.confirmations),
        get(&c.publications),
        get(&c.undelivered),
        get(&c.api_failures),
    );
}
