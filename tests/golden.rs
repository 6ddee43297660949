//! Golden tests for every SQL file in sql/: the fixture drops in tests/golden/drops are
//! ingested and every job runs as of 2026-11-20; then
//! - each SQL job's output table must equal `tests/golden/expected/<table>.csv`,
//! - each export dataset (`sql/export/*.sql`), run as its export job runs it, must equal
//!   `tests/golden/expected/export/<dataset>.csv`,
//! - each ad-hoc query (`sql/queries/*.sql`), run as `runner query --file` runs it, must equal
//!   `tests/golden/expected/queries/<name>.csv`;
//! - each dashboard chart (`sql/dashboard/*.sql`), run as the dashboard runs it for the date and
//!   all companies, must equal `tests/golden/expected/dashboard/<name>.csv` (a chart over
//!   `runner_runs` has its clock columns, `*_at` and `hours_since_*`, masked).
//!
//! `UPDATE_GOLDEN=1` (make golden) rewrites the expected files; review the diff.

mod common;

use std::path::Path;

use common::{REPO, TestEnv, query_csv};
use runner::job::JobKind;
use runner::output::{Format, write_batches};
use runner::pipeline::{RunOptions, run_jobs};
use runner::progress::Progress;

fn copy_dir(from: &Path, to: &Path) {
    for f in common::walk(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, dest).unwrap();
    }
}

fn csv(batches: &[arrow::array::RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    write_batches(&mut out, Format::Csv, batches).unwrap();
    String::from_utf8(out).unwrap().lines().map(str::to_string).collect()
}

/// Rows sorted after the header: an output whose SQL has no ORDER BY compares by content.
fn sorted(mut lines: Vec<String>) -> Vec<String> {
    if lines.len() > 1 {
        lines[1..].sort();
    }
    lines
}

/// Compares `got` with the expected file `rel` (or rewrites it under UPDATE_GOLDEN=1). The test's
/// temporary folder (in `source_object` URLs) reads as `<root>`.
fn check(rel: &str, got: &[String], root: &Path, mismatches: &mut Vec<String>) {
    let got = (got.join("\n") + "\n").replace(&root.display().to_string(), "<root>");
    let path = Path::new(REPO).join("tests/golden/expected").join(rel);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} is missing: run `make golden`", path.display()));
    if want != got {
        mismatches.push(format!("{rel}:\n--- expected\n{want}--- got\n{got}"));
    }
}

/// Values of the columns that read the clock (`*_at`, `hours_since_*`) as `<time>`.
fn mask_clock_columns(lines: &mut [String]) {
    let Some((header, rows)) = lines.split_first_mut() else { return };
    let clock: Vec<bool> = header.split(',').map(|c| c.ends_with("_at") || c.starts_with("hours_since")).collect();
    for row in rows {
        *row =
            row.split(',').zip(&clock).map(|(v, &c)| if c && !v.is_empty() { "<time>" } else { v }).collect::<Vec<_>>().join(",");
    }
}

#[tokio::test]
async fn every_sql_file_matches_its_golden_file() {
    let env = TestEnv::new();
    copy_dir(&Path::new(REPO).join("tests/golden/drops"), &env.root().join("drops"));
    let ws = env.workspace();
    let names: Vec<String> = ws.jobs.jobs.keys().cloned().collect();
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let at = as_of.and_hms_opt(23, 0, 0).unwrap().and_utc();
    run_jobs(&ws, &names, &RunOptions { at: Some(at), ..Default::default() }, &Progress::new(false)).await.unwrap();

    let mut mismatches = Vec::new();
    let mut files = 0;
    for job in ws.jobs.jobs.values() {
        match &job.kind {
            JobKind::Sql(sj) => {
                let ctx = runner::engine::session(&ws).await.unwrap();
                let cols: Vec<String> = ctx
                    .table(sj.output.as_str())
                    .await
                    .unwrap()
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| format!("\"{}\"", f.name()))
                    .collect();
                let rows = query_csv(&ws, &format!("SELECT * FROM {} ORDER BY {}", sj.output, cols.join(", "))).await;
                check(&format!("{}.csv", sj.output), &rows, env.root(), &mut mismatches);
                files += 1;
            }
            JobKind::Export(ej) => {
                let ctx = runner::engine::session_for(&ws, Some(&ej.inputs)).await.unwrap();
                for ds in &ej.datasets {
                    let params = runner::engine::params(as_of, (as_of, as_of));
                    let batches = runner::engine::collect_sql(&ctx, &ds.sql, params, &ds.name).await.unwrap();
                    check(&format!("export/{}.csv", ds.name), &sorted(csv(&batches)), env.root(), &mut mismatches);
                    files += 1;
                }
            }
            _ => {}
        }
    }
    let mut queries: Vec<_> = common::walk(&Path::new(REPO).join("sql/queries"));
    queries.sort();
    for q in queries {
        let sql = std::fs::read_to_string(&q).unwrap();
        let batches = runner::engine::query(&ws, &sql).await.unwrap();
        let name = q.file_stem().unwrap().to_str().unwrap();
        check(&format!("queries/{name}.csv"), &csv(&batches), env.root(), &mut mismatches);
        files += 1;
    }
    let ctx = runner::engine::session(&ws).await.unwrap();
    for chart in runner::dashboard::load(&Path::new(REPO).join("sql/dashboard")).unwrap() {
        let params = runner::engine::params_with(as_of, &[("company", "")]);
        let batches = runner::engine::collect_sql(&ctx, &chart.sql, params, &chart.id).await.unwrap();
        let mut lines = csv(&batches);
        if chart.sql.contains("runner_runs") {
            mask_clock_columns(&mut lines);
        }
        check(&format!("dashboard/{}.csv", chart.id), &lines, env.root(), &mut mismatches);
        files += 1;
    }
    let on_disk = common::walk(&Path::new(REPO).join("sql")).len();
    assert_eq!(files, on_disk, "every file in sql/ has a golden file (a new one needs `make golden`)");
    assert!(
        mismatches.is_empty(),
        "SQL output differs from the golden files (make golden to accept):\n{}",
        mismatches.join("\n")
    );
}

/// tenants reads its all-time fields from tenant_state, the running state each run advances from
/// the days that changed; on consecutive days of the committed sample, with a late event and the
/// scores of each day in between, it equals its definition over all history
/// (`tests/golden/tenants_from_all_history.sql`, with the scores published before its run).
#[test]
fn tenants_from_the_running_state_equal_tenants_from_all_history() {
    let env = TestEnv::new();
    copy_dir(&Path::new(REPO).join("data/drops"), &env.root().join("drops"));
    let reference = std::fs::read_to_string(Path::new(REPO).join("tests/golden/tenants_from_all_history.sql")).unwrap();
    let compare = |day: &str| {
        // Scores published before tenants ran: those of earlier days (one run per day here).
        let sql = reference
            .replace("WHERE dt <= $as_of\n      AND status = 'scored'", "WHERE dt < $as_of\n      AND status = 'scored'")
            .replace("$as_of", &format!("DATE '{day}'"));
        assert!(sql.contains(&format!("WHERE dt < DATE '{day}'")), "the reference reads the scores");
        let want = env.json(&["query", &format!("SELECT * FROM ({sql}) ORDER BY companyID")]);
        let got = env.json(&["query", &format!("SELECT * FROM tenants WHERE as_of = DATE '{day}' ORDER BY companyID")]);
        assert!(want.as_array().is_some_and(|a| a.len() >= 20), "{want}");
        assert_eq!(got, want, "tenants as of {day}");
    };
    for day in ["2026-11-17", "2026-11-18"] {
        assert!(env.output(&["run", "--all", "--at", day]).status.success());
        compare(day);
    }
    // A late rename of comp_1, dated two days back, arrives with the next day's drops.
    env.put_drop(
        "companies",
        "2026-11-22T23",
        1,
        br#"{"event_type":"tenant_updated","event_id":"late-1","companyID":"comp_1","name":"Renamed Late","creationDate":1794988800000}"#,
        false,
    );
    for day in ["2026-11-19", "2026-11-20"] {
        let out = env.output(&["run", "--all", "--at", day]);
        assert!(out.status.success(), "{}", common::text(&out.stderr));
        compare(day);
    }
    let names = env.json(&["query", "SELECT name FROM tenants WHERE as_of = DATE '2026-11-20' AND companyID = 'comp_1'"]);
    assert_eq!(names[0]["name"], "Renamed Late", "{names}");
    // The same date again: every SQL, export and scoring job is up to date.
    let again = env.json(&["run", "--all", "--at", "2026-11-20"]);
    for r in again.as_array().unwrap() {
        if ["sql", "export", "score"].contains(&r["kind"].as_str().unwrap()) {
            assert_eq!(r["skipped"], "up to date", "{}", r["job"]);
        }
    }
}
