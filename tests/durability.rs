//! Crash safety with the real process: `kill -9` in the middle of an acks=all stream, a corrupted
//! segment tail, and graceful restarts. The assertion is always the same: every acknowledged
//! record is there exactly once, offsets are dense, and the broker keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use sediment_log::BatchHeader;
use sediment_tests::kafka::{consume, consumer, create_topic, payload, producer};
use sediment_tests::{Broker, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// Reads every record of every partition: partition -> values in offset order, after checking
/// that offsets are dense from the log start.
fn read_everything(bootstrap: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<String>> {
    let c = consumer(bootstrap, &[]);
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let (low, high) = c.fetch_watermarks(topic, p, WAIT).unwrap();
        assert_eq!(low, 0, "nothing was deleted");
        let msgs = consume(bootstrap, topic, p, 0, high as usize, WAIT).unwrap();
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.offset(), i as i64, "dense offsets in partition {p}");
        }
        out.insert(
            p,
            msgs.iter()
                .map(|m| String::from_utf8(payload(m).unwrap()).unwrap())
                .collect(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_records_survive_kill_9_exactly_once() {
    let mut broker = Broker::start();
    let partitions = 3;
    create_topic(&broker.kafka, "durable", partitions, &[]).await;

    // A producer streams acks=all records until the broker dies under it.
    let bootstrap = broker.kafka.clone();
    let acked_count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&acked_count);
    let producing = tokio::spawn(async move {
        let p = producer(
            &bootstrap,
            &[
                ("acks", "all"),
                ("linger.ms", "2"),
                ("message.timeout.ms", "5000"),
                ("max.in.flight.requests.per.connection", "5"),
            ],
        );
        let mut acked: HashMap<String, (i32, i64)> = HashMap::new();
        let mut i = 0u64;
        'outer: loop {
            let mut wave = Vec::new();
            for _ in 0..200 {
                let value = format!("record-{i}");
                i += 1;
                let part = (i % partitions as u64) as i32;
                match p.send_result(
                    FutureRecord::<(), String>::to("durable")
                        .partition(part)
                        .payload(&value),
                ) {
                    Ok(f) => wave.push((value, f)),
                    Err(_) => break 'outer,
                }
            }
            for (value, f) in wave {
                match f.await {
                    Ok(Ok(d)) => {
                        acked.insert(value, (d.partition, d.offset));
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => break 'outer,
                }
            }
        }
        acked
    });
    wait_for(WAIT, || {
        (acked_count.load(Ordering::SeqCst) >= 3000).then_some(())
    })
    .expect("the producer made progress");
    broker.kill9();
    let acked = tokio::time::timeout(Duration::from_secs(60), producing)
        .await
        .expect("producer stops once the broker is gone")
        .unwrap();
    assert!(acked.len() >= 3000);

    broker.restart();
    let stored = read_everything(&broker.kafka, "durable", partitions);
    let mut seen: HashMap<&str, (i32, i64)> = HashMap::new();
    for (p, values) in &stored {
        for (offset, v) in values.iter().enumerate() {
            assert!(
                seen.insert(v, (*p, offset as i64)).is_none(),
                "{v} stored twice"
            );
        }
    }
    for (value, at) in &acked {
        assert_eq!(
            seen.get(value.as_str()),
            Some(at),
            "acknowledged {value} is at its acknowledged offset"
        );
    }
    // The restarted broker keeps appending after the recovered end.
    let (_, before) = consumer(&broker.kafka, &[])
        .fetch_watermarks("durable", 0, WAIT)
        .unwrap();
    let d = producer(&broker.kafka, &[("acks", "all")])
        .send(
            FutureRecord::<(), str>::to("durable")
                .partition(0)
                .payload("after restart"),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(d.offset, before);
}

/// Positions and base offsets of the batches in a segment file.
fn batches(path: &std::path::Path) -> Vec<(usize, i64, i64)> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = BatchHeader::parse(&bytes[at..]).unwrap();
        out.push((at, h.base_offset(), h.last_offset()));
        at += h.total_size();
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_segment_tail_is_truncated_and_the_rest_is_served() {
    let mut broker = Broker::start();
    create_topic(&broker.kafka, "torn", 1, &[]).await;
    let p = producer(
        &broker.kafka,
        &[
            ("acks", "all"),
            ("batch.num.messages", "10"),
            ("linger.ms", "5"),
        ],
    );
    for i in 0..100 {
        p.send(
            FutureRecord::<(), String>::to("torn")
                .partition(0)
                .payload(&format!("v{i}")),
            WAIT,
        )
        .await
        .unwrap();
    }
    drop(p);
    assert!(broker.terminate().success(), "clean shutdown exits 0");

    let segment = broker
        .data_dir()
        .join("torn-0")
        .join("00000000000000000000.log");
    let found = batches(&segment);
    assert!(found.len() >= 3, "several batches: {found:?}");
    let (pos, base, _) = found[found.len() - 2];
    // Flip a byte inside the second-to-last batch, and leave half a batch of garbage at the end.
    let mut f = fs::OpenOptions::new().write(true).open(&segment).unwrap();
    f.seek(SeekFrom::Start(pos as u64 + 70)).unwrap();
    f.write_all(&[0xFF]).unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(&[0, 0, 0, 0, 0, 0, 0, 99, 0, 0, 1, 0, 1, 2, 3])
        .unwrap();
    drop(f);

    broker.restart();
    let (low, high) = consumer(&broker.kafka, &[])
        .fetch_watermarks("torn", 0, WAIT)
        .unwrap();
    assert_eq!(
        (low, high),
        (0, base),
        "the log ends where the corrupt batch began"
    );
    let msgs = consume(&broker.kafka, "torn", 0, 0, base as usize, WAIT).unwrap();
    let values: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8(payload(m).unwrap()).unwrap())
        .collect();
    assert_eq!(
        values,
        (0..base).map(|i| format!("v{i}")).collect::<Vec<_>>()
    );
    assert!(
        broker.logs().contains("truncat"),
        "the truncation is logged"
    );
    assert_eq!(fs::metadata(&segment).unwrap().len(), pos as u64);
    // New records continue the dense offset sequence.
    let d = producer(&broker.kafka, &[])
        .send(
            FutureRecord::<(), str>::to("torn")
                .partition(0)
                .payload("next"),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(d.offset, base);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_after_sigterm_keeps_topics_configs_and_data() {
    let mut broker = Broker::start();
    create_topic(&broker.kafka, "kept", 2, &[("retention.ms", "86400000")]).await;
    let p = producer(&broker.kafka, &[("acks", "1")]);
    for i in 0..20 {
        p.send(
            FutureRecord::<(), String>::to("kept")
                .partition(i % 2)
                .payload(&format!("{i}")),
            WAIT,
        )
        .await
        .unwrap();
    }
    drop(p);
    assert!(broker.terminate().success());
    broker.restart();
    let stored = read_everything(&broker.kafka, "kept", 2);
    assert_eq!(stored[&0].len() + stored[&1].len(), 20);
    let r = sediment_tests::kafka::admin(&broker.kafka)
        .describe_configs(
            [&rdkafka::admin::ResourceSpecifier::Topic("kept")],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .unwrap();
    let entries = &r[0].as_ref().unwrap().entries;
    let retention = entries.iter().find(|e| e.name == "retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("86400000"));
    assert!(!retention.is_default);
}
