//! SQL jobs end to end: tenants recomputed independently from the generated events; a failed
//! quality check and a crash before publish both leave the previous version published.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;

use chrono::NaiveDate;
use common::{REPO, TestEnv, query_csv, walk};
use runner::pipeline::{RunOptions, run_jobs};
use runner::progress::Progress;

fn at(d: NaiveDate) -> RunOptions {
    RunOptions { at: Some(d.and_hms_opt(12, 0, 0).unwrap().and_utc()), ..Default::default() }
}

/// job30, job90, users and last activity per tenant, computed from the raw drops with none of
/// runner's code: inflate, split concatenated JSON, drop duplicates by event_id (by exact text
/// when absent), and apply the definitions of sql/tenants.sql.
fn expected_tenants(drops: &std::path::Path, as_of: NaiveDate) -> BTreeMap<String, (i64, i64, i64, i64)> {
    let day_ms = 86_400_000i64;
    let as_of_day = (as_of - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days();
    let mut seen = HashSet::new();
    let mut out: BTreeMap<String, (i64, i64, i64, i64)> = BTreeMap::new();
    for f in walk(drops) {
        let raw = std::fs::read(&f).unwrap();
        let mut text = String::new();
        if f.extension().is_some_and(|e| e == "gz") {
            flate2::read::MultiGzDecoder::new(&raw[..]).read_to_string(&mut text).unwrap();
        } else {
            text = String::from_utf8(raw).unwrap();
        }
        for v in serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>() {
            let v = v.unwrap();
            let key = v.get("event_id").and_then(|x| x.as_str()).map(str::to_string).unwrap_or_else(|| v.to_string());
            if !seen.insert((f.components().nth_back(5).map(|c| c.as_os_str().to_owned()), key)) {
                continue;
            }
            let company = v.get("companyID").or_else(|| v.get("tenantID")).and_then(|x| x.as_str()).unwrap().to_string();
            let ms = v.get("creationDate").or_else(|| v.get("received_at")).and_then(|x| x.as_i64()).unwrap();
            let day = ms.div_euclid(day_ms);
            if day > as_of_day {
                continue;
            }
            let e = out.entry(company).or_insert((0, 0, 0, i64::MIN));
            let kind = v.get("event_type").and_then(|x| x.as_str()).unwrap_or("job_submitted");
            e.3 = e.3.max(ms);
            match kind {
                "job_submitted" => {
                    let nb = v.get("nbJobs").and_then(|x| x.as_i64()).unwrap_or(1);
                    if day > as_of_day - 30 {
                        e.0 += nb;
                    }
                    if day > as_of_day - 90 {
                        e.1 += nb;
                    }
                }
                "user_added" => e.2 += 1,
                "user_deleted" => e.2 -= 1,
                _ => {}
            }
        }
    }
    out
}

#[tokio::test]
async fn tenants_match_an_independent_computation_from_the_events() {
    let env = TestEnv::new();
    let end = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let o = runner::simulate::SimulateOptions {
        tenants: 12,
        users_per_tenant: 4,
        days: 100,
        end_date: end,
        seed: 3,
        invalid_share: 0.0,
        legacy_share: 0.0,
        ..Default::default()
    };
    let drops = runner::store::Location::parse(&runner::config::to_url(env.root(), "drops").unwrap()).unwrap();
    runner::simulate::simulate(&drops, &o).await.unwrap();
    let ws = env.workspace();
    let names: Vec<String> = ws.jobs.jobs.keys().cloned().collect();
    let as_of = end - chrono::Duration::days(3);
    run_jobs(&ws, &names, &at(as_of), &Progress::new(false)).await.unwrap();

    let expected = expected_tenants(&env.root().join("drops/raw"), as_of);
    let rows = query_csv(
        &ws,
        "SELECT companyID, job30, job90, users, CAST(CAST(last_activity_at AS BIGINT) AS VARCHAR) AS last FROM tenants ORDER BY companyID",
    )
    .await;
    let got: BTreeMap<String, (i64, i64, i64, i64)> = rows[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap(), f[4].parse().unwrap()))
        })
        .collect();
    assert_eq!(got.len(), 12);
    assert_eq!(got, expected);
}

/// A job directory of our own, so a test can change one job's checks.
fn env_with_own_jobs() -> TestEnv {
    let env = TestEnv::new();
    let jobs = env.root().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    for f in walk(&std::path::Path::new(REPO).join("jobs")) {
        std::fs::copy(&f, jobs.join(f.file_name().unwrap())).unwrap();
    }
    let cfg = std::fs::read_to_string(env.config_path()).unwrap().replace(&format!("{REPO}/jobs"), "jobs");
    std::fs::write(env.config_path(), cfg).unwrap();
    simulate_drops(&env, "5", "42");
    env
}

/// Simulated drops of `tenants` tenants over the 5 days to 2026-11-20.
fn simulate_drops(env: &TestEnv, tenants: &str, seed: &str) {
    let args = ["simulate", "--out", "drops", "--tenants", tenants, "--users-per-tenant", "2", "--days", "5"];
    let out = env.output(&[&args[..], &["--end-date", "2026-11-20", "--seed", seed]].concat());
    assert!(out.status.success(), "{}", common::text(&out.stderr));
}

/// New events arrive: two more tenants, and new events for the existing five.
fn more_events(env: &TestEnv) {
    simulate_drops(env, "7", "99");
}

async fn tenants_as_of(env: &TestEnv, day: &str) -> Vec<String> {
    query_csv(
        &env.workspace(),
        &format!("SELECT companyID, job30, job90, users FROM tenants WHERE as_of = DATE '{day}' ORDER BY companyID"),
    )
    .await
}

#[tokio::test]
async fn a_failed_check_keeps_the_published_version_and_records_why() {
    let env = env_with_own_jobs();
    assert!(env.output(&["run", "--all", "--at", "2026-11-20"]).status.success());
    let before = tenants_as_of(&env, "2026-11-20").await;
    assert!(before.len() > 1);

    // New events arrive, and the tenants job now demands an impossible row count.
    more_events(&env);
    let path = env.root().join("jobs/tenants.toml");
    let toml = std::fs::read_to_string(&path).unwrap().replace("min_rows = 1", "min_rows = 1000000");
    std::fs::write(&path, toml).unwrap();
    let out = env.output(&["run", "--all", "--at", "2026-11-20"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quality checks failed") && err.contains("min_rows = 1000000"), "{err}");

    assert_eq!(tenants_as_of(&env, "2026-11-20").await, before, "the previous version stays published");
    let hist = env.output(&["history", "tenants", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(runs[0]["status"], "failed");
    assert!(runs[0]["error"].as_str().unwrap().contains("min_rows"));
    assert_eq!(runs[1]["status"], "succeeded");
}

#[tokio::test]
async fn a_crash_before_publish_keeps_the_published_version_and_a_rerun_publishes() {
    let env = env_with_own_jobs();
    assert!(env.output(&["run", "--all", "--at", "2026-11-20"]).status.success());
    let before = tenants_as_of(&env, "2026-11-20").await;
    more_events(&env);
    // The second simulation writes into hour folders the first run already passed: list them all.
    let args = ["run", "--full-listing", "ingest_bigdatajobs", "ingest_companies", "tenant_activity_daily"];
    assert!(env.output(&args).status.success());

    let crashed = env
        .cmd(&["run", "--no-lock", "tenants", "--at", "2026-11-20"])
        .env("RUNNER_FAILPOINT", "sql.before_publish")
        .output()
        .unwrap();
    assert_eq!(crashed.status.signal(), Some(9));
    assert_eq!(tenants_as_of(&env, "2026-11-20").await, before, "an unpublished version is invisible");

    // The killed run still holds its lease until it expires: rerun without it.
    assert!(env.output(&["run", "--no-lock", "tenants", "--at", "2026-11-20"]).status.success());
    let after = tenants_as_of(&env, "2026-11-20").await;
    assert_ne!(after, before, "the rerun publishes the new data");
    assert_eq!(after.len(), 8, "seven tenants after the second simulation, one row each: {after:?}");
}

#[tokio::test]
async fn export_keeps_every_tenant_inside_its_own_prefix() {
    let env = TestEnv::new();
    let ids = ["../x", "/", "%2F", "k=v", "café", "", ".", "..", "a/../../b"];
    let mut body = String::new();
    for (i, id) in ids.iter().enumerate() {
        body.push_str(&format!(
            "{{\"event_type\":\"job_submitted\",\"event_id\":\"e{i}\",\"companyID\":{},\"userID\":\"u\",\"nbJobs\":{},\"creationDate\":1795179600000}}\n",
            serde_json::to_string(id).unwrap(),
            i + 1
        ));
    }
    env.put_drop("bigdatajobs", "2026-11-20T13", 1, body.as_bytes(), false);
    let ws = env.workspace();
    // Not scoring: these tenants have no company attributes, so no model row (a run that can
    // score no company fails, by design).
    let names: Vec<String> =
        ws.jobs.jobs.keys().filter(|j| !["score_churn", "companies_enriched"].contains(&j.as_str())).cloned().collect();
    run_jobs(&ws, &names, &at(NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()), &Progress::new(false)).await.unwrap();

    let exports = env.warehouse().join("exports");
    let files = walk(&exports);
    let mut segments = std::collections::BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&exports).unwrap();
        let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_str().unwrap().to_string()).collect();
        assert_eq!(parts.len(), 4, "exports/<tenant>/<dataset>/as_of=<day>/<file>: {}", rel.display());
        segments.insert(parts[0].clone());
    }
    // One folder per tenant, none shared, and every file of a folder holds only that tenant's rows.
    assert_eq!(segments.len(), ids.len(), "{segments:?}");
    for id in ids {
        let seg = runner::export::tenant_segment(id);
        let file = exports.join(&seg).join("job_events/as_of=2026-11-20/part-00000.parquet");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let col = b.column(b.schema().index_of("companyID").unwrap()).clone();
            let col = arrow::compute::cast(&col, &arrow::datatypes::DataType::Utf8).unwrap();
            let col = col.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
            assert!(col.iter().all(|v| v == Some(id)), "{seg} holds rows of another tenant");
        }
    }
}
