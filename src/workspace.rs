//! The workspace: everything a command works with, resolved once from the config.
//!
//! One contract, one warehouse location, one catalog. Every command (ingest, query, tables,
//! validate) goes through a `Workspace`, so no part of the pipeline knows whether it runs on a
//! laptop or in AWS.

use std::sync::Arc;

use std::collections::BTreeMap;

use crate::catalog::glue::GlueCatalog;
use crate::catalog::local::LocalCatalog;
use crate::catalog::{Catalog, DeclaredTable};
use crate::config::{CatalogKind, Config};
use crate::error::{Error, Result};
use crate::job::Jobs;
use crate::schema::Contract;
use crate::store::Location;

#[derive(Debug, Clone)]
pub struct Workspace {
    pub config: Config,
    pub contract: Arc<Contract>,
    pub jobs: Jobs,
    pub warehouse: Location,
    pub catalog: Arc<dyn Catalog>,
    /// The Glue mirror, when `[catalog] kind = "glue"` (the same object as `catalog`).
    glue: Option<Arc<GlueCatalog>>,
    /// Tables declared in `schemas/tables/` (read as empty until a job writes them).
    pub declared: BTreeMap<String, DeclaredTable>,
    /// Parquet footers and statistics shared by the query sessions of this process.
    pub file_caches: crate::engine::FileCaches,
}

impl Workspace {
    pub fn open(config: Config) -> Result<Workspace> {
        let contract = Arc::new(Contract::load(&config.schemas_dir.join("events.toml"))?);
        let jobs = Jobs::load(&config.jobs_dir, &config, &contract)?;
        let warehouse = Location::parse(&config.warehouse)?;
        let local = LocalCatalog::new(warehouse.clone());
        let mut glue = None;
        let catalog: Arc<dyn Catalog> = match config.catalog.kind {
            CatalogKind::Local => Arc::new(local),
            CatalogKind::Glue => {
                if !config.warehouse.starts_with("s3") {
                    return Err(Error::Config {
                        file: config.file_name(),
                        message: format!(
                            "catalog.kind = \"glue\" needs an s3:// warehouse (Athena reads the tables from S3); the \
                             warehouse is {}",
                            config.warehouse
                        ),
                    });
                }
                let sdk = crate::aws::sdk()
                    .ok_or_else(|| Error::Internal("the AWS SDK config is loaded before a Glue workspace opens".into()))?;
                let g = Arc::new(GlueCatalog::new(local, sdk, &config.catalog));
                glue = Some(g.clone());
                g
            }
        };
        let declared = DeclaredTable::load_all(&config.schemas_dir.join("tables"))?;
        let file_caches = crate::engine::FileCaches::new()?;
        Ok(Workspace { config, contract, jobs, warehouse, catalog, glue, declared, file_caches })
    }

    /// The Glue catalog, when the workspace publishes to Glue.
    pub fn glue(&self) -> Option<&GlueCatalog> {
        self.glue.as_deref()
    }
}
