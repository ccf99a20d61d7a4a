//! The archive manifest of a single broker: [`sediment_archive::Catalog`] over a journal at
//! `<data dir>/archive-manifest.log` (see [`crate::journal`]). Every commit and removal is
//! fsynced before it returns. The broker keeps the manifest in the Raft metadata service now
//! (`meta_store.rs`); this store remains to import a data directory from before it.

use std::path::Path;

use parking_lot::Mutex;
use sediment_archive::{ArchiveError, ArchivedSegment, Catalog, CatalogState, CommitOutcome};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::errors::BrokerError;
use crate::journal::{Journal, JournalState};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Commit(Box<ArchivedSegment>),
    RemoveBefore {
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    },
    RemoveTopic {
        topic_id: Uuid,
    },
}

#[derive(Debug, Default)]
struct Manifest(CatalogState);

impl JournalState for Manifest {
    type Entry = Entry;

    fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Commit(segment) => {
                // Entries were checked before they were written.
                if matches!(self.0.check(&segment), Ok(true)) {
                    self.0.add(*segment);
                }
            }
            Entry::RemoveBefore {
                topic_id,
                partition,
                offset,
            } => self.0.remove_before(topic_id, partition, offset),
            Entry::RemoveTopic { topic_id } => self.0.remove_topic(topic_id),
        }
    }

    fn snapshot(&self) -> Vec<Entry> {
        let mut all: Vec<&ArchivedSegment> = self.0.all().collect();
        all.sort_by_key(|s| (s.topic_id, s.partition, s.base_offset));
        all.into_iter()
            .map(|s| Entry::Commit(Box::new(s.clone())))
            .collect()
    }
}

/// The manifest in a journal file.
#[derive(Debug)]
pub struct FileCatalog {
    journal: Mutex<Journal<Manifest>>,
}

fn catalog_error(e: BrokerError) -> ArchiveError {
    ArchiveError::Catalog(e.to_string())
}

impl FileCatalog {
    /// Opens (or creates) `<data_dir>/archive-manifest.log`.
    pub fn open(data_dir: &Path) -> Result<Self, BrokerError> {
        Ok(Self {
            journal: Mutex::new(Journal::open(data_dir.join("archive-manifest.log"))?),
        })
    }
}

impl Catalog for FileCatalog {
    fn commit(&self, segment: ArchivedSegment) -> sediment_archive::Result<CommitOutcome> {
        let mut journal = self.journal.lock();
        if !journal.state().0.check(&segment)? {
            return Ok(CommitOutcome::AlreadyPresent);
        }
        journal
            .append(Entry::Commit(Box::new(segment)))
            .map_err(catalog_error)?;
        Ok(CommitOutcome::Added)
    }

    fn segments(&self, topic_id: Uuid, partition: i32) -> Vec<ArchivedSegment> {
        self.journal.lock().state().0.segments(topic_id, partition)
    }

    fn partitions(&self) -> Vec<(Uuid, i32)> {
        self.journal.lock().state().0.partitions()
    }

    fn segment_at(&self, topic_id: Uuid, partition: i32, offset: i64) -> Option<ArchivedSegment> {
        self.journal
            .lock()
            .state()
            .0
            .segment_at(topic_id, partition, offset)
    }

    fn range(&self, topic_id: Uuid, partition: i32) -> Option<(i64, i64)> {
        self.journal.lock().state().0.range(topic_id, partition)
    }

    fn remove_before(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> sediment_archive::Result<Vec<ArchivedSegment>> {
        let mut journal = self.journal.lock();
        let removed = journal.state().0.before(topic_id, partition, offset);
        if removed.is_empty() {
            return Ok(removed);
        }
        journal
            .append(Entry::RemoveBefore {
                topic_id,
                partition,
                offset,
            })
            .map_err(catalog_error)?;
        Ok(removed)
    }

    fn remove_topic(&self, topic_id: Uuid) -> sediment_archive::Result<Vec<ArchivedSegment>> {
        let mut journal = self.journal.lock();
        let removed = journal.state().0.topic(topic_id);
        if removed.is_empty() {
            return Ok(removed);
        }
        journal
            .append(Entry::RemoveTopic { topic_id })
            .map_err(catalog_error)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(topic_id: Uuid, partition: i32, base: i64, last: i64) -> ArchivedSegment {
        ArchivedSegment {
            topic: "t".into(),
            topic_id,
            partition,
            base_offset: base,
            last_offset: last,
            min_timestamp: 1,
            max_timestamp: 2,
            rows: (last - base + 1) as u64,
            segment_bytes: 1000,
            segment_crc32c: 7,
            record_bytes: 900,
            key: format!("topic=t/partition={partition}/{base:020}-{last:020}-x.parquet"),
            object_bytes: 300,
            row_groups: vec![],
            leader_epochs: vec![(0, base)],
            schema_version: 1,
            archived_at_ms: 5,
        }
    }

    #[test]
    fn the_manifest_survives_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let c = FileCatalog::open(dir.path()).unwrap();
        for i in 0..5 {
            c.commit(entry(a, 0, i * 10, i * 10 + 9)).unwrap();
        }
        c.commit(entry(a, 1, 0, 9)).unwrap();
        c.commit(entry(b, 0, 0, 9)).unwrap();
        assert_eq!(
            c.commit(entry(a, 0, 40, 49)).unwrap(),
            CommitOutcome::AlreadyPresent
        );
        assert!(c.commit(entry(a, 0, 45, 60)).is_err());
        assert_eq!(c.remove_before(a, 0, 20).unwrap().len(), 2);
        assert_eq!(c.remove_topic(b).unwrap().len(), 1);
        drop(c);
        let path = dir.path().join("archive-manifest.log");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"deadbeef {\"commit\":").unwrap();
        drop(f);
        let c = FileCatalog::open(dir.path()).unwrap();
        let p0: Vec<i64> = c.segments(a, 0).iter().map(|s| s.base_offset).collect();
        assert_eq!(p0, vec![20, 30, 40]);
        assert_eq!(c.segments(a, 0)[0], entry(a, 0, 20, 29));
        assert_eq!(c.partitions(), vec![(a, 0), (a, 1)]);
        assert!(c.segments(b, 0).is_empty());
    }
}
