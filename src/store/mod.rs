//! Object storage: every byte the runner reads or writes goes through `object_store`.
//!
//! A [`Location`] is a store plus a root path inside it, made from a URL (`file:///...` for the
//! embedded default, `s3://bucket/prefix/` in the cloud). Nothing above this module knows which
//! one it has; that is what lets the same pipeline run on a laptop and on S3. [`encode`] turns
//! Arrow batches into the Parquet bytes every writer puts here.

pub mod counting;
pub mod encode;
pub mod faults;
pub mod ranges;

pub use encode::{encode_parquet, writer_properties};

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::error::{Error, Result};

/// A folder in an object store.
#[derive(Clone, Debug)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    /// The URL of the store's root (`file:///`, `s3://bucket/`): DataFusion registers stores by it.
    pub store_url: Url,
    /// The folder, relative to the store root.
    pub root: Path,
    /// The folder's full URL, ending in `/`.
    pub url: String,
    /// The local disk itself when `store` is one, unwrapped (no injected faults, no request
    /// counting): see [`Location::local_file`].
    pub(crate) direct: Option<Arc<object_store::local::LocalFileSystem>>,
}

impl Location {
    /// A location on a store already opened (tests wrap stores), rooted at `url`'s path.
    #[cfg(test)]
    pub(crate) fn from_store(store: Arc<dyn ObjectStore>, url: &str) -> Location {
        let parsed = Url::parse(url).expect("a valid URL");
        let root = Path::parse(parsed.path().trim_matches('/')).unwrap_or_default();
        let store_url = Url::parse(&format!("{}://{}/", parsed.scheme(), parsed.host_str().unwrap_or(""))).expect("a valid URL");
        let url = if url.ends_with('/') { url.to_string() } else { format!("{url}/") };
        Location { store, store_url, root, url, direct: None }
    }

    pub fn parse(url: &str) -> Result<Location> {
        let parsed = Url::parse(url).map_err(|e| Error::Usage(format!("`{url}` is not a valid URL: {e}")))?;
        let mut direct = None;
        let (store, root): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "file" => {
                // LocalFileSystem rooted at `/`, so paths are absolute and DataFusion can share it.
                let fs = Arc::new(object_store::local::LocalFileSystem::new());
                let path = parsed.to_file_path().map_err(|_| Error::Usage(format!("`{url}` is not a local path")))?;
                let root =
                    Path::from_absolute_path(&path).map_err(|e| Error::Usage(format!("`{url}` is not a usable path: {e}")))?;
                direct = Some(fs.clone());
                (fs, root)
            }
            "s3" | "s3a" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| Error::Usage(format!("`{url}` names no bucket: write s3://<bucket>/<prefix>/")))?;
                let root = Path::parse(parsed.path().trim_matches('/'))
                    .map_err(|e| Error::Usage(format!("`{url}` is not a usable S3 prefix: {e}")))?;
                (Arc::new(crate::aws::s3_store(bucket)?), root)
            }
            _ => {
                let (store, root) =
                    object_store::parse_url_opts(&parsed, std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v)))
                        .map_err(Error::store(format!("opening {url}")))?;
                (Arc::from(store), root)
            }
        };
        let (faults, counted) = (faults::configured(), counting::enabled());
        if faults.is_some() || counted {
            direct = None;
        }
        let store: Arc<dyn ObjectStore> = match faults {
            Some(rates) => Arc::new(faults::Faults::new(store, rates)),
            None => store,
        };
        let store: Arc<dyn ObjectStore> = if counted { Arc::new(counting::Counting::new(store)) } else { store };
        let store_url = Url::parse(&format!("{}://{}/", parsed.scheme(), parsed.host_str().unwrap_or("")))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut url = url.to_string();
        if !url.ends_with('/') {
            url.push('/');
        }
        Ok(Location { store, store_url, root, url, direct })
    }

    /// A sub-folder.
    pub fn join(&self, rel: &str) -> Location {
        let mut url = format!("{}{}", self.url, rel.trim_matches('/'));
        url.push('/');
        Location {
            store: self.store.clone(),
            store_url: self.store_url.clone(),
            root: self.child(rel),
            url,
            direct: self.direct.clone(),
        }
    }

    /// The file behind `p` when this location is a plain local disk, for a caller that reads it
    /// in a blocking thread it is in anyway: the ingest reads a drop in the thread that parses
    /// it, where a `get` takes two hops through the blocking pool (open, then read), whose lock
    /// several thousand small drops contend for. `None` on any other store, and where faults are
    /// injected or requests counted (those must see every read).
    pub fn local_file(&self, p: &Path) -> Option<std::path::PathBuf> {
        self.direct.as_ref()?.path_to_filesystem(p).ok()
    }

    /// Reads a file [`Location::local_file`] named, as a `get` of `p` reads it: the size it has
    /// when opened and no more (a file still growing, or a link to a file whose size says 0 such
    /// as one under `/proc`, is not read past it), failing as the `get` would.
    pub fn read_local_file(p: &Path, file: &std::path::Path) -> Result<Bytes> {
        use std::io::Read;
        let read = || -> std::io::Result<Vec<u8>> {
            let f = std::fs::File::open(file)?;
            let len = f.metadata()?.len();
            let mut buf = Vec::with_capacity(len as usize);
            f.take(len).read_to_end(&mut buf)?;
            Ok(buf)
        };
        read().map(Bytes::from).map_err(|e| {
            let source = match e.kind() {
                std::io::ErrorKind::NotFound => object_store::Error::NotFound { path: p.to_string(), source: e.into() },
                _ => object_store::Error::Generic { store: "LocalFileSystem", source: e.into() },
            };
            Error::Store { what: format!("reading {p}"), source }
        })
    }

    /// The store path of `rel` under this folder. Segments are taken as they are (ours are
    /// already escaped, and listed keys are already store paths): `Path::join` would encode a
    /// `%` again. Only a segment the store cannot hold as it is gets encoded.
    pub fn child(&self, rel: &str) -> Path {
        let rel = rel.trim_matches('/');
        let joined = if self.root.as_ref().is_empty() { rel.to_string() } else { format!("{}/{rel}", self.root.as_ref()) };
        Path::parse(&joined)
            .unwrap_or_else(|_| rel.split('/').filter(|s| !s.is_empty()).fold(self.root.clone(), |p, seg| p.join(seg)))
    }

    /// Path of an object relative to this folder (`None` when it is outside).
    pub fn relative<'a>(&self, p: &'a Path) -> Option<&'a str> {
        let root = self.root.as_ref();
        let s = p.as_ref();
        if root.is_empty() {
            return Some(s);
        }
        s.strip_prefix(root).and_then(|r| r.strip_prefix('/'))
    }

    /// A URL under this folder, as a path relative to it.
    pub fn relative_url(&self, url: &str) -> Result<String> {
        url.strip_prefix(&self.url)
            .map(|r| r.trim_end_matches('/').to_string())
            .ok_or_else(|| Error::Internal(format!("{url} is not under {}", self.url)))
    }

    /// Every object below this folder (recursive). A folder that does not exist is empty.
    pub async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.child(rel);
        Self::collect(self.store.list(Some(&prefix)), || format!("listing {}{}", self.url, rel)).await
    }

    /// The objects directly in the folder `rel`, not below its sub-folders (one delimited
    /// listing). A folder that does not exist is empty.
    pub async fn list_shallow(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        match self.store.list_with_delimiter(Some(&self.child(rel))).await {
            Ok(r) => Ok(r.objects),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(Error::Store { what: format!("listing {}{rel}", self.url), source: e }),
        }
    }

    /// A listing's objects; a folder that does not exist is empty.
    async fn collect(
        listing: futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>>,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<ObjectMeta>> {
        match listing.try_collect().await {
            Ok(v) => Ok(v),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(Error::Store { what: what(), source: e }),
        }
    }

    /// Every object below this folder whose path sorts after `offset` (relative to the folder):
    /// one paginated listing that starts there (S3 `start-after`), not a walk of the whole prefix.
    pub async fn list_after(&self, offset: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.child("");
        let offset = self.child(offset);
        if self.store_url.scheme() == "file" {
            // A local "listing with offset" walks the whole tree and filters: a source folder
            // with years of hour folders would cost a walk of all of them every run.
            let mut out = Vec::new();
            self.walk_after(prefix, &offset, &mut out).await?;
            out.sort_by(|a, b| a.location.cmp(&b.location));
            return Ok(out);
        }
        Self::collect(self.store.list_with_offset(Some(&prefix), &offset), || format!("listing {} from {offset}", self.url)).await
    }

    /// [`Self::list_after`] on a local disk: descends only into the folders that can hold a
    /// path after `offset` (the ones on its way, and those that sort after it).
    async fn walk_after(&self, folder: Path, offset: &Path, out: &mut Vec<ObjectMeta>) -> Result<()> {
        let listed = match self.store.list_with_delimiter(Some(&folder)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(Error::Store { what: format!("listing {folder} after {offset}"), source: e }),
        };
        out.extend(listed.objects.into_iter().filter(|m| m.location.as_ref() > offset.as_ref()));
        for sub in listed.common_prefixes {
            // Everything in `sub` is `sub/...`: all after the offset, all before it, or the
            // offset is inside.
            let inside = format!("{}/", sub.as_ref());
            if offset.as_ref().starts_with(&inside) {
                Box::pin(self.walk_after(sub, offset, out)).await?;
            } else if inside.as_str() > offset.as_ref() {
                out.extend(Self::collect(self.store.list(Some(&sub)), || format!("listing {sub}")).await?);
            }
        }
        Ok(())
    }

    /// Every object below the folder `rel` whose name sorts after `rel/<after>`: one listing that
    /// starts there (S3 `start-after`), so a folder of numbered records is read from a point on.
    pub async fn list_from(&self, rel: &str, after: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.child(rel);
        let offset = self.child(&format!("{}/{after}", rel.trim_end_matches('/')));
        Self::collect(self.store.list_with_offset(Some(&prefix), &offset), || format!("listing {}{rel} after {after}", self.url))
            .await
    }

    /// Whether anything exists below the folder `rel` (one listing page at most).
    pub async fn any_under(&self, rel: &str) -> Result<bool> {
        use futures::StreamExt;
        match self.store.list(Some(&self.child(rel))).next().await {
            None | Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(Error::Store { what: format!("listing {}{rel}", self.url), source: e }),
        }
    }

    /// Removes the empty folders below `rel` (and `rel` itself when empty) on a local disk, where
    /// moving and deleting files leave them behind; object stores have no folders to remove.
    pub async fn remove_empty_dirs(&self, rel: &str) -> Result<()> {
        if self.store_url.scheme() != "file" {
            return Ok(());
        }
        let dir = std::path::PathBuf::from("/").join(self.child(rel).as_ref());
        tokio::task::spawn_blocking(move || remove_empty(&dir))
            .await
            .map_err(|e| Error::Internal(format!("folder clean-up task failed: {e}")))?;
        Ok(())
    }

    pub async fn get(&self, p: &Path) -> Result<Bytes> {
        let r = self.store.get(p).await.map_err(Error::store(format!("reading {p}")))?;
        r.bytes().await.map_err(Error::store(format!("reading {p}")))
    }

    /// Reads an object, `None` when it does not exist.
    pub async fn get_opt(&self, p: &Path) -> Result<Option<Bytes>> {
        match self.store.get(p).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(Error::store(format!("reading {p}")))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Store { what: format!("reading {p}"), source: e }),
        }
    }

    pub async fn put(&self, p: &Path, data: Bytes) -> Result<()> {
        self.store.put(p, PutPayload::from_bytes(data)).await.map_err(Error::store(format!("writing {p}")))?;
        Ok(())
    }

    /// Creates an object only if absent: `Ok(false)` when another writer's object is there.
    /// This is the commit primitive (a local hard link, or a conditional PUT with
    /// `If-None-Match` on S3).
    ///
    /// "Already exists" is not taken on trust: object_store retries a 5xx even for a conditional
    /// create, and when S3 had applied the first attempt, the retry's 412 reads as
    /// `AlreadyExists`. So the object is read back, and when it holds exactly these bytes the
    /// create was ours. Every body written here carries its writer's nonce (an attempt, a run
    /// id, a holder): equal bytes are the same writer, or a write with the same effect.
    pub async fn put_if_absent(&self, p: &Path, data: Bytes) -> Result<bool> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(p, PutPayload::from_bytes(data.clone()), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(self.get_opt(p).await?.is_some_and(|b| b == data)),
            Err(e) => Err(Error::Store { what: format!("creating {p}"), source: e }),
        }
    }

    /// The store's time now: the `last_modified` it stamps on a probe object `rel` (a put and a
    /// head). What an age is measured against, instead of this machine's clock.
    pub async fn store_now(&self, rel: &str) -> Result<chrono::DateTime<chrono::Utc>> {
        let probe = self.child(rel);
        self.put(&probe, Bytes::new()).await?;
        self.last_modified(&probe).await
    }

    /// Whether this is a local disk (`file://`).
    pub fn is_local(&self) -> bool {
        self.store_url.scheme() == "file"
    }

    /// When the store last wrote `p`, in the store's own clock.
    pub async fn last_modified(&self, p: &Path) -> Result<chrono::DateTime<chrono::Utc>> {
        Ok(self.store.head(p).await.map_err(Error::store(format!("checking {p}")))?.last_modified)
    }

    pub async fn exists(&self, p: &Path) -> Result<bool> {
        match self.store.head(p).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::Store { what: format!("checking {p}"), source: e }),
        }
    }

    /// Deletes an object; one already gone is fine.
    pub async fn delete(&self, p: &Path) -> Result<()> {
        match self.store.delete(p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Store { what: format!("deleting {p}"), source: e }),
        }
    }

    /// Deletes many objects, in batches of up to 1,000 keys a request where the store has a bulk
    /// delete (S3 `DeleteObjects`); ones already gone are fine. Returns how many it deleted.
    pub async fn delete_many(&self, paths: Vec<Path>) -> Result<u64> {
        use futures::StreamExt;
        if paths.is_empty() {
            return Ok(0);
        }
        let n = paths.len() as u64;
        let input = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
        let mut results = self.store.delete_stream(input);
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::Store { what: format!("deleting objects under {}", self.url), source: e }),
            }
        }
        Ok(n)
    }

    /// The names of the folders directly below `rel` (one delimited listing).
    pub async fn folders(&self, rel: &str) -> Result<Vec<String>> {
        let prefix = self.child(rel);
        match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(r) => Ok(r.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(Error::Store { what: format!("listing {}{rel}", self.url), source: e }),
        }
    }

    /// Puts a copy of `from` at `to`: on a local disk the file itself (an atomic rename;
    /// returns false: nothing is left to delete), on an object store a copy (returns true: the
    /// caller deletes `from` once every copy it needs is made, several in one request).
    /// Idempotent for roll-forward, like [`Location::move_object`].
    pub async fn place(&self, from: &Path, to: &Path) -> Result<bool> {
        if self.store_url.scheme() == "file" {
            return self.move_object(from, to).await.map(|()| false);
        }
        match self.store.copy(from, to).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) if self.exists(to).await? => Ok(false),
            Err(e) => Err(Error::Store { what: format!("copying {from} to {to}"), source: e }),
        }
    }

    /// Moves `from` to `to` (an atomic rename locally, copy + delete on S3). Idempotent for
    /// roll-forward: when `from` is gone and `to` exists, the move already happened.
    pub async fn move_object(&self, from: &Path, to: &Path) -> Result<()> {
        match self.store.rename(from, to).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) if self.exists(to).await? => Ok(()),
            Err(e) => Err(Error::Store { what: format!("moving {from} to {to}"), source: e }),
        }
    }
}

/// Removes `dir`'s empty sub-folders, then `dir` if it is empty. Best effort: a folder another
/// process just wrote into is not empty and stays.
fn remove_empty(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let mut empty = true;
    for e in entries.flatten() {
        let p = e.path();
        if !(p.is_dir() && remove_empty(&p)) {
            empty = false;
        }
    }
    empty && std::fs::remove_dir(dir).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ingest's direct read of a local drop reads what a `get` would: the file's size when
    /// opened (a link to a file whose size says 0, as under /proc, reads as nothing), the whole
    /// of a regular file, and a missing file as "not found".
    #[test]
    fn a_local_read_is_the_size_the_file_has_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let p = loc.child("2026/11/20/00/a.gz");
        let file = loc.local_file(&p).expect("a plain local disk reads directly");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"{\"a\": 1}\n").unwrap();
        assert_eq!(Location::read_local_file(&p, &file).unwrap(), Bytes::from_static(b"{\"a\": 1}\n"));
        let proc = std::path::Path::new("/proc/self/status");
        if std::fs::metadata(proc).is_ok_and(|m| m.len() == 0) {
            assert!(Location::read_local_file(&p, proc).unwrap().is_empty());
        }
        std::fs::remove_file(&file).unwrap();
        let e = Location::read_local_file(&p, &file).unwrap_err();
        assert!(matches!(e, Error::Store { source: object_store::Error::NotFound { .. }, .. }), "{e}");
    }

    #[tokio::test]
    async fn put_if_absent_is_exclusive_and_move_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::config::to_url(dir.path(), ".").unwrap();
        let loc = Location::parse(&url).unwrap();
        let p = loc.child("a/b.json");
        assert!(loc.put_if_absent(&p, Bytes::from_static(b"1")).await.unwrap());
        assert!(!loc.put_if_absent(&p, Bytes::from_static(b"2")).await.unwrap());
        assert_eq!(loc.get(&p).await.unwrap(), Bytes::from_static(b"1"));
        let q = loc.child("c/d.json");
        loc.move_object(&p, &q).await.unwrap();
        loc.move_object(&p, &q).await.unwrap();
        assert!(!loc.exists(&p).await.unwrap() && loc.exists(&q).await.unwrap());
        assert_eq!(loc.list("a").await.unwrap().len(), 0);
        assert_eq!(loc.list("nope").await.unwrap().len(), 0);
        assert_eq!(loc.relative(&q), Some("c/d.json"));
    }

    #[tokio::test]
    async fn a_local_listing_after_an_offset_equals_the_filtered_full_listing() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        for k in [
            "2026/10/31/23/a",
            "2026/11/01/00/a",
            "2026/11/01/07/a",
            "2026/11/01/07/b",
            "2026/11/02/00/a",
            "2027/01/01/00/a",
            "x",
        ] {
            loc.put(&loc.child(k), Bytes::from_static(b"1")).await.unwrap();
        }
        for offset in ["2026/11/01/07", "2026/11/01/07/a", "2026/11/01/06", "2026/10", "2025", "2027/02"] {
            let names =
                |v: Vec<ObjectMeta>| v.into_iter().map(|m| loc.relative(&m.location).unwrap().to_string()).collect::<Vec<_>>();
            let mut want = names(loc.list("").await.unwrap());
            want.retain(|k| k.as_str() > offset);
            want.sort();
            assert_eq!(names(loc.list_after(offset).await.unwrap()), want, "after {offset}");
        }
    }

    #[test]
    fn child_keeps_escaped_segments_as_they_are() {
        // Regression: Path::join encoded `%` again, so tenant `/` (segment `%2F`) was stored as `%252F`.
        let loc = Location::parse("file:///tmp/wh/").unwrap();
        assert_eq!(loc.child("exports/%2F/x").as_ref(), "tmp/wh/exports/%2F/x");
        assert_eq!(loc.child("t/dt=2026-11-20/").as_ref(), "tmp/wh/t/dt=2026-11-20");
    }
}
