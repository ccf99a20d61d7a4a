//! The group and producer-id APIs over a raw connection, where the exact error codes and fields
//! are visible: MEMBER_ID_REQUIRED with the id to rejoin with, ILLEGAL_GENERATION,
//! UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID, INVALID_SESSION_TIMEOUT,
//! NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, GROUP_SUBSCRIBED_TO_TOPIC, OFFSET_METADATA_TOO_LARGE,
//! committed offsets with metadata and leader epoch in both OffsetFetch forms, and
//! InitProducerId. Real clients exercise the same paths in groups_*.rs; this pins the wire.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, CreateTopicsRequest, DeleteGroupsRequest, DescribeGroupsRequest,
    GroupId, HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName, TransactionalId,
    leave_group_request::MemberIdentity,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sediment_tests::{Broker, BrokerOptions, RawClient};

const NONE: i16 = 0;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const INVALID_REQUEST: i16 = 42;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn group(v: &str) -> GroupId {
    GroupId(s(v))
}

/// Consumer-protocol subscription metadata for `topics` (version 1).
fn subscription(topics: &[&str]) -> Bytes {
    let sub =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| s(t)).collect());
    let mut buf = BytesMut::new();
    buf.put_i16(1);
    sub.encode(&mut buf, 1).unwrap();
    buf.freeze()
}

fn join_request(group_id: &str, member_id: &str, instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group(group_id))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(subscription(&["orders"])),
        ])
}

/// Joins as a new dynamic member through the MEMBER_ID_REQUIRED round trip.
fn join_new(c: &mut RawClient, version: i16, group_id: &str) -> JoinGroupResponse {
    let first = c
        .request(version, &join_request(group_id, "", None))
        .unwrap();
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    assert!(
        !first.member_id.is_empty(),
        "the id to rejoin with is given"
    );
    if version < 7 {
        assert_eq!(
            first.protocol_name.as_deref(),
            Some(""),
            "non-null before v7"
        );
    }
    let second = c
        .request(version, &join_request(group_id, &first.member_id, None))
        .unwrap();
    assert_eq!(second.error_code, NONE);
    assert_eq!(second.member_id, first.member_id);
    second
}

fn sync(
    c: &mut RawClient,
    group_id: &str,
    generation: i32,
    member_id: &str,
    assignments: &[(&str, &[u8])],
) -> (i16, Bytes) {
    let req = SyncGroupRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id(generation)
        .with_member_id(s(member_id))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        );
    let resp = c.request(5, &req).unwrap();
    (resp.error_code, resp.assignment)
}

fn heartbeat(
    c: &mut RawClient,
    group_id: &str,
    generation: i32,
    member: &str,
    instance: Option<&str>,
) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s));
    c.request(4, &req).unwrap().error_code
}

fn start() -> (Broker, RawClient) {
    let broker = Broker::start_with(
        BrokerOptions::default().env("SEDIMENT_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
    );
    let mut c = RawClient::connect(&broker.kafka).unwrap();
    let create = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(s("orders")))
                .with_num_partitions(2)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(5000);
    let resp = c.request(5, &create).unwrap();
    assert_eq!(resp.topics[0].error_code, NONE);
    (broker, c)
}

#[test]
fn membership_errors_are_kafkas() {
    let (broker, mut c) = start();
    for version in [5, 9] {
        let g = format!("g-v{version}");
        let a = join_new(&mut c, version, &g);
        assert_eq!(
            (a.generation_id, a.leader.clone()),
            (1, a.member_id.clone())
        );
        assert_eq!(a.members.len(), 1);
        assert_eq!(a.protocol_name.as_deref(), Some("range"));
        let me = a.member_id.to_string();
        assert_eq!(sync(&mut c, &g, 2, &me, &[]).0, ILLEGAL_GENERATION);
        assert_eq!(sync(&mut c, &g, 1, "stranger", &[]).0, UNKNOWN_MEMBER_ID);
        let (code, assignment) = sync(&mut c, &g, 1, &me, &[(&me, b"mine")]);
        assert_eq!((code, &assignment[..]), (NONE, &b"mine"[..]));
        assert_eq!(heartbeat(&mut c, &g, 1, &me, None), NONE);
        assert_eq!(heartbeat(&mut c, &g, 0, &me, None), ILLEGAL_GENERATION);
        assert_eq!(
            heartbeat(&mut c, &g, 1, "stranger", None),
            UNKNOWN_MEMBER_ID
        );

        // A second member joins on its own connection (JoinGroup waits for the rebalance).
        let addr = broker.kafka.clone();
        let g2 = g.clone();
        let other = std::thread::spawn(move || {
            let mut c2 = RawClient::connect(&addr).unwrap();
            join_new(&mut c2, version, &g2)
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let code = heartbeat(&mut c, &g, 1, &me, None);
            if code == REBALANCE_IN_PROGRESS {
                break;
            }
            assert_eq!(code, NONE);
            assert!(std::time::Instant::now() < deadline, "no rebalance started");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let rejoin = c.request(version, &join_request(&g, &me, None)).unwrap();
        let b = other.join().unwrap();
        assert_eq!((rejoin.generation_id, b.generation_id), (2, 2));
        assert_eq!(rejoin.leader.as_str(), me, "the leader stays the leader");
        assert_eq!(rejoin.members.len(), 2);
        assert!(b.members.is_empty());
    }
    let mut bad = join_request("g-bad", "", None);
    bad.session_timeout_ms = 1000;
    assert_eq!(
        c.request(9, &bad).unwrap().error_code,
        INVALID_SESSION_TIMEOUT
    );
}

#[test]
fn static_members_fence_their_old_incarnation() {
    let (_broker, mut c) = start();
    let first = c
        .request(9, &join_request("gs", "", Some("pod-0")))
        .unwrap();
    assert_eq!(
        first.error_code, NONE,
        "static members need no member id round trip"
    );
    let old = first.member_id.to_string();
    assert_eq!(sync(&mut c, "gs", 1, &old, &[(&old, b"p0")]).0, NONE);
    let again = c
        .request(9, &join_request("gs", "", Some("pod-0")))
        .unwrap();
    assert_eq!(again.error_code, NONE);
    assert_eq!(again.generation_id, 1, "a stable group does not rebalance");
    assert_ne!(again.member_id.to_string(), old);
    let (code, assignment) = sync(&mut c, "gs", 1, &again.member_id, &[]);
    assert_eq!((code, &assignment[..]), (NONE, &b"p0"[..]));
    assert_eq!(
        heartbeat(&mut c, "gs", 1, &old, Some("pod-0")),
        FENCED_INSTANCE_ID
    );
    // Removal by instance id alone (what AdminClient.removeMembersFromConsumerGroup sends).
    let leave = LeaveGroupRequest::default()
        .with_group_id(group("gs"))
        .with_members(vec![
            MemberIdentity::default()
                .with_member_id(s(""))
                .with_group_instance_id(Some(s("pod-0"))),
        ]);
    let resp = c.request(5, &leave).unwrap();
    assert_eq!((resp.error_code, resp.members[0].error_code), (NONE, NONE));
    let resp = c
        .request(
            5,
            &DescribeGroupsRequest::default().with_groups(vec![group("gs")]),
        )
        .unwrap();
    assert_eq!(resp.groups[0].group_state.as_str(), "Empty");
}

#[test]
fn offsets_commit_fetch_and_delete() {
    let (broker, mut c) = start();
    let commit = |c: &mut RawClient,
                  group_id: &str,
                  generation: i32,
                  member: &str,
                  parts: &[(i32, i64, &str)]| {
        let req = OffsetCommitRequest::default()
            .with_group_id(group(group_id))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("orders")))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&(p, o, m)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                                    .with_committed_leader_epoch(0)
                                    .with_committed_metadata(Some(s(m)))
                            })
                            .collect(),
                    ),
            ]);
        let resp = c.request(8, &req).unwrap();
        resp.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect::<Vec<_>>()
    };
    // A consumer that assigns partitions itself commits with generation -1.
    let big = "m".repeat(5000);
    assert_eq!(
        commit(
            &mut c,
            "manual",
            -1,
            "",
            &[(0, 42, "meta"), (1, 7, ""), (9, 1, ""), (0, 1, &big)]
        ),
        vec![
            NONE,
            NONE,
            UNKNOWN_TOPIC_OR_PARTITION,
            OFFSET_METADATA_TOO_LARGE
        ]
    );
    // Single-group form (v7) for named partitions and the multi-group form (v8) for all.
    let v7 = OffsetFetchRequest::default()
        .with_group_id(group("manual"))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("orders")))
                .with_partition_indexes(vec![0, 1]),
        ]));
    let resp = c.request(7, &v7).unwrap();
    let p = &resp.topics[0].partitions;
    assert_eq!(
        (
            p[0].committed_offset,
            p[0].committed_leader_epoch,
            p[0].metadata.as_deref()
        ),
        (42, 0, Some("meta"))
    );
    assert_eq!(
        p[1].committed_offset, 7,
        "the too-large metadata was not stored over 42"
    );
    let v8 = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(group("manual"))
            .with_topics(None),
        OffsetFetchRequestGroup::default()
            .with_group_id(group("never-committed"))
            .with_topics(Some(vec![
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("orders")))
                    .with_partition_indexes(vec![0]),
            ])),
    ]);
    let resp = c.request(8, &v8).unwrap();
    let all: Vec<(i32, i64)> = resp.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(all, vec![(0, 42), (1, 7)]);
    assert_eq!(resp.groups[1].topics[0].partitions[0].committed_offset, -1);

    // A member subscribed to the topic: its offsets cannot be deleted, nor can the group.
    let a = join_new(&mut c, 9, "live");
    let me = a.member_id.to_string();
    assert_eq!(sync(&mut c, "live", 1, &me, &[(&me, b"x")]).0, NONE);
    assert_eq!(commit(&mut c, "live", 1, &me, &[(0, 3, "")]), vec![NONE]);
    assert_eq!(
        commit(&mut c, "live", 5, &me, &[(0, 4, "")]),
        vec![ILLEGAL_GENERATION]
    );
    let del = OffsetDeleteRequest::default()
        .with_group_id(group("live"))
        .with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s("orders")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                ]),
        ]);
    let resp = c.request(0, &del).unwrap();
    assert_eq!(
        resp.topics[0].partitions[0].error_code,
        GROUP_SUBSCRIBED_TO_TOPIC
    );
    let resp = c
        .request(
            2,
            &DeleteGroupsRequest::default().with_groups_names(vec![
                group("live"),
                group("nope"),
                group("manual"),
            ]),
        )
        .unwrap();
    let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, NONE]);

    let resp = c
        .request(
            4,
            &ListGroupsRequest::default().with_states_filter(vec![s("Stable")]),
        )
        .unwrap();
    let listed: Vec<(&str, &str)> = resp
        .groups
        .iter()
        .map(|g| (g.group_id.as_str(), g.group_state.as_str()))
        .collect();
    assert_eq!(listed, vec![("live", "Stable")]);
    let resp = c
        .request(
            5,
            &DescribeGroupsRequest::default().with_groups(vec![group("live"), group("manual")]),
        )
        .unwrap();
    let live = &resp.groups[0];
    assert_eq!(
        (live.group_state.as_str(), live.protocol_data.as_str()),
        ("Stable", "range")
    );
    assert_eq!(live.members[0].client_id.as_str(), "sediment-tests");
    assert_eq!(&live.members[0].member_assignment[..], b"x");
    assert_eq!(resp.groups[1].group_state.as_str(), "Dead", "deleted above");
    let (_, m) = broker.admin_get("/metrics").unwrap();
    for line in [
        r#"sediment_groups{type="classic",state="Stable"} 1"#,
        r#"sediment_groups{type="classic",state="Empty"} 0"#,
        "sediment_group_members 1",
        "sediment_group_rebalances_total 1",
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }
}

#[test]
fn producer_ids_are_unique_across_restarts() {
    let (mut broker, mut c) = start();
    let init = |c: &mut RawClient| {
        c.request(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        )
        .unwrap()
    };
    let a = init(&mut c);
    let b = init(&mut c);
    assert_eq!((a.error_code, b.error_code), (NONE, NONE));
    assert_eq!((a.producer_epoch, b.producer_epoch), (0, 0));
    assert_ne!(a.producer_id, b.producer_id);
    let txn = c
        .request(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s("tx"))))
                .with_transaction_timeout_ms(60_000),
        )
        .unwrap();
    assert_eq!(
        txn.error_code, INVALID_REQUEST,
        "transactions are not served"
    );
    broker.kill9();
    broker.restart();
    let mut c = RawClient::connect(&broker.kafka).unwrap();
    let after = init(&mut c);
    assert_eq!(after.error_code, NONE);
    assert!(
        after.producer_id.0 > b.producer_id.0,
        "{:?} after a restart must be new (before: {:?})",
        after.producer_id,
        b.producer_id
    );
}

#[tokio::test]
async fn the_admin_api_shows_groups_members_and_lag() {
    use rdkafka::producer::FutureRecord;
    let (broker, mut c) = start();
    let producer = sediment_tests::kafka::producer(&broker.kafka, &[]);
    for i in 0..10 {
        producer
            .send(
                FutureRecord::<(), _>::to("orders")
                    .partition(0)
                    .payload(&format!("v{i}")),
                std::time::Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }
    // A live member and an offsets-only group.
    let a = join_new(&mut c, 9, "live");
    let me = a.member_id.to_string();
    let assignment = consumer_assignment("orders", &[0, 1]);
    assert_eq!(sync(&mut c, "live", 1, &me, &[(&me, &assignment)]).0, NONE);
    let commit = OffsetCommitRequest::default()
        .with_group_id(group("lagging"))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("orders")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(4)
                        .with_committed_metadata(Some(s("m"))),
                ]),
        ]);
    assert_eq!(
        c.request(8, &commit).unwrap().topics[0].partitions[0].error_code,
        NONE
    );

    let (status, body) = broker.admin_get("/v1/groups").unwrap();
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        list,
        serde_json::json!([
            {"group": "lagging", "type": "classic", "state": "Empty", "members": 0},
            {"group": "live", "type": "classic", "state": "Stable", "members": 1},
        ])
    );
    let (_, body) = broker.admin_get("/v1/groups/lagging").unwrap();
    let g: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        g["offsets"],
        serde_json::json!([{"topic": "orders", "partition": 0, "committed_offset": 4,
            "metadata": "m", "log_end_offset": 10, "lag": 6}])
    );
    let (_, body) = broker.admin_get("/v1/groups/live").unwrap();
    let g: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(g["protocol"], "range");
    assert_eq!(g["members"][0]["client_id"], "sediment-tests");
    assert_eq!(
        g["members"][0]["assignment"],
        serde_json::json!({"orders": [0, 1]})
    );
    let (status, _) = broker.admin_get("/v1/groups/nope").unwrap();
    assert_eq!(status, 404);
}

/// A consumer-protocol assignment (version 1) of `partitions` of `topic`.
fn consumer_assignment(topic: &str, partitions: &[i32]) -> Vec<u8> {
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    let a = kafka_protocol::messages::ConsumerProtocolAssignment::default()
        .with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(partitions.to_vec()),
        ]);
    let mut buf = BytesMut::new();
    buf.put_i16(1);
    a.encode(&mut buf, 1).unwrap();
    buf.to_vec()
}
