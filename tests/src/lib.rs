//! Harness for Sediment's end-to-end tests: start the real `sediment` binary on free loopback
//! ports with its own temporary data directory, talk to it with real clients, kill it, restart it.
//!
//! The binary is the release build shared by every test (`cargo build --release -p sediment-cli`,
//! done by `.ci/run`); `SEDIMENT_BIN` overrides its path. Python clients run under
//! `SEDIMENT_PYTHON` (default `python3`), which `scripts/setup-test-deps.sh` prepares.

pub mod archive;
pub mod kafka;
pub mod meta;
pub mod s3;
pub mod tls;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, Request};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Longest wait for a broker to start or stop.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of the `sediment` binary under test.
pub fn sediment_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SEDIMENT_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test binary> -> target/<profile>/sediment
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("sediment");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --release -p sediment-cli` (or set SEDIMENT_BIN)",
        bin.display()
    );
    bin
}

/// How to start a broker.
#[derive(Debug, Default, Clone)]
pub struct BrokerOptions {
    /// Extra `sediment serve` flags.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Contents of a TOML config file passed with `--config`.
    pub config_toml: Option<String>,
}

impl BrokerOptions {
    /// Adds an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Adds a config file.
    pub fn config(mut self, toml: &str) -> Self {
        self.config_toml = Some(toml.into());
        self
    }
}

/// A running `sediment serve` process with its own data directory.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    options: BrokerOptions,
    /// Kafka bootstrap address, `127.0.0.1:PORT`.
    pub kafka: String,
    /// Admin HTTP address, `127.0.0.1:PORT`.
    pub admin: String,
    /// TLS listener address, `127.0.0.1:PORT`, when the broker runs one.
    pub kafka_tls: Option<String>,
    starts: u32,
}

impl Broker {
    /// Starts a broker with default settings on free ports.
    pub fn start() -> Self {
        Self::start_with(BrokerOptions::default())
    }

    /// Starts a broker with `options`.
    pub fn start_with(options: BrokerOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = Self {
            child: None,
            dir,
            options,
            kafka: String::new(),
            admin: String::new(),
            kafka_tls: None,
            starts: 0,
        };
        broker.spawn().expect("broker starts");
        broker
    }

    /// The options the next (re)start uses.
    pub fn options_mut(&mut self) -> &mut BrokerOptions {
        &mut self.options
    }

    /// Runs the `sediment` binary with `args` (a CLI command such as `archive ls`), at most
    /// two minutes.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new(sediment_bin())
                .args(args)
                .env("SEDIMENT_ADMIN_URL", format!("http://{}", self.admin)),
            Duration::from_secs(120),
        )
        .expect("sediment CLI runs")
    }

    /// GETs `path` from the admin server and parses the JSON body, failing on a non-200.
    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.admin_get(path).expect("admin API answers");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    /// Everything the broker logged, across restarts.
    pub fn logs(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The `sediment serve` command this broker runs, for tests that start it themselves.
    pub fn command(&self, listeners_file: &Path) -> Command {
        let mut cmd = Command::new(sediment_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--kafka-listen")
            .arg("127.0.0.1:0")
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .arg("--listeners-file")
            .arg(listeners_file)
            .args(&self.options.args)
            .env("RUST_LOG", "info")
            .env_remove("SEDIMENT_CONFIG");
        if let Some(toml) = &self.options.config_toml {
            let path = self.dir.path().join("sediment.toml");
            fs::write(&path, toml).expect("write config");
            cmd.arg("--config").arg(path);
        }
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let listeners = self
            .dir
            .path()
            .join(format!("listeners-{}.json", self.starts));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let (child, v) =
            spawn_until_listening(&mut self.command(&listeners), log, &listeners, || {
                self.logs()
            })?;
        self.kafka = v["kafka"].as_str().context("kafka address")?.to_string();
        self.admin = v["admin"].as_str().context("admin address")?.to_string();
        self.kafka_tls = v["kafka_tls"].as_str().map(str::to_string);
        self.child = Some(child);
        Ok(())
    }

    /// Process id of the running broker.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "sediment did not exit within {START_TIMEOUT:?} of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same data directory (new ports).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker before restarting it");
        self.spawn().expect("broker restarts");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// GETs `path` from the admin server: (status, body).
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        self.admin_request("GET", path, None)
    }

    /// POSTs the JSON `body` to `path` on the admin server: (status, body).
    pub fn admin_post(&self, path: &str, body: &serde_json::Value) -> Result<(u16, String)> {
        self.admin_request("POST", path, Some(body))
    }

    fn admin_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, String)> {
        let mut s = TcpStream::connect(&self.admin)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status: u16 = out
            .split_whitespace()
            .nth(1)
            .context("status line")?
            .parse()?;
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- sediment log ----\n{}\n---- end of log ----",
                self.logs()
            );
        }
        self.kill9();
    }
}

/// Spawns `cmd` (a `sediment serve … --listeners-file listeners`) with stderr to `log` and
/// waits until it has written its listeners file: returns the child and the file's JSON, or
/// an error with the process log (`logs`) when it exits or takes over a minute.
pub fn spawn_until_listening(
    cmd: &mut Command,
    log: fs::File,
    listeners: &Path,
    logs: impl Fn() -> String,
) -> Result<(Child, serde_json::Value)> {
    cmd.stdout(Stdio::null()).stderr(log);
    let mut child = cmd.spawn().context("spawn sediment")?;
    let deadline = Instant::now() + START_TIMEOUT;
    while !listeners.exists() {
        if let Some(status) = child.try_wait()? {
            bail!("sediment exited during start-up with {status}:\n{}", logs());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "sediment did not start within {START_TIMEOUT:?}:\n{}",
                logs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let v = serde_json::from_slice(&fs::read(listeners)?)?;
    Ok((child, v))
}

/// A blocking Kafka connection that sends hand-made frames or typed requests, for tests that
/// need to see exactly what goes over the wire.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    correlation_id: i32,
}

impl RawClient {
    /// Connects with a 10 s read timeout.
    pub fn connect(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            correlation_id: 0,
        })
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes `body` with a 4-byte length prefix.
    pub fn send_frame(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        self.stream.write_all(&f)
    }

    /// Reads one response frame; `Ok(None)` if the broker closed the connection.
    pub fn read_frame(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Some(body))
    }

    /// Whether the broker closed the connection (reads until EOF or timeout).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// Encodes a request frame for `body` at `version`.
    pub fn encode<R: Request>(&mut self, version: i16, body: &R) -> Result<Vec<u8>> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some("sediment-tests".into()));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, R::header_version(version))?;
        body.encode(&mut buf, version)?;
        Ok(buf.to_vec())
    }

    /// Sends a typed request and decodes its typed response.
    pub fn request<R: Request>(&mut self, version: i16, body: &R) -> Result<R::Response> {
        let frame = self.encode(version, body)?;
        self.send_frame(&frame)?;
        let resp = self
            .read_frame()?
            .context("connection closed before the response")?;
        let mut buf = Bytes::from(resp);
        let header = ResponseHeader::decode(
            &mut buf,
            <R::Response as kafka_protocol::protocol::HeaderVersion>::header_version(version),
        )?;
        anyhow::ensure!(
            header.correlation_id == self.correlation_id,
            "correlation id mismatch"
        );
        R::Response::decode(&mut buf, version)
    }
}

/// A Fetch request for one partition from `offset`, at most `max_bytes`, answered at once
/// (`max_wait_ms` and `min_bytes` 0; set them on the result for a long poll).
pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(max_bytes)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(topic.to_string().into()))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(max_bytes),
                ]),
        ])
}

/// The same request naming its topic by id (Fetch v13+).
pub fn with_topic_id(mut req: FetchRequest, id: uuid::Uuid) -> FetchRequest {
    req.topics[0].topic_id = id;
    req
}

/// A plain record at `offset` (relative to its batch) for `kafka-protocol`'s batch encoder.
pub fn record(offset: i64, timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // kafka-protocol starts a new batch whenever offset - sequence changes.
        sequence: offset as i32,
        timestamp,
        key,
        value,
        headers: IndexMap::new(),
    }
}

/// Encodes `records` as one v2 batch with `compression`.
pub fn encode_batch(records: &[Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// Python interpreter with the test clients installed.
pub fn python() -> String {
    std::env::var("SEDIMENT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `tests/python/<script>` with `args` (at most 5 minutes); fails with its output if it
/// exits non-zero.
pub fn run_python(script: &str, args: &[&str]) -> Result<Output> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = run_with_timeout(
        Command::new(python()).arg(&path).args(args),
        Duration::from_secs(300),
    )
    .with_context(|| format!("run {} {}", python(), path.display()))?;
    if !out.status.success() {
        bail!(
            "{script} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Runs a command with a timeout, returning its output (read on threads, so a chatty command
/// cannot block on a full pipe).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut out_pipe = child.stdout.take().context("stdout")?;
    let mut err_pipe = child.stderr.take().context("stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{cmd:?} timed out after {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
