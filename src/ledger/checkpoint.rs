//! Ledger checkpoints, in the manner of Delta Lake's `_last_checkpoint`: what a run must know of
//! the commits up to a seq, in a few objects, so a run reads the newest checkpoint and the
//! commits after it instead of every commit ever written.
//!
//! ```text
//! <warehouse>/_runner/checkpoints/<stream>/<seq>.json                 the checkpoint up to <seq>
//! <warehouse>/_runner/checkpoints/<stream>/<seq>/consumed-<day>.json  consumed drop keys of one arrival day
//! <warehouse>/_runner/checkpoints/<stream>/<seq>/dedup-<day>.keys      dedup keys and arrivals of one day
//! <warehouse>/_runner/checkpoints/<stream>/<seq>/live.json             every partition's live files
//! <warehouse>/_runner/checkpoints/<stream>/_cleaned                   {"through": <seq>} of the last clean-up
//! ```
//!
//! What a checkpoint keeps, so that exactly-once holds for every drop (README "Exactly once"):
//! - every consumed drop key, ever, grouped by arrival day: a drop re-listed by `--full-listing`,
//!   or delivered late inside the lookback, is recognised whatever its age. A run loads only the
//!   days of the drops it listed, so a normal run reads the segments of a day or two;
//! - the newest arrival among ingest commits (discovery lists from it minus the lookback);
//! - per partition of the stream's tables: its current version, the last seq that added rows
//!   (incremental SQL jobs rebuild the days changed after their watermark) and, in a segment
//!   only compaction reads, its live files;
//! - the dedup keys of the batches whose newest drop arrived within lookback + horizon of the
//!   newest arrival, one segment per arrival day: every drop discovery can list is deduplicated
//!   against them.
//!
//! A checkpoint covers only a prefix of published commits, so roll-forward never needs a
//! record it replaced. It is created like a commit (create-if-absent), after its segments, so
//! its existence is its publication: the newest checkpoint is the highest `<seq>.json` in one
//! delimited listing of the folder. There is no mutable pointer to read, then write, so two
//! checkpointers can never move it backwards (one that wrote an older checkpoint late only
//! adds a file below the newest). The listing is bounded: clean-up deletes what the newest
//! replaced.
//! What it replaces (commit records up to its seq, older checkpoints, dedup keys out of the
//! horizon) is deleted by a *later* run, once the checkpoint is older than the retention: a run
//! that read the ledger before the pointer moved may still be listing those commits.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Commit, FileEntry, Ledger, LedgerState};
use crate::dates::{day_of_ms, day_string};
use crate::error::{Error, Result};
use crate::failpoint;

pub const CHECKPOINT_DIR: &str = "_runner/checkpoints";

/// The ledger up to `seq`, summarised.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub stream: String,
    pub seq: u64,
    pub written_at: DateTime<Utc>,
    /// The run that wrote it (it never deletes what the checkpoint replaces).
    pub run_id: String,
    /// Commit records summarised, from the first one.
    pub commits: u64,
    /// Newest arrival (epoch ms) among ingest commits.
    pub max_arrival_ms: Option<i64>,
    /// Arrival day (`YYYY-MM-DD`) -> the segment holding that day's consumed keys.
    pub consumed: BTreeMap<String, Segment>,
    /// Every partition's version and last change (its live files are in `live`).
    pub partitions: Vec<PartitionState>,
    /// The segment with every partition's live files (what compaction merges): only compaction
    /// reads it, so an ingest run's cost does not grow with the files a partition holds.
    #[serde(default)]
    pub live: String,
    /// Ingest batches whose dedup keys are kept.
    pub batches: Vec<BatchRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Segment {
    /// Relative to the warehouse.
    pub path: String,
    pub keys: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionState {
    pub table: String,
    pub partition: Vec<String>,
    /// Seq of the compaction that made the current version (0: never compacted).
    pub version: u64,
    /// Last seq whose batch added rows to the partition.
    pub changed_seq: u64,
    /// Files of the current version (in a checkpoint: empty, see [`Checkpoint::live`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub live: Vec<FileEntry>,
}

/// Dedup keys that may still meet a duplicate: one ingest batch's key file, or a checkpoint's
/// segment of one arrival day holding the keys of all its batches with their arrivals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchRef {
    /// The batch's seq (a day segment: its newest batch's).
    pub seq: u64,
    pub max_arrival_ms: i64,
    pub dedup_keys: String,
    /// A day segment: (key, arrival) pairs instead of the keys of one batch arriving at
    /// `max_arrival_ms`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub day_segment: bool,
}

impl Checkpoint {
    /// Every segment the checkpoint points at (relative to the warehouse): consumed keys, dedup
    /// keys, live files. A clean-up keeps these.
    pub fn segments(&self) -> HashSet<&str> {
        self.consumed
            .values()
            .map(|s| s.path.as_str())
            .chain(self.batches.iter().map(|b| b.dedup_keys.as_str()))
            .chain(std::iter::once(self.live.as_str()))
            .collect()
    }
}

/// The arrival day of an object, as segments are keyed.
pub fn arrival_day(arrival_ms: i64) -> String {
    day_string(day_of_ms(arrival_ms))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cleaned {
    through: u64,
}

/// What a clean-up removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cleanup {
    pub commit_records: u64,
    pub checkpoints: u64,
    pub dedup_files: u64,
    /// What the newest checkpoint replaced is gone (nothing is left for a later clean-up).
    pub finished: bool,
}

impl Cleanup {
    pub fn total(&self) -> u64 {
        self.commit_records + self.checkpoints + self.dedup_files
    }
}

/// The checkpoint `state` would become when summarised up to `seq`, from the base's partitions
/// with their files (`parts`): partitions, kept dedup batches, newest arrival, commit count. The
/// consumed segments are [`Ledger::write_checkpoint`]'s.
fn summarise_from(
    state: &LedgerState,
    mut parts: BTreeMap<(String, Vec<String>), PartitionState>,
    seq: u64,
    keep_arrivals_ms: i64,
) -> (Vec<PartitionState>, Vec<BatchRef>, Option<i64>, u64) {
    let base = state.base.as_deref();
    let mut batches: Vec<BatchRef> = base.map(|b| b.batches.clone()).unwrap_or_default();
    let mut max_arrival = base.and_then(|b| b.max_arrival_ms);
    let mut n = base.map(|b| b.commits).unwrap_or(0);
    for c in state.commits.iter().filter(|c| c.seq <= seq) {
        n += 1;
        apply(&mut parts, c);
        // The newest arrival is an ingest batch's (discovery lists from it); a replay's keys are
        // kept like a batch's, by the arrival of the objects its records came from.
        if let Some(b) = c.batch() {
            max_arrival = max_arrival.max(Some(b.max_arrival_ms));
        }
        if let Some((max_arrival_ms, keys)) = c.dedup_ref() {
            batches.push(BatchRef { seq: c.seq, max_arrival_ms, dedup_keys: keys.to_string(), day_segment: false });
        }
    }
    if let Some(newest) = max_arrival {
        batches.retain(|b| b.max_arrival_ms >= newest.saturating_sub(keep_arrivals_ms));
    }
    (parts.into_values().collect(), batches, max_arrival, n)
}

/// Applies one commit to the partition states.
pub(super) fn apply(parts: &mut BTreeMap<(String, Vec<String>), PartitionState>, c: &Commit) {
    let entry = |parts: &mut BTreeMap<(String, Vec<String>), PartitionState>, table: &str, partition: &[String]| {
        parts.entry((table.to_string(), partition.to_vec())).or_insert_with(|| PartitionState {
            table: table.to_string(),
            partition: partition.to_vec(),
            version: 0,
            changed_seq: 0,
            live: Vec::new(),
        });
    };
    for p in c.compacted() {
        entry(parts, &p.table, &p.partition);
        let s = parts.get_mut(&(p.table.clone(), p.partition.clone())).expect("inserted");
        s.version = c.seq;
        s.live.clear();
    }
    for f in &c.files {
        entry(parts, &f.table, &f.partition);
        let s = parts.get_mut(&(f.table.clone(), f.partition.clone())).expect("inserted");
        s.live.push(f.clone());
        if !c.is_compaction() {
            s.changed_seq = c.seq;
        }
    }
}

impl Ledger {
    fn checkpoint_dir(&self) -> String {
        format!("{CHECKPOINT_DIR}/{}", self.stream)
    }

    fn checkpoint_path(&self, seq: u64) -> String {
        format!("{}/{seq:012}.json", self.checkpoint_dir())
    }

    fn cleaned_path(&self) -> String {
        format!("{}/_cleaned", self.checkpoint_dir())
    }

    /// The seq of the newest checkpoint (`None`: never checkpointed): the highest `<seq>.json`
    /// directly in the stream's checkpoint folder (one delimited listing, as cheap as a read).
    pub async fn pointer(&self) -> Result<Option<u64>> {
        let files = self.wh.list_shallow(&self.checkpoint_dir()).await?;
        Ok(files.iter().filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse::<u64>().ok()).max())
    }

    /// The seq the last clean-up removed state through (0: never).
    pub async fn cleaned_through(&self) -> Result<u64> {
        match self.wh.get_opt(&self.wh.child(&self.cleaned_path())).await? {
            Some(b) => Ok(serde_json::from_slice::<Cleaned>(&b).map_err(|e| self.corrupt(&self.cleaned_path(), e))?.through),
            None => Ok(0),
        }
    }

    pub async fn read_checkpoint(&self, seq: u64) -> Result<Checkpoint> {
        let path = self.checkpoint_path(seq);
        let b = self.wh.get(&self.wh.child(&path)).await?;
        serde_json::from_slice(&b).map_err(|e| self.corrupt(&path, e))
    }

    /// [`Self::read_checkpoint`], `None` when it is gone (a newer one's clean-up removed it).
    pub(super) async fn read_checkpoint_opt(&self, seq: u64) -> Result<Option<Checkpoint>> {
        let path = self.checkpoint_path(seq);
        let Some(b) = self.wh.get_opt(&self.wh.child(&path)).await? else { return Ok(None) };
        serde_json::from_slice(&b).map(Some).map_err(|e| self.corrupt(&path, e))
    }

    fn corrupt(&self, path: &str, e: serde_json::Error) -> Error {
        Error::Failed(format!(
            "ledger object {path} of stream `{}` is corrupt ({e}): it was written atomically, so the warehouse was changed by hand",
            self.stream
        ))
    }

    /// Consumed drop keys of the arrival days `days` (`None`: every day): the checkpoint's
    /// segments of those days and the commits after it.
    pub async fn consumed(&self, state: &LedgerState, days: Option<&BTreeSet<String>>) -> Result<HashSet<String>> {
        let mut out: HashSet<String> = state.commits.iter().flat_map(|c| c.objects().iter().map(|o| o.key.clone())).collect();
        if let Some(base) = &state.base {
            let wanted: Vec<&Segment> =
                base.consumed.iter().filter(|(d, _)| days.is_none_or(|w| w.contains(*d))).map(|(_, s)| s).collect();
            let reads = wanted.into_iter().map(|s| self.read_segment(&s.path));
            for keys in futures::future::try_join_all(reads).await? {
                out.extend(keys);
            }
        }
        Ok(out)
    }

    async fn read_segment(&self, path: &str) -> Result<Vec<String>> {
        let b = self.wh.get(&self.wh.child(path)).await?;
        serde_json::from_slice(&b).map_err(|e| self.corrupt(path, e))
    }

    /// Writes a checkpoint of `state` when `every` commits follow its base and the commits are
    /// published that far, then moves the pointer; returns the state rebased on it. Does
    /// nothing when another run moved the pointer since `state` was read (its checkpoint
    /// serves as well). `keep_arrivals_ms` is lookback + dedup horizon.
    pub async fn maybe_checkpoint(
        &self,
        state: LedgerState,
        every: u64,
        keep_arrivals_ms: i64,
        run_id: &str,
    ) -> Result<LedgerState> {
        // The published prefix: a checkpoint never replaces a commit roll-forward may need.
        let mut seq = state.base_seq();
        for c in &state.commits {
            if !state.published.contains(&c.seq) {
                break;
            }
            seq = c.seq;
        }
        let fresh = state.commits.iter().filter(|c| c.seq <= seq).count() as u64;
        if fresh < every {
            return Ok(state);
        }
        if self.pointer().await? != state.base.as_ref().map(|b| b.seq) {
            return Ok(state);
        }
        let cp = match self.write_checkpoint(&state, seq, keep_arrivals_ms, run_id).await {
            Ok(cp) => cp,
            // Another run checkpointed past our base meanwhile and (with a short retention)
            // cleaned the base up under us: its checkpoint serves, ours is not needed.
            Err(e) if self.pointer().await? != state.base.as_ref().map(|b| b.seq) => {
                tracing::debug!(stream = %self.stream, "another run checkpointed first ({e}); this one does not");
                return Ok(state);
            }
            Err(e) => return Err(e),
        };
        let LedgerState { commits, published, .. } = state;
        Ok(LedgerState { base: Some(Arc::new(cp)), commits: commits.into_iter().filter(|c| c.seq > seq).collect(), published })
    }

    /// Every partition's state with its live files: the base's segment, then the commits.
    pub async fn partitions_with_files(&self, state: &LedgerState) -> Result<BTreeMap<(String, Vec<String>), PartitionState>> {
        let mut out: BTreeMap<(String, Vec<String>), PartitionState> = BTreeMap::new();
        if let Some(base) = &state.base {
            for p in &base.partitions {
                out.insert((p.table.clone(), p.partition.clone()), p.clone());
            }
            if !base.live.is_empty() {
                let b = self.wh.get(&self.wh.child(&base.live)).await?;
                let live: Vec<(String, Vec<String>, Vec<FileEntry>)> =
                    serde_json::from_slice(&b).map_err(|e| self.corrupt(&base.live, e))?;
                for (table, partition, files) in live {
                    if let Some(p) = out.get_mut(&(table, partition)) {
                        p.live = files;
                    }
                }
            }
        }
        for c in &state.commits {
            apply(&mut out, c);
        }
        Ok(out)
    }

    /// Writes the checkpoint of `state` up to `seq` (published commits) and moves the pointer.
    pub async fn write_checkpoint(
        &self,
        state: &LedgerState,
        seq: u64,
        keep_arrivals_ms: i64,
        run_id: &str,
    ) -> Result<Checkpoint> {
        let base_only = LedgerState { base: state.base.clone(), commits: Vec::new(), published: HashSet::new() };
        let base_parts = self.partitions_with_files(&base_only).await?;
        let (partitions, batches, max_arrival_ms, commits) = summarise_from(state, base_parts, seq, keep_arrivals_ms);
        let batches = self.consolidate_dedup(batches, seq).await?;
        // Consumed keys: the base's segments, rewritten only for the days new commits touched.
        let mut consumed = state.base.as_ref().map(|b| b.consumed.clone()).unwrap_or_default();
        let mut new_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in state.commits.iter().filter(|c| c.seq <= seq) {
            for o in c.objects() {
                new_keys.entry(arrival_day(o.arrival_ms)).or_default().push(o.key.clone());
            }
        }
        let writes = new_keys.into_iter().map(|(day, mut keys)| {
            let old = consumed.get(&day).map(|s| s.path.clone());
            async move {
                if let Some(p) = old {
                    keys.extend(self.read_segment(&p).await?);
                }
                keys.sort();
                keys.dedup();
                let path = format!("{}/{seq:012}/consumed-{day}.json", self.checkpoint_dir());
                let body = serde_json::to_vec(&keys).map_err(|e| Error::Internal(e.to_string()))?;
                self.wh.put(&self.wh.child(&path), Bytes::from(body)).await?;
                Ok::<_, Error>((day, Segment { path, keys: keys.len() as u64 }))
            }
        });
        for (day, s) in futures::future::try_join_all(writes).await? {
            consumed.insert(day, s);
        }
        // Live files in their own segment; the checkpoint keeps versions and last changes.
        let live_path = format!("{}/{seq:012}/live.json", self.checkpoint_dir());
        let live: Vec<(String, Vec<String>, Vec<FileEntry>)> = partitions
            .iter()
            .filter(|p| !p.live.is_empty())
            .map(|p| (p.table.clone(), p.partition.clone(), p.live.clone()))
            .collect();
        let body = serde_json::to_vec(&live).map_err(|e| Error::Internal(e.to_string()))?;
        self.wh.put(&self.wh.child(&live_path), Bytes::from(body)).await?;
        let partitions = partitions.into_iter().map(|p| PartitionState { live: Vec::new(), ..p }).collect();
        let cp = Checkpoint {
            stream: self.stream.clone(),
            seq,
            written_at: Utc::now(),
            run_id: run_id.to_string(),
            commits,
            max_arrival_ms,
            consumed,
            partitions,
            live: live_path,
            batches,
        };
        let body = serde_json::to_vec(&cp).map_err(|e| Error::Internal(e.to_string()))?;
        if !self.wh.put_if_absent(&self.wh.child(&self.checkpoint_path(seq)), Bytes::from(body)).await? {
            // Another run checkpointed the same commits: the same summary; use theirs.
            return self.read_checkpoint(seq).await;
        }
        failpoint::hit("ledger.checkpoint_written");
        failpoint::hit("ledger.pointer_moved");
        tracing::info!(stream = %self.stream, seq, commits, "ledger checkpoint written");
        Ok(cp)
    }

    /// The kept batches' dedup keys, one segment per arrival day: a run that meets a drop loads
    /// a day or two of segments, not a file per batch of the horizon. Days with no new batch
    /// keep their segment; a day with new batches gets a new one (its old segment plus them).
    async fn consolidate_dedup(&self, batches: Vec<BatchRef>, seq: u64) -> Result<Vec<BatchRef>> {
        let mut by_day: BTreeMap<String, Vec<BatchRef>> = BTreeMap::new();
        for b in batches {
            by_day.entry(arrival_day(b.max_arrival_ms)).or_default().push(b);
        }
        let writes = by_day.into_iter().map(|(day, refs)| async move {
            if refs.iter().all(|b| b.day_segment) && refs.len() == 1 {
                return Ok::<_, Error>(refs);
            }
            let mut pairs: Vec<(u128, i64)> = Vec::new();
            for b in &refs {
                pairs.extend(self.dedup_keys_of(b).await?);
            }
            let path = format!("{}/{seq:012}/dedup-{day}.keys", self.checkpoint_dir());
            self.wh.put(&self.wh.child(&path), super::encode_pairs(&pairs)).await?;
            let newest = refs.iter().map(|b| b.max_arrival_ms).max().unwrap_or(0);
            let last = refs.iter().map(|b| b.seq).max().unwrap_or(0);
            Ok(vec![BatchRef { seq: last, max_arrival_ms: newest, dedup_keys: path, day_segment: true }])
        });
        Ok(futures::future::try_join_all(writes).await?.into_iter().flatten().collect())
    }

    /// The (key, arrival) pairs a dedup reference holds.
    pub async fn dedup_keys_of(&self, b: &BatchRef) -> Result<Vec<(u128, i64)>> {
        let bytes = self.wh.get(&self.wh.child(&b.dedup_keys)).await?;
        if b.day_segment {
            super::decode_pairs(&bytes)
        } else {
            Ok(super::decode_keys(&bytes)?.into_iter().map(|k| (k, b.max_arrival_ms)).collect())
        }
    }

    /// Deletes what the state's base checkpoint replaced (commit records and markers up to its
    /// seq, older checkpoints and segments it does not use, dedup-key files it dropped), when
    /// the checkpoint was written by another run more than `retention` ago and nobody cleaned
    /// up after it yet. Idempotent; safe next to concurrent runs (see the module header).
    pub async fn clean_up(&self, state: &LedgerState, run_id: &str, retention: chrono::Duration) -> Result<Cleanup> {
        let mut done = Cleanup::default();
        let Some(base) = &state.base else { return Ok(done) };
        // This machine's clock first, as a free filter: when it says "not yet", waiting is safe
        // whatever the skew.
        if base.run_id == run_id || base.written_at + retention > Utc::now() {
            return Ok(done);
        }
        if self.cleaned_through().await? >= base.seq {
            done.finished = true;
            return Ok(done);
        }
        // Then the store's clock, which every reader shares: a cleaner whose clock runs ahead of
        // the checkpointer's must not delete commit records a reader that listed the older
        // checkpoint a moment ago is about to read (two requests, once per checkpoint).
        let written = self.wh.last_modified(&self.wh.child(&self.checkpoint_path(base.seq))).await?;
        let now = self.wh.store_now(&format!("_runner/clock/checkpoints-{}", self.stream)).await?;
        if written + retention > now {
            return Ok(done);
        }
        // Commit records and publish markers up to the checkpoint: the first alone (a crash
        // test stops here), the rest in bulk (1,000 keys a request on S3).
        let mut old: Vec<object_store::path::Path> = Vec::new();
        for meta in self.wh.list(&self.dir()).await? {
            let Some(name) = meta.location.filename() else { continue };
            let seq = name.split('.').next().and_then(|s| s.parse::<u64>().ok());
            if seq.is_some_and(|s| s <= base.seq) {
                old.push(meta.location);
            }
        }
        if let Some(first) = old.first() {
            self.wh.delete(first).await?;
            done.commit_records += 1;
            failpoint::hit("ledger.mid_cleanup");
            done.commit_records += self.wh.delete_many(old[1..].to_vec()).await?;
        }
        // Older checkpoints, and segments the checkpoint does not point at.
        let used = base.segments();
        let mut old = Vec::new();
        for meta in self.wh.list(&self.checkpoint_dir()).await? {
            let Some(rel) = self.wh.relative(&meta.location) else { continue };
            let rest = rel.strip_prefix(self.checkpoint_dir().as_str()).unwrap_or(rel).trim_start_matches('/');
            let Some(seq) = rest.get(..12).and_then(|s| s.parse::<u64>().ok()) else { continue };
            if seq < base.seq && !used.contains(rel) {
                old.push(meta.location);
            }
        }
        done.checkpoints += self.wh.delete_many(old).await?;
        // Dedup keys of batches the checkpoint no longer keeps (out of the horizon).
        let kept: HashSet<&str> = base.batches.iter().map(|b| b.dedup_keys.as_str()).collect();
        let mut old = Vec::new();
        for meta in self.wh.list(&self.dedup_dir()).await? {
            let Some(rel) = self.wh.relative(&meta.location) else { continue };
            let seq = meta.location.filename().and_then(|n| n.get(..12)).and_then(|s| s.parse::<u64>().ok());
            if seq.is_some_and(|s| s <= base.seq) && !kept.contains(rel) {
                old.push(meta.location);
            }
        }
        done.dedup_files += self.wh.delete_many(old).await?;
        let body = serde_json::to_vec(&Cleaned { through: base.seq }).map_err(|e| Error::Internal(e.to_string()))?;
        self.wh.put(&self.wh.child(&self.cleaned_path()), Bytes::from(body)).await?;
        done.finished = true;
        if done.total() > 0 {
            tracing::info!(stream = %self.stream, through = base.seq, removed = done.total(), "removed ledger state a checkpoint replaced");
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::ledger::{Batch, BatchStats, CommitKind, Compacted, ConsumedObject};
    use crate::store::Location;

    const DAY: i64 = 86_400_000;

    /// A random ledger: ingest batches of random drops into random partitions of two tables,
    /// and compactions of random partitions.
    fn commits(ops: &[(bool, u8, u8, u8)]) -> Vec<Commit> {
        let mut out = Vec::new();
        for (i, (compact, day, n, table)) in ops.iter().enumerate() {
            let seq = i as u64 + 1;
            let table = if table % 2 == 0 { "t" } else { "quarantine" }.to_string();
            let partition = vec![format!("2026-11-{:02}", 1 + day % 5)];
            let file = |k: u8| FileEntry {
                table: table.clone(),
                partition: partition.clone(),
                staged: format!("s/{seq}/{k}"),
                path: format!("{table}/{seq}/{k}"),
                rows: u64::from(k) + 1,
                bytes: 10,
            };
            let mut files: Vec<FileEntry> = (0..=*n % 3).map(file).collect();
            let kind = if *compact {
                files.truncate(1);
                CommitKind::Compaction(vec![Compacted { table: table.clone(), partition: partition.clone(), inputs: vec![] }])
            } else {
                let arrival = i64::from(*day) * DAY + seq as i64;
                CommitKind::Ingest(Batch {
                    objects: (0..=*n)
                        .map(|k| ConsumedObject { key: format!("k{seq}-{k}"), size: 1, arrival_ms: arrival, refused: None })
                        .collect(),
                    dedup_keys: format!("_runner/dedup/s/{seq:012}-a{seq}.keys"),
                    max_arrival_ms: arrival,
                    stats: BatchStats::default(),
                })
            };
            out.push(Commit {
                stream: "s".into(),
                seq,
                attempt: format!("a{seq}"),
                run_id: "r".into(),
                committed_at: String::new(),
                files,
                kind,
            });
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A checkpoint plus the commits after it describe exactly what the whole ledger did:
        /// next seq, partitions (version, live files, last change), changes after any
        /// watermark, newest arrival, consumed drops of every day, and the dedup batches a
        /// drop within the kept window can meet.
        #[test]
        fn a_checkpoint_and_later_commits_equal_the_full_ledger(
            ops in proptest::collection::vec((any::<bool>(), 0u8..5, 0u8..4, 0u8..2), 1..40),
            cut in 0usize..40,
            keep_days in 0i64..6,
        ) {
            let all = commits(&ops);
            let cut = cut.min(all.len()) as u64;
            let dir = tempfile::tempdir().unwrap();
            let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
            let ledger = Ledger::new(wh, "s");
            let full = LedgerState { base: None, commits: all.clone(), published: all.iter().map(|c| c.seq).collect() };
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let keep_ms = keep_days * DAY;
            // Each batch's dedup keys: its seq and one shared key.
            for c in all.iter().filter(|c| c.is_ingest()) {
                let keys = super::super::encode_keys(&[u128::from(c.seq as u32), 7]);
                rt.block_on(ledger.wh.put(&ledger.wh.child(&c.batch().unwrap().dedup_keys), keys)).unwrap();
            }
            let cp = rt.block_on(ledger.write_checkpoint(&full, cut, keep_ms, "r")).unwrap();
            let split = LedgerState {
                base: Some(Arc::new(cp)),
                commits: all.iter().filter(|c| c.seq > cut).cloned().collect(),
                published: all.iter().filter(|c| c.seq > cut).map(|c| c.seq).collect(),
            };
            prop_assert_eq!(split.next_seq(), full.next_seq());
            prop_assert_eq!(split.partitions(), {
                // Without files: a checkpoint keeps them in its live segment.
                let mut p = full.partitions();
                for v in p.values_mut() { if split.base.is_some() { v.live.retain(|f| all.iter().any(|c| c.seq > cut && c.files.contains(f))); } }
                p
            });
            prop_assert_eq!(rt.block_on(ledger.partitions_with_files(&split)).unwrap(), full.partitions());
            prop_assert_eq!(split.max_arrival_ms(), full.max_arrival_ms());
            for w in 0..=all.len() as u64 {
                for t in ["t", "quarantine"] {
                    prop_assert_eq!(split.changed_after(t, w), full.changed_after(t, w));
                }
            }
            for p in full.partitions().keys() {
                prop_assert_eq!(split.version(&p.0, &p.1), full.version(&p.0, &p.1));
            }
            let every: Option<&BTreeSet<String>> = None;
            prop_assert_eq!(rt.block_on(ledger.consumed(&split, every)).unwrap(), rt.block_on(ledger.consumed(&full, every)).unwrap());
            // Asked for some days, both know every key of those days (more is allowed).
            let days: BTreeSet<String> = ["1970-01-01", "1970-01-03"].iter().map(|d| d.to_string()).collect();
            let day_of: BTreeMap<String, String> =
                all.iter().flat_map(|c| c.objects().iter().map(|o| (o.key.clone(), arrival_day(o.arrival_ms)))).collect();
            let of_days = |keys: HashSet<String>| -> BTreeSet<String> { keys.into_iter().filter(|k| days.contains(&day_of[k])).collect() };
            let want: BTreeSet<String> = day_of.iter().filter(|(_, d)| days.contains(*d)).map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(of_days(rt.block_on(ledger.consumed(&split, Some(&days))).unwrap()), want.clone());
            prop_assert_eq!(of_days(rt.block_on(ledger.consumed(&full, Some(&days))).unwrap()), want);
            // Every (key, arrival) a drop within the kept window can meet is still there.
            if let Some(newest) = full.max_arrival_ms() {
                let within = |st: &LedgerState| -> BTreeSet<(u128, i64)> {
                    let refs = st.dedup_batches();
                    let loaded = rt.block_on(futures::future::try_join_all(refs.iter().map(|b| ledger.dedup_keys_of(b)))).unwrap();
                    loaded.into_iter().flatten().filter(|(_, t)| *t >= newest - keep_ms).collect()
                };
                prop_assert_eq!(within(&split), within(&full));
            }
        }
    }

    /// A ledger of `n` ingest batches over three days, each with its dedup keys stored (no
    /// commit record yet).
    async fn ingest_ledger(n: u8) -> (tempfile::TempDir, Ledger, Vec<Commit>) {
        let ops: Vec<(bool, u8, u8, u8)> = (0..n).map(|i| (false, i % 3, 1, 0)).collect();
        let all = commits(&ops);
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let ledger = Ledger::new(wh, "s");
        for c in &all {
            let keys = super::super::encode_keys(&[c.seq as u128]);
            ledger.wh.put(&ledger.wh.child(&c.batch().unwrap().dedup_keys), keys).await.unwrap();
        }
        (dir, ledger, all)
    }

    /// Two checkpointers that read the ledger at different times: the one that writes the
    /// older checkpoint last cannot make readers go back to it (the commits it summarises less
    /// of may already be deleted by the newer one's clean-up).
    #[tokio::test]
    async fn a_late_checkpoint_of_an_older_seq_never_moves_the_newest_back() {
        let (_dir, ledger, all) = ingest_ledger(12).await;
        let full = LedgerState { base: None, commits: all.clone(), published: all.iter().map(|c| c.seq).collect() };
        assert_eq!(ledger.pointer().await.unwrap(), None);
        ledger.write_checkpoint(&full, 10, DAY, "fast").await.unwrap();
        assert_eq!(ledger.pointer().await.unwrap(), Some(10));
        ledger.write_checkpoint(&full, 4, DAY, "slow").await.unwrap();
        assert_eq!(ledger.pointer().await.unwrap(), Some(10), "the newest checkpoint stays the newest");
        let state = ledger.load_after(0).await.unwrap();
        assert_eq!((state.base_seq(), state.next_seq()), (10, 11));
    }

    /// A reader that read the older checkpoint (or none), then listed the commit records after
    /// it while a newer checkpoint was written and the records it replaced were cleaned up,
    /// sees a gap: it must read the newer checkpoint, never go on without the gap's batches.
    #[tokio::test]
    async fn a_reader_that_meets_a_cleaned_up_gap_reads_the_newer_checkpoint() {
        let (dir, ledger, all) = ingest_ledger(6).await;
        let hour = std::time::Duration::from_secs(3600);
        for c in &all {
            let a = super::super::Attempt::for_test(&c.attempt, c.seq);
            ledger.commit(&a, c, hour).await.unwrap();
        }
        // What the reader knew: the ledger up to seq 2, no checkpoint.
        let known = LedgerState { base: None, commits: all[..2].to_vec(), published: Default::default() };
        // Meanwhile: a checkpoint at 4 and its clean-up (records 1 to 4 deleted).
        let full = LedgerState { base: None, commits: all.clone(), published: all.iter().map(|c| c.seq).collect() };
        ledger.write_checkpoint(&full, 4, DAY, "other").await.unwrap();
        for seq in 1..=4u64 {
            ledger.wh.delete(&ledger.commit_path(seq)).await.unwrap();
        }
        // The listing after seq 2 finds 5 and 6: a gap, so nothing is taken from it.
        let mut racing = known.clone();
        assert!(!ledger.read_commits_after(2, &mut racing).await.unwrap());
        assert_eq!(racing.commits.len(), 2, "nothing added past a gap");
        // Brought up to date, the reader has the newer checkpoint and every batch after it.
        let state = ledger.load_since(Some(known)).await.unwrap();
        assert_eq!((state.base_seq(), state.next_seq()), (4, 7));
        assert!(ledger.consumed(&state, None).await.unwrap().contains("k3-0"), "the gap's batches are in the checkpoint");
        // An attempt that planned seq 3 before all that (older than the retention) does not
        // commit it, although its record is gone: the checkpoint has it.
        let late = Commit { attempt: "late".into(), ..all[2].clone() };
        let a = super::super::Attempt::for_test("late", 3);
        let r = ledger.commit_within(&a, &late, hour, std::time::Duration::ZERO).await;
        assert!(matches!(r, Err(Error::CommitConflict { seq: 3, .. })), "{r:?}");
        assert!(!ledger.wh.exists(&ledger.commit_path(3)).await.unwrap());
        // A gap no checkpoint explains (records deleted by hand) is an error, not a silent loss.
        ledger.wh.delete(&ledger.commit_path(5)).await.unwrap();
        for stale in std::fs::read_dir(dir.path().join(CHECKPOINT_DIR).join("s")).unwrap() {
            std::fs::remove_dir_all(stale.as_ref().unwrap().path())
                .or_else(|_| std::fs::remove_file(stale.unwrap().path()))
                .unwrap();
        }
        let e = ledger.load_after(0).await.unwrap_err().to_string();
        assert!(e.contains("kept changing"), "{e}");
    }
}

/// A reader that listed commit records which another run's clean-up deletes before it reads
/// them (what a short `checkpoint_retention` allows): on a store whose first read of a record
/// deletes the records a newer checkpoint replaced, exactly between the listing and the read.
#[cfg(test)]
mod cleaned_under_a_reader {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use futures::stream::BoxStream;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
        PutOptions, PutPayload, PutResult, Result,
    };

    use super::*;
    use crate::store::Location;

    /// Deletes `doomed` (local files) the first time a record is read, then reads.
    #[derive(Debug)]
    struct CleanedUnder {
        inner: Arc<dyn ObjectStore>,
        doomed: Mutex<Vec<std::path::PathBuf>>,
        armed: AtomicBool,
    }

    impl std::fmt::Display for CleanedUnder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "CleanedUnder({})", self.inner)
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for CleanedUnder {
        async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
            let record = location.as_ref().contains("_runner/ledger/");
            if record && self.armed.swap(false, Ordering::SeqCst) {
                for f in self.doomed.lock().unwrap().drain(..) {
                    std::fs::remove_file(f).unwrap();
                }
            }
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn a_record_cleaned_up_between_listing_and_reading_is_a_gap_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::config::to_url(dir.path(), ".").unwrap();
        let plain = Ledger::new(Location::parse(&url).unwrap(), "s");
        let mut all = Vec::new();
        for seq in 1..=6u64 {
            let mut c = crate::ledger::tests::commit(seq);
            if let crate::ledger::CommitKind::Ingest(b) = &mut c.kind {
                b.dedup_keys = format!("_runner/dedup/s/{seq:012}-a{seq}.keys");
            }
            plain
                .wh
                .put(&plain.wh.child(&c.batch().unwrap().dedup_keys), super::super::encode_keys(&[seq as u128]))
                .await
                .unwrap();
            plain
                .commit(&super::super::Attempt::for_test(&c.attempt, seq), &c, std::time::Duration::from_secs(3600))
                .await
                .unwrap();
            plain.mark_published(seq).await.unwrap();
            all.push(c);
        }
        // What the reader knew: seqs 1 and 2. Another run has checkpointed through 4; its
        // clean-up of records 1 to 4 lands after the reader listed them and before it reads 3.
        let known = LedgerState { base: None, commits: all[..2].to_vec(), published: [1, 2].into() };
        let full = LedgerState { base: None, commits: all.clone(), published: (1..=6).collect() };
        plain.write_checkpoint(&full, 4, 86_400_000, "other").await.unwrap();
        let records = dir.path().join("_runner/ledger/s");
        let doomed =
            (1..=4).flat_map(|s| [records.join(format!("{s:012}.json")), records.join(format!("{s:012}.published"))]).collect();
        let store = CleanedUnder { inner: plain.wh.store.clone(), doomed: Mutex::new(doomed), armed: AtomicBool::new(true) };
        let racing = Ledger::new(Location::from_store(Arc::new(store), &plain.wh.url), "s");
        let state = racing.load_since(Some(known)).await.unwrap();
        assert_eq!((state.base_seq(), state.next_seq()), (4, 7), "the newer checkpoint and every record after it");
        assert_eq!(state.published_through(), 6);
        assert!(racing.consumed(&state, None).await.unwrap().contains("k3"), "the batches behind the gap are in the checkpoint");
    }
}
