//! `runner status` and `runner history`: reading `runner_runs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::TimestampMillisecondType;
use chrono::{DateTime, Utc};
use datafusion::prelude::{col, lit};

use crate::error::{Error, Result};
use crate::runs::RUNS_TABLE;
use crate::workspace::Workspace;

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
        out.push(RecordBatch::new_empty(crate::runs::schema()));
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
