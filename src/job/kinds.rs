//! What each kind of job does, as its job file says it: the definitions every layer shares.
//!
//! A job file has exactly one section naming its kind; [`JobKind`] holds it, validated. The
//! modules that run each kind (`ingest`, `compact`, `transform`, `export`, `score`) read these
//! definitions and nothing else from the job file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The ingest of one delivery stream (`[ingest]`).
#[derive(Debug, Clone)]
pub struct IngestJob {
    pub stream: String,
}

/// What a compaction job does (`[compact]`).
#[derive(Debug, Clone)]
pub struct CompactJob {
    pub streams: Vec<String>,
    /// A partition is compacted once its current version holds this many files.
    pub min_files: usize,
    /// Partitions merged per commit (one after the other, each streamed).
    pub max_partitions_per_commit: usize,
    /// How long a replaced version stays for queries in flight.
    pub keep_replaced: std::time::Duration,
    /// Also compact `runner_runs` (one file per run otherwise).
    pub run_history: bool,
    /// Memory a partition's merge sort may hold before it spills to local disk (`memory_mb`).
    pub memory_bytes: usize,
}

/// What a scoring job reads and writes (`[score]`).
#[derive(Debug, Clone)]
pub struct ScoreJob {
    /// The Company entity per company and as-of date (`churn_features`).
    pub input: String,
    /// Where scores go (`churn_scores`).
    pub output: String,
    /// Where each run's drift per feature goes (`churn_drift`), when set.
    pub drift: Option<String>,
}

/// A per-tenant export: each dataset's rows, split by `companyID`, under the tenant's prefix.
#[derive(Debug, Clone)]
pub struct ExportJob {
    pub inputs: Vec<String>,
    pub prefix: String,
    pub datasets: Vec<Dataset>,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub file: PathBuf,
    pub sql: String,
}

/// How a SQL job's output replaces what was published before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Each partition the run produces replaces that partition; others stay.
    #[default]
    ReplacePartitions,
    /// Rows are added to the partitions they belong to.
    Append,
    /// The run's output is the whole table: partitions it did not produce are dropped.
    ReplaceTable,
}

/// Quality checks run on a job's output before it is published.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Columns that must have no NULL.
    #[serde(default)]
    pub not_null: Vec<String>,
    /// Columns that together identify a row.
    #[serde(default)]
    pub unique: Vec<String>,
    pub min_rows: Option<u64>,
    pub max_rows: Option<u64>,
    /// Column -> the only values it may hold (NULL is left to `not_null`).
    #[serde(default)]
    pub accepted_values: BTreeMap<String, Vec<String>>,
}

/// A SQL transform.
#[derive(Debug, Clone)]
pub struct SqlJob {
    pub file: PathBuf,
    pub sql: String,
    pub inputs: Vec<String>,
    pub output: String,
    pub partition_by: Vec<String>,
    pub mode: WriteMode,
    /// Run once per changed event day (`$dt`) instead of once per as-of date.
    pub incremental: bool,
    /// Each day is a running state of all days before it: a change rebuilds every later day.
    pub cumulative: bool,
    pub checks: Checks,
}

#[derive(Debug, Clone)]
pub enum JobKind {
    /// Ingest new drops of a delivery stream into its typed table.
    Ingest(IngestJob),
    /// Run SQL over catalog tables and publish its output table.
    Sql(Box<SqlJob>),
    /// Write each tenant's rows under its own prefix.
    Export(Box<ExportJob>),
    /// Merge the small files of event-table partitions.
    Compact(CompactJob),
    /// Score companies through the churn endpoint.
    Score(ScoreJob),
}

impl JobKind {
    /// The kind's name, as job files, summaries and `runner_runs` spell it.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Ingest(_) => "ingest",
            JobKind::Sql(_) => "sql",
            JobKind::Export(_) => "export",
            JobKind::Compact(_) => "compact",
            JobKind::Score(_) => "score",
        }
    }

    /// Jobs of a group run only next to jobs of the same group. Ingest jobs (one per stream,
    /// each with its own ledger) run side by side, so two streams use both cores; compaction
    /// runs alone: it rewrites the streams' partitions and sizes its work for the machine.
    /// `None`: runs next to any other ungrouped job.
    pub fn group(&self) -> Option<&'static str> {
        match self {
            JobKind::Ingest(_) => Some("ingest"),
            JobKind::Compact(_) => Some("compact"),
            _ => None,
        }
    }
}
