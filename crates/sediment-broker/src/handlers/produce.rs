//! Produce: validate each partition's batch, append it, answer per `acks` (none for acks=0).

use kafka_protocol::messages::{
    ProduceRequest, ProduceResponse,
    produce_response::{PartitionProduceResponse, TopicProduceResponse},
};
use uuid::Uuid;

use super::Ctx;
use crate::errors::BrokerError;

/// First version that names topics by id (KIP-516).
const TOPIC_ID_VERSION: i16 = 13;

pub(super) async fn handle(ctx: &Ctx<'_>, req: ProduceRequest) -> Option<ProduceResponse> {
    let broker = ctx.broker;
    let acks = req.acks;
    let acks_valid = matches!(acks, -1..=1);
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for topic_data in req.topic_data {
        let topic = if ctx.version >= TOPIC_ID_VERSION {
            broker
                .topic_by_id(topic_data.topic_id)
                .ok_or(BrokerError::UnknownTopicId(topic_data.topic_id))
        } else {
            broker
                .topic(&topic_data.name)
                .ok_or_else(|| BrokerError::UnknownTopicOrPartition(topic_data.name.to_string()))
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let result = async {
                if !acks_valid {
                    return Err(BrokerError::InvalidRequiredAcks(acks));
                }
                let topic = topic.as_ref().map_err(BrokerError::clone)?;
                let partition = topic.led_partition(data.index)?;
                let records = data
                    .records
                    .as_ref()
                    .ok_or_else(|| BrokerError::CorruptMessage("null records".into()))?;
                let info = broker.produce(topic, &partition, records, acks).await?;
                let (log_start, _) = partition.offsets()?;
                Ok((info, log_start))
            }
            .await;
            let resp = PartitionProduceResponse::default().with_index(data.index);
            partitions.push(match result {
                Ok((info, log_start)) => resp
                    .with_base_offset(info.base_offset)
                    .with_log_append_time_ms(info.log_append_time.unwrap_or(-1))
                    .with_log_start_offset(log_start),
                Err(e) => {
                    if acks == 0 {
                        tracing::debug!(error = %e, "produce with acks=0 failed");
                    }
                    let (code, message) = ctx.error(&e);
                    let resp = resp
                        .with_error_code(code)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    if ctx.version >= 8 {
                        resp.with_error_message(message)
                    } else {
                        resp
                    }
                }
            });
        }
        let resp = TopicProduceResponse::default().with_partition_responses(partitions);
        responses.push(if ctx.version >= TOPIC_ID_VERSION {
            resp.with_topic_id(topic_data.topic_id)
        } else {
            resp.with_name(topic_data.name).with_topic_id(Uuid::nil())
        });
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}
