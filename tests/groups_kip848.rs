//! The next-generation consumer group protocol (KIP-848, `group.protocol=consumer`) end to end:
//! librdkafka 2.12 (the `rdkafka` crate) members in threads of the test and confluent-kafka
//! members in child processes (`tests/python/group_kip848.py`) join, leave, crash and rejoin
//! while the broker computes the assignment and hands partitions over incrementally.
//!
//! Every member records what it does in one shared journal, in the order it happens: the
//! partitions its rebalance callbacks add and revoke, each record it processes (committed
//! synchronously before the next poll), and when it is gone (closed or SIGKILLed). The checks
//! replay that journal:
//! - each produced record is processed exactly once by the group as a whole, and within a
//!   partition offsets only go up, across members;
//! - a partition is added to a member only once its previous owner revoked it (or is gone), and
//!   every record is processed by the member owning its partition at that moment: no partition
//!   is ever consumed by two members at the same time.
//!
//! The broker runs with a 2 s heartbeat interval and a 6 s session timeout so that rebalances
//! and crash detection are quick. Not shorter: librdkafka 2.12 times a ConsumerGroupHeartbeat
//! out after one heartbeat interval and drops the late response, and the broker (as Kafka) sends
//! an assignment only when it changed or the request is a full one, so on a loaded machine a
//! 500 ms interval can leave a member never learning that it must revoke a partition.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_protocol::messages::consumer_group_describe_response::{Assignment, DescribedGroup};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, GroupId, ListGroupsRequest};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use sediment_tests::kafka::{create_topic, producer};
use sediment_tests::{Broker, BrokerOptions, RawClient, python, wait_for};
use serde_json::Value;

/// Longest wait for a rebalance or for a batch to be consumed.
const WAIT: Duration = Duration::from_secs(30);
const PARTITIONS: i32 = 6;
/// The broker's `group.consumer_session_timeout_ms` in these tests.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// The broker's `group.consumer_heartbeat_interval_ms` in these tests.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// A broker with a quick KIP-848 heartbeat (see the module docs) and session timeout.
fn start_broker() -> Broker {
    Broker::start_with(
        BrokerOptions::default()
            .env(
                "SEDIMENT_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS",
                &HEARTBEAT_INTERVAL.as_millis().to_string(),
            )
            .env(
                "SEDIMENT_GROUP_CONSUMER_SESSION_TIMEOUT_MS",
                &SESSION_TIMEOUT.as_millis().to_string(),
            )
            .env("RUST_LOG", "info,sediment_broker::group=debug"),
    )
}

/// Settings of a KIP-848 member: manual synchronous commits, start at the earliest offset.
/// The session timeout, heartbeat interval and assignor are the broker's business: librdkafka
/// refuses `session.timeout.ms`, `heartbeat.interval.ms` and `partition.assignment.strategy`
/// with `group.protocol=consumer`.
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
        .set("group.protocol", "consumer")
        .set("client.id", client_id)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // Consumer-group debug logs go to the journal, printed when a member hangs.
        .set("debug", "cgrp")
        .set_log_level(RDKafkaLogLevel::Debug);
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

/// Something a member did, in journal order.
#[derive(Debug, Clone)]
enum Entry {
    /// Processed (and then committed) one record.
    Record {
        member: String,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// A rebalance callback added partitions.
    Assign {
        member: String,
        partitions: BTreeSet<i32>,
    },
    /// A rebalance callback took partitions away (`lost`: without a chance to commit).
    Revoke {
        member: String,
        partitions: BTreeSet<i32>,
        lost: bool,
    },
    /// The member is closed or killed: it owns nothing any more.
    Gone { member: String },
    /// A step of the test.
    Note(String),
}

/// What all members of a test did, and every error they met. Entries carry the wall-clock
/// time they happened (seconds since the epoch): Python members report theirs through a pipe,
/// a little late, so the journal is ordered by that time, not by arrival.
#[derive(Debug)]
struct Journal {
    t0: f64,
    /// Bootstrap address (changes when the broker restarts) and group, for diagnostics.
    bootstrap: Mutex<String>,
    group: String,
    entries: Mutex<Vec<(f64, Entry)>>,
    errors: Mutex<Vec<String>>,
    /// librdkafka's log lines (`debug=cgrp`) of the rdkafka members: (time, member, line).
    client_logs: Mutex<Vec<(f64, String, String)>>,
}

/// Wall-clock time in seconds since the epoch.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// One processed record.
#[derive(Debug, Clone)]
struct Consumed {
    member: String,
    partition: i32,
    offset: i64,
    value: String,
}

impl Journal {
    fn new(bootstrap: &str, group: &str) -> Arc<Self> {
        Arc::new(Self {
            t0: now(),
            bootstrap: Mutex::new(bootstrap.to_string()),
            group: group.to_string(),
            entries: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            client_logs: Mutex::new(Vec::new()),
        })
    }

    fn push(&self, e: Entry) {
        let mut entries = self.entries.lock().unwrap();
        entries.push((now(), e));
    }

    /// Notes a step of the test in the history.
    fn note(&self, what: &str) {
        self.push(Entry::Note(what.to_string()));
    }

    fn set_bootstrap(&self, bootstrap: &str) {
        *self.bootstrap.lock().unwrap() = bootstrap.to_string();
    }

    /// The broker's view of the group (ConsumerGroupDescribe), the rebalance history and the
    /// tail of every rdkafka member's consumer-group log: what a failure message needs.
    fn diagnose(&self) -> String {
        let bootstrap = self.bootstrap.lock().unwrap().clone();
        let described = match std::panic::catch_unwind(|| describe_group(&bootstrap, &self.group)) {
            Ok(g) => {
                let mut out = format!(
                    "state {} epoch {} assignment epoch {} assignor {}\n",
                    g.group_state, g.group_epoch, g.assignment_epoch, g.assignor_name
                );
                for m in &g.members {
                    out.push_str(&format!(
                        "  {} ({}): epoch {}, assigned {:?}, target {:?}\n",
                        m.client_id,
                        m.member_id,
                        m.member_epoch,
                        partitions(&m.assignment),
                        partitions(&m.target_assignment)
                    ));
                }
                out
            }
            Err(_) => "ConsumerGroupDescribe failed".to_string(),
        };
        let members: BTreeSet<String> = self
            .client_logs
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m, _)| m.clone())
            .collect();
        let logs: String = members
            .iter()
            .map(|m| {
                format!(
                    "---- librdkafka log of {m} (last 60 lines):\n{}\n",
                    self.client_log_tail(m, 60)
                )
            })
            .collect();
        format!(
            "---- broker's view: {described}---- history:\n{}\n{logs}",
            self.history()
        )
    }

    fn push_at(&self, at: f64, e: Entry) {
        self.entries.lock().unwrap().push((at, e));
    }

    fn error(&self, e: String) {
        self.errors.lock().unwrap().push(e);
    }

    /// The last `n` librdkafka log lines of `member`, for failure messages.
    fn client_log_tail(&self, member: &str, n: usize) -> String {
        let logs = self.client_logs.lock().unwrap();
        let mine: Vec<String> = logs
            .iter()
            .filter(|(_, m, _)| m == member)
            .map(|(at, _, l)| format!("  {:7.3}s {l}", at - self.t0))
            .collect();
        mine[mine.len().saturating_sub(n)..].join("\n")
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Entries in time order, times relative to the journal's start.
    fn entries(&self) -> Vec<(f64, Entry)> {
        let mut v: Vec<(f64, Entry)> = self
            .entries
            .lock()
            .unwrap()
            .iter()
            .map(|(at, e)| (at - self.t0, e.clone()))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }

    /// Revocations of partitions that were lost rather than given up.
    fn lost(&self) -> Vec<(f64, Entry)> {
        self.entries()
            .into_iter()
            .filter(|(_, e)| matches!(e, Entry::Revoke { lost: true, .. }))
            .collect()
    }

    fn consumed(&self) -> Vec<Consumed> {
        self.entries()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Entry::Record {
                    member,
                    partition,
                    offset,
                    value,
                } => Some(Consumed {
                    member,
                    partition,
                    offset,
                    value,
                }),
                _ => None,
            })
            .collect()
    }

    /// The rebalance history (no records), for failure messages.
    fn history(&self) -> String {
        let day = self.t0 % 86400.0;
        let header = format!(
            "  (seconds since {:02}:{:02}:{:06.3} UTC, as in the broker log)",
            (day / 3600.0) as u32,
            (day % 3600.0 / 60.0) as u32,
            day % 60.0
        );
        let lines = self
            .entries()
            .into_iter()
            .filter(|(_, e)| !matches!(e, Entry::Record { .. }))
            .map(|(at, e)| match e {
                Entry::Note(n) => format!("  {at:7.3}s ---- {n}"),
                e => format!("  {at:7.3}s {e:?}"),
            });
        std::iter::once(header)
            .chain(lines)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Replays the journal: partitions change hands only after their owner revoked them or was
    /// gone, and records are processed only by the owner of their partition.
    fn check_ownership(&self) {
        let mut owner: BTreeMap<i32, String> = BTreeMap::new();
        let mut violations = Vec::new();
        for (at, e) in self.entries() {
            match &e {
                Entry::Assign { member, partitions } => {
                    for p in partitions {
                        if let Some(o) = owner.insert(*p, member.clone())
                            && &o != member
                        {
                            violations.push(format!(
                                "{at:.3}s: partition {p} added to {member} while {o} still owns it"
                            ));
                        }
                    }
                }
                Entry::Revoke {
                    member, partitions, ..
                } => {
                    for p in partitions {
                        if owner.get(p) == Some(member) {
                            owner.remove(p);
                        } else {
                            violations.push(format!(
                                "{at:.3}s: {member} gave up partition {p}, owned by {:?}",
                                owner.get(p)
                            ));
                        }
                    }
                }
                Entry::Record {
                    member,
                    partition,
                    offset,
                    ..
                } => {
                    if owner.get(partition) != Some(member) {
                        violations.push(format!(
                            "{at:.3}s: {member} processed {partition}@{offset} while {:?} owns it",
                            owner.get(partition)
                        ));
                    }
                }
                Entry::Gone { member } => owner.retain(|_, o| o != member),
                Entry::Note(_) => {}
            }
        }
        assert!(
            violations.is_empty(),
            "{} ownership violations, first ones: {:#?}\n{}",
            violations.len(),
            &violations[..violations.len().min(10)],
            self.diagnose()
        );
    }

    /// Waits until `expected` values were all consumed, then a little longer for stragglers
    /// (a second delivery would show up then), and checks each was consumed exactly once, that
    /// offsets only went up per partition, and that ownership was exclusive throughout.
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
             than once (first: {:?}), {} unexpected (first: {:?}); member errors: {:?}\n{}",
            consumed.len(),
            expected.len(),
            missing.len(),
            missing.first(),
            duplicates.len(),
            duplicates.first(),
            unexpected.len(),
            unexpected.first(),
            self.errors(),
            self.diagnose()
        );
        let mut last: BTreeMap<i32, (i64, &str)> = BTreeMap::new();
        for c in &consumed {
            if let Some((prev, by)) = last.insert(c.partition, (c.offset, &c.member)) {
                assert!(
                    c.offset > prev,
                    "partition {} went back from offset {prev} ({by}) to {} ({})\n{}",
                    c.partition,
                    c.offset,
                    c.member,
                    self.history()
                );
            }
        }
        self.check_ownership();
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// A group member whose current assignment the test can see.
trait Owner {
    fn name(&self) -> &str;
    fn assignment(&self) -> BTreeSet<i32>;
}

/// Journals every rebalance callback and client error of an rdkafka member.
struct Recorder {
    name: String,
    journal: Arc<Journal>,
}

impl ClientContext for Recorder {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.journal.client_logs.lock().unwrap().push((
            now(),
            self.name.clone(),
            format!("{level:?} {fac} {log_message}"),
        ));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.journal
            .error(format!("{}: client error {error}: {reason}", self.name));
    }
}

impl ConsumerContext for Recorder {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let member = self.name.clone();
        match rebalance {
            Rebalance::Assign(tpl) => self.journal.push(Entry::Assign {
                member,
                partitions: partitions_of(tpl),
            }),
            Rebalance::Revoke(tpl) => self.journal.push(Entry::Revoke {
                member,
                partitions: partitions_of(tpl),
                lost: consumer.assignment_lost(),
            }),
            Rebalance::Error(e) => self.journal.error(format!("{member}: rebalance: {e}")),
        }
    }
}

/// An rdkafka member polling in its own thread: it journals each record and commits it
/// synchronously before polling again.
struct Member {
    name: String,
    journal: Arc<Journal>,
    stop: Arc<AtomicBool>,
    assignment: Arc<Mutex<BTreeSet<i32>>>,
    handle: Option<JoinHandle<()>>,
}

impl Member {
    fn start(config: ClientConfig, name: &str, topic: &str, journal: &Arc<Journal>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let assignment = Arc::new(Mutex::new(BTreeSet::new()));
        let handle = {
            let (stop, assignment) = (Arc::clone(&stop), Arc::clone(&assignment));
            let journal = Arc::clone(journal);
            let name = name.to_string();
            let topic = topic.to_string();
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let consumer: BaseConsumer<Recorder> = config
                        .create_with_context(Recorder {
                            name: name.clone(),
                            journal: Arc::clone(&journal),
                        })
                        .expect("consumer");
                    consumer.subscribe(&[&topic]).expect("subscribe");
                    while !stop.load(Ordering::SeqCst) {
                        match consumer.poll(Duration::from_millis(100)) {
                            Some(Ok(m)) => {
                                let value = m
                                    .payload()
                                    .map(|p| String::from_utf8_lossy(p).into_owned())
                                    .unwrap_or_default();
                                journal.push(Entry::Record {
                                    member: name.clone(),
                                    partition: m.partition(),
                                    offset: m.offset(),
                                    value,
                                });
                                if let Err(e) = consumer.commit_message(&m, CommitMode::Sync) {
                                    journal.error(format!(
                                        "{name}: commit of {}@{}: {e}",
                                        m.partition(),
                                        m.offset()
                                    ));
                                }
                            }
                            Some(Err(e)) => journal.error(format!("{name}: poll: {e}")),
                            None => {}
                        }
                        if let Ok(tpl) = consumer.assignment() {
                            *assignment.lock().unwrap() = partitions_of(&tpl);
                        }
                    }
                    // Dropping closes the consumer: it revokes its partitions and leaves the
                    // group (member epoch -1).
                    drop(consumer);
                    assignment.lock().unwrap().clear();
                    journal.push(Entry::Gone { member: name });
                })
                .expect("spawn member")
        };
        Self {
            name: name.to_string(),
            journal: Arc::clone(journal),
            stop,
            assignment,
            handle: Some(handle),
        }
    }

    /// Closes the consumer and waits for its thread.
    fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.handle.take().expect("running");
        let deadline = Instant::now() + WAIT;
        while !handle.is_finished() {
            assert!(
                Instant::now() < deadline,
                "{} did not close within {WAIT:?}\n{}\nlibrdkafka log of {0} (last 150 lines):\n{}",
                self.name,
                self.journal.diagnose(),
                self.journal.client_log_tail(&self.name, 150)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        handle.join().expect("member thread");
    }
}

impl Owner for Member {
    fn name(&self) -> &str {
        &self.name
    }
    fn assignment(&self) -> BTreeSet<i32> {
        self.assignment.lock().unwrap().clone()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // On a failed test the thread is left to finish on its own.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What a Python member reported besides the journal entries.
#[derive(Debug, Default)]
struct PyState {
    assignment: BTreeSet<i32>,
    /// Partition -> next offset after the last processed record.
    processed: BTreeMap<i32, i64>,
    /// Partition -> highest committed offset.
    committed: BTreeMap<i32, i64>,
    closed: bool,
    other: Vec<String>,
    stderr: Vec<String>,
}

/// A confluent-kafka member: `tests/python/group_kip848.py` in a child process, its events fed
/// into the journal by a reader thread. Killed on drop.
struct PyMember {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    state: Arc<Mutex<PyState>>,
    reader: Option<JoinHandle<()>>,
    journal: Arc<Journal>,
}

impl PyMember {
    fn start(
        bootstrap: &str,
        topic: &str,
        group: &str,
        name: &str,
        journal: &Arc<Journal>,
    ) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("python")
            .join("group_kip848.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args([bootstrap, topic, group, name, "--debug"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {} {}: {e}", python(), script.display()));
        let state = Arc::new(Mutex::new(PyState::default()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let reader = {
            let (state, journal, name) =
                (Arc::clone(&state), Arc::clone(journal), name.to_string());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        state.lock().unwrap().other.push(line);
                        continue;
                    };
                    let parts = || -> BTreeSet<i32> {
                        v["partitions"]
                            .as_array()
                            .expect("partitions")
                            .iter()
                            .map(|p| p.as_i64().expect("partition") as i32)
                            .collect()
                    };
                    let at = v["ts"].as_f64().expect("ts");
                    let mut s = state.lock().unwrap();
                    let member = name.clone();
                    match v["event"].as_str().unwrap_or_default() {
                        "assign" => {
                            s.assignment.extend(parts());
                            journal.push_at(
                                at,
                                Entry::Assign {
                                    member,
                                    partitions: parts(),
                                },
                            );
                        }
                        e @ ("revoke" | "lost") => {
                            for p in parts() {
                                s.assignment.remove(&p);
                            }
                            journal.push_at(
                                at,
                                Entry::Revoke {
                                    member,
                                    partitions: parts(),
                                    lost: e == "lost",
                                },
                            );
                        }
                        "record" => {
                            let partition = v["partition"].as_i64().expect("partition") as i32;
                            let offset = v["offset"].as_i64().expect("offset");
                            let next = s.processed.entry(partition).or_default();
                            *next = (*next).max(offset + 1);
                            journal.push_at(
                                at,
                                Entry::Record {
                                    member,
                                    partition,
                                    offset,
                                    value: v["value"].as_str().unwrap_or_default().to_string(),
                                },
                            );
                        }
                        "committed" => {
                            for (p, o) in v["offsets"].as_object().expect("offsets") {
                                let o = o.as_i64().expect("offset");
                                let c = s.committed.entry(p.parse().expect("p")).or_default();
                                *c = (*c).max(o);
                            }
                        }
                        "closed" => {
                            s.closed = true;
                            s.assignment.clear();
                            journal.push_at(at, Entry::Gone { member });
                        }
                        "commit_failed" | "error" => {
                            journal.error(format!("{member}: {v}"));
                            s.other.push(line);
                        }
                        _ => s.other.push(line),
                    }
                }
            })
        };
        {
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    state.lock().unwrap().stderr.push(line);
                }
            });
        }
        Self {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            state,
            reader: Some(reader),
            journal: Arc::clone(journal),
        }
    }

    /// Whether everything it processed is covered by a successful commit.
    fn all_committed(&self) -> bool {
        let s = self.state.lock().unwrap();
        s.processed
            .iter()
            .all(|(p, next)| s.committed.get(p).is_some_and(|c| c >= next))
    }

    /// SIGKILL: a crash, no leave and no commit. Once its last output is journaled, it is gone.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("wait");
        self.stdin = None;
        if let Some(r) = self.reader.take() {
            r.join().expect("reader thread");
        }
        self.state.lock().unwrap().assignment.clear();
        self.journal.push(Entry::Gone {
            member: self.name.clone(),
        });
    }

    /// Sends "close" and waits for a clean exit.
    fn close(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "close").expect("write close");
        stdin.flush().expect("flush");
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {WAIT:?}\n{}",
                self.name,
                self.report()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            r.join().expect("reader thread");
        }
        assert!(
            status.success() && self.state.lock().unwrap().closed,
            "{} exited with {status}\n{}",
            self.name,
            self.report()
        );
    }

    fn report(&self) -> String {
        let s = self.state.lock().unwrap();
        let tail = |v: &[String], n: usize| v[v.len().saturating_sub(n)..].join("\n");
        format!(
            "---- {}: assignment {:?}, processed {:?}, committed {:?}\n-- other output:\n{}\n\
             -- stderr (last 60 lines):\n{}\n",
            self.name,
            s.assignment,
            s.processed,
            s.committed,
            tail(&s.other, 20),
            tail(&s.stderr, 60)
        )
    }
}

impl Owner for PyMember {
    fn name(&self) -> &str {
        &self.name
    }
    fn assignment(&self) -> BTreeSet<i32> {
        self.state.lock().unwrap().assignment.clone()
    }
}

impl Drop for PyMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}

/// Waits until the members' assignments are disjoint, cover the topic, and have the sizes
/// `sizes` (in member order).
fn wait_for_split(
    journal: &Journal,
    members: &[&dyn Owner],
    sizes: &[usize],
) -> Vec<BTreeSet<i32>> {
    let got = wait_for(WAIT, || {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let lens: Vec<usize> = sets.iter().map(BTreeSet::len).collect();
        (union == (0..PARTITIONS).collect() && total == PARTITIONS as usize && lens == sizes)
            .then_some(sets)
    });
    got.unwrap_or_else(|| {
        panic!(
            "no {sizes:?} split within {WAIT:?}: {:?}\n{}",
            members
                .iter()
                .map(|m| (m.name().to_string(), m.assignment()))
                .collect::<Vec<_>>(),
            journal.diagnose()
        )
    })
}

/// Values `v-i` for `range`.
fn values(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("v-{i}")).collect()
}

/// Produces `v-i` for each i in `range` to partition `i % 6`, waiting for every ack.
async fn produce(bootstrap: &str, topic: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let p = producer(bootstrap, &[("acks", "all"), ("linger.ms", "5")]);
    let vals = values(range.clone());
    let futures: Vec<_> = range
        .zip(&vals)
        .map(|(i, v)| {
            p.send_result(
                FutureRecord::<(), String>::to(topic)
                    .partition(i as i32 % PARTITIONS)
                    .payload(v),
            )
            .expect("enqueue")
        })
        .collect();
    for f in futures {
        f.await.expect("delivery future").expect("delivered");
    }
    vals
}

/// Produces `range` in chunks of `chunk` records `pause` apart, in the background.
fn produce_slowly(
    bootstrap: &str,
    topic: &str,
    range: std::ops::Range<usize>,
    chunk: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut start = range.start;
        while start < range.end {
            let end = (start + chunk).min(range.end);
            out.extend(produce(&bootstrap, &topic, start..end).await);
            tokio::time::sleep(pause).await;
            start = end;
        }
        out
    })
}

/// ConsumerGroupDescribe v0 of one group over a raw connection.
fn describe_group(bootstrap: &str, group: &str) -> DescribedGroup {
    describe_group_v(bootstrap, group, 0)
}

/// ConsumerGroupDescribe of one group at `version`.
fn describe_group_v(bootstrap: &str, group: &str, version: i16) -> DescribedGroup {
    let mut raw = RawClient::connect(bootstrap).expect("connect");
    let resp = raw
        .request(
            version,
            &ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(group.to_string().into())])
                .with_include_authorized_operations(true),
        )
        .expect("ConsumerGroupDescribe");
    assert_eq!(resp.groups.len(), 1, "{resp:?}");
    resp.groups.into_iter().next().unwrap()
}

/// Partitions of an assignment, whatever the topic.
fn partitions(a: &Assignment) -> BTreeSet<i32> {
    a.topic_partitions
        .iter()
        .flat_map(|tp| tp.partitions.iter().copied())
        .collect()
}

/// Partitions of an assignment (all of one topic here), checking the topic's name.
fn described_partitions(a: &Assignment, topic: &str) -> BTreeSet<i32> {
    for tp in &a.topic_partitions {
        assert_eq!(&*tp.topic_name.0, topic, "{a:?}");
        assert!(!tp.topic_id.is_nil(), "{a:?}");
    }
    a.topic_partitions
        .iter()
        .flat_map(|tp| tp.partitions.iter().copied())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_members_split_leave_join_and_resume_exactly_once() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let (topic, group) = ("kip848-orders", "kip848-billing");
    create_topic(&b, topic, PARTITIONS, &[]).await;
    let journal = Journal::new(&b, group);
    let cfg = |name: &str| member_config(&b, group, name, &[]);

    let a = Member::start(cfg("a"), "a", topic, &journal);
    let m_b = Member::start(cfg("b"), "b", topic, &journal);
    let c = Member::start(cfg("c"), "c", topic, &journal);
    wait_for_split(&journal, &[&a, &m_b, &c], &[2, 2, 2]);
    let mut expected = produce(&b, topic, 0..300).await;
    journal.expect_exactly_once(&expected, WAIT);
    for m in ["a", "b", "c"] {
        assert!(
            journal.consumed().iter().any(|r| r.member == m),
            "{m} consumed"
        );
    }

    // C closes: it revokes its partitions and leaves with epoch -1; A and B cover all six
    // without waiting for C's session to expire.
    let closed = Instant::now();
    let closed_at = now() - journal.t0;
    c.close();
    // The leave was handled at once: C is no longer a member.
    let g = describe_group(&b, group);
    let clients: BTreeSet<String> = g.members.iter().map(|m| m.client_id.to_string()).collect();
    assert_eq!(clients, BTreeSet::from(["a".into(), "b".into()]), "{g:?}");
    wait_for_split(&journal, &[&a, &m_b], &[3, 3]);
    let took = closed.elapsed();
    assert!(
        took < SESSION_TIMEOUT,
        "took {took:?}: not a leave but a session expiry?"
    );
    let logs = broker.logs();
    assert!(logs.contains("member left the group"), "no leave logged");
    assert!(!logs.contains("member expired"), "a member expired");
    expected.extend(produce(&b, topic, 300..600).await);
    journal.expect_exactly_once(&expected, WAIT);

    // D joins while records keep coming: A and B give partitions up one heartbeat at a time and
    // D gets each only once released.
    let background = produce_slowly(&b, topic, 600..1200, 10, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = Member::start(cfg("d"), "d", topic, &journal);
    wait_for_split(&journal, &[&a, &m_b, &d], &[2, 2, 2]);
    let more = background.await.expect("producer task");
    expected.extend(more);
    journal.expect_exactly_once(&expected, WAIT);
    // The handover happened while records were flowing: some of the background batch was
    // consumed before D received its first partitions, some after.
    let entries = journal.entries();
    let d_first = entries
        .iter()
        .find(|(_, e)| matches!(e, Entry::Assign { member, .. } if member == "d"))
        .map(|(at, _)| *at)
        .expect("d was assigned");
    let background_at: Vec<f64> = entries
        .iter()
        .filter_map(|(at, e)| match e {
            Entry::Record { value, .. }
                if value["v-".len()..].parse::<usize>().is_ok_and(|i| i >= 600) =>
            {
                Some(*at)
            }
            _ => None,
        })
        .collect();
    assert!(
        background_at.iter().any(|at| *at < d_first)
            && background_at.iter().any(|at| *at > d_first),
        "records were not consumed on both sides of the handover at {d_first:.3}s"
    );
    assert!(
        journal.consumed().iter().any(|r| r.member == "d"),
        "d consumed"
    );
    // D's partitions came from A and B: they revoked exactly what D got.
    let revoked_by_ab: BTreeSet<i32> = entries
        .iter()
        .filter_map(|(at, e)| match e {
            Entry::Revoke {
                member, partitions, ..
            } if (member == "a" || member == "b") && *at > closed_at => Some(partitions.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(revoked_by_ab, d.assignment(), "{}", journal.history());

    a.close();
    m_b.close();
    d.close();
    assert!(journal.lost().is_empty(), "{:?}", journal.lost());
    assert!(journal.errors().is_empty(), "{:?}", journal.errors());

    // A fresh member of the group resumes from the committed offsets: only new records, all of
    // them.
    let e = Member::start(cfg("e"), "e", topic, &journal);
    wait_for_split(&journal, &[&e], &[6]);
    let new = produce(&b, topic, 1200..1260).await;
    expected.extend(new.iter().cloned());
    journal.expect_exactly_once(&expected, WAIT);
    let by_e: BTreeSet<String> = journal
        .consumed()
        .into_iter()
        .filter(|r| r.member == "e")
        .map(|r| r.value)
        .collect();
    assert_eq!(
        by_e,
        new.into_iter().collect(),
        "e read exactly the new records"
    );
    e.close();
    assert!(journal.lost().is_empty(), "{:?}", journal.lost());
    assert!(journal.errors().is_empty(), "{:?}", journal.errors());
}

#[tokio::test(flavor = "multi_thread")]
async fn crashed_member_is_replaced_after_the_session_timeout() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let (topic, group) = ("kip848-crash", "kip848-crash-group");
    create_topic(&b, topic, PARTITIONS, &[]).await;
    let journal = Journal::new(&b, group);

    // One rdkafka member in the test, two confluent-kafka members in their own processes.
    let a = Member::start(member_config(&b, group, "a", &[]), "a", topic, &journal);
    wait_for_split(&journal, &[&a], &[6]);
    let mut doomed = PyMember::start(&b, topic, group, "doomed", &journal);
    wait_for_split(&journal, &[&a, &doomed], &[3, 3]);
    let mut py = PyMember::start(&b, topic, group, "py", &journal);
    let split = wait_for_split(&journal, &[&a, &doomed, &py], &[2, 2, 2]);
    let mut expected = produce(&b, topic, 0..300).await;
    journal.expect_exactly_once(&expected, WAIT);
    for m in [&doomed, &py] {
        assert!(
            journal.consumed().iter().any(|r| r.member == m.name),
            "{} consumed\n{}",
            m.name,
            m.report()
        );
    }
    wait_for(WAIT, || doomed.all_committed().then_some(())).unwrap_or_else(|| {
        panic!(
            "doomed never committed all it processed\n{}",
            doomed.report()
        )
    });

    // SIGKILL: no leave. The others learn of it only when its session expires.
    doomed.kill9();
    journal.note("doomed killed");
    let killed_at = now() - journal.t0;
    wait_for_split(&journal, &[&a, &py], &[3, 3]);
    // Nothing moved before the session timeout: by the members' own clocks, the first partition
    // they gained came at least a session timeout (less a heartbeat interval and some slack)
    // after the kill.
    let first_move = journal
        .entries()
        .into_iter()
        .find_map(|(at, e)| matches!(e, Entry::Assign { .. } if at > killed_at).then_some(at))
        .expect("partitions assigned after the kill");
    assert!(
        first_move - killed_at >= (SESSION_TIMEOUT - HEARTBEAT_INTERVAL).as_secs_f64() - 0.5,
        "partitions moved {:.3}s after the kill, before the session timeout\n{}",
        first_move - killed_at,
        journal.diagnose()
    );
    assert!(
        broker.logs().contains("member expired"),
        "no expiry in the broker log"
    );
    let gained: BTreeSet<i32> = (&a.assignment() | &py.assignment())
        .difference(&(&split[0] | &split[2]))
        .copied()
        .collect();
    assert_eq!(
        gained, split[1],
        "the survivors took the crashed member's partitions"
    );
    expected.extend(produce(&b, topic, 300..600).await);
    journal.expect_exactly_once(&expected, WAIT);
    assert!(
        journal.consumed()[300..]
            .iter()
            .all(|r| r.member == "a" || r.member == "py"),
        "only the survivors consumed after the crash"
    );

    // The Python member closes: it revokes, leaves, and A takes everything over at once.
    let closed = Instant::now();
    py.close();
    wait_for_split(&journal, &[&a], &[6]);
    assert!(closed.elapsed() < SESSION_TIMEOUT, "{:?}", closed.elapsed());
    expected.extend(produce(&b, topic, 600..900).await);
    journal.expect_exactly_once(&expected, WAIT);
    a.close();
    assert!(journal.lost().is_empty(), "{:?}", journal.lost());
    assert!(journal.errors().is_empty(), "{:?}", journal.errors());
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_offsets_survive_kill_9_and_a_new_member_resumes_from_them() {
    let mut broker = start_broker();
    let (topic, group) = ("kip848-ledger", "kip848-auditors");
    create_topic(&broker.kafka, topic, PARTITIONS, &[]).await;
    let journal = Journal::new(&broker.kafka, group);
    let first = Member::start(
        member_config(&broker.kafka, group, "first", &[]),
        "first",
        topic,
        &journal,
    );
    wait_for_split(&journal, &[&first], &[6]);
    let mut expected = produce(&broker.kafka, topic, 0..120).await;
    journal.expect_exactly_once(&expected, WAIT);
    first.close();

    broker.kill9();
    broker.restart();
    let b = broker.kafka.clone();
    journal.set_bootstrap(&b);

    // The commits are there before anyone joins...
    let reader: BaseConsumer = member_config(&b, group, "reader", &[]).create().unwrap();
    let mut all = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        all.add_partition(topic, p);
    }
    let committed = reader
        .committed_offsets(all, WAIT)
        .expect("committed offsets");
    for p in 0..PARTITIONS {
        assert_eq!(
            committed.find_partition(topic, p).map(|e| e.offset()),
            Some(Offset::Offset(20)),
            "partition {p}: {committed:?}"
        );
    }
    drop(reader);

    // ...and a new consumer-protocol member resumes there: only what is produced now.
    let second = Member::start(
        member_config(&b, group, "second", &[]),
        "second",
        topic,
        &journal,
    );
    wait_for_split(&journal, &[&second], &[6]);
    let later = produce(&b, topic, 120..180).await;
    expected.extend(later.iter().cloned());
    journal.expect_exactly_once(&expected, WAIT);
    let by_second: Vec<Consumed> = journal
        .consumed()
        .into_iter()
        .filter(|r| r.member == "second")
        .collect();
    assert_eq!(by_second.len(), later.len());
    assert!(
        by_second.iter().all(|r| r.offset >= 20),
        "resumed at offset 20: {by_second:?}"
    );
    let g = describe_group(&b, group);
    assert_eq!(g.error_code, 0, "{g:?}");
    assert_eq!(g.members.len(), 1, "{g:?}");
    second.close();
    assert!(journal.lost().is_empty(), "{:?}", journal.lost());
    assert!(journal.errors().is_empty(), "{:?}", journal.errors());
}

#[tokio::test(flavor = "multi_thread")]
async fn range_assignor_gives_contiguous_ranges() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let (topic, group) = ("kip848-range", "kip848-range-group");
    create_topic(&b, topic, PARTITIONS, &[]).await;
    let journal = Journal::new(&b, group);
    let cfg = |name: &str| member_config(&b, group, name, &[("group.remote.assignor", "range")]);
    // Joining one after the other: the uniform assignor, sticky, would end with a
    // non-contiguous pair for the third member; range always deals out 0-1, 2-3, 4-5.
    let a = Member::start(cfg("a"), "a", topic, &journal);
    wait_for_split(&journal, &[&a], &[6]);
    let m_b = Member::start(cfg("b"), "b", topic, &journal);
    wait_for_split(&journal, &[&a, &m_b], &[3, 3]);
    let mut expected = produce(&b, topic, 0..120).await;
    journal.expect_exactly_once(&expected, WAIT);
    let c = Member::start(cfg("c"), "c", topic, &journal);
    let sets = wait_for_split(&journal, &[&a, &m_b, &c], &[2, 2, 2]);
    let ranges: BTreeSet<BTreeSet<i32>> = sets.into_iter().collect();
    assert_eq!(
        ranges,
        BTreeSet::from([
            BTreeSet::from([0, 1]),
            BTreeSet::from([2, 3]),
            BTreeSet::from([4, 5])
        ]),
        "{}",
        journal.history()
    );
    let g = wait_for(WAIT, || {
        let g = describe_group(&b, group);
        (&*g.group_state == "Stable").then_some(g)
    })
    .expect("the group settles");
    assert_eq!(&*g.assignor_name, "range", "{g:?}");
    expected.extend(produce(&b, topic, 120..240).await);
    journal.expect_exactly_once(&expected, WAIT);
    a.close();
    m_b.close();
    c.close();
    assert!(journal.lost().is_empty(), "{:?}", journal.lost());
    assert!(journal.errors().is_empty(), "{:?}", journal.errors());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_remote_assignor_is_a_fatal_unsupported_assignor_error() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let topic = "kip848-assignor";
    create_topic(&b, topic, PARTITIONS, &[]).await;
    let consumer: BaseConsumer = member_config(
        &b,
        "kip848-bad-assignor",
        "bad",
        &[("group.remote.assignor", "no-such-assignor")],
    )
    .create()
    .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut polled = Vec::new();
    let fatal = wait_for(WAIT, || {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            polled.push(r.map(|m| m.offset()));
        }
        consumer.client().fatal_error()
    });
    let (code, reason) = fatal.unwrap_or_else(|| panic!("no fatal error; polled {polled:?}"));
    assert_eq!(code, RDKafkaErrorCode::UnsupportedAssignor, "{reason}");
    assert_eq!(code as i32, 112);
    // The application sees it from poll too: a fatal consumption error.
    let fatal_poll = |p: &[KafkaResult<i64>]| {
        p.iter().any(|r| {
            matches!(
                r,
                Err(KafkaError::MessageConsumptionFatal(
                    RDKafkaErrorCode::UnsupportedAssignor
                ))
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fatal_poll(&polled) && Instant::now() < deadline {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            polled.push(r.map(|m| m.offset()));
        }
    }
    eprintln!("fatal error: {code:?} {reason:?}; polled {polled:?}");
    assert!(fatal_poll(&polled), "{polled:?}");
    assert!(
        consumer.assignment().unwrap().count() == 0,
        "no partitions for a member that never joined"
    );
    // The broker refused the join: the group has no member.
    let g = describe_group(&b, "kip848-bad-assignor");
    assert!(
        g.error_code != 0 || g.members.is_empty(),
        "a member joined with an unknown assignor: {g:?}"
    );
    assert!(
        broker.logs().contains("no-such-assignor"),
        "the refusal is logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn group_is_listed_and_described() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let (topic, group) = ("kip848-listed", "kip848-listed-group");
    create_topic(&b, topic, PARTITIONS, &[]).await;
    let journal = Journal::new(&b, group);
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
    wait_for_split(&journal, &[&one, &two], &[3, 3]);
    let expected = produce(&b, topic, 0..60).await;
    journal.expect_exactly_once(&expected, WAIT);

    // librdkafka's ListGroups + DescribeGroups lists it.
    let observer: BaseConsumer = member_config(&b, "observer", "observer", &[])
        .create()
        .unwrap();
    let list = observer.fetch_group_list(None, WAIT).expect("list groups");
    let listed = list.groups().iter().find(|g| g.name() == group);
    assert!(
        listed.is_some(),
        "{:?}",
        list.groups().iter().map(|g| g.name()).collect::<Vec<_>>()
    );
    // ListGroups v5 tells the group type.
    let mut raw = RawClient::connect(&b).expect("connect");
    let groups = raw
        .request(5, &ListGroupsRequest::default())
        .expect("ListGroups");
    assert_eq!(groups.error_code, 0);
    let g = groups
        .groups
        .iter()
        .find(|g| &*g.group_id.0 == group)
        .expect("listed");
    assert_eq!(&*g.group_type, "consumer", "{g:?}");
    assert_eq!(&*g.protocol_type, "consumer", "{g:?}");
    assert_eq!(&*g.group_state, "Stable", "{g:?}");

    // ConsumerGroupDescribe: both members, their assignments and epochs.
    let g = wait_for(WAIT, || {
        let g = describe_group(&b, group);
        (&*g.group_state == "Stable").then_some(g)
    })
    .unwrap_or_else(|| panic!("not Stable: {:?}", describe_group(&b, group)));
    assert_eq!(g.error_code, 0, "{g:?}");
    assert_eq!(&*g.assignor_name, "uniform", "{g:?}");
    assert!(
        g.group_epoch >= 2 && g.assignment_epoch == g.group_epoch,
        "{g:?}"
    );
    assert_eq!(g.members.len(), 2, "{g:?}");
    let mut union = BTreeSet::new();
    for m in &g.members {
        let parts = described_partitions(&m.assignment, topic);
        assert_eq!(parts.len(), 3, "{m:?}");
        assert_eq!(
            parts,
            described_partitions(&m.target_assignment, topic),
            "a stable member owns its target: {m:?}"
        );
        assert_eq!(m.member_epoch, g.assignment_epoch, "{m:?}");
        assert!(!m.member_id.is_empty());
        assert_eq!(m.instance_id, None);
        assert_eq!(m.member_type, -1, "v0 has no MemberType: {m:?}");
        assert_eq!(
            m.subscribed_topic_names
                .iter()
                .map(|t| t.0.to_string())
                .collect::<Vec<_>>(),
            vec![topic.to_string()]
        );
        let client = m.client_id.to_string();
        let owner: &Member = match client.as_str() {
            "lister-a" => &one,
            "lister-b" => &two,
            other => panic!("unexpected client id {other}"),
        };
        assert_eq!(parts, owner.assignment(), "{client} agrees with the broker");
        union.extend(parts);
    }
    assert_eq!(union, (0..PARTITIONS).collect());
    assert_ne!(g.authorized_operations, i32::MIN, "operations requested");
    // v1 adds MemberType: 1, a consumer-protocol member.
    let v1 = describe_group_v(&b, group, 1);
    assert_eq!(v1.members.len(), 2, "{v1:?}");
    assert!(v1.members.iter().all(|m| m.member_type == 1), "{v1:?}");

    // An unknown group.
    let unknown = describe_group(&b, "no-such-group");
    assert_eq!(unknown.error_code, 69, "GROUP_ID_NOT_FOUND: {unknown:?}");

    // After one member leaves, the other reaches a new epoch with all six.
    one.close();
    wait_for_split(&journal, &[&two], &[6]);
    let after = wait_for(WAIT, || {
        let g = describe_group(&b, group);
        (&*g.group_state == "Stable").then_some(g)
    })
    .expect("stable again");
    assert_eq!(after.members.len(), 1, "{after:?}");
    assert!(after.group_epoch > g.group_epoch, "{after:?}");
    assert_eq!(
        after.members[0].member_epoch, after.group_epoch,
        "{after:?}"
    );
    two.close();
    let empty = describe_group(&b, group);
    assert_eq!(&*empty.group_state, "Empty", "{empty:?}");
    assert!(journal.lost().is_empty(), "{:?}", journal.lost());
    assert!(journal.errors().is_empty(), "{:?}", journal.errors());
}

#[tokio::test(flavor = "multi_thread")]
async fn classic_member_cannot_join_a_consumer_protocol_group() {
    let broker = start_broker();
    let b = broker.kafka.clone();
    let (topic, group) = ("kip848-mixed", "kip848-mixed-group");
    create_topic(&b, topic, PARTITIONS, &[]).await;
    let journal = Journal::new(&b, group);
    let modern = Member::start(
        member_config(&b, group, "modern", &[]),
        "modern",
        topic,
        &journal,
    );
    wait_for_split(&journal, &[&modern], &[6]);

    let classic: BaseConsumer = member_config(
        &b,
        group,
        "classic",
        &[
            ("group.protocol", "classic"),
            ("session.timeout.ms", "6000"),
        ],
    )
    .create()
    .unwrap();
    classic.subscribe(&[topic]).unwrap();
    let mut other = Vec::new();
    let err = wait_for(WAIT, || match classic.poll(Duration::from_millis(100)) {
        Some(Err(e)) => Some(e),
        Some(Ok(m)) => {
            other.push(format!("record {}@{}", m.partition(), m.offset()));
            None
        }
        None => None,
    });
    let err = err.unwrap_or_else(|| panic!("the classic member saw no error; {other:?}"));
    eprintln!("classic member: {err}");
    assert_eq!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::InconsistentGroupProtocol),
        "{err:?}"
    );
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(classic.assignment().unwrap().count(), 0);
    assert_eq!(
        modern.assignment().len(),
        6,
        "the modern member keeps everything"
    );
    let g = describe_group(&b, group);
    assert_eq!(g.members.len(), 1, "{g:?}");
    drop(classic);
    modern.close();
}
