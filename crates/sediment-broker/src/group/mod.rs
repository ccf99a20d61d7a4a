//! The group coordinator: Kafka's classic consumer-group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup) and committed offsets.
//!
//! Each group is a state machine with Kafka's states: `Empty` -> `PreparingRebalance` (members
//! (re)join) -> `CompletingRebalance` (the leader computes the assignment client-side and sends
//! it in SyncGroup) -> `Stable`. A join, a leave, a member whose session expires, or a member
//! that does not rejoin within the rebalance timeout (`max.poll.interval.ms`) starts a new
//! rebalance and bumps the generation. Static members (`group.instance.id`) keep their
//! assignment across a restart without a rebalance.
//!
//! All groups sit behind one mutex; requests that must wait (JoinGroup until the join phase
//! ends, SyncGroup until the leader's assignment arrives) park a oneshot sender in the member
//! and await it outside the lock. Time comes from the broker's [`Clock`]; the broker calls
//! [`GroupCoordinator::tick`] every 100 ms to expire sessions and end join phases, so the state
//! machine is tested with a manual clock and no sleeping.

pub mod consumer;
pub mod offsets;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;
use parking_lot::Mutex;
use sediment_log::Clock;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::errors::BrokerError;
use consumer::{
    ConsumerGroup, ConsumerHeartbeat, ConsumerHeartbeatResponse, ConsumerSettings, TopicResolver,
};
use offsets::{CommittedOffset, OffsetStore, TopicPartition};

/// The `[group]` settings (Kafka's `group.*` and `offsets.*` broker settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members (extended by each join, up to the rebalance timeout).
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i64,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i64,
    /// `group.max.size`: members per group.
    pub max_size: usize,
    /// `offset.metadata.max.bytes`: longest metadata string of a commit.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes`: committed offsets of a group that has had no members for
    /// this long are deleted (each offset counts from its commit if that is later).
    pub offsets_retention_minutes: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
    /// `group.consumer.session.timeout.ms`: KIP-848 (`group.protocol=consumer`) members that
    /// do not heartbeat for this long are removed. The broker sets it; clients cannot.
    pub consumer_session_timeout_ms: i64,
    /// `group.consumer.heartbeat.interval.ms`: how often KIP-848 members heartbeat.
    pub consumer_heartbeat_interval_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX as usize,
            offset_metadata_max_bytes: 4096,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_check_interval_ms: 600_000,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
        }
    }
}

impl GroupConfig {
    /// Checks values that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial_rebalance_delay_ms < 0 {
            return Err("group.initial_rebalance_delay_ms must not be negative".into());
        }
        if self.min_session_timeout_ms < 1
            || self.min_session_timeout_ms > self.max_session_timeout_ms
        {
            return Err(format!(
                "group.min_session_timeout_ms ({}) must be at least 1 and at most group.max_session_timeout_ms ({})",
                self.min_session_timeout_ms, self.max_session_timeout_ms
            ));
        }
        if self.max_size == 0 {
            return Err("group.max_size must be at least 1".into());
        }
        if self.offsets_retention_minutes < 1 {
            return Err("group.offsets_retention_minutes must be at least 1".into());
        }
        if self.consumer_heartbeat_interval_ms < 1
            || self.consumer_heartbeat_interval_ms >= self.consumer_session_timeout_ms
        {
            return Err(format!(
                "group.consumer_heartbeat_interval_ms ({}) must be at least 1 and less than group.consumer_session_timeout_ms ({})",
                self.consumer_heartbeat_interval_ms, self.consumer_session_timeout_ms
            ));
        }
        if self.offsets_retention_check_interval_ms < 1 {
            return Err("group.offsets_retention_check_interval_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// Kafka's group states, with their wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (the group may still have committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Members hold their assignment.
    Stable,
    /// Deleted or unknown.
    Dead,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Group id.
    pub group_id: String,
    /// Member id ("" for a new member).
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i64,
    /// `max.poll.interval.ms` (v0: the session timeout).
    pub rebalance_timeout_ms: i64,
    /// Protocol type ("consumer").
    pub protocol_type: String,
    /// Supported protocols (assignors) in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Whether the client understands MEMBER_ID_REQUIRED (JoinGroup v4+).
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// The JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    /// Generation joined.
    pub generation_id: i32,
    /// Group protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol (assignor).
    pub protocol_name: Option<String>,
    /// Leader member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// All members with metadata (leader only).
    pub members: Vec<JoinedMember>,
    /// The leader need not compute a new assignment (a static leader rejoined a stable group).
    pub skip_assignment: bool,
}

/// The SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    /// Group protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol_name: Option<String>,
    /// The member's assignment.
    pub assignment: Bytes,
}

type JoinResult = Result<JoinResponse, BrokerError>;
type SyncResult = Result<SyncResponse, BrokerError>;

/// An answer now, or one to await (outside the coordinator's lock).
#[derive(Debug)]
pub enum Reply<T> {
    /// Ready.
    Now(Result<T, BrokerError>),
    /// Completes when the group moves on.
    Later(oneshot::Receiver<Result<T, BrokerError>>),
}

impl<T> Reply<T> {
    /// The answer; a dropped sender (the member was removed meanwhile) is UNKNOWN_MEMBER_ID.
    pub async fn wait(self) -> Result<T, BrokerError> {
        match self {
            Self::Now(r) => r,
            Self::Later(rx) => rx.await.unwrap_or_else(|_| {
                Err(BrokerError::UnknownMemberId(
                    "the member was removed from the group while waiting".into(),
                ))
            }),
        }
    }
}

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i64,
    rebalance_timeout_ms: i64,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    heartbeat_deadline: i64,
    joined_seq: u64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A member's public view (DescribeGroups).
#[derive(Debug, Clone)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Metadata for the group's protocol (empty unless stable).
    pub metadata: Bytes,
    /// Current assignment (empty unless stable).
    pub assignment: Bytes,
}

/// A group's public view (DescribeGroups, ListGroups).
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State name (Kafka's: classic groups Empty, PreparingRebalance, CompletingRebalance,
    /// Stable; consumer groups Empty, Assigning, Reconciling, Stable).
    pub state: &'static str,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: &'static str,
    /// Protocol type ("" when none).
    pub protocol_type: String,
    /// Chosen protocol (only while stable).
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

#[derive(Debug)]
struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: HashMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire.
    pending: HashMap<String, i64>,
    /// `group.instance.id` -> member id.
    static_members: HashMap<String, String>,
    rebalance_deadline: Option<i64>,
    initial_delay_until: Option<i64>,
    /// Members that have not sent SyncGroup by then are removed (Kafka's pending-sync timeout).
    sync_deadline: Option<i64>,
    /// When the group last became empty (offsets expire counting from here).
    empty_since: i64,
}

impl Group {
    fn new(id: &str, now: i64) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: HashMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
            empty_since: now,
        }
    }

    /// The protocols every member supports.
    fn candidates<'a>(&'a self, extra: Option<&'a [(String, Bytes)]>) -> Vec<&'a str> {
        let mut lists = self
            .members
            .values()
            .map(|m| m.protocols.as_slice())
            .chain(extra);
        let Some(first) = lists.next() else {
            return Vec::new();
        };
        let mut names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
        for list in lists {
            names.retain(|n| list.iter().any(|(m, _)| m == n));
        }
        names
    }

    /// Each member votes for its most preferred candidate; most votes wins (ties: the one a
    /// member listed first, then by name, so the choice is deterministic).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates(None);
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(n, _)| n.to_string())
    }

    fn fenced(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), BrokerError> {
        if let Some(instance) = instance_id
            && let Some(current) = self.static_members.get(instance)
            && current != member_id
        {
            return Err(BrokerError::FencedInstanceId(format!(
                "group.instance.id {instance} now belongs to member {current}, not {member_id}"
            )));
        }
        Ok(())
    }

    fn member(&self, member_id: &str) -> Result<&Member, BrokerError> {
        self.members.get(member_id).ok_or_else(|| {
            BrokerError::UnknownMemberId(format!(
                "{member_id} is not a member of group {}",
                self.id
            ))
        })
    }

    fn check_generation(&self, generation: i32) -> Result<(), BrokerError> {
        if generation != self.generation {
            return Err(BrokerError::IllegalGeneration(format!(
                "generation {generation} of group {} is not the current {}",
                self.id, self.generation
            )));
        }
        Ok(())
    }

    fn join_response(&self, member_id: &str, skip_assignment: bool) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            let mut members: Vec<&Member> = self.members.values().collect();
            members.sort_by_key(|m| m.joined_seq);
            members
                .into_iter()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
            skip_assignment,
        }
    }

    fn sync_response(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Starts a join phase: members must rejoin within the rebalance timeout.
    fn prepare_rebalance(&mut self, now: i64, config: &GroupConfig, reason: &str) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(tx) = m.sync_waiter.take() {
                    let _ = tx.send(Err(BrokerError::RebalanceInProgress(format!(
                        "group {} is rebalancing again",
                        self.id
                    ))));
                }
            }
        }
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        tracing::info!(group = %self.id, generation = self.generation, reason, "preparing to rebalance");
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        self.sync_deadline = None;
        self.rebalance_deadline = Some(now + self.max_rebalance_timeout());
        self.initial_delay_until = (was_empty && config.initial_rebalance_delay_ms > 0)
            .then(|| now + config.initial_rebalance_delay_ms);
    }

    /// Ends the join phase if everyone has rejoined (and the initial delay is over) or the
    /// rebalance timeout has passed.
    fn maybe_complete_join(&mut self, now: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        let timed_out = self.rebalance_deadline.is_some_and(|t| now >= t);
        if (all_joined && delay_over) || timed_out {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: i64) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time; removed");
            self.remove_member_only(&id);
        }
        self.pending.clear();
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.empty_since = now;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            tracing::info!(group = %self.id, generation = self.generation, "group is empty");
            return;
        }
        self.protocol = self.select_protocol();
        // The leader must be a member that is here to compute the assignment.
        let leader_joined = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.join_waiter.is_some());
        if !leader_joined {
            self.leader = self
                .members
                .values()
                .filter(|m| m.join_waiter.is_some())
                .min_by_key(|m| m.joined_seq)
                .or_else(|| self.members.values().min_by_key(|m| m.joined_seq))
                .map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.join_response(&id, false);
            let m = self.members.get_mut(&id).expect("listed member");
            m.heartbeat_deadline = now + m.session_timeout_ms;
            m.assignment = Bytes::new();
            if let Some(tx) = m.join_waiter.take() {
                let _ = tx.send(Ok(response));
            }
        }
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = self.protocol.as_deref().unwrap_or(""),
            "join phase complete"
        );
    }

    /// Removes a member without starting a rebalance.
    fn remove_member_only(&mut self, member_id: &str) -> Option<Member> {
        let m = self.members.remove(member_id)?;
        if let Some(instance) = &m.instance_id
            && self
                .static_members
                .get(instance)
                .is_some_and(|id| id == member_id)
        {
            self.static_members.remove(instance);
        }
        Some(m)
    }

    /// Removes a member and rebalances the rest.
    fn remove_member(&mut self, member_id: &str, now: i64, config: &GroupConfig, reason: &str) {
        if self.remove_member_only(member_id).is_none() {
            return;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, config, reason)
            }
            _ => {}
        }
        self.maybe_complete_join(now);
    }

    fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.joined_seq);
        GroupDescription {
            group_id: self.id.clone(),
            state: self.state.name(),
            group_type: "classic",
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    /// Topics the members subscribe to, from the consumer protocol metadata (None when the
    /// group does not use the consumer protocol).
    fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        // Before the first protocol is chosen, every protocol's subscription counts.
        let mut topics = Vec::new();
        for m in self.members.values() {
            for (name, metadata) in &m.protocols {
                if self.protocol.as_ref().is_some_and(|p| p != name) {
                    continue;
                }
                let mut buf = metadata.clone();
                if buf.remaining() < 2 {
                    continue;
                }
                let version = buf.get_i16().clamp(0, 3);
                if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut buf, version) {
                    topics.extend(sub.topics.iter().map(|t| t.to_string()));
                }
            }
        }
        Some(topics)
    }
}

/// The coordinator of every group on this broker.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    clock: Arc<dyn Clock>,
    offsets: Arc<dyn OffsetStore>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    groups: HashMap<String, Group>,
    consumer_groups: HashMap<String, ConsumerGroup>,
    next_seq: u64,
    next_offsets_expiry: i64,
    /// Generations of groups that were removed (each completed join bumps a generation once),
    /// so the rebalance count never goes down.
    retired_generations: u64,
}

impl Inner {
    /// Removes a classic group, keeping its rebalances in the count.
    fn retire_classic(&mut self, id: &str) {
        if let Some(g) = self.groups.remove(id) {
            self.retired_generations += g.generation.max(0) as u64;
        }
    }

    /// Removes a consumer-protocol group, keeping its rebalances in the count.
    fn retire_consumer(&mut self, id: &str) {
        if let Some(g) = self.consumer_groups.remove(id) {
            self.retired_generations += g.epoch.max(0) as u64;
        }
    }
}

/// Figures for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    /// Groups per (type, state).
    pub by_state: BTreeMap<(&'static str, &'static str), u64>,
    /// Members across all groups.
    pub members: u64,
    /// Generation (classic) and group epoch (consumer) changes since start.
    pub rebalances: u64,
}

fn describe_consumer(g: &ConsumerGroup) -> GroupDescription {
    let mut members: Vec<_> = g.members.values().collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    GroupDescription {
        group_id: g.id.clone(),
        state: g.state_name(),
        group_type: "consumer",
        protocol_type: "consumer".into(),
        protocol: String::new(),
        members: members
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: Bytes::new(),
                assignment: Bytes::new(),
            })
            .collect(),
    }
}

fn validate_group_id(group_id: &str) -> Result<(), BrokerError> {
    if group_id.is_empty() {
        return Err(BrokerError::InvalidGroupId("the group id is empty".into()));
    }
    Ok(())
}

impl GroupCoordinator {
    /// A coordinator over `offsets`; groups that have committed offsets start out `Empty`.
    pub fn new(config: GroupConfig, clock: Arc<dyn Clock>, offsets: Arc<dyn OffsetStore>) -> Self {
        let now = clock.now_ms();
        let mut inner = Inner {
            next_offsets_expiry: now + config.offsets_retention_check_interval_ms,
            ..Inner::default()
        };
        for g in offsets.groups() {
            // How long it was empty before the restart is unknown: the commit timestamps
            // (which are durable) decide when its offsets expire.
            let mut group = Group::new(&g, now);
            group.empty_since = i64::MIN;
            inner.groups.insert(g.clone(), group);
        }
        Self {
            config,
            clock,
            offsets,
            inner: Mutex::new(inner),
        }
    }

    /// Settings.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// JoinGroup.
    pub fn join(&self, req: JoinRequest) -> Reply<JoinResponse> {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        match self.join_locked(&mut inner, req, now) {
            Ok(reply) => reply,
            Err(e) => Reply::Now(Err(e)),
        }
    }

    fn join_locked(
        &self,
        inner: &mut Inner,
        req: JoinRequest,
        now: i64,
    ) -> Result<Reply<JoinResponse>, BrokerError> {
        validate_group_id(&req.group_id)?;
        let c = &self.config;
        if req.session_timeout_ms < c.min_session_timeout_ms
            || req.session_timeout_ms > c.max_session_timeout_ms
        {
            return Err(BrokerError::InvalidSessionTimeout(format!(
                "session.timeout.ms={} is outside [{}, {}] (group.min/max.session.timeout.ms)",
                req.session_timeout_ms, c.min_session_timeout_ms, c.max_session_timeout_ms
            )));
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(BrokerError::InconsistentGroupProtocol(
                "a member must name a protocol type and at least one protocol".into(),
            ));
        }
        if !req.member_id.is_empty() && !inner.groups.contains_key(&req.group_id) {
            return Err(BrokerError::UnknownMemberId(format!(
                "group {} does not exist",
                req.group_id
            )));
        }
        match inner.consumer_groups.get(&req.group_id) {
            Some(g) if !g.members.is_empty() => {
                return Err(BrokerError::InconsistentGroupProtocol(format!(
                    "group {} uses the consumer protocol (KIP-848); join it with group.protocol=consumer",
                    req.group_id
                )));
            }
            Some(_) => inner.retire_consumer(&req.group_id),
            None => {}
        }
        inner.next_seq += 1;
        let seq = inner.next_seq;
        let group = inner
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id, now));
        if group.state != GroupState::Empty {
            let same_type = group.protocol_type.as_deref() == Some(req.protocol_type.as_str())
                || group.protocol_type.is_none();
            // A rejoining member's own old protocols do not count against its new ones.
            let others_ok = {
                let own = group.members.get(&req.member_id).map(|m| m.id.clone());
                let mut names: Vec<&str> = req.protocols.iter().map(|(n, _)| n.as_str()).collect();
                for m in group
                    .members
                    .values()
                    .filter(|m| Some(&m.id) != own.as_ref())
                {
                    names.retain(|n| m.protocols.iter().any(|(p, _)| p == n));
                }
                !names.is_empty()
            };
            if !same_type || !others_ok {
                return Err(BrokerError::InconsistentGroupProtocol(format!(
                    "protocol type {} and protocols {:?} do not match group {}",
                    req.protocol_type,
                    req.protocols.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                    group.id
                )));
            }
        }
        if req.member_id.is_empty() {
            let prefix = req.instance_id.as_deref().unwrap_or(&req.client_id);
            let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
            if let Some(instance) = req.instance_id.clone() {
                if let Some(old_id) = group.static_members.get(&instance).cloned() {
                    return Ok(self.replace_static_member(group, old_id, new_id, req, now));
                }
            } else if req.require_known_member_id {
                group
                    .pending
                    .insert(new_id.clone(), now + req.session_timeout_ms);
                return Ok(Reply::Now(Err(BrokerError::MemberIdRequired(new_id))));
            }
            return self.add_member(group, new_id, req, now, seq);
        }
        if group.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member(group, id, req, now, seq);
        }
        group.fenced(&req.member_id, req.instance_id.as_deref())?;
        group.member(&req.member_id)?;
        let (tx, rx) = oneshot::channel();
        let member_id = req.member_id.clone();
        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        let m = group.members.get_mut(&member_id).expect("checked member");
        let changed = m.protocols != req.protocols;
        m.protocols = req.protocols;
        m.protocol_type = req.protocol_type;
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.heartbeat_deadline = now + m.session_timeout_ms;
        match group.state {
            GroupState::PreparingRebalance => {
                m.join_waiter = Some(tx);
                group.maybe_complete_join(now);
                Ok(Reply::Later(rx))
            }
            GroupState::CompletingRebalance if !changed => {
                Ok(Reply::Now(Ok(group.join_response(&member_id, false))))
            }
            GroupState::Stable if !changed && !is_leader => {
                Ok(Reply::Now(Ok(group.join_response(&member_id, false))))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                m.join_waiter = Some(tx);
                let reason = if changed {
                    "a member's protocols changed"
                } else {
                    "the leader rejoined"
                };
                group.prepare_rebalance(now, &self.config, reason);
                group.maybe_complete_join(now);
                Ok(Reply::Later(rx))
            }
            GroupState::Empty | GroupState::Dead => Err(BrokerError::UnknownMemberId(format!(
                "{member_id} is not a member of group {}",
                group.id
            ))),
        }
    }

    fn add_member(
        &self,
        group: &mut Group,
        member_id: String,
        req: JoinRequest,
        now: i64,
        seq: u64,
    ) -> Result<Reply<JoinResponse>, BrokerError> {
        if group.members.len() >= self.config.max_size {
            return Err(BrokerError::GroupMaxSizeReached(format!(
                "group {} has group.max.size={} members",
                group.id, self.config.max_size
            )));
        }
        let (tx, rx) = oneshot::channel();
        if let Some(instance) = &req.instance_id {
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
        }
        if group.protocol_type.is_none() {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        group.members.insert(
            member_id.clone(),
            Member {
                id: member_id,
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type,
                protocols: req.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(tx),
                sync_waiter: None,
                heartbeat_deadline: now + req.session_timeout_ms,
                joined_seq: seq,
            },
        );
        match group.state {
            GroupState::PreparingRebalance => {
                // A join during the initial delay extends it, up to the rebalance timeout.
                if let Some(until) = group.initial_delay_until.as_mut() {
                    let cap = group.rebalance_deadline.unwrap_or(i64::MAX);
                    *until = (now + self.config.initial_rebalance_delay_ms).min(cap);
                }
                let deadline = now + group.max_rebalance_timeout();
                if group.rebalance_deadline.is_some_and(|d| d < deadline) {
                    group.rebalance_deadline = Some(deadline);
                }
            }
            _ => group.prepare_rebalance(now, &self.config, "a member joined"),
        }
        group.maybe_complete_join(now);
        Ok(Reply::Later(rx))
    }

    /// A static member restarted: the new member id takes over the old one's place (and
    /// assignment); the old id is fenced. A stable group does not rebalance.
    fn replace_static_member(
        &self,
        group: &mut Group,
        old_id: String,
        new_id: String,
        req: JoinRequest,
        now: i64,
    ) -> Reply<JoinResponse> {
        let mut m = group
            .members
            .remove(&old_id)
            .expect("static member is a member");
        let fenced = || {
            BrokerError::FencedInstanceId(format!(
                "member {old_id} was replaced by a newer member with the same group.instance.id"
            ))
        };
        if let Some(tx) = m.join_waiter.take() {
            let _ = tx.send(Err(fenced()));
        }
        if let Some(tx) = m.sync_waiter.take() {
            let _ = tx.send(Err(fenced()));
        }
        m.id = new_id.clone();
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.protocols = req.protocols;
        m.heartbeat_deadline = now + m.session_timeout_ms;
        if group.leader.as_deref() == Some(old_id.as_str()) {
            group.leader = Some(new_id.clone());
        }
        group
            .static_members
            .insert(req.instance_id.expect("static member"), new_id.clone());
        let (tx, rx) = oneshot::channel();
        let state = group.state;
        group.members.insert(new_id.clone(), m);
        // As in Kafka, new metadata (sticky assignors embed their previous assignment in it)
        // only calls for a rebalance when it would change the group's protocol.
        if state == GroupState::Stable && group.select_protocol() == group.protocol {
            let is_leader = group.leader.as_deref() == Some(new_id.as_str());
            tracing::info!(group = %group.id, old = %old_id, new = %new_id, "static member rejoined without a rebalance");
            return Reply::Now(Ok(group.join_response(&new_id, is_leader)));
        }
        group
            .members
            .get_mut(&new_id)
            .expect("just inserted")
            .join_waiter = Some(tx);
        if state != GroupState::PreparingRebalance {
            group.prepare_rebalance(now, &self.config, "a static member rejoined");
        }
        group.maybe_complete_join(now);
        Reply::Later(rx)
    }

    /// SyncGroup: the leader's assignments complete the rebalance; every member gets its own.
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncResponse> {
        let mut inner = self.inner.lock();
        let result = (|| {
            let group = inner.groups.get_mut(group_id).ok_or_else(|| {
                BrokerError::UnknownMemberId(format!("group {group_id} does not exist"))
            })?;
            group.fenced(member_id, instance_id)?;
            group.member(member_id)?;
            group.check_generation(generation)?;
            let (ptype, pname) = protocol;
            if ptype.is_some_and(|t| Some(t) != group.protocol_type.as_deref())
                || pname.is_some_and(|n| Some(n) != group.protocol.as_deref())
            {
                return Err(BrokerError::InconsistentGroupProtocol(format!(
                    "protocol {ptype:?}/{pname:?} is not the group's"
                )));
            }
            match group.state {
                GroupState::Empty | GroupState::Dead => Err(BrokerError::UnknownMemberId(format!(
                    "{member_id} is not a member of group {group_id}"
                ))),
                GroupState::PreparingRebalance => Err(BrokerError::RebalanceInProgress(format!(
                    "group {group_id} is rebalancing"
                ))),
                GroupState::Stable => {
                    let m = group.member(member_id)?;
                    Ok(Reply::Now(Ok(group.sync_response(m.assignment.clone()))))
                }
                GroupState::CompletingRebalance => {
                    let (tx, rx) = oneshot::channel();
                    group
                        .members
                        .get_mut(member_id)
                        .expect("checked member")
                        .sync_waiter = Some(tx);
                    if group.leader.as_deref() == Some(member_id) {
                        let mut assignments: HashMap<String, Bytes> =
                            assignments.into_iter().collect();
                        let protocol_type = group.protocol_type.clone();
                        let protocol_name = group.protocol.clone();
                        for m in group.members.values_mut() {
                            m.assignment = assignments.remove(&m.id).unwrap_or_default();
                            if let Some(tx) = m.sync_waiter.take() {
                                let _ = tx.send(Ok(SyncResponse {
                                    protocol_type: protocol_type.clone(),
                                    protocol_name: protocol_name.clone(),
                                    assignment: m.assignment.clone(),
                                }));
                            }
                        }
                        group.state = GroupState::Stable;
                        group.sync_deadline = None;
                        tracing::info!(group = %group_id, generation = group.generation, "group is stable");
                    }
                    Ok(Reply::Later(rx))
                }
            }
        })();
        result.unwrap_or_else(|e| Reply::Now(Err(e)))
    }

    /// Heartbeat: keeps the session alive; REBALANCE_IN_PROGRESS tells the member to rejoin.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        let group = inner.groups.get_mut(group_id).ok_or_else(|| {
            BrokerError::UnknownMemberId(format!("group {group_id} does not exist"))
        })?;
        group.fenced(member_id, instance_id)?;
        group.member(member_id)?;
        group.check_generation(generation)?;
        let m = group.members.get_mut(member_id).expect("checked member");
        m.heartbeat_deadline = now + m.session_timeout_ms;
        match group.state {
            GroupState::PreparingRebalance => Err(BrokerError::RebalanceInProgress(format!(
                "group {group_id} is rebalancing; rejoin"
            ))),
            GroupState::Empty | GroupState::Dead => Err(BrokerError::UnknownMemberId(format!(
                "{member_id} is not a member of group {group_id}"
            ))),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// LeaveGroup for each (member id, instance id); one result per member. A member may be
    /// named by its `group.instance.id` alone (admin removal of a static member).
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        let group = inner.groups.get_mut(group_id).ok_or_else(|| {
            BrokerError::UnknownMemberId(format!("group {group_id} does not exist"))
        })?;
        let mut results = Vec::with_capacity(members.len());
        for (member_id, instance_id) in members {
            let id = match (member_id.is_empty(), instance_id) {
                (true, Some(instance)) => {
                    group.static_members.get(instance).cloned().ok_or_else(|| {
                        BrokerError::UnknownMemberId(format!(
                            "no member with group.instance.id {instance}"
                        ))
                    })
                }
                _ => group
                    .fenced(member_id, instance_id.as_deref())
                    .map(|()| member_id.clone()),
            };
            let result = id.and_then(|id| {
                if group.pending.remove(&id).is_some() {
                    group.maybe_complete_join(now);
                    return Ok(());
                }
                group.member(&id)?;
                tracing::info!(group = %group_id, member = %id, "member left the group");
                group.remove_member(&id, now, &self.config, "a member left");
                Ok(())
            });
            results.push(result);
        }
        Ok(results)
    }

    /// Expires sessions and pending member ids, ends join phases whose time is up, and drops
    /// empty groups without offsets. The broker calls this every 100 ms.
    pub fn tick(&self) {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        for group in inner.groups.values_mut() {
            group.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    m.join_waiter.is_none() && m.sync_waiter.is_none() && m.heartbeat_deadline < now
                })
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %group.id, member = %id, "member session expired");
                group.remove_member(&id, now, &self.config, "a member's session expired");
            }
            if group.state == GroupState::CompletingRebalance
                && group.sync_deadline.is_some_and(|d| now >= d)
            {
                let silent: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| m.sync_waiter.is_none())
                    .map(|m| m.id.clone())
                    .collect();
                for id in silent {
                    tracing::info!(group = %group.id, member = %id, "member did not send SyncGroup in time; removed");
                    group.remove_member(&id, now, &self.config, "a member did not sync in time");
                }
            }
            group.maybe_complete_join(now);
        }
        for group in inner.consumer_groups.values_mut() {
            for id in group.expire(now) {
                tracing::info!(group = %group.id, member = %id, "consumer group member expired (session or revocation timeout)");
            }
        }
        if now >= inner.next_offsets_expiry {
            inner.next_offsets_expiry = now + self.config.offsets_retention_check_interval_ms;
            self.expire_offsets(&inner, now);
        }
        let offsets = &self.offsets;
        let mut retired = 0;
        inner.groups.retain(|id, g| {
            // Pending member ids (MEMBER_ID_REQUIRED handed out) keep a new group alive.
            let keep =
                g.state != GroupState::Empty || !g.pending.is_empty() || offsets.has_group(id);
            if !keep {
                retired += g.generation.max(0) as u64;
            }
            keep
        });
        inner.consumer_groups.retain(|id, g| {
            let keep = !g.members.is_empty() || offsets.has_group(id);
            if !keep {
                retired += g.epoch.max(0) as u64;
            }
            keep
        });
        inner.retired_generations += retired;
    }

    /// Deletes offsets of groups that have been empty for `offsets.retention.minutes` (and
    /// were committed longer ago than that).
    fn expire_offsets(&self, inner: &Inner, now: i64) {
        let cutoff = now - self.config.offsets_retention_minutes * 60_000;
        for group in self.offsets.groups() {
            let empty_since = match (inner.groups.get(&group), inner.consumer_groups.get(&group)) {
                (Some(g), _) if g.state == GroupState::Empty => g.empty_since,
                (None, Some(g)) if g.members.is_empty() => g.empty_since,
                (None, None) => i64::MIN,
                _ => continue,
            };
            if empty_since > cutoff {
                continue;
            }
            let expired: Vec<TopicPartition> = self
                .offsets
                .group_offsets(&group)
                .into_iter()
                .filter(|(_, o)| o.commit_timestamp <= cutoff)
                .map(|(tp, _)| tp)
                .collect();
            if expired.is_empty() {
                continue;
            }
            match self.offsets.delete(&group, Some(&expired)) {
                Ok(()) => {
                    tracing::info!(group = %group, partitions = expired.len(), "expired committed offsets")
                }
                Err(e) => tracing::error!(group = %group, error = %e, "could not expire offsets"),
            }
        }
    }

    /// Forgets every group's committed offsets of a deleted topic.
    pub fn forget_topic(&self, topic: &str) {
        for group in self.offsets.groups() {
            let partitions: Vec<TopicPartition> = self
                .offsets
                .group_offsets(&group)
                .into_iter()
                .filter(|((t, _), _)| t == topic)
                .map(|(tp, _)| tp)
                .collect();
            if !partitions.is_empty()
                && let Err(e) = self.offsets.delete(&group, Some(&partitions))
            {
                tracing::error!(group = %group, topic, error = %e, "could not delete offsets of a deleted topic");
            }
        }
    }

    /// Checks that a commit from this member/generation may be accepted. `generation < 0`
    /// with no member id is a commit from a consumer that assigns partitions itself; it is
    /// accepted while the group has no members (and creates the group).
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        validate_group_id(group_id)?;
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        if let Some(group) = inner.consumer_groups.get(group_id) {
            return group.check_commit(member_id, generation);
        }
        let Some(group) = inner.groups.get_mut(group_id) else {
            if generation < 0 {
                inner
                    .groups
                    .insert(group_id.to_string(), Group::new(group_id, now));
                return Ok(());
            }
            return Err(BrokerError::UnknownMemberId(format!(
                "group {group_id} does not exist"
            )));
        };
        if generation < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        group.fenced(member_id, instance_id)?;
        group.member(member_id)?;
        group.check_generation(generation)?;
        if group.state == GroupState::CompletingRebalance {
            return Err(BrokerError::RebalanceInProgress(format!(
                "group {group_id} is completing a rebalance"
            )));
        }
        let m = group.members.get_mut(member_id).expect("checked member");
        m.heartbeat_deadline = now + m.session_timeout_ms;
        Ok(())
    }

    /// Durably stores offsets (already checked with [`check_commit`](Self::check_commit)).
    pub fn store_offsets(
        &self,
        group_id: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<(), BrokerError> {
        self.offsets.commit(group_id, offsets)
    }

    /// The committed offset of one partition.
    pub fn committed(&self, group_id: &str, tp: &TopicPartition) -> Option<CommittedOffset> {
        self.offsets.fetch(group_id, tp)
    }

    /// Every committed offset of a group.
    pub fn group_offsets(&self, group_id: &str) -> Vec<(TopicPartition, CommittedOffset)> {
        self.offsets.group_offsets(group_id)
    }

    /// The current time of the coordinator's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Figures for metrics.
    pub fn stats(&self) -> GroupStats {
        let inner = self.inner.lock();
        let mut by_state: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        for state in [
            GroupState::Empty,
            GroupState::PreparingRebalance,
            GroupState::CompletingRebalance,
            GroupState::Stable,
        ] {
            by_state.insert(("classic", state.name()), 0);
        }
        for state in ["Empty", "Assigning", "Reconciling", "Stable"] {
            by_state.insert(("consumer", state), 0);
        }
        for g in inner.groups.values() {
            *by_state.entry(("classic", g.state.name())).or_default() += 1;
        }
        for g in inner.consumer_groups.values() {
            *by_state.entry(("consumer", g.state_name())).or_default() += 1;
        }
        let members = inner
            .groups
            .values()
            .map(|g| g.members.len() as u64)
            .sum::<u64>()
            + inner
                .consumer_groups
                .values()
                .map(|g| g.members.len() as u64)
                .sum::<u64>();
        let epochs = inner
            .groups
            .values()
            .map(|g| g.generation.max(0) as u64)
            .chain(
                inner
                    .consumer_groups
                    .values()
                    .map(|g| g.epoch.max(0) as u64),
            )
            .sum::<u64>();
        GroupStats {
            by_state,
            members,
            rebalances: inner.retired_generations + epochs,
        }
    }

    /// DescribeGroups of one group (None: unknown).
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let inner = self.inner.lock();
        inner
            .groups
            .get(group_id)
            .map(Group::describe)
            .or_else(|| inner.consumer_groups.get(group_id).map(describe_consumer))
    }

    /// A KIP-848 group as it is now (ConsumerGroupDescribe).
    pub fn consumer_group(&self, group_id: &str) -> Option<ConsumerGroup> {
        self.inner.lock().consumer_groups.get(group_id).cloned()
    }

    /// ConsumerGroupHeartbeat. `topics` looks up subscribed topics' ids and partition counts.
    pub fn consumer_heartbeat(
        &self,
        req: ConsumerHeartbeat,
        topics: &dyn TopicResolver,
    ) -> Result<ConsumerHeartbeatResponse, BrokerError> {
        if req.group_id.is_empty() {
            return Err(BrokerError::InvalidRequest("GroupId can't be empty".into()));
        }
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        match inner.groups.get(&req.group_id) {
            Some(g) if g.state != GroupState::Empty => {
                return Err(BrokerError::GroupIdNotFound(format!(
                    "group {} is a classic group with members; it cannot use the consumer protocol until they leave",
                    req.group_id
                )));
            }
            // An empty classic group (committed offsets only) becomes a consumer group.
            Some(_) => inner.retire_classic(&req.group_id),
            None => {}
        }
        if req.member_epoch == 0 {
            inner
                .consumer_groups
                .entry(req.group_id.clone())
                .or_insert_with(|| ConsumerGroup::new(&req.group_id, now));
        }
        let settings = ConsumerSettings {
            session_timeout_ms: self.config.consumer_session_timeout_ms,
            heartbeat_interval_ms: self.config.consumer_heartbeat_interval_ms,
            max_size: self.config.max_size,
        };
        let group = inner
            .consumer_groups
            .get_mut(&req.group_id)
            .ok_or_else(|| {
                BrokerError::UnknownMemberId(format!("group {} does not exist", req.group_id))
            })?;
        group.heartbeat(req, now, &settings, topics)
    }

    /// Every group.
    pub fn list(&self) -> Vec<GroupDescription> {
        let inner = self.inner.lock();
        let mut groups: Vec<_> = inner
            .groups
            .values()
            .map(Group::describe)
            .chain(inner.consumer_groups.values().map(describe_consumer))
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups
    }

    /// DeleteGroups of one group: only groups without members, offsets included.
    pub fn delete_group(&self, group_id: &str) -> Result<(), BrokerError> {
        validate_group_id(group_id)?;
        let mut inner = self.inner.lock();
        let members = match (
            inner.groups.get(group_id),
            inner.consumer_groups.get(group_id),
        ) {
            (Some(g), _) => g.members.len(),
            (None, Some(g)) => g.members.len(),
            (None, None) => {
                return Err(BrokerError::GroupIdNotFound(format!(
                    "group {group_id} does not exist"
                )));
            }
        };
        if members > 0 {
            return Err(BrokerError::NonEmptyGroup(format!(
                "group {group_id} has {members} members"
            )));
        }
        self.offsets.delete(group_id, None)?;
        inner.retire_classic(group_id);
        inner.retire_consumer(group_id);
        Ok(())
    }

    /// OffsetDelete: removes the offsets of partitions whose topic no member subscribes to;
    /// the others get GROUP_SUBSCRIBED_TO_TOPIC.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        validate_group_id(group_id)?;
        let inner = self.inner.lock();
        let subscribed: Vec<String> = match (
            inner.groups.get(group_id),
            inner.consumer_groups.get(group_id),
        ) {
            (Some(g), _) if g.state == GroupState::Empty => Vec::new(),
            (Some(g), _) => g.subscribed_topics().ok_or_else(|| {
                BrokerError::NonEmptyGroup(format!(
                    "group {group_id} has members and does not use the consumer protocol"
                ))
            })?,
            (None, Some(g)) => g.subscribed_topics().into_iter().collect(),
            (None, None) => {
                return Err(BrokerError::GroupIdNotFound(format!(
                    "group {group_id} does not exist"
                )));
            }
        };
        let (keep, delete): (Vec<_>, Vec<_>) =
            partitions.iter().partition(|(t, _)| subscribed.contains(t));
        let delete: Vec<TopicPartition> = delete.into_iter().cloned().collect();
        self.offsets.delete(group_id, Some(&delete))?;
        Ok(partitions
            .iter()
            .map(|tp| {
                if keep.contains(&tp) {
                    Err(BrokerError::GroupSubscribedToTopic(format!(
                        "group {group_id} is subscribed to {}",
                        tp.0
                    )))
                } else {
                    Ok(())
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
