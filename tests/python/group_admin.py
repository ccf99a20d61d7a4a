"""What a client's admin API sees of a consumer group, for tests/groups_python.rs.

Usage: group_admin.py --client confluent|kafka-python BOOTSTRAP GROUP TOPIC

Lists groups (ListGroups), describes GROUP (DescribeGroups) and fetches its committed offsets
(OffsetFetch), then prints one JSON line:
  {"listed": [group ids], "state": "stable", "protocol_type": "consumer" (kafka-python only),
   "assignor": "range", "members": [{"client_id": ..., "member_id": ..., "partitions": [...]}],
   "offsets": {"0": 50, ...}}
States are lower-case without separators ("stable", "preparingrebalance", "empty", ...).
"""
import argparse
import json


def norm_state(s):
    return str(s).split(".")[-1].replace("_", "").replace("-", "").lower()


def confluent(args):
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": args.bootstrap, "broker.address.family": "v4"})
    listed = admin.list_consumer_groups(request_timeout=15).result(30)
    if listed.errors:
        raise RuntimeError(f"list_consumer_groups errors: {listed.errors}")
    desc = admin.describe_consumer_groups([args.group], request_timeout=15)[args.group].result(30)
    members = []
    for m in desc.members:
        parts = m.assignment.topic_partitions if m.assignment else []
        members.append({
            "client_id": m.client_id,
            "member_id": m.member_id,
            "group_instance_id": m.group_instance_id,
            "partitions": sorted(tp.partition for tp in parts if tp.topic == args.topic),
        })
    req = [ConsumerGroupTopicPartitions(args.group)]
    got = admin.list_consumer_group_offsets(req, request_timeout=15)[args.group].result(30)
    offsets = {}
    for tp in got.topic_partitions or []:
        if tp.error:
            raise RuntimeError(f"offset fetch {tp}: {tp.error}")
        if tp.topic == args.topic:
            offsets[str(tp.partition)] = tp.offset
    return {
        "listed": sorted(g.group_id for g in listed.valid),
        "listed_states": {g.group_id: norm_state(g.state) for g in listed.valid if hasattr(g, "state")},
        "state": norm_state(desc.state),
        "assignor": desc.partition_assignor,
        "members": sorted(members, key=lambda m: m["client_id"]),
        "offsets": offsets,
    }


def kafka_python(args):
    from kafka import KafkaAdminClient
    from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment

    def partitions(assignment):
        if not assignment:
            return []
        if isinstance(assignment, (bytes, bytearray)):
            assignment = ConsumerProtocolAssignment.decode(bytes(assignment))
        if hasattr(assignment, "partitions"):
            return sorted(tp.partition for tp in assignment.partitions() if tp.topic == args.topic)
        out = []
        for t in assignment.get("assigned_partitions", []):
            if t["topic"] == args.topic:
                out.extend(t["partitions"])
        return sorted(out)

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=15000)
    listed = admin.list_groups()
    desc = admin.describe_groups([args.group])[args.group]
    if desc.get("error"):
        raise RuntimeError(f"describe_groups: {desc['error']}")
    members = [
        {
            "client_id": m["client_id"],
            "member_id": m["member_id"],
            "group_instance_id": m.get("group_instance_id"),
            "partitions": partitions(m.get("member_assignment")),
        }
        for m in desc["members"]
    ]
    got = admin.list_group_offsets({args.group: None})[args.group]
    offsets = {str(tp.partition): om.offset for tp, om in got.items() if tp.topic == args.topic}
    admin.close()
    return {
        "listed": sorted(g["group_id"] for g in listed),
        "listed_states": {g["group_id"]: norm_state(g["group_state"]) for g in listed if g.get("group_state")},
        "state": norm_state(desc["group_state"]),
        "protocol_type": desc["protocol_type"],
        "assignor": desc["protocol_data"],
        "members": sorted(members, key=lambda m: m["client_id"]),
        "offsets": offsets,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    ap.add_argument("bootstrap")
    ap.add_argument("group")
    ap.add_argument("topic")
    args = ap.parse_args()
    summary = confluent(args) if args.client == "confluent" else kafka_python(args)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
