//! Archive benchmark: what tiered storage costs, from one run on one machine.
//!
//! 1. **Archiver throughput per core.** Realistic JSON events (see `events.rs`) are written as
//!    producer-style record batches (`--compression`, default lz4, `--batch-records` per batch)
//!    into sealed segments of `--segment-mib`, exactly as the broker stores them. Each segment
//!    is then archived by the real archiver code: Parquet encoding on this one thread (its CPU
//!    time is measured with `CLOCK_THREAD_CPUTIME_ID`), then upload to SeaweedFS over S3.
//! 2. **Cost of history.** Archive bytes against raw record bytes (keys + values), PUT-class
//!    requests per GiB archived (counted by the object-store wrapper), and S3 cost per
//!    GiB-month at list prices.
//! 3. **The broker under full load with archiving on.** `sediment serve` archiving into the same
//!    SeaweedFS; librdkafka produces the same events as fast as it can; the archive lag is
//!    sampled every 500 ms during and after, until the archive has caught up.
//!
//! The verdict compares (1) with (3): the archiver keeps up on one core when its per-core
//! throughput is at least the broker's sustained produce rate, and the lag in (3) stays
//! bounded. 1 MB = 10^6 bytes, 1 GiB = 2^30 bytes.

/// The broker's allocator (see crates/sediment-cli/src/main.rs), so the archiver runs here as
/// it runs in the broker.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::BytesMut;
use clap::Parser;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sediment_archive::{Archive, ArchiveSettings, Op, SegmentSource, open_store};
use sediment_benches::events;
use sediment_benches::procs::{self, ChildGuard, log_tail};
use sediment_benches::s3::{
    ACCESS_KEY, BUCKET, SECRET_KEY, Seaweed, admin_get, metric_sum, start_seaweed, weed_bin,
};
use sediment_benches::targets::{self, wait_for_listeners_file};
use sediment_benches::workload::{self, Payloads, Workload, mb_per_s};
use sediment_log::{LogConfig, PartitionLog, SystemClock};
use serde_json::{Value, json};
use uuid::Uuid;

/// S3 Standard list prices (us-east-1, November 2026): storage per GB-month, PUT/COPY/POST/LIST
/// per 1,000 requests.
const S3_STORAGE_USD_PER_GB_MONTH: f64 = 0.023;
const S3_PUT_USD_PER_1000: f64 = 0.005;
const GIB: f64 = (1u64 << 30) as f64;

#[derive(Debug, Parser)]
#[command(
    name = "archive",
    version,
    about = "Measure archiving throughput, compression and request cost"
)]
struct Args {
    /// JSON events to archive (and to produce in the broker phase).
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Segment size, MiB (the broker phase uses it as `segment.bytes` too).
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    /// Codec of the producer batches stored in segments: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "lz4")]
    compression: String,
    /// Records per producer batch in the offline segments.
    #[arg(long, default_value_t = 500)]
    batch_records: usize,
    /// `archive.zstd_level`.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    zstd_level: i32,
    /// `archive.row_group_bytes`, MiB.
    #[arg(long, default_value_t = 8)]
    row_group_mib: u64,
    /// `archive.part_size_bytes`, MiB.
    #[arg(long, default_value_t = 32)]
    part_mib: u64,
    /// Encode every segment this many times (the figure is the average; more rounds, steadier
    /// figures and a profile dominated by encoding). Only the last round is uploaded.
    #[arg(long, default_value_t = 1)]
    encode_rounds: u32,
    /// Records produced in each broker run (the events repeat when this exceeds --records).
    #[arg(long, default_value_t = 6_000_000)]
    live_records: u64,
    /// Read the archive back through the replay read path this many times after the first
    /// (which fetches the row groups); the figure is the average of these rounds.
    #[arg(long, default_value_t = 2)]
    read_rounds: u32,
    /// Skip phase 3 (the broker under load).
    #[arg(long)]
    skip_broker: bool,
    /// Parent of the temporary directories (default: $TMPDIR or /tmp).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// The `weed` binary (default: .venv/bin/weed of the workspace, else on PATH).
    #[arg(long)]
    weed: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("archive: FAILED: {e:#}");
        std::process::exit(1);
    }
}

mod cpu_time {
    /// CPU seconds every thread of this process has spent running (sum of the first field
    /// of each /proc/self/task/*/schedstat, nanoseconds).
    pub fn process() -> f64 {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0.0;
        };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .sum::<f64>()
            / 1e9
    }

    /// CPU seconds this thread has spent running: the first field of
    /// /proc/thread-self/schedstat (nanoseconds).
    pub fn thread() -> f64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |ns| ns / 1e9)
    }
}

fn settings(args: &Args, url: &str, endpoint: &str) -> ArchiveSettings {
    ArchiveSettings {
        url: url.to_string(),
        endpoint: Some(endpoint.to_string()),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        zstd_level: args.zstd_level,
        row_group_bytes: args.row_group_mib << 20,
        part_size_bytes: args.part_mib << 20,
        ..ArchiveSettings::default()
    }
}

fn codec(name: &str) -> Result<Compression> {
    Ok(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => bail!("unknown --compression {other}"),
    })
}

/// lz4 as librdkafka writes it, so the archiver decodes what real producers send: an LZ4
/// frame of independent 64 KiB blocks with neither block nor content checksums.
/// (kafka-protocol's own lz4 writer adds XXH32 checksums of both, which no producer we test
/// with writes and which cost the decoder 8% of its time.)
fn lz4_like_librdkafka(
    records: &mut BytesMut,
    out: &mut BytesMut,
    compression: Compression,
) -> Result<()> {
    use bytes::BufMut;
    use std::io::Write;
    ensure!(
        compression == Compression::Lz4,
        "only lz4 is compressed here"
    );
    let mut encoder = lz4::EncoderBuilder::new()
        .block_size(lz4::BlockSize::Max64KB)
        .block_mode(lz4::BlockMode::Independent)
        .checksum(lz4::ContentChecksum::NoChecksum)
        .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
        .build(out.writer())?;
    encoder.write_all(records)?;
    encoder.finish().1?;
    Ok(())
}

/// Phase 1 input: the events as producer batches in sealed segments.
fn build_segments(
    args: &Args,
    dir: &Path,
    evs: &[(Vec<u8>, Vec<u8>)],
    t0: i64,
) -> Result<PartitionLog> {
    let config = LogConfig {
        segment_bytes: args.segment_mib << 20,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir, config, Arc::new(SystemClock))?;
    let compression = codec(&args.compression)?;
    for (b, chunk) in evs.chunks(args.batch_records).enumerate() {
        let records: Vec<Record> = chunk
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: t0 + ((b * args.batch_records + i) as i64) * 2,
                key: Some(k.clone().into()),
                value: Some(v.clone().into()),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
            (compression == Compression::Lz4).then_some(lz4_like_librdkafka),
        )?;
        log.append(&buf, 0, false)?;
    }
    log.roll()?;
    Ok(log)
}

#[derive(Debug, Default)]
struct Offline {
    segments: usize,
    records: u64,
    record_bytes: u64,
    segment_bytes: u64,
    object_bytes: u64,
    encode_cpu_secs: f64,
    encode_wall_secs: f64,
    upload_wall_secs: f64,
    put_class_requests: u64,
    row_groups: usize,
    /// Records rebuilt into Kafka batches by the archive read path, per read-back round.
    read_bytes: u64,
    read_cpu_secs: f64,
    read_wall_secs: f64,
    read_gets: u64,
}

fn run_offline(
    args: &Args,
    tmp: &Path,
    s3: &Seaweed,
    evs: &[(Vec<u8>, Vec<u8>)],
    t0: i64,
) -> Result<Offline> {
    let dir = tempfile::Builder::new()
        .prefix("archive-bench-")
        .tempdir_in(tmp)?;
    let started = Instant::now();
    let log = build_segments(args, &dir.path().join("log"), evs, t0)?;
    let sealed = log.sealed_segments();
    println!(
        "  {} sealed segments, {:.1} MB on disk ({} batches of {} records, {}), written in {:.1} s",
        sealed.len(),
        sealed.iter().map(|s| s.size_bytes).sum::<u64>() as f64 / 1e6,
        evs.len().div_ceil(args.batch_records),
        args.batch_records,
        args.compression,
        started.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let settings = settings(args, &format!("s3://{BUCKET}/offline"), &s3.endpoint);
    let store = runtime.block_on(open_store(&settings, "", &|_| None))?;
    let archive = Archive::new(store, &settings, dir.path().join("staging"), 64 << 20)?;
    let topic_id = Uuid::new_v4();
    let mut out = Offline::default();
    let mut entries = Vec::new();
    for s in &sealed {
        let src = SegmentSource {
            topic: "events".into(),
            topic_id,
            partition: 0,
            base_offset: s.base_offset,
            next_offset: s.next_offset,
            size_bytes: s.size_bytes,
            slice: log
                .sealed_segment(s.base_offset)
                .context("sealed segment")?,
        };
        let rounds = args.encode_rounds.max(1);
        let mut staged = None;
        for _ in 0..rounds {
            drop(staged.take());
            let (cpu0, wall0) = (cpu_time::thread(), Instant::now());
            staged = Some(archive.stage(&src, t0)?);
            out.encode_cpu_secs += (cpu_time::thread() - cpu0) / f64::from(rounds);
            out.encode_wall_secs += wall0.elapsed().as_secs_f64() / f64::from(rounds);
        }
        let staged = staged.context("staged")?;
        let up = Instant::now();
        let (entry, _) = runtime.block_on(archive.upload(&staged, t0))?;
        out.upload_wall_secs += up.elapsed().as_secs_f64();
        out.segments += 1;
        out.records += entry.rows;
        out.record_bytes += entry.record_bytes;
        out.segment_bytes += entry.segment_bytes;
        out.object_bytes += entry.object_bytes;
        out.row_groups += entry.row_groups.len();
        entries.push(entry);
    }
    out.put_class_requests = archive.store().counters.put_class_requests();
    let report = runtime.block_on(archive.verify(&entries));
    ensure!(
        report.problems.is_empty(),
        "archive does not verify: {:?}",
        report.problems
    );
    ensure!(
        out.records == evs.len() as u64,
        "archived {} of {} records",
        out.records,
        evs.len()
    );
    read_back(args, &runtime, &archive, &entries, dir.path(), &mut out)?;
    Ok(out)
}

/// Reads the archived partition from its first offset to its last through the replay read
/// path (`ArchiveReader`: row groups from S3 through a memory cache, decoded into Kafka
/// batches), once to fetch and `--read-rounds` more times to measure: the decoded-batch cache
/// is far smaller than the history, so every round decodes everything again, as a warm replay
/// of a long history does.
fn read_back(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    archive: &Archive,
    entries: &[sediment_archive::ArchivedSegment],
    dir: &Path,
    out: &mut Offline,
) -> Result<()> {
    use sediment_archive::{
        ArchiveReader, CacheSizes, Catalog, FoyerCache, MemoryCatalog, ReaderOptions,
    };
    let catalog = Arc::new(MemoryCatalog::default());
    for e in entries {
        catalog.commit(e.clone())?;
    }
    let (topic_id, first, next) = (
        entries[0].topic_id,
        entries[0].base_offset,
        entries.last().map_or(0, |e| e.next_offset()),
    );
    let object_bytes: u64 = entries.iter().map(|e| e.object_bytes).sum();
    let cache = runtime.block_on(FoyerCache::open(
        &dir.join("read-cache"),
        &CacheSizes {
            memory_bytes: usize::try_from(object_bytes)? + (64 << 20),
            disk_bytes: 0,
            disk_block_bytes: 16 << 20,
        },
    ))?;
    let reader = Arc::new(ArchiveReader::new(
        archive.store().clone(),
        catalog,
        Arc::new(cache),
        ReaderOptions {
            decoded_cache_bytes: 32 << 20,
            ..ReaderOptions::default()
        },
    ));
    let gets_before = archive.store().counters.requests(Op::Get);
    let rounds = args.read_rounds.max(1);
    for round in 0..=rounds {
        let (cpu0, wall0) = (cpu_time::process(), Instant::now());
        let (mut at, mut records, mut bytes) = (first, 0u64, 0u64);
        while at < next {
            let read = runtime
                .block_on(reader.read(topic_id, 0, at, 10 << 20, true))?
                .context("the archive has no batch at an offset it should hold")?;
            ensure!(read.next_offset > at, "no progress at offset {at}");
            let mut b = &read.records[..];
            while b.len() >= 61 {
                let len = usize::try_from(i32::from_be_bytes(b[8..12].try_into()?))? + 12;
                ensure!(b.len() >= len, "a truncated batch at offset {at}");
                records += u64::from(u32::from_be_bytes(b[57..61].try_into()?));
                b = &b[len..];
            }
            bytes += read.records.len() as u64;
            at = read.next_offset;
        }
        ensure!(
            records == out.records,
            "read back {records} of {} records",
            out.records
        );
        if round > 0 {
            out.read_cpu_secs += (cpu_time::process() - cpu0) / f64::from(rounds);
            out.read_wall_secs += wall0.elapsed().as_secs_f64() / f64::from(rounds);
            out.read_bytes = bytes;
        }
    }
    out.read_gets = archive.store().counters.requests(Op::Get) - gets_before;
    Ok(())
}

#[derive(Debug, Default)]
struct Live {
    produce_mb_s: f64,
    produce_secs: f64,
    produce_bytes: u64,
    max_lag_bytes: u64,
    max_lag_segments: u64,
    drain_secs: f64,
    encode_secs_sum: f64,
    upload_secs_sum: f64,
    segments_archived: u64,
}

/// One broker run: produce `--live-records` flat out into a fresh broker whose topic archives
/// (`archiving`) or not, sampling the archive lag until it has caught up.
fn run_live(
    args: &Args,
    tmp: &Path,
    s3: &Seaweed,
    payloads: &Payloads,
    archiving: bool,
) -> Result<Live> {
    let bin = targets::sediment_bin()?;
    let dir = tempfile::Builder::new()
        .prefix("sediment-archive-bench-")
        .tempdir_in(tmp)?;
    let listeners = dir.path().join("listeners.json");
    let log = dir.path().join("sediment.log");
    let config = dir.path().join("sediment.toml");
    std::fs::write(
        &config,
        "[log]\nretention_check_interval_ms = 1000\n[archive]\ncheck_interval_ms = 500\n",
    )?;
    let mut cmd = Command::new(&bin);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--kafka-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--listeners-file")
        .arg(&listeners)
        .arg("--config")
        .arg(&config)
        // Each broker run is another cluster: it needs a prefix of its own.
        .args([
            "--archive-url",
            &format!(
                "s3://{BUCKET}/live-{}",
                if archiving { "on" } else { "off" }
            ),
        ])
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1");
    let mut child = ChildGuard::spawn("sediment", &mut cmd, Some(&log))?;
    let bootstrap = wait_for_listeners_file(&listeners, &mut child)?;
    let text = std::fs::read_to_string(&listeners)?;
    let admin = serde_json::from_str::<Value>(&text)?["admin"]
        .as_str()
        .context("admin address")?
        .to_string();
    let w = Workload {
        topic: "events".into(),
        records: args.live_records,
        record_bytes: 0,
        partitions: 1,
        linger_ms: 5,
        batch_bytes: 1_000_000,
        queue_kbytes: 65_536,
        phase_timeout: Duration::from_secs(900),
        broker_cpus: None,
        idempotent: false,
        compression: args.compression.clone(),
        client_props: Vec::new(),
    };
    workload::create_topic(&bootstrap, &w)?;
    workload::set_topic_configs(
        &bootstrap,
        "events",
        &[
            ("segment.bytes", &(args.segment_mib << 20).to_string()),
            ("segment.ms", "5000"),
            (
                "remote.storage.enable",
                if archiving { "true" } else { "false" },
            ),
        ],
    )?;

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        let admin = admin.clone();
        std::thread::spawn(move || -> (u64, u64, f64) {
            let (mut max_bytes, mut max_segments) = (0u64, 0u64);
            let mut produce_end: Option<Instant> = None;
            loop {
                if let Ok(body) = admin_get(&admin, "/v1/archive?topic=events")
                    && let Ok(v) = serde_json::from_str::<Value>(&body)
                    && let Some(p) = v["partitions"].get(0)
                {
                    max_bytes = max_bytes.max(p["lag_bytes"].as_u64().unwrap_or(0));
                    max_segments = max_segments.max(p["lag_segments"].as_u64().unwrap_or(0));
                    if done.load(Ordering::SeqCst) {
                        let end = *produce_end.get_or_insert_with(Instant::now);
                        let caught_up = !archiving
                            || (p["lag_segments"] == 0
                                && p["end_offset"] == p["log_end_offset"]
                                && p["log_end_offset"].as_i64() > Some(0));
                        if caught_up || end.elapsed() > Duration::from_secs(600) {
                            return (max_bytes, max_segments, end.elapsed().as_secs_f64());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let produced = workload::produce(&bootstrap, &w, payloads);
    done.store(true, Ordering::SeqCst);
    let p = match produced {
        Ok(p) => p,
        Err(e) => bail!("{e:#}\nsediment log:\n{}", child.log_tail()),
    };
    println!(
        "  produce: {} records, {:.1} MB in {:.2} s = {:.1} MB/s (p99 {:.1} ms)",
        p.records,
        p.bytes as f64 / 1e6,
        p.secs,
        mb_per_s(p.bytes, p.secs),
        f64::from(p.p99_us) / 1000.0
    );
    let (max_lag_bytes, max_lag_segments, drain_secs) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("lag sampler panicked"))?;
    let metrics = admin_get(&admin, "/metrics")?;
    let live = Live {
        produce_mb_s: mb_per_s(p.bytes, p.secs),
        produce_secs: p.secs,
        produce_bytes: p.bytes,
        max_lag_bytes,
        max_lag_segments,
        drain_secs,
        encode_secs_sum: metric_sum(&metrics, "sediment_archive_encode_duration_seconds_sum"),
        upload_secs_sum: metric_sum(&metrics, "sediment_archive_upload_duration_seconds_sum"),
        segments_archived: metric_sum(&metrics, "sediment_archive_segments_total") as u64,
    };
    let status = child.terminate(Duration::from_secs(30))?;
    ensure!(
        status.success(),
        "sediment exited with {status}:\n{}",
        log_tail(&log, 20)
    );
    Ok(live)
}

fn run() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.records > 0 && args.batch_records > 0,
        "--records and --batch-records must be positive"
    );
    let tmp = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let machine =
        procs::print_header("Sediment archive benchmark (1 MB = 10^6 bytes, 1 GiB = 2^30 bytes)");
    let t0 = 1_764_000_000_000;
    let started = Instant::now();
    let evs = events::events(42, args.records, t0);
    let raw: u64 = evs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    println!(
        "events: {} JSON events, {:.1} MB of keys and values (avg {} B), generated in {:.1} s",
        evs.len(),
        raw as f64 / 1e6,
        raw / evs.len() as u64,
        started.elapsed().as_secs_f64()
    );
    let s3 = start_seaweed(&weed_bin(args.weed.as_deref()), &tmp)?;
    println!("S3 server: SeaweedFS at {}", s3.endpoint);

    println!(
        "\n[1/3] archiver: segment -> Parquet (zstd {}) -> S3, encoding on one thread",
        args.zstd_level
    );
    let off = run_offline(&args, &tmp, &s3, &evs, t0)?;
    let per_core = off.record_bytes as f64 / 1e6 / off.encode_cpu_secs;
    let ratio = off.object_bytes as f64 / off.record_bytes as f64;
    let puts_per_gib = off.put_class_requests as f64 / (off.record_bytes as f64 / GIB);
    let mib_per_put = (off.record_bytes as f64 / (1 << 20) as f64) / off.put_class_requests as f64;
    let storage_usd = ratio * S3_STORAGE_USD_PER_GB_MONTH * GIB / 1e9;
    let put_usd = puts_per_gib * S3_PUT_USD_PER_1000 / 1000.0;
    println!(
        "  encode: {:.1} MB of records in {:.2} s CPU ({:.2} s wall) = {:.1} MB/s per core",
        off.record_bytes as f64 / 1e6,
        off.encode_cpu_secs,
        off.encode_wall_secs,
        per_core
    );
    println!(
        "  upload: {:.1} MB of Parquet in {:.2} s = {:.1} MB/s; {} segments, {} row groups, {} PUT-class requests",
        off.object_bytes as f64 / 1e6,
        off.upload_wall_secs,
        off.object_bytes as f64 / 1e6 / off.upload_wall_secs,
        off.segments,
        off.row_groups,
        off.put_class_requests
    );
    println!(
        "  archive bytes / raw record bytes = {ratio:.3} (target <= 0.35); segment bytes ({}) / raw = {:.3}",
        args.compression,
        off.segment_bytes as f64 / off.record_bytes as f64
    );
    println!(
        "  PUT-class requests per GiB archived = {puts_per_gib:.1} (one per {mib_per_put:.0} MiB; target <= 32, one per 32 MiB)"
    );
    let read_per_core = off.record_bytes as f64 / 1e6 / off.read_cpu_secs;
    println!(
        "  read back (replay read path, row groups cached, every chunk decoded again): {:.1} MB of records ({:.1} MB of Kafka batches) in {:.2} s CPU ({:.2} s wall) = {read_per_core:.1} MB/s of records per core; {} GETs in all",
        off.record_bytes as f64 / 1e6,
        off.read_bytes as f64 / 1e6,
        off.read_cpu_secs,
        off.read_wall_secs,
        off.read_gets
    );
    println!(
        "  S3 Standard list price: ${storage_usd:.5} per GiB of raw history per month (+ ${put_usd:.6} once per GiB archived for PUTs)"
    );

    let (baseline, live) = if args.skip_broker {
        (None, None)
    } else {
        let payloads = Payloads::Json(evs);
        println!(
            "\n[2/3] broker, archiving off (remote.storage.enable=false): librdkafka ({}) produces {} events as fast as it can",
            args.compression, args.live_records
        );
        let base = run_live(&args, &tmp, &s3, &payloads, false)?;
        println!(
            "\n[3/3] broker, archiving on: the same produce, archiving into SeaweedFS as it goes"
        );
        let l = run_live(&args, &tmp, &s3, &payloads, true)?;
        println!(
            "  archive lag during the run: at most {} segments / {:.1} MB; caught up {:.1} s after the last record (segment.ms = 5 s)",
            l.max_lag_segments,
            l.max_lag_bytes as f64 / 1e6,
            l.drain_secs
        );
        println!(
            "  archiver busy: encode {:.2} s + upload {:.2} s over {} segments, during a {:.2} s produce",
            l.encode_secs_sum, l.upload_secs_sum, l.segments_archived, l.produce_secs
        );
        (Some(base), Some(l))
    };

    println!("\nsummary");
    println!("  archiver throughput per core:       {per_core:>10.1} MB/s of records");
    if let (Some(b), Some(l)) = (&baseline, &live) {
        println!(
            "  broker max produce, archiving off:  {:>10.1} MB/s of records",
            b.produce_mb_s
        );
        println!(
            "  broker produce, archiving on:       {:>10.1} MB/s of records",
            l.produce_mb_s
        );
        println!(
            "  archiver per core / max produce:    {:>10.2}x  ({})",
            per_core / b.produce_mb_s,
            if per_core >= b.produce_mb_s {
                "keeps up on one core"
            } else {
                "does NOT keep up on one core"
            }
        );
        println!(
            "  archive lag with archiving on:      at most {:.1} MB, caught up {:.1} s after produce ended",
            l.max_lag_bytes as f64 / 1e6,
            l.drain_secs
        );
    }
    println!("  archive / raw bytes:                 {ratio:>10.3}   (target <= 0.35)");
    println!("  PUT-class requests per GiB:          {puts_per_gib:>10.1}   (target <= 32)");
    println!("  S3 cost per GiB-month of history:    ${storage_usd:>9.5}");

    if let Some(path) = &args.json {
        let v = json!({
            "command": procs::command_line(),
            "machine": machine,
            "records": args.records,
            "raw_record_bytes": off.record_bytes,
            "segment_bytes": off.segment_bytes,
            "object_bytes": off.object_bytes,
            "segments": off.segments,
            "row_groups": off.row_groups,
            "encode_cpu_secs": off.encode_cpu_secs,
            "encode_wall_secs": off.encode_wall_secs,
            "upload_wall_secs": off.upload_wall_secs,
            "archiver_mb_s_per_core": per_core,
            "read_cpu_secs": off.read_cpu_secs,
            "read_mb_s_per_core": off.record_bytes as f64 / 1e6 / off.read_cpu_secs,
            "read_gets": off.read_gets,
            "compression_ratio": ratio,
            "put_class_requests": off.put_class_requests,
            "puts_per_gib": puts_per_gib,
            "storage_usd_per_gib_month": storage_usd,
            "put_usd_per_gib": put_usd,
            "baseline_produce_mb_s": baseline.as_ref().map(|b| b.produce_mb_s),
            "live": live.as_ref().map(|l| json!({
                "produce_mb_s": l.produce_mb_s,
                "produce_secs": l.produce_secs,
                "produce_bytes": l.produce_bytes,
                "max_lag_bytes": l.max_lag_bytes,
                "max_lag_segments": l.max_lag_segments,
                "drain_secs": l.drain_secs,
                "encode_secs_sum": l.encode_secs_sum,
                "upload_secs_sum": l.upload_secs_sum,
                "segments_archived": l.segments_archived,
            })),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")?;
        println!("\nresults written to {}", path.display());
    }
    Ok(())
}
