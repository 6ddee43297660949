//! `runner schedule daemon`: runs due schedules, each period's jobs under their leases.
//!
//! Every run goes through `pipeline::locked`, as `run --schedule` does: leases, done markers,
//! dependency order and `--parallel` are implemented once, there.
//!
//! The daemon keeps, per schedule, the last fire time it handled. At start it catches up the
//! periods missed since the last done one by the schedule's policy; then it sleeps until the
//! next fire time of any schedule, runs what is due in fire-time order (each schedule's jobs in
//! dependency order), and looks again every `tick` while a lease is held elsewhere. On SIGTERM or
//! Ctrl-C it starts nothing new, lets the running job finish (its publish is atomic either way)
//! and exits 0. Time comes from a [`Clock`], so tests drive a simulated day in milliseconds.
//!
//! A failure (a job's, or the daemon's own request to the store) never stops the daemon: the
//! period stays pending with the jobs it has left and is tried again after a backoff (`tick`,
//! doubling, at most [`MAX_BACKOFF_SECS`]), up to [`MAX_ATTEMPTS`] times. A period given up on
//! has no done marker and is recorded as owed (`_runner/schedule/owed/<schedule>/<period>`,
//! with the jobs it has left): the next start of a daemon runs owed periods first, whatever
//! the schedule's catch-up policy and however many later periods were done since, and deletes
//! the record once the period finished.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{CatchUp, Schedule, Schedules};
use crate::error::Result;
use crate::pipeline::locked::{Locked, LockedRun, last_done, run_locked_dag};
use crate::progress::Progress;
use crate::workspace::Workspace;

/// The logical time of an EventBridge Scheduled Event (`-` reads stdin): its `time`, the
/// scheduled time (Scheduler can pass `<aws.scheduler.scheduled-time>` in the same field).
pub fn event_time(src: &str) -> Result<DateTime<Utc>> {
    use crate::error::Error;
    let text = if src == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Error::Io { what: "reading the event from stdin".into(), source: e })?
    } else {
        std::fs::read_to_string(src).map_err(|e| Error::Usage(format!("cannot read the event file {src}: {e}")))?
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("the event is not JSON ({e}): expected an EventBridge Scheduled Event")))?;
    let time = v.get("time").and_then(|t| t.as_str()).ok_or_else(|| {
        Error::Usage(
            "the event has no `time` field: expected an EventBridge Scheduled Event \
             ({\"detail-type\":\"Scheduled Event\",\"time\":\"2026-11-20T13:05:00Z\",...})"
                .into(),
        )
    })?;
    DateTime::parse_from_rfc3339(time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Usage(format!("the event's time `{time}` is not an RFC 3339 time: {e}")))
}

/// Where the daemon's time comes from.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    async fn sleep_until(&self, t: DateTime<Utc>);
}

/// The wall clock.
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep_until(&self, t: DateTime<Utc>) {
        if let Ok(d) = (t - Utc::now()).to_std() {
            tokio::time::sleep(d).await;
        }
    }
}

/// A clock that jumps to whatever time is slept until (tests drive days in milliseconds).
pub struct SimulatedClock(std::sync::Mutex<DateTime<Utc>>);

impl SimulatedClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        SimulatedClock(std::sync::Mutex::new(start))
    }
}

#[async_trait::async_trait]
impl Clock for SimulatedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock")
    }
    async fn sleep_until(&self, t: DateTime<Utc>) {
        let mut now = self.0.lock().expect("clock");
        *now = (*now).max(t);
    }
}

/// Asks a daemon to stop starting runs.
#[derive(Clone, Default)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Stop {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Treat fire times since this time as missed (instead of the last done period).
    pub from: Option<DateTime<Utc>>,
    /// Stop once the clock passes this time and nothing due is left.
    pub until: Option<DateTime<Utc>>,
    pub holder: String,
    /// Jobs of a period run at once where the DAG allows.
    pub parallel: usize,
}

/// One run the daemon made (or found already made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonRun {
    pub schedule: String,
    pub job: String,
    pub fire_time: DateTime<Utc>,
    pub logical_time: DateTime<Utc>,
    /// `succeeded`, `failed` (tried again later), `already_done`, `waiting` (inputs never
    /// produced; the period is not marked done).
    pub status: String,
}

/// Tries of one period before the daemon leaves it to the next start's catch-up.
pub const MAX_ATTEMPTS: u32 = 6;
/// The longest wait between two tries of a failed period.
pub const MAX_BACKOFF_SECS: i64 = 900;

struct Due {
    fire: DateTime<Utc>,
    schedule: usize,
    /// Recorded as owed by a daemon that gave up on it (the record goes when it finishes).
    owed: bool,
    /// Jobs of the schedule still to run for this period (all of them until one was held).
    remaining: Option<Vec<String>>,
    /// Failed tries so far, and when the next may start.
    failures: u32,
    retry_at: Option<DateTime<Utc>>,
}

impl Due {
    fn new(fire: DateTime<Utc>, schedule: usize) -> Due {
        Due { fire, schedule, owed: false, remaining: None, failures: 0, retry_at: None }
    }
}

const OWED_DIR: &str = "_runner/schedule/owed";

fn owed_path(ws: &Workspace, schedule: &str, fire: DateTime<Utc>) -> object_store::path::Path {
    ws.warehouse.child(&format!("{OWED_DIR}/{}/{}", crate::catalog::hive_escape(schedule), fire.format("%Y%m%dT%H%M%SZ")))
}

/// What a given-up period still owes: its fire time and the jobs it has left.
#[derive(serde::Serialize, serde::Deserialize)]
struct Owed {
    fire: DateTime<Utc>,
    jobs: Vec<String>,
}

/// Records a period given up on, so a later start runs it (one put).
async fn record_owed(ws: &Workspace, schedule: &str, due: &Due, jobs: &[String]) -> Result<()> {
    let body = serde_json::to_vec(&Owed { fire: due.fire, jobs: jobs.to_vec() })
        .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    ws.warehouse.put(&owed_path(ws, schedule, due.fire), bytes::Bytes::from(body)).await
}

/// The periods of `schedule` earlier daemons gave up on (one listing).
async fn owed_periods(ws: &Workspace, schedule: &str) -> Result<Vec<Owed>> {
    let mut out = Vec::new();
    for o in ws.warehouse.list(&format!("{OWED_DIR}/{}", crate::catalog::hive_escape(schedule))).await? {
        let Some(bytes) = ws.warehouse.get_opt(&o.location).await? else { continue };
        match serde_json::from_slice::<Owed>(&bytes) {
            Ok(owed) => out.push(owed),
            Err(e) => tracing::warn!(record = %o.location, "an owed-period record is unreadable (delete it): {e}"),
        }
    }
    Ok(out)
}

/// What became of one try of a period.
enum Period {
    /// Every job ran, was already done, or waited for its inputs.
    Finished,
    /// A lease is held elsewhere: wait for it.
    Held,
    /// A job (or the daemon's own request) failed: try again later.
    Failed,
}

/// The wait after the `n`th failure of a period: `tick`, doubling, capped.
fn backoff(tick: std::time::Duration, n: u32) -> chrono::Duration {
    let tick = chrono::Duration::from_std(tick).unwrap_or_default().max(chrono::Duration::milliseconds(1));
    (tick * 2i32.saturating_pow(n.saturating_sub(1).min(20))).min(chrono::Duration::seconds(MAX_BACKOFF_SECS))
}

/// `f`, tried again after transient errors (the daemon's own requests at start), a few times.
async fn retried<T, F, Fut>(what: &str, tick: std::time::Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut n = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if n + 1 < MAX_ATTEMPTS => {
                n += 1;
                tracing::warn!("{what} failed (try {n} of {MAX_ATTEMPTS}, again shortly): {e}");
                tokio::time::sleep(backoff(tick, n).to_std().unwrap_or_default().min(std::time::Duration::from_secs(10))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs due schedules until stopped (or `until`). Returns what it ran.
pub async fn run(
    ws: &Workspace,
    schedules: &Schedules,
    clock: &dyn Clock,
    stop: &Stop,
    opts: &DaemonOptions,
    progress: &Progress,
) -> Result<Vec<DaemonRun>> {
    let mut out = Vec::new();
    let now = clock.now();
    let mut cursors: Vec<DateTime<Utc>> = Vec::new();
    let mut pending: Vec<Due> = Vec::new();
    for (i, s) in schedules.schedules.iter().enumerate() {
        // The oldest of the jobs' last done periods: a period a later job failed (or the daemon
        // gave up on) is caught up, its done jobs skipped by their markers.
        let since = match opts.from {
            Some(f) => Some(f),
            None => {
                let mut oldest: Option<DateTime<Utc>> = None;
                for job in &s.jobs {
                    let done = retried("reading the last done period", schedules.tick, || last_done(ws, job)).await?;
                    oldest = match (oldest, done) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                oldest
            }
        };
        if let Some(since) = since {
            let missed = s.expr.fire_times(since, now, s.tz, 100_000);
            let take: Vec<DateTime<Utc>> = match s.catch_up {
                CatchUp::All => missed,
                CatchUp::Once => missed.last().copied().into_iter().collect(),
                CatchUp::Skip => Vec::new(),
            };
            if !take.is_empty() {
                tracing::info!(schedule = %s.name, periods = take.len(), policy = s.catch_up.name(), "catching up missed periods");
            }
            pending.extend(take.into_iter().map(|fire| Due::new(fire, i)));
        }
        // Periods an earlier daemon gave up on: owed whatever the policy, with the jobs they
        // had left (those done since are skipped by their done markers).
        for owed in retried("reading owed periods", schedules.tick, || owed_periods(ws, &s.name)).await? {
            tracing::info!(schedule = %s.name, fire = %owed.fire, jobs = owed.jobs.len(), "running a period an earlier daemon gave up on");
            pending.retain(|d| !(d.schedule == i && d.fire == owed.fire));
            // Jobs since removed from the schedule are not owed any more.
            let jobs: Vec<String> = owed.jobs.into_iter().filter(|j| s.jobs.contains(j)).collect();
            pending.push(Due { owed: true, remaining: Some(jobs), ..Due::new(owed.fire, i) });
        }
        cursors.push(now);
    }
    loop {
        pending.sort_by_key(|d| (d.fire, d.schedule));
        // Run what is due, oldest period first; a period waiting for a lease waits its turn.
        // A schedule whose period waits for a lease keeps its later periods waiting too.
        let mut blocked: Vec<usize> = Vec::new();
        let mut i = 0;
        while i < pending.len() && !stop.stopped() {
            // A period waiting for a lease or a retry keeps the schedule's later periods waiting.
            if blocked.contains(&pending[i].schedule) || pending[i].retry_at.is_some_and(|t| t > clock.now()) {
                blocked.push(pending[i].schedule);
                i += 1;
                continue;
            }
            let s = &schedules.schedules[pending[i].schedule];
            let tried = match run_period(ws, schedules, s, &mut pending[i], opts, progress, &mut out).await {
                Ok(p) => p,
                // The daemon's own request (a lease, a done marker) failed: like a failed job.
                Err(e) => {
                    tracing::error!(schedule = %s.name, fire = %pending[i].fire, "the period failed: {e}");
                    Period::Failed
                }
            };
            match tried {
                Period::Finished => {
                    let due = pending.remove(i);
                    if due.owed
                        && let Err(e) = ws.warehouse.delete(&owed_path(ws, &s.name, due.fire)).await
                    {
                        tracing::warn!(schedule = %s.name, fire = %due.fire, "could not delete the owed-period record (the period runs again, harmlessly): {e}");
                    }
                }
                Period::Held => {
                    blocked.push(pending[i].schedule);
                    i += 1;
                }
                Period::Failed => {
                    let due = &mut pending[i];
                    due.failures += 1;
                    if due.failures >= MAX_ATTEMPTS {
                        tracing::error!(
                            schedule = %s.name, fire = %due.fire,
                            "giving up on the period after {MAX_ATTEMPTS} tries; it is recorded as owed, so the next start runs it"
                        );
                        let left = due.remaining.clone().unwrap_or_else(|| s.jobs.clone());
                        if let Err(e) = record_owed(ws, &s.name, due, &left).await {
                            tracing::error!(schedule = %s.name, fire = %due.fire, "could not record the owed period: {e}");
                        }
                        pending.remove(i);
                    } else {
                        let wait = backoff(schedules.tick, due.failures);
                        tracing::warn!(schedule = %s.name, fire = %due.fire, "trying the period again in {} s", wait.num_milliseconds() as f64 / 1000.0);
                        due.retry_at = Some(clock.now() + wait);
                        blocked.push(due.schedule);
                        i += 1;
                    }
                }
            }
        }
        let retry_at = pending.iter().filter_map(|d| d.retry_at).min();
        let waiting = !blocked.is_empty();
        if stop.stopped() {
            tracing::info!("stopping: no new runs are started");
            break;
        }
        let now = clock.now();
        let next_fire = schedules.schedules.iter().zip(&cursors).filter_map(|(s, c)| s.expr.next_after(*c, s.tz)).min();
        let mut wake = match next_fire {
            Some(t) => t,
            None if pending.is_empty() => break,
            None => now + chrono::Duration::from_std(schedules.tick).unwrap_or_default(),
        };
        if waiting {
            wake = wake.min(now + chrono::Duration::from_std(schedules.tick).unwrap_or_default());
        }
        if let Some(r) = retry_at {
            wake = wake.min(r.max(now));
        }
        if let Some(u) = opts.until
            && wake > u
        {
            if pending.is_empty() {
                break;
            }
            wake = now + chrono::Duration::from_std(schedules.tick).unwrap_or_default();
        }
        tokio::select! {
            _ = clock.sleep_until(wake) => {}
            _ = stop.notify.notified() => {}
        }
        let now = clock.now();
        for (i, s) in schedules.schedules.iter().enumerate() {
            let fires = s.expr.fire_times(cursors[i], now, s.tz, 100_000);
            // Fires that piled up while a long run held the loop: the policy says how many to run.
            let take: Vec<DateTime<Utc>> = match s.catch_up {
                CatchUp::All => fires,
                CatchUp::Once | CatchUp::Skip => fires.last().copied().into_iter().collect(),
            };
            pending.extend(take.into_iter().map(|fire| Due::new(fire, i)));
            cursors[i] = now;
        }
    }
    Ok(out)
}

/// Runs the remaining jobs of one period.
async fn run_period(
    ws: &Workspace,
    schedules: &Schedules,
    s: &Schedule,
    due: &mut Due,
    opts: &DaemonOptions,
    progress: &Progress,
    out: &mut Vec<DaemonRun>,
) -> Result<Period> {
    let logical = s.logical_time(due.fire);
    let names = due.remaining.clone().unwrap_or_else(|| s.jobs.clone());
    let run = LockedRun {
        at: logical,
        period: Some(due.fire),
        holder: opts.holder.clone(),
        ttl: schedules.lease_ttl,
        parallel: opts.parallel,
        wait_when_held: true,
        force: false,
        finished: Default::default(),
    };
    let results = run_locked_dag(ws, &names, &run, progress).await?;
    let rec = |job: &str, status: &str| DaemonRun {
        schedule: s.name.clone(),
        job: job.to_string(),
        fire_time: due.fire,
        logical_time: logical,
        status: status.to_string(),
    };
    let mut finished: Vec<String> = Vec::new();
    let mut held = false;
    for (job, l) in results {
        match l {
            Locked::Held(h) => {
                tracing::info!(job = %job, holder = %h.holder, "lease held elsewhere; waiting");
                held = true;
                continue;
            }
            Locked::AlreadyDone => out.push(rec(&job, "already_done")),
            Locked::Ran(r) if r.as_ref().as_ref().is_ok_and(crate::pipeline::waited) => {
                // Not marked done: a later period (or the next start's catch-up) runs it.
                tracing::info!(schedule = %s.name, job = %job, fire = %due.fire, "waiting for inputs never produced");
                out.push(rec(&job, "waiting"));
            }
            Locked::Ran(r) if r.is_ok() => {
                tracing::info!(schedule = %s.name, job = %job, fire = %due.fire, "ran");
                out.push(rec(&job, "succeeded"));
            }
            Locked::Ran(r) => {
                let e = r.err().map(|e| e.to_string()).unwrap_or_default();
                // Recorded in runner_runs by run_job; the jobs after it depend on it. The period
                // is tried again from this job on.
                tracing::error!(schedule = %s.name, job = %job, fire = %due.fire, "failed: {e}");
                out.push(rec(&job, "failed"));
                due.remaining = Some(names.into_iter().filter(|n| !finished.contains(n)).collect());
                return Ok(Period::Failed);
            }
        }
        finished.push(job);
    }
    if held {
        due.remaining = Some(names.into_iter().filter(|n| !finished.contains(n)).collect());
        return Ok(Period::Held);
    }
    Ok(Period::Finished)
}
