//! Committed consumer offsets, behind [`OffsetStore`]. The broker keeps them in the Raft
//! metadata service (`meta_store.rs`); [`FileOffsetStore`] remains to import a data directory
//! from before it, and for unit tests.
//!
//! [`FileOffsetStore`] keeps every offset in memory and a journal on disk at
//! `<data dir>/groups/offsets.log`: one line per change, `<crc32c as 8 hex digits> <json>\n`.
//! A commit is written and fsynced before it is acknowledged, so it survives `kill -9` and power
//! loss. On open the journal is replayed; a torn last line (a crash mid-write) is cut off. When
//! the journal grows well past the live state it is rewritten (temp file, fsync, rename).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::errors::BrokerError;
use crate::journal::{Journal, JournalState};

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

/// Offsets by group, as the journal describes them.
#[derive(Debug, Default)]
struct Offsets {
    groups: HashMap<String, GroupOffsets>,
}

impl JournalState for Offsets {
    type Entry = Entry;

    fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Commit { group, offsets } => {
                self.groups.entry(group).or_default().extend(offsets);
            }
            Entry::Delete {
                group,
                partitions: None,
            } => {
                self.groups.remove(&group);
            }
            Entry::Delete {
                group,
                partitions: Some(partitions),
            } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    for tp in &partitions {
                        g.remove(tp);
                    }
                    if g.is_empty() {
                        self.groups.remove(&group);
                    }
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<Entry> {
        self.groups
            .iter()
            .map(|(group, offsets)| Entry::Commit {
                group: group.clone(),
                offsets: offsets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect()
    }
}

/// Offsets in a journal file under the data directory.
#[derive(Debug)]
pub struct FileOffsetStore {
    journal: Mutex<Journal<Offsets>>,
}

impl FileOffsetStore {
    /// Opens (or creates) `<data_dir>/groups/offsets.log`, replaying it.
    pub fn open(data_dir: &Path) -> Result<Self, BrokerError> {
        let path = data_dir.join("groups").join("offsets.log");
        Ok(Self {
            journal: Mutex::new(Journal::open(path)?),
        })
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
        self.journal.lock().append(Entry::Commit {
            group: group.to_string(),
            offsets: offsets.to_vec(),
        })
    }

    fn fetch(&self, group: &str, tp: &TopicPartition) -> Option<CommittedOffset> {
        self.journal
            .lock()
            .state()
            .groups
            .get(group)?
            .get(tp)
            .cloned()
    }

    fn group_offsets(&self, group: &str) -> Vec<(TopicPartition, CommittedOffset)> {
        self.journal
            .lock()
            .state()
            .groups
            .get(group)
            .map(|g| g.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn groups(&self) -> Vec<String> {
        let mut groups: Vec<_> = self.journal.lock().state().groups.keys().cloned().collect();
        groups.sort();
        groups
    }

    fn has_group(&self, group: &str) -> bool {
        self.journal.lock().state().groups.contains_key(group)
    }

    fn delete(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<(), BrokerError> {
        let mut journal = self.journal.lock();
        if !journal.state().groups.contains_key(group) {
            return Ok(());
        }
        journal.append(Entry::Delete {
            group: group.to_string(),
            partitions: partitions.map(<[TopicPartition]>::to_vec),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{COMPACT_MIN_BYTES, decode_line, encode_line};
    use std::fs::{self, OpenOptions};
    use std::io::Write;

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
        assert!(decode_line::<Entry>(line.strip_suffix(b"\n").unwrap()).is_some());
        let mut bad = line.clone();
        bad[12] ^= 1;
        assert!(decode_line::<Entry>(bad.strip_suffix(b"\n").unwrap()).is_none());
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
