"""kafka-python 3.x (a pure-Python implementation) against a running Sediment broker.

Usage: kafka_python_client.py BOOTSTRAP
Each check raises on failure; on success the script prints one JSON summary line.
"""
import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import InvalidConfigurationError, TopicAlreadyExistsError

BOOT = sys.argv[1]
T0 = 1_750_000_000_000
summary = {}


def records(codec):
    # kafka-python refuses a record whose key and value are both null; null value with a key,
    # and null key with an empty value, are the closest cases it allows.
    recs = [
        (b"null-value", None, [], T0),
        (None, b"", [], T0 + 1),
        # kafka-python headers must be (str, bytes): no null header values.
        (b"k", b"v", [("h", b"x"), ("empty", b""), ("h", b"dup")], T0 + 2),
    ]
    for i in range(300):
        recs.append((f"key-{i}".encode(), f"{codec}-{i}-".encode() + b"x" * (i % 50), [("i", str(i).encode())], T0 + 3 + i))
    return recs


def producer(**conf):
    # kafka-python 3.x is idempotent by default (InitProducerId, sequence numbers).
    return KafkaProducer(bootstrap_servers=BOOT, **conf)


def produce(topic, recs, **conf):
    p = producer(linger_ms=20, **conf)
    futures = [p.send(topic, key=k, value=v, headers=h, timestamp_ms=ts, partition=0) for k, v, h, ts in recs]
    offsets = [f.get(timeout=30).offset for f in futures]
    p.close()
    return offsets


def consume(topic, partition, offset, count):
    c = KafkaConsumer(bootstrap_servers=BOOT, enable_auto_commit=False, group_id=None)
    tp = TopicPartition(topic, partition)
    c.assign([tp])
    c.seek(tp, offset)
    out = []
    deadline = time.time() + 30
    while len(out) < count:
        assert time.time() < deadline, f"consumed {len(out)} of {count} from {topic}"
        for batch in c.poll(timeout_ms=500).values():
            out.extend(batch)
    c.close()
    return out[:count]


def normalise(m):
    return (m.key, m.value, [(k, v) for k, v in (m.headers or [])], m.timestamp)


for codec in [None, "gzip", "snappy", "lz4", "zstd"]:
    name = codec or "none"
    topic = f"kp-{name}"
    recs = records(name)
    offsets = produce(topic, recs, compression_type=codec, acks="all")
    assert offsets == list(range(len(recs))), f"{name}: dense offsets"
    got = [normalise(m) for m in consume(topic, 0, 0, len(recs))]
    want = [(k, v, h, ts) for k, v, h, ts in recs]
    assert got == want, f"{name}: first difference at {next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)}"
    summary[f"codec_{name}"] = len(got)

got = consume("kp-gzip", 0, 150, 3)
assert [m.offset for m in got] == [150, 151, 152]
summary["middle_of_batch"] = True

big = b"q" * 1_000_000
produce("kp-big", [(None, big, [], T0)], max_request_size=2_000_000)
assert consume("kp-big", 0, 0, 1)[0].value == big
summary["near_max_message_bytes"] = True

admin = KafkaAdminClient(bootstrap_servers=BOOT)
admin.create_topics([NewTopic("kp-admin", num_partitions=6, replication_factor=1, topic_configs={"retention.ms": "7200000"})])
try:
    admin.create_topics([NewTopic("kp-admin", num_partitions=1, replication_factor=1)])
    raise AssertionError("duplicate create must fail")
except TopicAlreadyExistsError:
    pass
try:
    admin.create_topics([NewTopic("kp-bad", num_partitions=1, replication_factor=1, topic_configs={"retention.ms": "forever"})])
    raise AssertionError("bad config must fail")
except InvalidConfigurationError:
    pass
described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin")])
text = repr(described)
assert "retention.ms" in text and "7200000" in text, text
admin.create_partitions({"kp-admin": NewPartitions(total_count=9)})
p = producer(linger_ms=5)
for i in range(40):
    for part in range(9):
        p.send("kp-admin", value=f"{part}:{i}".encode(), partition=part)
p.flush(30)
p.close()
for part in range(9):
    values = [m.value.decode() for m in consume("kp-admin", part, 0, 40)]
    assert values == [f"{part}:{i}" for i in range(40)], part
summary["partitions"] = 9

c = KafkaConsumer(bootstrap_servers=BOOT, group_id=None)
tp = TopicPartition("kp-none", 0)
found = c.offsets_for_times({tp: T0 + 203})
assert found[tp].offset == 203, found
assert c.beginning_offsets([tp])[tp] == 0
assert c.end_offsets([tp])[tp] == 303
c.close()
summary["offsets_for_times"] = True

admin.delete_topics(["kp-admin"])
deadline = time.time() + 10
while "kp-admin" in admin.list_topics():
    assert time.time() < deadline, "topic still listed after delete"
    time.sleep(0.2)
admin.close()
summary["admin"] = True

print(json.dumps(summary))
