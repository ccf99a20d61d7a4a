//! [`MetaReplica`]: a broker's copy of the metadata of a remote quorum. It follows the voters'
//! applied commands (`/meta/v1/changes`, a long poll) and applies them to its own
//! [`MetaState`] (applying is deterministic, so the copy equals the voters' state at the same
//! index). Reads look at the copy; a write returns once the copy has reached the write's log
//! index, so a broker reads back what it wrote. Watchers are told the new index on every
//! change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::{Changes, Command, Heartbeat, MetaClient, MetaError, MetaState, Outcome};

/// How long one changes request waits for something new.
const POLL_WAIT: Duration = Duration::from_secs(5);

/// A followed copy of a remote metadata quorum's state.
#[derive(Debug, Clone)]
pub struct MetaReplica {
    client: MetaClient,
    copy: Arc<RwLock<(u64, MetaState)>>,
    applied: Arc<tokio::sync::watch::Sender<u64>>,
    runtime: tokio::runtime::Handle,
}

impl MetaReplica {
    /// Connects through `client` and fetches the current state (retrying within the client's
    /// deadline). Call [`MetaReplica::follow`] to keep it current.
    pub async fn connect(client: MetaClient) -> Result<Self, MetaError> {
        let replica = Self {
            client,
            copy: Arc::new(RwLock::new((0, MetaState::default()))),
            applied: Arc::new(tokio::sync::watch::channel(0).0),
            runtime: tokio::runtime::Handle::current(),
        };
        replica.catch_up_once(Duration::ZERO).await?;
        Ok(replica)
    }

    /// The client it uses.
    pub fn client(&self) -> &MetaClient {
        &self.client
    }

    /// Index of the last command applied to the copy.
    pub fn index(&self) -> u64 {
        self.copy.read().0
    }

    /// Runs `f` on the copy (keep it short: it holds the copy's lock).
    pub fn view<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.copy.read().1)
    }

    /// Told the copy's index after every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Fetches what the voters applied after the copy's index (waiting up to `wait` for
    /// something new) and applies it.
    async fn catch_up_once(&self, wait: Duration) -> Result<(), MetaError> {
        let after = self.index();
        let changes = self.client.changes(after, wait).await?;
        let mut copy = self.copy.write();
        let advanced = match changes {
            Changes::Entries { to, entries } => {
                for (index, cmd) in entries {
                    if index > copy.0 {
                        copy.1.apply(&cmd);
                    }
                }
                // The answering voter may be behind this copy: never go back.
                if to > copy.0 {
                    copy.0 = to;
                    true
                } else {
                    false
                }
            }
            Changes::State { index, state } if index > copy.0 => {
                *copy = (index, state);
                true
            }
            Changes::State { .. } => false,
        };
        let index = copy.0;
        drop(copy);
        if advanced {
            self.applied.send_replace(index);
        }
        Ok(())
    }

    /// Keeps the copy current until the returned task is aborted. Errors (every voter
    /// unreachable) are retried after a short pause; the copy stays as it was meanwhile.
    pub fn follow(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        self.runtime.spawn(async move {
            loop {
                if let Err(e) = me.catch_up_once(POLL_WAIT).await {
                    tracing::warn!(error = %e, "cannot follow the metadata quorum; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        })
    }

    /// Waits until the copy has reached log index `index`, fetching changes itself (so it does
    /// not depend on [`MetaReplica::follow`]), for up to `deadline`.
    async fn reach(&self, index: u64, deadline: Duration) -> Result<(), MetaError> {
        let start = Instant::now();
        while self.index() < index {
            if start.elapsed() > deadline {
                return Err(MetaError::Unavailable(format!(
                    "the metadata copy did not reach index {index} in {deadline:?}"
                )));
            }
            self.catch_up_once(Duration::from_millis(200)).await?;
        }
        Ok(())
    }

    /// Replicates `cmd` through the voters and returns its outcome once the copy shows it.
    /// A committed write is not an error even if the copy cannot catch up in time (it is
    /// committed; the follower loop brings the copy there later).
    pub async fn write(&self, cmd: Command) -> Result<Outcome, MetaError> {
        let written = self.client.write_indexed(&cmd).await?;
        if let Err(e) = self.reach(written.index, Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "a committed metadata write is not in this broker's copy yet");
        }
        Ok(written.outcome)
    }

    /// [`MetaReplica::write`] for callers that are not async; on a multi-threaded runtime's
    /// worker it uses `block_in_place`. Must not be called on a current-thread runtime's
    /// thread.
    pub fn write_blocking(&self, cmd: Command) -> Result<Outcome, MetaError> {
        if crate::on_multi_thread_runtime() {
            tokio::task::block_in_place(|| self.runtime.block_on(self.write(cmd)))
        } else {
            self.runtime.block_on(self.write(cmd))
        }
    }

    /// Sends a heartbeat for a broker.
    pub async fn heartbeat(&self, beat: Heartbeat) -> Result<Outcome, MetaError> {
        self.client.heartbeat(beat).await
    }
}
