//! Finding offsets across both tiers: by timestamp (the archive first, then the local log), and
//! the start of the whole log. Shared by ListOffsets and consumer-group offset resets.

use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use crate::broker::{Broker, Partition};
use crate::errors::BrokerError;
use crate::validate::decompress_for_decoder;

/// First offset of the whole log: the archive's start when it holds older data.
pub(crate) fn log_start_offset(broker: &Broker, p: &Partition) -> Result<i64, BrokerError> {
    let (local_start, _) = p.offsets()?;
    Ok(broker
        .tiering()
        .archive_range(p.topic_id(), p.index())
        .map_or(local_start, |(start, _)| start.min(local_start)))
}

/// The first record whose timestamp is at least `t`, in offset order across the archive and
/// the local log: (offset, timestamp), or (-1, -1) when there is none.
pub(crate) async fn offset_for_timestamp(
    broker: &Broker,
    p: &Partition,
    t: i64,
) -> Result<(i64, i64), BrokerError> {
    let (local_start, _) = p.offsets()?;
    // The archive holds the older records: look there first, for what precedes the local log.
    if let Some((archive_start, _)) = broker.tiering().archive_range(p.topic_id(), p.index())
        && archive_start < local_start
    {
        let hit = broker
            .archive_reader()
            .offset_for_timestamp(p.topic_id(), p.index(), t)
            .await
            .map_err(|e| BrokerError::Storage(format!("archive lookup failed: {e}")))?;
        if let Some((offset, ts)) = hit
            && offset < local_start
        {
            return Ok((offset, ts));
        }
    }
    match p.batch_for_timestamp(t)? {
        Some(batch) => {
            let records = decode_stored(broker, &batch)?;
            Ok(records
                .iter()
                .find(|r| r.timestamp >= t)
                .map_or((-1, -1), |r| (r.offset, r.timestamp)))
        }
        None => Ok((-1, -1)),
    }
}

/// Decodes a stored batch; under LogAppendTime every record carries the batch's max timestamp.
pub(crate) fn decode_stored(broker: &Broker, batch: &Bytes) -> Result<Vec<Record>, BrokerError> {
    let cap = broker.config().max_decompressed_batch_bytes;
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode_with_custom_compression(
        &mut buf,
        Some(|data: &mut Bytes, codec| decompress_for_decoder(data, codec, cap)),
    )
    .map_err(|e| BrokerError::Storage(format!("stored batch does not decode: {e:#}")))?;
    let header = sediment_log::BatchHeader::parse(batch)?;
    let mut records = set.records;
    if header.timestamp_type() == sediment_log::TimestampType::LogAppendTime {
        for r in &mut records {
            r.timestamp = header.max_timestamp();
        }
    }
    Ok(records)
}
