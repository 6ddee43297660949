//! The AWS Glue Data Catalog, kept in step with the local catalog.
//!
//! The local catalog in the warehouse stays the runner's record: its conditional creates are what
//! make concurrent publishers safe, and jobs read it. With `[catalog] kind = "glue"` every write
//! goes to it first and then to Glue, in the shape Athena and QuickSight expect
//! (`../shared/spec/aws.md`): EXTERNAL_TABLE, Parquet formats and SerDe, `classification=parquet`,
//! lowercase columns with Athena types, typed partition keys. Partitions go in batches of at most
//! 100 (`BatchCreatePartition`, `BatchUpdatePartition`) and 25 (`BatchDeletePartition`); the
//! per-entry errors inside a successful answer are retried when transient and reported otherwise.
//! A crash or a Glue failure between the two writes leaves Glue behind, never ahead, and is
//! recorded: before the local write, a marker (`_runner/glue-pending/<id>.json`: the table and
//! the partitions) is written, and it is deleted once Glue holds them. The next run of any job
//! (or `runner publish`) finishes what a marker older than `catalog.glue_replay_after` names, by
//! the store's time (a younger one may be a publish in flight). Version clean-up asks Glue too
//! ([`Catalog::pointed_at_elsewhere`]), so a version Glue still points at is never deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_glue::Client;
use aws_sdk_glue::types::{
    BatchUpdatePartitionRequestEntry, Column, DatabaseInput, PartitionError, PartitionInput, PartitionValueList, SerDeInfo,
    StorageDescriptor, Table, TableInput,
};

use super::layout::{CURRENT_VERSION, VERSIONED};
use super::local::LocalCatalog;
use super::{Catalog, PartitionMeta, TableMeta, newer_version};
use crate::aws::sdk_error;
use crate::error::{Error, Result};

const INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
const OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";
const SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";
/// Glue's limits per batch call.
const CREATE_BATCH: usize = 100;
const DELETE_BATCH: usize = 25;
/// Rounds of retrying the entries of a batch that failed with a transient error.
const ENTRY_ATTEMPTS: u32 = 4;
/// Rounds of re-reading the local catalog after a Glue write (see `mirror`).
const MIRROR_ROUNDS: u32 = 5;
/// Publishes Glue has not finished are recorded here (one object per publish).
pub const PENDING_DIR: &str = "_runner/glue-pending";

/// A publish to Glue not known to be finished: the local catalog holds what Glue should.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Pending {
    table: String,
    #[serde(default)]
    values: Vec<Vec<String>>,
    writer: String,
}

#[derive(Debug)]
pub struct GlueCatalog {
    local: LocalCatalog,
    client: Client,
    database: String,
    catalog_id: Option<String>,
    /// Tables read by Athena through partition projection.
    projection: Vec<String>,
    database_ready: tokio::sync::OnceCell<()>,
    /// Tables whose Glue definition this process checked and published, as published.
    checked: std::sync::Mutex<BTreeMap<String, TableMeta>>,
    /// Partitions this process made Glue hold, (table, values) -> location.
    mirrored: std::sync::Mutex<BTreeMap<(String, Vec<String>), String>>,
    /// When this process last finished pending publishes of earlier runs (a daemon does it
    /// again every `replay_after`).
    replayed: tokio::sync::Mutex<Option<std::time::Instant>>,
    replay_after: chrono::Duration,
}

/// What a sync changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub tables_created: u64,
    pub tables_updated: u64,
    pub tables_unchanged: u64,
    pub partitions_created: u64,
    pub partitions_updated: u64,
    pub partitions_deleted: u64,
    pub partitions_unchanged: u64,
}

impl SyncReport {
    pub fn changed(&self) -> bool {
        self.tables_created + self.tables_updated + self.partitions_created + self.partitions_updated + self.partitions_deleted
            > 0
    }
}

/// Glue's current definition of a table next to the one to publish.
struct TablePlan {
    input: TableInput,
    current: Option<Table>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableChange {
    Created,
    Updated,
    Unchanged,
}

impl GlueCatalog {
    pub fn new(local: LocalCatalog, sdk: &aws_config::SdkConfig, settings: &crate::config::CatalogSettings) -> Self {
        GlueCatalog {
            local,
            client: Client::new(sdk),
            database: settings.database.clone(),
            catalog_id: settings.catalog_id.clone(),
            projection: settings.projection.clone(),
            database_ready: tokio::sync::OnceCell::new(),
            checked: Default::default(),
            mirrored: Default::default(),
            replayed: tokio::sync::Mutex::new(None),
            replay_after: chrono::Duration::from_std(settings.glue_replay_after).unwrap_or(chrono::Duration::MAX),
        }
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// Creates the database when it is missing (once per process).
    async fn ensure_database(&self) -> Result<()> {
        self.database_ready
            .get_or_try_init(|| async {
                let got = self.client.get_database().set_catalog_id(self.catalog_id.clone()).name(&self.database).send().await;
                match got {
                    Ok(_) => Ok(()),
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => {
                        let input = DatabaseInput::builder()
                            .name(&self.database)
                            .description("Tables published by runner")
                            .build()
                            .map_err(|e| Error::Internal(e.to_string()))?;
                        match self
                            .client
                            .create_database()
                            .set_catalog_id(self.catalog_id.clone())
                            .database_input(input)
                            .send()
                            .await
                        {
                            Ok(_) => {
                                tracing::info!(database = %self.database, "created Glue database");
                                Ok(())
                            }
                            Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => Ok(()),
                            Err(e) => Err(sdk_error(format!("creating Glue database `{}`", self.database), e)),
                        }
                    }
                    Err(e) => Err(sdk_error(format!("reading Glue database `{}`", self.database), e)),
                }
            })
            .await
            .map(|_| ())
    }

    /// The table as Glue should hold it.
    fn table_input(&self, t: &TableMeta) -> Result<TableInput> {
        let versioned = t.parameters.get(VERSIONED).is_some_and(|v| v == "true");
        // An unpartitioned versioned table is read at its current version's folder.
        let location = match t.parameters.get(CURRENT_VERSION) {
            Some(v) if t.partition_keys.is_empty() => format!("{}v={v}/", t.location),
            _ => t.location.clone(),
        };
        let mut params: BTreeMap<String, String> = t.parameters.clone();
        params.insert("classification".into(), "parquet".into());
        params.insert("EXTERNAL".into(), "TRUE".into());
        params.insert("compressionType".into(), "snappy".into());
        params.insert("runner.managed".into(), "true".into());
        if self.projection.contains(&t.name) {
            if versioned {
                return Err(Error::Config {
                    file: "runner.toml [catalog] projection".into(),
                    message: format!(
                        "table `{}` cannot use partition projection: its partitions move to a new `v=` folder on every \
                         replace or compaction, and projection reads fixed locations. Remove it from the list",
                        t.name
                    ),
                });
            }
            params.extend(projection_parameters(t)?);
        }
        let sd = storage_descriptor(t, &location)?;
        TableInput::builder()
            .name(&t.name)
            .description(&t.description)
            .table_type("EXTERNAL_TABLE")
            .set_partition_keys(Some(columns(&t.partition_keys)?))
            .storage_descriptor(sd)
            .set_parameters(Some(params.into_iter().collect()))
            .build()
            .map_err(|e| Error::Internal(e.to_string()))
    }

    async fn glue_table(&self, name: &str) -> Result<Option<Table>> {
        match self
            .client
            .get_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&self.database)
            .name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.table),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => Ok(None),
            Err(e) => Err(sdk_error(format!("reading Glue table {}.{name}", self.database), e)),
        }
    }

    /// What Glue holds for `t` and what it should hold. A type change against Glue's definition
    /// (someone may have edited it by hand) is refused here, before anything is written.
    async fn plan_table(&self, t: &TableMeta) -> Result<TablePlan> {
        self.ensure_database().await?;
        let input = self.table_input(t)?;
        let current = self.glue_table(&t.name).await?;
        if let Some(c) = &current {
            refuse_type_changes(&self.database, c, &input)?;
        }
        Ok(TablePlan { input, current })
    }

    /// Creates the table, or updates it when it differs from the plan.
    async fn apply_table(&self, t: &TableMeta, plan: TablePlan) -> Result<TableChange> {
        let TablePlan { input, current } = plan;
        match current {
            Some(c) if same_table(&c, &input) => Ok(TableChange::Unchanged),
            Some(_) => {
                self.client
                    .update_table()
                    .set_catalog_id(self.catalog_id.clone())
                    .database_name(&self.database)
                    .table_input(input)
                    .send()
                    .await
                    .map_err(|e| sdk_error(format!("updating Glue table {}.{}", self.database, t.name), e))?;
                Ok(TableChange::Updated)
            }
            None => match self
                .client
                .create_table()
                .set_catalog_id(self.catalog_id.clone())
                .database_name(&self.database)
                .table_input(input)
                .send()
                .await
            {
                Ok(_) => Ok(TableChange::Created),
                // Another publisher created it meanwhile: compare with theirs.
                Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => {
                    let plan = self.plan_table(t).await?;
                    Box::pin(self.apply_table(t, plan)).await
                }
                Err(e) => Err(sdk_error(format!("creating Glue table {}.{}", self.database, t.name), e)),
            },
        }
    }

    fn partition_input(&self, t: &TableMeta, p: &PartitionMeta) -> Result<PartitionInput> {
        Ok(PartitionInput::builder()
            .set_values(Some(p.values.clone()))
            .storage_descriptor(storage_descriptor(t, &p.location)?)
            .build())
    }

    /// Creates partitions; those that exist are updated when `repoint`, else left as they are.
    /// Returns (created, updated).
    async fn write_partitions(&self, t: &TableMeta, parts: &[PartitionMeta], repoint: bool) -> Result<(u64, u64)> {
        let (mut created, mut updated) = (0, 0);
        for chunk in parts.chunks(CREATE_BATCH) {
            let chunk: Vec<&PartitionMeta> = chunk.iter().collect();
            let (n, existing) = in_rounds(&t.name, &chunk, |pending| async move {
                let inputs = pending.iter().map(|p| self.partition_input(t, p)).collect::<Result<Vec<_>>>()?;
                let out = self
                    .client
                    .batch_create_partition()
                    .set_catalog_id(self.catalog_id.clone())
                    .database_name(&self.database)
                    .table_name(&t.name)
                    .set_partition_input_list(Some(inputs))
                    .send()
                    .await
                    .map_err(|e| sdk_error(format!("registering partitions of {}.{}", self.database, t.name), e))?;
                Ok(out.errors().to_vec())
            })
            .await?;
            created += n;
            if repoint && !existing.is_empty() {
                // Never move Glue back: a publisher paused between its two writes must not
                // repoint a partition a newer publish moved on (the version it would name may
                // be deleted by then). One BatchGetPartition per 100 existing partitions.
                // The same rule as the local catalog's: only to a newer version (a partition
                // Glue no longer has, deleted meanwhile, is left to that delete).
                let held = self.glue_locations(&t.name, &existing).await?;
                let behind: Vec<&PartitionMeta> = existing
                    .into_iter()
                    .filter(|p| {
                        held.get(&p.values)
                            .is_some_and(|g| super::norm(g) != super::norm(&p.location) && newer_version(&p.location, g))
                    })
                    .collect();
                if !behind.is_empty() {
                    updated += self.update_partitions(t, &behind).await?;
                }
            }
        }
        Ok((created, updated))
    }

    async fn update_partitions(&self, t: &TableMeta, parts: &[&PartitionMeta]) -> Result<u64> {
        let mut n = 0;
        for chunk in parts.chunks(CREATE_BATCH) {
            n += in_rounds(&t.name, chunk, |pending| async move {
                let entries = pending
                    .iter()
                    .map(|p| {
                        BatchUpdatePartitionRequestEntry::builder()
                            .set_partition_value_list(Some(p.values.clone()))
                            .partition_input(self.partition_input(t, p)?)
                            .build()
                            .map_err(|e| Error::Internal(e.to_string()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let out = self
                    .client
                    .batch_update_partition()
                    .set_catalog_id(self.catalog_id.clone())
                    .database_name(&self.database)
                    .table_name(&t.name)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| sdk_error(format!("updating partitions of {}.{}", self.database, t.name), e))?;
                // The same per-entry shape as BatchCreatePartition's answer.
                Ok(out
                    .errors()
                    .iter()
                    .map(|e| {
                        PartitionError::builder()
                            .set_partition_values(e.partition_value_list.clone())
                            .set_error_detail(e.error_detail.clone())
                            .build()
                    })
                    .collect())
            })
            .await?
            .0;
        }
        Ok(n)
    }

    async fn remove_partitions(&self, table: &str, values: &[Vec<String>]) -> Result<u64> {
        let mut n = 0;
        for chunk in values.chunks(DELETE_BATCH) {
            let keys = value_lists(chunk.iter())?;
            let out = self
                .client
                .batch_delete_partition()
                .set_catalog_id(self.catalog_id.clone())
                .database_name(&self.database)
                .table_name(table)
                .set_partitions_to_delete(Some(keys))
                .send()
                .await
                .map_err(|e| sdk_error(format!("deleting partitions of {}.{table}", self.database), e))?;
            let failed: Vec<&PartitionError> = out
                .errors()
                .iter()
                .filter(|e| e.error_detail().and_then(|d| d.error_code()) != Some("EntityNotFoundException"))
                .collect();
            if let Some(e) = failed.first() {
                return Err(entry_error(table, e));
            }
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    /// Every partition Glue holds for `table`: values -> location.
    /// Where Glue's partitions with these values point (those it has). Keys Glue left
    /// unprocessed (throttling) are asked again; still unanswered, it is an error (nothing is
    /// repointed blind, and the publish's marker stays).
    async fn glue_locations(&self, table: &str, parts: &[&PartitionMeta]) -> Result<BTreeMap<Vec<String>, String>> {
        let mut out = BTreeMap::new();
        for chunk in parts.chunks(CREATE_BATCH) {
            let mut keys = value_lists(chunk.iter().map(|p| &p.values))?;
            for attempt in 0..=ENTRY_ATTEMPTS {
                if keys.is_empty() {
                    break;
                }
                if attempt == ENTRY_ATTEMPTS {
                    return Err(Error::Failed(format!(
                        "Glue left {} partition(s) of {}.{table} unread after {ENTRY_ATTEMPTS} tries (throttled?); nothing was repointed, the next run tries again",
                        keys.len(),
                        self.database
                    )));
                }
                if attempt > 0 {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                let got = self
                    .client
                    .batch_get_partition()
                    .set_catalog_id(self.catalog_id.clone())
                    .database_name(&self.database)
                    .table_name(table)
                    .set_partitions_to_get(Some(keys))
                    .send()
                    .await
                    .map_err(|e| sdk_error(format!("reading partitions of {}.{table}", self.database), e))?;
                for p in got.partitions() {
                    let loc = p.storage_descriptor().and_then(|s| s.location()).unwrap_or_default().to_string();
                    out.insert(p.values().to_vec(), loc);
                }
                keys = got.unprocessed_keys().to_vec();
            }
        }
        Ok(out)
    }

    /// Every partition of a Glue table: values -> location.
    async fn glue_partitions(&self, table: &str) -> Result<BTreeMap<Vec<String>, String>> {
        let mut out = BTreeMap::new();
        let mut pages = self
            .client
            .get_partitions()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&self.database)
            .table_name(table)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(format!("listing partitions of {}.{table}", self.database), e))?;
            for p in page.partitions() {
                let loc = p.storage_descriptor().and_then(|s| s.location()).unwrap_or_default().to_string();
                out.insert(p.values().to_vec(), loc);
            }
        }
        Ok(out)
    }

    /// `runner publish`: makes Glue hold exactly the local catalog's tables and partitions.
    /// Idempotent: a second run changes nothing and says so.
    pub async fn publish_all(&self) -> Result<SyncReport> {
        // What earlier runs left pending first (the full sync below would do it too, but the
        // markers would stay).
        self.replay_pending(true).await?;
        let mut report = SyncReport::default();
        for t in self.local.tables().await? {
            let plan = self.plan_table(&t).await?;
            match self.apply_table(&t, plan).await? {
                TableChange::Created => report.tables_created += 1,
                TableChange::Updated => report.tables_updated += 1,
                TableChange::Unchanged => report.tables_unchanged += 1,
            }
            if t.partition_keys.is_empty() {
                continue;
            }
            let local = self.local.partitions(&t.name).await?;
            let glue = self.glue_partitions(&t.name).await?;
            let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
            let missing: Vec<PartitionMeta> = local.iter().filter(|p| !glue.contains_key(&p.values)).cloned().collect();
            let moved: Vec<&PartitionMeta> =
                local.iter().filter(|p| glue.get(&p.values).is_some_and(|l| !same(l, &p.location))).collect();
            let stale: Vec<Vec<String>> = glue.keys().filter(|v| !local.iter().any(|p| &p.values == *v)).cloned().collect();
            report.partitions_unchanged += (local.len() - missing.len() - moved.len()) as u64;
            report.partitions_created += self.write_partitions(&t, &missing, true).await?.0;
            report.partitions_updated += self.update_partitions(&t, &moved).await?;
            report.partitions_deleted += self.remove_partitions(&t.name, &stale).await?;
        }
        Ok(report)
    }
}

#[async_trait::async_trait]
impl Catalog for GlueCatalog {
    async fn tables(&self) -> Result<Vec<TableMeta>> {
        self.local.tables().await
    }

    async fn table(&self, name: &str) -> Result<Option<TableMeta>> {
        self.local.table(name).await
    }

    async fn table_with_partitions(&self, name: &str) -> Result<Option<(TableMeta, Vec<PartitionMeta>)>> {
        self.local.table_with_partitions(name).await
    }

    async fn put_table(&self, table: &TableMeta) -> Result<()> {
        // Every run records itself, so every run finishes what an earlier one left pending.
        self.replay_once().await;
        // Once per process and definition: a run publishing many times does not read Glue's
        // table before each publish.
        if self.checked.lock().expect("glue tables checked").get(&table.name) == Some(table) {
            return Ok(());
        }
        // Glue's definition is checked before the local catalog changes: a table another tool
        // changed there must not be published over.
        let plan = self.plan_table(table).await?;
        // Glue already holds this definition: a crash after the local write leaves it right,
        // so no marker (two requests saved per table and process, the common case).
        let in_step = plan.current.as_ref().is_some_and(|c| same_table(c, &plan.input));
        let marker = if in_step { None } else { Some(self.mark_pending(&table.name, Vec::new()).await?) };
        self.local.put_table(table).await?;
        self.apply_table(table, plan).await?;
        if let Some(m) = marker {
            self.local.warehouse().delete(&m).await?;
        }
        self.checked.lock().expect("glue tables checked").insert(table.name.clone(), table.clone());
        Ok(())
    }

    async fn partitions(&self, table: &str) -> Result<Vec<PartitionMeta>> {
        self.local.partitions(table).await
    }

    async fn put_partitions(&self, table: &str, partitions: &[PartitionMeta]) -> Result<Vec<PartitionMeta>> {
        let marker = self.mark_unmirrored(table, partitions).await?;
        let changed = self.local.put_partitions(table, partitions).await?;
        if self.mirror(table, partitions, true).await?
            && let Some(m) = marker
        {
            self.local.warehouse().delete(&m).await?;
        }
        Ok(changed)
    }

    async fn add_partitions(&self, table: &str, partitions: &[PartitionMeta]) -> Result<Vec<PartitionMeta>> {
        let marker = self.mark_unmirrored(table, partitions).await?;
        let changed = self.local.add_partitions(table, partitions).await?;
        // Like the local catalog: an existing partition is never repointed by an add.
        if self.mirror(table, partitions, false).await?
            && let Some(m) = marker
        {
            self.local.warehouse().delete(&m).await?;
        }
        Ok(changed)
    }

    async fn delete_partitions(&self, table: &str, values: &[Vec<String>]) -> Result<()> {
        self.local.delete_partitions(table, values).await?;
        {
            let mut mirrored = self.mirrored.lock().expect("glue partitions mirrored");
            for v in values {
                mirrored.remove(&(table.to_string(), v.clone()));
            }
        }
        self.remove_partitions(table, values).await.map(|_| ())
    }

    async fn table_version(&self, table: &str) -> Result<Option<u64>> {
        self.local.table_version(table).await
    }

    async fn warm(&self, table: &str) -> Result<()> {
        self.local.warm(table).await
    }

    async fn retired(&self, table: &str) -> Result<Vec<super::Retired>> {
        self.local.retired(table).await
    }

    async fn forget_retired(&self, table: &str, locations: &[String]) -> Result<()> {
        self.local.forget_retired(table, locations).await
    }

    async fn pointed_at_elsewhere(&self, table: &str, candidates: &[String]) -> Result<std::collections::BTreeSet<String>> {
        let Some(t) = self.glue_table(table).await? else { return Ok(Default::default()) };
        let wanted: std::collections::BTreeSet<String> = candidates.iter().map(|c| super::norm(c)).collect();
        let mut held = std::collections::BTreeSet::new();
        let table_location = t.storage_descriptor().and_then(|s| s.location()).map(super::norm).filter(|l| wanted.contains(l));
        let table_behind = table_location.is_some();
        held.extend(table_location);
        let mut behind = Vec::new();
        if !t.partition_keys().is_empty() {
            for (values, location) in self.glue_partitions(table).await? {
                if wanted.contains(&super::norm(&location)) {
                    held.insert(super::norm(&location));
                    behind.push(values);
                }
            }
        }
        // Glue points at a replaced version: a publish that never finished its Glue half left
        // no marker (or it was lost). Record one, so the next run catches Glue up.
        if table_behind || !behind.is_empty() {
            self.mark_pending(table, behind).await?;
        }
        Ok(candidates.iter().filter(|c| held.contains(&super::norm(c))).cloned().collect())
    }
}

impl GlueCatalog {
    /// Records that Glue is about to be behind the local catalog for `table` (and `values`).
    async fn mark_pending(&self, table: &str, values: Vec<Vec<String>>) -> Result<object_store::path::Path> {
        let writer = uuid::Uuid::now_v7().simple().to_string();
        let wh = self.local.warehouse();
        let path = wh.child(&format!("{PENDING_DIR}/{writer}.json"));
        let body = serde_json::to_vec(&Pending { table: table.to_string(), values, writer })
            .map_err(|e| Error::Internal(e.to_string()))?;
        wh.put(&path, bytes::Bytes::from(body)).await?;
        Ok(path)
    }

    /// [`Self::mark_pending`] for the partitions Glue may not hold as offered (none when this
    /// process mirrored them all already: a run adding batch after batch to one day).
    async fn mark_unmirrored(&self, table: &str, partitions: &[PartitionMeta]) -> Result<Option<object_store::path::Path>> {
        let values: Vec<Vec<String>> = {
            let mirrored = self.mirrored.lock().expect("glue partitions mirrored");
            partitions
                .iter()
                .filter(|p| {
                    mirrored
                        .get(&(table.to_string(), p.values.clone()))
                        .is_none_or(|l| super::norm(l) != super::norm(&p.location))
                })
                .map(|p| p.values.clone())
                .collect()
        };
        if values.is_empty() {
            return Ok(None);
        }
        self.mark_pending(table, values).await.map(Some)
    }

    /// Finishes the Glue half of publishes earlier runs left pending: once per process, and
    /// again every `replay_after` in a long-lived one (the daemon). A failure is a warning (the
    /// markers stay for the next try): it must not fail the job.
    async fn replay_once(&self) {
        let mut last = self.replayed.lock().await;
        let every = self.replay_after.to_std().unwrap_or(std::time::Duration::MAX).max(std::time::Duration::from_secs(1));
        if last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        *last = Some(std::time::Instant::now());
        match self.replay_pending(false).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(publishes = n, "finished the Glue half of publishes an earlier run left pending"),
            Err(e) => {
                tracing::warn!("could not finish the Glue publishes an earlier run left pending (the next run tries again): {e}")
            }
        }
    }

    /// Makes Glue hold what the local catalog holds for every pending marker (older than the
    /// grace, by the store's time, unless `all`), then deletes it. Returns how many it finished.
    pub async fn replay_pending(&self, all: bool) -> Result<u64> {
        let wh = self.local.warehouse();
        let markers = wh.list(PENDING_DIR).await?;
        if markers.is_empty() {
            return Ok(0);
        }
        let now = wh.store_now("_runner/clock/glue-pending").await?;
        let mut done = 0;
        for m in markers {
            if !all && m.last_modified + self.replay_after > now {
                continue;
            }
            let Some(bytes) = wh.get_opt(&m.location).await? else { continue };
            let p: Pending = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Failed(format!("Glue publish marker {} is corrupt ({e}): delete it and run `runner publish`", m.location))
            })?;
            if let Some(t) = self.local.table(&p.table).await? {
                let plan = self.plan_table(&t).await?;
                self.apply_table(&t, plan).await?;
                if !p.values.is_empty() {
                    let parts: Vec<PartitionMeta> =
                        self.local.partitions(&p.table).await?.into_iter().filter(|x| p.values.contains(&x.values)).collect();
                    // The local catalog never moves a partition back, so its state is the one to hold.
                    self.write_partitions(&t, &parts, true).await?;
                    // A partition the local catalog no longer has was deleted there (a delete
                    // cut short before Glue's half): delete it in Glue too.
                    let gone: Vec<Vec<String>> =
                        p.values.iter().filter(|v| !parts.iter().any(|x| &x.values == *v)).cloned().collect();
                    if !gone.is_empty() {
                        self.remove_partitions(&p.table, &gone).await?;
                    }
                }
            }
            wh.delete(&m.location).await?;
            done += 1;
        }
        Ok(done)
    }

    /// Makes Glue hold the local catalog's state of `partitions` (their values), whether or not
    /// this call changed the local catalog: a run killed between the two writes left the local
    /// catalog ahead of Glue, and the roll-forward that repeats the publish finds nothing to
    /// change locally. Once per process and location: a run adding batch after batch to the
    /// same day sends Glue one call for it.
    async fn mirror(&self, table: &str, partitions: &[PartitionMeta], repoint: bool) -> Result<bool> {
        let values: Vec<&Vec<String>> = partitions.iter().map(|p| &p.values).collect();
        for round in 0..MIRROR_ROUNDS {
            let pending: Vec<PartitionMeta> = {
                let mirrored = self.mirrored.lock().expect("glue partitions mirrored");
                self.local
                    .cached_partitions(table, &values)
                    .into_iter()
                    .filter(|p| mirrored.get(&(table.to_string(), p.values.clone())) != Some(&p.location))
                    .collect()
            };
            if pending.is_empty() {
                return Ok(true);
            }
            crate::failpoint::hit("glue.before_mirror");
            // A holder that lost its lease (paused past it) leaves Glue to the new holder.
            if let Some(f) = crate::fence::fence().filter(|f| f.lost()) {
                return Err(Error::Fenced(format!(
                    "job `{}` lost its lease (generation {}) before writing Glue's partitions of `{table}`; the marker stays \
                     for the next run",
                    f.job, f.generation
                )));
            }
            let t = self.local_table(table).await?;
            // After the first round only partitions another publisher moved are written, and
            // always to where the local catalog points now.
            self.write_partitions(&t, &pending, repoint || round > 0).await?;
            {
                let mut mirrored = self.mirrored.lock().expect("glue partitions mirrored");
                for p in pending {
                    mirrored.insert((table.to_string(), p.values), p.location);
                }
            }
            // Another publisher may have moved these partitions on while Glue was written (its
            // Glue write landing before ours): read the local catalog again (one listing) and
            // go round until Glue holds what it holds. The last Glue write of a partition is
            // then made after the local catalog's last change to it was read.
            self.local.refresh(table).await?;
        }
        // Published locally; Glue follows once the publishers stop racing.
        tracing::warn!(
            table,
            "the partitions kept moving while Glue was written ({MIRROR_ROUNDS} rounds); the marker stays for the next run \
             (`runner publish` finishes it now)"
        );
        Ok(false)
    }

    async fn local_table(&self, table: &str) -> Result<TableMeta> {
        self.local
            .table(table)
            .await?
            .ok_or_else(|| Error::Internal(format!("partitions registered for table `{table}`, which is not in the catalog")))
    }
}

/// Glue columns: lowercase names (Glue lowercases them anyway; Athena matches Parquet columns
/// case-insensitively), Athena types.
fn columns(cols: &[super::ColumnMeta]) -> Result<Vec<Column>> {
    cols.iter()
        .map(|c| {
            let mut b = Column::builder().name(c.name.to_ascii_lowercase()).r#type(&c.ty);
            if !c.comment.is_empty() {
                b = b.comment(&c.comment);
            }
            b.build().map_err(|e| Error::Internal(e.to_string()))
        })
        .collect()
}

fn storage_descriptor(t: &TableMeta, location: &str) -> Result<StorageDescriptor> {
    Ok(StorageDescriptor::builder()
        .set_columns(Some(columns(&t.columns)?))
        .location(location)
        .input_format(INPUT_FORMAT)
        .output_format(OUTPUT_FORMAT)
        .compressed(false)
        .serde_info(SerDeInfo::builder().serialization_library(SERDE).parameters("serialization.format", "1").build())
        .build())
}

/// Athena partition projection for a table whose partitions sit at `<table>/<key>=<value>/`.
fn projection_parameters(t: &TableMeta) -> Result<BTreeMap<String, String>> {
    let mut p = BTreeMap::new();
    p.insert("projection.enabled".to_string(), "true".to_string());
    let mut template = t.location.clone();
    for k in &t.partition_keys {
        let name = k.name.to_ascii_lowercase();
        if k.ty != "date" {
            return Err(Error::Config {
                file: "runner.toml [catalog] projection".into(),
                message: format!(
                    "table `{}`: partition key `{}` is {}; projection is offered for date keys only",
                    t.name, k.name, k.ty
                ),
            });
        }
        p.insert(format!("projection.{name}.type"), "date".into());
        p.insert(format!("projection.{name}.format"), "yyyy-MM-dd".into());
        p.insert(format!("projection.{name}.range"), "2020-01-01,NOW".into());
        p.insert(format!("projection.{name}.interval"), "1".into());
        p.insert(format!("projection.{name}.interval.unit"), "DAYS".into());
        template.push_str(&format!("{}=${{{name}}}/", k.name));
    }
    p.insert("storage.location.template".into(), template);
    Ok(p)
}

fn same_columns(a: &[Column], b: &[Column]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name().eq_ignore_ascii_case(y.name()) && x.r#type() == y.r#type())
}

/// Whether Glue's table already is what `input` describes (so nothing needs updating).
fn same_table(current: &Table, input: &TableInput) -> bool {
    let (Some(sd), Some(want)) = (current.storage_descriptor(), input.storage_descriptor()) else { return false };
    let params = current.parameters();
    let trim = |s: Option<&str>| s.unwrap_or_default().trim_end_matches('/').to_string();
    current.table_type() == input.table_type()
        && current.description() == input.description()
        && trim(sd.location()) == trim(want.location())
        && sd.input_format() == want.input_format()
        && sd.output_format() == want.output_format()
        && sd.serde_info().and_then(|s| s.serialization_library()) == want.serde_info().and_then(|s| s.serialization_library())
        && same_columns(sd.columns(), want.columns())
        && same_columns(current.partition_keys(), input.partition_keys())
        && input.parameters().is_some_and(|want| {
            want.iter().all(|(k, v)| params.and_then(|p| p.get(k)) == Some(v))
                && params.is_none_or(|p| p.keys().filter(|k| k.starts_with("projection.")).all(|k| want.contains_key(k)))
        })
}

/// A column Glue has with another type than the one we would publish is an incompatible change.
fn refuse_type_changes(database: &str, current: &Table, input: &TableInput) -> Result<()> {
    let have = current.storage_descriptor().map(|s| s.columns()).unwrap_or_default().iter().chain(current.partition_keys());
    let want: Vec<&Column> =
        input.storage_descriptor().map(|s| s.columns()).unwrap_or_default().iter().chain(input.partition_keys()).collect();
    for c in have {
        if let Some(w) = want.iter().find(|w| w.name().eq_ignore_ascii_case(c.name()))
            && w.r#type() != c.r#type()
        {
            return Err(Error::Failed(format!(
                "Glue table {database}.{}: column `{}` is {} in Glue and would become {}; nothing was published. \
                 Athena fails on a changed type (HIVE_BAD_DATA): restore the old type, write a new column, or drop the \
                 Glue table to let the runner recreate it",
                input.name(),
                c.name(),
                c.r#type().unwrap_or("?"),
                w.r#type().unwrap_or("?")
            )));
        }
    }
    Ok(())
}

/// Sends `parts` through `call` (one batch request for the entries it is given) in rounds,
/// retrying the entries that failed transiently. Returns how many succeeded and those that
/// already existed.
async fn in_rounds<'p, F, Fut>(table: &str, parts: &[&'p PartitionMeta], mut call: F) -> Result<(u64, Vec<&'p PartitionMeta>)>
where
    F: FnMut(Vec<&'p PartitionMeta>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<PartitionError>>>,
{
    let (mut done, mut existing) = (0, Vec::new());
    let mut pending = parts.to_vec();
    for attempt in 1..=ENTRY_ATTEMPTS {
        let errors = call(pending.clone()).await?;
        let (retry, exists) = sort_errors(table, &errors, attempt)?;
        done += (pending.len() - retry.len() - exists.len()) as u64;
        existing.extend(pending.iter().filter(|p| exists.contains(&p.values)).copied());
        pending.retain(|p| retry.contains(&p.values));
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    Ok((done, existing))
}

/// A partition's values, in partition-key order.
type Values = Vec<String>;

/// Splits a batch answer's per-entry errors into values to retry (transient) and values that
/// already exist; any other error is returned, naming the partition and Glue's reason.
fn sort_errors(table: &str, errors: &[PartitionError], attempt: u32) -> Result<(Vec<Values>, Vec<Values>)> {
    let (mut retry, mut exists) = (Vec::new(), Vec::new());
    for e in errors {
        let values = e.partition_values().to_vec();
        match e.error_detail().and_then(|d| d.error_code()).unwrap_or_default() {
            "AlreadyExistsException" => exists.push(values),
            "ThrottlingException"
            | "InternalServiceException"
            | "ConcurrentModificationException"
            | "OperationTimeoutException"
                if attempt < ENTRY_ATTEMPTS =>
            {
                retry.push(values)
            }
            _ => return Err(entry_error(table, e)),
        }
    }
    Ok((retry, exists))
}

fn entry_error(table: &str, e: &PartitionError) -> Error {
    let d = e.error_detail();
    Error::Failed(format!(
        "Glue refused partition ({}) of table `{table}`: {} {}; the data is published in the warehouse, run `runner publish` \
         to retry the catalog",
        e.partition_values().join(", "),
        d.and_then(|d| d.error_code()).unwrap_or("error"),
        d.and_then(|d| d.error_message()).unwrap_or_default()
    ))
}

/// Glue's keys for partitions with these values.
fn value_lists<'v>(values: impl Iterator<Item = &'v Vec<String>>) -> Result<Vec<PartitionValueList>> {
    values
        .map(|v| PartitionValueList::builder().set_values(Some(v.clone())).build().map_err(|e| Error::Internal(e.to_string())))
        .collect()
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 << attempt.min(6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_glue::types::ErrorDetail;

    fn err(values: &[&str], code: &str) -> PartitionError {
        PartitionError::builder()
            .set_partition_values(Some(values.iter().map(|s| s.to_string()).collect()))
            .error_detail(ErrorDetail::builder().error_code(code).error_message("m").build())
            .build()
    }

    #[test]
    fn batch_errors_are_sorted_retried_or_reported() {
        let (retry, exists) =
            sort_errors("t", &[err(&["2026-11-20"], "AlreadyExistsException"), err(&["2026-11-21"], "ThrottlingException")], 1)
                .unwrap();
        assert_eq!(exists, vec![vec!["2026-11-20".to_string()]]);
        assert_eq!(retry, vec![vec!["2026-11-21".to_string()]]);
        let e = sort_errors("t", &[err(&["2026-11-21"], "ThrottlingException")], ENTRY_ATTEMPTS).unwrap_err();
        assert!(e.to_string().contains("(2026-11-21)") && e.to_string().contains("runner publish"), "{e}");
        let e = sort_errors("t", &[err(&["x"], "InvalidInputException")], 1).unwrap_err();
        assert!(e.to_string().contains("InvalidInputException"));
    }

    #[test]
    fn projection_templates_the_partition_folders() {
        let t = TableMeta {
            name: "quarantine".into(),
            description: String::new(),
            location: "s3://b/wh/quarantine/".into(),
            columns: vec![],
            partition_keys: vec![super::super::ColumnMeta { name: "dt".into(), ty: "date".into(), comment: String::new() }],
            format: "parquet".into(),
            parameters: BTreeMap::new(),
        };
        let p = projection_parameters(&t).unwrap();
        assert_eq!(p["storage.location.template"], "s3://b/wh/quarantine/dt=${dt}/");
        assert_eq!(p["projection.dt.type"], "date");
        assert_eq!(p["projection.dt.format"], "yyyy-MM-dd");
    }
}
