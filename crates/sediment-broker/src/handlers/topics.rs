//! CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
    create_partitions_response::CreatePartitionsTopicResult,
    create_topics_response::{CreatableTopicConfigs, CreatableTopicResult},
    delete_topics_response::DeletableTopicResult,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::Ctx;
use super::configs::{SOURCE_DEFAULT, SOURCE_TOPIC};
use crate::broker::NewTopic;
use crate::errors::BrokerError;

pub(super) fn create_topics(ctx: &Ctx<'_>, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let broker = ctx.broker;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.to_string()).or_default() += 1;
    }
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.to_string();
            let result = (|| {
                if seen[&name] > 1 {
                    return Err(BrokerError::InvalidRequest(format!(
                        "topic '{name}' appears more than once in the request"
                    )));
                }
                let mut configs = BTreeMap::new();
                for c in &t.configs {
                    let value = c.value.as_ref().ok_or_else(|| {
                        BrokerError::InvalidConfig(format!("null value for config '{}'", c.name.as_str()))
                    })?;
                    configs.insert(c.name.to_string(), value.to_string());
                }
                let assignments = if t.assignments.is_empty() {
                    None
                } else {
                    if t.num_partitions != -1 || t.replication_factor != -1 {
                        return Err(BrokerError::InvalidRequest(
                            "give either assignments or num_partitions/replication_factor, not both".into(),
                        ));
                    }
                    let mut a: Vec<_> = t.assignments.iter().collect();
                    a.sort_by_key(|x| x.partition_index);
                    if a.iter().enumerate().any(|(i, x)| x.partition_index != i as i32) {
                        return Err(BrokerError::InvalidReplicaAssignment(
                            "partition indexes must be consecutive from 0".into(),
                        ));
                    }
                    Some(a.iter().map(|x| x.broker_ids.iter().map(|b| b.0).collect()).collect())
                };
                broker.create_topic(
                    NewTopic {
                        name: name.clone(),
                        partitions: t.num_partitions,
                        replication_factor: t.replication_factor,
                        assignments,
                        configs,
                    },
                    req.validate_only,
                )
            })();
            let resp = CreatableTopicResult::default().with_name(t.name.clone());
            match result {
                Ok(topic) => {
                    if !req.validate_only {
                        tracing::info!(topic = %name, partitions = topic.partition_count(), "created topic");
                    }
                    let overrides = topic.overrides();
                    let configs = broker
                        .config()
                        .log
                        .describe(&overrides)
                        .into_iter()
                        .map(|c| {
                            CreatableTopicConfigs::default()
                                .with_name(c.def.name.into())
                                .with_value(Some(c.value.into()))
                                .with_read_only(false)
                                .with_config_source(if c.is_override { SOURCE_TOPIC } else { SOURCE_DEFAULT })
                        })
                        .collect();
                    let partitions = if req.validate_only {
                        if t.num_partitions == -1 { broker.config().num_partitions } else { t.num_partitions }
                    } else {
                        topic.partition_count()
                    };
                    let resp = resp
                        .with_error_message(None)
                        .with_topic_id(if ctx.version >= 7 { topic.id() } else { Uuid::nil() });
                    if ctx.version >= 5 {
                        resp.with_num_partitions(partitions)
                            .with_replication_factor(1)
                            .with_configs(Some(configs))
                    } else {
                        resp
                    }
                }
                Err(e) => {
                    let (code, message) = ctx.error(&e);
                    resp.with_error_code(code)
                        .with_error_message(message)
                        .with_configs(None)
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub(super) fn delete_topics(ctx: &Ctx<'_>, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let broker = ctx.broker;
    // v6 names topics by name or id; earlier versions by name only.
    let wanted: Vec<(Option<TopicName>, Uuid)> = if ctx.version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let resolved = match &name {
                Some(n) => broker
                    .topic(n)
                    .map(|t| (t.name().to_string(), t.id()))
                    .ok_or_else(|| BrokerError::UnknownTopicOrPartition(n.to_string())),
                None => broker
                    .topic_by_id(id)
                    .map(|t| (t.name().to_string(), t.id()))
                    .ok_or(BrokerError::UnknownTopicId(id)),
            };
            let result = resolved.and_then(|(n, id)| broker.delete_topic(&n).map(|_| (n, id)));
            let resp = DeletableTopicResult::default();
            match result {
                Ok((n, id)) => resp
                    .with_name(Some(TopicName(StrBytes::from(n))))
                    .with_topic_id(if ctx.version >= 6 { id } else { Uuid::nil() }),
                Err(e) => {
                    let (code, message) = ctx.error(&e);
                    let resp = resp
                        .with_name(name)
                        .with_topic_id(if ctx.version >= 6 { id } else { Uuid::nil() })
                        .with_error_code(code);
                    if ctx.version >= 5 {
                        resp.with_error_message(message)
                    } else {
                        resp
                    }
                }
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) fn create_partitions(
    ctx: &Ctx<'_>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let broker = ctx.broker;
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let result = (|| {
                if let Some(assignments) = &t.assignments {
                    let node = broker.node_id();
                    if assignments
                        .iter()
                        .any(|a| a.broker_ids.iter().map(|b| b.0).ne([node]))
                    {
                        return Err(BrokerError::InvalidReplicaAssignment(format!(
                            "new partitions can only be assigned to broker {node}"
                        )));
                    }
                }
                broker.create_partitions(&t.name, t.count, req.validate_only)
            })();
            let resp = CreatePartitionsTopicResult::default().with_name(t.name);
            let (code, message) = ctx.outcome(&result);
            resp.with_error_code(code).with_error_message(message)
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
