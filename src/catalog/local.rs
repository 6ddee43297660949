//! The local catalog: one snapshot object per table version, in the warehouse.
//!
//! ```text
//! <warehouse>/_runner/catalog/<table>/snapshots/<seq>.json   definition + every partition
//! ```
//!
//! A table's definition and all its partitions are one JSON snapshot, so a reader opens a table
//! with two requests (list the few newest snapshots, read the last) whatever its history: three
//! years of daily partitions cost what a month costs. A writer reads the newest snapshot
//! (seq `n`), changes it and creates `n + 1` only if absent (the commit primitive of the ledger:
//! a hard link locally, `If-None-Match` on S3). When another writer created `n + 1` first, it
//! reads that one and applies its change again, so two publishers never lose each other's
//! partitions, and every change is decided against what is published (a partition only moves to
//! a newer version). Old snapshots are deleted once [`KEEP_SNAPSHOTS`] newer ones exist and they
//! are older than [`SNAPSHOT_RETENTION_MINUTES`] (a reader that listed before them may still
//! read them). It lives in the warehouse's own object store: it works the same on a folder and
//! on S3.
//!
//! Warehouses of format 2 kept one object per partition (`partitions/<k>=<v>.json`) and a
//! `table.json`; [`LocalCatalog::upgrade`] turns them into a first snapshot in place.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Catalog, DataFile, PartitionMeta, Retired, TableMeta, hive_escape, newer_version};
use crate::error::{Error, Result};
use crate::store::Location;

pub const CATALOG_DIR: &str = "_runner/catalog";
/// Snapshots kept behind the newest (at least).
pub const KEEP_SNAPSHOTS: u64 = 10;
/// How long a replaced snapshot is kept for readers that listed before it was replaced.
pub const SNAPSHOT_RETENTION_MINUTES: i64 = 60;
/// Rounds a writer re-applies its change after others created the snapshot it planned.
const MAX_CONFLICTS: u32 = 64;

/// One version of a table's catalog entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub seq: u64,
    pub table: Option<TableMeta>,
    /// Partition values -> partition.
    pub partitions: BTreeMap<Vec<String>, PartitionMeta>,
    pub retired: Vec<Retired>,
    /// Job -> the newest lease generation of it that wrote this table: an older generation's
    /// write is refused (see [`crate::fence`]).
    pub fences: BTreeMap<String, u64>,
}

/// The stored form: partition locations relative to the table's location (a snapshot of 1,000
/// partitions stays small), the writer's nonce (how a writer recognises its own snapshot when
/// the store's answer to its create was ambiguous).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    seq: u64,
    writer: String,
    table: Option<TableMeta>,
    #[serde(default)]
    partitions: Vec<StoredPartition>,
    #[serde(default)]
    retired: Vec<Retired>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    fences: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredPartition {
    values: Vec<String>,
    location: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    files: Vec<DataFile>,
}

impl Snapshot {
    fn encode(&self, writer: &str) -> Result<Bytes> {
        let base = self.table.as_ref().map(|t| t.location.as_str()).unwrap_or("");
        let partitions = self
            .partitions
            .values()
            .map(|p| StoredPartition {
                values: p.values.clone(),
                location: match p.location.strip_prefix(base) {
                    Some(rel) if !base.is_empty() => rel.to_string(),
                    _ => p.location.clone(),
                },
                files: p.files.clone(),
            })
            .collect();
        let stored = Stored {
            seq: self.seq,
            writer: writer.to_string(),
            table: self.table.clone(),
            partitions,
            retired: self.retired.clone(),
            fences: self.fences.clone(),
        };
        serde_json::to_vec(&stored).map(Bytes::from).map_err(|e| Error::Internal(e.to_string()))
    }

    fn decode(what: &str, bytes: &[u8]) -> Result<(Snapshot, String)> {
        let s: Stored = serde_json::from_slice(bytes).map_err(|e| {
            Error::Failed(format!("catalog snapshot {what} is corrupt ({e}); delete it to fall back to the one before"))
        })?;
        let base = s.table.as_ref().map(|t| t.location.clone()).unwrap_or_default();
        let partitions = s
            .partitions
            .into_iter()
            .map(|p| {
                let location = if p.location.contains("://") { p.location } else { format!("{base}{}", p.location) };
                (p.values.clone(), PartitionMeta { values: p.values, location, files: p.files })
            })
            .collect();
        Ok((Snapshot { seq: s.seq, table: s.table, partitions, retired: s.retired, fences: s.fences }, s.writer))
    }

    /// Points `p` at its offered location when it is new or newer; `only_new` never repoints.
    /// A partition already at the offered location gains the offered files it lacks. Returns
    /// whether it changed.
    fn offer(&mut self, p: &PartitionMeta, only_new: bool, now_ms: i64) -> bool {
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        match self.partitions.get_mut(&p.values) {
            None => {
                self.partitions.insert(p.values.clone(), p.clone());
                true
            }
            Some(cur) if same(&cur.location, &p.location) => {
                let before = cur.files.len();
                for f in &p.files {
                    if !cur.files.iter().any(|c| c.name == f.name) {
                        cur.files.push(f.clone());
                    }
                }
                cur.files.len() != before
            }
            Some(cur) if !only_new && newer_version(&p.location, &cur.location) => {
                self.retired.push(Retired { location: cur.location.clone(), at_ms: now_ms });
                *cur = p.clone();
                true
            }
            Some(cur) => {
                tracing::debug!(
                    offered = %p.location,
                    current = %cur.location,
                    "partition left at its published version (the offered one is not newer)"
                );
                false
            }
        }
    }
}

/// Refuses a write under `fence` when its lease was lost, or when a newer generation of its
/// job has written the table already (the snapshot is created conditionally, so the check and
/// the write are one step: a newer writer in between makes the create fail and this re-check).
fn check_fence(table: &str, f: &crate::fence::Fence, current: &Snapshot) -> Result<()> {
    let newer = current.fences.get(&f.job).copied().filter(|g| *g > f.generation);
    if f.lost() || newer.is_some() {
        let by = newer
            .map(|g| format!("generation {g} of the lease has published since"))
            .unwrap_or_else(|| "the lease expired while held".into());
        return Err(Error::Fenced(format!(
            "`{}` (lease generation {}) may no longer publish `{table}`: {by} (the process was paused past the lease ttl?). Nothing of this run was published; the current holder's run stands",
            f.job, f.generation
        )));
    }
    Ok(())
}

#[derive(Debug)]
pub struct LocalCatalog {
    warehouse: Location,
    /// The newest snapshot read of each table: a listing that shows no newer one needs no read.
    cache: Mutex<BTreeMap<String, Snapshot>>,
    /// When this process last knew a table's cached snapshot to be the newest (it listed the
    /// snapshots, or created the next one): an update within [`FRESH`] of that tries the next
    /// seq at once, without listing ([`LocalCatalog::update`]).
    verified: Mutex<BTreeMap<String, (u64, std::time::Instant)>>,
}

/// How long a snapshot this process saw as the newest is tried as the base of an update without
/// listing first. The create is conditional, so a newer snapshot makes it fail and the update
/// lists and tries again; the one thing to rule out is that the next seq was written and
/// already deleted, which takes [`SNAPSHOT_RETENTION_MINUTES`] after it was written.
const FRESH: std::time::Duration = std::time::Duration::from_secs(30);

impl Clone for LocalCatalog {
    fn clone(&self) -> Self {
        LocalCatalog::new(self.warehouse.clone())
    }
}

impl LocalCatalog {
    /// The warehouse the catalog lives in.
    pub fn warehouse(&self) -> &Location {
        &self.warehouse
    }

    pub fn new(warehouse: Location) -> Self {
        LocalCatalog { warehouse, cache: Mutex::new(BTreeMap::new()), verified: Mutex::new(BTreeMap::new()) }
    }

    fn table_dir(name: &str) -> String {
        format!("{CATALOG_DIR}/{}", hive_escape(name))
    }

    fn snapshot_path(&self, name: &str, seq: u64) -> object_store::path::Path {
        self.warehouse.child(&format!("{}/snapshots/{seq:012}.json", Self::table_dir(name)))
    }

    /// The snapshots of a table, oldest first (a listing of the few kept).
    async fn listed(&self, name: &str) -> Result<Vec<(u64, object_store::ObjectMeta)>> {
        self.listed_dir(&hive_escape(name)).await
    }

    /// The newest snapshot of a table (seq 0 and empty when it has none), with the listing.
    async fn load(&self, name: &str) -> Result<(Snapshot, Vec<(u64, object_store::ObjectMeta)>)> {
        for _ in 0..5 {
            let asked = std::time::Instant::now();
            let listed = self.listed(name).await?;
            // No snapshot yet is seq 0, as known as any other (a first publish then creates
            // seq 1 without listing again).
            self.verify(name, listed.last().map_or(0, |(seq, _)| *seq), asked);
            let Some((seq, meta)) = listed.last() else {
                self.remember(name, &Snapshot::default());
                return Ok((Snapshot::default(), listed));
            };
            if let Some(s) = self.cache.lock().expect("catalog cache").get(name).filter(|s| s.seq == *seq) {
                return Ok((s.clone(), listed));
            }
            // Deleted between the listing and the read (many newer ones were written): list again.
            let Some(bytes) = self.warehouse.get_opt(&meta.location).await? else { continue };
            let (snapshot, _) = Snapshot::decode(meta.location.as_ref(), &bytes)?;
            self.remember(name, &snapshot);
            return Ok((snapshot, listed));
        }
        Err(Error::Failed(format!("the catalog of table `{name}` changed too fast to be read; try again")))
    }

    /// Brings this process's copy of the table's newest snapshot up to date: one listing, and
    /// a read only when a newer snapshot exists (nothing is copied out).
    pub async fn refresh(&self, name: &str) -> Result<()> {
        let newest = self.listed(name).await?.last().map(|(seq, _)| *seq);
        let cached = self.cache.lock().expect("catalog cache").get(name).map(|s| s.seq);
        if newest.is_some() && newest != cached {
            self.load(name).await?;
        }
        Ok(())
    }

    /// Notes that snapshot `seq` of `name` was the newest at `at`.
    fn verify(&self, name: &str, seq: u64, at: std::time::Instant) {
        let mut v = self.verified.lock().expect("catalog verified");
        if v.get(name).is_none_or(|(s, _)| *s <= seq) {
            v.insert(name.to_string(), (seq, at));
        }
    }

    /// The cached snapshot of `name`, when this process knew it to be the newest within [`FRESH`].
    fn fresh(&self, name: &str) -> Option<Snapshot> {
        let (seq, at) = *self.verified.lock().expect("catalog verified").get(name)?;
        if at.elapsed() > FRESH {
            return None;
        }
        self.cache.lock().expect("catalog cache").get(name).filter(|s| s.seq == seq).cloned()
    }

    fn remember(&self, name: &str, s: &Snapshot) {
        let mut cache = self.cache.lock().expect("catalog cache");
        if cache.get(name).is_none_or(|c| c.seq < s.seq) {
            cache.insert(name.to_string(), s.clone());
        }
    }

    /// Applies `change` to the newest snapshot and publishes the result as the next one,
    /// conditionally; on a conflict, re-reads and applies it again. `change` returns whether it
    /// changed anything (nothing is written otherwise). Returns the snapshot it published or
    /// found unchanged.
    async fn update<F>(&self, name: &str, mut change: F) -> Result<Snapshot>
    where
        F: FnMut(&mut Snapshot) -> Result<bool> + Send,
    {
        let writer = uuid::Uuid::now_v7().simple().to_string();
        let fence = crate::fence::fence();
        // A snapshot this process saw as the newest moments ago (it read or wrote it in the same
        // job) is tried first without listing: on S3 that is a round trip less per publish.
        let mut fresh = self.fresh(name);
        for _ in 0..MAX_CONFLICTS {
            let (current, listed) = match fresh.take() {
                Some(s) => (s, None),
                None => self.load(name).await.map(|(s, l)| (s, Some(l)))?,
            };
            if let Some(f) = &fence {
                check_fence(name, f, &current)?;
            }
            let mut next = current.clone();
            if !change(&mut next)? {
                return Ok(current);
            }
            next.seq = current.seq + 1;
            if let Some(f) = &fence {
                next.fences.insert(f.job.clone(), f.generation);
            }
            let path = self.snapshot_path(name, next.seq);
            let body = next.encode(&writer)?;
            // The body carries the writer's nonce: an "already exists" about our own create,
            // retried after an ambiguous answer, is recognised by `put_if_absent`.
            let asked = std::time::Instant::now();
            if self.warehouse.put_if_absent(&path, body).await? {
                self.remember(name, &next);
                self.verify(name, next.seq, asked);
                match listed {
                    Some(listed) => self.collect_snapshots(next.seq, &listed).await?,
                    // Written without a listing: old snapshots are collected every
                    // KEEP_SNAPSHOTS seqs all the same.
                    None if next.seq.is_multiple_of(KEEP_SNAPSHOTS) => {
                        let listed = self.listed(name).await?;
                        self.collect_snapshots(next.seq, &listed).await?;
                    }
                    None => {}
                }
                return Ok(next);
            }
            tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(1..20))).await;
        }
        Err(Error::Failed(format!(
            "the catalog of table `{name}` kept changing under {MAX_CONFLICTS} attempts to update it; try again"
        )))
    }

    /// Deletes snapshots [`KEEP_SNAPSHOTS`] behind `newest` once they are old enough.
    async fn collect_snapshots(&self, newest: u64, listed: &[(u64, object_store::ObjectMeta)]) -> Result<()> {
        let cutoff = chrono::Utc::now() - chrono::Duration::minutes(SNAPSHOT_RETENTION_MINUTES);
        let old: Vec<object_store::path::Path> = listed
            .iter()
            .filter(|(seq, m)| seq + KEEP_SNAPSHOTS <= newest && m.last_modified < cutoff)
            .map(|(_, m)| m.location.clone())
            .collect();
        self.warehouse.delete_many(old).await.map(|_| ())
    }

    fn write_partitions_change(partitions: &[PartitionMeta], only_new: bool) -> impl FnMut(&mut Snapshot) -> Result<bool> {
        let now = chrono::Utc::now().timestamp_millis();
        move |s: &mut Snapshot| {
            let mut changed = false;
            for p in partitions {
                changed |= s.offer(p, only_new, now);
            }
            Ok(changed)
        }
    }

    /// The partitions of `table` with these values as this process last read or wrote them
    /// (right after [`Catalog::put_partitions`] or [`Catalog::add_partitions`], the state they
    /// left).
    pub fn cached_partitions(&self, table: &str, values: &[&Vec<String>]) -> Vec<PartitionMeta> {
        let cache = self.cache.lock().expect("catalog cache");
        let Some(s) = cache.get(table) else { return Vec::new() };
        values.iter().filter_map(|v| s.partitions.get(*v)).cloned().collect()
    }

    async fn write_partitions(&self, table: &str, partitions: &[PartitionMeta], only_new: bool) -> Result<Vec<PartitionMeta>> {
        // Adding partitions this process already saw registered changes nothing (an add never
        // repoints, and registered partitions are only ever repointed, not dropped, for the tables
        // that add): no request. An ingest batch or a run record usually lands in such a day.
        if only_new && partitions.iter().all(|p| p.files.is_empty()) {
            let cache = self.cache.lock().expect("catalog cache");
            if cache.get(table).is_some_and(|s| partitions.iter().all(|p| s.partitions.contains_key(&p.values))) {
                return Ok(Vec::new());
            }
        }
        let mut change = Self::write_partitions_change(partitions, only_new);
        let mut applied = Vec::new();
        let after = self
            .update(table, |s| {
                if s.table.is_none() {
                    return Err(Error::Internal(format!(
                        "partitions registered for table `{table}`, which is not in the catalog"
                    )));
                }
                let base = s.clone();
                let changed = change(s)?;
                applied = partitions
                    .iter()
                    .filter_map(|p| s.partitions.get(&p.values))
                    .filter(|p| base.partitions.get(&p.values) != Some(*p))
                    .cloned()
                    .collect();
                applied.dedup();
                Ok(changed)
            })
            .await?;
        drop(after);
        Ok(applied)
    }

    /// Converts a catalog of warehouse format 2 (`table.json` and one object per partition) into
    /// snapshots, table by table; a table that has a snapshot already is left as it is. Returns
    /// the legacy objects, for the caller to delete once the warehouse is marked as upgraded.
    pub async fn upgrade(&self) -> Result<Vec<object_store::path::Path>> {
        let mut legacy = Vec::new();
        for dir in self.warehouse.folders(CATALOG_DIR).await? {
            let objects = self.warehouse.list(&format!("{CATALOG_DIR}/{dir}")).await?;
            let old: Vec<&object_store::ObjectMeta> = objects
                .iter()
                .filter(|m| m.location.as_ref().contains("/partitions/") || m.location.filename() == Some("table.json"))
                .collect();
            legacy.extend(old.iter().map(|m| m.location.clone()));
            let has_snapshot = objects.iter().any(|m| m.location.as_ref().contains("/snapshots/"));
            let Some(table_obj) = old.iter().find(|m| m.location.filename() == Some("table.json")) else { continue };
            if has_snapshot {
                continue;
            }
            let what = table_obj.location.as_ref().to_string();
            let table: TableMeta = serde_json::from_slice(&self.warehouse.get(&table_obj.location).await?)
                .map_err(|e| Error::Failed(format!("catalog entry {what} is corrupt ({e}); delete it and run again")))?;
            let mut parts: Vec<PartitionMeta> = Vec::new();
            let objects: Vec<&object_store::ObjectMeta> =
                old.iter().filter(|m| m.location.as_ref().contains("/partitions/")).copied().collect();
            // Read 32 at a time (each a round trip on S3).
            for chunk in objects.chunks(32) {
                let read = futures::future::try_join_all(chunk.iter().map(|m| self.warehouse.get(&m.location))).await?;
                for (m, bytes) in chunk.iter().zip(read) {
                    parts.push(serde_json::from_slice::<PartitionMeta>(&bytes).map_err(|e| {
                        Error::Failed(format!("catalog entry {} is corrupt ({e}); delete it and run again", m.location))
                    })?);
                }
            }
            let name = table.name.clone();
            let n = parts.len();
            self.update(&name, |s| {
                if s.table.is_some() {
                    return Ok(false);
                }
                s.table = Some(table.clone());
                s.partitions = parts.iter().map(|p| (p.values.clone(), p.clone())).collect();
                Ok(true)
            })
            .await?;
            tracing::info!(table = %name, partitions = n, "catalog upgraded to one snapshot per table");
        }
        Ok(legacy)
    }
}

#[async_trait::async_trait]
impl Catalog for LocalCatalog {
    async fn tables(&self) -> Result<Vec<TableMeta>> {
        let dirs = self.warehouse.folders(CATALOG_DIR).await?;
        let found: Vec<Option<TableMeta>> = futures::future::try_join_all(dirs.iter().map(|d| self.table_in(d))).await?;
        let mut out: Vec<TableMeta> = found.into_iter().flatten().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn table(&self, name: &str) -> Result<Option<TableMeta>> {
        Ok(self.load(name).await?.0.table)
    }

    async fn table_with_partitions(&self, name: &str) -> Result<Option<(TableMeta, Vec<PartitionMeta>)>> {
        let (s, _) = self.load(name).await?;
        Ok(s.table.map(|t| (t, s.partitions.into_values().collect())))
    }

    async fn put_table(&self, table: &TableMeta) -> Result<()> {
        // The definition this process last read or wrote is this one: nothing to do (definitions
        // only ever change compatibly, so another writer's newer one is kept either way).
        let known = self.cache.lock().expect("catalog cache").get(&table.name).and_then(|s| s.table.clone());
        if known.as_ref() == Some(table) {
            return Ok(());
        }
        self.update(&table.name, |s| {
            if s.table.as_ref() == Some(table) {
                return Ok(false);
            }
            if let Some(current) = &s.table {
                super::check_compatible(current, table)?;
                // An unpartitioned table's replaced version is retired like a partition's.
                let version = |t: &TableMeta| t.parameters.get(super::layout::CURRENT_VERSION).cloned();
                if let Some(old) = version(current).filter(|v| version(table).as_ref() != Some(v)) {
                    let at_ms = chrono::Utc::now().timestamp_millis();
                    s.retired.push(Retired { location: format!("{}v={old}/", current.location), at_ms });
                }
            }
            s.table = Some(table.clone());
            Ok(true)
        })
        .await
        .map(|_| ())
    }

    async fn partitions(&self, table: &str) -> Result<Vec<PartitionMeta>> {
        Ok(self.load(table).await?.0.partitions.into_values().collect())
    }

    async fn delete_partitions(&self, table: &str, values: &[Vec<String>]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        self.update(table, |s| {
            let mut changed = false;
            for v in values {
                if let Some(p) = s.partitions.remove(v) {
                    s.retired.push(Retired { location: p.location, at_ms: now });
                    changed = true;
                }
            }
            Ok(changed)
        })
        .await
        .map(|_| ())
    }

    async fn put_partitions(&self, table: &str, partitions: &[PartitionMeta]) -> Result<Vec<PartitionMeta>> {
        self.write_partitions(table, partitions, false).await
    }

    async fn add_partitions(&self, table: &str, partitions: &[PartitionMeta]) -> Result<Vec<PartitionMeta>> {
        self.write_partitions(table, partitions, true).await
    }

    async fn table_version(&self, table: &str) -> Result<Option<u64>> {
        // A snapshot this process read or wrote as the newest moments ago: the version as it
        // was then, without a request (an up-to-date check made moments earlier; the fingerprint
        // of a run that just published).
        if let Some(s) = self.fresh(table) {
            return Ok((s.seq > 0).then_some(s.seq));
        }
        let listed = self.listed(table).await?;
        Ok(listed.last().map(|(seq, _)| *seq))
    }

    async fn warm(&self, table: &str) -> Result<()> {
        // The listing marks the snapshot as seen newest now: an update within FRESH of it
        // creates the next seq without listing.
        self.load(table).await.map(|_| ())
    }

    async fn retired(&self, table: &str) -> Result<Vec<Retired>> {
        // Right after this process published the table (the one caller, version clean-up): its
        // own snapshot. One a concurrent publisher wrote since is collected by the next clean-up.
        if let Some(s) = self.fresh(table) {
            return Ok(s.retired);
        }
        Ok(self.load(table).await?.0.retired)
    }

    async fn forget_retired(&self, table: &str, locations: &[String]) -> Result<()> {
        if locations.is_empty() {
            return Ok(());
        }
        self.update(table, |s| {
            let before = s.retired.len();
            s.retired.retain(|r| !locations.contains(&r.location));
            Ok(s.retired.len() != before)
        })
        .await
        .map(|_| ())
    }
}

impl LocalCatalog {
    /// The table whose catalog folder is `dir` (an escaped name; the snapshot holds the real one).
    async fn table_in(&self, dir: &str) -> Result<Option<TableMeta>> {
        let listed = self.listed_dir(dir).await?;
        let Some((seq, meta)) = listed.last() else { return Ok(None) };
        let cached = self
            .cache
            .lock()
            .expect("catalog cache")
            .values()
            .find(|s| s.seq == *seq && s.table.as_ref().is_some_and(|t| hive_escape(&t.name) == dir))
            .and_then(|s| s.table.clone());
        if cached.is_some() {
            return Ok(cached);
        }
        let Some(bytes) = self.warehouse.get_opt(&meta.location).await? else { return Ok(None) };
        let (s, _) = Snapshot::decode(meta.location.as_ref(), &bytes)?;
        if let Some(t) = &s.table {
            self.remember(&t.name, &s);
        }
        Ok(s.table)
    }

    async fn listed_dir(&self, dir: &str) -> Result<Vec<(u64, object_store::ObjectMeta)>> {
        let mut out: Vec<(u64, object_store::ObjectMeta)> = self
            .warehouse
            .list(&format!("{CATALOG_DIR}/{dir}/snapshots"))
            .await?
            .into_iter()
            .filter_map(|m| Some((m.location.filename()?.strip_suffix(".json")?.parse::<u64>().ok()?, m)))
            .collect();
        out.sort_by_key(|(s, _)| *s);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    fn setup() -> (tempfile::TempDir, Location, TableMeta) {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let schema = Schema::new(vec![Field::new("companyID", DataType::Utf8, true)]);
        let t = TableMeta::from_arrow("t", "test", wh.join("t").url, &schema, &[("dt", DataType::Date32)]).unwrap();
        (dir, wh, t)
    }

    fn part(wh: &Location, day: &str, v: &str) -> PartitionMeta {
        PartitionMeta::new(vec![day.into()], wh.join(&format!("t/dt={day}/v={v}")).url)
    }

    #[tokio::test]
    async fn tables_and_partitions_round_trip() {
        let (_dir, wh, t) = setup();
        let cat = LocalCatalog::new(wh.clone());
        cat.put_table(&t).await.unwrap();
        assert_eq!(cat.table("t").await.unwrap(), Some(t.clone()));
        assert_eq!(cat.tables().await.unwrap(), vec![t.clone()]);
        let p = part(&wh, "2026-11-20", "000000000001");
        assert_eq!(cat.put_partitions("t", &[p.clone(), p.clone()]).await.unwrap(), vec![p.clone()]);
        assert_eq!(cat.partitions("t").await.unwrap(), vec![p.clone()]);
        let moved = part(&wh, "2026-11-20", "000000000002");
        assert!(cat.add_partitions("t", std::slice::from_ref(&moved)).await.unwrap().is_empty());
        assert_eq!(cat.partitions("t").await.unwrap(), vec![p.clone()], "add never repoints");
        cat.delete_partitions("t", std::slice::from_ref(&p.values)).await.unwrap();
        assert!(cat.partitions("t").await.unwrap().is_empty());
        assert_eq!(cat.retired("t").await.unwrap().len(), 1);
        assert!(cat.put_partitions("nope", &[]).await.is_err());
        // A fresh reader (another process) sees the same.
        let other = LocalCatalog::new(wh.clone());
        assert_eq!(other.table_with_partitions("t").await.unwrap(), Some((t, vec![])));
    }

    /// A writer whose lease generation was superseded (paused past its ttl while a newer
    /// holder ran the job) cannot publish over the newer one; other jobs' generations are
    /// their own; a holder that knows it lost its lease publishes nothing.
    #[tokio::test]
    async fn a_stale_lease_generation_cannot_publish() {
        use crate::fence::{Fence, fenced};
        let (_dir, wh, t) = setup();
        let cat = LocalCatalog::new(wh.clone());
        cat.put_table(&t).await.unwrap();
        let put = |fence: Fence, v: &str| {
            let (cat, p) = (cat.clone(), part(&wh, "2026-11-20", v));
            async move { fenced(Some(fence), async move { cat.put_partitions("t", &[p]).await }).await }
        };
        put(Fence::for_test("job", 1, false), "000000000001").await.unwrap();
        put(Fence::for_test("job", 2, false), "000000000002").await.unwrap();
        let stale = put(Fence::for_test("job", 1, false), "000000000003").await;
        assert!(matches!(&stale, Err(Error::Fenced(m)) if m.contains("generation 2")), "{stale:?}");
        assert!(cat.partitions("t").await.unwrap()[0].location.contains("v=000000000002"), "the newer holder's stands");
        put(Fence::for_test("other_job", 1, false), "000000000004").await.unwrap();
        let lost = put(Fence::for_test("job", 2, true), "000000000005").await;
        assert!(matches!(&lost, Err(Error::Fenced(m)) if m.contains("expired")), "{lost:?}");
        // A fresh reader sees the fences (they are stored, not cached).
        let other = LocalCatalog::new(wh.clone());
        assert!(matches!(fenced(Some(Fence::for_test("job", 1, false)), other.put_table(&t)).await, Err(Error::Fenced(_))));
    }

    #[tokio::test]
    async fn a_partition_never_moves_back_to_an_older_version() {
        let (_dir, wh, t) = setup();
        let cat = LocalCatalog::new(wh.clone());
        cat.put_table(&t).await.unwrap();
        let v9 = part(&wh, "2026-11-20", "000000000009");
        let v10 = part(&wh, "2026-11-20", "000000000010");
        cat.put_partitions("t", std::slice::from_ref(&v10)).await.unwrap();
        // A delayed roll-forward of an older compaction offers v9: refused.
        assert!(cat.put_partitions("t", std::slice::from_ref(&v9)).await.unwrap().is_empty());
        assert_eq!(cat.partitions("t").await.unwrap(), vec![v10.clone()]);
        assert!(cat.retired("t").await.unwrap().is_empty(), "nothing retired by a refused repoint");
        // Run ids (time-ordered) compare the same way.
        let run_id = || uuid::Uuid::now_v7().simple().to_string();
        let a = part(&wh, "2026-11-21", &run_id());
        let b = part(&wh, "2026-11-21", &run_id());
        cat.put_partitions("t", std::slice::from_ref(&b)).await.unwrap();
        cat.put_partitions("t", std::slice::from_ref(&a)).await.unwrap();
        assert!(cat.partitions("t").await.unwrap().contains(&b));
    }

    #[tokio::test]
    async fn concurrent_publishers_keep_each_others_partitions() {
        let (_dir, wh, t) = setup();
        LocalCatalog::new(wh.clone()).put_table(&t).await.unwrap();
        // Sixteen writers (each its own catalog, as separate processes), four partitions each.
        let tasks: Vec<_> = (0..16)
            .map(|w| {
                let wh = wh.clone();
                tokio::spawn(async move {
                    let cat = LocalCatalog::new(wh.clone());
                    for i in 0..4 {
                        let p = part(&wh, &format!("2026-{:02}-{:02}", w % 12 + 1, i + 1 + 4 * (w / 12)), "000000000001");
                        cat.put_partitions("t", &[p]).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let all = LocalCatalog::new(wh.clone()).partitions("t").await.unwrap();
        assert_eq!(all.len(), 64, "no publisher lost another's partitions");
    }

    #[tokio::test]
    async fn an_update_from_a_fresh_snapshot_that_another_publisher_overtook_keeps_both() {
        let (_dir, wh, t) = setup();
        let a = LocalCatalog::new(wh.clone());
        let b = LocalCatalog::new(wh.clone());
        a.put_table(&t).await.unwrap();
        let first = part(&wh, "2026-11-19", "000000000001");
        a.put_partitions("t", std::slice::from_ref(&first)).await.unwrap();
        assert!(a.fresh("t").is_some(), "a knows the snapshot it wrote is the newest");
        // b writes the next snapshot behind a's back; a tries the seq after its own at once,
        // finds it taken, reads the newest and applies its change to it.
        let theirs = part(&wh, "2026-11-20", "000000000001");
        b.put_partitions("t", std::slice::from_ref(&theirs)).await.unwrap();
        let ours = part(&wh, "2026-11-21", "000000000001");
        a.put_partitions("t", std::slice::from_ref(&ours)).await.unwrap();
        let all = LocalCatalog::new(wh.clone()).partitions("t").await.unwrap();
        for p in [&first, &theirs, &ours] {
            assert!(all.contains(p), "{p:?} kept: {all:?}");
        }
        // And a fenced write from a fresh snapshot still meets the newer generation's fence.
        use crate::fence::Fence;
        let newer = part(&wh, "2026-11-22", "000000000001");
        crate::fence::fenced(Some(Fence::for_test("job", 2, false)), b.put_partitions("t", &[newer])).await.unwrap();
        let stale = crate::fence::fenced(Some(Fence::for_test("job", 1, false)), async {
            a.put_partitions("t", &[part(&wh, "2026-11-23", "000000000001")]).await
        })
        .await;
        assert!(matches!(stale, Err(Error::Fenced(_))), "{stale:?}");
    }

    #[tokio::test]
    async fn reads_cost_the_same_whatever_the_number_of_partitions() {
        // Counted as requests on the store: a listing and a read per table.
        let (_dir, wh, t) = setup();
        let cat = LocalCatalog::new(wh.clone());
        cat.put_table(&t).await.unwrap();
        let mut reads = Vec::new();
        for n in [10usize, 1000] {
            let parts: Vec<PartitionMeta> = (0..n)
                .map(|i| {
                    let d = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + chrono::Days::new(i as u64);
                    part(&wh, &d.to_string(), "000000000001")
                })
                .collect();
            cat.put_partitions("t", &parts).await.unwrap();
            let counter = std::sync::Arc::new(crate::store::counting::Counting::new(wh.store.clone()));
            let counting = Location { store: counter.clone(), direct: None, ..wh.clone() };
            let fresh = LocalCatalog::new(counting.clone());
            let (_, got) = fresh.table_with_partitions("t").await.unwrap().unwrap();
            assert!(got.len() >= n);
            reads.push(counter.requests());
        }
        assert_eq!(reads[0], reads[1], "catalog reads do not grow with partitions: {reads:?}");
        assert!(reads[0] <= 2, "{reads:?}");
    }

    #[tokio::test]
    async fn a_format_2_catalog_is_upgraded_in_place() {
        let (_dir, wh, t) = setup();
        let table = wh.child("_runner/catalog/t/table.json");
        wh.put(&table, Bytes::from(serde_json::to_vec(&t).unwrap())).await.unwrap();
        for d in ["2026-11-19", "2026-11-20"] {
            let p = part(&wh, d, "000000000003");
            wh.put(&wh.child(&format!("_runner/catalog/t/partitions/dt={d}.json")), Bytes::from(serde_json::to_vec(&p).unwrap()))
                .await
                .unwrap();
        }
        let cat = LocalCatalog::new(wh.clone());
        let legacy = cat.upgrade().await.unwrap();
        assert_eq!(legacy.len(), 3);
        assert_eq!(cat.partitions("t").await.unwrap().len(), 2);
        assert!(cat.upgrade().await.unwrap().len() == 3, "a second upgrade changes nothing");
        assert_eq!(LocalCatalog::new(wh.clone()).partitions("t").await.unwrap().len(), 2);
    }
}
