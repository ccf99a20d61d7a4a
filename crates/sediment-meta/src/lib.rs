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

mod client;
mod network;
mod replica;
pub mod state;
mod store;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

pub use client::MetaClient;
pub use replica::MetaReplica;

pub use state::{
    BrokerInfo, Changes, Command, CommittedOffset, Endpoint, MetaState, OffsetToCommit, Outcome,
    PartitionMeta, TopicMeta,
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
    /// Raft refused or could not complete the request (shutting down, quorum lost…).
    #[error("metadata service: {0}")]
    Raft(String),
    /// This node does not lead; the request must go to the leader (when one is known, its
    /// controller address).
    #[error("{}", match .0 {
        Some(addr) => format!("this metadata node is not the leader (the leader is at {addr})"),
        None => "no metadata leader is elected yet".to_string(),
    })]
    NotLeader(Option<String>),
    /// The node a request was forwarded to could not be reached or did not answer.
    #[error("metadata node unavailable: {0}")]
    Unavailable(String),
    /// The request is invalid (a membership change naming an unknown node…).
    #[error("refused: {0}")]
    Refused(String),
}

impl MetaError {
    /// Whether the same request may succeed later or on another voter.
    pub fn is_transient(&self) -> bool {
        !matches!(self, MetaError::Refused(_))
    }
}

fn not_leader(f: &openraft::error::ForwardToLeader<u64, BasicNode>) -> MetaError {
    MetaError::NotLeader(f.leader_node.as_ref().map(|n| n.addr.clone()))
}

fn write_error(e: RaftError<u64, openraft::error::ClientWriteError<u64, BasicNode>>) -> MetaError {
    use openraft::error::ClientWriteError;
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(&f),
        // Another membership change is still being committed: try again shortly.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            e @ openraft::error::ChangeMembershipError::InProgress(_),
        )) => MetaError::Unavailable(e.to_string()),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            MetaError::Refused(e.to_string())
        }
        RaftError::Fatal(e) => MetaError::Raft(e.to_string()),
    }
}

/// Whether this thread belongs to a multi-threaded tokio runtime, where a blocking wait must
/// go through `block_in_place` (so the worker's other tasks move elsewhere).
pub(crate) fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

fn shut_down() -> MetaError {
    MetaError::Raft("the metadata node is shut down".into())
}

/// How a node snapshots and compacts its log, and fences silent brokers.
#[derive(Debug, Clone, Copy)]
pub struct MetaOptions {
    /// A broker that has not heartbeated to the leader for this long is fenced (Kafka's
    /// `broker.session.timeout.ms`, 9 s by default).
    pub broker_session_timeout: Duration,
    /// A snapshot is built after this many entries since the last one; the log before it is
    /// then purged except for the last `logs_kept`.
    pub snapshot_every: u64,
    /// Entries kept before the last snapshot.
    pub logs_kept: u64,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            broker_session_timeout: Duration::from_secs(9),
            snapshot_every: 10_000,
            logs_kept: 1_000,
        }
    }
}

/// A change of the voters and learners, made on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum MembershipChange {
    /// Adds a node as a learner (it receives the log, does not vote) and waits until it has
    /// caught up. The first step of adding a voter.
    AddLearner {
        /// Its node id.
        id: u64,
        /// Its controller address, `host:port`.
        addr: String,
    },
    /// Promotes learners to voters.
    AddVoters {
        /// Their node ids.
        ids: Vec<u64>,
    },
    /// Removes voters (or learners) from the cluster.
    RemoveNodes {
        /// Their node ids.
        ids: Vec<u64>,
    },
}

/// One node's view of the metadata cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaStatus {
    /// This node's id.
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    /// Current Raft term.
    pub term: u64,
    /// Leader's node id, when one is known.
    pub leader: Option<u64>,
    /// Last log index this node has.
    pub last_log_index: Option<u64>,
    /// Last index applied to its state machine.
    pub last_applied: Option<u64>,
    /// Index of its last snapshot.
    pub snapshot: Option<u64>,
    /// Voters' node ids.
    pub voters: Vec<u64>,
    /// Learners' node ids.
    pub learners: Vec<u64>,
    /// Controller address of every member.
    pub nodes: BTreeMap<u64, String>,
}

/// A committed write: its outcome and the log index it was applied at (a node whose applied
/// index has reached it shows its effect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// What applying it gave.
    pub outcome: Outcome,
    /// Its log index.
    pub index: u64,
}

/// A broker's heartbeat to the metadata leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Broker node id.
    pub id: i32,
    /// Its registration epoch.
    pub epoch: u64,
}

/// Writes waiting for the group commit.
struct Pending {
    cmd: Command,
    reply: tokio::sync::oneshot::Sender<Result<Written, MetaError>>,
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
            Ok(r) => {
                let index = r.log_id.index;
                match r.data {
                    Outcome::Batch(outcomes) if batched => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(Written { outcome, index }));
                        }
                    }
                    outcome => {
                        for reply in replies {
                            let _ = reply.send(Ok(Written {
                                outcome: outcome.clone(),
                                index,
                            }));
                        }
                    }
                }
            }
            Err(e) => {
                let e = write_error(e);
                for reply in replies {
                    let _ = reply.send(Err(match &e {
                        MetaError::NotLeader(a) => MetaError::NotLeader(a.clone()),
                        other => MetaError::Raft(other.to_string()),
                    }));
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
    /// For forwarding to the leader; `None` for the embedded single voter, which has no peers.
    http: Option<reqwest::Client>,
    options: MetaOptions,
    /// When each broker (by id: registration epoch, instant) last heartbeated to this node
    /// while it led.
    heartbeats: Arc<parking_lot::Mutex<std::collections::HashMap<i32, (u64, Instant)>>>,
}

impl std::fmt::Debug for MetaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaService")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// The Raft timing of a node: heartbeats every 250 ms; a follower that hears nothing for a
/// random 1–2 s (cluster) or 0.5–1 s (single voter) stands for election.
fn raft_config(options: MetaOptions, clustered: bool) -> Result<openraft::Config, MetaError> {
    let (election_min, election_max) = if clustered { (1000, 2000) } else { (500, 1000) };
    openraft::Config {
        cluster_name: "sediment".into(),
        heartbeat_interval: 250,
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every),
        max_in_snapshot_log_to_keep: options.logs_kept,
        ..Default::default()
    }
    .validate()
    .map_err(|e| MetaError::Raft(e.to_string()))
}

fn open_storage(dir: &Path) -> Result<(store::LogStore, store::StateMachine), MetaError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| MetaError::Storage(format!("cannot create {}: {e}", dir.display())))?;
    let storage = |e: openraft::StorageError<u64>| MetaError::Storage(e.to_string());
    let log = store::LogStore::open(&dir.join("raft.redb")).map_err(storage)?;
    let sm = store::StateMachine::open(dir).map_err(storage)?;
    Ok((log, sm))
}

impl MetaService {
    fn started(
        raft: Raft<TypeConfig>,
        sm: store::StateMachine,
        node_id: u64,
        http: Option<reqwest::Client>,
        options: MetaOptions,
    ) -> Self {
        let (queue, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(group_commit(raft.clone(), rx));
        Self {
            raft,
            sm,
            node_id,
            queue,
            http,
            options,
            heartbeats: Default::default(),
        }
    }

    /// Opens (creating on first use) a single-voter node whose log and snapshots live in
    /// `dir`, and waits until it leads. This is the embedded default: metadata in-process,
    /// persisted under the data directory.
    pub async fn open_single(
        dir: &Path,
        node_id: u64,
        options: MetaOptions,
    ) -> Result<Self, MetaError> {
        let (log, sm) = open_storage(dir)?;
        let config = raft_config(options, false)?;
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
        Ok(Self::started(raft, sm, node_id, None, options))
    }

    /// Opens a node of a metadata cluster whose log and snapshots live in `dir`. `voters` maps
    /// the initial voters' node ids to their controller addresses (`host:port`, the
    /// `--controller-quorum-voters` of every voter, identical on all of them).
    ///
    /// On its first start a node listed in `voters` forms the cluster with them (every voter
    /// does the same, with the same list, which is safe); later starts recover from the log and
    /// ignore `voters`. A node not listed starts empty and waits to be added as a learner
    /// ([`MembershipChange::AddLearner`]). It does not wait for a leader: serve its listener
    /// with [`MetaService::serve`] so the others can reach it.
    pub async fn open_cluster(
        dir: &Path,
        node_id: u64,
        voters: &BTreeMap<u64, String>,
        options: MetaOptions,
    ) -> Result<Self, MetaError> {
        let (log, sm) = open_storage(dir)?;
        let config = raft_config(options, true)?;
        let network = network::HttpNetwork::new();
        let http = network.http.clone();
        let raft = Raft::new(node_id, Arc::new(config), network, log, sm.clone())
            .await
            .map_err(|e| MetaError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| MetaError::Raft(e.to_string()))?;
        if !initialized && voters.contains_key(&node_id) {
            let members: BTreeMap<u64, BasicNode> = voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {}
                // Another voter's first AppendEntries arrived first: already formed.
                Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(MetaError::Raft(e.to_string())),
            }
        }
        Ok(Self::started(raft, sm, node_id, Some(http), options))
    }

    /// Serves Raft's RPCs and the client API on `listener` until `shutdown` completes; while
    /// this node leads, fences brokers that stop heartbeating.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let fencing = self.clone().fence_silent_brokers();
        let server = axum::serve(listener, network::router(self)).with_graceful_shutdown(shutdown);
        tokio::select! {
            served = server => served,
            () = fencing => Ok(()),
        }
    }

    /// While this node leads: fences every unfenced broker that has not heartbeated for the
    /// session timeout (counted from when this node became leader, or from the broker's
    /// registration, when later). Runs until the node shuts down.
    async fn fence_silent_brokers(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        // The term this node leads in, and since when it has known it leads.
        let mut leading: Option<(u64, Instant)> = None;
        loop {
            tick.tick().await;
            let status = self.status();
            if status.leader != Some(self.node_id) {
                leading = None;
                if status.state == "shutdown" {
                    return;
                }
                continue;
            }
            let now = Instant::now();
            // Leadership lost and won back between two ticks is a new term: heartbeats went
            // to another leader meanwhile, so every session starts again.
            if leading.is_none_or(|(term, _)| term != status.term) {
                leading = Some((status.term, now));
            }
            let since = leading.map_or(now, |(_, at)| at);
            let brokers: Vec<(i32, u64)> =
                self.view(|s| s.live_brokers().map(|(id, b)| (id, b.epoch)).collect());
            let silent: Vec<(i32, u64)> = {
                let mut seen = self.heartbeats.lock();
                brokers
                    .into_iter()
                    .filter(|(id, epoch)| {
                        let last = seen.entry(*id).or_insert((*epoch, now));
                        if last.0 != *epoch {
                            // A new registration: its session starts now.
                            *last = (*epoch, now);
                        }
                        now.duration_since(last.1.max(since)) > self.options.broker_session_timeout
                    })
                    .collect()
            };
            for (id, epoch) in silent {
                match self.write_local(Command::FenceBroker { id, epoch }).await {
                    Ok(Written {
                        outcome: Outcome::Done,
                        ..
                    }) => tracing::warn!(
                        broker = id,
                        epoch,
                        timeout_ms = self.options.broker_session_timeout.as_millis() as u64,
                        "fenced a broker that stopped heartbeating"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(broker = id, error = %e, "could not fence a broker"),
                }
            }
        }
    }

    /// A broker's heartbeat (on the leader; forwarded there from a follower). A fenced broker
    /// is unfenced; a registration epoch that is not the current one is refused, and the
    /// broker must register again.
    pub async fn heartbeat(&self, beat: Heartbeat) -> Result<Outcome, MetaError> {
        self.heartbeat_or_forward(beat, true).await
    }

    pub(crate) async fn heartbeat_or_forward(
        &self,
        beat: Heartbeat,
        may_forward: bool,
    ) -> Result<Outcome, MetaError> {
        if let Some(addr) = self.forward_to(may_forward) {
            return self
                .forward(
                    reqwest::Method::POST,
                    &addr,
                    "/meta/v1/heartbeat",
                    Some(&beat),
                )
                .await;
        }
        if self.status().leader != Some(self.node_id) {
            return Err(MetaError::NotLeader(None));
        }
        let registered = self.view(|s| s.brokers.get(&beat.id).map(|b| (b.epoch, b.fenced)));
        match registered {
            Some((epoch, fenced)) if epoch == beat.epoch => {
                self.heartbeats
                    .lock()
                    .insert(beat.id, (beat.epoch, Instant::now()));
                if fenced {
                    let cmd = Command::UnfenceBroker {
                        id: beat.id,
                        epoch: beat.epoch,
                    };
                    let outcome = self.write_local(cmd).await?.outcome;
                    tracing::info!(broker = beat.id, "unfenced a broker that heartbeats again");
                    return Ok(outcome);
                }
                Ok(Outcome::Unchanged)
            }
            _ => Err(MetaError::Refused(format!(
                "broker {} has no registration of epoch {}; it must register again",
                beat.id, beat.epoch
            ))),
        }
    }

    /// What this node applied after log index `after`: waits up to `wait` for something new,
    /// then answers from this node's state (a follower's may lag the leader's).
    pub async fn changes(&self, after: u64, wait: Duration) -> Changes {
        if self.sm.applied_index() <= after {
            let _ = self
                .raft
                .wait(Some(wait))
                .applied_index_at_least(Some(after.saturating_add(1)), "changes after an index")
                .await;
        }
        self.sm.changes(after)
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// This node's view of the cluster, from its latest Raft metrics (no network round trip).
    pub fn status(&self) -> MetaStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        MetaStatus {
            node_id: self.node_id,
            state: state.into(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            nodes: membership
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
        }
    }

    /// Waits until some node leads (as this node sees it) and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, MetaError> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|e| MetaError::Unavailable(format!("no metadata leader: {e}")))?;
        m.current_leader.ok_or(MetaError::NotLeader(None))
    }

    /// Replicates `cmd`, applies it and returns its outcome. Durable on a quorum when it
    /// returns. Concurrent writes share log entries (group commit). On a follower the write
    /// is forwarded to the leader.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, MetaError> {
        Ok(self.write_or_forward(cmd, true).await?.outcome)
    }

    /// Queues `cmd` for the group commit; the receiver gets its outcome.
    fn enqueue(
        &self,
        cmd: Command,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Written, MetaError>>, MetaError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Pending { cmd, reply })
            .map_err(|_| shut_down())?;
        Ok(answer)
    }

    async fn write_local(&self, cmd: Command) -> Result<Written, MetaError> {
        self.enqueue(cmd)?.await.map_err(|_| shut_down())?
    }

    pub(crate) async fn write_or_forward(
        &self,
        cmd: Command,
        may_forward: bool,
    ) -> Result<Written, MetaError> {
        match self.forward_to(may_forward) {
            Some(addr) => {
                self.forward(reqwest::Method::POST, &addr, "/meta/v1/write", Some(&cmd))
                    .await
            }
            _ => self.write_local(cmd).await,
        }
    }

    /// Runs `f` on this node's current state, without a network round trip or a copy. On the
    /// leader (and the embedded single voter) it holds every acknowledged write; on a follower
    /// it may lag. Keep `f` short: it holds the state machine's lock.
    pub fn view<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        self.sm.view(f)
    }

    /// [`MetaService::write`] for callers that are not async (the broker's storage traits):
    /// waits for the outcome, blocking this thread (on a multi-threaded tokio runtime, with
    /// `block_in_place`, so other tasks move to another worker). Must not be called on a
    /// current-thread runtime's thread.
    pub fn write_blocking(&self, cmd: Command) -> Result<Outcome, MetaError> {
        let answer = self.enqueue(cmd)?;
        let answer = if on_multi_thread_runtime() {
            tokio::task::block_in_place(|| answer.blocking_recv())
        } else {
            answer.blocking_recv()
        };
        Ok(answer.map_err(|_| shut_down())??.outcome)
    }

    /// The state, as of a linearizable read: everything committed before the call is in it.
    /// On a follower the read is forwarded to the leader.
    pub async fn read(&self) -> Result<MetaState, MetaError> {
        self.read_or_forward(true).await
    }

    pub(crate) async fn read_or_forward(&self, may_forward: bool) -> Result<MetaState, MetaError> {
        match self.forward_to(may_forward) {
            Some(addr) => {
                self.forward::<(), _>(reqwest::Method::GET, &addr, "/meta/v1/state", None)
                    .await
            }
            _ => {
                self.raft.ensure_linearizable().await.map_err(|e| match e {
                    RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                        f,
                    )) => not_leader(&f),
                    other => MetaError::Raft(other.to_string()),
                })?;
                Ok(self.sm.state())
            }
        }
    }

    /// Adds a learner, promotes learners or removes nodes (on the leader; forwarded there from
    /// a follower). Returns the leader's view once the change is committed.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<MetaStatus, MetaError> {
        self.change_membership_or_forward(change, true).await
    }

    pub(crate) async fn change_membership_or_forward(
        &self,
        change: MembershipChange,
        may_forward: bool,
    ) -> Result<MetaStatus, MetaError> {
        if let Some(addr) = self.forward_to(may_forward) {
            return self
                .forward(
                    reqwest::Method::POST,
                    &addr,
                    "/meta/v1/membership",
                    Some(&change),
                )
                .await;
        }
        use openraft::ChangeMembers;
        match change {
            MembershipChange::AddLearner { id, addr } => {
                self.raft
                    .add_learner(id, BasicNode::new(addr), true)
                    .await
                    .map_err(write_error)?;
            }
            MembershipChange::AddVoters { ids } => {
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(ids.into_iter().collect()), false)
                    .await
                    .map_err(write_error)?;
            }
            MembershipChange::RemoveNodes { ids } => {
                let ids: std::collections::BTreeSet<u64> = ids.into_iter().collect();
                let membership = self.status();
                let voters: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| membership.voters.contains(id))
                    .collect();
                if !voters.is_empty() {
                    self.raft
                        .change_membership(
                            ChangeMembers::RemoveVoters(voters.into_iter().collect()),
                            false,
                        )
                        .await
                        .map_err(write_error)?;
                }
                let learners: std::collections::BTreeSet<u64> = ids
                    .into_iter()
                    .filter(|id| membership.learners.contains(id))
                    .collect();
                if !learners.is_empty() {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(learners), false)
                        .await
                        .map_err(write_error)?;
                }
            }
        }
        Ok(self.status())
    }

    /// Where a request this node received goes instead: the leader's address when another
    /// node leads, forwarding is allowed (not already forwarded) and this node has peers.
    fn forward_to(&self, may_forward: bool) -> Option<String> {
        if may_forward && self.http.is_some() {
            self.leader_addr()
        } else {
            None
        }
    }

    /// The leader's controller address when another node leads; `None` when this node leads
    /// or no leader is known (then the request is tried here and fails with `NotLeader`).
    fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        if leader == self.node_id {
            return None;
        }
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    async fn forward<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, MetaError> {
        let http = self
            .http
            .as_ref()
            .ok_or_else(|| MetaError::NotLeader(Some(addr.to_string())))?;
        let mut req = http
            .request(method, format!("http://{addr}{path}"))
            .header(network::FORWARDED, "1")
            .timeout(Duration::from_secs(10));
        if let Some(b) = body {
            req = req.json(b);
        }
        client::answer(req.send().await, addr).await
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
            ..MetaOptions::default()
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

#[cfg(test)]
mod cluster_tests {
    use uuid::Uuid;

    use super::*;

    struct Node {
        meta: MetaService,
        stop: tokio::sync::oneshot::Sender<()>,
    }

    /// Starts node `id` of a cluster on an already bound listener.
    async fn start(
        dir: &Path,
        id: u64,
        voters: &BTreeMap<u64, String>,
        listener: tokio::net::TcpListener,
    ) -> Node {
        start_with(dir, id, voters, listener, MetaOptions::default()).await
    }

    async fn start_with(
        dir: &Path,
        id: u64,
        voters: &BTreeMap<u64, String>,
        listener: tokio::net::TcpListener,
        options: MetaOptions,
    ) -> Node {
        let meta = MetaService::open_cluster(&dir.join(id.to_string()), id, voters, options)
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(meta.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        Node { meta, stop }
    }

    async fn listener() -> (tokio::net::TcpListener, String) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        (l, addr)
    }

    fn commit(group: &str, offset: i64) -> Command {
        Command::CommitOffsets {
            group: group.into(),
            offsets: vec![OffsetToCommit {
                topic: "t".into(),
                partition: 0,
                offset: CommittedOffset {
                    offset,
                    metadata: None,
                    leader_epoch: 0,
                    commit_timestamp_ms: 0,
                },
            }],
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_replica_follows_the_quorum_and_silent_brokers_are_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let (l, addr) = listener().await;
        let voters = BTreeMap::from([(1u64, addr.clone())]);
        let options = MetaOptions {
            broker_session_timeout: Duration::from_millis(1500),
            ..MetaOptions::default()
        };
        let node = start_with(dir.path(), 1, &voters, l, options).await;
        node.meta
            .wait_for_leader(Duration::from_secs(20))
            .await
            .unwrap();
        let client = MetaClient::new(vec![addr], Duration::from_secs(20));
        // Written before the replica exists: it starts from it.
        client.write(&commit("g", 1)).await.unwrap();
        let replica = MetaReplica::connect(client.clone()).await.unwrap();
        assert_eq!(replica.view(|s| s.offsets["g"]["t"][&0].offset), 1);
        let follower = replica.follow();
        let mut changed = replica.subscribe();

        // Its own writes are visible when they return; others' arrive by following.
        let epoch = match replica
            .write(Command::RegisterBroker {
                id: 7,
                host: "b7".into(),
                port: 9092,
                rack: None,
                listeners: vec![],
            })
            .await
            .unwrap()
        {
            Outcome::BrokerEpoch(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(replica.view(|s| s.live_brokers().count()), 1);
        client.write(&commit("g", 2)).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            changed.wait_for(|_| replica.view(|s| s.offsets["g"]["t"][&0].offset) == 2),
        )
        .await
        .expect("the replica follows a write made elsewhere")
        .unwrap();
        assert_eq!(replica.index(), node.meta.sm.applied_index());

        // Heartbeats keep the broker unfenced past the session timeout.
        let beat = Heartbeat { id: 7, epoch };
        for _ in 0..8 {
            replica.heartbeat(beat).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(!node.meta.view(|s| s.brokers[&7].fenced));
        // Silence fences it, a heartbeat unfences it; a stale epoch must register again.
        tokio::time::timeout(
            Duration::from_secs(10),
            changed.wait_for(|_| replica.view(|s| s.brokers[&7].fenced)),
        )
        .await
        .expect("a silent broker is fenced")
        .unwrap();
        assert_eq!(replica.view(|s| s.live_brokers().count()), 0);
        replica.heartbeat(beat).await.unwrap();
        assert!(!node.meta.view(|s| s.brokers[&7].fenced));
        let stale = Heartbeat {
            id: 7,
            epoch: epoch + 1,
        };
        assert!(matches!(
            replica.heartbeat(stale).await,
            Err(MetaError::Refused(_))
        ));
        follower.abort();
        node.meta.shutdown().await.unwrap();
        let _ = node.stop.send(());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn three_voters_elect_forward_fail_over_and_change_membership() {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        let mut voters = BTreeMap::new();
        for id in 1..=3u64 {
            let (l, addr) = listener().await;
            listeners.insert(id, l);
            voters.insert(id, addr);
        }
        let mut nodes = BTreeMap::new();
        for (id, l) in listeners {
            nodes.insert(id, start(dir.path(), id, &voters, l).await);
        }
        let leader = nodes[&1]
            .meta
            .wait_for_leader(Duration::from_secs(20))
            .await
            .unwrap();
        let follower = (1..=3).find(|id| *id != leader).unwrap();

        // A write sent to a follower is forwarded to the leader and lands everywhere.
        let client = MetaClient::new(vec![voters[&follower].clone()], Duration::from_secs(20));
        let out = client
            .write(&Command::CreateTopic {
                name: "t".into(),
                id: Uuid::from_u128(7),
                leaders: vec![1, 2, 3],
                configs: BTreeMap::new(),
            })
            .await
            .unwrap();
        assert_eq!(out, Outcome::Done);
        assert_eq!(
            nodes[&follower].meta.read().await.unwrap().topics["t"]
                .partitions
                .len(),
            3
        );

        // The leader goes away: the two others elect a new one, and a client that knows all
        // three voters carries on; nothing committed before is lost.
        let all = MetaClient::new(voters.values().cloned().collect(), Duration::from_secs(30));
        all.write(&commit("g", 1)).await.unwrap();
        let old = nodes.remove(&leader).unwrap();
        old.meta.shutdown().await.unwrap();
        let _ = old.stop.send(());
        all.write(&commit("g", 2)).await.unwrap();
        let survivor = nodes.keys().next().copied().unwrap();
        let new_leader = nodes[&survivor]
            .meta
            .wait_for_leader(Duration::from_secs(20))
            .await
            .unwrap();
        assert_ne!(new_leader, leader, "a new leader was elected");
        let state = all.read().await.unwrap();
        assert_eq!(state.offsets["g"]["t"][&0].offset, 2);
        assert!(state.topics.contains_key("t"));

        // Membership: node 4 joins as a learner, catches up, becomes a voter; the dead one is
        // removed.
        let (l4, addr4) = listener().await;
        let n4 = start(dir.path(), 4, &BTreeMap::new(), l4).await;
        let after = all
            .change_membership(&MembershipChange::AddLearner { id: 4, addr: addr4 })
            .await
            .unwrap();
        assert_eq!(after.learners, vec![4]);
        let after = all
            .change_membership(&MembershipChange::AddVoters { ids: vec![4] })
            .await
            .unwrap();
        assert!(after.voters.contains(&4), "{after:?}");
        let after = all
            .change_membership(&MembershipChange::RemoveNodes { ids: vec![leader] })
            .await
            .unwrap();
        assert_eq!(after.voters.len(), 3, "{after:?}");
        assert!(!after.voters.contains(&leader) && !after.nodes.contains_key(&leader));
        // The new voter has the whole state, in its own state machine.
        all.write(&commit("g", 3)).await.unwrap();
        let mut caught_up = false;
        for _ in 0..200 {
            caught_up = n4.meta.view(|s| {
                s.topics.contains_key("t")
                    && s.offsets
                        .get("g")
                        .and_then(|g| g.get("t"))
                        .and_then(|t| t.get(&0))
                        .is_some_and(|o| o.offset == 3)
            });
            if caught_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(caught_up, "node 4 applied every write");
        // Refused changes say why and are not retried.
        let err = all
            .change_membership(&MembershipChange::AddVoters { ids: vec![99] })
            .await
            .unwrap_err();
        assert!(matches!(err, MetaError::Refused(_)), "{err}");

        for n in nodes.into_values().chain([n4]) {
            n.meta.shutdown().await.unwrap();
            let _ = n.stop.send(());
        }
    }
}
