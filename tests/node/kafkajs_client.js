// kafkajs 2.x (a pure JavaScript implementation) against a running Sediment broker.
// Usage: node kafkajs_client.js BOOTSTRAP
// Produces with kafkajs and administers topics; kafkajs consumers always join a consumer group,
// which Sediment does not serve yet, so tests/client_node.rs reads the records back with
// librdkafka and compares them with what this script sent. Each check throws on failure; on
// success one JSON summary line is printed.
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
  await admin.disconnect();
  console.log(JSON.stringify(summary));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
