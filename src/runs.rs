//! Run history: every run of every job, as the table `runner_runs`.
//!
//! One small Parquet file per run under `runner_runs/dt=<start date>/run-<run id>.parquet`,
//! written with a single atomic put and registered like any other partition, so `runner query`,
//! `runner status` and `runner history` (and Athena, later) read it with plain SQL.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};

use crate::catalog::{PartitionMeta, TableMeta};
use crate::error::Result;
use crate::ingest::encode_parquet;
use crate::workspace::Workspace;

pub const RUNS_TABLE: &str = "runner_runs";

#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub job: String,
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
    pub error: Option<String>,
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
    ]))
}

/// Appends one run to `runner_runs`.
pub async fn record(ws: &Workspace, r: &RunRecord) -> Result<()> {
    let t = TableMeta::from_arrow(
        RUNS_TABLE,
        "Every run of every job: logical time, start, end, status, rows and bytes in and out, files, error",
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
        ],
    )
    .map_err(crate::Error::arrow("building the run record"))?;
    let date = r.started_at.format("%Y-%m-%d").to_string();
    let dir = format!("{RUNS_TABLE}/dt={date}");
    ws.warehouse.put(&ws.warehouse.child(&format!("{dir}/run-{}.parquet", r.run_id)), encode_parquet(&batch)?).await?;
    ws.catalog.add_partitions(RUNS_TABLE, &[PartitionMeta { values: vec![date], location: ws.warehouse.join(&dir).url }]).await
}
