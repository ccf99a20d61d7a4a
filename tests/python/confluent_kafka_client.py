"""confluent-kafka (librdkafka 2.x bundled in the wheel) against a running Sediment broker.

Usage: confluent_kafka_client.py BOOTSTRAP
Each check raises on failure; on success the script prints one JSON summary line.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

BOOT = sys.argv[1]
T0 = 1_750_000_000_000
summary = {}


def records(codec):
    recs = [
        (None, None, [], T0),
        (b"", b"", [], T0 + 1),
        (b"k", b"v", [("h", b"x"), ("null", None), ("empty", b""), ("h", b"dup")], T0 + 2),
    ]
    for i in range(300):
        recs.append((f"key-{i}".encode(), f"{codec}-{i}-".encode() + b"x" * (i % 50), [("i", str(i).encode())], T0 + 3 + i))
    return recs


def produce(topic, recs, **conf):
    errors = []
    p = Producer({"bootstrap.servers": BOOT, "linger.ms": 20, **conf})
    for key, value, headers, ts in recs:
        p.produce(topic, key=key, value=value, headers=headers, timestamp=ts, partition=0,
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert p.flush(30) == 0, "all messages delivered"
    assert not errors, errors


def consume(topic, partition, offset, count):
    c = Consumer({"bootstrap.servers": BOOT, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, offset)])
    out = []
    deadline = time.time() + 30
    while len(out) < count:
        assert time.time() < deadline, f"consumed {len(out)} of {count} from {topic}"
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        out.append(m)
    c.close()
    return out


def normalise(m):
    return (m.key(), m.value(), [(k, v) for k, v in (m.headers() or [])], m.timestamp()[1])


# Every codec round-trips keys, values, headers, nulls and empties.
for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
    topic = f"ck-{codec}"
    recs = records(codec)
    produce(topic, recs, **{"compression.type": codec, "acks": "all"})
    got = [normalise(m) for m in consume(topic, 0, 0, len(recs))]
    want = [(k, v, h, ts) for k, v, h, ts in recs]
    assert got == want, f"{codec}: first difference at {next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)}"
    summary[f"codec_{codec}"] = len(got)

# Fetch from the middle of a batch.
got = consume("ck-zstd", 0, 100, 5)
assert [m.offset() for m in got] == [100, 101, 102, 103, 104]
summary["middle_of_batch"] = True

# A message near the default max.message.bytes.
big = b"z" * 1_000_000
produce("ck-big", [(None, big, [], T0)], **{"message.max.bytes": 2_000_000})
assert consume("ck-big", 0, 0, 1)[0].value() == big
summary["near_max_message_bytes"] = True

# Admin: create with configs, errors, describe, partitions, delete.
admin = AdminClient({"bootstrap.servers": BOOT})
fs = admin.create_topics([NewTopic("ck-admin", num_partitions=8, replication_factor=1, config={"retention.ms": "7200000"})])
fs["ck-admin"].result(30)
try:
    admin.create_topics([NewTopic("ck-admin", num_partitions=1, replication_factor=1)])["ck-admin"].result(30)
    raise AssertionError("duplicate create must fail")
except KafkaException as e:
    assert e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, e
try:
    admin.create_topics([NewTopic("ck-bad", num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"})])["ck-bad"].result(30)
    raise AssertionError("unsupported config must fail")
except KafkaException as e:
    assert e.args[0].code() == KafkaError.INVALID_CONFIG, e
res = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "ck-admin")])
configs = list(res.values())[0].result(30)
assert configs["retention.ms"].value == "7200000" and not configs["retention.ms"].is_default
assert configs["segment.bytes"].is_default
admin.create_partitions([NewPartitions("ck-admin", 12)])["ck-admin"].result(30)
md = admin.list_topics(timeout=30)
assert len(md.topics["ck-admin"].partitions) == 12

# Many partitions keep per-partition order.
p = Producer({"bootstrap.servers": BOOT, "linger.ms": 5})
for i in range(50):
    for part in range(12):
        p.produce("ck-admin", value=f"{part}:{i}".encode(), partition=part)
assert p.flush(30) == 0
for part in range(12):
    values = [m.value().decode() for m in consume("ck-admin", part, 0, 50)]
    assert values == [f"{part}:{i}" for i in range(50)], part
summary["partitions"] = 12

# Offsets by timestamp.
c = Consumer({"bootstrap.servers": BOOT, "group.id": "unused"})
found = c.offsets_for_times([TopicPartition("ck-none", 0, T0 + 103)], timeout=30)
assert found[0].offset == 103, found
low, high = c.get_watermark_offsets(TopicPartition("ck-none", 0), timeout=30)
assert (low, high) == (0, 303), (low, high)
c.close()
summary["offsets_for_times"] = True

admin.delete_topics(["ck-admin"])["ck-admin"].result(30)
deadline = time.time() + 10
while "ck-admin" in admin.list_topics(timeout=30).topics:
    assert time.time() < deadline, "topic still listed after delete"
    time.sleep(0.2)
summary["admin"] = True

print(json.dumps(summary))
