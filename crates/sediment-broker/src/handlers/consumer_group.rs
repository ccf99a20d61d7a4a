//! The KIP-848 consumer group protocol: ConsumerGroupHeartbeat (join, heartbeat, leave, and
//! the broker-computed assignment) and ConsumerGroupDescribe. The state machine is in
//! [`crate::group::consumer`].

use std::collections::BTreeSet;

use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, TopicName, consumer_group_describe_response as describe,
    consumer_group_heartbeat_response as heartbeat,
};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, OPERATIONS_NOT_REQUESTED};
use crate::broker::Broker;
use crate::errors::BrokerError;
use crate::group::consumer::{Assignment, ConsumerHeartbeat, TopicInfo, TopicResolver};

/// ACL operations on a group without an authorizer: read, delete, describe.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

fn s(v: impl Into<String>) -> StrBytes {
    v.into().into()
}

pub(super) fn heartbeat(
    ctx: &Ctx<'_>,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let owned = req.topic_partitions.map(|tps| {
        let mut a = Assignment::new();
        for tp in tps {
            if !tp.partitions.is_empty() {
                a.entry(tp.topic_id).or_default().extend(tp.partitions);
            }
        }
        a
    });
    let hb = ConsumerHeartbeat {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|i| i.to_string()),
        rack_id: req.rack_id.map(|r| r.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .map(|names| names.iter().map(|n| n.to_string()).collect()),
        // librdkafka sends an empty regex alongside topic names: no regex.
        subscribed_topic_regex: req.subscribed_topic_regex.map(|r| r.to_string()),
        server_assignor: req.server_assignor.map(|a| a.to_string()),
        owned,
        client_id: ctx.client_id.to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
    };
    let broker = ctx.broker;
    match broker.check_coordinator(&hb.group_id).and_then(|()| {
        broker
            .groups()
            .consumer_heartbeat(hb, &BrokerTopics(broker))
    }) {
        Ok(r) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(s(r.member_id)))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
            .with_assignment(r.assignment.map(|a| {
                heartbeat::Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(id, parts)| {
                            heartbeat::TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(parts.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(e) => {
            if !matches!(
                e,
                BrokerError::FencedMemberEpoch(_)
                    | BrokerError::UnknownMemberId(_)
                    | BrokerError::NotCoordinator(_)
            ) {
                tracing::info!(error = %e, "ConsumerGroupHeartbeat refused");
            }
            let (code, message) = ctx.error(&e);
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_member_id(None)
        }
    }
}

struct BrokerTopics<'a>(&'a Broker);

impl TopicResolver for BrokerTopics<'_> {
    fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.0.topic(name).map(|t| TopicInfo {
            id: t.id(),
            partitions: t.partition_count(),
        })
    }

    fn names(&self) -> Vec<String> {
        self.0
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .collect()
    }
}

fn describe_assignment(ctx: &Ctx<'_>, a: &Assignment) -> describe::Assignment {
    describe::Assignment::default().with_topic_partitions(
        a.iter()
            .map(|(id, parts)| {
                let name = ctx
                    .broker
                    .topic_by_id(*id)
                    .map(|t| t.name().to_string())
                    .unwrap_or_default();
                describe::TopicPartitions::default()
                    .with_topic_id(*id)
                    .with_topic_name(TopicName(s(name)))
                    .with_partitions(parts.iter().copied().collect())
            })
            .collect(),
    )
}

pub(super) fn describe(
    ctx: &Ctx<'_>,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let operations = if req.include_authorized_operations {
        GROUP_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            let base = describe::DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(operations);
            let Some(g) = ctx.broker.groups().consumer_group(&id) else {
                let e = if ctx.broker.groups().describe(&id).is_some() {
                    BrokerError::GroupIdNotFound(format!("group {} is a classic group", &*id))
                } else {
                    BrokerError::GroupIdNotFound(format!("group {} does not exist", &*id))
                };
                let (code, message) = ctx.error(&e);
                return base
                    .with_error_code(code)
                    .with_error_message(message)
                    .with_group_state(s("Dead"));
            };
            let mut members: Vec<_> = g.members.values().collect();
            members.sort_by(|a, b| a.id.cmp(&b.id));
            let empty = Assignment::new();
            base.with_group_state(s(g.state_name()))
                .with_group_epoch(g.epoch)
                .with_assignment_epoch(g.assignment_epoch)
                .with_assignor_name(s(g.assignor()))
                .with_members(
                    members
                        .into_iter()
                        .map(|m| {
                            let subscribed: BTreeSet<&String> = m.names.iter().collect();
                            describe::Member::default()
                                .with_member_id(s(m.id.clone()))
                                .with_instance_id(m.instance_id.clone().map(s))
                                .with_rack_id(m.rack_id.clone().map(s))
                                .with_member_epoch(m.epoch)
                                .with_client_id(s(m.client_id.clone()))
                                .with_client_host(s(m.client_host.clone()))
                                .with_subscribed_topic_names(
                                    subscribed
                                        .into_iter()
                                        .map(|t| TopicName(s(t.clone())))
                                        .collect(),
                                )
                                .with_subscribed_topic_regex(
                                    m.regex.as_ref().map(|(r, _)| s(r.clone())),
                                )
                                .with_assignment(describe_assignment(ctx, &m.assigned))
                                .with_target_assignment(describe_assignment(
                                    ctx,
                                    g.target.get(&m.id).unwrap_or(&empty),
                                ))
                                .with_member_type(1)
                        })
                        .collect(),
                )
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
