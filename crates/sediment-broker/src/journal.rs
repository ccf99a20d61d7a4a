//! A durable journal of state changes: one line per change, `<crc32c as 8 hex digits> <json>\n`,
//! written and fsynced before the change is applied in memory, so a change survives `kill -9`
//! and power loss once the call returns. Committed offsets and the archive manifest both live
//! in one until the Raft metadata service takes them over.
//!
//! On open the journal is replayed: a torn last line (a crash mid-write) is cut off; a bad line
//! in the middle (bit rot) is skipped with a warning, so the changes after it survive. A write
//! that fails half-way is truncated away before the error is returned. When the journal grows
//! well past the live state it is rewritten from a snapshot (temp file, fsync, rename).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::errors::BrokerError;

/// State rebuilt from journal entries.
pub(crate) trait JournalState: Default {
    /// One change.
    type Entry: Serialize + DeserializeOwned;
    /// Applies a change.
    fn apply(&mut self, entry: Self::Entry);
    /// Entries that rebuild the current state from nothing (for compaction).
    fn snapshot(&self) -> Vec<Self::Entry>;
}

/// Rewrite the journal once it exceeds this size and four times the live state.
pub(crate) const COMPACT_MIN_BYTES: u64 = 4 << 20;

fn storage(path: &Path, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Storage(format!("{e} path={}", path.display()))
}

pub(crate) fn encode_line<E: Serialize>(entry: &E) -> Vec<u8> {
    let json = serde_json::to_vec(entry).expect("journal entries serialize");
    let mut line = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

pub(crate) fn decode_line<E: DeserializeOwned>(line: &[u8]) -> Option<E> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if line.get(8) != Some(&b' ') || crc32c::crc32c(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// A journal file and the state it describes. Not synchronised: keep it behind a mutex.
#[derive(Debug)]
pub(crate) struct Journal<S> {
    path: PathBuf,
    file: File,
    bytes: u64,
    state: S,
    /// Size at which compaction is next considered.
    compact_at: u64,
    /// Set when a failed write could not be undone: later writes are refused.
    poisoned: Option<String>,
}

impl<S: JournalState> Journal<S> {
    /// Opens (or creates) the journal at `path`, replaying it.
    pub(crate) fn open(path: PathBuf) -> Result<Self, BrokerError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| storage(dir, e))?;
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(storage(&path, e)),
        };
        let mut state = S::default();
        // `good`: end of the last complete line. A bad line in the middle is skipped; an
        // incomplete or bad last line is a write the crash interrupted and is cut off.
        let mut good = 0usize;
        let mut skipped = 0usize;
        let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let last = i + 1 == lines.len();
            match line.strip_suffix(b"\n").and_then(decode_line::<S::Entry>) {
                Some(entry) => {
                    state.apply(entry);
                    good += line.len();
                }
                None if last => break,
                None => {
                    skipped += 1;
                    good += line.len();
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(path = %path.display(), lines = skipped, "skipped corrupt lines in a journal");
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| storage(&path, e))?;
        if good < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - good,
                "journal has a torn tail; cutting it off"
            );
            file.set_len(good as u64).map_err(|e| storage(&path, e))?;
            file.sync_all().map_err(|e| storage(&path, e))?;
        }
        Ok(Self {
            path,
            file,
            bytes: good as u64,
            state,
            compact_at: COMPACT_MIN_BYTES.max(good as u64 * 2),
            poisoned: None,
        })
    }

    /// The state.
    pub(crate) fn state(&self) -> &S {
        &self.state
    }

    /// Writes and fsyncs `entry`, then applies it.
    pub(crate) fn append(&mut self, entry: S::Entry) -> Result<(), BrokerError> {
        if let Some(why) = &self.poisoned {
            return Err(storage(&self.path, why));
        }
        let line = encode_line(&entry);
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Undo whatever part of the line reached the file, so the next write does not
            // follow garbage that would stop the replay (and lose it) after a restart.
            if let Err(undo) = self
                .file
                .set_len(self.bytes)
                .and_then(|()| self.file.sync_all())
            {
                let why = format!(
                    "a failed write ({e}) could not be undone ({undo}); restart the broker"
                );
                tracing::error!(path = %self.path.display(), "{why}");
                self.poisoned = Some(why);
            }
            return Err(storage(&self.path, e));
        }
        self.bytes += line.len() as u64;
        self.state.apply(entry);
        if self.bytes > self.compact_at
            && let Err(e) = self.compact()
        {
            // The change itself is durable; compaction is retried after more growth.
            tracing::warn!(path = %self.path.display(), error = %e, "journal compaction failed");
            self.compact_at = self.bytes * 2;
        }
        Ok(())
    }

    /// Rewrites the journal from a snapshot when that shrinks it enough; either way, the next
    /// attempt waits until the journal has grown again.
    fn compact(&mut self) -> Result<(), BrokerError> {
        let mut out = Vec::new();
        for entry in self.state.snapshot() {
            out.extend(encode_line(&entry));
        }
        if (out.len() as u64) * 4 > self.bytes {
            self.compact_at = self.bytes * 2;
            return Ok(());
        }
        crate::store::write_atomically(&self.path, &out)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| storage(&self.path, e))?;
        self.bytes = out.len() as u64;
        self.compact_at = COMPACT_MIN_BYTES.max(self.bytes * 4);
        tracing::debug!(path = %self.path.display(), bytes = self.bytes, "compacted journal");
        Ok(())
    }
}
