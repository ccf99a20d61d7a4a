"""kafka-python against a Sediment cluster of several brokers.

Usage: multi_broker.py BOOTSTRAP TOPIC PARTITIONS COUNT GROUP
Produces COUNT records (key py-I, value v-I) to partition I % PARTITIONS through BOOTSTRAP
(one broker: the client finds each partition's leader from Metadata), then consumes the topic
in consumer group GROUP (its coordinator may be another broker) until it has read every py-
record, commits, and prints one JSON line: the records read per partition, in order, and the
committed offsets.
"""
import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

BOOT, TOPIC, PARTITIONS, COUNT, GROUP = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

producer = KafkaProducer(bootstrap_servers=BOOT, linger_ms=10, retries=20)
futures = [
    producer.send(TOPIC, key=f"py-{i}".encode(), value=f"v-{i}".encode(), partition=i % PARTITIONS)
    for i in range(COUNT)
]
acked = [f.get(timeout=60) for f in futures]
producer.close()
leaders_seen = sorted({m.partition for m in acked})

consumer = KafkaConsumer(
    bootstrap_servers=BOOT,
    group_id=GROUP,
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    consumer_timeout_ms=1000,
)
consumer.subscribe([TOPIC])
by_partition = {}
read = 0
deadline = time.time() + 120
while read < COUNT:
    if time.time() > deadline:
        raise SystemExit(f"read {read} of {COUNT} py- records before the deadline")
    for tp, msgs in consumer.poll(timeout_ms=500).items():
        for m in msgs:
            if m.key is not None and m.key.startswith(b"py-"):
                by_partition.setdefault(str(tp.partition), []).append([m.offset, m.key.decode(), m.value.decode()])
                read += 1
consumer.commit()
committed = {
    str(p): consumer.committed(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)
}
consumer.close()
print(json.dumps({
    "acked_partitions": leaders_seen,
    "by_partition": by_partition,
    "committed": committed,
}))
