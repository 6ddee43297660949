//! Golden tests for every SQL file in sql/: the fixture drops in tests/golden/drops are
//! ingested, every job runs as of 2026-11-20, and each SQL output table must equal
//! tests/golden/expected/<table>.csv. `UPDATE_GOLDEN=1` (make golden) rewrites the expected files;
//! review the diff.

mod common;

use common::{REPO, TestEnv, query_csv};
use runner::job::JobKind;
use runner::pipeline::{RunOptions, run_jobs};
use runner::progress::Progress;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for f in common::walk(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, dest).unwrap();
    }
}

#[tokio::test]
async fn every_sql_job_matches_its_golden_file() {
    let env = TestEnv::new();
    copy_dir(&std::path::Path::new(REPO).join("tests/golden/drops"), &env.root().join("drops"));
    let ws = env.workspace();
    let names: Vec<String> = ws.jobs.jobs.keys().cloned().collect();
    let at = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap().and_hms_opt(23, 0, 0).unwrap().and_utc();
    run_jobs(&ws, &names, &RunOptions { at: Some(at), ..Default::default() }, &Progress::new(false)).await.unwrap();

    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for job in ws.jobs.jobs.values() {
        let JobKind::Sql(sj) = &job.kind else { continue };
        let ctx = runner::engine::session(&ws).await.unwrap();
        let cols: Vec<String> =
            ctx.table(sj.output.as_str()).await.unwrap().schema().fields().iter().map(|f| format!("\"{}\"", f.name())).collect();
        let rows = query_csv(&ws, &format!("SELECT * FROM {} ORDER BY {}", sj.output, cols.join(", "))).await;
        let got = rows.join("\n") + "\n";
        let path = std::path::Path::new(REPO).join(format!("tests/golden/expected/{}.csv", sj.output));
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} is missing: run `make golden`", path.display()));
        if want != got {
            mismatches.push(format!("{}:\n--- expected\n{want}--- got\n{got}", sj.output));
        }
    }
    assert!(
        mismatches.is_empty(),
        "SQL output differs from the golden files (make golden to accept):\n{}",
        mismatches.join("\n")
    );
}
