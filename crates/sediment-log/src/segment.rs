//! One segment: a `.log` file of record batches and its two sparse indexes.
//!
//! The log file is written with positional writes (`pwrite`) through a shared `Arc<File>`, so
//! readers can hold the same handle and read committed byte ranges without the partition lock.
//! A sealed segment's indexes are published with write-to-temp, fsync, rename.

use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{BatchHeader, HEADER_SIZE, LOG_OVERHEAD};
use crate::error::{LogError, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::layout::{INDEX_EXT, LOG_EXT, TIME_INDEX_EXT, TMP_SUFFIX, segment_file};
use crate::retention::SegmentSummary;

/// Read size when walking batch headers.
const SCAN_CHUNK: usize = 64 * 1024;

/// A batch found by a scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScannedBatch {
    pub(crate) position: u64,
    pub(crate) size: u64,
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
    pub(crate) max_timestamp: i64,
}

/// Walks the batches of a file region, reading in chunks.
struct Scanner<'a> {
    file: &'a File,
    path: &'a Path,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

/// Why a scan stopped before the end of its region.
#[derive(Debug)]
pub(crate) enum ScanStop {
    /// The bytes at `position` are not a whole valid batch.
    Invalid {
        position: u64,
        reason: String,
    },
    Io(LogError),
}

impl<'a> Scanner<'a> {
    fn new(file: &'a File, path: &'a Path, start: u64, end: u64) -> Self {
        Self {
            file,
            path,
            pos: start,
            end,
            buf: Vec::new(),
            buf_start: start,
        }
    }

    /// Makes `buf` hold `[pos, pos + len)`; false if the region ends first.
    fn ensure(&mut self, len: usize) -> Result<bool, ScanStop> {
        if self.pos + len as u64 > self.end {
            return Ok(false);
        }
        let have_from = self.pos.saturating_sub(self.buf_start) as usize;
        if self.pos >= self.buf_start && have_from + len <= self.buf.len() {
            return Ok(true);
        }
        let want = len.max(SCAN_CHUNK).min((self.end - self.pos) as usize);
        self.buf.resize(want, 0);
        self.file
            .read_exact_at(&mut self.buf, self.pos)
            .map_err(|e| ScanStop::Io(LogError::io(self.path, e)))?;
        self.buf_start = self.pos;
        Ok(true)
    }

    fn slice(&self, len: usize) -> &[u8] {
        let from = (self.pos - self.buf_start) as usize;
        &self.buf[from..from + len]
    }

    /// Next batch, verifying its CRC when `verify` is set; `Ok(None)` at the clean end.
    fn next(&mut self, verify: bool) -> Result<Option<ScannedBatch>, ScanStop> {
        if self.pos == self.end {
            return Ok(None);
        }
        let invalid = |position, reason: String| ScanStop::Invalid { position, reason };
        if !self.ensure(HEADER_SIZE)? {
            return Err(invalid(
                self.pos,
                format!("partial header of {} bytes", self.end - self.pos),
            ));
        }
        let header = BatchHeader::parse(self.slice(HEADER_SIZE))
            .map_err(|e| invalid(self.pos, e.to_string()))?;
        let size = header.total_size();
        if self.pos + size as u64 > self.end {
            return Err(invalid(
                self.pos,
                format!("batch of {size} bytes runs past the end at {}", self.end),
            ));
        }
        let (base_offset, last_offset, max_timestamp) = (
            header.base_offset(),
            header.last_offset(),
            header.max_timestamp(),
        );
        if verify {
            self.ensure(size)?;
            BatchHeader::parse(self.slice(size))
                .and_then(|h| h.verify_crc())
                .map_err(|e| invalid(self.pos, e.to_string()))?;
        }
        let found = ScannedBatch {
            position: self.pos,
            size: size as u64,
            base_offset,
            last_offset,
            max_timestamp,
        };
        self.pos += size as u64;
        Ok(Some(found))
    }
}

/// A committed, immutable byte range of a segment: whole batches from `start` up to the
/// segment's size when the slice was taken. Reading it needs no lock.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    file: Arc<File>,
    path: Arc<PathBuf>,
    start: u64,
    end: u64,
}

impl ReadSlice {
    /// Whether there is nothing to read.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Bytes available from the start of the slice.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// The rest of the slice after its first `bytes` bytes (which should end on a batch
    /// boundary, as the bytes [`ReadSlice::read`] returned do).
    pub fn advanced(&self, bytes: u64) -> ReadSlice {
        ReadSlice {
            start: self.start.saturating_add(bytes).min(self.end),
            ..self.clone()
        }
    }

    /// Reads whole batches, at most `max_bytes` of them (at least the first one), into `buf`,
    /// which is reused across calls (it only grows); returns how many bytes of `buf` hold
    /// whole batches. For sequential readers of a whole segment, such as the archiver.
    pub fn read_into(&self, max_bytes: usize, buf: &mut Vec<u8>) -> Result<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let available = self.len() as usize;
        let want = max_bytes.max(HEADER_SIZE).min(available);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        self.read_at(&mut buf[..want])?;
        match whole_batches(&buf[..want]) {
            (0, Some(first)) => {
                // The first batch is larger than max_bytes: read it whole.
                let size = first.min(available);
                if buf.len() < size {
                    buf.resize(size, 0);
                }
                self.read_at(&mut buf[..size])?;
                Ok(size)
            }
            (keep, _) => Ok(keep),
        }
    }

    /// Reads whole batches, at most `max_bytes` of them. With `at_least_one`, the first batch is
    /// returned whole even when larger, so a consumer can always make progress (KIP-74).
    pub fn read(&self, max_bytes: usize, at_least_one: bool) -> Result<Bytes> {
        if self.is_empty() || (max_bytes == 0 && !at_least_one) {
            return Ok(Bytes::new());
        }
        let available = self.len() as usize;
        let mut buf = BytesMut::zeroed(max_bytes.max(HEADER_SIZE).min(available));
        self.read_at(&mut buf)?;
        match whole_batches(&buf) {
            (0, Some(first)) if at_least_one => {
                // The first batch is larger than max_bytes: return it whole.
                let mut whole = BytesMut::zeroed(first.min(available));
                self.read_at(&mut whole)?;
                Ok(whole.freeze())
            }
            (keep, _) => {
                buf.truncate(keep);
                Ok(buf.freeze())
            }
        }
    }

    /// Fills `buf` from the start of the slice.
    fn read_at(&self, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, self.start)
            .map_err(|e| LogError::io(self.path.as_path(), e))
    }
}

/// How many leading bytes of `buf` are whole batches, and the size of the batch after them
/// when its length field is in `buf` but the batch does not fit.
fn whole_batches(buf: &[u8]) -> (usize, Option<usize>) {
    let mut keep = 0usize;
    while keep + LOG_OVERHEAD <= buf.len() {
        let length =
            i32::from_be_bytes([buf[keep + 8], buf[keep + 9], buf[keep + 10], buf[keep + 11]]);
        let size = LOG_OVERHEAD + length.max(0) as usize;
        if keep + size > buf.len() {
            return (keep, Some(size));
        }
        keep += size;
    }
    (keep, None)
}

#[derive(Debug)]
pub(crate) struct Segment {
    dir: PathBuf,
    path: Arc<PathBuf>,
    file: Arc<File>,
    pub(crate) base_offset: i64,
    pub(crate) next_offset: i64,
    pub(crate) size: u64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index: u64,
    pub(crate) max_timestamp: i64,
    pub(crate) offset_of_max_timestamp: i64,
    /// Wall-clock time the segment was created (or opened, after a restart); `segment.ms`
    /// counts from here.
    roll_reference_ms: i64,
    pub(crate) sealed: bool,
}

/// Opens a `.log` file for positional reads and appends. With `O_APPEND` every write lands at
/// the end of the file, which is where the active segment always writes.
fn open_log(path: &Path, create_new: bool) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).append(true);
    if create_new {
        opts.create_new(true);
    }
    opts.open(path).map_err(|e| LogError::io(path, e))
}

impl Segment {
    fn empty(dir: &Path, base_offset: i64, file: File, now_ms: i64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            path: Arc::new(segment_file(dir, base_offset, LOG_EXT)),
            file: Arc::new(file),
            base_offset,
            next_offset: base_offset,
            size: 0,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            roll_reference_ms: now_ms,
            sealed: false,
        }
    }

    /// Creates a new, empty active segment.
    pub(crate) fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Self> {
        let path = segment_file(dir, base_offset, LOG_EXT);
        let file = open_log(&path, true)?;
        Ok(Self::empty(dir, base_offset, file, now_ms))
    }

    /// Opens the active (last) segment: scans every batch (lengths, offsets, CRC-32C), truncates
    /// at the first torn or corrupt batch and rebuilds the in-memory indexes. Returns the segment
    /// and the number of bytes truncated.
    pub(crate) fn open_active(
        dir: &Path,
        base_offset: i64,
        index_interval: u32,
        now_ms: i64,
    ) -> Result<(Self, u64)> {
        let path = segment_file(dir, base_offset, LOG_EXT);
        let file = open_log(&path, false)?;
        let len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
        let mut seg = Self::empty(dir, base_offset, file, now_ms);
        let valid_end = seg.rebuild_from_scan(len, index_interval, true)?;
        let truncated = len - valid_end;
        if truncated > 0 {
            seg.file
                .set_len(valid_end)
                .map_err(|e| LogError::io(&path, e))?;
            seg.file.sync_all().map_err(|e| LogError::io(&path, e))?;
        }
        Ok((seg, truncated))
    }

    /// Opens a sealed segment from its files. Indexes on disk are checked for consistency with
    /// the log (ordering, bounds, and that the last offset-index entry points at a batch with
    /// that base offset); inconsistent or missing ones are rebuilt by a scan and rewritten.
    pub(crate) fn open_sealed(dir: &Path, base_offset: i64, index_interval: u32) -> Result<Self> {
        let path = segment_file(dir, base_offset, LOG_EXT);
        let file = open_log(&path, false)?;
        let len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
        let mut seg = Self::empty(dir, base_offset, file, 0);
        seg.size = len;
        seg.sealed = true;
        match seg.load_indexes(len) {
            Ok(()) => return Ok(seg),
            Err(reason) => {
                tracing::warn!(segment = %path.display(), %reason, "rebuilding segment indexes");
            }
        }
        seg.reset();
        let valid_end = seg.rebuild_from_scan(len, index_interval, false)?;
        if valid_end < len {
            tracing::error!(
                segment = %path.display(),
                valid_end,
                len,
                "sealed segment has an invalid batch; bytes after it are unreadable and dropped"
            );
            seg.file
                .set_len(valid_end)
                .map_err(|e| LogError::io(&path, e))?;
        }
        seg.sealed = true;
        seg.write_indexes()?;
        Ok(seg)
    }

    /// Forgets everything learned about the file's contents.
    fn reset(&mut self) {
        self.next_offset = self.base_offset;
        self.size = 0;
        self.offset_index = OffsetIndex::default();
        self.time_index = TimeIndex::default();
        self.bytes_since_index = 0;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
    }

    fn load_indexes(&mut self, len: u64) -> Result<(), String> {
        let read = |ext| {
            fs::read(segment_file(&self.dir, self.base_offset, ext)).map_err(|e| e.to_string())
        };
        let offset_index = OffsetIndex::from_bytes(&read(INDEX_EXT)?, len)?;
        let time_bytes = read(TIME_INDEX_EXT)?;
        // Find the segment's end offset from the last indexed batch onwards.
        let (start_rel, start_pos) = offset_index.last().unwrap_or((0, 0));
        let mut scanner = Scanner::new(&self.file, &self.path, u64::from(start_pos), len);
        let mut next_offset = self.base_offset;
        let mut first = true;
        loop {
            match scanner.next(false) {
                Ok(Some(b)) => {
                    if first && b.base_offset != self.base_offset + i64::from(start_rel) {
                        return Err(format!(
                            "offset index entry points at base offset {} instead of {}",
                            b.base_offset,
                            self.base_offset + i64::from(start_rel)
                        ));
                    }
                    first = false;
                    next_offset = b.last_offset + 1;
                }
                Ok(None) => break,
                Err(ScanStop::Invalid { position, reason }) => {
                    return Err(format!("invalid batch at position {position}: {reason}"));
                }
                Err(ScanStop::Io(e)) => return Err(e.to_string()),
            }
        }
        let max_rel = u32::try_from(next_offset - self.base_offset).map_err(|e| e.to_string())?;
        let time_index = TimeIndex::from_bytes(&time_bytes, max_rel)?;
        if len > 0 && time_index.last().is_none() {
            return Err("time index is empty for a non-empty segment".into());
        }
        if let Some((ts, rel)) = time_index.last() {
            self.max_timestamp = ts;
            self.offset_of_max_timestamp = self.base_offset + i64::from(rel);
        }
        self.next_offset = next_offset;
        self.offset_index = offset_index;
        self.time_index = time_index;
        Ok(())
    }

    /// Scans `[0, len)`, rebuilding state and indexes; returns the end of the last valid batch.
    /// Batches must continue the offset sequence.
    fn rebuild_from_scan(&mut self, len: u64, index_interval: u32, verify: bool) -> Result<u64> {
        let file = Arc::clone(&self.file);
        let path = Arc::clone(&self.path);
        let mut scanner = Scanner::new(&file, &path, 0, len);
        loop {
            match scanner.next(verify) {
                Ok(Some(b)) => {
                    if b.base_offset != self.next_offset {
                        tracing::warn!(
                            segment = %self.path.display(),
                            position = b.position,
                            expected = self.next_offset,
                            found = b.base_offset,
                            "batch breaks the offset sequence; truncating here"
                        );
                        return Ok(b.position);
                    }
                    self.track(&b, index_interval);
                }
                Ok(None) => return Ok(len),
                Err(ScanStop::Invalid { position, reason }) => {
                    tracing::warn!(segment = %self.path.display(), position, %reason, "invalid batch; truncating here");
                    return Ok(position);
                }
                Err(ScanStop::Io(e)) => return Err(e),
            }
        }
    }

    /// Updates size, offsets, timestamps and indexes for a batch now at `b.position`.
    fn track(&mut self, b: &ScannedBatch, index_interval: u32) {
        let rel = (b.base_offset - self.base_offset) as u32;
        // Position 0 is implicitly indexed; after that, one entry per `index_interval` bytes.
        if self.bytes_since_index >= u64::from(index_interval) {
            self.offset_index.append(rel, b.position as u32);
            self.bytes_since_index = 0;
        }
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            self.offset_of_max_timestamp = b.base_offset;
            self.time_index.maybe_append(b.max_timestamp, rel);
        }
        self.bytes_since_index += b.size;
        self.size = b.position + b.size;
        self.next_offset = b.last_offset + 1;
    }

    /// Appends one batch given as its (already rewritten) fixed header and its records, with one
    /// vectored write, so the records go from the request buffer to the file without a copy.
    pub(crate) fn append(
        &mut self,
        head: &[u8],
        records: &[u8],
        index_interval: u32,
    ) -> Result<()> {
        debug_assert!(!self.sealed);
        let header = BatchHeader::parse(head)?;
        debug_assert_eq!(header.base_offset(), self.next_offset);
        let size = head.len() + records.len();
        let mut slices = [IoSlice::new(head), IoSlice::new(records)];
        let mut pending = &mut slices[..];
        let mut writer = self.file.as_ref();
        while !pending.is_empty() {
            match writer.write_vectored(pending) {
                Ok(0) => {
                    return Err(LogError::io(
                        self.path.as_path(),
                        std::io::Error::new(std::io::ErrorKind::WriteZero, "write returned 0"),
                    ));
                }
                Ok(n) => IoSlice::advance_slices(&mut pending, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LogError::io(self.path.as_path(), e)),
            }
        }
        let scanned = ScannedBatch {
            position: self.size,
            size: size as u64,
            base_offset: header.base_offset(),
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp(),
        };
        self.track(&scanned, index_interval);
        Ok(())
    }

    /// Position of the batch that contains `offset` (or the first batch after it, across a gap),
    /// or `None` if the segment ends before `offset`.
    pub(crate) fn find_position(&self, offset: i64) -> Result<Option<u64>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let rel = (offset - self.base_offset).max(0) as u32;
        let (_, pos) = self.offset_index.lookup(rel);
        Ok(self
            .scan_until(u64::from(pos), |b| b.last_offset >= offset)?
            .map(|b| b.position))
    }

    fn scan_until(
        &self,
        from: u64,
        mut stop: impl FnMut(&ScannedBatch) -> bool,
    ) -> Result<Option<ScannedBatch>> {
        let mut scanner = Scanner::new(&self.file, &self.path, from, self.size);
        loop {
            match scanner.next(false) {
                Ok(Some(b)) if stop(&b) => return Ok(Some(b)),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
                Err(ScanStop::Io(e)) => return Err(e),
                Err(ScanStop::Invalid { position, reason }) => {
                    return Err(LogError::CorruptBatch(format!(
                        "{reason} in {} at position={position}",
                        self.path.display()
                    )));
                }
            }
        }
    }

    /// The first batch whose max timestamp is at least `timestamp`.
    pub(crate) fn find_by_timestamp(&self, timestamp: i64) -> Result<Option<ReadSlice>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let start_rel = self.time_index.scan_start(timestamp);
        let (_, pos) = self.offset_index.lookup(start_rel);
        let found = self.scan_until(u64::from(pos), |b| b.max_timestamp >= timestamp)?;
        Ok(found.map(|b| self.slice_of(b)))
    }

    /// The batch that starts at `base_offset`, if any.
    pub(crate) fn batch_at(&self, base_offset: i64) -> Result<Option<ReadSlice>> {
        let Some(pos) = self.find_position(base_offset)? else {
            return Ok(None);
        };
        let found = self.scan_until(pos, |_| true)?;
        Ok(found
            .filter(|b| b.base_offset == base_offset)
            .map(|b| self.slice_of(b)))
    }

    fn slice_of(&self, b: ScannedBatch) -> ReadSlice {
        ReadSlice {
            file: Arc::clone(&self.file),
            path: Arc::clone(&self.path),
            start: b.position,
            end: b.position + b.size,
        }
    }

    /// Everything from `position` to the current end.
    pub(crate) fn slice_from(&self, position: u64) -> ReadSlice {
        ReadSlice {
            file: Arc::clone(&self.file),
            path: Arc::clone(&self.path),
            start: position,
            end: self.size,
        }
    }

    /// A handle to fsync outside the partition lock.
    pub(crate) fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the segment immutable: fsync the log, then publish its indexes.
    pub(crate) fn seal(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| LogError::io(self.path.as_path(), e))?;
        if self.max_timestamp >= 0 {
            let rel = (self.offset_of_max_timestamp - self.base_offset) as u32;
            self.time_index.maybe_append(self.max_timestamp, rel);
        }
        self.sealed = true;
        self.write_indexes()
    }

    fn write_indexes(&self) -> Result<()> {
        for (ext, bytes) in [
            (INDEX_EXT, self.offset_index.to_bytes()),
            (TIME_INDEX_EXT, self.time_index.to_bytes()),
        ] {
            let path = segment_file(&self.dir, self.base_offset, ext);
            let tmp = path.with_extension(format!("{ext}.{TMP_SUFFIX}"));
            let mut f = File::create(&tmp).map_err(|e| LogError::io(&tmp, e))?;
            f.write_all(&bytes).map_err(|e| LogError::io(&tmp, e))?;
            f.sync_all().map_err(|e| LogError::io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
        }
        sync_dir(&self.dir)
    }

    pub(crate) fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            size_bytes: self.size,
            max_timestamp: self.max_timestamp,
            roll_reference_ms: self.roll_reference_ms,
        }
    }

    /// Removes the segment's files. Readers holding a [`ReadSlice`] keep reading (unlinked files
    /// stay readable while open).
    pub(crate) fn delete(&self) -> Result<()> {
        for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
            let path = segment_file(&self.dir, self.base_offset, ext);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(&path, e)),
            }
        }
        Ok(())
    }
}

/// fsyncs a directory so renames and new files in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}
