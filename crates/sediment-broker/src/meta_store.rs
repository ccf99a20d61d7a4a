//! The broker's metadata in the Raft metadata service (`sediment-meta`): the topic registry
//! and producer-id blocks ([`MetadataStore`]), committed offsets ([`OffsetStore`]) and the
//! archive manifest ([`Catalog`]), all through one [`MetaService`].
//!
//! Writes are Raft commands, durable when they return (concurrent ones share a log entry).
//! Reads look at a local state without copying it:
//! - embedded (a single voter in this process): the voter's applied state, which holds every
//!   acknowledged write;
//! - with a metadata quorum elsewhere (`process_roles = broker`): a [`MetaReplica`], the copy
//!   this broker keeps by following the voters' applied commands. A write returns once the
//!   copy shows it, so the broker reads back its own changes; other brokers' changes arrive a
//!   moment later, and [`MetadataStore::changes`] tells the broker when.
//!
//! [`MetaStores::import_files`] moves a data directory's metadata files (from before the
//! metadata service) into it once.

use std::collections::BTreeMap;
use std::path::Path;

use sediment_archive::{ArchiveError, ArchivedSegment, Catalog, CommitOutcome};
use sediment_meta::{
    Command, Heartbeat, MetaReplica, MetaService, MetaState, OffsetToCommit, Outcome,
};
use uuid::Uuid;

use crate::catalog::FileCatalog;
use crate::errors::BrokerError;
use crate::group::offsets::{CommittedOffset, FileOffsetStore, OffsetStore, TopicPartition};
use crate::store::{ClusterBroker, FileMetadataStore, MetadataStore, TopicRecord};

/// Least time between two registrations that repair a registration the metadata changed.
const REREGISTER_SPACING: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens the metadata service of a data directory (given the directory, once its lock is
/// held) for [`crate::Broker::open_with`].
pub type OpenMeta = Box<dyn FnOnce(&Path) -> Result<MetaStores, BrokerError> + Send>;

/// Where the metadata is: the node in this process, or a copy of a remote quorum's.
#[derive(Debug, Clone)]
enum Backend {
    Local(MetaService),
    Remote(MetaReplica),
}

impl Backend {
    fn view<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        match self {
            Backend::Local(m) => m.view(f),
            Backend::Remote(r) => r.view(f),
        }
    }

    fn write_blocking(&self, cmd: Command) -> Result<Outcome, sediment_meta::MetaError> {
        match self {
            Backend::Local(m) => m.write_blocking(cmd),
            Backend::Remote(r) => r.write_blocking(cmd),
        }
    }
}

/// The three storage traits over the metadata service.
#[derive(Debug, Clone)]
pub struct MetaStores {
    meta: Backend,
    /// This broker's node id.
    node_id: i32,
    /// This broker's registration epoch (0: not registered).
    epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The first refusal among `outcome` and the outcomes inside it.
fn refusal(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Refused(why) => Some(why),
        Outcome::Batch(all) => all.iter().find_map(refusal),
        _ => None,
    }
}

fn meta_error(e: sediment_meta::MetaError) -> BrokerError {
    BrokerError::Storage(format!("metadata service: {e}"))
}

impl MetaStores {
    /// Stores over the metadata node `meta` in this process, for broker `node_id`.
    pub fn new(meta: MetaService, node_id: i32) -> Self {
        Self::with(Backend::Local(meta), node_id)
    }

    /// Stores over `replica`, the followed copy of a remote quorum's metadata.
    pub fn remote(replica: MetaReplica, node_id: i32) -> Self {
        Self::with(Backend::Remote(replica), node_id)
    }

    fn with(meta: Backend, node_id: i32) -> Self {
        Self {
            meta,
            node_id,
            epoch: Default::default(),
        }
    }

    /// The cluster's id: `proposed` if the cluster has none yet (this is its first broker).
    pub fn init_cluster_id(&self, proposed: &str) -> Result<String, BrokerError> {
        match self.write(Command::InitClusterId {
            id: proposed.to_string(),
        })? {
            Outcome::ClusterId(id) => Ok(id),
            other => Err(BrokerError::Storage(format!(
                "metadata service: unexpected answer to the cluster id: {other:?}"
            ))),
        }
    }

    /// Heartbeats to the metadata leader every `interval` until `shutdown`, registering
    /// again (as `me`) when the quorum no longer knows this broker's registration. Only with
    /// a remote quorum: the embedded single voter fences nobody.
    pub async fn run_heartbeats(
        &self,
        me: ClusterBroker,
        interval: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let Backend::Remote(replica) = &self.meta else {
            return;
        };
        let mut tick = tokio::time::interval(interval);
        // When the registration differs from `me` (a metadata leader of an older version
        // dropped fields it did not know, such as the listeners, during a rolling upgrade),
        // register again, at most this often.
        let mut last_repair: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let beat = Heartbeat {
                id: self.node_id,
                epoch: self.epoch.load(std::sync::atomic::Ordering::Relaxed),
            };
            match replica.heartbeat(beat).await {
                Ok(_) => {
                    let stale = replica.view(|s| {
                        s.brokers.get(&me.id).is_some_and(|b| {
                            (&b.host, b.port, &b.rack, &b.listeners)
                                != (&me.host, me.port, &me.rack, &me.listeners)
                        })
                    });
                    if stale && last_repair.is_none_or(|t| t.elapsed() >= REREGISTER_SPACING) {
                        last_repair = Some(std::time::Instant::now());
                        tracing::warn!(
                            "the metadata holds another address or listener list for this \
                             broker than it registered; registering again"
                        );
                        self.register_again(replica, &me).await;
                    }
                }
                Err(sediment_meta::MetaError::Refused(why)) => {
                    tracing::warn!(reason = %why, "registering with the metadata quorum again");
                    self.register_again(replica, &me).await;
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat to the metadata quorum failed"),
            }
        }
    }

    async fn register_again(&self, replica: &MetaReplica, me: &ClusterBroker) {
        match replica.write(register_command(me)).await {
            Ok(Outcome::BrokerEpoch(e)) => {
                self.epoch.store(e, std::sync::atomic::Ordering::Relaxed)
            }
            Ok(other) => tracing::error!(?other, "unexpected answer to a registration"),
            Err(e) => tracing::warn!(error = %e, "registration failed; retrying"),
        }
    }

    /// Replicates `cmd`; a refusal is an error.
    pub(crate) fn write(&self, cmd: Command) -> Result<Outcome, BrokerError> {
        let outcome = self.meta.write_blocking(cmd).map_err(meta_error)?;
        if let Some(why) = refusal(&outcome) {
            return Err(BrokerError::Storage(format!(
                "metadata service refused: {why}"
            )));
        }
        Ok(outcome)
    }

    /// Moves the metadata files of a data directory written before the metadata service
    /// (`topics.json`, `producer_ids.json`, `groups/offsets.log`, `archive-manifest.log`) into
    /// it, in one command, then renames them `*.imported`. Does nothing when there are no such
    /// files. When the service already holds metadata the files are left alone (renamed, with
    /// a warning): they are from an import that completed before a crash.
    pub fn import_files(&self, dir: &Path) -> Result<(), BrokerError> {
        let files = [
            dir.join("topics.json"),
            dir.join("producer_ids.json"),
            dir.join("groups").join("offsets.log"),
            dir.join("archive-manifest.log"),
        ];
        let present: Vec<&std::path::PathBuf> = files.iter().filter(|p| p.exists()).collect();
        if present.is_empty() {
            return Ok(());
        }
        let empty = self.meta.view(|s: &MetaState| {
            s.topics.is_empty()
                && s.offsets.is_empty()
                && s.segments.all().next().is_none()
                && s.next_producer_id == 0
        });
        if empty {
            let mut cmds = Vec::new();
            let topics = FileMetadataStore::new(dir);
            for t in topics.load_topics()? {
                cmds.push(Command::CreateTopic {
                    leaders: vec![self.node_id; t.partitions.max(0) as usize],
                    name: t.name,
                    id: t.id,
                    configs: t.configs,
                });
            }
            // Every producer id the file store handed out stays reserved.
            let next = topics.next_producer_id()?;
            if next > 0 {
                cmds.push(Command::AllocateProducerIds { count: next });
            }
            if files[2].exists() {
                let offsets = FileOffsetStore::open(dir)?;
                for group in offsets.groups() {
                    if offsets.group_offsets(&group).is_empty() {
                        continue;
                    }
                    cmds.push(Command::CommitOffsets {
                        offsets: offsets
                            .group_offsets(&group)
                            .into_iter()
                            .map(|(tp, o)| to_meta(&tp, &o))
                            .collect(),
                        group,
                    });
                }
            }
            if files[3].exists() {
                let catalog = FileCatalog::open(dir)?;
                for (topic_id, partition) in catalog.partitions() {
                    for segment in catalog.segments(topic_id, partition) {
                        cmds.push(Command::CommitSegment { segment });
                    }
                }
            }
            let n = cmds.len();
            self.write(Command::Batch(cmds))?;
            tracing::info!(
                commands = n,
                "imported the data directory's metadata files into the metadata service"
            );
        } else {
            tracing::warn!(
                "the metadata service already holds metadata; the data directory's older metadata files are set aside"
            );
        }
        for path in present {
            let mut imported = path.clone().into_os_string();
            imported.push(".imported");
            std::fs::rename(path, &imported).map_err(|e| {
                BrokerError::Storage(format!("cannot rename {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }
}

fn to_meta(tp: &TopicPartition, o: &CommittedOffset) -> OffsetToCommit {
    OffsetToCommit {
        topic: tp.0.clone(),
        partition: tp.1,
        offset: sediment_meta::CommittedOffset {
            offset: o.offset,
            metadata: Some(o.metadata.clone()),
            leader_epoch: o.leader_epoch,
            commit_timestamp_ms: o.commit_timestamp,
        },
    }
}

fn from_meta(o: &sediment_meta::CommittedOffset) -> CommittedOffset {
    CommittedOffset {
        offset: o.offset,
        leader_epoch: o.leader_epoch,
        metadata: o.metadata.clone().unwrap_or_default(),
        commit_timestamp: o.commit_timestamp_ms,
    }
}

fn register_command(me: &ClusterBroker) -> Command {
    Command::RegisterBroker {
        id: me.id,
        host: me.host.clone(),
        port: me.port,
        rack: me.rack.clone(),
        listeners: me.listeners.clone(),
    }
}

impl MetadataStore for MetaStores {
    fn load_topics(&self) -> Result<Vec<TopicRecord>, BrokerError> {
        Ok(self.meta.view(|s| {
            s.topics
                .iter()
                .map(|(name, t)| TopicRecord {
                    name: name.clone(),
                    id: t.id,
                    partitions: t.partitions.len() as i32,
                    configs: t.configs.clone(),
                    leaders: t.partitions.iter().map(|p| p.leader).collect(),
                })
                .collect()
        }))
    }

    // Each change is one command of its own, checked where it is applied: a broker's view of
    // the topics may lag other brokers' changes, so nothing is derived from the whole list.
    fn create_topic(&self, topic: &TopicRecord) -> Result<(), BrokerError> {
        let cmd = Command::CreateTopic {
            name: topic.name.clone(),
            id: topic.id,
            leaders: topic.leaders_or(self.node_id),
            configs: topic.configs.clone(),
        };
        match self.meta.write_blocking(cmd).map_err(meta_error)? {
            Outcome::Refused(why) if why.contains("already exists") => {
                Err(BrokerError::TopicAlreadyExists(topic.name.clone()))
            }
            Outcome::Refused(why) => Err(BrokerError::Storage(format!(
                "metadata service refused: {why}"
            ))),
            _ => Ok(()),
        }
    }

    fn delete_topic(&self, name: &str, id: Uuid) -> Result<(), BrokerError> {
        self.write(Command::DeleteTopic {
            name: name.to_string(),
            id: Some(id),
        })?;
        Ok(())
    }

    fn add_partitions(&self, name: &str, current: i32, leaders: &[i32]) -> Result<(), BrokerError> {
        match self
            .meta
            .write_blocking(Command::AddPartitions {
                name: name.to_string(),
                current: current.max(0) as usize,
                leaders: leaders.to_vec(),
            })
            .map_err(meta_error)?
        {
            Outcome::Refused(why) => Err(BrokerError::InvalidPartitions(why)),
            _ => Ok(()),
        }
    }

    fn set_topic_configs(
        &self,
        name: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let remove = self.meta.view(|s| {
            s.topics.get(name).map_or_else(Vec::new, |t| {
                t.configs
                    .keys()
                    .filter(|k| !configs.contains_key(*k))
                    .cloned()
                    .collect()
            })
        });
        self.write(Command::AlterTopicConfigs {
            name: name.to_string(),
            set: configs.clone(),
            remove,
        })?;
        Ok(())
    }

    fn live_brokers(&self) -> Vec<ClusterBroker> {
        self.meta.view(|s| {
            s.live_brokers()
                .map(|(id, b)| ClusterBroker {
                    id,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                    listeners: b.listeners.clone(),
                })
                .collect()
        })
    }

    fn register(&self, me: &ClusterBroker) -> Result<(), BrokerError> {
        match self.write(register_command(me))? {
            Outcome::BrokerEpoch(e) => {
                self.epoch.store(e, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    node_id = me.id,
                    epoch = e,
                    "registered with the metadata service"
                );
                Ok(())
            }
            other => Err(BrokerError::Storage(format!(
                "metadata service: unexpected answer to a registration: {other:?}"
            ))),
        }
    }

    fn topics_version(&self) -> u64 {
        self.meta.view(|s| s.topics_version)
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match &self.meta {
            Backend::Local(_) => None,
            Backend::Remote(r) => Some(r.subscribe()),
        }
    }

    fn save_topics(&self, topics: &[TopicRecord]) -> Result<(), BrokerError> {
        let cmds = self.meta.view(|s| {
            let mut cmds = Vec::new();
            let wanted: BTreeMap<&str, &TopicRecord> =
                topics.iter().map(|t| (t.name.as_str(), t)).collect();
            for name in s.topics.keys() {
                if !wanted.contains_key(name.as_str()) {
                    cmds.push(Command::DeleteTopic {
                        name: name.clone(),
                        id: None,
                    });
                }
            }
            for t in topics {
                let leaders = t.leaders_or(self.node_id);
                let create = Command::CreateTopic {
                    name: t.name.clone(),
                    id: t.id,
                    leaders: leaders.clone(),
                    configs: t.configs.clone(),
                };
                match s.topics.get(&t.name) {
                    None => cmds.push(create),
                    Some(have) if have.id != t.id => {
                        cmds.push(Command::DeleteTopic {
                            name: t.name.clone(),
                            id: Some(have.id),
                        });
                        cmds.push(create);
                    }
                    Some(have) => {
                        let count = have.partitions.len() as i32;
                        if t.partitions > count {
                            cmds.push(Command::AddPartitions {
                                name: t.name.clone(),
                                current: have.partitions.len(),
                                leaders: leaders[count as usize..].to_vec(),
                            });
                        }
                        if have.configs != t.configs {
                            cmds.push(Command::AlterTopicConfigs {
                                name: t.name.clone(),
                                set: t.configs.clone(),
                                remove: have
                                    .configs
                                    .keys()
                                    .filter(|k| !t.configs.contains_key(*k))
                                    .cloned()
                                    .collect(),
                            });
                        }
                    }
                }
            }
            cmds
        });
        if !cmds.is_empty() {
            self.write(Command::Batch(cmds))?;
        }
        Ok(())
    }

    fn allocate_producer_ids(&self, count: i64) -> Result<i64, BrokerError> {
        match self.write(Command::AllocateProducerIds { count })? {
            Outcome::ProducerIds { first, .. } => Ok(first),
            other => Err(BrokerError::Storage(format!(
                "metadata service: unexpected answer to a producer-id allocation: {other:?}"
            ))),
        }
    }
}

impl OffsetStore for MetaStores {
    fn commit(
        &self,
        group: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<(), BrokerError> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.write(Command::CommitOffsets {
            group: group.to_string(),
            offsets: offsets.iter().map(|(tp, o)| to_meta(tp, o)).collect(),
        })?;
        Ok(())
    }

    fn fetch(&self, group: &str, tp: &TopicPartition) -> Option<CommittedOffset> {
        self.meta
            .view(|s| s.offsets.get(group)?.get(&tp.0)?.get(&tp.1).map(from_meta))
    }

    fn group_offsets(&self, group: &str) -> Vec<(TopicPartition, CommittedOffset)> {
        self.meta.view(|s| {
            s.offsets
                .get(group)
                .map(|topics| {
                    topics
                        .iter()
                        .flat_map(|(topic, parts)| {
                            parts
                                .iter()
                                .map(|(p, o)| ((topic.clone(), *p), from_meta(o)))
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    fn groups(&self) -> Vec<String> {
        self.meta.view(|s| s.offsets.keys().cloned().collect())
    }

    fn has_group(&self, group: &str) -> bool {
        self.meta.view(|s| s.offsets.contains_key(group))
    }

    fn delete(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<(), BrokerError> {
        if !self.has_group(group) {
            return Ok(());
        }
        let cmd = match partitions {
            None => Command::DeleteGroupOffsets {
                group: group.to_string(),
            },
            Some(ps) => Command::DeleteOffsets {
                group: group.to_string(),
                partitions: ps.to_vec(),
            },
        };
        self.write(cmd)?;
        Ok(())
    }
}

fn catalog_error(e: BrokerError) -> ArchiveError {
    ArchiveError::Catalog(e.to_string())
}

impl Catalog for MetaStores {
    fn commit(&self, segment: ArchivedSegment) -> sediment_archive::Result<CommitOutcome> {
        // The rules are checked where the command is applied; checking here first gives the
        // caller the catalog's own error for a refused entry.
        if !self.meta.view(|s| s.segments.check(&segment))? {
            return Ok(CommitOutcome::AlreadyPresent);
        }
        match self
            .write(Command::CommitSegment { segment })
            .map_err(catalog_error)?
        {
            Outcome::Unchanged => Ok(CommitOutcome::AlreadyPresent),
            _ => Ok(CommitOutcome::Added),
        }
    }

    fn segments(&self, topic_id: Uuid, partition: i32) -> Vec<ArchivedSegment> {
        self.meta.view(|s| s.segments.segments(topic_id, partition))
    }

    fn partitions(&self) -> Vec<(Uuid, i32)> {
        self.meta.view(|s| s.segments.partitions())
    }

    fn segment_at(&self, topic_id: Uuid, partition: i32, offset: i64) -> Option<ArchivedSegment> {
        self.meta
            .view(|s| s.segments.segment_at(topic_id, partition, offset))
    }

    fn range(&self, topic_id: Uuid, partition: i32) -> Option<(i64, i64)> {
        self.meta.view(|s| s.segments.range(topic_id, partition))
    }

    fn remove_before(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> sediment_archive::Result<Vec<ArchivedSegment>> {
        let removed = self
            .meta
            .view(|s| s.segments.before(topic_id, partition, offset));
        if !removed.is_empty() {
            self.write(Command::RemoveSegmentsBefore {
                topic_id,
                partition,
                offset,
            })
            .map_err(catalog_error)?;
        }
        Ok(removed)
    }

    fn remove_topic(&self, topic_id: Uuid) -> sediment_archive::Result<Vec<ArchivedSegment>> {
        let removed = self.meta.view(|s| s.segments.topic(topic_id));
        if !removed.is_empty() {
            self.write(Command::RemoveTopicSegments { topic_id })
                .map_err(catalog_error)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sediment_meta::MetaOptions;

    #[tokio::test(flavor = "multi_thread")]
    async fn heartbeats_repair_a_registration_that_lost_its_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let voters = BTreeMap::from([(1u64, addr.clone())]);
        let meta =
            MetaService::open_cluster(&dir.path().join("meta"), 1, &voters, MetaOptions::default())
                .await
                .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(meta.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        meta.wait_for_leader(std::time::Duration::from_secs(20))
            .await
            .unwrap();
        let client = sediment_meta::MetaClient::new(vec![addr], std::time::Duration::from_secs(20));
        let replica = MetaReplica::connect(client).await.unwrap();
        replica.follow();
        let stores = MetaStores::remote(replica, 7);
        let me = ClusterBroker {
            id: 7,
            host: "b7".into(),
            port: 9092,
            rack: None,
            listeners: vec![sediment_meta::Endpoint {
                name: "SSL".into(),
                host: "b7.apps.example.com".into(),
                port: 443,
            }],
        };
        // What a metadata leader of an older version logs for that registration.
        let lost = ClusterBroker {
            listeners: Vec::new(),
            ..me.clone()
        };
        let s = stores.clone();
        tokio::task::spawn_blocking(move || s.register(&lost))
            .await
            .unwrap()
            .unwrap();
        let listeners = |s: &MetaStores| {
            s.live_brokers()
                .into_iter()
                .find(|b| b.id == 7)
                .map(|b| b.listeners)
        };
        assert_eq!(listeners(&stores), Some(Vec::new()));

        let shutdown = tokio_util::sync::CancellationToken::new();
        let beats = tokio::spawn({
            let (s, me, shutdown) = (stores.clone(), me.clone(), shutdown.clone());
            async move {
                s.run_heartbeats(me, std::time::Duration::from_millis(100), shutdown)
                    .await
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while listeners(&stores) != Some(me.listeners.clone()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the registration was not repaired: {:?}",
                stores.live_brokers()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        beats.await.unwrap();
        let _ = stop.send(());
    }

    fn record(name: &str, partitions: i32, configs: &[(&str, &str)]) -> TopicRecord {
        TopicRecord {
            name: name.into(),
            id: Uuid::from_u128(u128::from(name.len() as u32) * 1000 + partitions as u128),
            partitions,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            leaders: vec![1; partitions as usize],
        }
    }

    fn offset(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp: 17,
        }
    }

    fn segment(topic_id: Uuid, base: i64, last: i64) -> ArchivedSegment {
        ArchivedSegment {
            topic: "orders".into(),
            topic_id,
            partition: 0,
            base_offset: base,
            last_offset: last,
            min_timestamp: 1,
            max_timestamp: 2,
            rows: (last - base + 1) as u64,
            segment_bytes: 1000,
            segment_crc32c: 7,
            record_bytes: 900,
            key: format!("topic=orders/partition=0/{base:020}-{last:020}-x.parquet"),
            object_bytes: 300,
            row_groups: vec![],
            leader_epochs: vec![(0, base)],
            schema_version: 1,
            archived_at_ms: 5,
        }
    }

    fn sorted(mut v: Vec<TopicRecord>) -> Vec<TopicRecord> {
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_older_data_directory_is_imported_once_then_everything_goes_through_raft() {
        let dir = tempfile::tempdir().unwrap();
        let orders = record("orders", 3, &[("retention.ms", "1000")]);
        let audit = record("audit", 1, &[]);
        // What a broker from before the metadata service left in its data directory.
        {
            let files = FileMetadataStore::new(dir.path());
            files.save_topics(&[orders.clone(), audit.clone()]).unwrap();
            assert_eq!(files.allocate_producer_ids(1000).unwrap(), 0);
            let offsets = FileOffsetStore::open(dir.path()).unwrap();
            offsets
                .commit("g", &[(("orders".into(), 1), offset(42))])
                .unwrap();
            let catalog = FileCatalog::open(dir.path()).unwrap();
            catalog.commit(segment(orders.id, 0, 9)).unwrap();
        }
        let meta = MetaService::open_single(&dir.path().join("meta"), 1, MetaOptions::default())
            .await
            .unwrap();
        let stores = MetaStores::new(meta.clone(), 1);
        stores.import_files(dir.path()).unwrap();
        assert!(!dir.path().join("topics.json").exists());
        assert!(dir.path().join("topics.json.imported").exists());
        assert!(dir.path().join("groups/offsets.log.imported").exists());
        assert!(dir.path().join("archive-manifest.log.imported").exists());
        // A second start finds nothing to import.
        stores.import_files(dir.path()).unwrap();

        assert_eq!(
            sorted(stores.load_topics().unwrap()),
            vec![audit.clone(), orders.clone()]
        );
        assert_eq!(
            stores.allocate_producer_ids(1000).unwrap(),
            1000,
            "ids handed out before stay reserved"
        );
        assert_eq!(stores.fetch("g", &("orders".into(), 1)), Some(offset(42)));
        assert_eq!(stores.groups(), vec!["g".to_string()]);
        assert_eq!(
            Catalog::segments(&stores, orders.id, 0),
            vec![segment(orders.id, 0, 9)]
        );

        // Topic changes become the matching commands.
        let mut grown = orders.clone();
        grown.partitions = 5;
        grown.leaders = vec![1; 5];
        grown.configs.remove("retention.ms");
        grown
            .configs
            .insert("segment.bytes".into(), "1048576".into());
        stores.save_topics(std::slice::from_ref(&grown)).unwrap();
        assert_eq!(stores.load_topics().unwrap(), vec![grown.clone()]);
        let leaders = meta.view(|s| s.topics["orders"].partitions.len());
        assert_eq!(leaders, 5);

        // Offsets: commit, delete some partitions, delete the group.
        OffsetStore::commit(
            &stores,
            "g",
            &[
                (("orders".into(), 2), offset(7)),
                (("orders".into(), 1), offset(43)),
            ],
        )
        .unwrap();
        assert_eq!(stores.group_offsets("g").len(), 2);
        stores.delete("g", Some(&[("orders".into(), 1)])).unwrap();
        assert_eq!(
            stores.group_offsets("g"),
            vec![(("orders".into(), 2), offset(7))]
        );
        stores.delete("g", None).unwrap();
        assert!(!stores.has_group("g"));

        // The manifest keeps the catalog's rules and answers lookups.
        assert_eq!(
            Catalog::commit(&stores, segment(orders.id, 0, 9)).unwrap(),
            CommitOutcome::AlreadyPresent
        );
        assert!(Catalog::commit(&stores, segment(orders.id, 5, 12)).is_err());
        assert_eq!(
            Catalog::commit(&stores, segment(orders.id, 10, 19)).unwrap(),
            CommitOutcome::Added
        );
        assert_eq!(stores.range(orders.id, 0), Some((0, 20)));
        assert_eq!(stores.segment_at(orders.id, 0, 12).unwrap().base_offset, 10);
        assert_eq!(stores.remove_before(orders.id, 0, 10).unwrap().len(), 1);
        assert_eq!(stores.range(orders.id, 0), Some((10, 20)));
        assert_eq!(stores.remove_topic(orders.id).unwrap().len(), 1);
        assert_eq!(stores.partitions(), vec![]);

        // Deleting the topic from the registry; everything survives a restart of the node.
        stores.save_topics(&[]).unwrap();
        stores.save_topics(std::slice::from_ref(&audit)).unwrap();
        let before = meta.read().await.unwrap();
        meta.shutdown().await.unwrap();
        drop((stores, meta));
        let meta = MetaService::open_single(&dir.path().join("meta"), 1, MetaOptions::default())
            .await
            .unwrap();
        assert_eq!(meta.read().await.unwrap(), before);
        let stores = MetaStores::new(meta.clone(), 1);
        assert_eq!(stores.load_topics().unwrap(), vec![audit]);
        meta.shutdown().await.unwrap();
    }
}
