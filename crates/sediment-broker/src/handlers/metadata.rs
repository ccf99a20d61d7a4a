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
use crate::broker::{Topic, validate_topic_name};
use crate::errors::BrokerError;

pub(super) fn handle(ctx: &Ctx<'_>, req: MetadataRequest) -> MetadataResponse {
    let broker = ctx.broker;
    let config = broker.config();
    let auto_create = ctx.version < 4 || req.allow_auto_topic_creation;
    let topic_ops = if ctx.version >= 8 && req.include_topic_authorized_operations {
        TOPIC_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    let describe = |t: &Arc<Topic>| describe_topic(ctx, t, topic_ops);
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
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(ctx.node())
                .with_host(config.advertised_host.clone().into())
                .with_port(i32::from(config.advertised_port))
                .with_rack(config.rack.clone().map(Into::into)),
        ])
        .with_cluster_id(Some(broker.cluster_id().to_string().into()))
        .with_controller_id(ctx.node())
        .with_topics(topics)
        .with_cluster_authorized_operations(
            if (8..=10).contains(&ctx.version) && req.include_cluster_authorized_operations {
                CLUSTER_OPERATIONS
            } else {
                OPERATIONS_NOT_REQUESTED
            },
        )
}

fn describe_topic(ctx: &Ctx<'_>, topic: &Arc<Topic>, topic_ops: i32) -> MetadataResponseTopic {
    let node = ctx.node();
    let partitions = topic
        .partitions()
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index())
                .with_leader_id(node)
                .with_leader_epoch(p.leader_epoch())
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
                .with_offline_replicas(Vec::<BrokerId>::new())
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
