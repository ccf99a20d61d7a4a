//! Sediment's Kafka protocol server.
//!
//! - `protocol`: framing and `kafka-protocol` codecs (bytes in, typed messages out);
//! - `handlers`: one module per API group, translating messages into [`Broker`] calls;
//! - `broker`: topics, partitions and their logs; `store`: the durable topic registry;
//! - `validate`: checks on produced record batches; `topic_config`: Kafka topic config names;
//! - `group`: the consumer group coordinator and committed offsets;
//! - `errors`: domain errors and the one mapping to Kafka error codes;
//! - `server` (Kafka listener) and `admin` (HTTP: metrics, health).

mod admin;
mod broker;
mod catalog;
mod config;
mod errors;
pub mod group;
mod handlers;
mod journal;
mod lookup;
mod meta_store;
mod metrics;
mod offset_reset;
pub mod protocol;
mod server;
mod store;
mod tiering;
mod tls;
mod topic_config;
mod validate;

pub use admin::{AdminState, Health, serve_admin};
pub use broker::{Broker, NewTopic, Partition, Topic};
pub use config::BrokerConfig;
pub use errors::BrokerError;
pub use meta_store::{MetaStores, OpenMeta};
pub use metrics::Metrics;
pub use offset_reset::{PartitionReset, ResetPlan, ResetRequest, ResetTo, parse_datetime};
pub use server::{KafkaListener, serve_kafka};
pub use store::{
    ClusterBroker, FileMetadataStore, MetadataStore, PLAINTEXT_LISTENER, SSL_LISTENER, TopicRecord,
};
pub use tiering::{PartitionArchiveStats, Tiering, TieringStatus};
pub use tls::{TlsFiles, acceptor as tls_acceptor};
pub use topic_config::{CONFIG_DEFS, LogDefaults};
pub use validate::{BatchLimits, validate_batch};
