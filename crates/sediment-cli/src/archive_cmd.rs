//! `sediment archive ls|describe|verify`: the archive as the running broker's manifest sees it,
//! read through the admin API (`--admin`, default `http://localhost:9644`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::admin_client::{Common, get};
use serde_json::Value;

/// `sediment archive …`
#[derive(Debug, Subcommand)]
pub(crate) enum ArchiveCommand {
    /// Archived segments, lag and size per partition.
    Ls {
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Every manifest entry of a topic: offsets, times, rows, bytes, row groups, object key.
    Describe {
        /// The topic.
        topic: String,
        /// Only this partition.
        #[arg(long)]
        partition: Option<i32>,
        #[command(flatten)]
        common: Common,
    },
    /// Checks that every manifest entry's object exists and matches it (size, offsets, rows,
    /// segment checksum). Exits 1 when something does not.
    Verify {
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or(-1)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub(crate) fn run(cmd: ArchiveCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cmd {
            ArchiveCommand::Ls { topic, common } => {
                let q: Vec<_> = topic.into_iter().map(|t| ("topic", t)).collect();
                let v = get(&common.admin, "/v1/archive", &q, false).await?;
                if common.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(ExitCode::SUCCESS);
                }
                println!("archive: {}", v["url"].as_str().unwrap_or("?"));
                if let Some(why) = v["disabled"].as_str() {
                    println!("archiving is OFF: {why}");
                } else if !v["claimed"].as_bool().unwrap_or(false) {
                    println!("store not reached yet");
                }
                if let Some(e) = v["last_error"].as_str() {
                    println!("last error: {e}");
                }
                println!(
                    "{:<30} {:>5} {:>8} {:>12} {:>14} {:>14} {:>14} {:>12} {:>14}",
                    "TOPIC",
                    "PART",
                    "SEGMENTS",
                    "ROWS",
                    "ARCHIVE_BYTES",
                    "ARCHIVE_START",
                    "ARCHIVE_END",
                    "LAG_SEGMENTS",
                    "LOCAL_START"
                );
                for p in v["partitions"].as_array().into_iter().flatten() {
                    println!(
                        "{:<30} {:>5} {:>8} {:>12} {:>14} {:>14} {:>14} {:>12} {:>14}{}",
                        p["topic"].as_str().unwrap_or("?"),
                        i(&p["partition"]),
                        u(&p["segments"]),
                        u(&p["rows"]),
                        u(&p["object_bytes"]),
                        i(&p["start_offset"]),
                        i(&p["end_offset"]),
                        u(&p["lag_segments"]),
                        i(&p["local_start_offset"]),
                        if p["remote_storage_enable"].as_bool() == Some(false) {
                            "  (remote.storage.enable=false)"
                        } else {
                            ""
                        }
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            ArchiveCommand::Describe {
                topic,
                partition,
                common,
            } => {
                let q: Vec<_> = partition
                    .into_iter()
                    .map(|p| ("partition", p.to_string()))
                    .collect();
                let v = get(
                    &common.admin,
                    &format!("/v1/archive/topics/{topic}"),
                    &q,
                    false,
                )
                .await?;
                if common.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(ExitCode::SUCCESS);
                }
                println!(
                    "topic {} (id {})",
                    topic,
                    v["topic_id"].as_str().unwrap_or("?")
                );
                for p in v["partitions"].as_array().into_iter().flatten() {
                    let segments = p["segments"].as_array().cloned().unwrap_or_default();
                    println!(
                        "partition {}: {} archived segments",
                        i(&p["partition"]),
                        segments.len()
                    );
                    if segments.is_empty() {
                        continue;
                    }
                    println!(
                        "  {:>20} {:>20} {:>10} {:>15} {:>15} {:>12} {:>5}  KEY",
                        "BASE", "LAST", "ROWS", "MIN_TIMESTAMP", "MAX_TIMESTAMP", "BYTES", "RGS"
                    );
                    for s in segments {
                        println!(
                            "  {:>20} {:>20} {:>10} {:>15} {:>15} {:>12} {:>5}  {}",
                            i(&s["base_offset"]),
                            i(&s["last_offset"]),
                            u(&s["rows"]),
                            i(&s["min_timestamp"]),
                            i(&s["max_timestamp"]),
                            u(&s["object_bytes"]),
                            s["row_groups"].as_array().map_or(0, Vec::len),
                            s["key"].as_str().unwrap_or("?")
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            ArchiveCommand::Verify { topic, common } => {
                let q: Vec<_> = topic.into_iter().map(|t| ("topic", t)).collect();
                let v = get(&common.admin, "/v1/archive/verify", &q, true).await?;
                let problems = v["problems"].as_array().cloned().unwrap_or_default();
                if common.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "checked {} manifest entries ({} rows, {} bytes)",
                        u(&v["checked"]),
                        u(&v["rows"]),
                        u(&v["bytes"])
                    );
                    for p in &problems {
                        println!(
                            "PROBLEM {}: {}",
                            p["key"].as_str().unwrap_or("?"),
                            p["problem"].as_str().unwrap_or("?")
                        );
                    }
                    if problems.is_empty() {
                        println!("OK: every entry's object exists and matches");
                    } else {
                        println!("{} problems", problems.len());
                    }
                }
                Ok(if problems.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
        }
    })
}
