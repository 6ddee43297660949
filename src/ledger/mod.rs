//! The ingest ledger: which drops have been consumed, and which files each batch wrote.
//!
//! ```text
//! <warehouse>/_runner/ledger/<stream>/<seq>.json        the commit record of batch <seq>
//! <warehouse>/_runner/ledger/<stream>/<seq>.published   its files are in place and registered
//! ```
//!
//! A batch is committed exactly when its record exists. The record is created with a
//! create-if-absent put, so of two runs that planned the same `seq` only one commits; the other
//! sees a conflict and re-plans from the new ledger. Files are written to a staging folder before
//! the commit and moved into the table folders after it; a commit without a `.published` marker
//! is rolled forward by the next run (every step is idempotent). Staged files of a batch that
//! never committed are garbage and no reader ever lists them.
//!
//! A checkpoint ([`checkpoint`]) summarises the ledger up to a seq; a run reads the newest one
//! and the commit records after it, so reading the ledger costs the same in year two as on
//! day one.
//!
//! Event-table partitions are versioned: `<table>/dt=<day>/v=<seq>/`. Ingest appends files to a
//! partition's current version; a compaction is a commit in the same sequence that merges a
//! partition's live files into one file of a new version (`v=<its seq>`) and repoints the
//! partition. Sharing the sequence serializes compaction with concurrent ingest commits: a
//! batch planned against the old version conflicts and re-plans.

pub mod checkpoint;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Location;
pub use checkpoint::{BatchRef, Checkpoint, PartitionState};

pub const LEDGER_DIR: &str = "_runner/ledger";
pub const STAGING_DIR: &str = "_runner/staging";
pub const DEDUP_DIR: &str = "_runner/dedup";
/// Reads of a ledger that found a gap (see `read_commits_after`) before giving up.
const GAP_RETRIES: u32 = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConsumedObject {
    /// Key relative to the stream's source root.
    pub key: String,
    pub size: u64,
    pub arrival_ms: i64,
    /// Why the object was refused instead of read, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub table: String,
    /// Partition values in key order.
    pub partition: Vec<String>,
    /// Where the file was staged, relative to the warehouse.
    pub staged: String,
    /// Where it lives once published, relative to the warehouse.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchStats {
    pub records: u64,
    pub valid: u64,
    pub duplicates: u64,
    pub quarantined: BTreeMap<String, u64>,
    pub bytes: u64,
    pub bytes_uncompressed: u64,
}

impl BatchStats {
    pub fn add(&mut self, s: &BatchStats) {
        self.records += s.records;
        self.valid += s.valid;
        self.duplicates += s.duplicates;
        self.bytes += s.bytes;
        self.bytes_uncompressed += s.bytes_uncompressed;
        for (k, v) in &s.quarantined {
            *self.quarantined.entry(k.clone()).or_default() += v;
        }
    }

    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }
}

/// A run's summed batch stats as the record counts its metrics report.
impl From<BatchStats> for crate::job::RecordCounts {
    fn from(s: BatchStats) -> Self {
        crate::job::RecordCounts {
            records: s.records,
            valid: s.valid,
            duplicates: s.duplicates,
            quarantined: s.quarantined,
            bytes_uncompressed: s.bytes_uncompressed,
        }
    }
}

/// A ledger commit: the seq it took, the attempt and run that made it, the files it publishes,
/// and what kind of change it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(from = "StoredCommit", into = "StoredCommit")]
pub struct Commit {
    pub stream: String,
    pub seq: u64,
    /// Unique per attempt: names the staging folder and the dedup-key file.
    pub attempt: String,
    pub run_id: String,
    pub committed_at: String,
    pub files: Vec<FileEntry>,
    pub kind: CommitKind,
}

/// What a commit changes.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitKind {
    /// A batch of drops: consumed, deduplicated, their rows added to their partitions.
    Ingest(Batch),
    /// A compaction: the partitions it rewrote (the commit's files are the merged files, a new
    /// version of each).
    Compaction(Vec<Compacted>),
    /// Files added without consuming anything (a run record of `runner_runs`).
    Append,
    /// A replay of quarantined records (`runner replay`): the records that now pass are added
    /// to their partitions (files that join the current version, like an ingest batch's), and
    /// the quarantine partitions they came from are rewritten with those rows marked replayed
    /// (files of a new version, like a compaction's).
    Replay(Replay),
}

/// What a replay commit accepted and rewrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The quarantine partitions rewritten (their new files are among the commit's files).
    pub rewritten: Vec<Compacted>,
    /// The accepted records' dedup keys, for later batches within the horizon.
    pub dedup_keys: String,
    /// Latest arrival hour of the accepted records' objects (epoch ms).
    pub max_arrival_ms: i64,
    pub stats: BatchStats,
}

/// What an ingest commit consumed and kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub objects: Vec<ConsumedObject>,
    /// The batch's dedup keys (relative to the warehouse), for later batches within the horizon.
    pub dedup_keys: String,
    /// Latest arrival hour among the objects (epoch ms): decides when the keys leave the horizon.
    pub max_arrival_ms: i64,
    pub stats: BatchStats,
}

/// A commit record as stored: one flat object, the same for every kind (and for every record
/// written before the kinds were an enum), so any version of the runner reads any ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredCommit {
    stream: String,
    seq: u64,
    attempt: String,
    run_id: String,
    committed_at: String,
    objects: Vec<ConsumedObject>,
    files: Vec<FileEntry>,
    dedup_keys: String,
    max_arrival_ms: i64,
    stats: BatchStats,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    compacted: Vec<Compacted>,
    /// A replay: `compacted` holds the quarantine partitions it rewrote.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    replay: bool,
}

impl From<StoredCommit> for Commit {
    fn from(s: StoredCommit) -> Commit {
        let kind = if s.replay {
            CommitKind::Replay(Replay {
                rewritten: s.compacted,
                dedup_keys: s.dedup_keys,
                max_arrival_ms: s.max_arrival_ms,
                stats: s.stats,
            })
        } else if !s.compacted.is_empty() {
            CommitKind::Compaction(s.compacted)
        } else if !s.objects.is_empty() {
            CommitKind::Ingest(Batch {
                objects: s.objects,
                dedup_keys: s.dedup_keys,
                max_arrival_ms: s.max_arrival_ms,
                stats: s.stats,
            })
        } else {
            CommitKind::Append
        };
        Commit {
            stream: s.stream,
            seq: s.seq,
            attempt: s.attempt,
            run_id: s.run_id,
            committed_at: s.committed_at,
            files: s.files,
            kind,
        }
    }
}

impl From<Commit> for StoredCommit {
    fn from(c: Commit) -> StoredCommit {
        let mut s = StoredCommit {
            stream: c.stream,
            seq: c.seq,
            attempt: c.attempt,
            run_id: c.run_id,
            committed_at: c.committed_at,
            objects: Vec::new(),
            files: c.files,
            dedup_keys: String::new(),
            max_arrival_ms: 0,
            stats: BatchStats::default(),
            compacted: Vec::new(),
            replay: false,
        };
        match c.kind {
            CommitKind::Ingest(b) => {
                (s.objects, s.dedup_keys, s.max_arrival_ms, s.stats) = (b.objects, b.dedup_keys, b.max_arrival_ms, b.stats);
            }
            CommitKind::Compaction(p) => s.compacted = p,
            CommitKind::Replay(r) => {
                (s.compacted, s.dedup_keys, s.max_arrival_ms, s.stats) = (r.rewritten, r.dedup_keys, r.max_arrival_ms, r.stats);
                s.replay = true;
            }
            CommitKind::Append => {}
        }
        s
    }
}

impl Commit {
    pub fn is_compaction(&self) -> bool {
        matches!(self.kind, CommitKind::Compaction(_))
    }

    /// A batch of drops (not a compaction, nor a run record of `runner_runs`' ledger).
    pub fn is_ingest(&self) -> bool {
        matches!(self.kind, CommitKind::Ingest(_))
    }

    /// The batch of an ingest commit.
    pub fn batch(&self) -> Option<&Batch> {
        match &self.kind {
            CommitKind::Ingest(b) => Some(b),
            _ => None,
        }
    }

    /// The drops an ingest commit consumed (none for the other kinds).
    pub fn objects(&self) -> &[ConsumedObject] {
        self.batch().map(|b| b.objects.as_slice()).unwrap_or_default()
    }

    /// The partitions a compaction or a replay rewrote as a new version (none for the other
    /// kinds).
    pub fn compacted(&self) -> &[Compacted] {
        match &self.kind {
            CommitKind::Compaction(p) => p,
            CommitKind::Replay(r) => &r.rewritten,
            _ => &[],
        }
    }

    /// The dedup keys a commit added and the latest arrival they belong to: an ingest batch's
    /// or a replay's.
    pub fn dedup_ref(&self) -> Option<(i64, &str)> {
        match &self.kind {
            CommitKind::Ingest(b) => Some((b.max_arrival_ms, b.dedup_keys.as_str())),
            CommitKind::Replay(r) if !r.dedup_keys.is_empty() => Some((r.max_arrival_ms, r.dedup_keys.as_str())),
            _ => None,
        }
    }
}

/// One partition a compaction rewrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Compacted {
    pub table: String,
    pub partition: Vec<String>,
    /// The files it replaced, relative to the warehouse.
    pub inputs: Vec<String>,
}

/// Each ledger's state as this process last saw it, by warehouse and stream, with when it was
/// last known to be the whole ledger (a load started then, or this process committed then).
static KNOWN: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<LedgerKey, (LedgerState, Instant)>>> =
    std::sync::LazyLock::new(Default::default);

/// A ledger in [`KNOWN`]: its warehouse and stream.
type LedgerKey = (String, String);

/// How old a state this process knows may be for a reader that accepts the ledger as it was
/// moments ago ([`Ledger::recent`]).
pub const RECENT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the ledger holds for one stream: a checkpoint (or nothing) and the commits after it.
#[derive(Debug, Default, Clone)]
pub struct LedgerState {
    /// The newest checkpoint when the state was read: commits up to its seq are summarised there.
    pub base: Option<Arc<Checkpoint>>,
    /// Commit records after the base, in seq order.
    pub commits: Vec<Commit>,
    /// Publish markers of the commits after the base (every commit of the base is published).
    pub published: HashSet<u64>,
}

impl LedgerState {
    pub fn base_seq(&self) -> u64 {
        self.base.as_ref().map(|b| b.seq).unwrap_or(0)
    }

    /// The last seq committed (the base's when no commit follows it).
    pub fn last_seq(&self) -> u64 {
        self.commits.last().map(|c| c.seq).unwrap_or_else(|| self.base_seq())
    }

    pub fn next_seq(&self) -> u64 {
        self.last_seq() + 1
    }

    /// The last seq up to which every commit is published: what a reader of the tables sees
    /// whole (a commit after it may still have its files in staging).
    pub fn published_through(&self) -> u64 {
        let mut through = self.base_seq();
        for c in &self.commits {
            if c.seq != through + 1 || !self.published.contains(&c.seq) {
                break;
            }
            through = c.seq;
        }
        through
    }

    pub fn attempts(&self) -> BTreeSet<&str> {
        self.commits.iter().map(|c| c.attempt.as_str()).collect()
    }

    /// Newest arrival (epoch ms) among ingest commits.
    pub fn max_arrival_ms(&self) -> Option<i64> {
        let commits = self.commits.iter().filter_map(Commit::batch).map(|b| b.max_arrival_ms).max();
        commits.max(self.base.as_ref().and_then(|b| b.max_arrival_ms))
    }

    /// The current version of a partition: the seq of its latest compaction, 0 before any.
    pub fn version(&self, table: &str, partition: &[String]) -> u64 {
        self.commits
            .iter()
            .rev()
            .find(|c| c.compacted().iter().any(|p| p.table == table && p.partition == partition))
            .map(|c| c.seq)
            .or_else(|| {
                let base = self.base.as_ref()?;
                base.partitions.iter().find(|p| p.table == table && p.partition == partition).map(|p| p.version)
            })
            .unwrap_or(0)
    }

    /// Every partition's state: current version, the last seq that added rows, and the live files
    /// the commits after the base added (the base's own are in its live segment: see
    /// [`Ledger::partitions_with_files`]); by (table, partition).
    pub fn partitions(&self) -> BTreeMap<(String, Vec<String>), PartitionState> {
        let mut out: BTreeMap<(String, Vec<String>), PartitionState> = BTreeMap::new();
        for p in self.base.as_ref().map(|b| b.partitions.as_slice()).unwrap_or_default() {
            out.insert((p.table.clone(), p.partition.clone()), p.clone());
        }
        for c in &self.commits {
            checkpoint::apply(&mut out, c);
        }
        out
    }

    /// Partitions of `table` that a batch with a seq above `watermark` added rows to.
    pub fn changed_after(&self, table: &str, watermark: u64) -> BTreeSet<Vec<String>> {
        self.partitions().into_values().filter(|p| p.table == table && p.changed_seq > watermark).map(|p| p.partition).collect()
    }

    /// The ingest batches whose dedup keys exist: the base's and those of later commits.
    pub fn dedup_batches(&self) -> Vec<BatchRef> {
        let mut out = self.base.as_ref().map(|b| b.batches.clone()).unwrap_or_default();
        out.extend(self.commits.iter().filter_map(|c| Some((c.seq, c.dedup_ref()?))).map(|(seq, (max_arrival_ms, keys))| {
            BatchRef { seq, max_arrival_ms, dedup_keys: keys.to_string(), day_segment: false }
        }));
        out
    }
}

#[derive(Debug, Clone)]
pub struct Ledger {
    wh: Location,
    stream: String,
}

impl Ledger {
    pub fn new(wh: Location, stream: &str) -> Ledger {
        Ledger { wh, stream: stream.to_string() }
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    fn dir(&self) -> String {
        format!("{LEDGER_DIR}/{}", self.stream)
    }

    fn dedup_dir(&self) -> String {
        format!("{DEDUP_DIR}/{}", self.stream)
    }

    fn commit_path(&self, seq: u64) -> object_store::path::Path {
        self.wh.child(&format!("{}/{seq:012}.json", self.dir()))
    }

    fn published_path(&self, seq: u64) -> object_store::path::Path {
        self.wh.child(&format!("{}/{seq:012}.published", self.dir()))
    }

    /// The newest checkpoint and the commit records after it. A process reads a ledger whole
    /// once; later loads read the pointer and only the records after the last one it saw (a
    /// `run --all` loads each stream's ledger in ingest, then again in compaction, and the run
    /// history's once per job: each record is a round trip on S3).
    pub async fn load(&self) -> Result<LedgerState> {
        let known = KNOWN.lock().expect("ledger cache").get(&self.key()).map(|(s, _)| s.clone());
        let asked = Instant::now();
        let state = self.load_since(known).await?;
        self.remember_at(&state, asked);
        Ok(state)
    }

    /// Keeps `state`, which this process just wrote (a commit, its publish, a checkpoint), as
    /// what it knows of the ledger, unless it knows a newer one (two jobs of one process
    /// loading at once).
    pub fn remember(&self, state: &LedgerState) {
        self.remember_at(state, Instant::now());
    }

    fn remember_at(&self, state: &LedgerState, at: Instant) {
        let mut known = KNOWN.lock().expect("ledger cache");
        let newer = known.get(&self.key()).is_none_or(|(k, _)| {
            (state.base_seq(), state.last_seq(), state.published.len()) >= (k.base_seq(), k.last_seq(), k.published.len())
        });
        if newer {
            known.insert(self.key(), (state.clone(), at));
        }
    }

    /// The ledger as this process saw it whole less than [`RECENT`] ago (typically: the ingest
    /// of the same run just committed and published a batch), without a request. For readers
    /// that accept the ledger as it was moments ago: a SQL job deciding which days changed, an
    /// up-to-date check. Such a state is one the ledger really had (or a prefix of one: a
    /// commit by another writer may follow), so it never claims a batch the tables lack; a batch
    /// committed since is seen by the next run, as if this one had started moments earlier.
    pub fn recent(&self) -> Option<LedgerState> {
        let known = KNOWN.lock().expect("ledger cache");
        let (state, at) = known.get(&self.key())?;
        (at.elapsed() < RECENT).then(|| state.clone())
    }

    fn key(&self) -> (String, String) {
        (self.wh.url.clone(), self.stream.clone())
    }

    /// The ledger as far as a reader that has seen it up to `seq` needs it: the newest
    /// checkpoint when it is past `seq`, and the commit records after both, listed from there
    /// (`start-after`), never from the first commit.
    pub async fn load_after(&self, seq: u64) -> Result<LedgerState> {
        for _ in 0..GAP_RETRIES {
            let mut state = LedgerState::default();
            let read_at = crate::fence::boot_ms();
            let pointer = self.pointer().await?;
            // The checkpoint and the records after it at once (the pointer names its seq).
            let base = pointer.filter(|p| *p > seq);
            let from = seq.max(base.unwrap_or(0));
            // A checkpoint gone when read was replaced by a newer one and cleaned up since the
            // pointer was read: look again, like at a gap.
            let checkpoint = async {
                match base {
                    Some(p) => self.read_checkpoint_opt(p).await.map(|c| c.map(|c| Some(Arc::new(c)))),
                    None => Ok(Some(None)),
                }
            };
            let mut after = LedgerState::default();
            let (checkpoint, contiguous) =
                futures::future::try_join(checkpoint, self.read_commits_after(from, &mut after)).await?;
            let (Some(checkpoint), true) = (checkpoint, contiguous) else { continue };
            state.base = checkpoint;
            state.commits = after.commits;
            state.published = after.published;
            // An empty listing shows no gap. A checkpoint past `from` written and cleaned up
            // since the pointer was read needs a clean-up's retention to pass: look again only
            // when this read took that long (a second: the shortest retention tests use is 0).
            if state.commits.is_empty() && crate::fence::boot_ms() - read_at >= 1000 && self.pointer().await? != pointer {
                continue;
            }
            return Ok(state);
        }
        Err(self.gap_error())
    }

    fn gap_error(&self) -> Error {
        Error::Failed(format!(
            "the ledger of stream `{}` kept changing under {GAP_RETRIES} reads (checkpoints written and cleaned up meanwhile); \
             try again",
            self.stream
        ))
    }

    /// Adds the commit records after `from` (and their publish markers) to `state`: one listing
    /// that starts there, then the records, several at once in seq order. Returns false, adding
    /// nothing, when the records do not follow `from` without a gap: a checkpoint past `from`
    /// was written and the records it replaced were cleaned up between reading the checkpoint
    /// and listing (a reader must then read the newer checkpoint, or it would miss the batches
    /// in the gap and ingest their drops again).
    async fn read_commits_after(&self, from: u64, state: &mut LedgerState) -> Result<bool> {
        self.read_commits_between(from, from, state).await
    }

    /// [`Self::read_commits_after`] for a state that holds the records up to `known` already
    /// (`from` <= `known`): the listing starts at `from`, so publish markers written since for
    /// the records it holds are seen; only the records after `known` are read.
    async fn read_commits_between(&self, from: u64, known: u64, state: &mut LedgerState) -> Result<bool> {
        let mut seqs = Vec::new();
        let listed = if from == 0 {
            self.wh.list(&self.dir()).await?
        } else {
            self.wh.list_from(&self.dir(), &format!("{from:012}.published")).await?
        };
        for meta in listed {
            let Some(name) = meta.location.filename() else { continue };
            if let Some(s) = name.strip_suffix(".json").and_then(|s| s.parse::<u64>().ok()) {
                if s > known {
                    seqs.push((s, meta.location.clone()));
                }
            } else if let Some(s) = name.strip_suffix(".published").and_then(|s| s.parse::<u64>().ok()) {
                state.published.insert(s);
            }
        }
        seqs.sort_by_key(|(s, _)| *s);
        if seqs.iter().enumerate().any(|(i, (s, _))| *s != known + 1 + i as u64) {
            return Ok(false);
        }
        // Small objects, one round trip each on S3: read several at once, keep seq order. A
        // record listed and gone when read was cleaned up in between, after a checkpoint past
        // it was written: the same as a gap (the caller reads the newer checkpoint).
        let reads = seqs.into_iter().map(|(seq, path)| async move {
            let Some(bytes) = self.wh.get_opt(&path).await? else { return Ok(None) };
            let c: Commit = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Failed(format!(
                    "ledger record {path} is corrupt ({e}): it was written atomically, so the warehouse was changed by hand"
                ))
            })?;
            if c.seq != seq {
                return Err(Error::Failed(format!("ledger record {path} says seq {}, its name says {seq}", c.seq)));
            }
            Ok(Some(c))
        });
        let commits: Vec<Option<Commit>> = futures::stream::iter(reads).buffered(16).try_collect().await?;
        let Some(commits) = commits.into_iter().collect::<Option<Vec<Commit>>>() else { return Ok(false) };
        state.commits.extend(commits);
        Ok(true)
    }

    /// The last seq up to which every commit is published ([`LedgerState::published_through`]):
    /// the checkpoint pointer and one listing of the publish markers (a few requests, whatever
    /// the ledger's history).
    pub async fn published_through(&self) -> Result<u64> {
        // The pointer and the records at once (one round trip on S3, not two): the folder holds
        // only the records since the clean-up, a page. A checkpoint written between the two reads
        // can only make the answer lower than the truth (its batches' markers gone from a newer
        // listing), which makes an up-to-date check run the job, never skip one.
        let (pointer, listed) = futures::future::try_join(self.pointer(), self.wh.list(&self.dir())).await?;
        let from = pointer.unwrap_or(0);
        let published: HashSet<u64> =
            listed.iter().filter_map(|m| m.location.filename()?.strip_suffix(".published")?.parse::<u64>().ok()).collect();
        let mut through = from;
        while published.contains(&(through + 1)) {
            through += 1;
        }
        Ok(through)
    }

    /// `known` brought up to date: only the commit records after its last seq are read (a
    /// listing from there, then each new record), or the newest checkpoint when one was written
    /// past it. A process that records many runs reads the ledger once, then what is new.
    pub async fn load_since(&self, known: Option<LedgerState>) -> Result<LedgerState> {
        let Some(mut state) = known else { return self.load_after(0).await };
        // Listed from the last seq published whole: a batch this process saw committed and
        // another run published since (a roll-forward) is seen published.
        let (from, last) = (state.published_through(), state.last_seq());
        let contiguous = self.read_commits_between(from, last, &mut state).await?;
        // A checkpoint written since (by this process or another): read the ledger afresh. The
        // pointer is read after the listing: a checkpoint written and cleaned up before it is
        // then seen, even when the listing found nothing after `from` (the newest checkpoint is
        // never deleted).
        if !contiguous || self.pointer().await?.unwrap_or(0) != state.base_seq() {
            return self.load_after(0).await;
        }
        Ok(state)
    }

    /// Commits a batch: `Err(CommitConflict)` when another attempt committed this `seq` first,
    /// `Err(StaleAttempt)` when `attempt` is older than `grace` (both: re-plan). The record's
    /// create-if-absent is read back when the store's answer is "already exists" (see
    /// [`Location::put_if_absent`]): a retried create S3 had applied is this attempt's own.
    pub async fn commit(&self, attempt: &Attempt, c: &Commit, grace: std::time::Duration) -> Result<()> {
        self.commit_within(attempt, c, grace, std::time::Duration::MAX).await
    }

    /// [`Ledger::commit`] next to clean-ups of checkpoints older than `retention`: an attempt
    /// that lived that long may have planned a seq a newer checkpoint summarised and whose
    /// record clean-up deleted (so its create would succeed). That is a conflict: it re-plans.
    /// Checked (one listing) only for attempts that old.
    pub async fn commit_within(
        &self,
        attempt: &Attempt,
        c: &Commit,
        grace: std::time::Duration,
        retention: std::time::Duration,
    ) -> Result<()> {
        debug_assert_eq!((attempt.id.as_str(), attempt.seq), (c.attempt.as_str(), c.seq));
        // Measured on this process's clock that counts through suspends, never against another
        // machine's: staging is collected only once its seq is committed by another attempt,
        // so this is a second line (an attempt that slept through its lease and the grace
        // re-plans from the ledger as it is now instead of committing a plan made long ago).
        let age = attempt.age();
        let stale = || Error::StaleAttempt { stream: self.stream.clone(), seq: c.seq, age_s: attempt.age().as_secs() };
        if age > grace {
            return Err(stale());
        }
        // Right before the create: a checkpoint at or past the seq means the seq is taken
        // (its record may be gone). One written after this look was made from a ledger holding
        // another attempt's record of the seq, which our create then meets, unless that record
        // was cleaned up in between: a whole retention away, not the moment to the create.
        if age >= retention && self.pointer().await?.is_some_and(|p| p >= c.seq) {
            // Another attempt committed it (a conflict, like a create that meets its record).
            return Err(Error::CommitConflict { stream: self.stream.clone(), seq: c.seq });
        }
        let body = serde_json::to_vec_pretty(c).map_err(|e| Error::Internal(e.to_string()))?;
        if !self.wh.put_if_absent(&self.commit_path(c.seq), Bytes::from(body)).await? {
            return Err(Error::CommitConflict { stream: self.stream.clone(), seq: c.seq });
        }
        Ok(())
    }

    pub async fn mark_published(&self, seq: u64) -> Result<()> {
        self.wh.put(&self.published_path(seq), Bytes::from_static(b"")).await
    }

    /// Where `attempt` stages its files: named by the seq it planned, so its staging is
    /// garbage exactly when that seq is committed by another attempt.
    /// Deletes `staged`, the files an attempt staged that no commit names (it lost its seq, or
    /// never committed), and its folder once empty (a local disk keeps empty folders): now,
    /// not at a later clean-up. A failure is a warning: the files are garbage either way.
    pub async fn discard_staging(&self, attempt: &Attempt, staged: Vec<object_store::path::Path>) {
        let deleted = self.wh.delete_many(staged).await;
        if let Err(e) = deleted.and(self.wh.remove_empty_dirs(&self.staging_prefix(attempt)).await) {
            tracing::warn!(stream = %self.stream, "could not delete the staging of an attempt that lost its seq: {e}");
        }
    }

    pub fn staging_prefix(&self, attempt: &Attempt) -> String {
        format!("{STAGING_DIR}/{}/{:012}-{}", self.stream, attempt.seq, attempt.id)
    }

    pub fn dedup_path(&self, attempt: &Attempt) -> String {
        format!("{DEDUP_DIR}/{}/{:012}-{}.keys", self.stream, attempt.seq, attempt.id)
    }

    /// Deletes the staged files and dedup-key files of attempts that can never commit: those
    /// whose planned seq is committed by another attempt (or summarised by the checkpoint, so
    /// published long ago). Age alone never makes staging garbage: a writer paused for an hour
    /// between staging and commit would otherwise commit files that are gone. Staging of the
    /// next seq (no commit yet) is left, even of a crashed attempt: the next commit of the
    /// stream makes it garbage.
    ///
    /// Staging from before seqs named it (`staging/<stream>/<attempt>/`) is collected by age,
    /// once older than `legacy_grace`.
    pub async fn collect_garbage(&self, state: &LedgerState, legacy_grace: chrono::Duration) -> Result<u64> {
        let committed: HashSet<(u64, &str)> = state.commits.iter().map(|c| (c.seq, c.attempt.as_str())).collect();
        let cutoff = chrono::Utc::now() - legacy_grace;
        let mut garbage = Vec::new();
        let mut abandoned = BTreeSet::new();
        let staging = format!("{STAGING_DIR}/{}", self.stream);
        let dedup = self.dedup_dir();
        // Both folders listed at once (a round trip each on S3).
        let (staged, keys) = futures::future::try_join(self.wh.list(&staging), self.wh.list(&dedup)).await?;
        for (prefix, listed) in [(&staging, staged), (&dedup, keys)] {
            for meta in listed {
                let Some(rel) = self.wh.relative(&meta.location) else { continue };
                let rest = rel.strip_prefix(prefix.as_str()).unwrap_or(rel).trim_start_matches('/');
                // staging/<stream>/<seq>-<attempt>/...   or   dedup/<stream>/<seq>-<attempt>.keys
                let folder =
                    if prefix == &staging { rest.split('/').next().unwrap_or("") } else { rest.trim_end_matches(".keys") };
                let planned = folder.split_once('-').and_then(|(s, a)| Some((s.parse::<u64>().ok()?, a)));
                let collect = match planned {
                    // Committed by this attempt: publish moves its staging away, and its dedup
                    // keys are the ledger's.
                    Some(p) if committed.contains(&p) => false,
                    // Dedup keys up to the checkpoint are the clean-up's (it knows which it
                    // still needs); staging there was published or lost its seq.
                    Some((seq, _)) if seq <= state.base_seq() => prefix == &staging,
                    // Another attempt committed the seq this one planned.
                    Some((seq, _)) => seq <= state.last_seq(),
                    None if prefix == &staging => !state.attempts().contains(folder) && meta.last_modified < cutoff,
                    None => false,
                };
                if collect {
                    garbage.push(meta.location.clone());
                    if prefix == &staging {
                        abandoned.insert(format!("{staging}/{folder}"));
                    }
                }
            }
        }
        let removed = self.wh.delete_many(garbage).await?;
        // Only the folders of the attempts cleared here: `staging/<stream>` itself is shared, and
        // removing it while another run creates its own attempt's folder below it fails that
        // run's write.
        for folder in abandoned {
            self.wh.remove_empty_dirs(&folder).await?;
        }
        Ok(removed)
    }
}

/// One try at committing the next seq of a ledger: it stages under its own id and planned seq,
/// and may commit only while younger than the commit grace.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: String,
    pub seq: u64,
    /// [`crate::fence::boot_ms`] when it was planned (a clock that counts through suspends).
    started_ms: u64,
}

impl Attempt {
    pub fn new(seq: u64) -> Attempt {
        Attempt { id: uuid::Uuid::now_v7().simple().to_string(), seq, started_ms: crate::fence::boot_ms() }
    }

    #[cfg(test)]
    pub fn for_test(id: &str, seq: u64) -> Attempt {
        Attempt { id: id.to_string(), seq, started_ms: crate::fence::boot_ms() }
    }

    pub fn age(&self) -> std::time::Duration {
        std::time::Duration::from_millis(crate::fence::boot_ms().saturating_sub(self.started_ms))
    }
}
/// Encodes dedup keys as little-endian u128s.
pub fn encode_keys(keys: &[u128]) -> Bytes {
    let mut out = Vec::with_capacity(keys.len() * 16);
    for k in keys {
        out.extend_from_slice(&k.to_le_bytes());
    }
    Bytes::from(out)
}

/// Encodes (key, arrival ms) pairs: 16 + 8 little-endian bytes each.
pub fn encode_pairs(pairs: &[(u128, i64)]) -> Bytes {
    let mut out = Vec::with_capacity(pairs.len() * 24);
    for (k, t) in pairs {
        out.extend_from_slice(&k.to_le_bytes());
        out.extend_from_slice(&t.to_le_bytes());
    }
    Bytes::from(out)
}

pub fn decode_pairs(b: &[u8]) -> Result<Vec<(u128, i64)>> {
    if !b.len().is_multiple_of(24) {
        return Err(Error::Failed("a dedup-key segment has a partial entry: the warehouse was changed by hand".into()));
    }
    Ok(b.chunks_exact(24)
        .map(|c| {
            (u128::from_le_bytes(c[..16].try_into().expect("16 bytes")), i64::from_le_bytes(c[16..].try_into().expect("8 bytes")))
        })
        .collect())
}

pub fn decode_keys(b: &[u8]) -> Result<Vec<u128>> {
    if !b.len().is_multiple_of(16) {
        return Err(Error::Failed("a dedup-key file has a partial key: the warehouse was changed by hand".into()));
    }
    Ok(b.chunks_exact(16).map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes"))).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ingest commit of one drop `k<seq>` by attempt `a<seq>`, without dedup keys.
    pub(crate) fn commit(seq: u64) -> Commit {
        Commit {
            stream: "s".into(),
            seq,
            attempt: format!("a{seq}"),
            run_id: "r".into(),
            committed_at: "now".into(),
            files: vec![],
            kind: CommitKind::Ingest(Batch {
                objects: vec![ConsumedObject { key: format!("k{seq}"), size: 1, arrival_ms: 0, refused: None }],
                dedup_keys: String::new(),
                max_arrival_ms: 0,
                stats: BatchStats::default(),
            }),
        }
    }

    #[tokio::test]
    async fn only_one_commit_per_seq() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let l = Ledger::new(wh, "s");
        let hour = std::time::Duration::from_secs(3600);
        l.commit(&attempt_of(&commit(1)), &commit(1), hour).await.unwrap();
        // The same record again is this attempt's own (a retried create); another attempt's is a conflict.
        l.commit(&attempt_of(&commit(1)), &commit(1), hour).await.unwrap();
        let other = Commit { attempt: "another".into(), ..commit(1) };
        assert!(matches!(l.commit(&attempt_of(&other), &other, hour).await, Err(Error::CommitConflict { seq: 1, .. })));
        l.commit(&attempt_of(&commit(2)), &commit(2), hour).await.unwrap();
        l.mark_published(1).await.unwrap();
        let st = l.load().await.unwrap();
        assert_eq!(st.next_seq(), 3);
        assert!(st.published.contains(&1) && !st.published.contains(&2));
        assert!(l.consumed(&st, None).await.unwrap().contains("k2"));
    }

    /// A process that saw a batch committed but not published sees it published once another
    /// run rolled it forward: its next load lists the markers from the last batch published
    /// whole, not from the last seq it knows (the jobs after an ingest take the ledger as this
    /// process knows it, and would take the batch for unpublished, hence up to date).
    #[tokio::test]
    async fn a_later_load_sees_a_batch_it_knew_unpublished_published() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let l = Ledger::new(wh, "s");
        let hour = std::time::Duration::from_secs(3600);
        l.commit(&attempt_of(&commit(1)), &commit(1), hour).await.unwrap();
        l.mark_published(1).await.unwrap();
        l.commit(&attempt_of(&commit(2)), &commit(2), hour).await.unwrap();
        assert_eq!(l.load().await.unwrap().published_through(), 1);
        l.mark_published(2).await.unwrap();
        assert_eq!(l.load().await.unwrap().published_through(), 2);
        assert_eq!(l.recent().unwrap().published_through(), 2, "what the process knows says so too");
    }

    fn attempt_of(c: &Commit) -> Attempt {
        Attempt { id: c.attempt.clone(), seq: c.seq, started_ms: crate::fence::boot_ms() }
    }

    /// An attempt older than the grace does not commit, whatever the ledger holds: it re-plans.
    #[tokio::test]
    async fn an_attempt_older_than_the_grace_does_not_commit() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let l = Ledger::new(wh, "s");
        let old = Attempt { started_ms: crate::fence::boot_ms() - 5_000, ..attempt_of(&commit(1)) };
        let r = l.commit(&old, &commit(1), std::time::Duration::from_secs(2)).await;
        assert!(matches!(r, Err(Error::StaleAttempt { seq: 1, age_s: 5, .. })), "{r:?}");
        assert_eq!(l.load_after(0).await.unwrap().next_seq(), 1, "nothing committed");
    }

    /// Staging is garbage when its seq went to another attempt, never by age: the staging of
    /// the next seq survives a zero grace (a paused writer may still commit it), and is collected
    /// once that seq is committed by someone else.
    #[tokio::test]
    async fn staging_is_garbage_once_its_seq_is_another_attempts_never_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let l = Ledger::new(wh.clone(), "s");
        let hour = std::time::Duration::from_secs(3600);
        let stage = |a: &Attempt| {
            let (wh, staging, dedup) = (wh.clone(), l.staging_prefix(a), l.dedup_path(a));
            async move {
                wh.put(&wh.child(&format!("{staging}/t-00000.parquet")), Bytes::from_static(b"x")).await.unwrap();
                wh.put(&wh.child(&dedup), Bytes::from_static(b"")).await.unwrap();
            }
        };
        let exists = |a: &Attempt| {
            let (wh, staging, dedup) = (wh.clone(), l.staging_prefix(a), l.dedup_path(a));
            async move {
                (
                    wh.exists(&wh.child(&format!("{staging}/t-00000.parquet"))).await.unwrap(),
                    wh.exists(&wh.child(&dedup)).await.unwrap(),
                )
            }
        };
        let winner = attempt_of(&commit(1));
        let loser = Attempt::new(1);
        let paused = Attempt::new(2);
        for a in [&winner, &loser, &paused] {
            stage(a).await;
        }
        // Staging from before seqs named it: collected by age.
        let legacy = wh.child(&format!("{STAGING_DIR}/s/0123456789abcdef/t-00000.parquet"));
        wh.put(&legacy, Bytes::from_static(b"x")).await.unwrap();
        l.commit(&winner, &commit(1), hour).await.unwrap();
        let state = l.load_after(0).await.unwrap();
        let removed = l.collect_garbage(&state, chrono::Duration::zero()).await.unwrap();
        assert_eq!(removed, 3, "the loser's file and keys, and the legacy file");
        assert_eq!(exists(&winner).await, (true, true), "the committed attempt's staging is publish's");
        assert_eq!(exists(&loser).await, (false, false));
        assert_eq!(exists(&paused).await, (true, true), "the next seq's staging is never collected by age");
        assert!(!wh.exists(&legacy).await.unwrap());
        // Another attempt takes seq 2: the paused one can never commit it, its staging goes.
        let c2 = commit(2);
        l.commit(&attempt_of(&c2), &c2, hour).await.unwrap();
        let state = l.load_after(0).await.unwrap();
        l.collect_garbage(&state, chrono::Duration::zero()).await.unwrap();
        assert_eq!(exists(&paused).await, (false, false));
        let late = Commit { attempt: paused.id.clone(), ..commit(2) };
        assert!(matches!(l.commit(&paused, &late, hour).await, Err(Error::CommitConflict { seq: 2, .. })));
    }

    /// Records as every earlier runner wrote them (one flat object) read as their kinds, and a
    /// kind writes back the same object.
    #[test]
    fn stored_records_read_as_their_kinds_and_write_back_the_same() {
        let flat = |objects: &str, compacted: &str| {
            format!(
                r#"{{"stream":"s","seq":3,"attempt":"a","run_id":"r","committed_at":"t","objects":{objects},"files":[],"dedup_keys":"{}","max_arrival_ms":{},"stats":{{"records":{n},"valid":{n},"duplicates":0,"quarantined":{{}},"bytes":{n},"bytes_uncompressed":{n}}}{compacted}}}"#,
                if objects == "[]" { "" } else { "_runner/dedup/s/3-a.keys" },
                if objects == "[]" { 0 } else { 7 },
                n = if objects == "[]" { 0 } else { 2 },
            )
        };
        let ingest = flat(r#"[{"key":"k","size":1,"arrival_ms":7}]"#, "");
        let compaction = flat("[]", r#","compacted":[{"table":"t","partition":["2026-11-20"],"inputs":["f"]}]"#);
        let record = flat("[]", "");
        let c: Commit = serde_json::from_str(&ingest).unwrap();
        assert!(
            matches!(&c.kind, CommitKind::Ingest(b) if b.objects.len() == 1 && b.max_arrival_ms == 7 && b.stats.records == 2)
        );
        let c: Commit = serde_json::from_str(&compaction).unwrap();
        assert!(matches!(&c.kind, CommitKind::Compaction(p) if p[0].table == "t"));
        let c: Commit = serde_json::from_str(&record).unwrap();
        assert_eq!(c.kind, CommitKind::Append);
        // A replay: no objects, its dedup keys and the quarantine partitions it rewrote.
        let replay = r#"{"stream":"s","seq":4,"attempt":"b","run_id":"r","committed_at":"t","objects":[],"files":[],"dedup_keys":"_runner/dedup/s/4-b.keys","max_arrival_ms":9,"stats":{"records":3,"valid":1,"duplicates":1,"quarantined":{"missing_field":1},"bytes":0,"bytes_uncompressed":0},"compacted":[{"table":"quarantine","partition":["2026-11-20","s"],"inputs":["q"]}],"replay":true}"#.to_string();
        let c: Commit = serde_json::from_str(&replay).unwrap();
        assert!(matches!(&c.kind, CommitKind::Replay(r) if r.rewritten[0].table == "quarantine" && r.stats.valid == 1));
        assert_eq!(c.dedup_ref(), Some((9, "_runner/dedup/s/4-b.keys")));
        assert_eq!(c.compacted().len(), 1);
        assert!(!c.is_compaction() && c.batch().is_none() && c.objects().is_empty());
        for text in [ingest, compaction, replay] {
            let c: Commit = serde_json::from_str(&text).unwrap();
            let back: serde_json::Value = serde_json::to_value(&c).unwrap();
            assert_eq!(back, serde_json::from_str::<serde_json::Value>(&text).unwrap());
        }
    }

    #[test]
    fn keys_round_trip() {
        let k = vec![1u128, u128::MAX, 42];
        assert_eq!(decode_keys(&encode_keys(&k)).unwrap(), k);
        assert!(decode_keys(&[0u8; 7]).is_err());
        let p = vec![(1u128, -5i64), (u128::MAX, i64::MAX)];
        assert_eq!(decode_pairs(&encode_pairs(&p)).unwrap(), p);
        assert!(decode_pairs(&[0u8; 16]).is_err());
    }
}
