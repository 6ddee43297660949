//! Exactly once under crashes and concurrency, with the real binary in child processes.
//!
//! Each case starts from the same simulated drops (deterministic for the seed), interrupts
//! ingest with SIGKILL (at every failpoint, and at arbitrary moments from outside) or runs two
//! ingests at once, then lets a normal run finish. The tables, and the files a reader listing the
//! partition folders sees, must equal those of one uninterrupted run.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestEnv, query_csv, resume, table_files, wait_stopped};

/// Small batches, and a ledger checkpoint every two commits whose clean-up the next run may do
/// at once: every failpoint of checkpoints and clean-ups is reached in one `run --all`.
const SETTINGS: &str = "[ingest]\nmax_objects_per_batch = 25\ncheckpoint_every = 2\ncheckpoint_retention = \"0s\"\n";

/// The binary on `env`, its summary discarded (children are killed mid-run).
fn runner(env: &TestEnv, args: &[&str]) -> Command {
    let mut c = env.cmd(args);
    c.stdout(Stdio::null());
    c
}

fn fresh() -> TestEnv {
    fresh_with(SETTINGS)
}

fn fresh_with(settings: &str) -> TestEnv {
    // Compaction at 2 files, so `run --all` compacts the partitions several batches wrote.
    let env = TestEnv::with_job_edits(settings, &[("compact_events.toml", "min_files = 8", "min_files = 2")]);
    let out = runner(
        &env,
        &[
            "simulate",
            "--out",
            "drops",
            "--tenants",
            "6",
            "--users-per-tenant",
            "3",
            "--days",
            "7",
            "--end-date",
            "2026-11-20",
            "--seed",
            "11",
            "--noise",
            "--invalid-share",
            "0.01",
            "--duplicate-share",
            "0.05",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env
}

fn run_ok(env: &TestEnv) {
    let out = runner(env, &["run", "--all", "--no-lock"]).output().unwrap();
    assert!(out.status.success(), "run failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Everything a reader can observe: every row of every table (run-specific columns left out)
/// and the data files under the table folders.
async fn snapshot(env: &TestEnv) -> Vec<String> {
    let ws = env.workspace();
    let mut out = Vec::new();
    for q in [
        "SELECT * FROM job_events ORDER BY source_object, event_id, companyID, event_time, jobID, event_type",
        "SELECT * FROM tenant_events ORDER BY source_object, event_id, companyID, event_time, userID, event_type",
        "SELECT stream, source_object, byte_offset, raw, reason_code, field, reason, dt FROM quarantine ORDER BY source_object, byte_offset",
    ] {
        out.extend(query_csv(&ws, q).await);
    }
    // Source URLs name the temporary folder; compare what is inside it.
    let root = env.root().display().to_string();
    let mut out: Vec<String> = out.into_iter().map(|l| l.replace(&root, "<root>")).collect();
    out.extend(table_files(&env.warehouse()));
    out
}

async fn reference() -> Vec<String> {
    let env = fresh();
    run_ok(&env);
    let snap = snapshot(&env).await;
    assert!(snap.len() > 500, "the fixture should hold real work: {} lines", snap.len());
    snap
}

#[tokio::test]
async fn sigkill_at_every_failpoint_then_rerun_equals_an_uninterrupted_run() {
    let expected = reference().await;
    for point in runner::failpoint::POINTS
        .iter()
        .filter(|p| !p.starts_with("sql.") && !p.starts_with("glue.") && !p.starts_with("replay."))
    {
        let env = fresh();
        let out = runner(&env, &["run", "--all", "--no-lock"]).env("RUNNER_FAILPOINT", point).output().unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point}: the failpoint must kill the run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        run_ok(&env);
        let got = snapshot(&env).await;
        assert!(got == expected, "{point}: tables differ after recovery\n{}", diff(&expected, &got));
        // And the recovered warehouse is quiescent: another run finds nothing new.
        let again = runner(&env, &["run", "--all", "--no-lock", "--format", "json"]).stdout(Stdio::piped()).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
        for job in v.as_array().unwrap().iter().filter(|j| j["kind"] == "ingest") {
            assert_eq!(job["objects"], 0, "{point}: {job}");
            assert_eq!(job["recovered_batches"], 0, "{point}: {job}");
        }
    }
}

#[tokio::test]
async fn sigkill_from_outside_at_arbitrary_moments() {
    let expected = reference().await;
    let env = fresh();
    // Bounded: at most 8 interrupted attempts, each killed after a growing delay.
    for delay_ms in [5u64, 20, 40, 80, 120, 200, 300, 500] {
        let mut child = runner(&env, &["run", "--all", "--no-lock"]).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            break;
        }
    }
    run_ok(&env);
    let got = snapshot(&env).await;
    assert!(got == expected, "tables differ after repeated SIGKILL\n{}", diff(&expected, &got));
}

#[tokio::test]
async fn two_runs_at_the_same_time_never_duplicate() {
    let expected = reference().await;
    let env = fresh();
    let a = runner(&env, &["run", "--all", "--no-lock"]).spawn().unwrap();
    let b = runner(&env, &["run", "--all", "--no-lock"]).spawn().unwrap();
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let got = snapshot(&env).await;
    assert!(got == expected, "tables differ after concurrent runs\n{}", diff(&expected, &got));
}

fn diff(expected: &[String], got: &[String]) -> String {
    let e: std::collections::BTreeSet<&String> = expected.iter().collect();
    let g: std::collections::BTreeSet<&String> = got.iter().collect();
    let missing: Vec<_> = e.difference(&g).take(5).collect();
    let extra: Vec<_> = g.difference(&e).take(5).collect();
    format!("lines {} vs {}\nmissing: {missing:#?}\nextra: {extra:#?}", expected.len(), got.len())
}

/// Every create-if-absent takes effect and then answers "already exists" (what a retried 5xx of
/// an applied conditional PUT looks like on S3): each is recognized as the run's own write, so
/// the run goes through without re-planning and equals a clean one.
#[tokio::test]
async fn an_applied_create_answered_already_exists_is_the_runs_own() {
    let expected = reference().await;
    let env = fresh();
    let out = runner(&env, &["run", "--all", "--format", "json"])
        .env("RUNNER_FAULTS", "seed=1,ambiguous_create=1")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert!(!e.contains("re-planning"), "its own commit taken for another run's: {e}");
    let got = snapshot(&env).await;
    assert!(got == expected, "tables differ after ambiguous creates\n{}", diff(&expected, &got));
}

/// Runs on a store that fails requests before and after they took effect, answers slowly and
/// answers applied creates with "already exists" (deterministic per seed), one of them under
/// job leases, then one clean run: the tables equal an uninterrupted run's, and no lease stays
/// held past its ttl. Bounded: three seeds, three faulty runs each.
#[tokio::test]
async fn faulty_store_runs_then_a_clean_run_equal_an_uninterrupted_run() {
    let expected = reference().await;
    for seed in 1..=3 {
        let env = fresh();
        let scheduler = short_leases(&env);
        for i in 0..3 {
            let faults = format!("seed={seed}{i},error_before=0.004,error_after=0.004,ambiguous_create=0.3,slow=0.01,slow_ms=30");
            let args: &[&str] = if i == 1 { &["run", "--all"] } else { &["run", "--all", "--no-lock"] };
            let out = runner(&env, args).env("RUNNER_FAULTS", &faults).env("RUNNER__SCHEDULER_DIR", &scheduler).output().unwrap();
            // A run may fail on an injected error (or find a lease a failed release left held:
            // 75); it must fail cleanly, never panic or hang.
            assert!(matches!(out.status.code(), Some(0 | 1 | 75)), "{faults}: {}", String::from_utf8_lossy(&out.stderr));
        }
        run_ok(&env);
        let got = snapshot(&env).await;
        assert!(got == expected, "seed {seed}: tables differ after faulty runs\n{}", diff(&expected, &got));
        // A lease a faulty run could not give back has expired by now.
        std::thread::sleep(Duration::from_millis(1100));
        let locked = runner(&env, &["run", "--all"]).env("RUNNER__SCHEDULER_DIR", &scheduler).output().unwrap();
        assert!(locked.status.success(), "seed {seed}: {}", String::from_utf8_lossy(&locked.stderr));
    }
}

/// An incremental SQL job that runs while a batch is committed but not yet published (its
/// files still in staging) reads the tables without it and must read it once it is published:
/// its watermark and its up-to-date fingerprint stop at the last batch published whole.
#[tokio::test]
async fn a_batch_published_after_an_incremental_job_ran_is_read_by_its_next_run() {
    let setup = || {
        let env = TestEnv::with_job_edits("[ingest]\nmax_objects_per_batch = 1000\n", &[]);
        for (end, days, seed) in [("2026-11-20", "3", "11"), ("2026-11-21", "1", "12")] {
            let args = ["simulate", "--out", "drops", "--tenants", "4", "--users-per-tenant", "2", "--days", days];
            let out = runner(&env, &args).args(["--end-date", end, "--seed", seed]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        env
    };
    let ok = |env: &TestEnv, args: &[&str]| {
        let out = runner(env, args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let activity = "SELECT * FROM tenant_activity_daily ORDER BY dt, companyID";
    let reference = setup();
    ok(&reference, &["run", "ingest_companies", "ingest_bigdatajobs"]);
    ok(&reference, &["run", "tenant_activity_daily", "--at", "2026-11-21"]);
    let expected = reference.query(activity).await;

    let env = setup();
    // Everything but the new day's job events: those are one batch, committed, then the run dies.
    ok(&env, &["run", "ingest_companies"]);
    let out = runner(&env, &["run", "--no-lock", "ingest_bigdatajobs"])
        .env("RUNNER_FAILPOINT", "ingest.after_commit")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", String::from_utf8_lossy(&out.stderr));
    ok(&env, &["run", "tenant_activity_daily", "--at", "2026-11-21"]);
    // The next ingest publishes the batch (a roll-forward, nothing new to read); the job reads it.
    ok(&env, &["run", "ingest_bigdatajobs"]);
    ok(&env, &["run", "tenant_activity_daily", "--at", "2026-11-21"]);
    let got = env.query(activity).await;
    assert!(got == expected, "the published batch is missing from tenant_activity_daily\n{}", diff(&expected, &got));
}

/// Leases of one second, for the pause tests (a scheduler folder of the test's own).
fn short_leases(env: &TestEnv) -> String {
    let dir = env.root().join("scheduler");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("schedules.toml"), "[daemon]\nlease_ttl = \"1s\"\ntick = \"50ms\"\n").unwrap();
    dir.display().to_string()
}

fn stderr_to(env: &TestEnv, name: &str) -> (std::fs::File, std::path::PathBuf) {
    let path = env.root().join(name);
    (std::fs::File::create(&path).unwrap(), path)
}

/// An ingest paused (SIGSTOP, the whole process) between staging its batch and committing it,
/// longer than its lease and the commit grace, while another run takes the lease over and
/// ingests the same drops: the paused one, resumed, does not commit what it planned long ago
/// (it re-plans, finds the drops consumed, and leaves), and nothing is lost or duplicated.
#[tokio::test]
async fn an_ingest_paused_past_its_lease_and_the_commit_grace_neither_loses_nor_duplicates() {
    let expected = reference().await;
    let env = fresh_with(&format!("{SETTINGS}commit_grace = \"1s\"\n"));
    let scheduler = short_leases(&env);
    let (file, err_path) = stderr_to(&env, "paused.stderr");
    let paused = runner(&env, &["run", "ingest_companies", "ingest_bigdatajobs"])
        .env("RUNNER__SCHEDULER_DIR", &scheduler)
        .env("RUNNER_FAILPOINT", "ingest.before_commit=stop")
        .stderr(file)
        .spawn()
        .unwrap();
    wait_stopped(paused.id());
    // Past the lease's ttl and the grace, by the store's time and the paused one's own clock.
    std::thread::sleep(Duration::from_millis(1600));
    let taker = runner(&env, &["run", "ingest_companies", "ingest_bigdatajobs"])
        .env("RUNNER__SCHEDULER_DIR", &scheduler)
        .output()
        .unwrap();
    assert!(taker.status.success(), "the expired lease is taken over: {}", String::from_utf8_lossy(&taker.stderr));
    let (code, e) = resume(paused, &err_path);
    assert!(matches!(code, Some(0 | 1)), "{e}");
    assert!(e.contains("outlived the commit grace"), "the stale attempt re-planned instead of committing: {e}");
    run_ok(&env);
    let got = snapshot(&env).await;
    assert!(got == expected, "tables differ after a paused writer\n{}", diff(&expected, &got));
}

/// A SQL job paused just before it publishes, past its lease, while a newer holder runs the
/// job and publishes: resumed, the stale holder's publish is refused (its lease generation is
/// older than the one the table's catalog recorded) and the newer holder's output stands.
#[tokio::test]
async fn a_sql_publisher_paused_past_its_lease_cannot_publish_over_the_newer_holder() {
    let env = fresh();
    let scheduler = short_leases(&env);
    let ingest = runner(&env, &["run", "--no-lock", "ingest_companies", "ingest_bigdatajobs"]).output().unwrap();
    assert!(ingest.status.success());
    let job = ["run", "tenant_activity_daily", "--at", "2026-11-20"];
    let (file, err_path) = stderr_to(&env, "paused.stderr");
    let paused = runner(&env, &job)
        .env("RUNNER__SCHEDULER_DIR", &scheduler)
        .env("RUNNER_FAILPOINT", "sql.before_publish=stop")
        .stderr(file)
        .spawn()
        .unwrap();
    wait_stopped(paused.id());
    std::thread::sleep(Duration::from_millis(1600));
    let newer = runner(&env, &job).env("RUNNER__SCHEDULER_DIR", &scheduler).output().unwrap();
    assert!(newer.status.success(), "{}", String::from_utf8_lossy(&newer.stderr));
    let ws = env.workspace();
    let published = ws.catalog.partitions("tenant_activity_daily").await.unwrap();
    assert!(!published.is_empty());
    let (code, e) = resume(paused, &err_path);
    assert_eq!(code, Some(1), "{e}");
    assert!(e.contains("may no longer publish `tenant_activity_daily`"), "{e}");
    let ws = env.workspace();
    assert_eq!(ws.catalog.partitions("tenant_activity_daily").await.unwrap(), published, "the newer holder's output stands");
}
