//! `recovery`: how long a partition log takes to open after a restart, with and without the
//! idempotent-producer snapshots that let it skip the sealed segments.
//!
//! Writes `--mib` MiB of 16 KiB idempotent batches (rolling `--segment-mib` segments) into a
//! temporary directory with `sediment-log` directly, closes the log the way a `kill -9` would
//! (no shutdown snapshot), then times `PartitionLog::open` three times: with the snapshots the
//! rolls wrote, and with every snapshot deleted (the state is then rebuilt from all segments).
//! Each open is checked to rebuild the same producer state.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, ensure};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sediment_log::{FlushPolicy, LogConfig, PartitionLog, SystemClock};

#[derive(Parser)]
struct Args {
    /// Data to write, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Segment size, in MiB.
    #[arg(long, default_value_t = 128)]
    segment_mib: u64,
    /// Idempotent producers writing in turn.
    #[arg(long, default_value_t = 8)]
    producers: i64,
}

fn batch(producer_id: i64, sequence: i32, records: usize, value: &Bytes) -> Bytes {
    let recs: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp: 1_750_000_000_000,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.freeze()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let config = LogConfig {
        segment_bytes: args.segment_mib << 20,
        flush: FlushPolicy {
            messages: None,
            ms: None,
        },
        ..LogConfig::default()
    };
    let clock = Arc::new(SystemClock);
    let value = Bytes::from(vec![7u8; 1024]);
    let per_batch = 16;
    let batches = (args.mib << 20) / (per_batch as u64 * 1024);
    let mut log = PartitionLog::open(dir.path(), config.clone(), clock.clone())?;
    let started = Instant::now();
    let mut sequences = vec![0i32; args.producers as usize];
    for i in 0..batches {
        let p = (i % args.producers as u64) as usize;
        log.append(
            &batch(p as i64 + 1000, sequences[p], per_batch, &value),
            0,
            false,
        )?;
        sequences[p] += per_batch as i32;
    }
    let expected = log.producer_states().clone();
    let stats = log.stats();
    println!(
        "wrote {} MiB in {} segments ({} batches, {} producers) in {:.1} s",
        stats.size_bytes >> 20,
        stats.segments,
        batches,
        args.producers,
        started.elapsed().as_secs_f64()
    );
    drop(log); // no shutdown snapshot, as after kill -9
    let snapshots = || -> Result<Vec<std::path::PathBuf>> {
        Ok(std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
            .collect())
    };
    let time_open = |label: &str| -> Result<()> {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let log = PartitionLog::open(dir.path(), config.clone(), clock.clone())?;
            best = best.min(t.elapsed().as_secs_f64());
            ensure!(
                log.producer_states() == &expected,
                "{label}: producer state differs"
            );
        }
        println!(
            "open {label}: {:.0} ms (best of 3, page cache warm)",
            best * 1000.0
        );
        Ok(())
    };
    println!("snapshots on disk: {}", snapshots()?.len());
    time_open("with producer snapshots")?;
    for s in snapshots()? {
        std::fs::remove_file(s)?;
    }
    time_open("without snapshots (rebuild from every segment)")?;
    Ok(())
}
