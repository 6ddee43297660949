//! The binary as a user meets it: documented exit codes, results on stdout in the format
//! asked, messages on stderr that name the file, the key or the job.

mod common;

use std::process::{Command, Output};

use common::{TestEnv, walk};

const BIN: &str = env!("CARGO_BIN_EXE_runner");

fn runner(env: &TestEnv, args: &[&str]) -> Output {
    Command::new(BIN).current_dir(env.root()).arg("--config").arg(env.config_path()).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn config_errors_exit_78_naming_file_and_key() {
    let env = TestEnv::new();
    std::fs::write(env.config_path(), "wearhouse = \"x\"\n").unwrap();
    let out = runner(&env, &["validate"]);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(err.contains("runner.toml") && err.contains("wearhouse"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn env_override_errors_name_the_variable() {
    let env = TestEnv::new();
    let out = Command::new(BIN)
        .current_dir(env.root())
        .args(["--config", "runner.toml", "validate"])
        .env("RUNNER__INGEST__MAX_OBJECTS", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("RUNNER__INGEST__MAX_OBJECTS"), "{}", text(&out.stderr));
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let env = TestEnv::new();
    let out = runner(&env, &["run", "ingest_companie"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("did you mean `ingest_companies`"), "{}", text(&out.stderr));
    let out = runner(&env, &["query", "SELECT nope FROM nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nowhere"), "{}", text(&out.stderr));
    assert_eq!(runner(&env, &["frobnicate"]).status.code(), Some(2));
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
    let run = runner(&env, &["run", "--all", "--format", "json"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary[0]["job"], "ingest_bigdatajobs");
    assert_eq!(summary[0]["valid"], 1);

    let q = "SELECT companyID, nbJobs FROM job_events";
    let csv = runner(&env, &["query", q, "--format", "csv"]);
    assert_eq!(text(&csv.stdout), "companyID,nbJobs\n\"c,1\",3\n");
    let json = runner(&env, &["query", q, "--format", "json"]);
    assert_eq!(text(&json.stdout).trim(), r#"[{"companyID":"c,1","nbJobs":3}]"#);
    let nd = runner(&env, &["query", q, "--format", "ndjson"]);
    assert_eq!(text(&nd.stdout), "{\"companyID\":\"c,1\",\"nbJobs\":3}\n");
    let table = runner(&env, &["query", q]);
    assert!(text(&table.stdout).contains("| c,1       | 3      |"), "{}", text(&table.stdout));

    let tables = runner(&env, &["tables", "--format", "csv"]);
    let t = text(&tables.stdout);
    assert!(t.starts_with("table,partitions,location,description\n") && t.contains("job_events,1,"), "{t}");
    let d = runner(&env, &["describe", "job_events", "--format", "csv"]);
    assert!(text(&d.stdout).contains("nbJobs,bigint,column\n") && text(&d.stdout).contains("dt,date,partition key"));
    assert_eq!(runner(&env, &["describe", "job_event"]).status.code(), Some(2));
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
        let o = runner(&env, &[&args[..], &["--out", out, "--seed", seed]].concat());
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
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
    let ok = runner(&env, &["validate"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let cfg = std::fs::read_to_string(env.config_path()).unwrap().replace(&format!("{}/sql", common::REPO), "sql");
    std::fs::write(env.config_path(), cfg).unwrap();
    let broken = std::fs::read_to_string(sql.join("jobs_daily.sql")).unwrap().replace("SUM(dataSize)", "SUM(data_size)");
    std::fs::write(sql.join("jobs_daily.sql"), broken).unwrap();
    let out = runner(&env, &["validate"]);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(err.contains("jobs_daily.sql: line 9") && err.contains("data_size"), "{err}");

    // A job sees only its declared inputs (they order the DAG): reading another table is an
    // error that says where to declare it, even though the table exists.
    std::fs::copy(std::path::Path::new(common::REPO).join("sql/jobs_daily.sql"), sql.join("jobs_daily.sql")).unwrap();
    let undeclared =
        std::fs::read_to_string(sql.join("churn_features.sql")).unwrap().replace("FROM tenants t", "FROM jobs_daily t");
    std::fs::write(sql.join("churn_features.sql"), undeclared).unwrap();
    let out = runner(&env, &["validate"]);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains("churn_features.sql: line") && err.contains("add it to `inputs` in") && err.contains("churn_features.toml"),
        "{err}"
    );
}
