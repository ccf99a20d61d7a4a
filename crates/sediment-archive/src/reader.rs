//! Reading the archive back as Kafka record batches, for consumers that fetch below the local
//! log start and for replay jobs.
//!
//! The manifest says which object and row group hold an offset, so a read never lists the
//! bucket. A row group is fetched with one ranged GET (its byte range is in the manifest) and
//! the file's footer with one more, both through the [`ChunkCache`]. The row group is decoded
//! and its record batches rebuilt (original offsets, timestamps, keys, values, headers,
//! producer fields and leader epoch; records uncompressed) into one buffer that a memory cache
//! of decoded row groups keeps, so consecutive fetches of one row group decode it once. After
//! each read the next row groups, across object boundaries, are fetched and decoded in the
//! background (prefetch).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use bytes::{Buf, Bytes, BytesMut};
use foyer::{Cache, CacheBuilder};
use futures::future::BoxFuture;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};
use sediment_log::{HEADER_SIZE, LOG_OVERHEAD};
use uuid::Uuid;

use crate::cache::ChunkCache;
use crate::catalog::Catalog;
use crate::error::{ArchiveError, Result};
use crate::manifest::ArchivedSegment;
use crate::schema::col;
use crate::store::ArchiveStore;

/// How the reader caches and prefetches.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Memory for decoded row groups (rebuilt batches), bytes.
    pub decoded_cache_bytes: usize,
    /// Row groups fetched and decoded ahead of a sequential reader.
    pub prefetch_row_groups: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            decoded_cache_bytes: 128 << 20,
            prefetch_row_groups: 2,
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
    /// Row groups decoded.
    pub row_groups_decoded: AtomicU64,
    /// Row group lookups served by the memory cache of decoded row groups (no fetch, no
    /// decode).
    pub decoded_hits: AtomicU64,
    /// Row groups fetched ahead of a reader.
    pub prefetches: AtomicU64,
}

/// One batch of a decoded row group.
#[derive(Debug, Clone, Copy)]
struct Span {
    last_offset: i64,
    start: usize,
    end: usize,
}

/// The batches of one row group, rebuilt, in one buffer.
#[derive(Debug)]
struct Decoded {
    data: Bytes,
    batches: Vec<Span>,
    /// (offset, timestamp) of every record, ascending by offset.
    times: Vec<(i64, i64)>,
}

impl Decoded {
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
    /// Row groups being prefetched, so a reader polling faster than a fetch completes does
    /// not start the same prefetch again.
    prefetching: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Row groups decoded at once: a decode holds the Parquet pages, the Arrow arrays and the
    /// rebuilt batches, so this bounds the read path's memory beyond its caches.
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
            for index in first_rg..seg.row_groups.len() {
                let decoded = self.row_group(&seg, index).await?;
                self.prefetch_after(&seg, index);
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
                        break 'segments; // the budget ran out inside this row group
                    }
                } else if first < decoded.batches.len() {
                    break 'segments;
                }
                if size >= max_bytes {
                    break 'segments;
                }
                at = at.max(seg.row_groups[index].last_offset + 1);
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
                for (index, rg) in seg.row_groups.iter().enumerate() {
                    if rg.max_timestamp < timestamp {
                        continue;
                    }
                    let decoded = self.row_group(&seg, index).await?;
                    if let Some(&hit) = decoded.times.iter().find(|(_, t)| *t >= timestamp) {
                        return Ok(Some(hit));
                    }
                }
            }
            at = seg.next_offset();
        }
        Ok(None)
    }

    /// Starts fetching and decoding the row groups after `(seg, index)` in the background.
    fn prefetch_after(self: &Arc<Self>, seg: &ArchivedSegment, index: usize) {
        let mut left = self.options.prefetch_row_groups;
        let mut seg = seg.clone();
        let mut next = index + 1;
        while left > 0 {
            if next >= seg.row_groups.len() {
                match self
                    .catalog
                    .segment_at(seg.topic_id, seg.partition, seg.next_offset())
                {
                    Some(s) => {
                        seg = s;
                        next = 0;
                        continue;
                    }
                    None => return,
                }
            }
            let key = row_group_key(&seg.key, next);
            if !self.decoded.contains(&key) && self.prefetching.lock().insert(key.clone()) {
                self.counters.prefetches.fetch_add(1, Ordering::Relaxed);
                let (me, s) = (Arc::clone(self), seg.clone());
                tokio::spawn(async move {
                    if let Err(e) = me.row_group(&s, next).await {
                        tracing::debug!(key = %s.key, row_group = next, error = %e, "archive prefetch failed");
                    }
                    me.prefetching.lock().remove(&key);
                });
            }
            next += 1;
            left -= 1;
        }
    }

    /// Row group `index` of `seg`, decoded (from the decoded cache, or fetched and decoded).
    async fn row_group(
        self: &Arc<Self>,
        seg: &ArchivedSegment,
        index: usize,
    ) -> Result<Arc<Decoded>> {
        let key = row_group_key(&seg.key, index);
        if let Some(e) = self.decoded.get(&key) {
            self.counters.decoded_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Arc::clone(e.value()));
        }
        let (me, seg) = (Arc::clone(self), seg.clone());
        memoize(
            &self.decoded,
            key,
            Box::pin(async move {
                let metadata = me.footer(&seg).await?;
                let rg = &seg.row_groups[index];
                let path = Path::from(seg.key.as_str());
                let store = Arc::clone(&me.store.store);
                let range = rg.byte_start..rg.byte_start + rg.byte_len;
                let (data, _) = me
                    .cache
                    .get_or_load(&row_group_key(&seg.key, index), &move || {
                        let (store, path, range) =
                            (Arc::clone(&store), path.clone(), range.clone());
                        Box::pin(async move { Ok(store.get_range(&path, range).await?) })
                    })
                    .await?;
                // The metadata's row group index: row groups without rows are not in the manifest.
                let rg_index = metadata
                    .metadata()
                    .row_groups()
                    .iter()
                    .position(|m| {
                        m.columns()
                            .iter()
                            .map(|c| {
                                c.dictionary_page_offset().unwrap_or(c.data_page_offset()) as u64
                            })
                            .min()
                            == Some(rg.byte_start)
                    })
                    .ok_or_else(|| {
                        mismatch(
                            &seg.key,
                            format!("no row group starts at byte {}", rg.byte_start),
                        )
                    })?;
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
                    decode_row_group(&key, reader, metadata, rg_index)
                })
                .await
                .map_err(|e| ArchiveError::Cache(format!("decode task failed: {e}")))??;
                me.counters
                    .row_groups_decoded
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Arc::new(decoded))
            }),
        )
        .await
    }

    /// The parsed footer of an archive object.
    async fn footer(self: &Arc<Self>, seg: &ArchivedSegment) -> Result<ArrowReaderMetadata> {
        let (me, seg) = (Arc::clone(self), seg.clone());
        memoize(
            &self.footers,
            seg.key.clone(),
            Box::pin(async move {
                let cache_key = format!("{}#footer", seg.key);
                let path = Path::from(seg.key.as_str());
                let size = seg.object_bytes;
                let store = Arc::clone(&me.store.store);
                let (tail, _) = me
                    .cache
                    .get_or_load(&cache_key, &move || {
                        let (store, path) = (Arc::clone(&store), path.clone());
                        Box::pin(async move { read_footer(store.as_ref(), &path, size).await })
                    })
                    .await?;
                let metadata = ParquetMetaDataReader::decode_metadata(&tail[..tail.len() - 8])?;
                Ok(ArrowReaderMetadata::try_new(
                    Arc::new(metadata),
                    ArrowReaderOptions::new(),
                )?)
            }),
        )
        .await
    }
}

fn row_group_key(object: &str, index: usize) -> String {
    format!("{object}#rg{index}")
}

/// The footer of an object of `size` bytes: its metadata followed by the 8-byte tail.
async fn read_footer(
    store: &dyn object_store::ObjectStore,
    path: &Path,
    size: u64,
) -> Result<Bytes> {
    let key = path.as_ref();
    if size < 8 {
        return Err(mismatch(
            key,
            format!("object of {size} bytes has no footer"),
        ));
    }
    let guess = FOOTER_GUESS.min(size);
    let tail = store.get_range(path, size - guess..size).await?;
    let mut last8 = [0u8; 8];
    last8.copy_from_slice(&tail[tail.len() - 8..]);
    let footer = FooterTail::try_new(&last8)?;
    let need = footer.metadata_length() as u64 + 8;
    if need > size {
        return Err(mismatch(
            key,
            format!("footer of {need} bytes in an object of {size}"),
        ));
    }
    if need <= guess {
        return Ok(tail.slice((guess - need) as usize..));
    }
    Ok(store.get_range(path, size - need..size).await?)
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

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
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

/// Decodes row group `rg_index` and rebuilds its record batches.
fn decode_row_group(
    key: &str,
    reader: RangeReader,
    metadata: ArrowReaderMetadata,
    rg_index: usize,
) -> Result<Decoded> {
    let rg = metadata.metadata().row_group(rg_index);
    let rows = rg.num_rows().max(1) as usize;
    // The batches take about the row group's uncompressed size; sizing the buffer once avoids
    // doubling it while it grows.
    let estimate = usize::try_from(rg.total_byte_size()).unwrap_or(0);
    let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(reader, metadata)
        .with_row_groups(vec![rg_index])
        .with_batch_size(rows.min(8 * 1024))
        .build()?;
    let mut out: Vec<u8> = Vec::with_capacity(estimate);
    let mut spans = Vec::new();
    let mut times = Vec::with_capacity(rows);
    let mut open: Option<Open> = None;
    let mut record = Vec::new();
    let mut cols = None;
    for batch in batches {
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
            let o = offset.value(r);
            let t = ts.value(r);
            times.push((o, t));
            if open
                .as_ref()
                .is_none_or(|b| b.base_offset != bbase.value(r))
            {
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
            record.clear();
            record.push(0); // record attributes
            put_varint(&mut record, t.wrapping_sub(b.base_timestamp));
            put_varint(&mut record, o - b.base_offset);
            put_bytes(&mut record, (!keys.is_null(r)).then(|| keys.value(r)));
            put_bytes(&mut record, (!values.is_null(r)).then(|| values.value(r)));
            let (h0, h1) = (header_offsets[r] as usize, header_offsets[r + 1] as usize);
            put_varint(&mut record, (h1 - h0) as i64);
            for h in h0..h1 {
                put_bytes(&mut record, Some(hk.value(h).as_bytes()));
                put_bytes(&mut record, (!hv.is_null(h)).then(|| hv.value(h)));
            }
            put_varint(&mut out, record.len() as i64);
            out.extend_from_slice(&record);
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
