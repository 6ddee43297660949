//! `runner state`: what the runner keeps for itself in the warehouse (`_runner/`), per ledger
//! and per kind: how many objects and bytes, the newest checkpoint, and what the next clean-up
//! will remove and from when. State that grows with every run is a cost that grows with every
//! run; this is where a person sees that it does not.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use chrono::{DateTime, Utc};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::workspace::Workspace;

/// Objects of one kind in one area.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateRow {
    /// A ledger (stream, `runner_runs`), or `leases`, `schedules`, `catalog`, `jobs`, `warehouse`.
    pub area: String,
    pub kind: String,
    pub objects: u64,
    pub bytes: u64,
    /// Objects the next clean-up removes.
    pub removable: u64,
    /// When that clean-up may run (`now`, a time, or empty when nothing is to remove).
    pub removable_from: String,
    /// The ledger's newest checkpoint: `seq <n> (<k> commits, written <time>)`.
    pub checkpoint: String,
}

/// One object under `_runner/`: its path there, kind, size and when it was written.
type StateObject = (String, &'static str, u64, DateTime<Utc>);

/// The ledger an area's objects belong to, and what kind they are, from their path under
/// `_runner/`.
fn classify(rel: &str) -> (String, &'static str) {
    let parts: Vec<&str> = rel.split('/').collect();
    let at = |i: usize| parts.get(i).copied().unwrap_or("").to_string();
    match parts.first().copied().unwrap_or("") {
        "ledger" if rel.ends_with(".published") => (at(1), "publish markers"),
        "ledger" => (at(1), "commit records"),
        "checkpoints" => (at(1), "checkpoints"),
        "dedup" => (at(1), "dedup keys"),
        "staging" => (at(1), "staging files"),
        "leases" => ("leases".into(), "lease objects"),
        "schedule" => ("schedules".into(), "done markers"),
        "runs" => ("runner_runs".into(), "recent runs"),
        "catalog" => ("catalog".into(), "catalog entries"),
        "glue-pending" => ("catalog".into(), "Glue publishes pending"),
        "jobs" => ("jobs".into(), "incremental state"),
        "clock" => ("warehouse".into(), "store clock probes"),
        _ => ("warehouse".into(), "other"),
    }
}

/// Every kind of state object in the warehouse, with what the next clean-up removes.
pub async fn report(ws: &Workspace) -> Result<Vec<StateRow>> {
    ws.check_format(false).await?;
    let objects = ws.warehouse.list("_runner").await?;
    let mut rows: BTreeMap<(String, &'static str), StateRow> = BTreeMap::new();
    let mut by_area: BTreeMap<String, Vec<StateObject>> = BTreeMap::new();
    for o in &objects {
        let Some(rel) = ws.warehouse.relative(&o.location).and_then(|r| r.strip_prefix("_runner/")) else { continue };
        let (area, kind) = classify(rel);
        let row = rows.entry((area.clone(), kind)).or_insert_with(|| StateRow {
            area: area.clone(),
            kind: kind.to_string(),
            ..Default::default()
        });
        row.objects += 1;
        row.bytes += o.size;
        by_area.entry(area).or_default().push((rel.to_string(), kind, o.size, o.last_modified));
    }
    let now = Utc::now();
    let retention = crate::publish::commit::retention(&ws.config.ingest);
    for (area, files) in &by_area {
        if !files.iter().any(|(_, k, _, _)| *k == "commit records" || *k == "checkpoints") {
            continue;
        }
        // A ledger: what its clean-up removes once its newest checkpoint is old enough.
        let ledger = Ledger::new(ws.warehouse.clone(), area);
        let Some(seq) = ledger.pointer().await? else { continue };
        let cp = ledger.read_checkpoint(seq).await?;
        let cleaned = ledger.cleaned_through().await?;
        let from = cp.written_at + retention;
        let when = if from <= now { "next run".to_string() } else { from.format("%Y-%m-%dT%H:%M:%SZ").to_string() };
        let used = cp.segments();
        let kept: HashSet<&str> = cp.batches.iter().map(|b| b.dedup_keys.as_str()).collect();
        let seq_of = |name: &str| name.get(..12).and_then(|s| s.parse::<u64>().ok());
        for (rel, kind, _, _) in files {
            let name = rel.rsplit('/').next().unwrap_or("");
            let removable = match *kind {
                "commit records" | "publish markers" => cleaned < seq && seq_of(name).is_some_and(|s| s <= seq),
                "checkpoints" => {
                    let inner = rel.split('/').nth(2).unwrap_or("");
                    seq_of(inner).is_some_and(|s| s < seq) && !used.contains(format!("_runner/{rel}").as_str())
                }
                "dedup keys" => seq_of(name).is_some_and(|s| s <= seq) && !kept.contains(format!("_runner/{rel}").as_str()),
                _ => false,
            };
            if removable && let Some(row) = rows.get_mut(&(area.clone(), kind)) {
                row.removable += 1;
                row.removable_from = when.clone();
            }
        }
        for kind in ["commit records", "publish markers", "checkpoints", "dedup keys"] {
            if let Some(row) = rows.get_mut(&(area.clone(), kind)) {
                row.checkpoint =
                    format!("seq {seq} ({} commits, written {})", cp.commits, cp.written_at.format("%Y-%m-%dT%H:%M:%SZ"));
            }
        }
    }
    // Staging older than the grace is removed by the next run of its ledger; lease generations
    // behind the last two by the next taker; done markers after two days.
    for (area, files) in &by_area {
        for (rel, kind, _, modified) in files {
            let removable = match *kind {
                "staging files" => *modified < now - chrono::Duration::hours(1),
                "done markers" => *modified < now - chrono::Duration::days(2),
                "lease objects" => {
                    let job = rel.split('/').nth(1).unwrap_or("");
                    let gen_of = |r: &str| r.rsplit('/').next().and_then(|n| n.get(..12)).and_then(|g| g.parse::<u64>().ok());
                    let newest = files
                        .iter()
                        .filter(|(r, _, _, _)| r.split('/').nth(1) == Some(job))
                        .filter_map(|(r, ..)| gen_of(r))
                        .max();
                    gen_of(rel).zip(newest).is_some_and(|(g, n)| g + 1 < n)
                }
                _ => false,
            };
            if removable && let Some(row) = rows.get_mut(&(area.clone(), *kind)) {
                row.removable += 1;
                row.removable_from = "next run".into();
            }
        }
    }
    Ok(rows.into_values().collect())
}

/// The report as a table for `--format`.
pub fn to_batch(rows: &[StateRow]) -> Result<RecordBatch> {
    let s = |f: fn(&StateRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let u = |f: fn(&StateRow) -> u64| Arc::new(UInt64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
    RecordBatch::try_from_iter(vec![
        ("area", s(|r| &r.area)),
        ("kind", s(|r| &r.kind)),
        ("objects", u(|r| r.objects)),
        ("bytes", u(|r| r.bytes)),
        ("removable", u(|r| r.removable)),
        ("removable_from", s(|r| &r.removable_from)),
        ("checkpoint", s(|r| &r.checkpoint)),
    ])
    .map_err(Error::arrow("building the state report"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_ledger_and_kind() {
        assert_eq!(classify("ledger/companies/000000000003.json"), ("companies".into(), "commit records"));
        assert_eq!(classify("ledger/companies/000000000003.published"), ("companies".into(), "publish markers"));
        assert_eq!(classify("checkpoints/runner_runs/_last_checkpoint"), ("runner_runs".into(), "checkpoints"));
        assert_eq!(classify("dedup/bigdatajobs/000000000001-abc.keys"), ("bigdatajobs".into(), "dedup keys"));
        assert_eq!(classify("leases/tenants/000000000002.json"), ("leases".into(), "lease objects"));
        assert_eq!(classify("format.json"), ("warehouse".into(), "other"));
    }
}
