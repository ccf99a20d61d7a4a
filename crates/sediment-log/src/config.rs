//! Per-partition log settings. The broker maps Kafka topic configs (`segment.bytes`,
//! `retention.ms`, ...) onto this struct; the names in the docs below are those Kafka names.

use crate::batch::HEADER_SIZE;
use crate::error::{LogError, Result};

/// When appended data is fsynced. Data is always written to the OS page cache before the
/// produce is acknowledged, so a `kill -9` of the broker loses nothing; fsync bounds what a power
/// loss or kernel crash can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// `flush.messages`: fsync after this many messages since the last fsync (`None`: never by
    /// count). `Some(1)` fsyncs every batch before it is acknowledged: safest, slowest.
    pub messages: Option<u64>,
    /// `flush.ms`: fsync data older than this many milliseconds (`None`: never by time).
    pub ms: Option<i64>,
}

/// Settings of one partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment before it would exceed this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty active segment this long after its first record's
    /// timestamp, so time-based retention can drop it even on a quiet partition.
    pub segment_ms: i64,
    /// `retention.bytes`: delete the oldest sealed segments while the log is larger (`None`:
    /// unlimited).
    pub retention_bytes: Option<u64>,
    /// `retention.ms`: delete segments whose newest record is older than this (`None`:
    /// unlimited).
    pub retention_ms: Option<i64>,
    /// `index.interval.bytes`: bytes between sparse index entries. Smaller: faster lookups,
    /// larger indexes.
    pub index_interval_bytes: u32,
    /// `flush.messages` / `flush.ms`.
    pub flush: FlushPolicy,
    /// `producer.id.expiration.ms`: forget an idempotent producer's sequence state when its
    /// newest batch is older than this (checked when a segment rolls).
    pub producer_id_expiration_ms: i64,
    /// `remote.storage.enable`: sealed segments are also copied elsewhere (the archive). Then
    /// `retention.*` bound the local and archived data together, and the `local.retention.*`
    /// limits delete local segments, but only those the archive already holds (KIP-405).
    pub tiered: bool,
    /// `local.retention.bytes`: the most the local tier keeps when `tiered` (`None`: unlimited).
    pub local_retention_bytes: Option<u64>,
    /// `local.retention.ms`: local segments older than this are deleted when `tiered` and
    /// archived (`None`: unlimited).
    pub local_retention_ms: Option<i64>,
}

/// Kafka's default `producer.id.expiration.ms`: one day.
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 3600 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            flush: FlushPolicy {
                messages: None,
                ms: Some(1000),
            },
            producer_id_expiration_ms: DEFAULT_PRODUCER_ID_EXPIRATION_MS,
            tiered: false,
            local_retention_bytes: None,
            local_retention_ms: None,
        }
    }
}

impl LogConfig {
    /// Checks values that would make the log misbehave.
    pub fn validate(&self) -> Result<()> {
        // Segment positions are stored as u32 in the offset index.
        if self.segment_bytes < HEADER_SIZE as u64 || self.segment_bytes > i32::MAX as u64 {
            return Err(LogError::InvalidConfig {
                name: "segment.bytes",
                reason: format!(
                    "must be between {HEADER_SIZE} and {} bytes, got {}",
                    i32::MAX,
                    self.segment_bytes
                ),
            });
        }
        if self.segment_ms < 1 {
            return Err(LogError::InvalidConfig {
                name: "segment.ms",
                reason: format!("must be at least 1, got {}", self.segment_ms),
            });
        }
        if self.index_interval_bytes == 0 {
            return Err(LogError::InvalidConfig {
                name: "index.interval.bytes",
                reason: "must be at least 1".into(),
            });
        }
        if self.flush.messages == Some(0) {
            return Err(LogError::InvalidConfig {
                name: "flush.messages",
                reason: "must be at least 1".into(),
            });
        }
        if matches!(self.flush.ms, Some(ms) if ms < 0) {
            return Err(LogError::InvalidConfig {
                name: "flush.ms",
                reason: "must not be negative".into(),
            });
        }
        Ok(())
    }
}
