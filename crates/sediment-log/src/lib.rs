//! The local hot log of a Sediment broker.
//!
//! Each partition is a directory of segments. A segment is a `.log` file holding Kafka v2 record
//! batches exactly as producers sent them (only the base offset and partition leader epoch are
//! rewritten, neither of which the batch CRC covers), plus a sparse `.index` (offset -> file
//! position) and a `.timeindex` (timestamp -> offset). The newest segment is *active* and takes
//! appends; older segments are *sealed*: fsynced, indexed on disk, never modified again.
//!
//! Invariants this crate keeps:
//! - offsets are dense and monotonic: a batch's base offset is the previous batch's last offset + 1;
//! - a byte range that has been appended is never rewritten while the process runs, so readers may
//!   read it without holding the partition lock (see [`ReadSlice`]);
//! - on open, the active segment is scanned (lengths and CRC-32C) and truncated at the first torn or
//!   corrupt batch; indexes that are missing or inconsistent are rebuilt from the log;
//! - retention and roll decisions are pure functions of the segment list and `now`.
//!
//! The crate knows nothing of Kafka requests, networking or object storage.

mod batch;
mod clock;
mod config;
mod error;
mod index;
mod layout;
mod partition;
mod producer;
mod retention;
mod segment;

pub use batch::{
    BatchHeader, HEADER_SIZE, LOG_OVERHEAD, TimestampType, set_base_offset, set_log_append_time,
    set_partition_leader_epoch,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{DEFAULT_PRODUCER_ID_EXPIRATION_MS, FlushPolicy, LogConfig};
pub use error::{LogError, Result};
pub use layout::{DELETE_SUFFIX, parse_partition_dir_name, partition_dir_name};
pub use partition::{AppendInfo, FlushHandle, PartitionLog, RetentionOutcome, SegmentStats};
pub use producer::{
    MAX_CACHED_BATCHES, ProducerBatch, ProducerEntry, ProducerStates, SequenceCheck, last_sequence,
};
pub use retention::{
    RetentionLimits, RetentionPlan, SegmentSummary, plan_retention, roll_due, segments_to_delete,
};
pub use segment::ReadSlice;
