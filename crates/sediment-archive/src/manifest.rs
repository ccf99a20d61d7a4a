//! Manifest entries: what the catalog records about each archived segment, so that reads find
//! the object and row group holding an offset without listing the bucket.
//!
//! An entry is always derived from the archive file's own footer ([`entry_from_footer`]), for
//! a fresh upload, for an object a retried upload finds already present, and when `verify`
//! re-reads an object, so the three can never disagree about what an entry means.

use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ArchiveError, Result};
use crate::schema::{self, col, meta};

/// One row group of an archive file: the offsets and times it holds and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowGroupEntry {
    /// First offset in the row group.
    pub first_offset: i64,
    /// Last offset in the row group.
    pub last_offset: i64,
    /// Smallest record timestamp.
    pub min_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Rows (records).
    pub rows: u64,
    /// Byte position of the row group's first column chunk in the object.
    pub byte_start: u64,
    /// Bytes of its column chunks (one ranged GET reads them all).
    pub byte_len: u64,
}

/// A sealed segment in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedSegment {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// First offset of the segment.
    pub base_offset: i64,
    /// Last offset of the segment (inclusive).
    pub last_offset: i64,
    /// Smallest record timestamp (-1 when the segment holds no user records).
    pub min_timestamp: i64,
    /// Largest record timestamp (-1 when the segment holds no user records).
    pub max_timestamp: i64,
    /// Records (rows).
    pub rows: u64,
    /// Size of the local segment it was made from; `retention.bytes` counts this.
    pub segment_bytes: u64,
    /// CRC-32C of the local segment's bytes.
    pub segment_crc32c: u32,
    /// Bytes of keys, values and headers.
    pub record_bytes: u64,
    /// Object key.
    pub key: String,
    /// Object size.
    pub object_bytes: u64,
    /// Row groups, ascending.
    pub row_groups: Vec<RowGroupEntry>,
    /// `(leader_epoch, start_offset)` pairs within the segment, ascending.
    pub leader_epochs: Vec<(i32, i64)>,
    /// Schema version of the file.
    pub schema_version: u32,
    /// When the entry was committed (ms since the epoch).
    pub archived_at_ms: i64,
}

impl ArchivedSegment {
    /// Offset after the segment's last offset.
    pub fn next_offset(&self) -> i64 {
        self.last_offset + 1
    }

    /// The segment as retention sees it.
    pub fn summary(&self) -> sediment_log::SegmentSummary {
        sediment_log::SegmentSummary {
            base_offset: self.base_offset,
            next_offset: self.next_offset(),
            size_bytes: self.segment_bytes,
            max_timestamp: self.max_timestamp,
            roll_reference_ms: self.archived_at_ms,
        }
    }
}

fn mismatch(key: &str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Mismatch {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn i64_range(stats: Option<&Statistics>) -> Option<(i64, i64)> {
    match stats? {
        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

/// Builds the manifest entry of the archive object `key` (of `object_bytes` bytes) from its
/// Parquet footer. Fails when the footer lacks Sediment's metadata or statistics.
pub fn entry_from_footer(
    key: &str,
    object_bytes: u64,
    metadata: &ParquetMetaData,
    archived_at_ms: i64,
) -> Result<ArchivedSegment> {
    let kv = metadata.file_metadata().key_value_metadata();
    let get = |name: &str| -> Result<String> {
        kv.and_then(|kv| kv.iter().find(|e| e.key == name))
            .and_then(|e| e.value.clone())
            .ok_or_else(|| mismatch(key, format!("footer has no {name}")))
    };
    fn parse<T: std::str::FromStr>(key: &str, name: &str, v: String) -> Result<T> {
        v.parse()
            .map_err(|_| mismatch(key, format!("footer value {name}={v} does not parse")))
    }
    let schema_version: u32 = parse(key, meta::SCHEMA_VERSION, get(meta::SCHEMA_VERSION)?)?;
    if schema_version > schema::SCHEMA_VERSION {
        return Err(mismatch(
            key,
            format!(
                "schema_version={schema_version} is newer than this build's {}",
                schema::SCHEMA_VERSION
            ),
        ));
    }
    let columns = metadata.file_metadata().schema_descr();
    let find = |name: &str| {
        (0..columns.num_columns())
            .find(|&i| columns.column(i).path().string() == name)
            .ok_or_else(|| mismatch(key, format!("no column {name}")))
    };
    let (offset_col, ts_col) = (find(col::OFFSET)?, find(col::TIMESTAMP)?);
    let mut row_groups = Vec::with_capacity(metadata.num_row_groups());
    for rg in metadata.row_groups() {
        if rg.num_rows() == 0 {
            continue;
        }
        let (first_offset, last_offset) = i64_range(rg.column(offset_col).statistics())
            .ok_or_else(|| mismatch(key, "a row group has no offset statistics"))?;
        let (min_timestamp, max_timestamp) = i64_range(rg.column(ts_col).statistics())
            .ok_or_else(|| mismatch(key, "a row group has no timestamp statistics"))?;
        let (mut start, mut end) = (u64::MAX, 0u64);
        for c in rg.columns() {
            let s = c.dictionary_page_offset().unwrap_or(c.data_page_offset()) as u64;
            start = start.min(s);
            end = end.max(s + c.compressed_size() as u64);
        }
        row_groups.push(RowGroupEntry {
            first_offset,
            last_offset,
            min_timestamp,
            max_timestamp,
            rows: rg.num_rows() as u64,
            byte_start: start,
            byte_len: end.saturating_sub(start),
        });
    }
    let leader_epochs: Vec<(i32, i64)> = serde_json::from_str(&get(meta::LEADER_EPOCHS)?)
        .map_err(|e| mismatch(key, format!("bad {}: {e}", meta::LEADER_EPOCHS)))?;
    Ok(ArchivedSegment {
        topic: get(meta::TOPIC)?,
        topic_id: parse(key, meta::TOPIC_ID, get(meta::TOPIC_ID)?)?,
        partition: parse(key, meta::PARTITION, get(meta::PARTITION)?)?,
        base_offset: parse(key, meta::BASE_OFFSET, get(meta::BASE_OFFSET)?)?,
        last_offset: parse(key, meta::LAST_OFFSET, get(meta::LAST_OFFSET)?)?,
        min_timestamp: row_groups
            .iter()
            .map(|r| r.min_timestamp)
            .min()
            .unwrap_or(-1),
        max_timestamp: row_groups
            .iter()
            .map(|r| r.max_timestamp)
            .max()
            .unwrap_or(-1),
        rows: row_groups.iter().map(|r| r.rows).sum(),
        segment_bytes: parse(key, meta::SEGMENT_BYTES, get(meta::SEGMENT_BYTES)?)?,
        segment_crc32c: parse(key, meta::SEGMENT_CRC32C, get(meta::SEGMENT_CRC32C)?)?,
        record_bytes: parse(key, meta::RECORD_BYTES, get(meta::RECORD_BYTES)?)?,
        key: key.to_string(),
        object_bytes,
        row_groups,
        leader_epochs,
        schema_version,
        archived_at_ms,
    })
}
