//! Up to date: a SQL, export or scoring job whose inputs did not change since its last
//! successful run for the same logical date does not run again.
//!
//! A run's *fingerprint* is what decides its output: the logical date, the job's definition
//! (its job file's settings and SQL; for scoring, the endpoint settings and the model
//! declaration), each input table's catalog version (a listing of its few snapshots) and, for
//! event tables, the last batch their stream's ledger published (ingest appends files to a day
//! without moving its catalog entry). The outputs' catalog versions after the run are kept too,
//! so an output dropped or rewritten by someone else is rebuilt. Inputs read as published
//! (`reads_published`) are left out: they change because of this job's own downstream. A successful run records its
//! fingerprint under `_runner/jobs/<job>/up_to_date.json`; the next run computes it again (a
//! few requests per input, whatever the history) and skips when both match. `--force` runs
//! anyway; a backfill (exact days) and a dry run always run.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use crate::error::{Error, Result};
use crate::job::{Job, JobKind};
use crate::ledger::Ledger;
use crate::workspace::Workspace;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub logical_date: String,
    /// A hash of the job's definition.
    pub definition: String,
    /// Input table -> catalog version (`None`: not written yet).
    pub inputs: BTreeMap<String, Option<u64>>,
    /// Stream -> the ledger seq through which every batch is published, for the event tables
    /// among the inputs (a batch committed but not yet published is not in the tables yet).
    pub streams: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    fingerprint: Fingerprint,
    /// Output table -> catalog version right after the run.
    outputs: BTreeMap<String, Option<u64>>,
    run_id: String,
}

fn path(job: &str) -> String {
    format!("_runner/jobs/{job}/up_to_date.json")
}

/// The input tables of the kinds that can be up to date; `None` for ingest and compaction,
/// which always look for new work.
fn inputs(job: &Job) -> Option<Vec<String>> {
    // Inputs read as published (the scores of earlier runs, a job's own previous output) do not
    // count: they change as a consequence of this job's own downstream, and counting them would
    // make every run rerun the loop tenants -> churn_features -> score_churn -> tenants.
    let own = |inputs: &[String]| inputs.iter().filter(|t| !job.reads_published.contains(t)).cloned().collect();
    match &job.kind {
        JobKind::Sql(j) => Some(own(&j.inputs)),
        JobKind::Export(j) => Some(own(&j.inputs)),
        JobKind::Score(j) => Some(vec![j.input.clone()]),
        JobKind::Ingest(_) | JobKind::Compact(_) => None,
    }
}

/// The fingerprint of a run of `job` for `logical_date`, or `None` for kinds that always run.
pub async fn fingerprint(ws: &Workspace, job: &Job, logical_date: &str) -> Result<Option<Fingerprint>> {
    let Some(inputs) = inputs(job) else { return Ok(None) };
    let mut definition = format!("{:?}", job.kind);
    if let JobKind::Score(_) = &job.kind {
        // The endpoint and the model decide the scores as much as the features do.
        definition.push_str(&format!("{:?}", ws.config.scoring));
        if let Ok(model) = std::fs::read(&ws.config.scoring.model) {
            definition.push_str(&format!("{:x}", xxh3_128(&model)));
        }
    }
    let versions = futures::future::try_join_all(inputs.iter().map(|t| ws.catalog.table_version(t))).await?;
    let streams: Vec<String> =
        ws.contract.streams.iter().filter(|(_, sc)| inputs.contains(&sc.table)).map(|(name, _)| name.clone()).collect();
    let seqs = futures::future::try_join_all(streams.iter().map(|s| async move {
        // As this process saw it moments ago, when it did: the check made moments earlier
        // (a batch published since makes the next check differ).
        let ledger = Ledger::new(ws.warehouse.clone(), s);
        match ledger.recent() {
            Some(known) => Ok(known.published_through()),
            None => ledger.published_through().await,
        }
    }))
    .await?;
    Ok(Some(Fingerprint {
        logical_date: logical_date.to_string(),
        definition: format!("{:032x}", xxh3_128(definition.as_bytes())),
        inputs: inputs.into_iter().zip(versions).collect(),
        streams: streams.into_iter().zip(seqs).collect(),
    }))
}

async fn output_versions(ws: &Workspace, job: &Job) -> Result<BTreeMap<String, Option<u64>>> {
    let outputs = job.outputs(&ws.contract);
    let versions = futures::future::try_join_all(outputs.iter().map(|t| ws.catalog.table_version(t))).await?;
    Ok(outputs.into_iter().zip(versions).collect())
}

/// Records a successful run's fingerprint (taken before it ran: inputs that changed during the
/// run make the next fingerprint differ, so the next run does the work).
pub async fn record(ws: &Workspace, job: &Job, fp: Fingerprint, run_id: &str) -> Result<()> {
    let rec = Recorded { fingerprint: fp, outputs: output_versions(ws, job).await?, run_id: run_id.to_string() };
    let body = serde_json::to_vec_pretty(&rec).map_err(|e| Error::Internal(e.to_string()))?;
    ws.warehouse.put(&ws.warehouse.child(&path(&job.name)), Bytes::from(body)).await
}

/// The fingerprint of a run of `job` for `logical_date` and whether the job is up to date for
/// it; `None` for kinds that always run.
pub async fn check(ws: &Workspace, job: &Job, logical_date: &str) -> Result<Option<(Fingerprint, bool)>> {
    if inputs(job).is_none() {
        return Ok(None);
    }
    // The fingerprint, the record and the outputs' versions at once: one round trip or two on
    // S3 instead of four one after another.
    let (fp, recorded, outputs) = futures::future::try_join3(
        fingerprint(ws, job, logical_date),
        ws.warehouse.get_opt(&ws.warehouse.child(&path(&job.name))),
        output_versions(ws, job),
    )
    .await?;
    let Some(fp) = fp else { return Ok(None) };
    // An unreadable record (an older runner's, a hand edit) only means the job runs.
    let up = recorded
        .and_then(|b| serde_json::from_slice::<Recorded>(&b).ok())
        .is_some_and(|rec| rec.fingerprint == fp && rec.outputs == outputs);
    Ok(Some((fp, up)))
}
