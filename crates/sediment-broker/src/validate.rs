//! Validation of produced record batches before they reach the log.
//!
//! Every batch is decoded with `kafka-protocol`'s `RecordBatchDecoder` (which checks the CRC-32C
//! and the record framing), through the archive's capped decompressor (the same one the archiver
//! uses), which stops at a configured size, so a small zstd or gzip bomb cannot make the broker
//! allocate gigabytes. The stored bytes are the
//! producer's own: decoding is only a check.

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use sediment_archive::{Codec, DECOMPRESSED_TOO_LARGE, decompress_capped};
use sediment_log::BatchHeader;

use crate::errors::BrokerError;

/// Limits applied to one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// `max.message.bytes`: size on the wire.
    pub max_message_bytes: usize,
    /// Largest size a batch's records may inflate to.
    pub max_decompressed_bytes: usize,
}

/// What the produce path needs from a checked batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    /// Records in the batch.
    pub records: i32,
    /// Producer id, or -1.
    pub producer_id: i64,
}

/// Checks one produce payload for one partition: exactly one v2 batch, within the limits, with a
/// valid CRC, decodable records whose count and offset deltas match the header, and no control
/// or transactional records.
pub fn validate_batch(bytes: &Bytes, limits: &BatchLimits) -> Result<BatchSummary, BrokerError> {
    if bytes.len() > limits.max_message_bytes {
        return Err(BrokerError::MessageTooLarge(format!(
            "batch of {} bytes exceeds max.message.bytes={}",
            bytes.len(),
            limits.max_message_bytes
        )));
    }
    let header = BatchHeader::parse(bytes).map_err(BrokerError::from)?;
    let declared = header.total_size();
    if declared > bytes.len() {
        return Err(BrokerError::CorruptMessage(format!(
            "batch declares {declared} bytes but {} were sent",
            bytes.len()
        )));
    }
    if declared < bytes.len() {
        return Err(BrokerError::InvalidRecord(
            "a produce request must carry exactly one record batch per partition".into(),
        ));
    }
    if header.is_control() {
        return Err(BrokerError::InvalidRecord(
            "producers may not write control batches".into(),
        ));
    }
    if header.is_transactional() {
        return Err(BrokerError::InvalidRecord(
            "transactional batches are not supported".into(),
        ));
    }
    if header.producer_id() >= 0 && (header.base_sequence() < 0 || header.producer_epoch() < 0) {
        return Err(BrokerError::InvalidRecord(format!(
            "idempotent batch of producer {} has base sequence {} and epoch {}; both must be set",
            header.producer_id(),
            header.base_sequence(),
            header.producer_epoch()
        )));
    }
    let count = header.records_count();
    if count < 1 || header.last_offset_delta() != count - 1 {
        return Err(BrokerError::InvalidRecord(format!(
            "records_count={count} does not match last_offset_delta={}",
            header.last_offset_delta()
        )));
    }
    let cap = limits.max_decompressed_bytes;
    let decompress = move |data: &mut Bytes, c: Compression| decompress_for_decoder(data, c, cap);
    let mut buf = bytes.clone();
    let set = RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress))
        .map_err(|e| {
            let msg = format!("{e:#}");
            if msg.contains(DECOMPRESSED_TOO_LARGE) {
                BrokerError::MessageTooLarge(msg)
            } else {
                BrokerError::CorruptMessage(msg)
            }
        })?;
    if set.records.len() != count as usize {
        return Err(BrokerError::InvalidRecord(format!(
            "decoded {} records but the header declares {count}",
            set.records.len()
        )));
    }
    let base = header.base_offset();
    if let Some((i, r)) = set
        .records
        .iter()
        .enumerate()
        .find(|(i, r)| r.offset.wrapping_sub(base) != *i as i64)
    {
        return Err(BrokerError::InvalidRecord(format!(
            "record {i} has offset delta {} instead of {i}",
            r.offset.wrapping_sub(base)
        )));
    }
    Ok(BatchSummary {
        records: count,
        producer_id: header.producer_id(),
    })
}

/// `kafka-protocol`'s decompression hook: the archive's decompressor, capped at `cap` bytes.
pub(crate) fn decompress_for_decoder(
    data: &Bytes,
    c: Compression,
    cap: usize,
) -> anyhow::Result<Bytes> {
    Ok(decompress_capped(data, codec(c), cap)?)
}

/// The archive's codec for a `kafka-protocol` compression.
fn codec(c: Compression) -> Codec {
    match c {
        Compression::None => Codec::None,
        Compression::Gzip => Codec::Gzip,
        Compression::Snappy => Codec::Snappy,
        Compression::Lz4 => Codec::Lz4,
        Compression::Zstd => Codec::Zstd,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    pub(crate) fn encode(values: &[&[u8]], compression: Compression) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // kafka-protocol starts a new batch when offset - sequence changes.
                sequence: i as i32,
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::copy_from_slice(v)),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn limits() -> BatchLimits {
        BatchLimits {
            max_message_bytes: 1 << 20,
            max_decompressed_bytes: 1 << 20,
        }
    }

    #[test]
    fn accepts_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = encode(&[b"a", b"bb", b"ccc"], c);
            let s = validate_batch(&b, &limits()).unwrap_or_else(|e| panic!("{c:?}: {e}"));
            assert_eq!(s.records, 3);
        }
    }

    #[test]
    fn bad_crc_is_corrupt_message() {
        let mut b = BytesMut::from(&encode(&[b"hello"], Compression::None)[..]);
        let last = b.len() - 1;
        b[last] ^= 1;
        let e = validate_batch(&b.freeze(), &limits()).unwrap_err();
        assert_eq!(e.code(), 2, "{e}");
    }

    #[test]
    fn oversize_is_message_too_large() {
        let b = encode(&[&[7u8; 2000]], Compression::None);
        let l = BatchLimits {
            max_message_bytes: 1000,
            ..limits()
        };
        assert_eq!(validate_batch(&b, &l).unwrap_err().code(), 10);
    }

    #[test]
    fn decompression_bomb_is_capped() {
        // 4 MiB of zeros compresses to a few hundred bytes.
        let zeros = vec![0u8; 4 << 20];
        for c in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Snappy,
        ] {
            let b = encode(&[&zeros], c);
            assert!(b.len() < 300_000, "{c:?} compresses well: {}", b.len());
            let e = validate_batch(&b, &limits()).unwrap_err();
            assert_eq!(e.code(), 10, "{c:?}: {e}");
            assert!(e.to_string().contains("decompressed size exceeds"), "{e}");
        }
    }

    #[test]
    fn two_batches_or_lying_counts_are_invalid_record() {
        let one = encode(&[b"x"], Compression::None);
        let mut two = BytesMut::from(&one[..]);
        two.extend_from_slice(&one);
        assert_eq!(
            validate_batch(&two.freeze(), &limits()).unwrap_err().code(),
            87
        );
        // last_offset_delta says 5 records but one is present, with a CRC that matches the lie.
        let mut lie = BytesMut::from(&one[..]);
        lie[23..27].copy_from_slice(&4i32.to_be_bytes());
        let crc = crc32c::crc32c(&lie[21..]);
        lie[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate_batch(&lie.freeze(), &limits()).unwrap_err().code(),
            87
        );
    }

    #[test]
    fn idempotent_batches_need_a_sequence_and_an_epoch() {
        let one = encode(&[b"x"], Compression::None);
        for (epoch, sequence) in [(0i16, -1i32), (-1, 0)] {
            let mut b = BytesMut::from(&one[..]);
            b[43..51].copy_from_slice(&5i64.to_be_bytes());
            b[51..53].copy_from_slice(&epoch.to_be_bytes());
            b[53..57].copy_from_slice(&sequence.to_be_bytes());
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(
                validate_batch(&b.freeze(), &limits()).unwrap_err().code(),
                87,
                "epoch {epoch} sequence {sequence}"
            );
        }
    }

    fn hex(s: &str) -> Bytes {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<_>>()
            .into()
    }

    /// Found by `fuzz/` (validate_batch): base offsets and timestamps near i64::MAX made offset
    /// and timestamp arithmetic overflow. Unit tests run with overflow checks on, so these would
    /// panic if any addition were unchecked.
    #[test]
    fn extreme_base_offsets_and_timestamps_do_not_overflow() {
        let cases = [
            // first_timestamp = i64::MAX, one record with timestamp delta 1: accepted, as Kafka
            // does not check timestamps by default (message.timestamp.*.max.ms unlimited)
            "0000000000000000000000390000000002005fdfbc0000000000007fffffffffffffff7fffffffffffffffffffffffffffffffffffffffffff000000010e00020001027600",
            // base_offset = i64::MAX, one record with offset delta 1
            "7fffffffffffffff000000390000000002ee632fea00000000000000000000000000000000000000000000ffffffffffffffffffffffffffff000000010e00000201027600",
            // base_offset = i64::MAX, two records with offset deltas 0 and -1
            "7fffffffffffffff0000004100000000028cbc1c2e00000000000100000000000000000000000000000000ffffffffffffffffffffffffffff000000020e000000010276000e00000101027600",
        ];
        let results: Vec<_> = cases
            .iter()
            .map(|c| validate_batch(&hex(c), &limits()).map_err(|e| e.code()))
            .collect();
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert_eq!(results[1], Err(87), "first record's offset delta is 1");
        assert_eq!(results[2], Err(87), "offset deltas 0, -1");
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for len in [0usize, 5, 61, 100] {
            let b = Bytes::from(vec![0xAAu8; len]);
            assert!(validate_batch(&b, &limits()).is_err());
        }
    }
}
