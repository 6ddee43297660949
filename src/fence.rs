//! Lease fencing: the job lease generation a run holds, carried (a task-local) into every
//! catalog update it makes, so a holder paused past its lease cannot publish over a newer
//! holder's work. Leases themselves are `pipeline::lease`; the check is the catalog's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Milliseconds on a clock that keeps counting while the machine is suspended
/// (`CLOCK_BOOTTIME`; the monotonic clock `Instant` reads stops during a suspend, so a laptop
/// that slept past its lease would still believe it held it) and never jumps with the wall
/// clock.
pub fn boot_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_BOOTTIME exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME)");
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A lease generation, carried by a run into the writes it makes (see the module header).
#[derive(Debug, Clone)]
pub struct Fence {
    pub job: String,
    pub generation: u64,
    lost: Arc<AtomicBool>,
    /// [`boot_ms`] at which the holder must consider the lease expired (moved on by each
    /// renewal). Checked by the writer itself: after a pause the renewer may not have run yet.
    deadline_ms: Arc<AtomicU64>,
}

impl Fence {
    /// The fence of `job`'s lease `generation`; `lost` turns true when the holder finds its
    /// lease expired or taken, `deadline_ms` is when it expires on [`boot_ms`].
    pub fn new(job: &str, generation: u64, lost: Arc<AtomicBool>, deadline_ms: Arc<AtomicU64>) -> Fence {
        Fence { job: job.to_string(), generation, lost, deadline_ms }
    }

    #[cfg(test)]
    pub fn for_test(job: &str, generation: u64, lost: bool) -> Fence {
        Fence::new(job, generation, Arc::new(AtomicBool::new(lost)), Arc::new(AtomicU64::new(u64::MAX)))
    }

    /// Whether the holder lost its lease: found so by the renewer, or past its deadline now
    /// (paused or suspended longer than the ttl).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst) || boot_ms() >= self.deadline_ms.load(Ordering::SeqCst)
    }
}

tokio::task_local! {
    static FENCE: Fence;
}

/// The fence of the run this task works for, if it runs under a lease.
pub fn fence() -> Option<Fence> {
    FENCE.try_with(Fence::clone).ok()
}

/// Runs `f` with `fence` as the fence of its writes.
pub async fn fenced<F: std::future::Future>(fence: Option<Fence>, f: F) -> F::Output {
    match fence {
        Some(x) => FENCE.scope(x, f).await,
        None => f.await,
    }
}
