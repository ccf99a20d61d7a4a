//! Metadata commit benchmark: consumer-offset commits through the Raft metadata service
//! (`sediment-meta`), each durable (redb fsync) before it is acknowledged.
//!
//! 1. Latency: one writer commits one offset at a time; p50/p99/max of each commit.
//! 2. Throughput: `--writers` tasks commit at once; openraft appends the entries that are
//!    waiting together, so one fsync covers many commits. Commits per second.
//!
//! `--voters 1` (default): a single voter in-process; the storage and Raft-engine cost
//! without replication. `--voters 3`: three `sediment serve --process-roles controller`
//! processes on loopback, each with its own Raft log, and the writers commit through
//! `MetaClient` over HTTP to the leader; each commit is acknowledged once two voters have it
//! on disk.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use sediment_benches::procs;
use sediment_benches::{procs::ChildGuard, targets};
use sediment_meta::{
    Command, CommittedOffset, MetaClient, MetaError, MetaOptions, MetaService, MetaState,
    OffsetToCommit, Outcome,
};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "meta",
    about = "Measure offset commits through the Raft metadata service"
)]
struct Args {
    /// Commits timed one at a time.
    #[arg(long, default_value_t = 2_000)]
    sequential: usize,
    /// Commits made by the concurrent writers together.
    #[arg(long, default_value_t = 50_000)]
    concurrent: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Voters: 1 (in-process) or more (separate processes on loopback).
    #[arg(long, default_value_t = 1)]
    voters: u64,
    /// Directory for the Raft log (default: the system temp dir).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn commit(i: usize) -> Command {
    Command::CommitOffsets {
        group: format!("group-{}", i % 100),
        offsets: vec![OffsetToCommit {
            topic: "orders".into(),
            partition: (i % 12) as i32,
            offset: CommittedOffset {
                offset: i as i64,
                metadata: None,
                leader_epoch: 0,
                commit_timestamp_ms: 0,
            },
        }],
    }
}

/// Where the commits go: the in-process voter, or a client of a quorum of processes.
#[derive(Clone)]
enum Target {
    Local(Arc<MetaService>),
    Remote(MetaClient),
}

impl Target {
    async fn write(&self, cmd: Command) -> Result<Outcome, MetaError> {
        match self {
            Target::Local(m) => m.write(cmd).await,
            Target::Remote(c) => c.write(&cmd).await,
        }
    }

    async fn read(&self) -> Result<MetaState, MetaError> {
        match self {
            Target::Local(m) => m.read().await,
            Target::Remote(c) => c.read().await,
        }
    }
}

/// Starts `n` voter processes under `dir`; returns them and a client whose first address is
/// the leader's.
async fn start_quorum(n: u64, dir: &std::path::Path) -> Result<(Vec<ChildGuard>, MetaClient)> {
    let bin = targets::sediment_bin()?;
    let addrs: Vec<String> = (0..n)
        .map(|_| procs::free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_>>()?;
    let voters = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}@{a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i + 1;
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["serve", "--process-roles", "controller", "--node-id"])
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(dir.join(format!("voter-{id}")))
            .args([
                "--controller-listen",
                addr,
                "--controller-quorum-voters",
                &voters,
            ])
            .env("RUST_LOG", "warn");
        let log = dir.join(format!("voter-{id}.log"));
        children.push(ChildGuard::spawn(
            &format!("voter {id}"),
            &mut cmd,
            Some(&log),
        )?);
    }
    let probe = MetaClient::new(addrs.clone(), Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        for c in &mut children {
            c.ensure_running()?;
        }
        let mut found = None;
        for a in &addrs {
            if let Ok(s) = probe.status_of(a).await
                && s.state == "leader"
            {
                found = Some(a.clone());
            }
        }
        if let Some(a) = found {
            break a;
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("{n} voters on {addrs:?}; leader at {leader}");
    let mut ordered = vec![leader.clone()];
    ordered.extend(addrs.into_iter().filter(|a| *a != leader));
    Ok((children, MetaClient::new(ordered, Duration::from_secs(30))))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    let args = Args::parse();
    let title = if args.voters > 1 {
        format!(
            "Sediment metadata commit benchmark ({} voter processes on loopback, HTTP, redb fsync per append)",
            args.voters
        )
    } else {
        "Sediment metadata commit benchmark (single voter in-process, redb fsync per append)".into()
    };
    let machine = procs::print_header(&title);
    let tmp = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("sediment-meta-bench-")
        .tempdir_in(&tmp)?;
    println!("raft log in {}", dir.path().display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut voters = Vec::new();
        let meta = if args.voters > 1 {
            let (children, client) = start_quorum(args.voters, dir.path()).await?;
            voters = children;
            Target::Remote(client)
        } else {
            Target::Local(Arc::new(
                MetaService::open_single(dir.path(), 1, MetaOptions::default())
                    .await
                    .context("open the metadata node")?,
            ))
        };

        let mut latencies = Vec::with_capacity(args.sequential);
        let started = Instant::now();
        for i in 0..args.sequential {
            let t = Instant::now();
            meta.write(commit(i)).await?;
            latencies.push(t.elapsed());
        }
        let seq_secs = started.elapsed().as_secs_f64();
        latencies.sort();
        let (p50, p99, max) = (
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
        println!(
            "sequential: {} commits in {seq_secs:.2} s = {:.0} commits/s; latency p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
            args.sequential,
            args.sequential as f64 / seq_secs
        );

        let started = Instant::now();
        let per_writer = args.concurrent / args.writers.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..args.writers {
            let meta = meta.clone();
            tasks.spawn(async move {
                let mut lat = Vec::with_capacity(per_writer);
                for i in 0..per_writer {
                    let t = Instant::now();
                    meta.write(commit(w * per_writer + i)).await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, anyhow::Error>(lat)
            });
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.extend(r??);
        }
        let conc_secs = started.elapsed().as_secs_f64();
        all.sort();
        let total = all.len();
        let (cp50, cp99) = (percentile(&all, 0.50), percentile(&all, 0.99));
        println!(
            "concurrent: {} writers, {total} commits in {conc_secs:.2} s = {:.0} commits/s; latency p50 {cp50:.2} ms, p99 {cp99:.2} ms",
            args.writers,
            total as f64 / conc_secs
        );
        let state = meta.read().await?;
        anyhow::ensure!(
            state.offsets.len() == 100,
            "every group's offsets are in the state"
        );
        if let Target::Local(m) = &meta {
            m.shutdown().await?;
        }
        for v in voters {
            v.terminate(Duration::from_secs(10))?;
        }
        if let Some(path) = &args.json {
            let out = json!({
                "command": procs::command_line(),
                "voters": args.voters,
                "machine": machine,
                "sequential": {"commits": args.sequential, "secs": seq_secs,
                    "commits_per_s": args.sequential as f64 / seq_secs,
                    "p50_ms": p50, "p99_ms": p99, "max_ms": max},
                "concurrent": {"writers": args.writers, "commits": total, "secs": conc_secs,
                    "commits_per_s": total as f64 / conc_secs, "p50_ms": cp50, "p99_ms": cp99},
            });
            std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
        }
        Ok(())
    })
}
