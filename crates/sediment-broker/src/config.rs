//! Settings of the broker process, as plain data. The CLI fills this from defaults, the config
//! file, the environment and flags; `validate` runs before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use sediment_archive::ArchiveSettings;

use crate::group::GroupConfig;
use crate::topic_config::LogDefaults;

/// Everything the broker needs to run.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This broker's id (`node.id`).
    pub node_id: i32,
    /// Cluster id to require or, on first start, to adopt (default: generated).
    pub cluster_id: Option<String>,
    /// Where partition logs and metadata live.
    pub data_dir: PathBuf,
    /// Host clients are told to connect to.
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    /// Listeners besides the primary one, as clients reach them (the TLS listener, `SSL`).
    pub listeners: Vec<sediment_meta::Endpoint>,
    /// Rack reported in Metadata.
    pub rack: Option<String>,
    /// `auto.create.topics.enable`: create a topic when a client asks for its metadata.
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of auto-created topics and CreateTopics with -1.
    pub num_partitions: i32,
    /// `socket.request.max.bytes`: largest request frame; bigger ones close the connection
    /// before their body is read.
    pub socket_request_max_bytes: usize,
    /// Largest size a produced batch may inflate to when the broker validates it. Bounds the
    /// memory a compressed batch can claim.
    pub max_decompressed_batch_bytes: usize,
    /// `max.connections`: connections beyond this wait in the accept queue.
    pub max_connections: usize,
    /// Broker defaults for topic configs, and the retention interval.
    pub log: LogDefaults,
    /// Consumer group settings.
    pub group: GroupConfig,
    /// Archive (tiered storage) settings.
    pub archive: ArchiveSettings,
    /// Fault injection for tests: the archiver stops for good after an upload, before its
    /// manifest commit, so a test can kill the process exactly there.
    pub pause_before_archive_commit: bool,
    /// How often the flusher looks for partitions whose `flush.ms` has passed.
    pub flush_check_interval: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
}

impl BrokerConfig {
    /// A config for `data_dir` with every other setting at its default.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id: 0,
            cluster_id: None,
            data_dir: data_dir.into(),
            advertised_host: "localhost".into(),
            advertised_port: 9092,
            listeners: Vec::new(),
            rack: None,
            auto_create_topics: true,
            num_partitions: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            max_decompressed_batch_bytes: 64 * 1024 * 1024,
            max_connections: 10_000,
            log: LogDefaults::default(),
            group: GroupConfig::default(),
            archive: ArchiveSettings::default(),
            pause_before_archive_commit: false,
            flush_check_interval: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}
