//! `runner`: Firehose drops to typed, Hive-partitioned Parquet and a catalog, exactly once.
//!
//! The modules follow the data flow (README "Architecture"):
//!
//! - [`config`]: what runs where (`runner.toml`, env overrides); [`job`]: `jobs/*.toml`;
//!   [`schema`]: the event contract from `schemas/events.toml`; [`workspace`]: all of them resolved.
//! - [`store`]: every byte through `object_store` (local folders or S3); [`aws`]: one SDK config,
//!   credentials and error explanations for S3, Glue and Athena.
//! - [`source`]: which keys are Firehose drops; [`ingest`]: framing, validation, dedup, writing;
//!   [`ledger`]: the commit log that makes ingest exactly once; [`compact`]: merging small files
//!   through the same log.
//! - [`catalog`]: tables and partitions (local, mirrored to Glue); [`engine`]: DataFusion over it;
//!   [`athena`]: `runner query --engine athena`.
//! - [`transform`]: SQL jobs (write, [`checks`], publish); [`pipeline`]: runs jobs in DAG order
//!   and records each in [`runs`] (`runner_runs`); [`sqlcheck`]: planning SQL offline.
//! - [`model`]: the churn model's declaration, the anti-corruption layer, `model train|serve`;
//!   [`score`]: the scoring job and its reliable endpoint client.
//! - [`schedule`]: EventBridge expressions, job leases, the daemon, crontab/EventBridge export.
//! - [`simulate`]: realistic drops; [`cli`], [`output`], [`progress`]: the command line.

pub mod athena;
pub mod aws;
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod compact;
pub mod config;
pub mod engine;
pub mod error;
pub mod export;
pub mod failpoint;
pub mod history;
pub mod ingest;
pub mod job;
pub mod ledger;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod runs;
pub mod schedule;
pub mod schema;
pub mod score;
pub mod simulate;
pub mod source;
pub mod sqlcheck;
pub mod store;
pub mod transform;
pub mod workspace;

pub use error::{Error, Result};
