//! Faults injected into every store the runner opens (`RUNNER_FAULTS`), for the tests of the
//! commit protocol: what real S3 and a real network add to a clean run.
//!
//! `RUNNER_FAULTS=seed=7,ambiguous_create=0.3,error_after=0.01,error_before=0.01`, each a
//! probability per request:
//!
//! - `ambiguous_create`: a create-if-absent takes effect, then answers "already exists", as when
//!   object_store retried a 5xx whose first attempt S3 had applied (the retry gets 412);
//! - `error_after`: a write (put, copy, rename) takes effect, then fails: a connection reset
//!   after S3 applied the request;
//! - `error_before`: a request (read, list, write) fails without effect: a 503 SlowDown that
//!   outlasted the client's retries.
//! - `slow=P`: a read or write answers only after `slow_ms` (default 200) more: a slow answer,
//!   which is where a paused or timed-out client meets a store that already acted;
//! - `outage=A..B`: the requests numbered A to B-1 (counted from 0 over every store of the
//!   process, whatever their kind) fail without effect: a short outage at a known point, the same whatever the order in
//!   which concurrent requests reach the store.
//!
//! Draws are a hash of the seed and the request's number in the process: the same seed and the
//! same order of requests fail the same way.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    pub seed: u64,
    pub ambiguous_create: f64,
    pub error_after: f64,
    pub error_before: f64,
    pub outage: Option<Range<u64>>,
    pub slow: f64,
    pub slow_ms: u64,
}

/// The faults `RUNNER_FAULTS` asks for, `None` when unset or empty.
pub fn configured() -> Option<Rates> {
    let spec = std::env::var("RUNNER_FAULTS").ok().filter(|s| !s.trim().is_empty())?;
    let mut r = Rates::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let p = || {
            let p = v.parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p));
            if p.is_none() {
                tracing::warn!("RUNNER_FAULTS: `{part}` is not a probability between 0 and 1; that fault is off");
            }
            p
        };
        match k {
            "seed" => r.seed = v.parse().unwrap_or(0),
            "ambiguous_create" => r.ambiguous_create = p().unwrap_or(0.0),
            "error_after" => r.error_after = p().unwrap_or(0.0),
            "error_before" => r.error_before = p().unwrap_or(0.0),
            "slow" => r.slow = p().unwrap_or(0.0),
            "slow_ms" => r.slow_ms = v.parse().unwrap_or(200),
            "outage" => match v.split_once("..").and_then(|(a, b)| Some(a.parse::<u64>().ok()?..b.parse::<u64>().ok()?)) {
                Some(range) => r.outage = Some(range),
                None => tracing::warn!(
                    "RUNNER_FAULTS: `{part}` is not a range of request numbers like outage=40..45; that fault is off"
                ),
            },
            _ => tracing::warn!("RUNNER_FAULTS: unknown fault `{k}` ignored"),
        }
    }
    Some(r)
}

#[derive(Debug)]
pub struct Faults {
    inner: Arc<dyn ObjectStore>,
    rates: Rates,
    n: AtomicU64,
}

/// Every request to a faulty store of this process so far (for `outage`).
static REQUESTS: AtomicU64 = AtomicU64::new(0);

fn injected(what: &str, path: &str) -> object_store::Error {
    object_store::Error::Generic { store: "faults", source: format!("injected fault: {what} ({path})").into() }
}

impl Faults {
    pub fn new(inner: Arc<dyn ObjectStore>, rates: Rates) -> Faults {
        Faults { inner, rates, n: AtomicU64::new(0) }
    }

    /// Whether this request draws a fault of probability `p`.
    fn draw(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let h = xxhash_rust::xxh3::xxh3_64(&[self.rates.seed.to_le_bytes(), n.to_le_bytes()].concat());
        (h as f64 / u64::MAX as f64) < p
    }

    fn before(&self, path: &Path) -> Result<()> {
        let k = REQUESTS.fetch_add(1, Ordering::Relaxed);
        if self.rates.outage.as_ref().is_some_and(|o| o.contains(&k)) {
            return Err(injected("failed before taking effect, in an outage", path.as_ref()));
        }
        match self.draw(self.rates.error_before) {
            true => Err(injected("failed before taking effect", path.as_ref())),
            false => Ok(()),
        }
    }

    /// A slow answer, drawn with probability `slow`.
    async fn slow(&self) {
        if self.draw(self.rates.slow) {
            let ms = if self.rates.slow_ms == 0 { 200 } else { self.rates.slow_ms };
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    fn after<T>(&self, path: &Path, r: Result<T>) -> Result<T> {
        match r {
            Ok(_) if self.draw(self.rates.error_after) => Err(injected("failed after taking effect", path.as_ref())),
            r => r,
        }
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faults {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.before(location)?;
        self.slow().await;
        let create = matches!(opts.mode, PutMode::Create);
        let r = self.inner.put_opts(location, payload, opts).await;
        if create && r.is_ok() && self.draw(self.rates.ambiguous_create) {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "injected fault: the retry of an applied create got 412".into(),
            });
        }
        self.after(location, r)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.before(location)?;
        self.slow().await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.before(location)?;
        self.slow().await;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.before(location)?;
        self.slow().await;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let root = Path::default();
        match self.before(prefix.unwrap_or(&root)) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        let root = Path::default();
        match self.before(prefix.unwrap_or(&root)) {
            Ok(()) => self.inner.list_with_offset(prefix, offset),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before(prefix.unwrap_or(&Path::default()))?;
        self.slow().await;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before(to)?;
        self.slow().await;
        let r = self.inner.copy_opts(from, to, options).await;
        self.after(to, r)
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.before(to)?;
        self.slow().await;
        let r = self.inner.rename_opts(from, to, options).await;
        self.after(to, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ambiguous_create_took_effect_and_the_store_reads_it_back_as_ours() {
        let rates = Rates { ambiguous_create: 1.0, ..Default::default() };
        let store: Arc<dyn ObjectStore> = Arc::new(Faults::new(Arc::new(object_store::memory::InMemory::new()), rates));
        let loc = crate::store::Location::from_store(store.clone(), "memory:///");
        let p = loc.child("commit/1.json");
        // The store says "already exists" about our own write; the runner reads it back.
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        assert!(matches!(store.put_opts(&p, "a".into(), opts).await, Err(object_store::Error::AlreadyExists { .. })));
        assert!(loc.put_if_absent(&p, Bytes::from_static(b"a")).await.unwrap(), "the same body: ours");
        let q = loc.child("commit/2.json");
        assert!(loc.put_if_absent(&q, Bytes::from_static(b"mine")).await.unwrap(), "applied, then 412: ours");
        assert!(!loc.put_if_absent(&q, Bytes::from_static(b"theirs")).await.unwrap(), "another body: a real conflict");
        assert_eq!(loc.get(&q).await.unwrap(), Bytes::from_static(b"mine"));
    }

    #[test]
    fn draws_are_deterministic_per_seed() {
        let f = |seed| {
            let s = Faults::new(
                Arc::new(object_store::memory::InMemory::new()),
                Rates { seed, error_before: 0.5, ..Default::default() },
            );
            (0..64).map(|_| s.draw(0.5)).collect::<Vec<_>>()
        };
        assert_eq!(f(1), f(1));
        assert_ne!(f(1), f(2));
    }
}
