// kafkajs 2.x (a pure JavaScript implementation) against a running Sediment broker.
// Usage: node kafkajs_client.js BOOTSTRAP
// Produces with kafkajs (plain and idempotent), administers topics, consumes in a consumer group
// (two members splitting a topic, committed offsets resumed by a later member) and administers
// groups. tests/client_node.rs also reads the records back with librdkafka and compares them with
// what this script sent. Each check throws on failure; on success one JSON summary line is
// printed.
'use strict';
const assert = require('node:assert/strict');
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const BOOT = process.argv[2];
const T0 = 1750000000000;
const kafka = new Kafka({ clientId: 'sediment-tests', brokers: [BOOT], logLevel: logLevel.NOTHING });
const summary = {};

function records(tag) {
  const recs = [
    { key: null, value: null, headers: {}, timestamp: String(T0) },
    { key: Buffer.alloc(0), value: Buffer.alloc(0), headers: {}, timestamp: String(T0 + 1) },
    { key: Buffer.from('k'), value: Buffer.from('v'), headers: { h: Buffer.from('x'), empty: Buffer.alloc(0) }, timestamp: String(T0 + 2) },
  ];
  for (let i = 0; i < 300; i++) {
    recs.push({
      key: Buffer.from(`key-${i}`),
      value: Buffer.from(`${tag}-${i}-` + 'x'.repeat(i % 50)),
      headers: { i: Buffer.from(String(i)) },
      timestamp: String(T0 + 3 + i),
    });
  }
  return recs;
}

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  for (const [name, codec] of [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP]]) {
    const topic = `kjs-${name}`;
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });
    const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: false });
    await producer.connect();
    const recs = records(name);
    const result = await producer.send({ topic, acks: -1, compression: codec, messages: recs.map((r) => ({ ...r, partition: 0 })) });
    assert.equal(result[0].errorCode, 0);
    assert.equal(result[0].baseOffset, '0');
    await producer.disconnect();
    const offsets = await admin.fetchTopicOffsets(topic);
    assert.deepEqual(offsets.map((o) => [o.partition, o.low, o.high]), [[0, '0', String(recs.length)]]);
    summary[`codec_${name}`] = recs.length;
  }
  // Admin: create with configs, duplicate, describe, partitions, delete.
  await admin.createTopics({ topics: [{ topic: 'kjs-admin', numPartitions: 3, configEntries: [{ name: 'retention.ms', value: '7200000' }] }] });
  // kafkajs resolves false (rather than throwing) when the topic already exists.
  assert.equal(await admin.createTopics({ topics: [{ topic: 'kjs-admin', numPartitions: 1 }] }), false);
  const described = await admin.describeConfigs({ resources: [{ type: 2, name: 'kjs-admin' }], includeSynonyms: false });
  const entry = described.resources[0].configEntries.find((e) => e.configName === 'retention.ms');
  assert.equal(entry.configValue, '7200000');
  await admin.createPartitions({ topicPartitions: [{ topic: 'kjs-admin', count: 5 }] });
  const md = await admin.fetchTopicMetadata({ topics: ['kjs-admin'] });
  assert.equal(md.topics[0].partitions.length, 5);
  await admin.deleteTopics({ topics: ['kjs-admin'] });
  const topics = await admin.listTopics();
  assert.ok(!topics.includes('kjs-admin'));
  summary.admin = true;
  await groups(admin);
  await admin.disconnect();
  console.log(JSON.stringify(summary));
}

// Waits until `check()` holds, polling every 100 ms, failing after `ms`.
async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// A group member that records what it processed; kafkajs commits after each message is handled.
async function member(groupId, topic, seen, name) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500, rebalanceTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommitThreshold: 1,
    eachMessage: async ({ partition, message }) => {
      seen.push({ name, partition, offset: Number(message.offset), value: message.value.toString() });
    },
  });
  return consumer;
}

async function groups(admin) {
  const topic = 'kjs-group';
  await admin.createTopics({ topics: [{ topic, numPartitions: 4 }] });
  // An idempotent producer (kafkajs needs maxInFlightRequests 1 for it).
  const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const send = async (tag, n) => {
    for (let i = 0; i < n; i += 50) {
      const messages = [];
      for (let j = i; j < Math.min(n, i + 50); j++) messages.push({ key: `k${j}`, value: `${tag}-${j}` });
      await producer.send({ topic, acks: -1, messages });
    }
  };
  await send('a', 400);
  const seen = [];
  const c1 = await member('kjs-g', topic, seen, 'c1');
  const c2 = await member('kjs-g', topic, seen, 'c2');
  await until('400 records consumed', 60000, () => seen.length >= 400);
  await send('b', 200);
  await until('600 records consumed', 60000, () => seen.length >= 600);
  const values = seen.map((r) => r.value);
  assert.equal(new Set(values).size, values.length, 'no record is consumed twice');
  assert.equal(values.length, 600);
  const described = await admin.describeGroups(['kjs-g']);
  const g = described.groups[0];
  assert.equal(g.state, 'Stable');
  assert.equal(g.protocolType, 'consumer');
  assert.equal(g.members.length, 2);
  const names = new Set(seen.map((r) => r.name));
  assert.equal(names.size, 2, 'both members received partitions');
  await c1.disconnect();
  await c2.disconnect();
  const listed = await admin.listGroups();
  assert.ok(listed.groups.some((x) => x.groupId === 'kjs-g'));
  const committed = await admin.fetchOffsets({ groupId: 'kjs-g', topics: [topic] });
  const total = committed[0].partitions.reduce((sum, p) => sum + Number(p.offset), 0);
  assert.equal(total, 600, 'committed offsets cover every record');
  // A later member resumes from the committed offsets: only new records arrive.
  await send('c', 100);
  const later = [];
  const c3 = await member('kjs-g', topic, later, 'c3');
  await until('100 new records consumed', 60000, () => later.length >= 100);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(later.length, 100);
  assert.ok(later.every((r) => r.value.startsWith('c-')), 'nothing before the committed offsets');
  await c3.disconnect();
  await producer.disconnect();
  await admin.deleteGroups(['kjs-g']);
  const after = await admin.listGroups();
  assert.ok(!after.groups.some((x) => x.groupId === 'kjs-g'));
  summary.group_consumed = values.length + later.length;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
