//! The command line. Every failure ends as one clear line on stderr and a non-zero exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Settings, redact_url};
use crate::server::App;
use crate::store::Store;
use crate::store::inbox::{EventFilter, InboxStatus};

#[derive(Debug, Parser)]
#[command(
    name = "siyu",
    version,
    about = "WeCom (企业微信) private-domain operations bot"
)]
pub struct Cli {
    /// Config file (default: config/siyu.toml when it exists). SIYU_SECTION__KEY variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The callback server, API, workers and scheduler in one process.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// A consistent copy of the SQLite database in FILE, while siyu runs (PostgreSQL: pg_dump).
    Backup {
        /// Where the copy goes; it must not exist yet.
        file: std::path::PathBuf,
    },
    /// Inspect and replay inbox events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Import records from a file.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Tier evaluation by hand.
    Tiers {
        #[command(subcommand)]
        command: TiersCommand,
    },
    /// Users of the console and the API, and their API tokens.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Tier groups by hand.
    Groups {
        #[command(subcommand)]
        command: GroupsCommand,
    },
    /// Benchmarks that print ratios measured in one run.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// A fake WeCom (API, fault injection, admin endpoints) for tests and demos, until Ctrl-C.
    FakeWecom(FakeWecomArgs),
    /// siyu and the fake WeCom on loopback, wired together, playing a short scenario.
    Demo(crate::demo::DemoArgs),
    /// Several `siyu serve` replicas on one database against a faulty fake WeCom, killed at
    /// random under load; then checks that nothing was lost or done twice.
    Soak(crate::soak::SoakArgs),
    /// Property tests with many cases: the crypto, the event parser, and random input to every
    /// API route and to the callback, against siyu on a temporary SQLite database.
    Fuzz {
        /// Cases per property (the API's are shared out among its routes).
        #[arg(long, default_value_t = 2000)]
        cases: u32,
    },
}

#[derive(Debug, clap::Args)]
pub struct FakeWecomArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: std::net::SocketAddr,
    #[arg(long, default_value = crate::fake::DEFAULT_CORP_ID)]
    pub corp_id: String,
    #[arg(long, default_value_t = crate::fake::DEFAULT_AGENT_ID)]
    pub agent_id: i64,
    /// The app secret accepted by gettoken.
    #[arg(long, default_value = "app-secret")]
    pub secret: String,
    /// The customer-contact secret accepted by gettoken.
    #[arg(long, default_value = "contact-secret")]
    pub contact_secret: String,
    /// Callback token (the official vector V1's by default).
    #[arg(long, default_value = crate::fake::DEFAULT_CALLBACK_TOKEN)]
    pub token: String,
    /// Callback EncodingAESKey (the official vector V1's by default).
    #[arg(long, default_value = crate::fake::DEFAULT_ENCODING_AES_KEY)]
    pub aes_key: String,
    /// Where driver actions post callbacks, e.g. http://127.0.0.1:8080/wecom/callback.
    #[arg(long)]
    pub callback_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Put events back to pending so the running server hands them to their handlers again.
    Replay {
        /// Only events in this status: unhandled (default), failed or done are put back to
        /// pending; processing takes back events whose dispatcher's lease ran out (it died).
        /// pending is refused: those events already wait for the dispatcher.
        #[arg(long, default_value = "unhandled")]
        status: String,
        /// Only events of this kind, e.g. change_external_contact.add_external_contact.
        #[arg(long)]
        kind: Option<String>,
        /// Only the event with this id.
        #[arg(long)]
        id: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Activity from the shop: a .csv (header kind,customer,amount,count,at,id) or .jsonl file.
    /// Streams, resumes an interrupted import of the same file, writes rejected records with
    /// their reasons to FILE.rejected.jsonl.
    Activity {
        file: PathBuf,
        /// No live progress (bar or line) on stderr.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TiersCommand {
    /// Re-evaluate every customer now (the nightly job does the same). The tag swaps and notes
    /// are jobs that a running `siyu serve` carries out.
    Evaluate {
        /// Print the changes (customer, from → to, the rule and metrics) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user. The password is asked for (or read from the first line of stdin).
    Add {
        name: String,
        /// admin (everything), operator (channels, pins, groups, campaigns, retries) or viewer.
        #[arg(long)]
        role: String,
    },
    /// The users, their roles and whether they are disabled.
    List,
    /// Disable a user: their sign-ins and API tokens stop working.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
    /// Set a user's password (asked for, or read from stdin).
    Passwd { name: String },
    /// Create an API token for a user (for scripts); it is printed once and kept hashed.
    Token {
        name: String,
        /// What the token is for, e.g. "shop".
        #[arg(long, default_value = "api")]
        label: String,
    },
    /// The API tokens (never their secrets).
    Tokens,
    /// Revoke an API token by its id.
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Compare every tier group at WeCom with what siyu holds and fix it (the nightly job does
    /// the same): joins and leaves whose callback was lost, missing removal requests, overflow
    /// groups, dismissed groups, customers never invited. Invitations and removal requests are
    /// jobs that a running `siyu serve` carries out.
    Reconcile {
        /// Print what it would change and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The callback endpoint on a temporary SQLite database against a bare axum handler.
    Ingest(crate::bench::IngestArgs),
    /// The load `bench ingest` runs in a process of its own (secrets from its environment).
    #[command(hide = true)]
    IngestLoad(crate::bench::load::LoadArgs),
    /// Callback-to-welcome latency at a steady rate of customer adds, against the fake WeCom.
    Welcome(crate::bench::WelcomeArgs),
    /// Full tier evaluation of many customers against a plain scan of their activity.
    Tiers(crate::bench::TiersArgs),
    /// `siyu serve` left idle: its CPU use and resident memory against their budgets.
    Idle(crate::bench::IdleArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Demo(_) => init_demo_tracing(&crate::demo::log_path()),
        _ => init_tracing(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("siyu: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // An empty message: the command has said it all (the soak's last line is its verdict).
            if !message.is_empty() {
                eprintln!("siyu: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The demo's log goes to `file` (`RUST_LOG`, default info); the terminal, where the demo tells
/// its story, gets warnings and errors only. Without the file, only those.
fn init_demo_tracing(file: &std::path::Path) {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let terminal = fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(LevelFilter::WARN);
    let log = std::fs::File::create(file).ok().map(|f| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        fmt::layer()
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .with_filter(filter)
    });
    let _ = tracing_subscriber::registry()
        .with(terminal)
        .with(log)
        .try_init();
}

async fn run(cli: Cli) -> Result<(), String> {
    let load = || Settings::load(cli.config.as_deref()).map_err(|e| e.to_string());
    match cli.command {
        Command::Serve => {
            let app = App::build(load()?).await.map_err(|e| e.to_string())?;
            app.run_until_signal().await;
            Ok(())
        }
        Command::Migrate => {
            let settings = load()?;
            let store = open_store(&settings).await?;
            let ran = store.migrate().await.map_err(|e| e.to_string())?;
            println!(
                "applied {ran} migration(s) to {}",
                redact_url(settings.database.url.expose())
            );
            Ok(())
        }
        Command::Backup { file } => {
            if file.exists() {
                return Err(format!(
                    "{}: exists; siyu backup writes a new file only",
                    file.display()
                ));
            }
            let settings = load()?;
            let store = open_store(&settings).await?;
            let started = std::time::Instant::now();
            store
                .backup_sqlite(&file)
                .await
                .map_err(|e| format!("backup to {}: {e}", file.display()))?;
            let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            println!(
                "copied {} to {} ({:.1} MiB in {:.1} s)",
                redact_url(settings.database.url.expose()),
                file.display(),
                bytes as f64 / (1024.0 * 1024.0),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Events {
            command: EventsCommand::Replay { status, kind, id },
        } => {
            let status = replay_status(&status)?;
            let store = open_store(&load()?).await?;
            store.migrate().await.map_err(|e| e.to_string())?;
            if status == InboxStatus::Processing {
                let now = crate::clock::Clock::default().now_ms();
                let r = store
                    .requeue_stuck_events(kind.as_deref(), id, now)
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "requeued {} event(s) stuck in processing; a running `siyu serve` picks them up within its poll interval",
                    r.requeued
                );
                if r.leased > 0 {
                    let secs = ((r.lease_until.unwrap_or(now) - now).max(0) + 999) / 1000;
                    println!(
                        "left {} event(s) alone: a dispatcher holds their lease for up to {secs} s more (run again after that if it died)",
                        r.leased
                    );
                }
                return Ok(());
            }
            let filter = EventFilter {
                kind,
                status: Some(status),
            };
            let n = store
                .requeue_events(&filter, id)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "requeued {n} event(s); a running `siyu serve` picks them up within its poll interval"
            );
            Ok(())
        }
        Command::Bench {
            command: BenchCommand::Ingest(args),
        } => crate::bench::ingest(args).await.map_err(|e| e.to_string()),
        Command::Bench {
            command: BenchCommand::IngestLoad(args),
        } => crate::bench::load::run(args)
            .await
            .map_err(|e| e.to_string()),
        Command::Bench {
            command: BenchCommand::Welcome(args),
        } => crate::bench::welcome(args).await.map_err(|e| e.to_string()),
        Command::Bench {
            command: BenchCommand::Tiers(args),
        } => crate::bench::tiers(args).await.map_err(|e| e.to_string()),
        Command::Bench {
            command: BenchCommand::Idle(args),
        } => crate::bench::idle(args).await.map_err(|e| e.to_string()),
        Command::FakeWecom(args) => fake_wecom(args).await,
        Command::Tiers {
            command: TiersCommand::Evaluate { dry_run },
        } => evaluate_tiers(load()?, dry_run).await,
        Command::Groups {
            command: GroupsCommand::Reconcile { dry_run },
        } => reconcile_groups(load()?, dry_run).await,
        Command::Users { command } => manage_users(load()?, command).await,
        Command::Import {
            command: ImportCommand::Activity { file, quiet },
        } => import_activity(load()?, &file, !quiet).await,
        Command::Demo(args) => crate::demo::run(args).await.map_err(|e| e.to_string()),
        Command::Soak(args) if args.fuzz => fuzz(args.cases).await,
        Command::Soak(args) => match crate::soak::run(args).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(String::new()),
            Err(e) => Err(e.to_string()),
        },
        Command::Fuzz { cases } => fuzz(cases).await,
    }
}

/// `siyu fuzz` and `siyu soak --fuzz`: every bad-input property with `cases` cases.
async fn fuzz(cases: u32) -> Result<(), String> {
    let report = crate::fuzz::run(cases).await;
    match report.failed() {
        0 => Ok(()),
        n => Err(format!("{n} fuzz properties failed")),
    }
}

/// The statuses `siyu events replay --status` takes, as the README's command table lists them.
const REPLAY_STATUSES: &str = "unhandled, failed, done, processing";

/// The status `siyu events replay` works on. `unhandled`, `failed` and `done` events are put
/// back to pending; `processing` takes back events whose lease ran out; `pending` is refused
/// (those events are already waiting for the dispatcher).
fn replay_status(status: &str) -> Result<InboxStatus, String> {
    match InboxStatus::parse(status) {
        Some(InboxStatus::Pending) => Err(format!(
            "--status pending: pending events already wait for the dispatcher, there is nothing to replay; use one of {REPLAY_STATUSES}"
        )),
        Some(st) => Ok(st),
        None => Err(format!("--status {status:?}: use one of {REPLAY_STATUSES}")),
    }
}

async fn fake_wecom(args: FakeWecomArgs) -> Result<(), String> {
    use crate::fake::{FakeConfig, FakeWecom};
    // Refuse bad callback settings now rather than at the first driver action.
    crate::wecom::crypto::Crypto::new(&args.token, &args.aes_key, &args.corp_id)
        .map_err(|e| format!("--token/--aes-key/--corp-id: {e}"))?;
    let fake = FakeWecom::new(FakeConfig {
        corp_id: args.corp_id.clone(),
        agent_id: args.agent_id,
        app_secret: args.secret,
        contact_secret: args.contact_secret,
        callback_url: args.callback_url.clone(),
        callback_token: args.token,
        encoding_aes_key: args.aes_key,
        ..FakeConfig::default()
    });
    let (addr, server) = fake
        .serve(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!(
        "fake WeCom for corp {} listening on http://{addr}",
        args.corp_id
    );
    println!("  API:   http://{addr}/cgi-bin/...  (set wecom.api_base = \"http://{addr}\")");
    match &args.callback_url {
        Some(url) => println!("  callbacks go to {url}"),
        None => println!("  no callback URL yet: POST /fake/callback-url {{\"url\": ...}}"),
    }
    println!(
        "  admin: POST   http://{addr}/fake/faults  {{\"path\",\"times\",\"errcode\"|\"http_status\"|\"timeout\",\"error_rate\",\"latency_ms\"}}"
    );
    println!("         DELETE http://{addr}/fake/faults");
    println!("         POST   http://{addr}/fake/expire-tokens");
    println!("         GET    http://{addr}/fake/calls");
    println!("         GET    http://{addr}/fake/state");
    println!("         POST   http://{addr}/fake/staff         {{\"userid\",\"name\"}}");
    println!("         POST   http://{addr}/fake/callback-url  {{\"url\"}}");
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    server.abort();
    Ok(())
}

/// The use-cases' services for a one-shot command (no server, no workers: the jobs it decides
/// are carried out by a running `siyu serve`).
async fn cli_services(settings: Settings) -> Result<crate::app::Services, String> {
    use crate::app::templates::Templates;
    use std::sync::Arc;
    crate::app::validate_settings(&settings).map_err(|e| format!("config: {e}"))?;
    let store = open_store(&settings).await?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let clock = crate::clock::Clock::default();
    let wecom =
        crate::wecom::client::WecomClient::new(&settings.wecom, Some(store.clone()), clock.clone())
            .map_err(|e| e.to_string())?;
    let templates = Templates::load(&settings.templates.dir).map_err(|e| e.to_string())?;
    Ok(crate::app::Services::new(
        store,
        wecom,
        clock,
        Arc::new(settings),
        Arc::new(templates),
    ))
}

async fn import_activity(
    settings: Settings,
    file: &std::path::Path,
    progress: bool,
) -> Result<(), String> {
    let services = cli_services(settings).await?;
    let s = crate::app::import::import_activity(&services, file, progress)
        .await
        .map_err(|e| e.to_string())?;
    let rejects = if s.rejected > 0 {
        format!(
            " (reasons in {})",
            crate::app::import::rejects_path(file).display()
        )
    } else {
        String::new()
    };
    println!(
        "{}{} lines: {} stored, {} duplicates, {} rejected{rejects}",
        if s.resumed { "resumed; " } else { "" },
        s.lines,
        s.stored,
        s.duplicates,
        s.rejected,
    );
    Ok(())
}

async fn evaluate_tiers(settings: Settings, dry_run: bool) -> Result<(), String> {
    let services = cli_services(settings).await?;
    let report = crate::app::tiers::evaluate_with(&services, None, !dry_run, |c| {
        println!(
            "{}  {} → {}  ({})",
            c.external_userid, c.from, c.to, c.reason
        );
    })
    .await
    .map_err(|e| e.to_string())?;
    println!(
        "{} customers evaluated, {} change(s){}",
        report.customers,
        report.changes,
        if dry_run {
            " would be made (dry run: nothing changed)"
        } else {
            " made"
        }
    );
    // Value segments rank everyone against everyone: a full evaluation updates them too.
    let segments = crate::app::segments::evaluate(&services, !dry_run)
        .await
        .map_err(|e| e.to_string())?;
    for c in &segments {
        println!(
            "{}  segment {} → {}  ({})",
            c.external_userid,
            c.from.as_deref().unwrap_or("-"),
            c.to,
            c.rfm
        );
    }
    println!(
        "{} segment change(s){}",
        segments.len(),
        if dry_run { " would be made" } else { " made" }
    );
    Ok(())
}

/// A password from the terminal (not echoed), or the first line of stdin when it is not one.
fn read_password(prompt: &str) -> Result<String, String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt).map_err(|e| format!("password: {e}"))?;
        let again = rpassword::prompt_password("again: ").map_err(|e| format!("password: {e}"))?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("password from stdin: {e}"))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

async fn manage_users(settings: Settings, command: UsersCommand) -> Result<(), String> {
    use crate::app::users::{self, Change, Principal, Role};
    let services = cli_services(settings).await?;
    let cli = &Principal::cli();
    let s = &services;
    let e = |e: crate::app::AppError| e.to_string();
    // Every change is audited as made from the command line (its operator is whoever may run
    // siyu on this machine: an admin).
    let audit = |what: String, after: Option<serde_json::Value>| {
        let store = services.store.clone();
        let now = services.clock.now_ms();
        async move {
            let after = after.map(|a| a.to_string());
            store
                .record_audit(
                    now,
                    "cli",
                    "admin",
                    "cli",
                    &what,
                    0,
                    None,
                    None,
                    after.as_deref(),
                )
                .await
                .map_err(|e| format!("audit log: {e}"))
        }
    };
    match command {
        UsersCommand::Add { name, role } => {
            let role = Role::parse(&role)
                .ok_or_else(|| format!("--role {role:?}: admin, operator or viewer"))?;
            let password = read_password(&format!("password for {name}: "))?;
            let u = users::add(s, cli, &name, role, &password)
                .await
                .map_err(e)?;
            audit(
                format!("users add {}", u.name),
                serde_json::to_value(&u).ok(),
            )
            .await?;
            println!("added {} ({})", u.name, u.role);
        }
        UsersCommand::List => {
            for u in users::list(s).await.map_err(e)? {
                let state = if u.disabled { "  disabled" } else { "" };
                println!("{}  {}{state}", u.name, u.role);
            }
        }
        UsersCommand::Disable { name } => {
            let disable = Change {
                disabled: Some(true),
                ..Change::default()
            };
            users::change(s, cli, &name, disable).await.map_err(e)?;
            audit(format!("users disable {name}"), None).await?;
            println!("disabled {name}");
        }
        UsersCommand::Enable { name } => {
            let enable = Change {
                disabled: Some(false),
                ..Change::default()
            };
            users::change(s, cli, &name, enable).await.map_err(e)?;
            audit(format!("users enable {name}"), None).await?;
            println!("enabled {name}");
        }
        UsersCommand::Passwd { name } => {
            let password = read_password(&format!("new password for {name}: "))?;
            users::set_password(s, cli, &name, &password)
                .await
                .map_err(e)?;
            audit(format!("users passwd {name}"), None).await?;
            println!("password of {name} changed");
        }
        UsersCommand::Token { name, label } => {
            let made = users::create_token(s, cli, &name, &label)
                .await
                .map_err(e)?;
            let (id, secret) = (made.id, made.token);
            audit(
                format!("users token {name} ({label})"),
                Some(serde_json::json!({ "token": id })),
            )
            .await?;
            eprintln!("token {id} for {name} ({label}); it is shown this once:");
            println!("{secret}");
        }
        UsersCommand::Tokens => {
            for t in users::tokens(s).await.map_err(e)? {
                let state = if t.revoked_at.is_some() {
                    "  revoked"
                } else {
                    ""
                };
                println!("{}  {}  {}{state}", t.id, t.user, t.label);
            }
        }
        UsersCommand::Revoke { id } => {
            users::revoke_token(s, cli, id).await.map_err(e)?;
            audit(format!("users revoke {id}"), None).await?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

async fn reconcile_groups(settings: Settings, dry_run: bool) -> Result<(), String> {
    let services = cli_services(settings).await?;
    let report = crate::app::groups::reconcile::reconcile(&services, dry_run)
        .await
        .map_err(|e| e.to_string())?;
    for line in &report.changes {
        println!("{line}");
    }
    println!(
        "{} group(s) read, {} change(s){}",
        report.groups_read,
        report.changes.len(),
        if dry_run {
            " would be made (dry run: nothing changed)"
        } else {
            " made"
        }
    );
    Ok(())
}

async fn open_store(settings: &Settings) -> Result<Store, String> {
    Store::connect(&settings.database).await.map_err(|e| {
        format!(
            "cannot open the database {}: {e}",
            redact_url(settings.database.url.expose())
        )
    })
}
