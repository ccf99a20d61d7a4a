"""One member of a KIP-848 consumer group (group.protocol=consumer), driven by
tests/groups_kip848.rs.

Usage: group_kip848.py BOOTSTRAP TOPIC GROUP NAME [--remote-assignor uniform|range] [--debug]

Subscribes TOPIC in GROUP with confluent-kafka (auto commit off, auto.offset.reset=earliest,
client id NAME). The broker computes the assignment and sets the session timeout and heartbeat
interval, so none of session.timeout.ms, heartbeat.interval.ms or
partition.assignment.strategy is set (librdkafka refuses them with group.protocol=consumer).

Prints one JSON object per line on stdout, flushed at once, each with "ts", the wall-clock time
(seconds since the epoch) it happened, so the test can merge it with other members' events:
  {"event":"assign","partitions":[...]}    partitions added by a rebalance callback
  {"event":"revoke","partitions":[...]}    partitions given up (after committing them)
  {"event":"lost","partitions":[...]}      partitions lost (fenced or session expired)
  {"event":"record","partition":p,"offset":o,"value":"..."}   each processed record
  {"event":"committed","offsets":{"p":next,...}}              after each successful commit
  {"event":"commit_failed","error":"..."} / {"event":"error","error":"..."}
  {"event":"closed"}                        after a graceful close, just before exit 0
Records are committed synchronously after each poll batch, before the next poll, so whenever
the member is idle everything it printed is committed.

Commands on stdin, one a line: "close" commits, closes the consumer (leaves the group with
member epoch -1) and exits 0. End of stdin counts as "close". SIGKILL simulates a crash.
"""
import argparse
import json
import logging
import queue
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

_print_lock = threading.Lock()
ARGS = None


def emit(obj):
    obj["ts"] = time.time()
    line = json.dumps(obj)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(msg):
    with _print_lock:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} [{ARGS.name}] {msg}\n")
        sys.stderr.flush()


def stdin_commands():
    """Lines from stdin on a queue; "close" at end of input."""
    q = queue.Queue()

    def reader():
        for line in sys.stdin:
            q.put(line.strip())
        q.put("close")

    threading.Thread(target=reader, daemon=True).start()
    return q


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("group")
    ap.add_argument("name")
    ap.add_argument("--remote-assignor")
    ap.add_argument("--debug", action="store_true")
    args = ARGS = ap.parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.debug else logging.INFO,
        format=f"%(asctime)s [{args.name}] %(name)s %(levelname)s %(message)s",
    )
    commands = stdin_commands()
    conf = {
        "bootstrap.servers": args.bootstrap,
        "broker.address.family": "v4",
        "group.id": args.group,
        "group.protocol": "consumer",
        "client.id": args.name,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "error_cb": lambda err: log(f"error_cb: {err}"),
    }
    if args.remote_assignor:
        conf["group.remote.assignor"] = args.remote_assignor
    if args.debug:
        conf["debug"] = "cgrp"
        conf["logger"] = logging.getLogger("rdkafka")
    consumer = Consumer(conf)
    # partition -> next offset to commit (last processed + 1), not yet committed
    pending = {}

    def commit(partitions=None):
        todo = {p: o for p, o in pending.items() if partitions is None or p in partitions}
        if not todo:
            return
        tps = [TopicPartition(args.topic, p, o) for p, o in sorted(todo.items())]
        try:
            result = consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as e:
            emit({"event": "commit_failed", "error": str(e)})
            return
        failed = [f"{tp.partition}: {tp.error}" for tp in (result or []) if tp.error]
        if failed:
            emit({"event": "commit_failed", "error": "; ".join(failed)})
            return
        for p, o in todo.items():
            if pending.get(p) == o:
                del pending[p]
        emit({"event": "committed", "offsets": {str(p): o for p, o in sorted(todo.items())}})

    def mine(partitions):
        return sorted(tp.partition for tp in partitions if tp.topic == args.topic)

    def on_assign(c, partitions):
        emit({"event": "assign", "partitions": mine(partitions)})

    def on_revoke(c, partitions):
        gone = mine(partitions)
        commit(set(gone))
        for p in gone:
            pending.pop(p, None)
        emit({"event": "revoke", "partitions": gone})

    def on_lost(c, partitions):
        gone = mine(partitions)
        for p in gone:
            pending.pop(p, None)
        emit({"event": "lost", "partitions": gone})

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    emit({"event": "subscribed"})
    while True:
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            cmd = None
        if cmd == "close":
            commit()
            consumer.close()
            emit({"event": "closed"})
            return
        elif cmd:
            log(f"unknown command {cmd!r}")
        for m in consumer.consume(num_messages=500, timeout=0.2):
            if m.error():
                emit({"event": "error", "error": str(m.error())})
                continue
            value = m.value().decode() if m.value() is not None else None
            emit({"event": "record", "partition": m.partition(), "offset": m.offset(), "value": value})
            pending[m.partition()] = m.offset() + 1
        commit()


if __name__ == "__main__":
    main()
