//! Crash points for the crash tests: with `SIYU_FAILPOINT=<name>` in its environment the process
//! aborts (as a kill -9 would stop it) when it reaches the point of that name. Each point sits
//! right after a commit whose decision and jobs must survive together; a test kills the process
//! there and finds the effect done after a restart. Without the variable a point costs one
//! cached lookup.

use std::sync::OnceLock;

/// Aborts the process when `SIYU_FAILPOINT` names this point.
pub fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("SIYU_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("siyu: failpoint {name} reached; aborting");
        std::process::abort();
    }
}
