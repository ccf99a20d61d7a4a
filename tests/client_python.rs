//! The two Python Kafka clients against the real broker: confluent-kafka (librdkafka inside the
//! wheel) and kafka-python (an independent pure-Python implementation). The scripts in
//! `tests/python/` assert as they go and print a JSON summary that is checked here.

use sediment_tests::{Broker, run_python};

fn summary(script: &str) -> serde_json::Value {
    let broker = Broker::start();
    let out = run_python(script, &[&broker.kafka]).unwrap_or_else(|e| panic!("{e:#}"));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script}: bad summary {last:?}: {e}"))
}

fn assert_summary(v: &serde_json::Value, partitions: i64) {
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        assert_eq!(v[format!("codec_{codec}")], 303, "{codec}: {v}");
    }
    for key in [
        "middle_of_batch",
        "near_max_message_bytes",
        "offsets_for_times",
        "admin",
    ] {
        assert_eq!(v[key], true, "{key}: {v}");
    }
    assert_eq!(v["partitions"], partitions);
}

#[test]
fn confluent_kafka_produces_consumes_and_administers() {
    assert_summary(&summary("confluent_kafka_client.py"), 12);
}

#[test]
fn kafka_python_produces_consumes_and_administers() {
    assert_summary(&summary("kafka_python_client.py"), 9);
}
