//! Object-store requests counted by kind, for benchmarks (`RUNNER_COUNT_REQUESTS=1`): every
//! store the runner opens is wrapped, and `main` prints the totals on stderr at exit as one JSON
//! line, `{"requests":{"get":..,"head":..,"list":..,"list_pages":..,"put":..,"delete":..,"copy":..}}`.
//! A listing counts one page per 1,000 objects it returned (S3's page size), at least one.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, RenameOptions, Result,
};

#[derive(Debug, Default)]
struct Counts {
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    list_pages: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
    copy: AtomicU64,
}

static COUNTS: Counts = Counts {
    get: AtomicU64::new(0),
    head: AtomicU64::new(0),
    list: AtomicU64::new(0),
    list_pages: AtomicU64::new(0),
    put: AtomicU64::new(0),
    delete: AtomicU64::new(0),
    copy: AtomicU64::new(0),
};

/// Whether this process counts its requests.
/// Each request as a log line (`RUST_LOG=requests=debug`): where a run's requests go.
fn log_request(kind: &str, path: &str) {
    tracing::debug!(target: "requests", "{kind} {path}");
}

pub fn enabled() -> bool {
    std::env::var("RUNNER_COUNT_REQUESTS").is_ok_and(|v| v == "1")
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The totals as the JSON line `main` prints.
pub fn report() -> String {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let c = &COUNTS;
    serde_json::json!({ "requests": {
        "get": g(&c.get), "head": g(&c.head), "list": g(&c.list), "list_pages": g(&c.list_pages),
        "put": g(&c.put), "delete": g(&c.delete), "copy": g(&c.copy),
    }})
    .to_string()
}

/// A store that counts the requests it forwards: into the process totals [`report`] prints,
/// and into its own total ([`Counting::requests`], for tests that compare two workloads).
#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn ObjectStore>,
    own: Arc<AtomicU64>,
    /// Added before every request (`RUNNER_DELAY_REQUESTS_MS`): S3's first-byte latency on a
    /// store that has none (moto on loopback), for benchmarks of how well requests overlap.
    delay: Option<std::time::Duration>,
}

impl Counting {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Counting {
        let delay = std::env::var("RUNNER_DELAY_REQUESTS_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis);
        Counting { inner, own: Arc::default(), delay }
    }

    /// The same store with `d` added before every request (for tests of requests in flight).
    pub fn with_delay(mut self, d: std::time::Duration) -> Counting {
        self.delay = Some(d);
        self
    }

    async fn wait_for(&self, kind: &str, path: &Path) {
        log_request(kind, path.as_ref());
        self.wait().await;
    }

    async fn wait(&self) {
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
    }

    /// A listing that starts after the delay.
    fn delayed(&self, s: BoxStream<'static, Result<ObjectMeta>>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.delay {
            None => s,
            Some(d) => futures::stream::once(async move {
                tokio::time::sleep(d).await;
                s
            })
            .flatten()
            .boxed(),
        }
    }

    /// Requests sent through this store so far (every kind, listing pages counted once each).
    pub fn requests(&self) -> u64 {
        self.own.load(Ordering::Relaxed)
    }

    fn add(&self, c: &AtomicU64, n: u64) {
        add(c, n);
        add(&self.own, n);
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

/// Counts a listing's pages as its objects arrive.
fn counted(s: BoxStream<'static, Result<ObjectMeta>>, own: Arc<AtomicU64>) -> BoxStream<'static, Result<ObjectMeta>> {
    add(&COUNTS.list, 1);
    add(&COUNTS.list_pages, 1);
    add(&own, 1);
    let mut seen = 0u64;
    s.inspect(move |_| {
        seen += 1;
        if seen > 1 && (seen - 1).is_multiple_of(1000) {
            add(&COUNTS.list_pages, 1);
            add(&own, 1);
        }
    })
    .boxed()
}

/// The GETs an S3 client sends for `ranges` of one object: object_store's S3 store (the
/// trait's default `get_ranges`) merges ranges less than 1 MiB apart
/// (`OBJECT_STORE_COALESCE_DEFAULT`) and sends one ranged GET per merged range, so the column
/// chunks of a small Parquet file cost one request, not one each.
pub fn coalesced(ranges: &[Range<u64>]) -> u64 {
    let mut sorted: Vec<&Range<u64>> = ranges.iter().collect();
    sorted.sort_unstable_by_key(|r| r.start);
    let mut requests = 0;
    let mut end: Option<u64> = None;
    for r in sorted {
        match end {
            Some(e) if r.start.saturating_sub(e) <= object_store::OBJECT_STORE_COALESCE_DEFAULT => end = Some(e.max(r.end)),
            _ => {
                requests += 1;
                end = Some(r.end);
            }
        }
    }
    requests
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.wait_for("put", location).await;
        self.add(&COUNTS.put, 1);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.wait().await;
        self.add(&COUNTS.put, 1);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.wait_for(if options.head { "head" } else { "get" }, location).await;
        self.add(if options.head { &COUNTS.head } else { &COUNTS.get }, 1);
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.wait_for("get_ranges", location).await;
        self.add(&COUNTS.get, coalesced(ranges));
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        // S3 deletes up to 1,000 keys a request (`DeleteObjects`); other stores one at a time.
        let per_request = if self.inner.to_string().starts_with("AmazonS3") { 1000 } else { 1 };
        let mut seen = 0u64;
        let own = self.own.clone();
        self.inner.delete_stream(
            locations
                .inspect(move |_| {
                    if seen.is_multiple_of(per_request) {
                        add(&COUNTS.delete, 1);
                        add(&own, 1);
                    }
                    seen += 1;
                })
                .boxed(),
        )
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        log_request("list", prefix.map(|p| p.as_ref()).unwrap_or(""));
        self.delayed(counted(self.inner.list(prefix), self.own.clone()))
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        log_request("list", prefix.map(|p| p.as_ref()).unwrap_or(""));
        self.delayed(counted(self.inner.list_with_offset(prefix, offset), self.own.clone()))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        log_request("list/", prefix.map(|p| p.as_ref()).unwrap_or(""));
        self.wait().await;
        self.add(&COUNTS.list, 1);
        self.add(&COUNTS.list_pages, 1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.wait().await;
        self.add(&COUNTS.copy, 1);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.wait().await;
        self.add(&COUNTS.copy, 1);
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::coalesced;

    #[test]
    fn ranges_count_as_the_gets_s3_sends() {
        assert_eq!(coalesced(&[]), 0);
        // A small Parquet file's column chunks: one request.
        assert_eq!(coalesced(&[0..10, 10..200, 400..900, 5_000..6_000]), 1);
        // Out of order, overlapping: still one.
        assert_eq!(coalesced(&[500..700, 0..600]), 1);
        // More than 1 MiB apart: two.
        assert_eq!(coalesced(&[0..10, 10 + 1024 * 1024 + 1..(2 << 20)]), 2);
        assert_eq!(coalesced(&[0..10, 10 + 1024 * 1024..(2 << 20)]), 1);
    }
}
