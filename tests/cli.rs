//! The binary as a user meets it: documented exit codes, results on stdout in the format
//! asked, messages on stderr that name the file, the key or the job.

mod common;

use common::{TestEnv, text, walk};

#[test]
fn config_errors_exit_78_naming_file_and_key() {
    let env = TestEnv::new();
    std::fs::write(env.config_path(), "wearhouse = \"x\"\n").unwrap();
    let out = env.output(&["validate"]);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(err.contains("runner.toml") && err.contains("wearhouse"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn env_override_errors_name_the_variable() {
    let env = TestEnv::new();
    let out = env.cmd(&["validate"]).env("RUNNER__INGEST__MAX_OBJECTS", "3").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("RUNNER__INGEST__MAX_OBJECTS"), "{}", text(&out.stderr));
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let env = TestEnv::new();
    let out = env.output(&["run", "ingest_companie"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("did you mean `ingest_companies`"), "{}", text(&out.stderr));
    let out = env.output(&["query", "SELECT nope FROM nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nowhere"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("did you mean"), "no close name, no guess: {}", text(&out.stderr));
    assert_eq!(env.output(&["frobnicate"]).status.code(), Some(2));
}

/// A name that does not exist gets the closest one that does, wherever it is typed: a job, a
/// table in `runner query` and `describe`, a column, a job file's input.
#[test]
fn unknown_names_get_a_did_you_mean() {
    let env = TestEnv::new();
    env.put_drop("bigdatajobs", "2026-11-20T13", 1, br#"{"event_type":"job_submitted","event_id":"e1","companyID":"c1"}"#, false);
    assert!(env.output(&["run", "ingest_bigdatajobs"]).status.success());
    let hint = |args: &[&str]| {
        let out = env.output(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        text(&out.stderr)
    };
    let e = hint(&["run", "tenant"]);
    assert!(e.contains("no job `tenant` (did you mean `tenants`?)"), "{e}");
    let e = hint(&["query", "SELECT count(*) FROM job_event"]);
    assert!(e.contains("(did you mean `job_events`?)"), "{e}");
    let e = hint(&["query", "SELECT nbJob FROM job_events"]);
    assert!(e.contains("Did you mean 'job_events.\"nbJobs\"'?"), "DataFusion names the column: {e}");
    let e = hint(&["describe", "job_event"]);
    assert!(e.contains("no table `job_event` in the catalog (did you mean `job_events`?)"), "{e}");

    let edited = TestEnv::with_job_edits("", &[("tenant_state.toml", "\"tenant_activity_daily\"", "\"tenant_activity_dail\"")]);
    let out = edited.output(&["validate"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("(did you mean `tenant_activity_daily`?)"), "{}", text(&out.stderr));
}

#[test]
fn results_on_stdout_in_each_format() {
    let env = TestEnv::new();
    env.put_drop(
        "bigdatajobs",
        "2026-11-20T13",
        1,
        br#"{"event_type":"job_submitted","event_id":"e1","companyID":"c,1","userID":"u","nbJobs":3,"creationDate":1795179600000}"#,
        false,
    );
    let run = env.output(&["run", "ingest_bigdatajobs", "--format", "json"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary[0]["job"], "ingest_bigdatajobs");
    assert_eq!(summary[0]["valid"], 1);
    // Where the ingest's time went: every stage is reported, the ones that did work took some.
    let stages = &summary[0]["stages"];
    for stage in ["list_s", "read_s", "inflate_s", "parse_s", "dedup_s", "encode_s", "write_s", "commit_s"] {
        assert!(stages[stage].as_f64().is_some_and(|s| s >= 0.0), "{stage}: {stages}");
    }
    for stage in ["read_s", "parse_s", "encode_s", "write_s", "commit_s"] {
        assert!(stages[stage].as_f64().unwrap() > 0.0, "{stage}: {stages}");
    }

    let q = "SELECT companyID, nbJobs FROM job_events";
    let csv = env.output(&["query", q, "--format", "csv"]);
    assert_eq!(text(&csv.stdout), "companyID,nbJobs\n\"c,1\",3\n");
    let json = env.output(&["query", q, "--format", "json"]);
    assert_eq!(text(&json.stdout).trim(), r#"[{"companyID":"c,1","nbJobs":3}]"#);
    let nd = env.output(&["query", q, "--format", "ndjson"]);
    assert_eq!(text(&nd.stdout), "{\"companyID\":\"c,1\",\"nbJobs\":3}\n");
    // Every column, NULL as null: a NULL is not a missing column.
    let nulls = "SELECT companyID, CAST(NULL AS DOUBLE) AS risk FROM job_events";
    let json = env.output(&["query", nulls, "--format", "json"]);
    assert_eq!(text(&json.stdout).trim(), r#"[{"companyID":"c,1","risk":null}]"#);
    let nd = env.output(&["query", nulls, "--format", "ndjson"]);
    assert_eq!(text(&nd.stdout), "{\"companyID\":\"c,1\",\"risk\":null}\n");
    let table = env.output(&["query", q]);
    assert!(text(&table.stdout).contains("| c,1       | 3      |"), "{}", text(&table.stdout));

    let tables = env.output(&["tables", "--format", "csv"]);
    let t = text(&tables.stdout);
    assert!(t.starts_with("table,partitions,location,description\n") && t.contains("job_events,1,"), "{t}");
    let d = env.output(&["describe", "job_events", "--format", "csv"]);
    assert!(text(&d.stdout).contains("nbJobs,bigint,column\n") && text(&d.stdout).contains("dt,date,partition key"));
    assert_eq!(env.output(&["describe", "job_event"]).status.code(), Some(2));
}

#[test]
fn simulate_is_deterministic_for_a_seed_and_end_date() {
    let env = TestEnv::new();
    let args = ["simulate", "--tenants", "3", "--users-per-tenant", "2", "--days", "3", "--end-date", "2026-11-20", "--noise"];
    let listing = |dir: &str| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = walk(&env.root().join(dir))
            .into_iter()
            .map(|p| (p.strip_prefix(env.root().join(dir)).unwrap().display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    for (out, seed) in [("a", "7"), ("b", "7"), ("c", "8")] {
        let o = env.output(&[&args[..], &["--out", out, "--seed", seed]].concat());
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    // No default folder: without --out nothing is written, and the error says what to pass.
    let o = env.output(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--out"), "{}", text(&o.stderr));
    assert!(!env.root().join("data/drops").exists());
    let (a, b, c) = (listing("a"), listing("b"), listing("c"));
    assert!(a.len() > 10);
    assert!(a == b, "same seed, same drops byte for byte");
    assert!(a != c, "another seed, other drops");
}

#[test]
fn validate_plans_sql_offline_and_names_file_and_line() {
    let env = TestEnv::new();
    let sql = env.root().join("sql");
    std::fs::create_dir_all(sql.join("export")).unwrap();
    for f in walk(&std::path::Path::new(common::REPO).join("sql")) {
        let rel = f.strip_prefix(std::path::Path::new(common::REPO).join("sql")).unwrap();
        std::fs::create_dir_all(sql.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&f, sql.join(rel)).unwrap();
    }
    let ok = env.output(&["validate"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let cfg = std::fs::read_to_string(env.config_path()).unwrap().replace(&format!("{}/sql", common::REPO), "sql");
    std::fs::write(env.config_path(), cfg).unwrap();
    let broken = std::fs::read_to_string(sql.join("jobs_daily.sql")).unwrap().replace("SUM(dataSize)", "SUM(data_size)");
    std::fs::write(sql.join("jobs_daily.sql"), broken).unwrap();
    let out = env.output(&["validate"]);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(err.contains("jobs_daily.sql: line 9") && err.contains("data_size"), "{err}");

    // A job sees only its declared inputs (they order the DAG): reading another table is an
    // error that says where to declare it, even though the table exists.
    std::fs::copy(std::path::Path::new(common::REPO).join("sql/jobs_daily.sql"), sql.join("jobs_daily.sql")).unwrap();
    let undeclared =
        std::fs::read_to_string(sql.join("churn_features.sql")).unwrap().replace("FROM tenants t", "FROM jobs_daily t");
    std::fs::write(sql.join("churn_features.sql"), undeclared).unwrap();
    let out = env.output(&["validate"]);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains("churn_features.sql: line") && err.contains("add it to `inputs` in") && err.contains("churn_features.toml"),
        "{err}"
    );
}

/// Simulated drops for `days` days ending 2026-11-20, with invalid records and noise.
fn simulate_into(env: &TestEnv, out: &str, days: &str, seed: &str) {
    let args = ["simulate", "--out", out, "--tenants", "4", "--users-per-tenant", "2", "--days", days];
    let o =
        env.output(&[&args[..], &["--end-date", "2026-11-20", "--seed", seed, "--invalid-share", "0.05", "--noise"]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[tokio::test]
async fn one_run_id_joins_runs_ledger_quarantine_scores_and_logs() {
    let env = TestEnv::new();
    simulate_into(&env, "drops", "3", "3");
    let out = env.cmd(&["-v", "run", "--all", "--at", "2026-11-20T12:00:00Z", "--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let id = |job: &str| -> String {
        let r = runs.iter().find(|r| r["job"] == job).unwrap_or_else(|| panic!("{job} ran: {runs:?}"));
        r["run_id"].as_str().unwrap().to_string()
    };
    // Every job's summary run id is the one runner_runs recorded, kind included.
    let recorded = env.query("SELECT job, kind, run_id FROM runner_runs ORDER BY job").await;
    for r in &runs {
        let line = format!("{},{},{}", r["job"].as_str().unwrap(), r["kind"].as_str().unwrap(), r["run_id"].as_str().unwrap());
        assert!(recorded.contains(&line), "{line} in {recorded:?}");
    }
    // Ingest: quarantine rows and ledger commits carry the ingest run's id.
    let ingest = id("ingest_bigdatajobs");
    let q = env.query("SELECT DISTINCT run_id FROM quarantine WHERE stream = 'bigdatajobs'").await;
    assert_eq!(q, ["run_id".to_string(), ingest.clone()], "quarantine rows name the run that read them");
    let ledger = env.warehouse().join("_runner/ledger/bigdatajobs");
    let commits: Vec<serde_json::Value> = walk(&ledger)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    assert!(!commits.is_empty());
    for c in &commits {
        let by = c["run_id"].as_str().unwrap();
        assert!(by == ingest || by == id("compact_events"), "a commit by ingest or compaction: {by}");
    }
    // Scoring: each score names the scoring run.
    let s = env.query("SELECT DISTINCT run_id FROM churn_scores").await;
    assert_eq!(s, ["run_id".to_string(), id("score_churn")]);
    // Logs: a job's log lines carry its run id.
    let log = text(&out.stderr);
    assert!(log.contains(&format!("run_id={ingest}")), "{log}");
}

#[test]
fn dry_run_plans_every_kind_and_writes_nothing() {
    let env = TestEnv::new();
    simulate_into(&env, "drops", "2", "4");
    let first = env.output(&["run", "--all", "--at", "2026-11-19T12:00:00Z"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // A day later, more drops arrive; a dry run says what a run would do and writes nothing.
    simulate_into(&env, "more", "1", "5");
    for f in walk(&env.root().join("more")) {
        let dest = env.root().join("drops").join(f.strip_prefix(env.root().join("more")).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::rename(&f, dest).unwrap();
    }
    let listing = || {
        let mut v: Vec<(String, u64)> =
            walk(&env.warehouse()).into_iter().map(|p| (p.display().to_string(), std::fs::metadata(&p).unwrap().len())).collect();
        v.sort();
        v
    };
    let before = listing();
    let dry = env.json(&["run", "--all", "--dry-run", "--at", "2026-11-20T12:00:00Z"]);
    assert_eq!(listing(), before, "a dry run writes nothing, runner_runs included");
    let runs = dry.as_array().unwrap();
    let kinds: std::collections::BTreeSet<&str> = runs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["compact", "export", "ingest", "score", "sql"].into(), "every kind plans: {dry}");
    assert!(runs.iter().all(|r| r["dry_run"] == true), "{dry}");
    let ingest = runs.iter().find(|r| r["job"] == "ingest_bigdatajobs").unwrap();
    assert!(ingest["objects"].as_u64().unwrap() > 0 && ingest["batches"].as_u64().unwrap() > 0, "{ingest}");
    // The table summary shows every kind from the same columns.
    let table = env.output(&["run", "--all", "--dry-run", "--at", "2026-11-20T12:00:00Z", "--format", "csv"]);
    let t = text(&table.stdout);
    assert!(
        t.starts_with("job,kind,logical_time,periods,rows_in,rows_out,mb_in,files,partitions,dry_run,seconds,details,run_id\n"),
        "{t}"
    );
    assert_eq!(listing(), before);
}

/// A job that fails stops the run, and every job that did not start because of it is in the
/// summary and in `runner_runs` as skipped, with the reason; the exit code is the failure's.
#[test]
fn the_downstream_of_a_failed_job_is_skipped_with_the_reason() {
    let env = TestEnv::with_job_edits("", &[("tenant_activity_daily.toml", "min_rows = 1", "min_rows = 1000000000")]);
    let sim = env.output(&[
        "simulate",
        "--out",
        "drops",
        "--tenants",
        "2",
        "--users-per-tenant",
        "2",
        "--days",
        "2",
        "--end-date",
        "2026-11-20",
    ]);
    assert!(sim.status.success(), "{}", text(&sim.stderr));
    let out = env.output(&["run", "--all", "--at", "2026-11-20", "--parallel", "1", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("min_rows"), "the failure itself: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let skipped = |job: &str| -> String {
        let r = v.as_array().unwrap().iter().find(|r| r["job"] == job).unwrap_or_else(|| panic!("{job} reported: {v}"));
        r["skipped"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(skipped("tenant_state"), "upstream `tenant_activity_daily` failed in this run");
    assert_eq!(skipped("tenants"), "upstream `tenant_state` was skipped in this run");
    let runs = env.output(&["query", "SELECT job, status FROM runner_runs WHERE job = 'tenants'", "--format", "csv"]);
    assert!(text(&runs.stdout).contains("tenants,skipped"), "{}", text(&runs.stdout));
}

/// Run from another folder: below the project, runner.toml is found upward (as cargo and git
/// find theirs); outside any project, the error says how to point at one (exit 78, not a
/// missing events.toml). Exported crontab entries carry the config they run with.
#[test]
fn the_config_is_found_upward_or_the_error_says_how_to_point_at_it() {
    let env = TestEnv::new();
    let below = env.root().join("deep/er");
    std::fs::create_dir_all(&below).unwrap();
    let out = common::bin().current_dir(&below).args(["--quiet", "validate"]).env_remove("RUNNER_CONFIG").output().unwrap();
    assert!(out.status.success(), "found upward: {}", text(&out.stderr));
    let elsewhere = tempfile::tempdir().unwrap();
    let out =
        common::bin().current_dir(elsewhere.path()).args(["--quiet", "validate"]).env_remove("RUNNER_CONFIG").output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("no runner.toml in") && err.contains("--config") && err.contains("RUNNER_CONFIG"), "{err}");
    let out = env.output(&["schedule", "export", "--format", "crontab"]);
    let crontab = text(&out.stdout);
    let expected = format!("RUNNER_CONFIG={}\n", env.config_path().display());
    assert!(crontab.contains(&expected), "{crontab}");
}

/// A misspelled source folder: `validate` fails naming the closest folder that exists, an
/// ingest of it says so on stderr (and succeeds: an empty stream is not an error), and a
/// scoring run that can score no company exits 1 saying why.
#[test]
fn a_misspelled_source_is_caught_and_scoring_nothing_fails() {
    let env = TestEnv::new();
    env.put_drop(
        "bigdatajobs",
        "2026-11-20T13",
        1,
        br#"{"event_type":"job_submitted","event_id":"e1","companyID":"c1","userID":"u","nbJobs":3,"creationDate":1795179600000}"#,
        false,
    );
    let typo = [("RUNNER__SOURCES__COMPANIES__URL", "drop/raw/companies")];
    let run = |args: &[&str]| env.cmd(args).envs(typo).output().unwrap();
    let out = run(&["validate"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let closest = env.root().join("drops/raw/companies").display().to_string();
    assert!(err.contains("source `companies`") && err.contains("does not exist") && err.contains(&closest), "{err}");
    let out = run(&["run", "ingest_companies"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("source `companies`") && text(&out.stderr).contains("[sources.companies]"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["run", "--all", "--at", "2026-11-21"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no company could be scored"), "{}", text(&out.stderr));
}

/// One typo in a job's inputs is one problem (with its "did you mean"), not one per job
/// downstream with wrong guesses: those are named once as not planned.
#[test]
fn one_typo_in_inputs_is_one_problem() {
    let env = TestEnv::with_job_edits(
        "",
        &[(
            "tenant_activity_daily.toml",
            r#"inputs = ["job_events", "tenant_events"]"#,
            r#"inputs = ["job_event", "tenant_events"]"#,
        )],
    );
    let out = env.output(&["validate"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("1 problem(s) found") && err.contains("did you mean `job_events`"), "{err}");
    assert_eq!(err.matches("did you mean").count(), 1, "{err}");
    assert!(err.contains("not planned until those are fixed") && err.contains("tenants"), "{err}");
}

/// Before any ingest: a job says which job to run first, a query of a job's output says which
/// job writes it (not "add it to inputs", not a guess at another name).
#[test]
fn before_any_ingest_errors_say_what_to_run_first() {
    let env = TestEnv::new();
    let out = env.output(&["run", "tenant_activity_daily"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("reads `job_events`, which job `ingest_bigdatajobs` has not produced yet: run that first"), "{err}");
    assert!(!err.contains("add it to `inputs`"), "{err}");
    let out = env.output(&["query", "SELECT * FROM tenants"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("table `tenants` has no data yet: job `tenants` writes it") && !err.contains("did you mean"), "{err}");
}

/// Summaries that agree: a rerun of the same data reports the same unknown industries; a dry
/// run of scoring says how many it would score instead of a churn count it cannot know; a
/// failed SQL run's logical time is a date, as its successful runs' are.
#[test]
fn summaries_agree_between_runs_dry_runs_and_failures() {
    let env = TestEnv::new();
    simulate_into(&env, "drops", "3", "6");
    let legacy = r#"{"companyID": "comp_x", "industry": "aerospace", "revenu": 100000, "employees": 40, "job30": 4, "job90": 30, "monthlyFee": 400.0, "totalFee": 1200.0}"#;
    env.put_drop("companies", "2026-11-20T13", 77, legacy.as_bytes(), false);
    let job = r#"{"event_type":"job_submitted","event_id":"x1","companyID":"comp_x","userID":"u","nbJobs":3,"creationDate":1795179600000}"#;
    env.put_drop("bigdatajobs", "2026-11-20T13", 78, job.as_bytes(), false);
    let score = |args: &[&str]| -> serde_json::Value {
        let v = env.json(&[args, &["--at", "2026-11-21"]].concat());
        v.as_array().unwrap().iter().find(|r| r["job"] == "score_churn").cloned().unwrap()
    };
    let first = score(&["run", "--all"]);
    let dry = score(&["run", "score_churn", "--dry-run", "--force"]);
    assert!(dry["would_score"].is_u64(), "{dry}");
    let again = score(&["run", "score_churn", "--force"]);
    assert!(first["unknown_industry"].as_u64().unwrap() >= 1, "{first}");
    assert_eq!(first["unknown_industry"], again["unknown_industry"], "{first}\n{again}");
    let table = env.output(&["run", "score_churn", "--dry-run", "--at", "2026-11-21"]);
    let t = text(&table.stdout);
    assert!(t.contains("would_score=") && !t.contains("churn=0"), "{t}");
    // A failed SQL run (its SQL broken) records a date.
    let broken =
        TestEnv::with_job_edits("", &[("tenants.toml", r#"inputs = ["tenant_state"]"#, r#"inputs = ["tenant_state", "nope"]"#)]);
    let out = broken.output(&["run", "tenants", "--at", "2026-11-21T05:00:00Z"]);
    assert!(!out.status.success());
    let hist = broken.output(&["query", "--format", "csv", "SELECT logical_time, status FROM runner_runs WHERE job = 'tenants'"]);
    assert!(text(&hist.stdout).contains("2026-11-21,"), "{}", text(&hist.stdout));
}
