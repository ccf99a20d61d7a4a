//! Metadata voters as real processes: `sediment serve --process-roles controller`, each with
//! its own data directory, on loopback ports chosen up front (every voter must know the
//! others' addresses before any starts).

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use anyhow::Result;
use sediment_meta::{MetaClient, MetaStatus};

use crate::{run_with_timeout, sediment_bin, spawn_until_listening};

/// One metadata voter process.
#[derive(Debug)]
pub struct Controller {
    /// Node id.
    pub id: u64,
    /// Controller address, `127.0.0.1:PORT`.
    pub addr: String,
    voters: String,
    /// Extra environment variables of the process.
    pub env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

/// A free loopback port (bound and released; the caller binds it again shortly after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Controller {
    /// A voter `id` listening on `addr`, of the quorum `voters` (`1@host:port,…`); not started.
    pub fn new(id: u64, addr: String, voters: String) -> Self {
        Self {
            id,
            addr,
            voters,
            env: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            starts: 0,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("controller.log")
    }

    /// Everything it logged, across restarts.
    pub fn logs(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts (or restarts) the process on the same data directory and address.
    pub fn start(&mut self) -> Result<()> {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let listeners = self
            .dir
            .path()
            .join(format!("listeners-{}.json", self.starts));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(sediment_bin());
        cmd.args(["serve", "--process-roles", "controller", "--node-id"])
            .arg(self.id.to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--controller-listen", &self.addr])
            .args(["--controller-quorum-voters", &self.voters])
            .arg("--listeners-file")
            .arg(&listeners)
            .env("RUST_LOG", "info,openraft=warn")
            .env_remove("SEDIMENT_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let (child, _) = spawn_until_listening(&mut cmd, log, &listeners, || self.logs())?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- controller {} log ----\n{}\n---- end of log ----",
                self.id,
                self.logs()
            );
        }
        self.kill9();
    }
}

/// A metadata quorum of voter processes.
#[derive(Debug)]
pub struct Quorum {
    /// The voters, node ids 1..=n.
    pub nodes: Vec<Controller>,
}

impl Quorum {
    /// Starts `n` voters. Ports are picked up front; if one was taken in between, all start
    /// again on new ports (at most three attempts).
    pub fn start(n: u64) -> Self {
        Self::start_with(n, &[])
    }

    /// [`Quorum::start`] with extra environment variables for every voter.
    pub fn start_with(n: u64, env: &[(&str, &str)]) -> Self {
        let mut last = None;
        for _ in 0..3 {
            let addrs: Vec<String> = (0..n)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect();
            let voters = Self::voters_arg(&addrs);
            let mut nodes: Vec<Controller> = addrs
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let mut c = Controller::new(i as u64 + 1, a.clone(), voters.clone());
                    c.env = env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    c
                })
                .collect();
            match nodes.iter_mut().try_for_each(Controller::start) {
                Ok(()) => return Self { nodes },
                Err(e) => last = Some(e),
            }
        }
        panic!("the quorum did not start: {:?}", last);
    }

    fn voters_arg(addrs: &[String]) -> String {
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `controller.quorum_voters` value the voters were started with.
    pub fn voters(&self) -> String {
        self.nodes[0].voters.clone()
    }

    /// Every voter's address.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// The voter with node id `id`.
    pub fn node(&mut self, id: u64) -> &mut Controller {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node with that id")
    }

    /// The statuses of the running voters (those that answer).
    pub async fn statuses(&self) -> Vec<MetaStatus> {
        let client = MetaClient::new(self.addrs(), Duration::from_secs(1));
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            if let Ok(s) = client.status_of(&n.addr).await {
                out.push(s);
            }
        }
        out
    }

    /// Waits until a running voter leads, seen as leader by itself and by a majority of the
    /// running voters in the same term, other than `not`; returns it and how long it took.
    pub async fn wait_for_leader(&self, not: Option<u64>, timeout: Duration) -> (u64, Duration) {
        let start = Instant::now();
        loop {
            let statuses = self.statuses().await;
            if let Some(leader) = statuses.iter().find(|s| s.state == "leader") {
                let agree = statuses
                    .iter()
                    .filter(|s| s.leader == Some(leader.node_id) && s.term == leader.term)
                    .count();
                if Some(leader.node_id) != not && agree * 2 > self.nodes.len() {
                    return (leader.node_id, start.elapsed());
                }
            }
            assert!(
                start.elapsed() < timeout,
                "no leader within {timeout:?}: {statuses:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `sediment meta --bootstrap-controller <all voters> <args>`, at most two minutes.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new(sediment_bin())
                .arg("meta")
                .arg("--bootstrap-controller")
                .arg(self.addrs().join(","))
                .args(args),
            Duration::from_secs(120),
        )
        .expect("sediment meta runs")
    }
}

/// Options of broker `id` (`--process-roles broker`) on the quorum `voters`, heartbeating every
/// 300 ms so that fencing and registration show quickly.
pub fn broker_on_quorum(id: i32, voters: &str) -> crate::BrokerOptions {
    let mut options = crate::BrokerOptions::default()
        .env("SEDIMENT_CONTROLLER_BROKER_HEARTBEAT_INTERVAL_MS", "300");
    options.args = [
        "--process-roles",
        "broker",
        "--node-id",
        &id.to_string(),
        "--controller-quorum-voters",
        voters,
    ]
    .map(str::to_string)
    .to_vec();
    options
}
