//! The replicas: real `siyu serve` child processes of this binary on one database, each on its
//! own port with a config file the soak writes, killed with SIGKILL and started again while the
//! load runs. [`Backends`] is what the balancer and the soak's API client see of them: who is
//! up now.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::Notify;

use super::SoakError;

/// What every replica's config file says, beyond its port.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    pub database_url: String,
    pub fake_base: String,
    pub corp_id: String,
    pub agent_id: i64,
    pub app_secret: String,
    pub contact_secret: String,
    pub callback_token: String,
    pub encoding_aes_key: String,
    pub api_token: String,
    /// `wecom.calls_per_minute`: the pace per API path the pace check holds the corp to.
    pub calls_per_minute: u32,
    /// Members told of churn and group changes (`notify.operators`).
    pub operators: Vec<String>,
}

/// A TOML string: JSON's string syntax is TOML's basic string for everything serde_json emits.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl ReplicaSettings {
    /// The config file of the replica listening on `port`. Timeouts, leases, backoffs and batch
    /// windows are short, so that what a fault or a kill leaves behind resolves within the run;
    /// demotions take no grace days, so that the shop's refunds demote within it too.
    pub fn config_file(&self, port: u16) -> String {
        let operators: Vec<String> = self.operators.iter().map(|o| quoted(o)).collect();
        format!(
            r#"# Written by `siyu soak` for one replica.
[server]
listen = "127.0.0.1:{port}"
shutdown_grace_secs = 2

[database]
url = {database_url}
max_connections = 4

[wecom]
corp_id = {corp_id}
agent_id = {agent_id}
secret = {app_secret}
contact_secret = {contact_secret}
callback_token = {callback_token}
encoding_aes_key = {encoding_aes_key}
api_base = {fake_base}
connect_timeout_ms = 1000
request_timeout_ms = 2000
max_retries = 3
retry_base_ms = 50
calls_per_minute = {calls_per_minute}
max_limiter_wait_ms = 2000
frequency_window_secs = 2

[api]
token = {api_token}

[jobs]
workers = 4
urgent_workers = 2
lease_secs = 3
max_attempts = 8
backoff_base_ms = 200
backoff_max_secs = 5
poll_interval_ms = 250

[inbox]
lease_secs = 2

[notify]
operators = [{operators}]
batch_secs = 2

[groups]
invite_batch_secs = 2
removal_batch_secs = 2
follow_every_secs = 5

[retention]
inbox_days = 3650
jobs_days = 3650
sessions_days = 3650

[[tiers]]
code = "member"
name = "普通会员"
demote_after_days = 0

[[tiers]]
code = "partner"
name = "合作伙伴"
demote_after_days = 0
promote.any = [
    {{ metric = "spend", window_days = 90, min = 2000 }},
    {{ metric = "referral", window_days = 90, min = 3 }},
]
keep.any = [
    {{ metric = "spend", window_days = 90, min = 1000 }},
    {{ metric = "referral", window_days = 90, min = 2 }},
]

[[tiers]]
code = "senior_partner"
name = "高级合作伙伴"
demote_after_days = 0
promote.all = [
    {{ metric = "spend", window_days = 90, min = 10000 }},
    {{ metric = "referral", window_days = 90, min = 10 }},
]
keep.all = [
    {{ metric = "spend", window_days = 90, min = 5000 }},
    {{ metric = "referral", window_days = 90, min = 5 }},
]
"#,
            database_url = quoted(&self.database_url),
            corp_id = quoted(&self.corp_id),
            agent_id = self.agent_id,
            app_secret = quoted(&self.app_secret),
            contact_secret = quoted(&self.contact_secret),
            callback_token = quoted(&self.callback_token),
            encoding_aes_key = quoted(&self.encoding_aes_key),
            fake_base = quoted(&self.fake_base),
            calls_per_minute = self.calls_per_minute,
            api_token = quoted(&self.api_token),
            operators = operators.join(", "),
        )
    }
}

/// The replicas' addresses and which of them answer now (started and ready, not killed).
#[derive(Default)]
pub struct Backends {
    state: Mutex<Vec<(SocketAddr, bool)>>,
    /// Woken when a replica becomes ready.
    ready: Notify,
}

impl Backends {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, bool)>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, addr: SocketAddr, up: bool) {
        let mut state = self.lock();
        match state.iter_mut().find(|(a, _)| *a == addr) {
            Some(entry) => entry.1 = up,
            None => state.push((addr, up)),
        }
        drop(state);
        if up {
            self.ready.notify_waiters();
        }
    }

    /// The replicas up now.
    pub fn live(&self) -> Vec<SocketAddr> {
        self.lock()
            .iter()
            .filter(|(_, up)| *up)
            .map(|(a, _)| *a)
            .collect()
    }

    /// A replica that is up, chosen at random; while none is (the only one was just killed)
    /// waits for one up to `patience`, as a balancer holding a request would.
    pub async fn pick(&self, patience: Duration) -> Option<SocketAddr> {
        use rand::seq::SliceRandom;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(addr) = self.live().choose(&mut rand::thread_rng()) {
                return Some(*addr);
            }
            if tokio::time::timeout_at(deadline, ready).await.is_err() {
                return None;
            }
        }
    }
}

struct Replica {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    config: PathBuf,
}

/// The running replicas.
pub struct Replicas {
    exe: PathBuf,
    dir: PathBuf,
    list: Vec<Replica>,
    backends: Arc<Backends>,
    http: reqwest::Client,
    /// Starts after the first one of each replica.
    pub restarts: u32,
}

fn free_port() -> Result<u16, SoakError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| SoakError::Setup(format!("no free port: {e}")))
}

/// How long a starting replica has to answer `/readyz`.
const READY_WITHIN: Duration = Duration::from_secs(60);

impl Replicas {
    /// Writes each replica's config file in `dir`; starts none yet.
    pub fn new(
        n: usize,
        dir: &Path,
        settings: &ReplicaSettings,
        backends: Arc<Backends>,
    ) -> Result<Replicas, SoakError> {
        let exe = std::env::current_exe()
            .map_err(|e| SoakError::Setup(format!("cannot find this program: {e}")))?;
        let mut list = Vec::with_capacity(n);
        for i in 0..n {
            let port = free_port()?;
            let config = dir.join(format!("replica-{i}.toml"));
            std::fs::write(&config, settings.config_file(port))
                .map_err(|e| SoakError::Setup(format!("{}: {e}", config.display())))?;
            list.push(Replica {
                port,
                child: None,
                log: dir.join(format!("replica-{i}.log")),
                config,
            });
        }
        Ok(Replicas {
            exe,
            dir: dir.to_path_buf(),
            list,
            backends,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            restarts: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.list[i].port))
    }

    pub fn log_of(&self, i: usize) -> &Path {
        &self.list[i].log
    }

    /// Starts replica `i` and waits until it answers `/readyz`; then the balancer may send to it.
    pub async fn start(&mut self, i: usize) -> Result<(), SoakError> {
        let replica = &mut self.list[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log)
            .map_err(|e| SoakError::Setup(format!("{}: {e}", replica.log.display())))?;
        let err_log = log
            .try_clone()
            .map_err(|e| SoakError::Setup(format!("{}: {e}", replica.log.display())))?;
        let mut command = Command::new(&self.exe);
        command
            .arg("serve")
            .arg("--config")
            .arg(&replica.config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err_log))
            .kill_on_drop(true);
        // The config file is the whole truth: a SIYU_* variable of the caller's would override it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SIYU_") {
                command.env_remove(key);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command
            .spawn()
            .map_err(|e| SoakError::Setup(format!("cannot start replica {i}: {e}")))?;
        let url = format!("http://127.0.0.1:{}/readyz", replica.port);
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(SoakError::Setup(format!(
                    "replica {i} exited at start ({status}); its log: {}",
                    replica.log.display()
                )));
            }
            if matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success()) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SoakError::Setup(format!(
                    "replica {i} not ready within {READY_WITHIN:?}; its log: {}",
                    replica.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica.child = Some(child);
        self.backends
            .set(SocketAddr::from(([127, 0, 0, 1], replica.port)), true);
        Ok(())
    }

    /// SIGKILL: no graceful anything. The balancer stops choosing it at once (a health check
    /// would notice within moments); requests already on their way to it fail.
    pub async fn kill(&mut self, i: usize) {
        let addr = self.addr(i);
        self.backends.set(addr, false);
        if let Some(mut child) = self.list[i].child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Kills replica `i` and starts it again on the same port and database.
    pub async fn restart(&mut self, i: usize) -> Result<(), SoakError> {
        self.kill(i).await;
        self.restarts += 1;
        self.start(i).await
    }

    /// A replica that died by itself (not killed by the soak), if any: its index and status.
    pub fn exited(&mut self) -> Option<(usize, String)> {
        self.list.iter_mut().enumerate().find_map(|(i, r)| {
            let child = r.child.as_mut()?;
            match child.try_wait() {
                Ok(Some(status)) => Some((i, status.to_string())),
                _ => None,
            }
        })
    }

    /// Kills every replica (the end of the run).
    pub async fn stop_all(&mut self) {
        for i in 0..self.list.len() {
            self.kill(i).await;
        }
    }
}
