//! librdkafka (the `rdkafka` crate) helpers shared by the tests.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;

/// A client config for `bootstrap` with `extra` settings.
pub fn config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

/// A producer.
pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    config(bootstrap, extra).create().expect("producer")
}

/// An admin client.
pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    config(bootstrap, &[]).create().expect("admin client")
}

/// Creates a topic and fails on any error.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let results = admin(bootstrap)
        .create_topics([&t], &AdminOptions::new())
        .await
        .expect("create_topics request");
    for r in results {
        r.unwrap_or_else(|(topic, e)| panic!("create topic {topic}: {e}"));
    }
}

/// A consumer positioned by `assign`, never joining a group. librdkafka insists on a group.id
/// for `assign`, but with auto-commit off it never commits to it.
pub fn consumer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = config(
        bootstrap,
        &[
            ("group.id", "sediment-tests"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ],
    );
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("consumer")
}

/// Reads `count` messages of `topic`/`partition` starting at `offset`, failing after `timeout`.
pub fn consume(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    count: usize,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>> {
    let consumer = consumer(bootstrap, &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let mut out = Vec::with_capacity(count);
    let deadline = Instant::now() + timeout;
    while out.len() < count {
        if Instant::now() > deadline {
            bail!(
                "consumed {} of {count} messages from {topic}-{partition} before the timeout",
                out.len()
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => bail!("consume error: {e}"),
            None => {}
        }
    }
    Ok(out)
}

/// Payload of a message as a byte vector (None for a null value).
pub fn payload(m: &OwnedMessage) -> Option<Vec<u8>> {
    m.payload().map(<[u8]>::to_vec)
}

/// Longest a kcat run may take.
const KCAT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs kcat with `args`, `stdin` (if any) as its input, and returns its output.
pub fn kcat_output(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("kcat");
    // cargo puts the build tree on LD_LIBRARY_PATH, where rdkafka-sys left a librdkafka
    // built without OpenSSL; kcat must load the system's.
    cmd.args(args).env_remove("LD_LIBRARY_PATH");
    // Kept until kcat exits: its input file.
    let input_dir = tempfile::tempdir().expect("temp dir");
    match stdin {
        Some(input) => {
            let path = input_dir.path().join("in");
            std::fs::write(&path, input).expect("write kcat input");
            cmd.stdin(std::fs::File::open(&path).expect("open kcat input"));
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    crate::run_with_timeout(&mut cmd, KCAT_TIMEOUT).expect("kcat runs")
}

/// kcat with `args`, which must succeed; its stdout.
pub fn kcat(args: &[&str], stdin: Option<&str>) -> String {
    let out = kcat_output(args, stdin);
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kcat prints UTF-8")
}
