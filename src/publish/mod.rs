//! Write-audit-publish: how every job's output becomes visible to readers, atomically.
//!
//! The output of a run is written as a new *version* of each partition it produces
//! (`<table>/<key>=<value>/v=<run id>/part-00000.parquet`, see `catalog::layout`), which no
//! catalog reader sees. The job's checks ([`checks`]) run on that output; only if all pass does
//! the catalog repoint each partition at its new version (one atomic put per partition; a batch
//! update in Glue). A failed check or a crash leaves the previously published versions in place.
//! Replaced versions are deleted after a grace period ([`collect_replaced_versions`]), so a query
//! planned just before the switch still finds its files. SQL jobs, scoring and compaction all
//! publish this way; ingest and compaction commits are published through the ledger
//! ([`commit`]).

pub mod checks;
pub mod commit;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, RecordBatch};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Schema};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;

use crate::catalog::layout::{CURRENT_VERSION, VERSIONED, partition_dir, version_folder};
use crate::catalog::{DataFile, PartitionMeta, TableMeta, norm};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::job::{Checks, WriteMode};
use crate::store::encode_parquet;
use crate::workspace::Workspace;

/// Where and how a job's output is published.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// The job publishing (named in messages and recorded in the table's parameters).
    pub job: String,
    /// The table's description in the catalog.
    pub description: String,
    pub output: String,
    pub partition_by: Vec<String>,
    pub mode: WriteMode,
    pub checks: Checks,
    /// What produced the output (for messages): the SQL file, the model.
    pub source: String,
}

/// What a publish wrote.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub rows: u64,
    pub bytes: u64,
    pub files: u64,
    /// `key=value` paths of the partitions replaced (or that a dry run would replace).
    pub partitions: Vec<String>,
}

/// Write-audit-publish of a job's output: splits it into partitions, runs the checks, writes a
/// new version of each partition and repoints the catalog. With `dry_run`, stops after the
/// checks. `expected_partitions` are replaced even when the output has no row for them.
pub async fn publish_output(
    ws: &Workspace,
    sj: &OutputSpec,
    schema: &Arc<Schema>,
    outputs: Vec<RecordBatch>,
    expected_partitions: BTreeSet<Vec<String>>,
    run_id: &str,
    dry_run: bool,
) -> Result<Published> {
    let mut summary = Published::default();
    for name in &sj.partition_by {
        if schema.index_of(name).is_err() {
            return Err(Error::Usage(format!(
                "job `{}`: partition column `{name}` is not in the output of {}",
                sj.job, sj.source
            )));
        }
    }
    summary.rows = outputs.iter().map(|b| b.num_rows() as u64).sum();

    // Split by partition values.
    let parts = split_partitions(schema, &outputs, &sj.partition_by)?;
    let mut all_parts: BTreeMap<Vec<String>, Vec<RecordBatch>> = parts;
    for e in expected_partitions {
        all_parts.entry(e).or_default();
    }
    summary.partitions = all_parts.keys().map(|v| partition_dir(&sj.partition_by, v)).collect();

    // Audit before anything is written where a reader could see it.
    let started = Instant::now();
    let failed = checks::run(&sj.checks, &outputs);
    if !failed.is_empty() {
        return Err(Error::Failed(format!(
            "job `{}`: quality checks failed, nothing published:\n  - {}",
            sj.job,
            failed.join("\n  - ")
        )));
    }
    if dry_run {
        return Ok(summary);
    }

    // Write: a new version of each partition.
    let file_schema = Arc::new(Schema::new(
        schema.fields().iter().filter(|f| !sj.partition_by.contains(f.name())).cloned().collect::<Vec<_>>(),
    ));
    // The partitions as published, for the modes that build on them (one read of the snapshot):
    // an append adds to a partition's current version, a table replaced drops the partitions
    // it did not produce. Replacing partitions needs none: each gets a new version.
    let location = ws.warehouse.join(&sj.output).url;
    let current: HashMap<Vec<String>, String> = match sj.mode {
        WriteMode::ReplacePartitions => HashMap::new(),
        WriteMode::Append | WriteMode::ReplaceTable => match ws.catalog.table_with_partitions(&sj.output).await? {
            Some((_, partitions)) if !sj.partition_by.is_empty() => {
                partitions.into_iter().map(|p| (p.values, p.location)).collect()
            }
            _ => HashMap::new(),
        },
    };
    // Each partition's file: encoded on the blocking pool, a few at a time (the writes wait on
    // storage, the encoding on a core).
    let mut writes = Vec::new();
    for (values, batches) in &all_parts {
        let dir = partition_dir(&sj.partition_by, values);
        let (folder, name, append) = match (sj.mode, current.get(values)) {
            // Append adds a file to the partition's current version.
            (WriteMode::Append, Some(loc)) => (ws.warehouse.relative_url(loc)?, format!("part-{run_id}.parquet"), true),
            _ => (version_folder(&sj.output, &dir, run_id), "part-00000.parquet".to_string(), false),
        };
        let stripped: Vec<RecordBatch> = batches
            .iter()
            .map(|b| {
                let cols = file_schema
                    .fields()
                    .iter()
                    .map(|f| b.column(b.schema().index_of(f.name()).expect("column")))
                    .cloned()
                    .collect();
                RecordBatch::try_new(file_schema.clone(), cols).map_err(Error::arrow("dropping partition columns"))
            })
            .collect::<Result<_>>()?;
        writes.push((values.clone(), folder, name, append, stripped));
    }
    let written: Vec<Result<(PartitionMeta, u64)>> = futures::stream::iter(writes)
        .map(|(values, folder, name, append, stripped)| {
            let fs = file_schema.clone();
            async move {
                let data = tokio::task::spawn_blocking(move || -> Result<Bytes> {
                    let all = arrow::compute::concat_batches(&fs, &stripped).map_err(Error::arrow("concatenating output"))?;
                    encode_parquet(&all)
                })
                .await
                .map_err(|e| Error::Internal(format!("parquet task failed: {e}")))??;
                let len = data.len() as u64;
                ws.warehouse.put(&ws.warehouse.child(&format!("{folder}/{name}")), data).await?;
                // The version is written whole, once: readers open its file without listing.
                let files = if append { Vec::new() } else { vec![DataFile { name, size: len }] };
                Ok((PartitionMeta { values, location: ws.warehouse.join(&folder).url, files }, len))
            }
        })
        .buffered(4)
        .collect()
        .await;
    let t_written = started.elapsed();
    let mut new_parts = Vec::new();
    for w in written {
        let (part, len) = w?;
        summary.bytes += len;
        summary.files += 1;
        new_parts.push(part);
    }

    failpoint::hit("sql.before_publish");

    // Publish: the table definition, then each partition points at its new version.
    let types: Vec<(&str, DataType)> = sj
        .partition_by
        .iter()
        .map(|k| (k.as_str(), schema.field_with_name(k).map(|f| f.data_type().clone()).unwrap_or(DataType::Utf8)))
        .collect();
    let mut meta = TableMeta::from_arrow(&sj.output, &sj.description, location, &file_schema, &types)?;
    meta.parameters.insert(VERSIONED.into(), "true".into());
    meta.parameters.insert("runner.job".into(), sj.job.clone());
    if sj.partition_by.is_empty() {
        meta.parameters.insert(CURRENT_VERSION.into(), run_id.to_string());
    }
    ws.catalog.put_table(&meta).await?;
    if !sj.partition_by.is_empty() {
        ws.catalog.put_partitions(&sj.output, &new_parts).await?;
        if sj.mode == WriteMode::ReplaceTable {
            let stale: Vec<Vec<String>> = current.keys().filter(|v| !all_parts.contains_key(*v)).cloned().collect();
            ws.catalog.delete_partitions(&sj.output, &stale).await?;
        }
    }
    let t_published = started.elapsed();
    let grace = chrono::Duration::from_std(ws.config.catalog.keep_replaced).unwrap_or(chrono::Duration::MAX);
    // Published: a failed clean-up (Glue throttling, a store hiccup) is a warning, not a
    // failed job; the next publish of the table collects what this one left.
    if let Err(e) = collect_replaced_versions(ws, &sj.output, grace).await {
        tracing::warn!(table = %sj.output, "published, but collecting replaced versions failed (the next publish tries again): {e}");
    }
    tracing::debug!(
        "job `{}`: {} partition(s) audited and written in {} ms, published in {} ms, old versions collected in {} ms",
        sj.job,
        summary.partitions.len(),
        t_written.as_millis(),
        (t_published - t_written).as_millis(),
        (started.elapsed() - t_published).as_millis()
    );
    Ok(summary)
}

/// Groups output rows by their partition values (rendered as in Hive paths).
fn split_partitions(
    schema: &Schema,
    batches: &[RecordBatch],
    keys: &[String],
) -> Result<BTreeMap<Vec<String>, Vec<RecordBatch>>> {
    let mut out: BTreeMap<Vec<String>, Vec<RecordBatch>> = BTreeMap::new();
    if keys.is_empty() {
        out.insert(Vec::new(), batches.to_vec());
        return Ok(out);
    }
    let idx: Vec<usize> = keys.iter().map(|k| schema.index_of(k).expect("checked")).collect();
    for b in batches {
        // Sort the rows by their partition values, then cut the sorted batch into runs of equal
        // values: no key is built per row, only one per run.
        let sort: Vec<arrow::compute::SortColumn> =
            idx.iter().map(|i| arrow::compute::SortColumn { values: b.column(*i).clone(), options: None }).collect();
        let order = arrow::compute::lexsort_to_indices(&sort, None).map_err(Error::arrow("splitting partitions"))?;
        let sorted = take_record_batch(b, &order).map_err(Error::arrow("splitting partitions"))?;
        let keys_sorted: Vec<arrow::array::ArrayRef> = idx.iter().map(|i| sorted.column(*i).clone()).collect();
        let ranges = arrow::compute::partition(&keys_sorted).map_err(Error::arrow("splitting partitions"))?.ranges();
        for r in ranges {
            let key: Vec<String> = keys_sorted
                .iter()
                .map(|c| {
                    // The value as Hive paths spell it (a DATE as 2026-11-20).
                    let one = arrow::compute::cast(&c.slice(r.start, 1), &DataType::Utf8)
                        .map_err(Error::arrow("rendering partition values"))?;
                    let s = one.as_any().downcast_ref::<arrow::array::StringArray>().expect("utf8");
                    Ok(if s.is_null(0) { String::new() } else { s.value(0).to_string() })
                })
                .collect::<Result<_>>()?;
            out.entry(key).or_default().push(sorted.slice(r.start, r.end - r.start));
        }
    }
    Ok(out)
}

/// Deletes the files of partition versions that stopped being current at least `grace` ago
/// (queries planned before the switch may still read them): the catalog keeps the list of
/// retired versions, so this lists only their folders, never the whole table, and deletes their
/// files in bulk. Returns how many files it deleted.
///
/// A version written by a run that crashed before publishing is never retired: it stays on
/// storage, unread (readers only see what the catalog points at), until the table is rebuilt.
pub async fn collect_replaced_versions(ws: &Workspace, table: &str, grace: chrono::Duration) -> Result<u64> {
    let cutoff = (Utc::now() - grace).timestamp_millis();
    let due: Vec<String> =
        ws.catalog.retired(table).await?.into_iter().filter(|r| r.at_ms < cutoff).map(|r| r.location).collect();
    if due.is_empty() {
        return Ok(0);
    }
    // A folder still current (a partition repointed back by an older runner, or an
    // unpartitioned table's current version) is never deleted. One Glue still points at (a
    // publish cut short between the local catalog and Glue, which the next run finishes) is
    // neither deleted nor forgotten: a later clean-up looks again.
    let current: BTreeSet<String> = ws.catalog.partitions(table).await?.into_iter().map(|p| norm(&p.location)).collect();
    let elsewhere = ws.catalog.pointed_at_elsewhere(table, &due).await?;
    if !elsewhere.is_empty() {
        tracing::warn!(
            table,
            versions = elsewhere.len(),
            "kept replaced versions Glue still points at (it is behind the local catalog; a marker now makes the next run catch it up)"
        );
    }
    let due: Vec<String> = due.into_iter().filter(|l| !elsewhere.contains(l)).collect();
    let mut files = Vec::new();
    for loc in due.iter().filter(|l| !current.contains(&norm(l))) {
        let rel = ws.warehouse.relative_url(loc)?;
        files.extend(ws.warehouse.list(&rel).await?.into_iter().map(|o| o.location));
    }
    let removed = ws.warehouse.delete_many(files).await?;
    for loc in &due {
        ws.warehouse.remove_empty_dirs(&ws.warehouse.relative_url(loc)?).await?;
    }
    ws.catalog.forget_retired(table, &due).await?;
    Ok(removed)
}
