//! Errors of the local log. Messages are lowercase with the values at the end.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// What went wrong in the local log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error on a log file.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Fewer bytes than a batch needs.
    #[error("truncated batch needed={needed} available={available}")]
    TruncatedBatch {
        /// Bytes the batch declares.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// A batch whose CRC or framing does not check out.
    #[error("corrupt batch: {0}")]
    CorruptBatch(String),
    /// A structurally invalid batch (bad counts or lengths).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// Magic other than 2 (legacy message sets are not supported).
    #[error("unsupported record batch magic={0}")]
    UnsupportedMagic(i8),
    /// A single batch larger than the segment size.
    #[error("batch larger than segment.bytes batch={batch} segment_bytes={segment_bytes}")]
    BatchLargerThanSegment {
        /// Batch size.
        batch: usize,
        /// Configured segment size.
        segment_bytes: u64,
    },
    /// A read below the log start or beyond the log end.
    #[error("offset out of range offset={offset} log_start={log_start} log_end={log_end}")]
    OffsetOutOfRange {
        /// Requested offset.
        offset: i64,
        /// First offset held.
        log_start: i64,
        /// Next offset to be written.
        log_end: i64,
    },
    /// A batch from an older epoch of its producer id (the producer has been fenced).
    #[error("invalid producer epoch producer_id={producer_id} epoch={epoch} current={current}")]
    InvalidProducerEpoch {
        /// Producer id of the batch.
        producer_id: i64,
        /// Epoch of the batch.
        epoch: i16,
        /// Epoch the log knows.
        current: i16,
    },
    /// A batch whose first sequence does not follow the producer's last one.
    #[error("out of order sequence producer_id={producer_id} expected={expected} got={got}")]
    OutOfOrderSequence {
        /// Producer id of the batch.
        producer_id: i64,
        /// Sequence the log expected.
        expected: i32,
        /// First sequence of the batch.
        got: i32,
    },
    /// A configuration value that cannot work.
    #[error("invalid log config {name}: {reason}")]
    InvalidConfig {
        /// Kafka name of the setting.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
