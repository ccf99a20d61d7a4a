//! Durable storage for openraft: the log, vote and committed id in a `redb` database, and the
//! state machine in memory with its snapshots written to a file beside it. On open the state
//! machine starts from the last snapshot; openraft then applies the committed log after it.

// openraft's traits fix the error type (`StorageError`, over 200 bytes); the helpers here
// return it too rather than boxing and unboxing at every trait method.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::TypeConfig;
use crate::state::{Changes, Command, MetaState, Outcome};

/// Commands kept in memory after they are applied, for [`StateMachine::changes`]: a watcher
/// further behind gets the whole state instead.
const RECENT_KEPT: usize = 4096;

type NodeId = u64;
type Node = openraft::BasicNode;

/// Log entries by index, JSON.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// `vote`, `committed`, `last_purged`, JSON.
const VALUES: TableDefinition<&str, &[u8]> = TableDefinition::new("values");

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

/// The Raft log of one node.
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Opens (or creates) the log database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, StorageError<NodeId>> {
        let db = Database::create(path).map_err(write_err)?;
        let tx = db.begin_write().map_err(write_err)?;
        tx.open_table(LOGS).map_err(write_err)?;
        tx.open_table(VALUES).map_err(write_err)?;
        tx.commit().map_err(write_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn get<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(VALUES).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(VALUES).map_err(write_err)?;
            table.insert(key, bytes.as_slice()).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }

    /// Removes log entries whose index is in `range`.
    fn remove(&self, range: impl RangeBounds<u64>) -> Result<(), StorageError<NodeId>> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(LOGS).map_err(write_err)?;
            table.retain_in(range, |_, _| false).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(LOGS).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.range(range).map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get("last_purged")?;
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(LOGS).map_err(read_err)?;
        let last = match table.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(read_err)?;
                Some(e.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put("vote", vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get("vote")
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.put("committed", &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.get::<Option<LogId<NodeId>>>("committed")?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One transaction, durable (fsync) when it commits, before the callback.
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(LOGS).map_err(write_err)?;
            for entry in entries {
                let bytes = serde_json::to_vec(&entry).map_err(write_err)?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(write_err)?;
            }
        }
        let result = tx.commit();
        let io = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
        result.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove(log_id.index..)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge first: a crash in between leaves entries that are ignored.
        self.put("last_purged", &log_id)?;
        self.remove(..=log_id.index)
    }
}

/// A snapshot as kept: its metadata and bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    data: Vec<u8>,
}

/// What a snapshot's bytes hold.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    state: MetaState,
}

/// [`SnapshotBody`] serialized from a borrowed state (no copy of it).
#[derive(Serialize)]
struct SnapshotBodyRef<'a> {
    state: &'a MetaState,
}

#[derive(Debug, Default)]
struct Machine {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, Node>,
    state: MetaState,
    snapshot: Option<StoredSnapshot>,
    snapshots_built: u64,
    /// The latest applied commands with their log index, oldest first.
    recent: std::collections::VecDeque<(u64, Command)>,
    /// Every command at or after this index is in `recent`.
    recent_from: u64,
}

fn index_of(id: Option<LogId<NodeId>>) -> u64 {
    id.map_or(0, |l| l.index)
}

/// The state machine: [`MetaState`] in memory, snapshots in `snapshot.json`.
#[derive(Debug, Clone)]
pub(crate) struct StateMachine {
    machine: Arc<parking_lot::RwLock<Machine>>,
    snapshot_path: PathBuf,
    /// Held while `snapshot.json` is written: openraft may build a snapshot in the background
    /// while one received from the leader is installed.
    persisting: Arc<parking_lot::Mutex<()>>,
}

impl StateMachine {
    /// Opens the state machine whose snapshot lives in `dir`, starting from that snapshot.
    pub(crate) fn open(dir: &Path) -> Result<Self, StorageError<NodeId>> {
        let snapshot_path = dir.join("snapshot.json");
        let mut machine = Machine::default();
        match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let stored: StoredSnapshot = serde_json::from_slice(&bytes)
                    .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                let body: SnapshotBody = serde_json::from_slice(&stored.data)
                    .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                machine.last_applied = stored.meta.last_log_id;
                machine.last_membership = stored.meta.last_membership.clone();
                machine.state = body.state;
                machine.snapshot = Some(stored);
                machine.recent_from = index_of(machine.last_applied) + 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
        }
        Ok(Self {
            machine: Arc::new(parking_lot::RwLock::new(machine)),
            snapshot_path,
            persisting: Arc::new(parking_lot::Mutex::new(())),
        })
    }

    /// A copy of the current state.
    pub(crate) fn state(&self) -> MetaState {
        self.machine.read().state.clone()
    }

    /// Runs `f` on the current state (no copy; keep `f` short, it holds the lock).
    pub(crate) fn view<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.machine.read().state)
    }

    /// Index of the last applied entry (0: none).
    pub(crate) fn applied_index(&self) -> u64 {
        index_of(self.machine.read().last_applied)
    }

    /// What was applied after index `after`: the commands, when they are all still kept,
    /// otherwise the whole state.
    pub(crate) fn changes(&self, after: u64) -> Changes {
        let m = self.machine.read();
        let to = index_of(m.last_applied);
        if after >= to {
            // Nothing new (or this node is behind the asker).
            Changes::Entries {
                to,
                entries: Vec::new(),
            }
        } else if after.saturating_add(1) >= m.recent_from {
            Changes::Entries {
                to,
                entries: m
                    .recent
                    .iter()
                    .filter(|(i, _)| *i > after)
                    .cloned()
                    .collect(),
            }
        } else {
            Changes::State {
                index: to,
                state: m.state.clone(),
            }
        }
    }

    /// Writes `snapshot` durably (a temporary file, fsync, rename) and makes it the current
    /// one, unless a newer one was stored meanwhile (then nothing is written; `false`).
    fn persist(&self, snapshot: StoredSnapshot) -> Result<bool, StorageError<NodeId>> {
        let _writing = self.persisting.lock();
        let newer_stored = self
            .machine
            .read()
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.last_log_id > snapshot.meta.last_log_id);
        if newer_stored {
            return Ok(false);
        }
        let err = |e: std::io::Error| -> StorageError<NodeId> {
            StorageIOError::write_snapshot(Some(snapshot.meta.signature()), &e).into()
        };
        let tmp = self.snapshot_path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&snapshot)
            .map_err(std::io::Error::other)
            .map_err(err)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&bytes).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.snapshot_path).map_err(err)?;
        if let Some(dir) = self.snapshot_path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        self.machine.write().snapshot = Some(snapshot);
        Ok(true)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Serialized under a read lock (reads go on; applies wait), written (fsync) after it.
        let (data, meta) = {
            let m = self.machine.read();
            let data = serde_json::to_vec(&SnapshotBodyRef { state: &m.state })
                .map_err(|e| StorageIOError::read_state_machine(&e))?;
            (data, (m.last_applied, m.last_membership.clone()))
        };
        let (last_log_id, last_membership) = meta;
        let built = {
            let mut m = self.machine.write();
            m.snapshots_built += 1;
            m.snapshots_built
        };
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{built}", id.leader_id, id.index),
            None => format!("none-{built}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let m = self.machine.read();
        Ok((m.last_applied, m.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut m = self.machine.write();
        let mut out = Vec::new();
        for entry in entries {
            m.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Outcome::Done,
                EntryPayload::Normal(cmd) => {
                    let outcome = m.state.apply(&cmd);
                    m.recent.push_back((entry.log_id.index, cmd));
                    if m.recent.len() > RECENT_KEPT
                        && let Some((dropped, _)) = m.recent.pop_front()
                    {
                        m.recent_from = dropped + 1;
                    }
                    outcome
                }
                EntryPayload::Membership(membership) => {
                    m.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Done
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // Stored first, then the state replaced: a crash in between restarts from it.
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data,
        })?;
        let mut m = self.machine.write();
        m.last_applied = meta.last_log_id;
        m.last_membership = meta.last_membership.clone();
        m.state = body.state;
        m.recent.clear();
        m.recent_from = index_of(meta.last_log_id) + 1;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let m = self.machine.read();
        Ok(m.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let log = LogStore::open(&dir.path().join("raft.redb"))?;
            let sm = StateMachine::open(dir.path())?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(Builder).expect("openraft's storage test suite");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn log_vote_and_snapshot_survive_a_reopen() {
        use openraft::testing::log_id;

        use crate::state::Command;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let cmd = Command::AllocateProducerIds { count: 10 };
        {
            let mut log = LogStore::open(&path).unwrap();
            let mut sm = StateMachine::open(dir.path()).unwrap();
            log.save_vote(&Vote::new(3, 1)).await.unwrap();
            let entries: Vec<Entry<TypeConfig>> = (1..=3)
                .map(|i| Entry {
                    log_id: log_id(3, 1, i),
                    payload: EntryPayload::Normal(cmd.clone()),
                })
                .collect();
            // `append` needs openraft's flush callback, which only openraft creates: write
            // the entries the way `append` does.
            {
                let t = log.db.begin_write().unwrap();
                {
                    let mut table = t.open_table(LOGS).unwrap();
                    for e in &entries {
                        let b = serde_json::to_vec(e).unwrap();
                        table.insert(e.log_id.index, b.as_slice()).unwrap();
                    }
                }
                t.commit().unwrap();
            }
            sm.apply(entries[..2].to_vec()).await.unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            sm.apply(entries[2..].to_vec()).await.unwrap();
        }
        let mut log = LogStore::open(&path).unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id(3, 1, 3))
        );
        // The state machine restarts from its snapshot (two commands applied); openraft
        // re-applies the third from the log.
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(3, 1, 2)));
        assert_eq!(sm.state().next_producer_id, 20);
    }
}
