//! The local catalog: JSON objects in the warehouse, one per table and one per partition.
//!
//! ```text
//! <warehouse>/_runner/catalog/<table>/table.json
//! <warehouse>/_runner/catalog/<table>/partitions/<k>=<escaped v>.json
//! ```
//!
//! One object per partition makes registration a single idempotent put with no read-modify-write,
//! so concurrent writers and crash replays cannot lose each other's partitions. It lives in the
//! warehouse's own object store, so it works the same on a folder and on S3.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{Catalog, PartitionMeta, TableMeta, hive_escape};
use crate::error::{Error, Result};
use crate::store::Location;

pub const CATALOG_DIR: &str = "_runner/catalog";

#[derive(Debug, Clone)]
pub struct LocalCatalog {
    warehouse: Location,
}

impl LocalCatalog {
    pub fn new(warehouse: Location) -> Self {
        LocalCatalog { warehouse }
    }

    fn table_path(&self, name: &str) -> object_store::path::Path {
        self.warehouse.child(&format!("{CATALOG_DIR}/{}/table.json", hive_escape(name)))
    }

    fn partition_path(&self, meta: &TableMeta, values: &[String]) -> object_store::path::Path {
        let name: Vec<String> =
            meta.partition_keys.iter().zip(values).map(|(k, v)| format!("{}={}", k.name, hive_escape(v))).collect();
        self.warehouse.child(&format!("{CATALOG_DIR}/{}/partitions/{}.json", hive_escape(&meta.name), name.join(",")))
    }

    fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::Failed(format!("catalog entry {what} is corrupt ({e}); delete it and run `runner run --all` to rebuild"))
        })
    }
}

#[async_trait::async_trait]
impl Catalog for LocalCatalog {
    async fn tables(&self) -> Result<Vec<TableMeta>> {
        let mut out = Vec::new();
        for meta in self.warehouse.list(CATALOG_DIR).await? {
            if meta.location.filename() == Some("table.json") {
                let bytes = self.warehouse.get(&meta.location).await?;
                out.push(Self::decode::<TableMeta>(meta.location.as_ref(), &bytes)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn table(&self, name: &str) -> Result<Option<TableMeta>> {
        let p = self.table_path(name);
        match self.warehouse.get_opt(&p).await? {
            Some(bytes) => Ok(Some(Self::decode(p.as_ref(), &bytes)?)),
            None => Ok(None),
        }
    }

    async fn put_table(&self, table: &TableMeta) -> Result<()> {
        let current = self.table(&table.name).await?;
        if current.as_ref() == Some(table) {
            return Ok(());
        }
        if let Some(current) = &current {
            super::check_compatible(current, table)?;
        }
        let body = serde_json::to_vec_pretty(table).map_err(|e| Error::Internal(e.to_string()))?;
        self.warehouse.put(&self.table_path(&table.name), Bytes::from(body)).await
    }

    async fn partitions(&self, table: &str) -> Result<Vec<PartitionMeta>> {
        let dir = format!("{CATALOG_DIR}/{}/partitions", hive_escape(table));
        // One small object per partition: read many at once (on S3 each is a round trip).
        let objects = self.warehouse.list(&dir).await?;
        let mut out: Vec<PartitionMeta> = futures::stream::iter(objects)
            .map(|meta| async move {
                let bytes = self.warehouse.get(&meta.location).await?;
                Self::decode::<PartitionMeta>(meta.location.as_ref(), &bytes)
            })
            .buffer_unordered(32)
            .try_collect()
            .await?;
        out.sort();
        Ok(out)
    }

    async fn delete_partitions(&self, table: &str, values: &[Vec<String>]) -> Result<()> {
        let Some(meta) = self.table(table).await? else { return Ok(()) };
        for v in values {
            let path = self.partition_path(&meta, v);
            self.warehouse.delete(&path).await?;
        }
        Ok(())
    }

    async fn put_partitions(&self, table: &str, partitions: &[PartitionMeta]) -> Result<()> {
        self.write_partitions(table, partitions, false).await
    }

    async fn add_partitions(&self, table: &str, partitions: &[PartitionMeta]) -> Result<()> {
        self.write_partitions(table, partitions, true).await
    }
}

impl LocalCatalog {
    /// One object per partition; `only_new` makes each a create-if-absent put.
    async fn write_partitions(&self, table: &str, partitions: &[PartitionMeta], only_new: bool) -> Result<()> {
        let meta = self
            .table(table)
            .await?
            .ok_or_else(|| Error::Internal(format!("partitions registered for table `{table}`, which is not in the catalog")))?;
        // One object per partition (the last entry wins if one is named twice), written several
        // at a time: a job that rebuilt 90 days publishes 90 partitions.
        let mut writes: std::collections::BTreeMap<object_store::path::Path, Bytes> = Default::default();
        for p in partitions {
            let body = Bytes::from(serde_json::to_vec_pretty(p).map_err(|e| Error::Internal(e.to_string()))?);
            writes.insert(self.partition_path(&meta, &p.values), body);
        }
        futures::stream::iter(writes)
            .map(|(path, body)| async move {
                if only_new {
                    self.warehouse.put_if_absent(&path, body).await.map(|_| ())
                } else {
                    self.warehouse.put(&path, body).await
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    #[tokio::test]
    async fn tables_and_partitions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let cat = LocalCatalog::new(wh.clone());
        let schema = Schema::new(vec![Field::new("companyID", DataType::Utf8, true)]);
        let t = TableMeta::from_arrow("t", "test", wh.join("t").url, &schema, &[("dt", DataType::Date32)]).unwrap();
        cat.put_table(&t).await.unwrap();
        assert_eq!(cat.table("t").await.unwrap(), Some(t.clone()));
        assert_eq!(cat.tables().await.unwrap(), vec![t]);
        let p = PartitionMeta { values: vec!["2026-11-20".into()], location: wh.join("t/dt=2026-11-20").url };
        cat.put_partitions("t", &[p.clone(), p.clone()]).await.unwrap();
        assert_eq!(cat.partitions("t").await.unwrap(), vec![p.clone()]);
        let moved = PartitionMeta { values: p.values.clone(), location: wh.join("t/dt=2026-11-20/v=2").url };
        cat.add_partitions("t", std::slice::from_ref(&moved)).await.unwrap();
        assert_eq!(cat.partitions("t").await.unwrap(), vec![p.clone()], "add never repoints");
        cat.delete_partitions("t", std::slice::from_ref(&p.values)).await.unwrap();
        assert!(cat.partitions("t").await.unwrap().is_empty());
        assert!(cat.put_partitions("nope", &[]).await.is_err());
    }
}
