//! Lease fencing: the job lease generation a run holds, carried (a task-local) into every
//! catalog update it makes, so a holder paused past its lease cannot publish over a newer
//! holder's work. Leases themselves are `pipeline::lease`; the check is the catalog's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A lease generation, carried by a run into the writes it makes (see the module header).
#[derive(Debug, Clone)]
pub struct Fence {
    pub job: String,
    pub generation: u64,
    lost: Arc<AtomicBool>,
}

impl Fence {
    /// The fence of `job`'s lease `generation`; `lost` turns true when the holder finds its
    /// lease expired.
    pub fn new(job: &str, generation: u64, lost: Arc<AtomicBool>) -> Fence {
        Fence { job: job.to_string(), generation, lost }
    }

    #[cfg(test)]
    pub fn for_test(job: &str, generation: u64, lost: bool) -> Fence {
        Fence::new(job, generation, Arc::new(AtomicBool::new(lost)))
    }

    /// Whether the holder found its lease expired (paused longer than the ttl).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
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
