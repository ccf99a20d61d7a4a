//! The network between metadata voters, and the API clients use, on one HTTP listener
//! (`--controller-listen`). Bodies are JSON.
//!
//! Raft's own RPCs (voter to voter):
//! - `POST /raft/v1/append`, `POST /raft/v1/vote`, `POST /raft/v1/snapshot`.
//!
//! The client API (brokers, the CLI, tests), answered by any voter; a follower forwards writes
//! and linearizable reads to the leader (one hop):
//! - `POST /meta/v1/write`: a [`Command`] → its [`crate::Written`] (outcome and log index);
//! - `GET /meta/v1/state`: the [`MetaState`] as of a linearizable read;
//! - `GET /meta/v1/changes?after=N&wait_ms=M`: what this node applied after index `N`
//!   ([`crate::Changes`]), waiting up to `M` ms (at most 10 s) for something new; never
//!   forwarded (brokers follow the metadata this way);
//! - `POST /meta/v1/heartbeat`: a broker's [`crate::Heartbeat`] (to the leader);
//! - `GET /meta/v1/status`: this node's view ([`MetaStatus`]), never forwarded;
//! - `POST /meta/v1/membership`: a [`MembershipChange`];
//! - `GET /health/live`, `GET /health/ready` (ready once a leader is known) for probes.
//!
//! Errors are `{"error": "…"}` with 503 when another node (or a later attempt) may succeed
//! (no leader yet, leader unreachable) and 500 when storage failed.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Command, Heartbeat, MembershipChange, MetaError, MetaService, TypeConfig};

/// Set on a request a follower forwarded, so it is never forwarded again.
pub(crate) const FORWARDED: &str = "x-sediment-forwarded";

/// How voters reach each other: HTTP to the address in each member's [`BasicNode`].
#[derive(Debug, Clone)]
pub(crate) struct HttpNetwork {
    pub(crate) http: reqwest::Client,
}

impl HttpNetwork {
    pub(crate) fn new() -> Self {
        Self {
            http: http_client(),
        }
    }
}

/// The HTTP client voters and the forwarding use: short connect timeout, no proxy (voters are
/// on the cluster network; an `HTTP_PROXY` meant for the outside world must not catch them).
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .no_proxy()
        .build()
        .unwrap_or_default()
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            target,
            base: format!("http://{}", node.addr),
            http: self.http.clone(),
        }
    }
}

/// One peer voter or learner.
#[derive(Debug)]
pub(crate) struct Peer {
    target: u64,
    base: String,
    http: reqwest::Client,
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let sent = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(option.hard_ttl())
            .json(req)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let answer: Result<Resp, RaftError<u64, E>> = sent
            .error_for_status()
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("/raft/v1/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call("/raft/v1/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("/raft/v1/vote", &rpc, &option).await
    }
}

/// The routes of a metadata node's listener.
pub(crate) fn router(meta: MetaService) -> Router {
    Router::new()
        .route("/raft/v1/append", post(append))
        .route("/raft/v1/vote", post(vote))
        .route("/raft/v1/snapshot", post(snapshot))
        .route("/meta/v1/write", post(write))
        .route("/meta/v1/state", get(state))
        .route("/meta/v1/changes", get(changes))
        .route("/meta/v1/heartbeat", post(heartbeat))
        .route("/meta/v1/status", get(status))
        .route("/meta/v1/membership", post(membership))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        // AppendEntries carries up to openraft's max_payload_entries; snapshots come in chunks.
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(meta)
}

async fn append(
    State(meta): State<MetaService>,
    Json(rpc): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<u64>, RaftError<u64>>> {
    Json(meta.raft.append_entries(rpc).await)
}

async fn vote(
    State(meta): State<MetaService>,
    Json(rpc): Json<VoteRequest<u64>>,
) -> Json<Result<VoteResponse<u64>, RaftError<u64>>> {
    Json(meta.raft.vote(rpc).await)
}

async fn snapshot(
    State(meta): State<MetaService>,
    Json(rpc): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>> {
    Json(meta.raft.install_snapshot(rpc).await)
}

fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

async fn write(
    State(meta): State<MetaService>,
    headers: HeaderMap,
    Json(cmd): Json<Command>,
) -> Response {
    answer(meta.write_or_forward(cmd, !forwarded(&headers)).await)
}

async fn state(State(meta): State<MetaService>, headers: HeaderMap) -> Response {
    answer(meta.read_or_forward(!forwarded(&headers)).await)
}

/// Longest a changes request waits for something new.
pub(crate) const MAX_CHANGES_WAIT: Duration = Duration::from_secs(10);

#[derive(serde::Deserialize)]
struct ChangesQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

async fn changes(State(meta): State<MetaService>, Query(q): Query<ChangesQuery>) -> Response {
    // A voter cut off from the others would answer from a state that no longer moves: while
    // it knows no leader, send the broker to another voter.
    if meta.status().leader.is_none() {
        return answer::<()>(Err(MetaError::NotLeader(None)));
    }
    let wait = Duration::from_millis(q.wait_ms).min(MAX_CHANGES_WAIT);
    Json(meta.changes(q.after, wait).await).into_response()
}

async fn heartbeat(
    State(meta): State<MetaService>,
    headers: HeaderMap,
    Json(beat): Json<Heartbeat>,
) -> Response {
    answer(meta.heartbeat_or_forward(beat, !forwarded(&headers)).await)
}

async fn status(State(meta): State<MetaService>) -> Response {
    Json(meta.status()).into_response()
}

/// Ready once a leader is known (this node can answer or forward).
async fn ready(State(meta): State<MetaService>) -> Response {
    match meta.status().leader {
        Some(_) => (StatusCode::OK, "ready\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no metadata leader yet\n").into_response(),
    }
}

async fn membership(
    State(meta): State<MetaService>,
    headers: HeaderMap,
    Json(change): Json<MembershipChange>,
) -> Response {
    answer(
        meta.change_membership_or_forward(change, !forwarded(&headers))
            .await,
    )
}

fn answer<T: Serialize>(result: Result<T, MetaError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let code = match e {
                MetaError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
                MetaError::Refused(_) => StatusCode::BAD_REQUEST,
                MetaError::Raft(_) | MetaError::NotLeader(_) | MetaError::Unavailable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            (code, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}
