//! The query engine: one DataFusion session over every table in the catalog.
//!
//! Each catalog table becomes a listing table over its location with its partition keys, so a
//! filter on `dt` prunes whole partition folders before any file is opened. Identifiers are not
//! lower-cased: the producers' column names (`companyID`, `nbJobs`) are written as they are.

use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::catalog::{TableMeta, arrow_type};
use crate::error::{Error, Result};
use crate::workspace::Workspace;

/// A session with every catalog table registered.
pub async fn session(ws: &Workspace) -> Result<SessionContext> {
    let mut config = SessionConfig::new().with_information_schema(true);
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let ctx = SessionContext::new_with_config(config);
    ctx.runtime_env().register_object_store(&ws.warehouse.store_url, ws.warehouse.store.clone());
    for t in ws.catalog.tables().await? {
        register(&ctx, &t)?;
    }
    Ok(ctx)
}

fn register(ctx: &SessionContext, t: &TableMeta) -> Result<()> {
    let ctx_err = || format!("registering table `{}` at {}", t.name, t.location);
    let url = ListingTableUrl::parse(&t.location).map_err(Error::df(ctx_err()))?;
    let partition_cols = t.partition_keys.iter().map(|k| Ok((k.name.clone(), arrow_type(&k.ty)?))).collect::<Result<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_cols);
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(t.file_schema()?);
    let table = ListingTable::try_new(config).map_err(Error::df(ctx_err()))?;
    ctx.register_table(t.name.as_str(), Arc::new(table)).map_err(Error::df(ctx_err()))?;
    Ok(())
}
