//! Domain errors of the broker and the one place where they become Kafka error codes.

use kafka_protocol::ResponseError;
use sediment_log::LogError;

/// Errors a request handler can hit for one topic or partition.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The topic (or partition) does not exist.
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    /// A topic id that does not exist.
    #[error("unknown topic id: {0}")]
    UnknownTopicId(uuid::Uuid),
    /// A topic name that breaks Kafka's naming rules.
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    /// CreateTopics for a name that exists.
    #[error("topic already exists: {0}")]
    TopicAlreadyExists(String),
    /// A partition count that cannot work (zero, negative, or not an increase).
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// More replicas than brokers.
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// A manual assignment naming brokers that do not exist.
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// A config name or value that is not accepted.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A batch whose bytes do not check out (CRC, framing, compression).
    #[error("corrupt message: {0}")]
    CorruptMessage(String),
    /// A batch that is well-formed but breaks a rule (count, offsets, control records).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A batch over `max.message.bytes`, or one that inflates past the decompression cap.
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    /// A batch larger than `segment.bytes`.
    #[error("record batch too large: {0}")]
    RecordListTooLarge(String),
    /// Magic 0/1 message sets.
    #[error("unsupported message format: {0}")]
    UnsupportedForMessageFormat(String),
    /// An offset outside `[log start, log end]`.
    #[error("offset out of range: {0}")]
    OffsetOutOfRange(String),
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`.
    #[error("not enough replicas: {0}")]
    NotEnoughReplicas(String),
    /// `acks` other than 0, 1, -1.
    #[error("invalid required acks: {0}")]
    InvalidRequiredAcks(i16),
    /// A leader epoch newer than ours.
    #[error("unknown leader epoch: {0}")]
    UnknownLeaderEpoch(i32),
    /// A leader epoch older than ours.
    #[error("fenced leader epoch: {0}")]
    FencedLeaderEpoch(i32),
    /// A request the broker understands but refuses (e.g. a dynamic broker config change).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A resource type the API does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A storage failure.
    #[error("storage error: {0}")]
    Storage(String),
    /// A batch from a fenced epoch of its producer id.
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// A batch whose sequence does not follow its producer's last one.
    #[error("out of order sequence number: {0}")]
    OutOfOrderSequence(String),
    /// A group member id the coordinator does not know.
    #[error("unknown member id: {0}")]
    UnknownMemberId(String),
    /// A generation id other than the group's current one.
    #[error("illegal generation: {0}")]
    IllegalGeneration(String),
    /// The group is rebalancing; the member must rejoin.
    #[error("rebalance in progress: {0}")]
    RebalanceInProgress(String),
    /// A static member whose `group.instance.id` now belongs to a newer member id.
    #[error("fenced instance id: {0}")]
    FencedInstanceId(String),
    /// Protocol type or protocols that do not match the group's.
    #[error("inconsistent group protocol: {0}")]
    InconsistentGroupProtocol(String),
    /// A session timeout outside the broker's allowed range.
    #[error("invalid session timeout: {0}")]
    InvalidSessionTimeout(String),
    /// An empty or otherwise unusable group id.
    #[error("invalid group id: {0}")]
    InvalidGroupId(String),
    /// A group that does not exist.
    #[error("group id not found: {0}")]
    GroupIdNotFound(String),
    /// A group that still has members.
    #[error("non-empty group: {0}")]
    NonEmptyGroup(String),
    /// JoinGroup v4+ without a member id: the client must rejoin with the one given here.
    #[error("member id required: rejoin with member id {0}")]
    MemberIdRequired(String),
    /// The group has `group.max.size` members already.
    #[error("group max size reached: {0}")]
    GroupMaxSizeReached(String),
    /// OffsetDelete of a topic the group's members are subscribed to.
    #[error("group subscribed to topic: {0}")]
    GroupSubscribedToTopic(String),
    /// Commit metadata longer than `offset.metadata.max.bytes`.
    #[error("offset metadata too large: {0}")]
    OffsetMetadataTooLarge(String),
    /// A KIP-848 member epoch the coordinator has moved past: the member must rejoin.
    #[error("fenced member epoch: {0}")]
    FencedMemberEpoch(String),
    /// An OffsetCommit from an older epoch of a KIP-848 member.
    #[error("stale member epoch: {0}")]
    StaleMemberEpoch(String),
    /// A static member id still in use by another member.
    #[error("unreleased instance id: {0}")]
    UnreleasedInstanceId(String),
    /// A regex subscription that does not compile.
    #[error("invalid regular expression: {0}")]
    InvalidRegularExpression(String),
    /// A server-side assignor the broker does not have.
    #[error("unsupported assignor: {0}")]
    UnsupportedAssignor(String),
    /// The coordinator cannot serve the request right now (shutting down, group dead).
    #[error("coordinator not available: {0}")]
    CoordinatorNotAvailable(String),
    /// Another broker leads this partition: the client refreshes its metadata and re-routes.
    #[error("not the leader: {0}")]
    NotLeaderOrFollower(String),
    /// The partition's leader is fenced (not heartbeating to the metadata quorum).
    #[error("leader not available: {0}")]
    LeaderNotAvailable(String),
    /// Another broker coordinates this group: the client looks it up again.
    #[error("not the coordinator: {0}")]
    NotCoordinator(String),
    /// The partition's leader has no listener of the name this client connected through.
    #[error("listener not found: {0}")]
    ListenerNotFound(String),
}

impl BrokerError {
    /// The Kafka error this maps to.
    pub fn kafka_error(&self) -> ResponseError {
        use BrokerError::*;
        match self {
            UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
            UnknownTopicId(_) => ResponseError::UnknownTopicId,
            InvalidTopic(_) => ResponseError::InvalidTopicException,
            TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            InvalidPartitions(_) => ResponseError::InvalidPartitions,
            InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            InvalidConfig(_) => ResponseError::InvalidConfig,
            CorruptMessage(_) => ResponseError::CorruptMessage,
            InvalidRecord(_) => ResponseError::InvalidRecord,
            MessageTooLarge(_) => ResponseError::MessageTooLarge,
            RecordListTooLarge(_) => ResponseError::RecordListTooLarge,
            UnsupportedForMessageFormat(_) => ResponseError::UnsupportedForMessageFormat,
            OffsetOutOfRange(_) => ResponseError::OffsetOutOfRange,
            NotEnoughReplicas(_) => ResponseError::NotEnoughReplicas,
            InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
            UnknownLeaderEpoch(_) => ResponseError::UnknownLeaderEpoch,
            FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
            InvalidRequest(_) => ResponseError::InvalidRequest,
            Unsupported(_) => ResponseError::InvalidRequest,
            Storage(_) => ResponseError::KafkaStorageError,
            InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
            OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
            UnknownMemberId(_) => ResponseError::UnknownMemberId,
            IllegalGeneration(_) => ResponseError::IllegalGeneration,
            RebalanceInProgress(_) => ResponseError::RebalanceInProgress,
            FencedInstanceId(_) => ResponseError::FencedInstanceId,
            InconsistentGroupProtocol(_) => ResponseError::InconsistentGroupProtocol,
            InvalidSessionTimeout(_) => ResponseError::InvalidSessionTimeout,
            InvalidGroupId(_) => ResponseError::InvalidGroupId,
            GroupIdNotFound(_) => ResponseError::GroupIdNotFound,
            NonEmptyGroup(_) => ResponseError::NonEmptyGroup,
            MemberIdRequired(_) => ResponseError::MemberIdRequired,
            GroupMaxSizeReached(_) => ResponseError::GroupMaxSizeReached,
            GroupSubscribedToTopic(_) => ResponseError::GroupSubscribedToTopic,
            OffsetMetadataTooLarge(_) => ResponseError::OffsetMetadataTooLarge,
            CoordinatorNotAvailable(_) => ResponseError::CoordinatorNotAvailable,
            NotLeaderOrFollower(_) => ResponseError::NotLeaderOrFollower,
            LeaderNotAvailable(_) => ResponseError::LeaderNotAvailable,
            NotCoordinator(_) => ResponseError::NotCoordinator,
            ListenerNotFound(_) => ResponseError::ListenerNotFound,
            FencedMemberEpoch(_) => ResponseError::FencedMemberEpoch,
            StaleMemberEpoch(_) => ResponseError::StaleMemberEpoch,
            UnreleasedInstanceId(_) => ResponseError::UnreleasedInstanceId,
            UnsupportedAssignor(_) => ResponseError::UnsupportedAssignor,
            InvalidRegularExpression(_) => ResponseError::InvalidRegularExpression,
        }
    }

    /// The Kafka error code.
    pub fn code(&self) -> i16 {
        self.kafka_error().code()
    }

    /// A message for the `error_message` fields that carry one.
    pub fn message(&self) -> Option<kafka_protocol::protocol::StrBytes> {
        Some(self.to_string().into())
    }
}

impl From<LogError> for BrokerError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::TruncatedBatch { .. } | LogError::CorruptBatch(_) => {
                Self::CorruptMessage(e.to_string())
            }
            LogError::InvalidBatch(_) => Self::InvalidRecord(e.to_string()),
            LogError::UnsupportedMagic(_) => Self::UnsupportedForMessageFormat(e.to_string()),
            LogError::BatchLargerThanSegment { .. } => Self::RecordListTooLarge(e.to_string()),
            LogError::OffsetOutOfRange { .. } => Self::OffsetOutOfRange(e.to_string()),
            LogError::InvalidConfig { .. } => Self::InvalidConfig(e.to_string()),
            LogError::Io { .. } => Self::Storage(e.to_string()),
            LogError::InvalidProducerEpoch { .. } => Self::InvalidProducerEpoch(e.to_string()),
            LogError::OutOfOrderSequence { .. } => Self::OutOfOrderSequence(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_kafka_protocol() {
        assert_eq!(BrokerError::CorruptMessage(String::new()).code(), 2);
        assert_eq!(
            BrokerError::UnknownTopicOrPartition(String::new()).code(),
            3
        );
        assert_eq!(BrokerError::MessageTooLarge(String::new()).code(), 10);
        assert_eq!(BrokerError::InvalidConfig(String::new()).code(), 40);
        assert_eq!(BrokerError::InvalidRecord(String::new()).code(), 87);
        assert_eq!(BrokerError::IllegalGeneration(String::new()).code(), 22);
        assert_eq!(BrokerError::UnknownMemberId(String::new()).code(), 25);
        assert_eq!(BrokerError::RebalanceInProgress(String::new()).code(), 27);
        assert_eq!(BrokerError::MemberIdRequired(String::new()).code(), 79);
        assert_eq!(BrokerError::FencedInstanceId(String::new()).code(), 82);
        assert_eq!(BrokerError::FencedMemberEpoch(String::new()).code(), 110);
        assert_eq!(BrokerError::StaleMemberEpoch(String::new()).code(), 113);
        assert_eq!(
            BrokerError::from(LogError::OutOfOrderSequence {
                producer_id: 1,
                expected: 2,
                got: 3
            })
            .code(),
            45
        );
        assert_eq!(
            BrokerError::from(LogError::InvalidProducerEpoch {
                producer_id: 1,
                epoch: 0,
                current: 1
            })
            .code(),
            47
        );
        assert_eq!(
            BrokerError::from(LogError::CorruptBatch("x".into())).code(),
            2
        );
        assert_eq!(
            BrokerError::from(LogError::OffsetOutOfRange {
                offset: 1,
                log_start: 2,
                log_end: 3
            })
            .code(),
            1
        );
    }
}
