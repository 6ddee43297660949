//! The ingest job: new Firehose drops of one stream to typed, deduplicated, Hive-partitioned
//! Parquet, exactly once.
//!
//! A run: (1) rolls forward any committed-but-unpublished batch and clears abandoned staging;
//! (2) lists the source and keeps the drops the ledger has not consumed; (3) works them off in
//! bounded micro-batches. A batch reads its objects in parallel, removes duplicates, writes one
//! Parquet file per table and event date into staging, commits a ledger record (the single
//! atomic step), then moves the files into place and registers the partitions. See `ledger` for
//! why any crash in between is recovered by the next run.

pub mod decode;
pub mod dedup;
pub mod framing;
pub mod parse;
pub mod validate;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::catalog::TableMeta;
use crate::catalog::layout::{VERSIONED, day_folder, partition_path, quarantine_folder};
use crate::config::IngestSettings;
use crate::dates::{day_of_ms, day_string};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::job::{IngestCounts, IngestJob, IngestStages, JobMetrics, KindCounts, thread_cpu};
use crate::ledger::checkpoint::arrival_day;
use crate::ledger::{
    Attempt, Batch, BatchStats, Commit, CommitKind, ConsumedObject, FileEntry, Ledger, LedgerState, encode_keys,
};
use crate::progress::Progress;
use crate::publish::commit::{Committed, Committer, retention, roll_forward};
use crate::schema::{PARTITION_COL, QUARANTINE_STREAM_COL, QUARANTINE_TABLE, quarantine_schema};
use crate::source::{Compression, KeyKind, classify};
use crate::store::{Location, encode_parquet};
use crate::workspace::{JobRun, Workspace};
use dedup::DedupIndex;
use parse::{ParsedObject, Reject, parse_object};

/// Staging left by an attempt that never committed is removed after this long (a younger one
/// may belong to a run still writing).
pub(crate) const STAGING_GRACE_MINUTES: i64 = 60;
/// GZIP'd JSON inflates about this much: batches are bounded by estimated uncompressed bytes,
/// so memory does not depend on how full or how compressed the drops are.
pub(crate) const GZIP_RATIO_ESTIMATE: u64 = 8;

/// A drop (or refused object) not yet consumed.
#[derive(Debug, Clone)]
struct Candidate {
    rel: String,
    size: u64,
    arrival_ms: i64,
    compression: Compression,
    refused: Option<String>,
    /// The quarantine reason code of a refused object.
    refused_code: &'static str,
}

/// Registers the stream's table and `quarantine` in the catalog (idempotent).
pub(crate) async fn ensure_tables(ws: &Workspace, stream: &str) -> Result<()> {
    let sc = ws.contract.stream(stream)?;
    let mut t = TableMeta::from_arrow(
        &sc.table,
        &format!("Events of delivery stream `{stream}`, typed by schemas/events.toml, deduplicated, partitioned by event date"),
        ws.warehouse.join(&sc.table).url,
        &sc.file_schema(),
        &[(PARTITION_COL, DataType::Date32)],
    )?;
    // Partitions live in `v=<seq>` folders so compaction can replace one atomically.
    t.parameters.insert(VERSIONED.into(), "true".into());
    let mut q = TableMeta::from_arrow(
        QUARANTINE_TABLE,
        "Records and objects ingest could not accept, with source, offset, raw text and reason; partitioned by arrival date and stream",
        ws.warehouse.join(QUARANTINE_TABLE).url,
        &quarantine_schema(),
        &[(PARTITION_COL, DataType::Date32), (QUARANTINE_STREAM_COL, DataType::Utf8)],
    )?;
    // Each stream's quarantine partitions are versioned by its own ledger, so compaction can
    // merge them like event partitions.
    q.parameters.insert(VERSIONED.into(), "true".into());
    // Two tables, two snapshots: declared at once.
    futures::future::try_join(ws.catalog.put_table(&t), ws.catalog.put_table(&q)).await.map(|_| ())
}

/// Runs the ingest of the job's stream until no new drop is left. A dry run lists and plans the
/// batches and writes nothing.
pub async fn run(r: &JobRun<'_>, ij: &IngestJob) -> Result<JobMetrics> {
    let (ws, stream, progress) = (r.ws, ij.stream.as_str(), r.progress);
    let started = Instant::now();
    let mut summary = IngestCounts { stream: stream.to_string(), ..Default::default() };
    let mut stats = BatchStats::default();
    let source = Location::parse(ws.config.source(stream)?)?;
    let ledger = Ledger::new(ws.warehouse.clone(), stream);
    let settings = &ws.config.ingest;
    let run_id = r.run_id.as_str();

    // The tables are declared while the ledger is read (neither needs the other).
    let declaring = async {
        match r.dry_run {
            true => Ok(()),
            false => ensure_tables(ws, stream).await,
        }
    };
    let (mut state, ()) = futures::future::try_join(ledger.load(), declaring).await?;
    let mut stages = IngestStages::default();
    let listing = Instant::now();
    // The source is listed, and the dedup keys its drops need read, while the warehouse is made
    // ready (batches a crash left committed but unpublished published, garbage collected): on
    // S3 each is a round trip or more, and neither changes what the ledger says was consumed.
    let horizon_ms = settings.dedup_horizon.as_millis() as i64;
    let mut replanned = 0;
    // Batches rolled forward, by every attempt (a retried one finds them published).
    let mut recovered = 0;
    let (candidates, mut consumed, dedup) = loop {
        let as_loaded = state.clone();
        // Each step can be cut short anywhere (a failure of the other half drops it): each is one
        // a crash can cut short too, and the next attempt, like the next run, finishes it.
        let preparing = async {
            if r.dry_run {
                return Ok(());
            }
            recovered += roll_forward(ws, &ledger, &mut state).await?;
            let removed = ledger.collect_garbage(&state, chrono::Duration::minutes(STAGING_GRACE_MINUTES)).await?;
            if removed > 0 {
                tracing::info!(stream, removed, "removed staging of attempts that never committed");
            }
            ledger.clean_up(&state, run_id, retention(settings)).await?;
            Ok::<(), Error>(())
        };
        let discovering = async {
            let candidates = discover(&source, &as_loaded, settings, &mut summary).await?;
            let consumed = consumed_of(&ledger, &as_loaded, &candidates).await?;
            let dedup = match r.dry_run {
                true => None,
                false => {
                    let oldest = candidates.iter().find(|c| !consumed.contains(&c.rel)).map(|c| c.arrival_ms).unwrap_or(i64::MAX);
                    Some((DedupIndex::load(&ledger, &as_loaded, horizon_ms, oldest).await?, oldest))
                }
            };
            Ok::<_, Error>((candidates, consumed, dedup))
        };
        let e = match futures::future::try_join(preparing, discovering).await {
            Ok(((), found)) => break found,
            Err(e) => e,
        };
        // A newer checkpoint's clean-up (a short `checkpoint_retention`) removed segments of the
        // one this run read: read the ledger as it is now and look again (bounded). Any other
        // failure, or one the pointer does not explain, is the run's error as it was.
        if r.dry_run || replanned == LEDGER_REREADS || !cleaned_under(&ledger, &as_loaded, &e).await {
            return Err(e);
        }
        replanned += 1;
        summary = IngestCounts { stream: stream.to_string(), ..Default::default() };
        state = ledger.load().await?;
    };
    summary.recovered_batches += recovered;
    if recovered > 0 {
        // What this process knows of the ledger says so (the jobs after it read it from there).
        ledger.remember(&state);
    }
    stages.list_s = listing.elapsed().as_secs_f64();
    let pending_count = candidates.iter().filter(|c| !consumed.contains(&c.rel)).count();
    // Nothing listed and nothing ever ingested: a misspelled source, or one not delivered to
    // yet. Said on stderr (the run itself succeeds: an empty stream is not an error).
    if summary.listed == 0 && state.last_seq() == 0 {
        let url = ws.config.source(stream)?;
        if let Ok(check) = check_source(url).await
            && let Some(m) = check.message(stream, url, &ws.config.file_name())
        {
            tracing::warn!("{m}");
        }
    }
    if r.dry_run {
        // What the run would do: the pending drops, in the batches it would make.
        let mut cursor = 0;
        let mut m = r.metrics(r.at.to_rfc3339(), KindCounts::Ingest(IngestCounts::default()));
        loop {
            let batch = next_batch(&candidates, &mut cursor, &consumed, settings);
            if batch.is_empty() {
                break;
            }
            summary.batches += 1;
            summary.objects += batch.iter().filter(|c| c.refused.is_none()).count() as u64;
            summary.refused += batch.iter().filter(|c| c.refused.is_some()).count() as u64;
            m.bytes_in += batch.iter().map(|c| c.size).sum::<u64>();
        }
        m.seconds = started.elapsed().as_secs_f64();
        m.counts = KindCounts::Ingest(summary);
        return Ok(m);
    }
    progress.start(stream, pending_count as u64);

    let (mut dedup, oldest_pending) = dedup.expect("loaded for a run that writes");
    let mut committer = Committer::new(ws, &ledger, settings.clone(), run_id, "ingest")
        .failpoints("ingest.after_commit", Some("ingest.after_published"));
    let mut cursor = 0;
    let mut partitions: BTreeSet<String> = BTreeSet::new();
    let (mut files, mut bytes_out) = (0u64, 0u64);
    // Plan the next bounded batch from the oldest unconsumed candidates, and start reading it.
    // While a batch is deduplicated, encoded and committed, the next one is already being read
    // and parsed: its plan does not depend on the commit (the next batch starts after this one),
    // and parsing does not touch the dedup index, which is applied in batch order.
    let mut batch = next_batch(&candidates, &mut cursor, &consumed, settings);
    let mut reading = read_batch(ws, &source, stream, &batch);
    loop {
        if batch.is_empty() {
            break;
        }
        let next = next_batch(&candidates, &mut cursor, &consumed, settings);
        let next_reading = read_batch(ws, &source, stream, &next);
        let written = write_batch(ws, &ledger, &state, run_id, &batch, reading, &mut dedup, progress, &mut stages).await;
        (batch, reading) = (next, next_reading);
        let (attempt, commit, keys) = written?;
        let committing = Instant::now();
        state = match committer.commit(state, &attempt, commit).await? {
            Committed::Done(state, commit) => {
                let b = commit.batch().expect("an ingest commit");
                summary.batches += 1;
                summary.objects += b.objects.iter().filter(|o| o.refused.is_none()).count() as u64;
                summary.refused += b.objects.iter().filter(|o| o.refused.is_some()).count() as u64;
                files += commit.files.len() as u64;
                bytes_out += commit.files.iter().map(|f| f.bytes).sum::<u64>();
                partitions.extend(commit.files.iter().map(|f| partition_path(&f.table, &f.partition)));
                stats.add(&b.stats);
                dedup.committed(b.max_arrival_ms, keys);
                for o in &b.objects {
                    consumed.insert(o.key.clone());
                }
                stages.commit_s += committing.elapsed().as_secs_f64();
                progress.records(stats.records);
                state
            }
            Committed::Replan(mut state, recovered) => {
                // Another run committed this seq: take its work into account and plan again.
                summary.recovered_batches += recovered;
                let mut reread = 0;
                (consumed, dedup) = loop {
                    let read = async {
                        let consumed = consumed_of(&ledger, &state, &candidates).await?;
                        Ok::<_, Error>((consumed, DedupIndex::load(&ledger, &state, horizon_ms, oldest_pending).await?))
                    };
                    match read.await {
                        Ok(read) => break read,
                        // As at the start of the run: segments a newer checkpoint's clean-up removed.
                        Err(e) if reread < LEDGER_REREADS && cleaned_under(&ledger, &state, &e).await => {
                            reread += 1;
                            state = ledger.load().await?;
                        }
                        Err(e) => return Err(e),
                    }
                };
                // The batch read ahead may hold drops the other run consumed: plan again.
                cursor = 0;
                batch = next_batch(&candidates, &mut cursor, &consumed, settings);
                reading = read_batch(ws, &source, stream, &batch);
                state
            }
        };
    }
    progress.finish();
    let mut m = r.metrics(r.at.to_rfc3339(), KindCounts::Ingest(IngestCounts::default()));
    m.rows_in = stats.records;
    m.bytes_in = stats.bytes;
    m.rows_out = stats.valid + stats.quarantined_total();
    m.files = files;
    m.bytes_out = bytes_out;
    m.partitions = partitions.into_iter().collect();
    summary.stats = stats.into();
    summary.stages = stages;
    m.counts = KindCounts::Ingest(summary);
    m.seconds = started.elapsed().as_secs_f64();
    Ok(m)
}

/// Times a run reads the ledger again when a checkpoint's clean-up removed what it was reading.
const LEDGER_REREADS: u32 = 3;

/// Whether `e`, met reading the ledger state `state` points at, is explained by a newer
/// checkpoint (whose clean-up, after a short `checkpoint_retention`, removes the segments and
/// dedup keys the older one named): the checkpoint pointer moved past `state`'s. Says so in the
/// log when it did.
async fn cleaned_under(ledger: &Ledger, state: &LedgerState, e: &Error) -> bool {
    let base = state.base.as_ref().map(|b| b.seq);
    let moved = ledger.pointer().await.is_ok_and(|p| p != base);
    if moved {
        tracing::info!(
            stream = ledger.stream(),
            "a newer checkpoint's clean-up removed what this run read of the ledger ({e}): reading it again"
        );
    }
    moved
}

/// Drops consumed by earlier batches, among the arrival days of `candidates` (a checkpoint keeps
/// consumed keys by arrival day: a run reads the days it listed, not years of keys).
async fn consumed_of(ledger: &Ledger, state: &LedgerState, candidates: &[Candidate]) -> Result<HashSet<String>> {
    let days: BTreeSet<String> = candidates.iter().map(|c| arrival_day(c.arrival_ms)).collect();
    ledger.consumed(state, Some(&days)).await
}

/// Lists the source from the last ingested hour minus the lookback on, so a run lists the
/// recent hours, not years of drops (Firehose keys start with their arrival hour);
/// `--full-listing` lists everything, for drops copied by hand into old hours. Returns the drops
/// and refused objects in arrival order, so a backlog is worked off oldest first and dedup keeps
/// the first copy.
async fn discover(
    source: &Location,
    state: &LedgerState,
    settings: &IngestSettings,
    summary: &mut IngestCounts,
) -> Result<Vec<Candidate>> {
    let since = state.max_arrival_ms().filter(|_| !settings.full_listing).map(|ms| ms - settings.lookback.as_millis() as i64);
    let listed = match since.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => source.list_after(&t.format("%Y/%m/%d/%H").to_string()).await?,
        None => source.list("").await?,
    };
    summary.listed = listed.len() as u64;
    let mut candidates = Vec::new();
    for meta in listed {
        let Some(rel) = source.relative(&meta.location) else { continue };
        match classify(rel) {
            // An object over the size limit is refused by its listed size, never downloaded: a
            // plain one by its size, a GZIP one when even incompressible data could not have
            // made it that large (deflate adds at most 5 bytes per 16 KiB block, GZIP 18 a
            // member: 1/512 and 64 KiB of margin are more than that). Under it, a GZIP object is
            // inflated up to the limit, chunk by chunk.
            KeyKind::Drop(d) if meta.size > listed_limit(d.compression, settings.limits.max_object_bytes) => {
                candidates.push(Candidate {
                    rel: d.rel,
                    size: meta.size,
                    arrival_ms: d.arrival_hour.timestamp_millis(),
                    compression: d.compression,
                    refused: Some(format!(
                        "the object is {} bytes{}, over ingest.max_object_bytes ({}): not read, no record of it ingested; raise the limit and copy the object to a new key if it is real data (`runner replay` re-reads records, not objects)",
                        meta.size,
                        if d.compression == Compression::Gzip { " of GZIP" } else { "" },
                        settings.limits.max_object_bytes
                    )),
                    refused_code: validate::reason::OBJECT_TOO_LARGE,
                })
            }
            KeyKind::Drop(d) => candidates.push(Candidate {
                rel: d.rel,
                size: meta.size,
                arrival_ms: d.arrival_hour.timestamp_millis(),
                compression: d.compression,
                refused: None,
                refused_code: "",
            }),
            KeyKind::Refused(d, why) => candidates.push(Candidate {
                rel: d.rel,
                size: meta.size,
                arrival_ms: d.arrival_hour.timestamp_millis(),
                compression: Compression::None,
                refused: Some(why),
                refused_code: validate::reason::UNSUPPORTED_OBJECT,
            }),
            KeyKind::ErrorOutput => summary.skipped_error_output += 1,
            KeyKind::Stray => summary.skipped_stray += 1,
        }
    }
    candidates.sort_by(|a, b| (a.arrival_ms, &a.rel).cmp(&(b.arrival_ms, &b.rel)));
    if summary.skipped_error_output + summary.skipped_stray > 0 {
        tracing::info!(
            stream = %summary.stream,
            error_output = summary.skipped_error_output,
            stray = summary.skipped_stray,
            "skipped objects outside the Firehose drop layout"
        );
    }
    Ok(candidates)
}

/// The next bounded batch: the oldest unconsumed candidates from `cursor` on, up to the
/// object and (estimated uncompressed) byte limits.
fn next_batch(
    candidates: &[Candidate],
    cursor: &mut usize,
    consumed: &HashSet<String>,
    settings: &IngestSettings,
) -> Vec<Candidate> {
    let mut batch: Vec<Candidate> = Vec::new();
    let mut bytes = 0u64;
    while *cursor < candidates.len() {
        let c = &candidates[*cursor];
        if consumed.contains(&c.rel) {
            *cursor += 1;
            continue;
        }
        let est = if c.compression == Compression::Gzip { c.size * GZIP_RATIO_ESTIMATE } else { c.size };
        if !batch.is_empty() && (batch.len() >= settings.max_objects_per_batch || bytes + est > settings.max_bytes_per_batch) {
            break;
        }
        bytes += est;
        batch.push(c.clone());
        *cursor += 1;
    }
    batch
}

/// One object of a batch, read and parsed (`None` for a refused object), with its rejects and
/// the time its read took.
type ReadObject = (Candidate, Option<ParsedObject>, Vec<Reject>, Duration);

/// A batch being read and parsed in the background: its objects arrive in batch order.
struct ReadBatch {
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<ReadObject>>,
    source_url: String,
}

impl ReadBatch {
    async fn recv(&mut self) -> Option<Result<ReadObject>> {
        self.rx.recv().await
    }
}

/// Drops on a local disk parsed in one blocking task at most: by count and by listed size (a
/// unit of larger drops is one drop, as each is task enough).
const LOCAL_GROUP_OBJECTS: usize = 16;
const LOCAL_GROUP_BYTES: u64 = 1 << 20;

/// A drop's bytes, downloaded, or the local file the parser's thread reads.
enum Fetched {
    Read(bytes::Bytes),
    Local(std::path::PathBuf),
}

/// Starts reading and parsing `batch`, several objects at a time, in a task of its own, so it
/// overlaps the encoding and commit of the batch before. Results come back in batch order, so
/// dedup keeps the first copy. Dropping the `ReadBatch` stops the task after the units in
/// flight (a unit: one drop, or up to 16 small local ones). The batch is bounded, so what waits
/// in the channel and in the units is too.
fn read_batch(ws: &Workspace, source: &Location, stream: &str, batch: &[Candidate]) -> ReadBatch {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (source, contract, stream) = (source.clone(), ws.contract.clone(), stream.to_string());
    // Downloads in flight are set apart from parsing: on S3 each GET waits 20-100 ms for its
    // first byte, so many wait at once (`ingest.io_concurrency`), while at most `parallelism`
    // objects are parsed at a time (one per core).
    let parallelism = ws.config.ingest.parallelism.max(1);
    let (batch, in_flight) = (batch.to_vec(), ws.config.ingest.io_concurrency.max(parallelism + 1));
    let parsers = Arc::new(tokio::sync::Semaphore::new(parallelism));
    let source_url = source.url.clone();
    let limits = ws.config.ingest.limits;
    tokio::spawn(async move {
        // A run of small drops on a local disk is parsed in one blocking task (up to
        // `LOCAL_GROUP_BYTES` of them): each task is a thread woken and a worker woken back,
        // and several thousand drops of 20-100 KB paid that per drop. Anything else (a
        // download, a refused object) is a unit of its own.
        // Each drop with its store path and, on a local disk, its file.
        let mut units: Vec<Vec<(Candidate, object_store::path::Path, Option<std::path::PathBuf>)>> = Vec::new();
        // The last unit's listed bytes, and whether it is local drops (it may take more).
        let (mut unit_bytes, mut unit_local) = (0u64, false);
        for c in batch {
            let path = source.child(&c.rel);
            let file = if c.refused.is_none() { source.local_file(&path) } else { None };
            let local = file.is_some();
            match units.last_mut() {
                Some(u) if local && unit_local && u.len() < LOCAL_GROUP_OBJECTS && unit_bytes + c.size <= LOCAL_GROUP_BYTES => {
                    unit_bytes += c.size;
                    u.push((c, path, file));
                }
                _ => {
                    (unit_bytes, unit_local) = (c.size, local);
                    units.push(vec![(c, path, file)]);
                }
            }
        }
        let mut parsed = futures::stream::iter(units)
            .map(|unit| {
                let source = source.clone();
                let contract = contract.clone();
                let stream = stream.clone();
                let parsers = parsers.clone();
                async move {
                    if let [(c, _, _)] = unit.as_slice()
                        && let Some(why) = &c.refused
                    {
                        let rejects =
                            vec![Reject { offset: None, raw: None, code: c.refused_code, field: None, message: why.clone() }];
                        return vec![Ok::<_, Error>((c.clone(), None, rejects, Duration::ZERO))];
                    }
                    // A drop on a local disk is read by the parser's own thread; elsewhere the
                    // download waits here, outside the parsers' permits.
                    let mut fetched = Vec::with_capacity(unit.len());
                    for (c, path, file) in unit {
                        let reading = Instant::now();
                        let f = match file {
                            Some(file) => Fetched::Local(file),
                            None => match source.get(&path).await {
                                Ok(body) => Fetched::Read(body),
                                Err(e) => return vec![Err(e)],
                            },
                        };
                        fetched.push((c, path, f, reading.elapsed()));
                    }
                    let _permit = match parsers.acquire_owned().await {
                        Ok(p) => p,
                        Err(e) => return vec![Err(Error::Internal(e.to_string()))],
                    };
                    let source_url = source.url.clone();
                    tokio::task::spawn_blocking(move || {
                        let sc = &contract.streams[&stream];
                        let mut out = Vec::with_capacity(fetched.len());
                        for (c, path, f, read) in fetched {
                            let (body, read) = match f {
                                Fetched::Read(body) => (body, read),
                                Fetched::Local(file) => {
                                    let reading = Instant::now();
                                    match Location::read_local_file(&path, &file) {
                                        Ok(body) => (body, reading.elapsed()),
                                        Err(e) => {
                                            // The reader stops at the first error: the rest of the unit is not read.
                                            out.push(Err(e));
                                            break;
                                        }
                                    }
                                }
                            };
                            let url = format!("{source_url}{}", c.rel);
                            let mut p = parse_object(&contract, sc, &url, c.compression, c.arrival_ms, &body, limits);
                            let rejects = std::mem::take(&mut p.rejects);
                            out.push(Ok((c, Some(p), rejects, read)));
                        }
                        out
                    })
                    .await
                    .unwrap_or_else(|e| vec![Err(Error::Internal(format!("parser task failed: {e}")))])
                }
            })
            .buffered(in_flight)
            .flat_map(futures::stream::iter);
        while let Some(item) = parsed.next().await {
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                break;
            }
        }
    });
    ReadBatch { rx, source_url }
}

/// Deduplicates and stages one batch as it is read. Returns its attempt, the commit to make
/// and the batch's dedup keys.
#[allow(clippy::too_many_arguments)]
async fn write_batch(
    ws: &Workspace,
    ledger: &Ledger,
    state: &LedgerState,
    run_id: &str,
    batch: &[Candidate],
    mut parsed: ReadBatch,
    dedup: &mut DedupIndex,
    progress: &Progress,
    stages: &mut IngestStages,
) -> Result<(Attempt, Commit, Vec<u128>)> {
    let stream = ledger.stream();
    let seq = state.next_seq();
    let sc = ws.contract.stream(stream)?;
    let attempt = Attempt::new(seq);
    let staging = ledger.staging_prefix(&attempt);
    let now = Utc::now();
    let mut stats = BatchStats::default();
    let mut kept: Vec<RecordBatch> = Vec::new();
    // The URL of each kept object: its rows' `source_object`.
    let mut kept_sources: Vec<String> = Vec::new();
    // The event day of each row of `kept`, `None` for a duplicate (not written).
    let mut kept_days: Vec<Option<i32>> = Vec::new();
    let mut keys: Vec<u128> = Vec::new();
    let mut quarantine = QuarantineRows::default();

    let mut received = 0;
    let mut refused_late: std::collections::HashMap<String, String> = Default::default();
    while let Some(item) = parsed.recv().await {
        let (c, p, rejects, read) = item?;
        received += 1;
        stages.read_s += read.as_secs_f64();
        let url = format!("{}{}", parsed.source_url, c.rel);
        let arrival_day = day_of_ms(c.arrival_ms);
        for r in &rejects {
            *stats.quarantined.entry(r.code.to_string()).or_default() += 1;
            quarantine.push(&url, r, run_id, seq, now, arrival_day);
            // Found over the object limit while inflating: refused as a whole, like one
            // refused by its listed size (counted in `refused`, not `objects`).
            if r.offset.is_none() && r.code == validate::reason::OBJECT_TOO_LARGE && c.refused.is_none() {
                refused_late.insert(c.rel.clone(), r.message.clone());
            }
        }
        stats.bytes += c.size;
        if let Some(p) = p {
            let ParsedObject { rows, days, keys: obj_keys, records, bytes_uncompressed, inflate, parse, .. } = p;
            stages.inflate_s += inflate.as_secs_f64();
            stages.parse_s += parse.as_secs_f64();
            let deduping = thread_cpu();
            stats.records += records;
            stats.bytes_uncompressed += bytes_uncompressed;
            // A duplicate keeps its row in the object's batch but has no day: the partition
            // gather skips it, so the batch is not copied to drop it.
            let (days_before, kept_before) = (kept_days.len(), keys.len());
            for (k, day) in obj_keys.iter().zip(&days) {
                if dedup.insert(*k, c.arrival_ms) {
                    keys.push(*k);
                    kept_days.push(Some(*day));
                } else {
                    stats.duplicates += 1;
                    kept_days.push(None);
                }
            }
            if keys.len() > kept_before {
                kept.push(rows);
                kept_sources.push(url);
            } else {
                kept_days.truncate(days_before);
            }
            stages.dedup_s += thread_cpu().saturating_sub(deduping).as_secs_f64();
        }
        progress.inc();
    }
    // Every object is committed as consumed: never commit one the reader did not deliver.
    if received != batch.len() {
        return Err(Error::Internal(format!(
            "the reader of batch {seq} of `{stream}` stopped after {received} of {} objects; nothing was committed",
            batch.len()
        )));
    }
    stats.valid = keys.len() as u64;

    // Stage: one file per event date, rows sorted by companyID; quarantine rows per arrival date
    // and this stream, sorted by source object. Files join their partition's current version.
    let events = |day: &str| {
        let values = vec![day.to_string()];
        let dir = day_folder(&sc.table, day, Some(state.version(&sc.table, &values)));
        (values, dir)
    };
    let (qbatch, qdays) = quarantine.finish()?;
    let quarantined = |day: &str| {
        let values = vec![day.to_string(), stream.to_string()];
        let dir = quarantine_folder(&values, state.version(QUARANTINE_TABLE, &values));
        (values, dir)
    };
    // The event files, the quarantine files and the dedup keys are staged at once: on S3 one
    // round trip for the three, not three one after another.
    let mut quarantine_stages = IngestStages::default();
    let dedup_keys = ledger.dedup_path(&attempt);
    let writing_keys = async {
        let writing = Instant::now();
        ws.warehouse.put(&ws.warehouse.child(&dedup_keys), encode_keys(&keys)).await?;
        Ok::<_, Error>(writing.elapsed())
    };
    let (mut files, quarantine_files, keys_written) = futures::future::try_join3(
        stage_partitions(
            ws,
            &staging,
            &sc.table,
            stream,
            seq,
            kept,
            kept_days,
            sc.col_company,
            Some((sc.col_source, kept_sources)),
            events,
            stages,
        ),
        stage_partitions(
            ws,
            &staging,
            QUARANTINE_TABLE,
            stream,
            seq,
            vec![qbatch],
            qdays.into_iter().map(Some).collect(),
            0,
            None,
            quarantined,
            &mut quarantine_stages,
        ),
        writing_keys,
    )
    .await?;
    files.extend(quarantine_files);
    stages.encode_s += quarantine_stages.encode_s;
    stages.write_s += quarantine_stages.write_s + keys_written.as_secs_f64();

    let commit = Commit {
        stream: stream.to_string(),
        seq,
        attempt: attempt.id.clone(),
        run_id: run_id.to_string(),
        committed_at: now.to_rfc3339(),
        files,
        kind: CommitKind::Ingest(Batch {
            objects: batch
                .iter()
                .map(|c| ConsumedObject {
                    key: c.rel.clone(),
                    size: c.size,
                    arrival_ms: c.arrival_ms,
                    refused: c.refused.clone().or_else(|| refused_late.get(&c.rel).cloned()),
                })
                .collect(),
            dedup_keys,
            max_arrival_ms: batch.iter().map(|c| c.arrival_ms).max().unwrap_or(0),
            stats,
        }),
    };
    failpoint::hit("ingest.before_commit");
    Ok((attempt, commit, keys))
}

/// Writes one Parquet file per event date into staging, rows sorted by (date, sort column) and
/// otherwise in arrival order, and returns the ledger entries of the files. `days` holds each
/// row's date, `None` for a row not to write (a duplicate). Rows are sorted by reference and
/// gathered one partition at a time, so the batch is never copied whole. `per_batch` names a
/// column whose value is the same on every row of a batch, with each batch's value (see
/// [`gather`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn stage_partitions(
    ws: &Workspace,
    staging: &str,
    table: &str,
    stream: &str,
    seq: u64,
    batches: Vec<RecordBatch>,
    days: Vec<Option<i32>>,
    sort_col: usize,
    per_batch: Option<(usize, Vec<String>)>,
    partition: impl Fn(&str) -> (Vec<String>, String),
    stages: &mut IngestStages,
) -> Result<Vec<FileEntry>> {
    if days.iter().all(Option::is_none) {
        return Ok(Vec::new());
    }
    let sorting = thread_cpu();
    // Rows sorted by day, then by the sort column's value, in arrival order among equals. The
    // values are ranked among the batch's distinct ones first (a few hundred tenants for a
    // million rows), so the sort compares integers, not strings; (day, rank, batch, row) is
    // unique, so an unstable sort keeps arrival order.
    let keys: Vec<&arrow::array::StringArray> = batches.iter().map(|b| b.column(sort_col).as_string::<i32>()).collect();
    let mut ranks: crate::schema::FastMap<&str, u32> = Default::default();
    for k in &keys {
        for i in 0..arrow::array::Array::len(*k) {
            ranks.entry(k.value(i)).or_insert(0);
        }
    }
    let mut distinct: Vec<&str> = ranks.keys().copied().collect();
    distinct.sort_unstable();
    for (rank, v) in distinct.into_iter().enumerate() {
        ranks.insert(v, rank as u32);
    }
    let mut ranked: Vec<(i32, u32, u32, u32)> = Vec::with_capacity(days.len());
    let mut d = days.iter();
    for (b, k) in keys.iter().enumerate() {
        for r in 0..arrow::array::Array::len(*k) {
            if let Some(day) = *d.next().expect("a day per row") {
                ranked.push((day, ranks[k.value(r)], b as u32, r as u32));
            }
        }
    }
    drop(ranks);
    ranked.sort_unstable();
    let order = ranked.into_iter().map(|(day, _, b, r)| (day, b as usize, r as usize));

    // One file per day, split when the day's rows of this batch hold more than
    // `ingest.max_file_bytes` in memory (estimated per row from its object's batch): one Arrow
    // batch holds at most 2 GiB of strings per column, and a batch of GZIP drops can inflate
    // to many times its listed size.
    let row_bytes: Vec<u64> = batches.iter().map(|b| b.get_array_memory_size() as u64 / (b.num_rows().max(1) as u64)).collect();
    let max_file = ws.config.ingest.max_file_bytes;
    // (day, part of the day, (batch, row) of each row).
    type Group = (i32, usize, Vec<(usize, usize)>);
    let mut groups: Vec<Group> = Vec::new();
    let mut held = 0u64;
    for (day, b, r) in order {
        match groups.last_mut() {
            Some((d, _, rows)) if *d == day && held + row_bytes[b] <= max_file => {
                rows.push((b, r));
                held += row_bytes[b];
            }
            Some((d, part, _)) if *d == day => {
                let next = *part + 1;
                groups.push((day, next, vec![(b, r)]));
                held = row_bytes[b];
            }
            _ => {
                groups.push((day, 0, vec![(b, r)]));
                held = row_bytes[b];
            }
        }
    }
    stages.encode_s += thread_cpu().saturating_sub(sorting).as_secs_f64();
    let batches = Arc::new(batches);
    let per_batch = Arc::new(per_batch);
    let wh = ws.warehouse.clone();
    let results = futures::stream::iter(groups.into_iter().enumerate())
        .map(|(n, (day, part, rows))| {
            let wh = wh.clone();
            let batches = batches.clone();
            let per_batch = per_batch.clone();
            let (values, dir) = partition(&day_string(day));
            // Staged flat, one folder per attempt: mirroring the table folders here cost a folder
            // per partition per batch to create and to remove again.
            let staged = format!("{staging}/{table}-{n:05}.parquet");
            let path = match part {
                0 => format!("{dir}/part-{stream}-{seq:012}.parquet"),
                k => format!("{dir}/part-{stream}-{seq:012}-{k}.parquet"),
            };
            async move {
                let len = rows.len() as u64;
                let (data, encode) = tokio::task::spawn_blocking(move || {
                    let encoding = thread_cpu();
                    let per_batch = per_batch.as_ref().as_ref().map(|(c, v)| (*c, v.as_slice()));
                    let part = gather(&batches, &rows, per_batch)?;
                    Ok::<_, Error>((encode_parquet(&part)?, thread_cpu().saturating_sub(encoding)))
                })
                .await
                .map_err(|e| Error::Internal(format!("parquet task failed: {e}")))??;
                let bytes = data.len() as u64;
                let writing = Instant::now();
                wh.put(&wh.child(&staged), data).await?;
                let write = writing.elapsed();
                if n == 0 {
                    failpoint::hit("ingest.after_first_staged_file");
                }
                let entry = FileEntry { table: table.to_string(), partition: values, staged, path, rows: len, bytes };
                Ok::<_, Error>((entry, encode, write))
            }
        })
        .buffered(ws.config.ingest.parallelism.max(1));
    let mut entries = Vec::new();
    for r in results.collect::<Vec<_>>().await {
        let (entry, encode, write) = r?;
        stages.encode_s += encode.as_secs_f64();
        stages.write_s += write.as_secs_f64();
        entries.push(entry);
    }
    Ok(entries)
}

/// The rows `rows` (batch, row) of `batches`, column by column, with arrow's `interleave`
/// except for two kinds of column:
/// - a Boolean one, which `interleave` gathers through its generic fallback, one row at a time
///   (1.8% of the ingest's CPU for the single `legacy` column);
/// - the column `per_batch` names, whose value is the same on every row of a batch (the source
///   object's URL, a row's longest string): written from each row's batch instead of read from
///   the rows of 256 objects scattered over memory (a cache miss a row).
fn gather(batches: &[RecordBatch], rows: &[(usize, usize)], per_batch: Option<(usize, &[String])>) -> Result<RecordBatch> {
    use arrow::array::{Array, BooleanArray};
    let schema = batches.first().map(RecordBatch::schema).ok_or_else(|| Error::Internal("gathering from no batch".into()))?;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (c, field) in schema.fields().iter().enumerate() {
        let column: ArrayRef = match (per_batch, field.data_type()) {
            (Some((col, values)), DataType::Utf8) if col == c => {
                let bytes = rows.iter().map(|&(b, _)| values[b].len()).sum();
                let mut out = StringBuilder::with_capacity(rows.len(), bytes);
                for &(b, r) in rows {
                    debug_assert_eq!(batches[b].column(c).as_string::<i32>().value(r), values[b], "one value per batch");
                    out.append_value(&values[b]);
                }
                Arc::new(out.finish())
            }
            (_, DataType::Boolean) => {
                let arrays: Vec<&BooleanArray> = batches.iter().map(|b| b.column(c).as_boolean()).collect();
                Arc::new(rows.iter().map(|&(b, r)| arrays[b].is_valid(r).then(|| arrays[b].value(r))).collect::<BooleanArray>())
            }
            _ => {
                let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
                arrow::compute::interleave(&arrays, rows).map_err(Error::arrow("gathering a partition"))?
            }
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema, columns).map_err(Error::arrow("gathering a partition"))
}

#[derive(Default)]
struct QuarantineRows {
    source: StringBuilder,
    offset: Int64Builder,
    raw: StringBuilder,
    code: StringBuilder,
    field: StringBuilder,
    reason: StringBuilder,
    run_id: StringBuilder,
    batch: Int64Builder,
    at: Vec<i64>,
    days: Vec<i32>,
}

impl QuarantineRows {
    #[allow(clippy::too_many_arguments)]
    fn push(&mut self, source: &str, r: &Reject, run_id: &str, seq: u64, at: DateTime<Utc>, day: i32) {
        self.source.append_value(source);
        self.offset.append_option(r.offset.map(|o| o as i64));
        self.raw.append_option(r.raw.as_deref());
        self.code.append_value(r.code);
        self.field.append_option(r.field.as_deref());
        self.reason.append_value(&r.message);
        self.run_id.append_value(run_id);
        self.batch.append_value(seq as i64);
        self.at.push(at.timestamp_millis());
        self.days.push(day);
    }

    fn finish(mut self) -> Result<(RecordBatch, Vec<i32>)> {
        let n = self.at.len();
        let mut at = TimestampMillisecondBuilder::new().with_timezone("UTC");
        for t in &self.at {
            at.append_value(*t);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.source.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.code.finish()),
            Arc::new(self.field.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.run_id.finish()),
            Arc::new(self.batch.finish()),
            Arc::new(at.finish()),
        ];
        // Not replayed (see `replay`): the columns after these are NULL.
        let schema = quarantine_schema();
        let mut cols = cols;
        cols.extend(schema.fields()[cols.len()..].iter().map(|f| arrow::array::new_null_array(f.data_type(), n)));
        let batch = RecordBatch::try_new(schema, cols).map_err(Error::arrow("building quarantine rows"))?;
        Ok((batch, self.days))
    }
}
/// What a configured source prefix holds, checked before the first ingest and by
/// `runner validate` (a misspelled folder would otherwise ingest nothing, silently).
#[derive(Debug, PartialEq, Eq)]
pub enum SourceCheck {
    HasObjects,
    /// The prefix holds no object (yet): a new delivery stream, or a misspelled prefix.
    Empty,
    /// A local folder that does not exist, with the closest existing path when one is close.
    Missing {
        closest: Option<String>,
    },
}

impl SourceCheck {
    /// One line saying what is wrong with source `stream` at `url`, and what to do.
    pub fn message(&self, stream: &str, url: &str, config_file: &str) -> Option<String> {
        let fix =
            format!("check [sources.{stream}] url in {config_file} (the prefix Firehose delivers into, holding YYYY/MM/DD/HH/)");
        match self {
            SourceCheck::HasObjects => None,
            SourceCheck::Empty => Some(format!("source `{stream}` ({url}) holds no object yet: {fix}")),
            SourceCheck::Missing { closest } => Some(format!(
                "source `{stream}`: the folder {url} does not exist{}: {fix}",
                closest.as_ref().map(|c| format!(" (did you mean {c}?)")).unwrap_or_default()
            )),
        }
    }
}

/// Looks at a source: one listing of at most an object (and, for a local folder that does not
/// exist, the folders above it, for the closest name).
pub async fn check_source(url: &str) -> crate::error::Result<SourceCheck> {
    if let Some(path) = url.strip_prefix("file://").map(std::path::PathBuf::from)
        && !path.exists()
    {
        // The deepest folder that exists, and its child closest to the next missing part.
        let mut closest = None;
        let mut missing = path.as_path();
        while let Some(parent) = missing.parent() {
            if parent.is_dir() {
                let wanted = missing.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                let children: Vec<String> = std::fs::read_dir(parent)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .filter(|e| e.path().is_dir())
                            .map(|e| e.file_name().to_string_lossy().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let hint = crate::error::did_you_mean(&wanted, children.iter().map(String::as_str));
                if let Some(name) = hint.strip_prefix(" (did you mean `").and_then(|h| h.strip_suffix("`?)")) {
                    let rest = path.strip_prefix(missing).unwrap_or(std::path::Path::new(""));
                    closest = Some(parent.join(name).join(rest).display().to_string());
                }
                break;
            }
            missing = parent;
        }
        return Ok(SourceCheck::Missing { closest });
    }
    let loc = crate::store::Location::parse(url)?;
    Ok(if loc.any_under("").await? { SourceCheck::HasObjects } else { SourceCheck::Empty })
}

/// The listed size over which an object cannot hold at most `max_object_bytes` of data.
fn listed_limit(compression: Compression, max_object_bytes: u64) -> u64 {
    match compression {
        Compression::None => max_object_bytes,
        Compression::Gzip => max_object_bytes.saturating_add(max_object_bytes / 512).saturating_add(64 << 10),
    }
}
