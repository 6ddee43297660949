//! A catalog table as DataFusion reads it: the partitions the catalog points at, pruned by the
//! query's filters before any object is opened.
//!
//! DataFusion's `ListingTable` lists the table's whole prefix (every version of every partition,
//! a page per 1,000 objects) and then filters the paths; on S3 a query of one day after three
//! years paid for the three years. The runner already knows every partition and its current
//! version from its catalog, so this provider evaluates the partition filters (`dt = ...`,
//! ranges, `BETWEEN`, `IN`) on the partition values alone and hands DataFusion the files of the
//! partitions that remain: the files the catalog names (a SQL job's version), or one listing
//! of the partition's version folder (an ingest day, which gains a file per batch).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path;

use crate::catalog::{PartitionMeta, TableMeta, arrow_type};
use crate::error::{Error, Result};
use crate::store::Location;

/// Partition folders listed at once when a query's partitions have no file list.
const LISTINGS_IN_FLIGHT: usize = 32;

/// One catalog table at the snapshot a session read.
#[derive(Debug)]
pub struct CatalogTable {
    /// Data columns (as read, strings as views), then partition keys.
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    /// Each partition: its typed values and where its data is.
    partitions: Vec<(Vec<ScalarValue>, PartitionMeta)>,
    warehouse: Location,
    store_url: ObjectStoreUrl,
    /// The folders of partitions without a file list, as first listed: a query that scans the
    /// table several times lists each once, and every scan of the session sees the same files.
    listed: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::OnceCell<Vec<ObjectMeta>>>>>,
    /// The process's data-file cache: a scan's small files are fetched into it whole before
    /// DataFusion opens them ([`crate::store::ranges`]).
    ranges: crate::store::ranges::RangeCache,
}

impl CatalogTable {
    /// `partitions` are the catalog's; an unpartitioned versioned table passes its current
    /// version as the one partition without values.
    pub fn new(
        t: &TableMeta,
        partitions: Vec<PartitionMeta>,
        warehouse: &Location,
        ranges: crate::store::ranges::RangeCache,
    ) -> Result<CatalogTable> {
        let file_schema = super::view_types(&*t.file_schema()?);
        let partition_fields: Vec<FieldRef> = t
            .partition_keys
            .iter()
            .map(|k| Ok(Arc::new(Field::new(&k.name, arrow_type(&k.ty)?, false))))
            .collect::<Result<_>>()?;
        let mut fields: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
        fields.extend(partition_fields.iter().map(|f| Arc::new(f.as_ref().clone().with_nullable(true))));
        let typed = partitions
            .into_iter()
            .map(|p| {
                let values = p
                    .values
                    .iter()
                    .zip(&partition_fields)
                    .map(|(v, f)| {
                        ScalarValue::try_from_string(v.clone(), f.data_type()).map_err(Error::df(format!(
                            "reading partition value `{v}` of `{}` in table `{}`",
                            f.name(),
                            t.name
                        )))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((values, p))
            })
            .collect::<Result<Vec<_>>>()?;
        let store_url = ObjectStoreUrl::parse(warehouse.store_url.as_str()).map_err(Error::df("naming the warehouse store"))?;
        Ok(CatalogTable {
            schema: Arc::new(Schema::new(fields)),
            file_schema,
            partition_fields,
            partitions: typed,
            warehouse: warehouse.clone(),
            store_url,
            listed: Default::default(),
            ranges,
        })
    }

    fn partition_names(&self) -> Vec<&str> {
        self.partition_fields.iter().map(|f| f.name().as_str()).collect()
    }

    /// The partitions whose values pass every filter that names partition keys only.
    fn prune(&self, filters: &[Expr]) -> DfResult<Vec<&(Vec<ScalarValue>, PartitionMeta)>> {
        let names = self.partition_names();
        let applicable: Vec<Expr> =
            filters.iter().filter(|f| !names.is_empty() && expr_applicable_for_cols(&names, f)).cloned().collect();
        let Some(filter) = conjunction(applicable) else { return Ok(self.partitions.iter().collect()) };
        if self.partitions.is_empty() {
            return Ok(Vec::new());
        }
        // One row per partition, one column per key: the filter evaluated once for all.
        let schema = Arc::new(Schema::new(self.partition_fields.clone()));
        let columns: Vec<ArrayRef> = (0..self.partition_fields.len())
            .map(|i| ScalarValue::iter_to_array(self.partitions.iter().map(|(v, _)| v[i].clone())))
            .collect::<DfResult<_>>()?;
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let df_schema = DFSchema::try_from(schema)?;
        let expr = datafusion::physical_expr::create_physical_expr(
            &filter,
            &df_schema,
            &datafusion::execution::context::ExecutionProps::new(),
            &Default::default(),
        )?;
        let mask = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let mask = mask.as_boolean();
        Ok(self.partitions.iter().enumerate().filter(|(i, _)| mask.is_valid(*i) && mask.value(*i)).map(|(_, p)| p).collect())
    }

    /// The data files of one partition: the catalog's list, or a listing of its folder.
    async fn files(&self, values: &[ScalarValue], p: &PartitionMeta) -> DfResult<Vec<PartitionedFile>> {
        let rel = self.warehouse.relative_url(&p.location).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let metas: Vec<ObjectMeta> = if p.files.is_empty() {
            // Scans planned at once list a folder once: the others wait for that listing.
            let once = self.listed.lock().expect("listed partitions").entry(rel.clone()).or_default().clone();
            let listing = async {
                let listed = self.warehouse.list(&rel).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
                // Only the folder's own files (a version folder has no sub-folders to read).
                let dir = self.warehouse.child(&rel);
                Ok::<_, DataFusionError>(
                    listed
                        .into_iter()
                        .filter(|m| m.location.as_ref().ends_with(".parquet") && m.size > 0)
                        .filter(|m| {
                            m.location.prefix_match(&dir).is_some_and(|mut rest| rest.next().is_some() && rest.next().is_none())
                        })
                        .collect(),
                )
            };
            once.get_or_try_init(|| listing).await?.clone()
        } else {
            p.files
                .iter()
                .map(|f| ObjectMeta {
                    location: Path::from(format!("{}/{}", self.warehouse.child(&rel).as_ref(), f.name)),
                    // Files are never rewritten (a new version is a new folder): the epoch is as
                    // good a modification time as any for the footer cache.
                    last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                    size: f.size,
                    e_tag: None,
                    version: None,
                })
                .collect()
        };
        Ok(metas
            .into_iter()
            .map(|m| {
                let mut pf = PartitionedFile::from(m);
                pf.partition_values = values.to_vec();
                pf
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl TableProvider for CatalogTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let names = self.partition_names();
        Ok(filters
            .iter()
            .map(|f| {
                if !names.is_empty() && expr_applicable_for_cols(&names, f) {
                    // Pruned exactly: every row of a kept partition passes.
                    TableProviderFilterPushDown::Exact
                } else {
                    // Used by the Parquet reader to skip row groups and pages; filtered again above.
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let kept: Vec<(Vec<ScalarValue>, PartitionMeta)> = self.prune(filters)?.into_iter().cloned().collect();
        let mut files: Vec<PartitionedFile> = futures::stream::iter(kept)
            .map(|(values, p)| async move { self.files(&values, &p).await })
            .buffered(LISTINGS_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        if files.is_empty() {
            let schema = datafusion::physical_plan::project_schema(&self.schema, projection)?;
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let wanted: Vec<(Path, u64)> = files.iter().map(|f| (f.object_meta.location.clone(), f.object_meta.size)).collect();
        self.ranges.prefetch(&self.warehouse.store, &wanted).await;
        // Largest first, then spread over the target partitions (DataFusion's own split).
        files.sort_by(|a, b| b.object_meta.size.cmp(&a.object_meta.size).then(a.path().cmp(b.path())));
        let groups = FileGroup::new(files).split_files(state.config().target_partitions());
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let table_schema =
            TableSchemaBuilder::new(self.file_schema.clone()).with_table_partition_cols(self.partition_fields.clone()).build();
        let config = FileScanConfigBuilder::new(self.store_url.clone(), format.file_source(table_schema))
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            // A limit is only safe when no filter is left for the rows.
            .with_limit(if filters.iter().all(|f| expr_applicable_for_cols(&self.partition_names(), f)) { limit } else { None })
            .build();
        format.create_physical_plan(state, config).await
    }
}
