//! Jobs: `jobs/*.toml` say what runs; this module reads them and orders them.
//!
//! A job is named after its file (`jobs/ingest_companies.toml` is job `ingest_companies`) and has
//! exactly one section saying its kind: `[ingest]` of a delivery stream, a `[sql]` transform,
//! a per-tenant `[export]`, a `[compact]`ion of event partitions, or a `[score]` through the churn
//! endpoint ([`kinds`]). Every kind reports one [`JobMetrics`] ([`metrics`]). Jobs form a DAG: a
//! job depends on the jobs that produce its inputs, plus any `depends_on`. Unknown keys are
//! errors naming the file and the key.
//!
//! A new job kind touches: its section and definition here ([`kinds`], the loader below), its
//! counts in [`metrics`], its module that runs it, and one arm of `pipeline::run_kind`.

pub mod kinds;
pub mod metrics;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use kinds::*;
pub use metrics::*;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::schema::{Contract, QUARANTINE_TABLE};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    depends_on: Vec<String>,
    ingest: Option<IngestSection>,
    sql: Option<SqlSection>,
    export: Option<ExportSection>,
    compact: Option<CompactSection>,
    score: Option<ScoreSection>,
    #[serde(default)]
    checks: Checks,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreSection {
    /// The Company entity per company and as-of date.
    input: String,
    /// The scores table.
    output: String,
    /// The drift table (per run date and feature), optional.
    drift: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactSection {
    /// The delivery streams whose event tables are compacted.
    streams: Vec<String>,
    #[serde(default = "default_min_files")]
    min_files: usize,
    #[serde(default = "default_max_partitions")]
    max_partitions_per_commit: usize,
    #[serde(default = "default_keep_replaced")]
    keep_replaced: String,
    #[serde(default = "default_run_history")]
    run_history: bool,
    #[serde(default = "default_memory_mb")]
    memory_mb: usize,
}

fn default_memory_mb() -> usize {
    256
}

fn default_run_history() -> bool {
    true
}

fn default_min_files() -> usize {
    8
}
fn default_max_partitions() -> usize {
    64
}
fn default_keep_replaced() -> String {
    "1h".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlSection {
    file: String,
    inputs: Vec<String>,
    output: String,
    #[serde(default)]
    partition_by: Vec<String>,
    #[serde(default)]
    mode: WriteMode,
    #[serde(default)]
    incremental: bool,
    /// With `incremental`: each day's rows are a running state (all history up to that day),
    /// so a change on day X rebuilds X through the newest day built, in one query seeded from
    /// the day before X (see `transform`).
    #[serde(default)]
    cumulative: bool,
    /// Inputs read as last published, without depending on (or waiting for) their producer in
    /// this run: how churn_features reads the scores of earlier runs of the scoring job that
    /// itself reads churn_features.
    #[serde(default)]
    reads_published: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportSection {
    inputs: Vec<String>,
    /// Where each tenant's files go, under the warehouse; must contain `{companyID}`.
    prefix: String,
    datasets: Vec<DatasetSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetSection {
    name: String,
    file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestSection {
    stream: String,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub kind: JobKind,
    /// Jobs that must run before this one (explicit, plus the producers of its inputs).
    pub depends_on: Vec<String>,
    /// Inputs read as last published: their producers are not dependencies.
    pub reads_published: Vec<String>,
}

impl Job {
    /// The tables this job writes.
    pub fn outputs(&self, contract: &Contract) -> Vec<String> {
        match &self.kind {
            JobKind::Ingest(IngestJob { stream }) => {
                let table = contract.streams.get(stream).map(|s| s.table.clone()).unwrap_or_default();
                vec![table, QUARANTINE_TABLE.to_string()]
            }
            JobKind::Sql(s) => vec![s.output.clone()],
            JobKind::Score(s) => std::iter::once(s.output.clone()).chain(s.drift.clone()).collect(),
            JobKind::Export(_) | JobKind::Compact(_) => Vec::new(),
        }
    }
}

/// Every job, by name.
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    pub jobs: BTreeMap<String, Job>,
}

impl Jobs {
    pub fn load(dir: &Path, config: &Config, contract: &Contract) -> Result<Jobs> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Config {
            file: dir.display().to_string(),
            message: format!("cannot read the jobs folder ({e}); set `jobs_dir` in runner.toml"),
        })?;
        let mut files: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
        files.sort();
        let mut jobs = BTreeMap::new();
        for file in files {
            let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let cfg_err = |message: String| Error::Config { file: file.display().to_string(), message };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(cfg_err(format!("job name `{name}` (the file name) may only hold letters, digits, `_` and `-`")));
            }
            let text = std::fs::read_to_string(&file).map_err(|e| cfg_err(e.to_string()))?;
            let jf: JobFile = toml::from_str(&text).map_err(|e| cfg_err(e.to_string()))?;
            let sections = usize::from(jf.ingest.is_some())
                + usize::from(jf.sql.is_some())
                + usize::from(jf.export.is_some())
                + usize::from(jf.compact.is_some())
                + usize::from(jf.score.is_some());
            if sections > 1 {
                return Err(cfg_err("a job has exactly one of [ingest], [sql], [export], [compact], [score]".into()));
            }
            let mut reads_published = Vec::new();
            let kind = match (jf.ingest, jf.sql) {
                _ if jf.score.is_some() => {
                    let s = jf.score.clone().expect("checked");
                    JobKind::Score(ScoreJob { input: s.input, output: s.output, drift: s.drift })
                }
                _ if jf.compact.is_some() => {
                    let c = jf.compact.clone().expect("checked");
                    for s in &c.streams {
                        contract.stream(s).map_err(|_| {
                            cfg_err(format!(
                                "[compact] stream `{s}` is not in schemas/events.toml (streams: {})",
                                contract.streams.keys().cloned().collect::<Vec<_>>().join(", ")
                            ))
                        })?;
                    }
                    if c.streams.is_empty() {
                        return Err(cfg_err("[compact] streams is empty: name the delivery streams to compact".into()));
                    }
                    let keep_replaced = humantime::parse_duration(&c.keep_replaced).map_err(|e| {
                        cfg_err(format!("[compact] keep_replaced = `{}` is not a duration like \"1h\" ({e})", c.keep_replaced))
                    })?;
                    if c.memory_mb < 16 {
                        return Err(cfg_err(format!(
                            "[compact] memory_mb = {} is too small for a merge sort: set at least 16 (default 256)",
                            c.memory_mb
                        )));
                    }
                    JobKind::Compact(CompactJob {
                        streams: c.streams,
                        min_files: c.min_files,
                        max_partitions_per_commit: c.max_partitions_per_commit,
                        keep_replaced,
                        run_history: c.run_history,
                        memory_bytes: c.memory_mb << 20,
                    })
                }
                _ if jf.export.is_some() => {
                    let e = jf.export.clone().expect("checked");
                    if !e.prefix.contains("{companyID}") {
                        return Err(cfg_err(format!("[export] prefix `{}` must contain {{companyID}}", e.prefix)));
                    }
                    if e.prefix.starts_with('/') || e.prefix.split('/').any(|seg| seg == "..") {
                        return Err(cfg_err(format!("[export] prefix `{}` must stay inside the warehouse", e.prefix)));
                    }
                    let datasets = e
                        .datasets
                        .iter()
                        .map(|d| {
                            let file = config.sql_dir.join(&d.file);
                            let sql = std::fs::read_to_string(&file).map_err(|err| {
                                cfg_err(format!("dataset `{}`: {} cannot be read ({err})", d.name, file.display()))
                            })?;
                            if d.name.is_empty() || !d.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                                return Err(cfg_err(format!(
                                    "dataset name `{}` may only hold letters, digits, `_` and `-`",
                                    d.name
                                )));
                            }
                            Ok(Dataset { name: d.name.clone(), file, sql })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    JobKind::Export(Box::new(ExportJob { inputs: e.inputs, prefix: e.prefix, datasets }))
                }
                (None, Some(q)) => {
                    let sql_path = config.sql_dir.join(&q.file);
                    let sql = std::fs::read_to_string(&sql_path).map_err(|e| {
                        cfg_err(format!(
                            "[sql] file `{}` cannot be read ({e}); paths are relative to the sql folder (`sql_dir`)",
                            q.file
                        ))
                    })?;
                    for c in jf.checks.not_null.iter().chain(&jf.checks.unique).chain(jf.checks.accepted_values.keys()) {
                        if c.is_empty() {
                            return Err(cfg_err("[checks] names an empty column".into()));
                        }
                    }
                    if q.incremental && q.partition_by.as_slice() != ["dt"] {
                        return Err(cfg_err(
                            "`incremental = true` needs partition_by = [\"dt\"] (one run per changed day)".into(),
                        ));
                    }
                    if q.cumulative && !q.incremental {
                        return Err(cfg_err("`cumulative = true` needs `incremental = true`".into()));
                    }
                    for t in &q.reads_published {
                        if !q.inputs.contains(t) {
                            return Err(cfg_err(format!("reads_published names `{t}`, which is not in inputs")));
                        }
                    }
                    reads_published = q.reads_published.clone();
                    JobKind::Sql(Box::new(SqlJob {
                        file: sql_path,
                        sql,
                        inputs: q.inputs,
                        output: q.output,
                        partition_by: q.partition_by,
                        mode: q.mode,
                        incremental: q.incremental,
                        cumulative: q.cumulative,
                        checks: jf.checks.clone(),
                    }))
                }
                (Some(i), None) => {
                    contract.stream(&i.stream).map_err(|_| {
                        cfg_err(format!(
                            "[ingest] stream `{}` is not in schemas/events.toml (streams: {})",
                            i.stream,
                            contract.streams.keys().cloned().collect::<Vec<_>>().join(", ")
                        ))
                    })?;
                    config.source(&i.stream)?;
                    JobKind::Ingest(IngestJob { stream: i.stream })
                }
                (None, None) => {
                    return Err(cfg_err(
                        "a job needs a section saying what it runs: [ingest], [sql], [export], [compact] or [score]".into(),
                    ));
                }
                (Some(_), Some(_)) => unreachable!("checked above"),
            };
            jobs.insert(
                name.clone(),
                Job { name, description: jf.description, file, kind, depends_on: jf.depends_on, reads_published },
            );
        }
        // Dependencies: explicit ones, plus the producer of each input table.
        let mut producer: BTreeMap<String, String> = BTreeMap::new();
        for j in jobs.values() {
            for t in j.outputs(contract) {
                if t != QUARANTINE_TABLE
                    && let Some(other) = producer.insert(t.clone(), j.name.clone())
                {
                    return Err(Error::Config {
                        file: j.file.display().to_string(),
                        message: format!("table `{t}` is already written by job `{other}`: one table, one writer"),
                    });
                }
            }
        }
        let names: Vec<String> = jobs.keys().cloned().collect();
        for j in jobs.values_mut() {
            for d in &j.depends_on {
                if !names.contains(d) {
                    return Err(Error::Config {
                        file: j.file.display().to_string(),
                        message: format!("depends_on names job `{d}`, which does not exist"),
                    });
                }
            }
            let inputs = match &j.kind {
                JobKind::Sql(s) => s.inputs.clone(),
                JobKind::Export(e) => e.inputs.clone(),
                JobKind::Ingest(_) => Vec::new(),
                JobKind::Score(s) => vec![s.input.clone()],
                // After the ingest of the streams it compacts.
                JobKind::Compact(c) => {
                    c.streams.iter().filter_map(|s| contract.streams.get(s).map(|sc| sc.table.clone())).collect()
                }
            };
            {
                for input in inputs.iter().filter(|i| !j.reads_published.contains(i)) {
                    if let Some(p) = producer.get(input)
                        && p != &j.name
                        && !j.depends_on.contains(p)
                    {
                        j.depends_on.push(p.clone());
                    }
                }
            }
        }
        let out = Jobs { jobs };
        out.order(&names)?;
        Ok(out)
    }

    /// `names` plus the running-state jobs they depend on (a cumulative SQL job, such as
    /// tenant_state): a state is advanced with every job that reads it, so `runner run tenants`
    /// reads the state of today's data without naming the job that keeps it.
    pub fn with_state_jobs(&self, names: &[String]) -> Vec<String> {
        let mut out = names.to_vec();
        let mut i = 0;
        while i < out.len() {
            if let Ok(j) = self.get(&out[i]) {
                for d in &j.depends_on {
                    let is_state = matches!(self.get(d).map(|s| &s.kind), Ok(JobKind::Sql(sj)) if sj.cumulative);
                    if is_state && !out.contains(d) {
                        out.push(d.clone());
                    }
                }
            }
            i += 1;
        }
        out
    }

    /// `names` in dependency order (each job after the jobs it depends on that are also named).
    /// A cycle is a config error naming the jobs in it.
    pub fn order(&self, names: &[String]) -> Result<Vec<&Job>> {
        let mut done: Vec<&str> = Vec::new();
        let mut left: Vec<&Job> = names.iter().map(|n| self.get(n)).collect::<Result<_>>()?;
        while !left.is_empty() {
            let before = left.len();
            let mut i = 0;
            while i < left.len() {
                let ready = left[i].depends_on.iter().all(|d| done.contains(&d.as_str()) || !names.contains(d));
                if ready {
                    done.push(&left[i].name);
                    left.remove(i);
                } else {
                    i += 1;
                }
            }
            if left.len() == before {
                let cycle: Vec<&str> = left.iter().map(|j| j.name.as_str()).collect();
                return Err(Error::Config {
                    file: "jobs/".into(),
                    message: format!("jobs depend on each other in a cycle: {}", cycle.join(" -> ")),
                });
            }
        }
        done.iter().map(|n| self.get(n)).collect()
    }

    pub fn get(&self, name: &str) -> Result<&Job> {
        self.jobs.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
            let hint = crate::error::did_you_mean(name, names.iter().copied());
            Error::Usage(format!("no job `{name}`{hint}; jobs: {}", names.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder with `runner.toml` (two sources), `sql/q.sql` and the given job files.
    struct Folder {
        dir: tempfile::TempDir,
    }

    impl Folder {
        fn new(jobs: &[(&str, &str)]) -> Folder {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
            std::fs::create_dir_all(dir.path().join("sql")).unwrap();
            std::fs::write(dir.path().join("sql/q.sql"), "SELECT 1 AS dt").unwrap();
            for (name, text) in jobs {
                std::fs::write(dir.path().join("jobs").join(name), text).unwrap();
            }
            Folder { dir }
        }

        fn load(&self) -> Result<Jobs> {
            let path = self.dir.path().join("runner.toml");
            let text = "warehouse = \"wh\"\n[sources.companies]\nurl = \"drops/c\"\n[sources.bigdatajobs]\nurl = \"drops/b\"\n";
            let config = Config::from_parts(Some(path), text, &[]).unwrap();
            let contract = Contract::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/events.toml")).unwrap();
            Jobs::load(&self.dir.path().join("jobs"), &config, &contract)
        }

        fn error(&self) -> String {
            self.load().unwrap_err().to_string()
        }
    }

    const INGEST: (&str, &str) = ("ingest_companies.toml", "[ingest]\nstream = \"companies\"\n");

    fn sql(inputs: &str, output: &str, extra: &str) -> String {
        format!("[sql]\nfile = \"q.sql\"\ninputs = {inputs}\noutput = \"{output}\"\n{extra}")
    }

    #[test]
    fn a_job_has_exactly_one_kind_and_no_unknown_key() {
        let both = Folder::new(&[("x.toml", "[ingest]\nstream = \"companies\"\n[compact]\nstreams = [\"companies\"]\n")]);
        assert!(both.error().contains("exactly one of [ingest], [sql], [export], [compact], [score]"), "{}", both.error());
        let none = Folder::new(&[("x.toml", "description = \"nothing\"\n")]);
        assert!(none.error().contains("a job needs a section"), "{}", none.error());
        let typo = Folder::new(&[("x.toml", "[ingest]\nstream = \"companies\"\nstreem = 1\n")]);
        let e = typo.error();
        assert!(e.contains("x.toml") && e.contains("streem"), "names the file and the key: {e}");
        let name = Folder::new(&[("bad name.toml", INGEST.1)]);
        assert!(name.error().contains("may only hold letters"), "{}", name.error());
    }

    #[test]
    fn references_are_checked_where_they_are_made() {
        let stream = Folder::new(&[("x.toml", "[ingest]\nstream = \"nope\"\n")]);
        assert!(stream.error().contains("stream `nope` is not in schemas/events.toml"), "{}", stream.error());
        let compact = Folder::new(&[("x.toml", "[compact]\nstreams = [\"nope\"]\n")]);
        assert!(compact.error().contains("[compact] stream `nope`"), "{}", compact.error());
        let keep = Folder::new(&[("x.toml", "[compact]\nstreams = [\"companies\"]\nkeep_replaced = \"soon\"\n")]);
        assert!(keep.error().contains("keep_replaced"), "{}", keep.error());
        let file = Folder::new(&[("x.toml", "[sql]\nfile = \"missing.sql\"\ninputs = []\noutput = \"t\"\n")]);
        assert!(file.error().contains("missing.sql") && file.error().contains("sql_dir"), "{}", file.error());
        let dep = Folder::new(&[INGEST, ("x.toml", &format!("depends_on = [\"nope\"]\n{}", sql("[]", "t", "")))]);
        assert!(dep.error().contains("depends_on names job `nope`"), "{}", dep.error());
    }

    #[test]
    fn sql_options_are_consistent() {
        let inc = Folder::new(&[("x.toml", &sql("[]", "t", "incremental = true\npartition_by = [\"as_of\"]\n"))]);
        assert!(inc.error().contains("incremental = true` needs partition_by = [\"dt\"]"), "{}", inc.error());
        let rp = Folder::new(&[("x.toml", &sql("[\"a\"]", "t", "reads_published = [\"b\"]\n"))]);
        assert!(rp.error().contains("reads_published names `b`, which is not in inputs"), "{}", rp.error());
        for prefix in ["exports/", "/abs/{companyID}", "../{companyID}"] {
            let f = Folder::new(&[(
                "x.toml",
                &format!("[export]\ninputs = []\nprefix = \"{prefix}\"\ndatasets = [{{ name = \"d\", file = \"q.sql\" }}]\n"),
            )]);
            assert!(f.error().contains("prefix"), "{prefix}: {}", f.error());
        }
    }

    #[test]
    fn one_writer_per_table_and_the_dag_follows_the_inputs() {
        let two = Folder::new(&[("a.toml", &sql("[]", "t", "")), ("b.toml", &sql("[]", "t", ""))]);
        assert!(two.error().contains("table `t` is already written by job `a`"), "{}", two.error());
        let f = Folder::new(&[
            INGEST,
            ("daily.toml", &sql("[\"tenant_events\"]", "t1", "")),
            ("rollup.toml", &sql("[\"t1\", \"t3\"]", "t2", "reads_published = [\"t3\"]\n")),
            ("summary.toml", &sql("[\"t2\"]", "t3", "")),
        ]);
        let jobs = f.load().unwrap();
        assert_eq!(jobs.get("daily").unwrap().depends_on, ["ingest_companies"], "the producer of an input");
        assert_eq!(jobs.get("rollup").unwrap().depends_on, ["daily"], "an input read as published is no dependency");
        let names: Vec<String> = jobs.jobs.keys().cloned().collect();
        let order: Vec<&str> = jobs.order(&names).unwrap().iter().map(|j| j.name.as_str()).collect();
        assert_eq!(order, ["ingest_companies", "daily", "rollup", "summary"]);
        assert!(jobs.get("ingest_companie").unwrap_err().to_string().contains("did you mean `ingest_companies`"));
    }

    #[test]
    fn a_cycle_names_its_jobs() {
        let f = Folder::new(&[("a.toml", &sql("[\"t2\"]", "t1", "")), ("b.toml", &sql("[\"t1\"]", "t2", ""))]);
        let e = f.error();
        assert!(e.contains("cycle") && e.contains('a') && e.contains('b'), "{e}");
    }
}
