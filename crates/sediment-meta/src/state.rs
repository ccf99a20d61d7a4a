//! What the metadata service knows, the typed commands that change it, and how a command is
//! applied. Applying is deterministic (no clock, no randomness: ids and times come in the
//! command), so every voter that applies the same log reaches the same state.

use std::collections::BTreeMap;

use sediment_archive::{ArchivedSegment, CatalogState};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One more named listener a broker advertises besides its primary one (`PLAINTEXT`), such as
/// its TLS listener (`SSL`): clients that reach the cluster through a listener are told the
/// addresses of that same listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Listener name, as in Kafka's `advertised.listeners` (`SSL`).
    pub name: String,
    /// Host clients of this listener connect to.
    pub host: String,
    /// Port clients of this listener connect to.
    pub port: u16,
}

/// A broker as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Host clients connect to.
    pub host: String,
    /// Kafka port.
    pub port: u16,
    /// Rack, when set.
    pub rack: Option<String>,
    /// Listeners besides the primary one.
    #[serde(default)]
    pub listeners: Vec<Endpoint>,
    /// Bumped by every registration, so a restarted broker is told apart from its old self.
    pub epoch: u64,
    /// Set when the broker stopped heartbeating to the metadata leader: it is not listed to
    /// clients and leads nothing until it heartbeats again.
    #[serde(default)]
    pub fenced: bool,
}

/// One partition's leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// Broker leading it.
    pub leader: i32,
    /// Bumped by every leader change.
    pub leader_epoch: i32,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Stable id.
    pub id: Uuid,
    /// Partitions by index.
    pub partitions: Vec<PartitionMeta>,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// A committed consumer offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// Next offset to consume.
    pub offset: i64,
    /// Client metadata.
    pub metadata: Option<String>,
    /// Leader epoch of the last consumed record (-1 unknown).
    pub leader_epoch: i32,
    /// When it was committed (ms, from the command).
    pub commit_timestamp_ms: i64,
}

/// One offset of an `OffsetCommit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetToCommit {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The offset.
    pub offset: CommittedOffset,
}

/// Everything the service stores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    /// Registered brokers by node id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// Committed offsets: group, topic, partition.
    pub offsets: BTreeMap<String, BTreeMap<String, BTreeMap<i32, CommittedOffset>>>,
    /// The manifest of archived segments, with the catalog rules of `sediment-archive`.
    pub segments: CatalogState,
    /// Next producer id to hand out.
    pub next_producer_id: i64,
    /// The cluster id every broker reports (set once, by the first broker).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Bumped by every change to the topics (creation, deletion, configs, partitions,
    /// leaders), so a broker following the metadata reacts to those only.
    #[serde(default)]
    pub topics_version: u64,
}

/// A change to the metadata. Each is applied atomically, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker (re)registers.
    RegisterBroker {
        /// Node id.
        id: i32,
        /// Host for clients.
        host: String,
        /// Kafka port.
        port: u16,
        /// Rack.
        rack: Option<String>,
        /// Listeners besides the primary one (absent in commands of older versions).
        #[serde(default)]
        listeners: Vec<Endpoint>,
    },
    /// Fences a broker that stopped heartbeating (its registration `epoch`; a newer
    /// registration is left alone).
    FenceBroker {
        /// Node id.
        id: i32,
        /// Registration epoch fenced.
        epoch: u64,
    },
    /// Unfences a broker of registration `epoch` that heartbeats again.
    UnfenceBroker {
        /// Node id.
        id: i32,
        /// Its registration epoch.
        epoch: u64,
    },
    /// Creates a topic with a leader per partition.
    CreateTopic {
        /// Name.
        name: String,
        /// Id.
        id: Uuid,
        /// Leader of each partition (its length is the partition count).
        leaders: Vec<i32>,
        /// Config overrides.
        configs: BTreeMap<String, String>,
    },
    /// Deletes a topic and its committed offsets. Its manifest entries stay until
    /// [`Command::RemoveTopicSegments`] (the archiver deletes their objects first).
    DeleteTopic {
        /// Name.
        name: String,
        /// When given, only the topic with this id is deleted (not one recreated under the
        /// same name meanwhile).
        #[serde(default)]
        id: Option<Uuid>,
    },
    /// Sets and removes config overrides of a topic.
    AlterTopicConfigs {
        /// Name.
        name: String,
        /// Overrides to set.
        set: BTreeMap<String, String>,
        /// Overrides to remove.
        remove: Vec<String>,
    },
    /// Adds partitions led by `leaders` to a topic that has `current` partitions (so a
    /// retried command adds nothing twice).
    AddPartitions {
        /// Name.
        name: String,
        /// The partition count the change starts from.
        current: usize,
        /// Leader of each new partition.
        leaders: Vec<i32>,
    },
    /// Moves a partition's leadership, bumping its leader epoch.
    SetLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// New leader.
        leader: i32,
    },
    /// Commits consumer offsets of a group.
    CommitOffsets {
        /// Group id.
        group: String,
        /// The offsets.
        offsets: Vec<OffsetToCommit>,
    },
    /// Forgets a group's offsets.
    DeleteGroupOffsets {
        /// Group id.
        group: String,
    },
    /// Forgets some partitions' offsets of a group (OffsetDelete).
    DeleteOffsets {
        /// Group id.
        group: String,
        /// (topic, partition) pairs.
        partitions: Vec<(String, i32)>,
    },
    /// Adds an archived segment to the manifest (the catalog rules of `sediment-archive`).
    CommitSegment {
        /// The entry.
        segment: ArchivedSegment,
    },
    /// Removes a partition's manifest entries that end before `offset`.
    RemoveSegmentsBefore {
        /// Topic id.
        topic_id: Uuid,
        /// Partition.
        partition: i32,
        /// First offset to keep.
        offset: i64,
    },
    /// Removes every manifest entry of a topic.
    RemoveTopicSegments {
        /// Topic id.
        topic_id: Uuid,
    },
    /// Sets the cluster id unless one is set; the outcome is the cluster's id either way.
    InitClusterId {
        /// The id proposed.
        id: String,
    },
    /// Hands out a block of producer ids.
    AllocateProducerIds {
        /// How many.
        count: i64,
    },
    /// Several commands in one log entry, applied in order (group commit: one append and
    /// one fsync for all of them).
    Batch(Vec<Command>),
}

/// What applying a command gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied.
    Done,
    /// Applied, and nothing changed (a retried command).
    Unchanged,
    /// Refused; the state did not change.
    Refused(String),
    /// A broker's new registration epoch.
    BrokerEpoch(u64),
    /// The new leader epoch.
    LeaderEpoch(i32),
    /// The cluster id.
    ClusterId(String),
    /// A block of producer ids: the first of `count`.
    ProducerIds {
        /// First id.
        first: i64,
        /// How many.
        count: i64,
    },
    /// Keys of the manifest entries removed.
    Removed(Vec<String>),
    /// The outcomes of a [`Command::Batch`], in order.
    Batch(Vec<Outcome>),
}

/// What a node applied after some log index ([`crate::MetaService::changes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Changes {
    /// The commands applied after it, with their log index, up to index `to`.
    Entries {
        /// Last applied index.
        to: u64,
        /// The commands, oldest first.
        entries: Vec<(u64, Command)>,
    },
    /// The whole state as of `index` (the commands are no longer kept).
    State {
        /// Last applied index.
        index: u64,
        /// The state.
        state: MetaState,
    },
}

impl MetaState {
    /// Brokers that are registered and not fenced, by node id.
    pub fn live_brokers(&self) -> impl Iterator<Item = (i32, &BrokerInfo)> {
        self.brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(id, b)| (*id, b))
    }

    /// Applies `cmd`; a refused command changes nothing.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        let outcome = self.apply_one(cmd);
        let topics_changed = matches!(
            cmd,
            Command::CreateTopic { .. }
                | Command::DeleteTopic { .. }
                | Command::AlterTopicConfigs { .. }
                | Command::AddPartitions { .. }
                | Command::SetLeader { .. }
        ) && matches!(outcome, Outcome::Done | Outcome::LeaderEpoch(_));
        if topics_changed {
            self.topics_version += 1;
        }
        outcome
    }

    fn apply_one(&mut self, cmd: &Command) -> Outcome {
        match cmd {
            Command::RegisterBroker {
                id,
                host,
                port,
                rack,
                listeners,
            } => {
                let epoch = self.brokers.get(id).map_or(1, |b| b.epoch + 1);
                self.brokers.insert(
                    *id,
                    BrokerInfo {
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        listeners: listeners.clone(),
                        epoch,
                        fenced: false,
                    },
                );
                Outcome::BrokerEpoch(epoch)
            }
            Command::FenceBroker { id, epoch } | Command::UnfenceBroker { id, epoch } => {
                let fence = matches!(cmd, Command::FenceBroker { .. });
                match self.brokers.get_mut(id) {
                    Some(b) if b.epoch == *epoch && b.fenced != fence => {
                        b.fenced = fence;
                        Outcome::Done
                    }
                    Some(b) if b.epoch == *epoch => Outcome::Unchanged,
                    _ => Outcome::Refused(format!(
                        "broker {id} has no registration of epoch {epoch}; it must register again"
                    )),
                }
            }
            Command::CreateTopic {
                name,
                id,
                leaders,
                configs,
            } => {
                if let Some(t) = self.topics.get(name) {
                    return if t.id == *id {
                        Outcome::Unchanged
                    } else {
                        Outcome::Refused(format!("topic {name} already exists"))
                    };
                }
                if leaders.is_empty() {
                    return Outcome::Refused(format!("topic {name} needs at least one partition"));
                }
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        id: *id,
                        partitions: leaders
                            .iter()
                            .map(|&leader| PartitionMeta {
                                leader,
                                leader_epoch: 0,
                            })
                            .collect(),
                        configs: configs.clone(),
                    },
                );
                Outcome::Done
            }
            Command::DeleteTopic { name, id } => {
                let matches = self
                    .topics
                    .get(name)
                    .is_some_and(|t| id.is_none_or(|id| t.id == id));
                if !matches {
                    return Outcome::Unchanged;
                }
                self.topics.remove(name);
                for topics in self.offsets.values_mut() {
                    topics.remove(name);
                }
                self.offsets.retain(|_, topics| !topics.is_empty());
                Outcome::Done
            }
            Command::AlterTopicConfigs { name, set, remove } => {
                let Some(t) = self.topics.get_mut(name) else {
                    return Outcome::Refused(format!("unknown topic {name}"));
                };
                for k in remove {
                    t.configs.remove(k);
                }
                t.configs
                    .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
                Outcome::Done
            }
            Command::AddPartitions {
                name,
                current,
                leaders,
            } => {
                let Some(t) = self.topics.get_mut(name) else {
                    return Outcome::Refused(format!("unknown topic {name}"));
                };
                if t.partitions.len() == current + leaders.len() {
                    return Outcome::Unchanged;
                }
                if t.partitions.len() != *current {
                    return Outcome::Refused(format!(
                        "topic {name} has {} partitions, not {current}",
                        t.partitions.len()
                    ));
                }
                t.partitions
                    .extend(leaders.iter().map(|&leader| PartitionMeta {
                        leader,
                        leader_epoch: 0,
                    }));
                Outcome::Done
            }
            Command::SetLeader {
                topic,
                partition,
                leader,
            } => {
                let Some(p) = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.partitions.get_mut(usize::try_from(*partition).ok()?))
                else {
                    return Outcome::Refused(format!("unknown partition {topic}-{partition}"));
                };
                if p.leader != *leader {
                    p.leader = *leader;
                    p.leader_epoch += 1;
                }
                Outcome::LeaderEpoch(p.leader_epoch)
            }
            Command::CommitOffsets { group, offsets } => {
                let g = self.offsets.entry(group.clone()).or_default();
                for o in offsets {
                    g.entry(o.topic.clone())
                        .or_default()
                        .insert(o.partition, o.offset.clone());
                }
                Outcome::Done
            }
            Command::DeleteGroupOffsets { group } => match self.offsets.remove(group) {
                Some(_) => Outcome::Done,
                None => Outcome::Unchanged,
            },
            Command::DeleteOffsets { group, partitions } => {
                let Some(g) = self.offsets.get_mut(group) else {
                    return Outcome::Unchanged;
                };
                let mut changed = false;
                for (topic, partition) in partitions {
                    if let Some(t) = g.get_mut(topic) {
                        changed |= t.remove(partition).is_some();
                        if t.is_empty() {
                            g.remove(topic);
                        }
                    }
                }
                if g.is_empty() {
                    self.offsets.remove(group);
                }
                if changed {
                    Outcome::Done
                } else {
                    Outcome::Unchanged
                }
            }
            Command::CommitSegment { segment } => match self.segments.check(segment) {
                Ok(true) => {
                    self.segments.add(segment.clone());
                    Outcome::Done
                }
                Ok(false) => Outcome::Unchanged,
                Err(e) => Outcome::Refused(e.to_string()),
            },
            Command::RemoveSegmentsBefore {
                topic_id,
                partition,
                offset,
            } => {
                let removed = self.segments.before(*topic_id, *partition, *offset);
                self.segments.remove_before(*topic_id, *partition, *offset);
                Outcome::Removed(removed.into_iter().map(|s| s.key).collect())
            }
            Command::RemoveTopicSegments { topic_id } => {
                let removed = self.segments.topic(*topic_id);
                self.segments.remove_topic(*topic_id);
                Outcome::Removed(removed.into_iter().map(|s| s.key).collect())
            }
            Command::Batch(cmds) => Outcome::Batch(cmds.iter().map(|c| self.apply(c)).collect()),
            Command::InitClusterId { id } => {
                Outcome::ClusterId(self.cluster_id.get_or_insert_with(|| id.clone()).clone())
            }
            Command::AllocateProducerIds { count } => {
                if *count <= 0 {
                    return Outcome::Refused(format!("cannot allocate {count} producer ids"));
                }
                let first = self.next_producer_id;
                self.next_producer_id += count;
                Outcome::ProducerIds {
                    first,
                    count: *count,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(base: i64, last: i64, key: &str) -> ArchivedSegment {
        ArchivedSegment {
            topic: "orders".into(),
            topic_id: Uuid::from_u128(7),
            partition: 0,
            base_offset: base,
            last_offset: last,
            min_timestamp: 0,
            max_timestamp: 0,
            rows: (last - base + 1) as u64,
            segment_bytes: 0,
            segment_crc32c: 0,
            record_bytes: 0,
            key: key.into(),
            object_bytes: 0,
            row_groups: Vec::new(),
            leader_epochs: Vec::new(),
            schema_version: 1,
            archived_at_ms: 0,
        }
    }

    #[test]
    fn registrations_keep_extra_listeners_and_read_the_older_format_without_them() {
        let mut s = MetaState::default();
        // A command logged before brokers had named listeners.
        let old: Command = serde_json::from_str(
            r#"{"RegisterBroker":{"id":1,"host":"b1","port":9092,"rack":null}}"#,
        )
        .unwrap();
        s.apply(&old);
        assert!(s.brokers[&1].listeners.is_empty());
        let tls = Endpoint {
            name: "SSL".into(),
            host: "b1.apps.example.com".into(),
            port: 443,
        };
        s.apply(&Command::RegisterBroker {
            id: 1,
            host: "b1".into(),
            port: 9092,
            rack: None,
            listeners: vec![tls.clone()],
        });
        assert_eq!(s.brokers[&1].listeners, vec![tls]);
        assert_eq!(s.brokers[&1].epoch, 2);
        // And a state snapshot written before, too.
        let info: BrokerInfo =
            serde_json::from_str(r#"{"host":"b1","port":9092,"rack":null,"epoch":3}"#).unwrap();
        assert!(info.listeners.is_empty() && !info.fenced);
    }

    #[test]
    fn topics_leaders_offsets_and_producer_ids() {
        let mut s = MetaState::default();
        let create = Command::CreateTopic {
            name: "orders".into(),
            id: Uuid::from_u128(7),
            leaders: vec![1, 2, 3],
            configs: BTreeMap::new(),
        };
        assert_eq!(s.apply(&create), Outcome::Done);
        assert_eq!(s.apply(&create), Outcome::Unchanged, "a retried create");
        assert_eq!(s.topics_version, 1, "bumped by a change, not by a retry");
        let other = Command::CreateTopic {
            name: "orders".into(),
            id: Uuid::from_u128(8),
            leaders: vec![1],
            configs: BTreeMap::new(),
        };
        assert!(matches!(s.apply(&other), Outcome::Refused(_)));
        let move_leader = Command::SetLeader {
            topic: "orders".into(),
            partition: 1,
            leader: 3,
        };
        assert_eq!(s.apply(&move_leader), Outcome::LeaderEpoch(1));
        assert_eq!(
            s.apply(&move_leader),
            Outcome::LeaderEpoch(1),
            "same leader: no bump"
        );
        assert!(matches!(
            s.apply(&Command::SetLeader {
                topic: "orders".into(),
                partition: 9,
                leader: 1
            }),
            Outcome::Refused(_)
        ));
        let commit = Command::CommitOffsets {
            group: "billing".into(),
            offsets: vec![OffsetToCommit {
                topic: "orders".into(),
                partition: 2,
                offset: CommittedOffset {
                    offset: 42,
                    metadata: None,
                    leader_epoch: 0,
                    commit_timestamp_ms: 5,
                },
            }],
        };
        assert_eq!(s.apply(&commit), Outcome::Done);
        assert_eq!(s.offsets["billing"]["orders"][&2].offset, 42);
        let ids = Command::AllocateProducerIds { count: 1000 };
        assert_eq!(
            s.apply(&ids),
            Outcome::ProducerIds {
                first: 0,
                count: 1000
            }
        );
        assert_eq!(
            s.apply(&ids),
            Outcome::ProducerIds {
                first: 1000,
                count: 1000
            }
        );

        // Deleting the topic drops its offsets; its manifest entries go separately.
        s.apply(&Command::CommitSegment {
            segment: segment(0, 9, "a"),
        });
        assert_eq!(
            s.apply(&Command::DeleteTopic {
                name: "orders".into(),
                id: Some(Uuid::from_u128(8)),
            }),
            Outcome::Unchanged,
            "another topic's id deletes nothing"
        );
        assert_eq!(
            s.apply(&Command::DeleteTopic {
                name: "orders".into(),
                id: Some(Uuid::from_u128(7)),
            }),
            Outcome::Done
        );
        assert!(s.offsets.is_empty());
        assert_eq!(s.segments.all().count(), 1);
        assert_eq!(
            s.apply(&Command::RemoveTopicSegments {
                topic_id: Uuid::from_u128(7)
            }),
            Outcome::Removed(vec!["a".into()])
        );
        assert_eq!(s.segments.all().count(), 0);
    }

    #[test]
    fn the_manifest_keeps_the_catalog_rules() {
        let mut s = MetaState::default();
        let a = Command::CommitSegment {
            segment: segment(0, 9, "a"),
        };
        assert_eq!(s.apply(&a), Outcome::Done);
        assert_eq!(s.apply(&a), Outcome::Unchanged, "a retried commit");
        assert!(matches!(
            s.apply(&Command::CommitSegment {
                segment: segment(5, 19, "b")
            }),
            Outcome::Refused(_)
        ));
        assert_eq!(
            s.apply(&Command::CommitSegment {
                segment: segment(20, 29, "c")
            }),
            Outcome::Done,
            "a gap is allowed"
        );
        assert_eq!(
            s.apply(&Command::RemoveSegmentsBefore {
                topic_id: Uuid::from_u128(7),
                partition: 0,
                offset: 15,
            }),
            Outcome::Removed(vec!["a".into()])
        );
        // The manifest survives a JSON round trip (snapshots) unchanged.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<MetaState>(&json).unwrap(), s);
        assert_eq!(s.segments.segments(Uuid::from_u128(7), 0).len(), 1);
    }

    #[test]
    fn offsets_of_some_partitions_can_be_deleted() {
        let mut s = MetaState::default();
        let commit = |partition| Command::CommitOffsets {
            group: "g".into(),
            offsets: vec![OffsetToCommit {
                topic: "t".into(),
                partition,
                offset: CommittedOffset {
                    offset: 1,
                    metadata: None,
                    leader_epoch: -1,
                    commit_timestamp_ms: 0,
                },
            }],
        };
        s.apply(&commit(0));
        s.apply(&commit(1));
        let delete = |p: i32| Command::DeleteOffsets {
            group: "g".into(),
            partitions: vec![("t".into(), p)],
        };
        assert_eq!(s.apply(&delete(0)), Outcome::Done);
        assert_eq!(s.apply(&delete(0)), Outcome::Unchanged);
        assert_eq!(s.offsets["g"]["t"].len(), 1);
        assert_eq!(s.apply(&delete(1)), Outcome::Done);
        assert!(s.offsets.is_empty(), "an empty group is forgotten");
    }
}
