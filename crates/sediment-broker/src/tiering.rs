//! The archiver: copies sealed segments to the archive and keeps the manifest, retention and
//! the bucket in step.
//!
//! Per partition, segments are archived oldest first, one at a time: encode to a staging file
//! (on a blocking thread, at most `archive.encoder_threads` at once), upload create-only (at
//! most `archive.max_concurrent_uploads` segments at once), then commit the manifest entry.
//! Only a committed entry lets local retention (`local.retention.*`) delete the local segment.
//! A failed segment is retried after a backoff that doubles up to `archive.retry_backoff_max_ms`;
//! meanwhile produce and fetch keep working on the local tier and the archive lag grows.
//!
//! Invariants:
//! - the manifest never references an object that was not completely written: the commit
//!   follows the upload;
//! - a referenced object is never deleted: retention and topic deletion remove the entry
//!   first, and garbage collection only deletes objects no entry references, older than
//!   `archive.orphan_grace_ms`, that no upload could still adopt;
//! - a crash between upload and commit leaves an object at the segment's fixed key, which the
//!   next attempt finds and commits instead of uploading a second copy.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sediment_archive::{
    Archive, ArchiveError, ArchiveSettings, ArchivedSegment, Catalog, LivePartition, SegmentSource,
    UploadOutcome, VerifyReport,
};
use sediment_log::Clock;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{Broker, Partition};
use crate::metrics::Metrics;

type PartitionKey = (Uuid, i32);

/// Shortest wait before retrying a failed segment.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    /// The prefix is claimed for this cluster.
    claimed: bool,
    /// Archiving is off for good (the prefix belongs to another cluster).
    disabled: Option<String>,
    /// The last failure, for the admin API.
    last_error: Option<String>,
    /// Partitions with an archiving task running.
    busy: HashSet<PartitionKey>,
    /// Partitions waiting out a backoff: (retry after, current backoff).
    backoff: HashMap<PartitionKey, (Instant, Duration)>,
    /// When garbage collection last ran.
    last_gc: Option<Instant>,
    claim_backoff: Option<(Instant, Duration)>,
}

/// How archiving is doing, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct TieringStatus {
    /// The archive URL.
    pub url: String,
    /// Whether the prefix is claimed for this cluster (the store was reachable at least once).
    pub claimed: bool,
    /// Why archiving is off, if it is.
    pub disabled: Option<String>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Archive figures of one partition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionArchiveStats {
    /// Archived segments.
    pub segments: usize,
    /// Records in them.
    pub rows: u64,
    /// Object bytes.
    pub object_bytes: u64,
    /// Bytes of the local segments they were made from.
    pub segment_bytes: u64,
    /// First archived offset (-1: none).
    pub start_offset: i64,
    /// Offset after the last archived one (-1: none).
    pub end_offset: i64,
    /// Sealed local segments not archived yet.
    pub lag_segments: usize,
    /// Their bytes.
    pub lag_bytes: u64,
}

/// The archiver of one broker.
#[derive(Debug)]
pub struct Tiering {
    archive: Arc<Archive>,
    catalog: Arc<dyn Catalog>,
    settings: ArchiveSettings,
    cluster_id: String,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    uploads: Arc<Semaphore>,
    encoders: Arc<Semaphore>,
    /// Serialises commits with topic deletion, so no entry is committed for a deleted topic.
    commit_lock: Mutex<()>,
    state: Mutex<State>,
    wake: Notify,
    pause_before_commit: bool,
    /// Latest archive read per partition: (offset, when), for the replay-lag gauge.
    archive_reads: Mutex<std::collections::HashMap<(Uuid, i32), (i64, i64)>>,
}

impl Tiering {
    /// An archiver over `archive` whose manifest is `catalog`.
    pub fn new(
        archive: Arc<Archive>,
        catalog: Arc<dyn Catalog>,
        settings: ArchiveSettings,
        cluster_id: String,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        pause_before_commit: bool,
    ) -> Self {
        Self {
            uploads: Arc::new(Semaphore::new(settings.max_concurrent_uploads)),
            encoders: Arc::new(Semaphore::new(settings.encoder_threads)),
            archive,
            catalog,
            settings,
            cluster_id,
            clock,
            metrics,
            commit_lock: Mutex::new(()),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            pause_before_commit,
            archive_reads: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The manifest.
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// The archive.
    pub fn archive(&self) -> &Arc<Archive> {
        &self.archive
    }

    /// Notes a fetch served from the archive at `offset`.
    pub fn note_archive_read(&self, topic_id: Uuid, partition: i32, offset: i64) {
        let now = self.clock.now_ms();
        self.archive_reads
            .lock()
            .insert((topic_id, partition), (offset, now));
    }

    /// Partitions read from the archive within `window_ms`: (topic id, partition, offset).
    pub fn recent_archive_reads(&self, window_ms: i64) -> Vec<(Uuid, i32, i64)> {
        let now = self.clock.now_ms();
        let mut reads = self.archive_reads.lock();
        reads.retain(|_, (_, at)| now - *at <= window_ms);
        reads.iter().map(|(&(t, p), &(o, _))| (t, p, o)).collect()
    }

    /// (first offset, offset after the last) held in the archive for a partition.
    pub fn archive_range(&self, topic_id: Uuid, partition: i32) -> Option<(i64, i64)> {
        self.catalog.range(topic_id, partition)
    }

    /// Asks the archiver to look for work now (a segment rolled).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Status for the admin API.
    pub fn status(&self) -> TieringStatus {
        let s = self.state.lock();
        TieringStatus {
            url: self.archive.store().url.clone(),
            claimed: s.claimed,
            disabled: s.disabled.clone(),
            last_error: s.last_error.clone(),
        }
    }

    /// Offset after the last archived segment of a partition, if any is archived.
    pub fn archive_end(&self, topic_id: Uuid, partition: i32) -> Option<i64> {
        self.catalog
            .segments(topic_id, partition)
            .last()
            .map(ArchivedSegment::next_offset)
    }

    /// Archive figures of a partition; `archiving` says whether its topic has
    /// `remote.storage.enable` on (without it nothing is pending, so there is no lag).
    pub fn partition_stats(&self, p: &Partition, archiving: bool) -> PartitionArchiveStats {
        let entries = self.catalog.segments(p.topic_id(), p.index());
        let end = entries.last().map(ArchivedSegment::next_offset);
        let (lag_segments, lag_bytes) = if archiving {
            p.archive_lag(end.unwrap_or(i64::MIN))
        } else {
            (0, 0)
        };
        PartitionArchiveStats {
            segments: entries.len(),
            rows: entries.iter().map(|e| e.rows).sum(),
            object_bytes: entries.iter().map(|e| e.object_bytes).sum(),
            segment_bytes: entries.iter().map(|e| e.segment_bytes).sum(),
            start_offset: entries.first().map_or(-1, |e| e.base_offset),
            end_offset: end.unwrap_or(-1),
            lag_segments,
            lag_bytes,
        }
    }

    /// Runs until `shutdown`: claims the prefix, archives what is pending, collects orphans.
    pub async fn run(self: Arc<Self>, broker: Arc<Broker>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        let interval = Duration::from_millis(self.settings.check_interval_ms);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
            }
            while tasks.try_join_next().is_some() {}
            if !self.ensure_claimed().await {
                continue;
            }
            for p in self.due_partitions(&broker) {
                let me = Arc::clone(&self);
                let broker = Arc::clone(&broker);
                tasks.spawn(async move { me.archive_partition(broker, p).await });
            }
            if self.gc_due() {
                let me = Arc::clone(&self);
                let broker = Arc::clone(&broker);
                tasks.spawn(async move { me.collect_garbage(&broker).await });
            }
        }
        // Uploads in progress are abandoned: their staging files are removed, and the segment
        // is archived again after the restart (finding its object if the upload completed).
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    async fn ensure_claimed(&self) -> bool {
        {
            let s = self.state.lock();
            if s.claimed {
                return true;
            }
            if s.disabled.is_some() || s.claim_backoff.is_some_and(|(at, _)| Instant::now() < at) {
                return false;
            }
        }
        match self.archive.claim(&self.cluster_id).await {
            Ok(()) => {
                let mut s = self.state.lock();
                s.claimed = true;
                s.claim_backoff = None;
                s.last_error = None;
                tracing::info!(url = %self.archive.store().url, "archive ready");
                true
            }
            Err(e @ ArchiveError::Mismatch { .. }) => {
                tracing::error!(url = %self.archive.store().url, error = %e, "archiving disabled");
                self.state.lock().disabled = Some(e.to_string());
                false
            }
            Err(e) => {
                let mut s = self.state.lock();
                let next = s
                    .claim_backoff
                    .map_or(FIRST_BACKOFF, |(_, d)| self.next_backoff(d));
                tracing::warn!(url = %self.archive.store().url, error = %e, retry_in_ms = next.as_millis() as u64, "archive unreachable; produce and fetch continue on local disk");
                s.claim_backoff = Some((Instant::now() + next, next));
                s.last_error = Some(e.to_string());
                self.metrics.archive_upload_errors.inc();
                false
            }
        }
    }

    fn next_backoff(&self, current: Duration) -> Duration {
        (current * 2).min(Duration::from_millis(self.settings.retry_backoff_max_ms))
    }

    /// Partitions with a sealed segment to archive and no task or backoff, oldest pending
    /// segment first; marks them busy.
    fn due_partitions(&self, broker: &Broker) -> Vec<Arc<Partition>> {
        let now = Instant::now();
        let mut due = Vec::new();
        for topic in broker.topics() {
            if !topic.effective().remote_storage_enable {
                continue;
            }
            for p in topic.partitions() {
                let key = (p.topic_id(), p.index());
                // A quiet partition's tail is archived within segment.ms too.
                if let Err(e) = p.roll_if_aged() {
                    tracing::warn!(topic = p.topic(), partition = key.1, error = %e, "could not roll an aged segment");
                }
                {
                    let s = self.state.lock();
                    if s.busy.contains(&key) || s.backoff.get(&key).is_some_and(|(at, _)| now < *at)
                    {
                        continue;
                    }
                }
                let end = self.archive_end(key.0, key.1).unwrap_or(i64::MIN);
                if let Some(src) = p.archive_candidate(end) {
                    due.push((src.base_offset, p));
                }
            }
        }
        due.sort_by_key(|(base, _)| *base);
        let mut s = self.state.lock();
        due.into_iter()
            .filter(|(_, p)| s.busy.insert((p.topic_id(), p.index())))
            .map(|(_, p)| p)
            .collect()
    }

    async fn archive_partition(self: Arc<Self>, broker: Arc<Broker>, p: Arc<Partition>) {
        let key = (p.topic_id(), p.index());
        loop {
            let end = self.archive_end(key.0, key.1).unwrap_or(i64::MIN);
            let Some(src) = p.archive_candidate(end) else {
                break;
            };
            let Ok(_permit) = Arc::clone(&self.uploads).acquire_owned().await else {
                break;
            };
            let (topic, base) = (src.topic.clone(), src.base_offset);
            match self.archive_segment(Arc::clone(&p), src).await {
                Ok(Some(entry)) => {
                    self.state.lock().backoff.remove(&key);
                    let me = Arc::clone(&broker);
                    let p2 = Arc::clone(&p);
                    let _ = tokio::task::spawn_blocking(move || me.apply_retention_to(&p2)).await;
                    tracing::debug!(
                        topic,
                        partition = key.1,
                        base_offset = entry.base_offset,
                        "segment archived"
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    self.metrics.archive_upload_errors.inc();
                    let mut s = self.state.lock();
                    let next = s
                        .backoff
                        .get(&key)
                        .map_or(FIRST_BACKOFF, |(_, d)| self.next_backoff(*d));
                    tracing::warn!(
                        topic,
                        partition = key.1,
                        base_offset = base,
                        error = %e,
                        retryable = e.is_retryable(),
                        retry_in_ms = next.as_millis() as u64,
                        "archiving a segment failed; the local copy stays"
                    );
                    s.backoff.insert(key, (Instant::now() + next, next));
                    s.last_error = Some(format!("{topic}-{}: {e}", key.1));
                    break;
                }
            }
        }
        self.state.lock().busy.remove(&key);
    }

    /// Encodes, uploads and commits one segment. `Ok(None)` when the partition was deleted
    /// meanwhile (nothing is committed; the object, if any, is an orphan for GC).
    async fn archive_segment(
        self: &Arc<Self>,
        p: Arc<Partition>,
        src: SegmentSource,
    ) -> Result<Option<ArchivedSegment>, ArchiveError> {
        let started = Instant::now();
        let staged = {
            let _encoder = Arc::clone(&self.encoders)
                .acquire_owned()
                .await
                .map_err(|_| ArchiveError::Catalog("shutting down".into()))?;
            let archive = Arc::clone(&self.archive);
            let now = self.clock.now_ms();
            tokio::task::spawn_blocking(move || archive.stage(&src, now))
                .await
                .map_err(|e| ArchiveError::Catalog(format!("encoder task failed: {e}")))??
        };
        self.metrics
            .archive_encode_duration
            .observe(started.elapsed().as_secs_f64());
        let uploading = Instant::now();
        let (entry, outcome) = self.archive.upload(&staged, self.clock.now_ms()).await?;
        self.metrics
            .archive_upload_duration
            .observe(uploading.elapsed().as_secs_f64());
        if self.pause_before_commit {
            // Fault injection for the crash-between-upload-and-commit test.
            tracing::warn!(key = %entry.key, "failpoint: archive upload done, pausing before the manifest commit");
            std::future::pending::<()>().await;
        }
        let me = Arc::clone(self);
        let to_commit = entry.clone();
        // The commit fsyncs the manifest: off the async threads.
        let committed = tokio::task::spawn_blocking(move || {
            let _commit = me.commit_lock.lock();
            if p.is_deleted() {
                return Ok(None);
            }
            me.catalog.commit(to_commit).map(Some)
        })
        .await
        .map_err(|e| ArchiveError::Catalog(format!("commit task failed: {e}")))??;
        let Some(committed) = committed else {
            return Ok(None);
        };
        if outcome == UploadOutcome::AlreadyThere {
            tracing::info!(key = %entry.key, "found this segment's object already uploaded (an earlier attempt was interrupted); committed it instead of uploading again");
        } else {
            self.metrics
                .archive_uploaded_bytes
                .inc_by(entry.object_bytes);
        }
        tracing::info!(
            key = %entry.key,
            rows = entry.rows,
            record_bytes = entry.record_bytes,
            object_bytes = entry.object_bytes,
            outcome = ?committed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "archived segment"
        );
        self.metrics.archive_segments.inc();
        self.metrics.archive_record_bytes.inc_by(entry.record_bytes);
        Ok(Some(entry))
    }

    /// Removes the manifest entries of a partition that retention put out of range, then
    /// deletes their objects (in the background; a failed delete leaves an orphan for GC).
    pub fn delete_archived_before(&self, topic_id: Uuid, partition: i32, offset: i64) {
        let removed = match self.catalog.remove_before(topic_id, partition, offset) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(partition, offset, error = %e, "could not remove archived segments from the manifest");
                return;
            }
        };
        self.delete_objects(removed, "retention");
    }

    /// Forgets a deleted topic's archive: entries now, objects in the background.
    pub fn forget_topic(&self, topic_id: Uuid, topic: &str) {
        let removed = {
            let _commit = self.commit_lock.lock();
            self.catalog.remove_topic(topic_id)
        };
        match removed {
            Ok(removed) => {
                tracing::info!(
                    topic,
                    segments = removed.len(),
                    "deleting the topic's archive"
                );
                self.delete_objects(removed, "topic_deleted");
            }
            Err(e) => {
                tracing::error!(topic, error = %e, "could not remove the topic from the manifest; garbage collection will delete its objects")
            }
        }
    }

    fn delete_objects(&self, entries: Vec<ArchivedSegment>, reason: &'static str) {
        if entries.is_empty() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let archive = Arc::clone(&self.archive);
        let metrics = Arc::clone(&self.metrics);
        handle.spawn(async move {
            let keys: Vec<_> = entries
                .iter()
                .map(|e| object_store::path::Path::from(e.key.as_str()))
                .collect();
            match archive.delete(keys).await {
                Ok(n) => {
                    metrics.archive_deleted(reason).inc_by(n as u64);

                    tracing::info!(objects = n, reason, "deleted archived segments");
                }
                Err(e) => tracing::warn!(reason, error = %e, "could not delete archived segments; garbage collection will retry"),
            }
        });
    }

    fn gc_due(&self) -> bool {
        let mut s = self.state.lock();
        let every = Duration::from_millis(self.settings.gc_interval_ms);
        if s.last_gc.is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        s.last_gc = Some(Instant::now());
        true
    }

    /// Deletes objects no manifest entry references and no upload can still adopt.
    pub async fn collect_garbage(&self, broker: &Broker) {
        let mut referenced = HashSet::new();
        for (topic_id, partition) in self.catalog.partitions() {
            for e in self.catalog.segments(topic_id, partition) {
                referenced.insert(e.key);
            }
        }
        let mut live = HashMap::new();
        let mut live_topics = HashSet::new();
        for topic in broker.topics() {
            live_topics.insert(topic.id());
            for p in topic.partitions() {
                let Ok((local_start, _)) = p.offsets() else {
                    continue;
                };
                let end = self
                    .archive_end(topic.id(), p.index())
                    .unwrap_or(local_start);
                live.insert(
                    (topic.id(), p.index()),
                    LivePartition {
                        archive_end: end,
                        local_start,
                    },
                );
            }
        }
        let grace = Duration::from_millis(self.settings.orphan_grace_ms);
        let orphans = match self
            .archive
            .find_orphans(&referenced, &live, &live_topics, grace)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "archive garbage collection could not list the bucket");
                return;
            }
        };
        if orphans.is_empty() {
            return;
        }
        for o in &orphans {
            tracing::info!(key = %o.key, bytes = o.size, "deleting an archive object no manifest entry references");
        }
        let n = orphans.len();
        match self
            .archive
            .delete(orphans.into_iter().map(|o| o.key).collect())
            .await
        {
            Ok(_) => {
                self.metrics.archive_deleted("orphan").inc_by(n as u64);
            }
            Err(e) => tracing::warn!(error = %e, "could not delete orphaned archive objects"),
        }
    }

    /// Verifies the entries of `topic` (all topics with `None`) against their objects.
    pub async fn verify(&self, topic_ids: &[Uuid]) -> VerifyReport {
        let mut entries = Vec::new();
        for (topic_id, partition) in self.catalog.partitions() {
            if topic_ids.is_empty() || topic_ids.contains(&topic_id) {
                entries.extend(self.catalog.segments(topic_id, partition));
            }
        }
        self.archive.verify(&entries).await
    }
}
