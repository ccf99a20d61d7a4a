//! The catalog: where the manifest of archived segments is kept. This crate says what it needs
//! ([`Catalog`]); the broker supplies it (a journal file today, the Raft metadata service
//! later). Reads of the archive go through the catalog, never through a bucket listing.
//!
//! Rules every implementation keeps:
//! - a commit is durable before it returns;
//! - per partition, entries are ascending and do not overlap; a later entry may start past the
//!   previous end (retention removed unarchived segments meanwhile) but never before it;
//! - committing an entry that is already there (same range and key) changes nothing, so a
//!   retried commit is harmless; the same range under another key is refused.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::error::{ArchiveError, Result};
use crate::manifest::ArchivedSegment;

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The entry was added.
    Added,
    /// The same entry was already there.
    AlreadyPresent,
}

/// The manifest of archived segments.
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// Durably records `segment` (see the module rules).
    fn commit(&self, segment: ArchivedSegment) -> Result<CommitOutcome>;
    /// The archived segments of one partition, ascending.
    fn segments(&self, topic_id: Uuid, partition: i32) -> Vec<ArchivedSegment>;
    /// Every partition with at least one entry.
    fn partitions(&self) -> Vec<(Uuid, i32)>;
    /// The first entry of a partition that ends at or after `offset` (the one holding it, or
    /// the next one after a gap). The read path's lookup: it must not copy the whole list.
    fn segment_at(&self, topic_id: Uuid, partition: i32, offset: i64) -> Option<ArchivedSegment>;
    /// (first offset, offset after the last) of a partition's entries, if it has any.
    fn range(&self, topic_id: Uuid, partition: i32) -> Option<(i64, i64)>;
    /// Durably removes the entries of one partition that end before `offset`, returning them.
    fn remove_before(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<Vec<ArchivedSegment>>;
    /// Durably removes every entry of a topic, returning them.
    fn remove_topic(&self, topic_id: Uuid) -> Result<Vec<ArchivedSegment>>;
}

/// Per-partition entries keyed by base offset: the in-memory state any catalog can use.
/// Serialized as the list of its entries (by topic id, partition, base offset).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Vec<ArchivedSegment>", into = "Vec<ArchivedSegment>")]
pub struct CatalogState {
    partitions: HashMap<(Uuid, i32), BTreeMap<i64, ArchivedSegment>>,
}

impl CatalogState {
    /// Checks `segment` against the rules; `Ok(false)` when it is already present.
    pub fn check(&self, segment: &ArchivedSegment) -> Result<bool> {
        if segment.last_offset < segment.base_offset {
            return Err(ArchiveError::Catalog(format!(
                "entry {} has last_offset={} before base_offset={}",
                segment.key, segment.last_offset, segment.base_offset
            )));
        }
        let Some(entries) = self.partitions.get(&(segment.topic_id, segment.partition)) else {
            return Ok(true);
        };
        if let Some(existing) = entries.get(&segment.base_offset)
            && existing.last_offset == segment.last_offset
            && existing.key == segment.key
        {
            return Ok(false);
        }
        if let Some((_, last)) = entries.last_key_value()
            && segment.base_offset <= last.last_offset
        {
            return Err(ArchiveError::Catalog(format!(
                "entry {} for offsets {}..={} overlaps or precedes {} ({}..={})",
                segment.key,
                segment.base_offset,
                segment.last_offset,
                last.key,
                last.base_offset,
                last.last_offset
            )));
        }
        Ok(true)
    }

    /// Adds a checked entry.
    pub fn add(&mut self, segment: ArchivedSegment) {
        self.partitions
            .entry((segment.topic_id, segment.partition))
            .or_default()
            .insert(segment.base_offset, segment);
    }

    /// The entries of a partition, ascending.
    pub fn segments(&self, topic_id: Uuid, partition: i32) -> Vec<ArchivedSegment> {
        self.partitions
            .get(&(topic_id, partition))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// See [`Catalog::segment_at`].
    pub fn segment_at(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Option<ArchivedSegment> {
        let m = self.partitions.get(&(topic_id, partition))?;
        // Entries never overlap, so only the last one starting at or before `offset` can hold
        // it; otherwise the next one is the answer.
        if let Some((_, s)) = m.range(..=offset).next_back()
            && s.last_offset >= offset
        {
            return Some(s.clone());
        }
        m.range(offset.saturating_add(1)..)
            .next()
            .map(|(_, s)| s.clone())
    }

    /// See [`Catalog::range`].
    pub fn range(&self, topic_id: Uuid, partition: i32) -> Option<(i64, i64)> {
        let m = self.partitions.get(&(topic_id, partition))?;
        let first = m.values().next()?;
        let last = m.values().next_back()?;
        Some((first.base_offset, last.next_offset()))
    }

    /// Every partition with entries, sorted.
    pub fn partitions(&self) -> Vec<(Uuid, i32)> {
        let mut out: Vec<_> = self
            .partitions
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, _)| *k)
            .collect();
        out.sort();
        out
    }

    /// The entries `remove_before` would remove.
    pub fn before(&self, topic_id: Uuid, partition: i32, offset: i64) -> Vec<ArchivedSegment> {
        self.partitions
            .get(&(topic_id, partition))
            .map(|m| {
                m.values()
                    .take_while(|s| s.next_offset() <= offset)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes entries ending before `offset`.
    pub fn remove_before(&mut self, topic_id: Uuid, partition: i32, offset: i64) {
        if let Some(m) = self.partitions.get_mut(&(topic_id, partition)) {
            m.retain(|_, s| s.next_offset() > offset);
            if m.is_empty() {
                self.partitions.remove(&(topic_id, partition));
            }
        }
    }

    /// The entries of a topic.
    pub fn topic(&self, topic_id: Uuid) -> Vec<ArchivedSegment> {
        let mut out: Vec<_> = self
            .partitions
            .iter()
            .filter(|((t, _), _)| *t == topic_id)
            .flat_map(|(_, m)| m.values().cloned())
            .collect();
        out.sort_by_key(|s| (s.partition, s.base_offset));
        out
    }

    /// Removes a topic's entries.
    pub fn remove_topic(&mut self, topic_id: Uuid) {
        self.partitions.retain(|(t, _), _| *t != topic_id);
    }

    /// Every entry, for compaction and listings.
    pub fn all(&self) -> impl Iterator<Item = &ArchivedSegment> {
        self.partitions.values().flat_map(|m| m.values())
    }
}

impl From<Vec<ArchivedSegment>> for CatalogState {
    fn from(entries: Vec<ArchivedSegment>) -> Self {
        let mut state = Self::default();
        for e in entries {
            state.add(e);
        }
        state
    }
}

impl From<CatalogState> for Vec<ArchivedSegment> {
    fn from(state: CatalogState) -> Self {
        let mut all: Vec<_> = state
            .partitions
            .into_values()
            .flat_map(|m| m.into_values())
            .collect();
        all.sort_by_key(|s| (s.topic_id, s.partition, s.base_offset));
        all
    }
}

/// A catalog in memory only, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    state: Mutex<CatalogState>,
}

impl Catalog for MemoryCatalog {
    fn commit(&self, segment: ArchivedSegment) -> Result<CommitOutcome> {
        let mut state = self.state.lock();
        if !state.check(&segment)? {
            return Ok(CommitOutcome::AlreadyPresent);
        }
        state.add(segment);
        Ok(CommitOutcome::Added)
    }

    fn segments(&self, topic_id: Uuid, partition: i32) -> Vec<ArchivedSegment> {
        self.state.lock().segments(topic_id, partition)
    }

    fn partitions(&self) -> Vec<(Uuid, i32)> {
        self.state.lock().partitions()
    }

    fn segment_at(&self, topic_id: Uuid, partition: i32, offset: i64) -> Option<ArchivedSegment> {
        self.state.lock().segment_at(topic_id, partition, offset)
    }

    fn range(&self, topic_id: Uuid, partition: i32) -> Option<(i64, i64)> {
        self.state.lock().range(topic_id, partition)
    }

    fn remove_before(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<Vec<ArchivedSegment>> {
        let mut state = self.state.lock();
        let removed = state.before(topic_id, partition, offset);
        state.remove_before(topic_id, partition, offset);
        Ok(removed)
    }

    fn remove_topic(&self, topic_id: Uuid) -> Result<Vec<ArchivedSegment>> {
        let mut state = self.state.lock();
        let removed = state.topic(topic_id);
        state.remove_topic(topic_id);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(topic_id: Uuid, base: i64, last: i64, key: &str) -> ArchivedSegment {
        ArchivedSegment {
            topic: "t".into(),
            topic_id,
            partition: 0,
            base_offset: base,
            last_offset: last,
            min_timestamp: 0,
            max_timestamp: 0,
            rows: (last - base + 1) as u64,
            segment_bytes: 100,
            segment_crc32c: 0,
            record_bytes: 0,
            key: key.into(),
            object_bytes: 10,
            row_groups: vec![],
            leader_epochs: vec![(0, base)],
            schema_version: 1,
            archived_at_ms: 0,
        }
    }

    #[test]
    fn commits_are_idempotent_ascending_and_never_overlap() {
        let c = MemoryCatalog::default();
        let t = Uuid::new_v4();
        assert_eq!(c.commit(entry(t, 0, 9, "a")).unwrap(), CommitOutcome::Added);
        assert_eq!(
            c.commit(entry(t, 0, 9, "a")).unwrap(),
            CommitOutcome::AlreadyPresent,
            "a retried commit"
        );
        assert!(
            c.commit(entry(t, 0, 9, "b")).is_err(),
            "same range, other key"
        );
        assert!(c.commit(entry(t, 5, 14, "c")).is_err(), "overlap");
        // A gap is allowed (retention removed unarchived segments).
        c.commit(entry(t, 20, 29, "d")).unwrap();
        assert!(c.commit(entry(t, 10, 19, "e")).is_err(), "before the end");
        assert_eq!(c.segments(t, 0).len(), 2);
        let at = |o| c.segment_at(t, 0, o).map(|s| s.key);
        assert_eq!(at(-5).as_deref(), Some("a"));
        assert_eq!(at(9).as_deref(), Some("a"));
        assert_eq!(at(10).as_deref(), Some("d"), "in the gap: the next entry");
        assert_eq!(at(29).as_deref(), Some("d"));
        assert_eq!(at(30), None);
        assert_eq!(c.range(t, 0), Some((0, 30)));
        assert_eq!(c.range(t, 1), None);
        let removed = c.remove_before(t, 0, 20).unwrap();
        assert_eq!(
            removed.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(c.remove_topic(t).unwrap().len(), 1);
        assert!(c.partitions().is_empty());
    }
}
