//! Metadata: brokers, and topics with their partitions. With `allow_auto_topic_creation` (always
//! on before v4) and `auto.create.topics.enable`, unknown topics are created here, as in Kafka;
//! creation is synchronous, so the first answer already carries the partitions.

use std::sync::Arc;

use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, TopicName,
    metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic},
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{CLUSTER_OPERATIONS, Ctx, OPERATIONS_NOT_REQUESTED, TOPIC_OPERATIONS};
use crate::broker::{LEADER_EPOCH, Topic, validate_topic_name};
use crate::errors::BrokerError;

pub(super) fn handle(ctx: &Ctx<'_>, req: MetadataRequest) -> MetadataResponse {
    let broker = ctx.broker;
    let auto_create = ctx.version < 4 || req.allow_auto_topic_creation;
    let topic_ops = if ctx.version >= 8 && req.include_topic_authorized_operations {
        TOPIC_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    let live_ids: Vec<i32> = broker.live_brokers().iter().map(|b| b.id).collect();
    let live = ctx.live_brokers();
    let reachable: Vec<i32> = live.iter().map(|b| b.id).collect();
    let describe = |t: &Arc<Topic>| describe_topic(ctx, t, topic_ops, &live_ids, &reachable);
    let topics = match req.topics {
        None => broker.topics().iter().map(describe).collect(),
        Some(list) if list.is_empty() && ctx.version == 0 => {
            broker.topics().iter().map(describe).collect()
        }
        Some(list) => list
            .into_iter()
            .map(|requested| match requested.name {
                Some(name) => {
                    let found = validate_topic_name(&name).and_then(|()| {
                        if auto_create {
                            broker.topic_or_auto_create(&name)
                        } else {
                            broker.topic(&name).ok_or_else(|| {
                                BrokerError::UnknownTopicOrPartition(name.to_string())
                            })
                        }
                    });
                    match found {
                        Ok(t) => describe(&t),
                        Err(e) => failed(ctx, Some(name), Uuid::nil(), &e, topic_ops),
                    }
                }
                None => match broker.topic_by_id(requested.topic_id) {
                    Some(t) => describe(&t),
                    None => failed(
                        ctx,
                        None,
                        requested.topic_id,
                        &BrokerError::UnknownTopicId(requested.topic_id),
                        topic_ops,
                    ),
                },
            })
            .collect(),
    };
    // KRaft reports a random live broker as the controller (clients send admin requests
    // there); any broker here serves them, so the lowest id is as good and stable.
    let controller = live.first().map_or(ctx.node(), |b| BrokerId(b.id));
    MetadataResponse::default()
        .with_brokers(
            live.into_iter()
                .map(|b| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.id))
                        .with_host(b.host.into())
                        .with_port(i32::from(b.port))
                        .with_rack(b.rack.map(Into::into))
                })
                .collect(),
        )
        .with_cluster_id(Some(broker.cluster_id().to_string().into()))
        .with_controller_id(controller)
        .with_topics(topics)
        .with_cluster_authorized_operations(
            if (8..=10).contains(&ctx.version) && req.include_cluster_authorized_operations {
                CLUSTER_OPERATIONS
            } else {
                OPERATIONS_NOT_REQUESTED
            },
        )
}

/// A topic's partitions with their leaders. A partition whose leader is fenced (or gone) is
/// listed with leader -1 and `LEADER_NOT_AVAILABLE`, its replica offline: clients wait and
/// ask again (the partition stays on its broker; there is no other replica to fail over to).
/// A live leader without this connection's listener (`reachable`) gives `LISTENER_NOT_FOUND`
/// (v6+; `LEADER_NOT_AVAILABLE` before), as in Kafka.
fn describe_topic(
    ctx: &Ctx<'_>,
    topic: &Arc<Topic>,
    topic_ops: i32,
    live: &[i32],
    reachable: &[i32],
) -> MetadataResponseTopic {
    let partitions = topic
        .leaders()
        .into_iter()
        .enumerate()
        .map(|(index, leader)| {
            let p = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_epoch(LEADER_EPOCH)
                .with_replica_nodes(vec![BrokerId(leader)]);
            if reachable.contains(&leader) {
                p.with_leader_id(BrokerId(leader))
                    .with_isr_nodes(vec![BrokerId(leader)])
                    .with_offline_replicas(Vec::<BrokerId>::new())
            } else if live.contains(&leader) {
                // Kafka answers LISTENER_NOT_FOUND from Metadata v6 on, and
                // LEADER_NOT_AVAILABLE to older clients, which do not know that code.
                let why = format!("broker {leader} has no {} listener", ctx.listener);
                let e = if ctx.version >= 6 {
                    BrokerError::ListenerNotFound(why)
                } else {
                    BrokerError::LeaderNotAvailable(why)
                };
                p.with_error_code(ctx.code(e.code()))
                    .with_leader_id(BrokerId(-1))
                    .with_isr_nodes(vec![BrokerId(leader)])
                    .with_offline_replicas(Vec::<BrokerId>::new())
            } else {
                let e = BrokerError::LeaderNotAvailable(format!("broker {leader} is fenced"));
                p.with_error_code(ctx.code(e.code()))
                    .with_leader_id(BrokerId(-1))
                    .with_isr_nodes(Vec::<BrokerId>::new())
                    .with_offline_replicas(vec![BrokerId(leader)])
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from(topic.name().to_string()))))
        .with_topic_id(topic.id())
        .with_is_internal(false)
        .with_partitions(partitions)
        .with_topic_authorized_operations(topic_ops)
}

fn failed(
    ctx: &Ctx<'_>,
    name: Option<TopicName>,
    id: Uuid,
    e: &BrokerError,
    topic_ops: i32,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(ctx.code(e.code()))
        .with_name(name)
        .with_topic_id(id)
        .with_topic_authorized_operations(topic_ops)
}
