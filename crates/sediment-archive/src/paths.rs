//! Object keys: the one place that knows the archive's layout.
//!
//! ```text
//! <prefix>/_sediment/cluster.json
//! <prefix>/topic=<topic>/partition=<p>/<base offset:020>-<last offset:020>-<topic id>.parquet
//! ```
//!
//! Hive-style `name=value` directories let Spark, DuckDB and Trino read a topic without a
//! catalog (`partition` becomes a column). The file name sorts by offset and carries the topic
//! id, so a topic deleted and created again under the same name never reuses a key, and is
//! fixed for a segment: a retried upload writes, and finds, the same key.

use object_store::path::Path;
use uuid::Uuid;

/// Marker naming the cluster that owns a prefix.
pub const CLUSTER_MARKER: &str = "_sediment/cluster.json";

/// Extension of archive files.
pub const EXTENSION: &str = "parquet";

/// What a segment key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentKey {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// First offset.
    pub base_offset: i64,
    /// Last offset (inclusive).
    pub last_offset: i64,
    /// Topic id.
    pub topic_id: Uuid,
}

/// Keys under one archive prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: Path,
}

impl Layout {
    /// A layout under `prefix` (empty: the store's root).
    pub fn new(prefix: Path) -> Self {
        Self { prefix }
    }

    /// The prefix.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    fn join(&self, parts: &[&str]) -> Path {
        let mut p = self.prefix.clone();
        for part in parts {
            p = p.clone().join(*part);
        }
        p
    }

    /// `<prefix>/_sediment/cluster.json`.
    pub fn cluster_marker(&self) -> Path {
        self.join(&["_sediment", "cluster.json"])
    }

    /// `<prefix>/topic=<topic>`.
    pub fn topic_dir(&self, topic: &str) -> Path {
        self.join(&[&format!("topic={topic}")])
    }

    /// `<prefix>/topic=<topic>/partition=<p>`.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> Path {
        self.join(&[&format!("topic={topic}"), &format!("partition={partition}")])
    }

    /// The key of one archived segment.
    pub fn segment(&self, key: &SegmentKey) -> Path {
        self.partition_dir(&key.topic, key.partition).join(format!(
            "{:020}-{:020}-{}.{EXTENSION}",
            key.base_offset,
            key.last_offset,
            key.topic_id.simple()
        ))
    }

    /// Reads a segment key back; `None` for anything else (other files under the prefix are
    /// never touched).
    pub fn parse_segment(&self, path: &Path) -> Option<SegmentKey> {
        let rest: Vec<_> = path.prefix_match(&self.prefix)?.collect();
        let [topic, partition, file] = rest.as_slice() else {
            return None;
        };
        let topic = topic.as_ref().strip_prefix("topic=")?.to_string();
        let partition: i32 = partition
            .as_ref()
            .strip_prefix("partition=")?
            .parse()
            .ok()?;
        let stem = file.as_ref().strip_suffix(&format!(".{EXTENSION}"))?;
        let mut parts = stem.splitn(3, '-');
        let base_offset: i64 = parts.next()?.parse().ok()?;
        let last_offset: i64 = parts.next()?.parse().ok()?;
        let topic_id = Uuid::try_parse(parts.next()?).ok()?;
        let key = SegmentKey {
            topic,
            partition,
            base_offset,
            last_offset,
            topic_id,
        };
        // Only the canonical spelling, so a parsed key always maps back to the same path.
        (self.segment(&key) == *path).then_some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_round_trip_and_sort_by_offset() {
        let layout = Layout::new(Path::from("archive/prod"));
        let id = Uuid::parse_str("0f2c8a36-1cb4-4f0e-9d55-5b6c52f1a001").unwrap();
        let key = SegmentKey {
            topic: "orders.v2".into(),
            partition: 7,
            base_offset: 1200,
            last_offset: 2399,
            topic_id: id,
        };
        let path = layout.segment(&key);
        assert_eq!(
            path.as_ref(),
            "archive/prod/topic=orders.v2/partition=7/00000000000000001200-00000000000000002399-0f2c8a361cb44f0e9d555b6c52f1a001.parquet"
        );
        assert_eq!(layout.parse_segment(&path), Some(key.clone()));
        let later = layout.segment(&SegmentKey {
            base_offset: 2400,
            last_offset: 9999,
            ..key
        });
        assert!(path.as_ref() < later.as_ref());
        for other in [
            "archive/prod/_sediment/cluster.json",
            "archive/prod/topic=orders.v2/partition=7/notes.txt",
            "archive/prod/topic=orders.v2/partition=7/1-2-x.parquet",
            "archive/prod/topic=orders.v2/partition=x/00000000000000001200-00000000000000002399-0f2c8a361cb44f0e9d555b6c52f1a001.parquet",
            "elsewhere/topic=orders.v2/partition=7/00000000000000001200-00000000000000002399-0f2c8a361cb44f0e9d555b6c52f1a001.parquet",
        ] {
            assert_eq!(layout.parse_segment(&Path::from(other)), None, "{other}");
        }
        let root = Layout::new(Path::default());
        assert_eq!(root.cluster_marker().as_ref(), "_sediment/cluster.json");
        assert_eq!(root.topic_dir("a").as_ref(), "topic=a");
    }
}
