//! One module per API group. Handlers translate `kafka-protocol` messages into calls on the
//! [`Broker`] and back; they do no socket I/O and never see raw frames.

mod api_versions;
mod configs;
mod consumer_group;
mod describe_cluster;
mod fetch;
mod find_coordinator;
mod groups;
mod init_producer_id;
mod leader_epoch;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;
mod topics;

use std::sync::Arc;

pub(crate) use fetch::ArchiveReads;

use kafka_protocol::messages::{ApiKey, BrokerId, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::errors::BrokerError;
use crate::store::ClusterBroker;

/// What a handler knows about the request it serves.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The broker.
    pub broker: &'a Arc<Broker>,
    /// API of the request.
    pub api: ApiKey,
    /// Version of the request.
    pub version: i16,
    /// Cancelled when the broker shuts down (ends long polls early).
    pub shutdown: &'a CancellationToken,
    /// `client.id` from the request header.
    pub client_id: &'a str,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// Name of the listener the client connected through (`PLAINTEXT`, `SSL`): brokers are
    /// described to it with that listener's addresses.
    pub listener: &'a str,
}

impl Ctx<'_> {
    /// The live brokers as clients of this connection's listener reach them: each with that
    /// listener's advertised address, and without brokers that lack the listener.
    pub(crate) fn live_brokers(&self) -> Vec<ClusterBroker> {
        self.broker
            .live_brokers()
            .into_iter()
            .filter_map(|b| self.on_listener(b))
            .collect()
    }

    /// `b` with the address of this connection's listener; `None` if it has no such listener.
    pub(crate) fn on_listener(&self, b: ClusterBroker) -> Option<ClusterBroker> {
        let (host, port) = b.endpoint(self.listener)?;
        let (host, port) = (host.to_string(), port);
        Some(ClusterBroker { host, port, ..b })
    }

    /// Counts a non-zero error code for metrics and passes it through.
    pub(crate) fn code(&self, code: i16) -> i16 {
        self.broker.metrics().observe_error(self.api, code);
        code
    }

    /// Error code and message of a domain error, counted.
    pub(crate) fn error(&self, e: &BrokerError) -> (i16, Option<StrBytes>) {
        (self.code(e.code()), e.message())
    }

    /// (error code, error message) of an outcome: (0, None) for success, counted otherwise.
    pub(crate) fn outcome<T>(&self, result: &Result<T, BrokerError>) -> (i16, Option<StrBytes>) {
        match result {
            Ok(_) => (0, None),
            Err(e) => self.error(e),
        }
    }

    pub(crate) fn node(&self) -> BrokerId {
        BrokerId(self.broker.node_id())
    }
}

/// Handles one request; `None` means no response is sent (Produce with acks=0).
pub async fn handle(ctx: &Ctx<'_>, body: RequestKind) -> Option<ResponseKind> {
    Some(match body {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(ctx, r)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(ctx, r)),
        RequestKind::Produce(r) => ResponseKind::Produce(produce::handle(ctx, r).await?),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(ctx, r).await),
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(ctx, r))
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(ctx, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(leader_epoch::handle(ctx, r))
        }
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(topics::create_topics(ctx, r)),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(topics::delete_topics(ctx, r)),
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(topics::create_partitions(ctx, r))
        }
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(configs::describe(ctx, r)),
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(configs::alter(ctx, r)),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(ctx, r))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(ctx, r))
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(groups::join(ctx, r).await),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync(ctx, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(ctx, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave(ctx, r)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list(ctx, r)),
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(groups::describe(ctx, r)),
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(groups::delete(ctx, r)),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(offsets::commit(ctx, r).await),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offsets::fetch(ctx, r)),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(offsets::delete(ctx, r)),
        RequestKind::ConsumerGroupHeartbeat(r) => {
            ResponseKind::ConsumerGroupHeartbeat(consumer_group::heartbeat(ctx, r))
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            ResponseKind::ConsumerGroupDescribe(consumer_group::describe(ctx, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(ctx, r))
        }
        other => {
            // decode_request only lets served APIs through; this is a bug, not client input.
            tracing::error!(request = ?std::mem::discriminant(&other), "no handler for a served API");
            return None;
        }
    })
}

/// Kafka's "authorized operations not requested" sentinel.
pub(crate) const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

/// Bit set of ACL operations on a topic when no authorizer is configured: read, write, create,
/// delete, alter, describe, describe configs, alter configs.
pub(crate) const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

/// The same for the cluster resource: create, alter, describe, cluster action, describe configs,
/// alter configs, idempotent write.
pub(crate) const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
