//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4), latest
//! tiered (-5), or the first offset whose record timestamp is at least a given time.
//!
//! With tiered storage (KIP-405/KIP-1005 semantics) "earliest" is the start of the whole log,
//! archive included, "earliest local" that of the local log, and "latest tiered" the last
//! archived offset. Timestamp lookups search the archive first (segment time ranges and
//! row-group statistics from the manifest, then the row group's records), then the local log
//! through its time index, decoding the batch with `kafka-protocol` to find the exact record.

use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse,
    list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
};
use kafka_protocol::records::Record;

use super::Ctx;
use crate::broker::Partition;
use crate::errors::BrokerError;
use crate::lookup;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub(super) async fn handle(ctx: &Ctx<'_>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let broker = ctx.broker;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = broker.topic(&t.name);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let resp =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let result = topic
                .as_ref()
                .ok_or_else(|| BrokerError::UnknownTopicOrPartition(t.name.to_string()))
                .and_then(|topic| topic.led_partition(p.partition_index))
                .and_then(|partition| {
                    partition.check_leader_epoch(p.current_leader_epoch)?;
                    Ok(partition)
                });
            let result = match result {
                Ok(partition) => lookup(ctx, &partition, p.timestamp)
                    .await
                    .map(|r| (r, partition.leader_epoch())),
                Err(e) => Err(e),
            };
            partitions.push(match result {
                Ok(((offset, timestamp), epoch)) => {
                    let resp = resp.with_offset(offset).with_timestamp(timestamp);
                    if ctx.version >= 4 {
                        resp.with_leader_epoch(epoch)
                    } else {
                        resp
                    }
                }
                Err(e) => resp
                    .with_error_code(ctx.error(&e).0)
                    .with_offset(-1)
                    .with_timestamp(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp); (-1, -1) when no record matches.
async fn lookup(
    ctx: &Ctx<'_>,
    partition: &Partition,
    timestamp: i64,
) -> Result<(i64, i64), BrokerError> {
    let (start, end) = partition.offsets()?;
    let tiering = ctx.broker.tiering();
    let archived = tiering.archive_range(partition.topic_id(), partition.index());
    match timestamp {
        LATEST => Ok((end, -1)),
        EARLIEST => Ok((lookup::log_start_offset(ctx.broker, partition)?, -1)),
        EARLIEST_LOCAL => Ok((start, -1)),
        LATEST_TIERED if ctx.version >= 9 => Ok((archived.map_or(-1, |(_, e)| e - 1), -1)),
        MAX_TIMESTAMP if ctx.version >= 7 => match partition.batch_with_max_timestamp()? {
            Some(batch) => {
                let records = lookup::decode_stored(ctx.broker, &batch)?;
                // The first record holding the batch's largest timestamp.
                let best = records.iter().fold(None::<&Record>, |best, r| match best {
                    Some(b) if b.timestamp >= r.timestamp => Some(b),
                    _ => Some(r),
                });
                Ok(best.map_or((-1, -1), |r| (r.offset, r.timestamp)))
            }
            None => Ok((-1, -1)),
        },
        t if t >= 0 => lookup::offset_for_timestamp(ctx.broker, partition, t).await,
        other => Err(BrokerError::InvalidRequest(format!(
            "unsupported ListOffsets timestamp {other}"
        ))),
    }
}
