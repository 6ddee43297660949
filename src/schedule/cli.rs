//! `runner schedule list|daemon|export`: the subcommand's arguments and what each does.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, Utc};
use clap::Subcommand;

use super::Schedules;
use super::daemon::{self, DaemonOptions, Stop, SystemClock};
use crate::dates::parse_time;
use crate::error::{Error, Result, exit};
use crate::output::{Format, write_batches};
use crate::progress::Progress;
use crate::workspace::Workspace;

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Each scheduled job: expression, time zone, policy, next fire times, last run.
    List {
        /// Fire times to show.
        #[arg(long, default_value_t = 3)]
        count: usize,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run due schedules until SIGTERM/Ctrl-C: catch-up by policy, leases, dependency order.
    Daemon {
        /// Treat fire times since this time as missed (default: since each schedule's last done period).
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// Exit once this time has passed and nothing due is left (default: run forever).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Jobs of a period that do not depend on each other run at the same time, this many at
        /// once (ingest jobs only next to ingest jobs, compaction alone), as with `runner run --parallel`.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
        parallel: u16,
        /// Format of the list of runs printed at exit.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Write the schedules as crontab lines, EventBridge Scheduler definitions or CloudFormation.
    Export {
        #[arg(long, value_enum)]
        format: ScheduleFormat,
        /// The runner command in crontab lines.
        #[arg(long, default_value = "runner")]
        runner: String,
        /// The config file crontab entries run with (set as RUNNER_CONFIG: cron starts them in
        /// the home folder, not the project's). Default: the absolute path of the one in use.
        #[arg(long)]
        config_path: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleFormat {
    Crontab,
    Eventbridge,
    Cloudformation,
}

pub async fn run(ws: &Workspace, s: &Schedules, cmd: ScheduleCommand, out: &mut dyn Write, progress: &Progress) -> Result<i32> {
    match cmd {
        ScheduleCommand::List { count, format } => {
            let now = chrono::Utc::now();
            let mut cols: [Vec<String>; 7] = Default::default();
            for sch in &s.schedules {
                let next: Vec<String> = sch
                    .expr
                    .fire_times(now, now + chrono::Duration::days(3660), sch.tz, count)
                    .iter()
                    .map(|t| t.with_timezone(&sch.tz).format("%Y-%m-%d %H:%M %Z").to_string())
                    .collect();
                for job in &sch.jobs {
                    let last = last_run(ws, job).await?;
                    for (c, v) in cols.iter_mut().zip([
                        sch.name.clone(),
                        job.clone(),
                        sch.expression.clone(),
                        sch.tz.name().to_string(),
                        sch.catch_up.name().to_string(),
                        next.join(", "),
                        last,
                    ]) {
                        c.push(v);
                    }
                }
            }
            let names = ["schedule", "job", "expression", "timezone", "catch_up", "next", "last_run"];
            let batch =
                RecordBatch::try_from_iter(names.iter().zip(cols).map(|(n, c)| (*n, Arc::new(StringArray::from(c)) as ArrayRef)))
                    .map_err(Error::arrow("listing schedules"))?;
            write_batches(out, format, &[batch])?;
            Ok(exit::OK)
        }
        ScheduleCommand::Daemon { from, until, parallel, format } => {
            let stop = Stop::default();
            let s2 = stop.clone();
            tokio::spawn(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
                crate::output::notice("stopping: the running job finishes, no new run starts");
                s2.stop();
            });
            let holder = crate::pipeline::lease::holder_id();
            crate::output::notice(format!(
                "scheduler daemon {holder}: {} schedules from {}",
                s.schedules.len(),
                s.file.display()
            ));
            let opts = DaemonOptions { from, until, holder, parallel: usize::from(parallel) };
            let runs = daemon::run(ws, s, &SystemClock, &stop, &opts, progress).await?;
            let col = |f: fn(&daemon::DaemonRun) -> String| {
                Arc::new(StringArray::from(runs.iter().map(f).collect::<Vec<_>>())) as ArrayRef
            };
            let batch = RecordBatch::try_from_iter(vec![
                ("schedule", col(|r| r.schedule.clone())),
                ("job", col(|r| r.job.clone())),
                ("fire_time", col(|r| r.fire_time.to_rfc3339())),
                ("logical_time", col(|r| r.logical_time.to_rfc3339())),
                ("status", col(|r| r.status.clone())),
            ])
            .map_err(Error::arrow("listing the daemon's runs"))?;
            write_batches(out, format, &[batch])?;
            Ok(exit::OK)
        }
        ScheduleCommand::Export { format, runner, config_path } => {
            let config_path = config_path.unwrap_or_else(|| {
                let file = ws.config.file.clone().unwrap_or_else(|| ws.config.base_dir.join(crate::config::DEFAULT_FILE));
                std::path::absolute(&file).unwrap_or(file).display().to_string()
            });
            let text = match format {
                ScheduleFormat::Crontab => super::render::crontab(s, &runner, &config_path),
                ScheduleFormat::Eventbridge => super::render::eventbridge(s),
                ScheduleFormat::Cloudformation => super::render::cloudformation(s, &ws.config),
            };
            out.write_all(text.as_bytes()).map_err(|e| Error::Io { what: "writing".into(), source: e })?;
            Ok(exit::OK)
        }
    }
}

/// `<started_at> <status>` of the job's last run, or `never`.
async fn last_run(ws: &Workspace, job: &str) -> Result<String> {
    let batches = crate::runs::history(ws, job, 1).await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok("never".into()) };
    let fmt = |name: &str| -> Result<String> {
        let c = b.column_by_name(name).ok_or_else(|| Error::Internal(format!("runner_runs has no {name}")))?;
        let f = ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).map_err(Error::arrow("formatting"))?;
        Ok(f.value(0).to_string())
    };
    Ok(format!("{} {} (logical {})", fmt("started_at")?, fmt("status")?, fmt("logical_time")?))
}
