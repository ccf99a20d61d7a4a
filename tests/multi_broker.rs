//! Three brokers (`sediment serve --process-roles broker`) on a three-voter metadata quorum
//! (`--process-roles controller`), all real processes on loopback: a topic's partitions are
//! spread over the brokers; librdkafka and kafka-python produce and consume across them (a
//! consumer group coordinated by whichever broker its id hashes to); a request sent to the
//! wrong broker is answered NOT_LEADER_OR_FOLLOWER / NOT_COORDINATOR; a broker killed with
//! SIGKILL is fenced, its partitions reported leaderless, and it comes back with its data.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, JoinGroupRequest, MetadataRequest, ProduceRequest, TopicName,
    join_group_request::JoinGroupRequestProtocol,
    produce_request::{PartitionProduceData, TopicProduceData},
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::Message;
use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use sediment_tests::kafka::{admin, consume, consumer, create_topic, producer};
use sediment_tests::meta::{Controller, Quorum, broker_on_quorum};
use sediment_tests::{
    Broker, BrokerOptions, RawClient, encode_batch, fetch_request, record, run_python, wait_for,
};

const WAIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "spread";
const PARTITIONS: i32 = 6;

fn start_broker(id: i32, voters: &str) -> Broker {
    Broker::start_with(broker_on_quorum(id, voters))
}

/// What librdkafka's Metadata shows through `bootstrap`: the brokers listed (id → port) and
/// each partition's leader (-1 when none), once the topic is known.
fn metadata(bootstrap: &str) -> Option<(BTreeMap<i32, u16>, Vec<i32>)> {
    let c = consumer(bootstrap, &[]);
    let md = c.fetch_metadata(Some(TOPIC), Duration::from_secs(5)).ok()?;
    let brokers = md
        .brokers()
        .iter()
        .map(|b| (b.id(), b.port() as u16))
        .collect();
    let t = md.topics().first()?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Some((brokers, Vec::new()));
    }
    let mut parts: Vec<(i32, i32)> = t
        .partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect();
    parts.sort();
    Some((brokers, parts.into_iter().map(|(_, l)| l).collect()))
}

fn port(b: &Broker) -> u16 {
    b.kafka.rsplit(':').next().unwrap().parse().unwrap()
}

fn produce_req(partition: i32) -> ProduceRequest {
    let batch = encode_batch(
        &[record(0, 1_750_000_000_000, None, Some("x".into()))],
        kafka_protocol::records::Compression::None,
    );
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(TOPIC.to_string().into()))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch)),
                ]),
        ])
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_on_three_voters_spread_partitions_redirect_clients_and_fence_the_dead() {
    let quorum = Quorum::start_with(
        3,
        &[("SEDIMENT_CONTROLLER_BROKER_SESSION_TIMEOUT_MS", "3000")],
    );
    quorum.wait_for_leader(None, WAIT).await;
    let voters = quorum.voters();
    let mut brokers: Vec<Broker> = (1..=3).map(|id| start_broker(id, &voters)).collect();
    let ports: BTreeMap<i32, u16> = (1..=3)
        .map(|id| (id, port(&brokers[id as usize - 1])))
        .collect();

    // Every broker lists all three.
    for b in &brokers {
        let listed =
            wait_for(WAIT, || metadata(&b.kafka).filter(|(l, _)| *l == ports)).map(|(l, _)| l);
        assert_eq!(
            listed.as_ref(),
            Some(&ports),
            "brokers listed by {}",
            b.kafka
        );
    }
    // The quorum through a broker's admin API: every voter's view, and a fourth voter added
    // (learner first, then promoted).
    // Polled: a voter that started last may force one more election soon after start (its
    // own first vote outranks the leader's), and the voters are asked one after another.
    let one_leader = wait_for(WAIT, || {
        let views = brokers[0].admin_json("/v1/meta/quorum");
        let all = views.as_array()?;
        let leaders = all
            .iter()
            .filter(|v| v["status"]["state"] == "leader")
            .count();
        (all.len() == 3 && leaders == 1).then_some(())
    });
    assert!(
        one_leader.is_some(),
        "the admin API shows three voters, one leading: {}",
        brokers[0].admin_json("/v1/meta/quorum")
    );
    let mut fourth = Controller::new(
        4,
        format!("127.0.0.1:{}", sediment_tests::meta::free_port()),
        voters.clone(),
    );
    fourth.start().unwrap();
    let add = |body: serde_json::Value| {
        let (code, answer) = brokers[1].admin_post("/v1/meta/membership", &body).unwrap();
        assert_eq!(code, 200, "{body}: {answer}");
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()
    };
    add(serde_json::json!({"op": "add-learner", "id": 4, "addr": fourth.addr}));
    let status = add(serde_json::json!({"op": "add-voters", "ids": [4]}));
    assert_eq!(
        status["voters"],
        serde_json::json!([1, 2, 3, 4]),
        "{status}"
    );
    let (code, answer) = brokers[1]
        .admin_post(
            "/v1/meta/membership",
            &serde_json::json!({"op": "add-voters", "ids": [9]}),
        )
        .unwrap();
    assert_eq!(code, 400, "an impossible change is refused: {answer}");

    // One cluster id for all (the first broker's, kept by the quorum).
    let cluster_ids: BTreeSet<String> = brokers
        .iter()
        .map(|b| {
            let mut c = RawClient::connect(&b.kafka).unwrap();
            let md = c.request(12, &MetadataRequest::default()).unwrap();
            md.cluster_id.unwrap().to_string()
        })
        .collect();
    assert_eq!(cluster_ids.len(), 1, "{cluster_ids:?}");

    // A topic created through broker 1 is spread over the three; every broker sees the same
    // leaders.
    create_topic(&brokers[0].kafka, TOPIC, PARTITIONS, &[]).await;
    let mut leaders = Vec::new();
    for b in &brokers {
        let seen = wait_for(WAIT, || {
            metadata(&b.kafka)
                .map(|(_, l)| l)
                .filter(|l| l.len() == PARTITIONS as usize)
        })
        .expect("the topic reaches every broker");
        if leaders.is_empty() {
            leaders = seen.clone();
        }
        assert_eq!(seen, leaders, "leaders as {} sees them", b.kafka);
    }
    for id in 1..=3 {
        assert_eq!(
            leaders.iter().filter(|l| **l == id).count(),
            2,
            "broker {id} leads two of the six partitions: {leaders:?}"
        );
    }

    // librdkafka, bootstrapped on broker 1 only, produces to every partition (so to every
    // broker), and reads everything back through broker 2.
    let p = producer(&brokers[0].kafka, &[("enable.idempotence", "true")]);
    let keys: Vec<(String, String)> = (0..600)
        .map(|i| (format!("rd-{i}"), format!("v-{i}")))
        .collect();
    let mut sends = Vec::new();
    for (i, (key, value)) in keys.iter().enumerate() {
        sends.push(
            p.send(
                FutureRecord::to(TOPIC)
                    .partition(i as i32 % PARTITIONS)
                    .key(key)
                    .payload(value),
                Duration::from_secs(30),
            ),
        );
    }
    for (i, sent) in futures::future::join_all(sends)
        .await
        .into_iter()
        .enumerate()
    {
        let d = sent.unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
        assert_eq!(d.partition, i as i32 % PARTITIONS);
        assert_eq!(d.offset, i as i64 / PARTITIONS as i64, "record {i}");
    }
    for partition in 0..PARTITIONS {
        let got = consume(&brokers[1].kafka, TOPIC, partition, 0, 100, WAIT).unwrap();
        let keys: Vec<String> = got
            .iter()
            .map(|m| String::from_utf8(m.key().unwrap().to_vec()).unwrap())
            .collect();
        let expected: Vec<String> = (0..600)
            .filter(|i| i % PARTITIONS == partition)
            .map(|i| format!("rd-{i}"))
            .collect();
        assert_eq!(keys, expected, "partition {partition}");
    }

    // kafka-python, bootstrapped on broker 3, produces and consumes in a group.
    let out = run_python(
        "multi_broker.py",
        &[
            &brokers[2].kafka,
            TOPIC,
            &PARTITIONS.to_string(),
            "300",
            "py-group",
        ],
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for partition in 0..PARTITIONS {
        let read = v["by_partition"][partition.to_string()].as_array().unwrap();
        let expected: Vec<serde_json::Value> = (0..300)
            .filter(|i| i % PARTITIONS == partition)
            .enumerate()
            .map(|(n, i)| serde_json::json!([100 + n, format!("py-{i}"), format!("v-{i}")]))
            .collect();
        assert_eq!(read, &expected, "kafka-python, partition {partition}");
        assert_eq!(v["committed"][partition.to_string()], 150);
    }

    // Groups are coordinated by different brokers; FindCoordinator answers the same on each.
    let coordinator_of = |b: &Broker, group: &str| {
        let mut c = RawClient::connect(&b.kafka).unwrap();
        let r = c
            .request(3, &FindCoordinatorRequest::default().with_key(s(group)))
            .unwrap();
        assert_eq!(r.error_code, 0);
        r.node_id.0
    };
    let coordinators: BTreeSet<i32> = (0..30)
        .map(|i| {
            let g = format!("group-{i}");
            let c = coordinator_of(&brokers[0], &g);
            assert_eq!(coordinator_of(&brokers[2], &g), c, "{g}");
            c
        })
        .collect();
    assert_eq!(coordinators, BTreeSet::from([1, 2, 3]));
    // kafka-python's group ran on the broker FindCoordinator names, and only there.
    let py_coordinator = coordinator_of(&brokers[1], "py-group");
    for (i, b) in brokers.iter().enumerate() {
        assert_eq!(
            b.logs().contains("group is stable group=py-group"),
            i as i32 + 1 == py_coordinator,
            "py-group on broker {} (coordinator {py_coordinator})",
            i + 1
        );
    }

    // The wrong broker says so, and the right one serves.
    for partition in 0..PARTITIONS {
        let leader = leaders[partition as usize];
        for b in 1..=3 {
            let mut c = RawClient::connect(&brokers[b as usize - 1].kafka).unwrap();
            let produced = c.request(9, &produce_req(partition)).unwrap();
            let code = produced.responses[0].partition_responses[0].error_code;
            let fetched: kafka_protocol::messages::FetchResponse = c
                .request(12, &fetch_request(TOPIC, partition, 0, 1 << 20))
                .unwrap();
            let fetch_code = fetched.responses[0].partitions[0].error_code;
            if b == leader {
                assert_eq!(
                    (code, fetch_code),
                    (0, 0),
                    "partition {partition} on its leader"
                );
            } else {
                assert_eq!(
                    (code, fetch_code),
                    (6, 6),
                    "partition {partition} (leader {leader}) on broker {b}: NOT_LEADER_OR_FOLLOWER"
                );
            }
        }
    }
    let other = (1..=3).find(|b| *b != py_coordinator).unwrap();
    let mut c = RawClient::connect(&brokers[other as usize - 1].kafka).unwrap();
    let joined = c
        .request(
            5,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(s("py-group")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(s(""))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default().with_name(s("range")),
                ]),
        )
        .unwrap();
    assert_eq!(
        joined.error_code, 16,
        "JoinGroup on a broker that does not coordinate: NOT_COORDINATOR"
    );

    // Broker 3 dies: it is fenced, its partitions have no leader, the others carry on.
    let killed_at = Instant::now();
    brokers[2].kill9();
    let expected_leaders: Vec<i32> = leaders
        .iter()
        .map(|l| if *l == 3 { -1 } else { *l })
        .collect();
    let fenced = wait_for(WAIT, || {
        metadata(&brokers[0].kafka)
            .filter(|(listed, l)| !listed.contains_key(&3) && *l == expected_leaders)
    });
    assert!(fenced.is_some(), "broker 3 was not fenced within {WAIT:?}");
    eprintln!("broker 3 fenced {:?} after kill -9", killed_at.elapsed());
    let p = producer(&brokers[1].kafka, &[]);
    for partition in (0..PARTITIONS).filter(|p| leaders[*p as usize] != 3) {
        p.send(
            FutureRecord::to(TOPIC)
                .partition(partition)
                .key("after")
                .payload("kill"),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("partition {partition} after broker 3 died: {e}"));
    }

    // It comes back (on a new port), is listed again, and still has its partitions' data.
    brokers[2].restart();
    let new_port = port(&brokers[2]);
    let back = wait_for(WAIT, || {
        metadata(&brokers[0].kafka)
            .filter(|(listed, l)| listed.get(&3) == Some(&new_port) && *l == leaders)
    });
    assert!(back.is_some(), "broker 3 was not listed again");
    for partition in (0..PARTITIONS).filter(|p| leaders[*p as usize] == 3) {
        // 100 from librdkafka, 50 from kafka-python, one from the wrong-broker check.
        let got = consume(&brokers[0].kafka, TOPIC, partition, 0, 151, WAIT).unwrap();
        assert_eq!(got[0].key(), Some(format!("rd-{partition}").as_bytes()));
        assert_eq!(got[150].payload(), Some(&b"x"[..]));
    }

    // A config change made through broker 2 reaches broker 1; a topic deleted through
    // broker 3 disappears from the others, with their partitions' data.
    let a2 = admin(&brokers[1].kafka);
    let alter = AlterConfig::new(ResourceSpecifier::Topic(TOPIC)).set("retention.ms", "3600000");
    let r = a2
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let a1 = admin(&brokers[0].kafka);
    let mut seen = None;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let r = a1
            .describe_configs([&ResourceSpecifier::Topic(TOPIC)], &AdminOptions::new())
            .await
            .unwrap();
        let value = r[0].as_ref().ok().and_then(|c| {
            c.entries
                .iter()
                .find(|e| e.name == "retention.ms")
                .and_then(|e| e.value.clone())
        });
        if value.as_deref() == Some("3600000") {
            seen = value;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.as_deref(),
        Some("3600000"),
        "broker 1 sees broker 2's config change"
    );
    let r = admin(&brokers[2].kafka)
        .delete_topics(&[TOPIC], &AdminOptions::new())
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    for b in &brokers[..2] {
        let gone = wait_for(WAIT, || {
            let dirs = std::fs::read_dir(b.data_dir())
                .unwrap()
                .flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.starts_with("spread-") && !name.ends_with("-delete")
                })
                .count();
            let listed = consumer(&b.kafka, &[("allow.auto.create.topics", "false")])
                .fetch_metadata(None, Duration::from_secs(5))
                .ok()?
                .topics()
                .iter()
                .any(|t| t.name() == TOPIC);
            (dirs == 0 && !listed).then_some(())
        });
        assert!(gone.is_some(), "{} still has the deleted topic", b.kafka);
    }
}

/// `--process-roles broker,controller`: one process is a voter of the quorum and a broker on
/// it; what it acknowledged is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_combined_broker_and_controller_serves_and_keeps_its_data_across_a_restart() {
    let controller = format!("127.0.0.1:{}", sediment_tests::meta::free_port());
    let options = BrokerOptions {
        args: [
            "--process-roles",
            "broker,controller",
            "--node-id",
            "1",
            "--controller-listen",
            &controller,
            "--controller-quorum-voters",
            &format!("1@{controller}"),
        ]
        .map(str::to_string)
        .to_vec(),
        ..Default::default()
    };
    let mut node = Broker::start_with(options);
    create_topic(&node.kafka, "combined", 2, &[]).await;
    let p = producer(&node.kafka, &[]);
    for i in 0..10 {
        p.send(
            FutureRecord::to("combined")
                .partition(i % 2)
                .key(&format!("k{i}"))
                .payload("v"),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
    }
    drop(p);
    assert!(node.terminate().success(), "a clean shutdown (SIGTERM)");
    node.restart();
    for partition in 0..2 {
        let got = consume(&node.kafka, "combined", partition, 0, 5, WAIT).unwrap();
        let keys: Vec<&[u8]> = got.iter().map(|m| m.key().unwrap()).collect();
        let expected: Vec<String> = (0..10)
            .filter(|i| i % 2 == partition)
            .map(|i| format!("k{i}"))
            .collect();
        assert_eq!(
            keys,
            expected.iter().map(|k| k.as_bytes()).collect::<Vec<_>>()
        );
    }
    // The controller in the same process answers `sediment meta`.
    let out = std::process::Command::new(sediment_tests::sediment_bin())
        .args([
            "meta",
            "--bootstrap-controller",
            &controller,
            "status",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["status"]["leader"], 1, "{status}");
    assert_eq!(
        node.admin_json("/v1/meta/quorum")[0]["status"]["state"],
        "leader"
    );

    // The embedded default has no quorum to show or change, and says so.
    let embedded = Broker::start();
    let (code, body) = embedded.admin_get("/v1/meta/quorum").unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("in-process single voter"), "{body}");
}
