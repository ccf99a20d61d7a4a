//! Fetch: whole batches from each partition's log, within `partition_max_bytes` and the request's
//! `max_bytes` (the first batch always goes out whole, as in KIP-74), with long polling: when
//! fewer than `min_bytes` are available the handler waits up to `max_wait_ms` for an append to
//! any requested partition. Fetch sessions (KIP-227) are not kept: every response carries
//! session id 0, which clients treat as "send full requests".

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, TopicName,
    fetch_response::{FetchableTopicResponse, PartitionData},
};
use tokio::time::Instant;
use uuid::Uuid;

use super::Ctx;
use crate::broker::Partition;
use crate::errors::BrokerError;

/// First version that names topics by id.
const TOPIC_ID_VERSION: i16 = 13;
/// `isolation_level` READ_COMMITTED.
const READ_COMMITTED: i8 = 1;

struct Wanted {
    partition: Result<Arc<Partition>, BrokerError>,
    index: i32,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
}

struct WantedTopic {
    name: TopicName,
    id: Uuid,
    partitions: Vec<Wanted>,
}

pub(super) async fn handle(ctx: &Ctx<'_>, req: FetchRequest) -> FetchResponse {
    if req.session_id != 0 {
        // We never hand out a session, so an incremental fetch cannot be ours.
        return FetchResponse::default()
            .with_error_code(ctx.code(ResponseError::FetchSessionIdNotFound.code()))
            .with_session_id(0);
    }
    let wanted = resolve(ctx, &req);
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = req.max_bytes.max(0) as usize;
    let read_committed = req.isolation_level == READ_COMMITTED;
    loop {
        // Register for append notifications before reading, so an append between the read and
        // the wait still wakes us.
        let partitions: Vec<&Arc<Partition>> = wanted
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter_map(|w| w.partition.as_ref().ok())
            .collect();
        let mut waits: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            partitions.iter().map(|p| Box::pin(p.appended())).collect();
        for w in &mut waits {
            w.as_mut().enable();
        }
        let (response, total, has_error) = read_all(ctx, &wanted, max_bytes, read_committed);
        let done = total >= min_bytes
            || has_error
            || waits.is_empty()
            || Instant::now() >= deadline
            || ctx.shutdown.is_cancelled();
        if done {
            return response;
        }
        tokio::select! {
            _ = select_all(waits) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = ctx.shutdown.cancelled() => {}
        }
    }
}

fn resolve(ctx: &Ctx<'_>, req: &FetchRequest) -> Vec<WantedTopic> {
    let broker = ctx.broker;
    req.topics
        .iter()
        .map(|t| {
            let topic = if ctx.version >= TOPIC_ID_VERSION {
                broker
                    .topic_by_id(t.topic_id)
                    .ok_or(BrokerError::UnknownTopicId(t.topic_id))
            } else {
                broker
                    .topic(&t.topic)
                    .ok_or_else(|| BrokerError::UnknownTopicOrPartition(t.topic.to_string()))
            };
            WantedTopic {
                name: t.topic.clone(),
                id: t.topic_id,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| Wanted {
                        partition: topic
                            .as_ref()
                            .map_err(BrokerError::clone)
                            .and_then(|topic| {
                                topic.partition(p.partition).ok_or_else(|| {
                                    BrokerError::UnknownTopicOrPartition(format!(
                                        "{}-{}",
                                        topic.name(),
                                        p.partition
                                    ))
                                })
                            }),
                        index: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes.max(0) as usize,
                        current_leader_epoch: p.current_leader_epoch,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// One pass over every requested partition: the response, the record bytes in it, and whether
/// any partition failed (Kafka answers at once when a partition has an error).
fn read_all(
    ctx: &Ctx<'_>,
    wanted: &[WantedTopic],
    max_bytes: usize,
    read_committed: bool,
) -> (FetchResponse, usize, bool) {
    let mut total = 0usize;
    let mut has_error = false;
    let mut responses = Vec::with_capacity(wanted.len());
    for topic in wanted {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for w in &topic.partitions {
            let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
            let data = PartitionData::default()
                .with_partition_index(w.index)
                .with_preferred_read_replica(BrokerId(-1))
                .with_aborted_transactions(read_committed.then(Vec::new));
            let result = w
                .partition
                .as_ref()
                .map_err(BrokerError::clone)
                .and_then(|p| {
                    p.check_leader_epoch(w.current_leader_epoch)?;
                    read_partition(p, w.offset, budget, total == 0)
                });
            partitions.push(match result {
                Ok((records, hw, log_start)) => {
                    total += records.len();
                    data.with_high_watermark(hw)
                        .with_last_stable_offset(hw)
                        .with_log_start_offset(log_start)
                        .with_records(Some(records))
                }
                Err(e) => {
                    has_error = true;
                    let (hw, log_start) = w
                        .partition
                        .as_ref()
                        .ok()
                        .and_then(|p| p.offsets().ok())
                        .map_or((-1, -1), |(start, hw)| (hw, start));
                    data.with_error_code(ctx.code(e.code()))
                        .with_high_watermark(hw)
                        .with_last_stable_offset(hw)
                        .with_log_start_offset(log_start)
                        .with_records(Some(Bytes::new()))
                }
            });
        }
        let resp = FetchableTopicResponse::default().with_partitions(partitions);
        responses.push(if ctx.version >= TOPIC_ID_VERSION {
            resp.with_topic_id(topic.id)
        } else {
            resp.with_topic(topic.name.clone())
        });
    }
    let response = FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses);
    (response, total, has_error)
}

/// Reads whole batches from `offset`. With `first` set (nothing in the response yet) a batch larger
/// than the budget still goes out, so a consumer can always progress.
fn read_partition(
    p: &Partition,
    offset: i64,
    budget: usize,
    first: bool,
) -> Result<(Bytes, i64, i64), BrokerError> {
    let read = p.read(offset)?;
    let records = match read.slice {
        Some(slice) => slice.read(budget, first)?,
        _ => Bytes::new(),
    };
    Ok((records, read.high_watermark, read.log_start_offset))
}
