//! The table catalog: what tables exist, their schemas, locations and partitions.
//!
//! Shaped like the AWS Glue Data Catalog (tables with typed columns, partition keys and a
//! location; partitions with values and their own location), so that the local catalog and the
//! Glue one are two implementations of one [`Catalog`] trait. Column types are stored as the
//! Hive/Athena type names Glue uses; [`arrow_type`] and [`glue_type`] convert.

pub mod glue;
pub mod layout;
pub mod local;
pub mod types;

pub use layout::hive_escape;
pub use types::{arrow_type, glue_type};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMeta {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMeta {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The table's root URL, ending in `/`.
    pub location: String,
    pub columns: Vec<ColumnMeta>,
    pub partition_keys: Vec<ColumnMeta>,
    /// Storage format of the data files (always `parquet` today).
    pub format: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

impl TableMeta {
    /// A table from an Arrow schema of its data files plus typed partition keys.
    pub fn from_arrow(
        name: &str,
        description: &str,
        location: String,
        schema: &Schema,
        partition_keys: &[(&str, DataType)],
    ) -> Result<TableMeta> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| Ok(ColumnMeta { name: f.name().clone(), ty: glue_type(f.data_type())?, comment: String::new() }))
            .collect::<Result<Vec<_>>>()?;
        Ok(TableMeta {
            name: name.to_string(),
            description: description.to_string(),
            location,
            columns,
            partition_keys: partition_keys
                .iter()
                .map(|(k, t)| Ok(ColumnMeta { name: k.to_string(), ty: glue_type(t)?, comment: String::new() }))
                .collect::<Result<Vec<_>>>()?,
            format: "parquet".into(),
            parameters: BTreeMap::new(),
        })
    }

    /// The Arrow schema of the data files (partition keys excluded).
    pub fn file_schema(&self) -> Result<SchemaRef> {
        let fields =
            self.columns.iter().map(|c| Ok(Field::new(&c.name, arrow_type(&c.ty)?, true))).collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionMeta {
    /// Values in partition-key order.
    pub values: Vec<String>,
    /// The partition's folder URL, ending in `/`.
    pub location: String,
    /// The partition's data files, when the publisher knows them all (a SQL job's version is
    /// written once, whole): readers then open exactly these and never list the folder. Empty
    /// for a folder that grows (an ingest day gains a file per batch): readers list it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<DataFile>,
}

impl PartitionMeta {
    pub fn new(values: Vec<String>, location: String) -> PartitionMeta {
        PartitionMeta { values, location, files: Vec::new() }
    }
}

/// A data file of a partition: its name inside the partition's folder and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    pub name: String,
    pub size: u64,
}

/// Where tables are registered. Implementations must make each call idempotent: ingest
/// recovery replays them after a crash.
///
/// Every write is conditional on what is published: a partition is only ever repointed to a
/// newer version than the one it points at (versions are ledger seqs or time-ordered run ids),
/// so a delayed publisher can never move it back, and two publishers never lose each other's
/// partitions. Writes return the partitions they changed (a caller mirrors only those).
#[async_trait::async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    async fn tables(&self) -> Result<Vec<TableMeta>>;
    async fn table(&self, name: &str) -> Result<Option<TableMeta>>;
    /// The table with its partitions, read together (one snapshot): what a session registers.
    async fn table_with_partitions(&self, name: &str) -> Result<Option<(TableMeta, Vec<PartitionMeta>)>>;
    /// Creates or updates a table definition.
    async fn put_table(&self, table: &TableMeta) -> Result<()>;
    async fn partitions(&self, table: &str) -> Result<Vec<PartitionMeta>>;
    /// Registers partitions: creates new ones and repoints existing ones at a newer version.
    /// A partition pointing at a newer version than the one offered is left as it is.
    async fn put_partitions(&self, table: &str, partitions: &[PartitionMeta]) -> Result<Vec<PartitionMeta>>;
    /// Registers the partitions that do not exist yet and leaves existing ones as they are: an
    /// ingest publisher that was delayed can never point a partition back at a version
    /// compaction replaced.
    async fn add_partitions(&self, table: &str, partitions: &[PartitionMeta]) -> Result<Vec<PartitionMeta>>;
    /// Unregisters partitions by their values (absent ones are fine).
    async fn delete_partitions(&self, table: &str, values: &[Vec<String>]) -> Result<()>;
    /// A token that changes whenever the table or its partitions change (`None`: no such
    /// table): what a job compares to know its inputs did not change since its last run. It may
    /// answer as of moments ago (a version this process published or read as the newest
    /// within the local catalog's freshness window): a check made that much earlier.
    async fn table_version(&self, table: &str) -> Result<Option<u64>>;
    /// Reads the table's newest entry ahead of a write: a publish moments later then writes
    /// without reading it first (on S3, the round trips of a job's start instead of its end).
    /// A catalog without that shortcut does nothing.
    async fn warm(&self, _table: &str) -> Result<()> {
        Ok(())
    }
    /// Folders of versions that stopped being current (repointed or dropped), with when.
    async fn retired(&self, table: &str) -> Result<Vec<Retired>>;
    /// Forgets retired versions whose files were deleted.
    async fn forget_retired(&self, table: &str, locations: &[String]) -> Result<()>;
    /// Of the retired version folders `candidates`, those a catalog mirrored from this one
    /// still points at (Glue behind after a publish cut short between the two): version
    /// clean-up deletes none of them. A catalog with no mirror has none.
    async fn pointed_at_elsewhere(&self, _table: &str, _candidates: &[String]) -> Result<BTreeSet<String>> {
        Ok(BTreeSet::new())
    }
}

/// A folder URL without its trailing slash (catalogs differ in how they spell one).
pub fn norm(location: &str) -> String {
    location.trim_end_matches('/').to_string()
}

/// A version folder a partition no longer points at, and when it stopped being current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retired {
    pub location: String,
    /// Milliseconds since the epoch.
    pub at_ms: i64,
}

/// Whether a partition at `offered` may replace one at `current`: a strictly newer version
/// (ledger seqs are zero-padded numbers, run ids time-ordered UUIDs; both compare by length,
/// then text). A location without a version folder is not versioned and always replaces.
pub fn newer_version(offered: &str, current: &str) -> bool {
    use layout::version_of;
    match (version_of(offered), version_of(current)) {
        (Some(a), Some(b)) => (a.len(), a) > (b.len(), b),
        _ => offered.trim_end_matches('/') != current.trim_end_matches('/'),
    }
}

/// Whether `next` can replace `current` without breaking a reader: the same partition keys, and
/// every existing column kept with its type (Athena matches Parquet columns by name, so a new
/// nullable column is safe; a changed type fails queries with `HIVE_BAD_DATA`). Checked before
/// anything is published.
pub fn check_compatible(current: &TableMeta, next: &TableMeta) -> Result<()> {
    let refuse = |m: String| {
        Err(Error::Failed(format!(
            "table `{}`: {m}; nothing was published. Keep the old definition, write the change as a new column or a new \
             table, or drop the table (its catalog entry and folder) to rebuild it",
            current.name
        )))
    };
    if current.partition_keys != next.partition_keys {
        let names =
            |t: &TableMeta| t.partition_keys.iter().map(|k| format!("{} {}", k.name, k.ty)).collect::<Vec<_>>().join(", ");
        return refuse(format!("partition keys change from ({}) to ({})", names(current), names(next)));
    }
    for c in &current.columns {
        match next.columns.iter().find(|n| n.name == c.name) {
            None => return refuse(format!("column `{}` ({}) would be dropped", c.name, c.ty)),
            Some(n) if n.ty != c.ty => {
                return refuse(format!("column `{}` changes type from {} to {}", c.name, c.ty, n.ty));
            }
            Some(_) => {}
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    for c in next.columns.iter().chain(&next.partition_keys) {
        if let Some(other) = seen.insert(c.name.to_ascii_lowercase(), &c.name) {
            return refuse(format!(
                "columns `{other}` and `{}` differ only in case, and Glue and Athena names are case-insensitive",
                c.name
            ));
        }
    }
    Ok(())
}

/// A table declared in `schemas/tables/*.toml`: read as empty until a job first writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredTable {
    #[serde(default)]
    pub description: String,
    pub columns: Vec<ColumnMeta>,
    #[serde(default)]
    pub partition_keys: Vec<ColumnMeta>,
}

impl DeclaredTable {
    /// Every `*.toml` in `dir`, by table name (the file stem). A missing folder declares nothing.
    pub fn load_all(dir: &std::path::Path) -> Result<BTreeMap<String, DeclaredTable>> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(out) };
        let mut files: Vec<_> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
        files.sort();
        for f in files {
            let err = |m: String| Error::Config { file: f.display().to_string(), message: m };
            let text = std::fs::read_to_string(&f).map_err(|e| err(e.to_string()))?;
            let t: DeclaredTable = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
            for c in t.columns.iter().chain(&t.partition_keys) {
                arrow_type(&c.ty).map_err(|e| err(format!("column `{}`: {e}", c.name)))?;
            }
            out.insert(f.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string(), t);
        }
        Ok(out)
    }

    /// The Arrow schema a reader sees: columns, then partition keys.
    pub fn schema(&self) -> Result<SchemaRef> {
        let fields = self
            .columns
            .iter()
            .chain(&self.partition_keys)
            .map(|c| Ok(Field::new(&c.name, arrow_type(&c.ty)?, true)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_changes_adding_columns_pass_and_others_name_the_column() {
        let col = |n: &str, t: &str| ColumnMeta { name: n.into(), ty: t.into(), comment: String::new() };
        let t = TableMeta {
            name: "t".into(),
            description: String::new(),
            location: "file:///wh/t/".into(),
            columns: vec![col("companyID", "string"), col("jobs", "bigint")],
            partition_keys: vec![col("dt", "date")],
            format: "parquet".into(),
            parameters: BTreeMap::new(),
        };
        let mut added = t.clone();
        added.columns.push(col("riskOfChurn", "double"));
        check_compatible(&t, &added).unwrap();
        let mut retyped = t.clone();
        retyped.columns[1].ty = "string".into();
        let e = check_compatible(&t, &retyped).unwrap_err().to_string();
        assert!(e.contains("`jobs` changes type from bigint to string"), "{e}");
        let mut dropped = t.clone();
        dropped.columns.pop();
        assert!(check_compatible(&t, &dropped).unwrap_err().to_string().contains("`jobs` (bigint) would be dropped"));
        let mut rekeyed = t.clone();
        rekeyed.partition_keys[0].ty = "string".into();
        assert!(check_compatible(&t, &rekeyed).unwrap_err().to_string().contains("partition keys"));
        let mut cased = added.clone();
        cased.columns.push(col("JOBS", "bigint"));
        assert!(check_compatible(&t, &cased).unwrap_err().to_string().contains("differ only in case"));
    }
}
