//! Job leases in the warehouse: never two runs of one job at once, across processes and
//! machines, with nothing but create-if-absent puts (a hard link locally, `If-None-Match` on S3).
//!
//! ```text
//! <warehouse>/_runner/leases/<job>/<gen:012>.json            taken: holder, expiry
//! <warehouse>/_runner/leases/<job>/<gen:012>.renew-<n:06>.json  renewed by the holder: new expiry
//! <warehouse>/_runner/leases/<job>/<gen:012>.released         given back
//! ```
//!
//! The lease is the highest generation. It is free when it was released or its newest record
//! is older than its `ttl`; then whoever creates generation + 1 first holds it (the other
//! create fails). Only the holder writes renewals of its generation, so there is no
//! read-modify-write. A holder killed with SIGKILL stops renewing; its lease expires after
//! `ttl` and another process takes over.
//!
//! Expiry is measured in the store's time, never by comparing two machines' clocks: a record's
//! age is the store's `last_modified` of it against the `last_modified` of a probe the reader
//! writes (`clock`), both stamped by the store. The holder measures its own deadline on its
//! monotonic clock from before each renewal, so it always believes itself expired no later than
//! any reader does.
//!
//! A lease fences: [`Fence`] (job and generation) goes with the run into every catalog update
//! (a task-local, see [`fenced`]), and a catalog snapshot remembers the newest generation of
//! each job that wrote it, so a holder paused past its ttl, whose job has since been run by a
//! newer generation, has its publishes refused instead of putting back older results. A holder
//! that knows it lost the lease refuses its own writes. Ledger commits are fenced by their seq.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::fence::{Fence, fence, fenced};
use crate::store::Location;

const DIR: &str = "_runner/leases";
/// Generations kept behind the current one (older ones are deleted when a lease is taken), for
/// a person looking at who held it last. Deleting them cannot let two runs hold the lease: the
/// lease is the *highest* generation, and the taker deletes only generations below the one it
/// has just created, so the create-if-absent of the next generation still decides between
/// two takers. A job's lease folder holds at most two generations: the taking record, the
/// newest renewal and the release marker of each (a renewal deletes the one before it).
const KEEP: u64 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    holder: String,
    /// The holder's idea of the expiry (for people reading the record): readers use `ttl_ms`
    /// from the store's `last_modified` of the record.
    expires_at: DateTime<Utc>,
    /// Absent in records written before expiry went by store time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
}

impl Record {
    fn new(holder: &str, ttl: Duration) -> Record {
        Record {
            holder: holder.to_string(),
            expires_at: Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default(),
            ttl_ms: Some(ttl.as_millis() as u64),
        }
    }
}

/// Who holds a lease and until when (for "skipped" messages).
#[derive(Debug, Clone)]
pub struct Holder {
    pub holder: String,
    pub expires_at: DateTime<Utc>,
}

/// A lease this process holds. Renewed in the background until [`Lease::release`].
#[derive(Debug)]
pub struct Lease {
    wh: Location,
    job: String,
    generation: u64,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

/// This process, as lease records name it.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{host}:{}:{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn dir(job: &str) -> String {
    format!("{DIR}/{}", crate::catalog::hive_escape(job))
}

/// What one listing of a job's lease folder says.
struct State {
    /// The highest generation (0: never taken).
    generation: u64,
    /// Who holds it, when it is neither released nor expired.
    held: Option<Holder>,
    /// Every file, with its generation.
    files: Vec<(u64, object_store::path::Path)>,
}

/// The store's time now: the `last_modified` it stamps on a probe written to the job's lease
/// folder (a put and a head; only needed when a lease looks taken).
async fn store_now(wh: &Location, job: &str) -> Result<DateTime<Utc>> {
    wh.store_now(&format!("{}/clock", dir(job))).await
}

/// The current generation of `job`'s lease and whether it is free now.
async fn current(wh: &Location, job: &str) -> Result<State> {
    let mut files = Vec::new();
    for o in wh.list(&dir(job)).await? {
        let g = o.location.filename().and_then(|n| n.get(..12)).and_then(|g| g.parse::<u64>().ok());
        if let Some(g) = g {
            files.push((g, o));
        }
    }
    let generation = files.iter().map(|(g, _)| *g).max().unwrap_or(0);
    let mine = || files.iter().filter(|(g, _)| *g == generation).map(|(_, o)| o);
    let released = mine().any(|o| o.location.filename().is_some_and(|n| n.ends_with(".released")));
    // The newest record has the latest expiry: renewals (`.renew-<n>.json`, written in order)
    // sort after the taking record (`.json`).
    let newest =
        mine().filter(|o| o.location.filename().is_some_and(|n| n.ends_with(".json"))).max_by_key(|o| o.location.clone());
    let mut held = None;
    if generation > 0
        && !released
        && let Some(meta) = newest
        && let Some(bytes) = wh.get_opt(&meta.location).await?
    {
        let now = store_now(wh, job).await?;
        // A record being written can be unreadable for a moment: it then counts as held.
        let r: Record = serde_json::from_slice(&bytes).unwrap_or(Record {
            holder: "unknown".into(),
            expires_at: now + chrono::Duration::minutes(5),
            ttl_ms: None,
        });
        // S3 stamps whole seconds (truncated): a record may be up to a second younger than it says.
        let resolution = if wh.is_local() { 0 } else { 1000 };
        let expires_at = match r.ttl_ms {
            Some(ms) => meta.last_modified + chrono::Duration::milliseconds(ms as i64 + resolution),
            // A record from before expiry went by store time: its holder's clock.
            None => r.expires_at,
        };
        held = (expires_at > now).then_some(Holder { holder: r.holder, expires_at });
    }
    let files = files.into_iter().map(|(g, o)| (g, o.location)).collect();
    Ok(State { generation, held, files })
}

/// The leases this process holds (store, job, generation), for [`release_held`].
static HELD: std::sync::Mutex<Vec<(Location, String, u64)>> = std::sync::Mutex::new(Vec::new());

/// Gives back every lease this process holds (on SIGINT or SIGTERM, before exiting), so the
/// next run need not wait for them to expire. Returns how many.
pub async fn release_held() -> usize {
    let held = std::mem::take(&mut *HELD.lock().expect("held leases"));
    let n = held.len();
    for (wh, job, generation) in held {
        let path = wh.child(&format!("{}/{generation:012}.released", dir(&job)));
        if let Err(e) = wh.put_if_absent(&path, Bytes::from_static(b"{}")).await {
            tracing::warn!(job, "could not give the lease back (it expires by itself): {e}");
        }
    }
    n
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

/// Takes `job`'s lease for `ttl`, or says who holds it.
pub async fn acquire(wh: &Location, job: &str, holder: &str, ttl: Duration) -> Result<std::result::Result<Lease, Holder>> {
    let state = current(wh, job).await?;
    if let Some(h) = state.held {
        return Ok(Err(h));
    }
    let next = state.generation + 1;
    let asked = std::time::Instant::now();
    let rec = Record::new(holder, ttl);
    let body = Bytes::from(serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?);
    if !wh.put_if_absent(&wh.child(&format!("{}/{next:012}.json", dir(job))), body).await? {
        // Someone took generation `next` between our look and our create.
        let held = current(wh, job).await?.held;
        return Ok(Err(held.unwrap_or(Holder { holder: "another process".into(), expires_at: rec.expires_at })));
    }
    // Old generations are history nobody reads.
    for (_, p) in state.files.iter().filter(|(g, _)| g + KEEP < next) {
        wh.delete(p).await?;
    }
    HELD.lock().expect("held leases").push((wh.clone(), job.to_string(), next));
    let lost = Arc::new(AtomicBool::new(false));
    let renewer = tokio::spawn(renew(wh.clone(), job.to_string(), next, holder.to_string(), ttl, lost.clone(), asked + ttl));
    Ok(Ok(Lease { wh: wh.clone(), job: job.to_string(), generation: next, lost, renewer }))
}

async fn renew(
    wh: Location,
    job: String,
    generation: u64,
    holder: String,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    // On this process's monotonic clock, from before the write that set it: the store stamped
    // that write later, so every reader sees the lease expire after this.
    mut deadline: std::time::Instant,
) {
    for n in 1.. {
        tokio::time::sleep(ttl / 3).await;
        let asked = std::time::Instant::now();
        if asked >= deadline {
            tracing::warn!(
                job,
                "the lease expired before it was renewed (the process was paused?); this run's writes are refused from now on"
            );
            lost.store(true, Ordering::SeqCst);
            return;
        }
        let rec = Record::new(&holder, ttl);
        let Ok(body) = serde_json::to_vec(&rec) else { return };
        let path = wh.child(&format!("{}/{generation:012}.renew-{n:06}.json", dir(&job)));
        match wh.put_if_absent(&path, Bytes::from(body)).await {
            Ok(_) => {
                deadline = asked + ttl;
                // Readers take the newest record of a generation, which now exists: the one
                // before it says nothing more.
                if n > 1 {
                    let _ = wh.delete(&wh.child(&format!("{}/{generation:012}.renew-{:06}.json", dir(&job), n - 1))).await;
                }
            }
            Err(e) => tracing::warn!(job, "could not renew the lease: {e}"),
        }
    }
}

impl Lease {
    /// Whether the lease expired while held (the holder was paused longer than the ttl).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The fence of this generation, for the run's writes ([`fenced`]).
    pub fn fence(&self) -> Fence {
        Fence::new(&self.job, self.generation, self.lost.clone())
    }

    /// Gives the lease back so another process need not wait for it to expire.
    pub async fn release(self) -> Result<()> {
        self.renewer.abort();
        let path = self.wh.child(&format!("{}/{:012}.released", dir(&self.job), self.generation));
        self.wh.put_if_absent(&path, Bytes::from_static(b"{}")).await?;
        // Only now: a release cut short by SIGINT is finished by `release_held`.
        HELD.lock().expect("held leases").retain(|(_, j, g)| !(j == &self.job && *g == self.generation));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_release_and_expiry_free_it() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let ttl = Duration::from_millis(600);
        let a = acquire(&wh, "j", "a", ttl).await.unwrap().unwrap();
        let held = acquire(&wh, "j", "b", ttl).await.unwrap().unwrap_err();
        assert_eq!(held.holder, "a");
        // Renewed while held: still held after the first ttl.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(acquire(&wh, "j", "b", ttl).await.unwrap().is_err(), "renewed");
        a.release().await.unwrap();
        let b = acquire(&wh, "j", "b", ttl).await.unwrap().unwrap();
        // A holder that stops renewing (killed) loses it after the ttl.
        b.renewer.abort();
        assert!(acquire(&wh, "j", "c", ttl).await.unwrap().is_err());
        tokio::time::sleep(Duration::from_millis(700)).await;
        let c = acquire(&wh, "j", "c", ttl).await.unwrap().unwrap();
        assert_eq!(c.generation, 3);
        // Other jobs have their own leases.
        assert!(acquire(&wh, "other", "d", ttl).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn the_lease_folder_stays_small_whatever_the_number_of_runs() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let ttl = Duration::from_secs(60);
        for i in 0..50 {
            let l = acquire(&wh, "j", &format!("run{i}"), ttl).await.unwrap().unwrap();
            l.release().await.unwrap();
        }
        let files = wh.list(&dir_of("j")).await.unwrap().len();
        assert!(files <= 4, "two generations of a taking record and a release marker at most: {files}");
        let taken = acquire(&wh, "j", "last", ttl).await.unwrap().unwrap();
        assert_eq!(taken.generation, 51, "generations keep counting after the old ones are deleted");
    }

    /// A holder whose clock runs an hour ahead (its record says it expires in an hour) or an
    /// hour behind (its record says it expired): readers go by the store's time, so the lease
    /// lasts its ttl from the record's write either way.
    #[tokio::test]
    async fn expiry_goes_by_the_stores_time_not_the_holders_clock() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let ttl = Duration::from_millis(800);
        for (job, skew) in [("ahead", chrono::Duration::hours(1)), ("behind", chrono::Duration::hours(-1))] {
            let rec = Record { expires_at: Utc::now() + skew, ..Record::new("skewed", ttl) };
            let path = wh.child(&format!("{}/{:012}.json", dir_of(job), 1));
            assert!(wh.put_if_absent(&path, Bytes::from(serde_json::to_vec(&rec).unwrap())).await.unwrap());
            let held = acquire(&wh, job, "reader", ttl).await.unwrap();
            assert_eq!(held.map(|_| ()).unwrap_err().holder, "skewed", "{job}: held within its ttl");
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        for job in ["ahead", "behind"] {
            let taken = acquire(&wh, job, "reader", ttl).await.unwrap();
            assert_eq!(taken.map(|l| l.generation).ok(), Some(2), "{job}: expired after its ttl");
        }
    }

    fn dir_of(job: &str) -> String {
        dir(job)
    }
}
