//! Replay benchmark: consuming history from the archive against consuming the hot tier, from
//! one run on one machine.
//!
//! One `sediment serve` archives into SeaweedFS (S3 over loopback). The same realistic JSON
//! events (`events.rs`) are produced into two topics with the same partitions and segments:
//! `hot` keeps everything on local disk (`remote.storage.enable=false`), `archived` is
//! archived and its sealed segments deleted locally (`local.retention.bytes=0`), so only its
//! empty active segments stay hot. Then librdkafka consumes, from the beginning, with the same
//! settings each time:
//!
//! 1. `hot` (the page cache holds its segments: the best case for the hot tier);
//! 2. `archived` with a cold cache (the broker has never read these objects);
//! 3. `archived` again, warm (the cache holds what fits).
//!
//! Then `sediment replay` copies `archived` from the bucket into a new topic of the same
//! broker, and its own throughput figures are reported.
//!
//! Reported: MB/s of keys and values for each and the ratios against the hot consume (targets:
//! cold at least 0.5, warm at least 0.9), object-store GETs per GiB replayed on the cold pass
//! (target: at most one GET per 4 MiB, i.e. 256 per GiB) and LISTs (target: none), and the
//! broker's resident memory before the replays and at its peak during them, against the
//! configured cache. 1 MB = 10^6 bytes,
//! 1 GiB = 2^30 bytes.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sediment_benches::events;
use sediment_benches::procs::{self, ChildGuard};
use sediment_benches::s3::{
    ACCESS_KEY, BUCKET, SECRET_KEY, admin_get, metric_sum, start_seaweed, weed_bin,
};
use sediment_benches::targets::{self, wait_for_listeners_file};
use sediment_benches::workload::{self, Payloads, Workload, mb_per_s};
use serde_json::{Value, json};

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Debug, Parser)]
#[command(
    name = "replay",
    version,
    about = "Measure replay throughput from the archive against hot consume"
)]
struct Args {
    /// Records per topic.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    #[arg(long, default_value_t = 32)]
    segment_mib: u64,
    /// `archive.cache_memory_bytes` of the broker, MiB.
    #[arg(long, default_value_t = 256)]
    cache_memory_mib: u64,
    /// `archive.cache_disk_bytes` of the broker, MiB.
    #[arg(long, default_value_t = 1024)]
    cache_disk_mib: u64,
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    #[arg(long)]
    weed: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("replay: FAILED: {e:#}");
        std::process::exit(1);
    }
}

#[derive(Debug)]
struct Pass {
    records: u64,
    bytes: u64,
    secs: f64,
    gets: f64,
    lists: f64,
    remote_bytes: f64,
    /// Chunks of row groups decoded during the pass.
    decoded: f64,
}

impl Pass {
    fn mb_s(&self) -> f64 {
        mb_per_s(self.bytes, self.secs)
    }
}

/// Consumes every record of `topic` from the beginning with a throughput-tuned librdkafka
/// consumer; the clock runs from `assign` to the last record. Checks per-partition order.
fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records: u64,
) -> Result<(u64, u64, f64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!(
                "replay-bench-{topic}-{}",
                Instant::now().elapsed().as_nanos()
            ),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", "262144")
        .set("check.crcs", "false")
        .create()
        .context("consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    let start = Instant::now();
    consumer.assign(&tpl)?;
    let deadline = start + Duration::from_secs(1800);
    let mut next = vec![0i64; partitions as usize];
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut last = start;
    while n < records {
        ensure!(
            Instant::now() < deadline,
            "{topic}: {n} of {records} records before the timeout"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                ensure!(
                    m.offset() >= next[p],
                    "{topic}-{p}: offset {} out of order",
                    m.offset()
                );
                next[p] = m.offset() + 1;
                n += 1;
                bytes += (m.key_len() + m.payload_len()) as u64;
                last = Instant::now();
            }
            Some(Err(e)) => anyhow::bail!("{topic}: consumer error {e}"),
            None => {}
        }
    }
    Ok((n, bytes, (last - start).as_secs_f64()))
}

fn run() -> Result<()> {
    let args = Args::parse();
    let tmp = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let machine =
        procs::print_header("Sediment replay benchmark (1 MB = 10^6 bytes, 1 GiB = 2^30 bytes)");
    let t0 = 1_764_000_000_000;
    let evs = events::events(7, (args.records as usize).min(200_000), t0);
    let s3 = start_seaweed(&weed_bin(args.weed.as_deref()), &tmp)?;
    println!("S3 server: SeaweedFS at {}", s3.endpoint);

    let dir = tempfile::Builder::new()
        .prefix("sediment-replay-bench-")
        .tempdir_in(&tmp)?;
    let listeners = dir.path().join("listeners.json");
    let config = dir.path().join("sediment.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nretention_check_interval_ms = 500\n[archive]\ncheck_interval_ms = 500\n\
             gc_interval_ms = 3600000\ncache_memory_bytes = {}\ncache_disk_bytes = {}\n",
            args.cache_memory_mib << 20,
            args.cache_disk_mib << 20
        ),
    )?;
    let mut cmd = Command::new(targets::sediment_bin()?);
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
        .args(["--archive-url", &format!("s3://{BUCKET}/replay")])
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1");
    let mut child =
        ChildGuard::spawn("sediment", &mut cmd, Some(&dir.path().join("sediment.log")))?;
    let bootstrap = wait_for_listeners_file(&listeners, &mut child)?;
    let admin = serde_json::from_str::<Value>(&std::fs::read_to_string(&listeners)?)?["admin"]
        .as_str()
        .context("admin address")?
        .to_string();

    let payloads = Payloads::Json(evs);
    for (topic, archived) in [("hot", false), ("archived", true)] {
        let w = Workload {
            topic: topic.into(),
            records: args.records,
            record_bytes: 0,
            partitions: args.partitions,
            linger_ms: 5,
            batch_bytes: 1_000_000,
            queue_kbytes: 65_536,
            phase_timeout: Duration::from_secs(900),
            broker_cpus: None,
            idempotent: false,
            compression: "lz4".into(),
            client_props: Vec::new(),
        };
        workload::create_topic(&bootstrap, &w)?;
        let seg = (args.segment_mib << 20).to_string();
        // The events are a year old: keep them (retention.ms=-1).
        let mut configs = vec![
            ("segment.bytes", seg.as_str()),
            ("segment.ms", "3000"),
            ("retention.ms", "-1"),
        ];
        if archived {
            // 0: every archived sealed segment leaves local disk (with 1 byte, Kafka's size
            // rule keeps the last one, which would leave nothing to delete).
            configs.push(("local.retention.bytes", "0"));
        } else {
            configs.push(("remote.storage.enable", "false"));
        }
        workload::set_topic_configs(&bootstrap, topic, &configs)?;
        let p = workload::produce(&bootstrap, &w, &payloads)?;
        println!(
            "produced {topic}: {} records, {:.1} MB in {:.1} s",
            p.records,
            p.bytes as f64 / 1e6,
            p.secs
        );
    }
    // Wait until `archived` is in the archive and gone from local disk.
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let v: Value = serde_json::from_str(&admin_get(&admin, "/v1/archive?topic=archived")?)?;
        let parts = v["partitions"].as_array().cloned().unwrap_or_default();
        let done = !parts.is_empty()
            && parts.iter().all(|p| {
                p["end_offset"] == p["log_end_offset"]
                    && p["local_start_offset"] == p["log_end_offset"]
            });
        if done {
            break;
        }
        ensure!(Instant::now() < deadline, "archiving did not finish: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("archived: every record of `archived` is in the archive and none on local disk");

    let pass = |topic: &str| -> Result<Pass> {
        let before = admin_get(&admin, "/metrics")?;
        let (records, bytes, secs) = consume_all(&bootstrap, topic, args.partitions, args.records)?;
        let after = admin_get(&admin, "/metrics")?;
        let delta = |name: &str| metric_sum(&after, name) - metric_sum(&before, name);
        Ok(Pass {
            records,
            bytes,
            secs,
            gets: delta("sediment_object_store_requests_total{op=\"get\"}"),
            lists: delta("sediment_object_store_requests_total{op=\"list\"}"),
            remote_bytes: delta("sediment_archive_remote_read_bytes_total"),
            decoded: delta("sediment_archive_chunks_decoded_total"),
        })
    };
    // Resident memory before each phase, then the peak during it (writing 5 to clear_refs
    // resets the kernel's peak).
    let pid = child.id();
    let rss_kib = |field: &str| -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        Ok(status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0))
    };
    let reset_peak =
        || std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("reset the peak RSS");
    let hot_base_rss_mib = rss_kib("VmRSS:")? / 1024.0;
    reset_peak()?;
    let hot = pass("hot")?;
    let hot_peak_rss_mib = rss_kib("VmHWM:")? / 1024.0;
    let base_rss_mib = rss_kib("VmRSS:")? / 1024.0;
    reset_peak()?;
    let cold = pass("archived")?;
    let warm = pass("archived")?;
    let peak_rss_mib = rss_kib("VmHWM:")? / 1024.0;

    // 4. The replay job: `archived` read straight from the bucket and produced back into the
    //    same broker under another name (idempotent producer, lz4), timed by the job itself.
    let work = dir.path().join("job");
    std::fs::create_dir_all(&work)?;
    let job_started = Instant::now();
    let out = Command::new(targets::sediment_bin()?)
        .args(["replay", "--topic", "archived", "--target", &bootstrap])
        .args(["--target-topic", "archived-copy", "--json"])
        .args(["--archive-url", &format!("s3://{BUCKET}/replay")])
        .current_dir(&work)
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .output()
        .context("sediment replay")?;
    let job_wall = job_started.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "sediment replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).context("sediment replay --json")?;
    ensure!(
        job["records"].as_u64() == Some(args.records) && job["complete"] == true,
        "the replay job did not deliver every record: {job}"
    );
    child.terminate(Duration::from_secs(30))?;

    let gib = cold.bytes as f64 / GIB;
    let row = |name: &str, p: &Pass| {
        println!(
            "{name:<14} {:>9} records {:>8.1} MB {:>7.2} s {:>8.1} MB/s {:>6.2}x hot   GETs {:>5} LISTs {:>3} remote {:>7.1} MB   chunks decoded {:>4}",
            p.records,
            p.bytes as f64 / 1e6,
            p.secs,
            p.mb_s(),
            p.mb_s() / hot.mb_s(),
            p.gets,
            p.lists,
            p.remote_bytes / 1e6,
            p.decoded
        );
    };
    println!();
    row("hot consume", &hot);
    row("cold replay", &cold);
    row("warm replay", &warm);
    let gets_per_gib = cold.gets / gib;
    println!(
        "\ncold replay: {:.1} GETs per GiB replayed (target <= 256, one per 4 MiB), {} LISTs (target 0)",
        gets_per_gib, cold.lists
    );
    println!(
        "targets: cold {:.2}x hot (>= 0.50: {}), warm {:.2}x hot (>= 0.90: {})",
        cold.mb_s() / hot.mb_s(),
        if cold.mb_s() >= 0.5 * hot.mb_s() {
            "met"
        } else {
            "NOT met"
        },
        warm.mb_s() / hot.mb_s(),
        if warm.mb_s() >= 0.9 * hot.mb_s() {
            "met"
        } else {
            "NOT met"
        },
    );
    println!(
        "replay job     {:>9} records {:>8.1} MB {:>7.2} s {:>8.1} MB/s (keys, values, headers; \
         {:.1} s wall with listing and start-up), {} GETs, {} LIST",
        job["records"],
        job["bytes"].as_f64().unwrap_or(0.0) / 1e6,
        job["seconds"].as_f64().unwrap_or(0.0),
        job["mb_per_second"].as_f64().unwrap_or(0.0),
        job_wall,
        job["archive_get_requests"],
        job["archive_list_requests"]
    );
    println!(
        "broker RSS {:.0} MiB before the hot consume, peak {:.0} MiB during it (+{:.0} MiB)",
        hot_base_rss_mib,
        hot_peak_rss_mib,
        hot_peak_rss_mib - hot_base_rss_mib,
    );
    println!(
        "broker RSS {:.0} MiB before the replays, peak {:.0} MiB during them (+{:.0} MiB) with \
         archive.cache_memory_bytes = {} MiB (disk tier {} MiB)",
        base_rss_mib,
        peak_rss_mib,
        peak_rss_mib - base_rss_mib,
        args.cache_memory_mib,
        args.cache_disk_mib
    );
    if let Some(path) = &args.json {
        let p = |p: &Pass| {
            json!({"records": p.records, "bytes": p.bytes, "secs": p.secs, "mb_s": p.mb_s(),
                   "gets": p.gets, "lists": p.lists, "remote_bytes": p.remote_bytes,
                   "chunks_decoded": p.decoded})
        };
        let out = json!({
            "command": procs::command_line(),
            "machine": machine,
            "hot": p(&hot), "cold": p(&cold), "warm": p(&warm),
            "cold_vs_hot": cold.mb_s() / hot.mb_s(),
            "warm_vs_hot": warm.mb_s() / hot.mb_s(),
            "cold_gets_per_gib": gets_per_gib,
            "rss_before_hot_mib": hot_base_rss_mib,
            "peak_rss_during_hot_mib": hot_peak_rss_mib,
            "rss_before_replay_mib": base_rss_mib,
            "peak_rss_during_replay_mib": peak_rss_mib,
            "cache_memory_mib": args.cache_memory_mib,
            "cache_disk_mib": args.cache_disk_mib,
            "replay_job": job,
            "replay_job_wall_secs": job_wall,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
