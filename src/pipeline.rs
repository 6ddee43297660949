//! Running jobs: one entry point for every kind of job, in dependency order, each run recorded
//! in `runner_runs` whether it succeeds or fails.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::{self, IngestSummary};
use crate::job::{Job, JobKind};
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

/// Runs `names` in dependency order; stops at the first failure.
pub async fn run_jobs(ws: &Workspace, names: &[String], opts: &RunOptions, progress: &Progress) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for job in ws.jobs.order(names)? {
        out.push(run_job(ws, job, opts, progress).await?);
    }
    Ok(out)
}
