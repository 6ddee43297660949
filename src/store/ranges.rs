//! Data files kept for the query sessions of one process.
//!
//! One SQL query can scan the same table several times: DataFusion plans a CTE again for each
//! reference to it (`sql/tenant_state.sql` reads the day's tenant events twice and
//! `tenant_activity_daily` five times), and runs a join's build side before the next join
//! starts, so on S3 each of those scans is more round trips of 20-100 ms one after the other (a
//! footer, then the column chunks). The runner's data files never change
//! once written (a new version is a new folder, an ingest batch a new file), so a file read once
//! is that file for the rest of the process. Two ways in:
//! - a table scan hands the small files it is about to read to [`RangeCache::prefetch`], which
//!   fetches each whole, all at once (one round trip for the lot, and one GET a file where a
//!   footer and its column chunks took two or more);
//! - any other ranged read of a data file is kept as the range it was.
//!
//! Only `.parquet` files outside `_runner/` are kept (state objects there are rewritten): files
//! of at most [`MAX_FILE`], ranges of at most [`MAX_ENTRY`], [`CAPACITY`] in all, the oldest
//! dropped first.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// A range larger than this is read through every time.
pub const MAX_ENTRY: u64 = 8 << 20;
/// A file larger than this is not prefetched whole (its scan reads the columns it needs).
pub const MAX_FILE: u64 = 4 << 20;
/// Files fetched at once by one prefetch.
const PREFETCH_IN_FLIGHT: usize = 32;
/// The bytes kept in all.
pub const CAPACITY: u64 = 64 << 20;

/// A range of a file, or (`u64::MAX`, `u64::MAX`) the whole file.
type Key = (Path, u64, u64);

fn whole(p: &Path) -> Key {
    (p.clone(), u64::MAX, u64::MAX)
}

struct Entries {
    map: HashMap<Key, (Bytes, ObjectMeta)>,
    order: VecDeque<Key>,
    bytes: u64,
    /// The bytes kept at most ([`CAPACITY`]).
    capacity: u64,
}

/// The ranges kept, shared by every session of a workspace, and the whole-file fetches under
/// way (a scan planned beside another that prefetches the same file waits for that fetch).
#[derive(Clone)]
pub struct RangeCache(Arc<Mutex<Entries>>, Arc<Mutex<HashMap<Path, Arc<tokio::sync::OnceCell<()>>>>>);

impl Default for RangeCache {
    fn default() -> Self {
        RangeCache::with_capacity(CAPACITY)
    }
}

impl RangeCache {
    /// A cache that keeps at most `capacity` bytes.
    pub fn with_capacity(capacity: u64) -> Self {
        let entries = Entries { map: HashMap::new(), order: VecDeque::new(), bytes: 0, capacity };
        RangeCache(Arc::new(Mutex::new(entries)), Default::default())
    }

    fn get(&self, k: &Key) -> Option<(Bytes, ObjectMeta)> {
        self.0.lock().expect("range cache").map.get(k).cloned()
    }

    fn put(&self, k: Key, data: Bytes, meta: ObjectMeta) {
        let len = data.len() as u64;
        if len > MAX_ENTRY {
            return;
        }
        let mut e = self.0.lock().expect("range cache");
        if e.map.contains_key(&k) {
            return;
        }
        while e.bytes + len > e.capacity {
            let Some(old) = e.order.pop_front() else { break };
            if let Some((b, _)) = e.map.remove(&old) {
                e.bytes -= b.len() as u64;
            }
        }
        e.bytes += len;
        e.order.push_back(k.clone());
        e.map.insert(k, (data, meta));
    }

    /// `inner` with this cache in front of its data files' ranged reads.
    pub fn wrap(&self, inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(Cached { inner, cache: self.clone() })
    }

    /// Fetches the small data files among `files` (path and size) that are not kept yet, each
    /// whole and all at once, when together they fit in a quarter of the capacity (a scan of
    /// more than that reads what it needs as it goes). A failed fetch is left to the scan.
    pub async fn prefetch(&self, store: &Arc<dyn ObjectStore>, files: &[(Path, u64)]) {
        let wanted: Vec<(Path, u64)> = files
            .iter()
            .filter(|(p, size)| *size <= MAX_FILE && immutable(p) && self.get(&whole(p)).is_none())
            .cloned()
            .collect();
        let capacity = self.0.lock().expect("range cache").capacity;
        if wanted.is_empty() || wanted.iter().map(|(_, s)| *s).sum::<u64>() > capacity / 4 {
            return;
        }
        futures::stream::iter(wanted)
            .map(|(p, _)| {
                let store = store.clone();
                // One fetch of a file at a time: another prefetch of it waits for this one.
                let flight = self.1.lock().expect("range fetches").entry(p.clone()).or_default().clone();
                async move {
                    flight
                        .get_or_init(|| async {
                            let got = match store.get(&p).await {
                                Ok(r) => r.bytes().await,
                                Err(e) => Err(e),
                            };
                            if let Ok(data) = got {
                                let meta = ObjectMeta {
                                    location: p.clone(),
                                    last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                                    size: data.len() as u64,
                                    e_tag: None,
                                    version: None,
                                };
                                self.put(whole(&p), data, meta);
                            }
                        })
                        .await;
                    let mut flights = self.1.lock().expect("range fetches");
                    if flights.get(&p).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                        flights.remove(&p);
                    }
                }
            })
            .buffer_unordered(PREFETCH_IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
    }

    /// The bytes of `r` in a file kept whole.
    fn slice(&self, p: &Path, r: &GetRange) -> Option<(Bytes, ObjectMeta, Range<u64>)> {
        let (data, meta) = self.get(&whole(p))?;
        let len = data.len() as u64;
        let range = match r {
            GetRange::Bounded(r) => r.start.min(len)..r.end.min(len),
            GetRange::Offset(o) => (*o).min(len)..len,
            GetRange::Suffix(n) => len.saturating_sub(*n)..len,
        };
        Some((data.slice(range.start as usize..range.end as usize), meta, range))
    }
}

/// `data`, the bytes `range` of the object `meta`, as a [`GetResult`].
fn result(data: Bytes, meta: ObjectMeta, range: Range<u64>) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(data) }).boxed()),
        meta,
        range,
        attributes: Default::default(),
    }
}

impl fmt::Debug for RangeCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeCache").finish_non_exhaustive()
    }
}

/// Whether the object at `p` is a data file that is never rewritten.
fn immutable(p: &Path) -> bool {
    p.as_ref().ends_with(".parquet") && !p.parts().any(|part| part.as_ref() == "_runner")
}

#[derive(Debug)]
struct Cached {
    inner: Arc<dyn ObjectStore>,
    cache: RangeCache,
}

impl fmt::Display for Cached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cached({})", self.inner)
    }
}

/// Only a plain read can be answered from memory (no conditions, no version): its range, the
/// whole object when none.
fn plain_range(o: &GetOptions) -> Option<GetRange> {
    let plain = !o.head
        && o.if_match.is_none()
        && o.if_none_match.is_none()
        && o.if_modified_since.is_none()
        && o.if_unmodified_since.is_none()
        && o.version.is_none();
    plain.then(|| o.range.clone().unwrap_or(GetRange::Offset(0)))
}

#[async_trait::async_trait]
impl ObjectStore for Cached {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let Some(asked) = plain_range(&options).filter(|_| immutable(location)) else {
            return self.inner.get_opts(location, options).await;
        };
        if let Some((data, meta, range)) = self.cache.slice(location, &asked) {
            return Ok(result(data, meta, range));
        }
        let range = match asked {
            GetRange::Bounded(r) if r.end - r.start <= MAX_ENTRY => r,
            _ => return self.inner.get_opts(location, options).await,
        };
        let key = (location.clone(), range.start, range.end);
        let (data, meta) = match self.cache.get(&key) {
            Some(hit) => hit,
            None => {
                let r = self.inner.get_opts(location, options).await?;
                let meta = r.meta.clone();
                let data = r.bytes().await?;
                self.cache.put(key, data.clone(), meta.clone());
                (data, meta)
            }
        };
        let end = range.start + data.len() as u64;
        Ok(result(data, meta, range.start..end))
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if !immutable(location) {
            return self.inner.get_ranges(location, ranges).await;
        }
        if self.cache.get(&whole(location)).is_some() {
            let kept: Option<Vec<Bytes>> =
                ranges.iter().map(|r| self.cache.slice(location, &GetRange::Bounded(r.clone())).map(|(b, _, _)| b)).collect();
            if let Some(kept) = kept {
                return Ok(kept);
            }
        }
        let key = |r: &Range<u64>| (location.clone(), r.start, r.end);
        // The kept ranges taken now: keeping the fetched ones below may drop them.
        let mut out: Vec<Option<Bytes>> = ranges.iter().map(|r| self.cache.get(&key(r)).map(|(b, _)| b)).collect();
        let missing: Vec<Range<u64>> =
            ranges.iter().zip(&out).filter(|(_, kept)| kept.is_none()).map(|(r, _)| r.clone()).collect();
        if !missing.is_empty() {
            let meta = ObjectMeta {
                location: location.clone(),
                last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                size: 0,
                e_tag: None,
                version: None,
            };
            let mut fetched = missing.iter().zip(self.inner.get_ranges(location, &missing).await?);
            for slot in out.iter_mut().filter(|o| o.is_none()) {
                let (r, b) = fetched.next().expect("one answer per range asked");
                self.cache.put(key(r), b.clone(), meta.clone());
                *slot = Some(b);
            }
        }
        Ok(out.into_iter().map(|b| b.expect("every range fetched or kept")).collect())
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn a_data_file_range_is_read_once_and_state_objects_every_time() {
        let counting = Arc::new(crate::store::counting::Counting::new(Arc::new(InMemory::new())));
        let cache = RangeCache::default();
        let store = cache.wrap(counting.clone());
        let data = Path::from("t/dt=2026-01-01/v=1/part-00000.parquet");
        let state = Path::from("_runner/catalog/t/x.parquet");
        for p in [&data, &state] {
            store.put(p, PutPayload::from_static(b"0123456789")).await.unwrap();
        }
        let before = counting.requests();
        for _ in 0..3 {
            assert_eq!(store.get_range(&data, 2..5).await.unwrap(), Bytes::from_static(b"234"));
            assert_eq!(
                store.get_ranges(&data, &[0..1, 8..10]).await.unwrap(),
                vec![Bytes::from_static(b"0"), Bytes::from_static(b"89")]
            );
        }
        // One GET for the single range, one for the two ranges (coalesced, as S3's client does).
        assert_eq!(counting.requests() - before, 2);
        let before = counting.requests();
        for _ in 0..3 {
            store.get_ranges(&state, &[0..1, 2..3]).await.unwrap();
        }
        assert_eq!(counting.requests() - before, 3);
    }

    #[tokio::test]
    async fn a_prefetched_file_answers_every_read_of_it() {
        let counting = Arc::new(crate::store::counting::Counting::new(Arc::new(InMemory::new())));
        let inner: Arc<dyn ObjectStore> = counting.clone();
        let cache = RangeCache::default();
        let store = cache.wrap(inner.clone());
        let a = Path::from("t/dt=2026-01-01/v=1/part-00000.parquet");
        let b = Path::from("t/dt=2026-01-02/v=1/part-00000.parquet");
        for p in [&a, &b] {
            store.put(p, PutPayload::from_static(b"0123456789")).await.unwrap();
        }
        let before = counting.requests();
        cache.prefetch(&inner, &[(a.clone(), 10), (b.clone(), 10)]).await;
        assert_eq!(counting.requests() - before, 2, "one GET a file");
        cache.prefetch(&inner, &[(a.clone(), 10)]).await;
        assert_eq!(counting.requests() - before, 2, "kept files are not fetched again");
        assert_eq!(store.get_range(&a, 2..5).await.unwrap(), Bytes::from_static(b"234"));
        assert_eq!(store.get(&b).await.unwrap().bytes().await.unwrap(), Bytes::from_static(b"0123456789"));
        let suffix = GetOptions { range: Some(GetRange::Suffix(3)), ..Default::default() };
        let r = store.get_opts(&a, suffix).await.unwrap();
        assert_eq!(r.range, 7..10);
        assert_eq!(r.bytes().await.unwrap(), Bytes::from_static(b"789"));
        assert_eq!(store.get_ranges(&b, &[0..1, 9..10]).await.unwrap(), vec![Bytes::from_static(b"0"), Bytes::from_static(b"9")]);
        assert_eq!(counting.requests() - before, 2, "every read answered from memory");
    }

    /// A read of many ranges whose fetched ones push its kept ones out of a full cache still
    /// answers every range (it panicked: "every range was fetched or kept").
    #[tokio::test]
    async fn ranges_kept_then_dropped_by_the_same_read_are_still_answered() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cache = RangeCache::with_capacity(10);
        let store = cache.wrap(inner.clone());
        let data = Path::from("t/dt=2026-01-01/v=1/part-00000.parquet");
        store.put(&data, PutPayload::from_static(b"0123456789abcdefghij")).await.unwrap();
        assert_eq!(store.get_range(&data, 0..4).await.unwrap(), Bytes::from_static(b"0123"));
        // 0..4 is kept; the two new ranges (8 bytes) drop it from a 10-byte cache.
        let got = store.get_ranges(&data, &[0..4, 10..14, 14..18]).await.unwrap();
        assert_eq!(got, vec![Bytes::from_static(b"0123"), Bytes::from_static(b"abcd"), Bytes::from_static(b"efgh")]);
    }

    /// Two scans planned at once prefetch the same file: it is fetched once, the second waits.
    #[tokio::test]
    async fn prefetches_of_one_file_at_once_fetch_it_once() {
        let delayed =
            crate::store::counting::Counting::new(Arc::new(InMemory::new())).with_delay(std::time::Duration::from_millis(20));
        let counting = Arc::new(delayed);
        let inner: Arc<dyn ObjectStore> = counting.clone();
        let cache = RangeCache::default();
        let a = Path::from("t/dt=2026-01-01/v=1/part-00000.parquet");
        inner.put(&a, PutPayload::from_static(b"0123456789")).await.unwrap();
        let before = counting.requests();
        let files = [(a.clone(), 10)];
        futures::join!(cache.prefetch(&inner, &files), cache.prefetch(&inner, &files), cache.prefetch(&inner, &files));
        assert_eq!(counting.requests() - before, 1, "one GET for three prefetches at once");
        assert_eq!(cache.wrap(inner.clone()).get_range(&a, 0..3).await.unwrap(), Bytes::from_static(b"012"));
        assert_eq!(counting.requests() - before, 1);
    }
}
