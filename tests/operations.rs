//! What operators see: start-up errors that name the setting, `--check-config`, health and
//! metrics endpoints, graceful SIGTERM during a long poll, retention in a running broker,
//! LogAppendTime topics, advertised listeners and the data directory lock.

use std::process::Command;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{MetadataRequest, TopicName};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use sediment_tests::fetch_request;
use sediment_tests::kafka::{consume, consumer, create_topic, producer};
use sediment_tests::{Broker, BrokerOptions, RawClient, run_with_timeout, sediment_bin, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn serve(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = Command::new(sediment_bin());
    cmd.arg("serve").env_remove("SEDIMENT_CONFIG");
    // Defaults for the flags a case does not set itself (a flag may be given once).
    for (flag, value) in [
        ("--data-dir", data.to_str().unwrap()),
        ("--kafka-listen", "127.0.0.1:0"),
        ("--admin-listen", "127.0.0.1:0"),
    ] {
        if !args.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, WAIT).unwrap()
}

#[test]
fn invalid_settings_stop_start_up_and_name_the_setting() {
    /// (flags, environment, what the error message must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["--kafka-listen", "not-an-address"],
            vec![],
            "kafka.listen",
        ),
        (
            vec!["--advertised-listener", "host-without-port"],
            vec![],
            "kafka.advertised_listener",
        ),
        (
            vec![],
            vec![("SEDIMENT_LOG_SEGMENT_BYTES", "10")],
            "log.segment_bytes",
        ),
        (
            vec![],
            vec![("SEDIMENT_LOG_RETENTION_MS", "soon")],
            "retention_ms",
        ),
        (
            vec![],
            vec![("SEDIMENT_KAFKA_NUM_PARTITIONS", "0")],
            "kafka.num_partitions",
        ),
        (
            vec![],
            vec![("SEDIMENT_LOG_MESSAGE_TIMESTAMP_TYPE", "Whenever")],
            "log.message_timestamp_type",
        ),
        (
            vec!["--config", "/no/such/sediment.toml"],
            vec![],
            "/no/such/sediment.toml",
        ),
    ];
    for (args, env, needle) in cases {
        let out = serve(&args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?} {env:?}: message names {needle}: {stderr}"
        );
    }
    // An unknown key in the file is named too.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[kafka]\nlisten = \"127.0.0.1:0\"\nauto_create_topics = true\n",
    )
    .unwrap();
    let out = serve(&["--config", file.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("auto_create_topics"), "{stderr}");
}

#[test]
fn check_config_prints_the_effective_settings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sediment.toml");
    std::fs::write(
        &file,
        "node_id = 7\n[log]\nretention_ms = 5000\n[kafka]\nnum_partitions = 3\n",
    )
    .unwrap();
    let out = serve(
        &["--config", file.to_str().unwrap(), "--check-config"],
        &[("SEDIMENT_KAFKA_NUM_PARTITIONS", "6")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["node_id"], 7);
    assert_eq!(v["log"]["retention_ms"], 5000);
    assert_eq!(v["kafka"]["num_partitions"], 6, "environment over file");
    assert_eq!(v["kafka"]["listen"], "127.0.0.1:0", "flag over defaults");
}

#[test]
fn the_example_config_file_is_valid_and_matches_the_defaults() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/sediment.toml");
    let with_file = serve(
        &["--config", example.to_str().unwrap(), "--check-config"],
        &[],
    );
    assert!(
        with_file.status.success(),
        "{}",
        String::from_utf8_lossy(&with_file.stderr)
    );
    let defaults = serve(&["--check-config"], &[]);
    assert!(defaults.status.success());
    let mut a: serde_json::Value = serde_json::from_slice(&with_file.stdout).unwrap();
    let mut b: serde_json::Value = serde_json::from_slice(&defaults.stdout).unwrap();
    // Each run gets its own --data-dir; everything else must agree.
    a.as_object_mut().unwrap().remove("data_dir");
    b.as_object_mut().unwrap().remove("data_dir");
    assert_eq!(a, b, "the example documents the defaults");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_metrics_report_what_happened() {
    let broker = Broker::start();
    assert_eq!(broker.admin_get("/health/live").unwrap().0, 200);
    assert_eq!(broker.admin_get("/health/ready").unwrap().0, 200);
    create_topic(&broker.kafka, "metered", 2, &[]).await;
    let p = producer(&broker.kafka, &[]);
    for i in 0..10 {
        p.send(
            FutureRecord::<(), String>::to("metered")
                .partition(1)
                .payload(&i.to_string()),
            WAIT,
        )
        .await
        .unwrap();
    }
    consume(&broker.kafka, "metered", 1, 0, 10, WAIT).unwrap();
    let (status, m) = broker.admin_get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        m.contains(r#"sediment_log_end_offset{topic="metered",partition="1"} 10"#),
        "{m}"
    );
    assert!(
        m.contains(r#"sediment_log_end_offset{topic="metered",partition="0"} 0"#),
        "{m}"
    );
    assert!(
        m.contains(r#"sediment_log_segments{topic="metered",partition="1"} 1"#),
        "{m}"
    );
    assert!(m.contains("sediment_produce_records_total 10"), "{m}");
    for api in [
        "Produce",
        "Fetch",
        "Metadata",
        "ApiVersions",
        "CreateTopics",
    ] {
        assert!(
            m.contains(&format!("sediment_kafka_requests_total{{api=\"{api}\"")),
            "{api}: {m}"
        );
        assert!(
            m.contains(&format!(
                "sediment_kafka_request_duration_seconds_count{{api=\"{api}\"}}"
            )),
            "{api}: {m}"
        );
    }
    let bytes_in: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("sediment_kafka_received_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes_in > 100.0);
    let (status, topics) = broker.admin_get("/v1/topics").unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&topics).unwrap();
    assert_eq!(v[0]["name"], "metered");
    assert_eq!(v[0]["partitions"][1]["log_end_offset"], 10);
}

#[test]
fn sigterm_answers_a_pending_long_poll_and_exits_zero() {
    let mut broker = Broker::start();
    let mut c = RawClient::connect(&broker.kafka).unwrap();
    // Auto-create the topic through Metadata, then long-poll it for 30 s.
    c.request(
        12,
        &MetadataRequest::default()
            .with_allow_auto_topic_creation(true)
            .with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName("idle".into()))),
            ])),
    )
    .unwrap();
    let req = fetch_request("idle", 0, 0, 1 << 20)
        .with_max_wait_ms(30_000)
        .with_min_bytes(1);
    let frame = c.encode(11, &req).unwrap();
    c.send_frame(&frame).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let pid = broker.pid();
    let killer = std::thread::spawn(move || {
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
    });
    let resp = c
        .read_frame()
        .unwrap()
        .expect("the pending fetch is answered, not dropped");
    assert!(resp.len() > 8);
    killer.join().unwrap();
    let status = broker.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "did not wait out the 30 s poll"
    );
    assert!(broker.logs().contains("stopped"));
}

#[tokio::test(flavor = "multi_thread")]
async fn long_poll_returns_when_data_arrives() {
    let broker = Broker::start();
    create_topic(&broker.kafka, "poll", 1, &[]).await;
    let addr = broker.kafka.clone();
    let fetcher = std::thread::spawn(move || {
        let mut c = RawClient::connect(&addr).unwrap();
        let req = fetch_request("poll", 0, 0, 1 << 20)
            .with_max_wait_ms(20_000)
            .with_min_bytes(1);
        let started = Instant::now();
        let resp = c.request(11, &req).unwrap();
        (
            started.elapsed(),
            resp.responses[0].partitions[0]
                .records
                .clone()
                .unwrap_or_default()
                .len(),
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    producer(&broker.kafka, &[])
        .send(
            FutureRecord::<(), str>::to("poll")
                .partition(0)
                .payload("wake up"),
            WAIT,
        )
        .await
        .unwrap();
    let (elapsed, bytes) = fetcher.join().unwrap();
    assert!(bytes > 0, "the poll returned the new record");
    assert!(
        elapsed >= Duration::from_millis(400),
        "it waited for data: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "it did not wait out max_wait: {elapsed:?}"
    );

    // With min_bytes unmet, the answer comes after max_wait, empty.
    let mut c = RawClient::connect(&broker.kafka).unwrap();
    let req = fetch_request("poll", 0, 1, 1 << 20)
        .with_max_wait_ms(700)
        .with_min_bytes(1);
    let started = Instant::now();
    let resp = c.request(11, &req).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(650));
    assert_eq!(
        resp.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default()
            .len(),
        0
    );
    assert_eq!(resp.responses[0].partitions[0].high_watermark, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_segments_while_running() {
    let broker = Broker::start_with(
        BrokerOptions::default().env("SEDIMENT_LOG_RETENTION_CHECK_INTERVAL_MS", "200"),
    );
    // Size-bounded: small segments, at most ~4 KiB kept.
    create_topic(
        &broker.kafka,
        "bounded",
        1,
        &[("segment.bytes", "1024"), ("retention.bytes", "4096")],
    )
    .await;
    // Time-bounded: records stamped in 2025 are older than one hour at once.
    create_topic(&broker.kafka, "expired", 1, &[("retention.ms", "3600000")]).await;
    let p = producer(&broker.kafka, &[("batch.num.messages", "1")]);
    for i in 0..200 {
        let v = format!("{i:0>100}");
        p.send(
            FutureRecord::<(), String>::to("bounded")
                .partition(0)
                .payload(&v),
            WAIT,
        )
        .await
        .unwrap();
        p.send(
            FutureRecord::<(), String>::to("expired")
                .partition(0)
                .payload(&v)
                .timestamp(1_750_000_000_000 + i),
            WAIT,
        )
        .await
        .unwrap();
    }
    let c = consumer(&broker.kafka, &[]);
    let kept = broker.data_dir().join("bounded-0");
    let log_bytes = || -> u64 {
        std::fs::read_dir(&kept)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    // Retention runs every 200 ms; eventually the log fits retention.bytes plus the active segment.
    let (low, high) = wait_for(WAIT, || {
        let (low, high) = c.fetch_watermarks("bounded", 0, WAIT).ok()?;
        (low > 0 && log_bytes() <= 4096 + 1024).then_some((low, high))
    })
    .unwrap_or_else(|| panic!("size retention bounded the log: {} bytes", log_bytes()));
    assert_eq!(high, 200);
    assert!(low > 0, "the log start moved past offset 0");
    // The archive is on (the default), and retention.bytes bounds local and archived data
    // together: while the archiver catches up, retention may still drop an archived object and
    // move the log start after we read it. Read from the current start until that settles.
    let (low, msgs) = wait_for(WAIT, || {
        let (low, high) = c.fetch_watermarks("bounded", 0, WAIT).ok()?;
        let msgs = consume(
            &broker.kafka,
            "bounded",
            0,
            low,
            (high - low) as usize,
            Duration::from_secs(5),
        )
        .ok()?;
        Some((low, msgs))
    })
    .expect("read the partition from its log start");
    assert_eq!(
        msgs[0].offset(),
        low,
        "reading from the new log start works"
    );
    assert_eq!(msgs.last().unwrap().offset(), 199);

    let (low, high) = wait_for(WAIT, || {
        let (low, high) = c.fetch_watermarks("expired", 0, WAIT).ok()?;
        (low == high).then_some((low, high))
    })
    .expect("time retention emptied the partition");
    assert_eq!((low, high), (200, 200));
}

#[tokio::test(flavor = "multi_thread")]
async fn log_append_time_topics_carry_the_broker_clock() {
    let broker = Broker::start();
    create_topic(
        &broker.kafka,
        "appended",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    producer(&broker.kafka, &[])
        .send(
            FutureRecord::<(), str>::to("appended")
                .partition(0)
                .payload("x")
                .timestamp(1000),
            WAIT,
        )
        .await
        .unwrap();
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let m = &consume(&broker.kafka, "appended", 0, 0, 1, WAIT).unwrap()[0];
    match m.timestamp() {
        rdkafka::Timestamp::LogAppendTime(t) => {
            assert!((before..=after).contains(&t), "{t} in [{before}, {after}]")
        }
        other => panic!("expected LogAppendTime, got {other:?}"),
    }
}

#[test]
fn metadata_reports_the_advertised_listener() {
    let broker = Broker::start_with(BrokerOptions {
        args: vec![
            "--advertised-listener".into(),
            "broker-0.sediment.example:19092".into(),
        ],
        ..Default::default()
    });
    let mut c = RawClient::connect(&broker.kafka).unwrap();
    let md = c.request(12, &MetadataRequest::default()).unwrap();
    assert_eq!(md.brokers.len(), 1);
    assert_eq!(md.brokers[0].host.as_str(), "broker-0.sediment.example");
    assert_eq!(md.brokers[0].port, 19092);
    assert!(md.cluster_id.is_some());
}

#[test]
fn a_second_broker_on_the_same_data_dir_refuses_to_start() {
    let broker = Broker::start();
    let out = serve(&["--data-dir", broker.data_dir().to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("in use by another sediment process"),
        "{stderr}"
    );
}
