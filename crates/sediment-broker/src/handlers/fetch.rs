//! Fetch: whole batches from each partition's log, within `partition_max_bytes` and the request's
//! `max_bytes` (the first batch always goes out whole, as in KIP-74), with long polling: when
//! fewer than `min_bytes` are available the handler waits up to `max_wait_ms` for an append to
//! any requested partition. Fetch sessions (KIP-227) are not kept: every response carries
//! session id 0, which clients treat as "send full requests".
//!
//! An offset below the local log start that the archive holds is read from the archive (see
//! `sediment_archive::ArchiveReader`): each such partition is read by its own task, in
//! parallel, while hot partitions are answered as usual. A response never waits past
//! `max_wait_ms` for an archive read: a partition whose read has not finished (a cold cache, a
//! slow or unreachable bucket) is answered empty, without an error, and its read carries on
//! and fills the cache for the client's next fetch. Consumers therefore see a delay, never an
//! error or a gap. Log start offsets reported are those of the whole log, archive included.

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
use sediment_log::BatchHeader;
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
    archive: Option<ArchiveSlot>,
}

/// Which data an archive read returns.
type ReadKey = (Uuid, i32, i64, usize);

/// One archive read, shared by every fetch asking for the same partition, offset and budget
/// while it runs: a consumer whose fetch timed out asks again for the same offset, and that
/// second fetch waits for the first read instead of starting another (which would decode and
/// copy the same batches again, and hold them twice).
#[derive(Debug, Default)]
struct SharedRead {
    /// The batches, or `Err` when the read failed; `None` while it runs.
    result: parking_lot::Mutex<Option<Result<Bytes, ()>>>,
    /// Fetches to wake when it finishes.
    waiters: parking_lot::Mutex<Vec<Arc<tokio::sync::Notify>>>,
}

/// Archive reads in progress, by what they read.
#[derive(Debug, Default)]
pub(crate) struct ArchiveReads {
    running: parking_lot::Mutex<std::collections::HashMap<ReadKey, Arc<SharedRead>>>,
}

/// An archive read in progress for one partition of the request.
struct ArchiveSlot {
    /// The read, maybe shared with other fetches.
    result: Arc<SharedRead>,
    /// The batches once taken from `result`.
    done: Option<Bytes>,
    /// The read failed: the partition is answered empty, but only at the deadline, so a
    /// consumer does not spin on an unreachable bucket.
    failed: bool,
}

impl ArchiveSlot {
    /// Whether the response should still wait for this partition.
    fn pending(&self) -> bool {
        self.done.is_none() || self.failed
    }

    /// Takes the read's result if it finished.
    fn poll(&mut self) {
        if self.done.is_none() {
            match self.result.result.lock().clone() {
                Some(Ok(records)) => self.done = Some(records),
                Some(Err(())) => {
                    self.done = Some(Bytes::new());
                    self.failed = true;
                }
                None => {}
            }
        }
    }
}

/// The offsets a fetch sees: the whole log's start (archive included), the local log's, and
/// the high watermark.
struct Bounds {
    log_start: i64,
    local_start: i64,
    high_watermark: i64,
}

fn bounds(ctx: &Ctx<'_>, p: &Partition) -> Result<Bounds, BrokerError> {
    let (local_start, high_watermark) = p.offsets()?;
    let log_start = match ctx.broker.tiering().archive_range(p.topic_id(), p.index()) {
        Some((start, _)) => start.min(local_start),
        None => local_start,
    };
    Ok(Bounds {
        log_start,
        local_start,
        high_watermark,
    })
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
    let mut wanted = resolve(ctx, &req);
    let max_bytes = req.max_bytes.max(0) as usize;
    let archive_done = Arc::new(tokio::sync::Notify::new());
    start_archive_reads(ctx, &mut wanted, max_bytes, &archive_done);
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let read_committed = req.isolation_level == READ_COMMITTED;
    loop {
        for w in wanted.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            if let Some(slot) = w.archive.as_mut() {
                slot.poll();
            }
        }
        let archive_pending = wanted
            .iter()
            .flat_map(|t| t.partitions.iter())
            .any(|w| w.archive.as_ref().is_some_and(ArchiveSlot::pending));
        // Register for append notifications before reading, so an append between the read and
        // the wait still wakes us.
        let partitions: Vec<Arc<Partition>> = wanted
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|w| w.archive.is_none())
            .filter_map(|w| w.partition.as_ref().ok().cloned())
            .collect();
        let mut waits: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            partitions.iter().map(|p| Box::pin(p.appended())).collect();
        for w in &mut waits {
            w.as_mut().enable();
        }
        let (response, total, has_error) = read_all(ctx, &wanted, max_bytes, read_committed);
        let done = total >= min_bytes
            || has_error
            || (waits.is_empty() && !archive_pending)
            || Instant::now() >= deadline
            || ctx.shutdown.is_cancelled();
        if done {
            return response;
        }
        let appended = async {
            if waits.is_empty() {
                std::future::pending::<()>().await;
            } else {
                select_all(waits).await;
            }
        };
        tokio::select! {
            _ = appended => {}
            _ = archive_done.notified(), if archive_pending => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = ctx.shutdown.cancelled() => {}
        }
    }
}

/// Starts a read task for every partition whose offset is below its local log start and held
/// by the archive.
fn start_archive_reads(
    ctx: &Ctx<'_>,
    wanted: &mut [WantedTopic],
    max_bytes: usize,
    done: &Arc<tokio::sync::Notify>,
) {
    let tiering = ctx.broker.tiering();
    for t in wanted {
        for w in &mut t.partitions {
            let Ok(p) = w.partition.as_ref() else {
                continue;
            };
            let Ok(b) = bounds(ctx, p) else {
                continue;
            };
            if w.offset >= b.local_start || w.offset < b.log_start {
                continue;
            }
            match tiering.archive_range(p.topic_id(), p.index()) {
                Some((_, end)) if w.offset < end => {}
                // Between the archive's end and the local start: the local log answers.
                _ => continue,
            }
            tiering.note_archive_read(p.topic_id(), p.index(), w.offset);
            let (topic_id, index, offset) = (p.topic_id(), p.index(), w.offset);
            let budget = w.max_bytes.min(max_bytes);
            let key = (topic_id, index, offset, budget);
            let reads = ctx.broker.archive_reads();
            let mut running = reads.running.lock();
            let result = match running.get(&key) {
                Some(read) => {
                    read.waiters.lock().push(Arc::clone(done));
                    Arc::clone(read)
                }
                None => {
                    let read = Arc::new(SharedRead::default());
                    read.waiters.lock().push(Arc::clone(done));
                    running.insert(key, Arc::clone(&read));
                    let reader = Arc::clone(ctx.broker.archive_reader());
                    let broker = Arc::clone(ctx.broker);
                    let topic = p.topic().to_string();
                    let shared = Arc::clone(&read);
                    tokio::spawn(async move {
                        let records = match reader.read(topic_id, index, offset, budget, true).await
                        {
                            Ok(read) => Ok(read.map(|r| r.records).unwrap_or_default()),
                            Err(e) => {
                                tracing::warn!(%topic, partition = index, offset, error = %e, "archive read failed; answering empty, the consumer will retry");
                                Err(())
                            }
                        };
                        *shared.result.lock() = Some(records);
                        broker.archive_reads().running.lock().remove(&key);
                        for waiter in std::mem::take(&mut *shared.waiters.lock()) {
                            waiter.notify_one();
                        }
                    });
                    read
                }
            };
            drop(running);
            w.archive = Some(ArchiveSlot {
                result,
                done: None,
                failed: false,
            });
        }
    }
}

/// The longest prefix of whole batches of `records` within `budget`; with `first` the first
/// batch even when larger.
fn whole_batches(records: &Bytes, budget: usize, first: bool) -> Bytes {
    let mut end = 0;
    while end < records.len() {
        let Ok(h) = BatchHeader::parse(&records[end..]) else {
            break;
        };
        let next = end + h.total_size();
        if next > records.len() || (next > budget && !(end == 0 && first)) {
            break;
        }
        end = next;
    }
    records.slice(..end)
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
                            .and_then(|topic| topic.led_partition(p.partition)),
                        index: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes.max(0) as usize,
                        current_leader_epoch: p.current_leader_epoch,
                        archive: None,
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
                    let b = bounds(ctx, p)?;
                    let records = match &w.archive {
                        Some(slot) => slot
                            .done
                            .as_ref()
                            .map(|r| whole_batches(r, budget, total == 0))
                            .unwrap_or_default(),
                        None => read_partition(p, &b, w.offset, budget, total == 0)?,
                    };
                    Ok((records, b.high_watermark, b.log_start))
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
                        .and_then(|p| bounds(ctx, p).ok())
                        .map_or((-1, -1), |b| (b.high_watermark, b.log_start));
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

/// Reads whole batches of the local log from `offset`. With `first` set (nothing in the
/// response yet) a batch larger than the budget still goes out, so a consumer can always
/// progress. An offset below the local start but within the whole log (a gap the archive does
/// not cover) reads from the local start.
fn read_partition(
    p: &Partition,
    b: &Bounds,
    offset: i64,
    budget: usize,
    first: bool,
) -> Result<Bytes, BrokerError> {
    let offset = if offset >= b.log_start && offset < b.local_start {
        b.local_start
    } else {
        offset
    };
    let read = p.read(offset)?;
    Ok(match read.slice {
        Some(slice) => slice.read(budget, first)?,
        _ => Bytes::new(),
    })
}
