//! `runner`: Firehose drops to typed, Hive-partitioned Parquet and a catalog, exactly once.
//!
//! # Layers
//!
//! Top to bottom; a module imports only modules listed after it (on its own line, those to its
//! right), so there is no import cycle. `tests/layers.rs` reads this list and checks every
//! `crate::` path in `src/` against it.
//!
//! 1. the command line: `cli`
//! 2. checking a workspace offline, and showing it: `validate`, `dashboard`
//! 3. schedules (expressions, the daemon, crontab and EventBridge rendering): `schedule`
//! 4. running jobs (dispatch over kinds, the DAG, leases, locked runs, backfill): `pipeline`
//! 5. run history (`runner_runs`, status, history) and the runner's own state: `runs`, `state`
//! 6. the job kinds, and replaying quarantine: `replay`, `ingest`, `compact`, `transform`, `export`, `score`, `simulate`
//! 7. the churn model (declaration, training, serving): `model`
//! 8. publishing and the engines: `publish`, `engine`, `cluster`, `athena`
//! 9. everything a command works with, resolved once: `workspace`
//! 10. storage: `ledger`, `catalog`, `store`, `aws`
//! 11. definitions: `job`, `schema`, `config`, `source`
//! 12. foundation: `dates`, `output`, `progress`, `failpoint`, `fence`, `error`
//!
//! # Where things live
//!
//! - [`job`] reads `jobs/*.toml`: every kind's definition, the DAG, and [`job::JobMetrics`], the
//!   one metrics struct every kind returns. [`pipeline::run_kind`] is the one dispatch over kinds.
//! - [`ingest`]: framing, validation, dedup and writing of drops; [`ledger`]: the commit log that
//!   makes it exactly once; [`compact`]: merging small files through the same log.
//! - [`transform`]: the SQL job runner; [`export`]: per-tenant export; [`score`]: the scoring job
//!   and its endpoint client. They publish through [`publish`] (write-audit-publish, checks,
//!   ledger commits).
//! - [`catalog`]: tables and partitions (local, mirrored to Glue), the Arrow/Hive type map and the
//!   versioned-partition layout; [`engine`]: DataFusion over it; [`cluster`]: the same SQL on a
//!   Ballista cluster, and its scheduler and executor; [`athena`]: `query --engine athena`.
//! - [`store`]: every byte through `object_store`, and the one Parquet encoder; [`aws`]: one SDK
//!   config and credentials for S3, Glue and Athena.

pub mod athena;
pub mod aws;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod compact;
pub mod config;
pub mod dashboard;
pub mod dates;
pub mod engine;
pub mod error;
pub mod export;
pub mod failpoint;
pub mod fence;
pub mod ingest;
pub mod job;
pub mod ledger;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod publish;
pub mod replay;
pub mod runs;
pub mod schedule;
pub mod schema;
pub mod score;
pub mod simulate;
pub mod source;
pub mod state;
pub mod store;
pub mod transform;
pub mod validate;
pub mod workspace;

pub use error::{Error, Result};
