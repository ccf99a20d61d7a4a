//! A topic's archive found by listing its directory, for tools that run without a broker (the
//! replay job). Brokers never do this: their reads go through the manifest. Listing once per
//! job and reading each object's footer gives the same entries the manifest holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use uuid::Uuid;

use crate::archive::read_entry;
use crate::catalog::{Catalog, MemoryCatalog};
use crate::error::{ArchiveError, Result};
use crate::manifest::ArchivedSegment;
use crate::paths::SegmentKey;
use crate::store::ArchiveStore;

/// Footers read at once while listing.
const FOOTERS_IN_FLIGHT: usize = 16;

/// What listing a topic found.
#[derive(Debug)]
pub struct TopicListing {
    /// The topic.
    pub topic: String,
    /// The topic id whose objects were taken.
    pub topic_id: Uuid,
    /// Their manifest entries, one catalog as the reader wants it.
    pub catalog: Arc<MemoryCatalog>,
    /// Partitions with at least one object, ascending.
    pub partitions: Vec<i32>,
    /// Objects left out because another object already holds all their offsets (an upload
    /// retried under another key before the manifest commit); their records are identical.
    pub duplicates: Vec<String>,
    /// Objects listed (of the taken topic id).
    pub objects: usize,
    /// GET and LIST requests the listing took.
    pub requests: u64,
}

/// Lists `<prefix>/topic=<topic>/`, keeps the objects of `topic_id` (required when the name
/// was used by more than one topic, i.e. deleted and created again while its old archive was
/// still there), reads their footers and builds a catalog of them.
pub async fn list_topic(
    store: &ArchiveStore,
    topic: &str,
    topic_id: Option<Uuid>,
) -> Result<TopicListing> {
    let before = store.counters.total_requests();
    let dir = store.layout.topic_dir(topic);
    let objects: Vec<ObjectMeta> = store.store.list(Some(&dir)).try_collect().await?;
    let mut by_id: BTreeMap<Uuid, Vec<(SegmentKey, ObjectMeta)>> = BTreeMap::new();
    for meta in objects {
        if let Some(key) = store.layout.parse_segment(&meta.location)
            && key.topic == topic
        {
            by_id.entry(key.topic_id).or_default().push((key, meta));
        }
    }
    let topic_id = match topic_id {
        Some(id) => id,
        None if by_id.len() == 1 => *by_id.keys().next().unwrap_or(&Uuid::nil()),
        None if by_id.is_empty() => {
            return Err(ArchiveError::Catalog(format!(
                "no archived objects of topic '{topic}' under {} (is the archive URL right, \
                 and was anything archived yet?)",
                store.url
            )));
        }
        None => {
            let ids: Vec<String> = by_id
                .iter()
                .map(|(id, objs)| format!("{} ({} objects)", id.simple(), objs.len()))
                .collect();
            return Err(ArchiveError::Catalog(format!(
                "the archive holds more than one topic named '{topic}' (it was deleted and \
                 created again): {}; choose one with --topic-id",
                ids.join(", ")
            )));
        }
    };
    let mut mine = by_id.remove(&topic_id).unwrap_or_default();
    if mine.is_empty() {
        return Err(ArchiveError::Catalog(format!(
            "no archived objects of topic '{topic}' with id {} under {}",
            topic_id.simple(),
            store.url
        )));
    }
    // Ascending by base offset, the widest object first among those starting together.
    mine.sort_by_key(|(k, _)| (k.partition, k.base_offset, std::cmp::Reverse(k.last_offset)));
    let objects = mine.len();
    let now = chrono::Utc::now().timestamp_millis();
    let entries: Vec<ArchivedSegment> = futures::stream::iter(mine)
        .map(|(_, meta)| async move { read_entry(store, &meta.location, meta.size, now).await })
        .buffered(FOOTERS_IN_FLIGHT)
        .try_collect()
        .await?;
    let catalog = Arc::new(MemoryCatalog::default());
    let mut duplicates = Vec::new();
    let mut last: BTreeMap<i32, (i64, String)> = BTreeMap::new();
    for entry in entries {
        if let Some((last_offset, last_key)) = last.get(&entry.partition) {
            if entry.last_offset <= *last_offset {
                duplicates.push(entry.key);
                continue;
            }
            if entry.base_offset <= *last_offset {
                return Err(ArchiveError::Catalog(format!(
                    "archive objects {last_key} and {} overlap without one holding the other; \
                     the archive needs repair (sediment archive verify)",
                    entry.key
                )));
            }
        }
        last.insert(entry.partition, (entry.last_offset, entry.key.clone()));
        catalog.commit(entry)?;
    }
    Ok(TopicListing {
        topic: topic.to_string(),
        topic_id,
        catalog,
        partitions: last.keys().copied().collect(),
        duplicates,
        objects,
        requests: store.counters.total_requests() - before,
    })
}
