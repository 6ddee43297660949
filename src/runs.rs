//! Run history: every run of every job, as the table `runner_runs`, and `runner status` and
//! `runner history` over it.
//!
//! One small Parquet file per run under `runner_runs/dt=<start date>/run-<run id>.parquet`,
//! written with a single atomic put and registered like any other partition, so `runner query`,
//! `runner status` and `runner history` (and Athena) read it with plain SQL. Every kind of job is
//! recorded the same way, from its [`JobMetrics`]: the common counts in columns, the kind's own
//! counts as JSON in `details`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use chrono::{DateTime, Utc};
use datafusion::prelude::{col, lit};

use crate::catalog::{PartitionMeta, TableMeta};
use crate::error::{Error, Result};
use crate::job::JobMetrics;
use crate::store::encode_parquet;
use crate::workspace::Workspace;

pub const RUNS_TABLE: &str = "runner_runs";

#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub job: String,
    /// `ingest`, `sql`, `export`, `compact`, `score`.
    pub kind: String,
    pub run_id: String,
    /// The logical time the run was for (as-of date or trigger time), ISO 8601.
    pub logical_time: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// `succeeded` or `failed`.
    pub status: String,
    pub rows_in: i64,
    pub bytes_in: i64,
    pub rows_out: i64,
    pub bytes_out: i64,
    pub files: i64,
    /// Partitions written, e.g. `dt=2026-11-20 dt=2026-11-21`.
    pub partitions: String,
    /// Periods covered (days an incremental job rebuilt, the as-of date), space-separated.
    pub periods: String,
    /// The kind's own counts, as JSON (`{"objects": 12, "valid": 36, ...}`).
    pub details: String,
    pub error: Option<String>,
}

impl RunRecord {
    /// The record of a run that ended with `result`, started at `started_at`.
    pub fn of(
        job: &str,
        kind: &str,
        run_id: &str,
        logical_time: String,
        started_at: DateTime<Utc>,
        result: &Result<JobMetrics>,
    ) -> RunRecord {
        let mut r = RunRecord {
            job: job.to_string(),
            kind: kind.to_string(),
            run_id: run_id.to_string(),
            logical_time,
            started_at,
            ended_at: Utc::now(),
            ..Default::default()
        };
        match result {
            Ok(m) => {
                r.status = "succeeded".into();
                r.logical_time = m.logical_time.clone();
                r.rows_in = m.rows_in as i64;
                r.bytes_in = m.bytes_in as i64;
                r.rows_out = m.rows_out as i64;
                r.bytes_out = m.bytes_out as i64;
                r.files = m.files as i64;
                r.partitions = m.partitions.join(" ");
                r.periods = m.periods.join(" ");
                r.details = details_json(m);
                r.error = m.warning();
            }
            Err(e) => {
                r.status = "failed".into();
                r.error = Some(e.to_string());
            }
        }
        r
    }
}

/// The kind's own counts of a run: its JSON without the fields every kind has.
fn details_json(m: &JobMetrics) -> String {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        for k in [
            "job",
            "run_id",
            "logical_time",
            "dry_run",
            "rows_in",
            "bytes_in",
            "rows_out",
            "bytes_out",
            "files",
            "partitions",
            "periods",
            "seconds",
            "kind",
        ] {
            o.remove(k);
        }
    }
    v.to_string()
}

pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("logical_time", DataType::Utf8, false),
        Field::new("started_at", ts.clone(), false),
        Field::new("ended_at", ts, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows_in", DataType::Int64, false),
        Field::new("bytes_in", DataType::Int64, false),
        Field::new("rows_out", DataType::Int64, false),
        Field::new("bytes_out", DataType::Int64, false),
        Field::new("files", DataType::Int64, false),
        Field::new("partitions", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        // Added after the first release: older run files read these as NULL.
        Field::new("kind", DataType::Utf8, true),
        Field::new("periods", DataType::Utf8, true),
        Field::new("details", DataType::Utf8, true),
    ]))
}

/// Appends one run to `runner_runs`.
pub async fn record(ws: &Workspace, r: &RunRecord) -> Result<()> {
    let t = TableMeta::from_arrow(
        RUNS_TABLE,
        "Every run of every job: kind, logical time, start, end, status, rows and bytes in and out, files, partitions, periods, the kind's own counts, error",
        ws.warehouse.join(RUNS_TABLE).url,
        &schema(),
        &[("dt", DataType::Date32)],
    )?;
    ws.catalog.put_table(&t).await?;
    let ts =
        |d: DateTime<Utc>| Arc::new(TimestampMillisecondArray::from(vec![d.timestamp_millis()]).with_timezone("UTC")) as ArrayRef;
    let s = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let i = |v: i64| Arc::new(Int64Array::from(vec![v])) as ArrayRef;
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            s(&r.job),
            s(&r.run_id),
            s(&r.logical_time),
            ts(r.started_at),
            ts(r.ended_at),
            s(&r.status),
            i(r.rows_in),
            i(r.bytes_in),
            i(r.rows_out),
            i(r.bytes_out),
            i(r.files),
            s(&r.partitions),
            Arc::new(StringArray::from(vec![r.error.as_deref()])),
            s(&r.kind),
            s(&r.periods),
            s(&r.details),
        ],
    )
    .map_err(Error::arrow("building the run record"))?;
    let date = r.started_at.format("%Y-%m-%d").to_string();
    let dir = format!("{RUNS_TABLE}/dt={date}");
    ws.warehouse.put(&ws.warehouse.child(&format!("{dir}/run-{}.parquet", r.run_id)), encode_parquet(&batch)?).await?;
    ws.catalog.add_partitions(RUNS_TABLE, &[PartitionMeta { values: vec![date], location: ws.warehouse.join(&dir).url }]).await
}

async fn runs(ws: &Workspace, job: Option<&str>) -> Result<Vec<RecordBatch>> {
    if ws.catalog.table(RUNS_TABLE).await?.is_none() {
        return Ok(Vec::new());
    }
    let ctx = crate::engine::session(ws).await?;
    let mut df = ctx.table(RUNS_TABLE).await.map_err(Error::df("reading runner_runs"))?;
    if let Some(j) = job {
        df = df.filter(col("job").eq(lit(j))).map_err(Error::df("reading runner_runs"))?;
    }
    let batches = df
        .sort(vec![col("started_at").sort(false, false)])
        .map_err(Error::df("reading runner_runs"))?
        .collect()
        .await
        .map_err(Error::df("reading runner_runs"))?;
    crate::engine::plain_types(batches)
}

/// The runs of `job`, newest first.
pub async fn history(ws: &Workspace, job: &str, limit: usize) -> Result<Vec<RecordBatch>> {
    let batches = runs(ws, Some(job)).await?;
    let mut left = limit;
    let mut out = Vec::new();
    for b in batches {
        let keep: Vec<usize> = (0..b.num_columns()).filter(|i| b.schema().field(*i).name() != "dt").collect();
        let b = b.project(&keep).map_err(Error::arrow("formatting history"))?;
        let n = b.num_rows().min(left);
        out.push(b.slice(0, n));
        left -= n;
    }
    if out.is_empty() {
        out.push(RecordBatch::new_empty(schema()));
    }
    Ok(out)
}

/// One row per job: its last run, its last success and how long ago that was.
pub async fn status(ws: &Workspace) -> Result<RecordBatch> {
    #[derive(Default)]
    struct Row {
        last_status: String,
        last_run: String,
        logical_time: String,
        last_success: Option<DateTime<Utc>>,
        error: String,
    }
    let mut rows: BTreeMap<String, Row> = ws.jobs.jobs.keys().map(|k| (k.clone(), Row::default())).collect();
    for b in runs(ws, None).await? {
        let get = |n: &str| b.column(b.schema().index_of(n).expect("runner_runs column")).clone();
        let (job, status, logical, ended, error) =
            (get("job"), get("status"), get("logical_time"), get("ended_at"), get("error"));
        let (job, status, logical, error) =
            (job.as_string::<i32>(), status.as_string::<i32>(), logical.as_string::<i32>(), error.as_string::<i32>());
        let ended = ended.as_primitive::<TimestampMillisecondType>();
        // Newest first: the first row seen for a job is its last run.
        for i in 0..b.num_rows() {
            let Some(r) = rows.get_mut(job.value(i)) else { continue };
            let at = DateTime::<Utc>::from_timestamp_millis(ended.value(i)).unwrap_or_default();
            if r.last_status.is_empty() {
                r.last_status = status.value(i).to_string();
                r.last_run = at.format("%Y-%m-%d %H:%M:%S").to_string();
                r.logical_time = logical.value(i).to_string();
                r.error = if error.is_null(i) { String::new() } else { error.value(i).lines().next().unwrap_or("").to_string() };
            }
            if r.last_success.is_none() && status.value(i) == "succeeded" {
                r.last_success = Some(at);
            }
        }
    }
    let now = Utc::now();
    let col = |f: &dyn Fn(&Row) -> String| Arc::new(StringArray::from_iter_values(rows.values().map(f))) as ArrayRef;
    RecordBatch::try_from_iter(vec![
        ("job", Arc::new(StringArray::from_iter_values(rows.keys())) as ArrayRef),
        ("last_status", col(&|r| if r.last_status.is_empty() { "never run".into() } else { r.last_status.clone() })),
        ("last_run", col(&|r| r.last_run.clone())),
        ("logical_time", col(&|r| r.logical_time.clone())),
        ("fresh_as_of", col(&|r| r.last_success.map(|t| ago(now - t)).unwrap_or_else(|| "-".into()))),
        ("error", col(&|r| r.error.clone())),
    ])
    .map_err(Error::arrow("formatting status"))
}

fn ago(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h {}m ago", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h ago", s / 86400, s % 86400 / 3600),
    }
}
