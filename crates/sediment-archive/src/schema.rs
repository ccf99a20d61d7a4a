//! The archive's table schema (version [`SCHEMA_VERSION`]) and the key-value metadata every
//! archive file carries. `docs/archive-format.md` describes the same thing for readers; a
//! golden test keeps the two from drifting.
//!
//! One row per record. Rows are in ascending offset order and each row group holds whole
//! record batches, so a batch can be rebuilt from one row group: the `batch_*` columns repeat
//! the batch's fields on each of its rows (they cost almost nothing after run-length encoding).

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Version of the schema and layout written by this build. Readers check it in the file's
/// key-value metadata; a change that old readers cannot read raises it.
pub const SCHEMA_VERSION: u32 = 1;

/// Key-value metadata keys of an archive file.
pub mod meta {
    /// [`super::SCHEMA_VERSION`].
    pub const SCHEMA_VERSION: &str = "sediment.schema_version";
    /// Topic name.
    pub const TOPIC: &str = "sediment.topic";
    /// Topic id (UUID), which tells incarnations of a topic name apart.
    pub const TOPIC_ID: &str = "sediment.topic_id";
    /// Partition index.
    pub const PARTITION: &str = "sediment.partition";
    /// First offset of the segment the file was made from.
    pub const BASE_OFFSET: &str = "sediment.base_offset";
    /// Last offset of that segment (inclusive).
    pub const LAST_OFFSET: &str = "sediment.last_offset";
    /// Size of that segment on the broker's disk, which `retention.bytes` counts.
    pub const SEGMENT_BYTES: &str = "sediment.segment_bytes";
    /// CRC-32C of the segment's bytes: a retried upload recognises its own object by it.
    pub const SEGMENT_CRC32C: &str = "sediment.segment_crc32c";
    /// Bytes of keys, values and headers (the uncompressed payload).
    pub const RECORD_BYTES: &str = "sediment.record_bytes";
    /// JSON list of `[leader_epoch, start_offset]` pairs within the segment.
    pub const LEADER_EPOCHS: &str = "sediment.leader_epochs";
}

/// Column names, in schema order.
pub mod col {
    /// Partition index (also a Hive path component).
    pub const PARTITION: &str = "partition";
    /// Record offset.
    pub const OFFSET: &str = "offset";
    /// Record timestamp as consumers see it, UTC milliseconds.
    pub const TIMESTAMP: &str = "timestamp";
    /// `CreateTime` or `LogAppendTime`.
    pub const TIMESTAMP_TYPE: &str = "timestamp_type";
    /// Key bytes (null for a null key).
    pub const KEY: &str = "key";
    /// Value bytes (null for a tombstone).
    pub const VALUE: &str = "value";
    /// Headers in wire order, duplicates kept.
    pub const HEADERS: &str = "headers";
    /// Producer id (-1: none).
    pub const PRODUCER_ID: &str = "producer_id";
    /// Producer epoch (-1: none).
    pub const PRODUCER_EPOCH: &str = "producer_epoch";
    /// The record's sequence number (-1: none).
    pub const SEQUENCE: &str = "sequence";
    /// Partition leader epoch of the record's batch.
    pub const LEADER_EPOCH: &str = "leader_epoch";
    /// Base offset of the record's batch.
    pub const BATCH_BASE_OFFSET: &str = "batch_base_offset";
    /// Last offset of the record's batch.
    pub const BATCH_LAST_OFFSET: &str = "batch_last_offset";
    /// Attribute bits of the record's batch (codec, timestamp type, transactional, control).
    pub const BATCH_ATTRIBUTES: &str = "batch_attributes";
}

/// The fields of one header: `{key: string, value: binary}`.
pub fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

/// The list element field of the headers column.
pub fn header_item_field() -> Arc<Field> {
    Arc::new(Field::new(
        "element",
        DataType::Struct(header_fields()),
        false,
    ))
}

/// The Arrow schema of an archive file.
pub fn arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::PARTITION, DataType::Int32, false),
        Field::new(col::OFFSET, DataType::Int64, false),
        Field::new(
            col::TIMESTAMP,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(col::TIMESTAMP_TYPE, DataType::Utf8, false),
        Field::new(col::KEY, DataType::Binary, true),
        Field::new(col::VALUE, DataType::Binary, true),
        Field::new(col::HEADERS, DataType::List(header_item_field()), false),
        Field::new(col::PRODUCER_ID, DataType::Int64, false),
        Field::new(col::PRODUCER_EPOCH, DataType::Int16, false),
        Field::new(col::SEQUENCE, DataType::Int32, false),
        Field::new(col::LEADER_EPOCH, DataType::Int32, false),
        Field::new(col::BATCH_BASE_OFFSET, DataType::Int64, false),
        Field::new(col::BATCH_LAST_OFFSET, DataType::Int64, false),
        Field::new(col::BATCH_ATTRIBUTES, DataType::Int16, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema as `docs/archive-format.md` documents it. Changing the schema means changing
    /// the docs, this list and, unless old readers still work, [`SCHEMA_VERSION`].
    #[test]
    fn schema_matches_the_documented_golden_list() {
        let golden = [
            ("partition", "Int32", false),
            ("offset", "Int64", false),
            ("timestamp", "Timestamp(ms, \"UTC\")", false),
            ("timestamp_type", "Utf8", false),
            ("key", "Binary", true),
            ("value", "Binary", true),
            (
                "headers",
                "List(non-null Struct(\"key\": non-null Utf8, \"value\": Binary), field: 'element')",
                false,
            ),
            ("producer_id", "Int64", false),
            ("producer_epoch", "Int16", false),
            ("sequence", "Int32", false),
            ("leader_epoch", "Int32", false),
            ("batch_base_offset", "Int64", false),
            ("batch_last_offset", "Int64", false),
            ("batch_attributes", "Int16", false),
        ];
        let schema = arrow_schema();
        let actual: Vec<(String, String, bool)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string(), f.is_nullable()))
            .collect();
        let expected: Vec<(String, String, bool)> = golden
            .iter()
            .map(|(n, t, null)| (n.to_string(), t.to_string(), *null))
            .collect();
        assert_eq!(actual, expected);
        assert_eq!(SCHEMA_VERSION, 1);
        let doc = include_str!("../../../docs/archive-format.md");
        for (name, _, _) in golden {
            assert!(
                doc.contains(&format!("| `{name}` |")),
                "docs/archive-format.md does not document column {name}"
            );
        }
    }
}
