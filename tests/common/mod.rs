//! Helpers shared by the integration tests: a workspace in a temporary folder that uses the
//! repository's own schemas/ and jobs/, drops written in the Firehose layout, and queries.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use runner::config::Config;
use runner::job::{IngestCounts, KindCounts};
use runner::pipeline::{RunOptions, run_job};
use runner::progress::Progress;
use runner::workspace::Workspace;

pub mod moto;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The runner binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_runner");

/// The runner binary, without a config: stdout and stderr piped, no failpoint inherited from the
/// test's environment.
pub fn bin() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("RUNNER_FAILPOINT").stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// The runner binary in `root` with `--config <config> --quiet` and `args`; see [`bin`].
pub fn cmd_in(root: &Path, config: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.current_dir(root).arg("--config").arg(config).arg("--quiet").args(args);
    c
}

/// Bytes from a process as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A Python that imports `modules`, for the tests that need one (independent readers, the AWS
/// emulator): `RUNNER_TEST_PYTHON` (set by `make test`), else `python3`. When neither imports
/// them the test fails and says how to get one: it never passes without having checked.
pub fn python_with(modules: &[&str]) -> String {
    let from_env = std::env::var("RUNNER_TEST_PYTHON").ok().filter(|p| !p.is_empty());
    let import = format!("import {}", modules.join(", "));
    for py in from_env.iter().cloned().chain(["python3".to_string()]) {
        if Command::new(&py).args(["-c", &import]).output().is_ok_and(|o| o.status.success()) {
            return py;
        }
    }
    panic!(
        "this test needs a Python that can `{import}` (tried {}python3): run the tests with `make test`, which \
         installs one in a virtualenv, or set RUNNER_TEST_PYTHON to such an interpreter",
        from_env.map(|p| format!("RUNNER_TEST_PYTHON={p}, ")).unwrap_or_default()
    )
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub extra: String,
    /// The jobs folder: the repository's, or an edited copy (see `with_job_edits`).
    pub jobs_dir: PathBuf,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv::with_settings("")
    }

    /// `extra` is appended to runner.toml (e.g. an [ingest] section).
    pub fn with_settings(extra: &str) -> TestEnv {
        TestEnv::with_job_edits(extra, &[])
    }

    /// Like `with_settings`, with a copy of the repository's jobs/ where each `(file, from, to)`
    /// replaces text in one job file (e.g. a compaction threshold).
    pub fn with_job_edits(extra: &str, edits: &[(&str, &str, &str)]) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let jobs_dir = if edits.is_empty() { Path::new(REPO).join("jobs") } else { dir.path().join("jobs") };
        if !edits.is_empty() {
            std::fs::create_dir_all(&jobs_dir).unwrap();
            for e in std::fs::read_dir(Path::new(REPO).join("jobs")).unwrap() {
                let p = e.unwrap().path();
                let mut text = std::fs::read_to_string(&p).unwrap();
                let name = p.file_name().unwrap().to_str().unwrap();
                for (file, from, to) in edits.iter().filter(|(f, _, _)| *f == name) {
                    assert!(text.contains(from), "{file} has no `{from}`");
                    text = text.replace(from, to);
                }
                std::fs::write(jobs_dir.join(name), text).unwrap();
            }
        }
        let env = TestEnv { dir, extra: extra.to_string(), jobs_dir };
        std::fs::write(env.config_path(), env.config_text()).unwrap();
        // The configured source folders exist, empty (a project before its first delivery).
        for stream in ["companies", "bigdatajobs"] {
            std::fs::create_dir_all(env.root().join("drops/raw").join(stream)).unwrap();
        }
        env
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.root().join("runner.toml")
    }

    fn config_text(&self) -> String {
        format!(
            "warehouse = \"warehouse\"\njobs_dir = \"{}\"\nsql_dir = \"{REPO}/sql\"\nschemas_dir = \"{REPO}/schemas\"\n\
             [sources.companies]\nurl = \"drops/raw/companies\"\n[sources.bigdatajobs]\nurl = \"drops/raw/bigdatajobs\"\n{}",
            self.jobs_dir.display(),
            if self.extra.contains("[scoring]") {
                self.extra.clone()
            } else {
                format!("{}\n[scoring]\nmodel = \"{REPO}/data/model/churn.json\"\n", self.extra)
            }
        )
    }

    pub fn workspace(&self) -> Workspace {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        let cfg = Config::from_parts(Some(self.config_path()), &text, &[]).unwrap();
        Workspace::open(cfg).unwrap()
    }

    pub fn drops(&self, stream: &str) -> PathBuf {
        self.root().join("drops/raw").join(stream)
    }

    pub fn warehouse(&self) -> PathBuf {
        self.root().join("warehouse")
    }

    /// Writes a drop under `YYYY/MM/DD/HH/` of `stream`; `n` makes the uuid unique.
    pub fn put_drop(&self, stream: &str, hour: &str, n: u32, body: &[u8], gzip: bool) -> String {
        let (date, h) = hour.split_once('T').unwrap();
        let folder = format!("{}/{h}", date.replace('-', "/"));
        let name = format!("{stream}-1-{date}-{h}-00-00-00000000-0000-4000-8000-{n:012}{}", if gzip { ".gz" } else { "" });
        let rel = format!("{folder}/{name}");
        self.put_raw(stream, &rel, &if gzip { gz(body) } else { body.to_vec() });
        rel
    }

    pub fn put_raw(&self, stream: &str, rel: &str, body: &[u8]) {
        let p = self.drops(stream).join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    /// Runs the job `ingest_<stream>` and returns its ingest counts.
    pub async fn ingest(&self, stream: &str) -> IngestCounts {
        let ws = self.workspace();
        let job = ws.jobs.get(&format!("ingest_{stream}")).unwrap();
        let m = run_job(&ws, job, &RunOptions::default(), &Progress::new(false)).await.unwrap();
        match m.counts {
            KindCounts::Ingest(c) => c,
            other => panic!("not an ingest: {other:?}"),
        }
    }

    /// The runner binary on this environment's config (see [`cmd_in`]).
    pub fn cmd(&self, args: &[&str]) -> Command {
        cmd_in(self.root(), &self.config_path(), args)
    }

    /// Runs the binary and waits for it.
    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs the binary with `--format json`; it must succeed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cmd(args).args(["--format", "json"]).output().unwrap();
        assert!(out.status.success(), "runner {args:?}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Rows of a query as CSV lines (header first).
    pub async fn query(&self, sql: &str) -> Vec<String> {
        query_csv(&self.workspace(), sql).await
    }
}

pub async fn query_csv(ws: &Workspace, sql: &str) -> Vec<String> {
    let ctx = runner::engine::session(ws).await.unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    runner::output::write_batches(&mut out, runner::output::Format::Csv, &batches).unwrap();
    String::from_utf8(out).unwrap().lines().map(str::to_string).collect()
}

/// A runner.toml in `dir` (written as `local.toml`) for a local warehouse `local-wh` over the
/// drops in `dir/drops/raw/<stream>`, with the repository's jobs, SQL, schemas and model: a run
/// of the same drops outside S3 or a container, to compare with.
pub fn local_config(dir: &Path) -> PathBuf {
    let path = dir.join("local.toml");
    std::fs::write(
        &path,
        format!(
            "warehouse = \"local-wh\"\njobs_dir = \"{REPO}/jobs\"\nsql_dir = \"{REPO}/sql\"\nschemas_dir = \"{REPO}/schemas\"\n\
             [sources.companies]\nurl = \"drops/raw/companies\"\n[sources.bigdatajobs]\nurl = \"drops/raw/bigdatajobs\"\n\
             [scoring]\nmodel = \"{REPO}/data/model/churn.json\"\n"
        ),
    )
    .unwrap();
    path
}

pub fn gz(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

/// Every file under the table folders of a warehouse (what a reader listing partitions sees).
pub fn table_files(warehouse: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["job_events", "tenant_events", "quarantine"] {
        let root = warehouse.join(table);
        if !root.exists() {
            continue;
        }
        for e in walk(&root) {
            out.push(e.strip_prefix(warehouse).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

/// Every file below a folder.
pub fn walk(p: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() { v.extend(walk(&e)) } else { v.push(e) }
    }
    v
}

/// Waits (bounded: 30 s) until `pid` is stopped by its `=stop` failpoint.
pub fn wait_stopped(pid: u32) {
    for _ in 0..600 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t')) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("process {pid} never reached its pause failpoint");
}

/// Resumes a paused child and waits for it (bounded: 60 s, then it is killed), returning its
/// exit code and what it wrote to `stderr_file`.
pub fn resume(mut child: std::process::Child, stderr_file: &std::path::Path) -> (Option<i32>, String) {
    // SAFETY: kill(2) on our child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGCONT);
    }
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), std::fs::read_to_string(stderr_file).unwrap_or_default());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the resumed process did not finish: {}", std::fs::read_to_string(stderr_file).unwrap_or_default());
}
