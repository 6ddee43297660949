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
        // Two generations (taking record, renewal, release) plus the clock probe and the record
        // of the first generation.
        assert!(n <= 6, "{}: {n} lease objects", job.path().display());
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
    assert!(marker.contains(&format!("\"format\":{}", runner::workspace::WAREHOUSE_FORMAT)), "{marker}");
}

/// A warehouse of format 3 (with `_last_checkpoint` pointers) is upgraded in place: the marker
/// says the current format, so a format-3 runner refuses it instead of deleting its staging by age or following
/// a stale pointer, and the pointers go.
#[test]
fn a_format_3_warehouse_is_upgraded_in_place_and_its_checkpoint_pointers_go() {
    let env = TestEnv::new();
    env.put_drop(
        "companies",
        "2026-11-20T13",
        1,
        br#"{"event_type":"user_added","event_id":"e1","tenantID":"comp_9","userID":"u9","creationDate":1795179600000}"#,
        false,
    );
    assert!(env.output(&["run", "ingest_companies"]).status.success());
    let pointer = env.warehouse().join("_runner/checkpoints/companies/_last_checkpoint");
    std::fs::create_dir_all(pointer.parent().unwrap()).unwrap();
    std::fs::write(&pointer, r#"{"seq":0}"#).unwrap();
    std::fs::write(env.warehouse().join("_runner/format.json"), r#"{"format":3}"#).unwrap();
    let out = env.output(&["run", "ingest_companies"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let marker = std::fs::read_to_string(env.warehouse().join("_runner/format.json")).unwrap();
    let current = format!("\"format\":{}", runner::workspace::WAREHOUSE_FORMAT);
    assert!(marker.contains(&current) && marker.contains("\"upgraded_from\":3"), "{marker}");
    assert!(!pointer.exists());
    assert_eq!(env.json(&["query", "SELECT count(*) AS n FROM tenant_events"])[0]["n"], 1);
    // Format 4 (before replay commits) is upgraded by its marker alone, so a format-4 runner
    // refuses a warehouse that may hold replays instead of reading one as a compaction.
    std::fs::write(env.warehouse().join("_runner/format.json"), r#"{"format":4}"#).unwrap();
    let out = env.output(&["run", "ingest_companies"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let marker = std::fs::read_to_string(env.warehouse().join("_runner/format.json")).unwrap();
    assert!(marker.contains(&current) && marker.contains("\"upgraded_from\":4"), "{marker}");
    assert_eq!(env.json(&["query", "SELECT count(*) AS n FROM tenant_events"])[0]["n"], 1);
}

/// A warehouse of format 2 (one catalog object per partition) is upgraded in place by the
/// first command that opens it: the same rows, read from one snapshot per table.
#[test]
fn a_format_2_catalog_is_upgraded_in_place_and_reads_the_same() {
    let env = TestEnv::new();
    env.put_drop(
        "bigdatajobs",
        "2026-11-20T13",
        1,
        br#"{"event_type":"job_submitted","event_id":"e1","companyID":"c1","userID":"u1"}"#,
        false,
    );
    env.put_drop(
        "bigdatajobs",
        "2026-11-21T13",
        1,
        br#"{"event_type":"job_submitted","event_id":"e2","companyID":"c2","userID":"u1"}"#,
        false,
    );
    assert!(env.output(&["run", "ingest_bigdatajobs"]).status.success());
    let count = |env: &TestEnv| env.json(&["query", "SELECT count(*) AS n FROM job_events"])[0]["n"].to_string();
    assert!(count(&env).contains('2'), "{}", count(&env));
    // Rewrite the catalog as format 2 kept it: table.json and one object per partition.
    let cat = env.warehouse().join("_runner/catalog/job_events");
    let snapshots = cat.join("snapshots");
    let newest = std::fs::read_dir(&snapshots).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let snap: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(newest).unwrap()).unwrap();
    let table = &snap["table"];
    std::fs::write(cat.join("table.json"), table.to_string()).unwrap();
    std::fs::create_dir_all(cat.join("partitions")).unwrap();
    for p in snap["partitions"].as_array().unwrap() {
        let day = p["values"][0].as_str().unwrap();
        let location = format!("{}{}", table["location"].as_str().unwrap(), p["location"].as_str().unwrap());
        let legacy = serde_json::json!({"values": [day], "location": location});
        std::fs::write(cat.join(format!("partitions/dt={day}.json")), legacy.to_string()).unwrap();
    }
    std::fs::remove_dir_all(&snapshots).unwrap();
    std::fs::write(env.warehouse().join("_runner/format.json"), r#"{"format":2}"#).unwrap();
    // Read by a query: upgraded, the same rows, and the old objects are gone.
    assert!(count(&env).contains('2'), "{}", count(&env));
    let marker = std::fs::read_to_string(env.warehouse().join("_runner/format.json")).unwrap();
    assert!(
        marker.contains(&format!("\"format\":{}", runner::workspace::WAREHOUSE_FORMAT)) && marker.contains("upgraded_from"),
        "{marker}"
    );
    assert!(!cat.join("table.json").exists() && !cat.join("partitions/dt=2026-11-20.json").exists());
    assert!(snapshots.exists());
}

/// A SQL job whose inputs did not change since its last successful run for the same date says
/// it is up to date and does not run (nor read its inputs); `--force` runs it; new data runs it.
#[test]
fn an_up_to_date_job_is_skipped_and_force_or_new_data_runs_it() {
    let env = TestEnv::new();
    let drop = |hour: &str, id: &str| {
        let body = format!(r#"{{"event_type":"job_submitted","event_id":"{id}","companyID":"c1","userID":"u1","nbJobs":2}}"#);
        env.put_drop("bigdatajobs", hour, 1, body.as_bytes(), false);
    };
    drop("2026-11-20T13", "e1");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "ingest_bigdatajobs", "ingest_companies", "tenant_activity_daily", "--at", "2026-11-20"];
        args.extend_from_slice(extra);
        let v = env.json(&args);
        let row = v.as_array().unwrap().iter().find(|r| r["job"] == "tenant_activity_daily").cloned().unwrap();
        row["skipped"].as_str().map(str::to_string)
    };
    let up_to_date = Some("up to date".to_string());
    assert_eq!(run(&[]), None, "the first run builds");
    assert_eq!(run(&[]), up_to_date, "nothing new: skipped");
    assert_eq!(run(&["--force"]), None, "--force runs it");
    assert_eq!(run(&[]), up_to_date);
    // A new batch of the same day: the job's input changed (same catalog entry, new ledger seq).
    drop("2026-11-20T14", "e2");
    assert_eq!(run(&[]), None, "new data runs it");
    let rows = env.json(&["query", "SELECT jobs_submitted FROM tenant_activity_daily"]);
    assert_eq!(rows[0]["jobs_submitted"], 4, "{rows}");
    // Another logical date is another run.
    let v = env.json(&["run", "tenant_activity_daily", "--at", "2026-11-21"]);
    assert!(v[0]["skipped"].is_null(), "{v}");
    // The summary table says why.
    let out = env.output(&["run", "tenant_activity_daily", "--at", "2026-11-21", "--format", "csv"]);
    assert!(text(&out.stdout).contains("skipped: up to date"), "{}", text(&out.stdout));
    // runner_runs records the skips.
    let runs = env.json(&[
        "query",
        "SELECT status, count(*) AS n FROM runner_runs WHERE job = 'tenant_activity_daily' GROUP BY status ORDER BY status",
    ]);
    assert_eq!(runs[0]["status"], "skipped", "{runs}");
    assert_eq!(runs[0]["n"], 3, "{runs}");
    assert_eq!(runs[1]["n"], 4, "{runs}");
}

/// The round trips that make a job's time on S3: a SQL job that runs after the ingest of the
/// same run takes the ledger that ingest just committed from memory (no ledger or checkpoint
/// object read), and writes its output's next catalog snapshot without listing the snapshots
/// after its query (it read them beside its planning). `RUST_LOG=requests=debug` logs every
/// request in the span of the job that sent it (a span `runner=info` enables).
#[test]
fn a_job_after_an_ingest_of_its_run_reads_no_ledger_and_publishes_without_listing_first() {
    let env = env();
    let out = env
        .cmd(&["run", "ingest_bigdatajobs", "ingest_companies", "tenant_activity_daily", "--at", "2026-11-20"])
        .env("RUNNER_COUNT_REQUESTS", "1")
        .env("RUST_LOG", "requests=debug,runner=info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    let job: Vec<&str> = log.lines().filter(|l| l.contains("job=tenant_activity_daily")).collect();
    assert!(
        job.iter().any(|l| l.contains("_runner/jobs/tenant_activity_daily/")),
        "the job's requests are logged in its span: {log}"
    );
    let ledger: Vec<&&str> = job.iter().filter(|l| l.contains("_runner/ledger/") || l.contains("_runner/checkpoints/")).collect();
    assert!(ledger.is_empty(), "ledger reads in the job: {ledger:#?}");
    // After the output's first data file is written, the next catalog request is the create of
    // the next snapshot.
    let written = job.iter().position(|l| l.contains("put ") && l.contains("tenant_activity_daily/dt=")).expect("output written");
    let next = job[written..].iter().find(|l| l.contains("_runner/catalog/tenant_activity_daily/")).expect("published");
    assert!(next.contains("put ") && next.contains("/snapshots/"), "{next}");
}
