//! Running jobs: one entry point for every kind of job, in dependency order, each run recorded
//! in `runner_runs` whether it succeeds or fails.
//!
//! Every kind runs through [`run_job`]: it gives the run its one id, opens a log span carrying
//! it, dispatches to the kind's module ([`run_kind`], the one place that knows every kind), and
//! records the [`JobMetrics`] the kind returns. [`dag`] runs many jobs in dependency order,
//! [`locked`] runs them under job leases ([`lease`]) for schedules and triggers, and
//! [`backfill`] reruns a SQL job over past days.

pub mod dag;
pub mod fresh;
pub mod lease;
pub mod locked;

use chrono::{DateTime, NaiveDate, Utc};
use tracing::Instrument;

use crate::dates::{days_between, midnight};
use crate::error::{Error, Result};
use crate::job::{Job, JobKind, JobMetrics};
use crate::progress::Progress;
use crate::runs::{RunRecord, record};
use crate::workspace::{JobRun, Workspace};
pub use dag::run_dag;

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
    /// Run SQL, export and scoring jobs even when their inputs did not change (`--force`).
    pub force: bool,
    /// The run's fingerprint and whether it is up to date, when the caller checked already
    /// (a locked run checks before taking the lease).
    pub freshness: Option<(fresh::Fingerprint, bool)>,
    /// Why the job does not run (an upstream of the same run did not): recorded as skipped.
    pub blocked: Option<String>,
    /// The lease the run holds: its catalog writes carry it ([`lease::fenced`]).
    pub fence: Option<lease::Fence>,
    /// A triggered run (schedule, event, daemon): a job whose inputs were never produced waits
    /// for them (skipped, with the reason) instead of failing.
    pub scheduled: bool,
}

/// How a run skipped for inputs never produced says so: its period is not marked done (it
/// runs again once they exist).
pub const WAITING: &str = "waiting for its input";

/// Whether `m` is a run that waited for inputs never produced.
pub fn waited(m: &JobMetrics) -> bool {
    m.skipped.as_deref().is_some_and(|s| s.starts_with(WAITING))
}

/// The input tables no run has produced yet, each with who produces it (for "waiting for").
fn missing_inputs(ws: &Workspace, fp: &fresh::Fingerprint) -> Vec<String> {
    fp.inputs
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(t, _)| match ws.jobs.jobs.values().find(|j| j.outputs(&ws.contract).contains(t)) {
            Some(j) => format!("`{t}`, which job `{}` has not produced yet", j.name),
            None => format!("`{t}`, which no job produces and is not in the catalog"),
        })
        .collect()
}

/// A new run id: time-ordered (UUID v7), so ids sort by start.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Runs one job and records the run (a dry run is not recorded).
pub async fn run_job(ws: &Workspace, job: &Job, opts: &RunOptions, progress: &Progress) -> Result<JobMetrics> {
    let (result, recording) = run_job_deferred(ws, job, opts, progress).await;
    recording.all().await;
    result
}

/// What is left of a run once its work is done: recording it. It reads and writes only the
/// runner's own state, so the next job need not wait for it.
pub struct Recording {
    /// What belongs to the job and is written while its lease is held: the state the kind
    /// deferred ([`JobRun::defer`]) and the up-to-date fingerprint.
    pub held: futures::future::LocalBoxFuture<'static, ()>,
    /// The run record in `runner_runs`, a ledger of its own: the lease may be given back
    /// before it is written.
    pub free: futures::future::LocalBoxFuture<'static, ()>,
}

impl Recording {
    /// Both halves, at once.
    pub async fn all(self) {
        futures::future::join(self.held, self.free).await;
    }
}

/// A [`Recording`] with nothing to do (a dry run, a failure before the run, a skip recorded
/// with the others).
fn nothing() -> Recording {
    Recording { held: Box::pin(async {}), free: Box::pin(async {}) }
}

/// Runs one job and returns its result with the [`Recording`] still to do: a caller that runs
/// jobs one after another starts the next job while the last one is recorded (on S3 a run
/// record is several round trips one after another), and awaits every recording before it
/// returns.
pub async fn run_job_deferred(
    ws: &Workspace,
    job: &Job,
    opts: &RunOptions,
    progress: &Progress,
) -> (Result<JobMetrics>, Recording) {
    if let Err(e) = ws.check_format(!opts.dry_run).await {
        return (Err(e), nothing());
    }
    let started_at = Utc::now();
    let at = opts.at.unwrap_or(started_at);
    // A job whose inputs did not change since its last successful run for this date is up to
    // date (a backfill, a dry run and --force always run).
    let date = at.date_naive().to_string();
    let checked = match (opts.dry_run || opts.days.is_some() || opts.blocked.is_some(), &opts.freshness) {
        (true, _) => Ok(None),
        (false, Some(known)) => Ok(Some(known.clone())),
        (false, None) if opts.force => fresh::fingerprint(ws, job, &date).await.map(|fp| fp.map(|fp| (fp, false))),
        (false, None) => fresh::check(ws, job, &date).await,
    };
    RUNNING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let done = match checked {
        Ok(checked) => run_checked(ws, job, opts, progress, started_at, at, checked).await,
        Err(e) => (Err(e), nothing()),
    };
    // Only when no other job of the process is running: a job still at work would fault the
    // pages back in (the two ingests run side by side, and the first to end purged the other's).
    if RUNNING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
        release_free_memory();
    }
    done
}

/// Jobs of this process at work (see [`release_free_memory`]).
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Hands the pages the allocator holds free back to the kernel. jemalloc keeps a job's freed
/// buffers for reuse for about ten seconds, so the SQL job after an ingest in the same run
/// started on top of them: at 2,000 tenants on the quarter-hour drops the run peaked at 941 MiB
/// where the ingest alone took 687 MiB and the SQL DAG alone 631. A purge costs a few
/// `madvise` calls.
fn release_free_memory() {
    #[cfg(not(target_env = "msvc"))]
    {
        // `arena.<MALLCTL_ARENAS_ALL>.purge`: takes and returns nothing. Under another global
        // allocator (the tests) it purges jemalloc's own unused arenas: nothing.
        let name = c"arena.4096.purge";
        // SAFETY: a NUL-terminated name and no input or output buffers, as the control expects.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(name.as_ptr(), std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), 0)
        };
        if rc != 0 {
            tracing::debug!(rc, "jemalloc did not purge its free pages");
        }
    }
}

async fn run_checked(
    ws: &Workspace,
    job: &Job,
    opts: &RunOptions,
    progress: &Progress,
    started_at: DateTime<Utc>,
    at: DateTime<Utc>,
    checked: Option<(fresh::Fingerprint, bool)>,
) -> (Result<JobMetrics>, Recording) {
    let run = JobRun {
        ws,
        job,
        run_id: new_run_id(),
        at,
        dry_run: opts.dry_run,
        days: opts.days.clone(),
        progress,
        deferred: Default::default(),
    };
    // Every log line of the run names the job and the run id, as runner_runs does.
    let span = tracing::info_span!("job", job = %job.name, run_id = %run.run_id);
    let up_to_date = !opts.force && checked.as_ref().is_some_and(|(_, up)| *up);
    let fingerprint = checked.map(|(fp, _)| fp);
    let missing = fingerprint.as_ref().map(|fp| missing_inputs(ws, fp)).unwrap_or_default();
    let waiting = match missing.first() {
        Some(m) if opts.scheduled => Some(format!("{WAITING} {m}")),
        Some(m) => {
            let e = Error::Failed(format!(
                "`{}` reads {m}: run that first (a scheduled run waits for it instead of failing)",
                job.name
            ));
            return (Err(e), nothing());
        }
        None => None,
    };
    let result = if let Some(why) = opts.blocked.as_ref().or(waiting.as_ref()) {
        let mut m = JobMetrics::new(&job.name, &run.run_id, run.as_of().to_string(), crate::job::KindCounts::empty(&job.kind));
        m.skipped = Some(why.clone());
        tracing::warn!(job = %job.name, "skipped: {why}");
        Ok(m)
    } else if up_to_date {
        let mut m = JobMetrics::new(&job.name, &run.run_id, run.as_of().to_string(), crate::job::KindCounts::empty(&job.kind));
        m.skipped = Some("up to date".into());
        tracing::info!(job = %job.name, "skipped: up to date (inputs unchanged since its last run for this date; --force runs it)");
        Ok(m)
    } else {
        lease::fenced(opts.fence.clone(), run_kind(&run).instrument(span)).await
    };
    if opts.dry_run {
        return (result, nothing());
    }
    let succeeded = result.as_ref().is_ok_and(|m| m.skipped.is_none());
    // A failed run's logical time in the form its kind's successful runs record: the date for
    // the kinds that run as of a day, the instant for ingest and compaction.
    let logical = match &job.kind {
        JobKind::Ingest(_) | JobKind::Compact(_) => run.at.to_rfc3339(),
        _ => run.at.date_naive().to_string(),
    };
    let mut r = RunRecord::of(&job.name, job.kind.name(), &run.run_id, logical, started_at, &result);
    // Ingest and compaction always run here; the kinds that run SQL run it on `[engine]`.
    r.engine = match &job.kind {
        JobKind::Sql(sj) if sj.cumulative => "local".into(),
        JobKind::Sql(_) | JobKind::Export(_) | JobKind::Score(_) => ws.config.engine.label(),
        JobKind::Ingest(_) | JobKind::Compact(_) => "local".into(),
    };
    if up_to_date {
        crate::runs::defer_skipped(r);
        return (result, nothing());
    }
    // Written only after a success (a failed run's deferred state would claim work it did
    // not publish).
    let deferred = match succeeded {
        true => run.take_deferred(),
        false => Vec::new(),
    };
    let (ws, job, run_id) = (ws.clone(), job.clone(), run.run_id.clone());
    let name = job.name.clone();
    // Objects of their own: written at once.
    let held = async move {
        let state = async {
            for written in futures::future::join_all(deferred).await {
                if let Err(e) = written {
                    // What a kind defers is a state that only saves work: the next run does
                    // that work again from the state before.
                    tracing::warn!("could not record the state of `{}` (its next run does more work): {e}", job.name);
                }
            }
        };
        let up_to_date = async {
            if let (true, Some(fp)) = (succeeded, fingerprint)
                && let Err(e) = fresh::record(&ws, &job, fp, &run_id).await
            {
                tracing::warn!("could not record that `{}` is up to date (it will run again next time): {e}", job.name);
            }
        };
        futures::future::join(state, up_to_date).await;
    };
    let ws = run.ws.clone();
    let free = async move {
        if let Err(e) = record(&ws, &r).await {
            tracing::warn!("could not record the run of `{name}` in runner_runs: {e}");
        }
    };
    (result, Recording { held: Box::pin(held), free: Box::pin(free) })
}

/// The one dispatch over job kinds: every kind takes a [`JobRun`] and returns [`JobMetrics`].
pub async fn run_kind(run: &JobRun<'_>) -> Result<JobMetrics> {
    match &run.job.kind {
        JobKind::Ingest(j) => crate::ingest::run(run, j).await,
        JobKind::Sql(j) => crate::transform::run(run, j).await,
        JobKind::Export(j) => crate::export::run(run, j).await,
        JobKind::Compact(j) => crate::compact::run(run, j).await,
        JobKind::Score(j) => crate::score::run(run, j).await,
    }
}

/// Runs `names` in dependency order, `opts.parallel` at a time; see [`run_dag`].
pub async fn run_jobs(ws: &Workspace, names: &[String], opts: &RunOptions, progress: &Progress) -> Result<Vec<JobMetrics>> {
    let forced = forced_jobs(ws, names);
    let runs = run_dag(
        &ws.jobs,
        names,
        opts.parallel,
        |_| false,
        |job| {
            let opts = RunOptions { force: opts.force && forced.contains(&job.name), ..opts.clone() };
            async move { run_job(ws, job, &opts, progress).await }
        },
    )
    .await;
    flush_skipped(ws).await;
    runs
}

/// Records the runs skipped as up to date (kept for one commit at the end of a run).
pub async fn flush_skipped(ws: &Workspace) {
    if let Err(e) = crate::runs::flush_skipped(ws).await {
        tracing::warn!("could not record the runs skipped as up to date in runner_runs: {e}");
    }
}

/// The jobs `--force` applies to: those named and the state jobs that run with them (a state
/// skips new inputs it reads as published, such as the scores of the day: forcing `tenants`
/// means reading them).
pub fn forced_jobs(ws: &Workspace, names: &[String]) -> Vec<String> {
    ws.jobs.with_state_jobs(names)
}

/// Reruns a SQL job for each day from `from` to `to` (inclusive): an incremental job rebuilds
/// exactly those days in one run (as of `to`), any other job runs once per day, as of that day.
pub async fn backfill(ws: &Workspace, job: &str, from: NaiveDate, to: NaiveDate, progress: &Progress) -> Result<Vec<JobMetrics>> {
    if from > to {
        return Err(Error::Usage(format!("--from {from} is after --to {to}")));
    }
    let j = ws.jobs.get(job)?;
    let JobKind::Sql(sj) = &j.kind else {
        let kind = j.kind.name();
        let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        return Err(Error::Usage(format!("`{job}` is not a SQL job (it is {article} {kind} job): backfill is for SQL jobs")));
    };
    let days = days_between(from, to);
    if sj.incremental {
        let opts = RunOptions { at: Some(midnight(to)), days: Some(days), ..Default::default() };
        return Ok(vec![run_job(ws, j, &opts, progress).await?]);
    }
    let runs = async {
        let mut out = Vec::new();
        for d in days {
            out.push(run_job(ws, j, &RunOptions { at: Some(midnight(d)), ..Default::default() }, progress).await?);
        }
        Ok(out)
    }
    .await;
    flush_skipped(ws).await;
    runs
}
