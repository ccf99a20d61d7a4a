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
