//! The admin HTTP server (axum): Prometheus metrics, health probes, a JSON view of topics,
//! consumer groups (members, assignments, committed offsets and lag) and the archive for
//! operators, consumer-group offset resets, and the metadata quorum's status and membership
//! (for a broker on a quorum).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use sediment_archive::{ArchivedSegment, VerifyReport};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Topic};
use crate::errors::BrokerError;
use crate::metrics::Metrics;
use crate::offset_reset::ResetRequest;
use crate::tiering::{PartitionArchiveStats, TieringStatus};

/// Readiness as the probes see it.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the broker ready (logs open, Kafka listener accepting) or not (shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the broker is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
    /// The broker once it has opened its logs.
    pub broker: Arc<OnceLock<Arc<Broker>>>,
    /// The metadata quorum's client, for a broker on a quorum (`None`: the metadata is an
    /// in-process single voter).
    pub meta: Option<sediment_meta::MetaClient>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/v1/topics", get(topics))
        .route("/v1/groups", get(groups))
        .route("/v1/groups/{group}", get(group))
        .route(
            "/v1/groups/{group}/offsets/reset",
            axum::routing::post(reset_offsets),
        )
        .route("/v1/archive", get(archive))
        .route("/v1/archive/topics/{topic}", get(archive_topic))
        .route(
            "/v1/archive/verify",
            get(archive_verify).post(archive_verify),
        )
        .route("/v1/meta/quorum", get(meta_quorum))
        .route("/v1/meta/membership", axum::routing::post(meta_membership))
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve_admin(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

#[derive(Debug, Serialize)]
struct TopicView {
    name: String,
    id: String,
    partitions: Vec<PartitionView>,
    configs: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct PartitionView {
    partition: i32,
    log_start_offset: i64,
    log_end_offset: i64,
}

async fn topics(State(state): State<AdminState>) -> Response {
    let Some(broker) = state.broker.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    let view: Vec<TopicView> = broker
        .topics()
        .iter()
        .map(|t| TopicView {
            name: t.name().to_string(),
            id: t.id().to_string(),
            partitions: t
                .partitions()
                .iter()
                .filter_map(|p| {
                    p.offsets().ok().map(|(start, end)| PartitionView {
                        partition: p.index(),
                        log_start_offset: start,
                        log_end_offset: end,
                    })
                })
                .collect(),
            configs: t.overrides(),
        })
        .collect();
    Json(view).into_response()
}

#[derive(Debug, Serialize)]
struct GroupSummaryView {
    group: String,
    #[serde(rename = "type")]
    group_type: &'static str,
    state: &'static str,
    members: usize,
}

#[derive(Debug, Serialize)]
struct GroupView {
    group: String,
    #[serde(rename = "type")]
    group_type: &'static str,
    state: &'static str,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberView>,
    offsets: Vec<OffsetView>,
}

#[derive(Debug, Serialize)]
struct MemberView {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    /// Topic -> partitions, when the assignment is readable (consumer protocol).
    assignment: std::collections::BTreeMap<String, Vec<i32>>,
}

#[derive(Debug, Serialize)]
struct OffsetView {
    topic: String,
    partition: i32,
    committed_offset: i64,
    metadata: String,
    log_end_offset: Option<i64>,
    /// Records between the committed offset and the log end (None when the partition is gone).
    lag: Option<i64>,
}

async fn groups(State(state): State<AdminState>) -> Response {
    let Some(broker) = state.broker.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    let view: Vec<GroupSummaryView> = broker
        .groups()
        .list()
        .into_iter()
        .map(|g| GroupSummaryView {
            group: g.group_id,
            group_type: g.group_type,
            state: g.state,
            members: g.members.len(),
        })
        .collect();
    Json(view).into_response()
}

/// Partitions of a classic member's consumer-protocol assignment.
fn classic_assignment(bytes: &bytes::Bytes) -> std::collections::BTreeMap<String, Vec<i32>> {
    use bytes::Buf;
    use kafka_protocol::protocol::Decodable;
    let mut out = std::collections::BTreeMap::new();
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return out;
    }
    let version = buf.get_i16().clamp(0, 3);
    if let Ok(a) = kafka_protocol::messages::ConsumerProtocolAssignment::decode(&mut buf, version) {
        for tp in a.assigned_partitions {
            out.insert(tp.topic.to_string(), tp.partitions);
        }
    }
    out
}

async fn group(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(broker) = state.broker.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    let coordinator = broker.groups();
    let Some(desc) = coordinator.describe(&id) else {
        return (StatusCode::NOT_FOUND, format!("no group {id}\n")).into_response();
    };
    let consumer = coordinator.consumer_group(&id);
    let members = desc
        .members
        .into_iter()
        .map(|m| {
            let assignment = match consumer.as_ref().and_then(|g| g.members.get(&m.member_id)) {
                Some(cm) => cm
                    .assigned
                    .iter()
                    .map(|(topic_id, parts)| {
                        let name = broker
                            .topic_by_id(*topic_id)
                            .map_or_else(|| topic_id.to_string(), |t| t.name().to_string());
                        (name, parts.iter().copied().collect())
                    })
                    .collect(),
                None => classic_assignment(&m.assignment),
            };
            MemberView {
                member_id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                assignment,
            }
        })
        .collect();
    let offsets = coordinator
        .group_offsets(&id)
        .into_iter()
        .map(|((topic, partition), o)| {
            let end = broker
                .topic(&topic)
                .and_then(|t| t.partition(partition))
                .and_then(|p| p.offsets().ok())
                .map(|(_, end)| end);
            OffsetView {
                lag: end.map(|e| (e - o.offset).max(0)),
                log_end_offset: end,
                topic,
                partition,
                committed_offset: o.offset,
                metadata: o.metadata,
            }
        })
        .collect();
    Json(GroupView {
        group: desc.group_id,
        group_type: desc.group_type,
        state: desc.state,
        protocol_type: desc.protocol_type,
        protocol: desc.protocol,
        members,
        offsets,
    })
    .into_response()
}

fn no_quorum() -> Response {
    json_error(
        StatusCode::CONFLICT,
        "this broker keeps its metadata in an in-process single voter (process_roles unset): \
         there is no quorum to show or change"
            .into(),
    )
}

/// Every voter's own view (`sediment meta status --json`): `[{addr, status} | {addr, error}]`.
async fn meta_quorum(State(state): State<AdminState>) -> Response {
    let Some(client) = &state.meta else {
        return no_quorum();
    };
    let mut views = Vec::new();
    for addr in client.addrs() {
        views.push(match client.status_of(addr).await {
            Ok(s) => serde_json::json!({ "addr": addr, "status": s }),
            Err(e) => serde_json::json!({ "addr": addr, "error": e.to_string() }),
        });
    }
    Json(views).into_response()
}

/// A membership change (`{"op": "add-learner", "id": 4, "addr": "h:9093"}`, `add-voters`
/// with `ids`, `remove-nodes` with `ids`), made on the quorum's leader; answers the leader's
/// view afterwards.
async fn meta_membership(
    State(state): State<AdminState>,
    Json(change): Json<sediment_meta::MembershipChange>,
) -> Response {
    let Some(client) = &state.meta else {
        return no_quorum();
    };
    match client.change_membership(&change).await {
        Ok(status) => Json(status).into_response(),
        Err(e @ sediment_meta::MetaError::Refused(_)) => {
            json_error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn json_error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

#[derive(Debug, Deserialize)]
struct ArchiveQuery {
    topic: Option<String>,
    partition: Option<i32>,
}

#[derive(Debug, Serialize)]
struct ArchivePartitionView {
    topic: String,
    topic_id: String,
    partition: i32,
    remote_storage_enable: bool,
    local_start_offset: i64,
    log_end_offset: i64,
    #[serde(flatten)]
    archive: PartitionArchiveStats,
}

#[derive(Debug, Serialize)]
struct ArchiveView {
    #[serde(flatten)]
    status: TieringStatus,
    partitions: Vec<ArchivePartitionView>,
}

/// The topics a query names (all with no `topic`), or the error naming the unknown one.
fn selected_topics(broker: &Broker, topic: Option<&str>) -> Result<Vec<Arc<Topic>>, String> {
    match topic {
        None => Ok(broker.topics()),
        Some(name) => broker
            .topic(name)
            .map(|t| vec![t])
            .ok_or_else(|| format!("unknown topic {name}")),
    }
}

async fn archive(State(state): State<AdminState>, Query(q): Query<ArchiveQuery>) -> Response {
    let Some(broker) = state.broker.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    let topics = match selected_topics(broker, q.topic.as_deref()) {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::NOT_FOUND, e),
    };
    let tiering = broker.tiering();
    let mut partitions = Vec::new();
    for t in topics {
        let enabled = t.effective().remote_storage_enable;
        for p in t.partitions() {
            if q.partition.is_some_and(|want| want != p.index()) {
                continue;
            }
            let Ok((start, end)) = p.offsets() else {
                continue;
            };
            partitions.push(ArchivePartitionView {
                topic: t.name().to_string(),
                topic_id: t.id().to_string(),
                partition: p.index(),
                remote_storage_enable: enabled,
                local_start_offset: start,
                log_end_offset: end,
                archive: tiering.partition_stats(&p, enabled),
            });
        }
    }
    Json(ArchiveView {
        status: tiering.status(),
        partitions,
    })
    .into_response()
}

#[derive(Debug, Serialize)]
struct ArchiveTopicView {
    topic: String,
    topic_id: String,
    partitions: Vec<ArchiveEntriesView>,
}

#[derive(Debug, Serialize)]
struct ArchiveEntriesView {
    partition: i32,
    segments: Vec<ArchivedSegment>,
}

async fn archive_topic(
    State(state): State<AdminState>,
    Path(topic): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> Response {
    let Some(broker) = state.broker.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    let t = match selected_topics(broker, Some(&topic)) {
        Ok(mut t) => t.remove(0),
        Err(e) => return json_error(StatusCode::NOT_FOUND, e),
    };
    let catalog = broker.tiering().catalog();
    let partitions = (0..t.partition_count())
        .filter(|p| q.partition.is_none_or(|want| want == *p))
        .map(|p| ArchiveEntriesView {
            partition: p,
            segments: catalog.segments(t.id(), p),
        })
        .collect();
    Json(ArchiveTopicView {
        topic: t.name().to_string(),
        topic_id: t.id().to_string(),
        partitions,
    })
    .into_response()
}

async fn reset_offsets(
    State(state): State<AdminState>,
    Path(group): Path<String>,
    Json(req): Json<ResetRequest>,
) -> Response {
    let Some(broker) = state.broker.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    match broker.reset_group_offsets(&group, &req).await {
        Ok(plan) => Json(plan).into_response(),
        Err(e @ BrokerError::UnknownTopicOrPartition(_)) => {
            json_error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e @ (BrokerError::InvalidRequest(_) | BrokerError::InvalidGroupId(_))) => {
            json_error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn archive_verify(
    State(state): State<AdminState>,
    Query(q): Query<ArchiveQuery>,
) -> Response {
    let Some(broker) = state.broker.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    let ids: Vec<_> = match q.topic.as_deref() {
        None => Vec::new(),
        Some(name) => match selected_topics(broker, Some(name)) {
            Ok(t) => t.iter().map(|t| t.id()).collect(),
            Err(e) => return json_error(StatusCode::NOT_FOUND, e),
        },
    };
    let report: VerifyReport = broker.tiering().verify(&ids).await;
    Json(report).into_response()
}
