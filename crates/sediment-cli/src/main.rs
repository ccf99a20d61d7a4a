//! The `sediment` binary.

mod admin_client;
mod archive_cmd;
mod groups_cmd;
mod meta_cmd;
mod replay_cmd;
mod serve;
mod settings;

/// mimalloc instead of the system allocator: request and fetch buffers are megabytes each, and
/// glibc serves those with a fresh mmap per allocation, so every fetch paid page faults to
/// fault the buffer in and munmap to give it back (16% of broker CPU in the consume benchmark,
/// see docs/performance.md). mimalloc reuses freed memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Sediment: a Kafka-compatible streaming service with tiered storage.
#[derive(Debug, Parser)]
#[command(name = "sediment", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker. With no flags: data in ./sediment-data, Kafka on :9092, admin HTTP on :9644,
    /// archive in ./sediment-data/archive.
    Serve(Box<ServeArgs>),
    /// Inspect and check the archive (through a running broker's admin API).
    #[command(subcommand)]
    Archive(archive_cmd::ArchiveCommand),
    /// Manage consumer groups (through a running broker's admin API).
    #[command(subcommand)]
    Groups(groups_cmd::GroupsCommand),
    /// Replay a topic's archived history from object storage into any Kafka-compatible
    /// cluster (no broker needed on the source side); resumable, exactly once per record.
    Replay(Box<replay_cmd::ReplayArgs>),
    /// Inspect and change the Raft metadata quorum (like kafka-metadata-quorum).
    Meta(meta_cmd::MetaArgs),
}

/// Flags of `sediment serve`. Each overrides the config file and the environment.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML config file (see docs/operations.md).
    #[arg(long, env = "SEDIMENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory for partition logs and metadata.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// This broker's id.
    #[arg(long, value_name = "N")]
    node_id: Option<i32>,
    /// Address for Kafka clients, e.g. 0.0.0.0:9092 (port 0 picks a free port).
    #[arg(long, value_name = "HOST:PORT")]
    kafka_listen: Option<String>,
    /// Address given to clients in Metadata, when it differs from the listen address (a pod
    /// behind a Service, a NAT).
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Address of the TLS listener (Kafka's SSL listener), e.g. 0.0.0.0:9094; needs
    /// --tls-cert-file and --tls-key-file.
    #[arg(long, value_name = "HOST:PORT")]
    tls_listen: Option<String>,
    /// Address given to clients of the TLS listener (an OpenShift Route: its host and 443).
    #[arg(long, value_name = "HOST:PORT")]
    tls_advertised_listener: Option<String>,
    /// PEM certificate chain of the TLS listener.
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    #[arg(long, value_name = "FILE")]
    tls_key_file: Option<PathBuf>,
    /// Address for the admin HTTP server (metrics, health).
    #[arg(long, value_name = "HOST:PORT")]
    admin_listen: Option<String>,
    /// Where sealed segments are archived as Parquet: file:///path or s3://bucket/prefix
    /// (S3 endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION or the config file). Default: <data dir>/archive.
    #[arg(long, value_name = "URL")]
    archive_url: Option<String>,
    /// What this process runs (Kafka's process.roles): `controller` runs a metadata voter only.
    /// Unset: a complete single node with its metadata in-process.
    #[arg(long, value_name = "ROLES")]
    process_roles: Option<String>,
    /// Address of the metadata node (Raft between voters and the metadata API), e.g.
    /// 0.0.0.0:9093.
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<String>,
    /// The initial metadata voters, the same on every voter: 1@host:9093,2@host:9093,3@host:9093.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    controller_quorum_voters: Option<String>,
    /// Load and validate the configuration, print the effective settings, and exit.
    #[arg(long)]
    check_config: bool,
    /// Once listening, write the bound addresses as JSON to this file (for supervisors and
    /// tests that use port 0).
    #[arg(long, value_name = "FILE")]
    listeners_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args).map(|()| ExitCode::SUCCESS),
        Command::Archive(cmd) => archive_cmd::run(cmd),
        Command::Groups(cmd) => groups_cmd::run(cmd),
        Command::Replay(args) => replay_cmd::run(*args),
        Command::Meta(args) => meta_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sediment: {e:#}");
            ExitCode::from(2)
        }
    }
}
