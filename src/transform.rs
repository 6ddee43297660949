//! The SQL job runner: run a job's SQL for a logical date and publish its output through
//! write-audit-publish (`publish`).
//!
//! Parameters reach the SQL as typed placeholders, never pasted into its text: `$as_of` (DATE,
//! the run's logical date) and, for incremental jobs, `$dt_from` and `$dt_to` (DATEs, inclusive:
//! a run of consecutive event days being rebuilt). One query per run of changed days, not one
//! per day: a first build of 90 days is one or three queries, a daily run usually one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use bytes::Bytes;
use chrono::NaiveDate;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::{Job, JobMetrics, KindCounts, SqlCounts, SqlJob, WriteMode};
use crate::ledger::Ledger;
use crate::publish::{OutputSpec, publish_output};
use crate::workspace::{JobRun, Workspace};

/// Days an incremental job's SQL covers in one query: bounds its memory on a long backfill.
const MAX_DAYS_PER_QUERY: usize = 10;

/// Incremental state: the ingest batches already seen, and days changed after an earlier as-of.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IncrementalState {
    /// Stream -> highest ledger seq whose changes were rebuilt.
    watermarks: BTreeMap<String, u64>,
    /// Input written by a SQL job (or scoring) -> the newest partition version seen. Those
    /// versions are run ids, which grow with time, so a partition published since has a larger
    /// one: its day changed.
    #[serde(default)]
    versions: BTreeMap<String, String>,
    /// Changed days later than the as-of date of the run that saw them.
    pending: BTreeSet<NaiveDate>,
    /// A cumulative job: the newest day built.
    #[serde(default)]
    built_through: Option<NaiveDate>,
}

fn state_path(job: &str) -> String {
    format!("_runner/jobs/{job}/state.json")
}

pub async fn run(r: &JobRun<'_>, sj: &SqlJob) -> Result<JobMetrics> {
    let (ws, job) = (r.ws, r.job);
    let started = Instant::now();
    let as_of = r.as_of();
    let mut metrics = r.metrics(as_of.to_string(), KindCounts::Sql(SqlCounts::default()));
    // A running state advances in this process whatever the engine, like ingest and
    // compaction: it reads the days that changed and one day of itself, and Ballista 55's
    // scheduler loses track of its plan's stage metrics and never finishes it.
    // Which periods to build, from the inputs' changes read before the session opens (the
    // watermarks it keeps are what the session reads at least); the job's state is read
    // beside both.
    let state = async {
        match sj.incremental {
            true => read_state(ws, job).await.map(Some),
            false => Ok(None),
        }
    };
    let planned = async {
        let changes = match sj.incremental {
            true => Some(read_changes(ws, sj).await?),
            false => None,
        };
        let t_periods = started.elapsed();
        let ctx = if sj.cumulative {
            crate::engine::local_session_for(ws, Some(&sj.inputs)).await?
        } else {
            crate::engine::session_for(ws, Some(&sj.inputs)).await?
        };
        Ok::<_, Error>((changes, t_periods, ctx))
    };
    // The output's catalog entry is read beside the planning, so that the publish at the end
    // writes its next snapshot at once (on S3 two round trips less after the query).
    let warm = async {
        match r.dry_run {
            true => Ok(()),
            false => ws.catalog.warm(&sj.output).await,
        }
    };
    let (state, (changes, t_periods, ctx), ()) = futures::future::try_join3(state, planned, warm).await?;
    let (periods, next_state) = match (state, changes) {
        (Some(state), Some(changes)) => {
            let (days, state) = changed_days(sj, state, changes, as_of, r.days.as_deref());
            (days, Some(state))
        }
        _ => (vec![as_of], None),
    };
    metrics.periods = periods.iter().map(|d| d.to_string()).collect();
    let t_session = started.elapsed();

    // Run the SQL once per run of consecutive days (`$dt_from`..`$dt_to`; a non-incremental
    // job: once, both set to the as-of date). Runs are independent, so two run at once.
    let mut outputs: Vec<RecordBatch> = Vec::new();
    let mut expected_partitions: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut out_schema = None;
    // A cumulative job's days are one run (each day seeds the next): one query.
    let ranges = match (sj.cumulative, periods.first(), periods.last()) {
        (true, Some(a), Some(b)) => vec![(*a, *b)],
        (true, _, _) => Vec::new(),
        (false, _, _) => day_ranges(&periods, MAX_DAYS_PER_QUERY),
    };
    metrics.counts = KindCounts::Sql(SqlCounts { queries: ranges.len() as u64 });
    let mut results = futures::stream::iter(ranges.clone())
        .map(|r| {
            let (ctx, sj, job_file) = (ctx.clone(), sj.clone(), job.file.clone());
            tokio::spawn(async move { execute(&ctx, &sj, &job_file, as_of, r).await })
        })
        .buffered(2);
    for _ in &ranges {
        let (batches, schema, rows_in, bytes_in) = results
            .next()
            .await
            .expect("one result per period")
            .map_err(|e| Error::Internal(format!("query task failed: {e}")))??;
        let (batches, schema) = crate::engine::athena_types(batches, &schema)?;
        metrics.rows_in += rows_in;
        metrics.bytes_in += bytes_in;
        outputs.extend(batches.into_iter().filter(|b| b.num_rows() > 0));
        out_schema = Some(schema);
    }
    // A rebuilt day or an as-of snapshot is replaced even when it comes out empty.
    if sj.partition_by == ["dt"] && sj.incremental {
        expected_partitions.extend(periods.iter().map(|p| vec![p.to_string()]));
    } else if sj.partition_by == ["as_of"] {
        expected_partitions.insert(vec![as_of.to_string()]);
    }
    let t_query = started.elapsed();
    let Some(schema) = out_schema else {
        metrics.seconds = started.elapsed().as_secs_f64();
        return Ok(metrics); // nothing changed
    };
    let spec = OutputSpec {
        job: job.name.clone(),
        description: job.description.clone(),
        output: sj.output.clone(),
        partition_by: sj.partition_by.clone(),
        mode: sj.mode,
        checks: sj.checks.clone(),
        source: sj.file.display().to_string(),
    };
    let published = publish_output(ws, &spec, &schema, outputs, expected_partitions, &r.run_id, r.dry_run).await?;
    metrics.rows_out = published.rows;
    metrics.bytes_out = published.bytes;
    metrics.files = published.files;
    metrics.partitions = published.partitions;
    // Where the time went (`-vv`): opening the session reads the catalog, the query reads data.
    let ms = |d: std::time::Duration| d.as_millis();
    tracing::debug!(
        "job `{}`: periods {} ms, session {} ms, query {} ms, audit and publish {} ms",
        job.name,
        ms(t_periods),
        ms(t_session - t_periods),
        ms(t_query - t_session),
        ms(started.elapsed() - t_query)
    );
    if r.dry_run {
        metrics.seconds = started.elapsed().as_secs_f64();
        return Ok(metrics);
    }
    if let Some(state) = next_state {
        let body = serde_json::to_vec_pretty(&state).map_err(|e| Error::Internal(e.to_string()))?;
        let (wh, path) = (ws.warehouse.clone(), ws.warehouse.child(&state_path(&job.name)));
        match sj.mode {
            // Rows appended are appended again by a run that finds an older state: the state is
            // part of the run, and a failure to write it fails the run.
            WriteMode::Append => wh.put(&path, Bytes::from(body)).await?,
            // A replaced day is the same however often it is rebuilt: the state only saves work
            // (a run that finds an older one rebuilds more days), so it is written after the
            // run, while its lease is held, beside its recording, and the next job need not
            // wait for it.
            WriteMode::ReplacePartitions | WriteMode::ReplaceTable => {
                r.defer(Box::pin(async move { wh.put(&path, Bytes::from(body)).await }))
            }
        }
    }
    metrics.seconds = started.elapsed().as_secs_f64();
    Ok(metrics)
}

/// Plans and runs the SQL with its parameters; returns the output, its schema, and the rows and
/// bytes the scans read.
async fn execute(
    ctx: &SessionContext,
    sj: &SqlJob,
    job_file: &std::path::Path,
    as_of: NaiveDate,
    days: (NaiveDate, NaiveDate),
) -> Result<(Vec<RecordBatch>, Arc<Schema>, u64, u64)> {
    let ctx_err = |what: &str| format!("{what} {}", sj.file.display());
    let df = ctx.sql(&sj.sql).await.map_err(|e| {
        Error::Usage(format!("{}: {}", sj.file.display(), crate::engine::describe_for_job(&sj.sql, &e, job_file)))
    })?;
    let df = df.with_param_values(crate::engine::params(as_of, days)).map_err(Error::df(ctx_err("binding parameters of")))?;
    let plan = df.create_physical_plan().await.map_err(Error::df(ctx_err("planning")))?;
    let schema = plan.schema();
    let batches = collect(plan.clone(), ctx.task_ctx()).await.map_err(Error::df(ctx_err("running")))?;
    let (rows, bytes) = scan_metrics(plan.as_ref());
    Ok((batches, schema, rows, bytes))
}

/// Sorted days as runs of consecutive days, each at most `max` long: one query per run.
pub fn day_ranges(days: &[NaiveDate], max: usize) -> Vec<(NaiveDate, NaiveDate)> {
    let mut out: Vec<(NaiveDate, NaiveDate, usize)> = Vec::new();
    for d in days {
        match out.last_mut() {
            Some((_, to, n)) if *n < max && to.succ_opt() == Some(*d) => {
                *to = *d;
                *n += 1;
            }
            _ => out.push((*d, *d, 1)),
        }
    }
    out.into_iter().map(|(a, b, _)| (a, b)).collect()
}

/// Rows and bytes read by the plan's scans (its leaves).
fn scan_metrics(plan: &dyn ExecutionPlan) -> (u64, u64) {
    if plan.children().is_empty() {
        let m = plan.metrics();
        let rows = m.as_ref().and_then(|m| m.output_rows()).unwrap_or(0) as u64;
        let bytes = m.as_ref().and_then(|m| m.sum_by_name("bytes_scanned")).map(|v| v.as_usize()).unwrap_or(0) as u64;
        return (rows, bytes);
    }
    plan.children().iter().map(|c| scan_metrics(c.as_ref())).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// An incremental job's state, as its last successful run left it.
async fn read_state(ws: &Workspace, job: &Job) -> Result<IncrementalState> {
    match ws.warehouse.get_opt(&ws.warehouse.child(&state_path(&job.name))).await? {
        Some(b) => serde_json::from_slice::<IncrementalState>(&b)
            .map_err(|e| Error::Failed(format!("job `{}` state is corrupt ({e})", job.name))),
        None => Ok(IncrementalState::default()),
    }
}

/// What an incremental job's inputs say changed: the partitions of the inputs other jobs
/// publish, and the ledgers of its streams (stream and table, the ledger).
struct Changes {
    published: Vec<(String, Vec<crate::catalog::PartitionMeta>)>,
    ledgers: Vec<(String, String, crate::ledger::LedgerState)>,
}

/// Reads [`Changes`], all at once (each a round trip or two on S3), before the session opens:
/// the watermarks the state keeps are then what the session reads at least.
async fn read_changes(ws: &Workspace, sj: &SqlJob) -> Result<Changes> {
    let streams: BTreeSet<&str> = ws.contract.streams.values().map(|sc| sc.table.as_str()).collect();
    let published: Vec<&String> = sj.inputs.iter().filter(|t| !streams.contains(t.as_str()) && **t != sj.output).collect();
    let read: Vec<(&String, &str)> = ws
        .contract
        .streams
        .iter()
        .filter(|(_, sc)| sj.inputs.contains(&sc.table))
        .map(|(stream, sc)| (stream, sc.table.as_str()))
        .collect();
    // A ledger this process saw whole moments ago (the ingest of the same run committed to it)
    // is taken as it was then, without a request (see [`Ledger::recent`]); another is read from
    // its newest checkpoint (which says which partitions earlier batches changed) on.
    let ledgers = futures::future::try_join_all(read.iter().map(|(stream, _)| {
        let ledger = Ledger::new(ws.warehouse.clone(), stream);
        async move {
            match ledger.recent() {
                Some(known) => Ok(known),
                None => ledger.load().await,
            }
        }
    }));
    let partitions = futures::future::try_join_all(published.iter().map(|t| ws.catalog.partitions(t)));
    let (ledgers, partitions) = futures::future::try_join(ledgers, partitions).await?;
    Ok(Changes {
        published: published.into_iter().cloned().zip(partitions).collect(),
        ledgers: read.into_iter().zip(ledgers).map(|((s, t), l)| (s.clone(), t.to_string(), l)).collect(),
    })
}

/// Days to rebuild: those whose input partitions changed since the last successful run, up
/// to the as-of date (later ones wait for a later as-of), or exactly `force` for a backfill.
fn changed_days(
    sj: &SqlJob,
    mut state: IncrementalState,
    changes: Changes,
    as_of: NaiveDate,
    force: Option<&[NaiveDate]>,
) -> (Vec<NaiveDate>, IncrementalState) {
    let mut changed: BTreeSet<NaiveDate> = std::mem::take(&mut state.pending);
    // A compaction rewrites files without changing a row: nothing to rebuild.
    for (stream, table, ledger) in changes.ledgers {
        let seen = state.watermarks.get(&stream).copied().unwrap_or(0);
        for partition in ledger.changed_after(&table, seen) {
            if let Some(d) = partition.first().and_then(|v| v.parse::<NaiveDate>().ok()) {
                changed.insert(d);
            }
        }
        // Up to the last batch published whole before the session opens (it reads at least
        // those); the days of later batches, read now or not, are rebuilt again next time.
        let through = ledger.published_through();
        if through > seen {
            state.watermarks.insert(stream, through);
        }
    }
    // Inputs published by other jobs: the days whose partition has a newer version than seen
    // (read before the session opens, which reads the same snapshot or a newer one).
    for (input, parts) in changes.published {
        let seen = state.versions.get(&input).cloned();
        let newer = |v: &str| seen.as_ref().is_none_or(|s| (v.len(), v) > (s.len(), s.as_str()));
        let mut newest = seen.clone();
        for p in parts {
            let Some(v) = crate::catalog::layout::version_of(&p.location) else { continue };
            if !newer(&v) {
                continue;
            }
            if let Some(d) = p.values.first().and_then(|v| v.parse::<NaiveDate>().ok()) {
                changed.insert(d);
            }
            if newest.as_ref().is_none_or(|n| (v.len(), v.as_str()) > (n.len(), n.as_str())) {
                newest = Some(v);
            }
        }
        if let Some(n) = newest {
            state.versions.insert(input, n);
        }
    }
    if sj.cumulative {
        return cumulative_days(state, changed, as_of, force);
    }
    if let Some(days) = force {
        // A backfill rebuilds the days asked for; what changed stays pending for the next run.
        state.pending = changed;
        return (days.to_vec(), state);
    }
    let (now, later): (Vec<NaiveDate>, Vec<NaiveDate>) = changed.into_iter().partition(|d| *d <= as_of);
    state.pending = later.into_iter().collect();
    (now, state)
}

/// The days a cumulative job rebuilds: from the earliest changed day (or the day after the
/// newest one built) through the as-of date, or through the newest day built when that is later
/// (each day's state feeds the next). A backfill's days extend the same way.
fn cumulative_days(
    mut state: IncrementalState,
    mut changed: BTreeSet<NaiveDate>,
    as_of: NaiveDate,
    force: Option<&[NaiveDate]>,
) -> (Vec<NaiveDate>, IncrementalState) {
    if let Some(days) = force {
        changed.extend(days.iter().copied());
    }
    let end = state.built_through.map_or(as_of, |b| b.max(as_of));
    let (now, later): (BTreeSet<NaiveDate>, BTreeSet<NaiveDate>) = changed.into_iter().partition(|d| *d <= end);
    state.pending = later;
    let next = state.built_through.and_then(|b| b.succ_opt()).filter(|n| *n <= as_of);
    let start = match (now.first().copied(), next) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let days: Vec<NaiveDate> = match start {
        Some(s) => s.iter_days().take_while(|d| *d <= end).collect(),
        None => Vec::new(),
    };
    if let Some(last) = days.last() {
        state.built_through = Some(state.built_through.map_or(*last, |b| b.max(*last)));
    }
    (days, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_days_become_runs_of_consecutive_days() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let days: Vec<NaiveDate> =
            ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-05", "2026-11-30", "2026-12-01"].iter().map(|s| d(s)).collect();
        assert_eq!(
            day_ranges(&days, 31),
            vec![(d("2026-11-01"), d("2026-11-03")), (d("2026-11-05"), d("2026-11-05")), (d("2026-11-30"), d("2026-12-01"))]
        );
        assert_eq!(day_ranges(&days[..3], 2), vec![(d("2026-11-01"), d("2026-11-02")), (d("2026-11-03"), d("2026-11-03"))]);
        assert!(day_ranges(&[], 31).is_empty());
    }

    #[test]
    fn a_cumulative_job_rebuilds_from_the_earliest_change_through_the_newest_day_built() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let span = |v: &[NaiveDate]| (v.first().copied(), v.last().copied(), v.len());
        // First build: from the first day with data through the as-of date.
        let (days, st) = cumulative_days(IncrementalState::default(), [d("2026-11-01")].into(), d("2026-11-05"), None);
        assert_eq!(span(&days), (Some(d("2026-11-01")), Some(d("2026-11-05")), 5));
        assert_eq!(st.built_through, Some(d("2026-11-05")));
        // The next day with nothing new: that day alone.
        let (days, st) = cumulative_days(st, BTreeSet::new(), d("2026-11-06"), None);
        assert_eq!(span(&days), (Some(d("2026-11-06")), Some(d("2026-11-06")), 1));
        // A late event on the 2nd: the 2nd through the newest day built.
        let (days, st) = cumulative_days(st, [d("2026-11-02")].into(), d("2026-11-06"), None);
        assert_eq!(span(&days), (Some(d("2026-11-02")), Some(d("2026-11-06")), 5));
        // An older as-of with a change still rebuilds through the newest day built; a change
        // after it waits.
        let (days, st) = cumulative_days(st, [d("2026-11-03"), d("2026-11-09")].into(), d("2026-11-04"), None);
        assert_eq!(span(&days), (Some(d("2026-11-03")), Some(d("2026-11-06")), 4));
        assert_eq!(st.pending, [d("2026-11-09")].into());
        // Nothing changed, as-of already built: nothing to do.
        let (days, _) = cumulative_days(st, BTreeSet::new(), d("2026-11-06"), None);
        assert!(days.is_empty());
    }
}
