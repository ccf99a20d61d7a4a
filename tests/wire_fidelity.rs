//! The broker stores and serves batches exactly as producers sent them: only the base offset and
//! the partition leader epoch (neither covered by the CRC) are rewritten. Checked byte for byte
//! with batches encoded by `kafka-protocol` for every codec, over a raw connection.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use sediment_log::BatchHeader;
use sediment_tests::{Broker, RawClient};
use sediment_tests::{fetch_request, record};

fn records(n: usize, base_ts: i64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut r = record(
                i as i64,
                base_ts + i as i64,
                (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                Some(Bytes::from(format!("value {i} ").repeat(i % 20 + 1))),
            );
            r.headers
                .insert("n".into(), Some(Bytes::from(i.to_string())));
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_are_served_byte_for_byte_as_produced() {
    let broker = Broker::start();
    let mut c = RawClient::connect(&broker.kafka).unwrap();
    for (i, codec) in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let topic = format!("wire-{i}");
        sediment_tests::kafka::create_topic(&broker.kafka, &topic, 1, &[]).await;
        let mut sent = Vec::new();
        for b in 0..3 {
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &records(50, 1_750_000_000_000 + b * 1000),
                &RecordEncodeOptions {
                    version: 2,
                    compression: codec,
                },
            )
            .unwrap();
            let batch = buf.freeze();
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(topic.clone().into()))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(batch.clone())),
                        ]),
                ]);
            let resp = c.request(9, &req).unwrap();
            let p = &resp.responses[0].partition_responses[0];
            assert_eq!(
                (p.error_code, p.base_offset),
                (0, b * 50),
                "{codec:?} batch {b}"
            );
            sent.push(batch);
        }
        let fetch = fetch_request(&topic, 0, 0, 1 << 24);
        let resp = c.request(12, &fetch).unwrap();
        let part = &resp.responses[0].partitions[0];
        assert_eq!(
            (part.error_code, part.high_watermark),
            (0, 150),
            "{codec:?}: fetch"
        );
        let served = part.records.clone().unwrap();
        let mut at = 0;
        for (b, original) in sent.iter().enumerate() {
            let h = BatchHeader::parse(&served[at..]).unwrap();
            let got = &served[at..at + h.total_size()];
            assert_eq!(
                h.base_offset(),
                b as i64 * 50,
                "{codec:?}: base offset assigned"
            );
            assert_eq!(h.compression(), i as u8, "{codec:?}: codec kept");
            // Everything after base offset and partition leader epoch is the producer's bytes.
            assert_eq!(got.len(), original.len(), "{codec:?}: same size");
            assert_eq!(&got[8..12], &original[8..12], "{codec:?}: length");
            assert_eq!(
                &got[16..],
                &original[16..],
                "{codec:?}: batch {b} bytes unchanged"
            );
            at += h.total_size();
        }
        assert_eq!(at, served.len(), "{codec:?}: nothing else served");
        // And the served bytes decode to the records that were sent.
        let mut buf = served.clone();
        let decoded = RecordBatchDecoder::decode_all(&mut buf).unwrap();
        let values: Vec<_> = decoded
            .iter()
            .flat_map(|s| s.records.iter().map(|r| r.value.clone()))
            .collect();
        let expected: Vec<_> = (0..3)
            .flat_map(|_| records(50, 0).into_iter().map(|r| r.value))
            .collect();
        assert_eq!(values, expected, "{codec:?}: values");
    }
}
