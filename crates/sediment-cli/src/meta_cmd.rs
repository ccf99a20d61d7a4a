//! `sediment meta`: look at and change the Raft metadata quorum, as `kafka-metadata-quorum`
//! does for KRaft, through any voter's controller address.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sediment_meta::{MembershipChange, MetaClient, MetaStatus};

/// `sediment meta …`
#[derive(Debug, Args)]
pub(crate) struct MetaArgs {
    /// Controller address(es) of one or more voters, `host:port[,host:port…]`.
    #[arg(
        long,
        env = "SEDIMENT_BOOTSTRAP_CONTROLLER",
        value_name = "HOST:PORT,..."
    )]
    bootstrap_controller: String,
    /// How long to keep retrying while no leader is elected or a voter is down.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
    #[command(subcommand)]
    command: MetaCommand,
}

#[derive(Debug, Subcommand)]
enum MetaCommand {
    /// The leader, term, voters and learners, and how far each member's log and state machine
    /// have come.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prints the whole metadata (topics, leaders, committed offsets, archive manifest) as
    /// JSON, read linearizably from the leader.
    State,
    /// Adds a node as a learner; returns once it has caught up with the log.
    AddLearner {
        /// Its node id.
        #[arg(long)]
        id: u64,
        /// Its controller address.
        #[arg(long, value_name = "HOST:PORT")]
        addr: String,
    },
    /// Makes a node a voter. With `--addr` it is first added as a learner; without it, it must
    /// already be one.
    AddVoter {
        /// Its node id.
        #[arg(long)]
        id: u64,
        /// Its controller address, when it is not yet a learner.
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<String>,
    },
    /// Removes a voter or learner from the quorum.
    Remove {
        /// Its node id.
        #[arg(long)]
        id: u64,
    },
}

pub(crate) fn run(args: MetaArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: MetaArgs) -> Result<ExitCode> {
    let addrs: Vec<String> = args
        .bootstrap_controller
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        !addrs.is_empty(),
        "--bootstrap-controller needs at least one HOST:PORT"
    );
    let client = MetaClient::new(addrs.clone(), Duration::from_secs(args.timeout));
    match args.command {
        MetaCommand::Status { json } => {
            let mut views = Vec::new();
            for addr in &addrs {
                views.push((addr.clone(), client.status_of(addr).await));
            }
            // The members' own views, from the addresses the first reachable node knows.
            let known = views
                .iter()
                .find_map(|(_, v)| v.as_ref().ok())
                .map(|s| s.nodes.clone())
                .unwrap_or_default();
            for addr in known.values() {
                if !addrs.contains(addr) {
                    views.push((addr.clone(), client.status_of(addr).await));
                }
            }
            print_status(&views, json)?;
            let any = views.iter().any(|(_, v)| v.is_ok());
            Ok(if any {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        MetaCommand::State => {
            let state = client.read().await.context("cannot read the metadata")?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            Ok(ExitCode::SUCCESS)
        }
        MetaCommand::AddLearner { id, addr } => {
            let after = client
                .change_membership(&MembershipChange::AddLearner { id, addr })
                .await
                .with_context(|| format!("cannot add node {id} as a learner"))?;
            println!(
                "node {id} is a learner; voters {:?}, learners {:?}",
                after.voters, after.learners
            );
            Ok(ExitCode::SUCCESS)
        }
        MetaCommand::AddVoter { id, addr } => {
            if let Some(addr) = addr {
                client
                    .change_membership(&MembershipChange::AddLearner { id, addr })
                    .await
                    .with_context(|| format!("cannot add node {id} as a learner"))?;
            }
            let after = client
                .change_membership(&MembershipChange::AddVoters { ids: vec![id] })
                .await
                .with_context(|| format!("cannot make node {id} a voter"))?;
            println!(
                "node {id} is a voter; voters {:?}, learners {:?}",
                after.voters, after.learners
            );
            Ok(ExitCode::SUCCESS)
        }
        MetaCommand::Remove { id } => {
            let after = client
                .change_membership(&MembershipChange::RemoveNodes { ids: vec![id] })
                .await
                .with_context(|| format!("cannot remove node {id}"))?;
            println!(
                "node {id} removed; voters {:?}, learners {:?}",
                after.voters, after.learners
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_status(
    views: &[(String, Result<MetaStatus, sediment_meta::MetaError>)],
    json: bool,
) -> Result<()> {
    if json {
        let out: Vec<serde_json::Value> = views
            .iter()
            .map(|(addr, v)| match v {
                Ok(s) => serde_json::json!({ "addr": addr, "status": s }),
                Err(e) => serde_json::json!({ "addr": addr, "error": e.to_string() }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if let Some(s) = views.iter().find_map(|(_, v)| v.as_ref().ok()) {
        let leader = s
            .leader
            .map_or_else(|| "none".to_string(), |l| l.to_string());
        println!("LeaderId:       {leader}");
        println!("Term:           {}", s.term);
        println!("CurrentVoters:  {:?}", s.voters);
        println!("CurrentLearners:{:?}", s.learners);
        println!();
    }
    println!(
        "{:<8} {:<24} {:<10} {:>6} {:>14} {:>12}",
        "NODE", "ADDRESS", "STATE", "TERM", "LAST-LOG", "APPLIED"
    );
    for (addr, v) in views {
        match v {
            Ok(s) => println!(
                "{:<8} {:<24} {:<10} {:>6} {:>14} {:>12}",
                s.node_id,
                addr,
                s.state,
                s.term,
                s.last_log_index.map_or("-".into(), |i| i.to_string()),
                s.last_applied.map_or("-".into(), |i| i.to_string()),
            ),
            Err(e) => println!("{:<8} {:<24} unreachable: {e}", "?", addr),
        }
    }
    Ok(())
}
