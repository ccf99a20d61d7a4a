//! Classic consumer groups with librdkafka: the `rdkafka` crate (librdkafka 2.12) and Debian's
//! `kcat -G` (librdkafka 2.0). Members run in their own threads and poll like applications do;
//! every test checks that each record is consumed exactly once across the group, through joins,
//! leaves, static rejoins, poll timeouts and a `kill -9` of the broker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use sediment_tests::kafka::{admin, create_topic, producer};
use sediment_tests::{Broker, BrokerOptions, run_with_timeout, wait_for};

const WAIT: Duration = Duration::from_secs(30);
/// The broker's minimum session timeout.
const SESSION_TIMEOUT_MS: &str = "6000";

/// A broker that starts a new group's first rebalance at once instead of after 3 s.
fn start_broker() -> Broker {
    Broker::start_with(
        BrokerOptions::default().env("SEDIMENT_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
    )
}

/// Settings of a group member: manual synchronous commits, start at the earliest offset.
fn member_config(
    bootstrap: &str,
    group: &str,
    client_id: &str,
    extra: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000")
        .set("group.id", group)
        .set("client.id", client_id)
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("heartbeat.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

/// One record as a member saw it.
#[derive(Debug, Clone)]
struct Consumed {
    member: String,
    partition: i32,
    offset: i64,
    value: String,
}

/// What all members of a test consumed, and every error they met.
#[derive(Debug, Default)]
struct Journal {
    consumed: Mutex<Vec<Consumed>>,
    errors: Mutex<Vec<String>>,
}

impl Journal {
    fn consumed(&self) -> Vec<Consumed> {
        self.consumed.lock().unwrap().clone()
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Number of distinct values consumed.
    fn distinct(&self) -> usize {
        self.consumed()
            .iter()
            .map(|c| c.value.clone())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Waits until `expected` values were all consumed, then a little longer for stragglers
    /// (a second delivery would show up then), and checks each was consumed exactly once.
    fn expect_exactly_once(&self, expected: &[String], timeout: Duration) {
        let expected_set: BTreeSet<&String> = expected.iter().collect();
        let done = wait_for(timeout, || {
            let seen: BTreeSet<String> = self.consumed().into_iter().map(|c| c.value).collect();
            expected_set.iter().all(|v| seen.contains(*v)).then_some(())
        });
        std::thread::sleep(Duration::from_millis(1500));
        let consumed = self.consumed();
        let mut by_value: HashMap<&str, Vec<&Consumed>> = HashMap::new();
        for c in &consumed {
            by_value.entry(c.value.as_str()).or_default().push(c);
        }
        let missing: Vec<&String> = expected
            .iter()
            .filter(|v| !by_value.contains_key(v.as_str()))
            .collect();
        let duplicates: Vec<&Vec<&Consumed>> = by_value.values().filter(|v| v.len() > 1).collect();
        let unexpected: Vec<&&str> = by_value
            .keys()
            .filter(|v| !expected_set.contains(&v.to_string()))
            .collect();
        assert!(
            done.is_some() && missing.is_empty() && duplicates.is_empty() && unexpected.is_empty(),
            "consumed {} records for {} expected: {} missing (first: {:?}), {} consumed more \
             than once (first: {:?}), {} unexpected (first: {:?}); member errors: {:?}",
            consumed.len(),
            expected.len(),
            missing.len(),
            missing.first(),
            duplicates.len(),
            duplicates.first(),
            unexpected.len(),
            unexpected.first(),
            self.errors()
        );
        // Within a partition, offsets only grow (across members too: the next owner starts where
        // the last one committed).
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for c in &consumed {
            if let Some(prev) = last.insert(c.partition, c.offset) {
                assert!(
                    c.offset > prev,
                    "partition {} went back from offset {prev} to {} ({})",
                    c.partition,
                    c.offset,
                    c.member
                );
            }
        }
    }
}

/// A rebalance callback as a member saw it.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Assign(BTreeSet<i32>),
    Revoke(BTreeSet<i32>),
    Error(String),
}

fn partitions_of(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Records every rebalance callback.
struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl ClientContext for Recorder {}

impl ConsumerContext for Recorder {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let e = match rebalance {
            Rebalance::Assign(tpl) => Event::Assign(partitions_of(tpl)),
            Rebalance::Revoke(tpl) => Event::Revoke(partitions_of(tpl)),
            Rebalance::Error(e) => Event::Error(e.to_string()),
        };
        self.events.lock().unwrap().push(e);
    }
}

/// A group member polling in its own thread: it records each record in the journal and commits
/// it synchronously before polling again.
struct Member {
    name: String,
    stop: Arc<AtomicBool>,
    stall: Arc<AtomicBool>,
    assignment: Arc<Mutex<BTreeSet<i32>>>,
    events: Arc<Mutex<Vec<Event>>>,
    handle: Option<JoinHandle<()>>,
}

impl Member {
    fn start(config: ClientConfig, name: &str, topic: &str, journal: &Arc<Journal>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stall = Arc::new(AtomicBool::new(false));
        let assignment = Arc::new(Mutex::new(BTreeSet::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let handle = {
            let (stop, stall, assignment, events) = (
                Arc::clone(&stop),
                Arc::clone(&stall),
                Arc::clone(&assignment),
                Arc::clone(&events),
            );
            let journal = Arc::clone(journal);
            let name = name.to_string();
            let topic = topic.to_string();
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let consumer: BaseConsumer<Recorder> = config
                        .create_with_context(Recorder { events })
                        .expect("consumer");
                    consumer.subscribe(&[&topic]).expect("subscribe");
                    while !stop.load(Ordering::SeqCst) {
                        if stall.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        match consumer.poll(Duration::from_millis(100)) {
                            Some(Ok(m)) => {
                                let value = m
                                    .payload()
                                    .map(|p| String::from_utf8_lossy(p).into_owned())
                                    .unwrap_or_default();
                                journal.consumed.lock().unwrap().push(Consumed {
                                    member: name.clone(),
                                    partition: m.partition(),
                                    offset: m.offset(),
                                    value,
                                });
                                if let Err(e) = consumer.commit_message(&m, CommitMode::Sync) {
                                    journal.errors.lock().unwrap().push(format!(
                                        "{name}: commit of {}@{}: {e}",
                                        m.partition(),
                                        m.offset()
                                    ));
                                }
                            }
                            Some(Err(e)) => journal
                                .errors
                                .lock()
                                .unwrap()
                                .push(format!("{name}: poll: {e}")),
                            None => {}
                        }
                        if let Ok(tpl) = consumer.assignment() {
                            *assignment.lock().unwrap() = partitions_of(&tpl);
                        }
                    }
                    // Dropping closes the consumer: it leaves the group (unless static).
                    drop(consumer);
                })
                .expect("spawn member")
        };
        Self {
            name: name.to_string(),
            stop,
            stall,
            assignment,
            events,
            handle: Some(handle),
        }
    }

    fn assignment(&self) -> BTreeSet<i32> {
        self.assignment.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Stops polling for good; the consumer stays open (and keeps heartbeating) until `close`.
    fn stall(&self) {
        self.stall.store(true, Ordering::SeqCst);
    }

    /// Closes the consumer and waits for its thread.
    fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.handle.take().expect("running");
        let deadline = Instant::now() + WAIT;
        while !handle.is_finished() {
            assert!(
                Instant::now() < deadline,
                "{} did not close within {WAIT:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        handle.join().expect("member thread");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // On a failed test the thread is left to finish on its own.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Waits until the members' assignments are disjoint, cover `0..partitions`, and have the
/// sizes `sizes` (in member order).
fn wait_for_split(members: &[&Member], partitions: i32, sizes: &[usize]) -> Vec<BTreeSet<i32>> {
    let got = wait_for(WAIT, || {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let lens: Vec<usize> = sets.iter().map(BTreeSet::len).collect();
        (union == (0..partitions).collect() && total == partitions as usize && lens == sizes)
            .then_some(sets)
    });
    got.unwrap_or_else(|| {
        panic!(
            "assignment never became {sizes:?} of {partitions} partitions: {:?}",
            members
                .iter()
                .map(|m| (m.name.clone(), m.assignment(), m.events()))
                .collect::<Vec<_>>()
        )
    })
}

/// Produces `v-{i}` for every `i` in `range` to partition `i % partitions`, all acknowledged.
async fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let p = producer(bootstrap, &[("acks", "all"), ("linger.ms", "5")]);
    let values: Vec<String> = range.clone().map(|i| format!("v-{i}")).collect();
    let futures: Vec<_> = range
        .zip(&values)
        .map(|(i, v)| {
            p.send_result(
                FutureRecord::<(), String>::to(topic)
                    .partition(i as i32 % partitions)
                    .payload(v),
            )
            .expect("enqueue")
        })
        .collect();
    for f in futures {
        f.await.expect("delivery future").expect("delivered");
    }
    values
}

#[tokio::test(flavor = "multi_thread")]
async fn three_members_split_six_partitions_and_consume_exactly_once_through_rebalances() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let (topic, group) = ("orders", "billing");
    create_topic(&b, topic, 6, &[]).await;
    let journal = Arc::new(Journal::default());
    let cfg = |name: &str| member_config(&b, group, name, &[]);

    let a = Member::start(cfg("a"), "a", topic, &journal);
    let m_b = Member::start(cfg("b"), "b", topic, &journal);
    let c = Member::start(cfg("c"), "c", topic, &journal);
    wait_for_split(&[&a, &m_b, &c], 6, &[2, 2, 2]);

    let mut expected = produce(&b, topic, 6, 0..300).await;
    // C leaves while the group is busy consuming: A and B take its partitions over from its
    // last commit.
    wait_for(WAIT, || (journal.distinct() >= 100).then_some(())).expect("consumption started");
    c.close();
    wait_for_split(&[&a, &m_b], 6, &[3, 3]);
    expected.extend(produce(&b, topic, 6, 300..600).await);
    journal.expect_exactly_once(&expected, WAIT);
    assert!(
        journal.consumed().iter().any(|r| r.member == "c"),
        "c consumed before it left"
    );

    // A new member joins: three-way split again, and still exactly once.
    let d = Member::start(cfg("d"), "d", topic, &journal);
    wait_for_split(&[&a, &m_b, &d], 6, &[2, 2, 2]);
    expected.extend(produce(&b, topic, 6, 600..900).await);
    journal.expect_exactly_once(&expected, WAIT);
    assert!(journal.consumed().iter().any(|r| r.member == "d"));
    a.close();
    m_b.close();
    d.close();

    // A member of a new generation resumes from the committed offsets: it reads only what was
    // produced after, nothing twice.
    let fresh = Arc::new(Journal::default());
    let e = Member::start(cfg("e"), "e", topic, &fresh);
    wait_for_split(&[&e], 6, &[6]);
    let new = produce(&b, topic, 6, 900..960).await;
    fresh.expect_exactly_once(&new, WAIT);
    e.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_offsets_and_metadata_survive_kill_9() {
    let mut broker = start_broker();
    let (topic, group) = ("ledger", "auditors");
    create_topic(&broker.kafka, topic, 6, &[]).await;
    let first = produce(&broker.kafka, topic, 6, 0..120).await;

    // One member consumes everything, committing each record.
    let consumer: BaseConsumer = member_config(&broker.kafka, group, "auditor-1", &[])
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < first.len() {
        assert!(Instant::now() < deadline, "consumed {} of 120", seen.len());
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("poll");
            assert!(seen.insert(String::from_utf8_lossy(m.payload().unwrap()).into_owned()));
            consumer
                .commit_message(&m, CommitMode::Sync)
                .expect("commit");
        }
    }
    // Then commits its checkpoint with metadata: partition 0 five records back, the others at
    // their end (20 records each).
    let committed_at = |p: i32| if p == 0 { 15 } else { 20 };
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition(topic, p)
            .set_metadata(format!("checkpoint p{p} by auditor-1"));
        tpl.set_partition_offset(topic, p, Offset::Offset(committed_at(p)))
            .unwrap();
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .expect("commit with metadata");
    let check = |c: &TopicPartitionList, when: &str| {
        for p in 0..6 {
            let e = c.find_partition(topic, p).expect("partition listed");
            assert_eq!(
                e.offset(),
                Offset::Offset(committed_at(p)),
                "{when}: partition {p}"
            );
            assert_eq!(
                e.metadata(),
                format!("checkpoint p{p} by auditor-1"),
                "{when}: metadata of {p}"
            );
        }
    };
    check(
        &consumer.committed(WAIT).expect("committed"),
        "before the kill",
    );
    drop(consumer);

    broker.kill9();
    broker.restart();
    let b = broker.kafka.clone();

    // A fresh consumer sees the same commits, before and after joining.
    let consumer: BaseConsumer = member_config(&b, group, "auditor-2", &[]).create().unwrap();
    let mut all = TopicPartitionList::new();
    for p in 0..6 {
        all.add_partition(topic, p);
    }
    check(
        &consumer
            .committed_offsets(all, WAIT)
            .expect("committed offsets"),
        "after restart, before joining",
    );
    consumer.subscribe(&[topic]).unwrap();
    let mut got: Vec<(i32, i64, String)> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) < 6 {
        assert!(Instant::now() < deadline, "never assigned");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("poll");
            got.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap()).into_owned(),
            ));
        }
    }
    check(
        &consumer.committed(WAIT).expect("committed"),
        "after joining",
    );

    // It resumes exactly there: partition 0's last five, then what is produced now.
    let later = produce(&b, topic, 6, 120..180).await;
    let mut expected: BTreeSet<String> = first
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 6 == 0 && i / 6 >= 15)
        .map(|(_, v)| v.clone())
        .collect();
    expected.extend(later);
    let deadline = Instant::now() + WAIT;
    while got.len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {} after the restart: {got:?}",
            got.len(),
            expected.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("poll");
            got.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap()).into_owned(),
            ));
        }
    }
    // Nothing beyond that arrives.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("poll");
            got.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap()).into_owned(),
            ));
        }
    }
    let values: BTreeSet<String> = got.iter().map(|(_, _, v)| v.clone()).collect();
    assert_eq!(values.len(), got.len(), "nothing twice: {got:?}");
    assert_eq!(values, expected, "resumed exactly at the committed offsets");
    let p0: Vec<i64> = got
        .iter()
        .filter(|r| r.0 == 0)
        .map(|r| r.1)
        .take(5)
        .collect();
    assert_eq!(
        p0,
        vec![15, 16, 17, 18, 19],
        "partition 0 resumes at its committed offset"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cooperative_sticky_keeps_owned_partitions_during_a_join() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let (topic, group) = ("coop", "coop-group");
    create_topic(&b, topic, 6, &[]).await;
    let journal = Arc::new(Journal::default());
    let cfg = |name: &str| {
        member_config(
            &b,
            group,
            name,
            &[("partition.assignment.strategy", "cooperative-sticky")],
        )
    };
    let a = Member::start(cfg("coop-a"), "coop-a", topic, &journal);
    wait_for_split(&[&a], 6, &[6]);
    let mut expected = produce(&b, topic, 6, 0..300).await;
    journal.expect_exactly_once(&expected, WAIT);

    let second = Member::start(cfg("coop-b"), "coop-b", topic, &journal);
    let sets = wait_for_split(&[&a, &second], 6, &[3, 3]);
    expected.extend(produce(&b, topic, 6, 300..600).await);
    journal.expect_exactly_once(&expected, WAIT);

    // A never gave up everything: one incremental revocation of the three partitions B now
    // owns, and no revocation of the ones it kept.
    let events = a.events();
    let all: BTreeSet<i32> = (0..6).collect();
    assert_eq!(
        events.first(),
        Some(&Event::Assign(all.clone())),
        "{events:?}"
    );
    let revoked: BTreeSet<i32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Revoke(p) => Some(p.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        revoked, sets[1],
        "A gave up exactly B's partitions: {events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, Event::Revoke(p) if p.len() > 3)),
        "eager revocation seen: {events:?}"
    );
    assert!(
        events.iter().all(|e| !matches!(e, Event::Error(_))),
        "{events:?}"
    );
    assert_eq!(sets[0], &all - &sets[1]);
    a.close();
    second.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn static_member_rejoins_with_its_partitions_and_no_rebalance() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let (topic, group) = ("static", "static-group");
    create_topic(&b, topic, 6, &[]).await;
    let journal = Arc::new(Journal::default());
    let dynamic = Member::start(member_config(&b, group, "dyn", &[]), "dyn", topic, &journal);
    wait_for_split(&[&dynamic], 6, &[6]);
    let static_cfg = || member_config(&b, group, "static", &[("group.instance.id", "static-1")]);
    let first = Member::start(static_cfg(), "static", topic, &journal);
    let sets = wait_for_split(&[&dynamic, &first], 6, &[3, 3]);
    let mut expected = produce(&b, topic, 6, 0..120).await;
    journal.expect_exactly_once(&expected, WAIT);
    let dyn_events = dynamic.events();

    // The static member goes away (a static member sends no LeaveGroup) and comes back within
    // the session timeout.
    let closed = Instant::now();
    first.close();
    let again = Member::start(static_cfg(), "static-again", topic, &journal);
    let got = wait_for(Duration::from_secs(5), || {
        let a = again.assignment();
        (!a.is_empty()).then_some(a)
    })
    .expect("the static member gets an assignment back within the session timeout");
    assert_eq!(got, sets[1], "same partitions as before");
    // Well past the old instance's session timeout, nothing has moved.
    let past_timeout = closed + Duration::from_secs(9);
    std::thread::sleep(past_timeout.saturating_duration_since(Instant::now()));
    assert_eq!(
        dynamic.events(),
        dyn_events,
        "the other member saw no rebalance"
    );
    assert_eq!(dynamic.assignment(), sets[0]);
    assert_eq!(again.assignment(), sets[1]);
    expected.extend(produce(&b, topic, 6, 120..240).await);
    journal.expect_exactly_once(&expected, WAIT);
    assert!(
        journal
            .consumed()
            .iter()
            .any(|r| r.member == "static-again"),
        "the rejoined member consumes"
    );
    again.close();
    dynamic.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn member_that_stops_polling_is_removed_after_max_poll_interval() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let (topic, group) = ("slow", "slow-group");
    create_topic(&b, topic, 6, &[]).await;
    let journal = Arc::new(Journal::default());
    let healthy = Member::start(
        member_config(&b, group, "healthy", &[]),
        "healthy",
        topic,
        &journal,
    );
    wait_for_split(&[&healthy], 6, &[6]);
    let slow = Member::start(
        member_config(&b, group, "slow", &[("max.poll.interval.ms", "7000")]),
        "slow",
        topic,
        &journal,
    );
    wait_for_split(&[&healthy, &slow], 6, &[3, 3]);
    let mut expected = produce(&b, topic, 6, 0..120).await;
    journal.expect_exactly_once(&expected, WAIT);

    let stalled = Instant::now();
    slow.stall();
    let took = wait_for(WAIT, || {
        (healthy.assignment().len() == 6).then(|| stalled.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "the healthy member never got all partitions: {:?} {:?}",
            healthy.assignment(),
            healthy.events()
        )
    });
    assert!(
        took >= Duration::from_secs(5),
        "taken over after {took:?}, before max.poll.interval.ms"
    );
    expected.extend(produce(&b, topic, 6, 120..240).await);
    journal.expect_exactly_once(&expected, WAIT);
    let consumed = journal.consumed();
    assert!(
        consumed[120..].iter().all(|r| r.member == "healthy"),
        "only the healthy member consumed after the stall"
    );
    slow.close();
    healthy.close();
}

/// Runs kcat, failing on a non-zero exit; output as text.
fn kcat(args: &[&str]) -> String {
    let mut cmd = Command::new("kcat");
    cmd.args(args).stdin(std::process::Stdio::null());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60)).expect("kcat runs");
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kcat_balanced_consumer_reads_everything_once_and_resumes_from_its_commit() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    create_topic(&b, "kcat-g", 3, &[]).await;
    let first = produce(&b, "kcat-g", 3, 0..90).await;
    let run = |count: usize| {
        let count = count.to_string();
        kcat(&[
            "-b",
            &b,
            "-G",
            "kcat-group",
            "-X",
            "auto.offset.reset=earliest",
            "-X",
            &format!("session.timeout.ms={SESSION_TIMEOUT_MS}"),
            "-X",
            "broker.address.family=v4",
            "-q",
            "-e",
            "-c",
            &count,
            "-f",
            "%p %o %s\\n",
            "kcat-g",
        ])
    };
    let parse = |out: &str| -> Vec<(i32, i64, String)> {
        out.lines()
            .map(|l| {
                let mut f = l.splitn(3, ' ');
                (
                    f.next().unwrap().parse().unwrap(),
                    f.next().unwrap().parse().unwrap(),
                    f.next().unwrap().to_string(),
                )
            })
            .collect()
    };
    let got = parse(&run(first.len()));
    let values: BTreeSet<String> = got.iter().map(|r| r.2.clone()).collect();
    assert_eq!(got.len(), first.len(), "{got:?}");
    assert_eq!(values, first.iter().cloned().collect(), "every record once");
    for r in &got {
        let i: usize = r.2.trim_start_matches("v-").parse().unwrap();
        assert_eq!((r.0, r.1), ((i % 3) as i32, (i / 3) as i64), "{r:?}");
    }

    // The second run with the same group starts from the first run's commit.
    let second = produce(&b, "kcat-g", 3, 90..120).await;
    let got = parse(&run(second.len()));
    let values: Vec<String> = got.iter().map(|r| r.2.clone()).collect();
    let mut sorted = values.clone();
    sorted.sort();
    let mut expected = second.clone();
    expected.sort();
    assert_eq!(sorted, expected, "only the new records: {got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_are_listed_described_and_deleted() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let (topic, group) = ("listed-topic", "listed");
    create_topic(&b, topic, 6, &[]).await;
    let journal = Arc::new(Journal::default());
    let one = Member::start(
        member_config(&b, group, "lister-a", &[]),
        "lister-a",
        topic,
        &journal,
    );
    let two = Member::start(
        member_config(&b, group, "lister-b", &[]),
        "lister-b",
        topic,
        &journal,
    );
    wait_for_split(&[&one, &two], 6, &[3, 3]);
    let expected = produce(&b, topic, 6, 0..60).await;
    journal.expect_exactly_once(&expected, WAIT);

    let observer: BaseConsumer = member_config(&b, "observer", "observer", &[])
        .create()
        .unwrap();
    let list = observer
        .fetch_group_list(Some(group), WAIT)
        .expect("list groups");
    let g = list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .expect("group listed");
    assert_eq!(g.state(), "Stable");
    assert_eq!(g.protocol_type(), "consumer");
    assert!(!g.protocol().is_empty(), "an assignor was chosen");
    let clients: BTreeSet<&str> = g.members().iter().map(|m| m.client_id()).collect();
    assert_eq!(clients, BTreeSet::from(["lister-a", "lister-b"]));
    for m in g.members() {
        assert!(!m.id().is_empty());
        assert!(
            m.metadata().is_some_and(|x| !x.is_empty()),
            "subscription metadata"
        );
        assert!(m.assignment().is_some_and(|x| !x.is_empty()), "assignment");
    }
    let all = observer
        .fetch_group_list(None, WAIT)
        .expect("list all groups");
    assert!(all.groups().iter().any(|g| g.name() == group));

    // A group with members cannot be deleted.
    let a = admin(&b);
    let opts = AdminOptions::new().operation_timeout(Some(WAIT));
    let r = a
        .delete_groups(&[group], &opts)
        .await
        .expect("delete groups");
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::NonEmptyGroup,
        "{r:?}"
    );
    one.close();
    two.close();
    let empty = wait_for(WAIT, || {
        let l = observer.fetch_group_list(Some(group), WAIT).ok()?;
        l.groups()
            .iter()
            .any(|g| g.name() == group && g.state() == "Empty")
            .then_some(())
    });
    assert!(
        empty.is_some(),
        "the group becomes Empty once its members left"
    );
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition(topic, p);
    }
    let committed = observer_in(&b, group)
        .committed_offsets(tpl.clone(), WAIT)
        .unwrap();
    assert!(
        committed
            .elements()
            .iter()
            .all(|e| e.offset() == Offset::Offset(10)),
        "{committed:?}"
    );

    let r = a
        .delete_groups(&[group], &opts)
        .await
        .expect("delete groups");
    assert!(r[0].is_ok(), "{r:?}");
    let l = observer.fetch_group_list(Some(group), WAIT).expect("list");
    assert!(
        l.groups()
            .iter()
            .all(|g| g.name() != group || g.state() == "Dead"),
        "deleted group still listed"
    );
    let committed = observer_in(&b, group).committed_offsets(tpl, WAIT).unwrap();
    assert!(
        committed
            .elements()
            .iter()
            .all(|e| e.offset() == Offset::Invalid),
        "offsets deleted with the group: {committed:?}"
    );
    let r = a
        .delete_groups(&[group], &opts)
        .await
        .expect("delete groups");
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::GroupIdNotFound,
        "{r:?}"
    );
}

/// A consumer of `group` that never joins it, for reading its committed offsets.
fn observer_in(bootstrap: &str, group: &str) -> BaseConsumer {
    member_config(bootstrap, group, "offset-reader", &[])
        .create()
        .unwrap()
}
