//! The workspace: everything a command works with, resolved once from the config.
//!
//! One contract, one warehouse location, one catalog. Every command (ingest, query, tables,
//! validate) goes through a `Workspace`, so no part of the pipeline knows whether it runs on a
//! laptop or in AWS.

use std::sync::Arc;

use std::collections::BTreeMap;

use crate::catalog::local::LocalCatalog;
use crate::catalog::{Catalog, DeclaredTable};
use crate::config::{CatalogKind, Config};
use crate::error::Result;
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
    /// Tables declared in `schemas/tables/` (read as empty until a job writes them).
    pub declared: BTreeMap<String, DeclaredTable>,
}

impl Workspace {
    pub fn open(config: Config) -> Result<Workspace> {
        let contract = Arc::new(Contract::load(&config.schemas_dir.join("events.toml"))?);
        let jobs = Jobs::load(&config.jobs_dir, &config, &contract)?;
        let warehouse = Location::parse(&config.warehouse)?;
        let catalog: Arc<dyn Catalog> = match config.catalog {
            CatalogKind::Local => Arc::new(LocalCatalog::new(warehouse.clone())),
        };
        let declared = DeclaredTable::load_all(&config.schemas_dir.join("tables"))?;
        Ok(Workspace { config, contract, jobs, warehouse, catalog, declared })
    }
}
