//! Replay of full history through the ordinary Kafka API, with real parts: records produced
//! with librdkafka are archived into SeaweedFS (a real S3 server) and deleted from the local
//! disk; confluent-kafka, kafka-python, kcat and the `rdkafka` crate then consume from the
//! beginning, across the archive/hot boundary, and every record must come back identical and
//! in order. Also: the S3 server restarted mid-replay, and timestamp lookups in the archive.

use std::collections::BTreeMap;

use bytes::Bytes;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use sediment_tests::archive::*;
use sediment_tests::kafka::{consume, consumer, create_topic};
use sediment_tests::s3::SeaweedFs;
use sediment_tests::tls::Pki;
use sediment_tests::{Broker, BrokerOptions, run_python, run_with_timeout, sediment_bin, wait_for};
use serde_json::{Value, json};

const TOPIC: &str = "events";
const PARTITIONS: i32 = 3;

/// A broker archiving `TOPIC` into `s3` with small segments and `local.retention.bytes=1`, so
/// archived segments leave the local disk.
async fn archived_broker(s3: &SeaweedFs, prefix: &str) -> Broker {
    archived_broker_with(s3, prefix, "").await
}

/// `archived_broker` with extra `[archive]` settings.
async fn archived_broker_with(s3: &SeaweedFs, prefix: &str, archive_toml: &str) -> Broker {
    s3.create_bucket(BUCKET);
    // Garbage collection is the only code that lists the bucket: keep it out of the way so
    // the tests can show that reads never list.
    let options =
        s3_options(s3, prefix, archive_toml).env("SEDIMENT_ARCHIVE_GC_INTERVAL_MS", "3600000");
    let broker = Broker::start_with(options);
    let mut configs = SMALL_SEGMENTS.to_vec();
    configs.push(("local.retention.bytes", "1"));
    create_topic(&broker.kafka, TOPIC, PARTITIONS, &configs).await;
    broker
}

/// Produces `count` records, waits until all are archived and every partition's local log
/// starts past offset 0 (its oldest segments deleted), and returns them.
async fn produce_and_archive(broker: &Broker, count: usize, t0: i64) -> Vec<Produced> {
    let produced = produce(&broker.kafka, TOPIC, PARTITIONS, 0, count, t0).await;
    wait_archived(broker, TOPIC);
    wait_for(WAIT, || {
        let v = broker.admin_json(&format!("/v1/archive?topic={TOPIC}"));
        let parts = v["partitions"].as_array()?.clone();
        parts
            .iter()
            .all(|p| p["local_start_offset"].as_i64() > Some(0))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "local segments were not deleted after archiving: {}",
            broker.admin_json(&format!("/v1/archive?topic={TOPIC}"))
        )
    });
    produced
}

fn as_json(p: &Produced) -> Value {
    json!({
        "partition": p.partition,
        "offset": p.offset,
        "timestamp": p.timestamp,
        "key": hex(&p.key),
        "value": hex(&p.value),
        "headers": p.headers.iter().map(|(k, v)| json!([k, hex(v)])).collect::<Vec<_>>(),
    })
}

/// Checks that `got` holds exactly `produced`, each partition in offset order.
fn assert_replayed(got: &[Value], produced: &[Produced], client: &str) {
    let mut per_partition: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    for r in got {
        per_partition
            .entry(r["partition"].as_i64().unwrap())
            .or_default()
            .push(r);
    }
    let mut want: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for p in produced {
        want.entry(i64::from(p.partition))
            .or_default()
            .push(as_json(p));
    }
    for w in want.values_mut() {
        w.sort_by_key(|r| r["offset"].as_i64());
    }
    assert_eq!(
        per_partition.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{client}: partitions"
    );
    for (partition, rows) in &per_partition {
        let expected = &want[partition];
        assert_eq!(
            rows.len(),
            expected.len(),
            "{client}: records of partition {partition}"
        );
        for (g, w) in rows.iter().zip(expected) {
            assert_eq!(*g, w, "{client}: partition {partition}");
        }
    }
}

fn python_consume(client: &str, broker: &Broker, count: usize) -> Vec<Value> {
    let out = run_python(
        "replay_consume.py",
        &[
            client,
            &broker.kafka,
            TOPIC,
            &count.to_string(),
            "--group",
            &format!("replay-{client}"),
            "--timeout",
            "120",
        ],
    )
    .expect("replay_consume.py runs");
    assert!(
        out.status.success(),
        "{client} did not replay every record: {}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.logs()
    );
    serde_json::from_slice(&out.stdout).expect("replay_consume.py prints JSON")
}

/// Every record through kcat's JSON envelope (`-J`): keys and values are text here.
fn kcat_consume(broker: &Broker) -> Vec<Value> {
    let mut cmd = Command::new("kcat");
    cmd.args([
        "-b",
        &broker.kafka,
        "-C",
        "-t",
        TOPIC,
        "-o",
        "beginning",
        "-e",
        "-J",
    ]);
    cmd.args([
        "-X",
        "broker.address.family=v4",
        "-X",
        "fetch.wait.max.ms=200",
    ]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120)).expect("kcat runs");
    assert!(
        out.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text_hex = |v: &Value| match v.as_str() {
        Some(s) => json!(
            s.as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
        None => Value::Null,
    };
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let m: Value = serde_json::from_str(line).unwrap();
            let h = m["headers"].as_array().cloned().unwrap_or_default();
            let headers: Vec<Value> = h
                .chunks(2)
                .map(|kv| json!([kv[0], text_hex(&kv[1])]))
                .collect();
            json!({
                "partition": m["partition"],
                "offset": m["offset"],
                "timestamp": m["ts"],
                "key": text_hex(&m["key"]),
                "value": text_hex(&m["payload"]),
                "headers": headers,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_replay_the_whole_history_across_the_archive_and_hot_boundary() {
    let s3 = SeaweedFs::start();
    let broker = archived_broker(&s3, "replay/a").await;
    let t0 = now_ms() - 3_600_000;
    let mut produced = produce_and_archive(&broker, 3000, t0).await;
    // A hot tail that is not archived yet.
    produced.extend(produce(&broker.kafka, TOPIC, PARTITIONS, 3000, 3300, t0).await);
    let lists_before = metric(
        &broker,
        r#"sediment_object_store_requests_total{op="list"}"#,
    );

    // librdkafka reports the whole log's start, archive included.
    let c = consumer(&broker.kafka, &[]);
    for p in 0..PARTITIONS {
        let (low, high) = c
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .unwrap();
        assert_eq!(low, 0, "partition {p} starts at 0 (archived)");
        assert_eq!(high, 1100, "partition {p}");
    }

    let confluent = python_consume("confluent", &broker, produced.len());
    assert_replayed(&confluent, &produced, "confluent-kafka");
    let reads = metric(&broker, "sediment_archive_reads_total");
    assert!(reads > 0.0, "the archive served fetches: {reads}");
    assert!(metric(&broker, "sediment_archive_cache_misses_total") > 0.0);

    let gets = metric(&broker, r#"sediment_object_store_requests_total{op="get"}"#);
    assert!(gets > 0.0, "the first replay read objects");
    let kafka_python = python_consume("kafka-python", &broker, produced.len());
    assert_replayed(&kafka_python, &produced, "kafka-python");
    assert_eq!(
        metric(&broker, r#"sediment_object_store_requests_total{op="get"}"#),
        gets,
        "the second replay was served by the caches"
    );
    assert!(metric(&broker, "sediment_archive_decoded_cache_hits_total") > 0.0);

    let kcat = kcat_consume(&broker);
    assert_replayed(&kcat, &produced, "kcat");

    assert_eq!(
        metric(
            &broker,
            r#"sediment_object_store_requests_total{op="list"}"#
        ),
        lists_before,
        "the fetch path never lists the bucket"
    );
    assert_eq!(metric(&broker, "sediment_archive_read_errors_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_restart_mid_replay_delays_the_consumer_without_error_or_gap() {
    let mut s3 = SeaweedFs::start();
    // No read-ahead in the broker either, so the rest of the history is still in the bucket
    // when it goes away.
    let broker = archived_broker_with(&s3, "replay/b", "prefetch_row_groups = 0\n").await;
    let t0 = now_ms() - 3_600_000;
    let produced = produce_and_archive(&broker, 3000, t0).await;

    // librdkafka reads ahead of the application (by default up to 64 MiB per partition, so
    // all of this small history): keep its read-ahead to a few hundred records per partition,
    // so most of the history is still to be fetched when S3 goes away.
    let c = consumer(
        &broker.kafka,
        &[
            ("fetch.wait.max.ms", "200"),
            ("max.partition.fetch.bytes", "16384"),
            ("queued.max.messages.kbytes", "48"),
            ("queued.min.messages", "50"),
        ],
    );
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let mut stopped = false;
    let mut restarted_at = None;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    while got.len() < produced.len() {
        assert!(
            Instant::now() < deadline,
            "replayed {} of {} records; broker log:\n{}",
            got.len(),
            produced.len(),
            broker.logs()
        );
        // A quarter in, the S3 server goes away for a while.
        if !stopped && got.len() >= produced.len() / 4 {
            s3.stop();
            stopped = true;
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                if let Some(m) = c.poll(Duration::from_millis(100)) {
                    got.push(m.expect("no consumer error while S3 is down").detach());
                }
            }
            let t = Instant::now();
            s3.restart();
            eprintln!(
                "S3 back after {:?} of restart; {} of {} records so far, {:?} since the start",
                t.elapsed(),
                got.len(),
                produced.len(),
                started.elapsed()
            );
            restarted_at = Some(got.len());
            continue;
        }
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push(m.detach()),
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    eprintln!("replayed everything in {:?}", started.elapsed());
    let restarted_at = restarted_at.expect("S3 was restarted during the replay");
    assert!(
        restarted_at < produced.len(),
        "the outage stalled the replay ({restarted_at} of {} records before S3 came back)",
        produced.len()
    );
    assert!(
        metric(&broker, "sediment_archive_read_errors_total") > 0.0,
        "archive reads failed while S3 was down"
    );
    let rows: Vec<Value> = got.iter().map(message_json).collect();
    assert_replayed(&rows, &produced, "rdkafka");
}

/// A consumed message in the form `as_json` gives a produced record.
fn message_json(m: &OwnedMessage) -> Value {
    use rdkafka::message::Headers;
    let headers: Vec<Value> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| json!([h.key, hex(&h.value.map(<[u8]>::to_vec))]))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp": m.timestamp().to_millis(),
        "key": hex(&m.key().map(<[u8]>::to_vec)),
        "value": hex(&m.payload().map(<[u8]>::to_vec)),
        "headers": headers,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamps_inside_the_archive_find_the_right_record() {
    let s3 = SeaweedFs::start();
    let broker = archived_broker(&s3, "replay/c").await;
    let t0 = now_ms() - 3_600_000;
    let produced = produce_and_archive(&broker, 3000, t0).await;
    let local_start: BTreeMap<i64, i64> = broker.admin_json(&format!("/v1/archive?topic={TOPIC}"))
        ["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["local_start_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    // Record i has timestamp t0 + 10 i; ask for a time between two records, early enough to
    // be archived only: the answer is the next record.
    let target = produced
        .iter()
        .find(|p| p.partition == 1 && p.offset > 20 && p.offset < local_start[&1])
        .unwrap();
    let c = consumer(&broker.kafka, &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 1, Offset::Offset(target.timestamp - 5))
        .unwrap();
    let found = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
    let found = found.find_partition(TOPIC, 1).unwrap().offset();
    assert_eq!(
        found,
        Offset::Offset(target.offset),
        "archived record by time"
    );

    // Consuming from there starts at that record.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 1, found).unwrap();
    c.assign(&tpl).unwrap();
    let first = wait_for(Duration::from_secs(60), || {
        c.poll(Duration::from_millis(200))
    })
    .expect("a record")
    .unwrap();
    assert_eq!(first.offset(), target.offset);
    assert_eq!(first.timestamp().to_millis(), Some(target.timestamp));
}

fn cli_json(broker: &Broker, args: &[&str]) -> Value {
    let out = broker.cli(args);
    assert!(
        out.status.success(),
        "sediment {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_reset_to_a_datetime_in_the_archive_resumes_at_the_right_record() {
    let s3 = SeaweedFs::start();
    let broker = archived_broker(&s3, "replay/d").await;
    let t0 = now_ms() - 3_600_000;
    let produced = produce_and_archive(&broker, 3000, t0).await;
    let local_start = |partition: i64| -> i64 {
        broker.admin_json(&format!("/v1/archive?topic={TOPIC}&partition={partition}"))["partitions"]
            [0]["local_start_offset"]
            .as_i64()
            .unwrap()
    };
    let target = produced
        .iter()
        .find(|p| p.partition == 2 && p.offset > 30 && p.offset < local_start(2))
        .unwrap();
    // A time between two records, in Kafka's zone-less form (UTC): the next record is the one.
    let at = utc_text(target.timestamp - 5);
    let group = "rebuild-store";
    let topic_arg = format!("{TOPIC}:2");

    // A dry run plans without committing.
    let plan = cli_json(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "--group",
            group,
            "--topic",
            &topic_arg,
            "--to-datetime",
            &at,
            "--json",
        ],
    );
    assert_eq!(plan["applied"], false);
    assert_eq!(plan["partitions"][0]["offset"], target.offset, "{plan}");
    assert_eq!(plan["partitions"][0]["previous"], Value::Null);
    let committed = |c: &rdkafka::consumer::BaseConsumer| -> Offset {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(TOPIC, 2);
        c.committed_offsets(tpl, Duration::from_secs(10))
            .unwrap()
            .find_partition(TOPIC, 2)
            .unwrap()
            .offset()
    };
    let probe = consumer(&broker.kafka, &[("group.id", group)]);
    assert_eq!(
        committed(&probe),
        Offset::Invalid,
        "nothing committed by a dry run"
    );

    let plan = cli_json(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "--group",
            group,
            "--topic",
            &topic_arg,
            "--to-datetime",
            &at,
            "--execute",
            "--json",
        ],
    );
    assert_eq!(plan["applied"], true);
    assert_eq!(committed(&probe), Offset::Offset(target.offset));

    // A member of the group resumes at that record, read from the archive.
    let member = consumer(
        &broker.kafka,
        &[("group.id", group), ("auto.offset.reset", "latest")],
    );
    member.subscribe(&[TOPIC]).unwrap();
    let first = wait_for(Duration::from_secs(60), || {
        match member.poll(Duration::from_millis(200))? {
            Ok(m) if m.partition() == 2 => Some(m.detach()),
            Ok(_) => None,
            Err(e) => panic!("consumer error: {e}"),
        }
    })
    .expect("a record of partition 2");
    assert_eq!(first.offset(), target.offset);
    assert_eq!(first.timestamp().to_millis(), Some(target.timestamp));

    // While the member is active, a reset is refused.
    let out = broker.cli(&[
        "groups",
        "reset-offsets",
        "--group",
        group,
        "--topic",
        TOPIC,
        "--to-earliest",
        "--execute",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("active members"), "{err}");
    drop(member);

    // Earliest is the archive's start, below every partition's local start.
    let plan = wait_for(Duration::from_secs(60), || {
        let out = broker.cli(&[
            "groups",
            "reset-offsets",
            "--group",
            group,
            "--topic",
            TOPIC,
            "--to-earliest",
            "--execute",
            "--json",
        ]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    })
    .expect("the reset is accepted once the member has left");
    for p in plan["partitions"].as_array().unwrap() {
        assert_eq!(p["offset"], 0, "{plan}");
        assert!(local_start(p["partition"].as_i64().unwrap()) > 0);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.sss` in UTC, the zone-less form `kafka-consumer-groups` users type.
fn utc_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("a valid time")
        .format("%Y-%m-%dT%H:%M:%S%.3f")
        .to_string()
}

/// `sediment replay` reading `prefix` of `s3`'s bucket (no broker on the source side), with
/// its output captured.
fn replay_command(s3: &SeaweedFs, prefix: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(sediment_bin());
    cmd.args(["replay", "--topic", TOPIC, "--archive-url"])
        .arg(format!("s3://{BUCKET}/{prefix}"))
        .args(args)
        .env_remove("SEDIMENT_CONFIG")
        .stdin(std::process::Stdio::null());
    for (k, v) in s3.aws_env() {
        cmd.env(k, v);
    }
    cmd
}

/// The flags of a job into `topic` of `target`, with its checkpoint file, then `extra`.
fn job_args(target: &Broker, topic: &str, checkpoint: &str, extra: &[&str]) -> Vec<String> {
    let base = [
        "--target",
        &target.kafka,
        "--target-topic",
        topic,
        "--checkpoint",
        checkpoint,
    ];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn run_replay(s3: &SeaweedFs, prefix: &str, args: &[String]) -> Value {
    let out = run_with_timeout(
        &mut replay_command(s3, prefix, args),
        Duration::from_secs(180),
    )
    .expect("sediment replay runs");
    assert!(
        out.status.success(),
        "sediment replay {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Every record of `topic` in `target`, partition by partition, as JSON.
fn read_all(target: &Broker, topic: &str, counts: &BTreeMap<i32, usize>) -> Vec<Value> {
    let mut rows = Vec::new();
    for (&p, &n) in counts {
        let got = consume(&target.kafka, topic, p, 0, n, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{topic}-{p}: {e}"));
        rows.extend(got.iter().map(message_json));
        // Nothing past what was expected: no duplicates.
        let c = consumer(&target.kafka, &[]);
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            (low, high),
            (0, n as i64),
            "{topic}-{p} holds exactly {n} records"
        );
    }
    rows
}

fn checkpoint_delivered(path: &std::path::Path) -> Option<u64> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(
        v["progress"]
            .as_object()?
            .values()
            .map(|p| p["delivered"].as_u64().unwrap_or(0))
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_job_reproduces_the_topic_in_another_broker_and_resumes_after_a_kill() {
    let s3 = SeaweedFs::start();
    let prefix = "replay/e";
    let mut source = archived_broker(&s3, prefix).await;
    let t0 = now_ms() - 3_600_000;
    let produced = produce_and_archive(&source, 3000, t0).await;
    // The job reads the bucket alone: the source broker is gone.
    source.terminate();
    let target = Broker::start();
    let work = tempfile::tempdir().unwrap();
    let checkpoint = work.path().join("job.json");
    let cp = checkpoint.to_str().unwrap();

    // A dry run says what would be replayed, without touching the target.
    let plan = run_replay(
        &s3,
        prefix,
        &job_args(&target, "copy", cp, &["--dry-run", "--json"]),
    );
    assert_eq!(plan["records"], 3000, "{plan}");
    assert_eq!(plan["resuming"], false);
    for p in plan["partitions"].as_array().unwrap() {
        assert_eq!(
            (p["start_offset"].as_i64(), p["end_offset"].as_i64()),
            (Some(0), Some(1000)),
            "{plan}"
        );
    }
    assert!(!checkpoint.exists(), "a dry run writes no checkpoint");

    // Slowed down to ~150 KB/s so it can be killed half-way.
    let mut job = replay_command(
        &s3,
        prefix,
        &job_args(&target, "copy", cp, &["--rate-limit", "150KB", "--json"]),
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("replay starts");
    let at_kill = wait_for(Duration::from_secs(120), || {
        checkpoint_delivered(&checkpoint).filter(|&n| n >= 600)
    });
    job.kill().unwrap();
    job.wait().unwrap();
    let at_kill = at_kill.expect("the job checkpointed progress");
    assert!(
        at_kill < 3000,
        "the job was killed half-way ({at_kill} delivered)"
    );

    // The rerun resumes: every record once, nothing twice.
    let done = run_replay(&s3, prefix, &job_args(&target, "copy", cp, &["--json"]));
    eprintln!("killed at {at_kill} delivered (checkpoint); the rerun: {done}");
    assert_eq!(done["resumed"], true, "{done}");
    assert_eq!(done["complete"], true, "{done}");
    assert_eq!(done["error"], Value::Null, "{done}");
    let skipped = done["skipped_already_delivered"].as_u64().unwrap();
    assert!(skipped >= at_kill, "{done}");
    assert_eq!(done["records"].as_u64().unwrap() + skipped, 3000, "{done}");
    assert_eq!(
        done["archive_list_requests"], 1,
        "one LIST to find the objects: {done}"
    );

    let counts: BTreeMap<i32, usize> = (0..PARTITIONS).map(|p| (p, 1000)).collect();
    let copy = read_all(&target, "copy", &counts);
    // A new topic: the copy has the very same offsets as well.
    assert_replayed(&copy, &produced, "replay job");

    // Once complete, the same command does nothing.
    let out = run_with_timeout(
        &mut replay_command(&s3, prefix, &job_args(&target, "copy", cp, &[])),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already complete"));
    read_all(&target, "copy", &counts);

    // Another job cannot take over that checkpoint by mistake.
    let out = run_with_timeout(
        &mut replay_command(&s3, prefix, &job_args(&target, "other", cp, &[])),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to another job"));

    // A time window of one partition: [from, to) as ListOffsets finds them, keys, headers and
    // timestamps kept, offsets renumbered from 0 in a new topic.
    let first = &produced
        .iter()
        .filter(|p| p.partition == 1)
        .nth(100)
        .unwrap();
    let stop = &produced
        .iter()
        .filter(|p| p.partition == 1)
        .nth(350)
        .unwrap();
    let from = utc_text(first.timestamp - 5);
    let to = utc_text(stop.timestamp);
    let window_cp = work.path().join("window.json");
    let done = run_replay(
        &s3,
        prefix,
        &job_args(
            &target,
            "window",
            window_cp.to_str().unwrap(),
            &["--partitions", "1", "--from", &from, "--to", &to, "--json"],
        ),
    );
    assert_eq!(done["records"], 250, "{done}");
    let mut want: Vec<Value> = produced
        .iter()
        .filter(|p| p.partition == 1 && p.offset >= first.offset && p.offset < stop.offset)
        .map(as_json)
        .collect();
    for (i, w) in want.iter_mut().enumerate() {
        w["offset"] = json!(i);
    }
    let got = read_all(&target, "window", &BTreeMap::from([(1, 250)]));
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_job_produces_into_a_target_that_only_speaks_tls() {
    let s3 = SeaweedFs::start();
    let prefix = "replay/tls";
    let mut source = archived_broker(&s3, prefix).await;
    let produced = produce_and_archive(&source, 3000, now_ms() - 3_600_000).await;
    source.terminate();
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(pki_dir.path());
    let mut options = BrokerOptions::default();
    for (k, v) in pki.broker_env() {
        options = options.env(&k, &v);
    }
    let target = Broker::start_with(options);
    let tls = target.kafka_tls.clone().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cp = work.path().join("tls.json");
    let ca = format!("ssl.ca.location={}", pki.ca.display());
    let args: Vec<String> = [
        "--target",
        &tls,
        "--target-topic",
        "secure-copy",
        "--checkpoint",
        cp.to_str().unwrap(),
        "-X",
        "security.protocol=ssl",
        "-X",
        &ca,
        "--json",
    ]
    .map(str::to_string)
    .to_vec();
    let done = run_replay(&s3, prefix, &args);
    assert_eq!(done["complete"], true, "{done}");
    assert_eq!(done["records"], 3000, "{done}");
    // Every record arrived through the TLS listener; read back over plaintext.
    let counts: BTreeMap<i32, usize> = (0..PARTITIONS).map(|p| (p, 1000)).collect();
    let copy = read_all(&target, "secure-copy", &counts);
    assert_replayed(&copy, &produced, "replay job over TLS");
    assert!(
        metric(&target, "sediment_kafka_tls_handshake_failures_total") == 0.0,
        "the job's connections all passed the handshake"
    );
}

/// Sizes of the whole v2 batches in `records` (fails on a cut batch).
fn batch_sizes(records: &[u8]) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        assert!(rest.len() >= 12, "a cut batch header");
        let len = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize + 12;
        assert!(len <= rest.len(), "a cut batch: {len} > {}", rest.len());
        sizes.push(len);
        rest = &rest[len..];
    }
    sizes
}

#[tokio::test(flavor = "multi_thread")]
async fn one_fetch_mixing_archived_and_hot_partitions_keeps_its_byte_limits_and_never_waits_on_s3()
{
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    use sediment_tests::RawClient;

    let mut s3 = SeaweedFs::start();
    let broker = archived_broker(&s3, "replay/f").await;
    let t0 = now_ms() - 3_600_000;
    produce_and_archive(&broker, 3000, t0).await;
    // A topic whose records all stay on local disk.
    create_topic(&broker.kafka, "hot", 1, &[]).await;
    produce(&broker.kafka, "hot", 1, 0, 1000, t0).await;
    // Partitions 0 and 2 of TOPIC from offset 0 (archived only), and the hot topic.
    let request = |partition_max: i32, max: i32, wait_ms: i32| {
        let topic = |name: &str, parts: &[i32]| {
            FetchTopic::default()
                .with_topic(TopicName(name.to_string().into()))
                .with_partitions(
                    parts
                        .iter()
                        .map(|&p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(partition_max)
                        })
                        .collect(),
                )
        };
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(max)
            .with_topics(vec![topic(TOPIC, &[0, 2]), topic("hot", &[0])])
    };
    let sizes = |resp: &kafka_protocol::messages::FetchResponse| -> Vec<(String, i32, Bytes)> {
        resp.responses
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    assert_eq!(p.error_code, 0, "{}-{}", t.topic.0, p.partition_index);
                    (
                        t.topic.0.to_string(),
                        p.partition_index,
                        p.records.clone().unwrap_or_default(),
                    )
                })
            })
            .collect()
    };
    let mut client = RawClient::connect(&broker.kafka).unwrap();

    // The bucket is down: the hot partition is answered at once, the archived ones empty and
    // without an error.
    s3.stop();
    let started = Instant::now();
    let resp = client
        .request(12, &request(1 << 20, 50 << 20, 5000))
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "the hot partition waited {took:?} for S3"
    );
    for (topic, partition, records) in sizes(&resp) {
        if topic == "hot" {
            assert!(!records.is_empty(), "the hot partition has records");
        } else {
            assert!(records.is_empty(), "{topic}-{partition} while S3 is down");
        }
    }
    s3.restart();

    // Byte limits across archived and hot partitions: each partition within its limit and the
    // response within the total, whole batches only (only the first batch of the response may
    // exceed them, as in KIP-74). Once both archived reads are cached, the three partitions
    // hold more than the total allows, so the limit has to cut.
    let (partition_max, max) = (64 << 10, 100 << 10);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the archived partitions never answered"
        );
        let resp = client
            .request(12, &request(partition_max, max, 1000))
            .unwrap();
        let parts = sizes(&resp);
        let mut total = 0;
        let mut first = true;
        for (topic, partition, records) in &parts {
            let batches = batch_sizes(records);
            if batches.is_empty() {
                continue;
            }
            assert!(
                records.len() <= partition_max as usize || (first && batches.len() == 1),
                "{topic}-{partition}: {} bytes over max.partition.fetch.bytes={partition_max}",
                records.len()
            );
            first = false;
            total += records.len();
        }
        let lens: Vec<_> = parts.iter().map(|(t, p, r)| (t, p, r.len())).collect();
        assert!(
            total <= max as usize,
            "{total} bytes over fetch.max.bytes={max}: {lens:?}"
        );
        let archived = parts
            .iter()
            .filter(|(t, _, r)| t == TOPIC && !r.is_empty())
            .count();
        // Done once archived data shares a response with another partition's, so that more
        // than one partition's limit was in play against the total.
        if archived >= 1 && total > partition_max as usize {
            eprintln!("archived and hot partitions in one fetch: {lens:?}");
            break;
        }
    }
}
