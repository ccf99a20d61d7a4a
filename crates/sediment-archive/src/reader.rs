//! Reading the archive back as Kafka record batches, for consumers that fetch below the local
//! log start and for replay jobs.
//!
//! The manifest says which object and row group hold an offset, so a read never lists the
//! bucket. A row group is fetched with one ranged GET (its byte range is in the manifest) and
//! the file's footer (with its offset index) with one more, both through the [`ChunkCache`].
//! A row group is decoded a *chunk* at a time: the whole batches that start in a run of about
//! [`ReaderOptions::chunk_bytes`] of records, found through the offset index so a chunk
//! decompresses only its own pages. Its record batches are rebuilt (original offsets,
//! timestamps, keys, values, headers, producer fields and leader epoch; records uncompressed)
//! into one buffer that a memory cache of decoded chunks keeps, so consecutive fetches decode
//! it once. After each read the next chunks are decoded and the next row groups, across
//! object boundaries, fetched in the background (prefetch). What a read holds beyond the
//! caches is a few chunks, not row groups, so the read path's memory stays near the
//! configured cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use bytes::{Buf, Bytes, BytesMut};
use foyer::{Cache, CacheBuilder};
use futures::future::BoxFuture;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};
use sediment_log::{HEADER_SIZE, LOG_OVERHEAD};
use uuid::Uuid;

use crate::cache::ChunkCache;
use crate::catalog::Catalog;
use crate::error::{ArchiveError, Result};
use crate::manifest::{ArchivedSegment, RowGroupEntry};
use crate::schema::col;
use crate::store::ArchiveStore;

/// How the reader caches and prefetches.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Memory for decoded chunks (rebuilt batches), bytes.
    pub decoded_cache_bytes: usize,
    /// Row groups fetched ahead of a sequential reader (their chunks are decoded ahead only
    /// within this window).
    pub prefetch_row_groups: usize,
    /// Records decoded at once, bytes of keys, values and headers (a chunk of a row group).
    pub chunk_bytes: usize,
    /// Chunks decoded ahead of a sequential reader.
    pub decode_ahead_chunks: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            decoded_cache_bytes: 128 << 20,
            prefetch_row_groups: 2,
            chunk_bytes: 4 << 20,
            decode_ahead_chunks: 4,
        }
    }
}

/// Record batches read from the archive.
#[derive(Debug, Clone)]
pub struct ArchiveRead {
    /// Whole v2 record batches, ascending, the first one holding the offset asked for (or the
    /// next one after a gap).
    pub records: Bytes,
    /// Offset after the last batch returned.
    pub next_offset: i64,
}

/// Counters of the read path (the cache keeps its own).
#[derive(Debug, Default)]
pub struct ReadCounters {
    /// Reads served (fetches of an archived partition).
    pub reads: AtomicU64,
    /// Record batch bytes returned.
    pub bytes: AtomicU64,
    /// Reads that failed.
    pub errors: AtomicU64,
    /// Chunks decoded.
    pub chunks_decoded: AtomicU64,
    /// Chunk lookups served by the memory cache of decoded chunks (no fetch, no decode).
    pub decoded_hits: AtomicU64,
    /// Row groups fetched, or chunks decoded, ahead of a reader.
    pub prefetches: AtomicU64,
}

/// One batch of a decoded chunk.
#[derive(Debug, Clone, Copy)]
struct Span {
    last_offset: i64,
    start: usize,
    end: usize,
}

/// The batches of one chunk of a row group, rebuilt, in one buffer.
#[derive(Debug)]
struct Decoded {
    data: Bytes,
    batches: Vec<Span>,
    /// (offset, timestamp) of every record, ascending by offset.
    times: Vec<(i64, i64)>,
}

impl Decoded {
    /// Offset of the chunk's first record.
    fn first_offset(&self) -> Option<i64> {
        self.times.first().map(|&(o, _)| o)
    }

    fn weight(&self) -> usize {
        self.data.len() + self.batches.len() * 24 + self.times.len() * 16 + 64
    }
}

/// Reads the archive of one store through a cache.
pub struct ArchiveReader {
    store: ArchiveStore,
    catalog: Arc<dyn Catalog>,
    cache: Arc<dyn ChunkCache>,
    decoded: Cache<String, Arc<Decoded>>,
    footers: Cache<String, ArrowReaderMetadata>,
    options: ReaderOptions,
    counters: ReadCounters,
    /// Row groups and chunks being prefetched, so a reader polling faster than a fetch
    /// completes does not start the same prefetch again.
    prefetching: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Chunks decoded ahead and not read yet, with when read-ahead asked for them. Read-ahead
    /// stops while they would fill half the decoded cache, so it does not evict what it
    /// decoded before that is read (many partitions replayed at once, or a small cache).
    ahead: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
    /// Chunks decoded at once: a decode holds the Parquet pages, the Arrow arrays and the
    /// rebuilt batches of one chunk, so this bounds the read path's memory beyond its caches.
    decoding: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for ArchiveReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveReader")
            .field("url", &self.store.url)
            .field("cache", &self.cache)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A `ChunkReader` over one byte range of an object (the rest is never asked for).
#[derive(Clone)]
struct RangeReader {
    start: u64,
    data: Bytes,
    object_len: u64,
}

impl Length for RangeReader {
    fn len(&self) -> u64 {
        self.object_len
    }
}

impl RangeReader {
    fn slice(&self, start: u64, len: usize) -> parquet::errors::Result<Bytes> {
        let from = start.checked_sub(self.start).map(|v| v as usize);
        match from {
            Some(from) if from + len <= self.data.len() => Ok(self.data.slice(from..from + len)),
            _ => Err(parquet::errors::ParquetError::General(format!(
                "read of {len} bytes at {start} is outside the fetched range {}+{}",
                self.start,
                self.data.len()
            ))),
        }
    }
}

impl ChunkReader for RangeReader {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let end = self.start + self.data.len() as u64;
        let len = end.saturating_sub(start) as usize;
        Ok(self.slice(start, len)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length)
    }
}

/// How long a chunk decoded ahead counts against read-ahead if no reader reads it.
const AHEAD_TTL: Duration = Duration::from_secs(30);

/// Bytes of the object's tail read to find the footer in one GET (most footers fit).
const FOOTER_GUESS: u64 = 64 << 10;

fn mismatch(key: &str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Mismatch {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Runs `load` through a foyer memory cache, sharing concurrent loads of one key, and gives
/// back `load`'s own error.
async fn memoize<V>(
    cache: &Cache<String, V>,
    key: String,
    load: BoxFuture<'static, Result<V>>,
) -> Result<V>
where
    V: Clone + Send + Sync + 'static,
{
    if let Some(e) = cache.get(&key) {
        return Ok(e.value().clone());
    }
    let failed: Arc<parking_lot::Mutex<Option<ArchiveError>>> = Arc::default();
    let f = Arc::clone(&failed);
    let fut = async move {
        load.await.map_err(|e| {
            let message = e.to_string();
            *f.lock() = Some(e);
            std::io::Error::other(message)
        })
    };
    match cache.get_or_fetch(&key, move || fut).await {
        Ok(e) => Ok(e.value().clone()),
        Err(e) => Err(failed
            .lock()
            .take()
            .unwrap_or_else(|| ArchiveError::Cache(format!("shared load of {key} failed: {e}")))),
    }
}

impl ArchiveReader {
    /// A reader of `store`, finding objects through `catalog`, caching through `cache`.
    pub fn new(
        store: ArchiveStore,
        catalog: Arc<dyn Catalog>,
        cache: Arc<dyn ChunkCache>,
        options: ReaderOptions,
    ) -> Self {
        let decoded = CacheBuilder::new(options.decoded_cache_bytes.max(1))
            .with_weighter(|k: &String, v: &Arc<Decoded>| k.len() + v.weight())
            .build();
        let footers = CacheBuilder::new(4096).build();
        Self {
            store,
            catalog,
            cache,
            decoded,
            footers,
            options,
            counters: ReadCounters::default(),
            prefetching: parking_lot::Mutex::default(),
            ahead: parking_lot::Mutex::default(),
            decoding: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        }
    }

    /// The cache in front of the store.
    pub fn cache(&self) -> &Arc<dyn ChunkCache> {
        &self.cache
    }

    /// Read-path counters.
    pub fn counters(&self) -> &ReadCounters {
        &self.counters
    }

    /// The store read from.
    pub fn store(&self) -> &ArchiveStore {
        &self.store
    }

    /// Whole batches from `offset` (the batch holding it first), up to `max_bytes`; with
    /// `allow_oversized` the first batch goes out even when larger. `None` when the archive
    /// holds nothing at or after `offset`.
    pub async fn read(
        self: &Arc<Self>,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        allow_oversized: bool,
    ) -> Result<Option<ArchiveRead>> {
        let result = self
            .read_inner(topic_id, partition, offset, max_bytes, allow_oversized)
            .await;
        match &result {
            Ok(r) => {
                self.counters.reads.fetch_add(1, Ordering::Relaxed);
                let n = r.as_ref().map_or(0, |r| r.records.len());
                self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    async fn read_inner(
        self: &Arc<Self>,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        allow_oversized: bool,
    ) -> Result<Option<ArchiveRead>> {
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut size = 0usize;
        let mut at = offset;
        let mut found = false;
        'segments: while let Some(seg) = self.catalog.segment_at(topic_id, partition, at) {
            at = at.max(seg.base_offset);
            let first_rg = seg.row_groups.iter().position(|rg| rg.last_offset >= at);
            let Some(first_rg) = first_rg else {
                at = seg.next_offset();
                continue;
            };
            found = true;
            let mut layout = self.layout(&seg, first_rg).await?;
            let mut pos = ChunkPos {
                row_group: first_rg,
                chunk: layout.guess(&seg.row_groups[first_rg], at),
            };
            // The guess assumes offsets without gaps, so it is never before the chunk holding
            // `at`; until that chunk is found, step back.
            let mut located = false;
            loop {
                let decoded = self.chunk(&seg, pos).await?;
                {
                    let mut ahead = self.ahead.lock();
                    if !ahead.is_empty() {
                        ahead.remove(&chunk_key(&seg.key, pos));
                    }
                }
                if !located && pos.chunk > 0 && decoded.first_offset().is_none_or(|f| f > at) {
                    pos.chunk -= 1;
                    continue;
                }
                located = true;
                self.prefetch_after(&seg, pos);
                let first = decoded.batches.partition_point(|b| b.last_offset < at);
                let mut last = None;
                for (i, b) in decoded.batches.iter().enumerate().skip(first) {
                    let len = b.end - b.start;
                    if size + len > max_bytes && !(size == 0 && allow_oversized) {
                        break;
                    }
                    size += len;
                    at = b.last_offset + 1;
                    last = Some(i);
                }
                if let Some(last) = last {
                    let (start, end) = (decoded.batches[first].start, decoded.batches[last].end);
                    pieces.push(decoded.data.slice(start..end));
                    if last + 1 < decoded.batches.len() {
                        break 'segments; // the budget ran out inside this chunk
                    }
                } else if first < decoded.batches.len() {
                    break 'segments;
                }
                if size >= max_bytes {
                    break 'segments;
                }
                pos.chunk += 1;
                if pos.chunk >= layout.chunks() {
                    at = at.max(seg.row_groups[pos.row_group].last_offset + 1);
                    pos = ChunkPos {
                        row_group: pos.row_group + 1,
                        chunk: 0,
                    };
                    if pos.row_group >= seg.row_groups.len() {
                        break;
                    }
                    layout = self.layout(&seg, pos.row_group).await?;
                }
            }
            at = at.max(seg.next_offset());
        }
        if !found {
            return Ok(None);
        }
        let records = match pieces.len() {
            0 => Bytes::new(),
            1 => pieces.pop().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::with_capacity(size);
                for p in &pieces {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        };
        Ok(Some(ArchiveRead {
            records,
            next_offset: at,
        }))
    }

    /// The first record at or after `timestamp` in the archive: (offset, timestamp).
    pub async fn offset_for_timestamp(
        self: &Arc<Self>,
        topic_id: Uuid,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        let mut at = i64::MIN;
        while let Some(seg) = self.catalog.segment_at(topic_id, partition, at) {
            if seg.max_timestamp >= timestamp {
                for (row_group, rg) in seg.row_groups.iter().enumerate() {
                    if rg.max_timestamp < timestamp {
                        continue;
                    }
                    for chunk in 0..self.layout(&seg, row_group).await?.chunks() {
                        let pos = ChunkPos { row_group, chunk };
                        let decoded = self.chunk(&seg, pos).await?;
                        if let Some(&hit) = decoded.times.iter().find(|(_, t)| *t >= timestamp) {
                            return Ok(Some(hit));
                        }
                    }
                }
            }
            at = seg.next_offset();
        }
        Ok(None)
    }

    /// Rows per chunk of `seg`'s row groups: about [`ReaderOptions::chunk_bytes`] of records
    /// at the segment's average record size.
    fn chunk_rows(&self, seg: &ArchivedSegment) -> usize {
        let per_record = (seg.record_bytes / seg.rows.max(1)).max(1);
        let rows = (self.options.chunk_bytes as u64 / per_record).max(1);
        usize::try_from(rows).unwrap_or(usize::MAX)
    }

    /// After a read of `(seg, pos)`: decodes the next chunks and fetches the next row groups
    /// (across objects) in the background. Chunks are decoded ahead only within the current
    /// row group and the row groups fetched ahead.
    fn prefetch_after(self: &Arc<Self>, seg: &ArchivedSegment, pos: ChunkPos) {
        if self.options.decode_ahead_chunks == 0 && self.options.prefetch_row_groups == 0 {
            return;
        }
        let (me, seg) = (Arc::clone(self), seg.clone());
        tokio::spawn(async move {
            if let Err(e) = me.prefetch_walk(seg, pos).await {
                tracing::debug!(error = %e, "archive prefetch failed");
            }
        });
    }

    async fn prefetch_walk(
        self: &Arc<Self>,
        mut seg: ArchivedSegment,
        mut pos: ChunkPos,
    ) -> Result<()> {
        let mut chunks_left = self.options.decode_ahead_chunks;
        let mut groups_left = self.options.prefetch_row_groups;
        let mut layout = self.layout(&seg, pos.row_group).await?;
        loop {
            pos.chunk += 1;
            if pos.chunk >= layout.chunks() {
                if groups_left == 0 {
                    return Ok(());
                }
                groups_left -= 1;
                pos = ChunkPos {
                    row_group: pos.row_group + 1,
                    chunk: 0,
                };
                if pos.row_group >= seg.row_groups.len() {
                    // The next object with rows (one of control batches only has none).
                    loop {
                        let next =
                            self.catalog
                                .segment_at(seg.topic_id, seg.partition, seg.next_offset());
                        match next {
                            Some(next) => seg = next,
                            None => return Ok(()),
                        }
                        if !seg.row_groups.is_empty() {
                            break;
                        }
                    }
                    pos.row_group = 0;
                }
                if chunks_left == 0 || self.ahead_full() {
                    chunks_left = 0;
                    self.prefetch(row_group_key(&seg.key, pos.row_group), &seg, pos, false);
                    // Its chunks are not needed: go on to the next row group.
                    pos.chunk = usize::MAX - 1;
                    continue;
                }
                layout = self.layout(&seg, pos.row_group).await?;
            }
            if chunks_left > 0 && !self.ahead_full() {
                chunks_left -= 1;
                let key = chunk_key(&seg.key, pos);
                if !self.decoded.contains(&key) && self.mark_ahead(&key) {
                    self.prefetch(key, &seg, pos, true);
                }
            } else if groups_left == 0 {
                return Ok(());
            } else {
                // Nothing more to decode: go on to the next row group to fetch.
                chunks_left = 0;
                pos.chunk = usize::MAX - 1;
            }
        }
    }

    /// Records that read-ahead asked for chunk `key`; false if it already had (one lock for
    /// the check and the insert).
    fn mark_ahead(&self, key: &str) -> bool {
        match self.ahead.lock().entry(key.to_string()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Instant::now());
                true
            }
        }
    }

    /// Whether the chunks decoded ahead and not read yet fill half the decoded cache (those
    /// asked for longer than [`AHEAD_TTL`] ago no longer count: their reader went away).
    fn ahead_full(&self) -> bool {
        let limit = (self.options.decoded_cache_bytes / 2 / self.options.chunk_bytes.max(1)).max(1);
        let mut ahead = self.ahead.lock();
        if ahead.len() >= limit {
            let now = Instant::now();
            ahead.retain(|_, asked| now.duration_since(*asked) < AHEAD_TTL);
        }
        ahead.len() >= limit
    }

    /// Decodes chunk `pos` (with `decode`) or fetches its row group in the background, unless
    /// that is already under way.
    fn prefetch(self: &Arc<Self>, key: String, seg: &ArchivedSegment, pos: ChunkPos, decode: bool) {
        if !self.prefetching.lock().insert(key.clone()) {
            return;
        }
        self.counters.prefetches.fetch_add(1, Ordering::Relaxed);
        let (me, seg) = (Arc::clone(self), seg.clone());
        tokio::spawn(async move {
            let result = if decode {
                me.chunk(&seg, pos).await.map(drop)
            } else {
                futures::try_join!(me.footer(&seg), me.row_group_bytes(&seg, pos)).map(drop)
            };
            if let Err(e) = result {
                tracing::debug!(key = %seg.key, row_group = pos.row_group, chunk = pos.chunk, error = %e, "archive prefetch failed");
                if decode {
                    // Nothing was decoded ahead: it no longer holds read-ahead back.
                    me.ahead.lock().remove(&key);
                }
            }
            me.prefetching.lock().remove(&key);
        });
    }

    /// The bytes of row group `pos.row_group` of `seg`, through the cache.
    async fn row_group_bytes(&self, seg: &ArchivedSegment, pos: ChunkPos) -> Result<Bytes> {
        let rg = &seg.row_groups[pos.row_group];
        let path = Path::from(seg.key.as_str());
        let store = Arc::clone(&self.store.store);
        let range = rg.byte_start..rg.byte_start + rg.byte_len;
        let (data, _) = self
            .cache
            .get_or_load(&row_group_key(&seg.key, pos.row_group), &move || {
                let (store, path, range) = (Arc::clone(&store), path.clone(), range.clone());
                Box::pin(async move { Ok(store.get_range(&path, range).await?) })
            })
            .await?;
        Ok(data)
    }

    /// Chunk `pos` of `seg`, decoded: from the decoded cache, or decoded from its row group
    /// (fetched if need be).
    async fn chunk(self: &Arc<Self>, seg: &ArchivedSegment, pos: ChunkPos) -> Result<Arc<Decoded>> {
        let key = chunk_key(&seg.key, pos);
        if let Some(e) = self.decoded.get(&key) {
            self.counters.decoded_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Arc::clone(e.value()));
        }
        let (me, seg) = (Arc::clone(self), seg.clone());
        memoize(
            &self.decoded,
            key,
            Box::pin(async move {
                let (metadata, data) =
                    futures::try_join!(me.footer(&seg), me.row_group_bytes(&seg, pos))?;
                let rg = &seg.row_groups[pos.row_group];
                let rg_index = rg_index_of(&seg, &metadata, pos.row_group)?;
                let layout = Layout::new(metadata.metadata(), rg_index, me.chunk_rows(&seg));
                let (first_row, end_row) = layout.rows_of(pos.chunk);
                let reader = RangeReader {
                    start: rg.byte_start,
                    data,
                    object_len: seg.object_bytes,
                };
                let key = seg.key.clone();
                let _permit = me
                    .decoding
                    .acquire()
                    .await
                    .map_err(|_| ArchiveError::Cache("decoder closed".into()))?;
                let decoded = tokio::task::spawn_blocking(move || {
                    decode_chunk(&key, reader, metadata, rg_index, first_row, end_row)
                })
                .await
                .map_err(|e| ArchiveError::Cache(format!("decode task failed: {e}")))??;
                me.counters.chunks_decoded.fetch_add(1, Ordering::Relaxed);
                Ok(Arc::new(decoded))
            }),
        )
        .await
    }

    /// Where the chunks of row group `row_group` of `seg` start.
    async fn layout(&self, seg: &ArchivedSegment, row_group: usize) -> Result<Layout> {
        let metadata = self.footer(seg).await?;
        let rg_index = rg_index_of(seg, &metadata, row_group)?;
        Ok(Layout::new(
            metadata.metadata(),
            rg_index,
            self.chunk_rows(seg),
        ))
    }

    /// The parsed footer of an archive object, with its offset index (so a chunk's decode
    /// skips the pages before it).
    async fn footer(&self, seg: &ArchivedSegment) -> Result<ArrowReaderMetadata> {
        let store = Arc::clone(&self.store.store);
        let cache = Arc::clone(&self.cache);
        let seg = seg.clone();
        memoize(
            &self.footers,
            seg.key.clone(),
            Box::pin(async move {
                let cache_key = format!("{}#tail", seg.key);
                let path = Path::from(seg.key.as_str());
                let size = seg.object_bytes;
                let (tail, _) = cache
                    .get_or_load(&cache_key, &move || {
                        let (store, path) = (Arc::clone(&store), path.clone());
                        Box::pin(async move { read_tail(store.as_ref(), &path, size).await })
                    })
                    .await?;
                let metadata = parse_tail(&seg.key, &tail, size)?;
                Ok(ArrowReaderMetadata::try_new(
                    Arc::new(metadata),
                    ArrowReaderOptions::new(),
                )?)
            }),
        )
        .await
    }
}

/// A chunk of a row group: the batches that start in its rows `[chunk * rows, (chunk + 1) *
/// rows)`, where `rows` is [`ArchiveReader::chunk_rows`] of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkPos {
    row_group: usize,
    chunk: usize,
}

/// The index in the object's metadata of row group `row_group` of the manifest entry (row
/// groups without rows are not in the manifest).
fn rg_index_of(
    seg: &ArchivedSegment,
    metadata: &ArrowReaderMetadata,
    row_group: usize,
) -> Result<usize> {
    let rg = &seg.row_groups[row_group];
    metadata
        .metadata()
        .row_groups()
        .iter()
        .position(|m| {
            m.columns()
                .iter()
                .map(|c| c.dictionary_page_offset().unwrap_or(c.data_page_offset()) as u64)
                .min()
                == Some(rg.byte_start)
        })
        .ok_or_else(|| {
            mismatch(
                &seg.key,
                format!("no row group starts at byte {}", rg.byte_start),
            )
        })
}

/// Where the chunks of a row group start: at least `chunk_rows` rows apart, at the start of a
/// page of the `value` column (the bulk of the bytes), so a chunk's decode decompresses no
/// value page of its neighbours. A page much longer than a chunk is cut inside, every
/// `chunk_rows` rows; so is a row group without an offset index.
#[derive(Debug, Clone)]
struct Layout {
    starts: Vec<usize>,
    rows: usize,
}

impl Layout {
    fn new(metadata: &ParquetMetaData, rg_index: usize, chunk_rows: usize) -> Self {
        let rows = usize::try_from(metadata.row_group(rg_index).num_rows()).unwrap_or(0);
        let chunk_rows = chunk_rows.max(1);
        let value = metadata
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.path().parts() == [col::VALUE]);
        let mut pages: Vec<usize> = value
            .and_then(|v| {
                metadata
                    .page_index_for_row_group(rg_index)
                    .page_locations(v)
                    .cloned()
            })
            .map(|locations| {
                locations
                    .iter()
                    .filter_map(|p| usize::try_from(p.first_row_index).ok())
                    .collect()
            })
            .unwrap_or_default();
        pages.push(rows);
        let mut starts = vec![0];
        let mut page_start = 0;
        for page_end in pages {
            if page_end <= page_start {
                continue;
            }
            let mut cut = page_start;
            while page_end.saturating_sub(cut) >= 2 * chunk_rows {
                cut += chunk_rows;
                Self::push(&mut starts, cut, chunk_rows);
            }
            if page_end < rows {
                Self::push(&mut starts, page_end, chunk_rows);
            }
            page_start = page_end;
        }
        Self { starts, rows }
    }

    fn push(starts: &mut Vec<usize>, at: usize, chunk_rows: usize) {
        if starts.last().is_some_and(|&last| at >= last + chunk_rows) {
            starts.push(at);
        }
    }

    fn chunks(&self) -> usize {
        self.starts.len()
    }

    /// The rows `[first, end)` in which chunk `chunk`'s batches start.
    fn rows_of(&self, chunk: usize) -> (usize, usize) {
        let first = self.starts.get(chunk).copied().unwrap_or(self.rows);
        let end = self.starts.get(chunk + 1).copied().unwrap_or(self.rows);
        (first, end)
    }

    /// The chunk that would hold `offset` if the row group's offsets had no gaps; with gaps
    /// the offset is in this chunk or an earlier one.
    fn guess(&self, rg: &RowGroupEntry, offset: i64) -> usize {
        let row = usize::try_from(offset.saturating_sub(rg.first_offset)).unwrap_or(0);
        self.starts.partition_point(|&s| s <= row).saturating_sub(1)
    }
}

fn row_group_key(object: &str, index: usize) -> String {
    format!("{object}#rg{index}")
}

fn chunk_key(object: &str, pos: ChunkPos) -> String {
    format!("{object}#rg{}#c{}", pos.row_group, pos.chunk)
}

/// Reads a footer and the offset index.
fn tail_parser() -> ParquetMetaDataReader {
    ParquetMetaDataReader::new().with_offset_index_policy(PageIndexPolicy::Optional)
}

/// The end of an object of `size` bytes: its footer and offset index (one GET when they fit
/// in [`FOOTER_GUESS`], else two).
async fn read_tail(store: &dyn object_store::ObjectStore, path: &Path, size: u64) -> Result<Bytes> {
    read_tail_from(store, path, size, FOOTER_GUESS).await
}

/// [`read_tail`], reading `guess` bytes first.
pub(crate) async fn read_tail_from(
    store: &dyn object_store::ObjectStore,
    path: &Path,
    size: u64,
    guess: u64,
) -> Result<Bytes> {
    if size < 8 {
        return Err(mismatch(
            path.as_ref(),
            format!("object of {size} bytes has no footer"),
        ));
    }
    let mut want = guess.clamp(8, size);
    // A large footer is found to be large first, and the offset index before it only once the
    // footer is parsed: up to three reads, each asking for more of the tail.
    for _ in 0..3 {
        let tail = store.get_range(path, size - want..size).await?;
        match tail_parser().try_parse_sized(&tail, size) {
            Ok(()) => return Ok(tail),
            Err(ParquetError::NeedMoreData(need)) if need as u64 <= size && need as u64 > want => {
                want = need as u64;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(mismatch(
        path.as_ref(),
        format!("footer and offset index not found in the last {want} bytes"),
    ))
}

/// Parses what [`read_tail`] read.
pub(crate) fn parse_tail(key: &str, tail: &Bytes, size: u64) -> Result<ParquetMetaData> {
    let mut parser = tail_parser();
    parser.try_parse_sized(tail, size).map_err(|e| match e {
        ParquetError::NeedMoreData(need) => mismatch(
            key,
            format!(
                "footer needs the last {need} bytes, {} were read",
                tail.len()
            ),
        ),
        e => e.into(),
    })?;
    Ok(parser.finish()?)
}

/// Column positions in the archive schema, found by name.
struct Cols {
    offset: usize,
    timestamp: usize,
    key: usize,
    value: usize,
    headers: usize,
    producer_id: usize,
    producer_epoch: usize,
    sequence: usize,
    leader_epoch: usize,
    batch_base_offset: usize,
    batch_last_offset: usize,
    batch_attributes: usize,
}

impl Cols {
    fn find(key: &str, batch: &RecordBatch) -> Result<Self> {
        let schema = batch.schema();
        let i = |name: &str| {
            schema
                .index_of(name)
                .map_err(|_| mismatch(key, format!("no column {name}")))
        };
        Ok(Self {
            offset: i(col::OFFSET)?,
            timestamp: i(col::TIMESTAMP)?,
            key: i(col::KEY)?,
            value: i(col::VALUE)?,
            headers: i(col::HEADERS)?,
            producer_id: i(col::PRODUCER_ID)?,
            producer_epoch: i(col::PRODUCER_EPOCH)?,
            sequence: i(col::SEQUENCE)?,
            leader_epoch: i(col::LEADER_EPOCH)?,
            batch_base_offset: i(col::BATCH_BASE_OFFSET)?,
            batch_last_offset: i(col::BATCH_LAST_OFFSET)?,
            batch_attributes: i(col::BATCH_ATTRIBUTES)?,
        })
    }
}

/// Attribute bits a rebuilt batch keeps: the timestamp type and the transactional flag. The
/// codec bits are cleared (records are written uncompressed) and control batches are never
/// archived.
const KEPT_ATTRIBUTES: i16 = (1 << 3) | (1 << 4);
const LOG_APPEND_TIME: i16 = 1 << 3;

/// The batch being rebuilt.
struct Open {
    start: usize,
    base_offset: i64,
    last_offset: i64,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Kafka's signed varint mapping (zigzag): small magnitudes become small unsigned numbers.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Bytes `put_varint` writes for `v`.
fn varint_len(v: i64) -> usize {
    (64 - (zigzag(v) | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes `put_bytes` writes for `b`.
fn bytes_len(b: Option<&[u8]>) -> usize {
    b.map_or(varint_len(-1), |b| varint_len(b.len() as i64) + b.len())
}

/// The `batch_base_offset` of row `row` of row group `rg_index`, read alone (one small
/// column's page).
fn batch_base_of_row(
    key: &str,
    reader: &RangeReader,
    metadata: &ArrowReaderMetadata,
    rg_index: usize,
    row: usize,
) -> Result<i64> {
    let mask = ProjectionMask::columns(
        metadata.metadata().file_metadata().schema_descr(),
        [col::BATCH_BASE_OFFSET],
    );
    let mut batches =
        ParquetRecordBatchReaderBuilder::new_with_metadata(reader.clone(), metadata.clone())
            .with_row_groups(vec![rg_index])
            .with_projection(mask)
            .with_row_selection(RowSelection::from(vec![
                RowSelector::skip(row),
                RowSelector::select(1),
            ]))
            .with_batch_size(1)
            .build()?;
    let batch = batches
        .next()
        .transpose()?
        .ok_or_else(|| mismatch(key, format!("row group {rg_index} has no row {row}")))?;
    let column = batch
        .column_by_name(col::BATCH_BASE_OFFSET)
        .ok_or_else(|| mismatch(key, "no batch_base_offset column"))?;
    let column = column
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| mismatch(key, "batch_base_offset is not an int64 column"))?;
    if column.is_empty() || column.is_null(0) {
        return Err(mismatch(
            key,
            format!("row {row} of row group {rg_index} has no batch_base_offset"),
        ));
    }
    Ok(column.value(0))
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

fn close_batch(out: &mut [u8], open: &Open) {
    let b = &mut out[open.start..];
    let length = (b.len() - LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&length.to_be_bytes());
    b[23..27].copy_from_slice(&((open.last_offset - open.base_offset) as i32).to_be_bytes());
    b[27..35].copy_from_slice(&open.base_timestamp.to_be_bytes());
    b[35..43].copy_from_slice(&open.max_timestamp.to_be_bytes());
    b[57..61].copy_from_slice(&open.count.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Arrow rows decoded at once within a chunk.
const ARROW_BATCH_ROWS: usize = 4096;

/// Decodes the chunk of row group `rg_index` whose batches start in rows `[first_row,
/// end_row)` and rebuilds those batches (whole: the last one may run past the chunk).
/// The offset index lets the reader skip the pages before the chunk without decompressing them.
fn decode_chunk(
    key: &str,
    reader: RangeReader,
    metadata: ArrowReaderMetadata,
    rg_index: usize,
    first_row: usize,
    end_row: usize,
) -> Result<Decoded> {
    let rg = metadata.metadata().row_group(rg_index);
    let rg_rows = usize::try_from(rg.num_rows()).unwrap_or(0);
    let end_row = end_row.min(rg_rows);
    let from = first_row.min(rg_rows);
    // The row before the chunk tells which batch runs into it from the previous chunk: its
    // rows are that chunk's. Only its batch column is read, so the `value` page before the
    // chunk is not decompressed.
    let mut carried = match from.checked_sub(1) {
        Some(prev) => Some(batch_base_of_row(key, &reader, &metadata, rg_index, prev)?),
        None => None,
    };
    // The batches take about the chunk's share of the row group's uncompressed size; sizing
    // the buffer once avoids doubling it while it grows.
    let share = end_row.saturating_sub(first_row) as u128;
    let total = u128::try_from(rg.total_byte_size()).unwrap_or(0);
    let estimate = usize::try_from(total * share / rg_rows.max(1) as u128).unwrap_or(0);
    let selection = RowSelection::from(vec![
        RowSelector::skip(from),
        RowSelector::select(rg_rows - from),
    ]);
    let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(reader, metadata)
        .with_row_groups(vec![rg_index])
        .with_row_selection(selection)
        .with_batch_size(ARROW_BATCH_ROWS.min(end_row.saturating_sub(first_row) + 1))
        .build()?;
    let mut out: Vec<u8> = Vec::with_capacity(estimate);
    let mut spans = Vec::new();
    let mut times = Vec::with_capacity(end_row.saturating_sub(first_row));
    let mut open: Option<Open> = None;
    let mut cols = None;
    let mut row = from;
    'batches: for batch in batches {
        let batch = batch?;
        let c = match &cols {
            Some(c) => c,
            None => cols.insert(Cols::find(key, &batch)?),
        };
        let offset = batch.column(c.offset).as_primitive::<Int64Type>();
        let ts = batch
            .column(c.timestamp)
            .as_primitive::<TimestampMillisecondType>();
        let keys = batch.column(c.key).as_binary::<i32>();
        let values = batch.column(c.value).as_binary::<i32>();
        let headers = batch.column(c.headers).as_list::<i32>();
        let header_structs = headers.values().as_struct();
        let hk = header_structs.column(0).as_string::<i32>();
        let hv = header_structs.column(1).as_binary::<i32>();
        let header_offsets = headers.value_offsets();
        let pid = batch.column(c.producer_id).as_primitive::<Int64Type>();
        let pepoch = batch.column(c.producer_epoch).as_primitive::<Int16Type>();
        let seq = batch.column(c.sequence).as_primitive::<Int32Type>();
        let leader = batch.column(c.leader_epoch).as_primitive::<Int32Type>();
        let bbase = batch
            .column(c.batch_base_offset)
            .as_primitive::<Int64Type>();
        let blast = batch
            .column(c.batch_last_offset)
            .as_primitive::<Int64Type>();
        let battr = batch.column(c.batch_attributes).as_primitive::<Int16Type>();
        for r in 0..batch.num_rows() {
            let this_row = row;
            row += 1;
            let base = bbase.value(r);
            if let Some(c) = carried {
                if c == base {
                    continue; // the previous chunk's batch
                }
                carried = None;
            }
            let starts_batch = open.as_ref().is_none_or(|b| b.base_offset != base);
            if this_row >= end_row && starts_batch {
                break 'batches; // the next chunk's batch
            }
            let o = offset.value(r);
            let t = ts.value(r);
            times.push((o, t));
            if starts_batch {
                if let Some(b) = open.take() {
                    close_batch(&mut out, &b);
                    spans.push(Span {
                        last_offset: b.last_offset,
                        start: b.start,
                        end: out.len(),
                    });
                }
                let start = out.len();
                let attributes = battr.value(r) & KEPT_ATTRIBUTES;
                let seq0 = seq.value(r);
                let base_sequence = if seq0 < 0 {
                    -1
                } else {
                    seq0.wrapping_sub((o - bbase.value(r)) as i32)
                };
                out.extend_from_slice(&bbase.value(r).to_be_bytes());
                out.extend_from_slice(&[0; 4]); // length
                out.extend_from_slice(&leader.value(r).to_be_bytes());
                out.push(2); // magic
                out.extend_from_slice(&[0; 4]); // crc
                out.extend_from_slice(&attributes.to_be_bytes());
                out.extend_from_slice(&[0; 4 + 8 + 8]); // last offset delta, timestamps
                out.extend_from_slice(&pid.value(r).to_be_bytes());
                out.extend_from_slice(&pepoch.value(r).to_be_bytes());
                out.extend_from_slice(&base_sequence.to_be_bytes());
                out.extend_from_slice(&[0; 4]); // count
                debug_assert_eq!(out.len() - start, HEADER_SIZE);
                let log_append = attributes & LOG_APPEND_TIME != 0;
                open = Some(Open {
                    start,
                    base_offset: bbase.value(r),
                    last_offset: blast.value(r),
                    base_timestamp: t,
                    max_timestamp: if log_append { t } else { i64::MIN },
                    count: 0,
                });
            }
            let b = open.as_mut().expect("opened above");
            b.count += 1;
            b.max_timestamp = b.max_timestamp.max(t);
            // The record is written straight into the batch: its length comes first, so it
            // is added up before the fields are copied.
            let (ts_delta, offset_delta) = (t.wrapping_sub(b.base_timestamp), o - b.base_offset);
            let key = (!keys.is_null(r)).then(|| keys.value(r));
            let value = (!values.is_null(r)).then(|| values.value(r));
            let (h0, h1) = (header_offsets[r] as usize, header_offsets[r + 1] as usize);
            let header = |h: usize| {
                (
                    hk.value(h).as_bytes(),
                    (!hv.is_null(h)).then(|| hv.value(h)),
                )
            };
            let mut len = 1
                + varint_len(ts_delta)
                + varint_len(offset_delta)
                + bytes_len(key)
                + bytes_len(value)
                + varint_len((h1 - h0) as i64);
            for h in h0..h1 {
                let (k, v) = header(h);
                len += bytes_len(Some(k)) + bytes_len(v);
            }
            put_varint(&mut out, len as i64);
            let record_start = out.len();
            out.push(0); // record attributes
            put_varint(&mut out, ts_delta);
            put_varint(&mut out, offset_delta);
            put_bytes(&mut out, key);
            put_bytes(&mut out, value);
            put_varint(&mut out, (h1 - h0) as i64);
            for h in h0..h1 {
                let (k, v) = header(h);
                put_bytes(&mut out, Some(k));
                put_bytes(&mut out, v);
            }
            debug_assert_eq!(out.len() - record_start, len);
        }
    }
    if let Some(b) = open.take() {
        close_batch(&mut out, &b);
        spans.push(Span {
            last_offset: b.last_offset,
            start: b.start,
            end: out.len(),
        });
    }
    // The decoded cache weighs the length: give back what the estimate over-reserved.
    if out.capacity() > out.len() + out.len() / 8 {
        out.shrink_to_fit();
    }
    Ok(Decoded {
        data: Bytes::from(out),
        batches: spans,
        times,
    })
}
