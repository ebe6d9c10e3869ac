//! WeCom's side of `siyu bench ingest`, in a process of its own (`siyu bench ingest-load`): it
//! seals the events, sends them over keep-alive connections and reports how it went as one line
//! of JSON. Apart, its sealed requests and its connections' buffers are not in the peak memory of
//! the process that runs siyu, and each target is driven by a fresh client.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::fake::sender::{CallbackSender, Sealed};
use crate::testkit::{CallbackSecrets, add_contact_xml};

use super::BenchError;

/// The environment the load takes its secrets from: not arguments, which `ps` shows.
const CORP_ID_VAR: &str = "SIYU_BENCH_LOAD_CORP_ID";
const TOKEN_VAR: &str = "SIYU_BENCH_LOAD_TOKEN";
const AES_KEY_VAR: &str = "SIYU_BENCH_LOAD_AES_KEY";

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The callback URL to send to.
    #[arg(long)]
    pub url: String,
    /// Distinct events sent (customer adds `0..events`).
    #[arg(long)]
    pub events: usize,
    /// Requests in flight at once (one keep-alive connection each).
    #[arg(long)]
    pub concurrency: usize,
    /// `CreateTime` of every event (Unix seconds): the same in each run, so the same events.
    #[arg(long)]
    pub create_time: i64,
    /// The first this many events sent once, untimed, before the run: opens the connections.
    #[arg(long, default_value_t = 0)]
    pub warm_up: usize,
}

/// What one run of the load saw.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LoadResult {
    pub events_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Index of every event answered 200.
    pub accepted: Vec<usize>,
    /// The load process's own peak resident memory.
    pub peak_rss_kib: u64,
    /// When the timed run sent its first request (Unix ms, the machine's clock).
    pub started_at_ms: i64,
}

/// Runs `siyu bench ingest-load` against `url` and waits for its result.
pub async fn run_apart(
    secrets: &CallbackSecrets,
    url: &str,
    events: usize,
    concurrency: usize,
    create_time: i64,
    warm_up: usize,
) -> Result<LoadResult, BenchError> {
    let exe = std::env::current_exe().map_err(|e| BenchError::Setup(e.to_string()))?;
    let output = tokio::process::Command::new(exe)
        .args(["bench", "ingest-load", "--url", url])
        .arg(format!("--events={events}"))
        .arg(format!("--concurrency={concurrency}"))
        .arg(format!("--create-time={create_time}"))
        .arg(format!("--warm-up={warm_up}"))
        .env(CORP_ID_VAR, &secrets.corp_id)
        .env(TOKEN_VAR, &secrets.token)
        .env(AES_KEY_VAR, &secrets.encoding_aes_key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| BenchError::Setup(format!("starting the load process: {e}")))?;
    if !output.status.success() {
        return Err(BenchError::Setup(format!(
            "the load process failed ({})",
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .map_err(|e| BenchError::Setup(format!("the load process's result does not read: {e}")))
}

/// `siyu bench ingest-load`: seals the events, sends them, prints a [`LoadResult`] line.
pub async fn run(args: LoadArgs) -> Result<(), BenchError> {
    let var = |name: &str| {
        std::env::var(name).map_err(|_| BenchError::Setup(format!("{name} is not set")))
    };
    let secrets = CallbackSecrets {
        corp_id: var(CORP_ID_VAR)?,
        token: var(TOKEN_VAR)?,
        encoding_aes_key: var(AES_KEY_VAR)?,
    };
    let crypto = Arc::new(
        crate::wecom::crypto::Crypto::new(
            &secrets.token,
            &secrets.encoding_aes_key,
            &secrets.corp_id,
        )
        .map_err(|e| BenchError::Setup(e.to_string()))?,
    );
    let concurrency = args.concurrency.max(1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .http1_only()
        .build()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let sender = CallbackSender::new(args.url, crypto, "1000002").with_client(client);
    // Sealed before timing: the client's encryption is not what we measure.
    let sealed: Arc<Vec<Sealed>> = Arc::new(
        (0..args.events as u64)
            .map(|n| sender.seal(&add_contact_xml(&secrets.corp_id, n, args.create_time)))
            .collect(),
    );
    if args.warm_up > 0 {
        let warm = Arc::new(sealed[..sealed.len().min(args.warm_up)].to_vec());
        drive(&sender, warm, concurrency).await;
    }
    let mut result = drive(&sender, sealed, concurrency).await;
    result.peak_rss_kib = super::peak_rss_kib();
    let line = serde_json::to_string(&result).map_err(|e| BenchError::Setup(e.to_string()))?;
    println!("{line}");
    Ok(())
}

/// Sends every sealed request over `concurrency` connections, each task taking the next.
async fn drive(
    sender: &CallbackSender,
    sealed: Arc<Vec<Sealed>>,
    concurrency: usize,
) -> LoadResult {
    let next = Arc::new(AtomicUsize::new(0));
    let started_at_ms = crate::clock::system_now_ms();
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
    let pick_ms = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            * 1000.0
    };
    accepted.sort_unstable();
    LoadResult {
        events_per_sec: accepted.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pick_ms(0.50),
        p99_ms: pick_ms(0.99),
        accepted,
        peak_rss_kib: 0,
        started_at_ms,
    }
}
