//! Scheduling: the daemon through a simulated day (an injected clock, real jobs), catch-up by
//! policy after downtime, two daemons (real processes) on one warehouse never running a period
//! twice, a SIGKILLed lock holder taken over after its lease expires, EventBridge events on
//! stdin, SIGTERM, and the committed crontab/EventBridge artifacts kept in sync.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{REPO, query_csv};
use runner::config::Config;
use runner::progress::Progress;
use runner::schedule::Schedules;
use runner::schedule::daemon::{self, DaemonOptions, SimulatedClock, Stop};
use runner::workspace::Workspace;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A workspace over simulated drops with its own scheduler/schedules.toml.
    fn new(schedules: &str) -> Env {
        let env = Env { dir: tempfile::tempdir().unwrap() };
        std::fs::write(
            env.root().join("runner.toml"),
            format!(
                "warehouse = \"warehouse\"\njobs_dir = \"{REPO}/jobs\"\nsql_dir = \"{REPO}/sql\"\nschemas_dir = \"{REPO}/schemas\"\n\
                 scheduler_dir = \"scheduler\"\n[sources.companies]\nurl = \"drops/raw/companies\"\n\
                 [sources.bigdatajobs]\nurl = \"drops/raw/bigdatajobs\"\n[scoring]\nmodel = \"{REPO}/data/model/churn.json\"\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(env.root().join("scheduler")).unwrap();
        std::fs::write(env.root().join("scheduler/schedules.toml"), schedules).unwrap();
        let o = env
            .cmd(&["simulate", "--out", "drops", "--tenants", "3", "--users-per-tenant", "2", "--days", "3"])
            .args(["--end-date", "2026-11-20", "--seed", "4"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        env
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        common::cmd_in(self.root(), &self.root().join("runner.toml"), args)
    }

    fn workspace(&self) -> Workspace {
        let path: PathBuf = self.root().join("runner.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        Workspace::open(Config::from_parts(Some(path), &text, &[]).unwrap()).unwrap()
    }

    async fn runs(&self) -> Vec<String> {
        let ws = self.workspace();
        query_csv(&ws, "SELECT job, logical_time, status FROM runner_runs ORDER BY started_at, job").await
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const DAY: &str = r#"
[daemon]
lease_ttl = "10s"
tick = "100ms"

[schedules.ingest]
jobs = ["ingest_bigdatajobs", "ingest_companies"]
expression = "rate(6 hours)"
catch_up = "once"

[schedules.activity]
jobs = ["jobs_daily", "tenant_activity_daily"]
expression = "cron(10 0/8 * * ? *)"
catch_up = "once"

[schedules.daily]
jobs = ["tenants"]
expression = "cron(30 0 * * ? *)"
lag = "1h"
catch_up = "all"
"#;

async fn drive(env: &Env, from: &str, until: &str) -> Vec<(String, String, String, String)> {
    let ws = env.workspace();
    let schedules = Schedules::load(&env.root().join("scheduler"), &ws.jobs).unwrap();
    let clock = SimulatedClock::new(t(from));
    let opts = DaemonOptions { from: None, until: Some(t(until)), holder: "test".into(), parallel: 1 };
    let runs = daemon::run(&ws, &schedules, &clock, &Stop::default(), &opts, &Progress::new(false)).await.unwrap();
    runs.into_iter().map(|r| (r.schedule, r.job, r.fire_time.format("%m-%d %H:%M").to_string(), r.status)).collect()
}

fn seq(items: &[(&str, &str, &str)]) -> Vec<(String, String, String, String)> {
    items.iter().map(|(s, j, f)| (s.to_string(), j.to_string(), f.to_string(), "succeeded".to_string())).collect()
}

#[tokio::test]
async fn a_simulated_day_then_catch_up_after_downtime_by_policy() {
    let env = Env::new(DAY);
    // The day's drops are in before the daemon starts, so the SQL jobs have data.
    assert!(env.cmd(&["run", "ingest_bigdatajobs", "ingest_companies"]).output().unwrap().status.success());
    let before = env.runs().await.len();

    let day = drive(&env, "2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z").await;
    // Jobs of one schedule run in dependency order (tenant_activity_daily before jobs_daily is
    // not required: they are independent, so the listed order holds).
    let ws = env.workspace();
    let activity: Vec<String> =
        ws.jobs.order(&["jobs_daily".into(), "tenant_activity_daily".into()]).unwrap().iter().map(|j| j.name.clone()).collect();
    let (a1, a2) = (activity[0].as_str(), activity[1].as_str());
    assert_eq!(
        day,
        seq(&[
            ("activity", a1, "11-20 00:10"),
            ("activity", a2, "11-20 00:10"),
            // tenants' running state is advanced with it.
            ("daily", "tenant_state", "11-20 00:30"),
            ("daily", "tenants", "11-20 00:30"),
            ("ingest", "ingest_bigdatajobs", "11-20 06:00"),
            ("ingest", "ingest_companies", "11-20 06:00"),
            ("activity", a1, "11-20 08:10"),
            ("activity", a2, "11-20 08:10"),
            ("ingest", "ingest_bigdatajobs", "11-20 12:00"),
            ("ingest", "ingest_companies", "11-20 12:00"),
            ("activity", a1, "11-20 16:10"),
            ("activity", a2, "11-20 16:10"),
            ("ingest", "ingest_bigdatajobs", "11-20 18:00"),
            ("ingest", "ingest_companies", "11-20 18:00"),
            ("ingest", "ingest_bigdatajobs", "11-21 00:00"),
            ("ingest", "ingest_companies", "11-21 00:00"),
        ])
    );
    // Every run landed in the run history, with the fire time (minus the lag) as logical time.
    let runs = env.runs().await;
    assert_eq!(runs.len() - before, day.len(), "{runs:?}");
    assert!(
        runs.contains(&"tenants,2026-11-19,succeeded".to_string()),
        "the 00:30 run with lag 1h is as of the day before: {runs:?}"
    );

    // Down for two days. On restart: ingest and activity catch up once (their latest missed
    // period), daily catches up every missed day.
    let caught_up = drive(&env, "2026-11-23T00:00:00Z", "2026-11-23T00:00:00Z").await;
    assert_eq!(
        caught_up,
        seq(&[
            // tenants' running state is advanced with it.
            ("daily", "tenant_state", "11-21 00:30"),
            ("daily", "tenants", "11-21 00:30"),
            // tenants' running state is advanced with it.
            ("daily", "tenant_state", "11-22 00:30"),
            ("daily", "tenants", "11-22 00:30"),
            ("activity", a1, "11-22 16:10"),
            ("activity", a2, "11-22 16:10"),
            ("ingest", "ingest_bigdatajobs", "11-23 00:00"),
            ("ingest", "ingest_companies", "11-23 00:00"),
        ])
    );
    // Started again at the same moment: everything due already ran.
    assert!(drive(&env, "2026-11-23T00:00:00Z", "2026-11-23T00:00:00Z").await.is_empty());
}

#[tokio::test]
async fn two_daemons_on_one_warehouse_never_run_a_period_twice() {
    let env = Env::new(
        "[daemon]\nlease_ttl = \"10s\"\ntick = \"50ms\"\n\
         [schedules.ingest]\njobs = [\"ingest_bigdatajobs\", \"ingest_companies\"]\nexpression = \"rate(1 hour)\"\ncatch_up = \"all\"\n",
    );
    let now = Utc::now();
    let from = (now - chrono::Duration::hours(8)).to_rfc3339();
    let until = now.to_rfc3339();
    let daemons: Vec<_> = (0..2)
        .map(|_| env.cmd(&["schedule", "daemon", "--from", &from, "--until", &until, "--format", "json"]).spawn().unwrap())
        .collect();
    let mut statuses = Vec::new();
    for d in daemons {
        let out = d.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        statuses.extend(
            v.as_array().unwrap().iter().map(|r| (r["job"].to_string(), r["fire_time"].to_string(), r["status"].to_string())),
        );
    }
    let succeeded: Vec<_> = statuses.iter().filter(|s| s.2 == "\"succeeded\"").collect();
    assert_eq!(succeeded.len(), 16, "8 periods x 2 jobs, each run by exactly one daemon: {statuses:?}");
    let unique: std::collections::BTreeSet<_> = succeeded.iter().map(|s| (&s.0, &s.1)).collect();
    assert_eq!(unique.len(), 16, "{statuses:?}");
    let runs = env.runs().await;
    let mut per_period: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &runs[1..] {
        *per_period.entry(r.rsplit_once(',').unwrap().0).or_default() += 1;
    }
    assert_eq!(per_period.len(), 16);
    assert!(per_period.values().all(|n| *n == 1), "{per_period:?}");
}

#[tokio::test]
async fn a_killed_lock_holder_is_taken_over_after_its_lease_expires() {
    let env = Env::new("[daemon]\nlease_ttl = \"6s\"\n");
    let crashed = env.cmd(&["run", "ingest_bigdatajobs"]).env("RUNNER_FAILPOINT", "ingest.before_commit").output().unwrap();
    assert_eq!(crashed.status.signal(), Some(9));
    // The dead holder's lease is still valid: a run now is skipped with the documented code.
    let skipped = env.cmd(&["run", "ingest_bigdatajobs"]).output().unwrap();
    assert_eq!(skipped.status.code(), Some(75), "{}", stderr(&skipped));
    assert!(stderr(&skipped).contains("skipped `ingest_bigdatajobs`: another run holds its lock"), "{}", stderr(&skipped));
    // Other jobs are not blocked by it.
    assert!(env.cmd(&["run", "ingest_companies"]).output().unwrap().status.success());
    // Once the lease expires (6 s after the dead holder's last renewal) a run takes over.
    let mut out = env.cmd(&["run", "ingest_bigdatajobs", "--format", "json"]).output().unwrap();
    for _ in 0..60 {
        if out.status.code() != Some(75) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        out = env.cmd(&["run", "ingest_bigdatajobs", "--format", "json"]).output().unwrap();
    }
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v[0]["objects"].as_u64().unwrap() > 0, "the takeover ingests what the dead run did not commit: {v}");
}

#[tokio::test]
async fn an_eventbridge_event_is_the_logical_time_and_a_repeated_event_runs_once() {
    let env = Env::new("");
    let event = r#"{"version":"0","id":"7bf73129-1428-4cd3-a780-95db273d1602","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-11-20T13:05:00Z","region":"us-west-2","resources":["arn:aws:events:us-west-2:123456789012:rule/ingest"],"detail":{}}"#;
    let send = |args: &[&str], input: &str| {
        let mut c = env.cmd(args).stdin(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(c.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let first = send(&["run", "ingest_bigdatajobs", "--event", "-", "--format", "json"], event);
    assert!(first.status.success(), "{}", stderr(&first));
    // EventBridge delivers at least once: the same event again is skipped.
    let again = send(&["run", "ingest_bigdatajobs", "--event", "-"], event);
    assert_eq!(again.status.code(), Some(0));
    assert!(stderr(&again).contains("already ran"), "{}", stderr(&again));
    let runs = env.runs().await;
    assert_eq!(runs, vec!["job,logical_time,status", "ingest_bigdatajobs,2026-11-20T13:05:00+00:00,succeeded"]);
    let bad = send(&["run", "ingest_bigdatajobs", "--event", "-"], r#"{"detail-type":"Scheduled Event"}"#);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("has no `time` field"), "{}", stderr(&bad));
}

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_and_releases_its_lease() {
    let env = Env::new(
        "[daemon]\nlease_ttl = \"60s\"\ntick = \"50ms\"\n\
         [schedules.all]\njobs = [\"ingest_bigdatajobs\", \"ingest_companies\", \"tenant_activity_daily\", \"tenants\"]\n\
         expression = \"rate(1 hour)\"\ncatch_up = \"all\"\n",
    );
    let from = (Utc::now() - chrono::Duration::hours(48)).to_rfc3339();
    let d = env.cmd(&["schedule", "daemon", "--from", &from]).spawn().unwrap();
    // Stop it once its first run is recorded (bounded wait).
    let runs_dir = env.root().join("warehouse/runner_runs");
    for _ in 0..600 {
        if walk(&runs_dir) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on a child we started.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let out = d.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("stopping"), "{}", stderr(&out));
    let ran = env.runs().await.len() - 1;
    assert!(ran > 0 && ran < 48 * 4, "stopped part way: {ran} runs");
    // Nothing half published and no lease left behind: a run right away succeeds.
    let out = env.cmd(&["run", "--all", "--at", "2026-11-20"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Files below `dir` (0 when it does not exist).
fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()).unwrap_or(0)
}

#[test]
fn schedule_list_shows_next_fire_times() {
    let env = Env::new(DAY);
    let out = env.cmd(&["schedule", "list", "--count", "2", "--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenants = v.as_array().unwrap().iter().find(|r| r["job"] == "tenants").unwrap();
    assert_eq!(tenants["expression"], "cron(30 0 * * ? *)");
    assert_eq!(tenants["next"].as_str().unwrap().matches("00:30 UTC").count(), 2, "{tenants}");
    assert_eq!(tenants["last_run"], "never");
    // A wrong expression is a config error naming the schedule and the field.
    std::fs::write(
        env.root().join("scheduler/schedules.toml"),
        "[schedules.x]\njobs = [\"tenants\"]\nexpression = \"cron(0 24 * * ? *)\"\n",
    )
    .unwrap();
    let out = env.cmd(&["schedule", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("schedule `x`: `cron(0 24 * * ? *)`: field 2 (hours) `24`: 24 is out of range: 0-23 allowed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn committed_exports_match_the_schedules() {
    for (format, file) in [("crontab", "crontab"), ("eventbridge", "eventbridge.json"), ("cloudformation", "cloudformation.json")]
    {
        let out = common::bin()
            .current_dir(REPO)
            .args(["--quiet", "schedule", "export", "--format", format, "--config-path", "/srv/runner/runner.toml"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let path = Path::new(REPO).join("scheduler/export").join(file);
        if std::env::var("UPDATE_GOLDEN").is_ok() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &out.stdout).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), committed, "{file} is stale: run `make schedules` and commit it");
    }
}

/// An upstream whose lease another run holds does not run here, and neither does what reads
/// it: the downstream is skipped with the reason (in the summary and in runner_runs) instead
/// of publishing from half-ingested tables.
#[tokio::test]
async fn the_downstream_of_a_held_job_is_skipped_with_the_reason() {
    let env = Env::new("[daemon]\nlease_ttl = \"10m\"\n");
    let crashed = env.cmd(&["run", "ingest_bigdatajobs"]).env("RUNNER_FAILPOINT", "ingest.before_commit").output().unwrap();
    assert_eq!(crashed.status.signal(), Some(9));
    assert!(env.cmd(&["run", "ingest_companies"]).output().unwrap().status.success());
    let out = env
        .cmd(&["run", "ingest_bigdatajobs", "tenant_activity_daily", "--at", "2026-11-20", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let activity = v.as_array().unwrap().iter().find(|r| r["job"] == "tenant_activity_daily").expect("reported");
    assert!(activity["skipped"].as_str().unwrap().contains("upstream `ingest_bigdatajobs` did not run"), "{activity}");
    assert_eq!(activity["rows_out"], 0);
    let ws = env.workspace();
    assert!(ws.catalog.table("tenant_activity_daily").await.unwrap().is_none(), "nothing published");
    assert!(env.runs().await.iter().any(|r| r.starts_with("tenant_activity_daily,") && r.ends_with(",skipped")));
}

/// Ctrl-C (SIGINT) during a run gives the leases back and says what finished: the next run
/// does not wait for them to expire.
#[tokio::test]
async fn an_interrupted_run_gives_its_leases_back() {
    let env = Env::new("[daemon]\nlease_ttl = \"10m\"\n");
    // Slow requests (25 ms each) so the signal lands mid-run; bounded by the wait below.
    let child = env
        .cmd(&["run", "--all", "--at", "2026-11-20"])
        .env("RUNNER_COUNT_REQUESTS", "1")
        .env("RUNNER_DELAY_REQUESTS_MS", "25")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted:") && stderr(&out).contains("lease(s) given back"), "{}", stderr(&out));
    let again = env.cmd(&["run", "--all", "--at", "2026-11-20"]).output().unwrap();
    assert!(again.status.success(), "no lease left held: {}", stderr(&again));
}

/// The first day of operation: the scoring schedule fires before `churn_features` was ever
/// produced. The scheduled run waits for it (skipped, with the reason, exit 0); a plain run
/// says what to run first; once the features exist, the same schedule scores.
#[tokio::test]
async fn a_scheduled_job_whose_inputs_were_never_produced_waits_for_them() {
    let env = Env::new(&std::fs::read_to_string(format!("{REPO}/scheduler/schedules.toml")).unwrap());
    assert!(env.cmd(&["run", "ingest_bigdatajobs", "ingest_companies"]).output().unwrap().status.success());
    let scheduled = ["run", "--schedule", "scoring", "--at", "2026-11-21T02:00:00Z", "--format", "json"];
    let out = env.cmd(&scheduled).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let score = v.as_array().unwrap().iter().find(|r| r["job"] == "score_churn").expect("reported");
    let why = score["skipped"].as_str().unwrap_or_default();
    assert!(why.contains("waiting for its input `churn_features`, which job `churn_features` has not produced yet"), "{score}");
    assert!(env.runs().await.iter().any(|r| r.starts_with("score_churn,") && r.ends_with(",skipped")));
    let plain = env.cmd(&["run", "score_churn"]).output().unwrap();
    assert_eq!(plain.status.code(), Some(1));
    assert!(stderr(&plain).contains("reads `churn_features`") && stderr(&plain).contains("run that first"), "{}", stderr(&plain));
    // The activity and daily schedules produce the features (daily waits for activity's
    // output too); the period that waited was not marked done, so it runs now and scores.
    for (schedule, at) in [("activity", "2026-11-21T00:10:00Z"), ("daily", "2026-11-21T00:30:00Z")] {
        let out = env.cmd(&["run", "--schedule", schedule, "--at", at]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = env.cmd(&scheduled).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let score = v.as_array().unwrap().iter().find(|r| r["job"] == "score_churn").expect("reported");
    assert!(score["skipped"].is_null() && score["rows_out"].as_u64().unwrap() > 0, "{score}");
}

/// A short store outage in the middle of the daemon's first period (requests failing before
/// they take effect, as a 503 that outlasted the client's retries) neither stops the daemon nor
/// loses the period: it is tried again after a backoff, and every period ends done.
#[test]
fn the_daemon_tries_a_failed_period_again_and_every_period_ends_done() {
    let env = Env::new(
        "[daemon]\nlease_ttl = \"3s\"\ntick = \"50ms\"\n\
         [schedules.ingest]\njobs = [\"ingest_bigdatajobs\", \"ingest_companies\"]\nexpression = \"rate(1 minute)\"\ncatch_up = \"all\"\n",
    );
    // The window's minute marks: three, unless it starts on one, or the daemon, which works up
    // to the clock's present, passes one while it runs. So it starts between the 2nd and the
    // 40th second of a minute (a wait of at most 22 s).
    let second = Utc::now().timestamp().rem_euclid(60) as u64;
    if !(2..=40).contains(&second) {
        std::thread::sleep(Duration::from_secs((62 - second) % 60));
    }
    let now = Utc::now();
    let from = (now - chrono::Duration::minutes(3)).to_rfc3339();
    let until = now.to_rfc3339();
    let daemon = ["schedule", "daemon", "--from", &from, "--until", &until, "--format", "json"];
    // The outage covers the requests that take the first period's leases and start its ingests
    // (their ledgers, catalogs and listings): which of them it meets depends on how the two
    // ingests interleave, so it fails either a run (a `failed` row) or the period's start (a
    // lease), and either way the period is tried again. (Drop reads are retried inside a run,
    // so an outage that met only those would show nothing.)
    let out = env.cmd(&daemon).env("RUNNER_FAULTS", "outage=24..30").output().unwrap();
    assert!(out.status.success(), "one outage must not stop the daemon: {}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let status = |r: &serde_json::Value| r["status"].as_str().unwrap().to_string();
    let key = |r: &serde_json::Value| (r["job"].as_str().unwrap().to_string(), r["fire_time"].as_str().unwrap().to_string());
    let failed: Vec<_> = rows.iter().filter(|r| status(r) == "failed").map(key).collect();
    assert!(
        !failed.is_empty() || stderr(&out).contains("trying the period again"),
        "the outage failed a run or a period's start, which was tried again: {rows:?}\n{}",
        stderr(&out)
    );
    for k in &failed {
        assert!(rows.iter().any(|r| key(r) == *k && status(r) == "succeeded"), "{k:?} was tried again and succeeded: {rows:?}");
    }
    let periods: std::collections::BTreeSet<String> = rows.iter().map(|r| key(r).1).collect();
    assert_eq!(periods.len(), 3, "{rows:?}");
    // Every period of every job is done: a second daemon over the same window runs nothing.
    let again = env.cmd(&daemon).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert!(rows.iter().all(|r| status(r) == "already_done"), "{rows:?}");
}

/// A period a daemon gave up on (recorded as owed, with the jobs it had left) is run by the
/// next daemon's start whatever the catch-up policy and the done markers of later periods,
/// and its record goes once it finished.
#[test]
fn a_period_an_earlier_daemon_gave_up_on_is_run_by_the_next_start() {
    let env = Env::new(
        "[daemon]\nlease_ttl = \"3s\"\ntick = \"50ms\"\n\
         [schedules.ingest]\njobs = [\"ingest_bigdatajobs\", \"ingest_companies\"]\nexpression = \"rate(1 minute)\"\ncatch_up = \"skip\"\n",
    );
    let now = Utc::now();
    let fire = (now - chrono::Duration::minutes(30)).format("%Y-%m-%dT%H:%M:00Z").to_string();
    // Later periods done: the newest done marker is past the owed period.
    let later = (now - chrono::Duration::minutes(5)).format("%Y-%m-%dT%H:%M:00Z").to_string();
    assert!(env.cmd(&["run", "--schedule", "ingest", "--at", &later]).output().unwrap().status.success());
    let key = t(&fire).format("%Y%m%dT%H%M%SZ").to_string();
    let record = env.root().join(format!("warehouse/_runner/schedule/owed/ingest/{key}"));
    std::fs::create_dir_all(record.parent().unwrap()).unwrap();
    std::fs::write(&record, format!(r#"{{"fire":"{fire}","jobs":["ingest_companies"]}}"#)).unwrap();
    let until = Utc::now().to_rfc3339();
    let out = env.cmd(&["schedule", "daemon", "--until", &until, "--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let owed: Vec<&serde_json::Value> = rows.iter().filter(|r| t(r["fire_time"].as_str().unwrap()) == t(&fire)).collect();
    assert_eq!(owed.len(), 1, "only the jobs it had left: {rows:?}");
    assert_eq!((owed[0]["job"].as_str(), owed[0]["status"].as_str()), (Some("ingest_companies"), Some("succeeded")), "{rows:?}");
    assert!(!record.exists(), "the owed record goes once the period finished");
}
