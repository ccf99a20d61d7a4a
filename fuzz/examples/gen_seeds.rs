//! Writes the seed corpora under `fuzz/seeds/`:
//!
//! - `seeds/decode_request/`: one request frame (without the length prefix) for every API and
//!   version the broker serves (`SUPPORTED_APIS`), with populated bodies where the version can
//!   carry the fields, plus a few with unknown tagged fields;
//! - `seeds/validate_batch/`: a mode byte (see `fuzz_targets/validate_batch.rs`) followed by a
//!   valid v2 record batch, for each compression codec.
//!
//! Run from the repository root: `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sediment_broker::protocol::{Decoded, SUPPORTED_APIS, decode_request};
use sediment_broker::{BatchLimits, validate_batch};

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn topic(v: &'static str) -> TopicName {
    TopicName(s(v))
}

fn batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..3i64)
        .map(|i| {
            let mut headers = IndexMap::new();
            headers.insert(s("h"), Some(Bytes::from_static(b"v")));
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                // kafka-protocol starts a new batch when offset - sequence changes.
                sequence: i as i32,
                timestamp: 1_700_000_000_000 + i,
                key: if i == 1 {
                    None
                } else {
                    Some(Bytes::from(format!("key-{i}")))
                },
                value: Some(Bytes::from(format!(
                    "value-{i}-{}",
                    "x".repeat(i as usize * 8)
                ))),
                headers: if i == 2 { headers } else { IndexMap::new() },
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

fn tagged() -> BTreeMap<i32, Bytes> {
    BTreeMap::from([(7, Bytes::from_static(b"tag"))])
}

/// A body with some content for `api` at `version`; fields a version cannot carry make encoding
/// fail, and the caller then falls back to the default body. `None` for an API this generator
/// does not know yet.
fn populated(api: ApiKey, version: i16, with_tags: bool) -> Option<RequestKind> {
    let tags = if with_tags { tagged() } else { BTreeMap::new() };
    Some(match api {
        ApiKey::Produce => RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![
                    produce_request::TopicProduceData::default()
                        .with_name(topic("orders"))
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(batch(Compression::None))),
                        ]),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::Fetch => RequestKind::Fetch(
            FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_topics(vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(topic("orders"))
                        .with_partitions(vec![
                            fetch_request::FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(5)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::ListOffsets => RequestKind::ListOffsets(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(topic("orders"))
                        .with_partitions(vec![
                            list_offsets_request::ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(-1),
                        ]),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(topic("orders"))),
                ]))
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-2))
                .with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(topic("orders"))
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_leader_epoch(3),
                        ]),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::ApiVersions => RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(s("librdkafka"))
                .with_client_software_version(s("2.12.1"))
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::CreateTopics => RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(topic("orders"))
                        .with_num_partitions(3)
                        .with_replication_factor(1)
                        .with_configs(vec![
                            create_topics_request::CreatableTopicConfig::default()
                                .with_name(s("retention.ms"))
                                .with_value(Some(s("86400000"))),
                        ]),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_topic_names(vec![topic("orders")])
                .with_timeout_ms(30_000)
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default()
                .with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("orders"))
                        .with_configuration_keys(Some(vec![s("retention.ms")])),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(
            AlterConfigsRequest::default()
                .with_resources(vec![
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("orders"))
                        .with_configs(vec![
                            alter_configs_request::AlterableConfig::default()
                                .with_name(s("retention.ms"))
                                .with_value(Some(s("1000"))),
                        ]),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(
            CreatePartitionsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic("orders"))
                        .with_count(6),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default()
                .with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("orders"))
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(s("cleanup.policy"))
                                .with_config_operation(0)
                                .with_value(Some(s("compact"))),
                        ]),
                ])
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(
            DescribeClusterRequest::default()
                .with_include_cluster_authorized_operations(true)
                .with_unknown_tagged_fields(tags),
        ),
        // v0-3 carry one key, v4+ a list of keys.
        ApiKey::FindCoordinator if version < 4 => RequestKind::FindCoordinator(
            FindCoordinatorRequest::default()
                .with_key(s("group-1"))
                .with_unknown_tagged_fields(tags),
        ),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(
            FindCoordinatorRequest::default()
                .with_coordinator_keys(vec![s("group-1"), s("txn-1")])
                .with_unknown_tagged_fields(tags),
        ),
        _ => return None,
    })
}

fn default_body(api: ApiKey) -> Option<RequestKind> {
    Some(match api {
        ApiKey::Produce => RequestKind::Produce(Default::default()),
        ApiKey::Fetch => RequestKind::Fetch(Default::default()),
        ApiKey::ListOffsets => RequestKind::ListOffsets(Default::default()),
        ApiKey::Metadata => RequestKind::Metadata(Default::default()),
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(Default::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(Default::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(Default::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(Default::default()),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(Default::default()),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(Default::default()),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(Default::default()),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(Default::default()),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(Default::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
        _ => return None,
    })
}

/// Header (with a client id, and tagged fields in flexible headers when `with_tags`) + body, or
/// the header alone when there is no body.
fn frame(api: ApiKey, version: i16, body: Option<&RequestKind>, with_tags: bool) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    let header_version = api.request_header_version(version);
    let mut header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(s("sediment-fuzz")));
    if with_tags && header_version >= 2 {
        header = header.with_unknown_tagged_fields(tagged());
    }
    header.encode(&mut buf, header_version).ok()?;
    if let Some(body) = body {
        body.encode(&mut buf, version).ok()?;
    }
    Some(buf.freeze())
}

/// Every request seed must decode as a served request.
fn check_request(frame: &Bytes) {
    match decode_request(frame.clone()) {
        Ok(Decoded::Request(_)) => {}
        other => panic!("seed does not decode: {other:?}"),
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let req_dir = root.join("decode_request");
    let batch_dir = root.join("validate_batch");
    for dir in [&req_dir, &batch_dir] {
        if dir.exists() {
            fs::remove_dir_all(dir).expect("clear seed dir");
        }
        fs::create_dir_all(dir).expect("create seed dir");
    }

    let mut written = 0;
    for &(api, min, max) in SUPPORTED_APIS {
        let name = format!("{api:?}").to_lowercase();
        for version in min..=max {
            // A populated body; if the version cannot carry a field, the default body.
            let full = populated(api, version, false)
                .and_then(|body| frame(api, version, Some(&body), false));
            let (frame_bytes, kind) = match (full, default_body(api)) {
                (Some(f), _) => (f, "full"),
                (None, Some(body)) => (
                    frame(api, version, Some(&body), false).expect("default body encodes"),
                    "empty",
                ),
                (None, None) => {
                    // An API added to SUPPORTED_APIS after this generator: still seed its
                    // header, so the fuzzer starts at that body decoder.
                    eprintln!("warning: no seed body for {api:?}; writing the header only");
                    let f = frame(api, version, None, false).expect("header encodes");
                    fs::write(req_dir.join(format!("{name}-v{version}-header-only")), &f).unwrap();
                    written += 1;
                    continue;
                }
            };
            check_request(&frame_bytes);
            fs::write(
                req_dir.join(format!("{name}-v{version}-{kind}")),
                &frame_bytes,
            )
            .unwrap();
            written += 1;
            // Flexible versions: the same with unknown tagged fields in header and body.
            if api.request_header_version(version) >= 2 {
                let tagged = populated(api, version, true)
                    .and_then(|body| frame(api, version, Some(&body), true));
                if let Some(f) = tagged {
                    check_request(&f);
                    fs::write(req_dir.join(format!("{name}-v{version}-tagged")), &f).unwrap();
                    written += 1;
                }
            }
        }
    }
    // An unknown API key and an unsupported version (both answered, not errors).
    fs::write(req_dir.join("unknown-api"), [0x03, 0xe7, 0, 0, 0, 0, 0, 42]).unwrap();
    fs::write(req_dir.join("produce-v99"), [0, 0, 0, 99, 0, 0, 0, 42]).unwrap();
    written += 2;
    println!("{written} request seeds in {}", req_dir.display());

    for (name, codec) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let b = batch(codec);
        let limits = BatchLimits {
            max_message_bytes: 1 << 20,
            max_decompressed_bytes: 1 << 20,
        };
        let summary = validate_batch(&b, &limits).expect("seed batch validates");
        assert_eq!(summary.records, 3, "{name}");
        // Mode 1: the harness fixes up length and CRC (no-op here, they are already right).
        let mut fixed = vec![1u8];
        fixed.extend_from_slice(&b);
        fs::write(batch_dir.join(format!("{name}-fixup")), &fixed).unwrap();
        // Mode 0: passed through as is.
        let mut raw = vec![0u8];
        raw.extend_from_slice(&b);
        fs::write(batch_dir.join(format!("{name}-raw")), &raw).unwrap();
    }
    println!("10 batch seeds in {}", batch_dir.display());
}
