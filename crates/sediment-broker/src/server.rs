//! The Kafka listener: an accept loop over an already-bound listener (so tests bind port 0), and
//! one pipeline per connection.
//!
//! Per connection a reader task reads frames (size checked before the body is buffered), the
//! connection task decodes and handles them strictly in order (Kafka's per-connection ordering,
//! which idempotent producers rely on), and a writer task writes responses. The queues between
//! them are bounded, so a client that sends faster than we answer is slowed by TCP back-pressure.
//! A malformed frame closes its own connection only.
//!
//! A listener is plaintext (`PLAINTEXT`) or TLS (`SSL`); a TLS connection finishes its
//! handshake (bounded by [`TLS_HANDSHAKE_TIMEOUT`]) before its first frame is read. Requests
//! know the listener they came through, so Metadata describes brokers by that listener's
//! advertised addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::broker::Broker;
use crate::handlers::{Ctx, handle};
use crate::metrics::{Metrics, api_name};
use crate::protocol::{
    Decoded, FrameError, decode_request, encode_response, read_frame, unsupported_response,
};

/// Requests read ahead of the one being handled, and responses queued for writing.
const QUEUE_DEPTH: usize = 16;

/// How long a TLS client has to finish its handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a bound Kafka listener serves: its name and, for TLS, the acceptor.
#[derive(Clone)]
pub struct KafkaListener {
    /// Listener name (`PLAINTEXT`, `SSL`), matching the broker's advertised listeners.
    pub name: &'static str,
    /// TLS acceptor of an `SSL` listener; `None` for plaintext.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for KafkaListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaListener")
            .field("name", &self.name)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl KafkaListener {
    /// The plaintext listener.
    pub fn plaintext() -> Self {
        Self {
            name: crate::store::PLAINTEXT_LISTENER,
            tls: None,
        }
    }

    /// The TLS listener.
    pub fn tls(acceptor: TlsAcceptor) -> Self {
        Self {
            name: crate::store::SSL_LISTENER,
            tls: Some(acceptor),
        }
    }
}

/// Serves Kafka clients on `listener` until `shutdown`, then waits (up to the configured
/// shutdown timeout) for in-flight requests to be answered.
pub async fn serve_kafka(
    listener: TcpListener,
    kind: KafkaListener,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    // `max.connections` counts the connections of every listener together.
    let limit = Arc::clone(broker.connection_slots());
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((socket, peer)) => {
                let broker = Arc::clone(&broker);
                let shutdown = shutdown.clone();
                let kind = kind.clone();
                let _ = socket.set_nodelay(true);
                tracker.spawn(async move {
                    match &kind.tls {
                        None => connection(socket, peer, kind.name, broker, shutdown).await,
                        Some(acceptor) => {
                            let handshake = tokio::select! {
                                h = tokio::time::timeout(
                                    TLS_HANDSHAKE_TIMEOUT,
                                    acceptor.accept(socket),
                                ) => h,
                                _ = shutdown.cancelled() => return,
                            };
                            match handshake {
                                Ok(Ok(tls)) => {
                                    connection(tls, peer, kind.name, broker, shutdown).await
                                }
                                Ok(Err(e)) => {
                                    broker.metrics().tls_handshake_failures.inc();
                                    tracing::warn!(%peer, error = %e, "TLS handshake failed");
                                }
                                Err(_) => {
                                    broker.metrics().tls_handshake_failures.inc();
                                    tracing::warn!(%peer, "TLS handshake timed out");
                                }
                            }
                        }
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Usually EMFILE; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    tracker.close();
    let timeout = broker.config().shutdown_timeout;
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        tracing::warn!(
            connections = tracker.len(),
            timeout_ms = timeout.as_millis() as u64,
            "shutdown timed out waiting for connections"
        );
    }
}

async fn connection<S>(
    socket: S,
    peer: SocketAddr,
    listener: &'static str,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let metrics = Arc::clone(broker.metrics());
    metrics.connections.inc();
    metrics.connections_accepted.inc();
    let (mut rd, wr) = tokio::io::split(socket);
    let (req_tx, mut req_rx) = mpsc::channel::<Bytes>(QUEUE_DEPTH);
    let (resp_tx, resp_rx) = mpsc::channel::<Bytes>(QUEUE_DEPTH);
    let max = broker.config().socket_request_max_bytes;

    let reader_shutdown = shutdown.clone();
    let reader_metrics = Arc::clone(&metrics);
    let reader = tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                f = read_frame(&mut rd, max) => f,
                _ = reader_shutdown.cancelled() => return,
            };
            match frame {
                Ok(Some(f)) => {
                    reader_metrics.bytes_in.inc_by(f.len() as u64 + 4);
                    if req_tx.send(f).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(FrameError::Io(e)) => {
                    tracing::debug!(%peer, error = %e, "connection read error");
                    return;
                }
                Err(e) => {
                    reader_metrics.malformed_requests.inc();
                    tracing::warn!(%peer, error = %e, "closing connection");
                    return;
                }
            }
        }
    });
    let writer = tokio::spawn(write_loop(wr, resp_rx, Arc::clone(&metrics), peer));

    while let Some(frame) = req_rx.recv().await {
        let response = match decode_request(frame) {
            Ok(Decoded::Request(req)) => {
                let ctx = Ctx {
                    broker: &broker,
                    api: req.api_key,
                    version: req.version,
                    shutdown: &shutdown,
                    client_id: req.header.client_id.as_deref().unwrap_or(""),
                    peer,
                    listener,
                };
                let span = tracing::info_span!(
                    "request",
                    api = api_name(req.api_key),
                    version = req.version,
                    correlation_id = req.header.correlation_id,
                    client_id = req.header.client_id.as_deref().unwrap_or(""),
                    %peer,
                );
                let started = Instant::now();
                let body = handle(&ctx, req.body).instrument(span.clone()).await;
                metrics.observe_request(req.api_key, req.version, started.elapsed().as_secs_f64());
                match body {
                    None => continue,
                    Some(body) => match encode_response(
                        req.api_key,
                        req.version,
                        req.header.correlation_id,
                        &body,
                    ) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            let _enter = span.enter();
                            tracing::error!(error = %e, "could not encode response; closing connection");
                            break;
                        }
                    },
                }
            }
            Ok(Decoded::Unsupported {
                correlation_id,
                api_key,
                version,
            }) => {
                metrics.unsupported_requests.inc();
                tracing::debug!(%peer, api_key, version, "unsupported api or version");
                unsupported_response(correlation_id, api_key, version)
            }
            Err(e) => {
                metrics.malformed_requests.inc();
                tracing::warn!(%peer, error = %e, "malformed request; closing connection");
                break;
            }
        };
        if resp_tx.send(response).await.is_err() {
            break;
        }
    }
    reader.abort();
    drop(resp_tx);
    let _ = writer.await;
    metrics.connections.dec();
}

async fn write_loop<S: AsyncWrite>(
    wr: WriteHalf<S>,
    mut rx: mpsc::Receiver<Bytes>,
    metrics: Arc<Metrics>,
    peer: SocketAddr,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, wr);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Write everything queued, then flush once.
        while let Some(bytes) = next {
            metrics.bytes_out.inc_by(bytes.len() as u64);
            if let Err(e) = out.write_all(&bytes).await {
                tracing::debug!(%peer, error = %e, "connection write error");
                return;
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush().await {
            tracing::debug!(%peer, error = %e, "connection write error");
            return;
        }
    }
    let _ = out.shutdown().await;
}
