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
    /// Inspect and replay inbox events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Benchmarks that print ratios measured in one run.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Put events back to pending so the running server hands them to their handlers again.
    Replay {
        /// Only events in this status (default: unhandled).
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
pub enum BenchCommand {
    /// The callback endpoint on a temporary SQLite database against a bare axum handler.
    Ingest(crate::bench::IngestArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
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
            eprintln!("siyu: {message}");
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
        Command::Events {
            command: EventsCommand::Replay { status, kind, id },
        } => {
            let status = InboxStatus::parse(&status)
                .ok_or_else(|| format!("--status {status:?}: one of unhandled, failed, done"))?;
            let store = open_store(&load()?).await?;
            store.migrate().await.map_err(|e| e.to_string())?;
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
    }
}

async fn open_store(settings: &Settings) -> Result<Store, String> {
    Store::connect(&settings.database).await.map_err(|e| {
        format!(
            "cannot open the database {}: {e}",
            redact_url(settings.database.url.expose())
        )
    })
}
