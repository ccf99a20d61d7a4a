//! Durable cluster metadata of a single broker: its identity and the topic registry.
//!
//! Topics live behind [`MetadataStore`]; the broker keeps them in the Raft metadata service
//! (`meta_store.rs`). [`FileMetadataStore`] (`<data dir>/topics.json`, replaced atomically on
//! every change) remains to import a data directory from before it, and for unit tests.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::errors::BrokerError;

/// Format version of the files written here.
const FORMAT_VERSION: u32 = 1;

/// What the registry knows about one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Topic name.
    pub name: String,
    /// Topic id (KIP-516), stable for the topic's life.
    pub id: Uuid,
    /// Partition count.
    pub partitions: i32,
    /// Config overrides by Kafka name.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// Leader of each partition, by index; empty when every partition is on this broker
    /// (a single broker).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaders: Vec<i32>,
}

impl TopicRecord {
    /// Leader of each partition: `leaders`, or `node_id` for all when it is empty.
    pub fn leaders_or(&self, node_id: i32) -> Vec<i32> {
        if self.leaders.len() == self.partitions.max(0) as usize {
            self.leaders.clone()
        } else {
            vec![node_id; self.partitions.max(0) as usize]
        }
    }
}

/// Name of the primary (plaintext) Kafka listener, as Kafka names it.
pub const PLAINTEXT_LISTENER: &str = "PLAINTEXT";
/// Name of the TLS Kafka listener, as Kafka names it.
pub const SSL_LISTENER: &str = "SSL";

/// A broker of the cluster as clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBroker {
    /// Node id.
    pub id: i32,
    /// Advertised host of the primary listener.
    pub host: String,
    /// Advertised Kafka port of the primary listener.
    pub port: u16,
    /// Rack.
    pub rack: Option<String>,
    /// Listeners besides the primary one (the TLS listener).
    pub listeners: Vec<sediment_meta::Endpoint>,
}

impl ClusterBroker {
    /// Where clients of `listener` reach this broker; `None` when it has no such listener.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, u16)> {
        if listener == PLAINTEXT_LISTENER {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|e| e.name == listener)
            .map(|e| (e.host.as_str(), e.port))
    }

    /// Kafka's `advertised.listeners` value: `PLAINTEXT://host:port,SSL://host:port`.
    pub fn advertised_listeners(&self) -> String {
        std::iter::once(format!(
            "{PLAINTEXT_LISTENER}://{}:{}",
            self.host, self.port
        ))
        .chain(
            self.listeners
                .iter()
                .map(|e| format!("{}://{}:{}", e.name, e.host, e.port)),
        )
        .collect::<Vec<_>>()
        .join(",")
    }
}

/// Where topic records are kept.
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    /// All topics, in any order.
    fn load_topics(&self) -> Result<Vec<TopicRecord>, BrokerError>;
    /// Replaces the stored topics with `topics`, durably, before returning.
    fn save_topics(&self, topics: &[TopicRecord]) -> Result<(), BrokerError>;
    /// Reserves `count` producer ids never handed out before (by any earlier run) and returns
    /// the first; the reservation is durable before this returns.
    fn allocate_producer_ids(&self, count: i64) -> Result<i64, BrokerError>;
    /// Adds `topic`; TOPIC_ALREADY_EXISTS when the name is taken (by this or another broker).
    fn create_topic(&self, topic: &TopicRecord) -> Result<(), BrokerError> {
        let mut all = self.load_topics()?;
        if all.iter().any(|t| t.name == topic.name) {
            return Err(BrokerError::TopicAlreadyExists(topic.name.clone()));
        }
        all.push(topic.clone());
        self.save_topics(&all)
    }
    /// Deletes topic `name` if it is still the one with id `id`.
    fn delete_topic(&self, name: &str, id: Uuid) -> Result<(), BrokerError> {
        let mut all = self.load_topics()?;
        all.retain(|t| t.name != name || t.id != id);
        self.save_topics(&all)
    }
    /// Adds partitions led by `leaders` to topic `name`, which has `current` partitions.
    fn add_partitions(&self, name: &str, current: i32, leaders: &[i32]) -> Result<(), BrokerError> {
        let mut all = self.load_topics()?;
        for t in all.iter_mut().filter(|t| t.name == name) {
            if t.partitions != current {
                return Err(BrokerError::InvalidPartitions(format!(
                    "topic '{name}' has {} partitions, not {current}",
                    t.partitions
                )));
            }
            let mut l = t.leaders_or(leaders.first().copied().unwrap_or_default());
            l.extend_from_slice(leaders);
            t.partitions += leaders.len() as i32;
            t.leaders = l;
        }
        self.save_topics(&all)
    }
    /// Replaces topic `name`'s config overrides with `configs`.
    fn set_topic_configs(
        &self,
        name: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let mut all = self.load_topics()?;
        for t in all.iter_mut().filter(|t| t.name == name) {
            t.configs = configs.clone();
        }
        self.save_topics(&all)
    }
    /// The registered brokers that are not fenced, by node id. Empty when the store knows of
    /// no brokers (a single broker with file metadata): then this broker is the cluster.
    fn live_brokers(&self) -> Vec<ClusterBroker> {
        Vec::new()
    }
    /// Registers this broker (its advertised address) with the cluster.
    fn register(&self, _me: &ClusterBroker) -> Result<(), BrokerError> {
        Ok(())
    }
    /// A number that changes whenever the topics do (0 when only this broker changes them).
    fn topics_version(&self) -> u64 {
        0
    }
    /// Told a new version number whenever the stored metadata may have been changed by
    /// someone else (another broker); `None` when only this broker changes it.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ProducerIdsFile {
    version: u32,
    /// First producer id not yet reserved.
    next: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicsFile {
    version: u32,
    topics: Vec<TopicRecord>,
}

/// Topics in a JSON file in the data directory, producer-id blocks in another.
#[derive(Debug)]
pub struct FileMetadataStore {
    path: PathBuf,
    producer_ids_path: PathBuf,
}

impl FileMetadataStore {
    /// A store at `<data_dir>/topics.json`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("topics.json"),
            producer_ids_path: data_dir.join("producer_ids.json"),
        }
    }
}

fn storage(path: &Path, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Storage(format!("{e} path={}", path.display()))
}

/// Writes `bytes` to `path` atomically and durably.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BrokerError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| storage(&tmp, e))?;
    f.write_all(bytes).map_err(|e| storage(&tmp, e))?;
    f.sync_all().map_err(|e| storage(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| storage(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| storage(dir, e))?;
    }
    Ok(())
}

impl FileMetadataStore {
    /// The first producer id not yet reserved (0 before the first reservation).
    pub fn next_producer_id(&self) -> Result<i64, BrokerError> {
        let path = &self.producer_ids_path;
        match fs::read(path) {
            Ok(bytes) => {
                let file: ProducerIdsFile =
                    serde_json::from_slice(&bytes).map_err(|e| storage(path, e))?;
                Ok(file.next)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(storage(path, e)),
        }
    }
}

impl MetadataStore for FileMetadataStore {
    fn load_topics(&self) -> Result<Vec<TopicRecord>, BrokerError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(storage(&self.path, e)),
        };
        let file: TopicsFile =
            serde_json::from_slice(&bytes).map_err(|e| storage(&self.path, e))?;
        if file.version != FORMAT_VERSION {
            return Err(storage(
                &self.path,
                format!("unsupported topics file version {}", file.version),
            ));
        }
        Ok(file.topics)
    }

    fn save_topics(&self, topics: &[TopicRecord]) -> Result<(), BrokerError> {
        let mut topics = topics.to_vec();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let file = TopicsFile {
            version: FORMAT_VERSION,
            topics,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| storage(&self.path, e))?;
        write_atomically(&self.path, &bytes)
    }

    fn allocate_producer_ids(&self, count: i64) -> Result<i64, BrokerError> {
        let path = &self.producer_ids_path;
        let next = self.next_producer_id()?;
        let end = next
            .checked_add(count)
            .ok_or_else(|| storage(path, "producer ids exhausted"))?;
        let file = ProducerIdsFile {
            version: FORMAT_VERSION,
            next: end,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| storage(path, e))?;
        write_atomically(path, &bytes)?;
        Ok(next)
    }
}

/// The identity a data directory belongs to (`<data dir>/meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Format version.
    pub version: u32,
    /// Cluster id reported in Metadata and DescribeCluster.
    pub cluster_id: String,
    /// Node id the directory was created for.
    pub node_id: i32,
}

/// The cluster id of a data directory's identity, when it has one.
pub fn existing_cluster_id(data_dir: &Path) -> Option<String> {
    let bytes = fs::read(data_dir.join("meta.json")).ok()?;
    serde_json::from_slice::<NodeIdentity>(&bytes)
        .ok()
        .map(|id| id.cluster_id)
}

/// Loads the directory's identity, creating it on first start. A directory created for another
/// node id is refused, so two configs cannot silently share or swap data.
pub fn load_or_create_identity(
    data_dir: &Path,
    node_id: i32,
    cluster_id: Option<&str>,
) -> Result<NodeIdentity, BrokerError> {
    let path = data_dir.join("meta.json");
    match fs::read(&path) {
        Ok(bytes) => {
            let id: NodeIdentity = serde_json::from_slice(&bytes).map_err(|e| storage(&path, e))?;
            if id.node_id != node_id {
                return Err(BrokerError::InvalidRequest(format!(
                    "data directory {} belongs to node_id={} but this broker is node_id={node_id}",
                    data_dir.display(),
                    id.node_id
                )));
            }
            if let Some(c) = cluster_id
                && c != id.cluster_id
            {
                return Err(BrokerError::InvalidRequest(format!(
                    "data directory {} belongs to cluster_id={} but cluster_id={c} is configured",
                    data_dir.display(),
                    id.cluster_id
                )));
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeIdentity {
                version: FORMAT_VERSION,
                cluster_id: cluster_id.map_or_else(|| Uuid::new_v4().to_string(), str::to_string),
                node_id,
            };
            let bytes = serde_json::to_vec_pretty(&id).map_err(|e| storage(&path, e))?;
            write_atomically(&path, &bytes)?;
            Ok(id)
        }
        Err(e) => Err(storage(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(dir.path());
        assert!(store.load_topics().unwrap().is_empty());
        let t = TopicRecord {
            name: "orders".into(),
            id: Uuid::new_v4(),
            partitions: 3,
            configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
            leaders: vec![],
        };
        store.save_topics(std::slice::from_ref(&t)).unwrap();
        assert_eq!(store.load_topics().unwrap(), vec![t]);
    }

    #[test]
    fn producer_id_blocks_never_overlap_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileMetadataStore::new(dir.path())
            .allocate_producer_ids(1000)
            .unwrap();
        let b = FileMetadataStore::new(dir.path())
            .allocate_producer_ids(1000)
            .unwrap();
        assert_eq!((a, b), (0, 1000));
    }

    #[test]
    fn identity_is_stable_and_guards_node_id() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path(), 1, None).unwrap();
        let b = load_or_create_identity(dir.path(), 1, None).unwrap();
        assert_eq!(a, b);
        let err = load_or_create_identity(dir.path(), 2, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_id=1"), "{err}");
    }
}
