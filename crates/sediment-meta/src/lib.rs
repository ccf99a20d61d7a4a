//! Sediment's metadata service: what the cluster knows (brokers, topics and their configs,
//! partition leaders and leader epochs, committed consumer offsets, the manifest of archived
//! segments, producer-id blocks), replicated with Raft (`openraft`).
//!
//! - [`state`]: the typed [`Command`]s and the deterministic [`MetaState`] they change;
//! - `store`: the durable Raft log (`redb`) and the state machine with its snapshots, checked
//!   by openraft's own storage test suite;
//! - [`MetaService`]: a Raft node. Today: a single voter in-process (the embedded default of
//!   `sediment serve`); the network between voters comes next.
//!
//! openraft's types stay inside this crate: callers see [`Command`], [`Outcome`],
//! [`MetaState`] and [`MetaError`].

pub mod state;
mod store;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};

pub use state::{
    BrokerInfo, Command, CommittedOffset, MetaState, OffsetToCommit, Outcome, PartitionMeta,
    TopicMeta,
};

openraft::declare_raft_types!(
    pub(crate) TypeConfig:
        D = Command,
        R = Outcome,
);

/// Why the metadata service failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The log or state machine could not be read or written.
    #[error("metadata storage: {0}")]
    Storage(String),
    /// Raft refused or could not complete the request (no leader, shutting down…).
    #[error("metadata service: {0}")]
    Raft(String),
}

/// How a node snapshots and compacts its log.
#[derive(Debug, Clone, Copy)]
pub struct MetaOptions {
    /// A snapshot is built after this many entries since the last one; the log before it is
    /// then purged except for the last `logs_kept`.
    pub snapshot_every: u64,
    /// Entries kept before the last snapshot.
    pub logs_kept: u64,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            snapshot_every: 10_000,
            logs_kept: 1_000,
        }
    }
}

/// Writes waiting for the group commit.
struct Pending {
    cmd: Command,
    reply: tokio::sync::oneshot::Sender<Result<Outcome, MetaError>>,
}

/// Most commands in one log entry.
const MAX_BATCH: usize = 1024;

/// Group commit: while one entry is being replicated and made durable, the writes that arrive
/// wait, and then go together as one [`Command::Batch`] entry (one append, one fsync).
async fn group_commit(
    raft: Raft<TypeConfig>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (cmds, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        let batched = cmds.len() > 1;
        let cmd = if batched {
            Command::Batch(cmds)
        } else {
            cmds.into_iter()
                .next()
                .unwrap_or(Command::Batch(Vec::new()))
        };
        match raft.client_write(cmd).await {
            Ok(r) => match r.data {
                Outcome::Batch(outcomes) if batched => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                outcome => {
                    for reply in replies {
                        let _ = reply.send(Ok(outcome.clone()));
                    }
                }
            },
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(MetaError::Raft(e.to_string())));
                }
            }
        }
    }
}

/// One metadata node.
#[derive(Clone)]
pub struct MetaService {
    raft: Raft<TypeConfig>,
    sm: store::StateMachine,
    node_id: u64,
    queue: tokio::sync::mpsc::UnboundedSender<Pending>,
}

impl std::fmt::Debug for MetaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaService")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl MetaService {
    /// Opens (creating on first use) a single-voter node whose log and snapshots live in
    /// `dir`, and waits until it leads. This is the embedded default: metadata in-process,
    /// persisted under the data directory.
    pub async fn open_single(
        dir: &Path,
        node_id: u64,
        options: MetaOptions,
    ) -> Result<Self, MetaError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| MetaError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let storage = |e: openraft::StorageError<u64>| MetaError::Storage(e.to_string());
        let log = store::LogStore::open(&dir.join("raft.redb")).map_err(storage)?;
        let sm = store::StateMachine::open(dir).map_err(storage)?;
        let config = openraft::Config {
            cluster_name: "sediment".into(),
            heartbeat_interval: 250,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every),
            max_in_snapshot_log_to_keep: options.logs_kept,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MetaError::Raft(e.to_string()))?;
        let raft = Raft::new(node_id, Arc::new(config), NoPeers, log, sm.clone())
            .await
            .map_err(|e| MetaError::Raft(e.to_string()))?;
        let raft_err = |e: String| MetaError::Raft(e);
        if !raft
            .is_initialized()
            .await
            .map_err(|e| raft_err(e.to_string()))?
        {
            let members = BTreeMap::from([(node_id, BasicNode::default())]);
            raft.initialize(members)
                .await
                .map_err(|e| raft_err(e.to_string()))?;
        }
        raft.wait(Some(Duration::from_secs(30)))
            .state(ServerState::Leader, "the single voter leads")
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        let (queue, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(group_commit(raft.clone(), rx));
        Ok(Self {
            raft,
            sm,
            node_id,
            queue,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Replicates `cmd`, applies it and returns its outcome. Durable on a quorum when it
    /// returns. Concurrent writes share log entries (group commit).
    pub async fn write(&self, cmd: Command) -> Result<Outcome, MetaError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Pending { cmd, reply })
            .map_err(|_| MetaError::Raft("the metadata node is shut down".into()))?;
        answer
            .await
            .map_err(|_| MetaError::Raft("the metadata node is shut down".into()))?
    }

    /// The state, as of a linearizable read: everything committed before the call is in it.
    pub async fn read(&self) -> Result<MetaState, MetaError> {
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|e| MetaError::Raft(e.to_string()))?;
        Ok(self.sm.state().await)
    }

    /// Stops the node.
    pub async fn shutdown(&self) -> Result<(), MetaError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| MetaError::Raft(e.to_string()))
    }

    /// Builds a snapshot now (then the log before it is purged as configured).
    pub async fn snapshot(&self) -> Result<(), MetaError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| MetaError::Raft(e.to_string()))
    }
}

/// The network of a single voter: there is nobody to talk to.
#[derive(Debug, Clone, Copy)]
struct NoPeers;

fn unreachable<E: std::error::Error>(target: u64) -> RPCError<u64, BasicNode, E> {
    let e = std::io::Error::other(format!("node {target}: this node has no peers"));
    RPCError::Unreachable(Unreachable::new(&e))
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeer;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> NoPeer {
        NoPeer(target)
    }
}

#[derive(Debug)]
struct NoPeer(u64);

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable(self.0))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, openraft::error::InstallSnapshotError>>,
    > {
        Err(unreachable(self.0))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable(self.0))
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_single_voter_commits_and_recovers_everything_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        // Snapshot every 100 entries, so the restart reads a snapshot and then the log.
        let options = MetaOptions {
            snapshot_every: 100,
            logs_kept: 10,
        };
        let meta = MetaService::open_single(dir.path(), 1, options)
            .await
            .unwrap();
        let out = meta
            .write(Command::CreateTopic {
                name: "orders".into(),
                id: Uuid::from_u128(1),
                leaders: vec![1, 1, 1],
                configs: BTreeMap::from([("retention.ms".into(), "-1".into())]),
            })
            .await
            .unwrap();
        assert_eq!(out, Outcome::Done);
        for i in 0..250 {
            let out = meta
                .write(Command::CommitOffsets {
                    group: format!("g{}", i % 5),
                    offsets: vec![OffsetToCommit {
                        topic: "orders".into(),
                        partition: i % 3,
                        offset: CommittedOffset {
                            offset: i64::from(i),
                            metadata: None,
                            leader_epoch: 0,
                            commit_timestamp_ms: 0,
                        },
                    }],
                })
                .await
                .unwrap();
            assert_eq!(out, Outcome::Done);
        }
        let ids = meta
            .write(Command::AllocateProducerIds { count: 1000 })
            .await
            .unwrap();
        assert_eq!(
            ids,
            Outcome::ProducerIds {
                first: 0,
                count: 1000
            }
        );
        let before = meta.read().await.unwrap();
        // The last commit of group g4 to partition 1 (i = 4 mod 5 and 1 mod 3).
        assert_eq!(before.offsets["g4"]["orders"][&1].offset, 244);
        // The snapshot policy builds one in the background after 100 entries.
        let snapshot = dir.path().join("snapshot.json");
        for _ in 0..100 {
            if snapshot.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(snapshot.exists(), "a snapshot was built");
        meta.shutdown().await.unwrap();
        drop(meta);

        let meta = MetaService::open_single(dir.path(), 1, options)
            .await
            .unwrap();
        let after = meta.read().await.unwrap();
        assert_eq!(after, before, "the state survives a restart");
        // And the next block of producer ids follows the last one.
        let ids = meta
            .write(Command::AllocateProducerIds { count: 1000 })
            .await
            .unwrap();
        assert_eq!(
            ids,
            Outcome::ProducerIds {
                first: 1000,
                count: 1000
            }
        );
        meta.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_writes_share_entries_and_each_gets_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaService::open_single(dir.path(), 1, MetaOptions::default())
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let meta = meta.clone();
            tasks.spawn(async move {
                meta.write(Command::AllocateProducerIds { count: 10 })
                    .await
                    .unwrap()
            });
        }
        let mut firsts = Vec::new();
        while let Some(out) = tasks.join_next().await {
            match out.unwrap() {
                Outcome::ProducerIds { first, count: 10 } => firsts.push(first),
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        firsts.sort();
        // Every writer got its own block, none shared, none skipped.
        assert_eq!(firsts, (0..200).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(meta.read().await.unwrap().next_producer_id, 2000);
        meta.shutdown().await.unwrap();
    }
}
