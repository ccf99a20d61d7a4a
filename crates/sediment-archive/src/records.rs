//! Reading the records inside Kafka v2 record batches, losslessly.
//!
//! The broker validates produced batches with `kafka-protocol`, but its `Record` keeps headers
//! in a map, so two headers with the same key (which Kafka allows: `Headers.add` appends)
//! would collapse into one. The archive must keep every header in order, so records are read
//! here, by a small decoder over the decompressed records section. It checks every length
//! against the bytes present, caps the decompressed size, and never allocates from a count
//! read off the data.
//!
//! Record layout (Kafka's `DefaultRecord`; every integer a zigzag varint):
//! `length | attributes i8 | timestamp_delta varlong | offset_delta | key_length | key |
//!  value_length | value | header_count | (key_length | key | value_length | value)*`.
//! A length of -1 is null.

use std::io::Read;

use bytes::Bytes;
use sediment_log::{BatchHeader, HEADER_SIZE, TimestampType};

use crate::error::{ArchiveError, Result};

/// A batch's compression codec (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// snappy (raw or xerial-framed, as the Java client writes it).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Codec {
    /// The codec of attribute bits 0-2.
    pub fn from_attributes(attributes: i16) -> Result<Self> {
        Ok(match attributes & 0x7 {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            other => {
                return Err(ArchiveError::CorruptBatch(format!(
                    "unknown compression codec={other}"
                )));
            }
        })
    }

    /// Kafka's name for the codec.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// Prefix of the error message when a batch inflates past the cap.
pub const DECOMPRESSED_TOO_LARGE: &str = "decompressed size exceeds";

fn too_large(cap: usize) -> ArchiveError {
    ArchiveError::CorruptBatch(format!("{DECOMPRESSED_TOO_LARGE} the limit of {cap} bytes"))
}

fn corrupt(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::CorruptBatch(e.to_string())
}

/// Reads `reader` to the end into the front of `out`, failing once more than `cap` bytes come
/// out; returns how many bytes it read. `out` keeps its length between calls and only grows
/// (zero-filled once), so decoding batch after batch into one buffer neither re-zeroes nor
/// re-allocates it.
fn read_capped_into(
    mut reader: impl Read,
    cap: usize,
    hint: usize,
    out: &mut Vec<u8>,
) -> Result<usize> {
    if out.len() < hint.min(cap + 1) {
        out.resize(hint.min(cap + 1), 0);
    }
    let mut filled = 0;
    loop {
        if filled == out.len() {
            if filled > cap {
                return Err(too_large(cap));
            }
            let grown = (out.len() * 2).max(64 << 10).min(cap + 1);
            out.resize(grown, 0);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(e)),
        }
        if filled > cap {
            return Err(too_large(cap));
        }
    }
    Ok(filled)
}

/// xerial snappy-java framing, which the Java client uses for Kafka's snappy codec.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

fn snappy_block(block: &[u8], out: &mut Vec<u8>, cap: usize) -> Result<()> {
    let len = snap::raw::decompress_len(block).map_err(corrupt)?;
    if out.len() + len > cap {
        return Err(too_large(cap));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(corrupt)?;
    Ok(())
}

/// Decompresses one batch's records section with `codec`, refusing to produce more than `cap`
/// bytes (a small zstd or gzip bomb cannot make the process allocate gigabytes). Checks
/// declared sizes before allocating where the format has them (snappy).
pub fn decompress_capped(data: &Bytes, codec: Codec, cap: usize) -> Result<Bytes> {
    if codec == Codec::None {
        return Ok(data.clone());
    }
    let mut out = Vec::new();
    let n = decompress_capped_into(data, codec, cap, &mut out)?;
    out.truncate(n);
    Ok(out.into())
}

/// [`decompress_capped`] into the front of a buffer the caller reuses; returns the
/// decompressed length (`out` may be longer). `Codec::None` copies. The archiver decodes batch
/// after batch into one buffer.
pub fn decompress_capped_into(
    data: &[u8],
    codec: Codec,
    cap: usize,
    out: &mut Vec<u8>,
) -> Result<usize> {
    // Compressed record batches of text usually inflate 3-5x.
    let hint = data.len().saturating_mul(5);
    match codec {
        Codec::None => {
            if data.len() > cap {
                return Err(too_large(cap));
            }
            out.clear();
            out.extend_from_slice(data);
            Ok(data.len())
        }
        Codec::Gzip => read_capped_into(flate2::read::MultiGzDecoder::new(data), cap, hint, out),
        Codec::Zstd => read_capped_into(
            zstd::stream::read::Decoder::new(data).map_err(corrupt)?,
            cap,
            hint,
            out,
        ),
        Codec::Lz4 => read_capped_into(lz4::Decoder::new(data).map_err(corrupt)?, cap, hint, out),
        Codec::Snappy => {
            out.clear();
            if data.len() >= XERIAL_HEADER_LEN && data.starts_with(XERIAL_MAGIC) {
                let mut rest = &data[XERIAL_HEADER_LEN..];
                while !rest.is_empty() {
                    if rest.len() < 4 {
                        return Err(corrupt("truncated snappy block length"));
                    }
                    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    rest = &rest[4..];
                    if rest.len() < len {
                        return Err(corrupt("truncated snappy block"));
                    }
                    snappy_block(&rest[..len], out, cap)?;
                    rest = &rest[len..];
                }
            } else {
                snappy_block(data, out, cap)?;
            }
            Ok(out.len())
        }
    }
}

/// A cursor over bytes that fails instead of reading past the end.
#[derive(Debug, Clone, Copy)]
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| corrupt(format!("record truncated at byte={}", self.pos)))?;
        self.pos += 1;
        Ok(b)
    }

    /// An unsigned LEB128 varint of at most `max_bytes` bytes.
    fn uvarint(&mut self, max_bytes: u32) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.u8()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt(format!("varint longer than {max_bytes} bytes")))
    }

    fn varint(&mut self) -> Result<i32> {
        let v = self.uvarint(5)?;
        let v = u32::try_from(v).map_err(|_| corrupt("varint overflows 32 bits"))?;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64> {
        let v = self.uvarint(10)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.remaining() {
            return Err(corrupt(format!(
                "field of length={len} exceeds the remaining={} bytes",
                self.remaining()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// A varint length followed by that many bytes; -1 is null.
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(corrupt(format!("negative field length={n}"))),
            n => self.take(n as usize).map(Some),
        }
    }
}

/// One record, borrowed from its batch's decompressed records.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    /// Timestamp relative to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// Key, or `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value, or `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// Headers in their order on the wire, duplicates kept.
    pub headers: Headers<'a>,
}

/// The headers of one record, read lazily in wire order.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    cursor: Cursor<'a>,
    left: usize,
}

impl<'a> Headers<'a> {
    /// Number of headers.
    pub fn len(&self) -> usize {
        self.left
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }
}

impl<'a> Iterator for Headers<'a> {
    /// (key, value); a header key is never null, its value may be.
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The framing was checked when the record was read, so this cannot fail.
        let key = self.cursor.nullable_bytes().ok().flatten().unwrap_or(&[]);
        let value = self.cursor.nullable_bytes().ok().flatten();
        Some((key, value))
    }
}

/// A batch with its records section decompressed, borrowing the batch and, when compressed,
/// the caller's buffer.
#[derive(Debug, Clone, Copy)]
pub struct DecodedBatch<'a> {
    header: BatchHeader<'a>,
    records: &'a [u8],
}

impl<'a> DecodedBatch<'a> {
    /// Checks the CRC of one whole v2 batch (exactly `batch`), and decompresses its records
    /// into `scratch` (reused across batches) with at most `max_decompressed` bytes.
    pub fn decode(
        batch: &'a [u8],
        max_decompressed: usize,
        scratch: &'a mut Vec<u8>,
    ) -> Result<Self> {
        let header = BatchHeader::parse(batch).map_err(corrupt)?;
        if header.total_size() != batch.len() {
            return Err(corrupt(format!(
                "batch length says {} bytes but {} are present",
                header.total_size(),
                batch.len()
            )));
        }
        header.verify_crc().map_err(corrupt)?;
        let codec = Codec::from_attributes(header.attributes())?;
        let body = &batch[HEADER_SIZE..];
        let records = if codec == Codec::None {
            body
        } else {
            let n = decompress_capped_into(body, codec, max_decompressed, scratch)?;
            &scratch[..n]
        };
        Ok(Self { header, records })
    }

    /// The fixed header.
    pub fn header(&self) -> BatchHeader<'a> {
        self.header
    }

    /// The batch's compression codec.
    pub fn codec(&self) -> Codec {
        Codec::from_attributes(self.header.attributes()).expect("checked in decode")
    }

    /// Size of the decompressed records section.
    pub fn records_size(&self) -> usize {
        self.records.len()
    }

    /// Reads every record, checking the framing of each (lengths, varints, header count) and
    /// that there are as many as the header says. The timestamp of record `r` is
    /// [`DecodedBatch::timestamp`]`(r)`.
    pub fn records(&self) -> Result<Vec<Record<'a>>> {
        let declared = self.header.records_count();
        if declared < 0 {
            return Err(corrupt(format!("negative records count={declared}")));
        }
        let mut cursor = Cursor::new(self.records);
        // Bounded by the bytes present: a record takes at least 7 bytes.
        let mut out = Vec::with_capacity((declared as usize).min(self.records.len() / 7 + 1));
        while cursor.remaining() > 0 {
            let length = cursor.varint()?;
            if length < 0 {
                return Err(corrupt(format!("negative record length={length}")));
            }
            let body = cursor.take(length as usize)?;
            out.push(read_record(body)?);
        }
        if out.len() != declared as usize {
            return Err(corrupt(format!(
                "batch declares {declared} records but holds {}",
                out.len()
            )));
        }
        Ok(out)
    }

    /// The timestamp a consumer sees for a record: the batch's max timestamp under
    /// `LogAppendTime`, else the base timestamp plus the record's delta.
    pub fn timestamp(&self, record: &Record<'_>) -> i64 {
        match self.header.timestamp_type() {
            TimestampType::LogAppendTime => self.header.max_timestamp(),
            TimestampType::CreateTime => self
                .header
                .base_timestamp()
                .wrapping_add(record.timestamp_delta),
        }
    }
}

fn read_record(body: &[u8]) -> Result<Record<'_>> {
    let mut c = Cursor::new(body);
    let _attributes = c.u8()?;
    let timestamp_delta = c.varlong()?;
    let offset_delta = c.varint()?;
    let key = c.nullable_bytes()?;
    let value = c.nullable_bytes()?;
    let count = c.varint()?;
    if count < 0 {
        return Err(corrupt(format!("negative header count={count}")));
    }
    let start = c;
    for _ in 0..count {
        match c.nullable_bytes()? {
            Some(k) if std::str::from_utf8(k).is_ok() => {}
            Some(_) => return Err(corrupt("header key is not utf-8")),
            None => return Err(corrupt("null header key")),
        }
        c.nullable_bytes()?;
    }
    if c.remaining() != 0 {
        return Err(corrupt(format!(
            "record has {} bytes after its headers",
            c.remaining()
        )));
    }
    Ok(Record {
        offset_delta,
        timestamp_delta,
        key,
        value,
        headers: Headers {
            cursor: start,
            left: count as usize,
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::reader::{put_bytes, put_varint};

    /// A record for the test encoder.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct TestRecord {
        pub timestamp_delta: i64,
        pub key: Option<Vec<u8>>,
        pub value: Option<Vec<u8>>,
        pub headers: Vec<(String, Option<Vec<u8>>)>,
    }

    /// Encodes a v2 batch the way Kafka producers do (uncompressed or zstd).
    pub(crate) fn encode_batch(
        base_offset: i64,
        base_timestamp: i64,
        records: &[TestRecord],
        zstd: bool,
        log_append_time: Option<i64>,
        producer: (i64, i16, i32),
    ) -> Vec<u8> {
        let mut body = Vec::new();
        let mut max_ts = base_timestamp;
        for (i, r) in records.iter().enumerate() {
            let mut rec = vec![0u8];
            put_varint(&mut rec, r.timestamp_delta);
            put_varint(&mut rec, i as i64);
            put_bytes(&mut rec, r.key.as_deref());
            put_bytes(&mut rec, r.value.as_deref());
            put_varint(&mut rec, r.headers.len() as i64);
            for (k, v) in &r.headers {
                put_bytes(&mut rec, Some(k.as_bytes()));
                put_bytes(&mut rec, v.as_deref());
            }
            put_varint(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
            max_ts = max_ts.max(base_timestamp + r.timestamp_delta);
        }
        let mut attributes: i16 = 0;
        if zstd {
            body = zstd::encode_all(&body[..], 1).unwrap();
            attributes |= 4;
        }
        if let Some(t) = log_append_time {
            attributes |= 1 << 3;
            max_ts = t;
        }
        let mut b = Vec::new();
        b.extend_from_slice(&base_offset.to_be_bytes());
        b.extend_from_slice(&((HEADER_SIZE - 12 + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&3i32.to_be_bytes()); // leader epoch
        b.push(2);
        b.extend_from_slice(&[0; 4]); // crc
        b.extend_from_slice(&attributes.to_be_bytes());
        b.extend_from_slice(&((records.len() as i32) - 1).to_be_bytes());
        b.extend_from_slice(&base_timestamp.to_be_bytes());
        b.extend_from_slice(&max_ts.to_be_bytes());
        b.extend_from_slice(&producer.0.to_be_bytes());
        b.extend_from_slice(&producer.1.to_be_bytes());
        b.extend_from_slice(&producer.2.to_be_bytes());
        b.extend_from_slice(&(records.len() as i32).to_be_bytes());
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub(crate) fn arb_record() -> impl Strategy<Value = TestRecord> {
        (
            -1000i64..1000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                (
                    "[a-c]{1,3}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
                ),
                0..4,
            ),
        )
            .prop_map(|(timestamp_delta, key, value, headers)| TestRecord {
                timestamp_delta,
                key,
                value,
                headers,
            })
    }

    proptest! {
        #[test]
        fn records_round_trip_with_duplicate_headers(
            records in proptest::collection::vec(arb_record(), 1..20),
            zstd in any::<bool>(),
        ) {
            let bytes = encode_batch(100, 1_700_000_000_000, &records, zstd, None, (-1, -1, -1));
            let mut scratch = Vec::new();
            let batch = DecodedBatch::decode(&bytes, 1 << 20, &mut scratch).unwrap();
            let decoded = batch.records().unwrap();
            prop_assert_eq!(decoded.len(), records.len());
            for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(d.offset_delta, i as i32);
                prop_assert_eq!(batch.timestamp(d), 1_700_000_000_000 + r.timestamp_delta);
                prop_assert_eq!(d.key, r.key.as_deref());
                prop_assert_eq!(d.value, r.value.as_deref());
                let headers: Vec<(String, Option<Vec<u8>>)> = d
                    .headers
                    .clone()
                    .map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), v.map(<[u8]>::to_vec)))
                    .collect();
                prop_assert_eq!(&headers, &r.headers);
            }
        }

        #[test]
        fn damaged_records_are_an_error_or_well_formed(
            records in proptest::collection::vec(arb_record(), 1..5),
            flip in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = encode_batch(0, 0, &records, false, None, (-1, -1, -1));
            let at = HEADER_SIZE + flip.index(bytes.len() - HEADER_SIZE);
            let unchanged = bytes[at] == byte;
            bytes[at] = byte;
            // Recompute the CRC so the decoder, not the checksum, meets the damage.
            let crc = crc32c::crc32c(&bytes[21..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            let mut scratch = Vec::new();
            // What came out: the declared count, the bytes of records, and per record the
            // key and value lengths and the header count.
            type Shape = Vec<(Option<usize>, Option<usize>, usize)>;
            let decoded = DecodedBatch::decode(&bytes, 1 << 20, &mut scratch).and_then(|batch| {
                let shape: Shape = batch
                    .records()?
                    .iter()
                    .map(|r| (r.key.map(<[u8]>::len), r.value.map(<[u8]>::len), r.headers.clone().count()))
                    .collect();
                Ok((batch.header().records_count(), batch.records_size(), shape))
            });
            if unchanged {
                let expected: Shape = records
                    .iter()
                    .map(|r| (r.key.as_ref().map(Vec::len), r.value.as_ref().map(Vec::len), r.headers.len()))
                    .collect();
                let (_, _, shape) = decoded.as_ref().expect("an undamaged batch decodes");
                prop_assert_eq!(shape, &expected);
            }
            // Damage the decoder accepts still leaves as many records as declared, each inside
            // the batch.
            if let Ok((declared, size, shape)) = decoded {
                prop_assert_eq!(shape.len(), usize::try_from(declared).unwrap());
                let payload: usize = shape.iter().map(|(k, v, _)| k.unwrap_or(0) + v.unwrap_or(0)).sum();
                prop_assert!(payload <= size, "{payload} bytes of keys and values in {size}");
            }
        }
    }

    #[test]
    fn duplicate_header_keys_are_kept_in_order() {
        let r = TestRecord {
            timestamp_delta: 0,
            key: None,
            value: Some(b"v".to_vec()),
            headers: vec![
                ("trace".into(), Some(b"1".to_vec())),
                ("trace".into(), Some(b"2".to_vec())),
                ("empty".into(), None),
            ],
        };
        let bytes = encode_batch(0, 5, &[r], false, None, (-1, -1, -1));
        let mut scratch = Vec::new();
        let batch = DecodedBatch::decode(&bytes, 1024, &mut scratch).unwrap();
        let recs = batch.records().unwrap();
        let h: Vec<_> = recs[0].headers.clone().collect();
        assert_eq!(
            h,
            vec![
                (&b"trace"[..], Some(&b"1"[..])),
                (&b"trace"[..], Some(&b"2"[..])),
                (&b"empty"[..], None)
            ]
        );
        assert_eq!(recs[0].key, None);
    }

    #[test]
    fn log_append_time_gives_every_record_the_batch_time() {
        let recs: Vec<_> = (0..3)
            .map(|i| TestRecord {
                timestamp_delta: i,
                key: None,
                value: None,
                headers: vec![],
            })
            .collect();
        let bytes = encode_batch(0, 5, &recs, false, Some(99), (-1, -1, -1));
        let mut scratch = Vec::new();
        let batch = DecodedBatch::decode(&bytes, 1024, &mut scratch).unwrap();
        for r in batch.records().unwrap() {
            assert_eq!(batch.timestamp(&r), 99);
        }
    }

    #[test]
    fn bad_crc_count_and_bombs_are_refused() {
        let one = TestRecord {
            timestamp_delta: 0,
            key: None,
            value: Some(vec![0; 100_000]),
            headers: vec![],
        };
        let mut bytes = encode_batch(0, 0, std::slice::from_ref(&one), false, None, (-1, -1, -1));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut scratch = Vec::new();
        assert!(DecodedBatch::decode(&bytes, 1 << 20, &mut scratch).is_err());
        // A zstd batch that inflates past the cap.
        let bytes = encode_batch(0, 0, std::slice::from_ref(&one), true, None, (-1, -1, -1));
        let err = DecodedBatch::decode(&bytes, 10_000, &mut scratch).unwrap_err();
        assert!(err.to_string().contains(DECOMPRESSED_TOO_LARGE), "{err}");
        // The header says two records, the body holds one.
        let mut bytes = encode_batch(0, 0, &[one], false, None, (-1, -1, -1));
        bytes[57..61].copy_from_slice(&2i32.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let batch = DecodedBatch::decode(&bytes, 1 << 20, &mut scratch).unwrap();
        assert!(batch.records().is_err());
    }
}
