//! Compaction (jobs/compact_events.toml): many micro-batch files per partition become one
//! sorted file, readers see the same rows before and after, ingest keeps appending to the new
//! version, incremental SQL jobs see nothing to rebuild, and replaced files are deleted after
//! the grace period. Crashes during compaction are covered by `tests/crash.rs`.

mod common;

use std::path::Path;

use arrow::array::AsArray;
use common::{TestEnv, walk};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use runner::job::{CompactJob, JobKind, KindCounts};
use runner::pipeline::{RunOptions, run_job};
use runner::progress::Progress;

fn simulate(env: &TestEnv, seed: &str, end: &str, days: &str) {
    let out = env
        .cmd(&["simulate", "--out", "drops"])
        .args(["--tenants", "5", "--users-per-tenant", "3", "--days", days, "--end-date", end, "--seed", seed])
        .args(["--duplicate-share", "0.05"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Every row of both event tables, sorted (events without an id tie on any key).
async fn rows(env: &TestEnv) -> Vec<String> {
    let mut out = env.query("SELECT * FROM job_events").await;
    out.extend(env.query("SELECT * FROM tenant_events").await);
    out.sort();
    out
}

/// Asserts two row lists are equal, printing only a summary when not.
fn same_rows(got: &[String], want: &[String], what: &str) {
    if got != want {
        let g: std::collections::BTreeSet<&String> = got.iter().collect();
        let w: std::collections::BTreeSet<&String> = want.iter().collect();
        let missing: Vec<_> = w.difference(&g).take(3).collect();
        let extra: Vec<_> = g.difference(&w).take(3).collect();
        panic!("{what}: {} rows vs {} expected\nmissing: {missing:#?}\nextra: {extra:#?}", got.len(), want.len());
    }
}

/// Each catalog partition of `table`: (dt, version folder, number of files in it).
async fn partitions(env: &TestEnv, table: &str) -> Vec<(String, String, usize)> {
    let ws = env.workspace();
    let mut out = Vec::new();
    for p in ws.catalog.partitions(table).await.unwrap() {
        let rel = ws.warehouse.relative_url(&p.location).unwrap();
        let dir = env.warehouse().join(rel.trim_end_matches('/'));
        let version = dir.file_name().unwrap().to_str().unwrap().to_string();
        assert!(version.starts_with("v="), "{rel}: partitions of event tables are versioned");
        out.push((p.values[0].clone(), version, walk(&dir).len()));
    }
    out
}

fn company_ids(file: &Path) -> Vec<String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap().build().unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let col = b.column(b.schema().index_of("companyID").unwrap()).as_string::<i32>().clone();
        out.extend(col.iter().map(|v| v.unwrap_or_default().to_string()));
    }
    out
}

#[tokio::test]
async fn compaction_merges_partitions_atomically_and_ingest_continues_on_the_new_version() {
    let env = TestEnv::with_job_edits(
        "[ingest]\nmax_objects_per_batch = 2\n",
        &[("compact_events.toml", "min_files = 8", "min_files = 2")],
    );
    simulate(&env, "5", "2026-11-20", "6");
    env.json(&["run", "ingest_bigdatajobs", "ingest_companies"]);
    env.json(&["run", "tenant_activity_daily", "--at", "2026-11-20"]);
    let before = rows(&env).await;
    let parts_before = partitions(&env, "job_events").await;
    assert!(parts_before.iter().any(|(_, _, n)| *n >= 4), "the fixture must leave many files: {parts_before:?}");
    assert!(parts_before.iter().all(|(_, v, _)| v == "v=000000000000"));

    let out = env.json(&["run", "compact_events"]);
    let c = &out[0];
    assert_eq!(c["kind"], "compact", "{out}");
    assert!(!c["partitions"].as_array().unwrap().is_empty() && c["files_in"].as_u64() > c["files_out"].as_u64(), "{c}");
    assert_eq!(c["removed_files"], 0, "replaced files stay for the grace period");

    same_rows(&rows(&env).await, &before, "readers see the same rows after compaction");
    for table in ["job_events", "tenant_events"] {
        for (dt, version, files) in partitions(&env, table).await {
            assert_eq!(files, 1, "{table} dt={dt} {version}: one file per partition");
            if version != "v=000000000000" {
                let dir = env.warehouse().join(format!("{table}/dt={dt}/{version}"));
                let ids = company_ids(&walk(&dir)[0]);
                assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{table} dt={dt}: the merged file is sorted by companyID");
                assert!(env.warehouse().join(format!("{table}/dt={dt}/v=000000000000")).exists(), "old version kept");
            }
        }
    }
    // Nothing left to do; and compaction changed no row, so incremental SQL has nothing to rebuild.
    // (The run history's own partition may have gained records since: only event partitions count.)
    let again = env.json(&["run", "compact_events"]);
    let events: Vec<&serde_json::Value> =
        again[0]["partitions"].as_array().unwrap().iter().filter(|p| !p.as_str().unwrap().starts_with("runner_runs/")).collect();
    assert!(events.is_empty(), "{again}");
    let sql = env.json(&["run", "tenant_activity_daily", "--at", "2026-11-20"]);
    assert_eq!(sql[0]["periods"], serde_json::json!([]), "{sql}");

    // More drops (overlapping days, late events, Firehose duplicates of nothing old): ingest
    // appends to the compacted versions, and no event is lost or doubled.
    simulate(&env, "6", "2026-11-21", "2");
    env.json(&["run", "ingest_bigdatajobs", "ingest_companies"]);
    // (Legacy records have no event_id: they are told apart by content.)
    let total = env
        .query(
            "SELECT count(*) AS n, (SELECT count(*) FROM (SELECT DISTINCT event_id, companyID, event_type, event_time, jobID, nbJobs \
             FROM job_events)) AS d FROM job_events",
        )
        .await;
    let (n, d) = total[1].split_once(',').unwrap();
    assert_eq!(n, d, "no duplicate after ingesting on top of a compacted partition");
    assert!(n.parse::<usize>().unwrap() > before.iter().filter(|l| l.contains("job_")).count() / 2);
    let grown = partitions(&env, "job_events").await;
    assert!(grown.iter().any(|(_, v, n)| v != "v=000000000000" && *n > 1), "new files join the current version: {grown:?}");
    let after_ingest = rows(&env).await;
    env.json(&["run", "compact_events"]);
    same_rows(&rows(&env).await, &after_ingest, "after the second compaction");

    // Past the grace period the replaced versions are deleted; readers are unaffected.
    let ws = env.workspace();
    let mut job = ws.jobs.get("compact_events").unwrap().clone();
    job.kind = JobKind::Compact(CompactJob {
        streams: vec!["bigdatajobs".into(), "companies".into()],
        min_files: 2,
        max_partitions_per_commit: 64,
        keep_replaced: std::time::Duration::ZERO,
        run_history: true,
        memory_bytes: 256 << 20,
    });
    let s = run_job(&ws, &job, &RunOptions::default(), &Progress::new(false)).await.unwrap();
    let KindCounts::Compact(c) = &s.counts else { panic!("not a compaction: {s:?}") };
    assert!(c.removed_files > 0, "{s:?}");
    for table in ["job_events", "tenant_events"] {
        let on_disk = walk(&env.warehouse().join(table)).len();
        let live: usize = partitions(&env, table).await.iter().map(|p| p.2).sum();
        assert_eq!(on_disk, live, "{table}: only the current versions remain on disk");
    }
    same_rows(&rows(&env).await, &after_ingest, "after deleting replaced versions");
}

/// A partition bigger than the merge's memory budget is sorted by spilling to local disk, not
/// held whole: the same rows, one sorted file, and the run says what it spilled.
#[tokio::test]
async fn a_partition_bigger_than_the_memory_budget_merges_by_spilling() {
    let env = TestEnv::with_job_edits("[ingest]\nmax_objects_per_batch = 4\n", &[]);
    let out = env
        .cmd(&["simulate", "--out", "drops", "--tenants", "60", "--users-per-tenant", "20", "--days", "1"])
        .args(["--end-date", "2026-11-20", "--seed", "9"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.json(&["run", "ingest_bigdatajobs", "ingest_companies"]);
    let before = rows(&env).await;
    let ws = env.workspace();
    let mut job = ws.jobs.get("compact_events").unwrap().clone();
    let budget = 2 << 20;
    job.kind = JobKind::Compact(CompactJob {
        streams: vec!["bigdatajobs".into(), "companies".into()],
        min_files: 2,
        max_partitions_per_commit: 64,
        keep_replaced: std::time::Duration::from_secs(3600),
        run_history: false,
        memory_bytes: budget,
    });
    let s = run_job(&ws, &job, &RunOptions::default(), &Progress::new(false)).await.unwrap();
    let KindCounts::Compact(c) = &s.counts else { panic!("not a compaction: {s:?}") };
    assert!(c.commits > 0 && c.spilled_bytes > 0, "a {budget}-byte budget spills: {s:?}");
    same_rows(&rows(&env).await, &before, "after a spilling compaction");
    for (dt, version, files) in partitions(&env, "job_events").await {
        assert_eq!(files, 1, "dt={dt}: one file");
        let ids = company_ids(&walk(&env.warehouse().join(format!("job_events/dt={dt}/{version}")))[0]);
        assert!(ids.windows(2).all(|w| w[0] <= w[1]), "dt={dt}: sorted by companyID");
    }
    // The default budget holds this partition: nothing spills.
    assert!(!env.json(&["run", "compact_events"])[0].to_string().contains("spilled_mb"));
}
