//! Athena-style readers (pyarrow with Hive partitioning, DuckDB) see exactly the rows that
//! `runner query` sees: the warehouse is plain Hive-partitioned Parquet, with no file a reader
//! listing the partition folders would miscount.
//!
//! Needs a Python with pyarrow and duckdb in `RUNNER_TEST_PYTHON` (`make test` creates one);
//! without one the test fails and says how to get it.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::TestEnv;

#[tokio::test]
async fn pyarrow_and_duckdb_read_the_same_rows() {
    let py = common::python_with(&["pyarrow", "duckdb"]);
    let env = TestEnv::with_settings("[ingest]\nmax_objects_per_batch = 40\n");
    let out = runner::simulate::SimulateOptions {
        tenants: 8,
        users_per_tenant: 3,
        days: 6,
        end_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
        seed: 5,
        invalid_share: 0.01,
        noise: true,
        ..Default::default()
    };
    let drops = runner::store::Location::parse(&runner::config::to_url(env.root(), "drops").unwrap()).unwrap();
    runner::simulate::simulate(&drops, &out).await.unwrap();
    env.ingest("bigdatajobs").await;
    env.ingest("companies").await;

    let res = Command::new(&py).arg(format!("{}/tests/read_warehouse.py", common::REPO)).arg(env.warehouse()).output().unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let v: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();

    for table in ["job_events", "tenant_events", "quarantine"] {
        let rows = env.query(&format!("SELECT dt, count(*) AS n FROM {table} GROUP BY dt ORDER BY dt")).await;
        let ours: BTreeMap<String, u64> =
            rows[1..].iter().map(|l| l.split_once(',').unwrap()).map(|(d, n)| (d.to_string(), n.parse().unwrap())).collect();
        let theirs: BTreeMap<String, u64> = serde_json::from_value(v[table]["per_dt"].clone()).unwrap();
        assert!(!ours.is_empty(), "{table} is empty");
        assert_eq!(ours, theirs, "{table}: rows per dt differ between runner and pyarrow");
    }
    let rows = env.query("SELECT companyID, sum(nbJobs) AS n FROM job_events GROUP BY companyID").await;
    let ours: BTreeMap<String, i64> =
        rows[1..].iter().map(|l| l.split_once(',').unwrap()).map(|(c, n)| (c.to_string(), n.parse().unwrap())).collect();
    for reader in ["pyarrow_jobs", "duckdb_jobs"] {
        let theirs: BTreeMap<String, i64> = serde_json::from_value(v[reader].clone()).unwrap();
        assert_eq!(ours, theirs, "{reader}: jobs per tenant differ");
    }
}
