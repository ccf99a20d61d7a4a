//! Throughput harness: the loopback TCP ceiling (iperf3), then the same librdkafka workload
//! against Sediment and against a peer broker (tansu), in one run, with a final table and an
//! optional JSON file. See benches/README.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::{Value, json};

use sediment_benches::procs;
use sediment_benches::targets::{self, BrokerRun, IperfStats};
use sediment_benches::workload::{Payloads, Workload, mb_per_s};

/// Measure Sediment's produce and consume throughput against the loopback ceiling and a peer
/// broker. 1 MB = 10^6 bytes throughout.
#[derive(Debug, Parser)]
#[command(name = "throughput", version, about)]
struct Args {
    /// Records to produce and then consume, per broker.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Value size of each record, in bytes.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Producer linger.ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    /// Producer batch.size in bytes.
    #[arg(long, default_value_t = 1_000_000)]
    batch_bytes: u32,
    /// Producer queue.buffering.max.kbytes: how much may wait unacknowledged in the client.
    /// Enqueue-to-delivery latency includes this queueing when the broker is the bottleneck.
    #[arg(long, default_value_t = 65_536)]
    queue_kbytes: u32,
    /// Upper bound in seconds for each phase (topic creation, produce, consume).
    #[arg(long, default_value_t = 600)]
    phase_timeout_secs: u64,
    /// Length of the iperf3 run, in seconds.
    #[arg(long, default_value_t = 5)]
    iperf_seconds: u32,
    /// Skip the iperf3 loopback ceiling.
    #[arg(long)]
    skip_iperf: bool,
    /// Skip Sediment.
    #[arg(long)]
    skip_sediment: bool,
    /// Skip the peer broker (tansu).
    #[arg(long)]
    skip_peer: bool,
    /// Pin the broker processes to these CPUs (`taskset -c LIST`, e.g. `1`). Run the harness
    /// itself under `taskset -c 0` to give client and broker one core each.
    #[arg(long, value_name = "LIST")]
    broker_cpus: Option<String>,
    /// Parent directory for Sediment's temporary data directory (default: $TMPDIR or /tmp).
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// Produce with an idempotent producer (`enable.idempotence=true`, hence acks=all).
    #[arg(long)]
    idempotent: bool,
    /// Also run Sediment with its clients on its TLS listener (a throwaway self-signed
    /// certificate), after the plaintext run, and report TLS against plaintext.
    #[arg(long)]
    tls: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("throughput: FAILED: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    ensure!(args.records > 0, "--records must be at least 1");
    ensure!(args.record_bytes > 0, "--record-bytes must be at least 1");
    ensure!(args.partitions > 0, "--partitions must be at least 1");
    let command = procs::command_line();
    let machine = procs::machine_info();
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();

    println!("Sediment throughput harness (1 MB = 10^6 bytes; MB/s counts record values only)");
    println!("command: {command}");
    for (k, v) in machine.as_object().into_iter().flatten() {
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        println!("machine {k}: {v}");
    }
    println!(
        "workload: {} records x {} B = {:.1} MB, {} partition(s), acks=1, linger.ms={}, batch.size={}, compression none, librdkafka {librdkafka}",
        args.records,
        args.record_bytes,
        (args.records * args.record_bytes as u64) as f64 / 1e6,
        args.partitions,
        args.linger_ms,
        args.batch_bytes
    );

    let w = Workload {
        topic: "bench-throughput".to_string(),
        records: args.records,
        record_bytes: args.record_bytes,
        partitions: args.partitions,
        linger_ms: args.linger_ms,
        batch_bytes: args.batch_bytes,
        queue_kbytes: args.queue_kbytes,
        phase_timeout: Duration::from_secs(args.phase_timeout_secs),
        broker_cpus: args.broker_cpus.clone(),
        idempotent: args.idempotent,
        compression: "none".to_string(),
        client_props: Vec::new(),
    };
    let payloads = Payloads::new(args.record_bytes);

    // Resolve binaries before spending minutes on the first stages.
    let sediment_bin = (!args.skip_sediment)
        .then(targets::sediment_bin)
        .transpose()?;
    let tansu_bin = (!args.skip_peer).then(targets::tansu_bin).transpose()?;

    let iperf = if args.skip_iperf {
        None
    } else {
        println!(
            "\n[1/3] loopback TCP ceiling: iperf3, one stream over 127.0.0.1, {} s",
            args.iperf_seconds
        );
        let r = targets::iperf_ceiling(args.iperf_seconds).context("iperf3 stage")?;
        println!(
            "  iperf3: {:.2} Gbit/s = {:.1} MB/s",
            r.bits_per_second / 1e9,
            r.mb_per_s()
        );
        Some(r)
    };

    let sediment = match &sediment_bin {
        None => None,
        Some(bin) => {
            println!("\n[2/3] sediment: {}", bin.display());
            let tmp = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
            Some(targets::run_sediment(bin, &tmp, &w, &payloads, false).context("sediment stage")?)
        }
    };
    let sediment_tls = match &sediment_bin {
        Some(bin) if args.tls => {
            println!("\n[2b/3] sediment, clients over TLS: {}", bin.display());
            let tmp = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
            Some(
                targets::run_sediment(bin, &tmp, &w, &payloads, true)
                    .context("sediment TLS stage")?,
            )
        }
        _ => None,
    };

    let peer = match &tansu_bin {
        None => None,
        Some(bin) => {
            println!(
                "\n[3/3] peer broker tansu: {} ({})",
                bin.display(),
                targets::version_of(bin)
            );
            Some(targets::run_tansu(bin, &w, &payloads).context("tansu stage")?)
        }
    };

    let report = Report {
        iperf,
        sediment,
        sediment_tls,
        peer,
    };
    report.print_table(if args.idempotent {
        "idempotent producer, acks=all"
    } else {
        "acks=1"
    });
    if let Some(path) = &args.json {
        let value = report.to_json(&command, &machine, &args, &librdkafka);
        std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nresults written to {}", path.display());
    }
    Ok(())
}

struct Report {
    iperf: Option<IperfStats>,
    sediment: Option<BrokerRun>,
    /// Sediment with the clients on its TLS listener (`--tls`).
    sediment_tls: Option<BrokerRun>,
    peer: Option<BrokerRun>,
}

/// One table row: MB/s, rec/s, p50 ms, p99 ms.
struct Row {
    label: String,
    mb_s: f64,
    rec_s: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Report {
    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        if let Some(i) = &self.iperf {
            rows.push(Row {
                label: "loopback TCP ceiling (iperf3)".to_string(),
                mb_s: i.mb_per_s(),
                rec_s: None,
                p50_ms: None,
                p99_ms: None,
            });
        }
        for run in [&self.sediment, &self.sediment_tls, &self.peer]
            .into_iter()
            .flatten()
        {
            let p = &run.produce;
            rows.push(Row {
                label: format!("{} produce", run.name),
                mb_s: mb_per_s(p.bytes, p.secs),
                rec_s: Some(p.records as f64 / p.secs),
                p50_ms: Some(f64::from(p.p50_us) / 1000.0),
                p99_ms: Some(f64::from(p.p99_us) / 1000.0),
            });
            for (label, c) in [
                ("consume", &run.consume),
                ("consume (defaults)", &run.consume_defaults),
            ] {
                rows.push(Row {
                    label: format!("{} {label}", run.name),
                    mb_s: mb_per_s(c.bytes, c.secs),
                    rec_s: Some(c.records as f64 / c.secs),
                    p50_ms: None,
                    p99_ms: None,
                });
            }
        }
        rows
    }

    /// (label, value) for each ratio whose two sides were measured.
    fn ratios(&self) -> Vec<(String, f64)> {
        let produce = |r: &BrokerRun| mb_per_s(r.produce.bytes, r.produce.secs);
        let consume = |r: &BrokerRun| mb_per_s(r.consume.bytes, r.consume.secs);
        let consume_defaults =
            |r: &BrokerRun| mb_per_s(r.consume_defaults.bytes, r.consume_defaults.secs);
        let mut out = Vec::new();
        if let (Some(s), Some(t)) = (&self.sediment, &self.sediment_tls) {
            out.push((
                "sediment TLS produce / plaintext produce".to_string(),
                produce(t) / produce(s),
            ));
            out.push((
                "sediment TLS consume / plaintext consume".to_string(),
                consume(t) / consume(s),
            ));
            out.push((
                "sediment TLS consume / plaintext (defaults)".to_string(),
                consume_defaults(t) / consume_defaults(s),
            ));
        }
        if let Some(s) = &self.sediment {
            if let Some(p) = &self.peer {
                out.push((
                    format!("sediment produce / {} produce", p.name),
                    produce(s) / produce(p),
                ));
                out.push((
                    format!("sediment consume / {} consume", p.name),
                    consume(s) / consume(p),
                ));
                out.push((
                    format!("sediment consume / {} consume (defaults)", p.name),
                    consume_defaults(s) / consume_defaults(p),
                ));
            }
            if let Some(i) = &self.iperf {
                out.push((
                    "sediment produce / loopback ceiling".to_string(),
                    produce(s) / i.mb_per_s(),
                ));
                out.push((
                    "sediment consume / loopback ceiling".to_string(),
                    consume(s) / i.mb_per_s(),
                ));
                out.push((
                    "sediment consume (defaults) / loopback ceiling".to_string(),
                    consume_defaults(s) / i.mb_per_s(),
                ));
            }
        }
        out
    }

    fn print_table(&self, producer: &str) {
        let dash =
            |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        println!("\nResults (1 MB = 10^6 bytes; latency = enqueue to delivery report; {producer})");
        println!(
            "{:<32} {:>10} {:>12} {:>9} {:>9}",
            "", "MB/s", "rec/s", "p50 ms", "p99 ms"
        );
        for row in self.rows() {
            println!(
                "{:<32} {:>10.1} {:>12} {:>9} {:>9}",
                row.label,
                row.mb_s,
                dash(row.rec_s, 0),
                dash(row.p50_ms, 2),
                dash(row.p99_ms, 2)
            );
        }
        let ratios = self.ratios();
        if !ratios.is_empty() {
            println!();
            for (label, value) in ratios {
                println!("{label:<40} {value:>7.3}x");
            }
        }
    }

    fn to_json(&self, command: &str, machine: &Value, args: &Args, librdkafka: &str) -> Value {
        let broker = |r: &BrokerRun| {
            let p = &r.produce;
            let c = &r.consume;
            let d = &r.consume_defaults;
            json!({
                "name": r.name,
                "version": r.version,
                "produce": {
                    "records": p.records,
                    "bytes": p.bytes,
                    "seconds": p.secs,
                    "mb_per_s": mb_per_s(p.bytes, p.secs),
                    "records_per_s": p.records as f64 / p.secs,
                    "latency_p50_ms": f64::from(p.p50_us) / 1000.0,
                    "latency_p99_ms": f64::from(p.p99_us) / 1000.0,
                    "latency_max_ms": f64::from(p.max_us) / 1000.0,
                },
                "consume": {
                    "records": c.records,
                    "bytes": c.bytes,
                    "seconds": c.secs,
                    "mb_per_s": mb_per_s(c.bytes, c.secs),
                    "records_per_s": c.records as f64 / c.secs,
                    "first_record_after_assign_s": c.first_message_secs,
                },
                "consume_librdkafka_defaults": {
                    "records": d.records,
                    "bytes": d.bytes,
                    "seconds": d.secs,
                    "mb_per_s": mb_per_s(d.bytes, d.secs),
                    "records_per_s": d.records as f64 / d.secs,
                },
            })
        };
        json!({
            "units": "1 MB = 10^6 bytes; MB/s counts record values only",
            "command": command,
            "machine": machine,
            "librdkafka": librdkafka,
            "workload": {
                "records": args.records,
                "record_bytes": args.record_bytes,
                "partitions": args.partitions,
                "acks": 1,
                "linger_ms": args.linger_ms,
                "batch_bytes": args.batch_bytes,
                "queue_kbytes": args.queue_kbytes,
                "compression": "none",
            },
            "iperf3": self.iperf.as_ref().map(|i| json!({
                "seconds": i.seconds,
                "bits_per_second": i.bits_per_second,
                "mb_per_s": i.mb_per_s(),
            })),
            "sediment": self.sediment.as_ref().map(broker),
            "sediment_tls": self.sediment_tls.as_ref().map(broker),
            "peer": self.peer.as_ref().map(broker),
            "ratios": self.ratios().into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }
}
