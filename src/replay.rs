//! Replaying quarantine (`runner replay`): records rejected under an older contract are
//! validated again against today's `schemas/events.toml`, and those that now pass land in their
//! tables exactly once.
//!
//! A replay is a commit in the stream's ledger, like an ingest batch: it is planned from the
//! ledger (the stream's quarantine partitions and their live files), writes its files to
//! staging, then commits with the same create-if-absent put. The commit adds the accepted
//! records to their event partitions (files that join the current version, as ingest's do, so
//! the incremental SQL jobs rebuild those days as they would for late data) and rewrites each
//! quarantine partition it touched as a new version in which those rows carry the replay's run
//! id and time (`replayed_run_id`, `replayed_at`; the rows stay, so what arrived and when is
//! still there) and rows that still fail carry today's reason. Because the marks and the rows
//! are published by one commit, a crash anywhere is rolled forward or discarded like a batch,
//! a second replay finds the rows marked and adds nothing, and a replay beside an ingest or
//! another replay of the same stream conflicts on the seq and plans again from the new ledger.
//!
//! Accepted records are deduplicated as ingest does (the stream's dedup keys within the
//! horizon, by the arrival of the object they came in) and also against the `event_id`s the
//! target days already hold, whatever their age: a Firehose duplicate that was rejected once
//! and accepted once lands once.
//!
//! Left alone, with the reason: object-level rejects (a refused `.snappy`, an object over a
//! limit: re-ingest those objects), records whose `raw` was capped at `ingest.max_raw_bytes`
//! or not kept (`record_too_large`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder, TimestampMillisecondArray, new_null_array};
use arrow::compute::concat_batches;
use chrono::{NaiveDate, Utc};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::catalog::layout::{day_folder, quarantine_folder};
use crate::dates::day_string;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ingest::dedup::DedupIndex;
use crate::ingest::parse::Limits;
use crate::ingest::parse::{id_key, parse_object};
use crate::ingest::{STAGING_GRACE_MINUTES, ensure_tables, stage_partitions};
use crate::job::IngestStages;
use crate::ledger::{
    Attempt, BatchStats, Commit, CommitKind, Compacted, FileEntry, Ledger, LedgerState, PartitionState, Replay, encode_keys,
};
use crate::publish::collect_replaced_versions;
use crate::publish::commit::{Committed, Committer};
use crate::schema::{COL_REPLAYED_AT, COL_REPLAYED_RUN_ID, COL_SOURCE, QUARANTINE_TABLE, StreamContract, quarantine_schema};
use crate::source::{Compression, KeyKind, classify};
use crate::store::{Location, encode_parquet};
use crate::workspace::Workspace;

/// Quarantine partitions one replay commit rewrites at most: a long replay is several
/// commits, each bounded, each exactly once.
const PARTITIONS_PER_COMMIT: usize = 16;
/// Examples kept per reason for the dry run.
const EXAMPLES: usize = 3;

/// What to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Streams (all of the contract's when empty).
    pub streams: Vec<String>,
    /// Only rows with this `reason_code`.
    pub reason: Option<String>,
    /// Arrival dates (the quarantine's `dt`), inclusive.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub dry_run: bool,
}

/// What became of the selected rows of one stream and one original reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReasonReport {
    pub stream: String,
    pub reason: String,
    /// Rows selected (not replayed before).
    pub selected: u64,
    /// Rows that pass today's contract and were (would be) added to the table.
    pub accepted: u64,
    /// Rows that pass but whose event the table already holds (marked replayed, added once).
    pub duplicates: u64,
    /// Rows that still fail, by today's reason.
    pub still_rejected: BTreeMap<String, u64>,
    /// Rows not replayable, by why.
    pub left_alone: BTreeMap<String, u64>,
    /// A few of the rows: their source and offset and what became of them.
    pub examples: Vec<String>,
    /// Event days the accepted rows landed in (`<table>/dt=<day>`).
    pub days: BTreeSet<String>,
}

/// One replay of one stream.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    pub stream: String,
    pub reasons: Vec<ReasonReport>,
    /// Ledger commits the replay made.
    pub commits: Vec<u64>,
}

impl StreamReport {
    fn reason(&mut self, reason: &str) -> &mut ReasonReport {
        if let Some(i) = self.reasons.iter().position(|r| r.reason == reason) {
            return &mut self.reasons[i];
        }
        self.reasons.push(ReasonReport { stream: self.stream.clone(), reason: reason.to_string(), ..Default::default() });
        self.reasons.last_mut().expect("pushed")
    }

    /// The event days this replay changed, over every reason.
    pub fn days(&self) -> BTreeSet<String> {
        self.reasons.iter().flat_map(|r| r.days.iter().cloned()).collect()
    }
}

/// Replays the quarantine of every selected stream.
pub async fn run(ws: &Workspace, opts: &ReplayOptions, run_id: &str) -> Result<Vec<StreamReport>> {
    ws.check_format(!opts.dry_run).await?;
    let streams: Vec<String> =
        if opts.streams.is_empty() { ws.contract.streams.keys().cloned().collect() } else { opts.streams.clone() };
    let mut out = Vec::new();
    for s in &streams {
        ws.contract.stream(s)?;
        out.push(replay_stream(ws, s, opts, run_id).await?);
    }
    Ok(out)
}

/// One quarantined row and what today's contract says of it.
enum Verdict {
    /// Not selected (replayed before, or another reason than `--reason`).
    Untouched,
    LeftAlone(&'static str),
    /// Passes: the typed row, its dedup key, event day and arrival.
    Passes {
        row: RecordBatch,
        key: u128,
        day: i32,
        arrival_ms: i64,
    },
    /// Still fails: today's reason code, field and message.
    Fails {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
}

/// A quarantine partition read and judged.
struct Judged {
    partition: Vec<String>,
    inputs: Vec<FileEntry>,
    rows: RecordBatch,
    verdicts: Vec<Verdict>,
}

async fn replay_stream(ws: &Workspace, stream: &str, opts: &ReplayOptions, run_id: &str) -> Result<StreamReport> {
    let sc = ws.contract.stream(stream)?;
    let ledger = Ledger::new(ws.warehouse.clone(), stream);
    let settings = &ws.config.ingest;
    let mut committer = Committer::new(ws, &ledger, settings.clone(), run_id, "replay").failpoints("replay.after_commit", None);
    let mut state = if opts.dry_run {
        ledger.load().await?
    } else {
        // The table's schema gains the replay columns; a crashed replay or batch is rolled forward.
        ensure_tables(ws, stream).await?;
        let (state, _) = committer.load().await?;
        ledger.collect_garbage(&state, chrono::Duration::minutes(STAGING_GRACE_MINUTES)).await?;
        state
    };
    let source = Location::parse(ws.config.source(stream)?)?;
    let mut report = StreamReport { stream: stream.to_string(), ..Default::default() };
    // Partitions this run has judged and committed (or found nothing to do in).
    let mut done: BTreeSet<Vec<String>> = BTreeSet::new();
    // Keys this run accepted (or, in a dry run, would accept), across its commits.
    let mut landed: HashSet<u128> = HashSet::new();
    loop {
        let parts = ledger.partitions_with_files(&state).await?;
        let reads = Reads::of(&state);
        let mut todo: Vec<&PartitionState> = parts
            .values()
            .filter(|p| p.table == QUARANTINE_TABLE && p.partition.get(1).map(String::as_str) == Some(stream))
            .filter(|p| !done.contains(&p.partition) && in_range(&p.partition[0], opts))
            .collect();
        todo.sort_by(|a, b| a.partition.cmp(&b.partition));
        // Judge partitions in date order until a commit's worth has something to change. A
        // partition with nothing to change is counted and let go at once (a year of replayed
        // quarantine is never held in memory).
        let mut chunk: Vec<Judged> = Vec::new();
        let window = Window::of(ws, &state);
        for p in todo {
            let j = judge(ws, sc, &source, p, opts, &reads, &window).await?;
            if !has_work(&j) {
                tally(&mut report, 0, &j, &Accepted::new(), sc);
                done.insert(j.partition);
                continue;
            }
            chunk.push(j);
            if chunk.len() >= PARTITIONS_PER_COMMIT {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        let mut counts = StreamReport { stream: stream.to_string(), ..Default::default() };
        let accepted = dedup(ws, &ledger, &state, sc, &parts, &reads, &landed, &mut chunk).await?;
        for (pi, j) in chunk.iter().enumerate() {
            tally(&mut counts, pi, j, &accepted, sc);
        }
        let keys = kept_keys(&chunk, &accepted);
        if opts.dry_run {
            merge(&mut report, counts);
            landed.extend(keys);
            done.extend(chunk.into_iter().map(|j| j.partition));
            continue;
        }
        let attempt = Attempt::new(state.next_seq());
        let commit = stage(ws, &ledger, &state, sc, stream, run_id, &attempt, &chunk, &accepted).await?;
        failpoint::hit("replay.before_commit");
        state = match committer.commit(state, &attempt, commit).await? {
            Committed::Done(state, c) => {
                tracing::info!(stream, seq = c.seq, "replayed quarantined records");
                report.commits.push(c.seq);
                merge(&mut report, counts);
                landed.extend(keys);
                done.extend(chunk.into_iter().map(|j| j.partition));
                // The conflict budget is per commit: a long replay beside a busy ingest loses
                // a seq now and then, and goes on.
                committer.reset_conflicts();
                state
            }
            // Another run committed this seq (an ingest, a compaction, another replay): judge
            // again from the ledger as it is now.
            Committed::Replan(state, _) => state,
        };
    }
    if !opts.dry_run && !report.commits.is_empty() {
        // The quarantine versions this replay replaced, once no query can be reading them (a
        // failure is a warning: the next replay or compaction collects them).
        let grace = chrono::Duration::from_std(ws.config.catalog.keep_replaced).unwrap_or(chrono::Duration::MAX);
        if let Err(e) = collect_replaced_versions(ws, QUARANTINE_TABLE, grace).await {
            tracing::warn!("collecting replaced quarantine versions failed (the next replay or compaction tries again): {e}");
        }
    }
    Ok(report)
}

/// Where a file of the ledger is read: its table folder, or its staging while its commit is not
/// published yet (a dry run does not roll a crashed commit forward).
struct Reads(HashMap<String, String>);

impl Reads {
    fn of(state: &LedgerState) -> Reads {
        let unpublished = state.commits.iter().filter(|c| !state.published.contains(&c.seq));
        Reads(unpublished.flat_map(|c| c.files.iter().map(|f| (f.path.clone(), f.staged.clone()))).collect())
    }

    fn path<'a>(&'a self, f: &'a FileEntry) -> &'a str {
        self.0.get(&f.path).map(String::as_str).unwrap_or(&f.path)
    }
}

/// The arrivals whose dedup keys the ledger still keeps: a checkpoint keeps `lookback +
/// dedup_horizon` behind the newest arrival. A record without `event_id` older than that cannot
/// be checked against what the table holds (its key is its content, not a column), so it is
/// left alone rather than risk a duplicate.
struct Window {
    oldest_ms: i64,
}

impl Window {
    fn of(ws: &Workspace, state: &LedgerState) -> Window {
        let keep = (ws.config.ingest.lookback + ws.config.ingest.dedup_horizon).as_millis() as i64;
        Window { oldest_ms: state.max_arrival_ms().map(|t| t.saturating_sub(keep)).unwrap_or(i64::MIN) }
    }
}

/// The dedup keys of the chunk's rows that land.
fn kept_keys(chunk: &[Judged], accepted: &Accepted) -> Vec<u128> {
    let mut out = Vec::new();
    for (pi, j) in chunk.iter().enumerate() {
        for (ri, v) in j.verdicts.iter().enumerate() {
            if let Verdict::Passes { key, .. } = v
                && accepted.get(&(pi, ri)).copied().unwrap_or(false)
            {
                out.push(*key);
            }
        }
    }
    out
}

fn in_range(day: &str, opts: &ReplayOptions) -> bool {
    let Ok(d) = NaiveDate::parse_from_str(day, "%Y-%m-%d") else { return false };
    opts.from.is_none_or(|f| d >= f) && opts.to.is_none_or(|t| d <= t)
}

fn has_work(j: &Judged) -> bool {
    j.verdicts.iter().enumerate().any(|(i, v)| match v {
        Verdict::Passes { .. } => true,
        // Today's code or field differ. The message alone is not work: it may quote the
        // contract (the event types it knows), and every contract edit would rewrite the
        // quarantine.
        Verdict::Fails { code, field, .. } => {
            let (c, f, _) = reason_of(&j.rows, i);
            c != *code || f != field.as_deref()
        }
        _ => false,
    })
}

/// The reason code, field and message of quarantine row `i`.
fn reason_of(rows: &RecordBatch, i: usize) -> (&str, Option<&str>, &str) {
    let col = |name: &str| rows.column_by_name(name).expect("a quarantine column").as_string::<i32>();
    let field = col("field");
    (col("reason_code").value(i), field.is_valid(i).then(|| field.value(i)), col("reason").value(i))
}

/// Reads a quarantine partition's live files and judges each row against today's contract.
async fn judge(
    ws: &Workspace,
    sc: &StreamContract,
    source: &Location,
    p: &PartitionState,
    opts: &ReplayOptions,
    reads: &Reads,
    window: &Window,
) -> Result<Judged> {
    let schema = quarantine_schema();
    let mut batches = Vec::new();
    for f in &p.live {
        let body = ws.warehouse.get(&ws.warehouse.child(reads.path(f))).await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(body)
            .and_then(|b| b.build())
            .map_err(|e| Error::Internal(format!("reading quarantine file {}: {e}", f.path)))?;
        for b in reader {
            let b = b.map_err(|e| Error::Internal(format!("reading quarantine file {}: {e}", f.path)))?;
            batches.push(conform(&b, &schema)?);
        }
    }
    let rows = concat_batches(&schema, &batches).map_err(Error::arrow("reading a quarantine partition"))?;
    let col = |name: &str| rows.column_by_name(name).expect("a quarantine column").clone();
    let (src, offset, raw, code, reason, replayed) =
        (col(COL_SOURCE), col("byte_offset"), col("raw"), col("reason_code"), col("reason"), col(COL_REPLAYED_RUN_ID));
    let (src, raw, code, reason, replayed) = (
        src.as_string::<i32>(),
        raw.as_string::<i32>(),
        code.as_string::<i32>(),
        reason.as_string::<i32>(),
        replayed.as_string::<i32>(),
    );
    let limits = ws.config.ingest.limits;
    let mut arrivals: HashMap<String, Option<i64>> = HashMap::new();
    let mut verdicts = Vec::with_capacity(rows.num_rows());
    for i in 0..rows.num_rows() {
        let selected = !replayed.is_valid(i) && opts.reason.as_deref().is_none_or(|r| r == code.value(i));
        let v = if !selected {
            Verdict::Untouched
        } else if offset.is_null(i) {
            Verdict::LeftAlone("an object-level reject: copy the object to a new key once it can be read")
        } else if !raw.is_valid(i) {
            Verdict::LeftAlone("no raw text kept")
        } else if reason.value(i).contains("[raw keeps the first ") {
            Verdict::LeftAlone("raw capped at ingest.max_raw_bytes")
        } else if raw.value(i).contains('\u{FFFD}') {
            // Bytes that were not UTF-8 were kept as U+FFFD: the text is not what arrived.
            Verdict::LeftAlone("raw holds bytes that were not UTF-8 (kept as U+FFFD): copy the object to a new key")
        } else if let Some(arrival_ms) =
            *arrivals.entry(src.value(i).to_string()).or_insert_with(|| arrival_of(source, src.value(i)))
        {
            let url = src.value(i);
            let text = raw.value(i);
            // Today's reason of a whole record is not capped again.
            let limits = Limits { max_raw_bytes: limits.max_raw_bytes.max(text.len()), ..limits };
            let mut parsed = parse_object(&ws.contract, sc, url, Compression::None, arrival_ms, text.as_bytes(), limits);
            let has_id = parsed.rows.num_rows() == 1 && parsed.rows.column(sc.col_event_id).is_valid(0);
            if parsed.rows.num_rows() == 1 && parsed.rejects.is_empty() && !has_id && arrival_ms < window.oldest_ms {
                Verdict::LeftAlone("no event_id, and older than the dedup keys the ledger keeps: a replay could duplicate it")
            } else if parsed.rows.num_rows() == 1 && parsed.rejects.is_empty() {
                Verdict::Passes { row: parsed.rows, key: parsed.keys[0], day: parsed.days[0], arrival_ms }
            } else if let Some(r) = parsed.rejects.drain(..).next() {
                Verdict::Fails { code: r.code, field: r.field, message: r.message }
            } else {
                Verdict::LeftAlone("the raw text holds no single record")
            }
        } else {
            Verdict::LeftAlone("its source key is not in the Firehose layout: its arrival hour is unknown")
        };
        verdicts.push(v);
    }
    Ok(Judged { partition: p.partition.clone(), inputs: p.live.clone(), rows, verdicts })
}

/// The arrival hour of the drop at `url`: its key relative to the source, or, when the source
/// has moved since, its last five segments (`YYYY/MM/DD/HH/<name>`, Firehose's layout).
fn arrival_of(source: &Location, url: &str) -> Option<i64> {
    let rel = source.relative_url(url).ok().unwrap_or_else(|| {
        let segs: Vec<&str> = url.rsplitn(6, '/').collect();
        segs.iter().take(5).rev().copied().collect::<Vec<_>>().join("/")
    });
    match classify(&rel) {
        KeyKind::Drop(d) | KeyKind::Refused(d, _) => Some(d.arrival_hour.timestamp_millis()),
        _ => None,
    }
}

/// A batch read from a quarantine file in the current schema: columns a file written before
/// they existed are NULL.
fn conform(b: &RecordBatch, schema: &arrow::datatypes::SchemaRef) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| b.column_by_name(f.name()).cloned().unwrap_or_else(|| new_null_array(f.data_type(), b.num_rows())))
        .collect();
    RecordBatch::try_new(schema.clone(), cols).map_err(Error::arrow("reading a quarantine file"))
}

/// Which passing rows are new: (partition index, row index) -> kept (true) or a duplicate.
type Accepted = HashMap<(usize, usize), bool>;

/// Deduplicates the chunk's passing rows in arrival order against the stream's dedup keys
/// within the horizon and the `event_id`s their days already hold.
async fn dedup(
    ws: &Workspace,
    ledger: &Ledger,
    state: &LedgerState,
    sc: &StreamContract,
    parts: &BTreeMap<(String, Vec<String>), PartitionState>,
    reads: &Reads,
    landed: &HashSet<u128>,
    chunk: &mut [Judged],
) -> Result<Accepted> {
    let mut passing: Vec<(i64, String, usize, usize, u128, i32)> = Vec::new();
    for (pi, j) in chunk.iter().enumerate() {
        let src = j.rows.column_by_name(COL_SOURCE).expect("source").as_string::<i32>().clone();
        for (ri, v) in j.verdicts.iter().enumerate() {
            if let Verdict::Passes { key, day, arrival_ms, .. } = v {
                passing.push((*arrival_ms, src.value(ri).to_string(), pi, ri, *key, *day));
            }
        }
    }
    let mut out = Accepted::new();
    if passing.is_empty() {
        return Ok(out);
    }
    // Ingest's order: oldest arrival first, then the object, then the offset (rows are in it).
    passing.sort_by(|a, b| (a.0, &a.1, a.2, a.3).cmp(&(b.0, &b.1, b.2, b.3)));
    let horizon_ms = ws.config.ingest.dedup_horizon.as_millis() as i64;
    let mut index = DedupIndex::load(ledger, state, horizon_ms, passing[0].0).await?;
    let days: BTreeSet<i32> = passing.iter().map(|p| p.5).collect();
    let held = held_ids(ws, sc, parts, reads, &days).await?;
    for (arrival_ms, _, pi, ri, key, _) in passing {
        let new = !held.contains(&key) && !landed.contains(&key) && index.insert(key, arrival_ms);
        out.insert((pi, ri), new);
    }
    Ok(out)
}

/// The dedup keys of the `event_id`s the stream's table holds on `days`.
async fn held_ids(
    ws: &Workspace,
    sc: &StreamContract,
    parts: &BTreeMap<(String, Vec<String>), PartitionState>,
    reads: &Reads,
    days: &BTreeSet<i32>,
) -> Result<HashSet<u128>> {
    let id_col = sc.file_schema().field(sc.col_event_id).name().clone();
    let mut out = HashSet::new();
    for day in days {
        let Some(p) = parts.get(&(sc.table.clone(), vec![day_string(*day)])) else { continue };
        for f in &p.live {
            let body = ws.warehouse.get(&ws.warehouse.child(reads.path(f))).await?;
            let what = |e: parquet::errors::ParquetError| Error::Internal(format!("reading {}: {e}", f.path));
            let builder = ParquetRecordBatchReaderBuilder::try_new(body).map_err(what)?;
            let Some(idx) = builder.schema().fields().iter().position(|fl| fl.name() == &id_col) else { continue };
            let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
            for b in builder.with_projection(mask).build().map_err(what)? {
                let b = b.map_err(Error::arrow("reading event ids"))?;
                let ids = b.column(0).as_string::<i32>();
                out.extend(ids.iter().flatten().map(id_key));
            }
        }
    }
    Ok(out)
}

/// Counts what became of partition `pi`'s selected rows, by their original reason.
fn tally(counts: &mut StreamReport, pi: usize, j: &Judged, accepted: &Accepted, sc: &StreamContract) {
    let src = j.rows.column_by_name(COL_SOURCE).expect("source").as_string::<i32>();
    let off = j.rows.column_by_name("byte_offset").expect("offset").as_primitive::<arrow::datatypes::Int64Type>();
    for (ri, v) in j.verdicts.iter().enumerate() {
        if matches!(v, Verdict::Untouched) {
            continue;
        }
        let (code, _, _) = reason_of(&j.rows, ri);
        let r = counts.reason(code);
        r.selected += 1;
        let at = if off.is_valid(ri) { format!("{}@{}", src.value(ri), off.value(ri)) } else { src.value(ri).to_string() };
        let example = match v {
            Verdict::Untouched => unreachable!("skipped above"),
            Verdict::LeftAlone(why) => {
                *r.left_alone.entry(why.to_string()).or_default() += 1;
                format!("{at}: left alone ({why})")
            }
            Verdict::Passes { day, .. } => {
                if accepted.get(&(pi, ri)).copied().unwrap_or(false) {
                    r.accepted += 1;
                    r.days.insert(day_folder(&sc.table, &day_string(*day), None));
                    format!("{at}: accepted into {}", day_folder(&sc.table, &day_string(*day), None))
                } else {
                    r.duplicates += 1;
                    format!("{at}: already in {} (a duplicate)", day_folder(&sc.table, &day_string(*day), None))
                }
            }
            Verdict::Fails { code, message, .. } => {
                *r.still_rejected.entry(code.to_string()).or_default() += 1;
                format!("{at}: still rejected: {code}: {message}")
            }
        };
        if r.examples.len() < EXAMPLES {
            r.examples.push(example);
        }
    }
}

/// Adds one commit's (or one dry run's) counts to the stream's report.
fn merge(report: &mut StreamReport, counts: StreamReport) {
    for c in counts.reasons {
        let r = report.reason(&c.reason);
        r.selected += c.selected;
        r.accepted += c.accepted;
        r.duplicates += c.duplicates;
        for (k, v) in c.still_rejected {
            *r.still_rejected.entry(k).or_default() += v;
        }
        for (k, v) in c.left_alone {
            *r.left_alone.entry(k).or_default() += v;
        }
        r.days.extend(c.days);
        for e in c.examples {
            if r.examples.len() < EXAMPLES {
                r.examples.push(e);
            }
        }
    }
}

/// Stages the chunk: the kept rows as ingest stages a batch's (one file per event day, joining
/// the partition's current version), each quarantine partition with work rewritten as version
/// `seq` with its rows marked, and the kept rows' dedup keys. Returns the commit to make.
#[allow(clippy::too_many_arguments)]
async fn stage(
    ws: &Workspace,
    ledger: &Ledger,
    state: &LedgerState,
    sc: &StreamContract,
    stream: &str,
    run_id: &str,
    attempt: &Attempt,
    chunk: &[Judged],
    accepted: &Accepted,
) -> Result<Commit> {
    let seq = attempt.seq;
    let staging = ledger.staging_prefix(attempt);
    let now = Utc::now();
    let mut stats = BatchStats::default();
    let (mut rows, mut days, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    let mut max_arrival_ms = 0;
    for (pi, j) in chunk.iter().enumerate() {
        for (ri, v) in j.verdicts.iter().enumerate() {
            match v {
                Verdict::Untouched | Verdict::LeftAlone(_) => continue,
                Verdict::Passes { row, key, day, arrival_ms } => {
                    if accepted.get(&(pi, ri)).copied().unwrap_or(false) {
                        rows.push(row.clone());
                        days.push(*day);
                        keys.push(*key);
                        max_arrival_ms = max_arrival_ms.max(*arrival_ms);
                    } else {
                        stats.duplicates += 1;
                    }
                }
                Verdict::Fails { code, .. } => *stats.quarantined.entry(code.to_string()).or_default() += 1,
            }
            stats.records += 1;
        }
    }
    stats.valid = rows.len() as u64;
    // The kept rows, sorted and split like an ingest batch's.
    let events = |day: &str| {
        let values = vec![day.to_string()];
        let dir = day_folder(&sc.table, day, Some(state.version(&sc.table, &values)));
        (values, dir)
    };
    let mut stages = IngestStages::default();
    let batch = if rows.is_empty() {
        Vec::new()
    } else {
        vec![concat_batches(&sc.file_schema(), &rows).map_err(Error::arrow("gathering replayed rows"))?]
    };
    let mut files = stage_partitions(
        ws,
        &staging,
        &sc.table,
        stream,
        seq,
        batch,
        days.into_iter().map(Some).collect(),
        sc.col_company,
        None,
        events,
        &mut stages,
    )
    .await?;

    // Each quarantine partition with work, as a new version with its rows marked.
    let mut rewritten = Vec::new();
    for (pi, j) in chunk.iter().enumerate() {
        if !has_work(j) {
            continue;
        }
        let marked = mark(j, pi, accepted, run_id, now.timestamp_millis())?;
        let staged = format!("{staging}/{QUARANTINE_TABLE}-r{pi:05}.parquet");
        let data = encode_parquet(&marked)?;
        let bytes = data.len() as u64;
        ws.warehouse.put(&ws.warehouse.child(&staged), data).await?;
        files.push(FileEntry {
            table: QUARANTINE_TABLE.to_string(),
            partition: j.partition.clone(),
            staged,
            path: format!("{}/part-{stream}-{seq:012}.parquet", quarantine_folder(&j.partition, seq)),
            rows: marked.num_rows() as u64,
            bytes,
        });
        rewritten.push(Compacted {
            table: QUARANTINE_TABLE.to_string(),
            partition: j.partition.clone(),
            inputs: j.inputs.iter().map(|f| f.path.clone()).collect(),
        });
    }
    let dedup_keys = if keys.is_empty() {
        String::new()
    } else {
        let path = ledger.dedup_path(attempt);
        ws.warehouse.put(&ws.warehouse.child(&path), encode_keys(&keys)).await?;
        path
    };
    Ok(Commit {
        stream: stream.to_string(),
        seq,
        attempt: attempt.id.clone(),
        run_id: run_id.to_string(),
        committed_at: now.to_rfc3339(),
        files,
        kind: CommitKind::Replay(Replay { rewritten, dedup_keys, max_arrival_ms, stats }),
    })
}

/// Partition `pi`'s rows with the replay's marks: passing rows (kept or duplicates) get its run
/// id and time, rows that still fail get today's reason.
fn mark(j: &Judged, pi: usize, accepted: &Accepted, run_id: &str, at_ms: i64) -> Result<RecordBatch> {
    let n = j.rows.num_rows();
    let (mut code, mut field, mut reason) = (StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    let mut replayed = StringBuilder::new();
    let old_replayed = j.rows.column_by_name(COL_REPLAYED_RUN_ID).expect("replayed").as_string::<i32>();
    let old_at =
        j.rows.column_by_name(COL_REPLAYED_AT).expect("replayed_at").as_primitive::<arrow::datatypes::TimestampMillisecondType>();
    let mut at: Vec<Option<i64>> = Vec::with_capacity(n);
    for (ri, v) in j.verdicts.iter().enumerate() {
        let (c, f, m) = reason_of(&j.rows, ri);
        match v {
            Verdict::Fails { code: nc, field: nf, message: nm } => {
                code.append_value(nc);
                field.append_option(nf.as_deref());
                reason.append_value(nm);
            }
            _ => {
                code.append_value(c);
                field.append_option(f);
                reason.append_value(m);
            }
        }
        if matches!(v, Verdict::Passes { .. }) && accepted.contains_key(&(pi, ri)) {
            replayed.append_value(run_id);
            at.push(Some(at_ms));
        } else {
            replayed.append_option(old_replayed.is_valid(ri).then(|| old_replayed.value(ri)));
            at.push(old_at.is_valid(ri).then(|| old_at.value(ri)));
        }
    }
    let schema = quarantine_schema();
    let replace: [(&str, ArrayRef); 5] = [
        ("reason_code", Arc::new(code.finish())),
        ("field", Arc::new(field.finish())),
        ("reason", Arc::new(reason.finish())),
        (COL_REPLAYED_RUN_ID, Arc::new(replayed.finish())),
        (COL_REPLAYED_AT, Arc::new(TimestampMillisecondArray::from(at).with_timezone("UTC"))),
    ];
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            replace.iter().find(|(name, _)| name == f.name()).map(|(_, a)| a.clone()).unwrap_or_else(|| j.rows.column(i).clone())
        })
        .collect();
    RecordBatch::try_new(schema, cols).map_err(Error::arrow("marking replayed quarantine rows"))
}

/// The reports as rows: one per stream and original reason.
pub fn to_batch(reports: &[StreamReport], dry_run: bool, run_id: &str) -> Result<RecordBatch> {
    let rows: Vec<(&StreamReport, &ReasonReport)> = reports.iter().flat_map(|s| s.reasons.iter().map(move |r| (s, r))).collect();
    let counts = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    let strings = |f: &dyn Fn(&StreamReport, &ReasonReport) -> String| -> ArrayRef {
        Arc::new(arrow::array::StringArray::from_iter_values(rows.iter().map(|(s, r)| f(s, r))))
    };
    let nums = |f: &dyn Fn(&ReasonReport) -> u64| -> ArrayRef {
        Arc::new(arrow::array::UInt64Array::from_iter_values(rows.iter().map(|(_, r)| f(r))))
    };
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        ("stream", strings(&|s, _| s.stream.clone())),
        ("reason", strings(&|_, r| r.reason.clone())),
        ("selected", nums(&|r| r.selected)),
        (if dry_run { "would_accept" } else { "accepted" }, nums(&|r| r.accepted)),
        ("already_in_table", nums(&|r| r.duplicates)),
        ("still_rejected", nums(&|r| r.still_rejected.values().sum())),
        ("now_rejected_as", strings(&|_, r| counts(&r.still_rejected))),
        ("left_alone", nums(&|r| r.left_alone.values().sum())),
        ("left_alone_why", strings(&|_, r| counts(&r.left_alone))),
        ("days", strings(&|_, r| r.days.iter().cloned().collect::<Vec<_>>().join(" "))),
    ];
    if dry_run {
        cols.push(("examples", strings(&|_, r| r.examples.join("\n"))));
    } else {
        cols.push(("commits", strings(&|s, _| s.commits.iter().map(u64::to_string).collect::<Vec<_>>().join(" "))));
        cols.push(("run_id", strings(&|_, _| run_id.to_string())));
    }
    RecordBatch::try_from_iter(cols).map_err(Error::arrow("the replay summary"))
}
