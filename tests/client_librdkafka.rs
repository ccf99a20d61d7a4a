//! librdkafka against the real broker: the `rdkafka` crate (librdkafka 2.12, built from source)
//! and Debian's `kcat` (librdkafka 2.0). Every test starts its own broker.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::admin::{
    AdminOptions, AlterConfig, ConfigResource, NewPartitions, NewTopic, OwnedResourceSpecifier,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Timestamp, TopicPartitionList};
use sediment_log::BatchHeader;
use sediment_tests::fetch_request;
use sediment_tests::kafka::{admin, consume, consumer, create_topic, kcat, payload, producer};
use sediment_tests::{Broker, RawClient};

const T0: i64 = 1_750_000_000_000;
const WAIT: Duration = Duration::from_secs(30);

/// What a test record looks like, for exact comparison after the round trip.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

fn sample_records() -> Vec<Rec> {
    let mut recs = vec![
        Rec {
            key: None,
            value: None,
            headers: vec![],
            timestamp: T0,
        },
        Rec {
            key: Some(vec![]),
            value: Some(vec![]),
            headers: vec![],
            timestamp: T0 + 1,
        },
        Rec {
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![
                ("h1".into(), Some(b"x".to_vec())),
                ("null".into(), None),
                ("empty".into(), Some(vec![])),
                ("h1".into(), Some(b"duplicate key".to_vec())),
            ],
            timestamp: T0 + 2,
        },
    ];
    for i in 0..200 {
        recs.push(Rec {
            key: Some(format!("key-{i}").into_bytes()),
            value: Some(format!("value-{i}-{}", "x".repeat(i % 97)).into_bytes()),
            headers: vec![("i".into(), Some(i.to_string().into_bytes()))],
            timestamp: T0 + 3 + i as i64,
        });
    }
    recs
}

async fn produce_recs(
    bootstrap: &str,
    topic: &str,
    recs: &[Rec],
    extra: &[(&str, &str)],
) -> Vec<i64> {
    let p = producer(bootstrap, extra);
    // librdkafka decides per broker connection whether lz4 is usable once ApiVersions has
    // answered; one delivered message first makes sure the records below see that decision.
    p.send(FutureRecord::<(), str>::to("warm-up").payload("w"), WAIT)
        .await
        .expect("warm-up delivered");
    let futures: Vec<_> = recs
        .iter()
        .map(|r| {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                .partition(0)
                .timestamp(r.timestamp)
                .headers(headers);
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                record = record.payload(v.as_slice());
            }
            p.send_result(record).expect("enqueue")
        })
        .collect();
    let mut offsets = Vec::new();
    for f in futures {
        let delivery = f.await.expect("delivery future").expect("delivered");
        offsets.push(delivery.offset);
    }
    offsets
}

fn as_rec(m: &rdkafka::message::OwnedMessage) -> Rec {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Rec {
        key: m.key().map(<[u8]>::to_vec),
        value: payload(m),
        headers,
        timestamp: match m.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
            Timestamp::NotAvailable => -1,
        },
    }
}

/// Fetches raw batches with our own client, to see exactly what the broker serves.
fn raw_fetch(bootstrap: &str, topic: &str, partition: i32, offset: i64, max_bytes: i32) -> Bytes {
    let mut c = RawClient::connect(bootstrap).expect("connect");
    let req = fetch_request(topic, partition, offset, max_bytes);
    let resp = c.request(11, &req).expect("fetch");
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "fetch error");
    p.records.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_codec_round_trips_keys_values_headers_and_nulls() {
    let broker = Broker::start();
    let recs = sample_records();
    for (codec, id) in [
        ("none", 0u8),
        ("gzip", 1),
        ("snappy", 2),
        ("lz4", 3),
        ("zstd", 4),
    ] {
        let topic = format!("codec-{codec}");
        let offsets = produce_recs(
            &broker.kafka,
            &topic,
            &recs,
            &[
                ("compression.type", codec),
                ("linger.ms", "20"),
                ("acks", "all"),
            ],
        )
        .await;
        assert_eq!(
            offsets,
            (0..recs.len() as i64).collect::<Vec<_>>(),
            "{codec}: dense offsets in order"
        );
        let got = consume(&broker.kafka, &topic, 0, 0, recs.len(), WAIT).unwrap();
        let got: Vec<Rec> = got.iter().map(as_rec).collect();
        assert_eq!(got, recs, "{codec}: records come back identical");
        // The broker serves the producer's batches unchanged: the producer's codec bits and a
        // valid CRC. (librdkafka sends a batch uncompressed when compression would not shrink
        // it, so small batches may carry 0.)
        let raw = raw_fetch(&broker.kafka, &topic, 0, 0, 10 << 20);
        let mut at = 0;
        let mut codecs = Vec::new();
        while at < raw.len() {
            let h = BatchHeader::parse(&raw[at..]).unwrap();
            h.verify_crc().unwrap();
            codecs.push(h.compression());
            at += h.total_size();
        }
        assert!(
            codecs.iter().all(|&c| c == id || c == 0),
            "{codec}: stored codecs {codecs:?}"
        );
        assert!(
            codecs.contains(&id),
            "{codec}: at least one batch kept the codec: {codecs:?}"
        );
        assert!(
            codecs.len() < recs.len(),
            "{codec}: records were batched ({} batches)",
            codecs.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acks_zero_one_and_all_are_all_stored() {
    let broker = Broker::start();
    for acks in ["0", "1", "all"] {
        let topic = format!("acks-{acks}");
        create_topic(&broker.kafka, &topic, 1, &[]).await;
        let recs: Vec<Rec> = (0..50)
            .map(|i| Rec {
                key: None,
                value: Some(format!("{acks}-{i}").into_bytes()),
                headers: vec![],
                timestamp: T0 + i,
            })
            .collect();
        produce_recs(&broker.kafka, &topic, &recs, &[("acks", acks)]).await;
        let got: Vec<Rec> = consume(&broker.kafka, &topic, 0, 0, 50, WAIT)
            .unwrap()
            .iter()
            .map(as_rec)
            .collect();
        assert_eq!(got, recs, "acks={acks}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_near_max_message_bytes_pass_and_larger_are_refused() {
    let broker = Broker::start();
    create_topic(&broker.kafka, "big", 1, &[("max.message.bytes", "1048588")]).await;
    let p = producer(
        &broker.kafka,
        &[
            ("message.max.bytes", "4000000"),
            ("compression.type", "none"),
        ],
    );
    // A 1,000,000-byte value plus the batch overhead stays under 1,048,588.
    let near = vec![7u8; 1_000_000];
    let d = p
        .send(
            FutureRecord::<(), [u8]>::to("big")
                .partition(0)
                .payload(&near),
            WAIT,
        )
        .await
        .expect("near-limit message accepted");
    assert_eq!(d.offset, 0);
    let too_big = vec![8u8; 1_100_000];
    let err = p
        .send(
            FutureRecord::<(), [u8]>::to("big")
                .partition(0)
                .payload(&too_big),
            WAIT,
        )
        .await
        .expect_err("over-limit message refused");
    assert_eq!(
        err.0.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "{:?}",
        err.0
    );
    let got = consume(&broker.kafka, "big", 0, 0, 1, WAIT).unwrap();
    assert_eq!(payload(&got[0]).unwrap(), near);
    // Nothing of the refused message reached the log.
    let (low, high) = consumer(&broker.kafka, &[])
        .fetch_watermarks("big", 0, WAIT)
        .unwrap();
    assert_eq!((low, high), (0, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn many_partitions_keep_per_partition_order() {
    let broker = Broker::start();
    let partitions = 32;
    create_topic(&broker.kafka, "wide", partitions, &[]).await;
    let p = producer(&broker.kafka, &[("linger.ms", "5")]);
    let per_partition = 40;
    let mut futures = Vec::new();
    for i in 0..per_partition {
        for part in 0..partitions {
            let value = format!("{part}:{i}");
            futures.push(
                p.send_result(
                    FutureRecord::<(), String>::to("wide")
                        .partition(part)
                        .payload(&value),
                )
                .expect("enqueue"),
            );
        }
    }
    for f in futures {
        f.await.unwrap().expect("delivered");
    }
    for part in 0..partitions {
        let got = consume(&broker.kafka, "wide", part, 0, per_partition, WAIT).unwrap();
        let values: Vec<String> = got
            .iter()
            .map(|m| String::from_utf8(payload(m).unwrap()).unwrap())
            .collect();
        let expected: Vec<String> = (0..per_partition).map(|i| format!("{part}:{i}")).collect();
        assert_eq!(values, expected, "partition {part}");
        assert!(got.iter().enumerate().all(|(i, m)| m.offset() == i as i64));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_from_the_middle_of_a_batch() {
    let broker = Broker::start();
    create_topic(&broker.kafka, "mid", 1, &[]).await;
    let recs: Vec<Rec> = (0..10)
        .map(|i| Rec {
            key: None,
            value: Some(vec![i as u8; 10]),
            headers: vec![],
            timestamp: T0 + i,
        })
        .collect();
    produce_recs(
        &broker.kafka,
        "mid",
        &recs,
        &[("linger.ms", "200"), ("batch.num.messages", "100")],
    )
    .await;
    // The broker answers with the whole batch that holds offset 5...
    let raw = raw_fetch(&broker.kafka, "mid", 0, 5, 1 << 20);
    let h = BatchHeader::parse(&raw).unwrap();
    assert_eq!(
        (h.base_offset(), h.last_offset()),
        (0, 9),
        "one batch of ten, served whole"
    );
    // ...and the client skips the records before 5.
    let got = consume(&broker.kafka, "mid", 0, 5, 5, WAIT).unwrap();
    assert_eq!(
        got.iter().map(|m| m.offset()).collect::<Vec<_>>(),
        vec![5, 6, 7, 8, 9]
    );
    assert_eq!(
        got.iter().map(as_rec).collect::<Vec<_>>(),
        recs[5..].to_vec()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_offsets_by_timestamp_earliest_and_latest() {
    let broker = Broker::start();
    create_topic(&broker.kafka, "times", 1, &[]).await;
    let recs: Vec<Rec> = (0..100)
        .map(|i| Rec {
            key: None,
            value: Some(vec![1]),
            headers: vec![],
            timestamp: T0 + i * 1000,
        })
        .collect();
    // Small batches, so the lookup crosses batch boundaries and lands inside batches.
    produce_recs(
        &broker.kafka,
        "times",
        &recs,
        &[("batch.num.messages", "7"), ("linger.ms", "5")],
    )
    .await;
    let c = consumer(&broker.kafka, &[]);
    for (ts, expected) in [
        (T0, 0),
        (T0 + 1, 1),
        (T0 + 42_000, 42),
        (T0 + 42_500, 43),
        (T0 + 99_000, 99),
    ] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("times", 0, rdkafka::Offset::Offset(ts))
            .unwrap();
        let r = c.offsets_for_times(tpl, WAIT).unwrap();
        let got = r.find_partition("times", 0).unwrap().offset();
        assert_eq!(got, rdkafka::Offset::Offset(expected), "timestamp {ts}");
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("times", 0, rdkafka::Offset::Offset(T0 + 1_000_000))
        .unwrap();
    let r = c.offsets_for_times(tpl, WAIT).unwrap();
    assert_eq!(
        r.find_partition("times", 0).unwrap().offset(),
        rdkafka::Offset::End,
        "after the last record"
    );
    assert_eq!(c.fetch_watermarks("times", 0, WAIT).unwrap(), (0, 100));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_client_creates_alters_and_deletes_topics() {
    let broker = Broker::start();
    let a = admin(&broker.kafka);
    let opts = AdminOptions::new().operation_timeout(Some(WAIT));
    let t = NewTopic::new("admin-a", 3, TopicReplication::Fixed(1)).set("retention.ms", "3600000");
    let r = a.create_topics([&t], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");

    // Errors come back per topic with Kafka's codes.
    let again = a.create_topics([&t], &opts).await.unwrap();
    assert_eq!(
        again[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::TopicAlreadyExists
    );
    let rf3 = NewTopic::new("admin-rf3", 1, TopicReplication::Fixed(3));
    let r = a.create_topics([&rf3], &opts).await.unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidReplicationFactor
    );
    let bad = NewTopic::new("admin-bad", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon");
    let r = a.create_topics([&bad], &opts).await.unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidConfig
    );
    let unknown =
        NewTopic::new("admin-unknown", 1, TopicReplication::Fixed(1)).set("no.such.config", "1");
    let r = a.create_topics([&unknown], &opts).await.unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidConfig
    );

    // Describe shows the override, with Kafka's config names.
    let configs = describe(&a, "admin-a").await;
    assert_eq!(configs["retention.ms"], ("3600000".to_string(), false));
    assert_eq!(configs["segment.bytes"].0, "1073741824");
    assert_eq!(configs["cleanup.policy"].0, "delete");

    // Alter (full replacement) and check it took.
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic("admin-a")).set("retention.bytes", "1000000");
    let r = a.alter_configs([&alter], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let configs = describe(&a, "admin-a").await;
    assert_eq!(configs["retention.bytes"].0, "1000000");
    assert_eq!(
        configs["retention.ms"].0, "604800000",
        "legacy AlterConfigs replaced the set"
    );

    // More partitions, visible in metadata and usable.
    let r = a
        .create_partitions([&NewPartitions::new("admin-a", 5)], &opts)
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let r = a
        .create_partitions([&NewPartitions::new("admin-a", 2)], &opts)
        .await
        .unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidPartitions
    );
    let md = consumer(&broker.kafka, &[])
        .fetch_metadata(Some("admin-a"), WAIT)
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);
    producer(&broker.kafka, &[])
        .send(
            FutureRecord::<(), str>::to("admin-a")
                .partition(4)
                .payload("p4"),
            WAIT,
        )
        .await
        .expect("produce to a new partition");

    // Delete, then the topic is gone.
    let r = a.delete_topics(&["admin-a"], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let r = a.delete_topics(&["admin-a"], &opts).await.unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
    let md = consumer(&broker.kafka, &[("allow.auto.create.topics", "false")])
        .fetch_metadata(None, WAIT)
        .unwrap();
    assert!(md.topics().iter().all(|t| t.name() != "admin-a"));
}

async fn describe(
    a: &rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>,
    topic: &str,
) -> BTreeMap<String, (String, bool)> {
    let r = a
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let res: &ConfigResource = r[0].as_ref().expect("describe ok");
    assert!(matches!(&res.specifier, OwnedResourceSpecifier::Topic(t) if t == topic));
    res.entries
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                (e.value.clone().unwrap_or_default(), e.is_default),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_topic_without_auto_create_is_an_error() {
    let broker = Broker::start_with(
        sediment_tests::BrokerOptions::default()
            .env("SEDIMENT_KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false"),
    );
    let p = producer(&broker.kafka, &[("message.timeout.ms", "3000")]);
    let err = p
        .send(
            FutureRecord::<(), str>::to("nope")
                .partition(0)
                .payload("x"),
            Duration::from_secs(5),
        )
        .await
        .expect_err("no such topic");
    assert!(
        matches!(
            err.0,
            KafkaError::MessageProduction(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::MessageTimedOut
            )
        ),
        "{:?}",
        err.0
    );
    let md = consumer(&broker.kafka, &[])
        .fetch_metadata(Some("nope"), WAIT)
        .unwrap();
    assert_eq!(
        md.topics()[0].error().map(RDKafkaErrorCode::from),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kcat_produces_consumes_lists_and_queries_offsets() {
    let broker = Broker::start();
    let b = broker.kafka.as_str();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("kcat-{codec}");
        let input: String = (0..100)
            .map(|i| format!("key{i}\tvalue {i} {codec}\n"))
            .collect();
        kcat(
            &[
                "-b", b, "-P", "-t", &topic, "-p", "0", "-K", "\t", "-z", codec,
            ],
            Some(&input),
        );
        let out = kcat(
            &[
                "-b",
                b,
                "-C",
                "-t",
                &topic,
                "-p",
                "0",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%o %k %s\\n",
            ],
            None,
        );
        let expected: String = (0..100)
            .map(|i| format!("{i} key{i} value {i} {codec}\n"))
            .collect();
        assert_eq!(out, expected, "kcat round trip with {codec}");
        // Start in the middle of the stream.
        let out = kcat(
            &[
                "-b", b, "-C", "-t", &topic, "-p", "0", "-o", "95", "-e", "-f", "%o\\n",
            ],
            None,
        );
        assert_eq!(out, "95\n96\n97\n98\n99\n");
    }
    // Headers and timestamps.
    kcat(
        &[
            "-b", b, "-P", "-t", "kcat-h", "-p", "0", "-H", "a=1", "-H", "b=two", "-K", ":",
        ],
        Some("k:v\n"),
    );
    let out = kcat(
        &["-b", b, "-C", "-t", "kcat-h", "-e", "-f", "%k %s %h\\n"],
        None,
    );
    assert_eq!(out, "k v a=1,b=two\n");
    let meta = kcat(&["-b", b, "-L", "-t", "kcat-zstd"], None);
    assert!(
        meta.contains("topic \"kcat-zstd\" with 1 partitions"),
        "{meta}"
    );
    assert!(meta.contains("leader 0"), "{meta}");
    // -Q: offset for a timestamp (all records are newer than 1 ms after the epoch).
    let q = kcat(&["-b", b, "-Q", "-t", "kcat-none:0:1"], None);
    assert!(q.contains("offset 0"), "{q}");
}
