//! `sediment replay`: streams a topic's archived history from object storage into any
//! Kafka-compatible cluster. No broker is needed on the source side: the job lists the
//! topic's directory once, reads the objects' footers, and then reads row groups with ranged
//! GETs through the same reader the broker uses.
//!
//! Exactly once across restarts: records go out through librdkafka's idempotent producer
//! (no duplicates within a run, and with the gapless guarantee no gaps either), partition
//! `p` to partition `p`, in offset order. So each target partition holds a prefix of what the
//! job sends. The checkpoint records, per partition, the target's high watermark when the job
//! first started and a confirmed (next source offset, records delivered) pair. A rerun reads
//! the target's high watermark again; what it finds past the checkpoint was delivered after
//! the last checkpoint write, and exactly that many records are skipped.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use sediment_archive::{
    ArchiveReader, CacheSizes, Catalog, DecodedBatch, FoyerCache, RateLimiter, ReaderOptions,
    TopicListing,
};
use sediment_log::BatchHeader;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::settings::{FlagOverrides, Settings, process_env};

/// Bytes of record batches asked of the archive per read.
const READ_BYTES: usize = 4 << 20;
/// How often the checkpoint is written.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How long to wait for the target to answer a metadata or watermark request.
const TARGET_TIMEOUT: Duration = Duration::from_secs(30);
/// Checkpoint file format.
const CHECKPOINT_VERSION: u32 = 1;

/// Flags of `sediment replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The topic to replay, as archived.
    #[arg(long)]
    topic: String,
    /// Only these partitions (comma-separated). Default: every archived partition.
    #[arg(long, value_delimiter = ',', value_name = "P,...")]
    partitions: Option<Vec<i32>>,
    /// Where to start: `earliest`, an offset, or a time (RFC 3339, or YYYY-MM-DDTHH:MM:SS[.sss]
    /// read as UTC), meaning the first record at or after it, as ListOffsets finds it.
    #[arg(long, default_value = "earliest", value_name = "OFFSET|TIME")]
    from: String,
    /// Where to stop, not included: an offset, or a time (the records before the first one at
    /// or after it). Default: the end of the archive when the job first starts.
    #[arg(long, value_name = "OFFSET|TIME")]
    to: Option<String>,
    /// Bootstrap servers of the cluster to produce into.
    #[arg(
        long,
        value_name = "HOST:PORT,...",
        required_unless_present = "dry_run"
    )]
    target: Option<String>,
    /// Topic to produce into (default: the same name). Created with as many partitions as
    /// needed when missing.
    #[arg(long, value_name = "TOPIC")]
    target_topic: Option<String>,
    /// A librdkafka property for the target producer (repeatable), e.g.
    /// `-X compression.type=zstd` or `-X security.protocol=sasl_plaintext`.
    #[arg(short = 'X', long = "target-property", value_name = "KEY=VALUE")]
    target_properties: Vec<String>,
    /// Where the archive is: file:///path or s3://bucket/prefix (S3 endpoint and credentials
    /// as for `sediment serve`). Default: archive.url of the config, else
    /// <data dir>/archive.
    #[arg(long, value_name = "URL")]
    archive_url: Option<String>,
    /// TOML config file whose [archive] section says how to reach the store.
    #[arg(long, env = "SEDIMENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The topic id, when the archive holds a topic of this name deleted and created again.
    #[arg(long, value_name = "UUID")]
    topic_id: Option<Uuid>,
    /// Most bytes per second (keys, values and headers) to produce, e.g. 50MiB, 800KB or
    /// 1000000. Default: no limit.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    rate_limit: Option<u64>,
    /// Checkpoint file. Default: sediment-replay-<topic>-to-<target topic>.json in the
    /// working directory. Rerunning the same command resumes from it.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Ignore an existing checkpoint and replay the whole range again.
    #[arg(long)]
    restart: bool,
    /// Print what would be replayed, and from where a rerun would resume, then exit.
    #[arg(long)]
    dry_run: bool,
    /// Print the plan (dry run) or the result as JSON.
    #[arg(long)]
    json: bool,
    /// Seconds between progress lines when stderr is not a terminal (a bar otherwise).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    progress_interval: u64,
}

/// Parses `123`, `800KB`, `50MiB`, `1GB`… into bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 50MiB, 800KB, 1000000)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "kib" => 1 << 10,
        "mb" | "m" => 1_000_000,
        "mib" => 1 << 20,
        "gb" | "g" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}' (B, KB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes == 0 {
        return Err("the rate limit must be above 0".into());
    }
    Ok(bytes)
}

/// A bound of the replayed range.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    Earliest,
    Offset(i64),
    Time(i64),
}

fn parse_bound(flag: &str, s: &str) -> Result<Bound> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("earliest") && flag == "--from" {
        return Ok(Bound::Earliest);
    }
    if let Ok(n) = t.parse::<i64>() {
        ensure!(n >= 0, "{flag} {s}: an offset cannot be negative");
        return Ok(Bound::Offset(n));
    }
    // A bare number is an offset, so epoch milliseconds are not accepted as a time here.
    if t.chars().any(|c| c == '-' || c == ':') {
        let ms = sediment_broker::parse_datetime(t).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        return Ok(Bound::Time(ms));
    }
    bail!(
        "{flag} {s}: expected an offset, a time such as 2026-11-27T10:00:00Z{}",
        if flag == "--from" {
            ", or earliest"
        } else {
            ""
        }
    )
}

/// What the job replays of one partition: source offsets `start..end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionPlan {
    partition: i32,
    start: i64,
    end: i64,
}

/// What makes two runs the same job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JobIdentity {
    archive: String,
    topic: String,
    topic_id: Uuid,
    target: String,
    target_topic: String,
    from: String,
    to: Option<String>,
    partitions: Option<Vec<i32>>,
}

/// Confirmed progress of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// The target partition's high watermark when the job first started.
    target_base: i64,
    /// Source offset after the last record known delivered.
    next_source: i64,
    /// Records delivered since the job first started.
    delivered: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    job: JobIdentity,
    plan: Vec<PartitionPlan>,
    progress: BTreeMap<i32, Progress>,
    complete: bool,
    updated_at: String,
}

impl Checkpoint {
    fn load(path: &Path) -> Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let c: Checkpoint = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "checkpoint {} is not readable; remove it or pass --restart",
                        path.display()
                    )
                })?;
                ensure!(
                    c.version == CHECKPOINT_VERSION,
                    "checkpoint {} has version {}, this build writes {CHECKPOINT_VERSION}",
                    path.display(),
                    c.version
                );
                Ok(Some(c))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read checkpoint {}", path.display())),
        }
    }

    /// Writes the checkpoint durably: a temporary file, fsync, rename.
    fn save(&mut self, path: &Path) -> Result<()> {
        self.updated_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write checkpoint {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot write checkpoint {}", path.display()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Shared state of a running job: what the delivery callbacks confirm.
#[derive(Debug)]
struct JobState {
    /// Indexed like the plan.
    progress: Vec<Mutex<Progress>>,
    records: AtomicU64,
    bytes: AtomicU64,
    failure: Mutex<Option<String>>,
    stop: AtomicBool,
}

impl JobState {
    fn fail(&self, why: String) {
        self.failure.lock().get_or_insert(why);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What each produced record carries to its delivery report.
struct Sent {
    index: usize,
    offset: i64,
    bytes: u32,
}

struct ReplayContext {
    state: Arc<JobState>,
}

impl ClientContext for ReplayContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "target cluster");
    }
}

impl ProducerContext for ReplayContext {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        match result {
            Ok(_) => {
                // The idempotent producer reports a partition's deliveries in order.
                let mut p = self.state.progress[sent.index].lock();
                p.next_source = sent.offset + 1;
                p.delivered += 1;
                drop(p);
                self.state.records.fetch_add(1, Ordering::Relaxed);
                self.state
                    .bytes
                    .fetch_add(u64::from(sent.bytes), Ordering::Relaxed);
            }
            Err((e, _)) => self.state.fail(format!(
                "record at source offset {} was not delivered: {e}",
                sent.offset
            )),
        }
    }
}

type Replayer = ThreadedProducer<ReplayContext>;

pub(crate) fn run(args: ReplayArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(replay(args))
}

async fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let from = parse_bound("--from", &args.from)?;
    let to = args
        .to
        .as_deref()
        .map(|t| parse_bound("--to", t))
        .transpose()?;
    let flags = FlagOverrides {
        archive_url: args.archive_url.clone(),
        ..FlagOverrides::default()
    };
    let settings = Settings::load(args.config.as_deref(), &process_env(), &flags)?;
    let default_url = sediment_archive::default_url(&settings.data_dir)?;
    let store =
        sediment_archive::open_store(&settings.archive, &default_url, &|k| std::env::var(k).ok())
            .await
            .context("cannot open the archive (--archive-url)")?;
    let listing = sediment_archive::list_topic(&store, &args.topic, args.topic_id)
        .await
        .context("cannot list the archive")?;
    let partitions = match &args.partitions {
        None => listing.partitions.clone(),
        Some(want) => {
            let missing: Vec<_> = want
                .iter()
                .filter(|p| !listing.partitions.contains(p))
                .collect();
            ensure!(
                missing.is_empty(),
                "partitions {missing:?} of '{}' have nothing archived (archived: {:?})",
                args.topic,
                listing.partitions
            );
            want.clone()
        }
    };
    // The job reads each row group once, a chunk at a time: a memory cache keeps a row group's
    // bytes between the decodes of its chunks, with room for the row groups fetched ahead of
    // several partitions (no disk tier).
    let cache = FoyerCache::open(
        std::path::Path::new("."),
        &CacheSizes {
            memory_bytes: 160 << 20,
            disk_bytes: 0,
            disk_block_bytes: 16 << 20,
        },
    )
    .await
    .context("open the replay job's read cache")?;
    let reader = Arc::new(ArchiveReader::new(
        store.clone(),
        Arc::clone(&listing.catalog) as Arc<dyn Catalog>,
        Arc::new(cache),
        ReaderOptions {
            decoded_cache_bytes: 64 << 20,
            prefetch_row_groups: 2,
            ..ReaderOptions::default()
        },
    ));
    let target_topic = args
        .target_topic
        .clone()
        .unwrap_or_else(|| args.topic.clone());
    let identity = JobIdentity {
        archive: store.url.clone(),
        topic: args.topic.clone(),
        topic_id: listing.topic_id,
        target: args.target.clone().unwrap_or_default(),
        target_topic: target_topic.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
        partitions: args.partitions.clone(),
    };
    let checkpoint_path = args.checkpoint.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "sediment-replay-{}-to-{}.json",
            sanitize(&args.topic),
            sanitize(&target_topic)
        ))
    });
    let existing = if args.restart {
        None
    } else {
        Checkpoint::load(&checkpoint_path)?
    };
    if let Some(c) = &existing
        && c.job != identity
        && !(args.dry_run && args.target.is_none())
    {
        bail!(
            "checkpoint {} belongs to another job ({}); rerun that job, pass --restart to start \
             this one over, or choose another file with --checkpoint",
            checkpoint_path.display(),
            serde_json::to_string(&c.job)?
        );
    }
    let plan = match &existing {
        Some(c) => c.plan.clone(),
        None => plan(&reader, &listing, &partitions, from, to).await?,
    };
    if args.dry_run {
        print_plan(
            &args,
            &listing,
            &target_topic,
            &plan,
            existing.as_ref(),
            &checkpoint_path,
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if existing.as_ref().is_some_and(|c| c.complete) {
        println!(
            "replay of {} into {target_topic} is already complete (checkpoint {}); pass --restart to replay again",
            args.topic,
            checkpoint_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let target = args.target.clone().unwrap_or_default();
    run_job(Job {
        args: &args,
        reader,
        listing: &listing,
        target: &target,
        target_topic: &target_topic,
        identity,
        plan,
        existing,
        checkpoint_path,
    })
    .await
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Resolves `--from`/`--to` per partition against the archive.
async fn plan(
    reader: &Arc<ArchiveReader>,
    listing: &TopicListing,
    partitions: &[i32],
    from: Bound,
    to: Option<Bound>,
) -> Result<Vec<PartitionPlan>> {
    let mut out = Vec::new();
    for &p in partitions {
        let (first, end) = listing
            .catalog
            .range(listing.topic_id, p)
            .with_context(|| format!("partition {p} has nothing archived"))?;
        let resolve = |b: Bound| async move {
            Ok::<i64, anyhow::Error>(match b {
                Bound::Earliest => first,
                Bound::Offset(o) => o.clamp(first, end),
                Bound::Time(t) => reader
                    .offset_for_timestamp(listing.topic_id, p, t)
                    .await
                    .with_context(|| format!("cannot search partition {p} by time"))?
                    .map_or(end, |(o, _)| o),
            })
        };
        let start = resolve(from).await?;
        let stop = match to {
            None => end,
            Some(b) => resolve(b).await?,
        };
        out.push(PartitionPlan {
            partition: p,
            start,
            end: stop.max(start),
        });
    }
    Ok(out)
}

fn print_plan(
    args: &ReplayArgs,
    listing: &TopicListing,
    target_topic: &str,
    plan: &[PartitionPlan],
    existing: Option<&Checkpoint>,
    checkpoint_path: &Path,
) -> Result<()> {
    let resume = |p: i32| existing.and_then(|c| c.progress.get(&p)).copied();
    let rows: Vec<_> = plan
        .iter()
        .map(|pp| {
            let segments = listing.catalog.segments(listing.topic_id, pp.partition);
            let objects = segments
                .iter()
                .filter(|s| s.next_offset() > pp.start && s.base_offset < pp.end)
                .count();
            json!({
                "partition": pp.partition,
                "target_partition": pp.partition,
                "start_offset": pp.start,
                "end_offset": pp.end,
                "records": pp.end - pp.start,
                "objects": objects,
                "resume_from": resume(pp.partition).map(|r| r.next_source),
                "delivered": resume(pp.partition).map(|r| r.delivered),
            })
        })
        .collect();
    let total: i64 = plan.iter().map(|p| p.end - p.start).sum();
    if args.json {
        let v = json!({
            "topic": listing.topic,
            "topic_id": listing.topic_id.simple().to_string(),
            "target": args.target,
            "target_topic": target_topic,
            "records": total,
            "partitions": rows,
            "checkpoint": checkpoint_path.display().to_string(),
            "resuming": existing.is_some(),
            "complete": existing.is_some_and(|c| c.complete),
            "duplicate_objects_skipped": listing.duplicates,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "dry run: replay {} (id {}) into {} topic {target_topic}",
        listing.topic,
        listing.topic_id.simple(),
        args.target.as_deref().unwrap_or("<no --target>")
    );
    println!(
        "{:>9} {:>14} {:>14} {:>12} {:>8} {:>14}",
        "PARTITION", "FROM", "TO (EXCL.)", "RECORDS", "OBJECTS", "RESUME AT"
    );
    for r in &rows {
        println!(
            "{:>9} {:>14} {:>14} {:>12} {:>8} {:>14}",
            r["partition"],
            r["start_offset"],
            r["end_offset"],
            r["records"],
            r["objects"],
            r["resume_from"]
                .as_i64()
                .map_or("-".to_string(), |o| o.to_string())
        );
    }
    println!(
        "total: {total} records; checkpoint: {}",
        checkpoint_path.display()
    );
    if existing.is_some_and(|c| c.complete) {
        println!("the checkpoint says this job is complete");
    }
    Ok(())
}

struct Job<'a> {
    args: &'a ReplayArgs,
    reader: Arc<ArchiveReader>,
    listing: &'a TopicListing,
    target: &'a str,
    target_topic: &'a str,
    identity: JobIdentity,
    plan: Vec<PartitionPlan>,
    existing: Option<Checkpoint>,
    checkpoint_path: PathBuf,
}

fn producer_config(args: &ReplayArgs, target: &str) -> Result<ClientConfig> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", target)
        .set("client.id", "sediment-replay")
        .set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "300000");
    for p in &args.target_properties {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("-X {p}: expected KEY=VALUE"))?;
        let k = k.trim();
        ensure!(
            !matches!(
                k,
                "enable.idempotence" | "enable.gapless.guarantee" | "acks"
            ),
            "-X {k}: the replay job needs the idempotent producer; {k} cannot be changed"
        );
        cfg.set(k, v.trim());
    }
    Ok(cfg)
}

/// Makes sure the target topic exists with at least the partitions the plan writes to.
async fn ensure_target_topic(
    cfg: &ClientConfig,
    producer: &Replayer,
    topic: &str,
    needed: i32,
) -> Result<()> {
    let count = |producer: &Replayer| -> Result<Option<i32>> {
        let md = producer
            .client()
            .fetch_metadata(None, TARGET_TIMEOUT)
            .context("cannot read the target cluster's metadata")?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len() as i32))
    };
    match count(producer)? {
        Some(n) if n >= needed => return Ok(()),
        Some(n) => bail!(
            "target topic {topic} has {n} partitions, the replay writes partition p to partition p and needs {needed}"
        ),
        None => {}
    }
    let admin: AdminClient<DefaultClientContext> = cfg
        .create()
        .context("cannot connect to the target cluster")?;
    let new = NewTopic::new(topic, needed, TopicReplication::Fixed(-1));
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(TARGET_TIMEOUT)),
        )
        .await
        .context("cannot create the target topic")?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("cannot create target topic {t}: {e}"),
        }
    }
    eprintln!("created target topic {topic} with {needed} partitions");
    let deadline = Instant::now() + TARGET_TIMEOUT;
    loop {
        if count(producer)?.is_some_and(|n| n >= needed) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "target topic {topic} did not appear in metadata"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// High watermarks of the target partitions, read until two reads a second apart agree, so
/// produce requests a killed run left in flight have landed.
async fn settled_watermarks(
    producer: &Replayer,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<i64>> {
    let read = || -> Result<Vec<i64>> {
        partitions
            .iter()
            .map(|&p| {
                producer
                    .client()
                    .fetch_watermarks(topic, p, TARGET_TIMEOUT)
                    .map(|(_, high)| high)
                    .with_context(|| format!("cannot read the high watermark of {topic}-{p}"))
            })
            .collect()
    };
    let mut last = read()?;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = read()?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    bail!("the target partitions of {topic} keep growing: is another producer writing to them?")
}

async fn run_job(job: Job<'_>) -> Result<ExitCode> {
    let Job {
        args,
        reader,
        listing,
        target,
        target_topic,
        identity,
        plan,
        existing,
        checkpoint_path,
    } = job;
    let cfg = producer_config(args, target)?;
    let state = Arc::new(JobState {
        progress: plan
            .iter()
            .map(|p| {
                Mutex::new(Progress {
                    target_base: 0,
                    next_source: p.start,
                    delivered: 0,
                })
            })
            .collect(),
        records: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        failure: Mutex::new(None),
        stop: AtomicBool::new(false),
    });
    let producer: Replayer = cfg
        .create_with_context(ReplayContext {
            state: Arc::clone(&state),
        })
        .context("cannot create the producer for the target")?;
    let needed = plan.iter().map(|p| p.partition + 1).max().unwrap_or(1);
    ensure_target_topic(&cfg, &producer, target_topic, needed).await?;
    let partitions: Vec<i32> = plan.iter().map(|p| p.partition).collect();
    let high = settled_watermarks(&producer, target_topic, &partitions).await?;

    // Where each partition starts, and how many already delivered records to skip.
    let mut starts = Vec::with_capacity(plan.len());
    let mut already = 0u64;
    for (i, pp) in plan.iter().enumerate() {
        let (progress, skip) = match existing
            .as_ref()
            .and_then(|c| c.progress.get(&pp.partition))
        {
            None => (
                Progress {
                    target_base: high[i],
                    next_source: pp.start,
                    delivered: 0,
                },
                0,
            ),
            Some(saved) => {
                let found = u64::try_from(high[i] - saved.target_base).unwrap_or(0);
                ensure!(
                    high[i] >= saved.target_base && found >= saved.delivered,
                    "target partition {target_topic}-{} holds fewer records than the checkpoint says were delivered ({} since offset {}, checkpoint: {}); was the topic deleted or truncated? Pass --restart to replay again",
                    pp.partition,
                    high[i] - saved.target_base,
                    saved.target_base,
                    saved.delivered
                );
                (*saved, found - saved.delivered)
            }
        };
        already += progress.delivered + skip;
        *state.progress[i].lock() = progress;
        starts.push((progress.next_source, skip));
    }
    let resuming = existing.is_some();
    let mut checkpoint = Checkpoint {
        version: CHECKPOINT_VERSION,
        job: identity,
        plan: plan.clone(),
        progress: BTreeMap::new(),
        complete: false,
        updated_at: String::new(),
    };
    let snapshot = |c: &mut Checkpoint, state: &JobState| {
        c.progress = plan
            .iter()
            .zip(&state.progress)
            .map(|(pp, p)| (pp.partition, *p.lock()))
            .collect();
    };
    snapshot(&mut checkpoint, &state);
    checkpoint.save(&checkpoint_path)?;

    let total: u64 = plan.iter().map(|p| (p.end - p.start).max(0) as u64).sum();
    if resuming {
        eprintln!(
            "resuming from {}: {already} of about {total} records already delivered",
            checkpoint_path.display()
        );
    }
    let limiter = args.rate_limit.map(|r| Arc::new(RateLimiter::new(r)));
    let producer = Arc::new(producer);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (pp, (at, skip))) in plan.iter().zip(starts).enumerate() {
        let worker = Worker {
            index: i,
            partition: pp.partition,
            end: pp.end,
            topic_id: listing.topic_id,
            target_topic: target_topic.to_string(),
            reader: Arc::clone(&reader),
            producer: Arc::clone(&producer),
            state: Arc::clone(&state),
            limiter: limiter.clone(),
        };
        tasks.spawn(async move { worker.run(at, skip).await });
    }

    let progress = ProgressView::new(total, already, args.progress_interval);
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => state.fail(format!("{e:#}")),
                Some(Err(e)) => state.fail(format!("a partition task failed: {e}")),
            },
            _ = tick.tick() => {
                snapshot(&mut checkpoint, &state);
                checkpoint.save(&checkpoint_path)?;
                progress.update(already + state.records.load(Ordering::Relaxed), state.bytes.load(Ordering::Relaxed));
            }
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                state.stop.store(true, Ordering::SeqCst);
                eprintln!("interrupted: sending what is queued, then saving the checkpoint");
            }
        }
    }
    // Everything handed to the producer is delivered (or failed) before the last checkpoint.
    let flushed = tokio::task::spawn_blocking({
        let producer = Arc::clone(&producer);
        move || producer.flush(Duration::from_secs(300))
    })
    .await?;
    if let Err(e) = flushed {
        state.fail(format!("records were still undelivered after 300 s: {e}"));
    }
    snapshot(&mut checkpoint, &state);
    let failure = state.failure.lock().clone();
    let records = state.records.load(Ordering::Relaxed);
    let bytes = state.bytes.load(Ordering::Relaxed);
    progress.finish(already + records, bytes);
    if failure.is_none() && !interrupted {
        // Each target partition must hold exactly what the job delivered.
        let high = settled_watermarks(&producer, target_topic, &partitions).await?;
        for (i, pp) in plan.iter().enumerate() {
            let p = *state.progress[i].lock();
            let found = high[i] - p.target_base;
            ensure!(
                found == p.delivered as i64,
                "target partition {target_topic}-{} holds {found} records since the job started, the job delivered {}: another producer writes to it",
                pp.partition,
                p.delivered
            );
        }
        checkpoint.complete = true;
    }
    checkpoint.save(&checkpoint_path)?;
    let elapsed = started.elapsed().as_secs_f64();
    let summary = json!({
        "topic": listing.topic,
        "target_topic": target_topic,
        "records": records,
        "bytes": bytes,
        "skipped_already_delivered": already,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "records_per_second": (records as f64 / elapsed.max(1e-9)).round(),
        "mb_per_second": ((bytes as f64 / 1e6 / elapsed.max(1e-9)) * 100.0).round() / 100.0,
        "resumed": resuming,
        "complete": checkpoint.complete,
        "checkpoint": checkpoint_path.display().to_string(),
        "archive_get_requests": reader.store().counters.requests(sediment_archive::Op::Get),
        "archive_list_requests": reader.store().counters.requests(sediment_archive::Op::List),
        "error": failure,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "replayed {records} records ({:.1} MB) of {} into {target_topic} in {elapsed:.1} s ({} records/s, {} MB/s){}",
            bytes as f64 / 1e6,
            listing.topic,
            summary["records_per_second"],
            summary["mb_per_second"],
            if resuming {
                format!("; {already} were already delivered")
            } else {
                String::new()
            }
        );
    }
    if let Some(why) = failure {
        bail!(
            "replay stopped: {why}; the checkpoint {} is kept, rerun the same command to resume",
            checkpoint_path.display()
        );
    }
    if interrupted {
        eprintln!(
            "stopped; rerun the same command to resume from {}",
            checkpoint_path.display()
        );
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads one partition from the archive and hands its records to the producer.
struct Worker {
    index: usize,
    partition: i32,
    end: i64,
    topic_id: Uuid,
    target_topic: String,
    reader: Arc<ArchiveReader>,
    producer: Arc<Replayer>,
    state: Arc<JobState>,
    limiter: Option<Arc<RateLimiter>>,
}

impl Worker {
    async fn run(self, mut at: i64, mut skip: u64) -> Result<()> {
        let skipping = skip;
        let mut scratch = Vec::new();
        while at < self.end && !self.state.stop.load(Ordering::Relaxed) {
            let read = self
                .reader
                .read(self.topic_id, self.partition, at, READ_BYTES, true)
                .await
                .with_context(|| {
                    format!(
                        "cannot read partition {} at offset {at} from the archive",
                        self.partition
                    )
                })?;
            let Some(read) = read else { break };
            let mut rest: &[u8] = &read.records;
            while !rest.is_empty() {
                let header = BatchHeader::parse(rest).context("a rebuilt batch does not parse")?;
                let (batch, tail) = rest.split_at(header.total_size());
                rest = tail;
                if header.is_control() || header.last_offset() < at {
                    continue;
                }
                let decoded = DecodedBatch::decode(batch, usize::MAX, &mut scratch)?;
                let records = decoded.records()?;
                let sizes: Vec<u32> = records.iter().map(record_bytes).collect();
                if let Some(l) = &self.limiter {
                    l.acquire(sizes.iter().map(|&s| u64::from(s)).sum()).await;
                }
                for (r, bytes) in records.iter().zip(sizes) {
                    let offset = header.base_offset() + i64::from(r.offset_delta);
                    if offset < at {
                        continue;
                    }
                    if offset >= self.end || self.state.stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    at = offset + 1;
                    if skip > 0 {
                        // Delivered by a run that was stopped before its checkpoint said so.
                        skip -= 1;
                        if skip == 0 {
                            // Nothing of this partition is in flight yet.
                            let mut p = self.state.progress[self.index].lock();
                            p.delivered += skipping;
                            p.next_source = at;
                        }
                        continue;
                    }
                    self.send(r, decoded.timestamp(r), offset, bytes).await?;
                }
            }
            at = at.max(read.next_offset);
        }
        Ok(())
    }

    async fn send(
        &self,
        r: &sediment_archive::Record<'_>,
        timestamp: i64,
        offset: i64,
        bytes: u32,
    ) -> Result<()> {
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in r.headers.clone() {
                headers = headers.insert(Header {
                    key: &String::from_utf8_lossy(k),
                    value: v,
                });
            }
            let mut record: BaseRecord<'_, [u8], [u8], Box<Sent>> = BaseRecord::with_opaque_to(
                &self.target_topic,
                Box::new(Sent {
                    index: self.index,
                    offset,
                    bytes,
                }),
            )
            .partition(self.partition)
            .timestamp(timestamp)
            .headers(headers);
            if let Some(k) = r.key {
                record = record.key(k);
            }
            if let Some(v) = r.value {
                record = record.payload(v);
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => bail!("cannot produce the record at source offset {offset}: {e}"),
            }
        }
    }
}

/// Bytes of a record's key, value and headers.
fn record_bytes(r: &sediment_archive::Record<'_>) -> u32 {
    let h: usize = r
        .headers
        .clone()
        .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
        .sum();
    (r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len) + h) as u32
}

/// A progress bar on a terminal, a line every few seconds otherwise.
struct ProgressView {
    bar: Option<ProgressBar>,
    total: u64,
    interval: Duration,
    last_line: Mutex<Instant>,
    started: Instant,
    first: u64,
}

impl ProgressView {
    fn new(total: u64, done: u64, interval_secs: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records ({per_sec}, ETA {eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(done);
            bar
        });
        Self {
            bar,
            total,
            interval: Duration::from_secs(interval_secs.max(1)),
            last_line: Mutex::new(Instant::now()),
            started: Instant::now(),
            first: done,
        }
    }

    fn update(&self, done: u64, bytes: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let mb_s = bytes as f64 / 1e6 / secs;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(format!("{mb_s:.1} MB/s"));
            return;
        }
        let mut last = self.last_line.lock();
        if last.elapsed() < self.interval {
            return;
        }
        *last = Instant::now();
        let rate = (done - self.first) as f64 / secs;
        let left = self.total.saturating_sub(done) as f64;
        let eta = if rate > 0.0 {
            format!("{:.0} s", left / rate)
        } else {
            "?".into()
        };
        eprintln!(
            "replay: {done}/{} records ({:.1}%), {rate:.0} records/s, {mb_s:.1} MB/s, ETA {eta}",
            self.total,
            100.0 * done as f64 / self.total.max(1) as f64
        );
    }

    fn finish(&self, done: u64, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.finish_with_message(format!("{:.1} MB", bytes as f64 / 1e6));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert_eq!(parse_size("800KB"), Ok(800_000));
        assert_eq!(parse_size("50MiB"), Ok(50 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("ten").unwrap_err().contains("not a size"));
        assert!(
            parse_size("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn bounds_are_offsets_times_or_earliest() {
        assert_eq!(parse_bound("--from", "earliest").unwrap(), Bound::Earliest);
        assert_eq!(parse_bound("--from", "1200").unwrap(), Bound::Offset(1200));
        assert_eq!(
            parse_bound("--to", "2026-11-27T10:00:00Z").unwrap(),
            Bound::Time(1_795_773_600_000)
        );
        assert_eq!(
            parse_bound("--to", "2026-11-27T10:00:00").unwrap(),
            Bound::Time(1_795_773_600_000)
        );
        assert!(parse_bound("--to", "earliest").is_err());
        assert!(parse_bound("--from", "-5").is_err());
        assert!(parse_bound("--from", "yesterday").is_err());
    }
}
