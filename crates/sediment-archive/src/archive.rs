//! The archive's operations on one store: stage a sealed segment as a Parquet file, upload it
//! create-only (or recognise a copy already there), read an entry back from an object, delete
//! objects, find orphans, verify the manifest, and claim the prefix for a cluster.
//!
//! Scheduling (which segment when, how many at once) and committing entries to the catalog are
//! the caller's: this module does the work for one segment or one object at a time.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};
use parquet::arrow::async_reader::MetadataFetch;
use parquet::file::metadata::ParquetMetaDataReader;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::error::{ArchiveError, Result};
use crate::manifest::{ArchivedSegment, entry_from_footer};
use crate::paths::SegmentKey;
use crate::settings::ArchiveSettings;
use crate::store::ArchiveStore;
use crate::writer::{SegmentSource, WriterOptions, write_segment};

/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// A byte-rate limit shared by all uploads: a token bucket that lets a request go into debt
/// and makes the next one wait it off, so parts larger than a second's worth still pass.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A limiter of `bytes_per_second` (at least 1), with one second of burst.
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        Self {
            bytes_per_second: rate,
            state: tokio::sync::Mutex::new((rate, Instant::now())),
        }
    }

    /// Waits until `bytes` may be sent.
    pub async fn acquire(&self, bytes: u64) {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let refill = now.duration_since(state.1).as_secs_f64() * self.bytes_per_second;
        state.0 = (state.0 + refill).min(self.bytes_per_second) - bytes as f64;
        state.1 = now;
        if state.0 < 0.0 {
            // Waiting with the lock held queues later callers behind this one.
            tokio::time::sleep(Duration::from_secs_f64(-state.0 / self.bytes_per_second)).await;
            state.0 = 0.0;
            state.1 = Instant::now();
        }
    }
}

/// A segment encoded to a local staging file, ready to upload.
#[derive(Debug)]
pub struct Staged {
    /// The staging file.
    pub path: PathBuf,
    /// Object key it will have.
    pub key: Path,
    /// Its manifest entry as written locally (the uploaded object's entry is read back from
    /// the object when it was already there).
    pub entry: ArchivedSegment,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The object was written.
    Created,
    /// An identical object was already there (a retry after an ambiguous failure, or an upload
    /// whose commit a crash interrupted): it is used as is and no second copy is made.
    AlreadyThere,
}

/// An object under the prefix that the manifest does not reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// Key.
    pub key: Path,
    /// What the key says.
    pub segment: SegmentKey,
    /// Size.
    pub size: u64,
}

/// What garbage collection needs to know about a partition the broker still has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivePartition {
    /// Offset after the last archived segment (the archive's end, or the local log start when
    /// nothing is archived).
    pub archive_end: i64,
    /// First offset held locally.
    pub local_start: i64,
}

/// Whether an unreferenced segment object may be deleted: it is older than the grace period,
/// and no upload can still adopt it, because its topic is gone, its offsets are below the
/// archive's end (superseded), or the local segment it was made from is gone.
pub fn is_collectable(
    key: &SegmentKey,
    age: Duration,
    grace: Duration,
    live: Option<&LivePartition>,
) -> bool {
    if age < grace {
        return false;
    }
    match live {
        None => true,
        Some(p) => key.last_offset < p.archive_end || key.base_offset < p.local_start,
    }
}

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyProblem {
    /// Object key.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// The result of checking manifest entries against their objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Entries checked.
    pub checked: usize,
    /// Rows the entries claim.
    pub rows: u64,
    /// Object bytes the entries claim.
    pub bytes: u64,
    /// Problems found (none: the archive matches its manifest).
    pub problems: Vec<VerifyProblem>,
}

/// Contents of the cluster marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMarker {
    /// Cluster that owns the prefix.
    pub cluster_id: String,
    /// Schema version of the archive when it was claimed.
    pub schema_version: u32,
}

/// The archive on one store.
#[derive(Debug)]
pub struct Archive {
    store: ArchiveStore,
    writer: WriterOptions,
    part_size: u64,
    limiter: Option<RateLimiter>,
    staging: PathBuf,
}

impl Archive {
    /// An archive on `store` that stages files in `staging_dir` (emptied now: a staging file
    /// left by a crash is of no use).
    pub fn new(
        store: ArchiveStore,
        settings: &ArchiveSettings,
        staging_dir: PathBuf,
        max_decompressed_batch_bytes: usize,
    ) -> Result<Self> {
        settings.validate()?;
        match std::fs::remove_dir_all(&staging_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ArchiveError::io(&staging_dir, e)),
        }
        std::fs::create_dir_all(&staging_dir).map_err(|e| ArchiveError::io(&staging_dir, e))?;
        Ok(Self {
            store,
            writer: settings.writer_options(max_decompressed_batch_bytes),
            part_size: settings.part_size_bytes,
            limiter: (settings.upload_rate_limit_bytes_per_second > 0)
                .then(|| RateLimiter::new(settings.upload_rate_limit_bytes_per_second)),
            staging: staging_dir,
        })
    }

    /// The store.
    pub fn store(&self) -> &ArchiveStore {
        &self.store
    }

    /// The key a segment is archived under.
    pub fn key_of(&self, source: &SegmentSource) -> Path {
        self.store.layout.segment(&SegmentKey {
            topic: source.topic.clone(),
            partition: source.partition,
            base_offset: source.base_offset,
            last_offset: source.last_offset(),
            topic_id: source.topic_id,
        })
    }

    /// Encodes `source` into a staging file. CPU-bound and blocking: run it on a blocking
    /// thread.
    pub fn stage(&self, source: &SegmentSource, now_ms: i64) -> Result<Staged> {
        let key = self.key_of(source);
        let path = self.staging.join(format!(
            "{}-{}-{:020}.{}.parquet",
            source.topic,
            source.partition,
            source.base_offset,
            Uuid::new_v4().simple()
        ));
        let file = File::create(&path).map_err(|e| ArchiveError::io(&path, e))?;
        let staged_path = StagingGuard(Some(path.clone()));
        let metadata = write_segment(source, &self.writer, file, &path)?;
        let size = std::fs::metadata(&path)
            .map_err(|e| ArchiveError::io(&path, e))?
            .len();
        let entry = entry_from_footer(key.as_ref(), size, &metadata, now_ms)?;
        staged_path.keep();
        Ok(Staged { path, key, entry })
    }

    /// Uploads a staged file create-only, or finds the same segment already there and uses
    /// that object. Returns the entry to commit, read from the object when it was there.
    pub async fn upload(
        &self,
        staged: &Staged,
        now_ms: i64,
    ) -> Result<(ArchivedSegment, UploadOutcome)> {
        let store = &self.store.store;
        match store.head(&staged.key).await {
            Ok(meta) => return self.adopt(staged, meta.size, now_ms).await,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let size = staged.entry.object_bytes;
        if size <= self.part_size {
            let data = tokio::fs::read(&staged.path)
                .await
                .map_err(|e| ArchiveError::io(&staged.path, e))?;
            if let Some(l) = &self.limiter {
                l.acquire(size).await;
            }
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match store
                .put_opts(&staged.key, PutPayload::from(Bytes::from(data)), opts)
                .await
            {
                Ok(_) => {}
                // Written by an earlier attempt whose answer was lost.
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let meta = store.head(&staged.key).await?;
                    return self.adopt(staged, meta.size, now_ms).await;
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            self.upload_multipart(staged).await?;
        }
        let mut entry = staged.entry.clone();
        entry.archived_at_ms = now_ms;
        Ok((entry, UploadOutcome::Created))
    }

    async fn upload_multipart(&self, staged: &Staged) -> Result<()> {
        let store = &self.store.store;
        let upload = store.put_multipart(&staged.key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size as usize);
        let written: Result<()> = async {
            let mut file = tokio::fs::File::open(&staged.path)
                .await
                .map_err(|e| ArchiveError::io(&staged.path, e))?;
            loop {
                let mut buf = BytesMut::zeroed(self.part_size as usize);
                let mut filled = 0;
                while filled < buf.len() {
                    let n = file
                        .read(&mut buf[filled..])
                        .await
                        .map_err(|e| ArchiveError::io(&staged.path, e))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    return Ok(());
                }
                buf.truncate(filled);
                if let Some(l) = &self.limiter {
                    l.acquire(filled as u64).await;
                }
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.put(buf.freeze());
            }
        }
        .await;
        match written {
            Ok(()) => {
                writer.finish().await?;
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key = %staged.key, error = %abort, "could not abort a failed multipart upload; the bucket's lifecycle rule removes it");
                }
                Err(e)
            }
        }
    }

    /// Uses the object already at the staged key if it holds the same segment (same topic id,
    /// partition, offsets and segment CRC); anything else is a mismatch, never overwritten.
    async fn adopt(
        &self,
        staged: &Staged,
        size: u64,
        now_ms: i64,
    ) -> Result<(ArchivedSegment, UploadOutcome)> {
        let existing = self.read_entry(&staged.key, size, now_ms).await?;
        let want = &staged.entry;
        let same = existing.topic_id == want.topic_id
            && existing.partition == want.partition
            && existing.base_offset == want.base_offset
            && existing.last_offset == want.last_offset
            && existing.segment_crc32c == want.segment_crc32c
            && existing.rows == want.rows;
        if !same {
            return Err(ArchiveError::Mismatch {
                key: staged.key.to_string(),
                reason: format!(
                    "an object holding other data is already there (rows={} crc={:08x}, this segment: rows={} crc={:08x}); is another cluster writing to this prefix?",
                    existing.rows, existing.segment_crc32c, want.rows, want.segment_crc32c
                ),
            });
        }
        Ok((existing, UploadOutcome::AlreadyThere))
    }

    /// Reads the manifest entry of the object at `key` from its footer.
    pub async fn read_entry(&self, key: &Path, size: u64, now_ms: i64) -> Result<ArchivedSegment> {
        read_entry(&self.store, key, size, now_ms).await
    }

    /// Deletes objects; ones already gone count as deleted. Returns how many were deleted.
    pub async fn delete(&self, keys: Vec<Path>) -> Result<usize> {
        let n = keys.len();
        let stream = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
        let results: Vec<_> = self.store.store.delete_stream(stream).collect().await;
        for r in results {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }

    /// Lists segment objects under the prefix that are not in `referenced` and that
    /// [`is_collectable`] allows to delete. This lists the bucket; only garbage collection
    /// does.
    pub async fn find_orphans(
        &self,
        referenced: &HashSet<String>,
        live: &HashMap<(Uuid, i32), LivePartition>,
        live_topics: &HashSet<Uuid>,
        grace: Duration,
    ) -> Result<Vec<Orphan>> {
        let layout = &self.store.layout;
        let prefix = (!layout.prefix().as_ref().is_empty()).then(|| layout.prefix().clone());
        let objects: Vec<ObjectMeta> = self.store.store.list(prefix.as_ref()).try_collect().await?;
        let now = chrono_now();
        let mut out = Vec::new();
        for meta in objects {
            let Some(segment) = layout.parse_segment(&meta.location) else {
                continue;
            };
            if referenced.contains(meta.location.as_ref()) {
                continue;
            }
            let age = (now - meta.last_modified).to_std().unwrap_or_default();
            let partition = if live_topics.contains(&segment.topic_id) {
                Some(
                    live.get(&(segment.topic_id, segment.partition))
                        .copied()
                        .unwrap_or(LivePartition {
                            archive_end: i64::MIN,
                            local_start: i64::MIN,
                        }),
                )
            } else {
                None
            };
            if is_collectable(&segment, age, grace, partition.as_ref()) {
                out.push(Orphan {
                    key: meta.location,
                    segment,
                    size: meta.size,
                });
            }
        }
        Ok(out)
    }

    /// Checks every entry against its object: it exists, has the recorded size, and its footer
    /// describes the same segment (topic, partition, offsets, rows, segment CRC).
    pub async fn verify(&self, entries: &[ArchivedSegment]) -> VerifyReport {
        let mut report = VerifyReport::default();
        for e in entries {
            report.checked += 1;
            report.rows += e.rows;
            report.bytes += e.object_bytes;
            let problem = |p: String| VerifyProblem {
                key: e.key.clone(),
                problem: p,
            };
            let key = Path::from(e.key.as_str());
            let meta = match self.store.store.head(&key).await {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => {
                    report.problems.push(problem("object is missing".into()));
                    continue;
                }
                Err(err) => {
                    report.problems.push(problem(format!("cannot read: {err}")));
                    continue;
                }
            };
            if meta.size != e.object_bytes {
                report.problems.push(problem(format!(
                    "size is {} bytes, the manifest says {}",
                    meta.size, e.object_bytes
                )));
                continue;
            }
            match self.read_entry(&key, meta.size, e.archived_at_ms).await {
                Ok(found) => {
                    for (what, got, want) in [
                        ("rows", found.rows as i64, e.rows as i64),
                        ("base offset", found.base_offset, e.base_offset),
                        ("last offset", found.last_offset, e.last_offset),
                        (
                            "partition",
                            i64::from(found.partition),
                            i64::from(e.partition),
                        ),
                        (
                            "segment crc",
                            i64::from(found.segment_crc32c),
                            i64::from(e.segment_crc32c),
                        ),
                    ] {
                        if got != want {
                            report.problems.push(problem(format!(
                                "{what} is {got} in the object, {want} in the manifest"
                            )));
                        }
                    }
                    if found.topic_id != e.topic_id {
                        report
                            .problems
                            .push(problem("the object belongs to another topic id".into()));
                    }
                    if found.row_groups.first().map(|r| r.first_offset)
                        != e.row_groups.first().map(|r| r.first_offset)
                        || found.row_groups.last().map(|r| r.last_offset)
                            != e.row_groups.last().map(|r| r.last_offset)
                    {
                        report
                            .problems
                            .push(problem("row-group offsets differ from the manifest".into()));
                    }
                }
                Err(err) => report
                    .problems
                    .push(problem(format!("footer does not read: {err}"))),
            }
        }
        report
    }

    /// Claims the prefix for `cluster_id` (a create-only marker object), or checks that it is
    /// already this cluster's. Two clusters writing one prefix would collect each other's
    /// objects as orphans; this refuses the second one.
    pub async fn claim(&self, cluster_id: &str) -> Result<()> {
        let key = self.store.layout.cluster_marker();
        let mine = ClusterMarker {
            cluster_id: cluster_id.to_string(),
            schema_version: crate::schema::SCHEMA_VERSION,
        };
        let check = |bytes: &[u8]| -> Result<()> {
            let theirs: ClusterMarker =
                serde_json::from_slice(bytes).map_err(|e| ArchiveError::Mismatch {
                    key: key.to_string(),
                    reason: format!("unreadable cluster marker: {e}"),
                })?;
            if theirs.cluster_id != cluster_id {
                return Err(ArchiveError::Mismatch {
                    key: key.to_string(),
                    reason: format!(
                        "the prefix belongs to cluster {}, this is cluster {cluster_id}; give each cluster its own prefix",
                        theirs.cluster_id
                    ),
                });
            }
            Ok(())
        };
        match self.store.store.get(&key).await {
            Ok(existing) => return check(&existing.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let body = serde_json::to_vec_pretty(&mine).expect("marker serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .store
            .put_opts(&key, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                check(&self.store.store.get(&key).await?.bytes().await?)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Bytes read from the end of an object to get its footer in one GET (the footer of a
/// segment's file is a few KiB; a larger one costs a second GET).
const FOOTER_PREFETCH: usize = 64 << 10;

/// Reads the manifest entry of the object at `key` (of `size` bytes) from its footer: one
/// ranged GET of the object's tail, two when the footer is larger.
pub async fn read_entry(
    store: &ArchiveStore,
    key: &Path,
    size: u64,
    now_ms: i64,
) -> Result<ArchivedSegment> {
    let fetch = ObjectFetch {
        store: Arc::clone(&store.store),
        key: key.clone(),
    };
    let metadata = ParquetMetaDataReader::new()
        .with_prefetch_hint(Some(FOOTER_PREFETCH))
        .load_and_finish(fetch, size)
        .await?;
    entry_from_footer(key.as_ref(), size, &metadata, now_ms)
}

/// Ranged GETs of one object, for Parquet's metadata reader.
struct ObjectFetch {
    store: Arc<dyn ObjectStore>,
    key: Path,
}

impl MetadataFetch for ObjectFetch {
    fn fetch(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.key, range)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// Removes a staging file unless told to keep it (an encode that failed half-way).
struct StagingGuard(Option<PathBuf>);

impl StagingGuard {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Where staging files go under a data directory.
pub fn staging_dir(data_dir: &FsPath) -> PathBuf {
    data_dir.join("archive-staging")
}
