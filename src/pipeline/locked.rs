//! Runs under job leases: how every scheduled or triggered run goes (`run --schedule`,
//! `run --event`, a plain `run` unless `--no-lock`, and the schedule daemon).
//!
//! [`run_locked`] takes the job's lease, checks that the period has not already run, runs the
//! job (recorded in `runner_runs`), marks the period done, and gives the lease back. The done
//! marker is created only after success, with a create-if-absent put: two triggers for one
//! period (two daemons, EventBridge delivering an event twice, cron and a daemon) run it once.
//! [`run_locked_dag`] does that for many jobs in dependency order, `parallel` at a time: the one
//! implementation behind the command line and the daemon.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::dag::{Tail, run_dag_with_tails};
use super::lease::{self, Holder};
use super::{Recording, RunOptions, run_job, run_job_deferred};
use crate::error::Result;
use crate::job::{Job, JobMetrics};
use crate::progress::Progress;
use crate::workspace::Workspace;

const DONE_DIR: &str = "_runner/schedule/done";
/// Done markers are kept this long: a trigger repeated within it (EventBridge delivering an
/// event twice, cron next to a daemon) is recognised; an older one runs again, which is safe
/// (ingest is exactly once, SQL jobs replace their partitions). The newest is always kept: the
/// daemon catches up from it.
const DONE_RETENTION_DAYS: i64 = 2;

/// What became of a locked run.
#[derive(Debug)]
pub enum Locked {
    Ran(Box<Result<JobMetrics>>),
    /// Another process holds the job's lease.
    Held(Holder),
    /// The period already ran (another trigger got there first).
    AlreadyDone,
}

fn period_key(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn done_dir(job: &str) -> String {
    format!("{DONE_DIR}/{}", crate::catalog::hive_escape(job))
}

async fn is_done(ws: &Workspace, job: &str, period: DateTime<Utc>) -> Result<bool> {
    ws.warehouse.exists(&ws.warehouse.child(&format!("{}/{}", done_dir(job), period_key(period)))).await
}

/// The latest period of `job` marked done, if any.
pub async fn last_done(ws: &Workspace, job: &str) -> Result<Option<DateTime<Utc>>> {
    let mut best = None;
    for o in ws.warehouse.list(&done_dir(job)).await? {
        let t = o
            .location
            .filename()
            .and_then(|n| chrono::NaiveDateTime::parse_from_str(n, "%Y%m%dT%H%M%SZ").ok())
            .map(|t| t.and_utc());
        best = best.max(t);
    }
    Ok(best)
}

/// Deletes done markers older than the retention, but never the newest: the folder holds a
/// bounded number of markers whatever the number of runs.
async fn forget_old_periods(ws: &Workspace, job: &str) -> Result<u64> {
    let markers = ws.warehouse.list(&done_dir(job)).await?;
    // Period keys sort as times do. Age is when the marker was written, not its period (a
    // catch-up writes markers for old periods).
    let newest = markers.iter().filter_map(|o| o.location.filename().map(str::to_string)).max();
    let cutoff = Utc::now() - chrono::Duration::days(DONE_RETENTION_DAYS);
    let mut removed = 0;
    for o in &markers {
        let Some(name) = o.location.filename() else { continue };
        if Some(name) != newest.as_deref() && o.last_modified < cutoff {
            ws.warehouse.delete(&o.location).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Runs `job` for logical time `at` under its lease. With `period`, a period already done is
/// skipped and a successful run marks it done. Returns what became of it and its [`Tail`]:
/// writing the job's deferred state and fingerprint and marking the period done, then giving
/// the lease back, with the run record beside them; the caller runs it beside the next jobs.
#[allow(clippy::too_many_arguments)]
pub async fn run_locked<'a>(
    ws: &'a Workspace,
    job: &'a Job,
    at: DateTime<Utc>,
    period: Option<DateTime<Utc>>,
    holder: &str,
    ttl: Duration,
    force: bool,
    progress: &Progress,
) -> Result<(Locked, Option<Tail<'a>>)> {
    ws.check_format(true).await?;
    let mark_done = move |result: &Result<JobMetrics>| {
        // A run that waited for its inputs did not do the period's work.
        let ok = result.as_ref().is_ok_and(|m| !super::waited(m));
        async move {
            if let (true, Some(p)) = (ok, period) {
                let marker = ws.warehouse.child(&format!("{}/{}", done_dir(&job.name), period_key(p)));
                ws.warehouse.put_if_absent(&marker, Bytes::from(at.to_rfc3339())).await?;
                forget_old_periods(ws, &job.name).await?;
            }
            Ok::<_, crate::error::Error>(())
        }
    };
    // A job that is up to date is skipped without its lease: the check only reads. The lease
    // folder is looked at beside it (a listing; on S3 a round trip less before a job starts).
    let checking = async {
        match force {
            true => Ok(None),
            false => super::fresh::check(ws, job, &at.date_naive().to_string()).await,
        }
    };
    let (freshness, looked) = futures::future::try_join(checking, lease::look(&ws.warehouse, &job.name)).await?;
    if let Some((_, true)) = &freshness {
        if let Some(p) = period
            && is_done(ws, &job.name, p).await?
        {
            return Ok((Locked::AlreadyDone, None));
        }
        let run = RunOptions { at: Some(at), freshness, scheduled: period.is_some(), ..Default::default() };
        let result = run_job(ws, job, &run, progress).await;
        mark_done(&result).await?;
        return Ok((Locked::Ran(Box::new(result)), None));
    }
    let lease = match lease::acquire_after(&ws.warehouse, &job.name, holder, ttl, looked).await? {
        Ok(l) => l,
        Err(h) => return Ok((Locked::Held(h), None)),
    };
    if let Some(p) = period {
        match is_done(ws, &job.name, p).await {
            Ok(false) => {}
            Ok(true) => {
                lease.release().await?;
                return Ok((Locked::AlreadyDone, None));
            }
            Err(e) => {
                // Given back all the same (best effort: it expires by itself otherwise).
                let _ = lease.release().await;
                return Err(e);
            }
        }
    }
    let fence = Some(lease.fence());
    let run = RunOptions { at: Some(at), force, freshness, fence, scheduled: period.is_some(), ..Default::default() };
    let (result, recording) = run_job_deferred(ws, job, &run, progress).await;
    if lease.lost() {
        recording.all().await;
        // Its publishes were refused from the moment it knew: the period is not marked done,
        // and the run counts as failed (a daemon tries the period again; a new try finds what
        // did publish up to date).
        tracing::warn!(job = %job.name, "the lease expired during the run; the period is not marked done");
        lease.release().await?;
        let result = result.and_then(|_| {
            Err(crate::error::Error::Fenced(format!(
                "the lease of `{}` expired during the run (the process was paused or the store answered too slowly): \
                 the period is not marked done; run it again (a daemon does)",
                job.name
            )))
        });
        return Ok((Locked::Ran(Box::new(result)), None));
    }
    // Whether the period is done is known now. The tail writes what belongs to the job (its
    // state, its fingerprint) and the period's marker, then gives the lease back (held, and
    // renewed, until then); the run record, in a ledger of its own, is written beside them
    // and need not hold the lease.
    let done = mark_done(&result);
    let Recording { held, free } = recording;
    let tail: Tail<'a> = Box::pin(async move {
        let under_lease = async move {
            let (_, done) = futures::future::join(held, done).await;
            // The lease is given back even when the marker could not be written (the period
            // then runs again, which is safe).
            let released = lease.release().await;
            done.and(released)
        };
        futures::future::join(under_lease, free).await.0
    });
    Ok((Locked::Ran(Box::new(result)), Some(tail)))
}

/// How a DAG of locked runs behaves.
#[derive(Debug, Clone)]
pub struct LockedRun {
    /// The logical time every job runs for.
    pub at: DateTime<Utc>,
    /// The period (fire time) to mark done; `None` for a run that is not a period.
    pub period: Option<DateTime<Utc>>,
    /// Who takes the leases (`host:pid:uuid`).
    pub holder: String,
    pub ttl: Duration,
    /// Jobs at once where the DAG allows.
    pub parallel: usize,
    /// A held lease stops new jobs from starting (the daemon waits and resumes the period
    /// later); otherwise the job is skipped and the others still run (the command line).
    pub wait_when_held: bool,
    /// Run jobs that are up to date anyway (`--force`).
    pub force: bool,
    /// The jobs finished so far, in the order they finished (what an interrupted run reports).
    pub finished: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Runs `names` in dependency order under their leases. Returns each job that was tried with
/// what became of it, in dependency order. A failed job stops new jobs from starting (the
/// running ones finish) and is returned as `Locked::Ran(Err(..))`.
pub async fn run_locked_dag(
    ws: &Workspace,
    names: &[String],
    opts: &LockedRun,
    progress: &Progress,
) -> Result<Vec<(String, Locked)>> {
    let stop = |(_, l): &(String, Locked)| match l {
        Locked::Ran(r) => r.as_ref().is_err(),
        Locked::Held(_) => opts.wait_when_held,
        Locked::AlreadyDone => false,
    };
    let forced = super::forced_jobs(ws, names);
    let forced = &forced;
    // Jobs that did not run here (held elsewhere, or skipped for that): their downstream would
    // read half-built inputs, so it is skipped too, with the reason.
    let blocked: std::sync::Mutex<BTreeMap<String, String>> = Default::default();
    let blocked = &blocked;
    let runs = run_dag_with_tails(&ws.jobs, names, opts.parallel, stop, |job| async move {
        let why = {
            let b = blocked.lock().expect("blocked jobs");
            job.depends_on.iter().find_map(|d| b.get(d).map(|r| format!("upstream `{d}` {r} in this run")))
        };
        if let Some(why) = why {
            blocked.lock().expect("blocked jobs").insert(job.name.clone(), "was skipped".into());
            let run = RunOptions { at: Some(opts.at), blocked: Some(why), ..Default::default() };
            let m = run_job(ws, job, &run, progress).await;
            opts.finished.lock().expect("finished jobs").push(job.name.clone());
            return Ok(((job.name.clone(), Locked::Ran(Box::new(m))), None));
        }
        let force = opts.force && forced.contains(&job.name);
        let (l, tail) = run_locked(ws, job, opts.at, opts.period, &opts.holder, opts.ttl, force, progress).await?;
        if let Locked::Held(h) = &l {
            blocked.lock().expect("blocked jobs").insert(job.name.clone(), format!("did not run (held by {})", h.holder));
        }
        opts.finished.lock().expect("finished jobs").push(job.name.clone());
        Ok(((job.name.clone(), l), tail))
    })
    .await;
    let runs = match runs {
        Ok(runs) if !opts.wait_when_held => record_not_started(ws, names, opts, runs, progress).await?,
        r => r?,
    };
    super::flush_skipped(ws).await;
    Ok(runs)
}

/// After a failure no further job starts: each job of the plan that did not is recorded as
/// skipped with the reason (its upstream failed, or an earlier job did), in the summary and in
/// `runner_runs`. (The daemon instead tries the period again, so it records nothing here.)
async fn record_not_started(
    ws: &Workspace,
    names: &[String],
    opts: &LockedRun,
    mut runs: Vec<(String, Locked)>,
    progress: &Progress,
) -> Result<Vec<(String, Locked)>> {
    let failed: Vec<String> =
        runs.iter().filter(|(_, l)| matches!(l, Locked::Ran(r) if r.is_err())).map(|(n, _)| n.clone()).collect();
    let Some(first) = failed.first().cloned() else { return Ok(runs) };
    let planned = ws.jobs.with_state_jobs(names);
    let mut not_run: BTreeMap<String, String> = failed.iter().map(|f| (f.clone(), "failed".to_string())).collect();
    for job in ws.jobs.order(&planned)? {
        if runs.iter().any(|(n, _)| n == &job.name) {
            continue;
        }
        let why = match job.depends_on.iter().find(|d| not_run.contains_key(*d)) {
            Some(d) => format!("upstream `{d}` {} in this run", not_run[d]),
            None => format!("not started: `{first}` failed earlier in this run"),
        };
        not_run.insert(job.name.clone(), "was skipped".into());
        let run = RunOptions { at: Some(opts.at), blocked: Some(why), ..Default::default() };
        let m = run_job(ws, job, &run, progress).await;
        runs.push((job.name.clone(), Locked::Ran(Box::new(m))));
    }
    Ok(runs)
}

/// The first failure among locked runs, as the error of the whole run.
pub fn first_failure(runs: Vec<(String, Locked)>) -> Result<Vec<(String, Locked)>> {
    if !runs.iter().any(|(_, l)| matches!(l, Locked::Ran(r) if r.is_err())) {
        return Ok(runs);
    }
    let failed = runs.into_iter().find_map(|(_, l)| if let Locked::Ran(r) = l { r.err() } else { None });
    Err(failed.expect("checked: a run failed"))
}
