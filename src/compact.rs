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

use chrono::Utc;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext, ident};
use futures::StreamExt;
use parquet::arrow::AsyncArrowWriter;

use crate::catalog::layout::{day_folder, partition_path, quarantine_folder};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::job::{CompactCounts, CompactJob, JobMetrics, KindCounts};
use crate::ledger::{Attempt, Commit, CommitKind, Compacted, FileEntry, Ledger};
use crate::publish::collect_replaced_versions;
use crate::publish::commit::{Committed, Committer, retention};
use crate::schema::{QUARANTINE_TABLE, RUNS_TABLE, quarantine_schema, runs_schema};
use crate::store::writer_properties;
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
        let settings = &ws.config.ingest;
        let mut committer =
            Committer::new(ws, &ledger, settings.clone(), &r.run_id, "compaction").failpoints("compact.after_commit", None);
        let mut state = if r.dry_run {
            ledger.load().await?
        } else {
            let (state, _) = committer.load().await?;
            ledger.clean_up(&state, &r.run_id, retention(settings)).await?;
            // Staging of run records that lost a commit race (ingest cleans its own).
            if stream == RUNS_TABLE {
                ledger.collect_garbage(&state, chrono::Duration::hours(1)).await?;
            }
            state
        };
        loop {
            let attempt = Attempt::new(state.next_seq());
            let seq = attempt.seq;
            let parts = match ledger.partitions_with_files(&state).await {
                Ok(parts) => parts,
                // A newer checkpoint replaced our base and its clean-up (a short retention)
                // removed the base's files under us: plan again from the ledger as it is now.
                Err(_) if !r.dry_run && ledger.pointer().await? != state.base.as_ref().map(|b| b.seq) => {
                    state = committer.load().await?.0;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let todo: Vec<(String, Vec<String>, Vec<FileEntry>)> = parts
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
            let staging = ledger.staging_prefix(&attempt);
            let mut files = Vec::new();
            let mut compacted = Vec::new();
            let mut bytes_in = 0;
            for (t, partition, inputs) in todo {
                let date = partition.first().cloned().unwrap_or_default();
                let dir =
                    if t == QUARANTINE_TABLE { quarantine_folder(&partition, seq) } else { day_folder(&t, &date, Some(seq)) };
                let name = format!("part-{stream}-{seq:012}.parquet");
                let staged = format!("{staging}/{t}-{:05}.parquet", files.len());
                let merged = merge(ws, &t, &inputs, &ws.warehouse.child(&staged), cj.memory_bytes).await?;
                counts.spilled_bytes += merged.spilled_bytes;
                bytes_in += inputs.iter().map(|f| f.bytes).sum::<u64>();
                files.push(FileEntry {
                    table: t.clone(),
                    partition: partition.clone(),
                    staged: staged.clone(),
                    path: format!("{dir}/{name}"),
                    rows: merged.rows,
                    bytes: merged.bytes,
                });
                compacted.push(Compacted { table: t, partition, inputs: inputs.iter().map(|f| f.path.clone()).collect() });
            }
            let staged: Vec<object_store::path::Path> = files.iter().map(|f| ws.warehouse.child(&f.staged)).collect();
            let commit = Commit {
                stream: stream.to_string(),
                seq,
                attempt: attempt.id.clone(),
                run_id: r.run_id.clone(),
                committed_at: Utc::now().to_rfc3339(),
                files,
                kind: CommitKind::Compaction(compacted),
            };
            failpoint::hit("compact.before_commit");
            // An ingest run that committed this seq first may have added files to our
            // partitions: the committer reloads the ledger and this plans again.
            state = match committer.commit(state, &attempt, commit).await? {
                Committed::Done(state, commit) => {
                    tracing::info!(stream, seq, partitions = commit.compacted().len(), "compacted");
                    counts.commits += 1;
                    m.partitions.extend(commit.compacted().iter().map(|p| day_folder(&p.table, &p.partition.join(","), None)));
                    counts.files_in += commit.compacted().iter().map(|p| p.inputs.len() as u64).sum::<u64>();
                    counts.files_out += commit.files.len() as u64;
                    let rows = commit.files.iter().map(|f| f.rows).sum::<u64>();
                    m.rows_in += rows;
                    m.rows_out += rows;
                    m.bytes_in += bytes_in;
                    m.bytes_out += commit.files.iter().map(|f| f.bytes).sum::<u64>();
                    state
                }
                Committed::Replan(state, _) => {
                    // No commit names this attempt's files (another attempt took the seq, or
                    // this one never committed): they go now, not at the next clean-up. (Run
                    // records land beside compaction: each job records its run while the next
                    // one runs.)
                    ledger.discard_staging(&attempt, staged).await;
                    state
                }
            };
        }
        if !r.dry_run {
            let grace = chrono::Duration::from_std(cj.keep_replaced).unwrap_or(chrono::Duration::MAX);
            for t in tables {
                // The compaction is committed: a failed clean-up is a warning (the next one
                // collects what this one left).
                match collect_replaced_versions(ws, t, grace).await {
                    Ok(n) => counts.removed_files += n,
                    Err(e) => {
                        tracing::warn!(table = %t, "collecting replaced versions failed (the next compaction tries again): {e}")
                    }
                }
            }
        }
    }
    m.files = counts.files_out;
    m.counts = KindCounts::Compact(counts);
    m.seconds = started.elapsed().as_secs_f64();
    Ok(m)
}

/// Streams a partition's files into one Parquet object at `staged`, sorted: an event partition
/// by companyID, then event time; a quarantine partition by source object, then byte offset;
/// run history by job, then start. DataFusion's sort holds at most `memory_bytes` and spills
/// sorted runs to local disk beyond it, and the file goes up in parts as it is written
/// (one PUT when small): a partition of any size merges in bounded memory.
async fn merge(
    ws: &Workspace,
    table: &str,
    inputs: &[FileEntry],
    staged: &object_store::path::Path,
    memory_bytes: usize,
) -> Result<Merged> {
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
    let what = format!("merging {} files of {table} for compaction", inputs.len());
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_bytes)))
        .build_arc()
        .map_err(Error::df(what.clone()))?;
    // One sort over all the files (no merge of per-core sorts above it, which would need memory
    // of its own), a quarter of the budget kept for merging its spilled runs (DataFusion's
    // default, 10 MiB, would take a small budget whole).
    let config =
        SessionConfig::new().with_target_partitions(1).with_batch_size(2048).with_sort_spill_reservation_bytes(memory_bytes / 4);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_object_store(&ws.warehouse.store_url, ws.warehouse.store.clone());
    let urls: Vec<String> = inputs.iter().map(|f| ws.warehouse.join(&f.path).url.trim_end_matches('/').to_string()).collect();
    let sort = [first, second].map(|i| ident(schema.field(i).name()).sort(true, true)).to_vec();
    let plan = ctx
        .read_parquet(urls, ParquetReadOptions::default().schema(&schema))
        .await
        .and_then(|df| df.sort(sort))
        .map_err(Error::df(what.clone()))?
        .create_physical_plan()
        .await
        .map_err(Error::df(what.clone()))?;
    let mut batches = execute_stream(plan.clone(), ctx.task_ctx()).map_err(Error::df(what.clone()))?;
    let out = object_store::buffered::BufWriter::new(ws.warehouse.store.clone(), staged.clone());
    // As the contract types it (the Parquet files may say less about nullability).
    let next = |b: Option<datafusion::error::Result<arrow::array::RecordBatch>>| -> Result<Option<arrow::array::RecordBatch>> {
        b.map(|b| crate::engine::retype(&b.map_err(Error::df(what.clone()))?, &schema).map_err(Error::arrow(what.clone())))
            .transpose()
    };
    // Encoded as ingest encodes (a column's dictionary decided on the first batch).
    let first = next(batches.next().await)?;
    let props = first.as_ref().map(crate::store::encode::writer_properties_for).unwrap_or_else(writer_properties);
    let mut w = AsyncArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(Error::parquet(what.clone()))?;
    let mut rows = 0;
    let mut batch = first;
    while let Some(b) = batch {
        rows += b.num_rows() as u64;
        w.write(&b).await.map_err(Error::parquet(what.clone()))?;
        batch = next(batches.next().await)?;
    }
    w.finish().await.map_err(Error::parquet(what.clone()))?;
    Ok(Merged { rows, bytes: w.bytes_written() as u64, spilled_bytes: spilled_bytes(plan.as_ref()) })
}

struct Merged {
    rows: u64,
    bytes: u64,
    spilled_bytes: u64,
}

/// What the operators of an executed plan spilled to disk.
fn spilled_bytes(plan: &dyn ExecutionPlan) -> u64 {
    let own = plan.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0) as u64;
    own + plan.children().into_iter().map(|c| spilled_bytes(c.as_ref())).sum::<u64>()
}
