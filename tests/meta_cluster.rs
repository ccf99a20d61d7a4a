//! The Raft metadata quorum as real processes (`sediment serve --process-roles controller`) on
//! loopback: the leader is killed with SIGKILL again and again while topics are created and
//! offsets committed, then every voter is killed and restarted; and the quorum's membership is
//! changed with `sediment meta`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sediment_meta::{Command, CommittedOffset, MetaClient, OffsetToCommit, Outcome};
use sediment_tests::meta::{Controller, Quorum};
use uuid::Uuid;

/// What the writer was told is committed: topic name, its id, group, offset.
type Acked = Vec<(String, Uuid, String, i64)>;

fn commit(group: &str, topic: &str, offset: i64) -> Command {
    Command::CommitOffsets {
        group: group.into(),
        offsets: vec![OffsetToCommit {
            topic: topic.into(),
            partition: 0,
            offset: CommittedOffset {
                offset,
                metadata: Some(format!("m{offset}")),
                leader_epoch: 0,
                commit_timestamp_ms: offset,
            },
        }],
    }
}

/// Creates topics and commits offsets one after another until told to stop; every write that
/// returns is recorded. Returns the errors the client saw (after its retries).
async fn writer(
    client: MetaClient,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let topic = format!("t{i}");
        let group = format!("g{}", i % 4);
        let id = Uuid::from_u128(1000 + i as u128);
        let created = client
            .write(&Command::CreateTopic {
                name: topic.clone(),
                id,
                leaders: vec![1, 2, 3],
                configs: BTreeMap::from([("retention.ms".into(), i.to_string())]),
            })
            .await;
        match created {
            // A retry of a create that had landed before the leader died finds it there.
            Ok(Outcome::Done | Outcome::Unchanged) => {}
            other => {
                errors.push(format!("create {topic}: {other:?}"));
                continue;
            }
        }
        match client.write(&commit(&group, &topic, i)).await {
            Ok(Outcome::Done) => acked.lock().push((topic, id, group, i)),
            other => errors.push(format!("commit {topic}: {other:?}")),
        }
        i += 1;
    }
    errors
}

async fn wait_acked(acked: &Mutex<Acked>, at_least: usize, timeout: Duration) {
    let start = Instant::now();
    while acked.lock().len() < at_least {
        assert!(
            start.elapsed() < timeout,
            "writes stalled at {} (waiting for {at_least})",
            acked.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_lose_nothing_when_the_leader_is_killed_again_and_again() {
    let mut quorum = Quorum::start(3);
    let (first, took) = quorum.wait_for_leader(None, Duration::from_secs(30)).await;
    println!("first leader: node {first} after {took:?}");

    let client = MetaClient::new(quorum.addrs(), Duration::from_secs(60));
    let acked = Arc::new(Mutex::new(Acked::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(
        client.clone(),
        Arc::clone(&acked),
        Arc::clone(&stop),
    ));

    for round in 1..=3 {
        let (leader, _) = quorum.wait_for_leader(None, Duration::from_secs(30)).await;
        let before = acked.lock().len();
        wait_acked(&acked, before + 20, Duration::from_secs(30)).await;
        let at_kill = acked.lock().len();
        quorum.node(leader).kill9();
        let (next, took) = quorum
            .wait_for_leader(Some(leader), Duration::from_secs(30))
            .await;
        assert_ne!(next, leader);
        // Writes go on through the new leader.
        wait_acked(&acked, at_kill + 20, Duration::from_secs(30)).await;
        println!(
            "round {round}: killed leader {leader} with {at_kill} writes acknowledged; node {next} \
             leads after {took:?}; {} acknowledged now",
            acked.lock().len()
        );
        quorum
            .node(leader)
            .start()
            .expect("the killed voter restarts");
    }
    stop.store(true, Ordering::Relaxed);
    let errors = writing.await.unwrap();
    assert!(errors.is_empty(), "the client saw errors: {errors:?}");

    // Everything acknowledged is there, read linearizably.
    let state = client.read().await.unwrap();
    let acked = acked.lock().clone();
    for (topic, id, group, offset) in &acked {
        let t = &state.topics[topic];
        assert_eq!(t.id, *id);
        assert_eq!(t.configs["retention.ms"], offset.to_string());
        let committed = &state.offsets[group][topic][&0];
        assert_eq!(committed.offset, *offset);
        assert_eq!(
            committed.metadata.as_deref(),
            Some(format!("m{offset}").as_str())
        );
    }
    // Nothing the writer did not ask for: every topic is t<i> of some i it started.
    let last = acked.last().unwrap().3;
    assert!(
        state
            .topics
            .keys()
            .all(|t| t[1..].parse::<i64>().unwrap() <= last + 1)
    );

    // The restarted voters caught up: all three apply the same last index.
    let start = Instant::now();
    loop {
        let statuses = quorum.statuses().await;
        let applied: Vec<_> = statuses.iter().map(|s| s.last_applied).collect();
        if statuses.len() == 3 && applied.iter().all(|a| *a == applied[0]) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{statuses:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every voter killed at once, then all restarted: the full state comes back.
    for n in &mut quorum.nodes {
        n.kill9();
    }
    for n in &mut quorum.nodes {
        n.start().expect("voter restarts");
    }
    let (leader, took) = quorum.wait_for_leader(None, Duration::from_secs(30)).await;
    println!("after a full restart node {leader} leads after {took:?}");
    let after = client.read().await.unwrap();
    assert_eq!(after, state, "the state after a restart of every voter");

    // The operator's view.
    let out = quorum.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let views = views.as_array().unwrap();
    assert_eq!(views.len(), 3);
    let leaders: Vec<_> = views
        .iter()
        .filter(|v| v["status"]["state"] == "leader")
        .collect();
    assert_eq!(leaders.len(), 1, "{views:#?}");
    assert_eq!(leaders[0]["status"]["voters"], serde_json::json!([1, 2, 3]));
    let out = quorum.cli(&["state"]);
    assert!(out.status.success());
    let dumped: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        dumped["topics"].as_object().unwrap().len(),
        state.topics.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sediment_meta_adds_and_removes_voters() {
    let mut quorum = Quorum::start(3);
    quorum.wait_for_leader(None, Duration::from_secs(30)).await;
    let client = MetaClient::new(quorum.addrs(), Duration::from_secs(30));
    client.write(&commit("g", "t", 1)).await.unwrap();

    // Node 4 is not in the initial voters: it starts empty and waits to be added.
    let addr4 = format!("127.0.0.1:{}", sediment_tests::meta::free_port());
    let mut n4 = Controller::new(4, addr4.clone(), quorum.voters());
    n4.start().unwrap();
    let out = quorum.cli(&["add-voter", "--id", "4", "--addr", &addr4]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("voters [1, 2, 3, 4]"));

    // Remove node 1 and kill it; then kill one more: 2 of the 3 voters {2, 3, 4} remain, so
    // writes still commit, and node 4 (which joined late) has everything.
    let out = quorum.cli(&["remove", "--id", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("voters [2, 3, 4]"));
    quorum.node(1).kill9();
    quorum.node(2).kill9();
    let client = MetaClient::new(
        vec![quorum.node(3).addr.clone(), addr4.clone()],
        Duration::from_secs(30),
    );
    client.write(&commit("g", "t", 2)).await.unwrap();
    let state = client.read().await.unwrap();
    assert_eq!(state.offsets["g"]["t"][&0].offset, 2);
    // Node 4 itself has applied everything the leader has (not just forwarded to it).
    let leader_applied = {
        let mut applied = None;
        for addr in [quorum.node(3).addr.clone(), addr4.clone()] {
            let s = client.status_of(&addr).await.unwrap();
            if s.state == "leader" {
                applied = s.last_applied;
            }
        }
        applied.expect("node 3 or node 4 leads")
    };
    let start = std::time::Instant::now();
    loop {
        let s4 = client.status_of(&addr4).await.unwrap();
        if s4.last_applied >= Some(leader_applied) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{s4:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A change that cannot be made is refused with a reason, without retrying.
    let out = quorum.cli(&["add-voter", "--id", "9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot make node 9 a voter"), "{err}");
    drop(n4);
}
