//! The group state machine, driven with a manual clock and no sleeping.

use super::offsets::FileOffsetStore;
use super::*;
use sediment_log::ManualClock;

const SESSION: i64 = 10_000;
const REBALANCE: i64 = 30_000;

struct Fixture {
    clock: ManualClock,
    coordinator: GroupCoordinator,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    };
    let store = Arc::new(FileOffsetStore::open(dir.path()).unwrap());
    let coordinator = GroupCoordinator::new(config, Arc::new(clock.clone()), store);
    Fixture {
        clock,
        coordinator,
        _dir: dir,
    }
}

fn request(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        instance_id: instance.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
            .collect(),
        require_known_member_id: true,
    }
}

/// The reply if it is ready now.
fn ready<T: std::fmt::Debug>(reply: &mut Reply<T>) -> Option<Result<T, BrokerError>> {
    match reply {
        Reply::Now(r) => Some(std::mem::replace(
            r,
            Err(BrokerError::InvalidRequest("taken".into())),
        )),
        Reply::Later(rx) => rx.try_recv().ok(),
    }
}

/// A new member: MEMBER_ID_REQUIRED first, then the real join (left pending).
fn join_new(c: &GroupCoordinator, protocols: &[&str]) -> (String, Reply<JoinResponse>) {
    let mut first = c.join(request("", None, protocols));
    let id = match ready(&mut first) {
        Some(Err(BrokerError::MemberIdRequired(id))) => id,
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    };
    (id.clone(), c.join(request(&id, None, protocols)))
}

fn sync_all(c: &GroupCoordinator, generation: i32, leader: &str, members: &[&str]) -> Vec<Bytes> {
    let mut replies: Vec<_> = members
        .iter()
        .filter(|m| **m != leader)
        .map(|m| c.sync("g", generation, m, None, (None, None), vec![]))
        .collect();
    let assignments = members
        .iter()
        .map(|m| (m.to_string(), Bytes::from(format!("assign-{m}"))))
        .collect();
    let mut leader_reply = c.sync("g", generation, leader, None, (None, None), assignments);
    replies.push(c.sync("g", generation, leader, None, (None, None), vec![]));
    let mut out = vec![ready(&mut leader_reply).unwrap().unwrap().assignment];
    for r in &mut replies {
        out.push(ready(r).unwrap().unwrap().assignment);
    }
    out
}

#[test]
fn members_join_sync_and_rebalance_when_another_joins() {
    let f = fixture();
    let c = &f.coordinator;
    let (a, mut ja) = join_new(c, &["range", "roundrobin"]);
    let a_join = ready(&mut ja)
        .expect("a lone member completes the join")
        .unwrap();
    assert_eq!(a_join.generation_id, 1);
    assert_eq!(a_join.leader, a);
    assert_eq!(a_join.protocol_name.as_deref(), Some("range"));
    assert_eq!(a_join.members.len(), 1);
    let got = sync_all(c, 1, &a, &[&a]);
    assert_eq!(got[0], Bytes::from(format!("assign-{a}")));
    assert_eq!(c.describe("g").unwrap().state, "Stable");
    c.heartbeat("g", 1, &a, None).unwrap();

    // A second member prefers roundrobin; only common protocols count, votes decide.
    let (b, mut jb) = join_new(c, &["roundrobin", "range"]);
    assert!(ready(&mut jb).is_none(), "b waits for a to rejoin");
    assert!(matches!(
        c.heartbeat("g", 1, &a, None),
        Err(BrokerError::RebalanceInProgress(_))
    ));
    let mut ja = c.join(request(&a, None, &["range", "roundrobin"]));
    let (ra, rb) = (
        ready(&mut ja).unwrap().unwrap(),
        ready(&mut jb).unwrap().unwrap(),
    );
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!(ra.leader, a, "the leader stays");
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty(), "only the leader sees the members");
    assert!(matches!(
        c.heartbeat("g", 1, &a, None),
        Err(BrokerError::IllegalGeneration(_))
    ));
    // Commits of the new generation are refused until the assignment is in.
    assert!(matches!(
        c.check_commit("g", 2, &b, None),
        Err(BrokerError::RebalanceInProgress(_))
    ));
    sync_all(c, 2, &a, &[&a, &b]);
    c.check_commit("g", 2, &b, None).unwrap();
    let d = c.describe("g").unwrap();
    assert_eq!(d.members.len(), 2);
    assert!(!d.protocol.is_empty());
}

#[test]
fn an_expired_session_or_a_leave_rebalances_the_rest() {
    let f = fixture();
    let c = &f.coordinator;
    let (a, mut ja) = join_new(c, &["range"]);
    ready(&mut ja).unwrap().unwrap();
    let (b, mut jb) = join_new(c, &["range"]);
    let mut ja = c.join(request(&a, None, &["range"]));
    ready(&mut ja).unwrap().unwrap();
    ready(&mut jb).unwrap().unwrap();
    sync_all(c, 2, &a, &[&a, &b]);

    // b heartbeats, a goes silent: a's session expires.
    f.clock.advance(SESSION - 1);
    c.heartbeat("g", 2, &b, None).unwrap();
    f.clock.advance(2);
    c.tick();
    assert_eq!(c.describe("g").unwrap().state, "PreparingRebalance");
    let mut jb = c.join(request(&b, None, &["range"]));
    let rb = ready(&mut jb).unwrap().unwrap();
    assert_eq!((rb.generation_id, rb.leader.as_str()), (3, b.as_str()));
    assert!(matches!(
        c.heartbeat("g", 3, &a, None),
        Err(BrokerError::UnknownMemberId(_))
    ));
    sync_all(c, 3, &b, &[&b]);

    // The last member leaves: the group is empty.
    let results = c.leave("g", &[(b.clone(), None)]).unwrap();
    assert!(results[0].is_ok());
    let d = c.describe("g").unwrap();
    assert_eq!(d.state, "Empty");
    assert!(d.members.is_empty());
    // Without committed offsets an empty group goes away; the rebalances it had still count.
    c.tick();
    assert!(c.describe("g").is_none());
    let stats = c.stats();
    assert_eq!((stats.rebalances, stats.members), (4, 0));
}

#[test]
fn a_member_that_does_not_rejoin_in_time_is_dropped() {
    let f = fixture();
    let c = &f.coordinator;
    let (a, mut ja) = join_new(c, &["range"]);
    ready(&mut ja).unwrap().unwrap();
    sync_all(c, 1, &a, &[&a]);
    let (_b, mut jb) = join_new(c, &["range"]);
    // a keeps heartbeating (it is told to rejoin) but never does: max.poll.interval.ms.
    for _ in 0..4 {
        f.clock.advance(REBALANCE / 4);
        let _ = c.heartbeat("g", 1, &a, None);
        c.tick();
    }
    let rb = ready(&mut jb).unwrap().unwrap();
    assert_eq!(rb.generation_id, 2);
    assert_eq!(c.describe("g").unwrap().members.len(), 1);
}

#[test]
fn a_static_member_restarting_keeps_its_assignment_without_a_rebalance() {
    let f = fixture();
    let c = &f.coordinator;
    let mut j = c.join(request("", Some("pod-0"), &["range"]));
    let first = ready(&mut j).unwrap().unwrap();
    let (other, mut jo) = join_new(c, &["range"]);
    let mut j = c.join(request(&first.member_id, Some("pod-0"), &["range"]));
    ready(&mut j).unwrap().unwrap();
    ready(&mut jo).unwrap().unwrap();
    sync_all(c, 2, &first.member_id, &[&first.member_id, &other]);

    // The process restarts: a new join without a member id but with the same instance id, and
    // new metadata (as sticky assignors send) for the same protocol.
    let mut restarted = request("", Some("pod-0"), &["range"]);
    restarted.protocols[0].1 = Bytes::from_static(b"new metadata");
    let mut j = c.join(restarted);
    let again = ready(&mut j).expect("answered at once").unwrap();
    assert_ne!(again.member_id, first.member_id);
    assert_eq!(again.generation_id, 2, "no rebalance");
    assert_eq!(c.describe("g").unwrap().state, "Stable");
    let mut s = c.sync(
        "g",
        2,
        &again.member_id,
        Some("pod-0"),
        (None, None),
        vec![],
    );
    assert_eq!(
        ready(&mut s).unwrap().unwrap().assignment,
        Bytes::from(format!("assign-{}", first.member_id))
    );
    c.heartbeat("g", 2, &other, None).unwrap();
    // The old incarnation is fenced.
    assert!(matches!(
        c.heartbeat("g", 2, &first.member_id, Some("pod-0")),
        Err(BrokerError::FencedInstanceId(_))
    ));
}

#[test]
fn bad_joins_get_the_usual_errors() {
    let f = fixture();
    let c = &f.coordinator;
    let mut r = request("", None, &["range"]);
    r.session_timeout_ms = 10;
    assert!(matches!(
        ready(&mut c.join(r)),
        Some(Err(BrokerError::InvalidSessionTimeout(_)))
    ));
    let mut r = request("", None, &["range"]);
    r.group_id = String::new();
    assert!(matches!(
        ready(&mut c.join(r)),
        Some(Err(BrokerError::InvalidGroupId(_)))
    ));
    assert!(matches!(
        ready(&mut c.join(request("nobody", None, &["range"]))),
        Some(Err(BrokerError::UnknownMemberId(_)))
    ));
    let (_a, mut ja) = join_new(c, &["range"]);
    ready(&mut ja).unwrap().unwrap();
    let mut r = request("", None, &["other"]);
    r.require_known_member_id = false;
    assert!(matches!(
        ready(&mut c.join(r)),
        Some(Err(BrokerError::InconsistentGroupProtocol(_)))
    ));
    assert!(matches!(
        c.delete_group("g"),
        Err(BrokerError::NonEmptyGroup(_))
    ));
    assert!(matches!(
        c.delete_group("nope"),
        Err(BrokerError::GroupIdNotFound(_))
    ));
}

#[test]
fn simple_commits_create_an_empty_group_and_survive_until_deleted() {
    let f = fixture();
    let c = &f.coordinator;
    c.check_commit("manual", -1, "", None).unwrap();
    let off = CommittedOffset {
        offset: 42,
        leader_epoch: 0,
        metadata: "m".into(),
        commit_timestamp: c.now_ms(),
    };
    c.store_offsets("manual", &[(("t".into(), 0), off.clone())])
        .unwrap();
    c.tick();
    assert_eq!(c.describe("manual").unwrap().state, "Empty");
    assert_eq!(c.committed("manual", &("t".into(), 0)), Some(off));
    assert!(matches!(
        c.check_commit("manual", 3, "someone", None),
        Err(BrokerError::UnknownMemberId(_))
    ));
    c.delete_group("manual").unwrap();
    assert!(c.committed("manual", &("t".into(), 0)).is_none());
    assert!(c.describe("manual").is_none());
}

#[test]
fn offsets_of_a_long_empty_group_expire_and_deleted_topics_are_forgotten() {
    let f = fixture();
    let c = &f.coordinator;
    let commit = |group: &str, topic: &str| {
        c.check_commit(group, -1, "", None).unwrap();
        let o = CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: c.now_ms(),
        };
        c.store_offsets(group, &[((topic.into(), 0), o)]).unwrap();
    };
    commit("old", "t");
    commit("kept", "t");
    commit("kept", "gone");
    let retention = GroupConfig::default().offsets_retention_minutes * 60_000;
    f.clock.advance(retention / 2);
    commit("kept", "t"); // recommitted: younger than the retention
    f.clock.advance(retention / 2 + 1);
    c.tick();
    assert!(c.committed("old", &("t".into(), 0)).is_none());
    assert!(
        c.describe("old").is_none(),
        "an empty group without offsets goes away"
    );
    assert!(c.committed("kept", &("t".into(), 0)).is_some());
    assert!(
        c.committed("kept", &("gone".into(), 0)).is_none(),
        "old offset of the group expired"
    );
    commit("kept", "gone");
    c.forget_topic("gone");
    assert!(c.committed("kept", &("gone".into(), 0)).is_none());
    assert!(c.committed("kept", &("t".into(), 0)).is_some());
}

#[test]
fn a_new_group_survives_ticks_between_member_id_required_and_the_rejoin() {
    let f = fixture();
    let c = &f.coordinator;
    let mut first = c.join(request("", None, &["range"]));
    let Some(Err(BrokerError::MemberIdRequired(id))) = ready(&mut first) else {
        panic!("expected MEMBER_ID_REQUIRED");
    };
    f.clock.advance(100);
    c.tick();
    let mut again = c.join(request(&id, None, &["range"]));
    assert_eq!(ready(&mut again).unwrap().unwrap().generation_id, 1);
}

#[test]
fn a_static_member_that_misses_a_rebalance_keeps_its_place_until_its_session_ends() {
    let f = fixture();
    let c = &f.coordinator;
    let mut j = c.join(request("", Some("pod-0"), &["range"]));
    let s0 = ready(&mut j).unwrap().unwrap();
    sync_all(c, 1, &s0.member_id, &[&s0.member_id]);
    // Another member joins while pod-0 is restarting and never rejoins in time.
    let (b, mut jb) = join_new(c, &["range"]);
    f.clock.advance(REBALANCE);
    c.heartbeat("g", 1, &s0.member_id, None).ok();
    c.tick();
    let rb = ready(&mut jb).unwrap().unwrap();
    assert_eq!(rb.leader, b, "the member that is here leads");
    assert_eq!(rb.members.len(), 2, "pod-0 is still a member");
    // pod-0 comes back with a new process: it takes its place, no new member appears.
    let mut back = c.join(request("", Some("pod-0"), &["range"]));
    let _ = ready(&mut back);
    assert_eq!(c.describe("g").unwrap().members.len(), 2);
}

#[test]
fn followers_are_not_left_waiting_when_the_leader_never_syncs() {
    let f = fixture();
    let c = &f.coordinator;
    let (a, mut ja) = join_new(c, &["range"]);
    ready(&mut ja).unwrap().unwrap();
    sync_all(c, 1, &a, &[&a]);
    let (b, mut jb) = join_new(c, &["range"]);
    let mut ja = c.join(request(&a, None, &["range"]));
    ready(&mut ja).unwrap().unwrap();
    ready(&mut jb).unwrap().unwrap();
    // b (a follower) syncs; a (the leader) keeps heartbeating but never syncs.
    let mut sb = c.sync("g", 2, &b, None, (None, None), vec![]);
    assert!(ready(&mut sb).is_none());
    for _ in 0..4 {
        f.clock.advance(REBALANCE / 4 + 1);
        let _ = c.heartbeat("g", 2, &a, None);
        c.tick();
    }
    assert!(
        matches!(
            ready(&mut sb),
            Some(Err(BrokerError::RebalanceInProgress(_)))
        ),
        "the follower is told to rejoin"
    );
    assert!(
        c.describe("g")
            .unwrap()
            .members
            .iter()
            .all(|m| m.member_id != a)
    );
}

#[test]
fn a_stale_commit_during_completing_rebalance_gets_illegal_generation() {
    let f = fixture();
    let c = &f.coordinator;
    let (a, mut ja) = join_new(c, &["range"]);
    ready(&mut ja).unwrap().unwrap();
    sync_all(c, 1, &a, &[&a]);
    let (_b, mut jb) = join_new(c, &["range"]);
    let mut ja = c.join(request(&a, None, &["range"]));
    ready(&mut ja).unwrap().unwrap();
    ready(&mut jb).unwrap().unwrap();
    assert!(matches!(
        c.check_commit("g", 1, &a, None),
        Err(BrokerError::IllegalGeneration(_))
    ));
    assert!(matches!(
        c.check_commit("g", 2, "stranger", None),
        Err(BrokerError::UnknownMemberId(_))
    ));
    assert!(matches!(
        c.check_commit("g", 2, &a, None),
        Err(BrokerError::RebalanceInProgress(_))
    ));
}
