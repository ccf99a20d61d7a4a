//! OffsetForLeaderEpoch: the end offset of a leader epoch, which clients use to detect log
//! truncation after a leader change. Every partition has had a single leader epoch so far
//! (leadership does not move yet), ending at the log end offset.

use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
};

use super::Ctx;
use crate::errors::BrokerError;

pub(super) fn handle(
    ctx: &Ctx<'_>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = ctx.broker.topic(&t.topic);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let resp = EpochEndOffset::default().with_partition(p.partition);
                    let result = topic
                        .as_ref()
                        .ok_or_else(|| BrokerError::UnknownTopicOrPartition(t.topic.to_string()))
                        .and_then(|topic| topic.led_partition(p.partition))
                        .and_then(|partition| {
                            partition.check_leader_epoch(p.current_leader_epoch)?;
                            let (_, end) = partition.offsets()?;
                            let epoch = partition.leader_epoch();
                            // Every batch so far was written in the current epoch.
                            Ok(if p.leader_epoch > epoch {
                                (-1, -1)
                            } else {
                                (epoch, end)
                            })
                        });
                    match result {
                        Ok((epoch, end)) => resp.with_leader_epoch(epoch).with_end_offset(end),
                        Err(e) => resp
                            .with_error_code(ctx.error(&e).0)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
