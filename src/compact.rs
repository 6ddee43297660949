//! Compaction: each micro-batch adds a small file to every event-date partition it touches;
//! compaction merges a partition's files into one file sorted by companyID and event time.
//!
//! A compaction is a commit in the stream's ledger (see `ledger`): it is planned from the
//! ledger, writes the merged files to staging, commits with the same create-if-absent put as an
//! ingest batch (so it serializes with concurrent ingest runs: whoever commits the seq first
//! wins, the other re-plans), then moves the files into a new version folder `v=<seq>` and
//! repoints the catalog partition. Readers going through the catalog switch from all the old
//! files to the merged one in one step; a crash anywhere is rolled forward or discarded like an
//! ingest batch. The replaced version stays on disk for queries in flight and is deleted after
//! `keep_replaced`.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use chrono::Utc;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::catalog::layout::{day_folder, partition_path, quarantine_folder};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::job::{CompactCounts, CompactJob, JobMetrics, KindCounts};
use crate::ledger::{BatchStats, Commit, Compacted, FileEntry, Ledger};
use crate::publish::collect_replaced_versions;
use crate::publish::commit::{Replan, checkpoint, publish_commit, retention, roll_forward};
use crate::schema::{QUARANTINE_TABLE, RUNS_TABLE, quarantine_schema, runs_schema};
use crate::store::encode_parquet;
use crate::workspace::{JobRun, Workspace};

/// Compacts the job's streams. A dry run lists the partitions it would merge and writes nothing.
pub async fn run(r: &JobRun<'_>, cj: &CompactJob) -> Result<JobMetrics> {
    let ws = r.ws;
    let started = Instant::now();
    let mut counts = CompactCounts::default();
    let mut m = r.metrics(r.at.to_rfc3339(), KindCounts::Compact(CompactCounts::default()));
    // Each ledger and the tables it versions: a stream's events and quarantine partitions, and
    // the run history's own ledger.
    let mut ledgers: Vec<(String, Vec<String>)> = Vec::new();
    for stream in &cj.streams {
        ledgers.push((stream.clone(), vec![ws.contract.stream(stream)?.table.clone(), QUARANTINE_TABLE.to_string()]));
    }
    if cj.run_history {
        ledgers.push((RUNS_TABLE.to_string(), vec![RUNS_TABLE.to_string()]));
    }
    for (stream, tables) in &ledgers {
        let stream = stream.as_str();
        let ledger = Ledger::new(ws.warehouse.clone(), stream);
        let mut replan = Replan::default();
        let settings = &ws.config.ingest;
        let mut cleaned = false;
        loop {
            let mut state = ledger.load().await?;
            if !r.dry_run {
                roll_forward(ws, &ledger, &mut state).await?;
                if !cleaned {
                    ledger.clean_up(&state, &r.run_id, retention(settings)).await?;
                    // Staging of run records that lost a commit race (ingest cleans its own).
                    if stream == RUNS_TABLE {
                        ledger.collect_garbage(&state, chrono::Duration::hours(1)).await?;
                    }
                    cleaned = true;
                }
            }
            let seq = state.next_seq();
            let todo: Vec<(String, Vec<String>, Vec<FileEntry>)> = ledger
                .partitions_with_files(&state)
                .await?
                .into_values()
                .filter(|p| tables.contains(&p.table) && p.live.len() >= cj.min_files.max(2))
                .take(cj.max_partitions_per_commit.max(1))
                .map(|p| (p.table, p.partition, p.live))
                .collect();
            if todo.is_empty() {
                break;
            }
            if r.dry_run {
                // What one commit would merge (the next ones merge what is left after it).
                for (t, partition, inputs) in &todo {
                    m.partitions.push(partition_path(t, partition));
                    counts.files_in += inputs.len() as u64;
                    m.rows_in += inputs.iter().map(|f| f.rows).sum::<u64>();
                    m.bytes_in += inputs.iter().map(|f| f.bytes).sum::<u64>();
                }
                break;
            }
            let attempt = uuid::Uuid::now_v7().simple().to_string();
            let staging = ledger.staging_prefix(&attempt);
            let mut files = Vec::new();
            let mut compacted = Vec::new();
            let mut bytes_in = 0;
            for (t, partition, inputs) in todo {
                let date = partition.first().cloned().unwrap_or_default();
                let dir =
                    if t == QUARANTINE_TABLE { quarantine_folder(&partition, seq) } else { day_folder(&t, &date, Some(seq)) };
                let name = format!("part-{stream}-{seq:012}.parquet");
                let (data, rows) = merge(ws, &t, &inputs).await?;
                let staged = format!("{staging}/{t}-{:05}.parquet", files.len());
                bytes_in += inputs.iter().map(|f| f.bytes).sum::<u64>();
                files.push(FileEntry {
                    table: t.clone(),
                    partition: partition.clone(),
                    staged: staged.clone(),
                    path: format!("{dir}/{name}"),
                    rows,
                    bytes: data.len() as u64,
                });
                ws.warehouse.put(&ws.warehouse.child(&staged), data).await?;
                compacted.push(Compacted { table: t, partition, inputs: inputs.iter().map(|f| f.path.clone()).collect() });
            }
            let commit = Commit {
                stream: stream.to_string(),
                seq,
                attempt,
                run_id: r.run_id.clone(),
                committed_at: Utc::now().to_rfc3339(),
                objects: Vec::new(),
                files,
                dedup_keys: String::new(),
                max_arrival_ms: 0,
                stats: BatchStats::default(),
                compacted,
            };
            failpoint::hit("compact.before_commit");
            match ledger.commit(&commit).await {
                Ok(()) => {
                    failpoint::hit("compact.after_commit");
                    publish_commit(ws, &ledger, &commit).await?;
                    tracing::info!(stream, seq, partitions = commit.compacted.len(), "compacted");
                    counts.commits += 1;
                    m.partitions.extend(commit.compacted.iter().map(|p| day_folder(&p.table, &p.partition.join(","), None)));
                    counts.files_in += commit.compacted.iter().map(|p| p.inputs.len() as u64).sum::<u64>();
                    counts.files_out += commit.files.len() as u64;
                    let rows = commit.files.iter().map(|f| f.rows).sum::<u64>();
                    m.rows_in += rows;
                    m.rows_out += rows;
                    m.bytes_in += bytes_in;
                    m.bytes_out += commit.files.iter().map(|f| f.bytes).sum::<u64>();
                }
                // An ingest run committed this seq first; its files may be in our partitions.
                // Plan again (our staging is garbage-collected later).
                Err(e) => replan.after(e, "compaction")?,
            }
            if !r.dry_run {
                checkpoint(&ledger, state, settings, &r.run_id).await?;
            }
        }
        if !r.dry_run {
            let grace = chrono::Duration::from_std(cj.keep_replaced).unwrap_or(chrono::Duration::MAX);
            for t in tables {
                counts.removed_files += collect_replaced_versions(ws, t, grace).await?;
            }
        }
    }
    m.files = counts.files_out;
    m.counts = KindCounts::Compact(counts);
    m.seconds = started.elapsed().as_secs_f64();
    Ok(m)
}

/// Reads a partition's files and writes them as one Parquet file: an event partition sorted by
/// companyID, then event time; a quarantine partition by source object, then byte offset; run
/// history by job, then start.
async fn merge(ws: &Workspace, table: &str, inputs: &[FileEntry]) -> Result<(bytes::Bytes, u64)> {
    let (schema, first, second) = match table {
        QUARANTINE_TABLE => (quarantine_schema(), 0, 1),
        RUNS_TABLE => (runs_schema(), 0, 3),
        _ => {
            let sc = ws.contract.streams.values().find(|s| s.table == table).ok_or_else(|| {
                Error::Internal(format!("compaction of `{table}`, which no stream of schemas/events.toml writes"))
            })?;
            (sc.file_schema(), sc.col_company, sc.col_event_time)
        }
    };
    let mut batches: Vec<RecordBatch> = Vec::new();
    for f in inputs {
        let body = ws.warehouse.get(&ws.warehouse.child(&f.path)).await?;
        let what = format!("reading {} for compaction", f.path);
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(body).and_then(|b| b.build()).map_err(Error::parquet(what.clone()))?;
        for b in reader {
            let b = b.map_err(Error::arrow(what.clone()))?;
            // As the contract types it (the Parquet file may say less about nullability).
            batches.push(RecordBatch::try_new(schema.clone(), b.columns().to_vec()).map_err(Error::arrow(what.clone()))?);
        }
    }
    tokio::task::spawn_blocking(move || {
        let all = concat_batches(&schema, &batches).map_err(Error::arrow("merging a partition"))?;
        drop(batches);
        let keys = [all.column(first), all.column(second)].map(|c| SortColumn { values: Arc::clone(c), options: None });
        let idx = lexsort_to_indices(&keys, None).map_err(Error::arrow("sorting a partition"))?;
        let sorted = take_record_batch(&all, &idx).map_err(Error::arrow("sorting a partition"))?;
        Ok((encode_parquet(&sorted)?, sorted.num_rows() as u64))
    })
    .await
    .map_err(|e| Error::Internal(format!("compaction task failed: {e}")))?
}
