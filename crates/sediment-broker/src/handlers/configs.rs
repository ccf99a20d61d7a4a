//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.
//!
//! Topic configs can be read and changed; changes are persisted and applied to the live logs.
//! Broker configs are readable; they come from the config file, environment and flags, so
//! changing them through the API is refused with a message saying so.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, alter_configs_response,
    describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
    },
    incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;

use super::Ctx;
use crate::errors::BrokerError;
use crate::topic_config::{ConfigType, config_def};

/// Resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// Config sources (DescribeConfigs v1+).
pub(super) const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
pub(super) const SOURCE_DEFAULT: i8 = 5;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from(v.into())
}

pub(super) fn describe(ctx: &Ctx<'_>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let keys: Option<HashSet<String>> = r
                .configuration_keys
                .as_ref()
                .map(|k| k.iter().map(|x| x.to_string()).collect());
            let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.contains(name));
            let result = match r.resource_type {
                TOPIC => describe_topic(
                    ctx,
                    &r.resource_name,
                    req.include_synonyms,
                    req.include_documentation,
                ),
                BROKER => describe_broker(ctx, &r.resource_name, req.include_documentation),
                other => Err(BrokerError::InvalidRequest(format!(
                    "resource type {other} is not supported by DescribeConfigs"
                ))),
            };
            let resp = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            match result {
                Ok(configs) => resp
                    .with_error_message(None)
                    .with_configs(configs.into_iter().filter(|c| wanted(&c.name)).collect()),
                Err(e) => {
                    let (code, message) = ctx.error(&e);
                    resp.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_topic(
    ctx: &Ctx<'_>,
    name: &str,
    synonyms: bool,
    documentation: bool,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    let topic = ctx
        .broker
        .topic(name)
        .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
    let overrides = topic.overrides();
    Ok(ctx
        .broker
        .config()
        .log
        .describe(&overrides)
        .into_iter()
        .map(|c| {
            let mut entry = DescribeConfigsResourceResult::default()
                .with_name(s(c.def.name))
                .with_value(Some(s(c.value.clone())))
                .with_read_only(false)
                .with_config_source(if c.is_override {
                    SOURCE_TOPIC
                } else {
                    SOURCE_DEFAULT
                })
                .with_config_type(c.def.kind as i8)
                .with_documentation(documentation.then(|| s(c.def.doc)));
            if synonyms {
                let mut list = Vec::new();
                if c.is_override {
                    list.push(
                        DescribeConfigsSynonym::default()
                            .with_name(s(c.def.name))
                            .with_value(Some(s(c.value)))
                            .with_source(SOURCE_TOPIC),
                    );
                }
                list.push(
                    DescribeConfigsSynonym::default()
                        .with_name(s(c.def.broker_name))
                        .with_value(Some(s(c.default)))
                        .with_source(SOURCE_DEFAULT),
                );
                entry.synonyms = list;
            }
            entry
        })
        .collect())
}

fn describe_broker(
    ctx: &Ctx<'_>,
    name: &str,
    documentation: bool,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    let node = ctx.broker.node_id();
    if !name.is_empty() && name != node.to_string() {
        return Err(BrokerError::InvalidRequest(format!(
            "broker '{name}' is not this broker (node id {node})"
        )));
    }
    let c = ctx.broker.config();
    let mut entries: Vec<(&str, String, ConfigType, &str)> = vec![
        (
            "node.id",
            node.to_string(),
            ConfigType::Int,
            "This broker's id.",
        ),
        (
            "broker.id",
            node.to_string(),
            ConfigType::Int,
            "Alias of node.id.",
        ),
        (
            "log.dirs",
            c.data_dir.display().to_string(),
            ConfigType::String,
            "Data directory.",
        ),
        (
            "advertised.listeners",
            ctx.broker.me().advertised_listeners(),
            ConfigType::List,
            "Addresses given to clients, per listener.",
        ),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "Create topics on first metadata request.",
        ),
        (
            "num.partitions",
            c.num_partitions.to_string(),
            ConfigType::Int,
            "Partitions of auto-created topics.",
        ),
        (
            "default.replication.factor",
            "1".into(),
            ConfigType::Int,
            "Replicas per partition (one broker).",
        ),
        (
            "socket.request.max.bytes",
            c.socket_request_max_bytes.to_string(),
            ConfigType::Int,
            "Largest request frame accepted.",
        ),
        (
            "max.connections",
            c.max_connections.to_string(),
            ConfigType::Int,
            "Concurrent Kafka connections.",
        ),
        (
            "log.retention.check.interval.ms",
            c.log.retention_check_interval_ms.to_string(),
            ConfigType::Long,
            "How often retention runs.",
        ),
    ];
    let defaults = c.log.describe(&BTreeMap::new());
    for d in &defaults {
        entries.push((d.def.broker_name, d.value.clone(), d.def.kind, d.def.doc));
    }
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.dedup_by(|a, b| a.0 == b.0);
    Ok(entries
        .into_iter()
        .map(|(n, v, kind, doc)| {
            DescribeConfigsResourceResult::default()
                .with_name(s(n))
                .with_value(Some(s(v)))
                .with_read_only(true)
                .with_config_source(SOURCE_STATIC_BROKER)
                .with_config_type(kind as i8)
                .with_documentation(documentation.then(|| s(doc)))
        })
        .collect())
}

fn refuse_broker_change() -> BrokerError {
    BrokerError::InvalidRequest(
        "broker configs are static in Sediment; set them in the config file, environment or flags and restart".into(),
    )
}

/// Applies a topic change built by `change` from the current overrides.
fn alter_topic(
    ctx: &Ctx<'_>,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(BTreeMap<String, String>) -> Result<BTreeMap<String, String>, BrokerError>,
) -> Result<(), BrokerError> {
    match resource_type {
        TOPIC => {}
        BROKER => return Err(refuse_broker_change()),
        other => {
            return Err(BrokerError::InvalidRequest(format!(
                "resource type {other} is not supported"
            )));
        }
    }
    let topic = ctx
        .broker
        .topic(name)
        .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
    let overrides = change(topic.overrides())?;
    ctx.broker
        .set_topic_configs(name, overrides, validate_only)?;
    if !validate_only {
        tracing::info!(topic = name, "altered topic configs");
    }
    Ok(())
}

pub(super) fn alter(ctx: &Ctx<'_>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            // Legacy AlterConfigs replaces the whole set of overrides.
            let result = alter_topic(
                ctx,
                r.resource_type,
                &r.resource_name,
                req.validate_only,
                |_| {
                    let mut next = BTreeMap::new();
                    for c in &r.configs {
                        if let Some(v) = &c.value {
                            next.insert(c.name.to_string(), v.to_string());
                        }
                    }
                    Ok(next)
                },
            );
            let resp = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            let (code, message) = ctx.outcome(&result);
            resp.with_error_code(code).with_error_message(message)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

pub(super) fn incremental_alter(
    ctx: &Ctx<'_>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let defaults = &ctx.broker.config().log;
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let result = alter_topic(ctx, r.resource_type, &r.resource_name, req.validate_only, |mut next| {
                let mut seen = HashSet::new();
                for c in &r.configs {
                    let name = c.name.to_string();
                    if !seen.insert(name.clone()) {
                        return Err(BrokerError::InvalidRequest(format!("config '{name}' appears twice")));
                    }
                    let value = c.value.as_ref().map(|v| v.to_string());
                    match c.config_operation {
                        OP_SET => {
                            let v = value.ok_or_else(|| BrokerError::InvalidConfig(format!("null value for '{name}'")))?;
                            next.insert(name, v);
                        }
                        OP_DELETE => {
                            next.remove(&name);
                        }
                        OP_APPEND | OP_SUBTRACT => {
                            let def = config_def(&name).ok_or_else(|| {
                                BrokerError::InvalidConfig(format!("unknown or unsupported topic config '{name}'"))
                            })?;
                            if def.kind != ConfigType::List {
                                return Err(BrokerError::InvalidConfig(format!(
                                    "'{name}' is not a list; APPEND and SUBTRACT apply to lists only"
                                )));
                            }
                            let current = next.get(&name).cloned().unwrap_or_else(|| {
                                defaults
                                    .describe(&BTreeMap::new())
                                    .into_iter()
                                    .find(|d| d.def.name == name)
                                    .map(|d| d.value)
                                    .unwrap_or_default()
                            });
                            let mut items: Vec<String> =
                                current.split(',').map(str::trim).filter(|x| !x.is_empty()).map(String::from).collect();
                            for item in value.unwrap_or_default().split(',').map(str::trim).filter(|x| !x.is_empty()) {
                                if c.config_operation == OP_APPEND {
                                    if !items.iter().any(|x| x == item) {
                                        items.push(item.to_string());
                                    }
                                } else {
                                    items.retain(|x| x != item);
                                }
                            }
                            next.insert(name, items.join(","));
                        }
                        other => {
                            return Err(BrokerError::InvalidRequest(format!("unknown config operation {other}")));
                        }
                    }
                }
                Ok(next)
            });
            let resp = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            let (code, message) = ctx.outcome(&result);
            resp.with_error_code(code).with_error_message(message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
