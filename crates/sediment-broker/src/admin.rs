//! The admin HTTP server (axum): Prometheus metrics, health probes, and a small read-only JSON
//! view of topics for operators.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::metrics::Metrics;

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
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/v1/topics", get(topics))
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
