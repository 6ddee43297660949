//! The workspace: everything a command works with, resolved once from the config.
//!
//! One contract, one warehouse location, one catalog, the jobs, and the file caches the query
//! sessions of one process share. Every command (ingest, query, tables, validate) goes through a
//! `Workspace`, so no part of the pipeline knows whether it runs on a laptop or in AWS. A
//! [`JobRun`] is one run of one job in it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::execution::cache::cache_manager::{CacheManager, CacheManagerConfig, FileMetadataCache, FileStatisticsCache};

use crate::catalog::glue::GlueCatalog;
use crate::catalog::local::LocalCatalog;
use crate::catalog::{Catalog, DeclaredTable};
use crate::config::{CatalogKind, Config};
use crate::error::{Error, Result};
use crate::job::{Job, JobMetrics, Jobs, KindCounts};
use crate::progress::Progress;
use crate::schema::Contract;
use crate::store::Location;

/// The warehouse layout this runner writes and reads, recorded in `_runner/format.json`.
/// 2: ledger checkpoints (commit records before a checkpoint are deleted, so an older runner
/// would ingest those drops again), quarantine partitioned by arrival date and stream,
/// `runner_runs` through a ledger, `churn_scores.run_id`.
/// 3: the catalog as one snapshot object per table (`_runner/catalog/<table>/snapshots/`); a
/// warehouse of format 2 is upgraded in place by the first command that opens it.
/// 4: staging named by planned seq and attempt (`staging/<stream>/<seq>-<attempt>/`), garbage
/// only once another attempt commits that seq; the newest checkpoint found by listing (no
/// `_last_checkpoint` pointer); lease fences in catalog snapshots. A runner of format 3 would
/// delete format 4's staging by age, follow a stale pointer and refuse the snapshots' fences, so
/// it must refuse the warehouse: the marker says 4 before anything of format 4 is written.
/// Format 3 is upgraded in place by deleting the pointers.
/// 5: replay commits in the ledgers (`runner replay`: a commit that adds rows to event days and
/// rewrites quarantine partitions, with dedup keys) and the quarantine's `replayed_run_id`,
/// `replayed_at`. A runner of format 4 would read a replay as a compaction (the days it changed
/// never rebuilt, its dedup keys and marks dropped), so it must refuse the warehouse; format 4
/// holds nothing else to change and is upgraded by the marker alone.
pub const WAREHOUSE_FORMAT: u32 = 5;
/// The oldest format this runner upgrades in place (older ones are refused, with what to do).
const UPGRADABLE_FORMAT: u64 = 2;
const FORMAT_PATH: &str = "_runner/format.json";

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
    pub file_caches: FileCaches,
    /// Whether the warehouse's format was checked (once per process).
    format_checked: Arc<tokio::sync::OnceCell<()>>,
}

impl Workspace {
    pub fn open(config: Config) -> Result<Workspace> {
        let contract_path = config.schemas_dir.join("events.toml");
        if !contract_path.exists() {
            // Run from the wrong folder, or a config pointing at the wrong one: say which.
            let message = match &config.file {
                None => crate::config::not_found_message(&std::env::current_dir().unwrap_or_default()),
                Some(f) => format!(
                    "the event contract {} does not exist: set `schemas_dir` in {} to the folder holding events.toml",
                    contract_path.display(),
                    f.display()
                ),
            };
            return Err(Error::Config { file: crate::config::DEFAULT_FILE.into(), message });
        }
        let contract = Arc::new(Contract::load(&contract_path)?);
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
        let file_caches = FileCaches::new()?;
        Ok(Workspace {
            config,
            contract,
            jobs,
            warehouse,
            catalog,
            glue,
            declared,
            file_caches,
            format_checked: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Refuses a warehouse another layout wrote (an older runner's would be misread: its tables
    /// as empty, its drops as new), with what to do. `write` marks a new warehouse as this
    /// layout (a run about to write it); a reader leaves an empty warehouse as it is.
    pub async fn check_format(&self, write: bool) -> Result<()> {
        if self.format_checked.initialized() {
            return Ok(());
        }
        let path = self.warehouse.child(FORMAT_PATH);
        let found = match self.warehouse.get_opt(&path).await? {
            Some(b) => Some(
                serde_json::from_slice::<serde_json::Value>(&b)
                    .ok()
                    .and_then(|v| v.get("format").and_then(|f| f.as_u64()))
                    .ok_or_else(|| self.format_error("its format marker is unreadable".into()))?,
            ),
            // Tables or a ledger without a marker: written before markers existed, by layout 1.
            // A runner of this layout writes the marker before any table, so the marker is read
            // again after the data was seen: a run starting next to ours is not mistaken for it.
            None if self.warehouse.any_under("_runner/catalog").await? || self.warehouse.any_under("_runner/ledger").await? => {
                match self.warehouse.get_opt(&path).await? {
                    Some(_) => return Box::pin(self.check_format(write)).await,
                    None => Some(1),
                }
            }
            None if !write => return Ok(()),
            None => {
                let body = serde_json::json!({ "format": WAREHOUSE_FORMAT, "written_by": format!("runner {}", env!("CARGO_PKG_VERSION")) });
                if self.warehouse.put_if_absent(&path, bytes::Bytes::from(body.to_string())).await? {
                    None
                } else {
                    return Box::pin(self.check_format(write)).await;
                }
            }
        };
        match found {
            Some(n) if n >= UPGRADABLE_FORMAT && n < u64::from(WAREHOUSE_FORMAT) => {
                self.upgrade(n).await?;
                let _ = self.format_checked.set(());
                Ok(())
            }
            Some(n) if n < u64::from(WAREHOUSE_FORMAT) => Err(self.format_error(format!(
                "it was written by an older runner (warehouse format {n}; this runner reads format {WAREHOUSE_FORMAT}). Rebuild it: \
                 point `warehouse` in {} at a new folder (or move this one aside) and run `runner run --all`; the sources still \
                 hold every drop, so the new warehouse gets every event exactly once",
                self.config.file_name()
            ))),
            Some(n) if n > u64::from(WAREHOUSE_FORMAT) => Err(self.format_error(format!(
                "it was written by a newer runner (warehouse format {n}; this runner reads format {WAREHOUSE_FORMAT}): upgrade runner"
            ))),
            _ => {
                let _ = self.format_checked.set(());
                Ok(())
            }
        }
    }

    /// Upgrades a warehouse of format `from` in place: each table's catalog objects become one
    /// snapshot, then the marker says the new format, then the old objects go. A crash at any
    /// point leaves either the old format whole (the next command upgrades again; tables that
    /// have a snapshot are kept) or the new one with some old objects, which nothing reads.
    async fn upgrade(&self, from: u64) -> Result<()> {
        tracing::info!(from, to = WAREHOUSE_FORMAT, "upgrading the warehouse in place");
        let mut legacy = Vec::new();
        if from < 3 {
            let local = crate::catalog::local::LocalCatalog::new(self.warehouse.clone());
            legacy = local.upgrade().await?;
        }
        // Format 3's checkpoint pointers: nothing of format 4 reads them, and a stale one left
        // behind would only mislead a person reading the bucket.
        let checkpoints = self.warehouse.list(crate::ledger::checkpoint::CHECKPOINT_DIR).await?;
        legacy.extend(checkpoints.into_iter().filter(|m| m.location.filename() == Some("_last_checkpoint")).map(|m| m.location));
        let body = serde_json::json!({ "format": WAREHOUSE_FORMAT, "written_by": format!("runner {}", env!("CARGO_PKG_VERSION")), "upgraded_from": from });
        self.warehouse.put(&self.warehouse.child(FORMAT_PATH), bytes::Bytes::from(body.to_string())).await?;
        self.warehouse.delete_many(legacy).await?;
        Ok(())
    }

    fn format_error(&self, why: String) -> Error {
        Error::Config {
            file: format!("{}{FORMAT_PATH}", self.warehouse.url),
            message: format!("the warehouse cannot be used: {why}"),
        }
    }

    /// The Glue catalog, when the workspace publishes to Glue.
    pub fn glue(&self) -> Option<&GlueCatalog> {
        self.glue.as_deref()
    }
}

/// Parquet footers and file statistics, kept for every session of one workspace. The jobs of a
/// DAG read the same files (tenant_activity_daily and jobs_daily both read job_events; tenants
/// reads what tenant_activity_daily read), and each job has its own session: without this each
/// one opened every file's footer again at planning. Entries are checked against the file's size
/// and modification time, so a rewritten file is read afresh; the runner's files never change
/// once written (a new version is a new file). The list of files is not shared: a job must see
/// the partitions its upstream job just published. The data files' byte ranges are kept too
/// ([`crate::store::ranges`]): a query that scans one table several times reads it once.
#[derive(Clone)]
pub struct FileCaches {
    metadata: Arc<FileMetadataCache>,
    statistics: Arc<FileStatisticsCache>,
    pub ranges: crate::store::ranges::RangeCache,
}

impl FileCaches {
    pub fn new() -> Result<FileCaches> {
        let manager = CacheManager::try_new(&CacheManagerConfig::default()).map_err(Error::df("creating the file caches"))?;
        let statistics = manager
            .get_file_statistic_cache()
            .ok_or_else(|| Error::Internal("DataFusion's default config has no file statistics cache".into()))?;
        Ok(FileCaches { metadata: manager.get_file_metadata_cache(), statistics, ranges: Default::default() })
    }

    pub fn metadata(&self) -> Arc<FileMetadataCache> {
        self.metadata.clone()
    }

    pub fn statistics(&self) -> Arc<FileStatisticsCache> {
        self.statistics.clone()
    }
}

impl std::fmt::Debug for FileCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCaches").finish_non_exhaustive()
    }
}

/// One run of one job: the workspace, the job, and how this run behaves (flags, not config).
/// Every job kind runs from one of these and returns a [`JobMetrics`].
pub struct JobRun<'a> {
    pub ws: &'a Workspace,
    pub job: &'a Job,
    /// The run's one id: in `runner_runs`, ledger commits, quarantine rows, `churn_scores`, logs.
    pub run_id: String,
    /// The logical time (`--at`, a schedule's fire time minus its lag, or now).
    pub at: DateTime<Utc>,
    /// Plan and report what would be done; write nothing.
    pub dry_run: bool,
    /// Exact days for an incremental SQL job (a backfill), instead of the days that changed.
    pub days: Option<Vec<NaiveDate>>,
    pub progress: &'a Progress,
    /// Writes the kind leaves for after its success ([`JobRun::defer`]).
    pub deferred: std::sync::Mutex<Vec<Deferred>>,
}

/// A write a run leaves for after it succeeded: see [`JobRun::defer`].
pub type Deferred = futures::future::BoxFuture<'static, crate::error::Result<()>>;

impl JobRun<'_> {
    /// The logical date: SQL, export and scoring jobs run as of it.
    pub fn as_of(&self) -> NaiveDate {
        self.at.date_naive()
    }

    /// Leaves `write` for after the run succeeded, beside the recording of the run and before
    /// its lease is given back, so the next job need not wait for it: for a state that only
    /// saves work (an incremental job's watermarks), never for what a reader needs. A failure
    /// is a warning.
    pub fn defer(&self, write: Deferred) {
        self.deferred.lock().expect("deferred writes").push(write);
    }

    /// The writes left for after the run ([`JobRun::defer`]).
    pub fn take_deferred(&self) -> Vec<Deferred> {
        std::mem::take(&mut *self.deferred.lock().expect("deferred writes"))
    }

    /// Metrics of this run, for `logical_time` and the kind's counts, with `dry_run` set.
    pub fn metrics(&self, logical_time: String, counts: KindCounts) -> JobMetrics {
        let mut m = JobMetrics::new(&self.job.name, &self.run_id, logical_time, counts);
        m.dry_run = self.dry_run;
        m
    }
}
