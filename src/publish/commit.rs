//! Committing and publishing ledger commits, the one loop every ledger writer goes through
//! (ingest batches, compactions, run records): [`Committer`] commits an attempt's record, then
//! publishes it (the files move into place and their partitions are registered, idempotently,
//! so any run can roll an interrupted one forward) and checkpoints; on a conflict it reloads the
//! ledger for the caller to re-plan. One conflict rule: an "already exists" is read back and is
//! ours when the record holds our attempt (`Location::put_if_absent`); otherwise the seq went to
//! another attempt, and an attempt older than the commit grace does not commit at all. Staging
//! is never deleted on a conflict path: the garbage collection deletes it once its seq is
//! provably another attempt's.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};

use crate::catalog::PartitionMeta;
use crate::config::IngestSettings;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ledger::{Attempt, Commit, Ledger, LedgerState};
use crate::workspace::Workspace;

/// Files put into place at once when a commit is published.
pub const MOVES_IN_FLIGHT: usize = 16;

/// How often a run re-plans after other runs committed the seq it planned.
pub const MAX_COMMIT_CONFLICTS: u32 = 20;

/// Publishes every committed batch that has no `.published` marker (a crash cut it short).
/// Returns how many it published.
pub async fn roll_forward(ws: &Workspace, ledger: &Ledger, state: &mut LedgerState) -> Result<u64> {
    let mut n = 0;
    for c in &state.commits {
        if !state.published.contains(&c.seq) {
            tracing::info!(stream = %c.stream, seq = c.seq, "rolling forward batch committed by an interrupted run");
            publish_commit(ws, ledger, c).await?;
            n += 1;
        }
    }
    for c in &state.commits {
        state.published.insert(c.seq);
    }
    Ok(n)
}

/// Moves a committed batch's files into place and registers their partitions. Idempotent.
///
/// An ingest batch only *adds* partitions that do not exist yet (its files join the current
/// version, which the catalog already points at); only a compaction repoints a partition. So a
/// publisher that was delayed never points a partition back at a replaced version.
pub async fn publish_commit(ws: &Workspace, ledger: &Ledger, c: &Commit) -> Result<()> {
    let wh = &ws.warehouse;
    // Every file put in place at once (on S3 a copy each, tens of milliseconds), the staged
    // copies then deleted in bulk beside the catalog update: a round trip for the copies and
    // one for the deletes and the catalog, whatever the number of files. The crash tests stop
    // a publish once the first file is in place.
    let placed: Vec<Option<object_store::path::Path>> = futures::stream::iter(c.files.iter().enumerate())
        .map(|(i, f)| {
            let first = i == 0;
            async move {
                let staged = wh.child(&f.staged);
                let owed = wh.place(&staged, &wh.child(&f.path)).await?;
                if first {
                    failpoint::hit("ingest.mid_publish");
                }
                Ok::<_, Error>(owed.then_some(staged))
            }
        })
        .buffer_unordered(MOVES_IN_FLIGHT)
        .try_collect()
        .await?;
    let staged: Vec<object_store::path::Path> = placed.into_iter().flatten().collect();
    let deleting = async {
        wh.delete_many(staged).await?;
        // A local disk keeps the staging folders the moves emptied.
        if let Some(dir) = c.files.first().and_then(|f| f.staged.rsplit_once('/')).map(|(d, _)| d) {
            wh.remove_empty_dirs(dir).await?;
        }
        Ok::<(), Error>(())
    };
    let registering = async {
        failpoint::hit("ingest.before_catalog");
        // By table, and by whether the commit gave the partition a new version (a compaction,
        // or the quarantine partitions a replay rewrote: repointed) or added files to the
        // current one (added when new). Each table is its own snapshot: all at once.
        let mut by_table: BTreeMap<(&str, bool), Vec<PartitionMeta>> = BTreeMap::new();
        for f in &c.files {
            let dir = f.path.rsplit_once('/').map(|(d, _)| d).unwrap_or(&f.path);
            let p = PartitionMeta::new(f.partition.clone(), wh.join(dir).url);
            let repoint = c.compacted().iter().any(|r| r.table == f.table && r.partition == f.partition);
            let v = by_table.entry((f.table.as_str(), repoint)).or_default();
            if !v.contains(&p) {
                v.push(p);
            }
        }
        // A table both added to and repointed in one commit is updated once after the other.
        let mut tables: BTreeMap<&str, Vec<(bool, Vec<PartitionMeta>)>> = BTreeMap::new();
        for ((table, repoint), parts) in by_table {
            tables.entry(table).or_default().push((repoint, parts));
        }
        futures::future::try_join_all(tables.into_iter().map(|(table, changes)| async move {
            for (repoint, parts) in changes {
                if repoint {
                    ws.catalog.put_partitions(table, &parts).await?;
                } else {
                    ws.catalog.add_partitions(table, &parts).await?;
                }
            }
            Ok::<(), Error>(())
        }))
        .await?;
        Ok::<(), Error>(())
    };
    futures::future::try_join(deleting, registering).await?;
    ledger.mark_published(c.seq).await
}

/// How long what a checkpoint replaced is kept for runs that read the ledger before it.
pub fn retention(settings: &IngestSettings) -> chrono::Duration {
    chrono::Duration::from_std(settings.checkpoint_retention).unwrap_or(chrono::Duration::MAX)
}

/// A checkpoint of a ledger when enough commits follow the last one; the state rebased on it.
/// Dedup keys are kept for lookback + horizon behind the newest arrival: every drop discovery
/// can list is deduplicated against them.
pub async fn checkpoint(ledger: &Ledger, state: LedgerState, settings: &IngestSettings, run_id: &str) -> Result<LedgerState> {
    let keep_ms = (settings.lookback + settings.dedup_horizon).as_millis() as i64;
    ledger.maybe_checkpoint(state, settings.checkpoint_every, keep_ms, run_id).await
}

/// What became of a commit.
#[derive(Debug)]
pub enum Committed {
    /// Committed, published and checkpointed: the ledger after it, and the commit.
    Done(LedgerState, Box<Commit>),
    /// The seq went to another attempt (or the attempt outlived the grace): the ledger as it is
    /// now, batches other runs left unpublished rolled forward (how many), to plan again from.
    Replan(LedgerState, u64),
}

/// The commit step of one ledger writer: see the module header.
pub struct Committer<'a> {
    ws: &'a Workspace,
    ledger: &'a Ledger,
    settings: IngestSettings,
    run_id: &'a str,
    /// What is committed, for the re-plan message ("ingest", "compaction", "run record").
    what: &'static str,
    /// Failpoints right after the commit and after the publish, for the crash tests.
    points: (Option<&'static str>, Option<&'static str>),
    replan: Replan,
}

impl<'a> Committer<'a> {
    pub fn new(ws: &'a Workspace, ledger: &'a Ledger, settings: IngestSettings, run_id: &'a str, what: &'static str) -> Self {
        Committer { ws, ledger, settings, run_id, what, points: (None, None), replan: Replan::default() }
    }

    pub fn failpoints(mut self, after_commit: &'static str, after_published: Option<&'static str>) -> Self {
        self.points = (Some(after_commit), after_published);
        self
    }

    /// Starts a new conflict budget (a writer that makes many commits counts per commit).
    pub fn reset_conflicts(&mut self) {
        self.replan = Replan::default();
    }

    /// The ledger as it is now, committed batches left unpublished rolled forward (how many).
    pub async fn load(&self) -> Result<(LedgerState, u64)> {
        let mut state = self.ledger.load().await?;
        let n = roll_forward(self.ws, self.ledger, &mut state).await?;
        Ok((state, n))
    }

    /// Commits `c` (staged by `attempt` against `state`), publishes it and checkpoints. A
    /// conflict comes back as [`Committed::Replan`] at most [`MAX_COMMIT_CONFLICTS`] times.
    pub async fn commit(&mut self, mut state: LedgerState, attempt: &Attempt, c: Commit) -> Result<Committed> {
        match self.ledger.commit_within(attempt, &c, self.settings.commit_grace, self.settings.checkpoint_retention).await {
            Ok(()) => {
                if let Some(p) = self.points.0 {
                    failpoint::hit(p);
                }
                publish_commit(self.ws, self.ledger, &c).await?;
                if let Some(p) = self.points.1 {
                    failpoint::hit(p);
                }
                state.published.insert(c.seq);
                state.commits.push(c.clone());
                let state = checkpoint(self.ledger, state, &self.settings, self.run_id).await?;
                self.ledger.remember(&state);
                Ok(Committed::Done(state, Box::new(c)))
            }
            Err(e) => {
                self.replan.after(e, self.what)?;
                let (state, recovered) = self.load().await?;
                Ok(Committed::Replan(state, recovered))
            }
        }
    }
}

/// Counts commit conflicts of one run: another run committed the seq this one planned, so it
/// plans again from the new ledger, at most [`MAX_COMMIT_CONFLICTS`] times.
#[derive(Debug, Default)]
pub struct Replan {
    conflicts: u32,
}

impl Replan {
    /// `Ok` when `e` is a commit conflict and the run may plan again (logged); otherwise `e`.
    pub fn after(&mut self, e: Error, what: &str) -> Result<()> {
        match e {
            Error::CommitConflict { stream, seq } if self.conflicts < MAX_COMMIT_CONFLICTS => {
                self.conflicts += 1;
                tracing::info!(stream, seq, "another run committed batch {seq} first; re-planning the {what}");
                Ok(())
            }
            Error::StaleAttempt { stream, seq, age_s } if self.conflicts < MAX_COMMIT_CONFLICTS => {
                self.conflicts += 1;
                tracing::warn!(
                    stream,
                    seq,
                    age_s,
                    "the attempt at batch {seq} outlived the commit grace; re-planning the {what}"
                );
                Ok(())
            }
            e => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_re_plan_a_bounded_number_of_times_and_other_errors_pass_through() {
        let mut r = Replan::default();
        let conflict = || Error::CommitConflict { stream: "s".into(), seq: 7 };
        for _ in 0..MAX_COMMIT_CONFLICTS {
            r.after(conflict(), "ingest").unwrap();
        }
        assert!(matches!(r.after(conflict(), "ingest"), Err(Error::CommitConflict { seq: 7, .. })));
        assert!(matches!(Replan::default().after(Error::Failed("x".into()), "ingest"), Err(Error::Failed(_))));
    }
}
