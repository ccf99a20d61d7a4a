//! Committed offsets: OffsetCommit, OffsetFetch (single- and multi-group forms), OffsetDelete.
//! Commits are checked against the group's generation and member, then written durably (fsync
//! on a blocking thread) before the response.

use std::collections::BTreeMap;

use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
    offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
    offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic},
    offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    },
};
use kafka_protocol::protocol::StrBytes;

use super::Ctx;
use crate::errors::BrokerError;
use crate::group::offsets::{CommittedOffset, TopicPartition};

/// Per partition: the offset to store, or the error to answer with.
type PartitionCommit = (i32, Result<CommittedOffset, BrokerError>);

pub(super) async fn commit(ctx: &Ctx<'_>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let groups = ctx.broker.groups();
    let checked = ctx.broker.check_coordinator(&req.group_id).and_then(|()| {
        groups.check_commit(
            &req.group_id,
            req.generation_id_or_member_epoch,
            &req.member_id,
            req.group_instance_id.as_deref(),
        )
    });
    let now = groups.now_ms();
    let max_metadata = groups.config().offset_metadata_max_bytes;
    let mut results: Vec<(TopicName, Vec<PartitionCommit>)> = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let known = ctx.broker.topic(&topic.name);
        let partitions = topic
            .partitions
            .into_iter()
            .map(|p| {
                let result = checked.clone().and_then(|()| {
                    let exists = known.as_ref().is_some_and(|t| {
                        p.partition_index >= 0 && p.partition_index < t.partition_count()
                    });
                    if !exists {
                        return Err(BrokerError::UnknownTopicOrPartition(format!(
                            "{}-{}",
                            &*topic.name, p.partition_index
                        )));
                    }
                    let metadata = p
                        .committed_metadata
                        .map(|m| m.to_string())
                        .unwrap_or_default();
                    if metadata.len() > max_metadata {
                        return Err(BrokerError::OffsetMetadataTooLarge(format!(
                            "{} bytes > offset.metadata.max.bytes={max_metadata}",
                            metadata.len()
                        )));
                    }
                    Ok(CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: if ctx.version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata,
                        commit_timestamp: now,
                    })
                });
                (p.partition_index, result)
            })
            .collect();
        results.push((topic.name, partitions));
    }
    let to_store: Vec<(TopicPartition, CommittedOffset)> = results
        .iter()
        .flat_map(|(name, ps)| {
            ps.iter().filter_map(move |(p, r)| {
                r.as_ref().ok().map(|o| ((name.to_string(), *p), o.clone()))
            })
        })
        .collect();
    let stored = if to_store.is_empty() {
        Ok(())
    } else {
        let broker = std::sync::Arc::clone(ctx.broker);
        let group = req.group_id.to_string();
        tokio::task::spawn_blocking(move || broker.groups().store_offsets(&group, &to_store))
            .await
            .unwrap_or_else(|e| Err(BrokerError::Storage(format!("commit task failed: {e}"))))
    };
    if let Err(e) = &stored {
        tracing::error!(group = %&*req.group_id, error = %e, "could not store committed offsets");
    }
    let topics = results
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, r)| {
                            let r = r.and_then(|_| stored.clone());
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(ctx.outcome(&r).0)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition's committed offset as OffsetFetch reports it: -1 when nothing is committed.
fn committed(ctx: &Ctx<'_>, group: &str, topic: &str, partition: i32) -> (i64, i32, StrBytes) {
    match ctx
        .broker
        .groups()
        .committed(group, &(topic.to_string(), partition))
    {
        Some(o) => (o.offset, o.leader_epoch, o.metadata.into()),
        None => (-1, -1, StrBytes::default()),
    }
}

/// The (topic, partitions) to report for a group: those requested, or all it has committed.
fn requested(
    ctx: &Ctx<'_>,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Vec<(TopicName, Vec<i32>)> {
    match topics {
        Some(t) => t,
        None => {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for ((t, p), _) in ctx.broker.groups().group_offsets(group) {
                by_topic.entry(t).or_default().push(p);
            }
            by_topic
                .into_iter()
                .map(|(t, ps)| (TopicName(t.into()), ps))
                .collect()
        }
    }
}

pub(super) fn fetch(ctx: &Ctx<'_>, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let resp = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                if g.group_id.is_empty() {
                    let e = BrokerError::InvalidGroupId("the group id is empty".into());
                    return resp.with_error_code(ctx.error(&e).0);
                }
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let topics = requested(ctx, &g.group_id, topics)
                    .into_iter()
                    .map(|(name, partitions)| {
                        let partitions = partitions
                            .into_iter()
                            .map(|p| {
                                let (offset, epoch, metadata) =
                                    committed(ctx, &g.group_id, &name, p);
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(metadata))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(partitions)
                    })
                    .collect();
                resp.with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if req.group_id.is_empty() {
        let e = BrokerError::InvalidGroupId("the group id is empty".into());
        return OffsetFetchResponse::default().with_error_code(ctx.error(&e).0);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let topics = requested(ctx, &req.group_id, topics)
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|p| {
                    let (offset, epoch, metadata) = committed(ctx, &req.group_id, &name, p);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(metadata))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub(super) fn delete(ctx: &Ctx<'_>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<TopicPartition> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let group: &GroupId = &req.group_id;
    let deleted = ctx
        .broker
        .check_coordinator(group)
        .and_then(|()| ctx.broker.groups().delete_offsets(group, &partitions));
    match deleted {
        Err(e) => OffsetDeleteResponse::default().with_error_code(ctx.error(&e).0),
        Ok(results) => {
            let mut results = results.into_iter();
            let topics = req
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let r = results.next().unwrap_or(Ok(()));
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(ctx.outcome(&r).0)
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
    }
}
