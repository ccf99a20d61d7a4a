//! The log of one partition: an ordered list of segments, the last one active.
//!
//! `PartitionLog` is not internally synchronised; the broker keeps it behind a mutex and takes
//! [`ReadSlice`]s (immutable byte ranges) under the lock, then reads them without it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{self, BatchHeader, HEADER_SIZE};
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::{LogError, Result};
use crate::layout::{SNAPSHOT_EXT, parse_log_file_name, parse_offset_file_name, segment_file};
use crate::producer::{ProducerBatch, ProducerStates, SequenceCheck, last_sequence};
use crate::retention::{RetentionLimits, SegmentSummary, plan_retention, roll_due};
use crate::segment::{ReadSlice, Segment, sync_dir};

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The broker's append time when the topic uses `LogAppendTime`.
    pub log_append_time: Option<i64>,
    /// Whether `flush.messages` now calls for an fsync.
    pub flush_due: bool,
    /// The batch was a retry of one already in the log: nothing was appended and the offsets
    /// are those of the original.
    pub duplicate: bool,
    /// The active segment was sealed (rolled) before this batch went into a new one.
    pub rolled: bool,
}

/// What a retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    /// Local segments deleted.
    pub local_deleted: usize,
    /// When `retention.*` moved the start of the whole log past archived segments: the new
    /// start. Archived segments ending at or before it are out of retention.
    pub archive_start_offset: Option<i64>,
}

/// Producer-state snapshots kept per partition (newest first).
const SNAPSHOTS_KEPT: usize = 2;

/// Bytes read at a time when rebuilding producer state from the log.
const SCAN_CHUNK: usize = 1 << 20;

/// Size figures for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentStats {
    /// Number of segments, active included.
    pub segments: usize,
    /// Total bytes of `.log` files.
    pub size_bytes: u64,
}

/// A pending fsync of the active segment, taken under the lock and run outside it.
#[derive(Debug)]
pub struct FlushHandle {
    file: Arc<fs::File>,
    path: PathBuf,
    messages: u64,
}

impl FlushHandle {
    /// fsyncs the data. Call [`PartitionLog::mark_flushed`] with the handle afterwards.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| LogError::io(&self.path, e))
    }
}

/// The log of one partition.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    segments: Vec<Segment>,
    unflushed_messages: u64,
    last_flush_ms: i64,
    producers: ProducerStates,
}

impl PartitionLog {
    /// Opens (or creates) the partition log in `dir`. Sealed segments are checked through their
    /// indexes; the active segment is scanned and truncated at the first torn or corrupt batch.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        config.validate()?;
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| LogError::io(&dir, e))? {
            let entry = entry.map_err(|e| LogError::io(&dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = parse_log_file_name(&name) {
                bases.push(base);
            } else if name.ends_with(".tmp") {
                // An index publish that did not finish; the index is rebuilt from the log.
                let _ = fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        let now = clock.now_ms();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let interval = config.index_interval_bytes;
        for (i, &base) in bases.iter().enumerate() {
            if i + 1 < bases.len() {
                segments.push(Segment::open_sealed(&dir, base, interval)?);
            } else {
                let (seg, truncated) = Segment::open_active(&dir, base, interval, now)?;
                if truncated > 0 {
                    tracing::warn!(
                        dir = %dir.display(),
                        truncated_bytes = truncated,
                        next_offset = seg.next_offset,
                        "truncated a torn or corrupt tail of the active segment"
                    );
                }
                segments.push(seg);
            }
        }
        if segments.is_empty() {
            segments.push(Segment::create(&dir, 0, now)?);
            sync_dir(&dir)?;
        }
        let mut log = Self {
            dir,
            config,
            clock,
            segments,
            unflushed_messages: 0,
            last_flush_ms: now,
            producers: ProducerStates::default(),
        };
        log.rebuild_producer_state()?;
        Ok(log)
    }

    /// Loads the newest usable producer-state snapshot and replays the batches after it.
    fn rebuild_producer_state(&mut self) -> Result<()> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        let mut from = start;
        let mut snapshots = self.snapshot_offsets()?;
        while let Some(offset) = snapshots.pop() {
            let path = segment_file(&self.dir, offset, SNAPSHOT_EXT);
            let loaded = fs::read(&path)
                .map_err(|e| LogError::io(&path, e))
                .and_then(|bytes| ProducerStates::decode(&bytes));
            match loaded {
                Ok((at, states)) if at == offset && offset <= end => {
                    self.producers = states;
                    from = offset.max(start);
                    break;
                }
                Ok(_) => {
                    // Taken past what survived of the log (a torn tail was truncated).
                    let _ = fs::remove_file(&path);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable producer snapshot");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let mut offset = from;
        while offset < end {
            let Some(slice) = self.read(offset)? else {
                break;
            };
            let bytes = slice.read(SCAN_CHUNK, true)?;
            if bytes.is_empty() {
                break;
            }
            let mut pos = 0;
            while pos < bytes.len() {
                let header = BatchHeader::parse(&bytes[pos..])?;
                self.observe_producer_batch(&header, header.base_offset(), header.max_timestamp());
                offset = header.last_offset() + 1;
                pos += header.total_size();
            }
        }
        tracing::debug!(
            dir = %self.dir.display(),
            producers = self.producers.len(),
            scanned_from = from,
            "rebuilt producer state"
        );
        Ok(())
    }

    fn observe_producer_batch(
        &mut self,
        header: &BatchHeader<'_>,
        base_offset: i64,
        timestamp: i64,
    ) {
        let producer_id = header.producer_id();
        if producer_id < 0 || header.is_control() {
            return;
        }
        let first_seq = header.base_sequence();
        self.producers.record(
            producer_id,
            header.producer_epoch(),
            ProducerBatch {
                first_seq,
                last_seq: last_sequence(first_seq, header.last_offset_delta()),
                first_offset: base_offset,
                last_offset: base_offset + i64::from(header.last_offset_delta()),
                timestamp,
            },
        );
    }

    /// Offsets of the producer-state snapshots on disk, ascending.
    fn snapshot_offsets(&self) -> Result<Vec<i64>> {
        let mut offsets = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| LogError::io(&self.dir, e))?;
            if let Some(o) =
                parse_offset_file_name(&entry.file_name().to_string_lossy(), SNAPSHOT_EXT)
            {
                offsets.push(o);
            }
        }
        offsets.sort_unstable();
        Ok(offsets)
    }

    /// Writes the producer state as of the log end offset to `<offset>.snapshot` (fsynced,
    /// published by rename) and removes all but the newest snapshots. Called when a segment is
    /// sealed and on clean shutdown, so a restart only replays the active segment.
    pub fn write_producer_snapshot(&mut self) -> Result<()> {
        let offset = self.log_end_offset();
        let expire_before = self
            .clock
            .now_ms()
            .saturating_sub(self.config.producer_id_expiration_ms);
        self.producers.expire(expire_before);
        let path = segment_file(&self.dir, offset, SNAPSHOT_EXT);
        let tmp = path.with_extension(format!("{SNAPSHOT_EXT}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &self.producers.encode(offset))?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| LogError::io(&path, e))?;
        let offsets = self.snapshot_offsets()?;
        for &old in offsets.iter().rev().skip(SNAPSHOTS_KEPT) {
            let old = segment_file(&self.dir, old, SNAPSHOT_EXT);
            let _ = fs::remove_file(old);
        }
        Ok(())
    }

    /// Idempotent-producer state (for tests and diagnostics).
    pub fn producer_states(&self) -> &ProducerStates {
        &self.producers
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Current settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies new settings (they take effect at the next append, roll or retention pass).
    pub fn set_config(&mut self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// First offset held.
    pub fn log_start_offset(&self) -> i64 {
        self.segments[0].base_offset
    }

    /// Offset the next record will get (the log end offset, LEO).
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a partition log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a partition log always has an active segment")
    }

    /// Appends one validated v2 record batch: assigns offsets by rewriting its base offset, stamps
    /// `leader_epoch`, and under `log_append_time` overwrites its timestamp with the clock's.
    pub fn append(
        &mut self,
        batch: &[u8],
        leader_epoch: i32,
        log_append_time: bool,
    ) -> Result<AppendInfo> {
        let header = BatchHeader::parse(batch)?;
        if header.total_size() != batch.len() {
            return Err(LogError::InvalidBatch(format!(
                "batch length field says {} bytes but {} were given",
                header.total_size(),
                batch.len()
            )));
        }
        if batch.len() as u64 > self.config.segment_bytes {
            return Err(LogError::BatchLargerThanSegment {
                batch: batch.len(),
                segment_bytes: self.config.segment_bytes,
            });
        }
        if header.producer_id() >= 0 {
            let first_seq = header.base_sequence();
            let last_seq = last_sequence(first_seq, header.last_offset_delta());
            let verdict = self.producers.check(
                header.producer_id(),
                header.producer_epoch(),
                first_seq,
                last_seq,
            )?;
            if let SequenceCheck::Duplicate(original) = verdict {
                return Ok(AppendInfo {
                    base_offset: original.first_offset,
                    last_offset: original.last_offset,
                    log_append_time: None,
                    flush_due: false,
                    duplicate: true,
                    rolled: false,
                });
            }
        }
        let base_offset = self.log_end_offset();
        let last_offset = base_offset + i64::from(header.last_offset_delta());
        let now = self.clock.now_ms();
        let rolled = roll_due(
            &self.active().summary(),
            &self.config,
            batch.len() as u64,
            last_offset,
            now,
        );
        if rolled {
            self.roll()?;
        }
        // Only the fixed header changes; the records are written straight from `batch`.
        let (head, records) = batch.split_at(HEADER_SIZE);
        let mut head: [u8; HEADER_SIZE] = head.try_into().expect("parsed header is complete");
        batch::set_base_offset(&mut head, base_offset);
        batch::set_partition_leader_epoch(&mut head, leader_epoch);
        let log_append_time = log_append_time.then(|| {
            batch::set_log_append_time(&mut head, records, now);
            now
        });
        let interval = self.config.index_interval_bytes;
        self.active_mut().append(&head, records, interval)?;
        // The stored header differs from `header` only in the fields passed here.
        let timestamp = log_append_time.unwrap_or(header.max_timestamp());
        self.observe_producer_batch(&header, base_offset, timestamp);
        self.unflushed_messages += header.records_count().max(0) as u64;
        let flush_due = self
            .config
            .flush
            .messages
            .is_some_and(|m| self.unflushed_messages >= m);
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time,
            flush_due,
            duplicate: false,
            rolled,
        })
    }

    /// Seals the active segment and starts a new one at the log end offset (no-op when empty).
    pub fn roll(&mut self) -> Result<()> {
        if self.active().size == 0 {
            return Ok(());
        }
        let next = self.log_end_offset();
        let now = self.clock.now_ms();
        self.active_mut().seal()?;
        let seg = Segment::create(&self.dir, next, now)?;
        sync_dir(&self.dir)?;
        self.segments.push(seg);
        self.write_producer_snapshot()?;
        tracing::debug!(dir = %self.dir.display(), base_offset = next, "rolled segment");
        Ok(())
    }

    /// Rolls the active segment when it holds records and is older than `segment.ms`, so a
    /// partition that stopped receiving records still seals (and can archive) its tail.
    /// Returns whether it rolled.
    pub fn roll_if_aged(&mut self) -> Result<bool> {
        let active = self.active().summary();
        if active.size_bytes == 0
            || self.clock.now_ms() - active.roll_reference_ms < self.config.segment_ms
        {
            return Ok(false);
        }
        self.roll()?;
        Ok(true)
    }

    /// Whole batches starting with the one that contains `offset`, up to the end of that offset's
    /// segment; `Ok(None)` when `offset` is the log end offset. Offsets outside
    /// `[log start, log end]` are an error.
    pub fn read(&self, offset: i64) -> Result<Option<ReadSlice>> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset == end {
            return Ok(None);
        }
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        for seg in &self.segments[first..] {
            if let Some(pos) = seg.find_position(offset)? {
                return Ok(Some(seg.slice_from(pos)));
            }
        }
        Ok(None)
    }

    /// The first batch (across segments) whose max timestamp is at least `timestamp`. The
    /// broker decodes it to find the exact record.
    pub fn batch_for_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>> {
        for seg in &self.segments {
            if let Some(slice) = seg.find_by_timestamp(timestamp)? {
                return slice.read(usize::MAX, true).map(Some);
            }
        }
        Ok(None)
    }

    /// The batch holding the largest timestamp in the log (ListOffsets `MAX_TIMESTAMP`); the
    /// earliest such batch when several tie.
    pub fn batch_with_max_timestamp(&self) -> Result<Option<Bytes>> {
        let Some(seg) = self
            .segments
            .iter()
            .filter(|s| s.max_timestamp >= 0)
            .reduce(|best, s| {
                if s.max_timestamp > best.max_timestamp {
                    s
                } else {
                    best
                }
            })
        else {
            return Ok(None);
        };
        match seg.batch_at(seg.offset_of_max_timestamp)? {
            Some(slice) => slice.read(usize::MAX, true).map(Some),
            None => Ok(None),
        }
    }

    /// Summaries of all segments, oldest first.
    pub fn segment_summaries(&self) -> Vec<SegmentSummary> {
        self.segments.iter().map(Segment::summary).collect()
    }

    /// Segment count and total size.
    pub fn stats(&self) -> SegmentStats {
        SegmentStats {
            segments: self.segments.len(),
            size_bytes: self.segments.iter().map(|s| s.size).sum(),
        }
    }

    /// Applies retention (see [`plan_retention`]) given the segments the archive holds
    /// (`archived`, oldest first; empty when nothing is archived): deletes local segments that
    /// `retention.*` no longer allow, or that `local.retention.*` allow to go because the archive
    /// holds them, rolling the active segment first when it has expired as a whole. Archived
    /// segments are not this log's to delete; the outcome says which are out of retention.
    pub fn apply_retention(&mut self, archived: &[SegmentSummary]) -> Result<RetentionOutcome> {
        let limits = RetentionLimits {
            bytes: self.config.retention_bytes,
            ms: self.config.retention_ms,
            local_bytes: self.config.local_retention_bytes,
            local_ms: self.config.local_retention_ms,
            tiered: self.config.tiered,
        };
        let plan = plan_retention(
            &self.segment_summaries(),
            archived,
            &limits,
            self.clock.now_ms(),
        );
        let mut n = plan.local_segments;
        if plan.roll_active {
            self.roll()?;
            n = self.segments.len() - 1;
        }
        for seg in self.segments.drain(..n) {
            seg.delete()?;
            tracing::info!(
                segment = %seg.path().display(),
                base_offset = seg.base_offset,
                next_offset = seg.next_offset,
                "deleted segment by retention"
            );
        }
        Ok(RetentionOutcome {
            local_deleted: n,
            archive_start_offset: plan.log_start_offset.filter(|_| plan.archived_segments > 0),
        })
    }

    /// Summaries of the sealed segments (all but the active one), oldest first: what the
    /// archiver may copy.
    pub fn sealed_segments(&self) -> Vec<SegmentSummary> {
        let sealed = self.segments.len() - 1;
        self.segments[..sealed]
            .iter()
            .map(Segment::summary)
            .collect()
    }

    /// The whole of the sealed segment that starts at `base_offset`, readable without the lock;
    /// `None` when there is no such sealed segment (retention deleted it, or it is active).
    pub fn sealed_segment(&self, base_offset: i64) -> Option<ReadSlice> {
        let sealed = &self.segments[..self.segments.len() - 1];
        let i = sealed
            .binary_search_by_key(&base_offset, |s| s.base_offset)
            .ok()?;
        Some(sealed[i].slice_from(0))
    }

    /// Whether `flush.ms` calls for an fsync now.
    pub fn flush_due_by_time(&self) -> bool {
        self.unflushed_messages > 0
            && self
                .config
                .flush
                .ms
                .is_some_and(|ms| self.clock.now_ms() - self.last_flush_ms >= ms)
    }

    /// Takes what is needed to fsync the active segment outside the lock.
    pub fn flush_handle(&self) -> FlushHandle {
        let active = self.active();
        FlushHandle {
            file: active.file(),
            path: active.path().to_path_buf(),
            messages: self.unflushed_messages,
        }
    }

    /// Records that `handle`'s fsync completed.
    pub fn mark_flushed(&mut self, handle: &FlushHandle) {
        self.unflushed_messages = self.unflushed_messages.saturating_sub(handle.messages);
        self.last_flush_ms = self.clock.now_ms();
    }

    /// fsyncs under the caller's lock (shutdown, `flush.messages=1`).
    pub fn flush(&mut self) -> Result<()> {
        let handle = self.flush_handle();
        handle.sync()?;
        self.mark_flushed(&handle);
        Ok(())
    }

    /// Removes the partition's files and directory.
    pub fn delete(self) -> Result<()> {
        fs::remove_dir_all(&self.dir).map_err(|e| LogError::io(&self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::{idempotent_batch, make_batch};
    use crate::clock::ManualClock;
    use crate::config::FlushPolicy;
    use std::io::{Seek, SeekFrom, Write};

    const T0: i64 = 1_700_000_000_000;

    fn small_config() -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            segment_ms: 3_600_000,
            retention_bytes: None,
            retention_ms: None,
            index_interval_bytes: 128,
            flush: FlushPolicy {
                messages: None,
                ms: None,
            },
            ..LogConfig::default()
        }
    }

    fn open(dir: &Path, clock: &ManualClock) -> PartitionLog {
        PartitionLog::open(dir, small_config(), Arc::new(clock.clone())).unwrap()
    }

    /// Reads every batch from `from` to the end, returning (base offset, last offset) pairs.
    fn read_all(log: &PartitionLog, mut from: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        while let Some(slice) = log.read(from).unwrap() {
            let bytes = slice.read(300, true).unwrap();
            assert!(!bytes.is_empty());
            let mut at = 0;
            while at < bytes.len() {
                let h = BatchHeader::parse(&bytes[at..]).unwrap();
                h.verify_crc().unwrap();
                out.push((h.base_offset(), h.last_offset()));
                at += h.total_size();
            }
            from = out.last().unwrap().1 + 1;
        }
        out
    }

    #[test]
    fn offsets_are_dense_across_rolls_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        let mut expected = Vec::new();
        for i in 0..40 {
            let count = 1 + i % 3;
            let info = log
                .append(&make_batch(count, T0 + i64::from(i), 20), 0, false)
                .unwrap();
            expected.push((info.base_offset, info.last_offset));
        }
        assert!(log.stats().segments > 3, "small segment.bytes forces rolls");
        assert_eq!(read_all(&log, 0), expected);
        let end = log.log_end_offset();
        drop(log);
        let log = open(dir.path(), &clock);
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(read_all(&log, 0), expected);
        // A fetch from inside a batch starts with that whole batch.
        let (b, l) = expected[10];
        assert!(l > b, "batch 10 has several records");
        assert_eq!(read_all(&log, b + 1)[0], (b, l));
    }

    #[test]
    fn torn_tail_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        for _ in 0..3 {
            log.append(&make_batch(2, T0, 10), 0, false).unwrap();
        }
        let active = log.segments.last().unwrap().path().to_path_buf();
        drop(log);
        // Half a batch appended by a crash.
        let half = make_batch(2, T0, 10);
        let mut f = fs::OpenOptions::new().append(true).open(&active).unwrap();
        f.write_all(&half[..half.len() / 2]).unwrap();
        drop(f);
        let mut log = open(dir.path(), &clock);
        assert_eq!(log.log_end_offset(), 6);
        assert_eq!(read_all(&log, 0).len(), 3);
        // The log keeps working after recovery.
        assert_eq!(
            log.append(&make_batch(1, T0, 10), 0, false)
                .unwrap()
                .base_offset,
            6
        );
    }

    #[test]
    fn corrupt_byte_in_tail_truncates_from_that_batch() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        let mut positions = Vec::new();
        for _ in 0..4 {
            positions.push(log.stats().size_bytes);
            log.append(&make_batch(1, T0, 10), 0, false).unwrap();
        }
        let active = log.segments.last().unwrap().path().to_path_buf();
        drop(log);
        let mut f = fs::OpenOptions::new().write(true).open(&active).unwrap();
        f.seek(SeekFrom::Start(positions[2] + 70)).unwrap();
        f.write_all(&[0xAB]).unwrap();
        drop(f);
        let log = open(dir.path(), &clock);
        assert_eq!(
            log.log_end_offset(),
            2,
            "batches 0 and 1 survive, 2 and 3 are cut"
        );
        assert_eq!(fs::metadata(&active).unwrap().len(), positions[2]);
    }

    #[test]
    fn missing_or_bad_sealed_indexes_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        for i in 0..30 {
            log.append(&make_batch(2, T0 + i, 20), 0, false).unwrap();
        }
        let expected = read_all(&log, 0);
        let first = log.segments[0].summary();
        drop(log);
        fs::remove_file(dir.path().join("00000000000000000000.index")).unwrap();
        let second_time = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "timeindex"))
            .max()
            .unwrap();
        fs::write(&second_time, b"garbage").unwrap();
        let log = open(dir.path(), &clock);
        let again = log.segments[0].summary();
        assert_eq!(
            (
                again.base_offset,
                again.next_offset,
                again.size_bytes,
                again.max_timestamp
            ),
            (
                first.base_offset,
                first.next_offset,
                first.size_bytes,
                first.max_timestamp
            )
        );
        assert_eq!(read_all(&log, 0), expected);
        assert!(dir.path().join("00000000000000000000.index").exists());
    }

    #[test]
    fn retention_by_time_and_size_without_sleeping() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        for i in 0..30 {
            log.append(&make_batch(1, T0 + i * 1000, 50), 0, false)
                .unwrap();
        }
        let segments = log.stats().segments;
        assert!(segments >= 3);
        let mut config = small_config();
        config.retention_ms = Some(60_000);
        log.set_config(config.clone()).unwrap();
        clock.set(T0 + 29_000 + 60_000); // everything but the newest batch is past 60 s
        assert!(log.apply_retention(&[]).unwrap().local_deleted >= 1);
        assert!(log.log_start_offset() > 0);
        assert_eq!(log.log_end_offset(), 30);
        clock.advance(10_000); // now every record has expired: the active segment rolls and goes
        log.apply_retention(&[]).unwrap();
        assert_eq!(log.log_start_offset(), 30);
        assert_eq!(log.stats().size_bytes, 0);
        assert!(matches!(
            log.read(0),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            log.append(&make_batch(1, T0, 10), 0, false)
                .unwrap()
                .base_offset,
            30
        );

        config.retention_ms = None;
        config.retention_bytes = Some(1024);
        log.set_config(config).unwrap();
        for _ in 0..40 {
            log.append(&make_batch(1, T0, 50), 0, false).unwrap();
        }
        log.apply_retention(&[]).unwrap();
        assert!(
            log.stats().size_bytes <= 1024 + 1024,
            "at most the limit plus the active segment"
        );
        assert!(log.log_start_offset() > 30);
    }

    #[test]
    fn roll_by_age_counts_from_segment_creation_not_record_time() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        // Records from a year ago (a replay) do not roll the segment on every append.
        for _ in 0..3 {
            log.append(&make_batch(1, T0 - 365 * 86_400_000, 10), 0, false)
                .unwrap();
        }
        assert_eq!(log.stats().segments, 1);
        clock.advance(3_600_000);
        log.append(&make_batch(1, T0, 10), 0, false).unwrap();
        assert_eq!(log.stats().segments, 2, "segment.ms after creation");
        // A quiet partition's tail is sealed by time too, without an append.
        assert!(!log.roll_if_aged().unwrap());
        clock.advance(3_600_000);
        assert!(log.roll_if_aged().unwrap());
        assert_eq!(log.stats().segments, 3);
        assert!(
            !log.roll_if_aged().unwrap(),
            "the new active segment is empty"
        );
        // After a restart the clock starts again at open.
        drop(log);
        let mut log = open(dir.path(), &clock);
        clock.advance(3_599_999);
        log.append(&make_batch(1, T0, 10), 0, false).unwrap();
        assert_eq!(log.stats().segments, 3);
    }

    #[test]
    fn timestamp_lookup_finds_first_batch_at_or_after() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        for i in 0..50 {
            log.append(&make_batch(1, T0 + i * 10, 20), 0, false)
                .unwrap();
        }
        let batch = log.batch_for_timestamp(T0 + 205).unwrap().unwrap();
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!((h.base_offset(), h.max_timestamp()), (21, T0 + 210));
        assert!(log.batch_for_timestamp(T0 + 10_000).unwrap().is_none());
        let max = log.batch_with_max_timestamp().unwrap().unwrap();
        assert_eq!(BatchHeader::parse(&max).unwrap().base_offset(), 49);
    }

    #[test]
    fn log_append_time_is_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0 + 5);
        let mut log = open(dir.path(), &clock);
        let info = log.append(&make_batch(2, 1, 10), 0, true).unwrap();
        assert_eq!(info.log_append_time, Some(T0 + 5));
        let bytes = log.read(0).unwrap().unwrap().read(1000, true).unwrap();
        let h = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(h.max_timestamp(), T0 + 5);
        h.verify_crc().unwrap();
    }

    #[test]
    fn flush_policy_by_count_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut config = small_config();
        config.flush = FlushPolicy {
            messages: Some(3),
            ms: Some(1000),
        };
        let mut log = PartitionLog::open(dir.path(), config, Arc::new(clock.clone())).unwrap();
        assert!(
            !log.append(&make_batch(2, T0, 1), 0, false)
                .unwrap()
                .flush_due
        );
        assert!(!log.flush_due_by_time());
        clock.advance(1000);
        assert!(log.flush_due_by_time());
        assert!(
            log.append(&make_batch(1, T0, 1), 0, false)
                .unwrap()
                .flush_due
        );
        log.flush().unwrap();
        assert!(!log.flush_due_by_time());
        assert!(
            !log.append(&make_batch(1, T0, 1), 0, false)
                .unwrap()
                .flush_due
        );
    }

    #[test]
    fn oversized_and_inconsistent_batches_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        let big = make_batch(1, T0, 2000);
        assert!(matches!(
            log.append(&big, 0, false),
            Err(LogError::BatchLargerThanSegment { .. })
        ));
        let b = make_batch(1, T0, 10);
        assert!(matches!(
            log.append(&b[..b.len() - 1], 0, false),
            Err(LogError::InvalidBatch(_))
        ));
        assert_eq!(log.log_end_offset(), 0);
    }

    #[test]
    fn idempotent_retries_are_acknowledged_with_the_original_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        log.append(&make_batch(2, T0, 8), 0, false).unwrap();
        let first = log
            .append(&idempotent_batch(3, T0, 42, 0, 0), 0, false)
            .unwrap();
        assert_eq!(
            (first.base_offset, first.last_offset, first.duplicate),
            (2, 4, false)
        );
        let second = log
            .append(&idempotent_batch(2, T0, 42, 0, 3), 0, false)
            .unwrap();
        assert_eq!(second.base_offset, 5);
        let retry = log
            .append(&idempotent_batch(3, T0, 42, 0, 0), 0, false)
            .unwrap();
        assert_eq!(
            (retry.base_offset, retry.last_offset, retry.duplicate),
            (2, 4, true)
        );
        assert_eq!(log.log_end_offset(), 7);
        assert!(matches!(
            log.append(&idempotent_batch(1, T0, 42, 0, 9), 0, false),
            Err(LogError::OutOfOrderSequence {
                expected: 5,
                got: 9,
                ..
            })
        ));
        assert_eq!(log.log_end_offset(), 7);
    }

    #[test]
    fn producer_state_survives_restart_through_snapshots_and_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        // Enough batches to roll several 1 KiB segments (each roll writes a snapshot).
        let mut seq = 0;
        let mut last = None;
        for _ in 0..40 {
            last = Some(
                log.append(&idempotent_batch(3, T0, 7, 1, seq), 0, false)
                    .unwrap(),
            );
            seq += 3;
        }
        assert!(log.stats().segments > 3);
        let snapshots = log.snapshot_offsets().unwrap();
        assert_eq!(snapshots.len(), SNAPSHOTS_KEPT, "{snapshots:?}");
        let before = log.producer_states().clone();
        drop(log);
        let mut log = open(dir.path(), &clock);
        assert_eq!(log.producer_states(), &before);
        let last = last.unwrap();
        let retry = log
            .append(&idempotent_batch(3, T0, 7, 1, seq - 3), 0, false)
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, last.base_offset);
        assert!(matches!(
            log.append(&idempotent_batch(1, T0, 7, 0, seq), 0, false),
            Err(LogError::InvalidProducerEpoch {
                epoch: 0,
                current: 1,
                ..
            })
        ));
        // Without any snapshot the state is rebuilt from the log alone.
        for o in log.snapshot_offsets().unwrap() {
            fs::remove_file(segment_file(dir.path(), o, SNAPSHOT_EXT)).unwrap();
        }
        drop(log);
        let log = open(dir.path(), &clock);
        assert_eq!(log.producer_states(), &before);
    }

    #[test]
    fn tiered_retention_deletes_locally_only_what_is_archived() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut log = open(dir.path(), &clock);
        for i in 0..30 {
            log.append(&make_batch(1, T0 + i, 50), 0, false).unwrap();
        }
        let sealed = log.sealed_segments();
        assert!(sealed.len() >= 3, "{sealed:?}");
        // The archiver reads a sealed segment whole, chunk by chunk.
        let slice = log.sealed_segment(sealed[1].base_offset).unwrap();
        let first = slice.read(1, true).unwrap();
        let rest = slice
            .advanced(first.len() as u64)
            .read(usize::MAX, true)
            .unwrap();
        assert_eq!((first.len() + rest.len()) as u64, sealed[1].size_bytes);
        assert_eq!(
            BatchHeader::parse(&rest).unwrap().base_offset(),
            sealed[1].base_offset + 1
        );
        // read_into: whole batches into a reused buffer; a first batch larger than the limit
        // comes whole.
        let mut buf = Vec::new();
        let n = slice.read_into(1, &mut buf).unwrap();
        assert_eq!(&buf[..n], &first[..]);
        let n = slice.read_into(usize::MAX, &mut buf).unwrap();
        assert_eq!(n as u64, sealed[1].size_bytes);
        let cut = slice.read_into(first.len() + 10, &mut buf).unwrap();
        assert_eq!(cut, first.len(), "only whole batches");
        assert!(log.sealed_segment(log.log_end_offset()).is_none(), "active");
        assert!(log.sealed_segment(sealed[1].base_offset + 1).is_none());

        let mut config = small_config();
        config.tiered = true;
        config.local_retention_bytes = Some(0);
        log.set_config(config).unwrap();
        // Nothing archived yet: nothing goes.
        assert_eq!(log.apply_retention(&[]).unwrap().local_deleted, 0);
        // The first two sealed segments archived: they go, the rest stays.
        let outcome = log.apply_retention(&sealed[..2]).unwrap();
        assert_eq!(outcome.local_deleted, 2);
        assert_eq!(outcome.archive_start_offset, None);
        assert_eq!(log.log_start_offset(), sealed[2].base_offset);
        assert_eq!(log.log_end_offset(), 30);
        // The total limit then removes archived history too, and says so.
        let mut config = small_config();
        config.tiered = true;
        config.retention_ms = Some(1);
        log.set_config(config).unwrap();
        clock.advance(1_000);
        let outcome = log.apply_retention(&sealed[..2]).unwrap();
        assert_eq!(outcome.archive_start_offset, Some(30));
        assert_eq!(log.log_start_offset(), 30);
    }
}
