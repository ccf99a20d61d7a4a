//! Tiered storage with real parts: the broker archives sealed segments as Parquet into
//! SeaweedFS (a real S3 server) or its local archive directory; DuckDB (over S3), Spark (over
//! the local layout) and pyarrow (one object over S3) read them back, and every record is
//! compared with what librdkafka produced. Faults: the S3 server goes away mid-produce, and
//! the broker is killed between an upload and its manifest commit.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
use sediment_tests::archive::*;
use sediment_tests::kafka::{admin, create_topic};
use sediment_tests::s3::SeaweedFs;
use sediment_tests::{Broker, BrokerOptions, run_python, wait_for};
use serde_json::Value;

/// Checks that `rows` (as archive_query.py prints them) are exactly `produced`, record by
/// record.
fn assert_rows_match(rows: &[Value], produced: &[Produced], engine: &str) {
    let mut want: BTreeMap<(i32, i64), &Produced> = BTreeMap::new();
    for p in produced {
        want.insert((p.partition, p.offset), p);
    }
    assert_eq!(rows.len(), want.len(), "{engine}: row count");
    for (row, ((partition, offset), p)) in rows.iter().zip(&want) {
        let ctx = format!("{engine} {partition}/{offset}");
        assert_eq!(
            row["partition"].as_i64(),
            Some(i64::from(*partition)),
            "{ctx}"
        );
        assert_eq!(row["offset"].as_i64(), Some(*offset), "{ctx}");
        assert_eq!(
            row["timestamp"].as_i64(),
            Some(p.timestamp),
            "{ctx} timestamp"
        );
        assert_eq!(row["key"], hex(&p.key), "{ctx} key");
        assert_eq!(row["value"], hex(&p.value), "{ctx} value");
        let headers: Vec<Value> = p
            .headers
            .iter()
            .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), hex(v)]))
            .collect();
        assert_eq!(row["headers"], Value::Array(headers), "{ctx} headers");
        if !row["timestamp_type"].is_null() {
            assert_eq!(row["timestamp_type"], "CreateTime", "{ctx}");
        }
    }
}

/// The expected result of the `GROUP BY partition` query.
fn expected_summary(produced: &[Produced]) -> Vec<Value> {
    let mut per: BTreeMap<i32, (i64, i64, i64)> = BTreeMap::new();
    for p in produced {
        let e = per.entry(p.partition).or_insert((0, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 = e.1.min(p.offset);
        e.2 = e.2.max(p.offset);
    }
    per.into_iter()
        .map(|(p, (n, lo, hi))| serde_json::json!([p, n, lo, hi]))
        .collect()
}

fn query(args: &[&str], env: &[(String, String)]) -> Value {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    for (k, v) in env {
        match k.as_str() {
            "AWS_ACCESS_KEY_ID" => all.extend(["--access-key".into(), v.clone()]),
            "AWS_SECRET_ACCESS_KEY" => all.extend(["--secret-key".into(), v.clone()]),
            _ => {}
        }
    }
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = run_python("archive_query.py", &refs).expect("archive query runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "archive_query.py printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn manifest(broker: &Broker, topic: &str) -> Vec<Value> {
    let v = broker.admin_json(&format!("/v1/archive/topics/{topic}"));
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["segments"].as_array().unwrap().clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_over_s3_and_pyarrow_return_exactly_the_records_produced() {
    let s3 = SeaweedFs::start();
    s3.create_bucket(BUCKET);
    let broker = s3_broker(&s3, "prod/cluster-a", "");
    let mut configs = SMALL_SEGMENTS.to_vec();
    configs.push(("local.retention.bytes", "1"));
    create_topic(&broker.kafka, "orders", 3, &configs).await;
    let t0 = now_ms() - 3_600_000;
    let produced = produce(&broker.kafka, "orders", 3, 0, 3000, t0).await;
    let view = wait_archived(&broker, "orders");
    for p in view["partitions"].as_array().unwrap() {
        assert!(
            p["segments"].as_u64() > Some(2),
            "several segments per partition: {p}"
        );
        // local.retention.bytes=1: archived segments left local disk, the active one stayed.
        assert!(p["local_start_offset"].as_i64() > Some(0), "{p}");
        assert!(
            p["local_start_offset"].as_i64() <= p["end_offset"].as_i64(),
            "{p}"
        );
    }

    let env = s3.aws_env();
    let endpoint = s3.host_port();
    let key_filter = "user-7";
    let from_ms = t0 + 15_000;
    let duck = query(
        &[
            "duckdb-s3",
            "--endpoint",
            &endpoint,
            "--bucket",
            BUCKET,
            "--prefix",
            "prod/cluster-a",
            "--topic",
            "orders",
            "--key-filter",
            key_filter,
            "--from-ms",
            &from_ms.to_string(),
        ],
        &env,
    );
    assert_eq!(
        duck["summary"].as_array().unwrap(),
        &expected_summary(&produced)
    );
    assert_rows_match(duck["rows"].as_array().unwrap(), &produced, "duckdb");
    let mut want_filtered: Vec<Value> = produced
        .iter()
        .filter(|p| p.timestamp >= from_ms && p.key.as_deref() == Some(key_filter.as_bytes()))
        .map(|p| serde_json::json!([p.partition, p.offset]))
        .collect();
    want_filtered.sort_by_key(|v| (v[0].as_i64(), v[1].as_i64()));
    assert!(!want_filtered.is_empty());
    assert_eq!(duck["filtered"].as_array().unwrap(), &want_filtered);

    // pyarrow reads one object straight from the bucket.
    let entries = manifest(&broker, "orders");
    let first = &entries[0];
    let key = first["key"].as_str().unwrap();
    assert!(
        key.starts_with("prod/cluster-a/topic=orders/partition="),
        "{key}"
    );
    let one = query(
        &[
            "pyarrow-s3",
            "--endpoint",
            &endpoint,
            "--bucket",
            BUCKET,
            "--key",
            key,
        ],
        &env,
    );
    let meta = &one["metadata"];
    assert_eq!(meta["sediment.schema_version"], "1");
    assert_eq!(meta["sediment.topic"], "orders");
    assert_eq!(
        meta["sediment.base_offset"],
        first["base_offset"].to_string()
    );
    assert_eq!(
        meta["sediment.last_offset"],
        first["last_offset"].to_string()
    );
    assert_eq!(one["schema"], "timestamp[ms, tz=UTC]");
    let partition = first["partition"].as_i64().unwrap() as i32;
    let (lo, hi) = (
        first["base_offset"].as_i64().unwrap(),
        first["last_offset"].as_i64().unwrap(),
    );
    let in_file: Vec<Produced> = produced
        .iter()
        .filter(|p| p.partition == partition && (lo..=hi).contains(&p.offset))
        .cloned()
        .collect();
    assert_eq!(first["rows"].as_u64(), Some(in_file.len() as u64));
    assert_rows_match(one["rows"].as_array().unwrap(), &in_file, "pyarrow");

    // Every object in the bucket is a manifest entry, and every entry's object is there.
    let mut listed = s3.list(BUCKET, "prod/cluster-a/topic=orders/");
    let mut keys: Vec<String> = entries
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    keys.sort();
    assert_eq!(listed, keys);
    assert!(
        s3.list(BUCKET, "prod/cluster-a/_sediment/")
            .contains(&"prod/cluster-a/_sediment/cluster.json".to_string())
    );

    // The CLI: ls, describe and verify through the admin API.
    let ls = broker.cli(&["archive", "ls", "--topic", "orders"]);
    let ls_out = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{ls_out}");
    assert!(
        ls_out.contains("s3://sediment-archive/prod/cluster-a") && ls_out.contains("orders"),
        "{ls_out}"
    );
    let describe = broker.cli(&["archive", "describe", "orders", "--partition", "1"]);
    let d = String::from_utf8_lossy(&describe.stdout);
    assert!(
        describe.status.success()
            && d.contains("partition 1:")
            && d.contains("topic=orders/partition=1/"),
        "{d}"
    );
    let ok = broker.cli(&["archive", "verify"]);
    let ok_out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{ok_out}");
    assert!(
        ok_out.contains(&format!(
            "checked {} manifest entries (3000 rows",
            entries.len()
        )),
        "{ok_out}"
    );
    // An object deleted behind the broker's back is reported, with exit code 1.
    s3.delete(BUCKET, key);
    let bad = broker.cli(&["archive", "verify", "--topic", "orders"]);
    let bad_out = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{bad_out}");
    assert!(
        bad_out.contains(key) && bad_out.contains("object is missing"),
        "{bad_out}"
    );
    let unknown = broker.cli(&["archive", "describe", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown topic nope"));

    // Metrics: segments, bytes and PUT requests went up; nothing is lagging.
    assert!(metric(&broker, "sediment_archive_segments_total") >= entries.len() as f64);
    assert!(
        metric(&broker, "sediment_object_store_requests_total{op=\"put\"}") >= entries.len() as f64
    );
    assert_eq!(metric(&broker, "sediment_archive_lag_segments{"), 0.0);
    assert_eq!(metric(&broker, "sediment_archive_up"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_reads_the_embedded_local_archive() {
    // No --archive-url: the embedded default archives under <data dir>/archive.
    let broker = Broker::start_with(BrokerOptions::default().config(FAST));
    create_topic(&broker.kafka, "orders", 2, &SMALL_SEGMENTS).await;
    let t0 = now_ms() - 600_000;
    let produced = produce(&broker.kafka, "orders", 2, 0, 1200, t0).await;
    wait_archived(&broker, "orders");
    let root = broker.data_dir().join("archive");
    assert!(root.join("_sediment/cluster.json").exists());
    let from_ms = t0 + 4_000;
    let spark = query(
        &[
            "spark",
            "--root",
            root.to_str().unwrap(),
            "--topic",
            "orders",
            "--key-filter",
            "user-3",
            "--from-ms",
            &from_ms.to_string(),
        ],
        &[],
    );
    assert_eq!(
        spark["summary"].as_array().unwrap(),
        &expected_summary(&produced)
    );
    assert_rows_match(spark["rows"].as_array().unwrap(), &produced, "spark");
    let want: Vec<Value> = {
        let mut w: Vec<&Produced> = produced
            .iter()
            .filter(|p| p.timestamp >= from_ms && p.key.as_deref() == Some(&b"user-3"[..]))
            .collect();
        w.sort_by_key(|p| (p.partition, p.offset));
        w.iter()
            .map(|p| serde_json::json!([p.partition, p.offset]))
            .collect()
    };
    assert_eq!(spark["filtered"].as_array().unwrap(), &want);
    let schema = spark["schema"].as_str().unwrap();
    assert!(
        schema.contains("timestamp:timestamp")
            && schema.contains("headers:array<struct<key:string,value:binary>>"),
        "{schema}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_outage_does_not_stop_produce_and_the_archive_catches_up_without_loss() {
    let mut s3 = SeaweedFs::start();
    s3.create_bucket(BUCKET);
    let broker = s3_broker(&s3, "outage", "");
    let mut configs = SMALL_SEGMENTS.to_vec();
    configs.push(("local.retention.bytes", "1"));
    create_topic(&broker.kafka, "events", 2, &configs).await;
    let t0 = now_ms() - 600_000;
    let mut produced = produce(&broker.kafka, "events", 2, 0, 800, t0).await;
    wait_archived(&broker, "events");
    let errors_before = metric(&broker, "sediment_archive_upload_errors_total");

    s3.stop();
    // Produce keeps working on the local tier.
    produced.extend(produce(&broker.kafka, "events", 2, 800, 2400, t0).await);
    // The archive falls behind, and nothing unarchived leaves local disk.
    let lagging = wait_for(WAIT, || {
        let v = broker.admin_json("/v1/archive?topic=events");
        let parts = v["partitions"].as_array()?.clone();
        let lag: u64 = parts
            .iter()
            .map(|p| p["lag_segments"].as_u64().unwrap_or(0))
            .sum();
        (lag >= 4 && metric(&broker, "sediment_archive_upload_errors_total") > errors_before)
            .then_some(v)
    })
    .expect("archive lag grows while S3 is down");
    for p in lagging["partitions"].as_array().unwrap() {
        assert!(
            p["local_start_offset"].as_i64() <= p["end_offset"].as_i64(),
            "a segment left local disk before it was archived: {p}"
        );
    }
    assert!(lagging["last_error"].is_string(), "{lagging}");
    let lag_before: u64 = lagging["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lag_segments"].as_u64().unwrap())
        .sum();
    std::thread::sleep(Duration::from_secs(2));
    let v = broker.admin_json("/v1/archive?topic=events");
    let lag_after: u64 = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lag_segments"].as_u64().unwrap())
        .sum();
    assert!(
        lag_after >= lag_before,
        "still lagging while S3 is down: {lag_before} -> {lag_after}"
    );

    s3.restart();
    wait_archived(&broker, "events");
    // Nothing lost or duplicated: DuckDB sees every record once, and the bucket holds exactly
    // the manifest's objects.
    let duck = query(
        &[
            "duckdb-s3",
            "--endpoint",
            &s3.host_port(),
            "--bucket",
            BUCKET,
            "--prefix",
            "outage",
            "--topic",
            "events",
        ],
        &s3.aws_env(),
    );
    assert_eq!(
        duck["summary"].as_array().unwrap(),
        &expected_summary(&produced)
    );
    assert_rows_match(duck["rows"].as_array().unwrap(), &produced, "duckdb");
    let mut keys: Vec<String> = manifest(&broker, "events")
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(s3.list(BUCKET, "outage/topic=events/"), keys);
    assert!(
        broker
            .logs()
            .contains("archiving a segment failed; the local copy stays"),
        "the outage was logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_between_upload_and_commit_archives_the_segment_once_and_orphans_are_collected() {
    let s3 = SeaweedFs::start();
    s3.create_bucket(BUCKET);
    let mut broker = Broker::start_with(
        s3_options(&s3, "crash", "orphan_grace_ms = 1000\n")
            .env("SEDIMENT_TEST_PAUSE_BEFORE_ARCHIVE_COMMIT", "1"),
    );
    create_topic(&broker.kafka, "ledger", 1, &SMALL_SEGMENTS).await;
    let t0 = now_ms() - 600_000;
    let produced = produce(&broker.kafka, "ledger", 1, 0, 600, t0).await;
    wait_for(WAIT, || {
        broker
            .logs()
            .contains("failpoint: archive upload done")
            .then_some(())
    })
    .expect("the archiver reached the failpoint");
    let uploaded = s3.list(BUCKET, "crash/topic=ledger/");
    assert_eq!(
        uploaded.len(),
        1,
        "one object uploaded, not committed: {uploaded:?}"
    );
    assert!(
        manifest(&broker, "ledger").is_empty(),
        "nothing committed yet"
    );

    broker.kill9();
    broker
        .options_mut()
        .env
        .retain(|(k, _)| k != "SEDIMENT_TEST_PAUSE_BEFORE_ARCHIVE_COMMIT");
    broker.restart();
    wait_archived(&broker, "ledger");
    assert!(
        broker
            .logs()
            .contains("found this segment's object already uploaded")
    );
    let entries = manifest(&broker, "ledger");
    let bases: Vec<i64> = entries
        .iter()
        .map(|e| e["base_offset"].as_i64().unwrap())
        .collect();
    let mut unique = bases.clone();
    unique.dedup();
    assert_eq!(bases, unique, "each segment once");
    assert!(
        entries
            .iter()
            .any(|e| e["key"].as_str() == Some(uploaded[0].as_str())),
        "the interrupted upload was committed as it was"
    );
    for pair in entries.windows(2) {
        assert_eq!(
            pair[0]["last_offset"].as_i64().unwrap() + 1,
            pair[1]["base_offset"].as_i64().unwrap(),
            "contiguous"
        );
    }
    assert_eq!(
        entries
            .iter()
            .map(|e| e["rows"].as_u64().unwrap())
            .sum::<u64>(),
        produced.len() as u64
    );

    // An unreferenced object below the archive's end (as a crash can leave behind) is
    // collected after the grace period; files that are not archive objects are left alone.
    let topic_id = entries[0]["topic_id"].as_str().unwrap().replace('-', "");
    let orphan = format!(
        "crash/topic=ledger/partition=0/00000000000000000000-00000000000000000000-{topic_id}.parquet"
    );
    s3.copy(BUCKET, &uploaded[0], &orphan);
    s3.copy(
        BUCKET,
        &uploaded[0],
        "crash/topic=ledger/partition=0/notes.txt",
    );
    assert!(s3.list(BUCKET, "crash/topic=ledger/").contains(&orphan));
    wait_for(WAIT, || {
        (!s3.list(BUCKET, "crash/topic=ledger/").contains(&orphan)).then_some(())
    })
    .expect("the orphan is collected");
    let mut keys: Vec<String> = entries
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    keys.push("crash/topic=ledger/partition=0/notes.txt".into());
    keys.sort();
    assert_eq!(
        s3.list(BUCKET, "crash/topic=ledger/"),
        keys,
        "referenced objects stay"
    );
    assert!(
        metric(
            &broker,
            "sediment_archive_deleted_segments_total{reason=\"orphan\"}"
        ) >= 1.0
    );
    let ok = broker.cli(&["archive", "verify"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_and_topic_deletion_delete_archived_objects() {
    let s3 = SeaweedFs::start();
    s3.create_bucket(BUCKET);
    let broker = s3_broker(&s3, "lifecycle", "");
    create_topic(&broker.kafka, "short", 1, &SMALL_SEGMENTS).await;
    create_topic(&broker.kafka, "doomed", 1, &SMALL_SEGMENTS).await;
    let mut local_only = SMALL_SEGMENTS.to_vec();
    local_only.push(("remote.storage.enable", "false"));
    create_topic(&broker.kafka, "local-only", 1, &local_only).await;
    let t0 = now_ms() - 600_000;
    produce(&broker.kafka, "short", 1, 0, 500, t0).await;
    produce(&broker.kafka, "doomed", 1, 0, 500, t0).await;
    produce(&broker.kafka, "local-only", 1, 0, 500, t0).await;
    wait_archived(&broker, "short");
    wait_archived(&broker, "doomed");
    assert!(!s3.list(BUCKET, "lifecycle/topic=short/").is_empty());
    // remote.storage.enable=false: its sealed segments stay local only, with no lag reported.
    let v = broker.admin_json("/v1/archive?topic=local-only");
    let p = &v["partitions"][0];
    assert_eq!(p["remote_storage_enable"], false, "{v}");
    assert_eq!(
        (p["segments"].as_u64(), p["lag_segments"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    assert!(s3.list(BUCKET, "lifecycle/topic=local-only/").is_empty());

    // retention.ms bounds local and archived data together: every record is older than 60 s.
    let alter = AlterConfig::new(ResourceSpecifier::Topic("short"))
        .set("segment.bytes", "32768")
        .set("segment.ms", "1500")
        .set("retention.ms", "60000");
    let results = admin(&broker.kafka)
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .unwrap();
    results.into_iter().for_each(|r| {
        r.unwrap();
    });
    wait_for(WAIT, || {
        s3.list(BUCKET, "lifecycle/topic=short/")
            .is_empty()
            .then_some(())
    })
    .expect("expired archived segments are deleted from the bucket");
    assert!(manifest(&broker, "short").is_empty());
    assert!(
        metric(
            &broker,
            "sediment_archive_deleted_segments_total{reason=\"retention\"}"
        ) >= 1.0
    );

    // Deleting a topic deletes its archive.
    let deleted = admin(&broker.kafka)
        .delete_topics(&["doomed"], &AdminOptions::new())
        .await
        .unwrap();
    deleted.into_iter().for_each(|r| {
        r.unwrap();
    });
    wait_for(WAIT, || {
        s3.list(BUCKET, "lifecycle/topic=doomed/")
            .is_empty()
            .then_some(())
    })
    .expect("the deleted topic's archive is gone");
    let (status, _) = broker.admin_get("/v1/archive/topics/doomed").unwrap();
    assert_eq!(status, 404);
}
