//! Sealed segment -> Arrow -> Parquet.
//!
//! The segment is read in chunks of whole batches, each batch is checked (CRC) and its records
//! decoded (see [`crate::records`]), rows are gathered column by column and handed to Parquet's
//! `ArrowWriter`, which compresses pages with zstd and writes statistics and the page index.
//! Row groups are cut only between record batches, once the encoded size of the one being
//! built reaches [`WriterOptions::row_group_bytes`], so a replay can rebuild any batch from a
//! single row group. Control batches are not user rows and are skipped.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, ParquetMetaData, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sediment_log::{BatchHeader, ReadSlice, TimestampType};
use uuid::Uuid;

use crate::error::{ArchiveError, Result};
use crate::records::DecodedBatch;
use crate::schema::{self, col, meta};

/// How archive files are written.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Cut a row group (between batches) once its encoded size reaches this.
    pub row_group_bytes: usize,
    /// ... or once it holds this many rows.
    pub row_group_rows: usize,
    /// zstd level of the column chunks (1-22).
    pub zstd_level: i32,
    /// Largest size one batch's records may inflate to.
    pub max_decompressed_batch_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            row_group_bytes: 8 << 20,
            row_group_rows: 1 << 20,
            zstd_level: 1,
            max_decompressed_batch_bytes: 64 << 20,
        }
    }
}

/// The sealed segment to archive.
#[derive(Debug, Clone)]
pub struct SegmentSource {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// First offset of the segment.
    pub base_offset: i64,
    /// Offset after its last record.
    pub next_offset: i64,
    /// Size of the segment file.
    pub size_bytes: u64,
    /// The segment's bytes.
    pub slice: ReadSlice,
}

impl SegmentSource {
    /// Last offset of the segment (inclusive).
    pub fn last_offset(&self) -> i64 {
        self.next_offset - 1
    }
}

/// Bytes of whole batches read from the segment at a time.
const READ_CHUNK: usize = 4 << 20;
/// Rows gathered before they are handed to the Parquet writer.
const ARROW_CHUNK_BYTES: usize = 4 << 20;

/// Row columns being gathered for the next Arrow batch.
#[derive(Debug)]
struct Columns {
    schema: SchemaRef,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    timestamp_type: StringBuilder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    header_offsets: Vec<i32>,
    header_key: StringBuilder,
    header_value: BinaryBuilder,
    producer_id: Int64Builder,
    producer_epoch: Int16Builder,
    sequence: Int32Builder,
    leader_epoch: Int32Builder,
    batch_base_offset: Int64Builder,
    batch_last_offset: Int64Builder,
    batch_attributes: Int16Builder,
    rows: usize,
    bytes: usize,
}

impl Columns {
    fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            timestamp_type: StringBuilder::new(),
            // Sized for a whole chunk, so the builders do not grow value by value.
            key: BinaryBuilder::with_capacity(16 << 10, 1 << 20),
            value: BinaryBuilder::with_capacity(16 << 10, ARROW_CHUNK_BYTES + (1 << 20)),
            header_offsets: vec![0],
            header_key: StringBuilder::new(),
            header_value: BinaryBuilder::new(),
            producer_id: Int64Builder::new(),
            producer_epoch: Int16Builder::new(),
            sequence: Int32Builder::new(),
            leader_epoch: Int32Builder::new(),
            batch_base_offset: Int64Builder::new(),
            batch_last_offset: Int64Builder::new(),
            batch_attributes: Int16Builder::new(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds every record of `batch` (whose offsets start at `base_offset`); returns the
    /// payload bytes (keys, values, headers) added.
    fn add_batch(&mut self, partition: i32, batch: &DecodedBatch<'_>) -> Result<u64> {
        let h = batch.header();
        let base = h.base_offset();
        let last = h.last_offset();
        let ts_type = match h.timestamp_type() {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        };
        let (pid, epoch, base_seq) = (h.producer_id(), h.producer_epoch(), h.base_sequence());
        let (leader_epoch, attributes) = (h.partition_leader_epoch(), h.attributes());
        let mut payload = 0u64;
        let mut rows = 0usize;
        for r in batch.records()? {
            let offset = base.wrapping_add(i64::from(r.offset_delta));
            self.offset.append_value(offset);
            self.timestamp.append_value(batch.timestamp(&r));
            self.key.append_option(r.key);
            self.value.append_option(r.value);
            let mut size = r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len);
            for (k, v) in r.headers.clone() {
                // Header keys were checked to be UTF-8 when the record was read.
                self.header_key
                    .append_value(std::str::from_utf8(k).unwrap_or_default());
                self.header_value.append_option(v);
                size += k.len() + v.map_or(0, <[u8]>::len);
            }
            let headers_end = self.header_key.len();
            self.header_offsets.push(
                i32::try_from(headers_end)
                    .map_err(|_| ArchiveError::CorruptBatch("too many headers".into()))?,
            );
            self.sequence
                .append_value(sequence_of(base_seq, r.offset_delta));
            rows += 1;
            self.bytes += size + 64;
            payload += size as u64;
        }
        // Columns that hold one value per batch are filled once per batch, not row by row.
        self.partition.append_value_n(partition, rows);
        for _ in 0..rows {
            self.timestamp_type.append_value(ts_type);
        }
        self.producer_id.append_value_n(pid, rows);
        self.producer_epoch.append_value_n(epoch, rows);
        self.leader_epoch.append_value_n(leader_epoch, rows);
        self.batch_base_offset.append_value_n(base, rows);
        self.batch_last_offset.append_value_n(last, rows);
        self.batch_attributes.append_value_n(attributes, rows);
        self.rows += rows;
        Ok(payload)
    }

    /// Hands the gathered rows over as an Arrow batch and starts again with builders sized for
    /// a whole chunk (`finish` would leave empty ones that regrow, copying, value by value).
    fn take(&mut self) -> Result<RecordBatch> {
        let fresh = Columns::new(Arc::clone(&self.schema));
        std::mem::replace(self, fresh).into_batch()
    }

    fn into_batch(mut self) -> Result<RecordBatch> {
        let header_fields = schema::header_fields();
        let headers = StructArray::try_new(
            header_fields,
            vec![
                Arc::new(self.header_key.finish()) as ArrayRef,
                Arc::new(self.header_value.finish()),
            ],
            None,
        )?;
        let offsets = std::mem::take(&mut self.header_offsets);
        let headers = ListArray::try_new(
            schema::header_item_field(),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Arc::new(headers),
            None,
        )?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.timestamp_type.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(headers),
            Arc::new(self.producer_id.finish()),
            Arc::new(self.producer_epoch.finish()),
            Arc::new(self.sequence.finish()),
            Arc::new(self.leader_epoch.finish()),
            Arc::new(self.batch_base_offset.finish()),
            Arc::new(self.batch_last_offset.finish()),
            Arc::new(self.batch_attributes.finish()),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// Kafka's per-record sequence: the batch's base sequence plus the offset delta, wrapping from
/// `i32::MAX` to 0; -1 when the batch has none.
fn sequence_of(base_sequence: i32, offset_delta: i32) -> i32 {
    if base_sequence < 0 {
        return -1;
    }
    let s = i64::from(base_sequence) + i64::from(offset_delta);
    (s % (i64::from(i32::MAX) + 1)) as i32
}

/// Parquet writer settings of archive files.
pub fn writer_properties(options: &WriterOptions, kv: Vec<KeyValue>) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(options.zstd_level)?;
    let no_stats = |c: &str| ColumnPath::from(c);
    let mut builder = WriterProperties::builder();
    // Ascending, mostly unique integers: delta encoding stores them in a few bits each, where
    // a dictionary would only be built and thrown away.
    for c in [
        col::OFFSET,
        col::TIMESTAMP,
        col::SEQUENCE,
        col::BATCH_BASE_OFFSET,
        col::BATCH_LAST_OFFSET,
    ] {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
    }
    Ok(builder
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        // Payload columns: statistics of arbitrary bytes prune nothing and cost CPU.
        .set_column_statistics_enabled(no_stats(col::VALUE), EnabledStatistics::None)
        .set_column_statistics_enabled(
            ColumnPath::new(vec![
                col::HEADERS.into(),
                "list".into(),
                "element".into(),
                "value".into(),
            ]),
            EnabledStatistics::None,
        )
        .set_column_dictionary_enabled(no_stats(col::VALUE), false)
        // Keys are often ids with more distinct values than a dictionary page holds: building
        // the dictionary costs more than it saves (measured on the archive benchmark).
        .set_column_dictionary_enabled(no_stats(col::KEY), false)
        .set_statistics_truncate_length(Some(64))
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(None)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 1,
            descending: false,
            nulls_first: false,
        }]))
        .set_created_by(format!("sediment {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(kv))
        .build())
}

/// Writes `source` as one archive file into `out` and returns the file's metadata (which
/// [`crate::manifest::entry_from_footer`] turns into a manifest entry).
pub fn write_segment(
    source: &SegmentSource,
    options: &WriterOptions,
    out: File,
    path: &Path,
) -> Result<ParquetMetaData> {
    let metadata = vec![
        kv(meta::SCHEMA_VERSION, schema::SCHEMA_VERSION),
        kv(meta::TOPIC, &source.topic),
        kv(meta::TOPIC_ID, source.topic_id),
        kv(meta::PARTITION, source.partition),
        kv(meta::BASE_OFFSET, source.base_offset),
        kv(meta::LAST_OFFSET, source.last_offset()),
        kv(meta::SEGMENT_BYTES, source.size_bytes),
    ];
    let schema = schema::arrow_schema();
    let props = writer_properties(options, metadata)?;
    let mut writer = ArrowWriter::try_new(out, Arc::clone(&schema), Some(props))?;
    let mut columns = Columns::new(schema);
    let mut crc = 0u32;
    let mut payload = 0u64;
    let mut epochs: Vec<(i32, i64)> = Vec::new();
    let mut group_rows = 0usize;
    let mut expected = source.base_offset;
    let mut slice = source.slice.clone();
    // Decompressed records of the current batch; reused so it stops growing after a few.
    let mut scratch = Vec::new();
    let mut chunk = Vec::new();
    loop {
        let n = slice
            .read_into(READ_CHUNK, &mut chunk)
            .map_err(|e| ArchiveError::io(path, std::io::Error::other(e.to_string())))?;
        if n == 0 {
            break;
        }
        let bytes = &chunk[..n];
        crc = crc32c::crc32c_append(crc, bytes);
        let mut pos = 0;
        while pos < n {
            let header = BatchHeader::parse(&bytes[pos..])
                .map_err(|e| ArchiveError::CorruptBatch(e.to_string()))?;
            let size = header.total_size();
            if header.base_offset() != expected {
                return Err(ArchiveError::CorruptBatch(format!(
                    "batch at offset={} where offset={expected} was expected",
                    header.base_offset()
                )));
            }
            if pos + size > n {
                return Err(ArchiveError::CorruptBatch(format!(
                    "batch at offset={expected} runs past the end of the segment"
                )));
            }
            expected = header.last_offset() + 1;
            let batch_bytes = &bytes[pos..pos + size];
            pos += size;
            let epoch = header.partition_leader_epoch();
            if epochs.last().is_none_or(|&(e, _)| e != epoch) {
                epochs.push((epoch, header.base_offset()));
            }
            if header.is_control() {
                continue;
            }
            let batch = DecodedBatch::decode(
                batch_bytes,
                options.max_decompressed_batch_bytes,
                &mut scratch,
            )?;
            payload += columns.add_batch(source.partition, &batch)?;
            if columns.bytes >= ARROW_CHUNK_BYTES.min(options.row_group_bytes) {
                group_rows += columns.rows;
                writer.write(&columns.take()?)?;
            }
            if writer.in_progress_size() >= options.row_group_bytes
                || group_rows >= options.row_group_rows
            {
                writer.flush()?;
                group_rows = 0;
            }
        }
        slice = slice.advanced(n as u64);
    }
    if expected != source.next_offset {
        return Err(ArchiveError::CorruptBatch(format!(
            "segment ends at offset={expected} but should end at offset={}",
            source.next_offset
        )));
    }
    if columns.rows > 0 {
        writer.write(&columns.into_batch()?)?;
    }
    writer.append_key_value_metadata(kv(meta::SEGMENT_CRC32C, crc));
    writer.append_key_value_metadata(kv(meta::RECORD_BYTES, payload));
    writer.append_key_value_metadata(kv(
        meta::LEADER_EPOCHS,
        serde_json::to_string(&epochs).expect("pairs serialize"),
    ));
    let metadata = writer.finish()?;
    writer
        .inner()
        .sync_all()
        .map_err(|e| ArchiveError::io(path, e))?;
    Ok(metadata)
}

fn kv(key: &str, value: impl ToString) -> KeyValue {
    KeyValue::new(key.to_string(), value.to_string())
}
