//! Committed consumer offsets, behind [`OffsetStore`] so the Raft metadata service can take them
//! over without the coordinator changing.
//!
//! [`FileOffsetStore`] keeps every offset in memory and a journal on disk at
//! `<data dir>/groups/offsets.log`: one line per change, `<crc32c as 8 hex digits> <json>\n`.
//! A commit is written and fsynced before it is acknowledged, so it survives `kill -9` and power
//! loss. On open the journal is replayed; a torn last line (a crash mid-write) is cut off. When
//! the journal grows well past the live state it is rewritten (temp file, fsync, rename).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::errors::BrokerError;

/// A committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// Next offset the group will consume.
    pub offset: i64,
    /// Leader epoch of the last consumed record (-1: unknown).
    pub leader_epoch: i32,
    /// Client metadata string.
    pub metadata: String,
    /// Broker time of the commit (ms).
    pub commit_timestamp: i64,
}

/// (topic, partition).
pub type TopicPartition = (String, i32);

/// Where committed offsets live.
pub trait OffsetStore: Send + Sync + std::fmt::Debug {
    /// Durably records `offsets` for `group` before returning.
    fn commit(
        &self,
        group: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<(), BrokerError>;
    /// The committed offset of one partition.
    fn fetch(&self, group: &str, tp: &TopicPartition) -> Option<CommittedOffset>;
    /// Every committed offset of `group`, ordered by topic and partition.
    fn group_offsets(&self, group: &str) -> Vec<(TopicPartition, CommittedOffset)>;
    /// Groups with at least one committed offset.
    fn groups(&self) -> Vec<String>;
    /// Whether `group` has at least one committed offset.
    fn has_group(&self, group: &str) -> bool;
    /// Removes `partitions` of `group` (all of them with `None`).
    fn delete(&self, group: &str, partitions: Option<&[TopicPartition]>)
    -> Result<(), BrokerError>;
}

type GroupOffsets = BTreeMap<TopicPartition, CommittedOffset>;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Commit {
        group: String,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    },
    Delete {
        group: String,
        partitions: Option<Vec<TopicPartition>>,
    },
}

#[derive(Debug)]
struct Journal {
    file: File,
    bytes: u64,
    groups: HashMap<String, GroupOffsets>,
    /// Size at which compaction is next considered.
    compact_at: u64,
    /// Set when a failed write could not be undone: later writes are refused.
    poisoned: Option<String>,
}

/// Offsets in a journal file under the data directory.
#[derive(Debug)]
pub struct FileOffsetStore {
    path: PathBuf,
    journal: Mutex<Journal>,
}

/// Rewrite the journal once it exceeds this size and four times the live state.
const COMPACT_MIN_BYTES: u64 = 4 << 20;

fn storage(path: &Path, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Storage(format!("{e} path={}", path.display()))
}

fn encode_line(entry: &Entry) -> Vec<u8> {
    let json = serde_json::to_vec(entry).expect("offset entries serialize");
    let mut line = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

fn decode_line(line: &[u8]) -> Option<Entry> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if line.get(8) != Some(&b' ') || crc32c::crc32c(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

fn apply(groups: &mut HashMap<String, GroupOffsets>, entry: Entry) {
    match entry {
        Entry::Commit { group, offsets } => {
            groups.entry(group).or_default().extend(offsets);
        }
        Entry::Delete {
            group,
            partitions: None,
        } => {
            groups.remove(&group);
        }
        Entry::Delete {
            group,
            partitions: Some(partitions),
        } => {
            if let Some(g) = groups.get_mut(&group) {
                for tp in &partitions {
                    g.remove(tp);
                }
                if g.is_empty() {
                    groups.remove(&group);
                }
            }
        }
    }
}

impl FileOffsetStore {
    /// Opens (or creates) `<data_dir>/groups/offsets.log`, replaying it.
    pub fn open(data_dir: &Path) -> Result<Self, BrokerError> {
        let dir = data_dir.join("groups");
        fs::create_dir_all(&dir).map_err(|e| storage(&dir, e))?;
        let path = dir.join("offsets.log");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(storage(&path, e)),
        };
        let mut groups = HashMap::new();
        // `good`: end of the last complete line. A bad line in the middle (bit rot) is
        // skipped, so the commits after it survive; an incomplete or bad last line is a write
        // the crash interrupted and is cut off.
        let mut good = 0usize;
        let mut skipped = 0usize;
        let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let last = i + 1 == lines.len();
            match line.strip_suffix(b"\n").and_then(decode_line) {
                Some(entry) => {
                    apply(&mut groups, entry);
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
            tracing::warn!(path = %path.display(), lines = skipped, "skipped corrupt lines in the offset journal");
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
                "offset journal has a torn tail; cutting it off"
            );
            file.set_len(good as u64).map_err(|e| storage(&path, e))?;
            file.sync_all().map_err(|e| storage(&path, e))?;
        }
        Ok(Self {
            path,
            journal: Mutex::new(Journal {
                file,
                bytes: good as u64,
                groups,
                compact_at: COMPACT_MIN_BYTES.max(good as u64 * 2),
                poisoned: None,
            }),
        })
    }

    fn write(&self, journal: &mut Journal, entry: Entry) -> Result<(), BrokerError> {
        if let Some(why) = &journal.poisoned {
            return Err(storage(&self.path, why));
        }
        let line = encode_line(&entry);
        let written = journal
            .file
            .write_all(&line)
            .and_then(|()| journal.file.sync_data());
        if let Err(e) = written {
            // Undo whatever part of the line reached the file, so the next commit does not
            // follow garbage that would stop the replay (and lose it) after a restart.
            if let Err(undo) = journal
                .file
                .set_len(journal.bytes)
                .and_then(|()| journal.file.sync_all())
            {
                let why = format!(
                    "a failed write ({e}) could not be undone ({undo}); restart the broker"
                );
                tracing::error!(path = %self.path.display(), "{why}");
                journal.poisoned = Some(why);
            }
            return Err(storage(&self.path, e));
        }
        journal.bytes += line.len() as u64;
        apply(&mut journal.groups, entry);
        if journal.bytes > journal.compact_at
            && let Err(e) = self.compact(journal)
        {
            // The commit itself is durable; compaction is retried after more growth.
            tracing::warn!(path = %self.path.display(), error = %e, "offset journal compaction failed");
            journal.compact_at = journal.bytes * 2;
        }
        Ok(())
    }

    /// Rewrites the journal as one commit line per group when that shrinks it enough; either
    /// way, the next attempt waits until the journal has grown again.
    fn compact(&self, journal: &mut Journal) -> Result<(), BrokerError> {
        let mut out = Vec::new();
        for (group, offsets) in &journal.groups {
            out.extend(encode_line(&Entry::Commit {
                group: group.clone(),
                offsets: offsets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }));
        }
        if (out.len() as u64) * 4 > journal.bytes {
            journal.compact_at = journal.bytes * 2;
            return Ok(());
        }
        crate::store::write_atomically(&self.path, &out)?;
        journal.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| storage(&self.path, e))?;
        journal.bytes = out.len() as u64;
        journal.compact_at = COMPACT_MIN_BYTES.max(journal.bytes * 4);
        tracing::debug!(path = %self.path.display(), bytes = journal.bytes, "compacted offset journal");
        Ok(())
    }
}

impl OffsetStore for FileOffsetStore {
    fn commit(
        &self,
        group: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<(), BrokerError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut journal = self.journal.lock();
        self.write(
            &mut journal,
            Entry::Commit {
                group: group.to_string(),
                offsets: offsets.to_vec(),
            },
        )
    }

    fn fetch(&self, group: &str, tp: &TopicPartition) -> Option<CommittedOffset> {
        self.journal.lock().groups.get(group)?.get(tp).cloned()
    }

    fn group_offsets(&self, group: &str) -> Vec<(TopicPartition, CommittedOffset)> {
        self.journal
            .lock()
            .groups
            .get(group)
            .map(|g| g.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn groups(&self) -> Vec<String> {
        let mut groups: Vec<_> = self.journal.lock().groups.keys().cloned().collect();
        groups.sort();
        groups
    }

    fn has_group(&self, group: &str) -> bool {
        self.journal.lock().groups.contains_key(group)
    }

    fn delete(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<(), BrokerError> {
        let mut journal = self.journal.lock();
        if !journal.groups.contains_key(group) {
            return Ok(());
        }
        self.write(
            &mut journal,
            Entry::Delete {
                group: group.to_string(),
                partitions: partitions.map(<[TopicPartition]>::to_vec),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(offset: i64, metadata: &str) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: 0,
            metadata: metadata.into(),
            commit_timestamp: 1,
        }
    }

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn commits_and_deletes_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileOffsetStore::open(dir.path()).unwrap();
        store
            .commit("g", &[(tp("t", 0), off(5, "m")), (tp("t", 1), off(7, ""))])
            .unwrap();
        store.commit("g", &[(tp("t", 0), off(9, "n"))]).unwrap();
        store.commit("h", &[(tp("u", 0), off(1, ""))]).unwrap();
        store.delete("h", None).unwrap();
        store.commit("k", &[(tp("u", 0), off(2, ""))]).unwrap();
        store.delete("k", Some(&[tp("u", 0)])).unwrap();
        drop(store);
        // A crash in the middle of the next line.
        let path = dir.path().join("groups/offsets.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"0badc0de {\"commit\":{\"gro").unwrap();
        drop(f);
        let store = FileOffsetStore::open(dir.path()).unwrap();
        assert_eq!(store.fetch("g", &tp("t", 0)), Some(off(9, "n")));
        assert_eq!(store.fetch("g", &tp("t", 1)), Some(off(7, "")));
        assert_eq!(store.groups(), vec!["g".to_string()]);
        // The torn tail is gone, and new commits append after the good prefix.
        store.commit("g", &[(tp("t", 2), off(3, ""))]).unwrap();
        drop(store);
        let store = FileOffsetStore::open(dir.path()).unwrap();
        assert_eq!(store.group_offsets("g").len(), 3);
    }

    #[test]
    fn a_corrupt_line_stops_replay_there() {
        let line = encode_line(&Entry::Delete {
            group: "g".into(),
            partitions: None,
        });
        assert!(decode_line(line.strip_suffix(b"\n").unwrap()).is_some());
        let mut bad = line.clone();
        bad[12] ^= 1;
        assert!(decode_line(bad.strip_suffix(b"\n").unwrap()).is_none());
    }

    #[test]
    fn a_corrupt_line_in_the_middle_does_not_lose_the_commits_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileOffsetStore::open(dir.path()).unwrap();
        store.commit("g", &[(tp("t", 0), off(1, ""))]).unwrap();
        store.commit("g", &[(tp("t", 0), off(2, ""))]).unwrap();
        store.commit("g", &[(tp("t", 1), off(3, ""))]).unwrap();
        drop(store);
        let path = dir.path().join("groups/offsets.log");
        let mut bytes = fs::read(&path).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 12;
        bytes[second] ^= 0x20; // inside the second line's JSON
        fs::write(&path, &bytes).unwrap();
        let store = FileOffsetStore::open(dir.path()).unwrap();
        assert_eq!(
            store.fetch("g", &tp("t", 0)).unwrap().offset,
            1,
            "line 2 skipped"
        );
        assert_eq!(
            store.fetch("g", &tp("t", 1)).unwrap().offset,
            3,
            "line 3 kept"
        );
    }

    #[test]
    fn the_journal_is_compacted_when_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileOffsetStore::open(dir.path()).unwrap();
        let meta = "x".repeat(4000);
        for i in 0..1500 {
            store.commit("g", &[(tp("t", 0), off(i, &meta))]).unwrap();
        }
        let size = fs::metadata(dir.path().join("groups/offsets.log"))
            .unwrap()
            .len();
        assert!(size < COMPACT_MIN_BYTES, "journal is {size} bytes");
        drop(store);
        let store = FileOffsetStore::open(dir.path()).unwrap();
        assert_eq!(store.fetch("g", &tp("t", 0)).unwrap().offset, 1499);
    }
}
