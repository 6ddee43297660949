//! SQL jobs: run a job's SQL for a logical date, audit the output, publish it atomically.
//!
//! Write-audit-publish. The output of a run is written as a new *version* of each partition it
//! produces (`<table>/<key>=<value>/v=<run id>/part-00000.parquet`), which no catalog reader
//! sees. The job's `[checks]` run on that output; only if all pass does the catalog repoint each
//! partition at its new version (one atomic put per partition; a batch update in Glue). A failed
//! check or a crash leaves the previously published versions in place. Old versions are deleted
//! after a grace period, so a query planned just before the switch still finds its files.
//!
//! Parameters reach the SQL as typed placeholders, never pasted into its text: `$as_of` (DATE,
//! the run's logical date) and, for incremental jobs, `$dt_from` and `$dt_to` (DATEs, inclusive:
//! a run of consecutive event days being rebuilt). One query per run of changed days, not one
//! per day: a first build of 90 days is one or three queries, a daily run usually one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, RecordBatch};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Schema};
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use datafusion::common::ScalarValue;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::catalog::{PartitionMeta, TableMeta};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ingest::encode_parquet;
use crate::job::{Job, SqlJob, WriteMode};
use crate::ledger::Ledger;
use crate::workspace::Workspace;

/// Catalog parameter marking a table whose partitions point at versions.
pub const VERSIONED: &str = "runner.versioned";
/// For an unpartitioned versioned table: the version readers see.
pub const CURRENT_VERSION: &str = "runner.current_version";
/// Old versions are deleted once replaced for this long.
pub const VERSION_GRACE_MINUTES: i64 = 60;
/// Days an incremental job's SQL covers in one query: bounds its memory on a long backfill.
const MAX_DAYS_PER_QUERY: usize = 31;

#[derive(Debug, Clone, Default)]
pub struct SqlRunOptions {
    pub as_of: Option<NaiveDate>,
    pub dry_run: bool,
    /// Rebuild exactly these days (backfill of an incremental job), ignoring what changed.
    pub days: Option<Vec<NaiveDate>>,
}

/// What a SQL job run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SqlSummary {
    pub job: String,
    pub run_id: String,
    pub as_of: String,
    /// Days rebuilt (incremental jobs), or the as-of date.
    pub periods: Vec<String>,
    pub rows_in: u64,
    pub bytes_in: u64,
    pub rows_out: u64,
    pub bytes_out: u64,
    pub files: u64,
    pub partitions: Vec<String>,
    pub dry_run: bool,
    pub seconds: f64,
}

/// Incremental state: the ingest batches already seen, and days changed after an earlier as-of.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IncrementalState {
    /// Stream -> highest ledger seq whose changes were rebuilt.
    watermarks: BTreeMap<String, u64>,
    /// Changed days later than the as-of date of the run that saw them.
    pending: BTreeSet<NaiveDate>,
}

fn state_path(job: &str) -> String {
    format!("_runner/jobs/{job}/state.json")
}

pub async fn run(ws: &Workspace, job: &Job, sj: &SqlJob, opts: &SqlRunOptions, run_id: &str) -> Result<SqlSummary> {
    let started = Instant::now();
    let as_of = opts.as_of.unwrap_or_else(|| Utc::now().date_naive());
    let mut summary = SqlSummary {
        job: job.name.clone(),
        run_id: run_id.to_string(),
        as_of: as_of.to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let ctx = crate::engine::session_for(ws, Some(&sj.inputs)).await?;
    let t_session = started.elapsed();

    // Which periods to build.
    let (periods, next_state) = if sj.incremental {
        let (days, state) = changed_days(ws, job, sj, as_of, opts.days.as_deref()).await?;
        (days, Some(state))
    } else {
        (vec![as_of], None)
    };
    summary.periods = periods.iter().map(|d| d.to_string()).collect();
    let t_periods = started.elapsed();

    // Run the SQL once per run of consecutive days (`$dt_from`..`$dt_to`; a non-incremental
    // job: once, both set to the as-of date). Runs are independent, so two run at once.
    let mut outputs: Vec<RecordBatch> = Vec::new();
    let mut expected_partitions: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut out_schema = None;
    let ranges = day_ranges(&periods, MAX_DAYS_PER_QUERY);
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
        summary.rows_in += rows_in;
        summary.bytes_in += bytes_in;
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
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary); // nothing changed
    };
    let spec = OutputSpec {
        output: sj.output.clone(),
        partition_by: sj.partition_by.clone(),
        mode: sj.mode,
        checks: sj.checks.clone(),
        source: sj.file.display().to_string(),
    };
    publish_output(ws, job, &spec, &schema, outputs, expected_partitions, run_id, opts.dry_run, &mut summary).await?;
    // Where the time went (`-vv`): opening the session reads the catalog, the query reads data.
    let ms = |d: std::time::Duration| d.as_millis();
    tracing::debug!(
        "job `{}`: session {} ms, periods {} ms, query {} ms, audit and publish {} ms",
        job.name,
        ms(t_session),
        ms(t_periods - t_session),
        ms(t_query - t_periods),
        ms(started.elapsed() - t_query)
    );
    if opts.dry_run {
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    if let Some(state) = next_state {
        let body = serde_json::to_vec_pretty(&state).map_err(|e| Error::Internal(e.to_string()))?;
        ws.warehouse.put(&ws.warehouse.child(&state_path(&job.name)), Bytes::from(body)).await?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Where and how a job's output is published.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub output: String,
    pub partition_by: Vec<String>,
    pub mode: WriteMode,
    pub checks: crate::job::Checks,
    /// What produced the output (for messages): the SQL file, the model.
    pub source: String,
}

/// Write-audit-publish of a job's output: splits it into partitions, runs the checks, writes a
/// new version of each partition and repoints the catalog. With `dry_run`, stops after the
/// checks. Fills the summary's rows, partitions, files and bytes out.
#[allow(clippy::too_many_arguments)]
pub async fn publish_output(
    ws: &Workspace,
    job: &Job,
    sj: &OutputSpec,
    schema: &Arc<Schema>,
    outputs: Vec<RecordBatch>,
    expected_partitions: BTreeSet<Vec<String>>,
    run_id: &str,
    dry_run: bool,
    summary: &mut SqlSummary,
) -> Result<()> {
    for name in &sj.partition_by {
        if schema.index_of(name).is_err() {
            return Err(Error::Usage(format!(
                "job `{}`: partition column `{name}` is not in the output of {}",
                job.name, sj.source
            )));
        }
    }
    summary.rows_out = outputs.iter().map(|b| b.num_rows() as u64).sum();

    // Split by partition values.
    let parts = split_partitions(schema, &outputs, &sj.partition_by)?;
    let mut all_parts: BTreeMap<Vec<String>, Vec<RecordBatch>> = parts;
    for e in expected_partitions {
        all_parts.entry(e).or_default();
    }
    summary.partitions = all_parts.keys().map(|v| partition_dir(&sj.partition_by, v)).collect();

    // Audit before anything is written where a reader could see it.
    let started = Instant::now();
    let failed = crate::checks::run(&sj.checks, &outputs);
    if !failed.is_empty() {
        return Err(Error::Failed(format!(
            "job `{}`: quality checks failed, nothing published:\n  - {}",
            job.name,
            failed.join("\n  - ")
        )));
    }
    if dry_run {
        return Ok(());
    }

    // Write: a new version of each partition.
    let file_schema = Arc::new(Schema::new(
        schema.fields().iter().filter(|f| !sj.partition_by.contains(f.name())).cloned().collect::<Vec<_>>(),
    ));
    let table = ws.catalog.table(&sj.output).await?;
    let location = ws.warehouse.join(&sj.output).url;
    let current: HashMap<Vec<String>, String> = match &table {
        Some(_) if !sj.partition_by.is_empty() => {
            ws.catalog.partitions(&sj.output).await?.into_iter().map(|p| (p.values, p.location)).collect()
        }
        _ => HashMap::new(),
    };
    // Each partition's file: encoded on the blocking pool, a few at a time (the writes wait on
    // storage, the encoding on a core).
    let mut writes = Vec::new();
    for (values, batches) in &all_parts {
        let dir = partition_dir(&sj.partition_by, values);
        let (folder, name) = match (sj.mode, current.get(values)) {
            // Append adds a file to the partition's current version.
            (WriteMode::Append, Some(loc)) => (ws.warehouse.relative_url(loc)?, format!("part-{run_id}.parquet")),
            _ => (join_dir(&sj.output, &dir, &format!("v={run_id}")), "part-00000.parquet".to_string()),
        };
        let stripped: Vec<RecordBatch> = batches
            .iter()
            .map(|b| {
                let cols = file_schema
                    .fields()
                    .iter()
                    .map(|f| b.column(b.schema().index_of(f.name()).expect("column")))
                    .cloned()
                    .collect();
                RecordBatch::try_new(file_schema.clone(), cols).map_err(Error::arrow("dropping partition columns"))
            })
            .collect::<Result<_>>()?;
        writes.push((values.clone(), folder, name, stripped));
    }
    let written: Vec<Result<(PartitionMeta, u64)>> = futures::stream::iter(writes)
        .map(|(values, folder, name, stripped)| {
            let fs = file_schema.clone();
            async move {
                let data = tokio::task::spawn_blocking(move || -> Result<Bytes> {
                    let all = arrow::compute::concat_batches(&fs, &stripped).map_err(Error::arrow("concatenating output"))?;
                    encode_parquet(&all)
                })
                .await
                .map_err(|e| Error::Internal(format!("parquet task failed: {e}")))??;
                let len = data.len() as u64;
                ws.warehouse.put(&ws.warehouse.child(&format!("{folder}/{name}")), data).await?;
                Ok((PartitionMeta { values, location: ws.warehouse.join(&folder).url }, len))
            }
        })
        .buffered(4)
        .collect()
        .await;
    let t_written = started.elapsed();
    let mut new_parts = Vec::new();
    for w in written {
        let (part, len) = w?;
        summary.bytes_out += len;
        summary.files += 1;
        new_parts.push(part);
    }

    failpoint::hit("sql.before_publish");

    // Publish: the table definition, then each partition points at its new version.
    let types: Vec<(&str, DataType)> = sj
        .partition_by
        .iter()
        .map(|k| (k.as_str(), schema.field_with_name(k).map(|f| f.data_type().clone()).unwrap_or(DataType::Utf8)))
        .collect();
    let mut meta = TableMeta::from_arrow(&sj.output, &job.description, location, &file_schema, &types)?;
    meta.parameters.insert(VERSIONED.into(), "true".into());
    meta.parameters.insert("runner.job".into(), job.name.clone());
    if sj.partition_by.is_empty() {
        meta.parameters.insert(CURRENT_VERSION.into(), run_id.to_string());
    }
    ws.catalog.put_table(&meta).await?;
    if !sj.partition_by.is_empty() {
        ws.catalog.put_partitions(&sj.output, &new_parts).await?;
        if sj.mode == WriteMode::ReplaceTable {
            let stale: Vec<Vec<String>> = current.keys().filter(|v| !all_parts.contains_key(*v)).cloned().collect();
            ws.catalog.delete_partitions(&sj.output, &stale).await?;
        }
    }
    let t_published = started.elapsed();
    collect_replaced_versions(ws, &sj.output, chrono::Duration::minutes(VERSION_GRACE_MINUTES)).await?;
    tracing::debug!(
        "job `{}`: {} partition(s) audited and written in {} ms, published in {} ms, old versions collected in {} ms",
        job.name,
        summary.partitions.len(),
        t_written.as_millis(),
        (t_published - t_written).as_millis(),
        (started.elapsed() - t_published).as_millis()
    );
    Ok(())
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
        Error::Usage(format!("{}: {}", sj.file.display(), crate::sqlcheck::describe_for_job(&sj.sql, &e, job_file)))
    })?;
    let df = df.with_param_values(params(as_of, days)).map_err(Error::df(ctx_err("binding parameters of")))?;
    let plan = df.create_physical_plan().await.map_err(Error::df(ctx_err("planning")))?;
    let schema = plan.schema();
    let batches = collect(plan.clone(), ctx.task_ctx()).await.map_err(Error::df(ctx_err("running")))?;
    let (rows, bytes) = scan_metrics(plan.as_ref());
    Ok((batches, schema, rows, bytes))
}

/// The named parameters every job's SQL may use.
/// Days since the Unix epoch: Arrow's `Date32`.
pub fn date32(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

pub fn params(as_of: NaiveDate, days: (NaiveDate, NaiveDate)) -> datafusion::common::ParamValues {
    let date = |d: NaiveDate| ScalarValue::Date32(Some(date32(d)));
    let map: HashMap<String, ScalarValue> =
        [("as_of".to_string(), date(as_of)), ("dt_from".to_string(), date(days.0)), ("dt_to".to_string(), date(days.1))].into();
    map.into()
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

/// Groups output rows by their partition values (rendered as in Hive paths).
fn split_partitions(
    schema: &Schema,
    batches: &[RecordBatch],
    keys: &[String],
) -> Result<BTreeMap<Vec<String>, Vec<RecordBatch>>> {
    let mut out: BTreeMap<Vec<String>, Vec<RecordBatch>> = BTreeMap::new();
    if keys.is_empty() {
        out.insert(Vec::new(), batches.to_vec());
        return Ok(out);
    }
    let idx: Vec<usize> = keys.iter().map(|k| schema.index_of(k).expect("checked")).collect();
    for b in batches {
        // Sort the rows by their partition values, then cut the sorted batch into runs of equal
        // values: no key is built per row, only one per run.
        let sort: Vec<arrow::compute::SortColumn> =
            idx.iter().map(|i| arrow::compute::SortColumn { values: b.column(*i).clone(), options: None }).collect();
        let order = arrow::compute::lexsort_to_indices(&sort, None).map_err(Error::arrow("splitting partitions"))?;
        let sorted = take_record_batch(b, &order).map_err(Error::arrow("splitting partitions"))?;
        let keys_sorted: Vec<arrow::array::ArrayRef> = idx.iter().map(|i| sorted.column(*i).clone()).collect();
        let ranges = arrow::compute::partition(&keys_sorted).map_err(Error::arrow("splitting partitions"))?.ranges();
        for r in ranges {
            let key: Vec<String> = keys_sorted
                .iter()
                .map(|c| {
                    // The value as Hive paths spell it (a DATE as 2026-11-20).
                    let one = arrow::compute::cast(&c.slice(r.start, 1), &DataType::Utf8)
                        .map_err(Error::arrow("rendering partition values"))?;
                    let s = one.as_any().downcast_ref::<arrow::array::StringArray>().expect("utf8");
                    Ok(if s.is_null(0) { String::new() } else { s.value(0).to_string() })
                })
                .collect::<Result<_>>()?;
            out.entry(key).or_default().push(sorted.slice(r.start, r.end - r.start));
        }
    }
    Ok(out)
}

fn partition_dir(keys: &[String], values: &[String]) -> String {
    keys.iter().zip(values).map(|(k, v)| format!("{k}={}", crate::catalog::hive_escape(v))).collect::<Vec<_>>().join("/")
}

fn join_dir(a: &str, b: &str, c: &str) -> String {
    [a, b, c].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join("/")
}

/// Days to rebuild: those whose input partitions changed since the last successful run, up
/// to the as-of date (later ones wait for a later as-of), or exactly `force` for a backfill.
async fn changed_days(
    ws: &Workspace,
    job: &Job,
    sj: &SqlJob,
    as_of: NaiveDate,
    force: Option<&[NaiveDate]>,
) -> Result<(Vec<NaiveDate>, IncrementalState)> {
    let mut state: IncrementalState = match ws.warehouse.get_opt(&ws.warehouse.child(&state_path(&job.name))).await? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| Error::Failed(format!("job `{}` state is corrupt ({e})", job.name)))?,
        None => IncrementalState::default(),
    };
    let mut changed: BTreeSet<NaiveDate> = std::mem::take(&mut state.pending);
    for (stream, sc) in &ws.contract.streams {
        if !sj.inputs.contains(&sc.table) {
            continue;
        }
        let seen = state.watermarks.get(stream).copied().unwrap_or(0);
        let ledger = Ledger::new(ws.warehouse.clone(), stream).load_after(seen).await?;
        // Only commits after `seen` were read. A compaction rewrites files without changing a
        // row: nothing to rebuild.
        for c in ledger.commits.iter().filter(|c| !c.is_compaction()) {
            for f in c.files.iter().filter(|f| f.table == sc.table) {
                if let Some(d) = f.partition.first().and_then(|v| v.parse::<NaiveDate>().ok()) {
                    changed.insert(d);
                }
            }
        }
        if let Some(last) = ledger.commits.last() {
            state.watermarks.insert(stream.clone(), last.seq);
        }
    }
    if let Some(days) = force {
        // A backfill rebuilds the days asked for; what changed stays pending for the next run.
        state.pending = changed;
        state.watermarks = state.watermarks.clone();
        return Ok((days.to_vec(), state));
    }
    let (now, later): (Vec<NaiveDate>, Vec<NaiveDate>) = changed.into_iter().partition(|d| *d <= as_of);
    state.pending = later.into_iter().collect();
    Ok((now, state))
}

/// Deletes the files of partition versions that are no longer current, once the version that
/// replaced them has been published for `grace` (queries planned before the switch may still
/// read them) and the files themselves are that old (a version being written by a run in
/// progress is young). Returns how many files it deleted.
pub async fn collect_replaced_versions(ws: &Workspace, table: &str, grace: chrono::Duration) -> Result<u64> {
    let Some(meta) = ws.catalog.table(table).await? else { return Ok(0) };
    let mut current: BTreeSet<String> = BTreeSet::new();
    for p in ws.catalog.partitions(table).await? {
        current.insert(ws.warehouse.relative_url(&p.location)?.trim_end_matches('/').to_string());
    }
    if let Some(v) = meta.parameters.get(CURRENT_VERSION) {
        current.insert(format!("{table}/v={v}"));
    }
    let objects = ws.warehouse.list(table).await?;
    // Version folder -> its files.
    let mut folders: BTreeMap<String, Vec<&object_store::ObjectMeta>> = BTreeMap::new();
    for o in &objects {
        let Some((folder, _)) = ws.warehouse.relative(&o.location).and_then(|r| r.rsplit_once('/')) else { continue };
        if version_of(folder).is_some() {
            folders.entry(folder.to_string()).or_default().push(o);
        }
    }
    let partition_of = |folder: &str| folder.rsplit_once("/v=").map(|(p, _)| p.to_string()).unwrap_or_default();
    // When each partition's current version was published: its oldest file.
    let published_at: BTreeMap<String, chrono::DateTime<Utc>> = folders
        .iter()
        .filter(|(f, _)| current.contains(*f))
        .filter_map(|(f, files)| files.iter().map(|o| o.last_modified).min().map(|t| (partition_of(f), t)))
        .collect();
    let cutoff = Utc::now() - grace;
    let mut removed = 0;
    for (folder, files) in &folders {
        if current.contains(folder) {
            continue;
        }
        // A partition dropped from the catalog (replace_table) has no current version.
        let replaced_long_ago = published_at.get(&partition_of(folder)).is_none_or(|t| *t < cutoff);
        if replaced_long_ago && files.iter().all(|o| o.last_modified < cutoff) {
            for o in files {
                ws.warehouse.delete(&o.location).await?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The `v=<id>` segment of a path or URL.
pub fn version_of(path: &str) -> Option<String> {
    path.split('/').find_map(|s| s.strip_prefix("v=")).map(str::to_string)
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
}
