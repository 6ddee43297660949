//! State that stays small: after many runs the runner's own state in the warehouse is bounded
//! (ledger records behind a checkpoint, leases, run records, staging), `runner state` says so,
//! and a warehouse of another layout is refused instead of read as empty.

mod common;

use std::path::Path;

use common::{TestEnv, text, walk};

/// Checkpoints every two commits, clean-ups as soon as a later run sees them, replaced
/// versions deleted at once, compaction at two files: everything this test checks happens
/// within a few runs.
fn env() -> TestEnv {
    let env = TestEnv::with_job_edits(
        "[ingest]\nmax_objects_per_batch = 10\ncheckpoint_every = 2\ncheckpoint_retention = \"0s\"\n",
        &[
            ("compact_events.toml", "min_files = 8", "min_files = 2"),
            ("compact_events.toml", "keep_replaced = \"1h\"", "keep_replaced = \"0s\""),
        ],
    );
    let args =
        ["simulate", "--out", "drops", "--tenants", "3", "--users-per-tenant", "2", "--days", "2", "--invalid-share", "0.05"];
    let o = env.output(&[&args[..], &["--end-date", "2026-11-20"]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    env
}

fn files_under(root: &Path) -> usize {
    if root.exists() { walk(root).len() } else { 0 }
}

fn dirs_under(root: &Path) -> usize {
    fn count(p: &Path) -> usize {
        std::fs::read_dir(p).map(|rd| rd.flatten().filter(|e| e.path().is_dir()).map(|e| 1 + count(&e.path())).sum()).unwrap_or(0)
    }
    count(root)
}

#[tokio::test]
async fn many_runs_leave_bounded_state_and_runner_state_reports_it() {
    let env = env();
    let runner = env.root().join("warehouse/_runner");
    let mut sizes = Vec::new();
    // Bounded: twelve runs of every job.
    for i in 0..12 {
        let out = env.output(&["run", "--all", "--at", &format!("2026-11-20T{:02}:00:00Z", 8 + i)]);
        assert!(out.status.success(), "run {i}: {}", text(&out.stderr));
        sizes.push(files_under(&runner.join("ledger/runner_runs")));
    }
    // The run history's ledger holds only the commits after its checkpoint.
    assert!(sizes.iter().all(|n| *n <= 8), "runner_runs ledger records stay few: {sizes:?}");
    // Leases: a bounded number of objects per job, whatever the number of runs.
    for job in std::fs::read_dir(runner.join("leases")).unwrap().flatten() {
        let n = files_under(&job.path());
        assert!(n <= 4, "{}: {n} lease objects", job.path().display());
    }
    // Staging of published batches is gone, folders included.
    assert_eq!(files_under(&runner.join("staging")), 0);
    let folders = dirs_under(&runner.join("staging"));
    assert!(folders <= 3, "no empty staging folder of a batch is left (one per ledger at most): {folders}");
    // runner_runs: compacted, so a day holds few files however many runs it recorded.
    // (Compaction merges a day once it holds `min_files` = 8 files, so a day never holds more.)
    let jobs = env.workspace().jobs.jobs.len() as u64;
    let run_files = files_under(&env.warehouse().join("runner_runs"));
    assert!(run_files <= 8, "{run_files} runner_runs files after 12 x {jobs} runs");
    let n: u64 = env.query("SELECT count(*) AS n FROM runner_runs").await[1].parse().unwrap();
    assert_eq!(n, 12 * jobs, "every run is still recorded");
    // Quarantine partitions compact like the event tables'.
    let quarantine: Vec<String> = walk(&env.warehouse().join("quarantine")).iter().map(|p| p.display().to_string()).collect();
    assert!(quarantine.iter().all(|p| p.contains("/stream=") && p.contains("/v=")), "{quarantine:?}");

    // `runner state` reports what is kept, with the newest checkpoint.
    let state = env.json(&["state"]);
    let rows = state.as_array().unwrap();
    let row = |area: &str, kind: &str| rows.iter().find(|r| r["area"] == area && r["kind"] == kind).cloned();
    let commits = row("bigdatajobs", "commit records").unwrap_or_default();
    assert!(row("bigdatajobs", "checkpoints").unwrap()["checkpoint"].as_str().unwrap().starts_with("seq "), "{state}");
    assert!(commits.is_null() || commits["objects"].as_u64().unwrap() <= 4, "{state}");
    assert!(row("leases", "lease objects").is_some(), "{state}");
    // Status and history read the recent runs.
    let status = env.output(&["status", "--format", "csv"]);
    assert!(text(&status.stdout).contains("ingest_bigdatajobs,succeeded"), "{}", text(&status.stdout));
    let history = env.json(&["history", "tenants", "--limit", "3"]);
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    let all = env.json(&["history", "tenants", "--limit", "500"]);
    assert_eq!(all.as_array().unwrap().len(), 12, "past the recent runs, history reads the table");
}

#[test]
fn a_warehouse_of_another_layout_is_refused_with_what_to_do() {
    let env = TestEnv::new();
    // Written before format markers: a catalog, no marker.
    let old = env.warehouse().join("_runner/catalog/job_events");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("table.json"), "{}").unwrap();
    for args in [&["query", "SELECT 1"][..], &["run", "ingest_companies"], &["tables"]] {
        let out = env.output(args);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("older runner") && err.contains("Rebuild it") && err.contains("runner run --all"), "{err}");
    }
    // Written by a newer runner.
    std::fs::write(env.warehouse().join("_runner/format.json"), r#"{"format": 99}"#).unwrap();
    let out = env.output(&["query", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("newer runner"), "{}", text(&out.stderr));
    // A new warehouse is marked by its first run.
    let fresh = TestEnv::new();
    assert!(fresh.output(&["run", "ingest_companies"]).status.success());
    let marker = std::fs::read_to_string(fresh.warehouse().join("_runner/format.json")).unwrap();
    assert!(marker.contains("\"format\":2"), "{marker}");
}
