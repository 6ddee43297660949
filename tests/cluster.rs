//! Scale-out on Ballista, for real: a scheduler and two executors started as separate processes
//! on 127.0.0.1 (`runner cluster scheduler`, `runner cluster executor`), the runner sending its
//! SQL to them. A run on the cluster must publish exactly the rows a local run publishes, on a
//! local warehouse and on S3 (moto's server); an executor killed with SIGKILL mid-run must
//! never leave a half-published table; and the errors where Ballista would mislead are clear.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{REPO, bin, text};

const END: &str = "2026-11-20";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (bounded) until something listens on `port`.
fn wait_port(port: u16, what: &str, log: &Path) {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port} within 30 s: {}", std::fs::read_to_string(log).unwrap_or_default());
}

/// A Ballista scheduler and its executors, each its own `runner cluster` process; all are
/// killed when this is dropped.
struct Cluster {
    port: u16,
    scheduler: Child,
    executors: Vec<Child>,
    work: tempfile::TempDir,
}

impl Cluster {
    /// `env` sets each process's environment (the AWS emulator's, say).
    fn start(executors: usize, env: &dyn Fn(&mut Command)) -> Cluster {
        let work = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = work.path().join("scheduler.log");
        let mut c = bin();
        c.args(["cluster", "scheduler", "--port", &port.to_string(), "--executor-timeout", "5s"]);
        c.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        env(&mut c);
        let scheduler = c.spawn().unwrap();
        wait_port(port, "the scheduler", &log);
        let mut cluster = Cluster { port, scheduler, executors: Vec::new(), work };
        for i in 0..executors {
            let (flight, grpc) = (free_port(), free_port());
            let log = cluster.work.path().join(format!("executor-{i}.log"));
            let mut c = bin();
            c.args(["cluster", "executor", "--scheduler", &format!("127.0.0.1:{port}"), "--concurrency", "2"])
                .args(["--port", &flight.to_string(), "--grpc-port", &grpc.to_string()])
                .arg("--work-dir")
                .arg(cluster.work_dir(i))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            env(&mut c);
            cluster.executors.push(c.spawn().unwrap());
            wait_port(flight, "an executor", &log);
        }
        cluster
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    fn work_dir(&self, i: usize) -> PathBuf {
        self.work.path().join(format!("executor-{i}"))
    }

    /// Ballista job folders an executor has written shuffle output to.
    fn jobs_on(&self, i: usize) -> Vec<String> {
        std::fs::read_dir(self.work_dir(i))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.work.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let t = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = t.lines().rev().take(15).collect();
                out.push_str(&format!(
                    "--- {}\n{}\n",
                    e.file_name().to_string_lossy(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.executors.iter_mut().chain(std::iter::once(&mut self.scheduler)) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A workspace: the repository's jobs, SQL and schemas, drops from `drops`, and `warehouse`.
struct Ws {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Ws {
    fn new(drops: &str, warehouse: &str, env: &[(String, String)]) -> Ws {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("runner.toml"),
            format!(
                "warehouse = \"{warehouse}\"\njobs_dir = \"{REPO}/jobs\"\nsql_dir = \"{REPO}/sql\"\nschemas_dir = \"{REPO}/schemas\"\n\
                 scheduler_dir = \"{REPO}/scheduler\"\n\
                 [sources.companies]\nurl = \"{drops}/raw/companies\"\n[sources.bigdatajobs]\nurl = \"{drops}/raw/bigdatajobs\"\n\
                 [scoring]\nmodel = \"{REPO}/data/model/churn.json\"\n"
            ),
        )
        .unwrap();
        Ws { dir, env: env.to_vec() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = common::cmd_in(self.dir.path(), &self.dir.path().join("runner.toml"), args);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(o.status.success(), "runner {args:?} failed: {}", text(&o.stderr));
        text(&o.stdout)
    }

    fn tables(&self) -> Vec<String> {
        self.ok(&["--engine", "local", "tables", "--format", "csv"])
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().to_string())
            .collect()
    }

    /// Every table's rows, sorted, read by the local engine; columns that name a run or its
    /// clock (`run_id`, `scored_at`, `risk_scored_at`, `ingested_at`) are left out, and `runner_runs` keeps what
    /// each job did, not when.
    fn snapshot(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for t in self.tables() {
            let sql = if t == "runner_runs" {
                "SELECT job, kind, logical_time, status, rows_out, files, partitions, periods FROM runner_runs \
                 WHERE status = 'succeeded'"
                    .to_string()
            } else {
                let cols = self.ok(&["--engine", "local", "describe", &t, "--format", "csv"]);
                let keep: Vec<String> = cols
                    .lines()
                    .skip(1)
                    .map(|l| l.split(',').next().unwrap().to_string())
                    .filter(|c| !["run_id", "scored_at", "risk_scored_at", "ingested_at"].contains(&c.as_str()))
                    .map(|c| format!("\"{c}\""))
                    .collect();
                format!("SELECT {} FROM {t}", keep.join(", "))
            };
            let mut rows: Vec<String> =
                self.ok(&["--engine", "local", "query", &sql, "--format", "csv"]).lines().map(String::from).collect();
            rows.sort();
            out.insert(t, rows);
        }
        out
    }
}

/// Tables of SQL jobs (what the cluster computes), from a snapshot.
fn sql_outputs(s: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    let sql_tables = ["jobs_daily", "tenant_activity_daily", "tenants", "churn_features", "companies_enriched"];
    s.iter().filter(|(k, _)| sql_tables.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn assert_same(a: &BTreeMap<String, Vec<String>>, b: &BTreeMap<String, Vec<String>>, what: &str) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: the tables differ");
    for (t, rows) in a {
        // The SQL outputs have rows, or the comparison would prove nothing.
        if sql_outputs(a).contains_key(t) {
            assert!(rows.len() > 1, "{what}: table {t} is empty");
        }
        assert_eq!(rows, &b[t], "{what}: table {t} differs");
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn simulate(out: &Path, days: &str, end: &str, seed: &str) {
    let o = bin()
        .args(["simulate", "--tenants", "6", "--days", days, "--end-date", end, "--seed", seed, "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// A cluster of two executors, 20 days of drops, and two workspaces reading them: one for
/// local runs, one for runs on the cluster.
fn cluster_and_workspaces() -> (Cluster, tempfile::TempDir, Ws, Ws) {
    let cluster = Cluster::start(2, &|_| {});
    let drops = tempfile::tempdir().unwrap();
    simulate(drops.path(), "20", END, "42");
    let d = drops.path().display().to_string();
    let (local, remote) = (Ws::new(&d, "warehouse", &[]), Ws::new(&d, "warehouse", &[]));
    (cluster, drops, local, remote)
}

#[test]
fn run_all_on_the_cluster_publishes_the_same_rows_as_a_local_run() {
    let (cluster, _drops, local, remote) = cluster_and_workspaces();
    let url = cluster.url();
    let on_cluster = ["--engine", "ballista", "--scheduler", url.as_str()];

    // validate plans every job and checks each plan can be sent to the cluster.
    let v = remote.out(&[&on_cluster[..], &["validate"]].concat());
    assert!(v.status.success(), "{}", text(&v.stderr));
    assert!(text(&v.stderr).contains(&format!("engine ballista {url}")), "{}", text(&v.stderr));
    local.ok(&["run", "--all", "--at", END]);
    let jobs_before = cluster.jobs_on(0).len() + cluster.jobs_on(1).len();
    remote.ok(&[&on_cluster[..], &["run", "--all", "--at", END]].concat());
    assert!(
        cluster.jobs_on(0).len() + cluster.jobs_on(1).len() > jobs_before,
        "the executors ran nothing: the SQL did not go to the cluster\n{}",
        cluster.logs()
    );
    assert_same(&local.snapshot(), &remote.snapshot(), "local run against cluster run");

    // A dry run runs the SQL on the cluster and publishes nothing.
    let partitions = || remote.ok(&["describe", "tenants", "--format", "csv"]).lines().count();
    let before = partitions();
    let dry = remote.ok(&[&on_cluster[..], &["run", "tenants", "--dry-run", "--at", "2026-11-21", "--format", "json"]].concat());
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    // tenants and the running state it reads (tenant_state runs with it).
    let tenants = dry.as_array().unwrap().iter().find(|r| r["job"] == "tenants").unwrap();
    assert!(tenants["dry_run"] == true && tenants["rows_out"] == 6, "{dry}");
    assert_eq!(partitions(), before);
    assert!(!remote.ok(&["--engine", "local", "query", "SELECT DISTINCT as_of FROM tenants"]).contains("2026-11-21"));

    // status and history say where each job ran.
    let status: serde_json::Value = serde_json::from_str(&remote.ok(&["status", "--format", "json"])).unwrap();
    let engine_of =
        |job: &str| status.as_array().unwrap().iter().find(|r| r["job"] == job).unwrap()["engine"].as_str().unwrap().to_string();
    assert_eq!(engine_of("tenant_activity_daily"), format!("ballista {url}"));
    assert_eq!(engine_of("export_tenants"), format!("ballista {url}"));
    assert_eq!(engine_of("ingest_companies"), "local");
    let history = remote.ok(&["history", "tenants", "--format", "json"]);
    assert!(history.contains(&format!("\"engine\":\"ballista {url}\"")), "{history}");

    // runner query on the cluster answers what the local engine answers.
    let sql = "SELECT t.industry, count(*) AS tenants, sum(a.logins) AS logins FROM tenants t \
               JOIN tenant_activity_daily a ON a.\"companyID\" = t.\"companyID\" GROUP BY t.industry ORDER BY t.industry";
    let there = remote.ok(&[&on_cluster[..], &["query", sql, "--format", "csv"]].concat());
    let here = remote.ok(&["--engine", "local", "query", sql, "--format", "csv"]);
    assert_eq!(there, here);
    assert!(there.lines().count() > 2, "{there}");
}

#[test]
fn the_cluster_reads_and_the_runner_publishes_an_s3_warehouse() {
    let m = common::moto::moto();
    let mut env: Vec<(String, String)> = Vec::new();
    {
        let mut c = Command::new("true");
        m.env(&mut c);
        for (k, v) in c.get_envs() {
            if let Some(v) = v {
                env.push((k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()));
            }
        }
    }
    let cluster = Cluster::start(2, &|c| m.env(c));
    let bucket = common::moto::unique("cluster");
    let drops = tempfile::tempdir().unwrap();
    simulate(drops.path(), "10", END, "7");
    m.ops(&["upload", &bucket, "drops", drops.path().to_str().unwrap()]);
    let src = format!("s3://{bucket}/drops");
    let local = Ws::new(&src, &format!("s3://{bucket}/local"), &env);
    let remote = Ws::new(&src, &format!("s3://{bucket}/cluster"), &env);
    local.ok(&["run", "--all", "--at", END]);
    remote.ok(&["--engine", "ballista", "--scheduler", &cluster.url(), "run", "--all", "--at", END]);
    assert!(!cluster.jobs_on(0).is_empty() || !cluster.jobs_on(1).is_empty(), "nothing ran on the cluster");
    assert_same(&local.snapshot(), &remote.snapshot(), "S3: local run against cluster run");
}

#[test]
fn an_executor_killed_mid_run_never_leaves_a_half_published_table() {
    let (cluster, drops, local, remote) = cluster_and_workspaces();
    let url = cluster.url();
    let on_cluster = |args: &[&'static str]| -> Vec<String> {
        ["--engine", "ballista", "--scheduler", url.as_str()].iter().chain(args).map(|s| s.to_string()).collect()
    };
    remote.ok(&strs(&on_cluster(&["run", "--all", "--at", END])));
    local.ok(&["run", "--all", "--at", END]);
    let before = sql_outputs(&remote.snapshot());

    // Two more days of drops; the next run rebuilds days on the cluster. Executor 0 is killed
    // as soon as it starts a new Ballista job, while the runner is still running.
    simulate(drops.path(), "3", "2026-11-22", "43");
    let seen = cluster.jobs_on(0);
    let mut run = remote.cmd(&strs(&on_cluster(&["run", "--all", "--at", "2026-11-22"]))).spawn().unwrap();
    let started = Instant::now();
    let mut killed_mid_run = false;
    while started.elapsed() < Duration::from_secs(120) {
        if run.try_wait().unwrap().is_some() {
            break;
        }
        if cluster.jobs_on(0).iter().any(|j| !seen.contains(j)) {
            // SAFETY: kill(2) on a child we own.
            unsafe { libc::kill(cluster.executors[0].id() as i32, libc::SIGKILL) };
            killed_mid_run = run.try_wait().unwrap().is_none();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(killed_mid_run, "executor 0 got no task while the run was in flight\n{}", cluster.logs());
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the run did not end within 180 s of the kill\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        run.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };

    local.ok(&["run", "--all", "--at", "2026-11-22"]);
    let expected = local.snapshot();
    if status.success() {
        // Ballista's task retries carried the run: it published what a local run publishes.
        assert_same(&expected, &remote.snapshot(), "after a kill the run completed");
    } else {
        // The run failed: each SQL output is either the previous version or the new one, whole.
        assert!(stderr.contains("ballista") || stderr.contains("Ballista") || stderr.contains("executor"), "{stderr}");
        let after = sql_outputs(&remote.snapshot());
        let new = sql_outputs(&expected);
        for (t, rows) in &after {
            assert!(rows == &before[t] || rows == &new[t], "table {t} is neither the previous nor the new version:\n{stderr}");
        }
        // Once the scheduler has declared the executor dead, a rerun on the survivor catches up.
        std::thread::sleep(Duration::from_secs(6));
        remote.ok(&strs(&on_cluster(&["run", "--all", "--at", "2026-11-22"])));
        assert_same(&expected, &remote.snapshot(), "the rerun after a failed run");
    }
}

#[test]
fn where_ballista_would_mislead_the_runner_stops_with_what_to_change() {
    let drops = tempfile::tempdir().unwrap();
    simulate(drops.path(), "3", END, "42");
    let ws = Ws::new(&drops.path().display().to_string(), "warehouse", &[]);
    ws.ok(&["run", "--all", "--at", END]);
    let before = sql_outputs(&ws.snapshot());

    // Nobody listens: the error names the address and how to start a scheduler; nothing moves.
    let closed = format!("df://127.0.0.1:{}", free_port());
    for args in [&["run", "tenants", "--at", "2026-11-21"][..], &["query", "SELECT count(*) FROM tenants"], &["validate"]] {
        let o = ws.out(&[&["--engine", "ballista", "--scheduler", closed.as_str()][..], args].concat());
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded with no scheduler");
        assert!(err.contains(&format!("cannot reach the Ballista scheduler at {closed}")), "{args:?}: {err}");
        assert!(err.contains("runner cluster scheduler"), "{err}");
    }
    assert_eq!(sql_outputs(&ws.snapshot()), before);

    // A local warehouse with a scheduler elsewhere: its executors would read empty folders.
    // Refused before any connection (192.0.2.1 is a documentation address nobody answers on).
    let o = ws.out(&["--engine", "ballista", "--scheduler", "df://192.0.2.1:50050", "query", "SELECT count(*) FROM tenants"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("is a local folder") && err.contains("s3://") && err.contains("--engine local"), "{err}");

    // Malformed addresses and engines are usage errors naming the form.
    let o = ws.out(&["--engine", "ballista", "--scheduler", "localhost", "query", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("df://HOST:PORT"), "{}", text(&o.stderr));
    let o = ws.out(&["--engine", "athena", "run", "tenants"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--engine athena runs `runner query` only"), "{}", text(&o.stderr));

    // A query the cluster cannot finish (a data file of an input is no Parquet) fails the job,
    // and the previous version of its output stays published.
    let cluster = Cluster::start(1, &|_| {});
    let tenants =
        |ws: &Ws| ws.ok(&["--engine", "local", "query", "SELECT * FROM tenants ORDER BY \"companyID\"", "--format", "csv"]);
    let published = tenants(&ws);
    let files: Vec<PathBuf> = walk(&ws.dir.path().join("warehouse/tenant_state"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(!files.is_empty());
    for f in &files {
        std::fs::write(f, b"this is not a parquet file, and it is long enough to have a footer").unwrap();
    }
    // --force: tenants is up to date (and its state job, not named, stays skipped).
    let o = ws.out(&["--engine", "ballista", "--scheduler", &cluster.url(), "run", "tenants", "--at", END, "--force"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).to_lowercase().contains("parquet"), "{}", text(&o.stderr));
    assert_eq!(tenants(&ws), published, "a failed stage changed the published table");
    let status: serde_json::Value = serde_json::from_str(&ws.ok(&["status", "--format", "json"])).unwrap();
    let row = status.as_array().unwrap().iter().find(|r| r["job"] == "tenants").unwrap().clone();
    assert_eq!(row["last_status"], "failed", "{row}");
    assert_eq!(row["engine"], format!("ballista {}", cluster.url()), "{row}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
