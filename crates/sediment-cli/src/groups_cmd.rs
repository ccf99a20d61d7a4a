//! `sediment groups reset-offsets`: move a consumer group's committed offsets, as
//! `kafka-consumer-groups --reset-offsets` does (a dry run unless `--execute`), through the
//! running broker's admin API. Earliest and `--to-datetime` reach into the archive.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Subcommand};
use serde_json::{Value, json};

use crate::admin_client::{Common, post_json};

/// `sediment groups …`
#[derive(Debug, Subcommand)]
pub(crate) enum GroupsCommand {
    /// Plans new committed offsets for a group on one topic, and commits them with `--execute`.
    /// The group must have no active members.
    #[command(group(ArgGroup::new("target").required(true).args(
        ["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"]
    )))]
    ResetOffsets {
        /// The consumer group.
        #[arg(long)]
        group: String,
        /// The topic, optionally with partitions: `orders` or `orders:0,2`.
        #[arg(long, value_name = "TOPIC[:P,P…]")]
        topic: String,
        /// The start of the whole log, archive included.
        #[arg(long)]
        to_earliest: bool,
        /// The log end.
        #[arg(long)]
        to_latest: bool,
        /// This offset (clamped into the log's range).
        #[arg(long, value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// The first record at or after this time: RFC 3339 (2026-11-27T10:00:00Z),
        /// YYYY-MM-DDTHH:MM:SS[.sss] (UTC) or milliseconds since the epoch.
        #[arg(long, value_name = "TIME")]
        to_datetime: Option<String>,
        /// Move the committed offsets by N (negative: back).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        shift_by: Option<i64>,
        /// Commit the new offsets (without it, only print the plan).
        #[arg(long)]
        execute: bool,
        #[command(flatten)]
        common: Common,
    },
}

/// Splits `topic[:p,p…]`.
fn parse_topic(s: &str) -> Result<(String, Option<Vec<i32>>)> {
    match s.split_once(':') {
        None => Ok((s.to_string(), None)),
        Some((topic, parts)) => {
            let partitions = parts
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .with_context(|| format!("bad partition '{p}' in --topic {s}"))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((topic.to_string(), Some(partitions)))
        }
    }
}

pub(crate) fn run(cmd: GroupsCommand) -> Result<ExitCode> {
    let GroupsCommand::ResetOffsets {
        group,
        topic,
        to_earliest,
        to_latest,
        to_offset,
        to_datetime,
        shift_by,
        execute,
        common,
    } = cmd;
    let (topic, partitions) = parse_topic(&topic)?;
    let to = if to_earliest {
        json!("earliest")
    } else if to_latest {
        json!("latest")
    } else if let Some(o) = to_offset {
        json!({ "offset": o })
    } else if let Some(t) = to_datetime {
        json!({ "datetime": t })
    } else if let Some(n) = shift_by {
        json!({ "shift_by": n })
    } else {
        bail!("say where to: --to-earliest, --to-latest, --to-offset, --to-datetime or --shift-by");
    };
    let body = json!({
        "topic": topic,
        "partitions": partitions,
        "to": to,
        "dry_run": !execute,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let path = format!("/v1/groups/{group}/offsets/reset");
    let plan = runtime.block_on(post_json(&common.admin, &path, &body))?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<40} {:>9} {:>15} {:>15}",
        "GROUP", "TOPIC", "PARTITION", "PREVIOUS-OFFSET", "NEW-OFFSET"
    );
    for p in plan["partitions"].as_array().into_iter().flatten() {
        let previous = match &p["previous"] {
            Value::Null => "-".to_string(),
            v => v.to_string(),
        };
        println!(
            "{:<24} {:<40} {:>9} {:>15} {:>15}",
            group, topic, p["partition"], previous, p["offset"]
        );
    }
    if plan["applied"] == true {
        println!("committed");
    } else {
        println!("dry run: nothing committed (add --execute to commit)");
    }
    Ok(ExitCode::SUCCESS)
}
