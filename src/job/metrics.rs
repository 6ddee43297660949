//! One metrics struct for every kind of job: what a run read, wrote and took.
//!
//! Every job kind returns a [`JobMetrics`]: the same rows and bytes in and out, files,
//! partitions, periods and duration, plus its own counts ([`KindCounts`]). The pipeline records
//! every kind in `runner_runs` from it, and the command line prints every kind from it, so a
//! person reads one vocabulary whatever ran. `run_id` is the one id of the run: the same in
//! `runner_runs`, the ledger commits, quarantine rows, `churn_scores` and the log lines.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use serde::Serialize;

use crate::error::{Error, Result};

/// What one run of one job did (or, for a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct JobMetrics {
    pub job: String,
    pub run_id: String,
    /// The logical time the run was for: a date (SQL, export, scoring) or a time (ingest,
    /// compaction), ISO 8601.
    pub logical_time: String,
    pub dry_run: bool,
    pub rows_in: u64,
    pub bytes_in: u64,
    pub rows_out: u64,
    pub bytes_out: u64,
    pub files: u64,
    /// Partitions written (or that would be), as `table/key=value` paths or `key=value`.
    pub partitions: Vec<String>,
    /// Logical periods covered: the days an incremental SQL job rebuilt, the as-of date.
    pub periods: Vec<String>,
    pub seconds: f64,
    /// Why the job did not run (`up to date`), when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The kind and its own counts (flattened: `"kind": "ingest", "objects": ...`).
    #[serde(flatten)]
    pub counts: KindCounts,
}

impl JobMetrics {
    pub fn new(job: &str, run_id: &str, logical_time: String, counts: KindCounts) -> JobMetrics {
        JobMetrics {
            job: job.to_string(),
            run_id: run_id.to_string(),
            logical_time,
            dry_run: false,
            rows_in: 0,
            bytes_in: 0,
            rows_out: 0,
            bytes_out: 0,
            files: 0,
            partitions: Vec::new(),
            periods: Vec::new(),
            seconds: 0.0,
            skipped: None,
            counts,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.counts.kind()
    }

    /// What went wrong without failing the run (companies not scored), for `runner_runs`.
    pub fn warning(&self) -> Option<String> {
        match &self.counts {
            KindCounts::Score(s) if s.errors > 0 => {
                Some(format!("{} of {} companies not scored: {:?}", s.errors, s.companies, s.errors_by_reason))
            }
            _ => None,
        }
    }
}

/// Job runs as the summary table `runner run` prints: the common columns, the kind's own counts
/// as `key=value` in `details`, and the run id.
pub fn summary_table(runs: &[JobMetrics]) -> Result<RecordBatch> {
    let strs = |f: &dyn Fn(&JobMetrics) -> String| Arc::new(StringArray::from_iter_values(runs.iter().map(f))) as ArrayRef;
    let u = |f: fn(&JobMetrics) -> u64| Arc::new(UInt64Array::from_iter_values(runs.iter().map(f))) as ArrayRef;
    let span = |v: &[String]| match (v.first(), v.last()) {
        (Some(a), Some(b)) if a != b => format!("{a} .. {b} ({})", v.len()),
        (Some(a), _) => a.clone(),
        _ => "-".into(),
    };
    RecordBatch::try_from_iter(vec![
        ("job", strs(&|m| m.job.clone())),
        ("kind", strs(&|m| m.kind().to_string())),
        ("logical_time", strs(&|m| m.logical_time.clone())),
        ("periods", strs(&|m| span(&m.periods))),
        ("rows_in", u(|m| m.rows_in)),
        ("rows_out", u(|m| m.rows_out)),
        ("mb_in", Arc::new(Float64Array::from_iter_values(runs.iter().map(|m| (m.bytes_in as f64 / 1e5).round() / 10.0)))),
        ("files", u(|m| m.files)),
        ("partitions", u(|m| m.partitions.len() as u64)),
        ("dry_run", Arc::new(BooleanArray::from_iter(runs.iter().map(|m| Some(m.dry_run))))),
        ("seconds", Arc::new(Float64Array::from_iter_values(runs.iter().map(|m| (m.seconds * 100.0).round() / 100.0)))),
        (
            "details",
            strs(&|m| match &m.skipped {
                Some(why) => format!("skipped: {why}"),
                None => m.counts.describe(),
            }),
        ),
        ("run_id", strs(&|m| m.run_id.clone())),
    ])
    .map_err(Error::arrow("building the summary"))
}

/// Each kind's own counts.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KindCounts {
    Ingest(IngestCounts),
    Sql(SqlCounts),
    Export(ExportCounts),
    Compact(CompactCounts),
    Score(ScoreCounts),
}

impl KindCounts {
    /// Zero counts of a job's kind (a run that was skipped).
    pub fn empty(kind: &crate::job::JobKind) -> KindCounts {
        use crate::job::JobKind;
        match kind {
            JobKind::Ingest(_) => KindCounts::Ingest(Default::default()),
            JobKind::Sql(_) => KindCounts::Sql(Default::default()),
            JobKind::Export(_) => KindCounts::Export(Default::default()),
            JobKind::Compact(_) => KindCounts::Compact(Default::default()),
            JobKind::Score(_) => KindCounts::Score(Default::default()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            KindCounts::Ingest(_) => "ingest",
            KindCounts::Sql(_) => "sql",
            KindCounts::Export(_) => "export",
            KindCounts::Compact(_) => "compact",
            KindCounts::Score(_) => "score",
        }
    }

    /// The counts as one line of `key=value`, for the table and CSV summaries.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut kv = |k: &str, v: &dyn std::fmt::Display| parts.push(format!("{k}={v}"));
        match self {
            KindCounts::Ingest(c) => {
                kv("batches", &c.batches);
                kv("objects", &c.objects);
                kv("records", &c.stats.records);
                kv("valid", &c.stats.valid);
                kv("duplicates", &c.stats.duplicates);
                kv("quarantined", &c.stats.quarantined_total());
                for (reason, n) in &c.stats.quarantined {
                    kv(&format!("quarantined.{reason}"), n);
                }
                kv("refused", &c.refused);
                kv("skipped", &(c.skipped_error_output + c.skipped_stray));
                kv("recovered", &c.recovered_batches);
                kv("mb", &format!("{:.1}", c.stats.bytes_uncompressed as f64 / 1e6));
            }
            KindCounts::Sql(c) => kv("queries", &c.queries),
            KindCounts::Export(c) => {
                kv("tenants", &c.tenants);
                kv("datasets", &c.datasets);
            }
            KindCounts::Compact(c) => {
                kv("commits", &c.commits);
                kv("files_in", &c.files_in);
                kv("files_out", &c.files_out);
                kv("removed_files", &c.removed_files);
                if c.spilled_bytes > 0 {
                    kv("spilled_mb", &format!("{:.1}", c.spilled_bytes as f64 / 1e6));
                }
            }
            KindCounts::Score(c) => {
                kv("companies", &c.companies);
                match c.would_score {
                    Some(n) => kv("would_score", &n),
                    None => kv("scored", &c.scored),
                }
                kv("kept", &c.kept);
                if c.would_score.is_none() {
                    kv("churn", &c.churn);
                }
                kv("errors", &c.errors);
                for (reason, n) in &c.errors_by_reason {
                    kv(&format!("errors.{reason}"), n);
                }
                kv("unknown_industry", &c.unknown_industry);
                kv("out_of_range", &c.out_of_range);
                for (feature, n) in c.out_of_range_by_feature.iter().filter(|(_, n)| **n > 0) {
                    kv(&format!("out_of_range.{feature}"), n);
                }
                for (feature, psi) in &c.psi {
                    kv(&format!("psi.{feature}"), &format!("{psi:.2}"));
                }
                kv("calls", &c.calls);
                kv("retries", &c.retries);
                kv("endpoint", &c.endpoint);
                kv("model", &format!("{} {}", c.model_id, c.model_version));
            }
        }
        parts.join(" ")
    }
}

/// Records read by ingest, summed over a run's batches.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RecordCounts {
    pub records: u64,
    pub valid: u64,
    pub duplicates: u64,
    /// Quarantined records by reason code.
    pub quarantined: BTreeMap<String, u64>,
    pub bytes_uncompressed: u64,
}

impl RecordCounts {
    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestCounts {
    pub stream: String,
    pub batches: u64,
    /// Committed batches of an earlier, interrupted run that this run published.
    pub recovered_batches: u64,
    pub objects: u64,
    pub refused: u64,
    pub skipped_error_output: u64,
    pub skipped_stray: u64,
    /// Objects the discovery listing returned (from the last ingested hour minus the lookback).
    pub listed: u64,
    #[serde(flatten)]
    pub stats: RecordCounts,
    /// Where the run's time went, stage by stage.
    pub stages: IngestStages,
}

/// Seconds an ingest run spent per stage. The CPU stages (inflate, parse, dedup, encode) count
/// the CPU time of the threads doing them ([`thread_cpu`]), so waiting for a core is not
/// counted and they add up to at most the process's CPU time. The I/O stages (list, read,
/// write, commit) count wall time; reads and writes of several objects overlap, so theirs is
/// the sum over objects and can exceed the run's wall time.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct IngestStages {
    /// Listing the source and loading the ledger's consumed and dedup keys.
    pub list_s: f64,
    /// Fetching drop bytes from the store (wall time per object, added up).
    pub read_s: f64,
    /// Inflating GZIP drops (CPU).
    pub inflate_s: f64,
    /// Framing, parsing and validating records into Arrow builders (CPU).
    pub parse_s: f64,
    /// Looking up and recording dedup keys, dropping duplicates (CPU).
    pub dedup_s: f64,
    /// Sorting rows into partitions, gathering and encoding Parquet (CPU).
    pub encode_s: f64,
    /// Writing staged files and dedup keys.
    pub write_s: f64,
    /// The ledger commit, moving files into place, catalog registration and checkpoints.
    pub commit_s: f64,
}

/// CPU time of the calling thread so far. A stage measured with it between two points on one
/// thread (no `.await` in between) counts only its own work.
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SqlCounts {
    /// Queries run: one per run of consecutive changed days (at most 10 days each).
    pub queries: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportCounts {
    pub tenants: u64,
    pub datasets: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactCounts {
    pub commits: u64,
    pub files_in: u64,
    pub files_out: u64,
    /// Files of versions replaced longer than `keep_replaced` ago, deleted by this run.
    pub removed_files: u64,
    /// What the merge sorts spilled to local disk (partitions bigger than `memory_mb`).
    pub spilled_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScoreCounts {
    pub model_id: String,
    pub model_version: String,
    pub endpoint: String,
    pub companies: u64,
    pub scored: u64,
    /// Companies scored by an earlier run of the same date and model, kept as they were.
    pub kept: u64,
    pub churn: u64,
    /// A dry run: the companies it would send to the endpoint (it scores none, so `scored` and
    /// `churn` say nothing and are left out of its summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_score: Option<u64>,
    pub errors: u64,
    pub errors_by_reason: BTreeMap<String, u64>,
    /// Companies whose industry the model does not know (scored with an all-zero one-hot).
    pub unknown_industry: u64,
    /// Companies with at least one feature outside the model's training range.
    pub out_of_range: u64,
    /// Per feature: companies outside its training range.
    pub out_of_range_by_feature: BTreeMap<String, u64>,
    /// Per feature: the population stability index against the training data (from 50 rows on).
    pub psi: BTreeMap<String, f64>,
    pub calls: u64,
    pub retries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_flat_with_the_kind_and_its_counts() {
        let mut m = JobMetrics::new(
            "ingest_companies",
            "r1",
            "2026-11-20T00:00:00+00:00".into(),
            KindCounts::Ingest(IngestCounts {
                objects: 3,
                stats: RecordCounts { valid: 7, ..Default::default() },
                ..Default::default()
            }),
        );
        m.rows_in = 8;
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["kind"], "ingest");
        assert_eq!(v["objects"], 3);
        assert_eq!(v["valid"], 7);
        assert_eq!(v["rows_in"], 8);
        assert_eq!(v["run_id"], "r1");
        assert!(m.counts.describe().contains("objects=3 records=0 valid=7"), "{}", m.counts.describe());
    }
}
