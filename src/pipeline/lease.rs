//! Job leases in the warehouse: never two runs of one job at once, across processes and
//! machines, with nothing but create-if-absent puts (a hard link locally, `If-None-Match` on S3).
//!
//! ```text
//! <warehouse>/_runner/leases/<job>/<gen:012>.json            taken: holder, expiry
//! <warehouse>/_runner/leases/<job>/<gen:012>.renew-<n:012>.json renewed by the holder: new expiry
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
//! writes (`clock`), both stamped by the store. The holder measures its own deadline on a clock
//! that counts through pauses and suspends (`CLOCK_BOOTTIME`) from before each renewal, so it
//! always believes itself expired no later than any reader does, and every fenced write checks
//! that deadline itself. A renewal that lands after the deadline ends the holding.
//!
//! A lease fences: [`Fence`] (job and generation) goes with the run into every catalog update
//! (a task-local, see [`fenced`]), and a catalog snapshot remembers the newest generation of
//! each job that wrote it, so a holder paused past its ttl, whose job has since been run by a
//! newer generation, has its publishes refused instead of putting back older results. A holder
//! that knows it lost the lease refuses its own writes. Ledger commits are fenced by their seq.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::fence::{Fence, boot_ms, fence, fenced};
use crate::store::Location;

const DIR: &str = "_runner/leases";
/// Generations kept behind the current one (older ones are deleted when a lease is taken), for
/// a person looking at who held it last. Deleting them cannot let two runs hold the lease: the
/// lease is the *highest* generation, and the taker deletes only generations below the one it
/// has just created, so the create-if-absent of the next generation still decides between
/// two takers. A job's lease folder holds at most two generations: the taking record, the
/// newest renewal and the release marker of each (a renewal deletes the one before it).
const KEEP: u64 = 1;
/// Looks at a lease folder whose newest record vanished while being read, before counting the
/// lease as held.
const VANISHED_RETRIES: u32 = 5;
/// Generations of a job that has none in its folder (new, or the folder was deleted) start at
/// the store's time in milliseconds since this instant (2020-01-01), not at 1: catalog
/// snapshots remember the newest generation that wrote them, and a counter restarted below it
/// would have every publish refused as stale. Twelve digits last until 2051.
const GENERATION_EPOCH_MS: i64 = 1_577_836_800_000;

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
    deadline_ms: Arc<AtomicU64>,
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
    // The newest record can vanish between the listing and the read: its holder renewed and
    // deleted it. That is a lease being held, so list again; one that keeps vanishing counts
    // as held (never as free: two holders at once is the one thing a lease must not allow).
    for _ in 0..VANISHED_RETRIES {
        let listed = wh.list(&dir(job)).await?;
        if let Some(state) = current_once(wh, job, listed).await? {
            return Ok(state);
        }
    }
    let mut state = State { generation: 0, held: None, files: Vec::new() };
    for o in wh.list(&dir(job)).await? {
        if let Some(g) = o.location.filename().and_then(|n| n.get(..12)).and_then(|g| g.parse::<u64>().ok()) {
            state.generation = state.generation.max(g);
            state.files.push((g, o.location));
        }
    }
    state.held =
        Some(Holder { holder: "a holder renewing right now".into(), expires_at: Utc::now() + chrono::Duration::minutes(1) });
    Ok(state)
}

/// What a listing of the lease folder says; `None` when the newest record vanished before it
/// was read.
async fn current_once(wh: &Location, job: &str, listed: Vec<object_store::ObjectMeta>) -> Result<Option<State>> {
    let mut files = Vec::new();
    for o in listed {
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
    {
        let Some(bytes) = wh.get_opt(&meta.location).await? else { return Ok(None) };
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
    Ok(Some(State { generation, held, files }))
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

/// The generation a job with none in its folder starts at: the store's time, agreed through
/// one create-if-absent (`first`), so that two takers of an empty folder compete for the same
/// generation (each with its own clock reading, both creates would succeed).
async fn first_generation(wh: &Location, job: &str) -> Result<u64> {
    let path = wh.child(&format!("{}/first", dir(job)));
    let now = store_now(wh, job).await?;
    let mine = (now.timestamp_millis() - GENERATION_EPOCH_MS).max(1) as u64;
    if wh.put_if_absent(&path, Bytes::from(mine.to_string())).await? {
        return Ok(mine);
    }
    let agreed = wh.get(&path).await?;
    std::str::from_utf8(&agreed)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .ok_or_else(|| Error::Failed(format!("lease object {path} is unreadable: delete it and run again")))
}

/// What a look at a job's lease folder found, for [`acquire_after`].
pub struct Look(State);

/// Looks at `job`'s lease folder (a listing): what [`acquire_after`] takes the lease from. A
/// caller that has other reads to make first makes them beside this one.
pub async fn look(wh: &Location, job: &str) -> Result<Look> {
    Ok(Look(current(wh, job).await?))
}

/// Takes `job`'s lease for `ttl`, or says who holds it.
pub async fn acquire(wh: &Location, job: &str, holder: &str, ttl: Duration) -> Result<std::result::Result<Lease, Holder>> {
    let looked = look(wh, job).await?;
    acquire_after(wh, job, holder, ttl, looked).await
}

/// [`acquire`] from an earlier [`look`]. The generation is created only if absent, so a look
/// that is out of date by then finds the lease held, never two holders.
pub async fn acquire_after(
    wh: &Location,
    job: &str,
    holder: &str,
    ttl: Duration,
    looked: Look,
) -> Result<std::result::Result<Lease, Holder>> {
    let state = looked.0;
    if let Some(h) = state.held {
        return Ok(Err(h));
    }
    let next = match state.generation {
        0 => first_generation(wh, job).await?,
        g => g + 1,
    };
    let asked = boot_ms();
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
    let deadline_ms = Arc::new(AtomicU64::new(asked + ttl.as_millis() as u64));
    let renewer =
        tokio::spawn(renew(wh.clone(), job.to_string(), next, holder.to_string(), ttl, lost.clone(), deadline_ms.clone()));
    Ok(Ok(Lease { wh: wh.clone(), job: job.to_string(), generation: next, lost, deadline_ms, renewer }))
}

async fn renew(
    wh: Location,
    job: String,
    generation: u64,
    holder: String,
    ttl: Duration,
    lost: Arc<AtomicBool>,
    // On [`boot_ms`], from before the write that set it: the store stamped that write later, so
    // every reader sees the lease expire after this.
    deadline_ms: Arc<AtomicU64>,
) {
    let ttl_ms = ttl.as_millis() as u64;
    let expired = |why: &str| {
        tracing::warn!(job, "{why}; this run's writes are refused from now on");
        lost.store(true, Ordering::SeqCst);
    };
    for n in 1u64.. {
        tokio::time::sleep(ttl / 3).await;
        let asked = boot_ms();
        if asked >= deadline_ms.load(Ordering::SeqCst) {
            return expired("the lease expired before it was renewed (the process was paused or the machine suspended?)");
        }
        let rec = Record::new(&holder, ttl);
        let Ok(body) = serde_json::to_vec(&rec) else { return };
        let path = wh.child(&format!("{}/{generation:012}.renew-{n:012}.json", dir(&job)));
        match wh.put_if_absent(&path, Bytes::from(body)).await {
            Ok(_) => {
                // A renewal that landed after the deadline may have landed after a reader
                // found the lease expired and took the next generation: this holder cannot
                // know it did not, so it stops writing.
                if boot_ms() >= deadline_ms.load(Ordering::SeqCst) {
                    return expired("the lease was renewed too late (a slow store answer); another run may hold it now");
                }
                deadline_ms.store(asked + ttl_ms, Ordering::SeqCst);
                // Readers take the newest record of a generation, which now exists: the one
                // before it says nothing more.
                if n > 1 {
                    let _ = wh.delete(&wh.child(&format!("{}/{generation:012}.renew-{:012}.json", dir(&job), n - 1))).await;
                }
            }
            Err(e) => tracing::warn!(job, "could not renew the lease: {e}"),
        }
    }
}

/// A lease dropped without [`Lease::release`] (a run that failed between taking it and giving
/// it back) stops renewing, so it expires after its ttl: a renewer left running would hold it
/// for as long as the process lives, and a daemon would wait for it forever.
impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl Lease {
    /// Whether the lease expired while held (the holder was paused longer than the ttl).
    pub fn lost(&self) -> bool {
        self.fence().lost()
    }

    /// The fence of this generation, for the run's writes ([`fenced`]).
    pub fn fence(&self) -> Fence {
        Fence::new(&self.job, self.generation, self.lost.clone(), self.deadline_ms.clone())
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

    /// A warehouse in a new temporary folder.
    fn local() -> (tempfile::TempDir, Location) {
        let dir = tempfile::tempdir().unwrap();
        let wh = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        (dir, wh)
    }

    #[tokio::test]
    async fn one_holder_at_a_time_release_and_expiry_free_it() {
        let (_dir, wh) = local();
        let ttl = Duration::from_millis(600);
        let a = acquire(&wh, "j", "a", ttl).await.unwrap().unwrap();
        let first = a.generation;
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
        assert_eq!(c.generation, first + 2);
        // Other jobs have their own leases.
        assert!(acquire(&wh, "other", "d", ttl).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_lease_dropped_without_release_stops_renewing_and_expires() {
        // A run that failed between taking its lease and giving it back (the store failing the
        // period marker, say): a daemon in the same process must get the lease after the ttl.
        let (_dir, wh) = local();
        let ttl = Duration::from_millis(600);
        let a = acquire(&wh, "j", "a", ttl).await.unwrap().unwrap();
        drop(a);
        assert!(acquire(&wh, "j", "b", ttl).await.unwrap().is_err(), "held until it expires");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(acquire(&wh, "j", "b", ttl).await.unwrap().is_ok(), "expired: the dropped lease was not renewed");
    }

    #[tokio::test]
    async fn the_lease_folder_stays_small_whatever_the_number_of_runs() {
        let (_dir, wh) = local();
        let ttl = Duration::from_secs(60);
        let mut first = 0;
        for i in 0..50 {
            let l = acquire(&wh, "j", &format!("run{i}"), ttl).await.unwrap().unwrap();
            if i == 0 {
                first = l.generation;
            }
            l.release().await.unwrap();
        }
        let files = wh
            .list(&dir_of("j"))
            .await
            .unwrap()
            .iter()
            .filter(|m| !matches!(m.location.filename(), Some("clock" | "first")))
            .count();
        assert!(files <= 4, "two generations of a taking record and a release marker at most: {files}");
        let taken = acquire(&wh, "j", "last", ttl).await.unwrap().unwrap();
        assert_eq!(taken.generation, first + 50, "generations keep counting after the old ones are deleted");
    }

    /// A holder whose clock runs an hour ahead (its record says it expires in an hour) or an
    /// hour behind (its record says it expired): readers go by the store's time, so the lease
    /// lasts its ttl from the record's write either way.
    #[tokio::test]
    async fn expiry_goes_by_the_stores_time_not_the_holders_clock() {
        let (_dir, wh) = local();
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

    /// The newest renewal vanishes between a reader's listing and its read (the holder wrote
    /// the next one and deleted it): the lease is held, never free.
    #[tokio::test]
    async fn a_renewal_that_vanishes_while_read_is_a_held_lease() {
        let (_dir, wh) = local();
        let ttl = Duration::from_secs(60);
        let a = acquire(&wh, "j", "a", ttl).await.unwrap().unwrap();
        a.renewer.abort();
        let d = dir_of("j");
        let g = a.generation;
        // A reader that listed a renewal the holder deleted: the next look finds the newer one.
        let gone = wh.child(&format!("{d}/{g:012}.renew-000000000001.json"));
        let rec = Bytes::from(serde_json::to_vec(&Record::new("a", ttl)).unwrap());
        wh.put(&gone, rec.clone()).await.unwrap();
        let listed = wh.list(&d).await.unwrap();
        wh.delete(&gone).await.unwrap();
        assert!(listed.iter().any(|m| m.location == gone));
        assert!(current_once(&wh, "j", listed).await.unwrap().is_none(), "the listed newest record vanished");
        // Read again, the lease is held (by the taking record here).
        let state = current(&wh, "j").await.unwrap();
        assert!(state.held.is_some(), "a lease whose newest record vanished is held");
        assert!(acquire(&wh, "j", "b", ttl).await.unwrap().is_err());
    }

    /// A job whose lease folder was deleted (by hand, or by a new warehouse copy) starts its
    /// generations above any it had: the store's time, not 1.
    #[tokio::test]
    async fn generations_restart_above_the_old_ones_when_the_folder_is_deleted() {
        let (dir, wh) = local();
        let ttl = Duration::from_secs(60);
        let a = acquire(&wh, "j", "a", ttl).await.unwrap().unwrap();
        let first = a.generation;
        a.release().await.unwrap();
        for _ in 0..5 {
            acquire(&wh, "j", "x", ttl).await.unwrap().unwrap().release().await.unwrap();
        }
        std::fs::remove_dir_all(dir.path().join(dir_of("j"))).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = acquire(&wh, "j", "b", ttl).await.unwrap().unwrap();
        assert!(b.generation > first + 5, "{} after {}", b.generation, first + 5);
        // Two takers of an empty folder agree on the first generation: only one holds it.
        let (x, y) = tokio::join!(acquire(&wh, "k", "x", ttl), acquire(&wh, "k", "y", ttl));
        let held = [x.unwrap().is_ok(), y.unwrap().is_ok()];
        assert_eq!(held.iter().filter(|h| **h).count(), 1, "{held:?}");
        // And takers that read the empty folder before either created: the same.
        std::fs::remove_dir_all(dir.path().join(dir_of("k"))).unwrap();
        let g1 = first_generation(&wh, "k").await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(first_generation(&wh, "k").await.unwrap(), g1);
    }

    /// The holder's deadline is checked by the fence itself: a process resumed after a pause
    /// longer than the ttl knows it lost the lease before its renewer runs.
    #[tokio::test]
    async fn the_fence_knows_the_deadline_passed_before_the_renewer_runs() {
        let (_dir, wh) = local();
        let a = acquire(&wh, "j", "a", Duration::from_millis(300)).await.unwrap().unwrap();
        a.renewer.abort();
        let fence = a.fence();
        assert!(!fence.lost());
        // Blocking the thread: no task (so no renewer) runs meanwhile, as in a SIGSTOP.
        std::thread::sleep(Duration::from_millis(350));
        assert!(fence.lost() && a.lost());
    }
}
