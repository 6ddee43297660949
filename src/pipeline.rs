//! Running jobs: one entry point for every kind of job, in dependency order, each run recorded
//! in `runner_runs` whether it succeeds or fails. Jobs that do not depend on each other may run
//! at the same time (`--parallel`).

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::{self, IngestSummary};
use crate::job::{Job, JobKind, Jobs};
use crate::progress::Progress;
use crate::runs::{RunRecord, record};
use crate::transform::{self, SqlRunOptions, SqlSummary};
use crate::workspace::Workspace;

/// How this invocation runs (flags, not config).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Logical time (`--at`); SQL jobs run as of its UTC date. Default: now.
    pub at: Option<DateTime<Utc>>,
    pub dry_run: bool,
    /// Exact days for an incremental job (backfill).
    pub days: Option<Vec<NaiveDate>>,
    /// Jobs run at once when the DAG allows (0 and 1: one at a time).
    pub parallel: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Ingest(IngestSummary),
    Sql(SqlSummary),
    Export(crate::export::ExportSummary),
    Compact(crate::compact::CompactSummary),
    Score(crate::score::ScoreSummary),
}

/// Runs one job and records the run.
pub async fn run_job(ws: &Workspace, job: &Job, opts: &RunOptions, progress: &Progress) -> Result<Outcome> {
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let started_at = Utc::now();
    let at = opts.at.unwrap_or(started_at);
    let (result, logical_time) = match &job.kind {
        JobKind::Ingest { stream } => {
            if opts.dry_run {
                return Err(Error::Usage(format!("--dry-run is for SQL jobs; `{}` is an ingest job", job.name)));
            }
            (ingest::run(ws, &job.name, stream, progress).await.map(Outcome::Ingest), at.to_rfc3339())
        }
        JobKind::Sql(sj) => {
            let o = SqlRunOptions { as_of: Some(at.date_naive()), dry_run: opts.dry_run, days: opts.days.clone() };
            (transform::run(ws, job, sj, &o, &run_id).await.map(Outcome::Sql), at.date_naive().to_string())
        }
        JobKind::Score(sj) => {
            if opts.dry_run {
                return Err(Error::Usage(format!("--dry-run is for SQL jobs; `{}` is a scoring job", job.name)));
            }
            let as_of = at.date_naive();
            (crate::score::run(ws, job, sj, as_of, &run_id, progress).await.map(Outcome::Score), as_of.to_string())
        }
        JobKind::Compact(cj) => {
            if opts.dry_run {
                return Err(Error::Usage(format!("--dry-run is for SQL jobs; `{}` is a compaction job", job.name)));
            }
            (crate::compact::run(ws, &job.name, cj).await.map(Outcome::Compact), at.to_rfc3339())
        }
        JobKind::Export(ej) => {
            if opts.dry_run {
                return Err(Error::Usage(format!("--dry-run is for SQL jobs; `{}` is an export job", job.name)));
            }
            (crate::export::run(ws, job, ej, Some(at.date_naive())).await.map(Outcome::Export), at.date_naive().to_string())
        }
    };
    if opts.dry_run {
        return result;
    }
    let mut r = RunRecord { job: job.name.clone(), run_id, logical_time, started_at, ended_at: Utc::now(), ..Default::default() };
    match &result {
        Ok(Outcome::Ingest(s)) => {
            r.status = "succeeded".into();
            r.rows_in = s.stats.records as i64;
            r.bytes_in = s.stats.bytes as i64;
            r.rows_out = (s.stats.valid + s.stats.quarantined_total()) as i64;
            r.files = s.files as i64;
        }
        Ok(Outcome::Score(s)) => {
            r.status = "succeeded".into();
            r.rows_in = s.companies as i64;
            r.rows_out = s.companies as i64;
            r.files = s.files as i64;
            if s.errors > 0 {
                r.error = Some(format!("{} of {} companies not scored: {:?}", s.errors, s.companies, s.errors_by_reason));
            }
        }
        Ok(Outcome::Compact(s)) => {
            r.status = "succeeded".into();
            r.rows_in = s.rows as i64;
            r.rows_out = s.rows as i64;
            r.bytes_in = s.bytes_in as i64;
            r.bytes_out = s.bytes_out as i64;
            r.files = s.files_out as i64;
        }
        Ok(Outcome::Export(s)) => {
            r.status = "succeeded".into();
            r.rows_out = s.rows as i64;
            r.bytes_out = s.bytes as i64;
            r.files = s.files as i64;
        }
        Ok(Outcome::Sql(s)) => {
            r.status = "succeeded".into();
            r.rows_in = s.rows_in as i64;
            r.bytes_in = s.bytes_in as i64;
            r.rows_out = s.rows_out as i64;
            r.bytes_out = s.bytes_out as i64;
            r.files = s.files as i64;
            r.partitions = s.partitions.join(" ");
        }
        Err(e) => {
            r.status = "failed".into();
            r.error = Some(e.to_string());
        }
    }
    if let Err(e) = record(ws, &r).await {
        tracing::warn!("could not record the run of `{}` in runner_runs: {e}", job.name);
    }
    result
}

/// Runs `names` in dependency order, `opts.parallel` at a time; see [`run_dag`].
pub async fn run_jobs(ws: &Workspace, names: &[String], opts: &RunOptions, progress: &Progress) -> Result<Vec<Outcome>> {
    run_dag(&ws.jobs, names, opts.parallel, |job| run_job(ws, job, opts, progress)).await
}

/// Runs `run` for each job of `names`, up to `parallel` at once: a job starts once every job it
/// depends on (among `names`) has finished. Ingest and compaction jobs run alone: they commit
/// to the streams' ledgers, share the quarantine table, and size their batches for the whole
/// machine. With `parallel` 1 the jobs run one by one in `Jobs::order`. After a failure no
/// further job starts, the running ones finish (and are recorded), and the first error is
/// returned. Results come in `Jobs::order`.
pub async fn run_dag<'a, T, F, Fut>(jobs: &'a Jobs, names: &[String], parallel: usize, mut run: F) -> Result<Vec<T>>
where
    F: FnMut(&'a Job) -> Fut,
    Fut: Future<Output = Result<T>> + 'a,
{
    let order = jobs.order(names)?;
    let alone = |j: &Job| matches!(j.kind, JobKind::Ingest { .. } | JobKind::Compact(_));
    let mut results: Vec<Option<T>> = order.iter().map(|_| None).collect();
    let mut started = vec![false; order.len()];
    let mut finished: HashSet<&str> = HashSet::new();
    let mut running = FuturesUnordered::new();
    let mut first_error = None;
    let mut alone_running = None;
    loop {
        let mut start = Vec::new();
        if first_error.is_none() && alone_running.is_none() {
            for (i, job) in order.iter().enumerate() {
                if started[i] || running.len() + start.len() >= parallel.max(1) {
                    continue;
                }
                if !job.depends_on.iter().all(|d| finished.contains(d.as_str()) || !names.contains(d)) {
                    continue;
                }
                if alone(job) {
                    // It starts when nothing else runs, and later jobs wait for it: nothing is
                    // polled next to it, and the order stays the DAG's.
                    if running.is_empty() && start.is_empty() {
                        alone_running = Some(i);
                        start.push(i);
                    }
                    break;
                }
                start.push(i);
            }
        }
        for i in start {
            started[i] = true;
            let fut = run(order[i]);
            running.push(async move { (i, fut.await) });
        }
        let Some((i, result)) = running.next().await else { break };
        finished.insert(order[i].name.as_str());
        if alone_running == Some(i) {
            alone_running = None;
        }
        match result {
            Ok(t) => results[i] = Some(t),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(results.into_iter().flatten().collect()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::job::SqlJob;

    fn job(name: &str, ingest: bool, depends_on: &[&str]) -> (String, Job) {
        let kind = if ingest {
            JobKind::Ingest { stream: name.to_string() }
        } else {
            JobKind::Sql(Box::new(SqlJob {
                file: Default::default(),
                sql: String::new(),
                inputs: Vec::new(),
                output: name.to_string(),
                partition_by: Vec::new(),
                mode: Default::default(),
                incremental: false,
                checks: Default::default(),
            }))
        };
        let depends_on = depends_on.iter().map(|d| d.to_string()).collect();
        let j = Job {
            name: name.into(),
            description: String::new(),
            file: Default::default(),
            kind,
            depends_on,
            reads_published: Vec::new(),
        };
        (name.to_string(), j)
    }

    fn dag() -> Jobs {
        Jobs {
            jobs: [
                job("ingest_a", true, &[]),
                job("ingest_b", true, &[]),
                job("x", false, &["ingest_a"]),
                job("y", false, &["ingest_a"]),
                job("z", false, &["x", "y"]),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// Runs the DAG with jobs that take a little while; returns (results, start/end log).
    async fn run(jobs: &Jobs, parallel: usize, failing: &str) -> (Result<Vec<String>>, Vec<String>) {
        let names: Vec<String> = jobs.jobs.keys().cloned().collect();
        let log = Mutex::new(Vec::new());
        let result = run_dag(jobs, &names, parallel, |j| {
            let log = &log;
            async move {
                log.lock().unwrap().push(format!("+{}", j.name));
                tokio::time::sleep(Duration::from_millis(20)).await;
                log.lock().unwrap().push(format!("-{}", j.name));
                if j.name == failing { Err(crate::Error::Failed(format!("{} failed", j.name))) } else { Ok(j.name.clone()) }
            }
        })
        .await;
        (result, log.into_inner().unwrap())
    }

    fn overlapping(log: &[String]) -> Vec<Vec<String>> {
        // The sets of jobs running at the same time, as they grow.
        let mut now: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for e in log {
            let name = e[1..].to_string();
            if e.starts_with('+') {
                now.push(name);
                out.push(now.clone());
            } else {
                now.retain(|n| *n != name);
            }
        }
        out
    }

    #[tokio::test]
    async fn independent_jobs_overlap_ingest_runs_alone_and_dependents_wait() {
        let jobs = dag();
        let (result, log) = run(&jobs, 2, "").await;
        assert_eq!(result.unwrap(), ["ingest_a", "ingest_b", "x", "y", "z"]);
        let sets = overlapping(&log);
        assert!(sets.contains(&vec!["x".to_string(), "y".to_string()]), "x and y run together: {log:?}");
        for s in &sets {
            assert!(s.len() <= 2, "{log:?}");
            if s.iter().any(|n| n.starts_with("ingest")) {
                assert_eq!(s.len(), 1, "ingest runs alone: {log:?}");
            }
        }
        let pos = |e: &str| log.iter().position(|l| l == e).unwrap();
        assert!(pos("+z") > pos("-x") && pos("+z") > pos("-y"), "{log:?}");
        assert!(pos("+x") > pos("-ingest_a"), "{log:?}");
    }

    #[tokio::test]
    async fn one_at_a_time_is_the_dag_order() {
        let jobs = dag();
        let (result, log) = run(&jobs, 1, "").await;
        assert_eq!(result.unwrap(), ["ingest_a", "ingest_b", "x", "y", "z"]);
        assert_eq!(
            log,
            ["+ingest_a", "-ingest_a", "+ingest_b", "-ingest_b", "+x", "-x", "+y", "-y", "+z", "-z"].map(String::from)
        );
    }

    #[tokio::test]
    async fn after_a_failure_running_jobs_finish_and_nothing_new_starts() {
        let jobs = dag();
        let (result, log) = run(&jobs, 2, "x").await;
        assert!(result.unwrap_err().to_string().contains("x failed"));
        assert!(log.contains(&"-y".to_string()), "y was running and finishes: {log:?}");
        assert!(!log.contains(&"+z".to_string()), "{log:?}");
    }
}
