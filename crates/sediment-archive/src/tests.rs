//! Unit tests across modules: a real segment log -> Parquet -> a store, read back.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, TimestampMillisecondType};
use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sediment_log::{LogConfig, ManualClock, PartitionLog};
use uuid::Uuid;

use crate::records::tests::{TestRecord, encode_batch};
use crate::*;

const T0: i64 = 1_700_000_000_000;

/// A partition log with sealed segments holding `batches` batches of `per_batch` records:
/// keys, values, duplicate headers, null keys, and a producer id.
fn log_with(
    dir: &std::path::Path,
    batches: usize,
    per_batch: usize,
) -> (PartitionLog, Vec<(i64, TestRecord)>) {
    let clock = ManualClock::new(T0);
    let config = LogConfig {
        segment_bytes: 16 << 10,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir, config, Arc::new(clock)).unwrap();
    let mut all = Vec::new();
    let mut seq = 0;
    for b in 0..batches {
        let records: Vec<TestRecord> = (0..per_batch)
            .map(|i| TestRecord {
                timestamp_delta: i as i64,
                key: (i % 5 != 0)
                    .then(|| format!("user-{}", (b * per_batch + i) % 17).into_bytes()),
                value: Some(
                    format!(
                        r#"{{"event":"click","n":{},"pad":"{}"}}"#,
                        b * per_batch + i,
                        "x".repeat(i % 40)
                    )
                    .into_bytes(),
                ),
                headers: vec![
                    ("trace".into(), Some(format!("t{b}").into_bytes())),
                    ("trace".into(), Some(b"again".to_vec())),
                    ("nil".into(), None),
                ],
            })
            .collect();
        let bytes = encode_batch(
            0,
            T0 + b as i64 * 1000,
            &records,
            b % 2 == 0,
            None,
            (42, 1, seq),
        );
        seq += per_batch as i32;
        let info = log.append(&bytes, 3, false).unwrap();
        for (i, r) in records.into_iter().enumerate() {
            all.push((info.base_offset + i as i64, r));
        }
    }
    log.roll().unwrap();
    (log, all)
}

fn source(log: &PartitionLog, topic_id: Uuid, i: usize) -> SegmentSource {
    let s = log.sealed_segments()[i];
    SegmentSource {
        topic: "orders".into(),
        topic_id,
        partition: 2,
        base_offset: s.base_offset,
        next_offset: s.next_offset,
        size_bytes: s.size_bytes,
        slice: log.sealed_segment(s.base_offset).unwrap(),
    }
}

fn archive_on(store: Arc<dyn ObjectStore>, staging: &std::path::Path) -> Archive {
    let settings = ArchiveSettings {
        row_group_bytes: 2 << 10,
        ..ArchiveSettings::default()
    };
    Archive::new(
        ArchiveStore::from_store(store, Path::from("pre/fix"), "memory://"),
        &settings,
        staging.to_path_buf(),
        1 << 20,
    )
    .unwrap()
}

#[tokio::test]
async fn a_segment_round_trips_through_parquet_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let (log, produced) = log_with(&dir.path().join("log"), 40, 20);
    let topic_id = Uuid::new_v4();
    let archive = archive_on(Arc::new(InMemory::new()), &dir.path().join("staging"));
    let src = source(&log, topic_id, 0);
    let staged = archive.stage(&src, T0).unwrap();
    assert!(
        staged.entry.row_groups.len() > 1,
        "small row groups: {:?}",
        staged.entry.row_groups
    );
    // Row groups hold whole batches: each starts at a batch boundary (multiple of 20).
    for rg in &staged.entry.row_groups {
        assert_eq!(rg.first_offset % 20, 0, "{rg:?}");
        assert_eq!(rg.last_offset % 20, 19, "{rg:?}");
    }
    assert_eq!(staged.entry.base_offset, src.base_offset);
    assert_eq!(staged.entry.last_offset, src.next_offset - 1);
    assert_eq!(staged.entry.leader_epochs, vec![(3, src.base_offset)]);

    let file = File::open(&staged.path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = 0usize;
    for batch in reader {
        let batch = batch.unwrap();
        let part = batch.column(0).as_primitive::<Int32Type>();
        let offset = batch.column(1).as_primitive::<Int64Type>();
        let ts = batch.column(2).as_primitive::<TimestampMillisecondType>();
        let ts_type = batch.column(3).as_string::<i32>();
        let key = batch.column(4).as_binary::<i32>();
        let value = batch.column(5).as_binary::<i32>();
        let headers = batch.column(6).as_list::<i32>();
        let pid = batch.column(7).as_primitive::<Int64Type>();
        let epoch = batch.column(8).as_primitive::<Int16Type>();
        let seq = batch.column(9).as_primitive::<Int32Type>();
        let leader = batch.column(10).as_primitive::<Int32Type>();
        let bbase = batch.column(11).as_primitive::<Int64Type>();
        for r in 0..batch.num_rows() {
            let (o, want) = &produced[rows];
            assert_eq!(offset.value(r), *o);
            assert_eq!(part.value(r), 2);
            let b = *o / 20;
            assert_eq!(ts.value(r), T0 + b * 1000 + want.timestamp_delta);
            assert_eq!(ts_type.value(r), "CreateTime");
            assert_eq!(key.is_null(r), want.key.is_none());
            if let Some(k) = &want.key {
                assert_eq!(key.value(r), &k[..]);
            }
            assert_eq!(value.value(r), &want.value.as_ref().unwrap()[..]);
            let h = headers.value(r);
            let h = h.as_struct();
            let hk = h.column(0).as_string::<i32>();
            let hv = h.column(1).as_binary::<i32>();
            let got: Vec<(String, Option<Vec<u8>>)> = (0..h.len())
                .map(|i| {
                    (
                        hk.value(i).to_string(),
                        (!hv.is_null(i)).then(|| hv.value(i).to_vec()),
                    )
                })
                .collect();
            assert_eq!(got, want.headers);
            assert_eq!((pid.value(r), epoch.value(r)), (42, 1));
            assert_eq!(seq.value(r) as i64, *o, "sequence follows the offset here");
            assert_eq!(leader.value(r), 3);
            assert_eq!(bbase.value(r), b * 20);
            rows += 1;
        }
    }
    assert_eq!(rows as u64, staged.entry.rows);
    assert_eq!(rows as i64, src.next_offset - src.base_offset);
}

#[tokio::test]
async fn uploads_are_create_only_and_a_retry_recognises_its_object() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(&dir.path().join("log"), 40, 20);
    let topic_id = Uuid::new_v4();
    let store = Arc::new(InMemory::new());
    let archive = archive_on(store.clone(), &dir.path().join("staging"));
    let staged = archive.stage(&source(&log, topic_id, 0), T0).unwrap();
    let (entry, outcome) = archive.upload(&staged, T0).await.unwrap();
    assert_eq!(outcome, UploadOutcome::Created);
    assert_eq!(entry.key, staged.key.to_string());
    // The same segment again (a crash before the commit): the object is recognised.
    let again = archive.stage(&source(&log, topic_id, 0), T0 + 5).unwrap();
    let (adopted, outcome) = archive.upload(&again, T0 + 5).await.unwrap();
    assert_eq!(outcome, UploadOutcome::AlreadyThere);
    assert_eq!(adopted.row_groups, entry.row_groups);
    assert_eq!(adopted.rows, entry.rows);
    // Another segment's bytes under that key are a mismatch, never an overwrite.
    let mut other = archive.stage(&source(&log, topic_id, 1), T0).unwrap();
    other.key = staged.key.clone();
    let err = archive.upload(&other, T0).await.unwrap_err();
    assert!(matches!(err, ArchiveError::Mismatch { .. }), "{err}");
    let listed: Vec<_> = futures::StreamExt::collect::<Vec<_>>(store.list(None)).await;
    assert_eq!(listed.len(), 1, "one object");
    // The staging files are gone once dropped.
    let staging = dir.path().join("staging");
    drop((staged, again, other));
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0);
}

/// Writes go through, then the caller is told they timed out (an ambiguous failure).
#[derive(Debug)]
struct LostAnswers {
    inner: InMemory,
    lose: AtomicUsize,
}

impl std::fmt::Display for LostAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LostAnswers")
    }
}

#[async_trait]
impl ObjectStore for LostAnswers {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        if self.lose.load(Ordering::SeqCst) > 0 {
            self.lose.fetch_sub(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "test",
                source: "operation timed out".into(),
            });
        }
        Ok(r)
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_gives_one_referenced_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(&dir.path().join("log"), 30, 20);
    let store = Arc::new(LostAnswers {
        inner: InMemory::new(),
        lose: AtomicUsize::new(1),
    });
    let archive = archive_on(store.clone(), &dir.path().join("staging"));
    let catalog = MemoryCatalog::default();
    let topic_id = Uuid::new_v4();
    let staged = archive.stage(&source(&log, topic_id, 0), T0).unwrap();
    let first = archive.upload(&staged, T0).await;
    assert!(first.is_err(), "the answer was lost");
    assert!(first.unwrap_err().is_retryable());
    let (entry, outcome) = archive.upload(&staged, T0).await.unwrap();
    assert_eq!(outcome, UploadOutcome::AlreadyThere);
    assert_eq!(catalog.commit(entry.clone()).unwrap(), CommitOutcome::Added);
    // Even a commit retried after a lost answer adds nothing.
    assert_eq!(
        catalog.commit(entry).unwrap(),
        CommitOutcome::AlreadyPresent
    );
    assert_eq!(catalog.segments(topic_id, 2).len(), 1);
    let objects: Vec<_> = futures::StreamExt::collect::<Vec<_>>(store.list(None)).await;
    assert_eq!(objects.len(), 1);
}

#[tokio::test]
async fn large_objects_go_up_in_parts_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(&dir.path().join("log"), 200, 50);
    let counters_store = Arc::new(InMemory::new());
    let settings = ArchiveSettings {
        part_size_bytes: MIN_PART_SIZE,
        row_group_bytes: 64 << 10,
        zstd_level: 1,
        ..ArchiveSettings::default()
    };
    let archive = Archive::new(
        ArchiveStore::from_store(counters_store, Path::default(), "memory://"),
        &settings,
        dir.path().join("staging"),
        1 << 20,
    )
    .unwrap();
    // A segment that encodes to more than one part: random-ish values do not compress.
    let big = dir.path().join("big");
    let clock = ManualClock::new(T0);
    let mut blog = PartitionLog::open(
        &big,
        LogConfig {
            segment_bytes: 64 << 20,
            ..LogConfig::default()
        },
        Arc::new(clock),
    )
    .unwrap();
    let mut x: u64 = 1;
    for _ in 0..12 {
        let records: Vec<TestRecord> = (0..100)
            .map(|_| TestRecord {
                timestamp_delta: 0,
                key: None,
                value: Some(
                    (0..5000)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x as u8
                        })
                        .collect(),
                ),
                headers: vec![],
            })
            .collect();
        blog.append(
            &encode_batch(0, T0, &records, false, None, (-1, -1, -1)),
            0,
            false,
        )
        .unwrap();
    }
    blog.roll().unwrap();
    let src = source(&blog, Uuid::new_v4(), 0);
    let staged = archive.stage(&src, T0).unwrap();
    assert!(
        staged.entry.object_bytes > MIN_PART_SIZE,
        "{}",
        staged.entry.object_bytes
    );
    let (entry, _) = archive.upload(&staged, T0).await.unwrap();
    let c = &archive.store().counters;
    assert_eq!(c.requests(Op::CreateMultipart), 1);
    assert!(c.requests(Op::PutPart) >= 2);
    assert_eq!(c.requests(Op::CompleteMultipart), 1);
    assert_eq!(c.requests(Op::Put), 0);
    let report = archive.verify(&[entry]).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    drop(log);
}

#[tokio::test]
async fn verify_finds_missing_and_different_objects() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(&dir.path().join("log"), 40, 20);
    let store = Arc::new(InMemory::new());
    let archive = archive_on(store.clone(), &dir.path().join("staging"));
    let topic_id = Uuid::new_v4();
    let mut entries = Vec::new();
    for i in 0..2 {
        let staged = archive.stage(&source(&log, topic_id, i), T0).unwrap();
        entries.push(archive.upload(&staged, T0).await.unwrap().0);
    }
    let ok = archive.verify(&entries).await;
    assert_eq!((ok.checked, ok.problems.len()), (2, 0));
    assert_eq!(ok.rows, entries.iter().map(|e| e.rows).sum::<u64>());
    store
        .delete(&Path::from(entries[0].key.as_str()))
        .await
        .unwrap();
    let mut lying = entries[1].clone();
    lying.rows += 1;
    let bad = archive.verify(&[entries[0].clone(), lying]).await;
    let problems: Vec<&str> = bad.problems.iter().map(|p| p.problem.as_str()).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("missing"));
    assert!(problems[1].contains("rows"));
}

#[tokio::test]
async fn orphans_are_found_only_when_nothing_can_still_adopt_them() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(&dir.path().join("log"), 60, 20);
    let store = Arc::new(InMemory::new());
    let archive = archive_on(store.clone(), &dir.path().join("staging"));
    let topic_id = Uuid::new_v4();
    let mut keys = Vec::new();
    for i in 0..3 {
        let staged = archive.stage(&source(&log, topic_id, i), T0).unwrap();
        keys.push(archive.upload(&staged, T0).await.unwrap().0);
    }
    // Not ours: never touched.
    store
        .put(
            &Path::from("pre/fix/topic=orders/partition=2/notes.txt"),
            PutPayload::from_static(b"x"),
        )
        .await
        .unwrap();
    let referenced: HashSet<String> = [keys[1].key.clone()].into();
    let live_topics: HashSet<Uuid> = [topic_id].into();
    // keys[0] is below the archive end (superseded); keys[2] is past it with its local
    // segment still there: the archiver may adopt it, so it stays.
    let live: HashMap<(Uuid, i32), LivePartition> = [(
        (topic_id, 2),
        LivePartition {
            archive_end: keys[1].next_offset(),
            local_start: 0,
        },
    )]
    .into();
    let none = archive
        .find_orphans(&referenced, &live, &live_topics, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(none.is_empty(), "within the grace period");
    let found = archive
        .find_orphans(&referenced, &live, &live_topics, Duration::ZERO)
        .await
        .unwrap();
    let found: Vec<&str> = found.iter().map(|o| o.key.as_ref()).collect();
    assert_eq!(found, vec![keys[0].key.as_str()]);
    // Once the topic is gone, every unreferenced object of it goes.
    let gone = archive
        .find_orphans(&referenced, &live, &HashSet::new(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(gone.len(), 2);
    assert_eq!(
        archive
            .delete(gone.into_iter().map(|o| o.key).collect())
            .await
            .unwrap(),
        2
    );
    let left: Vec<_> = futures::StreamExt::collect::<Vec<_>>(store.list(None)).await;
    assert_eq!(left.len(), 2, "the referenced object and notes.txt");
}

#[tokio::test]
async fn a_prefix_belongs_to_one_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_on(Arc::new(InMemory::new()), &dir.path().join("staging"));
    archive.claim("cluster-a").await.unwrap();
    archive.claim("cluster-a").await.unwrap();
    let err = archive.claim("cluster-b").await.unwrap_err().to_string();
    assert!(err.contains("belongs to cluster cluster-a"), "{err}");
}

#[tokio::test]
async fn the_rate_limiter_spaces_out_uploads() {
    let limiter = RateLimiter::new(1_000_000);
    let start = tokio::time::Instant::now();
    // One second of burst, then 0.5 s of debt.
    limiter.acquire(1_000_000).await;
    limiter.acquire(500_000).await;
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
}

#[test]
fn collectable_rules() {
    let key = SegmentKey {
        topic: "t".into(),
        partition: 0,
        base_offset: 100,
        last_offset: 199,
        topic_id: Uuid::nil(),
    };
    let grace = Duration::from_secs(60);
    let old = Duration::from_secs(61);
    let live = |archive_end, local_start| LivePartition {
        archive_end,
        local_start,
    };
    assert!(!is_collectable(&key, Duration::from_secs(59), grace, None));
    assert!(is_collectable(&key, old, grace, None), "topic gone");
    assert!(
        is_collectable(&key, old, grace, Some(&live(300, 0))),
        "superseded"
    );
    assert!(
        !is_collectable(&key, old, grace, Some(&live(100, 0))),
        "may be adopted"
    );
    assert!(
        is_collectable(&key, old, grace, Some(&live(100, 150))),
        "local copy gone"
    );
}

/// Archives every sealed segment of `log` and commits it.
async fn archive_all(
    archive: &Archive,
    log: &PartitionLog,
    topic_id: Uuid,
    catalog: &MemoryCatalog,
) -> usize {
    let n = log.sealed_segments().len();
    for i in 0..n {
        let staged = archive.stage(&source(log, topic_id, i), T0).unwrap();
        let (entry, _) = archive.upload(&staged, T0).await.unwrap();
        catalog.commit(entry).unwrap();
    }
    n
}

/// A log of `batches` batches of `per_batch` records under `dir`, archived into an in-memory
/// store: the archive, its catalog and the topic id.
async fn archived_log(
    dir: &std::path::Path,
    batches: usize,
    per_batch: usize,
) -> (Archive, Arc<MemoryCatalog>, Uuid) {
    let (log, _) = log_with(&dir.join("log"), batches, per_batch);
    let topic_id = Uuid::new_v4();
    let archive = archive_on(Arc::new(InMemory::new()), &dir.join("staging"));
    let catalog = Arc::new(MemoryCatalog::default());
    archive_all(&archive, &log, topic_id, &catalog).await;
    (archive, catalog, topic_id)
}

#[tokio::test]
async fn archived_segments_read_back_as_the_batches_produced() {
    let dir = tempfile::tempdir().unwrap();
    let (log, produced) = log_with(&dir.path().join("log"), 40, 20);
    let topic_id = Uuid::new_v4();
    let archive = archive_on(Arc::new(InMemory::new()), &dir.path().join("staging"));
    let catalog = Arc::new(MemoryCatalog::default());
    let segments = archive_all(&archive, &log, topic_id, &catalog).await;
    assert!(segments >= 3, "several objects: {segments}");
    let cache = FoyerCache::open(
        &dir.path().join("cache"),
        &CacheSizes {
            memory_bytes: 1 << 20,
            disk_bytes: 16 << 20,
            disk_block_bytes: 1 << 20,
        },
    )
    .await
    .unwrap();
    let reader = Arc::new(ArchiveReader::new(
        archive.store().clone(),
        catalog.clone(),
        Arc::new(cache),
        ReaderOptions::default(),
    ));
    let last = catalog.range(topic_id, 2).unwrap().1;

    // Read everything with a small budget, as a consumer would, and check every field.
    let mut at = 0;
    let mut seen = 0usize;
    let mut scratch = Vec::new();
    while at < last {
        let read = reader
            .read(topic_id, 2, at, 3000, true)
            .await
            .unwrap()
            .unwrap();
        assert!(read.next_offset > at, "progress from {at}");
        let mut buf = &read.records[..];
        assert!(!buf.is_empty());
        while !buf.is_empty() {
            let header = sediment_log::BatchHeader::parse(buf).unwrap();
            let len = header.total_size();
            let batch = DecodedBatch::decode(&buf[..len], 1 << 20, &mut scratch).unwrap();
            assert_eq!(batch.codec(), Codec::None);
            assert_eq!(header.partition_leader_epoch(), 3);
            assert_eq!(header.producer_id(), 42);
            assert_eq!(header.producer_epoch(), 1);
            assert_eq!(header.base_sequence() as i64, header.base_offset());
            for r in batch.records().unwrap() {
                let offset = header.base_offset() + r.offset_delta as i64;
                if offset < at {
                    continue;
                }
                let (o, want) = &produced[offset as usize];
                assert_eq!(*o, offset);
                assert_eq!(
                    batch.timestamp(&r),
                    T0 + (o / 20) * 1000 + want.timestamp_delta
                );
                assert_eq!(r.key, want.key.as_deref());
                assert_eq!(r.value, want.value.as_deref());
                let headers: Vec<(String, Option<Vec<u8>>)> = r
                    .headers
                    .clone()
                    .map(|(k, v)| {
                        (
                            String::from_utf8(k.to_vec()).unwrap(),
                            v.map(<[u8]>::to_vec),
                        )
                    })
                    .collect();
                assert_eq!(headers, want.headers);
                assert_eq!(offset as usize, seen, "in order, no gaps, no repeats");
                seen += 1;
            }
            buf = &buf[len..];
        }
        at = read.next_offset;
    }
    assert_eq!(seen as i64, last);
    assert_eq!(
        archive.store().counters.requests(Op::List),
        0,
        "reads never list"
    );

    // A read from the middle of a batch starts with the batch holding the offset.
    let read = reader
        .read(topic_id, 2, 105, 1, true)
        .await
        .unwrap()
        .unwrap();
    let header = sediment_log::BatchHeader::parse(&read.records).unwrap();
    assert_eq!(header.base_offset(), 100);
    assert_eq!(
        read.next_offset, 120,
        "one whole batch when the budget is tiny"
    );
    assert_eq!(read.records.len(), header.total_size());
    // Without `allow_oversized` a too-small budget gets nothing.
    let read = reader
        .read(topic_id, 2, 105, 1, false)
        .await
        .unwrap()
        .unwrap();
    assert!(read.records.is_empty());
    assert_eq!(
        reader
            .read(topic_id, 2, last, 1 << 20, true)
            .await
            .unwrap()
            .map(|r| r.next_offset),
        None
    );

    // Reading it all again is served by the caches: no new GET.
    let gets = archive.store().counters.requests(Op::Get);
    let mut at = 0;
    while at < last {
        at = reader
            .read(topic_id, 2, at, 1 << 20, true)
            .await
            .unwrap()
            .unwrap()
            .next_offset;
    }
    assert_eq!(archive.store().counters.requests(Op::Get), gets);

    // Timestamp lookups: batch b starts at T0 + b*1000.
    assert_eq!(
        reader
            .offset_for_timestamp(topic_id, 2, T0 + 7_000)
            .await
            .unwrap(),
        Some((140, T0 + 7_000))
    );
    assert_eq!(
        reader
            .offset_for_timestamp(topic_id, 2, T0 + 7_005)
            .await
            .unwrap(),
        Some((145, T0 + 7_005))
    );
    assert_eq!(
        reader
            .offset_for_timestamp(topic_id, 2, T0 + 999_999)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_cold_sequential_read_makes_one_get_per_row_group_plus_one_per_footer() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, catalog, topic_id) = archived_log(dir.path(), 40, 20).await;
    let entries = catalog.segments(topic_id, 2);
    let row_groups: usize = entries.iter().map(|e| e.row_groups.len()).sum();
    let reader = Arc::new(ArchiveReader::new(
        archive.store().clone(),
        catalog.clone(),
        Arc::new(NoCache::default()),
        ReaderOptions {
            prefetch_row_groups: 0,
            ..ReaderOptions::default()
        },
    ));
    let before = archive.store().counters.requests(Op::Get);
    let last = catalog.range(topic_id, 2).unwrap().1;
    let mut at = 0;
    while at < last {
        at = reader
            .read(topic_id, 2, at, 500, true)
            .await
            .unwrap()
            .unwrap()
            .next_offset;
    }
    let gets = archive.store().counters.requests(Op::Get) - before;
    assert_eq!(
        gets as usize,
        row_groups + entries.len(),
        "{row_groups} row groups in {} objects",
        entries.len()
    );
}

#[tokio::test]
async fn chunked_decodes_give_the_same_batches_from_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(&dir.path().join("log"), 60, 20);
    let topic_id = Uuid::new_v4();
    // Whole segments in one row group, so a row group holds many batches.
    let settings = ArchiveSettings {
        row_group_bytes: 1 << 20,
        ..ArchiveSettings::default()
    };
    let archive = Archive::new(
        ArchiveStore::from_store(
            Arc::new(InMemory::new()),
            Path::from("pre/fix"),
            "memory://",
        ),
        &settings,
        dir.path().join("staging"),
        1 << 20,
    )
    .unwrap();
    let catalog = Arc::new(MemoryCatalog::default());
    archive_all(&archive, &log, topic_id, &catalog).await;
    let entries = catalog.segments(topic_id, 2);
    assert!(
        entries
            .iter()
            .flat_map(|e| &e.row_groups)
            .all(|rg| rg.rows >= 3 * 20),
        "row groups of several batches: {entries:?}"
    );
    let reader_with = |chunk_bytes: usize| {
        let sizes = CacheSizes {
            memory_bytes: 8 << 20,
            disk_bytes: 0,
            disk_block_bytes: 1 << 20,
        };
        let (store, catalog) = (archive.store().clone(), catalog.clone());
        async move {
            let cache = FoyerCache::open(std::path::Path::new("/nonexistent"), &sizes)
                .await
                .unwrap();
            Arc::new(ArchiveReader::new(
                store,
                catalog,
                Arc::new(cache),
                ReaderOptions {
                    chunk_bytes,
                    decode_ahead_chunks: 2,
                    ..ReaderOptions::default()
                },
            ))
        }
    };
    let whole = reader_with(usize::MAX).await;
    let last = catalog.range(topic_id, 2).unwrap().1;
    // One record per chunk (most chunks empty: a batch of 20 runs through 19 of them), a few
    // records, and a few batches per chunk.
    for chunk_bytes in [1, 300, 3000] {
        let chunked = reader_with(chunk_bytes).await;
        for at in 0..last {
            for budget in [1, 2500] {
                let want = whole.read(topic_id, 2, at, budget, true).await.unwrap();
                let got = chunked.read(topic_id, 2, at, budget, true).await.unwrap();
                let (want, got) = (want.unwrap(), got.unwrap());
                assert_eq!(
                    (got.next_offset, &got.records),
                    (want.next_offset, &want.records),
                    "chunk_bytes={chunk_bytes} offset={at} budget={budget}"
                );
            }
        }
        for ts in [T0, T0 + 7_005, T0 + 33_019, T0 + 59_000] {
            assert_eq!(
                chunked.offset_for_timestamp(topic_id, 2, ts).await.unwrap(),
                whole.offset_for_timestamp(topic_id, 2, ts).await.unwrap(),
                "chunk_bytes={chunk_bytes} timestamp={ts}"
            );
        }
        let c = chunked.counters();
        assert!(
            c.chunks_decoded.load(Ordering::Relaxed)
                > whole.counters().chunks_decoded.load(Ordering::Relaxed),
            "decoded in more, smaller chunks"
        );
    }
}

#[tokio::test]
async fn a_tail_larger_than_the_first_read_is_read_with_more_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, catalog, topic_id) = archived_log(dir.path(), 40, 20).await;
    let seg = &catalog.segments(topic_id, 2)[0];
    assert!(seg.row_groups.len() > 1, "several row groups: {seg:?}");
    let path = Path::from(seg.key.as_str());
    let store = archive.store().store.as_ref();
    // 8 bytes: the first read finds the footer's length, the second the footer, which says
    // where the offset index is, the third reads it.
    for guess in [8, 200, 64 << 10] {
        let before = archive.store().counters.requests(Op::Get);
        let tail = crate::reader::read_tail_from(store, &path, seg.object_bytes, guess)
            .await
            .unwrap();
        let gets = archive.store().counters.requests(Op::Get) - before;
        let metadata = crate::reader::parse_tail(&seg.key, &tail, seg.object_bytes).unwrap();
        assert_eq!(metadata.num_row_groups(), seg.row_groups.len());
        for rg in 0..metadata.num_row_groups() {
            assert!(
                metadata
                    .page_index_for_row_group(rg)
                    .page_locations(0)
                    .is_some_and(|pages| !pages.is_empty()),
                "offset index of row group {rg} read with a first read of {guess} bytes"
            );
        }
        assert!(
            (1..=3).contains(&gets),
            "{gets} GETs with a first read of {guess} bytes"
        );
    }
}
