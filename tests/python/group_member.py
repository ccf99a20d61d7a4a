"""One member of a consumer group, driven by tests/groups_python.rs.

Usage: group_member.py --client confluent|kafka-python BOOTSTRAP TOPIC GROUP NAME
                       [--instance-id ID] [--session-timeout-ms 6000] [--heartbeat-interval-ms 1000]
                       [--strategy range|roundrobin|sticky|cooperative-sticky[,...]] [--debug]

Subscribes TOPIC in GROUP (auto commit off, auto.offset.reset=earliest, client id NAME) and
prints one JSON object per line on stdout, flushed at once:
  {"event":"assigned","partitions":[...]}   after every rebalance callback: the full current
                                            assignment (partitions of TOPIC)
  {"event":"record","partition":p,"offset":o,"value":"..."}   each processed record
  {"event":"committed","offsets":{"p":next,...}}              after each successful commit
  {"event":"commit_failed","error":"..."} / {"event":"error","error":"..."}
  {"event":"closed"}                         after a graceful close, just before exit 0
Records are committed synchronously after each poll batch, before the next poll, so whenever
the member is idle everything it printed is committed. A revoke callback commits whatever was
processed but not yet committed for the revoked partitions.

Commands on stdin, one a line: "close" commits, closes the consumer (LeaveGroup) and exits 0.
End of stdin counts as "close". SIGKILL simulates a crash. SIGUSR1 dumps the stacks of all
threads to stderr (the test sends it to a member it gives up on).
"""
import argparse
import faulthandler
import json
import logging
import os
import queue
import signal
import sys
import threading
import time

_print_lock = threading.Lock()


def emit(obj):
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


def next_command(q):
    try:
        return q.get_nowait()
    except queue.Empty:
        return None


class State:
    """Current assignment and processed-but-uncommitted offsets, shared by the poll loop and
    the rebalance callbacks."""

    def __init__(self):
        self.assigned = set()
        # partition -> next offset to commit (last processed + 1), not yet committed
        self.pending = {}

    def announce(self):
        emit({"event": "assigned", "partitions": sorted(self.assigned)})


def run_confluent(args, commands):
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": args.bootstrap,
        "broker.address.family": "v4",
        "group.id": args.group,
        "client.id": args.name,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": args.heartbeat_interval_ms,
        "partition.assignment.strategy": args.strategy,
        "error_cb": lambda err: log(f"error_cb: {err}"),
    }
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    if args.debug:
        conf["debug"] = "cgrp"
        conf["logger"] = logging.getLogger("rdkafka")
    consumer = Consumer(conf)
    state = State()

    def commit(partitions=None):
        """Commits pending offsets (of `partitions`, or all); True if there was nothing to do
        or the commit succeeded."""
        todo = {p: o for p, o in state.pending.items() if partitions is None or p in partitions}
        if not todo:
            return True
        tps = [TopicPartition(args.topic, p, o) for p, o in sorted(todo.items())]
        try:
            result = consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as e:
            emit({"event": "commit_failed", "error": str(e)})
            return False
        failed = [f"{tp.partition}: {tp.error}" for tp in (result or []) if tp.error]
        if failed:
            emit({"event": "commit_failed", "error": "; ".join(failed)})
            return False
        for p, o in todo.items():
            if state.pending.get(p) == o:
                del state.pending[p]
        emit({"event": "committed", "offsets": {str(p): o for p, o in sorted(todo.items())}})
        return True

    def on_assign(c, partitions):
        state.assigned |= {tp.partition for tp in partitions if tp.topic == args.topic}
        state.announce()

    def on_revoke(c, partitions):
        revoked = {tp.partition for tp in partitions if tp.topic == args.topic}
        commit(revoked)
        state.assigned -= revoked
        for p in revoked:
            state.pending.pop(p, None)
        state.announce()

    def on_lost(c, partitions):
        lost = {tp.partition for tp in partitions if tp.topic == args.topic}
        log(f"lost partitions {sorted(lost)}")
        state.assigned -= lost
        for p in lost:
            state.pending.pop(p, None)
        state.announce()

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    emit({"event": "subscribed"})
    while True:
        cmd = next_command(commands)
        if cmd == "close":
            commit()
            consumer.close()
            emit({"event": "closed"})
            return
        elif cmd:
            log(f"unknown command {cmd!r}")
        msgs = consumer.consume(num_messages=500, timeout=0.2)
        for m in msgs:
            if m.error():
                emit({"event": "error", "error": str(m.error())})
                continue
            value = m.value().decode() if m.value() is not None else None
            emit({"event": "record", "partition": m.partition(), "offset": m.offset(), "value": value})
            state.pending[m.partition()] = m.offset() + 1
        commit()


def run_kafka_python(args, commands):
    from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    assignors = {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "sticky": StickyPartitionAssignor,
        "cooperative-sticky": CooperativeStickyAssignor,
    }
    strategy = tuple(assignors[s.strip()] for s in args.strategy.split(","))
    conf = dict(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id=args.name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        partition_assignment_strategy=strategy,
    )
    if args.instance_id:
        conf["group_instance_id"] = args.instance_id
    consumer = KafkaConsumer(**conf)
    state = State()

    def to_commit(partitions=None):
        return {
            TopicPartition(args.topic, p): OffsetAndMetadata(o, "", -1)
            for p, o in state.pending.items()
            if partitions is None or p in partitions
        }

    def committed(offsets):
        for tp, om in offsets.items():
            if state.pending.get(tp.partition) == om.offset:
                del state.pending[tp.partition]
        emit({"event": "committed", "offsets": {str(tp.partition): om.offset for tp, om in sorted(offsets.items())}})

    def commit():
        offsets = to_commit()
        if not offsets:
            return True
        try:
            consumer.commit(offsets)
        except KafkaError as e:
            emit({"event": "commit_failed", "error": repr(e)})
            return False
        committed(offsets)
        return True

    class Listener(AsyncConsumerRebalanceListener):
        # Runs on kafka-python's IO thread, which cannot block on consumer.commit(): the
        # commit is awaited on the coordinator instead.
        async def on_partitions_revoked(self, revoked):
            gone = {tp.partition for tp in revoked if tp.topic == args.topic}
            offsets = to_commit(gone)
            if offsets:
                try:
                    await consumer._coordinator._commit_offsets_sync_async(offsets, timeout_ms=10000)
                    committed(offsets)
                except Exception as e:  # noqa: BLE001 - reported, not fatal
                    emit({"event": "commit_failed", "error": repr(e)})
            state.assigned -= gone
            for p in gone:
                state.pending.pop(p, None)
            state.announce()

        async def on_partitions_assigned(self, assigned):
            state.assigned |= {tp.partition for tp in assigned if tp.topic == args.topic}
            state.announce()

        async def on_partitions_lost(self, lost):
            gone = {tp.partition for tp in lost if tp.topic == args.topic}
            log(f"lost partitions {sorted(gone)}")
            state.assigned -= gone
            for p in gone:
                state.pending.pop(p, None)
            state.announce()

    consumer.subscribe([args.topic], listener=Listener())
    # Know the topic's partitions before the first poll() joins the group. Otherwise a member
    # that leads the first generation assigns nothing ("No partition metadata for topic") and,
    # once the metadata arrives, rejoins because its assignment snapshot no longer matches the
    # metadata. kafka-python 3.0.12 can lose such a rejoin: if a poll() times out while the
    # JoinGroup/SyncGroup is in flight, the leader's new assignment has already made
    # need_rejoin() false again (that rejoin does not set the rejoin flag), so no later poll()
    # awaits the pending join. Its SyncGroup answer is never applied and the member stays
    # REBALANCING with heartbeats off, silently, until it is killed. topics() fetches metadata
    # and returns after the coordinator has taken its snapshot of the subscribed topic.
    deadline = time.monotonic() + 30
    while True:
        consumer.topics()
        if consumer.partitions_for_topic(args.topic):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"no metadata for topic {args.topic}")
        time.sleep(0.1)
    emit({"event": "subscribed"})
    while True:
        cmd = next_command(commands)
        if cmd == "close":
            commit()
            consumer.close()
            emit({"event": "closed"})
            return
        elif cmd:
            log(f"unknown command {cmd!r}")
        batches = consumer.poll(timeout_ms=200)
        for tp, records in sorted(batches.items()):
            for r in records:
                value = r.value.decode() if r.value is not None else None
                emit({"event": "record", "partition": tp.partition, "offset": r.offset, "value": value})
                state.pending[tp.partition] = r.offset + 1
        commit()


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("group")
    ap.add_argument("name")
    ap.add_argument("--instance-id")
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    # Members learn of a rebalance from their heartbeats: beat often so that rebalances are quick.
    ap.add_argument("--heartbeat-interval-ms", type=int, default=1000)
    ap.add_argument("--strategy", default="range")
    ap.add_argument("--debug", action="store_true")
    args = ARGS = ap.parse_args()
    # The test sends SIGUSR1 before it gives up on a member: every thread's stack goes to
    # stderr, which the test prints, so that a hung client shows where it hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.debug and args.client == "confluent" else logging.INFO,
        format=f"%(asctime)s [{args.name}] %(name)s %(levelname)s %(message)s",
    )
    # For investigations: GROUP_MEMBER_DEBUG_DIR=DIR in the test's environment writes each
    # member's full DEBUG log (every request and response, every thread) to DIR/NAME-PID.log.
    debug_dir = os.environ.get("GROUP_MEMBER_DEBUG_DIR")
    if debug_dir:
        root = logging.getLogger()
        for h in root.handlers:
            h.setLevel(root.level)
        fh = logging.FileHandler(os.path.join(debug_dir, f"{args.name}-{os.getpid()}.log"))
        fh.setFormatter(logging.Formatter(
            f"%(asctime)s [{args.name}] %(threadName)s %(name)s %(levelname)s %(message)s"))
        root.addHandler(fh)
        root.setLevel(logging.DEBUG)
    commands = stdin_commands()
    if args.client == "confluent":
        run_confluent(args, commands)
    else:
        run_kafka_python(args, commands)


ARGS = None
if __name__ == "__main__":
    main()
