//! Idempotent producers: a proxy between client and broker drops Produce responses after the
//! broker appended (the client sees a broken connection and retries); with idempotence every
//! record is stored exactly once and in order, without it the same retries store duplicates.
//! Producer state (the last sequences of each producer) survives `kill -9`, and producer ids are
//! never handed out twice.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, InitProducerIdRequest, ProduceRequest, ProducerId, TopicName,
};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::producer::FutureRecord;
use sediment_log::BatchHeader;
use sediment_tests::kafka::{create_topic, producer};
use sediment_tests::{Broker, BrokerOptions, RawClient, fetch_request, run_with_timeout};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
const INVALID_PRODUCER_EPOCH: i16 = 47;

// ---- A proxy that loses Produce acknowledgements ----------------------------------------------

/// A TCP proxy in front of the broker. It forwards Kafka frames both ways; for the Produce
/// requests it is told to pick, it closes both connections when the response comes back
/// instead of forwarding it: the broker appended, the client never hears about it.
struct Proxy {
    addr: String,
    upstream: Arc<Mutex<String>>,
    /// Produce requests still to pick, one after another.
    armed: Arc<AtomicUsize>,
    /// When non-zero, also pick every Nth Produce request.
    every: Arc<AtomicUsize>,
    produce_requests: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Proxy {
    /// Binds a free port; connections are refused until `set_upstream`.
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let proxy = Self {
            addr: listener.local_addr().unwrap().to_string(),
            upstream: Arc::new(Mutex::new(String::new())),
            armed: Arc::new(AtomicUsize::new(0)),
            every: Arc::new(AtomicUsize::new(0)),
            produce_requests: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicUsize::new(0)),
        };
        let upstream = Arc::clone(&proxy.upstream);
        let rules = Rules {
            armed: Arc::clone(&proxy.armed),
            every: Arc::clone(&proxy.every),
            produce_requests: Arc::clone(&proxy.produce_requests),
            dropped: Arc::clone(&proxy.dropped),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let target = upstream.lock().unwrap().clone();
                let Ok(broker) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = broker.set_nodelay(true);
                let rules = rules.clone();
                std::thread::spawn(move || rules.serve(client, broker));
            }
        });
        proxy
    }

    fn set_upstream(&self, addr: &str) {
        *self.upstream.lock().unwrap() = addr.to_string();
    }

    /// Picks the next Produce request: its response will be lost.
    fn drop_next_produce_response(&self) {
        self.armed.fetch_add(1, Ordering::SeqCst);
    }

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Rules {
    armed: Arc<AtomicUsize>,
    every: Arc<AtomicUsize>,
    produce_requests: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

/// One frame, length prefix included; `None` at end of stream or on any error.
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let n = i32::from_be_bytes(len);
    if !(0..=(256 << 20)).contains(&n) {
        return None;
    }
    let mut frame = vec![0u8; 4 + n as usize];
    frame[..4].copy_from_slice(&len);
    s.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

impl Rules {
    fn serve(self, client: TcpStream, broker: TcpStream) {
        // Correlation ids (of this connection) whose responses are to be lost.
        let doomed: Arc<Mutex<HashSet<i32>>> = Arc::default();
        let requests = {
            let (mut from, mut to) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
            let doomed = Arc::clone(&doomed);
            let rules = self.clone();
            std::thread::spawn(move || {
                while let Some(frame) = read_frame(&mut from) {
                    if frame.len() >= 12 {
                        let api_key = i16::from_be_bytes([frame[4], frame[5]]);
                        let correlation_id =
                            i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
                        if api_key == 0 && rules.pick() {
                            // Recorded before forwarding, so the response cannot overtake it.
                            doomed.lock().unwrap().insert(correlation_id);
                        }
                    }
                    if to.write_all(&frame).is_err() {
                        break;
                    }
                }
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
            })
        };
        let (mut from, mut to) = (broker, client);
        while let Some(frame) = read_frame(&mut from) {
            if frame.len() >= 8 {
                let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                if doomed.lock().unwrap().remove(&correlation_id) {
                    self.dropped.fetch_add(1, Ordering::SeqCst);
                    // Hold on a moment, so the client pipelines more Produce requests that the
                    // broker appends but whose responses are lost with the connection too.
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
            if to.write_all(&frame).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
        let _ = requests.join();
    }

    /// Whether to lose the response to the Produce request just seen.
    fn pick(&self) -> bool {
        let n = self.produce_requests.fetch_add(1, Ordering::SeqCst) + 1;
        let every = self.every.load(Ordering::SeqCst);
        if every > 0 && n.is_multiple_of(every) {
            return true;
        }
        self.armed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| a.checked_sub(1))
            .is_ok()
    }
}

/// A broker that tells clients to connect through `proxy`.
fn broker_behind(proxy: &Proxy) -> Broker {
    let broker = Broker::start_with(BrokerOptions {
        args: vec!["--advertised-listener".into(), proxy.addr.clone()],
        ..BrokerOptions::default()
    });
    proxy.set_upstream(&broker.kafka);
    broker
}

// ---- Reading and writing the log directly ------------------------------------------------------

/// Every record of `topic`/`partition`, read from the broker itself (not through the proxy):
/// (offset, value).
fn read_partition(bootstrap: &str, topic: &str, partition: i32) -> Vec<(i64, String)> {
    let mut c = RawClient::connect(bootstrap).expect("connect");
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let resp = c
            .request(12, &fetch_request(topic, partition, next, 16 << 20))
            .expect("fetch");
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch error");
        if next >= p.high_watermark {
            return out;
        }
        let mut records = p.records.clone().unwrap_or_default();
        let sets = RecordBatchDecoder::decode_all(&mut records).expect("decode batches");
        let before = next;
        for r in sets.iter().flat_map(|s| &s.records) {
            if r.offset >= next {
                let value =
                    String::from_utf8(r.value.clone().unwrap_or_default().to_vec()).unwrap();
                out.push((r.offset, value));
                next = r.offset + 1;
            }
        }
        assert!(next > before, "fetch at {before} made no progress");
    }
}

/// The raw batches of a partition with their headers' producer fields.
#[derive(Debug, Clone)]
struct StoredBatch {
    base_offset: i64,
    last_offset: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    bytes: Bytes,
}

fn stored_batches(bootstrap: &str, topic: &str) -> Vec<StoredBatch> {
    let mut c = RawClient::connect(bootstrap).expect("connect");
    let resp = c
        .request(12, &fetch_request(topic, 0, 0, 16 << 20))
        .expect("fetch");
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let raw = p.records.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let h = BatchHeader::parse(&raw[at..]).expect("batch header");
        out.push(StoredBatch {
            base_offset: h.base_offset(),
            last_offset: h.last_offset(),
            producer_id: h.producer_id(),
            producer_epoch: h.producer_epoch(),
            base_sequence: h.base_sequence(),
            bytes: raw.slice(at..at + h.total_size()),
        });
        at += h.total_size();
    }
    out
}

/// Highest version of `api` both the broker and the codec speak.
fn negotiated_version(c: &mut RawClient, api: ApiKey) -> i16 {
    let resp = c
        .request(0, &ApiVersionsRequest::default())
        .expect("ApiVersions");
    let served = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == api as i16)
        .unwrap_or_else(|| panic!("the broker does not serve {api:?}"));
    served.max_version.min(api.valid_versions().max)
}

/// A new producer id and epoch from InitProducerId (no transactional id).
fn init_producer_id(bootstrap: &str) -> (i64, i16) {
    let mut c = RawClient::connect(bootstrap).expect("connect");
    let version = negotiated_version(&mut c, ApiKey::InitProducerId);
    let resp = c
        .request(
            version,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(-1)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .expect("InitProducerId");
    assert_eq!(resp.error_code, 0, "InitProducerId v{version}: {resp:?}");
    assert!(resp.producer_id.0 >= 0, "{resp:?}");
    (resp.producer_id.0, resp.producer_epoch)
}

/// A batch of `values` from producer `pid`/`epoch`, first sequence `sequence`.
fn idempotent_batch(pid: i64, epoch: i16, sequence: i32, values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp: 1_750_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// Sends one batch to partition 0 with acks=all: (error code, base offset).
fn produce_raw(c: &mut RawClient, topic: &str, batch: Bytes) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(topic.to_string().into()))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ]),
        ]);
    let resp = c.request(9, &req).expect("produce");
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// The partition's log end offset.
fn log_end(c: &mut RawClient, topic: &str) -> i64 {
    let resp = c
        .request(12, &fetch_request(topic, 0, 0, 1))
        .expect("fetch");
    resp.responses[0].partitions[0].high_watermark
}

// ---- Tests ---------------------------------------------------------------------------------------

/// Produces `waves` x 100 values `0..` to partition 0 through the proxy, losing one Produce
/// response per wave. Returns the delivery offset reported for each value.
async fn produce_losing_acks(
    proxy: &Proxy,
    topic: &str,
    idempotent: bool,
    waves: usize,
) -> HashMap<String, i64> {
    let p = producer(
        &proxy.addr,
        &[
            (
                "enable.idempotence",
                if idempotent { "true" } else { "false" },
            ),
            ("acks", "all"),
            ("linger.ms", "2"),
            // librdkafka bounds an idempotent partition's in-flight *records* by five, so
            // single-record batches are what lets it pipeline five Produce requests.
            ("batch.num.messages", "1"),
            ("max.in.flight.requests.per.connection", "5"),
            ("retry.backoff.ms", "50"),
            ("reconnect.backoff.ms", "10"),
        ],
    );
    let mut reported = HashMap::new();
    for wave in 0..waves {
        proxy.drop_next_produce_response();
        let values: Vec<String> = (wave * 100..(wave + 1) * 100)
            .map(|i| format!("{i:06}"))
            .collect();
        let futures: Vec<_> = values
            .iter()
            .map(|v| {
                p.send_result(
                    FutureRecord::<(), String>::to(topic)
                        .partition(0)
                        .payload(v),
                )
                .expect("enqueue")
            })
            .collect();
        for (v, f) in values.into_iter().zip(futures) {
            let d = f
                .await
                .expect("delivery future")
                .unwrap_or_else(|(e, _)| panic!("{v} not delivered: {e}"));
            reported.insert(v, d.offset);
        }
    }
    reported
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_producer_stores_each_record_once_when_acks_are_lost() {
    let proxy = Proxy::start();
    let broker = broker_behind(&proxy);
    create_topic(&broker.kafka, "exactly-once", 1, &[]).await;
    let waves = 10;
    let reported = produce_losing_acks(&proxy, "exactly-once", true, waves).await;
    assert_eq!(proxy.dropped(), waves, "one response lost per wave");
    // librdkafka keeps up to five single-record batches in flight; the proxy holds each lost
    // response back a moment, so every lost connection takes several appended batches with it.
    let retried = proxy.produce_requests.load(Ordering::SeqCst) - waves * 100;
    assert!(
        retried >= 2 * waves,
        "only {retried} Produce requests were retried: the dedup window was hardly exercised"
    );

    let stored = read_partition(&broker.kafka, "exactly-once", 0);
    let expected: Vec<String> = (0..waves * 100).map(|i| format!("{i:06}")).collect();
    let values: Vec<String> = stored.iter().map(|(_, v)| v.clone()).collect();
    if values != expected {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for v in &values {
            *counts.entry(v).or_default() += 1;
        }
        let dups: BTreeSet<&&str> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(v, _)| v)
            .collect();
        panic!(
            "stored {} records for {} sent; {} values stored more than once (first {:?}); \
             first difference at index {:?}",
            values.len(),
            expected.len(),
            dups.len(),
            dups.first(),
            values.iter().zip(&expected).position(|(a, b)| a != b)
        );
    }
    for (i, (offset, v)) in stored.iter().enumerate() {
        assert_eq!(*offset, i as i64, "dense offsets");
        assert_eq!(
            reported[v], *offset,
            "{v}: the acknowledged offset is where it is stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_idempotence_the_same_lost_acks_store_duplicates() {
    let proxy = Proxy::start();
    let broker = broker_behind(&proxy);
    create_topic(&broker.kafka, "at-least-once", 1, &[]).await;
    let waves = 5;
    produce_losing_acks(&proxy, "at-least-once", false, waves).await;
    assert_eq!(proxy.dropped(), waves);
    let stored = read_partition(&broker.kafka, "at-least-once", 0);
    let distinct: BTreeSet<&str> = stored.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(
        distinct.len(),
        waves * 100,
        "every record stored at least once"
    );
    let duplicates = stored.len() - distinct.len();
    assert!(
        duplicates > 0,
        "the lost acknowledgements caused no retried duplicates, so the proxy proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_python_idempotent_producer_stores_each_record_once_when_acks_are_lost() {
    let proxy = Proxy::start();
    let broker = broker_behind(&proxy);
    create_topic(&broker.kafka, "py-exactly-once", 1, &[]).await;
    // Lose the response of every 4th Produce request (retries included).
    proxy.every.store(4, Ordering::SeqCst);
    let script = r#"
import sys
from kafka import KafkaProducer
p = KafkaProducer(bootstrap_servers=sys.argv[1], acks="all", enable_idempotence=True,
                  linger_ms=2, batch_size=400, max_in_flight_requests_per_connection=5,
                  retry_backoff_ms=50, reconnect_backoff_ms=10, request_timeout_ms=10000,
                  delivery_timeout_ms=60000)
for wave in range(6):
    futures = [p.send(sys.argv[2], value=b"%06d" % i, partition=0)
               for i in range(wave * 50, (wave + 1) * 50)]
    for f in futures:
        f.get(timeout=60)
p.flush()
p.close()
print("ok")
"#;
    let out = run_with_timeout(
        Command::new(sediment_tests::python())
            .arg("-c")
            .arg(script)
            .arg(&proxy.addr)
            .arg("py-exactly-once"),
        Duration::from_secs(90),
    )
    .expect("python runs");
    assert!(
        out.status.success(),
        "kafka-python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(proxy.dropped() >= 3, "responses lost: {}", proxy.dropped());
    let stored = read_partition(&broker.kafka, "py-exactly-once", 0);
    let values: Vec<String> = stored.iter().map(|(_, v)| v.clone()).collect();
    let expected: Vec<String> = (0..300).map(|i| format!("{i:06}")).collect();
    assert_eq!(values, expected, "each value once, in order");
    assert!(stored.iter().enumerate().all(|(i, (o, _))| *o == i as i64));
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_state_survives_kill_9() {
    let mut broker = Broker::start();
    let topic = "producer-state";
    create_topic(&broker.kafka, topic, 1, &[]).await;
    let p = producer(
        &broker.kafka,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10"),
        ],
    );
    let values: Vec<String> = (0..100).map(|i| format!("before-{i}")).collect();
    let futures: Vec<_> = values
        .iter()
        .map(|v| {
            p.send_result(
                FutureRecord::<(), String>::to(topic)
                    .partition(0)
                    .payload(v),
            )
            .expect("enqueue")
        })
        .collect();
    for f in futures {
        f.await.unwrap().expect("delivered");
    }
    drop(p);
    let batches = stored_batches(&broker.kafka, topic);
    assert!(batches.len() >= 6, "several batches: {}", batches.len());
    let last = batches.last().unwrap().clone();
    let (pid, epoch) = (last.producer_id, last.producer_epoch);
    assert!(pid >= 0, "idempotent batches carry the producer id");
    for b in &batches {
        assert_eq!((b.producer_id, b.producer_epoch), (pid, epoch), "{b:?}");
        assert_eq!(
            i64::from(b.base_sequence),
            b.base_offset,
            "sequences from 0: {b:?}"
        );
    }
    assert_eq!(last.last_offset, 99);

    broker.kill9();
    broker.restart();
    let mut c = RawClient::connect(&broker.kafka).expect("connect");
    assert_eq!(log_end(&mut c, topic), 100);

    // The last acknowledged batch, sent again byte for byte: acknowledged with its original
    // offset, not appended.
    assert_eq!(
        produce_raw(&mut c, topic, last.bytes.clone()),
        (0, last.base_offset),
        "a retried batch is acknowledged at its original offset"
    );
    assert_eq!(log_end(&mut c, topic), 100, "and not appended again");
    // An older one is not appended either (acknowledged at its original offset if the broker
    // still remembers it, refused otherwise).
    let first = &batches[0];
    let (code, offset) = produce_raw(&mut c, topic, first.bytes.clone());
    assert!(
        (code == 0 && offset == first.base_offset)
            || code == OUT_OF_ORDER_SEQUENCE_NUMBER
            || code == DUPLICATE_SEQUENCE_NUMBER,
        "first batch resent: error {code}, offset {offset}"
    );
    assert_eq!(log_end(&mut c, topic), 100);

    // A gap in the sequence is refused.
    let next = 100;
    let gap = idempotent_batch(pid, epoch, next + 1, &["gap-1", "gap-2"]);
    assert_eq!(
        produce_raw(&mut c, topic, gap).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(log_end(&mut c, topic), 100);
    // The next sequence continues the log.
    let batch = idempotent_batch(pid, epoch, next, &["after-0", "after-1", "after-2"]);
    assert_eq!(produce_raw(&mut c, topic, batch.clone()), (0, 100));
    assert_eq!(produce_raw(&mut c, topic, batch), (0, 100), "a duplicate");
    assert_eq!(log_end(&mut c, topic), 103);
    // A new epoch starts at sequence 0; after that the old epoch is fenced.
    let bumped = idempotent_batch(pid, epoch + 1, 0, &["epoch-0", "epoch-1"]);
    assert_eq!(produce_raw(&mut c, topic, bumped), (0, 103));
    let stale = idempotent_batch(pid, epoch, next + 3, &["stale"]);
    assert_eq!(produce_raw(&mut c, topic, stale).0, INVALID_PRODUCER_EPOCH);
    assert_eq!(log_end(&mut c, topic), 105);

    let values: Vec<String> = read_partition(&broker.kafka, topic, 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let mut expected = values[..100].to_vec();
    assert_eq!(
        expected,
        (0..100).map(|i| format!("before-{i}")).collect::<Vec<_>>()
    );
    expected.extend(["after-0", "after-1", "after-2", "epoch-0", "epoch-1"].map(String::from));
    assert_eq!(values, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_ids_are_never_reused_across_restarts() {
    let mut broker = Broker::start();
    let mut ids = Vec::new();
    for round in 0..3 {
        if round > 0 {
            broker.kill9();
            broker.restart();
        }
        for _ in 0..2 {
            let (pid, epoch) = init_producer_id(&broker.kafka);
            assert_eq!(epoch, 0, "a new producer id starts at epoch 0");
            ids.push(pid);
        }
    }
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "producer ids handed out twice: {ids:?}"
    );
}
