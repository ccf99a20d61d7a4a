//! A zero-copy view of the fixed 61-byte header of a Kafka v2 record batch.
//!
//! The log reads only the fixed-position header fields it needs to place a batch (base offset,
//! length, last offset delta, timestamps, CRC) and never decodes records; full record decoding
//! and validation happen in the broker through `kafka-protocol`. `kafka-protocol`'s
//! `BatchDecodeInfo` omits the last offset delta and the max timestamp, and the hot paths here
//! (append, recovery scan, fetch boundary search) must not allocate per batch, hence this view.
//!
//! Layout (all big-endian), as in Kafka's `DefaultRecordBatch`:
//! `base_offset i64 | batch_length i32 | partition_leader_epoch i32 | magic i8 | crc u32 |
//!  attributes i16 | last_offset_delta i32 | base_timestamp i64 | max_timestamp i64 |
//!  producer_id i64 | producer_epoch i16 | base_sequence i32 | records_count i32 | records…`
//! The CRC-32C covers everything from `attributes` to the end of the batch.

use crate::error::{LogError, Result};

/// Bytes before `batch_length` counts: base offset (8) and the length field itself (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header.
pub const HEADER_SIZE: usize = 61;

const LENGTH_OFFSET: usize = 8;
const LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const RECORDS_COUNT_OFFSET: usize = 57;

const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// How a batch's timestamps were assigned (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Overwritten by the broker on append (`message.timestamp.type=LogAppendTime`).
    LogAppendTime,
}

/// A borrowed view of one record batch header. Construct with [`BatchHeader::parse`], which checks
/// that the header is present; it does not check that the whole batch is.
#[derive(Debug, Clone, Copy)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl<'a> BatchHeader<'a> {
    /// Reads the header at the start of `bytes`. Fails if fewer than [`HEADER_SIZE`] bytes are
    /// present, if the magic is not 2, or if the declared length is too small to hold a header.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < HEADER_SIZE {
            return Err(LogError::TruncatedBatch {
                needed: HEADER_SIZE,
                available: bytes.len(),
            });
        }
        let header = Self { bytes };
        let magic = bytes[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(LogError::UnsupportedMagic(magic));
        }
        let length = header.batch_length();
        if length < (HEADER_SIZE - LOG_OVERHEAD) as i32 {
            return Err(LogError::InvalidBatch(format!(
                "batch length {length} is smaller than the v2 header"
            )));
        }
        if header.last_offset_delta() < 0 {
            return Err(LogError::InvalidBatch(format!(
                "negative last offset delta {}",
                header.last_offset_delta()
            )));
        }
        Ok(header)
    }

    /// Base offset as stored (the broker rewrites it on append).
    pub fn base_offset(&self) -> i64 {
        be_i64(self.bytes, 0)
    }
    /// Bytes following the length field.
    pub fn batch_length(&self) -> i32 {
        be_i32(self.bytes, LENGTH_OFFSET)
    }
    /// Whole batch size on the wire: [`LOG_OVERHEAD`] + `batch_length`.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length().max(0) as usize
    }
    /// Partition leader epoch stamped by the broker.
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.bytes, LEADER_EPOCH_OFFSET)
    }
    /// Stored CRC-32C.
    pub fn crc(&self) -> u32 {
        be_i32(self.bytes, CRC_OFFSET) as u32
    }
    /// Raw attribute bits.
    pub fn attributes(&self) -> i16 {
        be_i16(self.bytes, ATTRIBUTES_OFFSET)
    }
    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes() & 0x7) as u8
    }
    /// Timestamp type from attribute bit 3.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    /// Offset of the last record relative to the base offset.
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.bytes, LAST_OFFSET_DELTA_OFFSET)
    }
    /// `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + i64::from(self.last_offset_delta())
    }
    /// Timestamp of the first record.
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.bytes, BASE_TIMESTAMP_OFFSET)
    }
    /// Largest timestamp in the batch (the append time under `LogAppendTime`).
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.bytes, MAX_TIMESTAMP_OFFSET)
    }
    /// Idempotent producer id, or -1.
    pub fn producer_id(&self) -> i64 {
        be_i64(self.bytes, PRODUCER_ID_OFFSET)
    }
    /// Idempotent producer epoch, or -1.
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.bytes, PRODUCER_EPOCH_OFFSET)
    }
    /// Sequence number of the first record, or -1.
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.bytes, BASE_SEQUENCE_OFFSET)
    }
    /// Number of records as declared in the header.
    pub fn records_count(&self) -> i32 {
        be_i32(self.bytes, RECORDS_COUNT_OFFSET)
    }

    /// Checks the CRC-32C over `attributes..end`. `self` must cover the whole batch.
    pub fn verify_crc(&self) -> Result<()> {
        let end = self.total_size();
        if self.bytes.len() < end {
            return Err(LogError::TruncatedBatch {
                needed: end,
                available: self.bytes.len(),
            });
        }
        let actual = crc32c::crc32c(&self.bytes[ATTRIBUTES_OFFSET..end]);
        if actual != self.crc() {
            return Err(LogError::CorruptBatch(format!(
                "crc mismatch stored={:#010x} computed={actual:#010x}",
                self.crc()
            )));
        }
        Ok(())
    }
}

/// Overwrites the base offset (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites the partition leader epoch (not covered by the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks a batch as `LogAppendTime` with `timestamp` as its max timestamp, and recomputes the
/// CRC (attributes and timestamps are covered by it). The batch is given as its fixed header
/// `head` (at least [`HEADER_SIZE`] bytes, rewritten) and the `records` that follow it, so the
/// append path can patch a copy of the header without copying the records.
pub fn set_log_append_time(head: &mut [u8], records: &[u8], timestamp: i64) {
    let attributes = be_i16(head, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_BIT;
    head[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    head[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&timestamp.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[ATTRIBUTES_OFFSET..]), records);
    head[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a syntactically valid uncompressed v2 batch with `count` records of `value_len`
    /// bytes each. Used by this crate's tests only; the broker tests use real clients.
    pub(crate) fn make_batch(count: i32, base_ts: i64, value_len: usize) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..count {
            let mut rec = vec![0u8]; // attributes
            put_varlong(&mut rec, 0); // timestamp delta
            put_varlong(&mut rec, i64::from(i)); // offset delta
            put_varlong(&mut rec, -1); // null key
            put_varlong(&mut rec, value_len as i64);
            rec.extend(std::iter::repeat_n(b'v', value_len));
            put_varlong(&mut rec, 0); // headers
            put_varlong(&mut records, rec.len() as i64);
            records.extend(rec);
        }
        let mut b = Vec::with_capacity(HEADER_SIZE + records.len());
        b.extend(0i64.to_be_bytes());
        b.extend(((HEADER_SIZE - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.push(2);
        b.extend(0u32.to_be_bytes()); // crc placeholder
        b.extend(0i16.to_be_bytes());
        b.extend((count - 1).to_be_bytes());
        b.extend(base_ts.to_be_bytes());
        b.extend(base_ts.to_be_bytes());
        b.extend((-1i64).to_be_bytes());
        b.extend((-1i16).to_be_bytes());
        b.extend((-1i32).to_be_bytes());
        b.extend(count.to_be_bytes());
        b.extend(records);
        let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// `make_batch` written by idempotent producer `producer_id`/`epoch` from `base_sequence`.
    pub(crate) fn idempotent_batch(
        count: i32,
        base_ts: i64,
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
    ) -> Vec<u8> {
        let mut b = make_batch(count, base_ts, 8);
        b[43..51].copy_from_slice(&producer_id.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&base_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn put_varlong(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    #[test]
    fn parses_fields_and_verifies_crc() {
        let b = make_batch(3, 1_700_000_000_000, 10);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.records_count(), 3);
        assert_eq!(h.last_offset_delta(), 2);
        assert_eq!(h.total_size(), b.len());
        assert_eq!(h.max_timestamp(), 1_700_000_000_000);
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        h.verify_crc().unwrap();
    }

    #[test]
    fn base_offset_and_epoch_rewrite_keep_crc_valid() {
        let mut b = make_batch(2, 5, 4);
        set_base_offset(&mut b, 42);
        set_partition_leader_epoch(&mut b, 7);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset(), 42);
        assert_eq!(h.last_offset(), 43);
        assert_eq!(h.partition_leader_epoch(), 7);
        h.verify_crc().unwrap();
    }

    #[test]
    fn log_append_time_rewrites_and_recomputes_crc() {
        let mut b = make_batch(2, 5, 4);
        let (head, records) = b.split_at_mut(HEADER_SIZE);
        set_log_append_time(head, records, 99);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp(), 99);
        h.verify_crc().unwrap();
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut b = make_batch(2, 5, 4);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        let err = BatchHeader::parse(&b).unwrap().verify_crc().unwrap_err();
        assert!(matches!(err, LogError::CorruptBatch(_)), "{err}");
    }

    #[test]
    fn short_or_wrong_magic_is_rejected() {
        let b = make_batch(1, 0, 1);
        assert!(matches!(
            BatchHeader::parse(&b[..20]),
            Err(LogError::TruncatedBatch { .. })
        ));
        let mut m = b.clone();
        m[MAGIC_OFFSET] = 1;
        assert!(matches!(
            BatchHeader::parse(&m),
            Err(LogError::UnsupportedMagic(1))
        ));
    }
}
