//! Failpoints for crash tests: `RUNNER_FAILPOINT=<name>[,<name>...]` makes the process kill
//! itself with SIGKILL when it reaches a named point, exactly like `kill -9` from outside.
//! `<name>=stop` pauses it there instead, the first time it is reached: the whole process stops (SIGSTOP, every thread,
//! lease renewals included, as a suspended VM or a long GC pause would) until it gets SIGCONT.
//! The names are listed in [`POINTS`]; the crash tests in `tests/crash.rs` go through all of them.

use std::sync::OnceLock;

/// Every failpoint: the ingest path in the order a batch reaches them, compaction, ledger
/// checkpoints and their clean-up, SQL jobs, the Glue half of a catalog write (on S3 only).
pub const POINTS: &[&str] = &[
    "ingest.after_first_staged_file",
    "ingest.before_commit",
    "ingest.after_commit",
    "ingest.mid_publish",
    "ingest.before_catalog",
    "ingest.after_published",
    "compact.before_commit",
    "compact.after_commit",
    "ledger.checkpoint_written",
    "ledger.pointer_moved",
    "ledger.mid_cleanup",
    "sql.before_publish",
    "replay.before_commit",
    "replay.after_commit",
    "glue.before_mirror",
];

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("RUNNER_FAILPOINT")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    })
}

/// Kills the process if failpoint `name` is armed (pauses it, armed as `<name>=stop`).
pub fn hit(name: &str) {
    debug_assert!(POINTS.contains(&name), "unknown failpoint {name}");
    // A pause happens once per process: the test that resumes it expects it to go on.
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if armed().iter().any(|a| a.strip_suffix("=stop") == Some(name)) && !PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        #[allow(clippy::disallowed_macros)]
        {
            eprintln!("failpoint {name}: SIGSTOP");
        }
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGSTOP);
        }
        return;
    }
    if armed().iter().any(|a| a == name) {
        // Straight to stderr: the process dies on the next line, before any buffer is flushed.
        #[allow(clippy::disallowed_macros)]
        {
            eprintln!("failpoint {name}: SIGKILL");
        }
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
