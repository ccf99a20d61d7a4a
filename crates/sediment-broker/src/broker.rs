//! The broker's state: topics, their partitions' logs, and the operations handlers call.
//!
//! Locking: each partition's log sits behind its own mutex, held only for in-memory bookkeeping
//! and the `pwrite` of an append; reads take an immutable [`ReadSlice`] under the lock and read
//! it after releasing it, and fsyncs run outside the lock on a blocking thread. Topic creation,
//! deletion and config changes are serialised by one admin mutex and persisted through the
//! [`MetadataStore`] before they take effect.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use sediment_archive::{
    Archive, ArchiveReader, ArchiveStore, ArchivedSegment, Catalog, ChunkCache, SegmentSource,
    staging_dir,
};
use sediment_log::{
    AppendInfo, Clock, DELETE_SUFFIX, FlushHandle, PartitionLog, ReadSlice,
    parse_partition_dir_name, partition_dir_name,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::catalog::FileCatalog;
use crate::config::BrokerConfig;
use crate::errors::BrokerError;
use crate::group::GroupCoordinator;
use crate::group::offsets::{FileOffsetStore, OffsetStore};
use crate::meta_store::OpenMeta;
use crate::metrics::Metrics;
use crate::store::{
    ClusterBroker, FileMetadataStore, MetadataStore, NodeIdentity, TopicRecord,
    existing_cluster_id, load_or_create_identity,
};
use crate::tiering::{PartitionArchiveStats, Tiering};
use crate::topic_config::{EffectiveConfig, validate_entry};
use crate::validate::{BatchLimits, validate_batch};

/// Leader epoch of every partition until leadership can move (the metadata issue).
pub(crate) const LEADER_EPOCH: i32 = 0;

#[derive(Debug)]
struct PartitionState {
    log: PartitionLog,
    deleted: bool,
}

/// One partition of a topic.
#[derive(Debug)]
pub struct Partition {
    topic: Arc<str>,
    topic_id: Uuid,
    index: i32,
    leader_epoch: i32,
    state: Mutex<PartitionState>,
    appended: Notify,
}

/// What a fetch sees of a partition at one instant.
#[derive(Debug)]
pub struct PartitionRead {
    /// Batches from the requested offset, if any.
    pub slice: Option<ReadSlice>,
    /// High watermark (the log end offset: one replica).
    pub high_watermark: i64,
    /// First offset held.
    pub log_start_offset: i64,
}

/// Figures for the per-partition metrics.
#[derive(Debug, Clone)]
pub struct PartitionStats {
    /// Topic name.
    pub topic: String,
    /// Partition index as a label value.
    pub partition_label: String,
    /// Log end offset.
    pub log_end_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Segment count.
    pub segments: usize,
    /// Bytes on disk.
    pub size_bytes: u64,
}

impl Partition {
    /// Partition index.
    pub fn index(&self) -> i32 {
        self.index
    }

    /// Topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Topic id.
    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    /// Whether the partition's topic has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// The oldest sealed segment the archive does not hold yet (`archive_end`: offset after
    /// the last archived segment, or `i64::MIN`), ready to be read without the lock.
    pub fn archive_candidate(&self, archive_end: i64) -> Option<SegmentSource> {
        let state = self.state.lock();
        if state.deleted {
            return None;
        }
        let seg = state
            .log
            .sealed_segments()
            .into_iter()
            .find(|s| s.base_offset >= archive_end)?;
        Some(SegmentSource {
            topic: self.topic.to_string(),
            topic_id: self.topic_id,
            partition: self.index,
            base_offset: seg.base_offset,
            next_offset: seg.next_offset,
            size_bytes: seg.size_bytes,
            slice: state.log.sealed_segment(seg.base_offset)?,
        })
    }

    /// Seals the active segment if it is older than `segment.ms` (see
    /// [`PartitionLog::roll_if_aged`]).
    pub fn roll_if_aged(&self) -> Result<bool, BrokerError> {
        self.with_log(|log| Ok(log.roll_if_aged()?))
    }

    /// Sealed segments (count, bytes) the archive does not hold yet.
    pub fn archive_lag(&self, archive_end: i64) -> (usize, u64) {
        let state = self.state.lock();
        if state.deleted {
            return (0, 0);
        }
        state
            .log
            .sealed_segments()
            .iter()
            .filter(|s| s.base_offset >= archive_end)
            .fold((0, 0), |(n, b), s| (n + 1, b + s.size_bytes))
    }

    /// Current leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// Checks a client's `current_leader_epoch` (-1: not given) against ours: a newer one means
    /// our metadata is behind (UNKNOWN_LEADER_EPOCH), an older one that the client's is
    /// (FENCED_LEADER_EPOCH).
    pub fn check_leader_epoch(&self, current_leader_epoch: i32) -> Result<(), BrokerError> {
        if current_leader_epoch > self.leader_epoch {
            return Err(BrokerError::UnknownLeaderEpoch(current_leader_epoch));
        }
        if current_leader_epoch >= 0 && current_leader_epoch < self.leader_epoch {
            return Err(BrokerError::FencedLeaderEpoch(current_leader_epoch));
        }
        Ok(())
    }

    fn with_log<T>(
        &self,
        f: impl FnOnce(&mut PartitionLog) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let mut state = self.state.lock();
        if state.deleted {
            return Err(BrokerError::UnknownTopicOrPartition(format!(
                "{}-{}",
                self.topic, self.index
            )));
        }
        f(&mut state.log)
    }

    /// (log start offset, high watermark).
    pub fn offsets(&self) -> Result<(i64, i64), BrokerError> {
        self.with_log(|log| Ok((log.log_start_offset(), log.log_end_offset())))
    }

    /// The batches from `offset` (the one containing it first); out-of-range offsets are errors.
    pub fn read(&self, offset: i64) -> Result<PartitionRead, BrokerError> {
        self.with_log(|log| {
            Ok(PartitionRead {
                slice: log.read(offset)?,
                high_watermark: log.log_end_offset(),
                log_start_offset: log.log_start_offset(),
            })
        })
    }

    /// A future that completes after the next append; create it before checking for data.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// The first batch whose max timestamp is at least `timestamp`.
    pub fn batch_for_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>, BrokerError> {
        self.with_log(|log| Ok(log.batch_for_timestamp(timestamp)?))
    }

    /// The batch with the largest timestamp.
    pub fn batch_with_max_timestamp(&self) -> Result<Option<Bytes>, BrokerError> {
        self.with_log(|log| Ok(log.batch_with_max_timestamp()?))
    }

    fn append(
        &self,
        batch: &[u8],
        log_append_time: bool,
    ) -> Result<(AppendInfo, Option<FlushHandle>), BrokerError> {
        let result = self.with_log(|log| {
            let info = log.append(batch, self.leader_epoch, log_append_time)?;
            Ok((info, info.flush_due.then(|| log.flush_handle())))
        });
        if result.is_ok() {
            self.appended.notify_waiters();
        }
        result
    }

    fn mark_flushed(&self, handle: &FlushHandle) {
        self.state.lock().log.mark_flushed(handle);
    }

    fn stats(&self) -> Option<PartitionStats> {
        let state = self.state.lock();
        if state.deleted {
            return None;
        }
        let s = state.log.stats();
        Some(PartitionStats {
            topic: self.topic.to_string(),
            partition_label: self.index.to_string(),
            log_end_offset: state.log.log_end_offset(),
            log_start_offset: state.log.log_start_offset(),
            segments: s.segments,
            size_bytes: s.size_bytes,
        })
    }
}

#[derive(Debug)]
struct TopicConfigs {
    overrides: BTreeMap<String, String>,
    effective: EffectiveConfig,
}

/// A topic: the leader of each partition, and the partitions this broker leads.
#[derive(Debug)]
pub struct Topic {
    name: String,
    id: Uuid,
    /// Leader (broker node id) of every partition, by index.
    leaders: RwLock<Vec<i32>>,
    /// The partitions this broker leads, in index order.
    partitions: RwLock<Vec<Arc<Partition>>>,
    configs: RwLock<TopicConfigs>,
}

impl Topic {
    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Topic id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// A partition this broker leads, by index.
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let parts = self.partitions.read();
        parts
            .binary_search_by_key(&index, |p| p.index)
            .ok()
            .map(|i| Arc::clone(&parts[i]))
    }

    /// The partition `index` if this broker leads it; `NOT_LEADER_OR_FOLLOWER` when another
    /// broker does (the client refreshes its metadata), unknown when there is no such
    /// partition.
    pub fn led_partition(&self, index: i32) -> Result<Arc<Partition>, BrokerError> {
        if let Some(p) = self.partition(index) {
            return Ok(p);
        }
        match self.leader(index) {
            Some(leader) => Err(BrokerError::NotLeaderOrFollower(format!(
                "partition {}-{index} is led by broker {leader}",
                self.name
            ))),
            None => Err(BrokerError::UnknownTopicOrPartition(format!(
                "{}-{index}",
                self.name
            ))),
        }
    }

    /// The partitions this broker leads.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().clone()
    }

    /// Leader of partition `index`.
    pub fn leader(&self, index: i32) -> Option<i32> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.leaders.read().get(i).copied())
    }

    /// Leader of every partition, by index.
    pub fn leaders(&self) -> Vec<i32> {
        self.leaders.read().clone()
    }

    /// Partition count (on every broker).
    pub fn partition_count(&self) -> i32 {
        self.leaders.read().len() as i32
    }

    /// Config overrides.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.configs.read().overrides.clone()
    }

    /// Effective settings.
    pub fn effective(&self) -> EffectiveConfig {
        self.configs.read().effective.clone()
    }
}

#[derive(Debug, Default)]
struct TopicMaps {
    by_name: HashMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

/// Parameters of a new topic.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions (-1: `num.partitions`).
    pub partitions: i32,
    /// Replication factor (-1: default, which is 1).
    pub replication_factor: i16,
    /// Manual assignment: for each partition, its replica broker ids.
    pub assignments: Option<Vec<Vec<i32>>>,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// A Kafka-compatible broker on local partition logs.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    identity: NodeIdentity,
    clock: Arc<dyn Clock>,
    store: Box<dyn MetadataStore>,
    topics: RwLock<TopicMaps>,
    admin: Mutex<()>,
    metrics: Arc<Metrics>,
    groups: GroupCoordinator,
    /// Reserved producer ids: (next to hand out, end of the block).
    producer_ids: Mutex<(i64, i64)>,
    tiering: Arc<Tiering>,
    archive_reader: Arc<ArchiveReader>,
    /// Archive reads in progress, shared by fetches asking for the same data.
    archive_reads: crate::handlers::ArchiveReads,
    /// `max.connections`, shared by all Kafka listeners (plaintext and TLS).
    connection_slots: Arc<tokio::sync::Semaphore>,
    _dir_lock: File,
}

/// A data directory's identity and where its metadata lives.
type Stores = (
    NodeIdentity,
    Box<dyn MetadataStore>,
    Arc<dyn OffsetStore>,
    Arc<dyn Catalog>,
);

/// Producer ids reserved from the metadata store at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Kafka's topic name rules.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let err = |why: &str| Err(BrokerError::InvalidTopic(format!("'{name}' {why}")));
    if name.is_empty() {
        return err("is empty");
    }
    if name == "." || name == ".." {
        return err("is not allowed");
    }
    if name.len() > 249 {
        return err("is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return err("contains characters other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

impl Broker {
    /// Opens the data directory with its metadata in files there (topics, offsets journal,
    /// manifest journal): see [`Broker::open_with`].
    pub fn open(
        config: BrokerConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        archive_store: ArchiveStore,
        archive_cache: Arc<dyn ChunkCache>,
    ) -> Result<Arc<Self>, BrokerError> {
        Self::open_with(config, clock, metrics, archive_store, archive_cache, None)
    }

    /// Opens the data directory: takes its lock, loads the identity and topic registry, removes
    /// leftovers of deleted topics and opens (recovering) every partition log. With `meta`
    /// (called with the data directory once its lock is held), topics, producer ids, committed
    /// offsets and the archive manifest live in the metadata service it opens (metadata files
    /// of an older data directory are imported into it first); without it, in files in the
    /// data directory.
    pub fn open_with(
        config: BrokerConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        archive_store: ArchiveStore,
        archive_cache: Arc<dyn ChunkCache>,
        meta: Option<OpenMeta>,
    ) -> Result<Arc<Self>, BrokerError> {
        let dir = &config.data_dir;
        let storage =
            |e: std::io::Error| BrokerError::Storage(format!("{e} path={}", dir.display()));
        fs::create_dir_all(dir).map_err(storage)?;
        let lock = File::create(dir.join(".lock")).map_err(storage)?;
        lock.try_lock().map_err(|_| {
            BrokerError::Storage(format!(
                "data directory {} is in use by another sediment process",
                dir.display()
            ))
        })?;
        config.log.validate().map_err(BrokerError::InvalidConfig)?;
        config
            .group
            .validate()
            .map_err(BrokerError::InvalidConfig)?;
        let (identity, store, offsets, catalog): Stores = match meta {
            Some(open_meta) => {
                let meta = open_meta(dir)?;
                // The cluster's id is the metadata service's: the first broker proposes its
                // own (from its data directory, the config, or a new one).
                let proposed = existing_cluster_id(dir)
                    .or_else(|| config.cluster_id.clone())
                    .unwrap_or_else(|| Uuid::new_v4().to_string());
                let cluster_id = meta.init_cluster_id(&proposed)?;
                if let Some(configured) = &config.cluster_id
                    && *configured != cluster_id
                {
                    return Err(BrokerError::InvalidConfig(format!(
                        "cluster_id={configured} is configured but the metadata service belongs to cluster {cluster_id}"
                    )));
                }
                let identity = load_or_create_identity(dir, config.node_id, Some(&cluster_id))?;
                meta.import_files(dir)?;
                (
                    identity,
                    Box::new(meta.clone()),
                    Arc::new(meta.clone()),
                    Arc::new(meta),
                )
            }
            None => (
                load_or_create_identity(dir, config.node_id, config.cluster_id.as_deref())?,
                Box::new(FileMetadataStore::new(dir)),
                Arc::new(FileOffsetStore::open(dir)?),
                Arc::new(FileCatalog::open(dir)?),
            ),
        };
        remove_deleted_dirs(dir);
        let records = store.load_topics()?;
        let groups = GroupCoordinator::new(config.group.clone(), Arc::clone(&clock), offsets);
        let archive = Archive::new(
            archive_store,
            &config.archive,
            staging_dir(dir),
            config.max_decompressed_batch_bytes,
        )
        .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        let reader = Arc::new(ArchiveReader::new(
            archive.store().clone(),
            Arc::clone(&catalog),
            archive_cache,
            config.archive.reader_options(),
        ));
        let tiering = Arc::new(Tiering::new(
            Arc::new(archive),
            catalog,
            config.archive.clone(),
            identity.cluster_id.clone(),
            Arc::clone(&clock),
            Arc::clone(&metrics),
            config.pause_before_archive_commit,
        ));
        let connection_slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
        let broker = Self {
            config,
            identity,
            clock,
            store,
            topics: RwLock::new(TopicMaps::default()),
            admin: Mutex::new(()),
            metrics,
            groups,
            producer_ids: Mutex::new((0, 0)),
            tiering,
            archive_reader: reader,
            archive_reads: Default::default(),
            connection_slots,
            _dir_lock: lock,
        };
        let started = Instant::now();
        let mut maps = TopicMaps::default();
        for record in records {
            let topic = broker.open_topic(&record)?;
            maps.by_id.insert(topic.id, Arc::clone(&topic));
            maps.by_name.insert(topic.name.clone(), topic);
        }
        broker.warn_orphans(&maps);
        tracing::info!(
            topics = maps.by_name.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            data_dir = %broker.config.data_dir.display(),
            "opened partition logs"
        );
        *broker.topics.write() = maps;
        broker.store.register(&broker.me())?;
        let broker = Arc::new(broker);
        broker.metrics.attach_broker(&broker);
        Ok(broker)
    }

    /// This broker as clients reach it (what it registers with the metadata service).
    pub fn me(&self) -> ClusterBroker {
        ClusterBroker {
            id: self.config.node_id,
            host: self.config.advertised_host.clone(),
            port: self.config.advertised_port,
            rack: self.config.rack.clone(),
            listeners: self.config.listeners.clone(),
        }
    }

    /// The brokers of the cluster that are not fenced, by node id (this broker alone when the
    /// metadata knows no brokers).
    pub fn live_brokers(&self) -> Vec<ClusterBroker> {
        let live = self.store.live_brokers();
        if live.is_empty() {
            vec![self.me()]
        } else {
            live
        }
    }

    /// The broker coordinating group (or transactional id) `key`: the live brokers in node id
    /// order, picked by a hash of the key (Java's `String.hashCode`, as Kafka hashes group ids
    /// to `__consumer_offsets` partitions).
    pub fn coordinator_for(&self, key: &str) -> ClusterBroker {
        let live = self.live_brokers();
        let hash = key
            .encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
        let i = (hash.unsigned_abs() as usize) % live.len();
        live[i].clone()
    }

    /// `NOT_COORDINATOR` unless this broker coordinates `group`.
    pub fn check_coordinator(&self, group: &str) -> Result<(), BrokerError> {
        let c = self.coordinator_for(group);
        if c.id == self.config.node_id {
            Ok(())
        } else {
            Err(BrokerError::NotCoordinator(format!(
                "group '{group}' is coordinated by broker {}",
                c.id
            )))
        }
    }

    /// A leader for each of `count` new partitions of topic `name`: the live brokers in turn,
    /// starting at one picked from the name and the first index, so topics spread.
    fn assign_leaders(&self, name: &str, first: i32, count: i32) -> Vec<i32> {
        let live = self.live_brokers();
        let start = self.coordinator_for(name).id;
        let start = live.iter().position(|b| b.id == start).unwrap_or(0) + first as usize;
        (0..count as usize)
            .map(|i| live[(start + i) % live.len()].id)
            .collect()
    }

    /// Brings the topics in memory in line with the stored metadata after another broker
    /// changed it: opens the partitions this broker now leads, applies config changes, and
    /// drops topics deleted elsewhere (with their local data). Returns whether anything
    /// changed.
    pub fn sync_topics(&self) -> Result<bool, BrokerError> {
        let _admin = self.admin.lock();
        let records = self.store.load_topics()?;
        let mut changed = false;
        let wanted: HashMap<&str, &TopicRecord> =
            records.iter().map(|r| (r.name.as_str(), r)).collect();
        for topic in self.topics() {
            let gone = wanted.get(topic.name()).is_none_or(|r| r.id != topic.id);
            if gone {
                self.drop_topic_locally(&topic);
                changed = true;
            }
        }
        for record in &records {
            match self.topic(&record.name) {
                None => {
                    let topic = self.open_topic(record)?;
                    let mut maps = self.topics.write();
                    maps.by_id.insert(topic.id, Arc::clone(&topic));
                    maps.by_name.insert(topic.name.clone(), topic);
                    changed = true;
                }
                Some(topic) => {
                    let leaders = record.leaders_or(self.config.node_id);
                    let current = topic.partition_count();
                    if leaders.len() as i32 > current {
                        let effective = topic.effective();
                        let name: Arc<str> = Arc::from(record.name.as_str());
                        let mut added = Vec::new();
                        for (index, leader) in leaders.iter().enumerate().skip(current as usize) {
                            if *leader == self.config.node_id {
                                added.push(self.open_partition(
                                    &name,
                                    topic.id,
                                    index as i32,
                                    &effective,
                                )?);
                            }
                        }
                        topic.partitions.write().extend(added);
                        *topic.leaders.write() = leaders;
                        changed = true;
                    }
                    if topic.overrides() != record.configs {
                        self.apply_configs(&topic, record.configs.clone())?;
                        changed = true;
                    }
                }
            }
        }
        Ok(changed)
    }

    /// Follows changes other brokers make to the metadata until `shutdown`.
    async fn follow_metadata(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut changes) = self.store.changes() else {
            return;
        };
        // The topics as last reconciled: other changes (offset commits, the manifest,
        // heartbeats) do not concern them.
        let mut synced = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            let version = self.store.topics_version();
            if synced == Some(version) {
                continue;
            }
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.sync_topics()).await {
                Ok(Ok(changed)) => {
                    synced = Some(version);
                    if changed {
                        tracing::debug!("topics updated from the metadata service");
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "could not apply a metadata change; retrying on the next one")
                }
                Err(e) => tracing::error!(error = %e, "metadata sync task failed"),
            }
        }
    }

    /// Opens a topic, with the logs of the partitions this broker leads.
    fn open_topic(&self, record: &TopicRecord) -> Result<Arc<Topic>, BrokerError> {
        let effective = self.config.log.effective(&record.configs)?;
        let name: Arc<str> = Arc::from(record.name.as_str());
        let leaders = record.leaders_or(self.config.node_id);
        let mut partitions = Vec::new();
        for (index, leader) in leaders.iter().enumerate() {
            if *leader == self.config.node_id {
                partitions.push(self.open_partition(&name, record.id, index as i32, &effective)?);
            }
        }
        Ok(Arc::new(Topic {
            name: record.name.clone(),
            id: record.id,
            leaders: RwLock::new(leaders),
            partitions: RwLock::new(partitions),
            configs: RwLock::new(TopicConfigs {
                overrides: record.configs.clone(),
                effective,
            }),
        }))
    }

    fn open_partition(
        &self,
        topic: &Arc<str>,
        topic_id: Uuid,
        index: i32,
        effective: &EffectiveConfig,
    ) -> Result<Arc<Partition>, BrokerError> {
        let dir = self.config.data_dir.join(partition_dir_name(topic, index));
        claim_partition_dir(&dir, topic_id)?;
        let log = PartitionLog::open(&dir, effective.log.clone(), Arc::clone(&self.clock))?;
        Ok(Arc::new(Partition {
            topic: Arc::clone(topic),
            topic_id,
            index,
            leader_epoch: LEADER_EPOCH,
            state: Mutex::new(PartitionState {
                log,
                deleted: false,
            }),
            appended: Notify::new(),
        }))
    }

    fn warn_orphans(&self, maps: &TopicMaps) {
        let Ok(entries) = fs::read_dir(&self.config.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some((topic, partition)) = parse_partition_dir_name(&name) {
                let known = maps
                    .by_name
                    .get(&topic)
                    .is_some_and(|t| partition < t.partition_count());
                if !known && entry.path().is_dir() {
                    tracing::warn!(dir = %entry.path().display(), "partition directory of no known topic; left untouched");
                }
            }
        }
    }

    /// The group coordinator.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    /// The archiver.
    pub fn tiering(&self) -> &Arc<Tiering> {
        &self.tiering
    }

    /// The archive read path (fetches below the local log start, timestamp lookups).
    pub fn archive_reader(&self) -> &Arc<ArchiveReader> {
        &self.archive_reader
    }

    /// Archive reads in progress (the fetch handler's).
    pub(crate) fn archive_reads(&self) -> &crate::handlers::ArchiveReads {
        &self.archive_reads
    }

    /// A producer id never handed out before, by this run or an earlier one (InitProducerId).
    pub fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        let mut block = self.producer_ids.lock();
        if block.0 >= block.1 {
            let start = self.store.allocate_producer_ids(PRODUCER_ID_BLOCK)?;
            *block = (start, start + PRODUCER_ID_BLOCK);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// Settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.identity.cluster_id
    }

    /// This broker's node id.
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Connection slots (`max.connections`) shared by the Kafka listeners.
    pub(crate) fn connection_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.connection_slots
    }

    /// Milliseconds since the epoch by the broker's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Topic by name.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().by_name.get(name).cloned()
    }

    /// Topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().by_id.get(&id).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().by_name.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The topic, created with defaults if it does not exist and auto-creation is enabled.
    pub fn topic_or_auto_create(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if !self.config.auto_create_topics {
            return Err(BrokerError::UnknownTopicOrPartition(name.to_string()));
        }
        let created = self.create_topic(
            NewTopic {
                name: name.to_string(),
                partitions: -1,
                replication_factor: -1,
                assignments: None,
                configs: BTreeMap::new(),
            },
            false,
        );
        match created {
            Ok(t) => {
                tracing::info!(
                    topic = name,
                    partitions = t.partition_count(),
                    "auto-created topic"
                );
                Ok(t)
            }
            // Another request created it meanwhile.
            Err(BrokerError::TopicAlreadyExists(_)) => self
                .topic(name)
                .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string())),
            Err(e) => Err(e),
        }
    }

    fn check_replicas(&self, new: &NewTopic) -> Result<i32, BrokerError> {
        if let Some(assignments) = &new.assignments {
            if assignments.is_empty() {
                return Err(BrokerError::InvalidReplicaAssignment(
                    "empty assignment".into(),
                ));
            }
            let live: Vec<i32> = self.live_brokers().iter().map(|b| b.id).collect();
            for (p, replicas) in assignments.iter().enumerate() {
                if replicas.len() != 1 || !live.contains(&replicas[0]) {
                    return Err(BrokerError::InvalidReplicaAssignment(format!(
                        "partition {p} is assigned to brokers {replicas:?}; each partition has one \
                         replica, on one of the live brokers {live:?}"
                    )));
                }
            }
            return Ok(assignments.len() as i32);
        }
        match new.replication_factor {
            -1 | 1 => {}
            rf => {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "replication factor {rf} is not supported: partitions have one replica \
                     (hot-tier replication between brokers is not built yet)"
                )));
            }
        }
        match new.partitions {
            -1 => Ok(self.config.num_partitions),
            n if n >= 1 => Ok(n),
            n => Err(BrokerError::InvalidPartitions(format!(
                "number of partitions {n} must be at least 1"
            ))),
        }
    }

    /// Creates a topic (or, with `validate_only`, only checks that it could be created).
    pub fn create_topic(
        &self,
        new: NewTopic,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(&new.name)?;
        let partitions = self.check_replicas(&new)?;
        for (k, v) in &new.configs {
            validate_entry(k, v)?;
        }
        let effective = self.config.log.effective(&new.configs)?;
        let _admin = self.admin.lock();
        if self.topic(&new.name).is_some() {
            return Err(BrokerError::TopicAlreadyExists(new.name));
        }
        let leaders = match &new.assignments {
            Some(a) => a.iter().map(|replicas| replicas[0]).collect(),
            None => self.assign_leaders(&new.name, 0, partitions),
        };
        let record = TopicRecord {
            name: new.name.clone(),
            id: Uuid::new_v4(),
            partitions,
            configs: new.configs.clone(),
            leaders,
        };
        if validate_only {
            return Ok(Arc::new(Topic {
                name: record.name,
                id: record.id,
                leaders: RwLock::new(record.leaders),
                partitions: RwLock::new(Vec::new()),
                configs: RwLock::new(TopicConfigs {
                    overrides: record.configs,
                    effective,
                }),
            }));
        }
        let topic = self.open_topic(&record)?;
        self.store.create_topic(&record)?;
        let mut maps = self.topics.write();
        maps.by_id.insert(topic.id, Arc::clone(&topic));
        maps.by_name.insert(topic.name.clone(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<Uuid, BrokerError> {
        let _admin = self.admin.lock();
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        self.store.delete_topic(name, topic.id)?;
        self.drop_topic_locally(&topic);
        self.tiering.forget_topic(topic.id, name);
        tracing::info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// Forgets a deleted topic and removes the local data of its partitions here (the
    /// archive is the deleting broker's to remove).
    fn drop_topic_locally(&self, topic: &Topic) {
        let name = topic.name();
        {
            let mut maps = self.topics.write();
            if maps.by_name.get(name).is_some_and(|t| t.id == topic.id) {
                maps.by_name.remove(name);
            }
            maps.by_id.remove(&topic.id);
        }
        for partition in topic.partitions() {
            let mut state = partition.state.lock();
            state.deleted = true;
            if let Err(e) = remove_in_background(state.log.dir()) {
                tracing::warn!(dir = %state.log.dir().display(), error = %e, "could not rename deleted partition");
            }
            drop(state);
            partition.appended.notify_waiters();
        }
        self.groups.forget_topic(name);
    }

    /// Raises a topic's partition count to `count`.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock();
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        let current = topic.partition_count();
        if count <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions; the new count {count} must be larger"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let effective = topic.effective();
        let new_leaders = self.assign_leaders(name, current, count - current);
        let mut added = Vec::new();
        for (index, leader) in (current..count).zip(&new_leaders) {
            if *leader == self.config.node_id {
                added.push(self.open_partition(&Arc::from(name), topic.id, index, &effective)?);
            }
        }
        self.store.add_partitions(name, current, &new_leaders)?;
        let mut leaders = topic.leaders();
        leaders.extend(new_leaders);
        topic.partitions.write().extend(added);
        *topic.leaders.write() = leaders;
        Ok(())
    }

    /// Replaces a topic's config overrides with `overrides` and applies them to its partitions.
    pub fn set_topic_configs(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        for (k, v) in &overrides {
            validate_entry(k, v)?;
        }
        // Checked before the admin lock is taken.
        self.config.log.effective(&overrides)?;
        let _admin = self.admin.lock();
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        if validate_only {
            return Ok(());
        }
        self.store.set_topic_configs(name, &overrides)?;
        self.apply_configs(&topic, overrides)
    }

    /// Makes `overrides` a topic's config overrides in memory and applies them to the
    /// partitions here.
    fn apply_configs(
        &self,
        topic: &Topic,
        overrides: BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let effective = self.config.log.effective(&overrides)?;
        *topic.configs.write() = TopicConfigs {
            overrides,
            effective: effective.clone(),
        };
        for p in topic.partitions() {
            p.with_log(|log| Ok(log.set_config(effective.log.clone())?))?;
        }
        Ok(())
    }

    /// Validates and appends one produced batch; with `flush.messages` due, fsyncs before
    /// returning. `acks` is the request's, already checked to be 0, 1 or -1.
    pub async fn produce(
        &self,
        topic: &Topic,
        partition: &Partition,
        records: &Bytes,
        acks: i16,
    ) -> Result<AppendInfo, BrokerError> {
        let effective = topic.effective();
        if acks == -1 && effective.min_insync_replicas > 1 {
            return Err(BrokerError::NotEnoughReplicas(format!(
                "min.insync.replicas={} but the partition has 1 replica",
                effective.min_insync_replicas
            )));
        }
        let limits = BatchLimits {
            max_message_bytes: effective.max_message_bytes,
            max_decompressed_bytes: self.config.max_decompressed_batch_bytes,
        };
        let summary = validate_batch(records, &limits)?;
        let (info, flush) = partition.append(records, effective.log_append_time)?;
        if info.rolled && effective.remote_storage_enable {
            self.tiering.wake();
        }
        if info.duplicate {
            self.metrics.duplicate_batches.inc();
            return Ok(info);
        }
        self.metrics.records_in.inc_by(summary.records as u64);
        if let Some(handle) = flush {
            let started = Instant::now();
            let handle = tokio::task::spawn_blocking(move || handle.sync().map(|()| handle))
                .await
                .map_err(|e| BrokerError::Storage(format!("flush task failed: {e}")))??;
            self.metrics
                .flush_duration
                .observe(started.elapsed().as_secs_f64());
            partition.mark_flushed(&handle);
        }
        Ok(info)
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics().iter().flat_map(|t| t.partitions()).collect()
    }

    /// (topic, partition, records behind the log end) of partitions read from the archive in
    /// the last minute.
    pub fn replay_lag(&self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for (topic_id, partition, offset) in self.tiering.recent_archive_reads(60_000) {
            let Some(p) = self
                .topic_by_id(topic_id)
                .and_then(|t| t.partition(partition))
            else {
                continue;
            };
            if let Ok((_, end)) = p.offsets() {
                out.push((p.topic().to_string(), partition, (end - offset).max(0)));
            }
        }
        out.sort();
        out
    }

    /// Figures for the per-partition metrics.
    pub fn partition_stats(&self) -> Vec<PartitionStats> {
        self.all_partitions()
            .iter()
            .filter_map(|p| p.stats())
            .collect()
    }

    /// Archive figures of every partition: (topic, partition label, figures).
    pub fn archive_stats(&self) -> Vec<(String, String, PartitionArchiveStats)> {
        let mut out = Vec::new();
        for topic in self.topics() {
            let archiving = topic.effective().remote_storage_enable;
            for p in topic.partitions().iter().filter(|p| !p.is_deleted()) {
                out.push((
                    p.topic().to_string(),
                    p.index().to_string(),
                    self.tiering.partition_stats(p, archiving),
                ));
            }
        }
        out
    }

    /// fsyncs every partition whose `flush.ms` has passed.
    pub async fn flush_due_partitions(&self) {
        for p in self.all_partitions() {
            let handle = {
                let state = p.state.lock();
                if state.deleted || !state.log.flush_due_by_time() {
                    continue;
                }
                state.log.flush_handle()
            };
            let started = Instant::now();
            match tokio::task::spawn_blocking(move || handle.sync().map(|()| handle)).await {
                Ok(Ok(handle)) => {
                    self.metrics
                        .flush_duration
                        .observe(started.elapsed().as_secs_f64());
                    p.mark_flushed(&handle);
                }
                Ok(Err(e)) => {
                    tracing::error!(topic = p.topic(), partition = p.index, error = %e, "flush failed")
                }
                Err(e) => tracing::error!(error = %e, "flush task failed"),
            }
        }
    }

    /// Applies retention to every partition.
    pub fn apply_retention(&self) {
        for p in self.all_partitions() {
            self.apply_retention_to(&p);
        }
    }

    /// Applies retention to one partition, across both tiers: local segments that `retention.*`
    /// or (once archived) `local.retention.*` no longer allow are deleted, and archived
    /// segments that `retention.*` no longer allow leave the manifest and the bucket.
    pub fn apply_retention_to(&self, p: &Partition) {
        let archived: Vec<_> = self
            .tiering
            .catalog()
            .segments(p.topic_id, p.index)
            .iter()
            .map(ArchivedSegment::summary)
            .collect();
        match p.with_log(|log| Ok(log.apply_retention(&archived)?)) {
            Err(BrokerError::UnknownTopicOrPartition(_)) => {}
            Ok(outcome) => {
                if outcome.local_deleted > 0 {
                    tracing::debug!(
                        topic = p.topic(),
                        partition = p.index,
                        segments = outcome.local_deleted,
                        "retention deleted local segments"
                    );
                }
                if let Some(start) = outcome.archive_start_offset {
                    self.tiering
                        .delete_archived_before(p.topic_id, p.index, start);
                }
            }
            Err(e) => {
                tracing::error!(topic = p.topic(), partition = p.index, error = %e, "retention failed")
            }
        }
    }

    /// Runs the flusher and the retention checker until `shutdown`.
    pub async fn run_background(self: Arc<Self>, shutdown: CancellationToken) {
        let mut flush = tokio::time::interval(self.config.flush_check_interval);
        let mut retention = tokio::time::interval(std::time::Duration::from_millis(
            self.config.log.retention_check_interval_ms,
        ));
        let mut groups = tokio::time::interval(std::time::Duration::from_millis(100));
        groups.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let tiering =
            tokio::spawn(Arc::clone(&self.tiering).run(Arc::clone(&self), shutdown.clone()));
        tokio::spawn(Arc::clone(&self).follow_metadata(shutdown.clone()));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = tiering.await;
                    return;
                }
                _ = flush.tick() => self.flush_due_partitions().await,
                _ = groups.tick() => self.groups.tick(),
                _ = retention.tick() => {
                    let me = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || me.apply_retention()).await;
                }
            }
        }
    }

    /// fsyncs every partition and snapshots its producer state (shutdown), so the next start
    /// need not replay the active segment.
    pub fn flush_all(&self) -> Result<(), BrokerError> {
        for p in self.all_partitions() {
            match p.with_log(|log| {
                log.flush()?;
                Ok(log.write_producer_snapshot()?)
            }) {
                Ok(()) | Err(BrokerError::UnknownTopicOrPartition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Renames a partition directory to `<name>.<uuid>-delete` and removes it on a thread of its
/// own (what is left after a crash is removed at the next start).
fn remove_in_background(dir: &Path) -> std::io::Result<()> {
    let doomed = dir.with_file_name(format!(
        "{}.{}{DELETE_SUFFIX}",
        dir.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        Uuid::new_v4().simple()
    ));
    fs::rename(dir, &doomed)?;
    std::thread::spawn(move || {
        if let Err(e) = fs::remove_dir_all(&doomed) {
            tracing::warn!(dir = %doomed.display(), error = %e, "could not remove deleted partition");
        }
    });
    Ok(())
}

/// The topic id file in each partition directory (Kafka's `partition.metadata`).
const PARTITION_METADATA: &str = "partition.metadata";

/// Makes `dir` the directory of a partition of topic `topic_id`: a directory left by another
/// topic of the same name (deleted and recreated while this broker was down) is set aside
/// and removed, never read as this topic's data; a new directory, or one from before the id
/// file, gets the file.
fn claim_partition_dir(dir: &Path, topic_id: Uuid) -> Result<(), BrokerError> {
    let storage = |e: std::io::Error| BrokerError::Storage(format!("{e} path={}", dir.display()));
    let path = dir.join(PARTITION_METADATA);
    let expected = format!("version: 0\ntopic_id: {topic_id}\n");
    match fs::read_to_string(&path) {
        Ok(found) if found == expected => return Ok(()),
        Ok(found) => {
            tracing::warn!(
                dir = %dir.display(),
                found = %found.trim().replace('\n', ", "),
                topic_id = %topic_id,
                "partition directory of another topic with the same name; removing it"
            );
            remove_in_background(dir).map_err(storage)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(storage(e)),
    }
    fs::create_dir_all(dir).map_err(storage)?;
    crate::store::write_atomically(&path, expected.as_bytes())
}

fn remove_deleted_dirs(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(DELETE_SUFFIX)
            && entry.path().is_dir()
            && let Err(e) = fs::remove_dir_all(entry.path())
        {
            tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove deleted partition");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::encode;
    use kafka_protocol::records::Compression;
    use sediment_log::ManualClock;

    pub(crate) fn memory_archive() -> ArchiveStore {
        ArchiveStore::from_store(
            Arc::new(object_store::memory::InMemory::new()),
            object_store::path::Path::default(),
            "memory://",
        )
    }

    fn open(dir: &Path) -> Arc<Broker> {
        Broker::open(
            BrokerConfig::new(dir),
            Arc::new(ManualClock::new(1_700_000_000_000)),
            Arc::new(Metrics::new()),
            memory_archive(),
            Arc::new(sediment_archive::NoCache::default()),
        )
        .unwrap()
    }

    fn new_topic(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            assignments: None,
            configs: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn topics_survive_restart_and_deletion_removes_data() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        let t = broker.create_topic(new_topic("orders", 2), false).unwrap();
        let p = t.partition(1).unwrap();
        let info = broker
            .produce(&t, &p, &encode(&[b"a", b"b"], Compression::None), 1)
            .await
            .unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 1));
        let id = t.id();
        drop((t, p));
        drop(broker);
        let broker = open(dir.path());
        let t = broker.topic("orders").unwrap();
        assert_eq!(t.id(), id);
        assert_eq!(t.partition(1).unwrap().offsets().unwrap(), (0, 2));
        broker.delete_topic("orders").unwrap();
        assert!(broker.topic("orders").is_none());
        assert!(
            t.partition(1).unwrap().offsets().is_err(),
            "a deleted partition refuses use"
        );
        drop(broker);
        let broker = open(dir.path());
        assert!(broker.topic("orders").is_none());
        assert!(!dir.path().join("orders-1").exists());
    }

    #[test]
    fn a_partition_directory_of_another_topic_with_the_same_name_is_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("orders-0");
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        claim_partition_dir(&p, a).unwrap();
        fs::write(p.join("00000000000000000000.log"), b"old").unwrap();
        claim_partition_dir(&p, a).unwrap();
        assert!(
            p.join("00000000000000000000.log").exists(),
            "the same topic keeps its data"
        );
        claim_partition_dir(&p, b).unwrap();
        assert!(
            !p.join("00000000000000000000.log").exists(),
            "another topic's data is set aside"
        );
        assert!(
            fs::read_to_string(p.join(PARTITION_METADATA))
                .unwrap()
                .contains(&b.to_string())
        );
    }

    #[test]
    fn a_second_broker_cannot_share_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let err = Broker::open(
            BrokerConfig::new(dir.path()),
            Arc::new(ManualClock::new(0)),
            Arc::new(Metrics::new()),
            memory_archive(),
            Arc::new(sediment_archive::NoCache::default()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn create_topic_checks_names_replication_and_configs() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path());
        assert_eq!(
            broker
                .create_topic(new_topic("bad name", 1), false)
                .unwrap_err()
                .code(),
            17
        );
        let mut rf = new_topic("rf", 1);
        rf.replication_factor = 3;
        assert_eq!(broker.create_topic(rf, false).unwrap_err().code(), 38);
        let mut cfg = new_topic("cfg", 1);
        cfg.configs.insert("retention.ms".into(), "abc".into());
        assert_eq!(broker.create_topic(cfg, false).unwrap_err().code(), 40);
        broker.create_topic(new_topic("ok", 1), true).unwrap();
        assert!(
            broker.topic("ok").is_none(),
            "validate_only creates nothing"
        );
        broker.create_topic(new_topic("ok", 1), false).unwrap();
        assert_eq!(
            broker
                .create_topic(new_topic("ok", 1), false)
                .unwrap_err()
                .code(),
            36
        );
        broker.create_partitions("ok", 4, false).unwrap();
        assert_eq!(broker.topic("ok").unwrap().partition_count(), 4);
        assert_eq!(
            broker.create_partitions("ok", 2, false).unwrap_err().code(),
            37
        );
    }
}
