"""Consumes a topic from the beginning with a real Python client and prints every record.

Usage: replay_consume.py CLIENT BOOTSTRAP TOPIC COUNT [--group G] [--timeout SECONDS]
CLIENT is `confluent` (confluent-kafka, librdkafka) or `kafka-python`. The consumer joins a
new group, so it starts where `auto.offset.reset=earliest` puts it (ListOffsets earliest),
and stops after COUNT records. Prints one JSON list of records: partition, offset,
timestamp, key and value in hex (null for null), headers as [key, hex value or null].
Exits 1 when fewer than COUNT records arrive within the timeout or the client reports an
error.
"""
import argparse
import json
import sys
import time


def hexed(b):
    return None if b is None else bytes(b).hex()


def confluent(args):
    from confluent_kafka import Consumer, KafkaException

    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 200,
    })
    c.subscribe([args.topic])
    out = []
    deadline = time.time() + args.timeout
    try:
        while len(out) < args.count and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            out.append({
                "partition": m.partition(),
                "offset": m.offset(),
                "timestamp": m.timestamp()[1],
                "key": hexed(m.key()),
                "value": hexed(m.value()),
                "headers": [[k, hexed(v)] for k, v in (m.headers() or [])],
            })
    finally:
        c.close()
    return out


def kafka_python(args):
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=200,
    )
    out = []
    deadline = time.time() + args.timeout
    try:
        while len(out) < args.count and time.time() < deadline:
            for _tp, msgs in c.poll(timeout_ms=500).items():
                for m in msgs:
                    out.append({
                        "partition": m.partition,
                        "offset": m.offset,
                        "timestamp": m.timestamp,
                        "key": hexed(m.key),
                        "value": hexed(m.value),
                        "headers": [[k, hexed(v)] for k, v in (m.headers or [])],
                    })
    finally:
        c.close()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("client", choices=["confluent", "kafka-python"])
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("count", type=int)
    p.add_argument("--group", default="replay-consume")
    p.add_argument("--timeout", type=float, default=90)
    args = p.parse_args()
    out = confluent(args) if args.client == "confluent" else kafka_python(args)
    print(json.dumps(out))
    if len(out) < args.count:
        print(f"only {len(out)} of {args.count} records within {args.timeout}s", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
