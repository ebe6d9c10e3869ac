fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    siyu::cli::main()
}

/// glibc gives threads that allocate at once arenas of their own, up to eight per core, and
/// memory freed in one arena serves only that arena again. siyu's threads (the runtime's workers,
/// one per SQLite connection) would each keep a high-water mark of their own: under load that is
/// tens of MB of resident memory holding nothing (`siyu bench ingest` shows it). Two arenas keep
/// the threads' contention low and the freed memory shared.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    use std::os::raw::c_int;
    /// `M_ARENA_MAX` in glibc's `<malloc.h>`.
    const M_ARENA_MAX: c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // SAFETY: mallopt sets one of the allocator's tunables and reads nothing of ours; this runs
    // before any other thread exists. A refusal (0) leaves glibc's default, which also works.
    unsafe {
        mallopt(M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
