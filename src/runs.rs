//! Run history: every run of every job, as the table `runner_runs`, and `runner status` and
//! `runner history` over it.
//!
//! Every kind of job is recorded the same way, from its [`JobMetrics`]: the common counts in
//! columns, the kind's own counts as JSON in `details`. A run's record is one small Parquet
//! file committed through the table's own ledger (`_runner/ledger/runner_runs/`), exactly like an
//! ingest batch, so the compaction job merges a day's records into one file atomically for
//! readers and ledger checkpoints keep reading that ledger cheap.
//!
//! `runner status` and `runner history` read a bounded amount however long the history: each
//! job's last [`RECENT_RUNS`] runs and its last success are kept in one small object per job
//! (`_runner/runs/recent/<job>.json`); only `history --limit` beyond that reads the table.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::DataType;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::prelude::{col, lit};
use serde::{Deserialize, Serialize};

use crate::catalog::TableMeta;
use crate::catalog::layout::{VERSIONED, day_folder};
use crate::error::{Error, Result};
use crate::job::JobMetrics;
use crate::ledger::{Attempt, Commit, CommitKind, FileEntry, Ledger};
use crate::publish::commit::{Committed, Committer, retention};
pub use crate::schema::{RUNS_TABLE, runs_schema as schema};
use crate::store::encode_parquet;
use crate::workspace::Workspace;

/// Runs per job kept where `status` and `history` read them.
pub const RECENT_RUNS: usize = 100;
const RECENT_DIR: &str = "_runner/runs/recent";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub job: String,
    /// `ingest`, `sql`, `export`, `compact`, `score`.
    pub kind: String,
    pub run_id: String,
    /// The logical time the run was for (as-of date or trigger time), ISO 8601.
    pub logical_time: String,
    #[serde(with = "millis")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "millis")]
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
    /// Where the job's SQL ran: `local`, or `ballista df://host:port` (`[engine]`). Runs
    /// recorded before the column existed read as empty.
    #[serde(default)]
    pub engine: String,
}

/// Times as epoch milliseconds in the recent-runs objects.
mod millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.timestamp_millis())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let ms = i64::deserialize(d)?;
        DateTime::from_timestamp_millis(ms).ok_or_else(|| serde::de::Error::custom(format!("{ms} is not a time")))
    }
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
                r.status = if m.skipped.is_some() { "skipped".into() } else { "succeeded".into() };
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

/// Records as `runner_runs` rows (its file schema, without `dt`).
pub fn to_batch(records: &[RunRecord]) -> Result<RecordBatch> {
    let ts = |f: fn(&RunRecord) -> DateTime<Utc>| {
        Arc::new(
            TimestampMillisecondArray::from_iter_values(records.iter().map(|r| f(r).timestamp_millis())).with_timezone("UTC"),
        ) as ArrayRef
    };
    let s = |f: fn(&RunRecord) -> &str| Arc::new(StringArray::from_iter_values(records.iter().map(f))) as ArrayRef;
    let i = |f: fn(&RunRecord) -> i64| Arc::new(Int64Array::from_iter_values(records.iter().map(f))) as ArrayRef;
    RecordBatch::try_new(
        schema(),
        vec![
            s(|r| &r.job),
            s(|r| &r.run_id),
            s(|r| &r.logical_time),
            ts(|r| r.started_at),
            ts(|r| r.ended_at),
            s(|r| &r.status),
            i(|r| r.rows_in),
            i(|r| r.bytes_in),
            i(|r| r.rows_out),
            i(|r| r.bytes_out),
            i(|r| r.files),
            s(|r| &r.partitions),
            Arc::new(StringArray::from_iter(records.iter().map(|r| r.error.as_deref()))),
            s(|r| &r.kind),
            s(|r| &r.periods),
            s(|r| &r.details),
            s(|r| &r.engine),
        ],
    )
    .map_err(Error::arrow("building run records"))
}

/// The checkpoint of the run history ledger whose clean-up this process saw finished.
static CLEANED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, u64>>> =
    std::sync::LazyLock::new(Default::default);

/// At most this many run records between two checkpoints of the run history ledger.
const RUNS_CHECKPOINT_EVERY: u64 = 16;

/// Appends one run to `runner_runs` (a commit in its ledger) and to the job's recent runs.
pub async fn record(ws: &Workspace, r: &RunRecord) -> Result<()> {
    // The table and the job's recent runs are separate objects: written at once.
    futures::future::try_join(append(ws, std::slice::from_ref(r)), remember(ws, r)).await.map(|_| ())
}

/// Runs skipped as up to date, kept for one commit at the end of the run ([`flush_skipped`]):
/// a no-op `run --all` writes one run-history file, not one per job.
static SKIPPED: std::sync::Mutex<Vec<RunRecord>> = std::sync::Mutex::new(Vec::new());

/// Records `r`, a run skipped as up to date, with the other skips of this run
/// ([`flush_skipped`]).
pub fn defer_skipped(r: RunRecord) {
    SKIPPED.lock().expect("skipped runs").push(r);
}

/// Appends the deferred skips to `runner_runs`, one commit per start date, and to their jobs'
/// recent runs.
pub async fn flush_skipped(ws: &Workspace) -> Result<()> {
    let pending = std::mem::take(&mut *SKIPPED.lock().expect("skipped runs"));
    let mut by_day: BTreeMap<String, Vec<RunRecord>> = BTreeMap::new();
    for r in pending {
        by_day.entry(r.started_at.format("%Y-%m-%d").to_string()).or_default().push(r);
    }
    for rs in by_day.values() {
        append(ws, rs).await?;
        // A job's recent runs are one object, read and rewritten: its records one after the
        // other (a backfill skips one job many times), the jobs side by side.
        let mut by_job: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
        for r in rs {
            by_job.entry(r.job.as_str()).or_default().push(r);
        }
        futures::future::try_join_all(by_job.into_values().map(|rs| async move {
            for r in rs {
                remember(ws, r).await?;
            }
            Ok::<_, Error>(())
        }))
        .await?;
    }
    Ok(())
}

/// One append at a time in a process: the jobs of a run record side by side (each while the
/// next job runs), and two appends of one process racing for a seq would only re-plan.
static APPENDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Appends runs that started on the same day to `runner_runs`: one file, one commit.
async fn append(ws: &Workspace, rs: &[RunRecord]) -> Result<()> {
    let Some(r) = rs.first() else { return Ok(()) };
    let _one_at_a_time = APPENDING.lock().await;
    let mut t = TableMeta::from_arrow(
        RUNS_TABLE,
        "Every run of every job: kind, logical time, start, end, status, rows and bytes in and out, files, partitions, periods, the kind's own counts, error, engine",
        ws.warehouse.join(RUNS_TABLE).url,
        &schema(),
        &[("dt", DataType::Date32)],
    )?;
    t.parameters.insert(VERSIONED.into(), "true".into());
    ws.catalog.put_table(&t).await?;
    let data = encode_parquet(&to_batch(rs)?)?;
    let date = r.started_at.format("%Y-%m-%d").to_string();
    let ledger = Ledger::new(ws.warehouse.clone(), RUNS_TABLE);
    // Run records are small and every job writes one: a checkpoint every few of them keeps the
    // records a new process reads (one round trip each) few.
    let mut settings = ws.config.ingest.clone();
    settings.checkpoint_every = settings.checkpoint_every.min(RUNS_CHECKPOINT_EVERY);
    // `load` reads the ledger once per process, then only the records after it; the committer
    // keeps the states it makes for the next record the same way.
    let mut committer = Committer::new(ws, &ledger, settings, &r.run_id, "run record");
    let (mut state, _) = committer.load().await?;
    loop {
        // Once per checkpoint and process: the clean-up of a checkpoint this process already
        // cleaned after would only read its marker again.
        if CLEANED.lock().expect("run ledger cache").get(&ws.warehouse.url) != Some(&state.base_seq()) {
            let done = ledger.clean_up(&state, &r.run_id, retention(&ws.config.ingest)).await?;
            if done.finished {
                CLEANED.lock().expect("run ledger cache").insert(ws.warehouse.url.clone(), state.base_seq());
            }
        }
        let attempt = Attempt::new(state.next_seq());
        let values = vec![date.clone()];
        let dir = day_folder(RUNS_TABLE, &date, Some(state.version(RUNS_TABLE, &values)));
        let name = format!("run-{}.parquet", r.run_id);
        let staged = format!("{}/{name}", ledger.staging_prefix(&attempt));
        ws.warehouse.put(&ws.warehouse.child(&staged), data.clone()).await?;
        let commit = Commit {
            stream: RUNS_TABLE.to_string(),
            seq: attempt.seq,
            attempt: attempt.id.clone(),
            run_id: r.run_id.clone(),
            committed_at: Utc::now().to_rfc3339(),
            files: vec![FileEntry {
                table: RUNS_TABLE.to_string(),
                partition: values,
                staged: staged.clone(),
                path: format!("{dir}/{name}"),
                rows: rs.len() as u64,
                bytes: data.len() as u64,
            }],
            kind: CommitKind::Append,
        };
        // Another job's record may take the seq (jobs run side by side): plan again. A re-plan
        // means no commit names this attempt's file (the seq is another attempt's, read back,
        // or this one never committed), so it goes now: only compaction collects garbage in
        // this ledger, and a warehouse without it would keep every lost race.
        match committer.commit(state, &attempt, commit).await? {
            Committed::Done(..) => break,
            Committed::Replan(next, _) => {
                ledger.discard_staging(&attempt, vec![ws.warehouse.child(&staged)]).await;
                state = next;
            }
        }
    }
    Ok(())
}

/// The last runs of one job, newest first, and its last success.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Recent {
    runs: Vec<RunRecord>,
    last_success: Option<RunRecord>,
}

fn recent_path(job: &str) -> String {
    format!("{RECENT_DIR}/{}.json", crate::catalog::hive_escape(job))
}

async fn recent(ws: &Workspace, job: &str) -> Result<Option<Recent>> {
    let Some(b) = ws.warehouse.get_opt(&ws.warehouse.child(&recent_path(job))).await? else { return Ok(None) };
    // Unreadable (written by hand?): the table still has every run.
    Ok(serde_json::from_slice(&b).ok())
}

/// Adds a run to its job's recent runs. Two runs of one job recording at the same instant
/// (without a lease) may keep only one of them here; `runner_runs` has both.
async fn remember(ws: &Workspace, r: &RunRecord) -> Result<()> {
    let mut rec = recent(ws, &r.job).await?.unwrap_or_default();
    rec.runs.retain(|x| x.run_id != r.run_id);
    rec.runs.push(r.clone());
    rec.runs.sort_by_key(|r| std::cmp::Reverse(r.started_at));
    rec.runs.truncate(RECENT_RUNS);
    if r.status == "succeeded" && rec.last_success.as_ref().is_none_or(|s| s.ended_at <= r.ended_at) {
        rec.last_success = Some(r.clone());
    }
    let body = serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?;
    ws.warehouse.put(&ws.warehouse.child(&recent_path(&r.job)), Bytes::from(body)).await
}

/// Every run of `job` from the table, newest first (what `history` reads past the recent runs).
async fn from_table(ws: &Workspace, job: &str, limit: usize) -> Result<Vec<RecordBatch>> {
    if ws.catalog.table(RUNS_TABLE).await?.is_none() {
        return Ok(Vec::new());
    }
    let ctx = crate::engine::local_session_for(ws, Some(&[RUNS_TABLE.to_string()])).await?;
    let df = ctx.table(RUNS_TABLE).await.map_err(Error::df("reading runner_runs"))?;
    let columns: Vec<_> = schema().fields().iter().map(|f| col(format!("\"{}\"", f.name()))).collect();
    let batches = df
        .filter(col("job").eq(lit(job)))
        .and_then(|df| df.sort(vec![col("started_at").sort(false, false)]))
        .and_then(|df| df.limit(0, Some(limit)))
        .and_then(|df| df.select(columns))
        .map_err(Error::df("reading runner_runs"))?
        .collect()
        .await
        .map_err(Error::df("reading runner_runs"))?;
    crate::engine::plain_types(batches)
}

/// The runs of `job`, newest first: from its recent runs (one small read) when `limit` is
/// within them, else from the table.
pub async fn history(ws: &Workspace, job: &str, limit: usize) -> Result<Vec<RecordBatch>> {
    let out = match recent(ws, job).await? {
        Some(rec) if limit <= RECENT_RUNS => vec![to_batch(&rec.runs[..rec.runs.len().min(limit)])?],
        _ => from_table(ws, job, limit).await?,
    };
    if out.is_empty() {
        return Ok(vec![RecordBatch::new_empty(schema())]);
    }
    Ok(out)
}

/// One row per job: its last run, its last success and how long ago that was. Reads one small
/// object per job.
pub async fn status(ws: &Workspace) -> Result<RecordBatch> {
    #[derive(Default)]
    struct Row {
        last_status: String,
        last_run: String,
        logical_time: String,
        last_success: Option<DateTime<Utc>>,
        engine: String,
        error: String,
    }
    let names: Vec<&String> = ws.jobs.jobs.keys().collect();
    let recents = futures::future::try_join_all(names.iter().map(|j| recent(ws, j))).await?;
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (job, rec) in names.into_iter().zip(recents) {
        let mut row = Row::default();
        if let Some(rec) = rec {
            if let Some(last) = rec.runs.first() {
                row.last_status = last.status.clone();
                row.last_run = last.ended_at.format("%Y-%m-%d %H:%M:%S").to_string();
                row.logical_time = last.logical_time.clone();
                row.engine = last.engine.clone();
                row.error = last.error.as_deref().and_then(|e| e.lines().next()).unwrap_or("").to_string();
            }
            row.last_success = rec.last_success.map(|s| s.ended_at);
        }
        rows.insert(job.clone(), row);
    }
    let now = Utc::now();
    let col = |f: &dyn Fn(&Row) -> String| Arc::new(StringArray::from_iter_values(rows.values().map(f))) as ArrayRef;
    RecordBatch::try_from_iter(vec![
        ("job", Arc::new(StringArray::from_iter_values(rows.keys())) as ArrayRef),
        ("last_status", col(&|r| if r.last_status.is_empty() { "never run".into() } else { r.last_status.clone() })),
        ("last_run", col(&|r| r.last_run.clone())),
        ("logical_time", col(&|r| r.logical_time.clone())),
        ("fresh_as_of", col(&|r| r.last_success.map(|t| ago(now - t)).unwrap_or_else(|| "-".into()))),
        ("engine", col(&|r| r.engine.clone())),
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
