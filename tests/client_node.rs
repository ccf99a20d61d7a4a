//! kafkajs (a pure JavaScript client) against the real broker. `tests/node/kafkajs_client.js`
//! produces with kafkajs (no compression and gzip; kafkajs needs plugins for the other codecs),
//! administers topics, consumes in a two-member consumer group with an idempotent producer, and
//! administers groups; the produced records are also read back here with librdkafka.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::Headers;
use sediment_tests::kafka::{consume, payload};
use sediment_tests::{Broker, run_with_timeout};

#[test]
fn kafkajs_produces_consumes_in_a_group_and_administers() {
    let broker = Broker::start_with(
        sediment_tests::BrokerOptions::default()
            .env("SEDIMENT_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("node")
        .join("kafkajs_client.js");
    let out = run_with_timeout(
        Command::new("node").arg(&script).arg(&broker.kafka),
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "kafkajs script failed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["codec_none"], 303);
    assert_eq!(v["codec_gzip"], 303);
    assert_eq!(v["admin"], true);
    assert_eq!(v["group_consumed"], 700);
    const T0: i64 = 1_750_000_000_000;
    for codec in ["none", "gzip"] {
        let msgs = consume(
            &broker.kafka,
            &format!("kjs-{codec}"),
            0,
            0,
            303,
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(msgs[0].key(), None);
        assert_eq!(payload(&msgs[0]), None);
        assert_eq!(msgs[1].key(), Some(&b""[..]));
        assert_eq!(payload(&msgs[1]), Some(vec![]));
        let h = msgs[2].headers().unwrap();
        let headers: Vec<(String, Option<Vec<u8>>)> = h
            .iter()
            .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            headers,
            vec![
                ("h".into(), Some(b"x".to_vec())),
                ("empty".into(), Some(vec![]))
            ]
        );
        for (i, m) in msgs.iter().enumerate().skip(3) {
            let n = i - 3;
            assert_eq!(m.offset(), i as i64);
            assert_eq!(m.key(), Some(format!("key-{n}").as_bytes()));
            let expected = format!("{codec}-{n}-{}", "x".repeat(n % 50));
            assert_eq!(payload(m), Some(expected.into_bytes()));
            assert_eq!(m.timestamp().to_millis(), Some(T0 + 3 + n as i64));
        }
    }
}
