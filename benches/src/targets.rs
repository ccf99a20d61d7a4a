//! What the harness measures against: the iperf3 loopback ceiling, a Sediment broker, and
//! the peer broker (tansu). Each broker is started fresh, given the topic, and stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::procs::{ChildGuard, free_port, run_with_timeout, wait_for_connect, wait_for_listen};
use crate::workload::{self, ConsumeStats, ConsumerProfile, Payloads, ProduceStats, Workload};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The iperf3 result: one TCP stream over 127.0.0.1.
#[derive(Debug, Clone)]
pub struct IperfStats {
    pub bits_per_second: f64,
    pub seconds: u32,
}

impl IperfStats {
    pub fn mb_per_s(&self) -> f64 {
        self.bits_per_second / 8.0 / 1e6
    }
}

/// Runs `iperf3 -s -1` and `iperf3 -c 127.0.0.1 -t SECONDS -J` on a free port and reads
/// `end.sum_received.bits_per_second`.
pub fn iperf_ceiling(seconds: u32) -> Result<IperfStats> {
    let port = free_port()?.to_string();
    let mut server = ChildGuard::spawn(
        "iperf3 server",
        Command::new("iperf3").args(["-s", "-1", "-p", &port]),
        None,
    )?;
    wait_for_listen(port.parse()?, &mut server, Duration::from_secs(10))?;
    let stdout = run_with_timeout(
        "iperf3 client",
        Command::new("iperf3").args([
            "-c",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            &seconds.to_string(),
            "-J",
        ]),
        Duration::from_secs(u64::from(seconds) + 30),
    )?;
    let json: serde_json::Value =
        serde_json::from_str(&stdout).context("iperf3 -J did not print JSON")?;
    if let Some(err) = json.get("error") {
        bail!("iperf3 reported an error: {err}");
    }
    let bits_per_second = json
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .context("iperf3 JSON has no end.sum_received.bits_per_second")?;
    // With -1 the server exits after its one test.
    if server.wait_timeout(Duration::from_secs(5))?.is_none() {
        server.kill();
    }
    Ok(IperfStats {
        bits_per_second,
        seconds,
    })
}

/// The results of the workload against one broker.
#[derive(Debug, Clone)]
pub struct BrokerRun {
    pub name: String,
    pub version: String,
    pub produce: ProduceStats,
    /// Consume with large fetches.
    pub consume: ConsumeStats,
    /// Consume again with librdkafka's default fetch settings.
    pub consume_defaults: ConsumeStats,
}

/// Creates the topic, produces, consumes, printing figures as it goes.
fn run_workload(
    name: &str,
    bootstrap: &str,
    w: &Workload,
    payloads: &Payloads,
) -> Result<(ProduceStats, ConsumeStats, ConsumeStats)> {
    let t = Instant::now();
    workload::create_topic(bootstrap, w).context("creating the topic")?;
    println!(
        "  {name}: topic {} created ({} partition(s)) in {:.2} s",
        w.topic,
        w.partitions,
        t.elapsed().as_secs_f64()
    );
    let p = workload::produce(bootstrap, w, payloads)?;
    println!(
        "  {name} produce: {} records in {:.3} s = {:.1} MB/s, {:.0} rec/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p.records,
        p.secs,
        workload::mb_per_s(p.bytes, p.secs),
        p.records as f64 / p.secs,
        f64::from(p.p50_us) / 1000.0,
        f64::from(p.p99_us) / 1000.0,
        f64::from(p.max_us) / 1000.0,
    );
    let mut consumed = Vec::new();
    for (label, profile) in [
        ("tuned", ConsumerProfile::Tuned),
        ("librdkafka defaults", ConsumerProfile::Defaults),
    ] {
        let c = workload::consume(bootstrap, w, profile)?;
        println!(
            "  {name} consume ({label}): {} records in {:.3} s = {:.1} MB/s, {:.0} rec/s (first record {:.3} s after assign); count verified",
            c.records,
            c.secs,
            workload::mb_per_s(c.bytes, c.secs),
            c.records as f64 / c.secs,
            c.first_message_secs,
        );
        consumed.push(c);
    }
    let defaults = consumed.pop().expect("two consume runs");
    let c = consumed.pop().expect("two consume runs");
    Ok((p, c, defaults))
}

/// `<bin> --version`, first line, or "unknown".
pub fn version_of(bin: &Path) -> String {
    run_with_timeout(
        "version",
        Command::new(bin).arg("--version"),
        Duration::from_secs(10),
    )
    .ok()
    .and_then(|s| s.lines().next().map(str::trim).map(str::to_string))
    .unwrap_or_else(|| "unknown".to_string())
}

/// Starts `sediment serve` on a fresh data directory under `tmp_parent` with port-0 listeners,
/// runs the workload, then stops it with SIGTERM and checks that it exited cleanly.
pub fn run_sediment(
    bin: &Path,
    tmp_parent: &Path,
    w: &Workload,
    payloads: &Payloads,
    tls: bool,
) -> Result<BrokerRun> {
    let dir = tempfile::Builder::new()
        .prefix("sediment-bench-")
        .tempdir_in(tmp_parent)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {}",
                tmp_parent.display()
            )
        })?;
    let data_dir = dir.path().join("data");
    let listeners = dir.path().join("listeners.json");
    let log = dir.path().join("sediment.log");
    let mut cmd = broker_command(bin, w);
    let mut w = w.clone();
    if tls {
        // A throwaway self-signed certificate for 127.0.0.1, which the clients trust.
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .context("cannot generate a TLS certificate")?;
        let (cert, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, key.cert.pem())?;
        std::fs::write(&key_file, key.signing_key.serialize_pem())?;
        cmd.env("SEDIMENT_KAFKA_TLS_LISTEN", "127.0.0.1:0")
            .env("SEDIMENT_KAFKA_TLS_CERT_FILE", &cert)
            .env("SEDIMENT_KAFKA_TLS_KEY_FILE", &key_file);
        w.client_props = vec![
            ("security.protocol".into(), "ssl".into()),
            ("ssl.ca.location".into(), cert.display().to_string()),
        ];
    }
    let w = &w;
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&data_dir)
        .args([
            "--kafka-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--listeners-file")
        .arg(&listeners);
    let mut child = ChildGuard::spawn("sediment", &mut cmd, Some(&log))?;
    let bootstrap = wait_for_listener(
        &listeners,
        &mut child,
        if tls { "kafka_tls" } else { "kafka" },
    )?;
    println!(
        "  sediment: pid {} listening on {bootstrap} (data dir {} on {})",
        child.id(),
        data_dir.display(),
        filesystem_of(&data_dir)
    );
    let name = if tls { "sediment-tls" } else { "sediment" };
    let (produce, consume, consume_defaults) = match run_workload(name, &bootstrap, w, payloads) {
        Ok(r) => r,
        Err(e) => bail!("{e:#}\nlast lines of sediment's log:\n{}", child.log_tail()),
    };
    let status = child.terminate(STOP_TIMEOUT)?;
    if !status.success() {
        bail!(
            "sediment exited with {status} after SIGTERM; log:\n{}",
            crate::procs::log_tail(&log, 25)
        );
    }
    println!("  sediment: stopped with SIGTERM ({status})");
    Ok(BrokerRun {
        name: name.to_string(),
        version: version_of(bin),
        produce,
        consume,
        consume_defaults,
    })
}

/// Waits for `sediment serve --listeners-file` to write its Kafka address.
pub fn wait_for_listeners_file(path: &Path, child: &mut ChildGuard) -> Result<String> {
    wait_for_listener(path, child, "kafka")
}

/// Waits for `sediment serve --listeners-file` to write its addresses; returns the one named
/// `key` (`kafka`, `kafka_tls`).
fn wait_for_listener(path: &Path, child: &mut ChildGuard, key: &str) -> Result<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        child.ensure_running()?;
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
        {
            return json
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("{} has no {key:?} address: {text}", path.display()));
        }
        if Instant::now() >= deadline {
            bail!(
                "sediment did not write {} within {START_TIMEOUT:?}; its log:\n{}",
                path.display(),
                child.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `bin`, under `taskset -c <cpus>` when the workload pins brokers.
fn broker_command(bin: &Path, w: &Workload) -> Command {
    match &w.broker_cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpus).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// Starts `tansu broker` with the in-memory storage engine on a free port, runs the workload,
/// then kills it.
pub fn run_tansu(bin: &Path, w: &Workload, payloads: &Payloads) -> Result<BrokerRun> {
    let dir = tempfile::Builder::new().prefix("tansu-bench-").tempdir()?;
    let log = dir.path().join("tansu.log");
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let mut cmd = broker_command(bin, w);
    cmd.args([
        "broker",
        "--storage-engine",
        "memory://tansu/",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
    ]);
    let mut child = ChildGuard::spawn("tansu", &mut cmd, Some(&log))?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_for_connect(addr, &mut child, START_TIMEOUT)?;
    println!(
        "  tansu: pid {} listening on {addr} (storage memory://tansu/)",
        child.id()
    );
    let bootstrap = addr.to_string();
    let (produce, consume, consume_defaults) = match run_workload("tansu", &bootstrap, w, payloads)
    {
        Ok(r) => r,
        Err(e) => bail!("{e:#}\nlast lines of tansu's log:\n{}", child.log_tail()),
    };
    child.ensure_running()?;
    child.kill();
    println!("  tansu: killed");
    Ok(BrokerRun {
        name: "tansu".to_string(),
        version: version_of(bin),
        produce,
        consume,
        consume_defaults,
    })
}

/// The sediment binary: `$SEDIMENT_BIN`, else `<workspace>/target/release/sediment`, else
/// `sediment` next to this harness binary (a custom target directory).
pub fn sediment_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SEDIMENT_BIN") {
        let bin = PathBuf::from(bin);
        ensure!(
            bin.is_file(),
            "SEDIMENT_BIN={} is not a file",
            bin.display()
        );
        return Ok(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidate = workspace.join("target/release/sediment");
    if candidate.is_file() {
        return Ok(candidate);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(sibling) = exe.parent().map(|d| d.join("sediment"))
        && sibling.is_file()
    {
        return Ok(sibling);
    }
    bail!(
        "no sediment binary at {}; build it with `cargo build --release -p sediment-cli` or set SEDIMENT_BIN",
        candidate.display()
    )
}

/// The tansu binary: `$TANSU_BIN`, else `tansu` on PATH, else /tmp/tansu-install/bin/tansu.
pub fn tansu_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("TANSU_BIN") {
        let bin = PathBuf::from(bin);
        ensure!(bin.is_file(), "TANSU_BIN={} is not a file", bin.display());
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let fallback = PathBuf::from("/tmp/tansu-install/bin/tansu");
    if fallback.is_file() {
        return Ok(fallback);
    }
    bail!(
        "no tansu binary: set TANSU_BIN, put tansu on PATH, or run benches/run.sh (or pass --skip-peer)"
    )
}

/// The filesystem type holding `path` (longest mount-point prefix in /proc/mounts).
pub fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown".to_string();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let (_dev, mount, fs) = (cols.next()?, cols.next()?, cols.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{fs} at {mount}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_string(), |(_, fs)| fs)
}
