//! Child processes (brokers, iperf3) that are always cleaned up, and small helpers for ports
//! and bounded waits.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A spawned child process that is killed (SIGKILL) and reaped when dropped, so an error
/// anywhere in the harness never leaves a broker running.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout and stderr appended to `log` (or discarded).
    pub fn spawn(name: &str, cmd: &mut Command, log: Option<&Path>) -> Result<Self> {
        cmd.stdin(Stdio::null());
        match log {
            Some(path) => {
                let file = File::create(path)
                    .with_context(|| format!("cannot create log file {}", path.display()))?;
                cmd.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.map(Path::to_path_buf),
        })
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The last lines of the child's log, for error messages.
    pub fn log_tail(&self) -> String {
        match &self.log {
            Some(path) => log_tail(path, 25),
            None => String::new(),
        }
    }

    /// Fails if the child has already exited (it crashed or rejected its flags).
    pub fn ensure_running(&mut self) -> Result<()> {
        let child = self.child.as_mut().context("child already reaped")?;
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited early with {status}; last lines of its output:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let child = self.child.as_mut().context("child already reaped")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM (`kill -TERM pid`) and waits up to `grace` for a clean exit; after that
    /// the child is killed and this returns an error.
    pub fn terminate(mut self, grace: Duration) -> Result<ExitStatus> {
        let pid = self.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -TERM {pid} ({}) failed: {status}", self.name);
        }
        match self.wait_timeout(grace)? {
            Some(status) => Ok(status),
            None => bail!(
                "{} did not exit within {grace:?} of SIGTERM; killed it",
                self.name
            ),
        }
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// The last `lines` lines of a text file, indented, or a note that it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..]
                .iter()
                .map(|l| format!("    | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("    (cannot read {}: {e})", path.display()),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `addr`, failing early if `child` exits.
pub fn wait_for_connect(addr: SocketAddr, child: &mut ChildGuard, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        child.ensure_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing accepted connections on {addr} within {timeout:?}");
        }
        sleep(Duration::from_millis(50));
    }
}

/// Waits until a socket is in LISTEN state on `port` (IPv4 or IPv6), without connecting to
/// it: iperf3 `-s -1` would take a probe connection for its one test.
pub fn wait_for_listen(port: u16, child: &mut ChildGuard, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        child.ensure_running()?;
        if is_listening(port) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listened on port {port} within {timeout:?}");
        }
        sleep(Duration::from_millis(20));
    }
}

fn is_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let mut cols = line.split_whitespace();
                let local = cols.nth(1).unwrap_or("");
                let state = cols.nth(1).unwrap_or("");
                local.ends_with(&want) && state == "0A"
            })
        })
    })
}

/// Runs `cmd` to completion with a timeout, returning its stdout; stderr is included in the
/// error on failure. Output goes through temporary files so a chatty child never blocks.
pub fn run_with_timeout(name: &str, cmd: &mut Command, timeout: Duration) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
    let mut guard = ChildGuard {
        name: name.to_string(),
        child: Some(child),
        log: Some(err_path.clone()),
    };
    let status = match guard.wait_timeout(timeout)? {
        Some(status) => status,
        None => bail!("{name} did not finish within {timeout:?}"),
    };
    let stdout = std::fs::read_to_string(&out_path)?;
    if !status.success() {
        bail!(
            "{name} failed with {status}; stderr:\n{}\nstdout:\n{}",
            log_tail(&err_path, 25),
            stdout.chars().take(4000).collect::<String>()
        );
    }
    Ok(stdout)
}

/// The command line as typed, quoted where a shell would need it.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the figures were measured on: cores, CPU model, kernel, load at the start.
/// Prints `title`, the command line and the machine, and returns the machine's description
/// (for the JSON results).
pub fn print_header(title: &str) -> serde_json::Value {
    println!("{title}");
    println!("command: {}", command_line());
    let machine = machine_info();
    for (k, v) in machine.as_object().into_iter().flatten() {
        println!(
            "machine {k}: {}",
            v.as_str().map_or_else(|| v.to_string(), str::to_string)
        );
    }
    machine
}

pub fn machine_info() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown".to_string(), |(_, m)| m.trim().to_string());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = run_with_timeout(
        "uname",
        std::process::Command::new("uname").arg("-srm"),
        Duration::from_secs(5),
    )
    .map_or("unknown".to_string(), |s| s.trim().to_string());
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map_or("unknown".to_string(), |s| s.trim().to_string());
    serde_json::json!({
        "nproc": nproc,
        "cpu": model,
        "kernel": kernel,
        "loadavg_at_start": loadavg,
    })
}
