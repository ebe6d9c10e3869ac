//! The real `siyu` binary, for the tests that kill it or run its commands. Its WeCom API always
//! points at loopback (a fake, or [`NO_WECOM`]), never at the real WeCom.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{eventually, secrets};

/// A loopback port nothing listens on: calls to WeCom fail at once, and none leaves the machine.
pub const NO_WECOM: &str = "http://127.0.0.1:9";

/// The API token the binary is started with.
pub const API_TOKEN: &str = "t";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `siyu <args>` in `workdir` (so no `config/siyu.toml` is read) on `db_url`, with the test
/// corp's callback secrets, the fake's app secrets and [`API_TOKEN`].
pub fn siyu(args: &[&str], db_url: &str, workdir: &Path, api_base: &str) -> Command {
    let s = secrets();
    let mut command = Command::new(env!("CARGO_BIN_EXE_siyu"));
    command
        .args(args)
        .current_dir(workdir)
        .env("SIYU_DATABASE__URL", db_url)
        .env("SIYU_WECOM__CORP_ID", &s.corp_id)
        .env("SIYU_WECOM__CALLBACK_TOKEN", &s.token)
        .env("SIYU_WECOM__ENCODING_AES_KEY", &s.encoding_aes_key)
        .env("SIYU_WECOM__API_BASE", api_base)
        .env("SIYU_WECOM__AGENT_ID", "1000002")
        .env("SIYU_WECOM__SECRET", "app-secret")
        .env("SIYU_WECOM__CONTACT_SECRET", "contact-secret")
        .env("SIYU_API__TOKEN", API_TOKEN)
        .env("RUST_LOG", "warn")
        .env_remove("SIYU_FAILPOINT")
        .kill_on_drop(true);
    command
}

/// `siyu serve` on `127.0.0.1:port`, with short leases so a killed process's work is taken
/// back quickly.
pub fn serve(db_url: &str, port: u16, workdir: &Path, api_base: &str) -> Command {
    let mut command = siyu(&["serve"], db_url, workdir, api_base);
    command
        .env("SIYU_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("SIYU_INBOX__LEASE_SECS", "1")
        .env("SIYU_JOBS__LEASE_SECS", "2")
        .env("SIYU_JOBS__BACKOFF_BASE_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

pub fn spawn(mut command: Command) -> Child {
    command.spawn().expect("the siyu binary starts")
}

pub async fn wait_healthy(port: u16) {
    let up = eventually(Duration::from_secs(20), || async move {
        matches!(reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(up, "siyu did not come up on port {port}");
}
