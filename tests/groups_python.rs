//! Consumer groups with the two Python clients: three members of one group, each a separate
//! process running `tests/python/group_member.py` (confluent-kafka or kafka-python), share a
//! 6-partition topic; members leave gracefully, crash, join late, and the broker itself is
//! `kill -9`ed. After every step each produced record has been processed exactly once by the
//! group as a whole, because every member commits synchronously after each poll batch and the
//! broker hands partitions over at the committed offsets.
//!
//! The scenario, the same for both clients:
//!  1. a 6-partition topic; members m1, m2, m3 join: 2 partitions each, disjoint;
//!  2. batch A is consumed exactly once; ListGroups / DescribeGroups / OffsetFetch through the
//!     client's admin API agree with what the members report;
//!  3. m3 closes (LeaveGroup): m1 and m2 take 3 partitions each; batch B exactly once;
//!  4. m2 is SIGKILLed: after the session timeout m1 owns all 6; batch C exactly once, by m1;
//!  5. m4 joins: it resumes from committed offsets (reads none of A..C); batch D exactly once;
//!  6. m1 and m4 close, the broker is `kill -9`ed and restarted, batch E is produced and a fresh
//!     member m5 processes exactly E: the committed offsets survived the crash.
//!
//! confluent-kafka members use the cooperative-sticky assignor (incremental rebalances),
//! kafka-python members the range assignor (eager rebalances). "Exactly once" is checked over
//! everything every member ever printed: each produced value once, from the partition it was
//! produced to, with dense offsets per partition; and before any member is stopped, every member
//! has reported a successful commit covering all it processed.
//!
//! A second, shorter scenario per client covers static membership (group.instance.id): a member
//! SIGKILLed and restarted under the same instance id gets its old partitions back at the
//! committed offsets while the other member keeps its own throughout.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;
use sediment_tests::kafka::{create_topic, producer};
use sediment_tests::{Broker, BrokerOptions, python, run_with_timeout, wait_for};
use serde_json::Value;

const PARTITIONS: i32 = 6;
/// The broker's minimum session timeout, so that a crashed member is noticed quickly.
const SESSION_TIMEOUT_MS: u64 = 6000;
/// Session timeout of static members, which must outlive a restart on a loaded machine.
const STATIC_SESSION_TIMEOUT_MS: u64 = 20000;
/// Longest wait for a rebalance or for a batch to be consumed.
const WAIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "group-topic";

/// One processed record as a member reported it.
#[derive(Debug, Clone)]
struct Processed {
    member: String,
    partition: i32,
    offset: i64,
    value: String,
}

/// Everything a member process wrote, collected by its reader threads.
#[derive(Debug, Default)]
struct Output {
    events: Vec<Value>,
    stderr: Vec<String>,
    /// Stdout lines that were not JSON.
    junk: Vec<String>,
}

/// A `group_member.py` process. Killed on drop; on a panic its output tail is printed.
struct Member {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Output>>,
    exit: Option<ExitStatus>,
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// The first line of a Python `faulthandler` stack dump.
fn is_dump_start(line: &str) -> bool {
    line.starts_with("Thread 0x") || line.starts_with("Current thread 0x")
}

impl Member {
    fn start(s: &Scenario, name: &str, instance_id: Option<&str>) -> Self {
        let mut cmd = Command::new(python());
        cmd.arg(script("group_member.py"))
            .args(["--client", s.client, &s.broker.kafka, TOPIC, s.group, name])
            .args(["--session-timeout-ms", &s.session_timeout_ms.to_string()])
            .args(["--strategy", s.strategy, "--debug"]);
        if let Some(id) = instance_id {
            cmd.args(["--instance-id", id]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {} group_member.py: {e}", python()));
        let out = Arc::new(Mutex::new(Output::default()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let o = Arc::clone(&out);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut o = o.lock().unwrap();
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => o.events.push(v),
                    Err(_) => o.junk.push(line),
                }
            }
        });
        let o = Arc::clone(&out);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                o.lock().unwrap().stderr.push(line);
            }
        });
        Self {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            out,
            exit: None,
        }
    }

    /// The partitions of every "assigned" event so far, oldest first.
    fn assignments(&self) -> Vec<BTreeSet<i32>> {
        let o = self.out.lock().unwrap();
        o.events
            .iter()
            .filter(|e| e["event"] == "assigned")
            .map(|e| {
                e["partitions"]
                    .as_array()
                    .expect("partitions array")
                    .iter()
                    .map(|p| p.as_i64().expect("partition number") as i32)
                    .collect()
            })
            .collect()
    }

    /// The partitions of the latest "assigned" event, if any.
    fn assignment(&self) -> Option<BTreeSet<i32>> {
        self.assignments().pop()
    }

    /// Partitions whose processed records are not all covered by a successful commit yet:
    /// partition -> (next offset to commit, highest offset committed).
    fn uncommitted(&self) -> BTreeMap<i32, (i64, Option<i64>)> {
        let o = self.out.lock().unwrap();
        let mut processed: BTreeMap<i32, i64> = BTreeMap::new();
        let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
        for e in &o.events {
            if e["event"] == "record" {
                let p = e["partition"].as_i64().expect("partition") as i32;
                let next = e["offset"].as_i64().expect("offset") + 1;
                let v = processed.entry(p).or_insert(next);
                *v = (*v).max(next);
            } else if e["event"] == "committed" {
                for (p, off) in e["offsets"].as_object().expect("offsets") {
                    let p: i32 = p.parse().expect("partition key");
                    let off = off.as_i64().expect("committed offset");
                    let v = committed.entry(p).or_insert(off);
                    *v = (*v).max(off);
                }
            }
        }
        processed
            .into_iter()
            .filter(|(p, next)| committed.get(p).is_none_or(|c| c < next))
            .map(|(p, next)| (p, (next, committed.get(&p).copied())))
            .collect()
    }

    fn processed(&self) -> Vec<Processed> {
        let o = self.out.lock().unwrap();
        o.events
            .iter()
            .filter(|e| e["event"] == "record")
            .map(|e| Processed {
                member: self.name.clone(),
                partition: e["partition"].as_i64().expect("partition") as i32,
                offset: e["offset"].as_i64().expect("offset"),
                value: e["value"].as_str().expect("value").to_string(),
            })
            .collect()
    }

    fn is_running(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit.is_none()
    }

    /// Sends "close" and waits for a clean exit.
    fn close(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "close").expect("write close command");
        stdin.flush().expect("flush");
        let deadline = Instant::now() + WAIT;
        while self.is_running() {
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {WAIT:?} of \"close\"\n{}",
                self.name,
                self.report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stdin = None;
        let status = self.exit.expect("exited");
        assert!(
            status.success(),
            "{} exited with {status} after \"close\"\n{}",
            self.name,
            self.report()
        );
        // Give the reader thread a moment to take the last line.
        let closed = wait_for(Duration::from_secs(5), || {
            let o = self.out.lock().unwrap();
            o.events
                .iter()
                .any(|e| e["event"] == "closed")
                .then_some(())
        });
        assert!(
            closed.is_some(),
            "{} exited 0 without printing \"closed\"\n{}",
            self.name,
            self.report()
        );
    }

    /// SIGKILL: a crash, no LeaveGroup and no commit.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        self.exit = Some(self.child.wait().expect("wait"));
        self.stdin = None;
    }

    /// Asks the running member for a dump of all its Python threads' stacks (SIGUSR1, see
    /// group_member.py) and waits until it is in its stderr: where a hung client is stuck.
    fn dump_stacks(&self) {
        let signalled = Command::new("kill")
            .args(["-USR1", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !signalled {
            return;
        }
        let _ = wait_for(Duration::from_secs(3), || {
            let o = self.out.lock().unwrap();
            o.stderr.iter().any(|l| is_dump_start(l)).then_some(())
        });
        // The dump is written in one go; let the reader take its last lines.
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Status, the last events and the last stderr lines, for failure messages.
    fn report(&self) -> String {
        let o = self.out.lock().unwrap();
        let tail = |v: &[String], n: usize| v[v.len().saturating_sub(n)..].join("\n");
        let events: Vec<String> = o
            .events
            .iter()
            .filter(|e| e["event"] != "record")
            .map(Value::to_string)
            .collect();
        // A stack dump (see dump_stacks) is shown whole, after the tail of the log before it.
        let dump_at = o
            .stderr
            .iter()
            .position(|l| is_dump_start(l))
            .unwrap_or(o.stderr.len());
        let (log, dump) = o.stderr.split_at(dump_at);
        let dump = if dump.is_empty() {
            String::new()
        } else {
            format!("-- stacks of all threads (SIGUSR1):\n{}\n", dump.join("\n"))
        };
        format!(
            "---- {} (exit {:?}, {} records processed, latest assignment {:?})\n\
             -- non-record events (last 20 of {}):\n{}\n-- non-JSON stdout:\n{}\n\
             -- stderr (last 80 of {} lines):\n{}\n{dump}",
            self.name,
            self.exit,
            o.events.iter().filter(|e| e["event"] == "record").count(),
            o.events
                .iter()
                .rev()
                .find(|e| e["event"] == "assigned")
                .map(|e| e["partitions"].to_string()),
            events.len(),
            tail(&events, 20),
            tail(&o.junk, 20),
            log.len(),
            tail(log, 80),
        )
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.is_running() {
            if std::thread::panicking() {
                self.dump_stacks();
            }
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}

/// The whole scenario's state. Members are declared before the broker so that on a panic their
/// output is printed before the broker log.
struct Scenario {
    client: &'static str,
    strategy: &'static str,
    group: &'static str,
    session_timeout_ms: u64,
    members: Vec<Member>,
    broker: Broker,
    rt: tokio::runtime::Runtime,
    /// Batch name -> values produced, in order.
    batches: BTreeMap<String, Vec<String>>,
    t0: Instant,
}

impl Scenario {
    fn log(&self, msg: &str) {
        eprintln!(
            "[{} {:6.2}s] {msg}",
            self.client,
            self.t0.elapsed().as_secs_f64()
        );
    }

    /// A broker (no initial rebalance delay) with a 6-partition topic.
    fn new(
        client: &'static str,
        strategy: &'static str,
        group: &'static str,
        session_timeout_ms: u64,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let broker = Broker::start_with(
            BrokerOptions::default().env("SEDIMENT_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
        );
        rt.block_on(create_topic(&broker.kafka, TOPIC, PARTITIONS, &[]));
        Self {
            client,
            strategy,
            group,
            session_timeout_ms,
            members: Vec::new(),
            broker,
            rt,
            batches: BTreeMap::new(),
            t0: Instant::now(),
        }
    }

    fn start_member(&mut self, name: &str, instance_id: Option<&str>) {
        let m = Member::start(self, name, instance_id);
        self.members.push(m);
    }

    fn member(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    fn reports(&self) -> String {
        self.members.iter().map(Member::report).collect()
    }

    /// Waits until exactly the `live` members have assignments, of 6/n partitions each, that
    /// are disjoint and cover the topic; returns them.
    fn wait_balanced(&mut self, live: &[&str]) -> BTreeMap<String, BTreeSet<i32>> {
        let started = Instant::now();
        let per_member = PARTITIONS as usize / live.len();
        for name in live {
            let m = self.member(name);
            assert!(
                m.is_running(),
                "{name} exited while waiting for a balanced group\n{}",
                m.report()
            );
        }
        let members = &self.members;
        let balanced = wait_for(WAIT, || {
            let mut all = BTreeSet::new();
            let mut out = BTreeMap::new();
            for name in live {
                let m = members.iter().find(|m| m.name == *name)?;
                let a = m.assignment()?;
                if a.len() != per_member || !a.iter().all(|p| all.insert(*p)) {
                    return None;
                }
                out.insert(name.to_string(), a);
            }
            (all.len() == PARTITIONS as usize).then_some(out)
        });
        let Some(assignments) = balanced else {
            panic!(
                "{live:?} did not settle on {per_member} disjoint partitions each within {WAIT:?}; \
                 latest assignments: {:?}\n{}",
                self.members
                    .iter()
                    .map(|m| (m.name.clone(), m.assignment()))
                    .collect::<Vec<_>>(),
                self.reports()
            )
        };
        self.log(&format!(
            "balanced after {:.2}s: {assignments:?}",
            started.elapsed().as_secs_f64()
        ));
        assignments
    }

    /// Produces `n` records `NAME-i` to partition `i % 6` and waits for their acks.
    fn produce(&mut self, name: &str, n: usize) {
        let values: Vec<String> = (0..n).map(|i| format!("{name}-{i}")).collect();
        let bootstrap = self.broker.kafka.clone();
        self.rt.block_on(async {
            let p = producer(&bootstrap, &[("acks", "all"), ("linger.ms", "5")]);
            let futures: Vec<_> = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    p.send_result(
                        FutureRecord::<(), str>::to(TOPIC)
                            .partition(i as i32 % PARTITIONS)
                            .payload(v.as_str()),
                    )
                    .unwrap_or_else(|(e, _)| panic!("enqueue {v}: {e}"))
                })
                .collect();
            for (f, v) in futures.into_iter().zip(&values) {
                f.await
                    .expect("delivery future")
                    .unwrap_or_else(|(e, _)| panic!("produce {v}: {e}"));
            }
        });
        self.batches.insert(name.to_string(), values);
        self.log(&format!("produced batch {name}: {n} records"));
    }

    fn all_processed(&self) -> Vec<Processed> {
        self.members.iter().flat_map(Member::processed).collect()
    }

    /// Waits until every record of `batch` has been processed by some member, then checks that
    /// every record produced so far was processed exactly once, from the partition it was
    /// produced to, and that nothing else was processed.
    fn wait_consumed(&mut self, batch: &str) {
        let started = Instant::now();
        let want: BTreeSet<String> = self.batches[batch].iter().cloned().collect();
        let done = wait_for(WAIT, || {
            let seen: BTreeSet<String> =
                self.all_processed().into_iter().map(|p| p.value).collect();
            want.is_subset(&seen).then_some(())
        });
        if done.is_none() {
            let seen: BTreeSet<String> =
                self.all_processed().into_iter().map(|p| p.value).collect();
            let missing: Vec<&String> = want.difference(&seen).collect();
            panic!(
                "batch {batch}: {} of {} records not processed within {WAIT:?}, e.g. {:?}\n{}",
                missing.len(),
                want.len(),
                &missing[..missing.len().min(10)],
                self.reports()
            );
        }
        self.log(&format!(
            "batch {batch} consumed after {:.2}s",
            started.elapsed().as_secs_f64()
        ));
        self.check_exactly_once();
        self.wait_committed();
    }

    /// Waits until every member has committed everything it processed: the group is quiet.
    fn wait_committed(&self) {
        let quiet = wait_for(WAIT, || {
            self.members
                .iter()
                .all(|m| m.uncommitted().is_empty())
                .then_some(())
        });
        if quiet.is_none() {
            let pending: Vec<_> = self
                .members
                .iter()
                .map(|m| (m.name.clone(), m.uncommitted()))
                .filter(|(_, u)| !u.is_empty())
                .collect();
            panic!(
                "processed records not committed within {WAIT:?} \
                 (member, partition -> (next offset to commit, highest committed)): {pending:?}\n{}",
                self.reports()
            );
        }
    }

    fn check_exactly_once(&self) {
        let mut produced: BTreeMap<&str, i32> = BTreeMap::new();
        for values in self.batches.values() {
            for (i, v) in values.iter().enumerate() {
                produced.insert(v, i as i32 % PARTITIONS);
            }
        }
        let mut seen: BTreeMap<&str, Vec<Processed>> = BTreeMap::new();
        let all = self.all_processed();
        for p in &all {
            seen.entry(p.value.as_str()).or_default().push(p.clone());
        }
        let unknown: Vec<&&str> = seen.keys().filter(|v| !produced.contains_key(*v)).collect();
        assert!(
            unknown.is_empty(),
            "records that were never produced were processed: {unknown:?}"
        );
        let dups: Vec<&Vec<Processed>> = seen.values().filter(|ps| ps.len() > 1).collect();
        assert!(
            dups.is_empty(),
            "{} records were processed more than once, e.g. {:?}\n{}",
            dups.len(),
            &dups[..dups.len().min(5)],
            self.reports()
        );
        let missing: Vec<&&str> = produced.keys().filter(|v| !seen.contains_key(*v)).collect();
        assert!(
            missing.is_empty(),
            "{} produced records were never processed, e.g. {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            self.reports()
        );
        for (v, ps) in &seen {
            assert_eq!(
                ps[0].partition, produced[v],
                "{v} was produced to partition {} but processed from {:?}",
                produced[v], ps[0]
            );
        }
        // Offsets are dense per partition: the group as a whole read each partition from 0
        // without a gap.
        let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for p in &all {
            offsets.entry(p.partition).or_default().push(p.offset);
        }
        for (partition, mut o) in offsets {
            o.sort_unstable();
            let expected: Vec<i64> = (0..o.len() as i64).collect();
            assert_eq!(o, expected, "offsets processed from partition {partition}");
        }
    }

    /// Runs `group_admin.py`: what the client's admin API sees of the group.
    fn admin_view(&self) -> Value {
        let out = run_with_timeout(
            Command::new(python()).arg(script("group_admin.py")).args([
                "--client",
                self.client,
                &self.broker.kafka,
                self.group,
                TOPIC,
            ]),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("group_admin.py: {e:#}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "group_admin.py failed with {}\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("group_admin.py: bad summary {last:?}: {e}"))
    }

    /// Committed offsets the group should have: every record produced so far.
    fn expected_offsets(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for values in self.batches.values() {
            for i in 0..values.len() {
                *out.entry((i as i32 % PARTITIONS).to_string()).or_insert(0) += 1;
            }
        }
        out
    }

    /// Checks the admin view against the members' own reports (client id -> assignment) and
    /// the records produced so far; returns it.
    fn check_admin_view(&self, members: &BTreeMap<String, BTreeSet<i32>>) -> Value {
        let v = self.admin_view();
        self.log(&format!("admin view: {v}"));
        let listed: Vec<&str> = v["listed"]
            .as_array()
            .expect("listed")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            listed.contains(&self.group),
            "ListGroups does not list {}: {v}",
            self.group
        );
        assert_eq!(v["state"], "stable", "DescribeGroups state: {v}");
        if let Some(t) = v.get("protocol_type") {
            assert_eq!(t, "consumer", "DescribeGroups protocol type: {v}");
        }
        assert_eq!(
            v["assignor"], self.strategy,
            "DescribeGroups protocol (assignor): {v}"
        );
        let described: BTreeMap<String, BTreeSet<i32>> = v["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["client_id"].as_str().expect("client_id").to_string(),
                    m["partitions"]
                        .as_array()
                        .expect("partitions")
                        .iter()
                        .map(|p| p.as_i64().unwrap() as i32)
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            &described, members,
            "DescribeGroups members (client id -> assigned partitions) differ from what the members report"
        );
        let offsets: BTreeMap<String, i64> = v["offsets"]
            .as_object()
            .expect("offsets")
            .iter()
            .map(|(k, o)| (k.clone(), o.as_i64().expect("offset")))
            .collect();
        assert_eq!(
            offsets,
            self.expected_offsets(),
            "OffsetFetch: committed offsets per partition"
        );
        v
    }
}

fn three_members_share_a_topic(client: &'static str, strategy: &'static str) {
    let mut s = Scenario::new(client, strategy, "group-python", SESSION_TIMEOUT_MS);

    // 1. Three members split the partitions.
    for name in ["m1", "m2", "m3"] {
        s.start_member(name, None);
    }
    s.wait_balanced(&["m1", "m2", "m3"]);

    // 2. Batch A, exactly once; the admin API agrees with the members.
    s.produce("A", 300);
    s.wait_consumed("A");
    let assignments = s.wait_balanced(&["m1", "m2", "m3"]);
    s.check_admin_view(&assignments);

    // 3. A graceful leave: the other two take over m3's partitions.
    s.member("m3").close();
    s.log("m3 closed");
    s.wait_balanced(&["m1", "m2"]);
    s.produce("B", 120);
    s.wait_consumed("B");

    // 4. A crash: after the session timeout m1 owns everything.
    s.member("m2").kill9();
    s.log("m2 killed");
    s.wait_balanced(&["m1"]);
    s.produce("C", 120);
    s.wait_consumed("C");
    let strays: Vec<Processed> = s
        .all_processed()
        .into_iter()
        .filter(|p| p.value.starts_with("C-") && p.member != "m1")
        .collect();
    assert!(
        strays.is_empty(),
        "batch C must be processed by m1 alone, the only live member: {strays:?}"
    );

    // 5. A late joiner resumes from the committed offsets.
    s.start_member("m4", None);
    s.wait_balanced(&["m1", "m4"]);
    s.produce("D", 120);
    s.wait_consumed("D");
    let reread: Vec<Processed> = s
        .member("m4")
        .processed()
        .into_iter()
        .filter(|p| !p.value.starts_with("D-"))
        .collect();
    assert!(
        reread.is_empty(),
        "m4 re-read records committed before it joined: {} of them, e.g. {:?}",
        reread.len(),
        &reread[..reread.len().min(5)]
    );

    // 6. Committed offsets survive kill -9 of the broker.
    s.member("m1").close();
    s.member("m4").close();
    s.log("m1 and m4 closed");
    s.broker.kill9();
    s.broker.restart();
    s.log(&format!("broker restarted on {}", s.broker.kafka));
    s.produce("E", 60);
    s.start_member("m5", None);
    s.wait_balanced(&["m5"]);
    s.wait_consumed("E");
    let m5: Vec<String> = s
        .member("m5")
        .processed()
        .into_iter()
        .map(|p| p.value)
        .collect();
    let e: BTreeSet<String> = s.batches["E"].iter().cloned().collect();
    assert!(
        m5.len() == e.len() && m5.iter().all(|v| e.contains(v)),
        "after the broker's kill -9 the fresh member must process exactly batch E ({} records) \
         but processed {} records, e.g. {:?}",
        e.len(),
        m5.len(),
        m5.iter()
            .filter(|v| !e.contains(*v))
            .take(10)
            .collect::<Vec<_>>()
    );
    let assignments = s.wait_balanced(&["m5"]);
    s.check_admin_view(&assignments);
    s.member("m5").close();
    s.log("done");
}

/// Static membership (KIP-345): a member SIGKILLed and restarted with the same
/// group.instance.id within its session timeout takes its old partitions back at the committed
/// offsets, while the other member keeps its partitions throughout.
fn static_member_restarts_in_place(client: &'static str, strategy: &'static str) {
    let mut s = Scenario::new(client, strategy, "group-static", STATIC_SESSION_TIMEOUT_MS);
    s.start_member("s1", Some("instance-1"));
    s.start_member("s2", Some("instance-2"));
    let before = s.wait_balanced(&["s1", "s2"]);
    s.produce("A", 120);
    s.wait_consumed("A");
    let instance_ids = |v: &Value| -> BTreeMap<String, String> {
        v["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["client_id"].as_str().unwrap_or_default().to_string(),
                    m["group_instance_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    };
    let view = s.check_admin_view(&before);
    assert_eq!(
        instance_ids(&view),
        BTreeMap::from([
            ("s1".to_string(), "instance-1".to_string()),
            ("s2".to_string(), "instance-2".to_string())
        ]),
        "DescribeGroups: group.instance.id of each member"
    );

    let s2_seen = s.member("s2").assignments().len();
    s.member("s1").kill9();
    s.log("s1 killed");
    s.start_member("s1b", Some("instance-1"));
    let after = s.wait_balanced(&["s1b", "s2"]);
    assert_eq!(
        after["s1b"], before["s1"],
        "the restarted static member gets its predecessor's partitions"
    );
    let s2_after: Vec<BTreeSet<i32>> = s.member("s2").assignments()[s2_seen..].to_vec();
    assert!(
        s2_after.iter().all(|a| *a == before["s2"]),
        "s2 must keep its partitions {:?} while the static member restarts, but its assignment \
         went through {s2_after:?}",
        before["s2"]
    );
    s.produce("B", 120);
    s.wait_consumed("B");
    let reread: Vec<Processed> = s
        .member("s1b")
        .processed()
        .into_iter()
        .filter(|p| !p.value.starts_with("B-"))
        .collect();
    assert!(
        reread.is_empty(),
        "the restarted static member re-read committed records: {} of them, e.g. {:?}",
        reread.len(),
        &reread[..reread.len().min(5)]
    );
    let view = s.check_admin_view(&after);
    assert_eq!(
        instance_ids(&view),
        BTreeMap::from([
            ("s1b".to_string(), "instance-1".to_string()),
            ("s2".to_string(), "instance-2".to_string())
        ]),
        "DescribeGroups after the restart: group.instance.id of each member"
    );
    s.member("s1b").close();
    s.member("s2").close();
    s.log("done");
}

#[test]
fn confluent_kafka_group_members_share_partitions_exactly_once() {
    three_members_share_a_topic("confluent", "cooperative-sticky");
}

#[test]
fn kafka_python_group_members_share_partitions_exactly_once() {
    three_members_share_a_topic("kafka-python", "range");
}

#[test]
fn confluent_kafka_static_member_restarts_in_place() {
    static_member_restarts_in_place("confluent", "cooperative-sticky");
}

#[test]
fn kafka_python_static_member_restarts_in_place() {
    static_member_restarts_in_place("kafka-python", "range");
}
