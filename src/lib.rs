//! `runner`: Firehose drops to typed, Hive-partitioned Parquet and a catalog, exactly once.
//!
//! The modules follow the data flow (README "Architecture"):
//!
//! - [`config`]: what runs where (`runner.toml`, env overrides); [`job`]: `jobs/*.toml`;
//!   [`schema`]: the event contract from `schemas/events.toml`; [`workspace`]: all of them resolved.
//! - [`store`]: every byte through `object_store` (local folders or S3).
//! - [`source`]: which keys are Firehose drops; [`ingest`]: framing, validation, dedup, writing;
//!   [`ledger`]: the commit log that makes ingest exactly once.
//! - [`catalog`]: tables and partitions (local, Glue-shaped); [`engine`]: DataFusion over it.
//! - [`simulate`]: realistic drops; [`cli`], [`output`], [`progress`]: the command line.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod ingest;
pub mod job;
pub mod ledger;
pub mod output;
pub mod progress;
pub mod schema;
pub mod simulate;
pub mod source;
pub mod store;
pub mod workspace;

pub use error::{Error, Result};
