//! Topic configs under their Kafka names (`segment.bytes`, `retention.ms`, ...), so admin tools
//! work unchanged. A topic stores only its overrides; the effective value of every config is the
//! override or the broker default. Unknown names and bad values are refused with a message that
//! names the config, as Kafka does.

use std::collections::BTreeMap;

use sediment_log::{FlushPolicy, LogConfig};
use serde::{Deserialize, Serialize};

use crate::errors::BrokerError;

/// Kafka's "no limit" for long-valued configs such as `flush.messages`.
const LONG_MAX: i64 = i64::MAX;

/// The `[log]` settings: broker-wide defaults for topic configs (Kafka's `log.*` broker
/// settings) and how often retention runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogDefaults {
    /// `log.segment.bytes` -> `segment.bytes`.
    pub segment_bytes: i64,
    /// `log.roll.ms` -> `segment.ms`.
    pub segment_ms: i64,
    /// `log.retention.bytes` -> `retention.bytes` (-1: unlimited).
    pub retention_bytes: i64,
    /// `log.retention.ms` -> `retention.ms` (-1: unlimited).
    pub retention_ms: i64,
    /// `log.flush.interval.messages` -> `flush.messages` (-1: never by count).
    pub flush_messages: i64,
    /// `log.flush.interval.ms` -> `flush.ms` (-1: never by time).
    pub flush_ms: i64,
    /// `log.index.interval.bytes` -> `index.interval.bytes`.
    pub index_interval_bytes: i64,
    /// `message.max.bytes` -> `max.message.bytes`.
    pub max_message_bytes: i64,
    /// `log.message.timestamp.type` -> `message.timestamp.type`.
    pub message_timestamp_type: String,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i64,
    /// `log.local.retention.bytes` -> `local.retention.bytes`: most the local tier keeps of
    /// a partition whose segments are archived (-2: as `retention.bytes`).
    pub local_retention_bytes: i64,
    /// `log.local.retention.ms` -> `local.retention.ms`: how long archived segments stay on
    /// local disk too (-2: as `retention.ms`).
    pub local_retention_ms: i64,
    /// Default of `remote.storage.enable`: archive sealed segments of every topic that does
    /// not say otherwise.
    pub remote_storage_enable: bool,
    /// `log.retention.check.interval.ms`: how often retention runs (not a topic config).
    pub retention_check_interval_ms: u64,
}

impl Default for LogDefaults {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3600 * 1000,
            flush_messages: -1,
            flush_ms: 1000,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            message_timestamp_type: "CreateTime".into(),
            min_insync_replicas: 1,
            local_retention_bytes: -2,
            local_retention_ms: -2,
            remote_storage_enable: true,
            retention_check_interval_ms: 300_000,
        }
    }
}

/// Value types as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// BOOLEAN
    Boolean = 1,
    /// STRING
    String = 2,
    /// INT
    Int = 3,
    /// LONG
    Long = 5,
    /// LIST
    List = 7,
}

/// One supported topic config.
#[derive(Debug)]
pub struct ConfigDef {
    /// Kafka topic config name.
    pub name: &'static str,
    /// Kafka broker config that supplies the default.
    pub broker_name: &'static str,
    /// Key of that default in Sediment's `[log]` settings ("" when not settable).
    pub setting: &'static str,
    /// Value type.
    pub kind: ConfigType,
    /// One-line documentation.
    pub doc: &'static str,
    default: fn(&LogDefaults) -> String,
    validate: fn(&str) -> Result<(), String>,
}

fn long_in(v: &str, min: i64, max: i64) -> Result<(), String> {
    match v.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        Ok(n) => Err(format!("value {n} is outside [{min}, {max}]")),
        Err(_) => Err(format!("'{v}' is not an integer")),
    }
}

/// Every topic config Sediment accepts.
pub static CONFIG_DEFS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        setting: "",
        kind: ConfigType::List,
        doc: "Only 'delete' (time/size retention) is supported; compaction is not.",
        default: |_| "delete".into(),
        validate: |v| {
            if v.split(',').map(str::trim).all(|p| p == "delete") && !v.trim().is_empty() {
                Ok(())
            } else {
                Err(format!("'{v}' is not supported; only 'delete' is"))
            }
        },
    },
    ConfigDef {
        name: "compression.type",
        broker_name: "compression.type",
        setting: "",
        kind: ConfigType::String,
        doc: "Only 'producer': batches are stored and served with the producer's codec.",
        default: |_| "producer".into(),
        validate: |v| {
            if v == "producer" {
                Ok(())
            } else {
                Err(format!(
                    "'{v}' is not supported; batches keep the producer's codec ('producer')"
                ))
            }
        },
    },
    ConfigDef {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        setting: "flush_messages",
        kind: ConfigType::Long,
        doc: "fsync after this many messages (9223372036854775807: never by count).",
        default: |d| {
            if d.flush_messages < 0 {
                LONG_MAX.to_string()
            } else {
                d.flush_messages.to_string()
            }
        },
        validate: |v| long_in(v, 1, LONG_MAX),
    },
    ConfigDef {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        setting: "flush_ms",
        kind: ConfigType::Long,
        doc: "fsync data older than this many ms (9223372036854775807: never by time).",
        default: |d| {
            if d.flush_ms < 0 {
                LONG_MAX.to_string()
            } else {
                d.flush_ms.to_string()
            }
        },
        validate: |v| long_in(v, 0, LONG_MAX),
    },
    ConfigDef {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        setting: "index_interval_bytes",
        kind: ConfigType::Int,
        doc: "Bytes of log between sparse offset index entries.",
        default: |d| d.index_interval_bytes.to_string(),
        validate: |v| long_in(v, 1, i64::from(i32::MAX)),
    },
    ConfigDef {
        name: "local.retention.bytes",
        broker_name: "log.local.retention.bytes",
        setting: "local_retention_bytes",
        kind: ConfigType::Long,
        doc: "Most bytes of archived segments kept on local disk as well (-2: as retention.bytes).",
        default: |d| d.local_retention_bytes.to_string(),
        validate: |v| long_in(v, -2, LONG_MAX),
    },
    ConfigDef {
        name: "local.retention.ms",
        broker_name: "log.local.retention.ms",
        setting: "local_retention_ms",
        kind: ConfigType::Long,
        doc: "How long archived segments stay on local disk as well (-2: as retention.ms).",
        default: |d| d.local_retention_ms.to_string(),
        validate: |v| long_in(v, -2, LONG_MAX),
    },
    ConfigDef {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        setting: "max_message_bytes",
        kind: ConfigType::Int,
        doc: "Largest record batch accepted (after the producer's compression).",
        default: |d| d.max_message_bytes.to_string(),
        validate: |v| long_in(v, 0, i64::from(i32::MAX)),
    },
    ConfigDef {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        setting: "message_timestamp_type",
        kind: ConfigType::String,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's clock.",
        default: |d| d.message_timestamp_type.clone(),
        validate: |v| match v {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(format!("'{v}' is neither CreateTime nor LogAppendTime")),
        },
    },
    ConfigDef {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        setting: "min_insync_replicas",
        kind: ConfigType::Int,
        doc: "acks=all produces fail with NOT_ENOUGH_REPLICAS when fewer replicas are in sync.",
        default: |d| d.min_insync_replicas.to_string(),
        validate: |v| long_in(v, 1, i64::from(i32::MAX)),
    },
    ConfigDef {
        name: "remote.storage.enable",
        broker_name: "remote.log.storage.system.enable",
        setting: "remote_storage_enable",
        kind: ConfigType::Boolean,
        doc: "Copy sealed segments to the archive (Parquet in object storage); then local.retention.* may delete local copies.",
        default: |d| d.remote_storage_enable.to_string(),
        validate: |v| match v {
            "true" | "false" => Ok(()),
            _ => Err(format!("'{v}' is neither true nor false")),
        },
    },
    ConfigDef {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        setting: "retention_bytes",
        kind: ConfigType::Long,
        doc: "Delete the oldest segments while the partition is larger (-1: unlimited).",
        default: |d| d.retention_bytes.to_string(),
        validate: |v| long_in(v, -1, LONG_MAX),
    },
    ConfigDef {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        setting: "retention_ms",
        kind: ConfigType::Long,
        doc: "Delete segments whose newest record is older than this (-1: unlimited).",
        default: |d| d.retention_ms.to_string(),
        validate: |v| long_in(v, -1, LONG_MAX),
    },
    ConfigDef {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        setting: "segment_bytes",
        kind: ConfigType::Int,
        doc: "Roll the active segment before it grows past this size.",
        default: |d| d.segment_bytes.to_string(),
        validate: |v| long_in(v, sediment_log::HEADER_SIZE as i64, i64::from(i32::MAX)),
    },
    ConfigDef {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        setting: "segment_ms",
        kind: ConfigType::Long,
        doc: "Roll a non-empty active segment this long after its first record.",
        default: |d| d.segment_ms.to_string(),
        validate: |v| long_in(v, 1, LONG_MAX),
    },
];

/// The definition of `name`, if Sediment supports it.
pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    CONFIG_DEFS.iter().find(|d| d.name == name)
}

/// Checks one override.
pub fn validate_entry(name: &str, value: &str) -> Result<(), BrokerError> {
    let def = config_def(name).ok_or_else(|| {
        BrokerError::InvalidConfig(format!(
            "unknown or unsupported topic config '{name}'; supported: {}",
            CONFIG_DEFS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    (def.validate)(value).map_err(|reason| BrokerError::InvalidConfig(format!("{name}: {reason}")))
}

/// What the broker needs to act on a topic's configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveConfig {
    /// Settings handed to each partition log.
    pub log: LogConfig,
    /// `max.message.bytes`.
    pub max_message_bytes: usize,
    /// `message.timestamp.type=LogAppendTime`.
    pub log_append_time: bool,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i32,
    /// `remote.storage.enable`.
    pub remote_storage_enable: bool,
}

/// Resolves `local.retention.<what>` against `retention.<what>` (already resolved, `None`:
/// unlimited) as Kafka does: -2 means "as retention", -1 unlimited, and the local limit may not
/// exceed the total one.
fn local_limit(what: &str, local: i64, total: Option<i64>) -> Result<Option<i64>, BrokerError> {
    let resolved = match local {
        -2 => return Ok(total),
        -1 => None,
        v => Some(v),
    };
    match (resolved, total) {
        (None, Some(t)) => Err(BrokerError::InvalidConfig(format!(
            "local.retention.{what}: -1 (unlimited) exceeds retention.{what}={t}"
        ))),
        (Some(l), Some(t)) if l > t => Err(BrokerError::InvalidConfig(format!(
            "local.retention.{what}: {l} exceeds retention.{what}={t}; the local tier cannot keep more than the whole log"
        ))),
        _ => Ok(resolved),
    }
}

/// A config value and whether the topic overrides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedConfig {
    /// Definition.
    pub def: &'static ConfigDef,
    /// Effective value.
    pub value: String,
    /// Set on the topic (true) or inherited from the broker default (false).
    pub is_override: bool,
    /// The broker default.
    pub default: String,
}

impl PartialEq for ConfigDef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for ConfigDef {}

impl LogDefaults {
    /// Checks every default as if it were a topic override; the error names the broker setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.retention_check_interval_ms == 0 {
            return Err("log.retention_check_interval_ms (Kafka: log.retention.check.interval.ms): must be at least 1".into());
        }
        for def in CONFIG_DEFS {
            (def.validate)(&(def.default)(self)).map_err(|reason| {
                format!("log.{} (Kafka: {}): {reason}", def.setting, def.broker_name)
            })?;
        }
        self.effective(&BTreeMap::new())
            .map_err(|e| format!("[log] defaults do not fit together: {e}"))?;
        Ok(())
    }

    /// Effective config for a topic with `overrides` (assumed validated).
    pub fn effective(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<EffectiveConfig, BrokerError> {
        let get = |name: &str| -> String {
            overrides.get(name).cloned().unwrap_or_else(|| {
                let def = config_def(name).expect("known config");
                (def.default)(self)
            })
        };
        let long = |name: &str| -> Result<i64, BrokerError> {
            get(name)
                .trim()
                .parse::<i64>()
                .map_err(|_| BrokerError::InvalidConfig(format!("{name}: not an integer")))
        };
        let unlimited = |v: i64| {
            if v < 0 || v == LONG_MAX {
                None
            } else {
                Some(v)
            }
        };
        let retention_bytes = unlimited(long("retention.bytes")?);
        let retention_ms = unlimited(long("retention.ms")?);
        let local_bytes = local_limit("bytes", long("local.retention.bytes")?, retention_bytes)?;
        let local_ms = local_limit("ms", long("local.retention.ms")?, retention_ms)?;
        let remote_storage_enable = get("remote.storage.enable") == "true";
        let log = LogConfig {
            segment_bytes: long("segment.bytes")? as u64,
            segment_ms: long("segment.ms")?,
            retention_bytes: retention_bytes.map(|v| v as u64),
            retention_ms,
            index_interval_bytes: long("index.interval.bytes")? as u32,
            flush: FlushPolicy {
                messages: unlimited(long("flush.messages")?).map(|v| v as u64),
                ms: unlimited(long("flush.ms")?),
            },
            producer_id_expiration_ms: sediment_log::DEFAULT_PRODUCER_ID_EXPIRATION_MS,
            tiered: remote_storage_enable,
            local_retention_bytes: local_bytes.map(|v| v as u64),
            local_retention_ms: local_ms,
        };
        log.validate().map_err(BrokerError::from)?;
        Ok(EffectiveConfig {
            log,
            max_message_bytes: long("max.message.bytes")? as usize,
            log_append_time: get("message.timestamp.type") == "LogAppendTime",
            min_insync_replicas: long("min.insync.replicas")? as i32,
            remote_storage_enable,
        })
    }

    /// Every supported config with its effective value, sorted by name.
    pub fn describe(&self, overrides: &BTreeMap<String, String>) -> Vec<DescribedConfig> {
        CONFIG_DEFS
            .iter()
            .map(|def| {
                let default = (def.default)(self);
                match overrides.get(def.name) {
                    Some(v) => DescribedConfig {
                        def,
                        value: v.clone(),
                        is_override: true,
                        default,
                    },
                    None => DescribedConfig {
                        def,
                        value: default.clone(),
                        is_override: false,
                        default,
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_map_to_log_config() {
        let d = LogDefaults::default();
        d.validate().unwrap();
        let e = d.effective(&BTreeMap::new()).unwrap();
        assert_eq!(e.log.segment_bytes, 1 << 30);
        assert_eq!(e.log.retention_bytes, None);
        assert_eq!(e.log.flush.messages, None);
        assert_eq!(e.log.flush.ms, Some(1000));
        assert!(!e.log_append_time);
    }

    #[test]
    fn overrides_win_and_long_max_means_never() {
        let d = LogDefaults::default();
        let o = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("flush.ms".to_string(), i64::MAX.to_string()),
            (
                "message.timestamp.type".to_string(),
                "LogAppendTime".to_string(),
            ),
        ]);
        let e = d.effective(&o).unwrap();
        assert_eq!(e.log.retention_ms, None);
        assert_eq!(e.log.flush.ms, None);
        assert!(e.log_append_time);
        let described = d.describe(&o);
        let r = described
            .iter()
            .find(|c| c.def.name == "retention.ms")
            .unwrap();
        assert!(r.is_override);
        assert_eq!(r.value, "-1");
    }

    #[test]
    fn bad_names_and_values_are_named_in_the_error() {
        let e = validate_entry("retention.msx", "1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retention.msx"), "{e}");
        let e = validate_entry("segment.bytes", "10")
            .unwrap_err()
            .to_string();
        assert!(e.contains("segment.bytes") && e.contains("outside"), "{e}");
        let e = validate_entry("cleanup.policy", "compact")
            .unwrap_err()
            .to_string();
        assert!(e.contains("compact"), "{e}");
        validate_entry("cleanup.policy", "delete").unwrap();
        let d = LogDefaults {
            segment_bytes: 5,
            ..LogDefaults::default()
        };
        let e = d.validate().unwrap_err();
        assert!(
            e.contains("log.segment_bytes") && e.contains("log.segment.bytes"),
            "{e}"
        );
    }

    #[test]
    fn local_retention_resolves_against_total_retention() {
        let d = LogDefaults::default();
        let e = d.effective(&BTreeMap::new()).unwrap();
        assert!(e.remote_storage_enable && e.log.tiered);
        assert_eq!(
            e.log.local_retention_ms, e.log.retention_ms,
            "-2: as retention.ms"
        );
        assert_eq!(e.log.local_retention_bytes, None);
        let o = BTreeMap::from([
            ("local.retention.ms".to_string(), "60000".to_string()),
            ("local.retention.bytes".to_string(), "1048576".to_string()),
            ("remote.storage.enable".to_string(), "false".to_string()),
        ]);
        let e = d.effective(&o).unwrap();
        assert_eq!(e.log.local_retention_ms, Some(60_000));
        assert_eq!(e.log.local_retention_bytes, Some(1 << 20));
        assert!(!e.log.tiered);
        let too_long = BTreeMap::from([
            ("retention.ms".to_string(), "1000".to_string()),
            ("local.retention.ms".to_string(), "2000".to_string()),
        ]);
        let err = d.effective(&too_long).unwrap_err();
        assert_eq!(err.code(), 40);
        assert!(err.to_string().contains("local.retention.ms"), "{err}");
        let unlimited = BTreeMap::from([
            ("retention.bytes".to_string(), "1000".to_string()),
            ("local.retention.bytes".to_string(), "-1".to_string()),
        ]);
        assert!(d.effective(&unlimited).is_err());
        assert!(validate_entry("remote.storage.enable", "yes").is_err());
        assert!(validate_entry("local.retention.ms", "-3").is_err());
    }
}
