//! AWS end to end, against a real AWS API emulator (moto's server on 127.0.0.1, see
//! `common/moto.rs`): drops delivered through the Firehose API into S3, the whole DAG over an
//! `s3://` source and warehouse with the Glue catalog, the catalog checked through the Glue API,
//! `runner publish`, the Athena flow, schema changes, the errors users meet, and the ingest
//! crash-recovery test on S3. Nothing here is faked: every call goes over HTTP to the emulator.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_glue::Client as Glue;
use common::REPO;
use common::moto::{Moto, moto, unique};

struct AwsEnv {
    dir: tempfile::TempDir,
    bucket: String,
    database: String,
    m: &'static Moto,
}

impl AwsEnv {
    /// A config with an S3 source and warehouse in a new bucket and a new Glue database.
    fn new(m: &'static Moto, extra: &str) -> AwsEnv {
        let env = AwsEnv {
            dir: tempfile::tempdir().unwrap(),
            bucket: unique("runner-test"),
            database: unique("db").replace('-', "_"),
            m,
        };
        let toml = format!(
            "warehouse = \"s3://{b}/warehouse\"\njobs_dir = \"{REPO}/jobs\"\nsql_dir = \"{REPO}/sql\"\nschemas_dir = \"{REPO}/schemas\"\n\
             [catalog]\nkind = \"glue\"\ndatabase = \"{db}\"\n\
             [athena]\noutput_location = \"s3://{b}/athena-results/\"\npoll = \"10ms\"\n\
             [sources.companies]\nurl = \"s3://{b}/raw/companies/\"\n[sources.bigdatajobs]\nurl = \"s3://{b}/raw/bigdatajobs/\"\n\
             [scoring]\nmodel = \"{REPO}/data/model/churn.json\"\n{extra}",
            b = env.bucket,
            db = env.database
        );
        std::fs::write(env.root().join("runner.toml"), toml).unwrap();
        env
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn runner(&self, args: &[&str]) -> Command {
        let mut c = common::cmd_in(self.root(), &self.root().join("runner.toml"), args);
        self.m.env(&mut c);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.runner(args).output().unwrap();
        assert!(out.status.success(), "runner {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Drops from `runner simulate` in a local folder: `<root>/<name>/raw/<stream>/...`.
    fn simulate(&self, name: &str, end_date: &str, days: &str, seed: &str) -> PathBuf {
        let out = self.root().join(name);
        let o = common::bin()
            .args(["--quiet", "simulate", "--out"])
            .arg(&out)
            .args(["--tenants", "4", "--users-per-tenant", "3", "--days", days, "--end-date", end_date, "--seed", seed])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    }

    async fn glue(&self) -> Glue {
        Glue::new(&self.m.sdk().await)
    }

    /// Glue's partitions of `table`: values -> (location, creation time).
    async fn glue_partitions(&self, table: &str) -> BTreeMap<Vec<String>, (String, String)> {
        let out = self.glue().await.get_partitions().database_name(&self.database).table_name(table).send().await.unwrap();
        assert!(out.next_token().is_none(), "the test tables fit one page");
        out.partitions()
            .iter()
            .map(|p| {
                let loc = p.storage_descriptor().and_then(|s| s.location()).unwrap_or_default().to_string();
                (p.values().to_vec(), (loc, format!("{:?}", p.creation_time())))
            })
            .collect()
    }

    /// `runner tables`: table -> partition count in the local catalog.
    fn local_partition_counts(&self) -> BTreeMap<String, u64> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["tables", "--format", "json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| (t["table"].as_str().unwrap().to_string(), t["partitions"].as_u64().unwrap()))
            .collect()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

const ATHENA_TYPES: &[&str] =
    &["tinyint", "smallint", "int", "bigint", "float", "double", "boolean", "string", "binary", "date", "timestamp"];

#[tokio::test]
async fn firehose_to_glue_and_athena_end_to_end() {
    let m = moto();
    let env = AwsEnv::new(m, "");
    for stream in ["companies", "bigdatajobs"] {
        m.ops(&["firehose-setup", &env.bucket, stream, &format!("raw/{stream}/")]);
    }
    // Producers: every record of the simulated drops, through PutRecordBatch.
    let drops = env.simulate("drops", "2026-11-20", "5", "7");
    for stream in ["companies", "bigdatajobs"] {
        let sent: u64 =
            m.ops(&["firehose-put", stream, drops.join("raw").join(stream).to_str().unwrap()]).trim().parse().unwrap();
        assert!(sent > 10, "{stream}: {sent} records");
    }
    env.ok(&["run", "--all", "--at", "2026-11-20"]);

    // The tables through the Glue API, in the shape Athena needs.
    let glue = env.glue().await;
    let tables = glue.get_tables().database_name(&env.database).send().await.unwrap();
    let names: Vec<&str> = tables.table_list().iter().map(|t| t.name()).collect();
    for t in [
        "job_events",
        "tenant_events",
        "quarantine",
        "runner_runs",
        "tenant_activity_daily",
        "tenants",
        "jobs_daily",
        "churn_features",
    ] {
        assert!(names.contains(&t), "Glue has no `{t}`: {names:?}");
    }
    for t in tables.table_list() {
        assert_eq!(t.table_type(), Some("EXTERNAL_TABLE"), "{}", t.name());
        let p = t.parameters().unwrap();
        assert_eq!(p.get("classification").map(String::as_str), Some("parquet"), "{}", t.name());
        assert_eq!(p.get("EXTERNAL").map(String::as_str), Some("TRUE"), "{}", t.name());
        let sd = t.storage_descriptor().unwrap();
        assert_eq!(sd.input_format(), Some("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"));
        assert_eq!(sd.output_format(), Some("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"));
        let serde = sd.serde_info().unwrap();
        assert_eq!(serde.serialization_library(), Some("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"));
        assert_eq!(serde.parameters().unwrap().get("serialization.format").map(String::as_str), Some("1"));
        assert!(
            sd.location().unwrap().starts_with(&format!("s3://{}/warehouse/{}/", env.bucket, t.name())),
            "{:?}",
            sd.location()
        );
        for c in sd.columns().iter().chain(t.partition_keys()) {
            assert_eq!(c.name(), c.name().to_ascii_lowercase(), "{}: Glue column names are lowercase", t.name());
            let ty = c.r#type().unwrap();
            assert!(
                ATHENA_TYPES.contains(&ty) || ty.starts_with("decimal("),
                "{}.{}: `{ty}` is not an Athena type",
                t.name(),
                c.name()
            );
        }
    }
    let job_events = tables.table_list().iter().find(|t| t.name() == "job_events").unwrap();
    let keys: Vec<(&str, &str)> = job_events.partition_keys().iter().map(|k| (k.name(), k.r#type().unwrap())).collect();
    assert_eq!(keys, vec![("dt", "date")]);
    let cols: BTreeMap<&str, &str> =
        job_events.storage_descriptor().unwrap().columns().iter().map(|c| (c.name(), c.r#type().unwrap())).collect();
    assert_eq!(cols.get("companyid"), Some(&"string"));
    assert_eq!(cols.get("nbjobs"), Some(&"bigint"), "{cols:?}");
    assert!(cols.values().any(|t| *t == "timestamp"), "{cols:?}");

    // Every partition the local catalog has is registered in Glue, at its folder.
    let counts = env.local_partition_counts();
    for (table, n) in &counts {
        let parts = env.glue_partitions(table).await;
        assert_eq!(parts.len() as u64, *n, "{table}: Glue and the local catalog disagree");
        for (values, (loc, _)) in &parts {
            assert!(
                loc.starts_with(&format!("s3://{}/warehouse/{table}/", env.bucket)) && loc.contains(&format!("={}", values[0])),
                "{loc}"
            );
        }
    }
    assert!(counts["job_events"] >= 5 && counts["tenant_activity_daily"] >= 5, "{counts:?}");

    // The same drops through a local warehouse give the same tables.
    let local_cfg = common::local_config(env.root());
    let local = |args: &[&str]| {
        let o = common::cmd_in(env.root(), &local_cfg, args).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    local(&["run", "--all", "--at", "2026-11-20"]);
    for q in [
        "SELECT \"companyID\", dt, count(*) AS n, sum(\"nbJobs\") AS jobs FROM job_events GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT * FROM tenant_activity_daily ORDER BY dt, \"companyID\"",
        "SELECT * FROM tenants ORDER BY \"companyID\"",
    ] {
        let s3 = env.ok(&["query", q, "--format", "csv"]);
        assert!(s3.lines().count() > 4, "{q}: {s3}");
        assert_eq!(s3, local(&["query", q, "--format", "csv"]), "{q}");
    }

    // A second delivery: only the new day's partition is registered; the others stay as they were.
    let before = env.glue_partitions("job_events").await;
    let drops2 = env.simulate("drops2", "2026-11-21", "1", "8");
    m.ops(&["firehose-put", "bigdatajobs", drops2.join("raw/bigdatajobs").to_str().unwrap()]);
    env.ok(&["run", "ingest_bigdatajobs"]);
    let after = env.glue_partitions("job_events").await;
    let new: Vec<&Vec<String>> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(new, vec![&vec!["2026-11-21".to_string()]], "only the new day is registered");
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "partition {k:?} was touched");
    }

    // `runner publish`: in sync already, so nothing changes; after drift by hand, it repairs.
    let sync = |expect_change: bool| {
        let o = env.runner(&["publish", "--format", "json"]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let said = stderr(&o);
        assert_eq!(said.contains("nothing changed"), !expect_change, "{said}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0].clone()
    };
    let r = sync(false);
    assert_eq!(r["partitions_created"], 0, "{r}");
    assert_eq!(r["tables_updated"], 0, "{r}");
    let dropped = vec!["2026-11-18".to_string()];
    glue.delete_partition()
        .database_name(&env.database)
        .table_name("job_events")
        .set_partition_values(Some(dropped.clone()))
        .send()
        .await
        .unwrap();
    let stray = aws_sdk_glue::types::PartitionInput::builder()
        .values("2001-01-01")
        .storage_descriptor(
            aws_sdk_glue::types::StorageDescriptor::builder()
                .location(format!("s3://{}/warehouse/job_events/dt=2001-01-01/", env.bucket))
                .build(),
        )
        .build();
    glue.create_partition().database_name(&env.database).table_name("job_events").partition_input(stray).send().await.unwrap();
    let r = sync(true);
    assert_eq!((r["partitions_created"].as_u64(), r["partitions_deleted"].as_u64()), (Some(1), Some(1)), "{r}");
    let repaired = env.glue_partitions("job_events").await;
    assert_eq!(repaired.get(&dropped).map(|(l, _)| l), after.get(&dropped).map(|(l, _)| l));
    assert!(!repaired.contains_key(&vec!["2001-01-01".to_string()]));
    let r = sync(false);
    assert_eq!(r["partitions_unchanged"].as_u64(), Some(env.local_partition_counts().values().sum::<u64>()), "{r}");

    // Athena: the emulator runs no SQL, so it is given the rows to answer (header first, as Athena does).
    let results = serde_json::json!({"region": common::moto::REGION, "results": [{
        "rows": [
            {"Data": [{"VarCharValue": "companyID"}, {"VarCharValue": "job30"}]},
            {"Data": [{"VarCharValue": "c-0001"}, {"VarCharValue": "42"}]},
            {"Data": [{"VarCharValue": "c-0002"}, {}]},
        ],
        "column_info": [
            {"Name": "companyID", "Label": "companyID", "Type": "varchar", "Nullable": "UNKNOWN"},
            {"Name": "job30", "Label": "job30", "Type": "bigint", "Nullable": "UNKNOWN"},
        ],
    }]});
    m.ops(&["athena-results", &results.to_string()]);
    let sql = "SELECT \"companyID\", job30 FROM tenants ORDER BY job30 DESC LIMIT 2";
    let out = env.ok(&["query", "--engine", "athena", sql, "--format", "csv"]);
    assert_eq!(out, "companyID,job30\nc-0001,42\nc-0002,\n");
    let execs: serde_json::Value = serde_json::from_str(&m.ops(&["athena-executions"])).unwrap();
    let e = execs.as_array().unwrap().iter().find(|e| e["Query"] == sql).expect("the query reached Athena");
    assert_eq!(e["QueryExecutionContext"]["Database"], env.database.as_str());
    assert_eq!(e["WorkGroup"], "primary");
    assert!(
        e["ResultConfiguration"]["OutputLocation"].as_str().unwrap().starts_with(&format!("s3://{}/athena-results/", env.bucket))
    );
    assert_eq!(e["Status"]["State"], "SUCCEEDED");
}

/// What a reader sees after ingest on S3: the rows of the event tables (bucket names masked) and
/// Glue's partitions of them.
async fn ingest_snapshot(env: &AwsEnv) -> Vec<String> {
    let mut out = Vec::new();
    for q in [
        "SELECT * FROM job_events ORDER BY source_object, event_id, \"companyID\", event_time, \"jobID\", event_type",
        "SELECT * FROM tenant_events ORDER BY source_object, event_id, \"companyID\", event_time, \"userID\", event_type",
        "SELECT stream, source_object, byte_offset, raw, reason_code, field, reason, dt FROM quarantine ORDER BY source_object, byte_offset",
    ] {
        out.extend(env.ok(&["query", q, "--format", "csv"]).lines().map(str::to_string));
    }
    for t in ["job_events", "tenant_events"] {
        for (values, (loc, _)) in env.glue_partitions(t).await {
            // Locations hold the batch's ledger seq, which a crash does not change.
            out.push(format!("{t} {values:?} {loc}"));
        }
    }
    out.into_iter().map(|l| l.replace(&env.bucket, "<bucket>")).collect()
}

/// Drops from `runner simulate` (ending 2026-11-20) in a new temporary folder.
fn simulate_to(args: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let o = common::bin()
        .args(["--quiet", "simulate", "--end-date", "2026-11-20", "--out"])
        .arg(tmp.path())
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    tmp
}

fn fresh_s3_drops(m: &'static Moto, drops: &Path) -> AwsEnv {
    // Small batches, a checkpoint every two commits, clean-ups by the next run.
    let env = AwsEnv::new(m, "[ingest]\nmax_objects_per_batch = 10\ncheckpoint_every = 2\ncheckpoint_retention = \"0s\"\n");
    for stream in ["companies", "bigdatajobs"] {
        m.ops(&["upload", &env.bucket, &format!("raw/{stream}"), drops.join("raw").join(stream).to_str().unwrap()]);
    }
    env
}

#[tokio::test]
async fn ingest_crash_recovery_on_s3_and_glue() {
    let m = moto();
    let tmp = simulate_to(&[
        "--tenants",
        "3",
        "--users-per-tenant",
        "2",
        "--days",
        "3",
        "--seed",
        "5",
        "--noise",
        "--invalid-share",
        "0.02",
        "--duplicate-share",
        "0.05",
    ]);
    // --no-lock: a killed run keeps its lease until it expires; this test is about the ledger.
    let ingest = ["run", "--no-lock", "ingest_companies", "ingest_bigdatajobs"];
    let reference = fresh_s3_drops(m, tmp.path());
    reference.ok(&ingest);
    let expected = ingest_snapshot(&reference).await;
    assert!(expected.len() > 100, "the fixture should hold real work: {} lines", expected.len());
    for point in runner::failpoint::POINTS.iter().filter(|p| ["ingest.", "ledger.", "glue."].iter().any(|x| p.starts_with(x))) {
        let env = fresh_s3_drops(m, tmp.path());
        if point.starts_with("ledger.") {
            // A checkpoint of an earlier run, for this run to clean up after (and checkpoint on).
            env.ok(&["run", "--no-lock", "ingest_companies"]);
        }
        let out = env.runner(&ingest).env("RUNNER_FAILPOINT", point).output().unwrap();
        assert_eq!(out.status.signal(), Some(9), "{point}: the failpoint must kill the run: {}", stderr(&out));
        env.ok(&ingest);
        let got = ingest_snapshot(&env).await;
        if got != expected {
            let missing: Vec<_> = expected.iter().filter(|l| !got.contains(l)).take(10).collect();
            let extra: Vec<_> = got.iter().filter(|l| !expected.contains(l)).take(10).collect();
            panic!("{point}: tables differ after recovery on S3\nmissing: {missing:#?}\nextra: {extra:#?}");
        }
        let again: serde_json::Value = serde_json::from_str(&env.ok(&["run", "ingest_companies", "--format", "json"])).unwrap();
        assert_eq!(again[0]["objects"], 0, "{point}: {again}");
    }
}

/// A SQL publish cut short between the local catalog and Glue (the process killed where a Glue
/// call would fail), then version clean-up with no grace: every location Glue (so Athena) reads
/// still holds its files; the next run finishes the Glue half, and only then does clean-up
/// delete the versions Glue stopped pointing at.
#[tokio::test]
async fn a_glue_publish_cut_short_then_clean_up_leaves_athenas_locations_readable() {
    let m = moto();
    let tmp = simulate_to(&["--tenants", "3", "--users-per-tenant", "2", "--days", "3", "--seed", "7"]);
    let env = fresh_s3_drops(m, tmp.path());
    let job = "tenant_activity_daily";
    env.ok(&["run", "--no-lock", "ingest_companies", "ingest_bigdatajobs", job]);
    let locations = |parts: BTreeMap<Vec<String>, (String, String)>| -> BTreeMap<String, String> {
        parts.into_iter().map(|(v, (loc, _))| (v.join("/"), loc)).collect()
    };
    let files_at = |loc: &str| -> u64 { m.ops(&["count", loc]).trim().parse().unwrap() };
    let before = locations(env.glue_partitions(job).await);
    assert!(before.contains_key("2026-11-19") && before.contains_key("2026-11-20"), "{before:?}");
    let no_grace = |args: &[&str]| {
        let mut c = env.runner(args);
        c.env("RUNNER__CATALOG__KEEP_REPLACED", "0s");
        c
    };
    let out = no_grace(&["backfill", job, "--from", "2026-11-19", "--to", "2026-11-20"])
        .env("RUNNER_FAILPOINT", "glue.before_mirror")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "the failpoint must kill the publish: {}", stderr(&out));
    assert_eq!(locations(env.glue_partitions(job).await), before, "Glue is behind the local catalog");
    // A clean-up with no grace (another day rebuilt): the versions Glue points at stay.
    let out = no_grace(&["backfill", job, "--from", "2026-11-18", "--to", "2026-11-18"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for (day, loc) in locations(env.glue_partitions(job).await) {
        assert!(files_at(&loc) > 0, "{day}: Glue points at {loc}, which clean-up emptied");
    }
    // The next run of any job finishes the pending Glue publish.
    let out =
        no_grace(&["run", "--no-lock", "ingest_companies"]).env("RUNNER__CATALOG__GLUE_REPLAY_AFTER", "0s").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after = locations(env.glue_partitions(job).await);
    for day in ["2026-11-19", "2026-11-20"] {
        assert_ne!(after[day], before[day], "{day}: Glue caught up with the rebuilt version");
        assert!(files_at(&after[day]) > 0);
    }
    // Now that no catalog points at the replaced versions, clean-up deletes them.
    let out = no_grace(&["backfill", job, "--from", "2026-11-18", "--to", "2026-11-18"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_at(&before["2026-11-19"]), 0, "the replaced version is collected once Glue left it");
    for (day, loc) in locations(env.glue_partitions(job).await) {
        assert!(files_at(&loc) > 0, "{day}: {loc}");
    }
}

/// A SQL publisher paused between the local catalog and Glue while a newer publish of the same
/// day lands in both and clean-up (no grace) deletes the version the paused one wrote: resumed,
/// it does not move Glue back to its deleted version; Glue ends where the local catalog points.
#[tokio::test]
async fn a_glue_publisher_paused_between_its_writes_never_moves_glue_back() {
    let m = moto();
    let tmp = simulate_to(&["--tenants", "3", "--users-per-tenant", "2", "--days", "2", "--seed", "9"]);
    let env = fresh_s3_drops(m, tmp.path());
    let job = "tenant_activity_daily";
    env.ok(&["run", "--no-lock", "ingest_companies", "ingest_bigdatajobs", job]);
    async fn day(env: &AwsEnv) -> String {
        env.glue_partitions("tenant_activity_daily").await[&vec!["2026-11-20".to_string()]].0.clone()
    }
    let files_at = |loc: &str| -> u64 { m.ops(&["count", loc]).trim().parse().unwrap() };
    let original = day(&env).await;
    let backfill = ["backfill", job, "--from", "2026-11-20", "--to", "2026-11-20"];
    let err_path = env.root().join("paused.stderr");
    let paused = env
        .runner(&backfill)
        .env("RUNNER_FAILPOINT", "glue.before_mirror=stop")
        .env("RUNNER__CATALOG__KEEP_REPLACED", "0s")
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    common::wait_stopped(paused.id());
    // The newer publish, then a clean-up with no grace (which deletes the paused one's version:
    // neither catalog points at it).
    let out = env.runner(&backfill).env("RUNNER__CATALOG__KEEP_REPLACED", "0s").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let newer = day(&env).await;
    assert!(
        newer != original && files_at(&newer) > 0,
        "{original} -> {newer}: {} {}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    let (code, e) = common::resume(paused, &err_path);
    assert_eq!(code, Some(0), "{e}");
    let after = day(&env).await;
    assert_eq!(after, newer, "Glue was moved back to the paused publisher's version");
    assert!(files_at(&after) > 0, "Glue points at {after}, which has no files");
    let local = env.ok(&["query", "--format", "csv", "SELECT count(*) FROM tenant_activity_daily WHERE dt = DATE '2026-11-20'"]);
    assert!(!local.contains("\n0\n"), "{local}");
}

#[tokio::test]
async fn an_incompatible_glue_schema_is_refused_before_publishing() {
    let m = moto();
    let tmp = simulate_to(&["--tenants", "2", "--users-per-tenant", "2", "--days", "2", "--seed", "3"]);
    let env = fresh_s3_drops(m, tmp.path());
    env.ok(&["run", "ingest_bigdatajobs"]);
    // Someone changes a column's type in Glue by hand.
    let glue = env.glue().await;
    let t = glue.get_table().database_name(&env.database).name("job_events").send().await.unwrap().table.unwrap();
    let mut sd = t.storage_descriptor().unwrap().clone();
    for c in sd.columns.iter_mut().flatten().filter(|c| c.name == "nbjobs") {
        c.r#type = Some("string".into());
    }
    let input = aws_sdk_glue::types::TableInput::builder()
        .name("job_events")
        .table_type("EXTERNAL_TABLE")
        .set_partition_keys(Some(t.partition_keys().to_vec()))
        .storage_descriptor(sd)
        .set_parameters(t.parameters().cloned())
        .build()
        .unwrap();
    glue.update_table().database_name(&env.database).table_input(input).send().await.unwrap();
    let before = env.glue_partitions("job_events").await;
    // New drops arrive; the run must refuse before it publishes any of them.
    m.ops(&[
        "upload",
        &env.bucket,
        "raw/bigdatajobs/2026/11/23/10",
        tmp.path().join("raw/bigdatajobs/2026/11/20/23").to_str().unwrap(),
    ]);
    let out = env.runner(&["run", "ingest_bigdatajobs"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("column `nbjobs` is string in Glue and would become bigint") && e.contains("nothing was published"),
        "{e}"
    );
    assert_eq!(env.glue_partitions("job_events").await, before);
}

#[test]
fn errors_users_meet_say_what_to_do() {
    let m = moto();
    let env = AwsEnv::new(m, "");
    // The bucket was never created.
    let out = env.runner(&["run", "ingest_companies"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the bucket does not exist: create it"), "{}", stderr(&out));
    // No credentials anywhere in the chain.
    let home = tempfile::tempdir().unwrap();
    let out = env
        .runner(&["tables"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no AWS credentials found: set AWS_ACCESS_KEY_ID"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("testing"), "no secret in messages");
    // Athena needs the Glue catalog.
    let local = tempfile::tempdir().unwrap();
    let out = common::bin().current_dir(local.path()).args(["query", "--engine", "athena", "SELECT 1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("[catalog] kind = \"glue\""), "{}", stderr(&out));
}
