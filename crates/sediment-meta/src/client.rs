//! [`MetaClient`]: the typed client of a metadata cluster, over the HTTP API of
//! `network.rs`. Any voter answers (followers forward to the leader); while no leader is
//! elected, or a voter is down, the client retries the next voter with backoff until its
//! deadline. A command retried after it did commit changes nothing more: it finds its effect
//! already applied (`Outcome::Unchanged`, or the same committed offset again) or, for
//! producer-id blocks, is handed a fresh block, leaving the first one unused. (A change made
//! by another writer between the two tries is not protected against.)

use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    Changes, Command, Heartbeat, MembershipChange, MetaError, MetaState, MetaStatus, Outcome,
    Written,
};

/// A client of the metadata voters.
#[derive(Debug, Clone)]
pub struct MetaClient {
    addrs: Vec<String>,
    http: reqwest::Client,
    deadline: Duration,
    /// Index of the voter that answered last, tried first.
    preferred: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Turns an HTTP answer of a metadata node into the value or a [`MetaError`].
pub(crate) async fn answer<T: DeserializeOwned>(
    sent: reqwest::Result<reqwest::Response>,
    addr: &str,
) -> Result<T, MetaError> {
    let resp = sent.map_err(|e| MetaError::Unavailable(format!("{addr}: {e}")))?;
    let status = resp.status();
    if status.is_success() {
        return resp
            .json()
            .await
            .map_err(|e| MetaError::Unavailable(format!("{addr}: bad answer: {e}")));
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or(text);
    Err(match status.as_u16() {
        400 => MetaError::Refused(message),
        500 => MetaError::Storage(format!("{addr}: {message}")),
        _ => MetaError::Unavailable(format!("{addr}: {message}")),
    })
}

impl MetaClient {
    /// A client of the voters at `addrs` (`host:port` each) that retries transient failures
    /// for up to `deadline` per call.
    pub fn new(addrs: Vec<String>, deadline: Duration) -> Self {
        Self {
            addrs,
            http: crate::network::http_client(),
            deadline,
            preferred: Default::default(),
        }
    }

    /// The voters' addresses it was given.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Replicates `cmd` and returns its outcome (see [`crate::MetaService::write`]).
    pub async fn write(&self, cmd: &Command) -> Result<Outcome, MetaError> {
        Ok(self.write_indexed(cmd).await?.outcome)
    }

    /// [`MetaClient::write`], with the log index the command was applied at.
    pub async fn write_indexed(&self, cmd: &Command) -> Result<Written, MetaError> {
        self.call(reqwest::Method::POST, "/meta/v1/write", Some(cmd))
            .await
    }

    /// What a voter applied after log index `after`, waiting up to `wait` (at most 10 s) for
    /// something new.
    pub async fn changes(&self, after: u64, wait: Duration) -> Result<Changes, MetaError> {
        let path = format!(
            "/meta/v1/changes?after={after}&wait_ms={}",
            wait.as_millis()
        );
        self.call::<(), _>(reqwest::Method::GET, &path, None).await
    }

    /// Sends a broker's heartbeat to the leader.
    pub async fn heartbeat(&self, beat: Heartbeat) -> Result<Outcome, MetaError> {
        self.call(reqwest::Method::POST, "/meta/v1/heartbeat", Some(&beat))
            .await
    }

    /// The state as of a linearizable read.
    pub async fn read(&self) -> Result<MetaState, MetaError> {
        self.call::<(), _>(reqwest::Method::GET, "/meta/v1/state", None)
            .await
    }

    /// Changes the membership (see [`MembershipChange`]); returns the leader's view after it.
    pub async fn change_membership(
        &self,
        change: &MembershipChange,
    ) -> Result<MetaStatus, MetaError> {
        self.call(reqwest::Method::POST, "/meta/v1/membership", Some(change))
            .await
    }

    /// The status of the voter at `addr` (one attempt, no retry: it is about that node).
    pub async fn status_of(&self, addr: &str) -> Result<MetaStatus, MetaError> {
        let sent = self
            .http
            .get(format!("http://{addr}/meta/v1/status"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        answer(sent, addr).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, MetaError> {
        if self.addrs.is_empty() {
            return Err(MetaError::Refused("no metadata voters given".into()));
        }
        let start = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut i = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let addr = &self.addrs[i % self.addrs.len()];
            let mut req = self
                .http
                .request(method.clone(), format!("http://{addr}{path}"))
                .timeout(Duration::from_secs(15));
            if let Some(b) = body {
                req = req.json(b);
            }
            match answer(req.send().await, addr).await {
                Ok(v) => {
                    self.preferred
                        .store(i % self.addrs.len(), std::sync::atomic::Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if e.is_transient() && start.elapsed() < self.deadline => {
                    tracing::debug!(error = %e, "metadata call failed; trying the next voter");
                    i += 1;
                    // A full round of voters failed: wait before the next (an election takes
                    // a second or two).
                    if i.is_multiple_of(self.addrs.len()) {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}
