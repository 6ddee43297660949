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
    /// `succeeded`, `failed`, `already_done`.
    pub status: String,
}

struct Due {
    fire: DateTime<Utc>,
    schedule: usize,
    /// Jobs of the schedule still to run for this period (all of them until one was held).
    remaining: Option<Vec<String>>,
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
        let since = match opts.from {
            Some(f) => Some(f),
            None => last_done(ws, &s.jobs[0]).await?,
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
            pending.extend(take.into_iter().map(|fire| Due { fire, schedule: i, remaining: None }));
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
            if blocked.contains(&pending[i].schedule) {
                i += 1;
                continue;
            }
            let s = &schedules.schedules[pending[i].schedule];
            if run_period(ws, schedules, s, &mut pending[i], opts, progress, &mut out).await? {
                pending.remove(i);
            } else {
                blocked.push(pending[i].schedule);
                i += 1;
            }
        }
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
            pending.extend(take.into_iter().map(|fire| Due { fire, schedule: i, remaining: None }));
            cursors[i] = now;
        }
    }
    Ok(out)
}

/// Runs the remaining jobs of one period. `Ok(true)` when the period is finished (every job ran,
/// was already done, or a failure stopped its dependents), `Ok(false)` when a lease is held
/// elsewhere and it must wait.
async fn run_period(
    ws: &Workspace,
    schedules: &Schedules,
    s: &Schedule,
    due: &mut Due,
    opts: &DaemonOptions,
    progress: &Progress,
    out: &mut Vec<DaemonRun>,
) -> Result<bool> {
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
            Locked::Ran(r) if r.is_ok() => {
                tracing::info!(schedule = %s.name, job = %job, fire = %due.fire, "ran");
                out.push(rec(&job, "succeeded"));
            }
            Locked::Ran(r) => {
                let e = r.err().map(|e| e.to_string()).unwrap_or_default();
                // Recorded in runner_runs by run_job; the jobs after it depend on it.
                tracing::error!(schedule = %s.name, job = %job, fire = %due.fire, "failed: {e}");
                out.push(rec(&job, "failed"));
                return Ok(true);
            }
        }
        finished.push(job);
    }
    if held {
        due.remaining = Some(names.into_iter().filter(|n| !finished.contains(n)).collect());
        return Ok(false);
    }
    Ok(true)
}
