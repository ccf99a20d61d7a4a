//! Bad input over a raw socket: absurd lengths, truncated frames, garbage, bad CRCs, unknown APIs
//! and versions, oversize and bomb batches. The broker answers with the right Kafka error or
//! closes only the offending connection, and keeps serving everyone else.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::Compression;
use rdkafka::producer::FutureRecord;
use sediment_tests::kafka::{consume, create_topic, producer};
use sediment_tests::{Broker, RawClient};
use sediment_tests::{encode_batch, fetch_request, record, with_topic_id};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn batch(values: &[&[u8]], compression: Compression) -> Bytes {
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            record(
                i as i64,
                1_750_000_000_000,
                None,
                Some(Bytes::copy_from_slice(v)),
            )
        })
        .collect();
    encode_batch(&records, compression)
}

fn produce_req(topic: &str, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(topic.to_string().into()))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

/// Produces `records` with a raw v9 Produce and returns (error code, base offset).
fn raw_produce(addr: &str, topic: &str, records: Bytes, acks: i16) -> (i16, i64) {
    let mut c = RawClient::connect(addr).unwrap();
    let resp = c.request(9, &produce_req(topic, records, acks)).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    // The connection stays usable after an error answer.
    c.request(3, &ApiVersionsRequest::default())
        .expect("connection still open");
    (p.error_code, p.base_offset)
}

/// A well-behaved client still gets served.
fn assert_serving(broker: &Broker) {
    let mut c = RawClient::connect(&broker.kafka).expect("connect");
    let resp = c
        .request(3, &ApiVersionsRequest::default())
        .expect("ApiVersions");
    assert_eq!(resp.error_code, 0);
    assert!(
        resp.api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16)
    );
}

#[test]
fn oversized_frame_is_refused_before_its_body_arrives() {
    let broker = Broker::start_with(
        sediment_tests::BrokerOptions::default()
            .env("SEDIMENT_KAFKA_SOCKET_REQUEST_MAX_BYTES", "1048576"),
    );
    for len in [i32::MAX, 1_048_577, -1, 0] {
        let mut c = RawClient::connect(&broker.kafka).unwrap();
        let started = Instant::now();
        // Only the length: a broker that waited for the body would keep the connection open.
        c.send_raw(&len.to_be_bytes()).unwrap();
        assert!(c.is_closed_by_peer(), "length {len}: connection closed");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "closed at once, not after buffering"
        );
        assert_serving(&broker);
    }
    let (_, metrics) = broker.admin_get("/metrics").unwrap();
    assert!(
        metrics.contains("sediment_kafka_malformed_requests_total 4"),
        "{metrics}"
    );
}

#[test]
fn truncated_frames_and_garbage_close_only_their_connection() {
    let broker = Broker::start();
    let mut healthy = RawClient::connect(&broker.kafka).unwrap();
    healthy.request(3, &ApiVersionsRequest::default()).unwrap();
    let cases: Vec<Vec<u8>> = vec![
        vec![0, 3],                                      // shorter than a header
        vec![0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff, 0xff], // ApiVersions v3 header cut short
        {
            // Metadata v12 header followed by garbage.
            let mut f = vec![0, 3, 0, 12, 0, 0, 0, 7];
            f.extend((0..200u32).map(|i| (i * 7919 % 251) as u8));
            f
        },
        {
            // Metadata v1 claiming 2^31-1 topics in a tiny frame.
            let mut f = vec![0, 3, 0, 1, 0, 0, 0, 9, 0xff, 0xff];
            f.extend_from_slice(&i32::MAX.to_be_bytes());
            f
        },
        {
            // Produce v9 (flexible) with a compact array claiming 4 billion topics.
            let mut f = vec![0, 0, 0, 9, 0, 0, 0, 9, 0, 0, 0];
            f.extend_from_slice(&[
                0x00, 0xff, 0xff, 0, 0, 0x13, 0x88, 0xff, 0xff, 0xff, 0xff, 0x0f,
            ]);
            f
        },
    ];
    for (i, body) in cases.iter().enumerate() {
        let mut c = RawClient::connect(&broker.kafka).unwrap();
        c.send_frame(body).unwrap();
        assert!(c.is_closed_by_peer(), "case {i}: connection closed");
        assert_serving(&broker);
    }
    // A frame that promises more bytes than it sends, then the client hangs up.
    {
        let mut c = RawClient::connect(&broker.kafka).unwrap();
        c.send_raw(&[0, 0, 0, 100, 0, 18, 0, 3]).unwrap();
    }
    // The connection opened before all this still works.
    healthy
        .request(3, &ApiVersionsRequest::default())
        .expect("unaffected connection");
    assert_serving(&broker);
}

#[test]
fn unknown_apis_and_versions_get_unsupported_version() {
    let broker = Broker::start();
    let mut c = RawClient::connect(&broker.kafka).unwrap();
    // Unknown API key 999.
    c.send_frame(&[0x03, 0xe7, 0, 0, 0, 0, 0, 42, 0, 0])
        .unwrap();
    assert_eq!(c.read_frame().unwrap().unwrap(), vec![0, 0, 0, 42, 0, 35]);
    // Produce v99.
    c.send_frame(&[0, 0, 0, 99, 0, 0, 0, 43, 0, 0]).unwrap();
    assert_eq!(c.read_frame().unwrap().unwrap(), vec![0, 0, 0, 43, 0, 35]);
    // Produce v2 (below the served range).
    c.send_frame(&[0, 0, 0, 2, 0, 0, 0, 44, 0, 0]).unwrap();
    assert_eq!(c.read_frame().unwrap().unwrap(), vec![0, 0, 0, 44, 0, 35]);
    // ApiVersions from the future: a v0 answer with the error and our ranges, so clients can
    // fall back (Kafka's behaviour).
    c.send_frame(&[0, 18, 0, 99, 0, 0, 0, 45, 0, 0]).unwrap();
    let mut resp = Bytes::from(c.read_frame().unwrap().unwrap());
    assert_eq!(&resp[..4], &[0, 0, 0, 45]);
    let _ = resp.split_to(4);
    let v = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(v.error_code, 35);
    assert!(
        v.api_keys
            .iter()
            .any(|k| k.api_key == 18 && k.max_version >= 3)
    );
    // The connection stays open and serves a normal request.
    let ok = c.request(3, &ApiVersionsRequest::default()).unwrap();
    assert_eq!(ok.error_code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_batches_get_kafka_errors_and_leave_the_log_untouched() {
    let broker = Broker::start();
    create_topic(
        &broker.kafka,
        "strict",
        1,
        &[("max.message.bytes", "100000")],
    )
    .await;
    let addr = broker.kafka.as_str();

    let good = batch(&[b"one", b"two"], Compression::None);
    assert_eq!(raw_produce(addr, "strict", good.clone(), -1), (0, 0));

    let mut flipped = BytesMut::from(&good[..]);
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    assert_eq!(
        raw_produce(addr, "strict", flipped.freeze(), -1).0,
        2,
        "bad CRC: CORRUPT_MESSAGE"
    );

    let big = batch(&[&vec![1u8; 150_000]], Compression::None);
    assert_eq!(
        raw_produce(addr, "strict", big, 1).0,
        10,
        "over max.message.bytes: MESSAGE_TOO_LARGE"
    );

    // 100 MiB of zeros compress to ~10 KiB; inflating it would pass the 64 MiB cap.
    let bomb = batch(&[&vec![0u8; 100 << 20]], Compression::Zstd);
    assert!(
        bomb.len() < 100_000,
        "bomb is small on the wire: {}",
        bomb.len()
    );
    assert_eq!(
        raw_produce(addr, "strict", bomb, 1).0,
        10,
        "decompression bomb: MESSAGE_TOO_LARGE"
    );

    let truncated = good.slice(..good.len() - 5);
    assert_eq!(
        raw_produce(addr, "strict", truncated, 1).0,
        2,
        "truncated batch: CORRUPT_MESSAGE"
    );

    let mut two = BytesMut::from(&good[..]);
    two.extend_from_slice(&good);
    assert_eq!(
        raw_produce(addr, "strict", two.freeze(), 1).0,
        87,
        "two batches: INVALID_RECORD"
    );

    assert_eq!(
        raw_produce(addr, "strict", good.clone(), 2).0,
        21,
        "acks=2: INVALID_REQUIRED_ACKS"
    );
    assert_eq!(
        raw_produce(addr, "no-such-topic", good.clone(), 1).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );

    // Only the first good batch is in the log.
    let msgs = consume(addr, "strict", 0, 0, 2, WAIT).unwrap();
    assert_eq!(msgs.len(), 2);
    let (low, high) = rdkafka::consumer::Consumer::fetch_watermarks(
        &sediment_tests::kafka::consumer(addr, &[]),
        "strict",
        0,
        WAIT,
    )
    .unwrap();
    assert_eq!((low, high), (0, 2));
    assert_eq!(
        raw_produce(addr, "strict", good, 1),
        (0, 2),
        "still accepting good batches"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_topics_and_offsets_in_fetch_get_their_error_codes() {
    let broker = Broker::start();
    create_topic(&broker.kafka, "known", 1, &[]).await;
    let mut c = RawClient::connect(&broker.kafka).unwrap();
    let fetch = |topic: &str, id: Uuid, offset: i64| {
        with_topic_id(fetch_request(topic, 0, offset, 1 << 20), id)
    };
    let r = c.request(11, &fetch("missing", Uuid::nil(), 0)).unwrap();
    assert_eq!(r.responses[0].partitions[0].error_code, 3);
    let r = c.request(13, &fetch("", Uuid::new_v4(), 0)).unwrap();
    assert_eq!(
        r.responses[0].partitions[0].error_code, 100,
        "UNKNOWN_TOPIC_ID"
    );
    let r = c.request(11, &fetch("known", Uuid::nil(), 42)).unwrap();
    assert_eq!(
        r.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );
    // By topic id (v13+), the id from Metadata works.
    let md = c
        .request(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName("known".into()))),
            ])),
        )
        .unwrap();
    let id = md.topics[0].topic_id;
    assert_ne!(id, Uuid::nil());
    let r = c.request(13, &fetch("", id, 0)).unwrap();
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
    assert_eq!(r.responses[0].topic_id, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_connections_do_not_disturb_a_working_client() {
    let broker = Broker::start();
    create_topic(&broker.kafka, "steady", 1, &[]).await;
    let addr = broker.kafka.clone();
    let attackers = std::thread::spawn(move || {
        // A few connections that start a frame and never finish it...
        let stalled: Vec<RawClient> = (0..10)
            .filter_map(|_| {
                let mut c = RawClient::connect(&addr).ok()?;
                c.send_raw(&[0, 0, 0x10, 0, 0, 0, 0, 9]).ok()?;
                Some(c)
            })
            .collect();
        // ...and many that send garbage (some of it parses as an unsupported API) and leave.
        for i in 0..300u32 {
            if let Ok(mut c) = RawClient::connect(&addr) {
                let body: Vec<u8> = (0..(i * 13 % 300 + 1))
                    .map(|j| (j * 31 + i) as u8)
                    .collect();
                let _ = c.send_frame(&body);
            }
        }
        drop(stalled);
    });
    let p = producer(&broker.kafka, &[("acks", "all")]);
    for i in 0..300 {
        p.send(
            FutureRecord::<(), String>::to("steady")
                .partition(0)
                .payload(&i.to_string()),
            WAIT,
        )
        .await
        .expect("good producer unaffected");
    }
    attackers.join().unwrap();
    let msgs = consume(&broker.kafka, "steady", 0, 0, 300, WAIT).unwrap();
    assert_eq!(msgs.len(), 300);
    assert_serving(&broker);
}
