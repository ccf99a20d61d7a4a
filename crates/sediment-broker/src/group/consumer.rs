//! The next-generation consumer group protocol (KIP-848): one ConsumerGroupHeartbeat API, with
//! the assignment computed by the broker.
//!
//! Three epochs drive it, as in Kafka:
//! - the **group epoch** goes up whenever membership, a subscription or the partition count of
//!   a subscribed topic changes;
//! - the **assignment epoch** is the group epoch the current target assignment was computed for
//!   (by the `uniform` or `range` assignor);
//! - each member's **member epoch** says which target assignment it has reached.
//!
//! A member converges on its target incrementally. If it owns partitions the target gives to
//! others, it is first told to give them up (its assignment shrinks, its epoch stays); once a
//! heartbeat shows it no longer owns them, it moves to the new epoch and receives the new
//! partitions that no other member still holds; partitions still held elsewhere arrive in a later
//! heartbeat, when their owner has released them. No partition is ever owned by two members.
//!
//! Everything here is pure state; the coordinator in `mod.rs` holds it behind its lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use crate::errors::BrokerError;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// What the assignor needs to know of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic id.
    pub id: Uuid,
    /// Partition count.
    pub partitions: i32,
}

/// Where the group looks up topics: by name, and all names (for regex subscriptions).
pub trait TopicResolver {
    /// A topic's id and partition count.
    fn topic(&self, name: &str) -> Option<TopicInfo>;
    /// Every topic name.
    fn names(&self) -> Vec<String>;
}

/// Server-side assignors, as Kafka names them.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// A ConsumerGroupHeartbeat, as the coordinator needs it. `None` fields mean "unchanged".
#[derive(Debug, Clone, Default)]
pub struct ConsumerHeartbeat {
    /// Group id.
    pub group_id: String,
    /// Member id (empty on a v0 first join: the broker picks one).
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member leaving temporarily, else the epoch.
    pub member_epoch: i32,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// `client.rack`.
    pub rack_id: Option<String>,
    /// `max.poll.interval.ms` (-1: unchanged).
    pub rebalance_timeout_ms: i32,
    /// Subscribed topics.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// A regular-expression subscription (RE2 syntax, matching whole topic names; "" clears).
    pub subscribed_topic_regex: Option<String>,
    /// `group.remote.assignor`.
    pub server_assignor: Option<String>,
    /// Partitions the member owns now.
    pub owned: Option<Assignment>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
}

/// The ConsumerGroupHeartbeat answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeatResponse {
    /// The member's id.
    pub member_id: String,
    /// The member's epoch (-1/-2 after leaving).
    pub member_epoch: i32,
    /// How often to heartbeat.
    pub heartbeat_interval_ms: i32,
    /// The partitions the member should own now, when that changed.
    pub assignment: Option<Assignment>,
}

/// Reconciliation state of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Owns its target.
    Stable,
    /// Must give up partitions before moving to the new epoch.
    UnrevokedPartitions,
    /// At the new epoch, waiting for partitions other members still hold.
    UnreleasedPartitions,
}

/// One member of a consumer group.
#[derive(Debug, Clone)]
pub struct ConsumerMember {
    /// Member id.
    pub id: String,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// `client.rack`.
    pub rack_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Current epoch.
    pub epoch: i32,
    previous_epoch: i32,
    /// Reconciliation state.
    pub state: MemberState,
    /// Topics subscribed by name.
    pub names: BTreeSet<String>,
    /// A regular-expression subscription and its compiled form.
    pub regex: Option<(String, regex::Regex)>,
    /// Effective subscription: `names` and the existing topics `regex` matches.
    pub subscribed: BTreeSet<String>,
    server_assignor: Option<String>,
    rebalance_timeout_ms: i64,
    /// Partitions the member owns (as far as the broker knows).
    pub assigned: Assignment,
    /// Partitions it has been told to give up and has not yet.
    pub revoking: Assignment,
    pub(super) heartbeat_deadline: i64,
    pub(super) revocation_deadline: Option<i64>,
    /// A static member that left temporarily (epoch -2): its place is kept until its session
    /// expires.
    pub(super) left_static: bool,
    last_sent: Option<Assignment>,
}

/// A KIP-848 consumer group.
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    /// Group id.
    pub id: String,
    /// Group epoch.
    pub epoch: i32,
    /// Epoch of the target assignment.
    pub assignment_epoch: i32,
    /// Target assignment per member.
    pub target: HashMap<String, Assignment>,
    /// Subscribed topics as last seen: name -> (id, partitions).
    metadata: BTreeMap<String, TopicInfo>,
    /// Members by id.
    pub members: HashMap<String, ConsumerMember>,
    static_members: HashMap<String, String>,
    pub(super) empty_since: i64,
}

/// Settings the group needs.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerSettings {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i64,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i64,
    /// `group.max.size`.
    pub max_size: usize,
}

fn remove_all(from: &mut Assignment, what: &Assignment) {
    for (topic, parts) in what {
        if let Some(set) = from.get_mut(topic) {
            for p in parts {
                set.remove(p);
            }
            if set.is_empty() {
                from.remove(topic);
            }
        }
    }
}

fn add_all(to: &mut Assignment, what: &Assignment) {
    for (topic, parts) in what {
        to.entry(*topic).or_default().extend(parts);
    }
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = a.clone();
    remove_all(&mut out, b);
    out
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|other| !ps.is_disjoint(other)))
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|other| ps.is_subset(other)))
}

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// Computes a target assignment. `uniform` spreads partitions evenly over the members
/// subscribed to each topic, keeping each member's previous partitions where the balance
/// allows (so a rebalance moves as little as possible); `range` gives each subscriber a
/// contiguous range of every topic, as the client-side range assignor does.
pub fn compute_target(
    assignor: &str,
    members: &[(&str, &BTreeSet<String>)],
    topics: &BTreeMap<String, TopicInfo>,
    previous: &HashMap<String, Assignment>,
) -> HashMap<String, Assignment> {
    let mut target: HashMap<String, Assignment> = members
        .iter()
        .map(|(id, _)| (id.to_string(), Assignment::new()))
        .collect();
    let mut totals: HashMap<&str, usize> = members.iter().map(|(id, _)| (*id, 0)).collect();
    for (name, info) in topics {
        let mut subscribers: Vec<&str> = members
            .iter()
            .filter(|(_, subs)| subs.contains(name))
            .map(|(id, _)| *id)
            .collect();
        if subscribers.is_empty() || info.partitions <= 0 {
            continue;
        }
        subscribers.sort_unstable();
        let n = info.partitions as usize;
        let k = subscribers.len();
        if assignor == "range" {
            let (base, extra) = (n / k, n % k);
            let mut next = 0;
            for (i, m) in subscribers.iter().enumerate() {
                let take = base + usize::from(i < extra);
                let parts = (next..next + take).map(|p| p as i32);
                target
                    .get_mut(*m)
                    .expect("member")
                    .entry(info.id)
                    .or_default()
                    .extend(parts);
                *totals.get_mut(m).expect("member") += take;
                next += take;
            }
            continue;
        }
        // Uniform, sticky: each subscriber keeps up to its fair share of what it had.
        let ceil = n.div_ceil(k);
        let mut free: BTreeSet<i32> = (0..info.partitions).collect();
        for m in &subscribers {
            let kept: Vec<i32> = previous
                .get(*m)
                .and_then(|a| a.get(&info.id))
                .into_iter()
                .flatten()
                .copied()
                .filter(|p| free.contains(p))
                .take(ceil)
                .collect();
            for p in &kept {
                free.remove(p);
            }
            *totals.get_mut(m).expect("member") += kept.len();
            if !kept.is_empty() {
                target
                    .get_mut(*m)
                    .expect("member")
                    .entry(info.id)
                    .or_default()
                    .extend(kept);
            }
        }
        // The rest goes to whoever has the fewest partitions of this topic, then overall.
        for p in free {
            let m = *subscribers
                .iter()
                .min_by_key(|m| {
                    let here = target[**m].get(&info.id).map_or(0, BTreeSet::len);
                    (here, totals[**m], **m)
                })
                .expect("subscribers");
            target
                .get_mut(m)
                .expect("member")
                .entry(info.id)
                .or_default()
                .insert(p);
            *totals.get_mut(m).expect("member") += 1;
        }
        // Trim anyone above the fair share (stickiness can leave a member with ceil while
        // another has less than floor when members joined).
        let floor = n / k;
        loop {
            let load = |m: &str, t: &HashMap<String, Assignment>| {
                t[m].get(&info.id).map_or(0, BTreeSet::len)
            };
            let (max_m, max_l) = subscribers
                .iter()
                .map(|m| (*m, load(m, &target)))
                .max_by_key(|(m, l)| (*l, std::cmp::Reverse(*m)))
                .expect("subscribers");
            let (min_m, min_l) = subscribers
                .iter()
                .map(|m| (*m, load(m, &target)))
                .min_by_key(|(m, l)| (*l, *m))
                .expect("subscribers");
            if max_l <= min_l + 1 || max_l <= floor {
                break;
            }
            let set = target
                .get_mut(max_m)
                .expect("member")
                .get_mut(&info.id)
                .expect("loaded");
            let p = *set.iter().next_back().expect("non-empty");
            set.remove(&p);
            target
                .get_mut(min_m)
                .expect("member")
                .entry(info.id)
                .or_default()
                .insert(p);
        }
    }
    for a in target.values_mut() {
        a.retain(|_, ps| !ps.is_empty());
    }
    target
}

impl ConsumerGroup {
    /// An empty group.
    pub fn new(id: &str, now: i64) -> Self {
        Self {
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            target: HashMap::new(),
            metadata: BTreeMap::new(),
            members: HashMap::new(),
            static_members: HashMap::new(),
            empty_since: now,
        }
    }

    /// Kafka's state names for consumer groups.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Subscribed topics across members.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect()
    }

    fn bump(&mut self) {
        self.epoch += 1;
    }

    /// Removes a member (left, expired, fenced); its partitions become free.
    pub fn remove_member(&mut self, member_id: &str, now: i64) -> bool {
        let Some(m) = self.members.remove(member_id) else {
            return false;
        };
        if let Some(instance) = &m.instance_id
            && self
                .static_members
                .get(instance)
                .is_some_and(|id| id == member_id)
        {
            self.static_members.remove(instance);
        }
        self.target.remove(member_id);
        self.bump();
        if self.members.is_empty() {
            self.empty_since = now;
        }
        true
    }

    /// The server-side assignor in use: the most common preference among members, `uniform`
    /// by default.
    pub fn assignor(&self) -> &str {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .map_or("uniform", |(name, _)| name)
    }

    /// Handles one heartbeat. `resolve` looks up a topic by name.
    pub fn heartbeat(
        &mut self,
        req: ConsumerHeartbeat,
        now: i64,
        settings: &ConsumerSettings,
        topics: &dyn TopicResolver,
    ) -> Result<ConsumerHeartbeatResponse, BrokerError> {
        let current_regex = self
            .members
            .get(&req.member_id)
            .and_then(|m| m.regex.as_ref())
            .map(|(r, _)| r.as_str());
        // Compiled only when it changes (clients repeat it in every heartbeat).
        let regex = match req.subscribed_topic_regex.as_deref() {
            None => None,
            Some(r) if Some(r) == current_regex => None,
            Some("") => Some(None),
            Some(r) => Some(Some((
                r.to_string(),
                regex::Regex::new(&format!("^(?:{r})$"))
                    .map_err(|e| BrokerError::InvalidRegularExpression(format!("{r}: {e}")))?,
            ))),
        };
        let interval = settings.heartbeat_interval_ms as i32;
        if req.member_epoch == -1 || req.member_epoch == -2 {
            let known = self.members.contains_key(&req.member_id);
            if !known {
                return Err(BrokerError::UnknownMemberId(format!(
                    "{} is not a member of group {}",
                    req.member_id, self.id
                )));
            }
            if req.member_epoch == -2 && req.instance_id.is_some() {
                let m = self.members.get_mut(&req.member_id).expect("known");
                m.left_static = true;
                m.heartbeat_deadline = now + settings.session_timeout_ms;
                tracing::info!(group = %self.id, member = %req.member_id, "static member left temporarily");
            } else {
                self.remove_member(&req.member_id, now);
                tracing::info!(group = %self.id, member = %req.member_id, "member left the group");
            }
            return Ok(ConsumerHeartbeatResponse {
                member_id: req.member_id,
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: 0,
                assignment: None,
            });
        }
        let mut changed = false;
        let member_id = if req.member_epoch == 0 {
            let (id, new) = self.join(&req, now, settings)?;
            changed = new;
            id
        } else {
            let m = self.members.get(&req.member_id).ok_or_else(|| {
                BrokerError::UnknownMemberId(format!(
                    "{} is not a member of group {}",
                    req.member_id, self.id
                ))
            })?;
            let lost_response = req.member_epoch == m.previous_epoch
                && req
                    .owned
                    .as_ref()
                    .is_some_and(|o| is_subset(o, &m.assigned));
            if req.member_epoch != m.epoch && !lost_response {
                return Err(BrokerError::FencedMemberEpoch(format!(
                    "member {} sent epoch {} but is at {}; rejoin with epoch 0",
                    m.id, req.member_epoch, m.epoch
                )));
            }
            req.member_id.clone()
        };
        // Apply what changed.
        {
            let m = self.members.get_mut(&member_id).expect("member");
            m.heartbeat_deadline = now + settings.session_timeout_ms;
            m.left_static = false;
            if req.rebalance_timeout_ms > 0 {
                m.rebalance_timeout_ms = i64::from(req.rebalance_timeout_ms);
            }
            if let Some(rack) = &req.rack_id {
                m.rack_id = Some(rack.clone());
            }
            if let Some(names) = &req.subscribed_topic_names {
                m.names = names.iter().cloned().collect();
            }
            if let Some(regex) = regex {
                m.regex = regex;
            }
            let mut effective = m.names.clone();
            if let Some((_, re)) = &m.regex {
                effective.extend(topics.names().into_iter().filter(|t| re.is_match(t)));
            }
            if effective != m.subscribed {
                m.subscribed = effective;
                changed = true;
            }
            if let Some(a) = &req.server_assignor
                && m.server_assignor.as_deref() != Some(a.as_str())
            {
                m.server_assignor = Some(a.clone());
                changed = true;
            }
        }
        let metadata: BTreeMap<String, TopicInfo> = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|t| topics.topic(&t).map(|info| (t, info)))
            .collect();
        if changed || metadata != self.metadata {
            self.metadata = metadata;
            self.bump();
        }
        if self.epoch > self.assignment_epoch {
            let assignor = self.assignor().to_string();
            let members: Vec<(&str, &BTreeSet<String>)> = self
                .members
                .values()
                .map(|m| (m.id.as_str(), &m.subscribed))
                .collect();
            self.target = compute_target(&assignor, &members, &self.metadata, &self.target);
            self.assignment_epoch = self.epoch;
            tracing::info!(
                group = %self.id,
                epoch = self.epoch,
                members = self.members.len(),
                assignor,
                "computed target assignment"
            );
        }
        self.reconcile(&member_id, req.owned.as_ref(), now);
        let m = self.members.get_mut(&member_id).expect("member");
        // Kafka sends the assignment when it changed. It is also repeated while the member is
        // still converging: librdkafka resends a timed-out heartbeat without its partitions, and
        // a member that lost the response telling it to revoke would otherwise wait for its
        // rebalance timeout. Clients ignore an assignment they already have.
        let send = req.member_epoch == 0
            || req.owned.is_some()
            || m.state != MemberState::Stable
            || m.last_sent.as_ref() != Some(&m.assigned);
        let assignment = send.then(|| m.assigned.clone());
        if send {
            m.last_sent = Some(m.assigned.clone());
        }
        Ok(ConsumerHeartbeatResponse {
            member_id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: interval,
            assignment,
        })
    }

    /// A heartbeat with epoch 0: a new member, a static member coming back, or a member
    /// rejoining after being fenced. Returns the member id and whether the membership changed
    /// (which calls for a new group epoch).
    fn join(
        &mut self,
        req: &ConsumerHeartbeat,
        now: i64,
        settings: &ConsumerSettings,
    ) -> Result<(String, bool), BrokerError> {
        if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
            return Err(BrokerError::InvalidRequest(
                "SubscribedTopicNames or SubscribedTopicRegex must be set when joining".into(),
            ));
        }
        if let Some(a) = &req.server_assignor
            && !ASSIGNORS.contains(&a.as_str())
        {
            return Err(BrokerError::UnsupportedAssignor(format!(
                "assignor {a} is not one of {ASSIGNORS:?}"
            )));
        }
        let member_id = if req.member_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            req.member_id.clone()
        };
        if let Some(m) = self.members.get(&member_id)
            && m.instance_id != req.instance_id
        {
            return Err(BrokerError::InvalidRequest(format!(
                "member {member_id} is already in group {} with group.instance.id {:?}",
                self.id, m.instance_id
            )));
        }
        if let Some(instance) = &req.instance_id
            && let Some(old) = self.static_members.get(instance).cloned()
            && old != member_id
        {
            match self.members.get(&old) {
                Some(previous) if !previous.left_static => {
                    return Err(BrokerError::UnreleasedInstanceId(format!(
                        "group.instance.id {instance} is still used by member {old}"
                    )));
                }
                Some(_) => {
                    // The static member is back: the new id takes over its place and partitions.
                    let mut m = self.members.remove(&old).expect("looked up above");
                    m.id = member_id.clone();
                    m.client_id = req.client_id.clone();
                    m.client_host = req.client_host.clone();
                    m.last_sent = None;
                    if let Some(t) = self.target.remove(&old) {
                        self.target.insert(member_id.clone(), t);
                    }
                    self.members.insert(member_id.clone(), m);
                    self.static_members
                        .insert(instance.clone(), member_id.clone());
                    tracing::info!(group = %self.id, old = %old, new = %member_id, "static member rejoined");
                    return Ok((member_id, false));
                }
                None => {
                    // A mapping without its member: forget it and join as new.
                    self.static_members.remove(instance);
                }
            }
        }
        if let Some(m) = self.members.get_mut(&member_id) {
            // Rejoining after being fenced: it owns nothing any more.
            m.assigned.clear();
            m.revoking.clear();
            m.epoch = 0;
            m.previous_epoch = -1;
            m.state = MemberState::Stable;
            m.revocation_deadline = None;
            m.last_sent = None;
            return Ok((member_id, true));
        }
        if self.members.len() >= settings.max_size {
            return Err(BrokerError::GroupMaxSizeReached(format!(
                "group {} has group.max.size={} members",
                self.id, settings.max_size
            )));
        }
        if let Some(instance) = &req.instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            ConsumerMember {
                id: member_id.clone(),
                instance_id: req.instance_id.clone(),
                rack_id: req.rack_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                epoch: 0,
                previous_epoch: -1,
                state: MemberState::Stable,
                names: BTreeSet::new(),
                regex: None,
                subscribed: BTreeSet::new(),
                server_assignor: None,
                rebalance_timeout_ms: i64::from(req.rebalance_timeout_ms.max(1)),
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                heartbeat_deadline: now + settings.session_timeout_ms,
                revocation_deadline: None,
                left_static: false,
                last_sent: None,
            },
        );
        tracing::info!(group = %self.id, member = %member_id, "member joined");
        Ok((member_id, true))
    }

    /// Moves a member towards its target (see the module docs).
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now: i64) {
        let held_by_others: Assignment = {
            let mut held = Assignment::new();
            for m in self.members.values().filter(|m| m.id != member_id) {
                add_all(&mut held, &m.assigned);
                add_all(&mut held, &m.revoking);
            }
            held
        };
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let assignment_epoch = self.assignment_epoch;
        let m = self.members.get_mut(member_id).expect("member");
        if m.state == MemberState::UnrevokedPartitions {
            match owned {
                Some(owned) if !intersects(owned, &m.revoking) => {
                    m.revoking.clear();
                    m.revocation_deadline = None;
                    m.state = MemberState::Stable;
                }
                _ => return,
            }
        }
        if m.epoch >= assignment_epoch && m.state == MemberState::Stable {
            return;
        }
        let to_revoke = minus(&m.assigned, &target);
        if count(&to_revoke) > 0 {
            remove_all(&mut m.assigned, &to_revoke);
            m.revoking = to_revoke;
            m.state = MemberState::UnrevokedPartitions;
            m.revocation_deadline = Some(now + m.rebalance_timeout_ms);
            return;
        }
        let wanted = minus(&target, &m.assigned);
        let free = minus(&wanted, &held_by_others);
        let all_free = count(&free) == count(&wanted);
        add_all(&mut m.assigned, &free);
        if m.epoch != assignment_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
        }
        m.state = if all_free {
            MemberState::Stable
        } else {
            MemberState::UnreleasedPartitions
        };
    }

    /// Members whose session expired, or that did not give up partitions within their
    /// rebalance timeout. Returns their ids (already removed).
    pub fn expire(&mut self, now: i64) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.heartbeat_deadline < now || m.revocation_deadline.is_some_and(|d| d < now)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id, now);
        }
        gone
    }

    /// Checks an OffsetCommit from `member_id` at `epoch`.
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Result<(), BrokerError> {
        if epoch < 0 && member_id.is_empty() && self.members.is_empty() {
            return Ok(());
        }
        let m = self.members.get(member_id).ok_or_else(|| {
            BrokerError::UnknownMemberId(format!(
                "{member_id} is not a member of group {}",
                self.id
            ))
        })?;
        if epoch > m.epoch {
            return Err(BrokerError::FencedMemberEpoch(format!(
                "epoch {epoch} is newer than the member's {}",
                m.epoch
            )));
        }
        if epoch < m.epoch {
            return Err(BrokerError::StaleMemberEpoch(format!(
                "epoch {epoch} is older than the member's {}",
                m.epoch
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: ConsumerSettings = ConsumerSettings {
        session_timeout_ms: 45_000,
        heartbeat_interval_ms: 5_000,
        max_size: 100,
    };

    fn topic_id() -> Uuid {
        Uuid::from_u128(7)
    }

    struct Topics(&'static [(&'static str, u128, i32)]);

    impl TopicResolver for Topics {
        fn topic(&self, name: &str) -> Option<TopicInfo> {
            self.0
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, id, p)| TopicInfo {
                    id: Uuid::from_u128(*id),
                    partitions: *p,
                })
        }
        fn names(&self) -> Vec<String> {
            self.0.iter().map(|(n, _, _)| n.to_string()).collect()
        }
    }

    /// One topic `t` (id 7) with six partitions, and two others for regex tests.
    #[allow(non_upper_case_globals)]
    const resolve: Topics = Topics(&[("t", 7, 6), ("orders-eu", 8, 2), ("orders-us", 9, 2)]);

    fn parts(a: &Option<Assignment>) -> BTreeSet<i32> {
        a.as_ref()
            .and_then(|a| a.get(&topic_id()).cloned())
            .unwrap_or_default()
    }

    fn owned(ps: &BTreeSet<i32>) -> Option<Assignment> {
        let mut a = Assignment::new();
        if !ps.is_empty() {
            a.insert(topic_id(), ps.clone());
        }
        Some(a)
    }

    fn hb(id: &str, epoch: i32, own: Option<Assignment>) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            group_id: "g".into(),
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: (epoch == 0).then(|| vec!["t".to_string()]),
            owned: own.or_else(|| (epoch == 0).then(Assignment::new)),
            ..ConsumerHeartbeat::default()
        }
    }

    #[test]
    fn a_second_member_gets_half_only_after_the_first_revokes() {
        let mut g = ConsumerGroup::new("g", 0);
        let a = g
            .heartbeat(hb("a", 0, None), 0, &SETTINGS, &resolve)
            .unwrap();
        assert_eq!((a.member_epoch, parts(&a.assignment).len()), (1, 6));
        let b = g
            .heartbeat(hb("b", 0, None), 1, &SETTINGS, &resolve)
            .unwrap();
        assert_eq!(b.member_epoch, 2);
        assert!(parts(&b.assignment).is_empty(), "a still owns everything");
        // a learns it must give up three partitions; its epoch stays.
        let a = g
            .heartbeat(hb("a", 1, None), 2, &SETTINGS, &resolve)
            .unwrap();
        let a_keeps = parts(&a.assignment);
        assert_eq!((a.member_epoch, a_keeps.len()), (1, 3));
        assert_eq!(g.state_name(), "Reconciling");
        // Commits at a's current epoch are still accepted while it revokes.
        g.check_commit("a", 1).unwrap();
        // The response was lost and the client repeats its heartbeat without partitions: the
        // revocation is sent again.
        let again = g
            .heartbeat(hb("a", 1, None), 2, &SETTINGS, &resolve)
            .unwrap();
        assert_eq!(parts(&again.assignment), a_keeps);
        // a reports it owns only the three: it moves to epoch 2.
        let a = g
            .heartbeat(hb("a", 1, owned(&a_keeps)), 3, &SETTINGS, &resolve)
            .unwrap();
        assert_eq!(a.member_epoch, 2);
        // b now receives the released partitions.
        let b = g
            .heartbeat(hb("b", 2, None), 4, &SETTINGS, &resolve)
            .unwrap();
        let b_gets = parts(&b.assignment);
        assert_eq!(b_gets.len(), 3);
        assert!(b_gets.is_disjoint(&a_keeps));
        assert_eq!(g.state_name(), "Stable");
        assert!(matches!(
            g.check_commit("b", 1),
            Err(BrokerError::StaleMemberEpoch(_))
        ));
    }

    #[test]
    fn stale_epochs_are_fenced_and_leaving_frees_partitions() {
        let mut g = ConsumerGroup::new("g", 0);
        g.heartbeat(hb("a", 0, None), 0, &SETTINGS, &resolve)
            .unwrap();
        assert!(matches!(
            g.heartbeat(hb("a", 7, None), 1, &SETTINGS, &resolve),
            Err(BrokerError::FencedMemberEpoch(_))
        ));
        assert!(matches!(
            g.heartbeat(hb("nobody", 3, None), 1, &SETTINGS, &resolve),
            Err(BrokerError::UnknownMemberId(_))
        ));
        let b = g
            .heartbeat(hb("b", 0, None), 1, &SETTINGS, &resolve)
            .unwrap();
        assert!(parts(&b.assignment).is_empty());
        let left = g
            .heartbeat(hb("a", -1, None), 2, &SETTINGS, &resolve)
            .unwrap();
        assert_eq!(left.member_epoch, -1);
        let b = g
            .heartbeat(hb("b", 2, None), 3, &SETTINGS, &resolve)
            .unwrap();
        assert_eq!(parts(&b.assignment).len(), 6);
        assert_eq!(b.member_epoch, 3);
    }

    #[test]
    fn an_expired_member_is_removed_and_its_partitions_reassigned() {
        let mut g = ConsumerGroup::new("g", 0);
        g.heartbeat(hb("a", 0, None), 0, &SETTINGS, &resolve)
            .unwrap();
        g.heartbeat(hb("b", 0, None), 0, &SETTINGS, &resolve)
            .unwrap();
        let a = g
            .heartbeat(hb("a", 1, None), 0, &SETTINGS, &resolve)
            .unwrap();
        g.heartbeat(
            hb("a", 1, owned(&parts(&a.assignment))),
            0,
            &SETTINGS,
            &resolve,
        )
        .unwrap();
        assert_eq!(
            g.expire(SETTINGS.session_timeout_ms - 1),
            Vec::<String>::new()
        );
        // Only b keeps heartbeating.
        let now = SETTINGS.session_timeout_ms - 1;
        g.heartbeat(hb("b", 2, None), now, &SETTINGS, &resolve)
            .unwrap();
        assert_eq!(
            g.expire(SETTINGS.session_timeout_ms + 1),
            vec!["a".to_string()]
        );
        let b = g
            .heartbeat(hb("b", 2, None), now + 3, &SETTINGS, &resolve)
            .unwrap();
        assert_eq!(parts(&b.assignment).len(), 6);
    }

    #[test]
    fn a_static_member_returns_to_its_partitions_without_a_new_epoch() {
        let mut g = ConsumerGroup::new("g", 0);
        let mut join = hb("a1", 0, None);
        join.instance_id = Some("pod-0".into());
        g.heartbeat(join.clone(), 0, &SETTINGS, &resolve).unwrap();
        let mut dup = hb("x", 0, None);
        dup.instance_id = Some("pod-0".into());
        assert!(matches!(
            g.heartbeat(dup, 0, &SETTINGS, &resolve),
            Err(BrokerError::UnreleasedInstanceId(_))
        ));
        let mut leave = hb("a1", -2, None);
        leave.instance_id = Some("pod-0".into());
        g.heartbeat(leave, 1, &SETTINGS, &resolve).unwrap();
        let epoch = g.epoch;
        let mut back = hb("a2", 0, None);
        back.instance_id = Some("pod-0".into());
        let r = g.heartbeat(back, 2, &SETTINGS, &resolve).unwrap();
        assert_eq!(g.epoch, epoch, "no new group epoch");
        assert_eq!(
            (r.member_id.as_str(), parts(&r.assignment).len()),
            ("a2", 6)
        );
    }

    #[test]
    fn a_member_cannot_take_over_another_static_members_place() {
        let mut g = ConsumerGroup::new("g", 0);
        let mut x = hb("x", 0, None);
        x.instance_id = Some("K".into());
        g.heartbeat(x, 0, &SETTINGS, &resolve).unwrap();
        let mut y = hb("y", 0, None);
        y.instance_id = Some("I".into());
        g.heartbeat(y, 0, &SETTINGS, &resolve).unwrap();
        let mut leave = hb("y", -2, None);
        leave.instance_id = Some("I".into());
        g.heartbeat(leave, 1, &SETTINGS, &resolve).unwrap();
        // x, already a member as K, tries to come back as I.
        let mut steal = hb("x", 0, None);
        steal.instance_id = Some("I".into());
        assert!(matches!(
            g.heartbeat(steal, 2, &SETTINGS, &resolve),
            Err(BrokerError::InvalidRequest(_))
        ));
        g.heartbeat(hb("x", -1, None), 3, &SETTINGS, &resolve)
            .unwrap();
        // K can be used again, and I's owner can come back.
        let mut k = hb("z", 0, None);
        k.instance_id = Some("K".into());
        g.heartbeat(k, 4, &SETTINGS, &resolve).unwrap();
        let mut back = hb("y2", 0, None);
        back.instance_id = Some("I".into());
        g.heartbeat(back, 5, &SETTINGS, &resolve).unwrap();
        assert_eq!(g.members.len(), 2);
    }

    #[test]
    fn a_regex_subscription_matches_whole_topic_names() {
        let mut g = ConsumerGroup::new("g", 0);
        let mut join = hb("a", 0, None);
        join.subscribed_topic_names = Some(vec![]);
        join.subscribed_topic_regex = Some("orders-.*".into());
        let a = g.heartbeat(join, 0, &SETTINGS, &resolve).unwrap();
        let topics: Vec<u128> = a.assignment.unwrap().keys().map(|u| u.as_u128()).collect();
        assert_eq!(topics, vec![8, 9]);
        let mut partial = hb("b", 0, None);
        partial.subscribed_topic_names = Some(vec![]);
        partial.subscribed_topic_regex = Some("orders".into());
        g.heartbeat(partial, 0, &SETTINGS, &resolve).unwrap();
        assert!(
            g.members["b"].subscribed.is_empty(),
            "no topic is named exactly 'orders'"
        );
    }

    #[test]
    fn assignors_balance_and_stick() {
        let subs: BTreeSet<String> = ["t".to_string(), "u".to_string()].into();
        let topics = BTreeMap::from([
            (
                "t".to_string(),
                TopicInfo {
                    id: Uuid::from_u128(1),
                    partitions: 7,
                },
            ),
            (
                "u".to_string(),
                TopicInfo {
                    id: Uuid::from_u128(2),
                    partitions: 2,
                },
            ),
        ]);
        let members = [("a", &subs), ("b", &subs), ("c", &subs)];
        for assignor in ASSIGNORS {
            let t = compute_target(assignor, &members, &topics, &HashMap::new());
            let counts: Vec<usize> = ["a", "b", "c"].iter().map(|m| count(&t[*m])).collect();
            assert_eq!(counts.iter().sum::<usize>(), 9, "{assignor}");
            let mut all = Assignment::new();
            for a in t.values() {
                assert!(!intersects(&all, a), "{assignor}: a partition twice");
                add_all(&mut all, a);
            }
            if assignor == "uniform" {
                assert!(counts.iter().all(|c| *c == 3), "{counts:?}");
                // A fourth member moves as little as possible.
                let members4 = [("a", &subs), ("b", &subs), ("c", &subs), ("d", &subs)];
                let t4 = compute_target(assignor, &members4, &topics, &t);
                let moved: usize = ["a", "b", "c"]
                    .iter()
                    .map(|m| count(&minus(&t[*m], &t4[*m])))
                    .sum();
                assert_eq!(moved, count(&t4["d"]), "only what d receives moves");
            }
        }
    }
}
