//! Prometheus metrics, served on the admin port at `/metrics`. Names carry unit suffixes
//! (`_seconds`, `_bytes`, `_total`). Per-partition gauges are computed at scrape time from the
//! broker's state, so deleted topics disappear from the output instead of going stale.

use std::sync::{Arc, OnceLock, Weak};

use kafka_protocol::messages::ApiKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::broker::{Broker, PartitionStats};
use crate::tiering::PartitionArchiveStats;

/// Labels of per-request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// API name, e.g. `Produce`.
    pub api: &'static str,
    /// API version.
    pub version: i16,
}

/// Labels of per-API metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// API name.
    pub api: &'static str,
}

/// Labels of error counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// API name.
    pub api: &'static str,
    /// Kafka error code.
    pub error_code: i16,
}

/// All broker metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: parking_lot::Mutex<Registry>,
    /// Requests handled, by API and version.
    pub requests: Family<RequestLabels, Counter>,
    /// Request handling time, by API.
    pub request_duration: Family<ApiLabels, Histogram>,
    /// Per-partition (or per-request) error codes returned, by API.
    pub errors: Family<ErrorLabels, Counter>,
    /// Frames that could not be parsed (the connection was closed).
    pub malformed_requests: Counter,
    /// Requests for APIs or versions we do not serve.
    pub unsupported_requests: Counter,
    /// Bytes read from Kafka clients.
    pub bytes_in: Counter,
    /// Bytes written to Kafka clients.
    pub bytes_out: Counter,
    /// Records appended.
    pub records_in: Counter,
    /// Idempotent-producer retries acknowledged without appending.
    pub duplicate_batches: Counter,
    /// Open Kafka connections.
    pub connections: Gauge,
    /// Connections accepted since start.
    pub connections_accepted: Counter,
    /// TLS handshakes that failed or timed out (bad certificates, plaintext clients).
    pub tls_handshake_failures: Counter,
    /// fsync time of partition flushes.
    pub flush_duration: Histogram,
    /// Segments committed to the archive.
    pub archive_segments: Counter,
    /// Object bytes uploaded to the archive.
    pub archive_uploaded_bytes: Counter,
    /// Record payload bytes (keys, values, headers) archived.
    pub archive_record_bytes: Counter,
    /// Failed archive attempts (a segment upload, or reaching the store at all).
    pub archive_upload_errors: Counter,
    /// Time to encode a segment as Parquet.
    pub archive_encode_duration: Histogram,
    /// Time to upload a segment's file.
    pub archive_upload_duration: Histogram,
    archive_deleted: Family<ReasonLabels, Counter>,
    partitions: Arc<PartitionCollector>,
}

/// Labels of archive deletions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `retention`, `topic_deleted` or `orphan`.
    pub reason: &'static str,
}

#[derive(Debug, Default)]
struct PartitionCollector {
    broker: OnceLock<Weak<Broker>>,
}

impl Collector for PartitionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(broker) = self.broker.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let snapshot = broker.partition_stats();
        type Gauge = (&'static str, &'static str, fn(&PartitionStats) -> i64);
        let gauges: [Gauge; 4] = [
            (
                "sediment_log_end_offset",
                "Next offset to be written, per partition",
                |s| s.log_end_offset,
            ),
            (
                "sediment_log_start_offset",
                "First offset held locally, per partition",
                |s| s.log_start_offset,
            ),
            (
                "sediment_log_segments",
                "Segments on local disk, per partition",
                |s| s.segments as i64,
            ),
            (
                "sediment_log_size_bytes",
                "Bytes of segment files on local disk, per partition",
                |s| s.size_bytes as i64,
            ),
        ];
        let groups = broker.groups().stats();
        let mut family = encoder.encode_descriptor(
            "sediment_groups",
            "Consumer groups by state",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for ((kind, state), n) in groups.by_state {
            ConstGauge::new(n as i64)
                .encode(family.encode_family(&[("type", kind), ("state", state)])?)?;
        }
        ConstGauge::new(groups.members as i64).encode(encoder.encode_descriptor(
            "sediment_group_members",
            "Members across all consumer groups",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?)?;
        prometheus_client::metrics::counter::ConstCounter::new(groups.rebalances).encode(
            encoder.encode_descriptor(
                "sediment_group_rebalances",
                "Consumer group rebalances: classic generation and consumer-protocol group epoch changes",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?,
        )?;
        encode_archive(&broker, &mut encoder)?;
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for s in &snapshot {
                let labels = [
                    ("topic", s.topic.as_str()),
                    ("partition", s.partition_label.as_str()),
                ];
                ConstGauge::new(value(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Per-partition archive gauges, object-store request counts and whether the archive is up.
fn encode_archive(broker: &Broker, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    use prometheus_client::metrics::counter::ConstCounter;
    let stats = broker.archive_stats();
    type ArchiveGauge = (
        &'static str,
        &'static str,
        fn(&PartitionArchiveStats) -> i64,
    );
    let gauges: [ArchiveGauge; 6] = [
        (
            "sediment_archive_lag_segments",
            "Sealed local segments not archived yet, per partition",
            |s| s.lag_segments as i64,
        ),
        (
            "sediment_archive_lag_bytes",
            "Bytes of sealed local segments not archived yet, per partition",
            |s| s.lag_bytes as i64,
        ),
        (
            "sediment_archive_partition_segments",
            "Segments in the archive, per partition",
            |s| s.segments as i64,
        ),
        (
            "sediment_archive_size_bytes",
            "Bytes of archive objects, per partition",
            |s| s.object_bytes as i64,
        ),
        (
            "sediment_archive_start_offset",
            "First archived offset, per partition (-1: none)",
            |s| s.start_offset,
        ),
        (
            "sediment_archive_end_offset",
            "Offset after the last archived one, per partition (-1: none)",
            |s| s.end_offset,
        ),
    ];
    for (name, help, value) in gauges {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (topic, partition, s) in &stats {
            let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
            ConstGauge::new(value(s)).encode(family.encode_family(&labels)?)?;
        }
    }
    let tiering = broker.tiering();
    let status = tiering.status();
    ConstGauge::new(i64::from(status.claimed && status.disabled.is_none())).encode(
        encoder.encode_descriptor(
            "sediment_archive_up",
            "1 when the archive's store has been reached and the prefix belongs to this cluster",
            None,
            MetricType::Gauge,
        )?,
    )?;
    let counters = &tiering.archive().store().counters;
    let mut family = encoder.encode_descriptor(
        "sediment_object_store_requests",
        "Object-store requests by kind (above the client's own retries; deletes per object)",
        None,
        MetricType::Counter,
    )?;
    for op in sediment_archive::Op::ALL {
        ConstCounter::new(counters.requests(op))
            .encode(family.encode_family(&[("op", op.name())])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "sediment_object_store_request_errors",
        "Object-store requests that failed, by kind",
        None,
        MetricType::Counter,
    )?;
    for op in sediment_archive::Op::ALL {
        ConstCounter::new(counters.errors(op))
            .encode(family.encode_family(&[("op", op.name())])?)?;
    }
    ConstCounter::new(counters.bytes_put()).encode(encoder.encode_descriptor(
        "sediment_object_store_put_bytes",
        "Bytes sent to the object store in PUTs and parts",
        None,
        MetricType::Counter,
    )?)?;
    encode_archive_reads(broker, encoder)
}

/// The archive read path: cache, reads, prefetch and replay lag.
fn encode_archive_reads(
    broker: &Broker,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    use prometheus_client::metrics::counter::ConstCounter;
    use std::sync::atomic::Ordering::Relaxed;
    let reader = broker.archive_reader();
    let cache = reader.cache().counters();
    let reads = reader.counters();
    let counters: [(&str, &str, u64); 11] = [
        (
            "sediment_archive_decoded_cache_hits",
            "Archive chunks (runs of about 4 MiB of records) served already decoded from memory (no fetch, no decode)",
            reads.decoded_hits.load(Relaxed),
        ),
        (
            "sediment_archive_cache_hits",
            "Archive cache lookups served from memory or local disk",
            cache.hits.load(Relaxed),
        ),
        (
            "sediment_archive_cache_misses",
            "Archive cache lookups that read the object store",
            cache.misses.load(Relaxed),
        ),
        (
            "sediment_archive_cache_hit_bytes",
            "Bytes served by the archive cache",
            cache.hit_bytes.load(Relaxed),
        ),
        (
            "sediment_archive_remote_read_bytes",
            "Bytes read from the object store by archive reads (cache misses)",
            cache.miss_bytes.load(Relaxed),
        ),
        (
            "sediment_archive_cache_errors",
            "Archive cache failures turned into misses",
            cache.errors.load(Relaxed),
        ),
        (
            "sediment_archive_reads",
            "Fetches of a partition served from the archive",
            reads.reads.load(Relaxed),
        ),
        (
            "sediment_archive_read_bytes",
            "Record batch bytes served from the archive",
            reads.bytes.load(Relaxed),
        ),
        (
            "sediment_archive_read_errors",
            "Archive reads that failed (the fetch was answered empty and retried by the client)",
            reads.errors.load(Relaxed),
        ),
        (
            "sediment_archive_chunks_decoded",
            "Chunks of Parquet row groups (about 4 MiB of records each) decoded into record batches",
            reads.chunks_decoded.load(Relaxed),
        ),
        (
            "sediment_archive_prefetches",
            "Row groups fetched, or chunks decoded, ahead of a sequential archive reader",
            reads.prefetches.load(Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        ConstCounter::new(value).encode(encoder.encode_descriptor(
            name,
            help,
            None,
            MetricType::Counter,
        )?)?;
    }
    let mut family = encoder.encode_descriptor(
        "sediment_archive_replay_lag_records",
        "Records between the log end and the offset of the latest archive read, per partition \
         read from the archive in the last minute",
        None,
        MetricType::Gauge,
    )?;
    for (topic, partition, lag) in broker.replay_lag() {
        let partition = partition.to_string();
        let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
        ConstGauge::new(lag).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<ApiLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        let errors = Family::<ErrorLabels, Counter>::default();
        let metrics = Self {
            requests: requests.clone(),
            request_duration: request_duration.clone(),
            errors: errors.clone(),
            malformed_requests: Counter::default(),
            unsupported_requests: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            records_in: Counter::default(),
            duplicate_batches: Counter::default(),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            tls_handshake_failures: Counter::default(),
            flush_duration: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            archive_segments: Counter::default(),
            archive_uploaded_bytes: Counter::default(),
            archive_record_bytes: Counter::default(),
            archive_upload_errors: Counter::default(),
            archive_encode_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            archive_upload_duration: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            archive_deleted: Family::default(),
            partitions: Arc::new(PartitionCollector::default()),
            registry: parking_lot::Mutex::new(Registry::default()),
        };
        registry.register(
            "sediment_kafka_requests",
            "Kafka requests handled",
            requests,
        );
        registry.register(
            "sediment_kafka_request_duration_seconds",
            "Time to handle a Kafka request, long-poll waits included",
            request_duration,
        );
        registry.register(
            "sediment_kafka_errors",
            "Error codes returned in Kafka responses, per partition or request",
            errors,
        );
        registry.register(
            "sediment_kafka_malformed_requests",
            "Frames that could not be parsed; each closed its connection",
            metrics.malformed_requests.clone(),
        );
        registry.register(
            "sediment_kafka_unsupported_requests",
            "Requests for an API or version this broker does not serve",
            metrics.unsupported_requests.clone(),
        );
        registry.register(
            "sediment_kafka_received_bytes",
            "Bytes read from Kafka clients",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "sediment_kafka_sent_bytes",
            "Bytes written to Kafka clients",
            metrics.bytes_out.clone(),
        );
        registry.register(
            "sediment_produce_records",
            "Records appended to partition logs",
            metrics.records_in.clone(),
        );
        registry.register(
            "sediment_produce_duplicate_batches",
            "Batches an idempotent producer retried that were already in the log (acknowledged, not appended again)",
            metrics.duplicate_batches.clone(),
        );
        registry.register(
            "sediment_kafka_connections",
            "Open Kafka client connections",
            metrics.connections.clone(),
        );
        registry.register(
            "sediment_kafka_connections_accepted",
            "Kafka client connections accepted",
            metrics.connections_accepted.clone(),
        );
        registry.register(
            "sediment_kafka_tls_handshake_failures",
            "TLS handshakes on the SSL listener that failed or timed out",
            metrics.tls_handshake_failures.clone(),
        );
        registry.register(
            "sediment_log_flush_duration_seconds",
            "Time to fsync a partition's active segment",
            metrics.flush_duration.clone(),
        );
        registry.register(
            "sediment_archive_segments",
            "Segments committed to the archive",
            metrics.archive_segments.clone(),
        );
        registry.register(
            "sediment_archive_uploaded_bytes",
            "Bytes of Parquet objects uploaded to the archive",
            metrics.archive_uploaded_bytes.clone(),
        );
        registry.register(
            "sediment_archive_record_bytes",
            "Record payload bytes (keys, values, headers) archived",
            metrics.archive_record_bytes.clone(),
        );
        registry.register(
            "sediment_archive_upload_errors",
            "Failed archive attempts: a segment that could not be archived, or a store that could not be reached",
            metrics.archive_upload_errors.clone(),
        );
        registry.register(
            "sediment_archive_encode_duration_seconds",
            "Time to encode a sealed segment as Parquet",
            metrics.archive_encode_duration.clone(),
        );
        registry.register(
            "sediment_archive_upload_duration_seconds",
            "Time to upload a segment's Parquet object",
            metrics.archive_upload_duration.clone(),
        );
        registry.register(
            "sediment_archive_deleted_segments",
            "Archive objects deleted, by reason",
            metrics.archive_deleted.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&metrics.partitions)));
        *metrics.registry.lock() = registry;
        metrics
    }

    /// Lets the per-partition gauges read `broker`'s state at scrape time.
    pub fn attach_broker(&self, broker: &Arc<Broker>) {
        let _ = self.partitions.broker.set(Arc::downgrade(broker));
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }

    /// The counter of archive deletions for `reason`.
    pub fn archive_deleted(&self, reason: &'static str) -> Counter {
        self.archive_deleted
            .get_or_create(&ReasonLabels { reason })
            .clone()
    }

    /// Counts one handled request.
    pub fn observe_request(&self, api: ApiKey, version: i16, seconds: f64) {
        let api = api_name(api);
        self.requests
            .get_or_create(&RequestLabels { api, version })
            .inc();
        self.request_duration
            .get_or_create(&ApiLabels { api })
            .observe(seconds);
    }

    /// Counts a non-zero error code in a response.
    pub fn observe_error(&self, api: ApiKey, error_code: i16) {
        if error_code != 0 {
            self.errors
                .get_or_create(&ErrorLabels {
                    api: api_name(api),
                    error_code,
                })
                .inc();
        }
    }
}

/// Stable metric label for an API.
pub fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        _ => "Other",
    }
}
