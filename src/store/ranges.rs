//! Byte ranges of data files kept for the query sessions of one process.
//!
//! One SQL query can scan the same table many times: `sql/tenant_state.sql` reads the day's
//! profile events once per profile field it joins back, and DataFusion runs a join's build side
//! before the next join starts, so on S3 each of those scans is another round trip of 20-100 ms
//! one after the other. The runner's data files never change once written (a new version is a
//! new folder, an ingest batch a new file), so a range read once is the range for the rest of
//! the process: this store answers it again from memory. Only ranged reads of `.parquet` files
//! outside `_runner/` are kept (state objects there are rewritten), each at most
//! [`MAX_ENTRY`], [`CAPACITY`] in all, the oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// A range larger than this is read through every time.
pub const MAX_ENTRY: u64 = 8 << 20;
/// The bytes kept in all.
pub const CAPACITY: u64 = 64 << 20;

type Key = (Path, u64, u64);

#[derive(Default)]
struct Entries {
    map: HashMap<Key, (Bytes, ObjectMeta)>,
    order: VecDeque<Key>,
    bytes: u64,
}

/// The ranges kept, shared by every session of a workspace.
#[derive(Clone, Default)]
pub struct RangeCache(Arc<Mutex<Entries>>);

impl RangeCache {
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
        while e.bytes + len > CAPACITY {
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

/// Only a plain ranged read can be answered from memory (no conditions, no version).
fn plain_range(o: &GetOptions) -> Option<Range<u64>> {
    let plain = !o.head
        && o.if_match.is_none()
        && o.if_none_match.is_none()
        && o.if_modified_since.is_none()
        && o.if_unmodified_since.is_none()
        && o.version.is_none();
    match (&o.range, plain) {
        (Some(GetRange::Bounded(r)), true) if r.end - r.start <= MAX_ENTRY => Some(r.clone()),
        _ => None,
    }
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
        let Some(range) = plain_range(&options).filter(|_| immutable(location)) else {
            return self.inner.get_opts(location, options).await;
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
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(data) }).boxed()),
            meta,
            range: range.start..end,
            attributes: Default::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if !immutable(location) {
            return self.inner.get_ranges(location, ranges).await;
        }
        let key = |r: &Range<u64>| (location.clone(), r.start, r.end);
        let missing: Vec<Range<u64>> = ranges.iter().filter(|r| self.cache.get(&key(r)).is_none()).cloned().collect();
        let mut fetched: HashMap<(u64, u64), Bytes> = HashMap::new();
        if !missing.is_empty() {
            let meta = ObjectMeta {
                location: location.clone(),
                last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                size: 0,
                e_tag: None,
                version: None,
            };
            for (r, b) in missing.iter().zip(self.inner.get_ranges(location, &missing).await?) {
                self.cache.put(key(r), b.clone(), meta.clone());
                fetched.insert((r.start, r.end), b);
            }
        }
        Ok(ranges
            .iter()
            .map(|r| fetched.get(&(r.start, r.end)).cloned().or_else(|| self.cache.get(&key(r)).map(|(b, _)| b)))
            .collect::<Option<Vec<Bytes>>>()
            .expect("every range was fetched or kept"))
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
            store.get_ranges(&state, &[0..1]).await.unwrap();
        }
        assert_eq!(counting.requests() - before, 3);
    }
}
