"""confluent-kafka (librdkafka) and kafka-python over a Sediment TLS listener.

Usage: tls_clients.py BOOTSTRAP CA_FILE TOPIC
Each client produces 100 keyed records with headers; the other client reads them all back,
both verifying the broker's certificate (and its host name) against CA_FILE. Prints one JSON
summary line; raises on any mismatch.
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

BOOT, CA, TOPIC = sys.argv[1], sys.argv[2], sys.argv[3]
N = 100
CONFLUENT_TLS = {"security.protocol": "SSL", "ssl.ca.location": CA}
KAFKA_PYTHON_TLS = {"security_protocol": "SSL", "ssl_cafile": CA, "ssl_check_hostname": True}


def expected(source):
    return [(f"{source}-{i}".encode(), f"value {i} from {source}".encode(), [("src", source.encode())]) for i in range(N)]


def confluent_produce(recs):
    p = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True, **CONFLUENT_TLS})
    errors = []
    for k, v, h in recs:
        p.produce(TOPIC, key=k, value=v, headers=h, partition=0,
                  on_delivery=lambda err, _m: err and errors.append(str(err)))
    left = p.flush(60)
    assert left == 0 and not errors, (left, errors)


def kafka_python_produce(recs):
    p = KafkaProducer(bootstrap_servers=BOOT, **KAFKA_PYTHON_TLS)
    for k, v, h in recs:
        p.send(TOPIC, key=k, value=v, headers=h, partition=0).get(timeout=60)
    p.close()


def confluent_consume(count):
    c = Consumer({"bootstrap.servers": BOOT, "group.id": "tls-confluent", "enable.auto.commit": False, **CONFLUENT_TLS})
    c.assign([CTopicPartition(TOPIC, 0, 0)])
    out, deadline = [], time.time() + 60
    while len(out) < count and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append((m.key(), m.value(), [(k, v) for k, v in (m.headers() or [])]))
    c.close()
    return out


def kafka_python_consume(count):
    c = KafkaConsumer(bootstrap_servers=BOOT, enable_auto_commit=False, **KAFKA_PYTHON_TLS)
    tp = TopicPartition(TOPIC, 0)
    c.assign([tp])
    c.seek(tp, 0)
    out, deadline = [], time.time() + 60
    while len(out) < count and time.time() < deadline:
        for records in c.poll(timeout_ms=1000).values():
            out.extend((r.key, r.value, list(r.headers)) for r in records)
    c.close()
    return out


# DescribeCluster over TLS gives the broker's TLS address (the port we connected to).
admin = AdminClient({"bootstrap.servers": BOOT, **CONFLUENT_TLS})  # kept alive until the answer
cluster = admin.describe_cluster(request_timeout=30).result()
ports = sorted(n.port for n in cluster.nodes)
assert ports == [int(BOOT.rsplit(":", 1)[1])], ports

confluent_produce(expected("confluent"))
got = kafka_python_consume(N)
assert got == expected("confluent"), got[:3]
kafka_python_produce(expected("kafka-python"))
got = confluent_consume(2 * N)
assert got == expected("confluent") + expected("kafka-python"), got[:3]
print(json.dumps({"describe_cluster_ports": ports, "confluent_to_kafka_python": N,
                  "kafka_python_to_confluent": N, "total": len(got)}))
