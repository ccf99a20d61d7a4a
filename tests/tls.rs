//! The TLS listener (Kafka's `SSL` listener, `kafka.tls_listen`) with real clients: kcat
//! (librdkafka), confluent-kafka and kafka-python verify the broker's certificate and host name,
//! produce and consume through it, and are given the brokers' TLS addresses in Metadata while
//! plaintext clients keep getting the plaintext ones; a client that does not trust the CA, a
//! plaintext client on the TLS port and (with `kafka.tls_client_ca_file`) a client without a
//! certificate are refused while the broker keeps serving. Several brokers on a quorum each
//! advertise their own TLS address, which is what an OpenShift Route per broker relies on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaRespErr;
use sediment_tests::archive::metric;
use sediment_tests::kafka::{admin, consumer, create_topic, kcat, kcat_output};
use sediment_tests::meta::{Quorum, broker_on_quorum};
use sediment_tests::tls::Pki;
use sediment_tests::{Broker, BrokerOptions, run_python, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// `options` with a TLS listener on a free loopback port, using `pki`'s broker certificate.
fn with_tls(mut options: BrokerOptions, pki: &Pki) -> BrokerOptions {
    for (k, v) in pki.broker_env() {
        options = options.env(&k, &v);
    }
    options
}

/// The partitions of `topic` in kcat's Metadata (`-L -J`) through connection `conn`.
fn kcat_partitions(conn: &[&str], topic: &str) -> Vec<Value> {
    let mut args = conn.to_vec();
    args.extend(["-L", "-J", "-t", topic, "-m", "30"]);
    let md: Value = serde_json::from_str(&kcat(&args, None)).unwrap();
    md["topics"][0]["partitions"].as_array().unwrap().clone()
}

/// kcat options for a TLS connection to `bootstrap` trusting `ca`.
fn tls_args<'a>(bootstrap: &'a str, ca: &'a str) -> Vec<&'a str> {
    vec![
        "-b",
        bootstrap,
        "-X",
        "security.protocol=ssl",
        "-X",
        ca,
        "-X",
        "ssl.endpoint.identification.algorithm=https",
    ]
}

/// The brokers (id → port) kcat's Metadata lists through the given connection options.
fn listed_brokers(conn: &[&str]) -> Vec<(i64, u64)> {
    let mut args = conn.to_vec();
    args.extend(["-L", "-J", "-m", "30"]);
    let md: Value = serde_json::from_str(&kcat(&args, None)).unwrap();
    let mut brokers: Vec<(i64, u64)> = md["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let name = b["name"].as_str().unwrap();
            let port = name.rsplit(':').next().unwrap().split('/').next().unwrap();
            (b["id"].as_i64().unwrap(), port.parse().unwrap())
        })
        .collect();
    brokers.sort();
    brokers
}

fn port(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_clients_verify_the_broker_and_produce_and_consume_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let broker = Broker::start_with(with_tls(BrokerOptions::default(), &pki));
    let tls = broker
        .kafka_tls
        .clone()
        .expect("the broker reports its TLS listener");
    let ca = format!("ssl.ca.location={}", pki.ca.display());
    let conn = tls_args(&tls, &ca);

    // Metadata describes the broker by the listener the client came through.
    assert_eq!(listed_brokers(&conn), vec![(0, port(&tls))]);
    assert_eq!(
        listed_brokers(&["-b", &broker.kafka]),
        vec![(0, port(&broker.kafka))]
    );

    // kcat round trip over TLS: keys, values and headers.
    create_topic(&broker.kafka, "secure", 1, &[]).await;
    let input: String = (0..200).map(|i| format!("key{i}:value {i}\n")).collect();
    let mut produce = conn.clone();
    produce.extend(["-P", "-t", "secure", "-p", "0", "-K", ":", "-H", "via=tls"]);
    kcat(&produce, Some(&input));
    let mut fetch = conn.clone();
    fetch.extend([
        "-C",
        "-t",
        "secure",
        "-p",
        "0",
        "-o",
        "beginning",
        "-e",
        "-f",
        "%o %k %s %h\\n",
    ]);
    let expected: String = (0..200)
        .map(|i| format!("{i} key{i} value {i} via=tls\n"))
        .collect();
    assert_eq!(kcat(&fetch, None), expected);

    // confluent-kafka and kafka-python, each reading what the other wrote.
    create_topic(&broker.kafka, "secure-py", 1, &[]).await;
    let out = run_python(
        "tls_clients.py",
        &[&tls, &pki.ca.display().to_string(), "secure-py"],
    )
    .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["total"], 200, "{summary}");
    assert_eq!(
        summary["describe_cluster_ports"],
        serde_json::json!([port(&tls)]),
        "DescribeCluster over TLS gives the TLS address"
    );

    // A client that trusts another CA refuses the broker's certificate.
    let other = format!("ssl.ca.location={}", pki.other_ca.display());
    let mut untrusting = tls_args(&tls, &other);
    untrusting.extend(["-L", "-m", "5"]);
    let out = kcat_output(&untrusting, None);
    assert!(
        !out.status.success(),
        "an untrusted certificate was accepted"
    );
    let failures_before = wait_for(WAIT, || {
        let n = metric(&broker, "sediment_kafka_tls_handshake_failures_total");
        (n >= 1.0).then_some(n)
    })
    .expect("the refused handshake is counted");

    // A plaintext Kafka client on the TLS port: its connection ends, nothing else does.
    let mut raw = TcpStream::connect(&tls).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // ApiVersions v0 request frame, as a plaintext client sends it first.
    raw.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0])
        .unwrap();
    let mut buf = Vec::new();
    let _ = raw.read_to_end(&mut buf);
    assert!(
        !buf.windows(4).any(|w| w == [0, 0, 0, 1]),
        "no Kafka response on the TLS port: {buf:?}"
    );
    wait_for(WAIT, || {
        (metric(&broker, "sediment_kafka_tls_handshake_failures_total") > failures_before)
            .then_some(())
    })
    .expect("the plaintext client's failed handshake is counted");
    assert_eq!(listed_brokers(&conn), vec![(0, port(&tls))]);

    // DescribeConfigs shows both listeners as Kafka names them.
    let described = admin(&broker.kafka)
        .describe_configs([&ResourceSpecifier::Broker(0)], &AdminOptions::new())
        .await
        .unwrap();
    let entries = &described[0].as_ref().expect("describe ok").entries;
    let advertised = entries
        .iter()
        .find(|e| e.name == "advertised.listeners")
        .and_then(|e| e.value.clone());
    assert_eq!(
        advertised,
        Some(format!("PLAINTEXT://{},SSL://{tls}", broker.kafka))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_client_ca_the_tls_listener_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let ca_file = pki.ca.display().to_string();
    let broker = Broker::start_with(with_tls(
        BrokerOptions::default().env("SEDIMENT_KAFKA_TLS_CLIENT_CA_FILE", &ca_file),
        &pki,
    ));
    let tls = broker.kafka_tls.clone().unwrap();
    let ca = format!("ssl.ca.location={ca_file}");
    let mut anonymous = tls_args(&tls, &ca);
    anonymous.extend(["-L", "-m", "5"]);
    let out = kcat_output(&anonymous, None);
    assert!(
        !out.status.success(),
        "a client without a certificate was served"
    );

    let cert = format!("ssl.certificate.location={}", pki.client_cert.display());
    let key = format!("ssl.key.location={}", pki.client_key.display());
    let mut conn = tls_args(&tls, &ca);
    conn.extend(["-X", &cert, "-X", &key]);
    assert_eq!(listed_brokers(&conn), vec![(0, port(&tls))]);
    let mut produce = conn.clone();
    produce.extend(["-P", "-t", "mutual", "-p", "0"]);
    kcat(&produce, Some("one\ntwo\n"));
    let mut fetch = conn.clone();
    fetch.extend(["-C", "-t", "mutual", "-o", "beginning", "-e", "-f", "%s\\n"]);
    assert_eq!(kcat(&fetch, None), "one\ntwo\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn brokers_on_a_quorum_are_described_by_the_listener_the_client_came_through() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let quorum = Quorum::start(1);
    let voters = quorum.voters();
    let brokers: Vec<Broker> = (1..=2)
        .map(|id| Broker::start_with(with_tls(broker_on_quorum(id, &voters), &pki)))
        .collect();
    let tls: Vec<String> = brokers
        .iter()
        .map(|b| b.kafka_tls.clone().unwrap())
        .collect();
    let ca = format!("ssl.ca.location={}", pki.ca.display());
    let conn = tls_args(&tls[0], &ca);
    let want_tls = vec![(1, port(&tls[0])), (2, port(&tls[1]))];
    let want_plain = vec![(1, port(&brokers[0].kafka)), (2, port(&brokers[1].kafka))];
    // Both brokers registered (the second may take a heartbeat to show).
    wait_for(WAIT, || (listed_brokers(&conn) == want_tls).then_some(())).unwrap_or_else(|| {
        panic!(
            "Metadata over TLS lists {:?}, want {want_tls:?}",
            listed_brokers(&conn)
        )
    });
    assert_eq!(listed_brokers(&["-b", &brokers[1].kafka]), want_plain);

    // Four partitions spread over both brokers; bootstrapping from broker 1's TLS listener,
    // kcat reaches broker 2 by the TLS address broker 1 gave it.
    create_topic(&brokers[0].kafka, "spread-tls", 4, &[]).await;
    let leaders: Vec<i64> = kcat_partitions(&conn, "spread-tls")
        .iter()
        .map(|p| p["leader"].as_i64().unwrap())
        .collect();
    assert!(
        leaders.contains(&1) && leaders.contains(&2),
        "partitions on both brokers: {leaders:?}"
    );
    for p in 0..4 {
        let part = p.to_string();
        let mut produce = conn.clone();
        produce.extend(["-P", "-t", "spread-tls", "-p", &part]);
        let input: String = (0..25).map(|i| format!("p{p}-{i}\n")).collect();
        kcat(&produce, Some(&input));
        let mut fetch = conn.clone();
        fetch.extend([
            "-C",
            "-t",
            "spread-tls",
            "-p",
            &part,
            "-o",
            "beginning",
            "-e",
            "-f",
            "%s\\n",
        ]);
        assert_eq!(kcat(&fetch, None), input, "partition {p} over TLS");
    }

    // A consumer group over TLS whose coordinator is broker 2 (Java's String.hashCode of the
    // id, mod the two live brokers): FindCoordinator must give broker 2's TLS address, or the
    // group never forms. It reads all 100 records and commits on close.
    let group = (0..)
        .map(|i| format!("tls-group-{i}"))
        .find(|g| {
            let h = g
                .encode_utf16()
                .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
            h.unsigned_abs() % 2 == 1
        })
        .unwrap();
    let mut member = conn.clone();
    member.extend([
        "-G",
        &group,
        "spread-tls",
        "-X",
        "auto.offset.reset=earliest",
        "-c",
        "100",
        "-f",
        "%s\\n",
    ]);
    let got = kcat(&member, None);
    assert_eq!(got.lines().count(), 100, "{got}");
    let committed = wait_for(WAIT, || {
        let (status, body) = brokers[1].admin_get(&format!("/v1/groups/{group}")).ok()?;
        let g: Value = serde_json::from_str(&body).ok()?;
        let sum: i64 = g["offsets"]
            .as_array()?
            .iter()
            .filter_map(|o| o["committed_offset"].as_i64())
            .sum();
        (status == 200 && sum == 100).then_some(sum)
    });
    assert_eq!(
        committed,
        Some(100),
        "the group committed every record on broker 2"
    );

    // A third broker without a TLS listener: TLS clients are not given it, and its partitions
    // answer LISTENER_NOT_FOUND there, as in Kafka; plaintext clients see all three.
    let plain_only = Broker::start_with(broker_on_quorum(3, &voters));
    wait_for(WAIT, || {
        (listed_brokers(&["-b", &brokers[0].kafka]).len() == 3).then_some(())
    })
    .expect("broker 3 registered");
    assert_eq!(listed_brokers(&conn), want_tls);
    create_topic(&plain_only.kafka, "on-three", 3, &[]).await;
    let partitions = kcat_partitions(&conn, "on-three");
    let errors: Vec<String> = partitions
        .iter()
        .map(|p| p["error"].as_str().unwrap_or("").to_string())
        .collect();
    // kcat 1.7.1 (librdkafka 2.0.2) asks Metadata v4: LEADER_NOT_AVAILABLE, as Kafka answers
    // clients older than v6.
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.contains("Leader not available"))
            .count(),
        1,
        "one of three partitions is led by broker 3: {partitions:?}"
    );
    // librdkafka 2.12 (the rdkafka crate) asks a newer version: LISTENER_NOT_FOUND.
    let c = consumer(
        &tls[0],
        &[
            ("security.protocol", "ssl"),
            ("ssl.ca.location", pki.ca.to_str().unwrap()),
        ],
    );
    let md = c
        .fetch_metadata(Some("on-three"), Duration::from_secs(30))
        .unwrap();
    let codes: Vec<Option<RDKafkaRespErr>> = md.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.error())
        .collect();
    assert_eq!(
        codes
            .iter()
            .filter(|e| **e == Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_LISTENER_NOT_FOUND))
            .count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        md.brokers()
            .iter()
            .map(|b| b.port() as u64)
            .collect::<Vec<_>>(),
        vec![port(&tls[0]), port(&tls[1])]
    );
    drop(quorum);
}
