//! Shared by the tests of the archive and of replay from it: a stream of realistic records
//! produced with librdkafka, a broker archiving into SeaweedFS, and waits on the archiver.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::Value;

use crate::kafka::producer;
use crate::s3::SeaweedFs;
use crate::{Broker, BrokerOptions, wait_for};

pub const BUCKET: &str = "sediment-archive";
pub const WAIT: Duration = Duration::from_secs(90);

/// What the broker and the test agree on in every archive test: fast archiver and retention
/// passes, and quick failure of requests to a store that went away.
pub const FAST: &str = r#"
[log]
retention_check_interval_ms = 200
[archive]
check_interval_ms = 200
gc_interval_ms = 300
retry_backoff_max_ms = 1000
max_retries = 1
retry_timeout_ms = 2000
request_timeout_ms = 5000
connect_timeout_ms = 1000
"#;

/// Small segments that roll after 1.5 s even when the partition goes quiet.
pub const SMALL_SEGMENTS: [(&str, &str); 2] = [("segment.bytes", "32768"), ("segment.ms", "1500")];

#[derive(Debug, Clone, PartialEq)]
pub struct Produced {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

pub fn hex(b: &Option<Vec<u8>>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Record `i` of a test stream: JSON events with keys (some null), tombstones, and headers
/// including a repeated key and a null value.
pub fn record(i: usize, partitions: i32, t0: i64) -> Produced {
    let key = (!i.is_multiple_of(11)).then(|| format!("user-{}", i % 13).into_bytes());
    let value = (!i.is_multiple_of(97)).then(|| {
        format!(
            r#"{{"id":{i},"type":"{}","user":"user-{}","amount":{}.{:02},"currency":"EUR","items":[{{"sku":"SKU-{}","qty":{}}}],"session":"{:016x}"}}"#,
            ["click", "view", "purchase", "refund"][i % 4],
            i % 13,
            i % 500,
            i % 100,
            i % 211,
            1 + i % 5,
            (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        )
        .into_bytes()
    });
    let headers = if i.is_multiple_of(3) {
        vec![
            ("trace".to_string(), Some(format!("t-{i}").into_bytes())),
            ("trace".to_string(), Some(b"again".to_vec())),
            ("nothing".to_string(), None),
        ]
    } else {
        vec![("source".to_string(), Some(b"web".to_vec()))]
    };
    Produced {
        partition: (i as i32) % partitions,
        offset: -1,
        timestamp: t0 + i as i64 * 10,
        key,
        value,
        headers,
    }
}

/// Produces records `from..to` with librdkafka (lz4, batched) and returns them with the
/// offsets the broker acknowledged.
pub async fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    from: usize,
    to: usize,
    t0: i64,
) -> Vec<Produced> {
    let p = producer(
        bootstrap,
        &[
            ("compression.type", "lz4"),
            ("linger.ms", "5"),
            ("acks", "all"),
            ("batch.size", "8192"),
        ],
    );
    let mut records = Vec::new();
    let mut deliveries = Vec::new();
    for i in from..to {
        let r = record(i, partitions, t0);
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut fr: FutureRecord<'_, Vec<u8>, Vec<u8>> = FutureRecord::to(topic)
            .partition(r.partition)
            .timestamp(r.timestamp)
            .headers(headers);
        if let Some(k) = &r.key {
            fr = fr.key(k);
        }
        if let Some(v) = &r.value {
            fr = fr.payload(v);
        }
        let delivery = p
            .send_result(fr)
            .unwrap_or_else(|(e, _)| panic!("record {i} not queued: {e}"));
        deliveries.push(delivery);
        records.push(r);
    }
    let results = futures::future::join_all(deliveries).await;
    records
        .into_iter()
        .zip(results)
        .enumerate()
        .map(|(i, (r, d))| {
            let d = d
                .expect("delivery future")
                .unwrap_or_else(|(e, _)| panic!("record {} not acknowledged: {e}", from + i));
            Produced {
                offset: d.offset,
                ..r
            }
        })
        .collect()
}

/// Waits until every partition of `topic` is archived up to its log end (the tail rolls by
/// `segment.ms`), and returns the archive view.
pub fn wait_archived(broker: &Broker, topic: &str) -> Value {
    wait_for(WAIT, || {
        let v = broker.admin_json(&format!("/v1/archive?topic={topic}"));
        let parts = v["partitions"].as_array()?;
        let done = !parts.is_empty()
            && parts.iter().all(|p| {
                p["lag_segments"] == 0
                    && p["log_end_offset"].as_i64() > Some(0)
                    && p["end_offset"] == p["log_end_offset"]
            });
        done.then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "{topic} was not fully archived within {WAIT:?}: {}",
            broker.admin_json(&format!("/v1/archive?topic={topic}"))
        )
    })
}

pub fn s3_broker(s3: &SeaweedFs, prefix: &str, extra_toml: &str) -> Broker {
    Broker::start_with(s3_options(s3, prefix, extra_toml))
}

pub fn s3_options(s3: &SeaweedFs, prefix: &str, extra_toml: &str) -> BrokerOptions {
    // FAST ends in the [archive] section, so extra lines land there.
    let mut options = BrokerOptions::default().config(&format!("{FAST}{extra_toml}"));
    options.args = vec!["--archive-url".into(), format!("s3://{BUCKET}/{prefix}")];
    for (k, v) in s3.aws_env() {
        options = options.env(&k, &v);
    }
    options
}

pub fn metric(broker: &Broker, name: &str) -> f64 {
    let (_, text) = broker.admin_get("/metrics").unwrap();
    // `name` is a whole metric name, or a name with the start of its labels (`…{op="put"}`).
    text.lines()
        .filter(|l| {
            l.starts_with(name) && (name.contains('{') || l[name.len()..].starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
