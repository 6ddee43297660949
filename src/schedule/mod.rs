//! Schedules: when jobs run, as data in `scheduler/schedules.toml`, in EventBridge syntax.
//!
//! A schedule names jobs that run together (in dependency order) at each fire time of its
//! expression, in its IANA time zone, with a catch-up policy for periods missed while nothing
//! was running. [`expr`] parses the expressions; [`daemon`] runs due schedules (each run under
//! the job's lease, through `pipeline::locked`); [`render`] writes crontab, EventBridge
//! Scheduler and CloudFormation definitions from the same file; [`cli`] is the `runner schedule`
//! subcommand, arguments included.

pub mod cli;
pub mod daemon;
pub mod deploy;
pub mod expr;
pub mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::job::Jobs;

pub const FILE: &str = "schedules.toml";

/// What to do with periods missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Run every missed period, oldest first (each has its own logical time).
    All,
    /// Run the latest missed period only.
    Once,
    /// Run none; wait for the next fire time.
    Skip,
}

impl CatchUp {
    pub fn name(self) -> &'static str {
        match self {
            CatchUp::All => "all",
            CatchUp::Once => "once",
            CatchUp::Skip => "skip",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    daemon: DaemonFile,
    #[serde(default)]
    schedules: BTreeMap<String, ScheduleFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonFile {
    lease_ttl: Option<String>,
    tick: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    jobs: Vec<String>,
    expression: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    catch_up: Option<CatchUp>,
    #[serde(default)]
    lag: Option<String>,
    #[serde(default)]
    description: String,
}

/// One schedule, validated.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub description: String,
    /// In dependency order.
    pub jobs: Vec<String>,
    pub expression: String,
    pub expr: expr::Expr,
    pub tz: Tz,
    pub catch_up: CatchUp,
    /// Logical time = fire time - lag (a daily run at 00:30 with lag 1h computes the day before).
    pub lag: Duration,
}

impl Schedule {
    pub fn logical_time(&self, fire: DateTime<Utc>) -> DateTime<Utc> {
        fire - chrono::Duration::from_std(self.lag).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Schedules {
    pub file: PathBuf,
    pub schedules: Vec<Schedule>,
    /// How long a job lease lasts without renewal (renewed every third of it while running).
    pub lease_ttl: Duration,
    /// How often the daemon looks again when it is waiting for a lease.
    pub tick: Duration,
}

impl Schedules {
    /// The schedule called `name`; an unknown name is a usage error listing the schedules.
    pub fn get(&self, name: &str) -> Result<&Schedule> {
        self.schedules.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.schedules.iter().map(|s| s.name.as_str()).collect();
            Error::Usage(format!("no schedule `{name}` in {}; schedules: {}", self.file.display(), names.join(", ")))
        })
    }

    /// `<dir>/schedules.toml`, checked against `jobs/` (no file: no schedules). Errors name the
    /// file, the schedule and the field.
    pub fn load(dir: &Path, jobs: &Jobs) -> Result<Schedules> {
        let path = dir.join(FILE);
        let file_name = path.display().to_string();
        let err = |m: String| Error::Config { file: file_name.clone(), message: m };
        // No file: nothing is scheduled (runs are started by hand, cron or EventBridge).
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(err(format!("cannot read the schedules: {e}"))),
        };
        let f: File = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let dur = |key: &str, v: Option<String>, default: Duration| -> Result<Duration> {
            v.map(|s| humantime::parse_duration(&s).map_err(|e| err(format!("{key} `{s}` is not a duration: {e}"))))
                .transpose()
                .map(|d| d.unwrap_or(default))
        };
        let lease_ttl = dur("daemon.lease_ttl", f.daemon.lease_ttl, Duration::from_secs(60))?;
        let tick = dur("daemon.tick", f.daemon.tick, Duration::from_secs(15))?;
        let mut schedules = Vec::new();
        for (name, s) in f.schedules {
            let at = |m: String| err(format!("schedule `{name}`: {m}"));
            let expr = expr::parse(&s.expression).map_err(|e| at(e.to_string()))?;
            let tz_name = s.timezone.unwrap_or_else(|| "UTC".into());
            let tz: Tz = tz_name
                .parse()
                .map_err(|_| at(format!("timezone `{tz_name}` is not an IANA time zone (e.g. \"Europe/Paris\", \"UTC\")")))?;
            if s.jobs.is_empty() {
                return Err(at("jobs is empty: name the jobs this schedule runs".into()));
            }
            for j in &s.jobs {
                jobs.get(j).map_err(|e| at(e.to_string()))?;
            }
            let ordered: Vec<String> = jobs.order(&s.jobs)?.into_iter().map(|j| j.name.clone()).collect();
            let lag = dur(&format!("schedules.{name}.lag"), s.lag, Duration::ZERO)?;
            schedules.push(Schedule {
                name,
                description: s.description,
                jobs: ordered,
                expression: s.expression.trim().to_string(),
                expr,
                tz,
                catch_up: s.catch_up.unwrap_or(CatchUp::Once),
                lag,
            });
        }
        Ok(Schedules { file: path, schedules, lease_ttl, tick })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_schedules_load_against_the_committed_jobs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = crate::config::Config::from_parts(Some(root.join("runner.toml")), "", &[]).unwrap();
        let contract = crate::schema::Contract::load(&root.join("schemas/events.toml")).unwrap();
        let jobs = Jobs::load(&root.join("jobs"), &cfg, &contract).unwrap();
        let s = Schedules::load(&root.join("scheduler"), &jobs).unwrap();
        let by_name: BTreeMap<&str, &Schedule> = s.schedules.iter().map(|s| (s.name.as_str(), s)).collect();
        assert_eq!(by_name["ingest"].expression, "rate(5 minutes)");
        assert!(s.schedules.iter().flat_map(|s| &s.jobs).any(|j| j == "compact_events"));
        assert!(s.schedules.iter().flat_map(|s| &s.jobs).any(|j| j == "score_churn"));
    }
}
