//! SeaweedFS as the benchmarks' S3 server, and reading a broker's admin endpoint.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;

use crate::procs::{ChildGuard, free_port, log_tail};

pub const ACCESS_KEY: &str = "bench";
pub const SECRET_KEY: &str = "bench-secret";
pub const BUCKET: &str = "sediment-bench";

/// A running SeaweedFS (S3 on a free port), killed on drop.
#[derive(Debug)]
pub struct Seaweed {
    _child: ChildGuard,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

pub fn weed_bin(arg: Option<&Path>) -> PathBuf {
    if let Some(p) = arg {
        return p.to_path_buf();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/weed");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("weed")
}

pub fn start_seaweed(bin: &Path, tmp: &Path) -> Result<Seaweed> {
    let dir = tempfile::Builder::new()
        .prefix("seaweed-bench-")
        .tempdir_in(tmp)?;
    std::fs::create_dir_all(dir.path().join("data"))?;
    let identities = json!({"identities": [{"name": "bench", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]});
    std::fs::write(dir.path().join("identities.json"), identities.to_string())?;
    let ports: Vec<u16> = (0..10).map(|_| free_port()).collect::<Result<_>>()?;
    let names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "s3.port.iceberg",
        "s3.port.lance",
    ];
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir.path())
        .arg("server")
        .arg(format!("-dir={}", dir.path().join("data").display()))
        .args([
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-filer",
            "-s3",
            "-master.telemetry=false",
        ])
        .arg(format!(
            "-s3.config={}",
            dir.path().join("identities.json").display()
        ));
    for (name, port) in names.iter().zip(&ports) {
        cmd.arg(format!("-{name}={port}"));
    }
    let log = dir.path().join("weed.log");
    let mut child = ChildGuard::spawn("weed", &mut cmd, Some(&log))?;
    let endpoint = format!("http://127.0.0.1:{}", ports[6]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        child.ensure_running()?;
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .args([
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &format!("{ACCESS_KEY}:{SECRET_KEY}"),
            ])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg(format!("{endpoint}/{BUCKET}"))
            .output()
            .context("curl (needed to create the bucket)")?;
        if String::from_utf8_lossy(&out.stdout) == "200" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "SeaweedFS did not come up:\n{}",
            log_tail(&log, 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Seaweed {
        _child: child,
        _dir: dir,
        endpoint,
    })
}

pub fn admin_get(admin: &str, path: &str) -> Result<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://{admin}{path}"))
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
